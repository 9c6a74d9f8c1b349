//! Administration of a mailfort node: one command set ([`commands`]) with
//! two front ends over it, the line-oriented console ([`shell`], on a
//! box's serial line and as `mailfort console`) and the HTTPS admin page
//! ([`web`]). Whatever can be set one way can be set the other, because
//! both run the same commands against the same [`commands::Host`].

pub mod access;
pub mod cluster_keys;
pub mod commands;
pub mod log;
pub mod password;
pub mod process;
pub mod shell;
pub mod term;
pub mod web;
