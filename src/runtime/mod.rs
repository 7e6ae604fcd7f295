//! What the controller process needs around the reconcilers: leader election (and, to come,
//! the HTTP server for health, readiness and metrics).

pub mod leader;
