//! `spec.kubeConfig`: a GitSync that applies to another cluster, with a kubeconfig a tenant
//! put in a Secret. The kubeconfig is hostile input read on the controller's machine, so
//! only what stays inside it is taken: no exec or auth-provider plugin (a command run on the
//! controller), no file it names (the controller's own disk), no proxy, no TLS check turned
//! off, no impersonation of its own (weir impersonates the GitSync's ServiceAccount on top).
//! Pure: the glue reads the Secret and builds the client.

use kube::config::Kubeconfig;

/// The largest kubeconfig read: a few contexts with inline certificates fit many times over.
pub const MAX_KUBECONFIG_BYTES: usize = 64 * 1024;

/// The Secret keys a kubeconfig is read from when `secretRef.key` is not given, as Flux
/// reads them.
pub const DEFAULT_KEYS: [&str; 2] = ["value", "value.yaml"];

/// The kubeconfig in `text`, checked; `described` names the Secret and key for messages.
/// The error never quotes the kubeconfig (it holds credentials).
pub fn checked(text: &[u8], described: &str) -> Result<Kubeconfig, String> {
    if text.len() > MAX_KUBECONFIG_BYTES {
        return Err(format!(
            "{described} holds {} bytes; a kubeconfig may have at most {MAX_KUBECONFIG_BYTES}",
            text.len()
        ));
    }
    let text = std::str::from_utf8(text)
        .map_err(|_| format!("{described} is not UTF-8 text: put a kubeconfig there"))?;
    let config = Kubeconfig::from_yaml(text).map_err(|e| {
        // Only the kind of error: serde's message may quote a value.
        let kind = match e {
            kube::config::KubeconfigError::Parse(_) => {
                "not a kubeconfig (YAML that does not parse as one)"
            }
            _ => "not a kubeconfig",
        };
        format!("{described} is {kind}")
    })?;
    let context_name = match (&config.current_context, config.contexts.as_slice()) {
        (Some(name), _) => name.clone(),
        (None, [only]) => only.name.clone(),
        (None, _) => {
            return Err(format!(
                "{described}: set current-context (the kubeconfig has {} contexts)",
                config.contexts.len()
            ));
        }
    };
    let context = config
        .contexts
        .iter()
        .find(|c| c.name == context_name)
        .and_then(|c| c.context.as_ref())
        .ok_or_else(|| format!("{described}: context {context_name:?} is not in the kubeconfig"))?;
    let cluster = config
        .clusters
        .iter()
        .find(|c| c.name == context.cluster)
        .and_then(|c| c.cluster.as_ref())
        .ok_or_else(|| {
            format!(
                "{described}: cluster {:?} of context {context_name:?} is not in the kubeconfig",
                context.cluster
            )
        })?;
    let refuse = |field: &str, why: &str| Err(format!("{described}: {field}: {why}"));
    let server = cluster.server.as_deref().unwrap_or_default();
    if !server.starts_with("https://") {
        return refuse("clusters[].cluster.server", "must be an https:// URL");
    }
    if cluster.insecure_skip_tls_verify == Some(true) {
        return refuse(
            "clusters[].cluster.insecure-skip-tls-verify",
            "weir verifies the remote API server's certificate: give certificate-authority-data",
        );
    }
    if cluster.certificate_authority.is_some() {
        return refuse(
            "clusters[].cluster.certificate-authority",
            "names a file on the controller's machine: give certificate-authority-data",
        );
    }
    if cluster.proxy_url.is_some() {
        return refuse(
            "clusters[].cluster.proxy-url",
            "weir reaches the cluster directly",
        );
    }
    let user = context.user.as_deref().unwrap_or_default();
    let Some(auth) = config
        .auth_infos
        .iter()
        .find(|a| a.name == user)
        .and_then(|a| a.auth_info.as_ref())
    else {
        return Err(format!(
            "{described}: user {user:?} of context {context_name:?} is not in the kubeconfig"
        ));
    };
    if auth.exec.is_some() {
        return refuse(
            "users[].user.exec",
            "would run a command on the controller's machine: give a token or a client certificate",
        );
    }
    if auth.auth_provider.is_some() {
        return refuse(
            "users[].user.auth-provider",
            "would run a plugin on the controller's machine: give a token or a client certificate",
        );
    }
    for (field, set) in [
        ("tokenFile", auth.token_file.is_some()),
        ("client-certificate", auth.client_certificate.is_some()),
        ("client-key", auth.client_key.is_some()),
    ] {
        if set {
            return refuse(
                &format!("users[].user.{field}"),
                "names a file on the controller's machine: give the value itself (token, client-certificate-data, client-key-data)",
            );
        }
    }
    if auth.impersonate.is_some() || auth.impersonate_groups.is_some() {
        return refuse(
            "users[].user.as",
            "weir impersonates the GitSync's ServiceAccount itself: remove it",
        );
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kubeconfig(cluster: &str, user: &str) -> String {
        format!(
            "apiVersion: v1
kind: Config
current-context: remote
contexts:
- name: remote
  context: {{cluster: remote, user: weir}}
clusters:
- name: remote
  cluster:
    server: https://10.0.0.1:6443
    certificate-authority-data: Zm9v
{cluster}users:
- name: weir
  user:
    token: s3cr3t-token
{user}"
        )
    }

    #[test]
    fn a_kubeconfig_of_inline_values_is_taken() {
        let config = checked(
            kubeconfig("", "").as_bytes(),
            "Secret shop/remote key value",
        );
        assert!(config.is_ok(), "{config:?}");
    }

    #[test]
    fn what_would_reach_the_controllers_machine_is_refused_naming_the_field_never_the_secret() {
        let cases = [
            (
                "",
                "    exec: {command: /bin/sh, apiVersion: client.authentication.k8s.io/v1}\n",
                "users[].user.exec",
            ),
            (
                "",
                "    auth-provider: {name: gcp}\n",
                "users[].user.auth-provider",
            ),
            (
                "",
                "    tokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token\n",
                "users[].user.tokenFile",
            ),
            (
                "",
                "    client-key: /etc/weir/key.pem\n",
                "users[].user.client-key",
            ),
            ("", "    as: system:admin\n", "users[].user.as"),
            (
                "    certificate-authority: /etc/ssl/ca.pem\n",
                "",
                "certificate-authority",
            ),
            (
                "    insecure-skip-tls-verify: true\n",
                "",
                "insecure-skip-tls-verify",
            ),
            ("    proxy-url: http://10.0.0.2:3128\n", "", "proxy-url"),
        ];
        for (cluster, user, field) in cases {
            let text = kubeconfig(cluster, user);
            let refused = checked(text.as_bytes(), "Secret shop/remote key value");
            let message = refused.expect_err(field);
            assert!(message.contains(field), "{message}");
            assert!(
                message.starts_with("Secret shop/remote key value: "),
                "{message}"
            );
            assert!(!message.contains("s3cr3t"), "{message}");
        }
        let plain = kubeconfig("", "").replace("https://10.0.0.1:6443", "http://10.0.0.1:8080");
        assert!(checked(plain.as_bytes(), "s").is_err_and(|m| m.contains("https://")));
    }

    #[test]
    fn text_that_is_no_kubeconfig_is_refused_without_quoting_it() {
        for text in [
            "token: s3cr3t-token: [".as_bytes(),
            &[0xff, 0xfe, 0x00],
            "current-context: elsewhere\ncontexts: []\n".as_bytes(),
        ] {
            let message = checked(text, "Secret shop/remote key value").expect_err("refused");
            assert!(!message.contains("s3cr3t"), "{message}");
        }
        let big = vec![b'#'; MAX_KUBECONFIG_BYTES + 1];
        assert!(checked(&big, "s").is_err_and(|m| m.contains("at most")));
    }
}
