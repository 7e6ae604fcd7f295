//! GitOps: keeping the cluster equal to a path of a Git repository.

mod act;
pub mod apply;
mod context;
pub mod controller;
pub mod credentials;
pub mod delivery;
pub mod dependencies;
pub mod drift;
pub mod error;
pub mod fetch_rate;
pub mod health;
pub mod inventory;
pub mod kustomize;
mod observe;
pub mod ownership;
pub mod plan;
pub mod promotion;
pub mod reconcile;
mod record;
pub mod remote;
pub mod render;
pub mod revision;
pub mod rollback;
pub mod sops;
pub mod source;
pub mod status;
pub mod tenancy;
pub mod webhook;
pub mod writeback;

// Below gitops, since validation (which gitops uses) checks commits too.
pub use crate::validate::{SHA_LEN, is_full_sha};
