//! Clients that act as someone else: the API server checks each request against the RBAC of
//! the impersonated user, exactly as for a person, and records it in its audit log as done
//! by the controller on that user's behalf.

use std::collections::HashMap;
use std::sync::Mutex;

use kube::{Client, Config};

/// One client per impersonated user, made on first use from the controller's own
/// configuration (so they share its credentials, CA and timeouts) and kept: a client holds a
/// connection pool, and a new one per reconcile would pay a TLS handshake each time. At most
/// `USERS_KEPT` are kept: tenants name the ServiceAccounts, so their number is theirs to
/// choose, and past the bound the clients are dropped and made again as they are used.
pub const USERS_KEPT: usize = 512;

pub struct Impersonation {
    base: Config,
    own: Client,
    clients: Mutex<HashMap<String, Client>>,
}

impl Impersonation {
    /// `own` is the controller's client, built from `base`.
    pub fn new(base: Config, own: Client) -> Impersonation {
        Impersonation {
            base,
            own,
            clients: Mutex::default(),
        }
    }

    /// A client acting as `user` (`system:serviceaccount:NS:NAME`), or the controller's own
    /// for None. The API server adds a ServiceAccount's groups to an impersonated
    /// ServiceAccount user itself, as it would for its token.
    pub fn client(&self, user: Option<&str>) -> Result<Client, kube::Error> {
        let Some(user) = user else {
            return Ok(self.own.clone());
        };
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(client) = clients.get(user) {
            return Ok(client.clone());
        }
        let mut config = self.base.clone();
        // Impersonation does not nest: replacing a user the controller's own credentials
        // already act as would check the tenant against the wrong identity's rights.
        if let Some(already) = &config.auth_info.impersonate {
            return Err(kube::Error::Service(
                format!("the controller's credentials already impersonate {already:?}; weir must authenticate as itself to act as a GitSync's ServiceAccount").into(),
            ));
        }
        if clients.len() >= USERS_KEPT {
            clients.clear();
        }
        config.auth_info.impersonate = Some(user.to_owned());
        config.auth_info.impersonate_groups = None;
        let client = Client::try_from(config)?;
        clients.insert(user.to_owned(), client.clone());
        Ok(client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_clients_kept_are_bounded() {
        let mut config = Config::new(
            "https://127.0.0.1:1"
                .parse()
                .unwrap_or_else(|e| panic!("{e}")),
        );
        config.auth_info = Default::default();
        let own = Client::try_from(config.clone()).unwrap_or_else(|e| panic!("a client: {e}"));
        let impersonation = Impersonation::new(config, own);
        for n in 0..(USERS_KEPT * 2 + 7) {
            impersonation
                .client(Some(&format!("system:serviceaccount:t{n}:sa")))
                .unwrap_or_else(|e| panic!("a client: {e}"));
            let kept = impersonation
                .clients
                .lock()
                .map(|c| c.len())
                .unwrap_or_default();
            assert!(kept <= USERS_KEPT, "{kept} clients kept");
        }
    }
}
