//! The protocol rules of the SMTP and POP3 sessions, each session run in
//! this process over an in-memory pipe against a temporary store.

mod harness;
mod pop3;
mod smtp;
