//! The mail daemon: SMTP (RFC 5321), submission (RFC 6409, RFC 8314) and
//! POP3 (RFC 1939) and IMAP (RFC 3501) sessions over TLS (rustls), on the
//! shared store.

pub mod auth;
pub mod config;
pub mod conn;
pub mod date;
pub mod imap;
pub mod memory;
pub mod outbound;
pub mod pop3;
pub mod server;
pub mod session;
pub mod smtp;
pub mod tls;

pub use config::{Limits, NodeConfig};
pub use server::{Node, Service};
