//! `cargo xtask`: the appliance's build and its QEMU layout.
//!
//! - [`image`] turns Debian's prebuilt kernel, the modules a role needs, the
//!   static `mailfort` and the files of `rootfs/` into a kernel + initramfs
//!   pair for one board and role.
//! - [`layout`] boots three mail boxes and the storage box under QEMU on a
//!   virtual LAN inside a network namespace, with BIND 9 as the zone's DNS
//!   server, and takes it down again.
//!
//! The library is what the `xtask` binary and the system test share.

pub mod bench;
pub mod board;
pub mod console;
pub mod cpio;
pub mod debian;
pub mod elf;
pub mod image;
pub mod kernel;
pub mod kmod;
pub mod layout;
pub mod named;
pub mod netns;
pub mod paths;
pub mod wait;
