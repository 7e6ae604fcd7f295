//! weir: progressive delivery for Kubernetes that rolls Git back when a canary fails.
//! ARCHITECTURE.md describes how the modules fit together.

pub mod analysis;
pub mod api;
pub mod cli;
pub mod conditions;
pub mod crd_files;
pub mod duration;
pub mod experiment;
pub mod gitops;
pub mod judge;
pub mod notify;
pub mod plugin;
pub mod rollout;
pub mod runtime;
pub mod sim;
pub mod ssa_defaults;
pub mod status_patch;
pub mod template_hash;
pub mod time;
pub mod traffic;
pub mod validate;
pub mod verdict;

#[cfg(test)]
mod hostile;
