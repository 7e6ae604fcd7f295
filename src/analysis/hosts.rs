//! Which Prometheus addresses analysis may query (`--allowed-metric-hosts`). An address comes
//! from a tenant's template; without a list weir sends its queries, and the credentials they
//! carry, wherever a tenant points it. Pure.
//!
//! Addresses and entries are parsed with reqwest's own URL parser (the `url` crate), the one
//! that parses the address again when the query is sent: what is checked is what is dialled.

use reqwest::Url;

use crate::api::analysis::Metric;

/// The flag, for messages.
pub const FLAG: &str = "--allowed-metric-hosts";

#[derive(Clone, Debug, PartialEq, Eq)]
enum Entry {
    /// A bare host (`prometheus.monitoring`): http or https, any port, any path.
    Host(String),
    /// A URL prefix (`https://prometheus.monitoring:9090/prom`): this scheme, this host, this
    /// port (the scheme's default when none is written), and a path at or below this one.
    Prefix {
        scheme: String,
        host: String,
        port: Option<u16>,
        path: Vec<String>,
    },
}

/// The addresses analysis may query: any (the default, without the flag), or those the list
/// allows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowedHosts {
    /// None: any address.
    entries: Option<Vec<Entry>>,
    /// The list as given, for messages.
    text: String,
}

impl AllowedHosts {
    /// Any address: the default.
    pub fn any() -> AllowedHosts {
        AllowedHosts::default()
    }

    /// A comma-separated list of URL prefixes and bare hosts. Entries with credentials, a
    /// query or a fragment, or a bare host with a port or path, are refused: they would mean
    /// something other than what they seem to.
    pub fn parse(text: &str) -> Result<AllowedHosts, String> {
        let mut entries = Vec::new();
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            entries.push(parse_entry(entry)?);
        }
        if entries.is_empty() {
            return Err(format!(
                "{FLAG} is empty: list the Prometheus addresses analysis may query (https://prometheus.monitoring:9090, prometheus.monitoring), or leave the flag out to allow any"
            ));
        }
        Ok(AllowedHosts {
            entries: Some(entries),
            text: text.trim().to_owned(),
        })
    }

    /// Whether `address` may be queried; Err says why not.
    pub fn check(&self, address: &str) -> Result<(), String> {
        let Some(entries) = &self.entries else {
            return Ok(());
        };
        let url = Url::parse(address).map_err(|e| format!("{address:?} is not a URL ({e})"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("{address:?} is not an http:// or https:// URL"));
        }
        let Some(host) = url.host_str() else {
            return Err(format!("{address:?} names no host"));
        };
        let path = segments(&url);
        let allowed = entries.iter().any(|entry| match entry {
            Entry::Host(allowed) => allowed == host,
            Entry::Prefix {
                scheme,
                host: allowed,
                port,
                path: under,
            } => {
                scheme == url.scheme()
                    && allowed == host
                    && *port == url.port_or_known_default()
                    && path.starts_with(under)
            }
        });
        if allowed {
            Ok(())
        } else {
            Err(format!(
                "{address:?} (host {host}) is not allowed by the controller's {FLAG} ({})",
                self.text
            ))
        }
    }

    /// The first metric whose address the list refuses, as a message naming the run, the
    /// metric, the field and the flag; None when every metric may be measured. A metric
    /// without an address uses `default` (`--prometheus-url`); with neither, it is reported
    /// when it is measured.
    pub fn refused(&self, run: &str, metrics: &[Metric], default: Option<&str>) -> Option<String> {
        metrics.iter().enumerate().find_map(|(index, metric)| {
            // A web URL built from arguments is checked once they are filled, before sending.
            if let Some(web) = metric.provider.web.as_ref().filter(|w| !w.url.contains("{{")) {
                let why = self.check(&web.url).err()?;
                return Some(format!(
                    "AnalysisRun {run}, metric {:?}: spec.metrics[{index}].provider.web.url: {why}; use a URL the operator allows, or ask them to add it to {FLAG}. Nothing was sent and no Secret was read",
                    metric.name
                ));
            }
            let prometheus = metric.provider.prometheus.as_ref()?;
            let field = format!("spec.metrics[{index}].provider.prometheus.address");
            let (address, from) = match (&prometheus.address, default) {
                (Some(address), _) => (address.as_str(), field),
                (None, Some(default)) => (
                    default,
                    format!("--prometheus-url (the controller's default, as {field} is not set)"),
                ),
                (None, None) => return None,
            };
            // One built from arguments is checked once they are filled, before sending.
            if address.contains("{{") {
                return None;
            }
            let why = self.check(address).err()?;
            Some(format!(
                "AnalysisRun {run}, metric {:?}: {from}: {why}; use an address the operator allows, or ask them to add it to {FLAG}. Nothing was queried and no Secret was read",
                metric.name
            ))
        })
    }
}

fn parse_entry(entry: &str) -> Result<Entry, String> {
    let refuse = |why: &str| Err(format!("{FLAG}: entry {entry:?} {why}"));
    if entry.contains("://") {
        let Ok(url) = Url::parse(entry) else {
            return refuse("is not a URL");
        };
        if !matches!(url.scheme(), "http" | "https") {
            return refuse("must be an http:// or https:// URL, or a bare host");
        }
        if !url.username().is_empty() || url.password().is_some() {
            return refuse("carries credentials; write the URL without user:password@");
        }
        if url.query().is_some() || url.fragment().is_some() {
            return refuse("has a query or fragment; write scheme://host[:port][/path]");
        }
        let Some(host) = url.host_str() else {
            return refuse("names no host");
        };
        return Ok(Entry::Prefix {
            scheme: url.scheme().to_owned(),
            host: host.to_owned(),
            port: url.port_or_known_default(),
            path: segments(&url),
        });
    }
    // A bare host goes through the same parser as an address, so it is normalised the same
    // way (case, IDNA, numeric IPv4 forms); anything but a host is refused.
    if entry.contains(['/', '@', '?', '#', '\\']) {
        return refuse("is not a bare host; write a URL prefix such as https://HOST:PORT/PATH");
    }
    let Ok(url) = Url::parse(&format!("http://{entry}/")) else {
        return refuse("is not a host name or IP address");
    };
    if url.port().is_some() {
        return refuse("has a port; write a URL prefix such as http://HOST:PORT to name one");
    }
    match url.host_str() {
        Some(host) if url.path() == "/" => Ok(Entry::Host(host.to_owned())),
        _ => refuse("is not a host name or IP address"),
    }
}

/// The non-empty path segments, so `/prom` and `/prom/` are the same prefix and `/prom` is
/// not a prefix of `/prometheus`.
fn segments(url: &Url) -> Vec<String> {
    url.path_segments()
        .map(|parts| parts.filter(|s| !s.is_empty()).map(str::to_owned).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn list(text: &str) -> AllowedHosts {
        AllowedHosts::parse(text).expect("a valid list")
    }

    fn allows(list: &AllowedHosts, address: &str) -> bool {
        list.check(address).is_ok()
    }

    #[test]
    fn without_the_flag_any_address_is_allowed() {
        assert!(allows(&AllowedHosts::any(), "https://evil.com/"));
        assert!(allows(&AllowedHosts::any(), "not a url"));
    }

    #[test]
    fn a_bare_host_allows_that_host_on_any_port_and_path() {
        let hosts = list("prometheus.monitoring");
        for address in [
            "http://prometheus.monitoring",
            "https://prometheus.monitoring:9090",
            "http://prometheus.monitoring:9090/prometheus/",
            "http://PROMETHEUS.Monitoring:9090",
            "https://user:pw@prometheus.monitoring",
        ] {
            assert!(allows(&hosts, address), "{address}");
        }
    }

    #[test]
    fn tricks_that_name_the_host_elsewhere_are_refused() {
        let hosts = list("prometheus.monitoring, https://thanos.monitoring:9090/query");
        for address in [
            "https://prometheus.monitoring.evil.com",
            "https://prometheus.monitoring@evil.com",
            "https://prometheus.monitoring:9090@evil.com/",
            "https://evil.com/?x=prometheus.monitoring",
            "https://evil.com/prometheus.monitoring",
            "https://evil.com#prometheus.monitoring",
            "https://evilprometheus.monitoring",
            "https://prometheus.monitoring.",
            "ftp://prometheus.monitoring",
            "prometheus.monitoring",
            "https://thanos.monitoring/query",
            "http://thanos.monitoring:9090/query",
            "https://thanos.monitoring:9091/query",
            "https://thanos.monitoring:9090/",
            "https://thanos.monitoring:9090/query-evil",
            "https://thanos.monitoring:9090/query/../admin",
        ] {
            assert!(!allows(&hosts, address), "{address} must be refused");
        }
    }

    #[test]
    fn a_prefix_allows_its_scheme_host_port_and_paths_below_it() {
        let hosts = list("https://thanos.monitoring:9090/query/, http://prom.monitoring");
        for address in [
            "https://thanos.monitoring:9090/query",
            "https://thanos.monitoring:9090/query/",
            "https://THANOS.monitoring:9090/query/api",
            "https://thanos.monitoring:9090/query?x=1",
            "http://prom.monitoring",
            "http://prom.monitoring:80/",
            "http://prom.monitoring/anything",
        ] {
            assert!(allows(&hosts, address), "{address}");
        }
        // No port written is the scheme's default, as in any URL.
        assert!(!allows(&hosts, "http://prom.monitoring:9090"));
        assert!(!allows(&hosts, "https://prom.monitoring"));
    }

    #[test]
    fn a_trailing_dot_is_a_different_host_both_ways() {
        // Inside a cluster `prometheus.monitoring` goes through the search path and
        // `prometheus.monitoring.` does not: they may resolve to different machines.
        assert!(!allows(
            &list("prometheus.monitoring"),
            "http://prometheus.monitoring./"
        ));
        assert!(!allows(
            &list("prometheus.monitoring."),
            "http://prometheus.monitoring/"
        ));
        assert!(allows(
            &list("prometheus.monitoring."),
            "http://prometheus.monitoring./"
        ));
    }

    #[test]
    fn ip_addresses_compare_as_addresses() {
        let hosts = list("127.0.0.1, [::1]");
        assert!(allows(&hosts, "http://127.0.0.1:9090"));
        // The numeric form the parser (and so the connection) reads as 127.0.0.1.
        assert!(allows(&hosts, "http://2130706433:9090"));
        assert!(allows(&hosts, "http://[0:0::1]:9090"));
        assert!(!allows(&hosts, "http://127.0.0.2:9090"));
    }

    #[test]
    fn entries_that_could_mislead_are_refused_naming_the_flag() {
        for entry in [
            "https://user:pw@prometheus.monitoring",
            "https://prometheus.monitoring/?x=1",
            "https://prometheus.monitoring/#x",
            "ftp://prometheus.monitoring",
            "prometheus.monitoring:9090",
            "prometheus.monitoring/prom",
            "user@prometheus.monitoring",
            "https://",
            "",
            " , ",
        ] {
            let error = AllowedHosts::parse(entry).expect_err(entry);
            assert!(error.contains(FLAG), "{error}");
        }
    }

    fn metric(name: &str, address: Option<&str>) -> Metric {
        let mut prometheus = serde_json::json!({"query": "up"});
        if let Some(address) = address {
            prometheus["address"] = address.into();
        }
        serde_json::from_value(serde_json::json!({"name": name, "successCondition": "true",
            "provider": {"prometheus": prometheus}}))
        .expect("a metric")
    }

    #[test]
    fn a_refused_run_is_told_which_metric_field_and_flag() {
        let hosts = list("prometheus.monitoring");
        let metrics = [
            metric("fine", Some("http://prometheus.monitoring:9090")),
            metric("errors", Some("https://evil.com")),
        ];
        let message = hosts
            .refused("shop/web-abc-1-2", &metrics, None)
            .expect("refused");
        for part in [
            "AnalysisRun shop/web-abc-1-2",
            "metric \"errors\"",
            "spec.metrics[1].provider.prometheus.address",
            "host evil.com",
            FLAG,
        ] {
            assert!(message.contains(part), "{part:?} missing from {message}");
        }
        let by_default = [metric("latency", None)];
        let message = hosts
            .refused("shop/run", &by_default, Some("http://prom.elsewhere:9090"))
            .expect("the default is checked too");
        assert!(
            message.contains("--prometheus-url")
                && message.contains("spec.metrics[0].provider.prometheus.address is not set"),
            "{message}"
        );
        assert_eq!(
            hosts.refused(
                "shop/run",
                &by_default,
                Some("http://prometheus.monitoring")
            ),
            None
        );
        assert_eq!(hosts.refused("shop/run", &by_default, None), None);
        assert_eq!(
            AllowedHosts::any().refused("shop/run", &metrics, None),
            None
        );
        // A web metric's literal URL is checked like an address; one built from arguments
        // waits until they are filled.
        let web = |url: &str| -> Metric {
            serde_json::from_value(
                serde_json::json!({"name": "web", "successCondition": "true",
                "provider": {"web": {"url": url}}}),
            )
            .expect("a metric")
        };
        let message = hosts
            .refused("shop/run", &[web("https://evil.com/m")], None)
            .expect("refused");
        assert!(
            message.contains("spec.metrics[0].provider.web.url") && message.contains(FLAG),
            "{message}"
        );
        assert_eq!(
            hosts.refused("shop/run", &[web("http://prometheus.monitoring/m")], None),
            None
        );
        assert_eq!(
            hosts.refused("shop/run", &[web("{{args.url}}")], None),
            None
        );
    }

    /// Labels start with a letter (an all-numeric name is an IPv4 address to the parser) and
    /// have no hyphens (`xn--` is IDNA, which refuses what is not valid punycode).
    fn label() -> impl Strategy<Value = String> {
        "[a-z][a-z0-9]{0,7}"
    }

    fn host() -> impl Strategy<Value = String> {
        prop::collection::vec(label(), 1..4).prop_map(|labels| labels.join("."))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// Whatever an address carries besides its host (userinfo naming an allowed host, a
        /// path or query or fragment naming one, any port or scheme), a host not in the list
        /// is never allowed.
        #[test]
        fn an_address_whose_host_is_not_listed_is_never_allowed(
            allowed in prop::collection::vec(host(), 1..4),
            target in host(),
            scheme in prop::sample::select(vec!["http", "https"]),
            port in prop::option::of(1u16..),
            user in prop::option::of(0usize..4),
            path in "[a-z0-9./?#=&%-]{0,24}",
            decoy in 0usize..4,
        ) {
            prop_assume!(!allowed.contains(&target));
            let listed = allowed.join(",");
            let hosts = AllowedHosts::parse(&listed).expect("valid");
            let decoy = &allowed[decoy % allowed.len()];
            let userinfo = match user {
                None => String::new(),
                Some(0) => format!("{decoy}@"),
                Some(1) => format!("{decoy}:9090@"),
                Some(_) => format!("user:{decoy}@"),
            };
            let port = port.map(|p| format!(":{p}")).unwrap_or_default();
            let address = format!("{scheme}://{userinfo}{target}{port}/{path}{decoy}");
            prop_assert!(hosts.check(&address).is_err(), "{address} allowed by {listed}");
            // Nor one that merely starts or ends with an allowed host.
            for near in [
                format!("{decoy}.{target}"),
                format!("{target}.{decoy}"),
                format!("{decoy}{target}"),
                format!("{decoy}-{target}"),
            ] {
                if allowed.contains(&near) {
                    continue;
                }
                let address = format!("{scheme}://{near}{port}/");
                prop_assert!(hosts.check(&address).is_err(), "{address} allowed by {listed}");
            }
        }

        /// A listed bare host is allowed whatever its case, port and path.
        #[test]
        fn a_listed_host_is_allowed_at_any_port_and_path(
            allowed in host(),
            scheme in prop::sample::select(vec!["http", "https"]),
            port in prop::option::of(1u16..),
            path in "[a-z0-9/]{0,16}",
        ) {
            let hosts = AllowedHosts::parse(&allowed).expect("valid");
            let port = port.map(|p| format!(":{p}")).unwrap_or_default();
            let address = format!("{scheme}://{}{port}/{path}", allowed.to_uppercase());
            prop_assert!(hosts.check(&address).is_ok(), "{address} refused by {allowed}");
        }

        /// A prefix allows exactly its own scheme, host and port.
        #[test]
        fn a_prefix_allows_no_other_scheme_or_port(
            allowed in host(),
            listed_port in 1u16..,
            port in 1u16..,
            secure in any::<bool>(),
            other_scheme in any::<bool>(),
        ) {
            let scheme = if secure { "https" } else { "http" };
            let hosts = AllowedHosts::parse(&format!("{scheme}://{allowed}:{listed_port}")).expect("valid");
            let used = if other_scheme { if secure { "http" } else { "https" } } else { scheme };
            let address = format!("{used}://{allowed}:{port}/api");
            prop_assert_eq!(
                hosts.check(&address).is_ok(),
                !other_scheme && port == listed_port,
                "{}", address
            );
        }
    }
}
