//! What the controller process needs around the reconcilers: leader election, and the HTTP
//! server for health, readiness and metrics.

pub mod http;
pub mod leader;
pub mod metrics;
