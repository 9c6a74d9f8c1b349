//! The store on the network, both ends of it:
//! - [`client`]: a mail box mounts the store from the storage box over
//!   NFSv4, checks it is its store, and unmounts it;
//! - [`mirror`]: the storage box keeps the store on two disks mirrored
//!   with btrfs raid1 (inspection, first-boot mkfs, degraded mounts,
//!   scrub and balance to resync a returning disk);
//! - [`export`]: the storage box serves the mirror with the kernel's
//!   NFSv4 server, configured by writes into /proc.
//!
//! PID 1 (the `init` crate) decides when each runs; this crate does the
//! work and reports through the [`Hooks`] init gives it.

use std::io;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

pub mod client;
pub mod export;
pub mod mirror;

pub use client::{NfsError, StoreMount};

/// What the storage code needs from the process it runs in (PID 1 on the
/// box): where its lines go, and how a helper program is run while PID 1
/// reaps every child.
#[derive(Clone, Copy)]
pub struct Hooks {
    /// A line for the box's log.
    pub say: fn(&str),
    /// A line that needs a person's attention.
    pub alarm: fn(&str),
    /// Runs a prepared helper program (mkfs.btrfs), named for the log,
    /// to its end within a deadline: its exit status, or None when it did
    /// not finish in time (it is then killed).
    pub run: fn(Command, &str, Duration) -> io::Result<Option<i32>>,
}

/// What came of bringing the storage box's store up, for the console and
/// `status`.
#[derive(Debug, Clone, Default)]
pub struct StorageStatus {
    pub disks: Vec<(PathBuf, String)>,
    pub mounted: bool,
    pub degraded: bool,
    pub formatted_now: bool,
    pub store_ready: bool,
    pub nfs_serving: bool,
    pub clients: usize,
    pub problems: Vec<String>,
}
