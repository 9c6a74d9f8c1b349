//! Cluster coordination of mailfort nodes.

pub mod dns;
pub mod live;
pub mod announcer;
