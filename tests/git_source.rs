//! weir's Git read path against real repositories: `file://` and `git daemon` on loopback.
//! No cluster needed.

mod support;

use std::path::PathBuf;

use support::git::{GitDaemon, GitRepo};
use weir::api::gitsync::GitRef;
use weir::gitops::credentials::Credentials;
use weir::gitops::source::{Limits, fetch, files_at};

const ANONYMOUS: Credentials = Credentials::Anonymous;

fn limits() -> Limits {
    Limits::new(std::time::Duration::from_secs(30))
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
    let files = files_at(&dir, &first, "apps/web").expect("files");
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
    let paths: Vec<_> = files_at(&dir, &second, ".")
        .expect("files")
        .into_iter()
        .map(|f| f.path)
        .collect();
    assert_eq!(paths, vec!["README.md", "apps/web/b.yaml"]);
    // The old revision is still readable: rollback reads it from the same clone.
    assert_eq!(files_at(&dir, &first, "apps").expect("old files").len(), 1);
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
