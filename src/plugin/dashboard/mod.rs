//! `kubectl weir dashboard`: a local web server showing Rollouts and GitSyncs live, acting
//! with the user's own kubeconfig. Figures, charts, routes and pages are computed from plain
//! inputs here, without I/O, so that each can be tested on its own; `serve` is the thin glue
//! that feeds them from watches.

pub mod action;
pub mod chart;
pub mod html;
pub mod page;
pub mod route;
pub mod series;
pub mod serve;
pub mod threshold;
pub mod view;
