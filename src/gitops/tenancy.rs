//! What a GitSync may reach: the identity it acts as, the namespaces its objects may land in,
//! the URLs it may fetch and the branches it may replace. Pure: the controller's flags come
//! in as a `Policy`, the decisions come out as words for a condition.
//!
//! Whoever can push to a watched repository or create a GitSync must not be able to do more
//! than the GitSync's ServiceAccount: the API server's RBAC decides each write (impersonation),
//! and weir itself refuses, before anything of a revision is applied, what leaves the
//! GitSync's namespace.

use crate::analysis::hosts::AllowedHosts;

/// The controller's tenancy flags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// `--default-service-account`: the ServiceAccount (in the GitSync's own namespace) a
    /// GitSync without `spec.serviceAccountName` acts as. None: such a GitSync acts as the
    /// controller itself (single-team clusters).
    pub default_service_account: Option<String>,
    /// `--allow-cross-namespace`: objects may name another namespace or be cluster-scoped (a
    /// platform team's GitSync). Impersonation still applies.
    pub allow_cross_namespace: bool,
    /// `--allow-file-urls`: `file://` repositories, which read the controller's own disk.
    pub allow_file_urls: bool,
    /// `--write-back-branch-prefix`: every `writeBack.branch`, which weir force-pushes,
    /// starts with this.
    pub write_back_prefix: String,
    /// `--allowed-metric-hosts`: an analysis template from Git naming another Prometheus
    /// address refuses its revision before it reaches the cluster.
    pub metric_hosts: AllowedHosts,
}

/// The prefix of branches weir owns, unless the controller is told otherwise.
pub const DEFAULT_WRITE_BACK_PREFIX: &str = "weir/";

impl Default for Policy {
    /// What the controller enforces when started with no tenancy flags: confined to the
    /// GitSync's namespace, no `file://`, write-back branches under `weir/`; lockdown is
    /// the chart's default (`tenancy.defaultServiceAccount`).
    fn default() -> Self {
        Policy {
            default_service_account: None,
            allow_cross_namespace: false,
            allow_file_urls: false,
            write_back_prefix: DEFAULT_WRITE_BACK_PREFIX.to_owned(),
            metric_hosts: AllowedHosts::any(),
        }
    }
}

/// Who a GitSync's dry runs, applies and prunes act as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    /// The controller's own ServiceAccount: lockdown is off and the GitSync names none.
    Controller,
    /// `system:serviceaccount:<namespace>:<name>`, impersonated.
    ServiceAccount {
        namespace: String,
        name: String,
        /// Where the name came from, for messages.
        from_default: bool,
    },
}

impl Identity {
    /// The user name the API server sees when this identity is impersonated.
    pub fn user(&self) -> Option<String> {
        match self {
            Identity::Controller => None,
            Identity::ServiceAccount {
                namespace, name, ..
            } => Some(format!("system:serviceaccount:{namespace}:{name}")),
        }
    }

    /// How a refusal names who was refused, and where that choice is made.
    pub fn describe(&self) -> String {
        match self {
            Identity::Controller => "the controller's own ServiceAccount (lockdown is off: the controller runs without --default-service-account)".into(),
            Identity::ServiceAccount {
                namespace,
                name,
                from_default: true,
            } => format!(
                "ServiceAccount {namespace}/{name} (the controller's --default-service-account; spec.serviceAccountName chooses another)"
            ),
            Identity::ServiceAccount {
                namespace, name, ..
            } => format!("ServiceAccount {namespace}/{name} (spec.serviceAccountName)"),
        }
    }
}

/// The identity of a GitSync in `namespace` that names `service_account` (or none).
pub fn identity(policy: &Policy, namespace: &str, service_account: Option<&str>) -> Identity {
    let named = service_account.filter(|name| !name.is_empty());
    let (name, from_default) = match (named, &policy.default_service_account) {
        (Some(name), _) => (name.to_owned(), false),
        (None, Some(default)) => (default.clone(), true),
        (None, None) => return Identity::Controller,
    };
    Identity::ServiceAccount {
        namespace: namespace.to_owned(),
        name,
        from_default,
    }
}

/// Where an object of a revision would land.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement<'a> {
    /// A namespaced kind, with the namespace its manifest names (None or empty: the
    /// GitSync's own).
    Namespaced(Option<&'a str>),
    ClusterScoped,
}

/// Why an object may not be applied by a GitSync in `home`, or None when it may. `what`
/// names the object and where it came from.
pub fn confine(policy: &Policy, home: &str, what: &str, placement: Placement) -> Option<String> {
    if policy.allow_cross_namespace {
        return None;
    }
    const HOW: &str = "a GitSync applies only into its own namespace, unless the controller runs with --allow-cross-namespace (for a platform team's GitSync)";
    match placement {
        Placement::Namespaced(None | Some("")) => None,
        Placement::Namespaced(Some(namespace)) if namespace == home => None,
        Placement::Namespaced(Some(namespace)) => Some(format!(
            "{what}: metadata.namespace is {namespace:?}, outside the GitSync's namespace {home:?} ({HOW}; leave metadata.namespace out to apply it into {home:?})"
        )),
        Placement::ClusterScoped => Some(format!("{what}: the kind is cluster-scoped ({HOW})")),
    }
}

/// Why an analysis template from Git may not be applied: a metric naming a Prometheus
/// address the controller's `--allowed-metric-hosts` refuses. `what` names the object.
pub fn refuse_metric_addresses(
    policy: &Policy,
    what: &str,
    object: &serde_json::Value,
) -> Option<String> {
    let group = object["apiVersion"].as_str().unwrap_or_default();
    let kind = object["kind"].as_str().unwrap_or_default();
    if !group.starts_with("weir.dev/")
        || !matches!(kind, "AnalysisTemplate" | "ClusterAnalysisTemplate")
    {
        return None;
    }
    let metrics = object["spec"]["metrics"].as_array()?;
    metrics.iter().enumerate().find_map(|(index, metric)| {
        let address = metric["provider"]["prometheus"]["address"].as_str()?;
        let why = policy.metric_hosts.check(address).err()?;
        Some(format!(
            "{what}: spec.metrics[{index}].provider.prometheus.address: {why}"
        ))
    })
}

/// Why the controller refuses to fetch `url`, or None.
pub fn refuse_url(policy: &Policy, url: &str) -> Option<String> {
    let scheme = url.trim().split_once("://").map(|(scheme, _)| scheme);
    (!policy.allow_file_urls && scheme.is_some_and(|s| s.eq_ignore_ascii_case("file"))).then(|| {
        "spec.url: file:// reads the controller's own disk (other GitSyncs' clones among it), so it is refused unless the controller runs with --allow-file-urls; serve the repository over https://, ssh:// or git://".to_owned()
    })
}

/// Why `writeBack.branch` may not be force-pushed, or None. `tracked` are the branches the
/// GitSyncs the controller sees follow (this one's included).
pub fn refuse_write_back_branch<'a>(
    policy: &Policy,
    branch: &str,
    tracked: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    let prefix = &policy.write_back_prefix;
    if !branch.starts_with(prefix.as_str()) || branch.len() == prefix.len() {
        return Some(format!(
            "spec.rollback.writeBack.branch: {branch:?} does not start with {prefix:?}; weir replaces this branch with each revert, so it must be one weir owns (name it {prefix}<something>, or leave it out to push to the tracked branch, which only ever gets a fast-forward)"
        ));
    }
    let mut tracked = tracked.into_iter();
    tracked.any(|t| t == branch).then(|| {
        format!(
            "spec.rollback.writeBack.branch: {branch:?} is a branch a GitSync follows; weir replaces this branch with each revert, so it must be one nobody follows"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn locked() -> Policy {
        Policy {
            default_service_account: Some("weir-gitsync".into()),
            ..Policy::default()
        }
    }

    #[test]
    fn the_named_service_account_wins_then_the_default_then_the_controller() {
        let named = identity(&locked(), "team-a", Some("deployer"));
        assert_eq!(
            named.user().as_deref(),
            Some("system:serviceaccount:team-a:deployer")
        );
        assert!(named.describe().contains("spec.serviceAccountName"));
        let default = identity(&locked(), "team-a", None);
        assert_eq!(
            default.user().as_deref(),
            Some("system:serviceaccount:team-a:weir-gitsync")
        );
        assert!(default.describe().contains("--default-service-account"));
        assert_eq!(identity(&locked(), "team-a", Some("")), default);
        let open = Policy::default();
        assert_eq!(identity(&open, "team-a", None), Identity::Controller);
        assert_eq!(identity(&open, "team-a", None).user(), None);
        assert_eq!(
            identity(&open, "team-a", Some("deployer"))
                .user()
                .as_deref(),
            Some("system:serviceaccount:team-a:deployer"),
            "a named ServiceAccount is impersonated with lockdown off too"
        );
    }

    #[test]
    fn objects_stay_in_the_gitsyncs_namespace() {
        let policy = Policy::default();
        let home = "team-a";
        assert_eq!(
            confine(&policy, home, "x", Placement::Namespaced(None)),
            None
        );
        assert_eq!(
            confine(&policy, home, "x", Placement::Namespaced(Some(""))),
            None
        );
        assert_eq!(
            confine(&policy, home, "x", Placement::Namespaced(Some(home))),
            None
        );
        let elsewhere = confine(
            &policy,
            home,
            "ConfigMap team-b/x (deploy/a.yaml, document 0)",
            Placement::Namespaced(Some("team-b")),
        )
        .unwrap_or_default();
        assert!(
            elsewhere.starts_with(
                "ConfigMap team-b/x (deploy/a.yaml, document 0): metadata.namespace is \"team-b\""
            ),
            "{elsewhere}"
        );
        assert!(elsewhere.contains("--allow-cross-namespace"), "{elsewhere}");
        let cluster = confine(
            &policy,
            home,
            "ClusterRoleBinding x",
            Placement::ClusterScoped,
        )
        .unwrap_or_default();
        assert!(cluster.contains("cluster-scoped"), "{cluster}");
        let open = Policy {
            allow_cross_namespace: true,
            ..Policy::default()
        };
        assert_eq!(confine(&open, home, "x", Placement::ClusterScoped), None);
        assert_eq!(
            confine(&open, home, "x", Placement::Namespaced(Some("team-b"))),
            None
        );
    }

    proptest! {
        /// Confined, an object is accepted exactly when it lands in the home namespace.
        #[test]
        fn confined_objects_land_only_at_home(
            home in "[a-z][a-z0-9-]{0,8}",
            named in proptest::option::of("[a-z0-9-]{0,10}"),
            cluster_scoped in any::<bool>(),
        ) {
            let placement = if cluster_scoped {
                Placement::ClusterScoped
            } else {
                Placement::Namespaced(named.as_deref())
            };
            let lands_home = !cluster_scoped
                && named.as_deref().is_none_or(|n| n.is_empty() || n == home);
            let refused = confine(&Policy::default(), &home, "x", placement);
            prop_assert_eq!(refused.is_none(), lands_home);
        }
    }

    #[test]
    fn analysis_templates_from_git_query_only_allowed_addresses() {
        let policy = Policy {
            metric_hosts: AllowedHosts::parse("https://prometheus.monitoring:9090")
                .unwrap_or_default(),
            ..Policy::default()
        };
        let template = |address: &str| {
            serde_json::json!({"apiVersion": "weir.dev/v1alpha1", "kind": "AnalysisTemplate",
                "metadata": {"name": "t"}, "spec": {"metrics": [
                    {"name": "ok", "provider": {"prometheus": {"query": "up"}}},
                    {"name": "out", "provider": {"prometheus": {"address": address, "query": "up"}}}]}})
        };
        let refused = refuse_metric_addresses(
            &policy,
            "AnalysisTemplate t",
            &template("https://evil.example"),
        )
        .unwrap_or_default();
        assert!(
            refused.starts_with("AnalysisTemplate t: spec.metrics[1].provider.prometheus.address:"),
            "{refused}"
        );
        assert!(refused.contains("--allowed-metric-hosts"), "{refused}");
        assert_eq!(
            refuse_metric_addresses(
                &policy,
                "t",
                &template("https://prometheus.monitoring:9090")
            ),
            None
        );
        let other_kind = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
            "spec": {"metrics": [{"provider": {"prometheus": {"address": "https://evil.example"}}}]}});
        assert_eq!(refuse_metric_addresses(&policy, "c", &other_kind), None);
        assert_eq!(
            refuse_metric_addresses(&Policy::default(), "t", &template("https://evil.example")),
            None,
            "without the flag any address is allowed"
        );
    }

    #[test]
    fn file_urls_need_the_flag() {
        let policy = Policy::default();
        for url in ["file:///var/cache/weir/git", "FILE:///x", " file:///x"] {
            let refused = refuse_url(&policy, url).unwrap_or_default();
            assert!(refused.contains("--allow-file-urls"), "{url}: {refused}");
        }
        for url in [
            "https://git.example/a.git",
            "ssh://git@git.example/a",
            "git://127.0.0.1/a",
        ] {
            assert_eq!(refuse_url(&policy, url), None, "{url}");
        }
        let open = Policy {
            allow_file_urls: true,
            ..Policy::default()
        };
        assert_eq!(refuse_url(&open, "file:///x"), None);
    }

    #[test]
    fn write_back_branches_are_weirs_own_and_nobody_follows_them() {
        let policy = Policy::default();
        let none: [&str; 0] = [];
        assert_eq!(
            refuse_write_back_branch(&policy, "weir/reverts", ["main"]),
            None
        );
        for branch in ["main", "release", "weir", "weir/", "reverts/weir/x"] {
            let refused = refuse_write_back_branch(&policy, branch, none).unwrap_or_default();
            assert!(refused.contains("\"weir/\""), "{branch}: {refused}");
        }
        let tracked = refuse_write_back_branch(&policy, "weir/main", ["main", "weir/main"])
            .unwrap_or_default();
        assert!(tracked.contains("a GitSync follows"), "{tracked}");
        let other = Policy {
            write_back_prefix: "bots/".into(),
            ..Policy::default()
        };
        assert_eq!(refuse_write_back_branch(&other, "bots/x", none), None);
        assert!(refuse_write_back_branch(&other, "weir/x", none).is_some());
    }
}
