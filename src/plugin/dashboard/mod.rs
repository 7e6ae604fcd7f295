//! `kubectl weir dashboard`: the pure parts. Figures, charts and pages are computed from plain
//! inputs here, without I/O, so that each can be tested on its own; the server that feeds them
//! from watches is thin glue around them.

pub mod chart;
pub mod delivery;
pub mod html;
pub mod page;
pub mod threshold;
