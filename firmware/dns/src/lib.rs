//! Keeping DNS equal to the set of live nodes.
//!
//! The failover announcer calls [`reconcile`] with the records the zone
//! should have (MX at the apex, A/AAAA of the client host name). It reads
//! back what the server has and, when something differs, sends one RFC 2136
//! UPDATE signed with TSIG (RFC 8945) that removes the stale records and
//! adds the missing ones.
//!
//! [`EmbeddedServer`] is a small authoritative server for one zone that
//! accepts such updates, for `mailfort demo` and tests.

mod client;
mod error;
mod server;
mod transport;
mod tsig;
mod wire;
mod zone;

pub use client::{
    query_current, reconcile, AddressRecord, CurrentRecords, DesiredRecords, DnsTarget, MxRecord,
    ReconcileOutcome, DEFAULT_TIMEOUT, MAX_TTL,
};
pub use error::{DnsError, ServerError, Transport, TsigError};
pub use server::EmbeddedServer;
pub use tsig::{TsigAlgorithm, TsigKey, TSIG_FUDGE_SECS};
pub use zone::ZoneData;
