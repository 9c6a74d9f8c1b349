//! Cluster coordination of mailfort nodes.

pub mod dns;
pub mod live;
pub mod announcer;

pub use announcer::{read_dns_state, DnsState};
