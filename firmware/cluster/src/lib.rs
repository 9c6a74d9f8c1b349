//! Cluster coordination of mailfort nodes: heartbeats and the live set
//! (`live`), the DNS failover announcer (`announcer`, speaking DNS through
//! the `dns` crate), the loops a serving node runs to keep them
//! (`member`), and the one report of it all that status displays show
//! (`report`).

pub mod announcer;
pub mod live;
pub mod member;
pub mod report;

pub use announcer::{read_dns_state, DnsState};
pub use member::{ClusterTasks, Member};
