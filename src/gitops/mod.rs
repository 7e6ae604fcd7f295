//! GitOps: keeping the cluster equal to a path of a Git repository.

pub mod apply;
pub mod controller;
pub mod credentials;
pub mod fetch_rate;
pub mod inventory;
pub mod kustomize;
pub mod ownership;
pub mod reconcile;
pub mod render;
pub mod rollback;
pub mod source;
pub mod status;
pub mod tenancy;
pub mod webhook;
pub mod writeback;

/// Hex digits in a commit SHA of the repositories weir reads: SHA-1 (gix is built with sha1
/// only).
pub const SHA_LEN: usize = 40;

/// Whether `text` is a whole commit SHA, as `git rev-parse` prints it (either case).
pub fn is_full_sha(text: &str) -> bool {
    text.len() == SHA_LEN && text.bytes().all(|b| b.is_ascii_hexdigit())
}
