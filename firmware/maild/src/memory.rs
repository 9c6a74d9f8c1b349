//! The node-wide budget of bytes that sessions may hold in memory. It
//! lives with message assembly in the store ([`store::assembly`]), which is
//! what spends it; this name stays for the node's code.

pub use store::assembly::MemoryBudget;
