//! Analysis: AnalysisRuns made from templates for a rollout step or in the background.
//! Measuring them (Prometheus, verdicts) comes with the analysis issue.

pub mod run;
