//! The storage box's two disks mirrored with btrfs raid1: what a disk
//! holds, formatting blank disks on first boot, mounting (degraded when a
//! disk is missing, and said loudly), and resyncing a disk that returns
//! (scrub, then balance single-copy chunks back to raid1).

use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::mount::{MntFlags, MsFlags};

use crate::{client, Hooks, StorageStatus};

/// Where the mirror is mounted.
pub const DATA_DIR: &str = "/data";
/// Left on the mirror while it runs degraded; the next mount with every
/// disk present resyncs and removes it.
pub const DEGRADED_MARKER: &str = ".mailfort-degraded";
/// The mirror's data disks, unless the command line names others
/// (`mailfort.disks=`).
pub const DEFAULT_DISKS: &[&str] = &["/dev/vda", "/dev/vdb"];
/// mkfs.btrfs from btrfs-progs, needed only to format blank disks.
pub const MKFS_BTRFS: &str = "/sbin/mkfs.btrfs";
/// How long formatting may take before it is given up.
const MKFS_TIMEOUT: Duration = Duration::from_secs(120);
/// The filesystem label of the mirror.
const LABEL: &str = "mailfort";

/// btrfs keeps its primary superblock at 64 KiB; in it the filesystem id
/// (16 bytes) is at 0x20 and the magic `_BHRfS_M` at 0x40
/// (fs/btrfs/ctree.h, struct btrfs_super_block).
const BTRFS_SUPER: u64 = 0x10000;
const BTRFS_FSID: u64 = 0x20;
const BTRFS_MAGIC_OFF: u64 = 0x40;
const BTRFS_MAGIC: &[u8; 8] = b"_BHRfS_M";
/// In the superblock: the last committed transaction (u64 at 0x48) and
/// this device's id (the first field of dev_item at 0xc9).
const BTRFS_GENERATION: u64 = 0x48;
const BTRFS_DEVID: u64 = 0xc9;
/// The btrfs ioctls' type byte (include/uapi/linux/btrfs.h).
const BTRFS_IOCTL_MAGIC: u8 = 0x94;
/// struct btrfs_ioctl_scrub_args and struct btrfs_ioctl_balance_args are
/// both 1024 bytes.
type IoctlArgs = [u64; 128];
// BTRFS_IOC_SCRUB = _IOWR(0x94, 27, struct btrfs_ioctl_scrub_args).
nix::ioctl_readwrite!(btrfs_ioc_scrub, BTRFS_IOCTL_MAGIC, 27, IoctlArgs);
// BTRFS_IOC_BALANCE_V2 = _IOWR(0x94, 32, struct btrfs_ioctl_balance_args).
nix::ioctl_readwrite!(btrfs_ioc_balance_v2, BTRFS_IOCTL_MAGIC, 32, IoctlArgs);
/// Offsets of the counters we report in struct btrfs_scrub_progress, which
/// starts at byte 32 of the scrub arguments (after devid, start, end, flags).
const SCRUB_PROGRESS: usize = 32;
const SCRUB_CSUM_ERRORS: usize = 5;
const SCRUB_UNCORRECTABLE: usize = 11;
const SCRUB_CORRECTED: usize = 12;
/// Bytes that must be zero for a disk to count as blank.
const BLANK_PROBE: usize = 1024 * 1024;

/// The balance arguments: flags, state, then the data, metadata and
/// system `btrfs_balance_args` (136 bytes each), progress, padding.
const BALANCE_DATA: u64 = 1 << 0;
const BALANCE_SYSTEM: u64 = 1 << 1;
const BALANCE_METADATA: u64 = 1 << 2;
const BALANCE_ARGS_CONVERT: u64 = 1 << 8;
/// Only chunks not already of the target profile.
const BALANCE_ARGS_SOFT: u64 = 1 << 9;
const BLOCK_GROUP_RAID1: u64 = 1 << 4;
/// In btrfs_balance_args: `target` and `flags` are its 8th and 9th u64.
const BALANCE_ARGS_WORDS: usize = 136 / 8;
const BALANCE_TARGET: usize = 7;
const BALANCE_FLAGS: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error("no mirror found and not two blank disks to make one ({0}); not formatting anything")]
    NoMirror(String),
    #[error("mkfs.btrfs failed (exit status {0})")]
    MkfsFailed(i32),
    #[error("mkfs.btrfs did not finish within {} s", MKFS_TIMEOUT.as_secs())]
    MkfsTimeout,
    #[error("no disk to mount")]
    NoDisk,
    #[error("cannot mount the mirror from {dev}: {err}")]
    Mount { dev: PathBuf, err: io::Error },
    #[error("{what}: {err}")]
    Io { what: String, err: io::Error },
}

fn ioe(what: impl Into<String>) -> impl FnOnce(io::Error) -> MirrorError {
    let what = what.into();
    move |err| MirrorError::Io { what, err }
}

/// What a disk holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskState {
    Missing,
    Blank,
    /// btrfs with this filesystem id.
    Btrfs([u8; 16]),
    Other,
}

pub fn inspect_disk(dev: &Path) -> DiskState {
    let Ok(f) = fs::File::open(dev) else { return DiskState::Missing };
    let mut magic = [0u8; 8];
    if f.read_exact_at(&mut magic, BTRFS_SUPER + BTRFS_MAGIC_OFF).is_ok() && &magic == BTRFS_MAGIC {
        let mut fsid = [0u8; 16];
        if f.read_exact_at(&mut fsid, BTRFS_SUPER + BTRFS_FSID).is_ok() {
            return DiskState::Btrfs(fsid);
        }
    }
    let mut buf = vec![0u8; BLANK_PROBE];
    match f.read_at(&mut buf, 0) {
        Ok(n) if buf[..n].iter().all(|&b| b == 0) => DiskState::Blank,
        _ => DiskState::Other,
    }
}

/// A btrfs member's committed generation and device id.
pub fn member_info(dev: &Path) -> Option<(u64, u64)> {
    let f = fs::File::open(dev).ok()?;
    let mut g = [0u8; 8];
    let mut d = [0u8; 8];
    f.read_exact_at(&mut g, BTRFS_SUPER + BTRFS_GENERATION).ok()?;
    f.read_exact_at(&mut d, BTRFS_SUPER + BTRFS_DEVID).ok()?;
    Some((u64::from_le_bytes(g), u64::from_le_bytes(d)))
}

/// Scrubs one device of the filesystem mounted at `mountpoint`: reads
/// every copy, checks it against its checksum and rewrites bad or stale
/// copies from the good one. Blocks until done; returns (checksum errors,
/// corrected, uncorrectable).
pub fn scrub(mountpoint: &str, devid: u64) -> io::Result<(u64, u64, u64)> {
    let dir = fs::File::open(mountpoint)?;
    let mut args: IoctlArgs = [0; 128];
    args[0] = devid;
    args[1] = 0;
    args[2] = u64::MAX;
    // SAFETY: BTRFS_IOC_SCRUB reads and writes a 1024-byte struct; `args`
    // is that size and lives across the call, and `dir` is open.
    unsafe { btrfs_ioc_scrub(dir.as_raw_fd(), &mut args) }?;
    let p = |i: usize| args[SCRUB_PROGRESS / 8 + i];
    Ok((p(SCRUB_CSUM_ERRORS), p(SCRUB_CORRECTED), p(SCRUB_UNCORRECTABLE)))
}

/// Rewrites every chunk that is not raid1 as raid1. While the mirror ran
/// degraded, btrfs put new data in single-copy chunks; they stay single
/// when the disk returns until a balance converts them.
pub fn balance_to_raid1(mountpoint: &str) -> io::Result<()> {
    let dir = fs::File::open(mountpoint)?;
    let mut a: IoctlArgs = [0; 128];
    a[0] = BALANCE_DATA | BALANCE_METADATA | BALANCE_SYSTEM;
    for part in 0..3 {
        let base = 2 + part * BALANCE_ARGS_WORDS;
        a[base + BALANCE_TARGET] = BLOCK_GROUP_RAID1;
        a[base + BALANCE_FLAGS] = BALANCE_ARGS_CONVERT | BALANCE_ARGS_SOFT;
    }
    // SAFETY: BTRFS_IOC_BALANCE_V2 reads and writes a 1024-byte struct;
    // `a` is that size and lives across the call, and `dir` is open.
    unsafe { btrfs_ioc_balance_v2(dir.as_raw_fd(), &mut a) }?;
    Ok(())
}

/// After a mount with every member present: a member that missed
/// transactions (it was away while the mirror ran degraded) holds stale
/// copies that btrfs does not resync by itself, and what was written
/// meanwhile sits in single-copy chunks. In the background, scrub every
/// device (rewrites stale copies from good ones) and convert single chunks
/// back to raid1. `before` is each member's (generation, devid) read
/// before the mount (mounting may commit and even out the superblocks).
pub fn resync_if_stale(before: &[(PathBuf, Option<(u64, u64)>)], st: &mut StorageStatus, hooks: &Hooks) {
    let info: Vec<(PathBuf, u64, u64)> = before.iter().filter_map(|(d, i)| i.map(|(g, id)| (d.clone(), g, id))).collect();
    let newest = info.iter().map(|(_, g, _)| *g).max().unwrap_or(0);
    let mut stale: Vec<String> = info.iter().filter(|(_, g, _)| *g < newest).map(|(d, g, _)| format!("{} (generation {g} of {newest})", d.display())).collect();
    // Writes made while degraded may not have reached a full commit (an
    // fsync only writes the log tree), so the superblocks can agree while a
    // member is stale: the marker left by the degraded mount says so.
    let marker = Path::new(DATA_DIR).join(DEGRADED_MARKER);
    if marker.exists() {
        stale.push(format!("(the mirror ran degraded: {})", fs::read_to_string(&marker).unwrap_or_default().trim()));
    }
    if stale.is_empty() {
        return;
    }
    let p = format!("stale mirror member {}: it missed writes while away; scrubbing to resync", stale.join(", "));
    (hooks.alarm)(&p);
    st.problems.push(p);
    let hooks = *hooks;
    let ids: Vec<u64> = info.iter().map(|(_, _, id)| *id).collect();
    let _ = std::thread::Builder::new().name("scrub".into()).spawn(move || {
        for id in ids {
            match scrub(DATA_DIR, id) {
                Ok((errors, corrected, uncorrectable)) => (hooks.say)(&format!("scrub of device {id} done: {errors} checksum error(s), {corrected} corrected, {uncorrectable} uncorrectable")),
                Err(e) => (hooks.alarm)(&format!("scrub of device {id} failed: {e}")),
            }
        }
        match balance_to_raid1(DATA_DIR) {
            Ok(()) => {
                let _ = fs::remove_file(Path::new(DATA_DIR).join(DEGRADED_MARKER));
                nix::unistd::sync();
                (hooks.say)("mirror resynced: every chunk is raid1 again");
            }
            Err(e) => (hooks.alarm)(&format!("converting single-copy chunks back to raid1 failed: {e}")),
        }
    });
}

/// Finds, formats (when blank) and mounts the mirror on [`DATA_DIR`].
pub fn bring_up_volume(disks: &[PathBuf], st: &mut StorageStatus, hooks: &Hooks) -> Result<(), MirrorError> {
    let states: Vec<DiskState> = disks.iter().map(|d| inspect_disk(d)).collect();
    st.disks = disks.iter().zip(&states).map(|(d, s)| (d.clone(), describe(s))).collect();
    (hooks.say)(&format!("disks: {}", st.disks.iter().map(|(d, s)| format!("{} {s}", d.display())).collect::<Vec<_>>().join(", ")));
    let btrfs: Vec<(&PathBuf, [u8; 16])> = disks.iter().zip(&states).filter_map(|(d, s)| if let DiskState::Btrfs(id) = s { Some((d, *id)) } else { None }).collect();
    if btrfs.is_empty() {
        let blank: Vec<&PathBuf> = disks.iter().zip(&states).filter(|(_, s)| **s == DiskState::Blank).map(|(d, _)| d).collect();
        if blank.len() < 2 || blank.len() != disks.len() {
            return Err(MirrorError::NoMirror(st.disks.iter().map(|(d, s)| format!("{} {s}", d.display())).collect::<Vec<_>>().join(", ")));
        }
        (hooks.say)(&format!("first boot: formatting {} as a btrfs raid1 mirror", blank.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(" and ")));
        mkfs(&blank, hooks)?;
        st.formatted_now = true;
        return mount_volume(disks, false, st, hooks);
    }
    let first = btrfs[0].1;
    let members: Vec<PathBuf> = btrfs.iter().filter(|(_, id)| *id == first).map(|(d, _)| (*d).clone()).collect();
    for (d, s) in disks.iter().zip(&states) {
        if !members.contains(d) {
            let p = format!("disk {} is not part of the mirror ({}); the mirror runs on fewer disks", d.display(), describe(s));
            (hooks.alarm)(&p);
            st.problems.push(p);
        }
    }
    let degraded = members.len() < disks.len();
    mount_volume(&members, degraded, st, hooks)
}

fn describe(s: &DiskState) -> String {
    match s {
        DiskState::Missing => "missing".into(),
        DiskState::Blank => "blank".into(),
        DiskState::Btrfs(id) => format!("btrfs {}", id.iter().take(4).map(|b| format!("{b:02x}")).collect::<String>()),
        DiskState::Other => "holds other data".into(),
    }
}

fn mkfs(disks: &[&PathBuf], hooks: &Hooks) -> Result<(), MirrorError> {
    let mut cmd = Command::new(MKFS_BTRFS);
    cmd.args(["-L", LABEL, "-d", "raid1", "-m", "raid1"]).args(disks.iter().map(|d| d.as_os_str())).stdin(Stdio::null());
    match (hooks.run)(cmd, "mkfs.btrfs", MKFS_TIMEOUT).map_err(ioe(MKFS_BTRFS))? {
        Some(0) => Ok(()),
        Some(code) => Err(MirrorError::MkfsFailed(code)),
        None => Err(MirrorError::MkfsTimeout),
    }
}

/// Mounts the mirror. Each member is named with `device=` so the kernel
/// finds the others without `btrfs device scan`; when a member is missing
/// the normal mount fails and `degraded` is needed (and reported loudly).
fn mount_volume(members: &[PathBuf], mut degraded: bool, st: &mut StorageStatus, hooks: &Hooks) -> Result<(), MirrorError> {
    fs::create_dir_all(DATA_DIR).map_err(ioe(DATA_DIR))?;
    let before: Vec<(PathBuf, Option<(u64, u64)>)> = members.iter().map(|d| (d.clone(), member_info(d))).collect();
    let Some(first) = members.first() else { return Err(MirrorError::NoDisk) };
    let devs: Vec<String> = members.iter().map(|d| format!("device={}", d.display())).collect();
    let mut opts = devs.join(",");
    if degraded {
        opts.push_str(",degraded");
    }
    let mount = |opts: &str| nix::mount::mount(Some(first.as_path()), DATA_DIR, Some("btrfs"), MsFlags::empty(), Some(opts));
    let mut r = mount(&opts);
    if let (Err(e), false) = (r, degraded) {
        (hooks.say)(&format!("mounting the mirror failed ({e}); trying degraded"));
        degraded = true;
        r = mount(&format!("{opts},degraded"));
    }
    r.map_err(|e| MirrorError::Mount { dev: first.clone(), err: e.into() })?;
    st.mounted = true;
    st.degraded = degraded;
    if degraded {
        let since = format!("since {} s after the epoch, on {}\n", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0), members.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(","));
        if !Path::new(DATA_DIR).join(DEGRADED_MARKER).exists() {
            let _ = store::fsutil::write_atomic(&Path::new(DATA_DIR).join(DEGRADED_MARKER), since.as_bytes());
        }
        let p = "the mirror is mounted DEGRADED: a disk is missing or broken; mail is safe on the remaining disk only; replace the disk and scrub".to_string();
        (hooks.alarm)(&p);
        st.problems.push(p);
    } else {
        (hooks.say)(&format!("mirror mounted on {DATA_DIR} ({} disks)", members.len()));
        resync_if_stale(&before, st, hooks);
    }
    Ok(())
}

/// Flushes everything and unmounts the mirror (the NFS server must have
/// let go of it, see [`crate::export::shut_down`]).
pub fn unmount(hooks: &Hooks) {
    nix::unistd::sync();
    if client::is_mountpoint(Path::new(DATA_DIR)) {
        match nix::mount::umount2(DATA_DIR, MntFlags::empty()) {
            Ok(()) => (hooks.say)("mirror unmounted"),
            Err(e) => (hooks.say)(&format!("unmounting {DATA_DIR}: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_the_kernel_header() {
        // include/uapi/linux/btrfs.h, as the kernel computes them.
        assert_eq!(nix::request_code_readwrite!(BTRFS_IOCTL_MAGIC, 27, std::mem::size_of::<IoctlArgs>()) as u64, 0xC400_941B);
        assert_eq!(nix::request_code_readwrite!(BTRFS_IOCTL_MAGIC, 32, std::mem::size_of::<IoctlArgs>()) as u64, 0xC400_9420);
    }

    #[test]
    fn disk_inspection() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d");
        let f = fs::File::create(&p).unwrap();
        f.set_len(4 * 1024 * 1024).unwrap();
        assert_eq!(inspect_disk(&p), DiskState::Blank);
        f.write_all_at(b"\x01\x02", BTRFS_SUPER + BTRFS_FSID).unwrap();
        assert_eq!(inspect_disk(&p), DiskState::Other);
        f.write_all_at(BTRFS_MAGIC, BTRFS_SUPER + BTRFS_MAGIC_OFF).unwrap();
        let mut id = [0u8; 16];
        id[0] = 1;
        id[1] = 2;
        assert_eq!(inspect_disk(&p), DiskState::Btrfs(id));
        assert_eq!(inspect_disk(&dir.path().join("none")), DiskState::Missing);
    }

    #[test]
    fn real_btrfs_mirror_is_recognised() {
        // Needs btrfs-progs on the machine running the tests.
        if !Path::new(MKFS_BTRFS).exists() {
            eprintln!("skipped: no {MKFS_BTRFS}");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let disks: Vec<PathBuf> = (0..2).map(|i| dir.path().join(format!("d{i}"))).collect();
        for d in &disks {
            fs::File::create(d).unwrap().set_len(256 * 1024 * 1024).unwrap();
        }
        let o = Command::new(MKFS_BTRFS).args(["-q", "-d", "raid1", "-m", "raid1"]).args(&disks).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let (a, b) = (inspect_disk(&disks[0]), inspect_disk(&disks[1]));
        assert!(matches!(a, DiskState::Btrfs(_)));
        assert_eq!(a, b, "both members carry one filesystem id");
        let (ga, ida) = member_info(&disks[0]).unwrap();
        let (gb, idb) = member_info(&disks[1]).unwrap();
        assert_eq!(ga, gb);
        let mut ids = [ida, idb];
        ids.sort();
        assert_eq!(ids, [1, 2]);
    }
}
