//! The protocol rules of the SMTP, POP3 and IMAP sessions, each session run in
//! this process over an in-memory pipe against a temporary store.

mod harness;
mod imap;
mod pop3;
mod smtp;
