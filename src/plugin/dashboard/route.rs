//! Which page a URL asks for, and who may ask: pure, so that the rules a browser's requests
//! meet are tested without a server.
//!
//! The dashboard acts with the user's own credentials, so a page elsewhere in the same
//! browser must not be able to read it or press its buttons: requests must name the
//! dashboard's own loopback address as their Host (no DNS rebinding), and every button posts
//! the token the server put in its form (no cross-site request forgery).

use std::time::Duration;

use percent_encoding::percent_decode_str;

use crate::gitops::delivery::Window;

/// The delivery figures' window when the URL names none.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(7 * 86_400);

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Page {
    Rollouts,
    Rollout {
        namespace: String,
        name: String,
    },
    GitSyncs {
        window: Duration,
    },
    GitSync {
        namespace: String,
        name: String,
        window: Duration,
    },
}

impl Page {
    /// The figures' window ending at `now` (Unix seconds).
    pub fn window(window: Duration, now: i64) -> Window {
        crate::gitops::delivery::ending_at(window, now)
    }
}

/// The page of `path` (`/rollouts/shop/web`) with its query (`window=30d`), or why there is
/// none.
pub fn page(path: &str, query: Option<&str>) -> Result<Page, String> {
    let segments: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| percent_decode_str(s).decode_utf8_lossy().into_owned())
        .collect();
    let window = || -> Result<Duration, String> {
        let Some(query) = query else {
            return Ok(DEFAULT_WINDOW);
        };
        for pair in query.split('&') {
            if let Some(value) = pair.strip_prefix("window=") {
                let value = percent_decode_str(value).decode_utf8_lossy();
                return match window_of(&value) {
                    Some(window) if !window.is_zero() => Ok(window),
                    _ => Err(format!("window={value} is not a duration (30d, 24h, 90m)")),
                };
            }
        }
        Ok(DEFAULT_WINDOW)
    };
    match segments.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        [] | ["rollouts"] => Ok(Page::Rollouts),
        ["rollouts", namespace, name] => Ok(Page::Rollout {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }),
        ["gitsyncs"] => Ok(Page::GitSyncs { window: window()? }),
        ["gitsyncs", namespace, name] => Ok(Page::GitSync {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            window: window()?,
        }),
        _ => Err(format!("no page at {path}")),
    }
}

/// A window in days (`30d`, what delivery figures are read over) or as any duration weir
/// reads (`24h`, `90m`).
fn window_of(text: &str) -> Option<Duration> {
    match text.strip_suffix('d') {
        Some(days) => days
            .parse::<u64>()
            .ok()
            .filter(|d| *d <= 3_650)
            .map(|d| Duration::from_secs(d * 86_400)),
        None => crate::duration::parse(text).ok(),
    }
}

/// Whether a request's Host names the dashboard itself: its loopback address and port.
pub fn own_host(host: Option<&str>, port: u16) -> bool {
    let Some(host) = host else {
        return false;
    };
    [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
    ]
    .iter()
    .any(|own| own.eq_ignore_ascii_case(host))
}

/// Whether a request's Origin, when the browser sends one, is the dashboard's own.
pub fn own_origin(origin: Option<&str>, port: u16) -> bool {
    match origin {
        None => true,
        Some(origin) => origin
            .strip_prefix("http://")
            .is_some_and(|host| own_host(Some(host), port)),
    }
}

/// Whether a posted token is the form token, compared in constant time.
pub fn token_matches(posted: Option<&str>, token: &str) -> bool {
    posted.is_some_and(|posted| {
        aws_lc_rs::constant_time::verify_slices_are_equal(posted.as_bytes(), token.as_bytes())
            .is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_path_names_its_page() {
        assert_eq!(page("/", None), Ok(Page::Rollouts));
        assert_eq!(page("/rollouts", None), Ok(Page::Rollouts));
        assert_eq!(
            page("/rollouts/shop/web", None),
            Ok(Page::Rollout {
                namespace: "shop".into(),
                name: "web".into()
            })
        );
        assert_eq!(
            page("/gitsyncs", None),
            Ok(Page::GitSyncs {
                window: DEFAULT_WINDOW
            })
        );
        assert_eq!(
            page("/gitsyncs/shop/app", Some("window=30d")),
            Ok(Page::GitSync {
                namespace: "shop".into(),
                name: "app".into(),
                window: Duration::from_secs(30 * 86_400)
            })
        );
        assert_eq!(
            page("/rollouts/a%2Fb/web", None),
            Ok(Page::Rollout {
                namespace: "a/b".into(),
                name: "web".into()
            })
        );
    }

    #[test]
    fn other_paths_and_bad_windows_are_refused_with_why() {
        assert_eq!(
            page("/rollouts/shop", None),
            Err("no page at /rollouts/shop".into())
        );
        assert_eq!(
            page("/etc/passwd", None),
            Err("no page at /etc/passwd".into())
        );
        assert!(page("/gitsyncs", Some("window=soon")).is_err_and(|e| e.contains("window=soon")));
        assert!(page("/gitsyncs", Some("window=0s")).is_err());
        assert!(page("/gitsyncs", Some("window=99999d")).is_err());
        assert_eq!(
            page("/gitsyncs", Some("window=90m")),
            Ok(Page::GitSyncs {
                window: Duration::from_secs(5_400)
            })
        );
    }

    #[test]
    fn only_the_dashboards_own_address_is_its_host() {
        assert!(own_host(Some("127.0.0.1:3100"), 3100));
        assert!(own_host(Some("localhost:3100"), 3100));
        assert!(own_host(Some("LOCALHOST:3100"), 3100));
        for other in [
            "127.0.0.1:3101",
            "evil.example:3100",
            "127.0.0.1",
            "127.0.0.1:3100.evil.example",
            "",
        ] {
            assert!(!own_host(Some(other), 3100), "{other}");
        }
        assert!(!own_host(None, 3100));
    }

    #[test]
    fn a_cross_site_origin_is_refused() {
        assert!(own_origin(None, 3100));
        assert!(own_origin(Some("http://127.0.0.1:3100"), 3100));
        assert!(!own_origin(Some("https://evil.example"), 3100));
        assert!(!own_origin(Some("null"), 3100));
        assert!(!own_origin(
            Some("http://127.0.0.1:3100.evil.example"),
            3100
        ));
    }

    #[test]
    fn the_token_must_be_the_forms() {
        assert!(token_matches(Some("abc123"), "abc123"));
        assert!(!token_matches(Some("abc124"), "abc123"));
        assert!(!token_matches(Some(""), "abc123"));
        assert!(!token_matches(None, "abc123"));
    }

    #[test]
    fn the_window_ends_now() {
        assert_eq!(
            Page::window(Duration::from_secs(100), 1_000),
            Window {
                from: 900,
                to: 1_001
            }
        );
    }
}
