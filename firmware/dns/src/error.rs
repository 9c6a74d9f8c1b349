//! Errors of the DNS client and the embedded server.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use thiserror::Error;

use super::tsig::code;

/// Which transport an exchange used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// RFC 1035 4.2.1.
    Udp,
    /// RFC 1035 4.2.2 / RFC 7766.
    Tcp,
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Udp => "UDP",
            Self::Tcp => "TCP",
        })
    }
}

/// The TSIG error a server put in its answer (RFC 8945 4.2 Error field).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TsigError {
    /// BADSIG (16): the MAC did not verify: the secret differs.
    BadSig,
    /// BADKEY (17): the server does not know this key name and algorithm.
    BadKey,
    /// BADTIME (18): the clocks differ by more than the fudge.
    BadTime {
        /// The server's clock, when it sent it (RFC 8945 5.2.3).
        server_time: Option<u64>,
        /// Our clock when we signed.
        our_time: u64,
    },
    /// BADTRUNC (22): the server does not accept our MAC length.
    BadTrunc,
    /// Any other value.
    Other(u16),
}

impl TsigError {
    pub(crate) fn from_code(value: u16, server_time: Option<u64>, our_time: u64) -> Self {
        match value {
            code::BADSIG => Self::BadSig,
            code::BADKEY => Self::BadKey,
            code::BADTIME => Self::BadTime {
                server_time,
                our_time,
            },
            code::BADTRUNC => Self::BadTrunc,
            other => Self::Other(other),
        }
    }
}

impl fmt::Display for TsigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadSig => f.write_str("BADSIG: the key's secret does not match the server's"),
            Self::BadKey => {
                f.write_str("BADKEY: the server does not know this key name and algorithm")
            }
            Self::BadTime {
                server_time: Some(server),
                our_time,
            } => write!(
                f,
                "BADTIME: clocks differ by {} s (server {server}, here {our_time})",
                server.abs_diff(*our_time)
            ),
            Self::BadTime {
                server_time: None,
                our_time,
            } => {
                write!(
                    f,
                    "BADTIME: the server's clock is too far from ours ({our_time})"
                )
            }
            Self::BadTrunc => f.write_str("BADTRUNC: the server refuses the MAC length"),
            Self::Other(v) => write!(f, "TSIG error {v}"),
        }
    }
}

/// A DNS client failure, with enough context for one useful log line.
#[derive(Debug, Error)]
pub enum DnsError {
    /// Bad names, keys or records given to us: nothing was sent.
    #[error("invalid DNS settings: {0}")]
    Config(String),

    /// REFUSED (RFC 1035 4.1.1, RFC 2136 3.3): the server will not do it for
    /// us, e.g. the key is not in `allow-update` or the server does not
    /// serve the zone.
    #[error("{server} refused the {operation} in zone {zone} (REFUSED): the key may not update, the server does not serve the zone, or the change failed a server check (see its log)")]
    Refused {
        /// The server.
        server: SocketAddr,
        /// The zone.
        zone: String,
        /// What we asked, e.g. "UPDATE" or "MX query for example.test.".
        operation: String,
    },

    /// NOTAUTH (RFC 2136 2.2, RFC 8945 5.2): the server did not accept our
    /// TSIG signature, or is not authoritative for the zone.
    #[error("{server} did not authorize the {operation} in zone {zone} (NOTAUTH): {}", notauth_reason(.tsig))]
    NotAuthorized {
        /// The server.
        server: SocketAddr,
        /// The zone.
        zone: String,
        /// What we asked.
        operation: String,
        /// The TSIG error the server sent, if any.
        tsig: Option<TsigError>,
    },

    /// No answer in time.
    #[error("no answer from {server} over {transport} within {} ms to the {operation} in zone {zone}", timeout.as_millis())]
    Timeout {
        /// The server.
        server: SocketAddr,
        /// The zone.
        zone: String,
        /// What we asked.
        operation: String,
        /// The transport that timed out.
        transport: Transport,
        /// How long we waited.
        timeout: Duration,
    },

    /// A socket error (connection refused, unreachable, reset...).
    #[error("network error talking to {server} over {transport} for the {operation} in zone {zone}: {source}")]
    Network {
        /// The server.
        server: SocketAddr,
        /// The zone.
        zone: String,
        /// What we asked.
        operation: String,
        /// The transport.
        transport: Transport,
        /// The socket error.
        #[source]
        source: io::Error,
    },

    /// The answer could not be parsed or does not match the question.
    #[error("malformed answer from {server} to the {operation} in zone {zone}: {reason}")]
    Malformed {
        /// The server.
        server: SocketAddr,
        /// The zone.
        zone: String,
        /// What we asked.
        operation: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The answer is not signed with our key, or its signature is wrong
    /// (RFC 8945 5.4): it is not trusted.
    #[error("answer from {server} to the {operation} in zone {zone} is not authentic: {reason}")]
    Unauthenticated {
        /// The server.
        server: SocketAddr,
        /// The zone.
        zone: String,
        /// What we asked.
        operation: String,
        /// Why.
        reason: String,
    },

    /// The server answered but not authoritatively (RFC 1035 4.1.1 AA bit):
    /// the target is a resolver, not the zone's primary server.
    #[error(
        "{server} is not authoritative for zone {zone} (answer to the {operation} has no AA bit)"
    )]
    NotAuthoritative {
        /// The server.
        server: SocketAddr,
        /// The zone.
        zone: String,
        /// What we asked.
        operation: String,
    },

    /// Any other error RCODE (SERVFAIL, FORMERR, NOTZONE, NOTIMP...).
    #[error("{server} answered the {operation} in zone {zone} with {rcode}{}", unsigned_note(.unsigned))]
    Rejected {
        /// The server.
        server: SocketAddr,
        /// The zone.
        zone: String,
        /// What we asked.
        operation: String,
        /// The RCODE's name.
        rcode: String,
        /// Whether the answer carried no TSIG record.
        unsigned: bool,
    },
}

fn unsigned_note(unsigned: &bool) -> &'static str {
    if *unsigned {
        " (unsigned answer)"
    } else {
        ""
    }
}

fn notauth_reason(tsig: &Option<TsigError>) -> String {
    match tsig {
        Some(t) => format!("TSIG error {t}"),
        None => "the server is not authoritative for the zone, or rejected the credentials".into(),
    }
}

impl DnsError {
    /// Whether trying again later may help without changing any setting:
    /// timeouts, network errors and server failures.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Timeout { .. } | Self::Network { .. } => true,
            Self::Rejected { rcode, .. } => rcode == "SERVFAIL",
            Self::NotAuthorized {
                tsig: Some(TsigError::BadTime { .. }),
                ..
            } => true,
            _ => false,
        }
    }
}

/// Failures of the embedded server.
#[derive(Debug, Error)]
pub enum ServerError {
    /// The zone name or initial data is not usable.
    #[error("invalid zone setup: {0}")]
    Config(String),
    /// A socket could not be bound.
    #[error("cannot listen on {addr} over {transport}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// UDP or TCP.
        transport: Transport,
        /// The socket error.
        #[source]
        source: io::Error,
    },
}

impl From<DnsError> for ServerError {
    fn from(e: DnsError) -> Self {
        Self::Config(e.to_string())
    }
}
