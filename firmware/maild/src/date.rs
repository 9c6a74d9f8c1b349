//! RFC 5322 3.3 date-time for trace headers ([`proto::date`]).

use std::time::{SystemTime, UNIX_EPOCH};

pub use proto::date::civil_from_days;

/// Formats `t` as e.g. `Sun, 29 Nov 2026 23:44:08 +0000`.
pub fn rfc5322(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    proto::date::Rfc5322(i64::try_from(secs).unwrap_or(i64::MAX)).to_string()
}
