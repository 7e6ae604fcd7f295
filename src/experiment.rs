//! Experiments (issue 27; no controller runs them yet): ReplicaSets run side by side for a
//! while, with analyses over them, as Argo Rollouts' `Experiment` does. The usual one is a
//! baseline (the stable version on fresh pods) and a canary started together, so that age
//! and cache warmth do not bias a judge comparing them.
//!
//! `plan` is the pure state machine the controller will run: from the experiment's
//! settings, what it recorded, and what exists (its ReplicaSets and AnalysisRuns), the next
//! status and the actions that move the world towards it. No clock, no I/O.

pub mod analysis;
pub mod controller;
pub mod from_step;
pub mod plan;
pub mod reconcile;
pub mod workload;
