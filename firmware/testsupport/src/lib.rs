//! For tests only: what the workspace's tests share.
//!
//! - [`store`]: a temporary store with users, `mailfort` commands on it;
//! - [`node`]: `mailfort serve` nodes, waited for by their `ready` line;
//! - [`wire`]: a raw SMTP/POP3 line client with timeouts;
//! - [`python`]: the Python client scripts (smtplib, poplib) in `tests/py`;
//! - [`ports`]: free loopback ports, and retrying a start whose port was
//!   taken meanwhile;
//! - [`wait`]: polling a condition with a deadline;
//! - [`dns`]: a throwaway BIND 9 `named` with the zones and keys a test
//!   gives, and `dig`;
//! - [`bin`]: the `mailfort` binary the process tests run.
//!
//! The names most tests use are in [`prelude`].

pub mod bin;
pub mod dns;
pub mod node;
pub mod ports;
pub mod python;
pub mod store;
pub mod wait;
pub mod wire;

/// The names most tests use: `use testsupport::prelude::*` (a prelude,
/// so that the modules' names do not shadow crates such as `store`).
pub mod prelude {
    pub use crate::bin::mailfort_bin;
    pub use crate::dns::{dig, start_named, Named, TSIG_KEY_NAME, TSIG_KEY_SECRET};
    pub use crate::node::Node;
    pub use crate::ports::free_udp_tcp_port;
    pub use crate::python::{py_dir, python};
    pub use crate::store::{mailfort, run, text, Fixture};
    pub use crate::wait::{wait_for, wait_until};
    pub use crate::wire::Wire;
}
