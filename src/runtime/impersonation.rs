//! Clients that act as someone else: the API server checks each request against the RBAC of
//! the impersonated user, exactly as for a person, and records it in its audit log as done
//! by the controller on that user's behalf.

use std::collections::HashMap;
use std::sync::Mutex;

use kube::{Client, Config};

/// One client per impersonated user, made on first use from the controller's own
/// configuration (so they share its credentials, CA and timeouts) and kept: a client holds a
/// connection pool, and a new one per reconcile would pay a TLS handshake each time.
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
        config.auth_info.impersonate = Some(user.to_owned());
        config.auth_info.impersonate_groups = None;
        let client = Client::try_from(config)?;
        clients.insert(user.to_owned(), client.clone());
        Ok(client)
    }
}
