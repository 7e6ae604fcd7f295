//! What a fetch authenticates with, read from the Secret a GitSync names: `identity` and
//! `known_hosts` for `ssh://`; `username` and `password` (a token as password) for
//! `https://`, never for plain `http://`. Pure: the caller reads the Secret.
//!
//! Values never leave this type in words: its Debug form is redacted, and errors name only
//! the Secret and the key.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::ByteString;

/// Credentials for one fetch.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Credentials {
    /// Nothing to authenticate with (a public repository, `file://`, `git://`).
    #[default]
    Anonymous,
    Ssh {
        /// The private key, as `ssh-keygen` writes it.
        identity: Vec<u8>,
        /// The only host keys accepted.
        known_hosts: Vec<u8>,
    },
    Basic {
        username: String,
        password: String,
    },
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Credentials::Anonymous => "Anonymous",
            Credentials::Ssh { .. } => "Ssh(<redacted>)",
            Credentials::Basic { .. } => "Basic(<redacted>)",
        })
    }
}

/// The username sent with a `password` that comes without one: Git hosts ignore it for
/// tokens, and Git itself needs some name.
pub const TOKEN_USERNAME: &str = "git";

fn scheme(url: &str) -> &str {
    url.split_once("://").map_or("", |(scheme, _)| scheme)
}

/// Whether `url` needs a Secret before weir will fetch it at all: SSH does, because a host
/// key is only ever accepted from `known_hosts`.
pub fn required(url: &str) -> bool {
    scheme(url) == "ssh"
}

/// Whether a request for credentials for `asked` (the URL a transport is at, after any
/// redirect) may have those of `configured` (the GitSync's `spec.url`): only for the same
/// scheme, host and port. A redirect to another host never carries the Secret there.
pub fn same_origin(configured: &str, asked: &str) -> bool {
    let origin = |url: &str| {
        let parsed = gix::url::parse(gix::bstr::BStr::new(url)).ok()?;
        let host = parsed.host()?.trim_end_matches('.').to_ascii_lowercase();
        Some((parsed.scheme.clone(), host, parsed.port_or_default()))
    };
    match (origin(configured), origin(asked)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// The credentials for `url` from the data of Secret `secret` (`namespace/name`, for
/// messages), or what is missing from it.
pub fn from_secret(
    url: &str,
    secret: &str,
    data: &BTreeMap<String, ByteString>,
) -> Result<Credentials, String> {
    let get = |key: &str| {
        data.get(key)
            .map(|value| value.0.clone())
            .filter(|value| !value.iter().all(u8::is_ascii_whitespace))
    };
    let text = |key: &str| -> Result<Option<String>, String> {
        get(key)
            .map(|bytes| {
                String::from_utf8(bytes)
                    .map(|s| s.trim().to_owned())
                    .map_err(|_| format!("Secret {secret}: key {key} is not UTF-8 text"))
            })
            .transpose()
    };
    match scheme(url) {
        "ssh" => {
            let known_hosts = get("known_hosts").ok_or_else(|| {
                format!(
                    "Secret {secret} has no known_hosts: weir accepts only host keys it is given (ssh-keyscan HOST, checked by hand)"
                )
            })?;
            let identity = get("identity")
                .ok_or_else(|| format!("Secret {secret} has no identity (the private key)"))?;
            Ok(Credentials::Ssh {
                identity,
                known_hosts,
            })
        }
        "http" => Err(format!(
            "Secret {secret} holds credentials, and weir sends credentials only over https://: change spec.url to https://"
        )),
        "https" => match (text("username")?, text("password")?) {
            (username, Some(password)) => Ok(Credentials::Basic {
                username: username.unwrap_or_else(|| TOKEN_USERNAME.to_owned()),
                password,
            }),
            (Some(_), None) => Err(format!(
                "Secret {secret} has a username but no password (or token)"
            )),
            (None, None) => Err(format!(
                "Secret {secret} has neither password nor username: put a token in password"
            )),
        },
        // file:// and git:// have no authentication; a Secret for them changes nothing.
        _ => Ok(Credentials::Anonymous),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_go_only_to_the_configured_origin() {
        let url = "https://git.example/team/app.git";
        for same in [
            "https://git.example/team/app.git",
            "https://git.example/other/repo.git",
            "https://GIT.example./team/app.git",
            "https://git.example:443/team/app.git",
        ] {
            assert!(same_origin(url, same), "{same}");
        }
        for other in [
            "https://evil.example/team/app.git",
            "https://git.example.evil.example/team/app.git",
            "https://git.example:8443/team/app.git",
            "http://git.example/team/app.git",
            "https://evil.example/?git.example",
            "not a url",
            "",
        ] {
            assert!(!same_origin(url, other), "{other}");
        }
    }

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, ByteString> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
            .collect()
    }

    #[test]
    fn ssh_needs_a_key_and_the_host_keys() {
        let url = "ssh://git@git.example/shop.git";
        assert!(required(url));
        assert_eq!(
            from_secret(
                url,
                "apps/git",
                &data(&[
                    ("identity", "KEY"),
                    ("known_hosts", "git.example ssh-ed25519 AAA")
                ])
            ),
            Ok(Credentials::Ssh {
                identity: b"KEY".to_vec(),
                known_hosts: b"git.example ssh-ed25519 AAA".to_vec()
            })
        );
        let error = from_secret(url, "apps/git", &data(&[("identity", "KEY")]))
            .expect_err("no known_hosts");
        assert!(
            error.contains("apps/git") && error.contains("known_hosts"),
            "{error}"
        );
        let error = from_secret(
            url,
            "apps/git",
            &data(&[("identity", "KEY"), ("known_hosts", " \n")]),
        )
        .expect_err("blank known_hosts");
        assert!(error.contains("known_hosts"), "{error}");
        let error = from_secret(url, "apps/git", &data(&[("known_hosts", "h k")]))
            .expect_err("no identity");
        assert!(error.contains("identity"), "{error}");
    }

    #[test]
    fn https_takes_a_password_or_a_token() {
        let url = "https://git.example/shop.git";
        assert!(!required(url));
        assert_eq!(
            from_secret(url, "s", &data(&[("username", "ci"), ("password", "pw\n")])),
            Ok(Credentials::Basic {
                username: "ci".into(),
                password: "pw".into()
            })
        );
        assert_eq!(
            from_secret(url, "s", &data(&[("password", "ghp_token")])),
            Ok(Credentials::Basic {
                username: TOKEN_USERNAME.into(),
                password: "ghp_token".into()
            })
        );
        let error = from_secret(
            "http://git.example/shop.git",
            "s",
            &data(&[("password", "pw")]),
        )
        .expect_err("no credentials in clear text");
        assert!(
            error.contains("https://") && !error.contains("pw"),
            "{error}"
        );
        assert!(from_secret(url, "s", &data(&[("username", "ci")])).is_err());
        assert!(from_secret(url, "s", &data(&[])).is_err());
        let not_text = BTreeMap::from([("password".to_owned(), ByteString(vec![0xff, 0xfe]))]);
        let error = from_secret(url, "s", &not_text).expect_err("not UTF-8");
        assert!(
            error.contains("password") && !error.contains("255"),
            "{error}"
        );
    }

    #[test]
    fn other_schemes_need_nothing_and_nothing_is_ever_printed() {
        assert_eq!(
            from_secret("git://h/r", "s", &data(&[("password", "x")])),
            Ok(Credentials::Anonymous)
        );
        assert!(!required("file:///srv/r"));
        let secret = Credentials::Basic {
            username: "ci".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{secret:?}").contains("hunter2"));
        let key = Credentials::Ssh {
            identity: b"PRIVATE".to_vec(),
            known_hosts: vec![],
        };
        assert!(!format!("{key:?}").contains("PRIVATE"));
    }
}
