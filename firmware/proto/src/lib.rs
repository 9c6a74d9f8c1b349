//! SMTP, POP3 and IMAP wire formats.
//!
//! Pure functions from bytes to commands and from replies to bytes: no I/O,
//! no allocation, fixed bounds. The daemon owns the sockets; this crate owns
//! the rules of the protocols, so that they can be unit-tested and fuzzed
//! without a network (the smoltcp `wire` habit).
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod data;
pub mod date;
pub mod imap;
pub mod line;
pub mod pop3;
pub mod reply;
pub mod sasl;
pub mod smtp;
