//! GitOps: keeping the cluster equal to a path of a Git repository.

pub mod apply;
pub mod controller;
pub mod credentials;
pub mod inventory;
pub mod kustomize;
pub mod ownership;
pub mod reconcile;
pub mod render;
pub mod rollback;
pub mod source;
pub mod status;
pub mod webhook;
pub mod writeback;
