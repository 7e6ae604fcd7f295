//! Notifications: weir's events, selected by NotificationRules (and Argo Rollouts'
//! subscription annotations), told to Notifiers. `select`, `message`, `commit_status` and
//! `ledger` are pure;
//! `controller` is the glue that watches, queues, sends and remembers.

pub mod commit_status;
pub mod controller;
pub mod ledger;
pub mod message;
pub mod select;
