//! The Rollout state machine: `plan` decides (pure); `observe`, `act` and `reconcile` are the
//! thin glue around it; `controller` runs it.

pub mod act;
pub mod controller;
pub mod error;
pub mod observe;
pub mod plan;
pub mod reconcile;
pub mod workload;
