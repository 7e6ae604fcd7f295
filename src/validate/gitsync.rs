//! The rules of a GitSync.

use super::names::{NameRule, check_name};
use super::violation::{Report, Violation};
use crate::api::gitsync::GitSyncSpec;
use crate::duration;

/// Hex digits in a commit SHA of the repositories weir reads: SHA-1 (gix is built with sha1
/// only).
pub const SHA_LEN: usize = 40;

/// Whether `text` is a whole commit SHA, as `git rev-parse` prints it (either case).
pub fn is_full_sha(text: &str) -> bool {
    text.len() == SHA_LEN && text.bytes().all(|b| b.is_ascii_hexdigit())
}

pub fn git_sync(spec: &GitSyncSpec) -> Vec<Violation> {
    let mut report = Report::default();
    report.unsupported("spec", spec);
    let url = spec.url.trim();
    let scheme_ok = ["https://", "http://", "ssh://", "git://", "file://"]
        .iter()
        .any(|s| url.starts_with(s));
    if url.is_empty() {
        report.required("spec.url", "name the repository to follow");
    } else if !scheme_ok {
        let hint = if url.contains('@') && url.contains(':') {
            " (for scp-like addresses write ssh://user@host/path)"
        } else {
            ""
        };
        report.invalid(
            "spec.url",
            format!("{url:?} must start with https://, http://, ssh://, git:// or file://{hint}"),
        );
    }
    let authority = url
        .split_once("://")
        .map_or("", |(_, rest)| rest.split('/').next().unwrap_or(rest));
    let scheme = url.split_once("://").map_or("", |(scheme, _)| scheme);
    // ssh://git@host names the SSH user; anything before @ in an http(s) URL is a credential.
    if authority
        .rsplit_once('@')
        .is_some_and(|(userinfo, _)| userinfo.contains(':') || matches!(scheme, "http" | "https"))
    {
        // Anything in the URL shows in conditions, Events and logs.
        report.invalid(
            "spec.url",
            "must not carry a password or token: put it in the Secret named by spec.secretRef (key password)",
        );
    }
    let git_ref = &spec.git_ref;
    let refs = [
        git_ref.branch.is_some(),
        git_ref.tag.is_some(),
        git_ref.commit.is_some(),
    ];
    if refs.iter().filter(|r| **r).count() != 1 {
        report.invalid("spec.ref", "takes exactly one of branch, tag or commit");
    }
    if let Some(commit) = &git_ref.commit
        && !is_full_sha(commit)
    {
        report.invalid(
            "spec.ref.commit",
            format!("{commit:?} is not a full commit SHA (40 hex digits)"),
        );
    }
    for (field, name) in [("branch", &git_ref.branch), ("tag", &git_ref.tag)] {
        if name.as_deref().is_some_and(|n| {
            n.is_empty()
                || n.starts_with('-')
                || n.contains("..")
                || n.contains(char::is_whitespace)
        }) {
            report.invalid(format!("spec.ref.{field}"), "is not a valid Git ref name");
        }
    }
    if spec.path.starts_with('/') || spec.path.split('/').any(|part| part == "..") {
        report.invalid(
            "spec.path",
            format!(
                "{:?} must be a path inside the repository (relative, without ..)",
                spec.path
            ),
        );
    }
    match duration::parse(&spec.interval) {
        // Below a second a GitSync would fetch and apply in a loop for everyone's workers.
        Ok(interval) if interval < std::time::Duration::from_secs(1) => report.invalid(
            "spec.interval",
            format!(
                "{:?} is shorter than the minimum of 1s; use a push webhook for changes to arrive at once",
                spec.interval
            ),
        ),
        Ok(_) => {}
        Err(error) => report.invalid("spec.interval", error.to_string()),
    }
    match duration::parse(&spec.health_timeout) {
        // Workloads are looked at every few seconds: a shorter wait would reject a revision
        // before its objects were seen at all.
        Ok(timeout) if timeout < std::time::Duration::from_secs(10) => report.invalid(
            "spec.healthTimeout",
            format!(
                "{:?} is shorter than the minimum of 10s; give workloads the time they need to become ready (default 5m)",
                spec.health_timeout
            ),
        ),
        Ok(_) => {}
        Err(error) => report.invalid("spec.healthTimeout", error.to_string()),
    }
    if let Some(secret) = &spec.secret_ref {
        check_name(
            &mut report,
            "spec.secretRef.name",
            &secret.name,
            NameRule::Dns1123Subdomain,
        );
    }
    if let Some(account) = &spec.service_account_name {
        check_name(
            &mut report,
            "spec.serviceAccountName",
            account,
            NameRule::Dns1123Subdomain,
        );
    }
    // A bound keeps the dependency walk and the status message small; real stacks have a
    // handful of layers.
    const MOST_DEPENDENCIES: usize = 32;
    if spec.depends_on.len() > MOST_DEPENDENCIES {
        report.invalid(
            "spec.dependsOn",
            format!(
                "names {} GitSyncs; at most {MOST_DEPENDENCIES} are allowed",
                spec.depends_on.len()
            ),
        );
    }
    let mut named = std::collections::BTreeSet::new();
    for (i, dependency) in spec.depends_on.iter().enumerate() {
        let field = format!("spec.dependsOn[{i}].name");
        check_name(
            &mut report,
            &field,
            &dependency.name,
            NameRule::Dns1123Subdomain,
        );
        if !named.insert(dependency.name.as_str()) {
            report.invalid(field, format!("{:?} is named twice", dependency.name));
        }
    }
    if let Some(kube_config) = &spec.kube_config {
        report.unsupported("spec.kubeConfig", kube_config);
        report.unsupported("spec.kubeConfig.secretRef", &kube_config.secret_ref);
        check_name(
            &mut report,
            "spec.kubeConfig.secretRef.name",
            &kube_config.secret_ref.name,
            NameRule::Dns1123Subdomain,
        );
        if kube_config.secret_ref.key.as_deref() == Some("") {
            report.invalid(
                "spec.kubeConfig.secretRef.key",
                "name the key, or leave it out for value (then value.yaml)",
            );
        }
    }
    if let Some(promotion) = &spec.promotion {
        check_promotion(&mut report, spec, promotion);
    }
    if let Some(decryption) = &spec.decryption {
        report.unsupported("spec.decryption", decryption);
        if decryption.provider != "sops" {
            report.invalid(
                "spec.decryption.provider",
                format!(
                    "{:?} is not a decryption provider weir has: the only one is sops",
                    decryption.provider
                ),
            );
        }
        match &decryption.secret_ref {
            Some(secret) => check_name(
                &mut report,
                "spec.decryption.secretRef.name",
                &secret.name,
                NameRule::Dns1123Subdomain,
            ),
            None => report.required(
                "spec.decryption.secretRef",
                "name the Secret, in this namespace, whose .agekey entries hold the age identities",
            ),
        }
    }
    let write_back = &spec.rollback.write_back;
    if write_back.enabled {
        for (field, value) in [
            ("authorName", &write_back.author_name),
            ("authorEmail", &write_back.author_email),
        ] {
            if value.as_deref().is_none_or(|v| v.trim().is_empty()) {
                report.required(
                    format!("spec.rollback.writeBack.{field}"),
                    "revert commits need an author when write-back is enabled",
                );
            }
        }
        if !spec.rollback.on_failure {
            report.invalid(
                "spec.rollback.writeBack.enabled",
                "write-back reverts a rolled-back revision, so it needs rollback.onFailure: true",
            );
        }
        if git_ref.branch.is_none() && write_back.branch.is_none() {
            report.required(
                "spec.rollback.writeBack.branch",
                "with a tag or commit ref there is no tracked branch to push to; name one",
            );
        }
        if write_back.branch.is_some() && write_back.branch == git_ref.branch {
            report.invalid(
                "spec.rollback.writeBack.branch",
                "weir replaces this branch with each revert (it is for a pull request), so it must not be the tracked branch; leave it out to push to the tracked branch, which only ever gets a fast-forward",
            );
        }
    }
    if let Some(branch) = &write_back.branch
        && (branch.is_empty() || branch.contains("..") || branch.contains(char::is_whitespace))
    {
        report.invalid(
            "spec.rollback.writeBack.branch",
            "is not a valid Git branch name",
        );
    }
    report.finish()
}

/// `spec.promotion`: an upstream named, a soak that parses, an approval weir knows, and no
/// write-back (the first GitSync of a chain writes back: a promoted one applies the
/// upstream's revisions, not its branch's head).
fn check_promotion(
    report: &mut Report,
    spec: &GitSyncSpec,
    promotion: &crate::api::gitsync::Promotion,
) {
    report.unsupported("spec.promotion", promotion);
    report.unsupported("spec.promotion.from", &promotion.from);
    check_name(
        report,
        "spec.promotion.from.gitSync",
        &promotion.from.git_sync,
        NameRule::Dns1123Subdomain,
    );
    if let Some(namespace) = promotion
        .from
        .namespace
        .as_deref()
        .filter(|n| !n.is_empty())
    {
        check_name(
            report,
            "spec.promotion.from.namespace",
            namespace,
            NameRule::Dns1123Label,
        );
    }
    if let Some(soak) = &promotion.soak
        && let Err(error) = duration::parse(soak)
    {
        report.invalid("spec.promotion.soak", error.to_string());
    }
    if let Some(approval) = promotion.approval.as_deref()
        && !matches!(approval, "Auto" | "Manual")
    {
        report.invalid(
            "spec.promotion.approval",
            format!("{approval:?} is not Auto or Manual"),
        );
    }
    if spec.rollback.write_back.enabled {
        report.invalid(
            "spec.rollback.writeBack.enabled",
            "a GitSync that promotes from another applies the upstream's revisions, not its branch's head: let the first GitSync of the chain write back, and turn it off here",
        );
    }
}
