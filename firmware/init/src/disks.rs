//! Finding the box's disks: by their virtio serial (the board's layout),
//! so that disks are found by what they are and not by the order they were
//! attached in, or by name.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Serials of the config disk and the mirror's disks in the board's
/// layout (board/qemu-x86_64/CMDLINE.md).
pub const SERIAL_CONFIG: &str = "config";
pub const SERIAL_DATA: &[&str] = &["store0", "store1"];

/// Time the storage box waits for its disks to appear after loading
/// virtio_blk.
pub const DISK_WAIT: Duration = Duration::from_secs(5);
/// How often the waits look again.
const POLL: Duration = Duration::from_millis(50);

/// The disk whose virtio serial is `serial` (QEMU's `-drive ...,serial=`),
/// from /sys/block/<dev>/serial.
pub fn disk_by_serial(serial: &str) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir("/sys/block")
        .ok()?
        .flatten()
        .filter(|e| fs::read_to_string(e.path().join("serial")).is_ok_and(|s| s.trim() == serial))
        .map(|e| Path::new("/dev").join(e.file_name()))
        .collect();
    found.sort();
    found.into_iter().next()
}

/// Waits up to `deadline` for disks with these serials; returns those
/// found (None for one that did not appear).
pub fn wait_for_serials(serials: &[&str], deadline: Duration) -> Vec<Option<PathBuf>> {
    let t = Instant::now();
    loop {
        let found: Vec<Option<PathBuf>> = serials.iter().map(|s| disk_by_serial(s).filter(|p| p.exists())).collect();
        if found.iter().all(Option::is_some) || t.elapsed() >= deadline {
            return found;
        }
        std::thread::sleep(POLL);
    }
}

/// Waits up to `deadline` for these device nodes to appear.
pub fn wait_for_devices(devs: &[PathBuf], deadline: Duration) {
    let t = Instant::now();
    while t.elapsed() < deadline && !devs.iter().all(|d| d.exists()) {
        std::thread::sleep(POLL);
    }
}
