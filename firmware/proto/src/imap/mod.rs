//! IMAP wire format (RFC 3501, with the extensions mailfort offers): the
//! command tree. Unlike SMTP and POP3, an IMAP command can carry literals
//! and nested lists, so this module allocates (bounded by named limits).

pub mod types;

pub use types::*;
pub mod parse;
