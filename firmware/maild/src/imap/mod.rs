//! IMAP4rev1 (RFC 3501) on the shared store, with the extensions the
//! capability list names (`session::capabilities`).
//!
//! `session` runs one connection: command framing with literals, the
//! states of RFC 3501 3, and the commands; `fetch` builds FETCH responses;
//! `message` and `search` compute what FETCH and SEARCH say about one
//! stored message; `respond` writes the protocol's strings and lists;
//! `watch` tells IDLE sessions of a node that a folder changed, whichever
//! node changed it. Folders, flags and UIDs live in the store
//! (`store::imap`), so every node shows the same ones.

mod fetch;
pub mod message;
pub mod respond;
pub mod search;
mod session;
pub mod watch;

pub use session::{Session, MAX_COMMAND, MAX_INLINE_LITERAL, MAX_LINE, MAX_LITERALS, NOT_AUTHENTICATED_IDLE};
pub use watch::Watchers;

/// How long a write may wait for the client to read (a client that stops
/// reading is cut off, so that its session does not hold memory forever).
pub const WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);
