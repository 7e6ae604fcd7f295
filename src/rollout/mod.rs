//! The Rollout state machine: `plan` decides (pure), the rest observes and acts.

pub mod plan;
pub mod template_hash;
