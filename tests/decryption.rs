//! SOPS-encrypted files on the local control plane: a real age key pair, a Secret encrypted
//! as `sops --encrypted-regex '^(data|stringData)$'` writes it, committed to a Git
//! repository, and a GitSync with `spec.decryption` applying it; what weir says and keeps
//! on disk read back for the cleartext.

mod support;

use std::path::Path;

use age::secrecy::ExposeSecret;
use age::x25519;
use k8s_openapi::api::core::v1::Secret;
use serde_json::json;
use support::app::LIMIT;
use support::git::GitRepo;
use support::gitops::condition;
use support::sops_encrypt::{self, Options};
use support::{ControllerProcess, TestNamespace, client, eventually};
use weir::api::gitsync::{GitSync, GitSyncStatus};

/// A Secret as its team writes it, encrypted for `recipient`.
fn encrypted_secret(password: &str, recipient: &x25519::Recipient) -> String {
    let secret: serde_yaml_ng::Value = serde_yaml_ng::from_str(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\nstringData:\n  password: {password}\n"
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    sops_encrypt::encrypt(
        &[secret],
        std::slice::from_ref(recipient),
        &Options::kubernetes(),
    )
}

async fn password(ns: &TestNamespace) -> Option<String> {
    let secret = ns.api::<Secret>().get_opt("db").await.ok()??;
    let bytes = secret.data?.get("password")?.0.clone();
    String::from_utf8(bytes).ok()
}

async fn status_where(
    ns: &TestNamespace,
    what: &str,
    check: impl Fn(&GitSyncStatus) -> bool,
) -> GitSyncStatus {
    eventually(what, LIMIT, || async {
        let status = ns.api::<GitSync>().get("app").await.ok()?.status?;
        check(&status).then_some(status)
    })
    .await
}

/// Every Event message in the namespace, one per line.
async fn events_of(ns: &TestNamespace) -> String {
    let events = ns
        .api::<k8s_openapi::api::core::v1::Event>()
        .list(&Default::default())
        .await
        .unwrap_or_else(|e| panic!("events: {e}"));
    events
        .items
        .into_iter()
        .filter_map(|e| e.message)
        .collect::<Vec<_>>()
        .join("\n")
}

/// The files under `dir` (recursively) whose bytes hold `text`.
fn files_holding(dir: &Path, text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_holding(&path, text));
        } else if std::fs::read(&path)
            .is_ok_and(|bytes| bytes.windows(text.len()).any(|w| w == text.as_bytes()))
        {
            found.push(path.display().to_string());
        }
    }
    found
}

#[tokio::test]
async fn an_encrypted_secret_is_applied_decrypted_and_its_cleartext_shows_nowhere() {
    let ns = TestNamespace::new(&client().await, "sops").await;
    let repo = GitRepo::new(&ns.name);
    let ours = x25519::Identity::generate();
    let theirs = x25519::Identity::generate();
    // Unique to this run, so that finding them anywhere is this test's doing.
    let first_password = format!("first-{}", ns.name);
    let second_password = format!("second-{}", ns.name);

    let first = repo.commit(
        "db credentials",
        &[(
            "deploy/db.enc.yaml",
            &encrypted_secret(&first_password, &ours.to_public()),
        )],
    );
    let private_key = ours.to_string().expose_secret().to_owned();
    support::app::apply(
        &ns,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "sops-age"},
            "stringData": {"identity.agekey": format!(
                "# public key: {}\n{private_key}\n", ours.to_public())}}),
    )
    .await;
    let clones = tempfile::tempdir().unwrap_or_else(|e| panic!("a clone directory: {e}"));
    let clones_dir = clones.path().display().to_string();
    let _controller = ControllerProcess::start_with(
        &ns.name,
        &[
            "--metrics-addr",
            "127.0.0.1:0",
            "--git-cache-dir",
            &clones_dir,
        ],
    );
    support::app::apply_git_sync(
        &ns,
        "app",
        json!({"url": repo.file_url(), "ref": {"branch": "main"}, "path": "deploy",
            "interval": "1s",
            "decryption": {"provider": "sops", "secretRef": {"name": "sops-age"}}}),
    )
    .await;

    status_where(&ns, "the first revision applied", |s| {
        s.last_applied_revision.as_deref() == Some(first.as_str())
    })
    .await;
    assert_eq!(
        password(&ns).await.as_deref(),
        Some(first_password.as_str())
    );

    // A revision encrypted for someone else: refused by the file's name, the first stays.
    let second = repo.commit(
        "db credentials for another cluster",
        &[(
            "deploy/db.enc.yaml",
            &encrypted_secret(&second_password, &theirs.to_public()),
        )],
    );
    let refused = status_where(&ns, "the second revision refused", |s| {
        s.last_attempted_revision.as_deref() == Some(second.as_str())
    })
    .await;
    let (_, reason, message) = condition(&refused, "Ready").unwrap_or_default();
    assert_eq!(reason, "RenderFailed", "{message}");
    assert!(
        message.contains("deploy/db.enc.yaml")
            && message.contains(&theirs.to_public().to_string())
            && message.contains("sops-age"),
        "{message}"
    );
    assert_eq!(
        refused.last_applied_revision.as_deref(),
        Some(first.as_str())
    );
    assert_eq!(
        password(&ns).await.as_deref(),
        Some(first_password.as_str())
    );

    // Nothing weir says or keeps holds a cleartext value or the key.
    let said = format!(
        "{}\n{}\n{}",
        serde_json::to_string(&refused).unwrap_or_default(),
        events_of(&ns).await,
        ControllerProcess::log(&ns.name)
    );
    assert!(
        said.contains("deploy/db.enc.yaml"),
        "the log and status are the ones read"
    );
    for secret in [&first_password, &second_password, &private_key] {
        assert!(
            !said.contains(secret.as_str()),
            "status, Events or the log show a secret"
        );
        assert_eq!(
            files_holding(clones.path(), secret),
            Vec::<String>::new(),
            "the clone holds a secret"
        );
    }

    // Without spec.decryption the encrypted file is refused by name, never applied as is.
    let third = repo.commit(
        "db credentials again",
        &[(
            "deploy/db.enc.yaml",
            &encrypted_secret(&second_password, &ours.to_public()),
        )],
    );
    // Removed the way `kubectl apply` removes a field: a merge patch setting it to null.
    // (A server-side apply that leaves it out is refused by 1.20 API servers, which keep
    // the emptied map and then miss its required `provider`.)
    ns.api::<weir::api::GitSync>()
        .patch(
            "app",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"decryption": null}})),
        )
        .await
        .unwrap_or_else(|e| panic!("removing spec.decryption: {e}"));
    let refused = status_where(&ns, "the third revision refused without decryption", |s| {
        s.last_attempted_revision.as_deref() == Some(third.as_str())
    })
    .await;
    let (_, reason, message) = condition(&refused, "Ready").unwrap_or_default();
    assert_eq!(reason, "RenderFailed", "{message}");
    assert!(
        message.contains("deploy/db.enc.yaml") && message.contains("spec.decryption is not set"),
        "{message}"
    );
    assert_eq!(
        password(&ns).await.as_deref(),
        Some(first_password.as_str())
    );
}
