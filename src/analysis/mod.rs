//! Analysis: AnalysisRuns made from templates for a rollout step or in the background, and
//! measured against Prometheus until their verdict is in.

pub mod args;
pub mod assess;
pub mod controller;
pub mod hosts;
pub mod job;
pub mod judge;
pub mod prometheus;
pub mod provider;
pub mod reconcile;
pub mod run;
pub mod templates;
pub mod web;
