//! GitOps: keeping the cluster equal to a path of a Git repository.

pub mod inventory;
pub mod render;
pub mod source;
