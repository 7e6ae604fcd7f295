//! weir's Git read path against real repositories: `file://` and `git daemon` on loopback.
//! No cluster needed.

mod support;

use std::path::PathBuf;

use support::git::{GitDaemon, GitRepo};
use weir::api::gitsync::GitRef;
use weir::gitops::credentials::Credentials;
use weir::gitops::source::{FetchLimits, fetch, files_at};

const ANONYMOUS: Credentials = Credentials::Anonymous;

fn limits() -> FetchLimits {
    FetchLimits::new(
        std::time::Duration::from_secs(30),
        weir::gitops::source::DEFAULT_MAX_FETCH_BYTES,
    )
}

fn clone_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir()
        .join("weir-test-clones")
        .join(format!("{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn branch(name: &str) -> GitRef {
    GitRef {
        branch: Some(name.into()),
        ..GitRef::default()
    }
}

const CONFIG_MAP: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n";

#[test]
fn a_branch_is_fetched_incrementally_and_read_without_a_work_tree() {
    let repo = GitRepo::new("branch");
    let first = repo.commit(
        "first",
        &[("apps/web/a.yaml", CONFIG_MAP), ("README.md", "hi")],
    );
    let dir = clone_dir("branch");
    let fetched = fetch(
        &dir,
        &repo.file_url(),
        &branch("main"),
        &ANONYMOUS,
        &limits(),
    )
    .expect("fetch");
    assert_eq!(fetched.revision, first);
    assert_eq!(fetched.subject, "first");
    let files = files_at(
        &dir,
        &first,
        "apps/web",
        &weir::gitops::render::Limits::default(),
    )
    .expect("files");
    let paths: Vec<_> = files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, vec!["apps/web/a.yaml"]);
    assert_eq!(files[0].bytes, CONFIG_MAP.as_bytes());

    let second = repo.commit(
        "second: remove a, add b",
        &[("apps/web/a.yaml", ""), ("apps/web/b.yaml", CONFIG_MAP)],
    );
    let fetched = fetch(
        &dir,
        &repo.file_url(),
        &branch("main"),
        &ANONYMOUS,
        &limits(),
    )
    .expect("fetch again");
    assert_eq!(fetched.revision, second);
    let paths: Vec<_> = files_at(&dir, &second, ".", &weir::gitops::render::Limits::default())
        .expect("files")
        .into_iter()
        .map(|f| f.path)
        .collect();
    assert_eq!(paths, vec!["README.md", "apps/web/b.yaml"]);
    // The old revision is still readable: rollback reads it from the same clone.
    assert_eq!(
        files_at(
            &dir,
            &first,
            "apps",
            &weir::gitops::render::Limits::default()
        )
        .expect("old files")
        .len(),
        1
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn git_daemon_tags_and_commits() {
    let repo = GitRepo::new("daemon");
    let first = repo.commit("first", &[("a.yaml", CONFIG_MAP)]);
    repo.tag("v1");
    let second = repo.commit("second", &[("b.yaml", CONFIG_MAP)]);
    let daemon = GitDaemon::serve(&repo).await;
    let url = daemon.url(&repo);
    let dir = clone_dir("daemon");
    let blocking = move || {
        let tag = GitRef {
            tag: Some("v1".into()),
            ..GitRef::default()
        };
        let by_tag = fetch(&dir, &url, &tag, &ANONYMOUS, &limits()).expect("fetch tag");
        let commit = GitRef {
            commit: Some(first.clone()),
            ..GitRef::default()
        };
        let by_commit = fetch(&dir, &url, &commit, &ANONYMOUS, &limits()).expect("fetch commit");
        let by_branch =
            fetch(&dir, &url, &branch("main"), &ANONYMOUS, &limits()).expect("fetch branch");
        let missing =
            fetch(&dir, &url, &branch("nope"), &ANONYMOUS, &limits()).expect_err("no such branch");
        let _ = std::fs::remove_dir_all(&dir);
        (
            by_tag.revision == first,
            by_commit.revision == first,
            by_branch.revision == second,
            missing.to_string(),
        )
    };
    let (tag, commit, branch, missing) = tokio::task::spawn_blocking(blocking).await.expect("join");
    assert!(tag && commit && branch);
    assert_eq!(missing, "the repository has no branch \"nope\"");
}

#[test]
fn an_unreachable_repository_is_an_error_naming_the_step() {
    let dir = clone_dir("unreachable");
    let port = support::free_port();
    let error = fetch(
        &dir,
        &format!("git://127.0.0.1:{port}/nothing"),
        &branch("main"),
        &ANONYMOUS,
        &limits(),
    )
    .expect_err("nothing listens");
    assert!(
        error
            .to_string()
            .starts_with("connecting to the repository"),
        "{error}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Text that does not compress (a pack stores it at about its size): xorshift digits.
fn incompressible(bytes: usize) -> String {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..bytes)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            char::from(b'!' + (state % 90) as u8)
        })
        .collect()
}

#[test]
fn a_pack_over_the_fetch_limit_is_refused_and_leaves_the_clone_as_it_was() {
    let repo = GitRepo::new("pack-limit");
    let small = repo.commit("small", &[("deploy/a.yaml", CONFIG_MAP)]);
    let dir = clone_dir("pack-limit");
    let limit = 256 * 1024;
    let limited = FetchLimits::new(std::time::Duration::from_secs(30), limit);
    let fetched = fetch(
        &dir,
        &repo.file_url(),
        &branch("main"),
        &ANONYMOUS,
        &limited,
    )
    .expect("a small pack passes");
    assert_eq!(fetched.revision, small);
    let packs = || {
        std::fs::read_dir(dir.join("objects/pack"))
            .map(|entries| entries.count())
            .unwrap_or(0)
    };
    let packs_before = packs();

    repo.commit(
        "large",
        &[("deploy/blob.txt", &incompressible(1024 * 1024))],
    );
    let limited = FetchLimits::new(std::time::Duration::from_secs(30), limit);
    let error = fetch(
        &dir,
        &repo.file_url(),
        &branch("main"),
        &ANONYMOUS,
        &limited,
    )
    .expect_err("a 1 MiB pack passes a limit of 256 KiB");
    let message = error.to_string();
    assert!(
        message.contains(&format!("the pack passed {limit} bytes"))
            && message.contains("--max-fetch-bytes")
            && message.contains(&repo.file_url()),
        "names the repository, the limit and the flag: {message}"
    );
    assert_eq!(packs(), packs_before, "no part of the pack is kept");
    let again = fetch(
        &dir,
        &repo.file_url(),
        &branch("main"),
        &ANONYMOUS,
        &limits(),
    )
    .expect("under the default limit the same pack passes");
    assert_eq!(again.subject, "large");
    let _ = std::fs::remove_dir_all(&dir);
}

fn rejected(revision: &str) -> weir::api::gitsync::RejectedRevision {
    weir::api::gitsync::RejectedRevision {
        revision: revision.into(),
        reason: "AnalysisFailed".into(),
        rollout: Some("shop/web".into()),
        object: None,
        message: None,
        metric: Some("error-rate".into()),
        value: Some("0.31".into()),
        rejected_at: weir::time::to_k8s(
            chrono::DateTime::from_timestamp(1_800_000_000, 0).expect("a time"),
        ),
        revert: None,
    }
}

fn author() -> weir::gitops::writeback::Author {
    weir::gitops::writeback::Author {
        name: "weir".into(),
        email: "weir@example.com".into(),
    }
}

#[tokio::test]
async fn a_revert_restores_only_its_path_and_a_moved_branch_refuses_it() {
    use weir::gitops::writeback::{PushError, push, revert_commit};
    let repo = GitRepo::new("revert");
    repo.accept_pushes();
    let good = repo.commit(
        "good",
        &[
            ("apps/web/a.yaml", CONFIG_MAP),
            ("apps/other/o.yaml", "other: 1\n"),
        ],
    );
    let bad = repo.commit(
        "bad",
        &[
            ("apps/web/a.yaml", "changed: true\n"),
            ("apps/web/new.yaml", "added: true\n"),
            ("apps/other/o.yaml", "other: 2\n"),
        ],
    );
    let dir = clone_dir("revert");
    let url = repo.file_url();
    fetch(&dir, &url, &branch("main"), &ANONYMOUS, &limits()).expect("fetch");

    let revert = revert_commit(&dir, &bad, &good, &["apps/web"], &rejected(&bad), &author())
        .expect("revert")
        .expect("something to revert");
    assert_eq!(
        tree_of(&dir, &revert),
        vec![
            ("apps/other/o.yaml".to_owned(), b"other: 2\n".to_vec()),
            ("apps/web/a.yaml".to_owned(), CONFIG_MAP.as_bytes().to_vec()),
        ],
        "apps/web is the good revision's, the rest stays as the bad commit left it"
    );
    assert_eq!(
        revert_commit(&dir, &bad, &good, &["apps/web"], &rejected(&bad), &author()).expect("again"),
        Some(revert.clone()),
        "built again after a restart, the revert is the same commit"
    );
    assert_eq!(
        weir::gitops::source::trailer(&dir, &revert, "weir-rejected-revision").as_deref(),
        Some(bad.as_str()),
        "how a restarted controller knows its revert"
    );
    assert_eq!(
        weir::gitops::source::trailer(&dir, &bad, "Weir-Rejected-Revision"),
        None
    );
    assert_eq!(
        revert_commit(
            &dir,
            &good,
            &good,
            &["apps/web"],
            &rejected(&good),
            &author()
        )
        .expect("no-op revert"),
        None,
        "nothing to revert"
    );
    // With a GitSync promoting from this one at apps/other, its path is restored too.
    let both = revert_commit(
        &dir,
        &bad,
        &good,
        &["apps/web", "apps/other"],
        &rejected(&bad),
        &author(),
    )
    .expect("revert")
    .expect("something to revert");
    assert_eq!(
        tree_of(&dir, &both),
        vec![
            ("apps/other/o.yaml".to_owned(), b"other: 1\n".to_vec()),
            ("apps/web/a.yaml".to_owned(), CONFIG_MAP.as_bytes().to_vec()),
        ],
        "both paths are the good revision's"
    );

    // Someone pushed meanwhile: the revert is refused, never forced over their work.
    let theirs = repo.commit("theirs", &[("apps/web/a.yaml", "theirs: 1\n")]);
    let timeout = std::time::Duration::from_secs(30);
    match push(&dir, &url, &ANONYMOUS, &revert, "main", false, timeout).await {
        Err(PushError::Refused(message)) => {
            assert!(message.starts_with("branch main refused"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(repo.head(), theirs);
    // A branch of weir's own (for a pull request) is replaced.
    push(
        &dir,
        &url,
        &ANONYMOUS,
        &revert,
        "weir/revert",
        true,
        timeout,
    )
    .await
    .expect("push to weir's branch");
    assert_eq!(repo.git(&["rev-parse", "weir/revert"]), revert);
    let message = repo.git(&["log", "-1", "--format=%B", "weir/revert"]);
    assert!(
        message.contains(&format!("Weir-Rejected-Revision: {bad}")),
        "{message}"
    );
}

#[tokio::test]
async fn a_push_uses_the_secrets_credentials_and_never_shows_them() {
    use support::git::GitHttpServer;
    use weir::gitops::writeback::{PushError, push, revert_commit};
    let repo = GitRepo::new("push-https");
    repo.accept_pushes();
    let good = repo.commit("good", &[("deploy/a.yaml", CONFIG_MAP)]);
    let bad = repo.commit("bad", &[("deploy/a.yaml", "bad: 1\n")]);
    let server = GitHttpServer::serve(&repo, "weir", "s3cret-token", false).await;
    let dir = clone_dir("push-https");
    let url = server.url(&repo);
    let right = Credentials::Basic {
        username: "weir".into(),
        password: "s3cret-token".into(),
    };
    // weir never sends credentials over plain http (validation refuses it); git itself
    // would, which lets this test see the push's own handling of them without TLS.
    let file_url = repo.file_url();
    let dir_arg = dir.display().to_string();
    repo.git(&["clone", "-q", "--bare", &file_url, &dir_arg]);
    let revert = revert_commit(&dir, &bad, &good, &["deploy"], &rejected(&bad), &author())
        .expect("revert")
        .expect("something to revert");
    let timeout = std::time::Duration::from_secs(30);
    let wrong = Credentials::Basic {
        username: "weir".into(),
        password: "wrong-password".into(),
    };
    match push(&dir, &url, &wrong, &revert, "main", false, timeout).await {
        Err(PushError::Failed(message)) => {
            assert!(!message.contains("wrong-password"), "{message}");
            assert!(message.contains("Authentication failed"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    push(&dir, &url, &right, &revert, "main", false, timeout)
        .await
        .expect("push with the right credentials");
    assert_eq!(repo.head(), revert);
}

/// Every file of the repository at `revision`, by path, sorted.
fn tree_of(dir: &std::path::Path, revision: &str) -> Vec<(String, Vec<u8>)> {
    let files =
        files_at(dir, revision, "", &weir::gitops::render::Limits::default()).expect("files");
    let mut seen: Vec<(String, Vec<u8>)> = files.into_iter().map(|f| (f.path, f.bytes)).collect();
    seen.sort();
    seen
}
