//! PID 1 of a mailfort box and the pieces it is made of.
//!
//! A box boots the Debian kernel with an initramfs whose `/init` is the
//! `mailfort` binary. [`pid1::run`] mounts the kernel filesystems, loads
//! the role's modules, reads the box's settings from its config partition
//! (seeded from the kernel command line on first boot), brings up the
//! network and then runs the role:
//! - a **mail box** ([`mailbox`]) mounts the store from the storage box
//!   over NFSv4 (`storage::client`), checks it is its store, and runs
//!   `mailfort serve` as a supervised child on the standard ports;
//! - the **storage box** ([`storagebox`]) mirrors two disks with btrfs
//!   raid1 (`storage::mirror`), creates the store on first boot, and
//!   exports it with the kernel's NFSv4 server (`storage::export`).
//!
//! Both offer the serial console ([`console`]) over the box's [`host`],
//! reap orphans, and stop cleanly on SIGTERM, the ACPI power button or
//! `poweroff`.

pub mod cmdline;
pub mod configdisk;
pub mod console;
pub mod dhcp;
pub mod disks;
pub mod host;
pub mod log;
pub mod mailbox;
pub mod modules;
pub mod net;
pub mod pid1;
pub mod power;
pub mod service;
pub mod settings;
pub mod storagebox;
pub mod sys;
