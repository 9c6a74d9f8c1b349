//! Fuzzing of mailfort on the stable toolchain, without libFuzzer or
//! sanitizers.
//!
//! - [`targets`]: one target per parser that reads what a client or an
//!   administrator sends (SMTP, POP3 and IMAP commands, DATA, line framing,
//!   SASL PLAIN, the admin page's multipart and urlencoded forms, the
//!   certificate upload), each asserting the parser's invariants.
//! - [`engine`]: a mutational fuzzer ([`mutate`]) that runs a target from
//!   its seed corpus (`corpus/<target>/`) for a time or a number of runs
//!   and saves a crashing input to `artifacts/<target>/`.
//! - [`net`]: mutated SMTP, submission and POP3 sessions against a live
//!   node, and the node's resident memory.
//!
//! `mailfort-fuzz run TARGET --seconds N`, `mailfort-fuzz all --seconds N`
//! and `mailfort-fuzz net ...` run them from the command line.

pub mod engine;
pub mod mutate;
pub mod net;
pub mod rng;
pub mod targets;
