//! Writing a rollback back to Git: a revert commit of a rejected revision, built in the
//! GitSync's clone with gitoxide, and pushed with the git CLI (gitoxide does not push).
//!
//! The revert's tree is the rejected head's, with `path` as it was at the last good
//! revision: what the GitSync renders from it equals what the cluster holds, so fetching it
//! starts no canary. Files outside `path` belong to others and are left alone.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use super::credentials::Credentials;
use super::error::SyncError;
use super::render::normalize;
use super::source::{SSH_STDERR, fail, ssh_command, ssh_diagnosis};
use super::status::short;
use crate::api::gitsync::RejectedRevision;

pub const REJECTED_TRAILER: &str = "Weir-Rejected-Revision";
pub const REASON_TRAILER: &str = "Weir-Reason";

/// Who revert commits are by (`spec.rollback.writeBack.authorName` and `authorEmail`).
#[derive(Clone, Debug)]
pub struct Author {
    pub name: String,
    pub email: String,
}

/// The revert commit's message: a subject in the form `git revert` uses, what happened in
/// words, and the trailers tools can search for.
pub fn message(
    rejected_subject: &str,
    rejected: &RejectedRevision,
    good: &str,
    paths: &[&str],
) -> String {
    let places: Vec<String> = paths.iter().map(|p| normalize(p)).collect();
    let place = if places.is_empty() || places.iter().any(String::is_empty) {
        "the repository".to_owned()
    } else {
        places
            .iter()
            .map(|p| format!("{p}/"))
            .collect::<Vec<_>>()
            .join(" and ")
    };
    let cause = super::rollback::cause(rejected);
    // A trailer is one line: a reason never spans more.
    let reason = rejected.reason.replace(['\r', '\n'], " ");
    format!(
        "Revert \"{subject}\"\n\n\
         weir rejected {revision} ({cause}) and rolled the cluster back to\n\
         {good}, the last good revision. This commit restores {place} to it,\n\
         so that Git and the cluster agree again.\n\n\
         {REJECTED_TRAILER}: {revision}\n\
         {REASON_TRAILER}: {reason}\n",
        subject = rejected_subject.replace(['\r', '\n'], " "),
        revision = rejected.revision,
    )
}

/// Builds the revert of `head` (rejected) back to `good` at `paths` (one of them `""`: the
/// whole tree) in the clone, and returns its SHA; None when `paths` at `head` already equal
/// `good` (nothing to revert). The same inputs always give the same commit.
pub fn revert_commit(
    dir: &Path,
    head: &str,
    good: &str,
    paths: &[&str],
    rejected: &RejectedRevision,
    author: &Author,
) -> Result<Option<String>, SyncError> {
    let repo = gix::open(dir).map_err(|e| fail("opening the local clone", e))?;
    let commit = |revision: &str| {
        let id = gix::ObjectId::from_hex(revision.as_bytes())
            .map_err(|_| SyncError::invalid(format!("{revision:?} is not a commit SHA")))?;
        repo.find_commit(id)
            .map_err(|e| fail(&format!("reading commit {revision}"), e))
    };
    let head_commit = commit(head)?;
    let subject = head_commit
        .message()
        .map(|m| m.summary().to_string())
        .unwrap_or_default();
    let head_tree = head_commit
        .tree_id()
        .map_err(|e| fail(&format!("reading the tree of {head}"), e))?
        .detach();
    let good_tree = commit(good)?
        .tree()
        .map_err(|e| fail(&format!("reading the tree of {good}"), e))?;
    let prefixes: Vec<String> = paths.iter().map(|p| normalize(p)).collect();
    let tree = if prefixes.is_empty() || prefixes.iter().any(String::is_empty) {
        good_tree.id
    } else {
        let mut editor = repo
            .edit_tree(head_tree)
            .map_err(|e| fail(&format!("reading the tree of {head}"), e))?;
        for prefix in &prefixes {
            let at_good = good_tree
                .lookup_entry_by_path(prefix)
                .map_err(|e| fail(&format!("reading {prefix} at {good}"), e))?;
            match at_good {
                Some(entry) => editor.upsert(
                    prefix.as_str(),
                    gix::object::tree::EntryKind::Tree,
                    entry.object_id(),
                ),
                // The path did not exist at the good revision: the revert removes it.
                None => editor.remove(prefix.as_str()),
            }
            .map_err(|e| fail("building the revert", e))?;
        }
        editor
            .write()
            .map_err(|e| fail("writing the revert", e))?
            .detach()
    };
    if tree == head_tree {
        return Ok(None);
    }
    // Dated when the revision was rejected, so building it again (after a restart that
    // lost the record of a push) gives the same commit, and a second push changes nothing.
    let seconds = crate::time::from_k8s(&rejected.rejected_at).timestamp();
    let mut time = gix::date::parse::TimeBuf::default();
    let signature = gix::actor::Signature {
        name: author.name.as_str().into(),
        email: author.email.as_str().into(),
        time: gix::date::Time::new(seconds, 0),
    };
    let signature = signature.to_ref(&mut time);
    let revert = repo
        .new_commit_as(
            signature,
            signature,
            message(&subject, rejected, good, paths),
            tree,
            [head_commit.id],
        )
        .map_err(|e| fail("writing the revert commit", e))?;
    Ok(Some(revert.id.to_string()))
}

/// Why a push did not land.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The remote said no: the branch moved, a hook or branch protection refused.
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Failed(String),
}

/// `scheme://host[:port]` of `url`, as git names it to a credential helper (`protocol`,
/// `host`): the authority without any user name.
fn origin(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority = rest.split('/').next().unwrap_or_default();
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    format!("{scheme}://{host}")
}

/// Pushes `commit` from the clone to `branch` of `url`. `force`: replace the branch (a
/// branch weir owns, for a pull request); otherwise only a fast-forward is accepted, so a
/// branch that moved since the fetch refuses the push.
pub async fn push(
    dir: &Path,
    url: &str,
    credentials: &Credentials,
    commit: &str,
    branch: &str,
    force: bool,
    timeout: Duration,
) -> Result<(), PushError> {
    let home = tempfile::Builder::new()
        .prefix("weir-push-")
        .tempdir()
        .map_err(|e| PushError::Failed(format!("preparing the push: {e}")))?;
    let mut command = tokio::process::Command::new("git");
    // Nothing of the machine's or a user's configuration: no credential helper, no prompt.
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("LC_ALL", "C")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "/bin/false")
        .env("SSH_ASKPASS", "/bin/false");
    if let Some(ca) = std::env::var_os("SSL_CERT_FILE") {
        command.env("GIT_SSL_CAINFO", ca);
    }
    // The way out of the cluster the fetch takes (reqwest reads the same variables).
    for proxy in [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "NO_PROXY",
        "no_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        if let Some(value) = std::env::var_os(proxy) {
            command.env(proxy, value);
        }
    }
    // Credentials go through the environment, never the command line (which any process on
    // the machine can read) and never the URL (which git repeats in its messages).
    let mut config = vec![("credential.helper".to_owned(), String::new())];
    let mut secrets = Vec::new();
    let ssh_keys = match credentials {
        Credentials::Basic { username, password } => {
            // Git's own way to ask for them (a credential helper), answered from this
            // process's environment: a wrong password fails as "Authentication failed".
            // Only for spec.url's own host: git asks again, with the new host, after a
            // redirect, and the helper then answers nothing.
            config.push((
                "credential.helper".into(),
                r#"!f() { test "$1" = get || return 0; p=; h=; while IFS='=' read -r k v; do case "$k" in protocol) p=$v;; host) h=$v;; esac; done; test "$p://$h" = "$WEIR_GIT_ORIGIN" && printf 'username=%s\npassword=%s\n' "$WEIR_GIT_USERNAME" "$WEIR_GIT_PASSWORD"; }; f"#.into(),
            ));
            command
                .env("WEIR_GIT_ORIGIN", origin(url))
                .env("WEIR_GIT_USERNAME", username)
                .env("WEIR_GIT_PASSWORD", password);
            secrets.push(password.clone());
            None
        }
        Credentials::Ssh {
            identity,
            known_hosts,
        } => {
            let (keys, ssh) = ssh_command(identity, known_hosts)
                .map_err(|error| PushError::Failed(error.message))?;
            command
                .env("GIT_SSH_COMMAND", ssh)
                .env("GIT_SSH_VARIANT", "ssh");
            Some(keys)
        }
        Credentials::Anonymous => None,
    };
    command.env("GIT_CONFIG_COUNT", config.len().to_string());
    for (index, (key, value)) in config.iter().enumerate() {
        command
            .env(format!("GIT_CONFIG_KEY_{index}"), key)
            .env(format!("GIT_CONFIG_VALUE_{index}"), value);
    }
    let refspec = format!(
        "{}{commit}:refs/heads/{branch}",
        if force { "+" } else { "" }
    );
    command
        .arg("--git-dir")
        .arg(dir)
        .args(["push", "--porcelain", "--", url, &refspec])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = command
        .spawn()
        .map_err(|e| PushError::Failed(format!("running git (needed to push): {e}")))?;
    let output = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => return Err(PushError::Failed(format!("running git push: {e}"))),
        Err(_) => {
            return Err(PushError::Failed(format!(
                "the push to branch {branch} did not finish within {}s (--fetch-timeout)",
                timeout.as_secs_f64()
            )));
        }
    };
    if output.status.success() {
        return Ok(());
    }
    let scrub = |text: &str| {
        secrets
            .iter()
            .filter(|s| !s.is_empty())
            .fold(text.to_owned(), |text, secret| text.replace(secret, "***"))
    };
    let stdout = scrub(&String::from_utf8_lossy(&output.stdout));
    let mut stderr = scrub(&String::from_utf8_lossy(&output.stderr));
    // ssh's own reason went beside the keys (see `ssh_command`).
    if let Some(reason) = ssh_keys
        .as_ref()
        .and_then(|keys| std::fs::read_to_string(keys.path().join(SSH_STDERR)).ok())
        .and_then(|said| ssh_diagnosis(&said))
    {
        stderr.push_str(&format!("\nfatal: {reason} (ssh)\n"));
    }
    Err(diagnose(branch, commit, &stdout, &stderr))
}

/// What git's porcelain output and its errors say about a failed push.
fn diagnose(branch: &str, commit: &str, stdout: &str, stderr: &str) -> PushError {
    // Porcelain: `!<TAB><from>:<to><TAB><summary> (<reason>)` for each refused ref.
    let refused = stdout.lines().find_map(|line| {
        let mut fields = line.split('\t');
        (fields.next() == Some("!")).then(|| fields.nth(1).unwrap_or("rejected").to_owned())
    });
    // What the remote said (a hook's reason) and git's own last word.
    let remote: Vec<&str> = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("remote: "))
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let last = stderr
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty() && !l.starts_with("error: failed to push"))
        .unwrap_or("git push failed")
        .trim_start_matches("fatal: ");
    let said = |main: String| {
        let text = if remote.is_empty() {
            main
        } else {
            format!("{main}; the remote said: {}", remote.join(" "))
        };
        text.chars().take(600).collect::<String>()
    };
    match refused {
        Some(summary) => PushError::Refused(said(format!(
            "branch {branch} refused {}: {summary}",
            short(commit)
        ))),
        None => PushError::Failed(said(last.to_owned())),
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_credential_helper_answers_only_the_urls_own_origin() {
        assert_eq!(origin("https://git.example/a/b.git"), "https://git.example");
        assert_eq!(
            origin("https://bot@git.example:8443/a"),
            "https://git.example:8443"
        );
        assert_eq!(origin("http://127.0.0.1:9/x"), "http://127.0.0.1:9");
    }
    use super::*;
    use crate::time::to_k8s;
    use chrono::TimeZone;

    fn rejected() -> RejectedRevision {
        RejectedRevision {
            revision: "3".repeat(40),
            reason: "AnalysisFailed".into(),
            rollout: Some("shop/web".into()),
            object: None,
            message: None,
            metric: Some("error-rate".into()),
            value: Some("0.31".into()),
            rejected_at: to_k8s(
                chrono::Utc
                    .timestamp_opt(1_800_000_000, 0)
                    .single()
                    .expect("time"),
            ),
            revert: None,
        }
    }

    #[test]
    fn the_message_says_what_happened_and_ends_with_the_trailers() {
        let good = "2".repeat(40);
        let text = message("web v3", &rejected(), &good, &["./apps/shop/"]);
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("Revert \"web v3\""));
        assert!(
            text.contains("Rollout shop/web: AnalysisFailed, metric error-rate = 0.31"),
            "{text}"
        );
        assert!(text.contains("restores apps/shop/ to it"), "{text}");
        let trailers: Vec<&str> = text.lines().rev().take(2).collect();
        assert_eq!(
            trailers,
            vec![
                "Weir-Reason: AnalysisFailed",
                &*format!("Weir-Rejected-Revision: {}", "3".repeat(40)),
            ]
        );
        let whole = message("a\nb", &rejected(), &good, &["."]);
        assert!(whole.starts_with("Revert \"a b\"\n\n"), "{whole}");
        assert!(whole.contains("restores the repository to it"), "{whole}");
    }

    #[test]
    fn a_refused_push_is_told_apart_from_a_failed_one() {
        let commit = "a".repeat(40);
        let moved = diagnose(
            "main",
            &commit,
            &format!(
                "To git://127.0.0.1/app\n!\t{commit}:refs/heads/main\t[rejected] (fetch first)\nDone\n"
            ),
            "error: failed to push some refs to 'git://127.0.0.1/app'\nhint: Updates were rejected because the remote contains work\n",
        );
        match moved {
            PushError::Refused(message) => assert!(
                message.starts_with("branch main refused aaaaaaaaaaaa: [rejected] (fetch first)"),
                "{message}"
            ),
            other => panic!("{other:?}"),
        }
        let hook = diagnose(
            "main",
            &commit,
            &format!(
                "!\t{commit}:refs/heads/main\t[remote rejected] (pre-receive hook declined)\n"
            ),
            "remote: main is frozen        \nerror: failed to push some refs\n",
        );
        match hook {
            PushError::Refused(message) => {
                assert!(
                    message.ends_with("the remote said: main is frozen"),
                    "{message}"
                )
            }
            other => panic!("{other:?}"),
        }
        let down = diagnose(
            "main",
            &commit,
            "",
            "fatal: unable to connect to 127.0.0.1:\n127.0.0.1[0: 127.0.0.1]: errno=Connection refused\n",
        );
        match down {
            PushError::Failed(message) => {
                assert!(message.contains("Connection refused"), "{message}")
            }
            other => panic!("{other:?}"),
        }
    }
}
