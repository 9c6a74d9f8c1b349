//! The storage box: two disks mirrored with btrfs raid1, the store on them,
//! and the kernel's NFSv4 server configured by writes into /proc (no
//! nfs-utils, no rpcbind, no mountd: NFSv4 needs none of them).
//!
//! ```text
//! /data                       the mirrored volume (btrfs raid1)
//! /data/export                the NFSv4 root (fsid 0) the mail boxes see
//! /data/export/store          the store; mail boxes mount <box>:/store
//! /data/nfs4recovery          the server's client records, so clients
//!                             reclaim their state after a reboot
//! ```

use std::fs;
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::settings::{Cidr, NodeSettings};
use crate::sys;

pub const DATA_DIR: &str = "/data";
pub const EXPORT_ROOT: &str = "/data/export";
pub const STORE_DIR: &str = "/data/export/store";
pub const RECOVERY_DIR: &str = "/data/nfs4recovery";
/// Left on the mirror while it runs degraded; the next mount with every
/// disk present resyncs and removes it.
pub const DEGRADED_MARKER: &str = ".mailfort-degraded";
/// The mirror's data disks and the config disk, unless the command line
/// names others (`mailfort.disks=`, `mailfort.config=`).
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
/// BTRFS_IOC_SCRUB = _IOWR(0x94, 27, struct btrfs_ioctl_scrub_args), a
/// 1024-byte argument (include/uapi/linux/btrfs.h).
const BTRFS_IOC_SCRUB: libc::c_ulong = 0xC400_941B;
/// Offsets of the counters we report in struct btrfs_scrub_progress, which
/// starts at byte 32 of the scrub arguments (after devid, start, end, flags).
const SCRUB_PROGRESS: usize = 32;
const SCRUB_CSUM_ERRORS: usize = 5;
const SCRUB_UNCORRECTABLE: usize = 11;
const SCRUB_CORRECTED: usize = 12;
/// Bytes that must be zero for a disk to count as blank.
const BLANK_PROBE: usize = 1024 * 1024;

/// The NFS server's lease (RFC 8881 8.3) and grace period, seconds. Short:
/// mail boxes hold no NFS locks (the store's locks are files), so a short
/// grace after a storage reboot only speeds the mail boxes' return. 10 is
/// the kernel's minimum.
pub const LEASE_SECS: u32 = 15;
pub const GRACE_SECS: u32 = 15;
/// nfsd threads.
pub const THREADS: u32 = 8;
/// Most client addresses a client list may expand to (one cache line
/// each: the kernel's auth.unix.ip cache has no subnet matching).
pub const MAX_CLIENTS: usize = 1024;
/// The client name the cache lines use for the mail boxes.
pub const CLIENT_DOMAIN: &str = "mailboxes";
/// Cache entries that never expire (seconds since the epoch; the kernel's
/// cache channels take an absolute expiry time).
pub const NEVER: i64 = i32::MAX as i64;

/// Export flags, include/uapi/linux/nfsd/export.h.
pub const NFSEXP_INSECURE_PORT: u32 = 0x0002;
pub const NFSEXP_GATHERED_WRITES: u32 = 0x0020;
pub const NFSEXP_NOSUBTREECHECK: u32 = 0x0400;
pub const NFSEXP_FSID: u32 = 0x2000;
/// Read-write, sync, no root squash (the boxes run as root and are the only
/// clients), no subtree check, an explicit fsid, any source port.
pub const EXPORT_FLAGS: u32 = NFSEXP_INSECURE_PORT | NFSEXP_GATHERED_WRITES | NFSEXP_NOSUBTREECHECK | NFSEXP_FSID;
/// RPC_AUTH_UNIX (RFC 5531 8.2), the one security flavour offered.
const AUTH_UNIX: u32 = 1;
/// nobody/nogroup, for squashed requests (none are squashed here).
const ANON_ID: u32 = 65534;

/// The addresses a client list stands for: `192.0.2.0/24` (hosts only),
/// `192.0.2.11`, `192.0.2.11-192.0.2.13`, comma-separated.
pub fn expand_clients(spec: &str) -> Result<Vec<Ipv4Addr>, String> {
    let mut out: Vec<Ipv4Addr> = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (lo, hi) = if let Some(c) = Cidr::parse(part) {
            let net = u32::from(c.network());
            let size = 1u64 << (32 - c.prefix as u32);
            if size > MAX_CLIENTS as u64 + 2 {
                return Err(format!("{part} is more than {MAX_CLIENTS} addresses"));
            }
            // /31 and /32 have no network and broadcast address (RFC 3021).
            if c.prefix >= 31 {
                (net, net + (size as u32 - 1))
            } else {
                (net + 1, net + (size as u32 - 2))
            }
        } else if let Some((a, b)) = part.split_once('-') {
            let a: Ipv4Addr = a.trim().parse().map_err(|_| format!("'{part}' is not a range a-b"))?;
            let b: Ipv4Addr = b.trim().parse().map_err(|_| format!("'{part}' is not a range a-b"))?;
            if u32::from(b) < u32::from(a) {
                return Err(format!("'{part}' ends before it starts"));
            }
            (u32::from(a), u32::from(b))
        } else {
            let a: Ipv4Addr = part.parse().map_err(|_| format!("'{part}' is not an address, CIDR or range"))?;
            (u32::from(a), u32::from(a))
        };
        if (hi - lo) as usize >= MAX_CLIENTS || out.len() + (hi - lo) as usize >= MAX_CLIENTS {
            return Err(format!("the client list is more than {MAX_CLIENTS} addresses"));
        }
        out.extend((lo..=hi).map(Ipv4Addr::from));
    }
    if out.is_empty() {
        return Err("the client list is empty".into());
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// A path we write into a cache channel: the kernel splits lines at spaces
/// and treats `\` as an escape (qword_get in net/sunrpc/cache.c).
fn channel_path_ok(p: &str) -> bool {
    p.starts_with('/') && p.bytes().all(|b| b.is_ascii_graphic() && b != b'\\')
}

/// `/proc/net/rpc/auth.unix.ip/channel`: this address belongs to `domain`
/// for the nfsd service.
pub fn client_line(ip: Ipv4Addr, domain: &str) -> String {
    format!("nfsd {ip} {NEVER} {domain}\n")
}

/// `/proc/net/rpc/nfsd.export/channel`: `domain path expiry flags anonuid
/// anongid fsid secinfo count flavour flags`.
pub fn export_line(domain: &str, path: &str, fsid: u32) -> Option<String> {
    channel_path_ok(path).then(|| format!("{domain} {path} {NEVER} {EXPORT_FLAGS} {ANON_ID} {ANON_ID} {fsid} secinfo 1 {AUTH_UNIX} {EXPORT_FLAGS}\n"))
}

/// `/proc/net/rpc/nfsd.fh/channel`: the filehandle root for fsid 0 (type
/// 1 = FSID_NUM, a 4-byte fsid given in hex), which makes `path` the NFSv4
/// root the clients see.
pub fn root_fh_line(domain: &str, path: &str) -> Option<String> {
    channel_path_ok(path).then(|| format!("{domain} 1 \\x00000000 {NEVER} {path}\n"))
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
    use std::os::fd::AsRawFd;
    let dir = fs::File::open(mountpoint)?;
    let mut args = [0u64; 128];
    args[0] = devid;
    args[1] = 0;
    args[2] = u64::MAX;
    // SAFETY: BTRFS_IOC_SCRUB takes a 1024-byte struct; `args` is that
    // size and lives across the call.
    let r = unsafe { libc::ioctl(dir.as_raw_fd(), BTRFS_IOC_SCRUB, args.as_mut_ptr()) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let p = |i: usize| args[SCRUB_PROGRESS / 8 + i];
    Ok((p(SCRUB_CSUM_ERRORS), p(SCRUB_CORRECTED), p(SCRUB_UNCORRECTABLE)))
}

/// BTRFS_IOC_BALANCE_V2 = _IOWR(0x94, 32, struct btrfs_ioctl_balance_args),
/// 1024 bytes: flags, state, then the data, metadata and system
/// `btrfs_balance_args` (136 bytes each), progress, padding.
const BTRFS_IOC_BALANCE_V2: libc::c_ulong = 0xC400_9420;
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

/// Rewrites every chunk that is not raid1 as raid1. While the mirror ran
/// degraded, btrfs put new data in single-copy chunks; they stay single
/// when the disk returns until a balance converts them.
pub fn balance_to_raid1(mountpoint: &str) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let dir = fs::File::open(mountpoint)?;
    let mut a = [0u64; 128];
    a[0] = BALANCE_DATA | BALANCE_METADATA | BALANCE_SYSTEM;
    for part in 0..3 {
        let base = 2 + part * BALANCE_ARGS_WORDS;
        a[base + BALANCE_TARGET] = BLOCK_GROUP_RAID1;
        a[base + BALANCE_FLAGS] = BALANCE_ARGS_CONVERT | BALANCE_ARGS_SOFT;
    }
    // SAFETY: the ioctl takes a 1024-byte struct; `a` is that size.
    let r = unsafe { libc::ioctl(dir.as_raw_fd(), BTRFS_IOC_BALANCE_V2, a.as_mut_ptr()) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// After a mount with every member present: a member that missed
/// transactions (it was away while the mirror ran degraded) holds stale
/// copies that btrfs does not resync by itself, and what was written
/// meanwhile sits in single-copy chunks. In the background, scrub every
/// device (rewrites stale copies from good ones) and convert single chunks
/// back to raid1. `before` is each member's (generation, devid) read
/// before the mount (mounting may commit and even out the superblocks).
pub fn resync_if_stale(before: &[(PathBuf, Option<(u64, u64)>)], st: &mut StorageStatus) {
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
    crate::alarm!("{p}");
    st.problems.push(p);
    let ids: Vec<u64> = info.iter().map(|(_, _, id)| *id).collect();
    let _ = std::thread::Builder::new().name("scrub".into()).spawn(move || {
        for id in ids {
            match scrub(DATA_DIR, id) {
                Ok((errors, corrected, uncorrectable)) => crate::say!("scrub of device {id} done: {errors} checksum error(s), {corrected} corrected, {uncorrectable} uncorrectable"),
                Err(e) => crate::alarm!("scrub of device {id} failed: {e}"),
            }
        }
        match balance_to_raid1(DATA_DIR) {
            Ok(()) => {
                let _ = fs::remove_file(Path::new(DATA_DIR).join(DEGRADED_MARKER));
                sys::sync();
                crate::say!("mirror resynced: every chunk is raid1 again");
            }
            Err(e) => crate::alarm!("converting single-copy chunks back to raid1 failed: {e}"),
        }
    });
}

/// What came of bringing the mirror up, for the console and `status`.
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

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{0}")]
    Volume(String),
    #[error("{what}: {err}")]
    Io { what: String, err: io::Error },
    #[error("store: {0}")]
    Store(#[from] store::StoreError),
}

fn ioe(what: impl Into<String>) -> impl FnOnce(io::Error) -> StorageError {
    let what = what.into();
    move |err| StorageError::Io { what, err }
}

/// Finds, formats (when blank) and mounts the mirror on [`DATA_DIR`].
pub fn bring_up_volume(disks: &[PathBuf], st: &mut StorageStatus) -> Result<(), StorageError> {
    let states: Vec<DiskState> = disks.iter().map(|d| inspect_disk(d)).collect();
    st.disks = disks.iter().zip(&states).map(|(d, s)| (d.clone(), describe(s))).collect();
    crate::say!("disks: {}", st.disks.iter().map(|(d, s)| format!("{} {s}", d.display())).collect::<Vec<_>>().join(", "));
    let btrfs: Vec<(&PathBuf, [u8; 16])> = disks.iter().zip(&states).filter_map(|(d, s)| if let DiskState::Btrfs(id) = s { Some((d, *id)) } else { None }).collect();
    if btrfs.is_empty() {
        let blank: Vec<&PathBuf> = disks.iter().zip(&states).filter(|(_, s)| **s == DiskState::Blank).map(|(d, _)| d).collect();
        if blank.len() < 2 || blank.len() != disks.len() {
            return Err(StorageError::Volume(format!("no mirror found and not two blank disks to make one ({}); not formatting anything", st.disks.iter().map(|(d, s)| format!("{} {s}", d.display())).collect::<Vec<_>>().join(", "))));
        }
        crate::say!("first boot: formatting {} as a btrfs raid1 mirror", blank.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(" and "));
        mkfs(&blank)?;
        st.formatted_now = true;
        return mount_volume(disks, false, st);
    }
    let first = btrfs[0].1;
    let members: Vec<PathBuf> = btrfs.iter().filter(|(_, id)| *id == first).map(|(d, _)| (*d).clone()).collect();
    for (d, s) in disks.iter().zip(&states) {
        if !members.contains(d) {
            let p = format!("disk {} is not part of the mirror ({}); the mirror runs on fewer disks", d.display(), describe(s));
            crate::alarm!("{p}");
            st.problems.push(p);
        }
    }
    let degraded = members.len() < disks.len();
    mount_volume(&members, degraded, st)
}

fn describe(s: &DiskState) -> String {
    match s {
        DiskState::Missing => "missing".into(),
        DiskState::Blank => "blank".into(),
        DiskState::Btrfs(id) => format!("btrfs {}", id.iter().take(4).map(|b| format!("{b:02x}")).collect::<String>()),
        DiskState::Other => "holds other data".into(),
    }
}

fn mkfs(disks: &[&PathBuf]) -> Result<(), StorageError> {
    let mut cmd = Command::new(MKFS_BTRFS);
    cmd.args(["-L", LABEL, "-d", "raid1", "-m", "raid1"]).args(disks.iter().map(|d| d.as_os_str()));
    sys::unblock_signals_in_child(&mut cmd);
    let mut child = cmd.stdin(std::process::Stdio::null()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().map_err(ioe(MKFS_BTRFS))?;
    let pid = child.id() as i32;
    let (out, err) = (child.stdout.take(), child.stderr.take());
    let t1 = std::thread::spawn(move || crate::service::forward_lines("mkfs.btrfs", out));
    let t2 = std::thread::spawn(move || crate::service::forward_lines("mkfs.btrfs", err));
    let status = sys::wait_pid(pid, MKFS_TIMEOUT);
    let _ = (t1.join(), t2.join());
    match status {
        Some(0) => Ok(()),
        Some(code) => Err(StorageError::Volume(format!("mkfs.btrfs failed (exit status {code})"))),
        None => {
            sys::kill(pid, libc::SIGKILL);
            Err(StorageError::Volume(format!("mkfs.btrfs did not finish within {} s", MKFS_TIMEOUT.as_secs())))
        }
    }
}

/// Mounts the mirror. Each member is named with `device=` so the kernel
/// finds the others without `btrfs device scan`; when a member is missing
/// the normal mount fails and `degraded` is needed (and reported loudly).
fn mount_volume(members: &[PathBuf], mut degraded: bool, st: &mut StorageStatus) -> Result<(), StorageError> {
    fs::create_dir_all(DATA_DIR).map_err(ioe(DATA_DIR))?;
    let before: Vec<(PathBuf, Option<(u64, u64)>)> = members.iter().map(|d| (d.clone(), member_info(d))).collect();
    let Some(first) = members.first() else { return Err(StorageError::Volume("no disk to mount".into())) };
    let devs: Vec<String> = members.iter().map(|d| format!("device={}", d.display())).collect();
    let mut opts = devs.join(",");
    if degraded {
        opts.push_str(",degraded");
    }
    let mut r = sys::mount(&first.to_string_lossy(), DATA_DIR, "btrfs", 0, &opts);
    if r.is_err() && !degraded {
        crate::say!("mounting the mirror failed ({}); trying degraded", r.as_ref().err().map(|e| e.to_string()).unwrap_or_default());
        degraded = true;
        r = sys::mount(&first.to_string_lossy(), DATA_DIR, "btrfs", 0, &format!("{opts},degraded"));
    }
    r.map_err(|e| StorageError::Volume(format!("cannot mount the mirror from {}: {e}", first.display())))?;
    st.mounted = true;
    st.degraded = degraded;
    if degraded {
        let since = format!("since {} s after the epoch, on {}\n", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0), members.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(","));
        if !Path::new(DATA_DIR).join(DEGRADED_MARKER).exists() {
            let _ = store::fsutil::write_atomic(&Path::new(DATA_DIR).join(DEGRADED_MARKER), since.as_bytes());
        }
        let p = "the mirror is mounted DEGRADED: a disk is missing or broken; mail is safe on the remaining disk only; replace the disk and scrub".to_string();
        crate::alarm!("{p}");
        st.problems.push(p);
    } else {
        crate::say!("mirror mounted on {DATA_DIR} ({} disks)", members.len());
        resync_if_stale(&before, st);
    }
    Ok(())
}

/// Creates the store on first boot and keeps cluster.toml's DNS settings
/// in step with this box's settings.
pub fn prepare_store(settings: &NodeSettings, st: &mut StorageStatus) -> Result<(), StorageError> {
    fs::create_dir_all(STORE_DIR).map_err(ioe(STORE_DIR))?;
    fs::create_dir_all(RECOVERY_DIR).map_err(ioe(RECOVERY_DIR))?;
    let store = if Path::new(STORE_DIR).join("FORMAT").exists() {
        store::Store::open(Path::new(STORE_DIR))?
    } else {
        let Some(domain) = settings.domain.as_deref() else {
            return Err(StorageError::Volume("no store yet and no mail domain to create one: `config set domain example.org`, then reboot".into()));
        };
        let s = store::Store::init(Path::new(STORE_DIR), domain, None)?;
        crate::say!("created the store for {domain} (store id {})", s.settings().store_id);
        s
    };
    if let Some(dns) = ddns_settings(settings)? {
        let mut cs = store.reload_settings()?;
        if cs.dns.as_ref() != Some(&dns) {
            cs.dns = Some(dns);
            store.write_settings(&cs)?;
            crate::say!("DNS announcer settings written to cluster.toml");
        }
    }
    st.store_ready = true;
    Ok(())
}

/// The store's DNS settings from this box's `ddns.*` settings, when they
/// are complete.
pub fn ddns_settings(s: &NodeSettings) -> Result<Option<store::DnsSettings>, StorageError> {
    let d = &s.ddns;
    // The zone defaults to the mail domain (the board's contract).
    let zone = d.zone.as_ref().or(s.domain.as_ref());
    let (Some(server), Some(zone), Some(name), Some(secret)) = (&d.server, zone, &d.key_name, &d.key_secret) else {
        return Ok(None);
    };
    let dns = store::DnsSettings {
        server: server.clone(),
        zone: zone.clone(),
        client_host: d.client_host.clone(),
        ttl: store::DEFAULT_DNS_TTL,
        recheck_secs: store::DEFAULT_DNS_RECHECK_SECS,
        tsig: store::TsigSettings { name: name.clone(), algorithm: d.key_algorithm.clone().unwrap_or_else(|| "hmac-sha256".into()), secret: secret.clone() },
    };
    cluster::announcer::target(&dns).map_err(|e| StorageError::Volume(format!("ddns settings: {e}")))?;
    Ok(Some(dns))
}

const NFSD_FS: &str = "/proc/fs/nfsd";

fn write_proc(path: &str, text: &str) -> Result<(), StorageError> {
    // Each line must reach the kernel in one write(2): the cache channels
    // parse a write as one request.
    let mut f = fs::OpenOptions::new().write(true).open(path).map_err(ioe(path))?;
    f.write_all(text.as_bytes()).map_err(ioe(format!("{path} <- {}", text.trim_end())))
}

/// Configures and starts the kernel NFSv4 server, exporting the store to
/// `clients` only.
pub fn start_nfs_server(clients: &[Ipv4Addr], st: &mut StorageStatus) -> Result<(), StorageError> {
    fs::create_dir_all(NFSD_FS).map_err(ioe(NFSD_FS))?;
    if !nfs::is_mountpoint(Path::new(NFSD_FS)) {
        sys::mount("nfsd", NFSD_FS, "nfsd", 0, "").map_err(ioe("mount nfsd"))?;
    }
    // Versions before threads start; v2 is not built and `-2` is refused.
    write_proc("/proc/fs/nfsd/versions", "-3 +4 +4.1 +4.2\n")?;
    write_proc("/proc/fs/nfsd/nfsv4leasetime", &format!("{LEASE_SECS}\n"))?;
    write_proc("/proc/fs/nfsd/nfsv4gracetime", &format!("{GRACE_SECS}\n"))?;
    write_proc("/proc/fs/nfsd/nfsv4recoverydir", &format!("{RECOVERY_DIR}\n"))?;
    for ip in clients {
        write_proc("/proc/net/rpc/auth.unix.ip/channel", &client_line(*ip, CLIENT_DOMAIN))?;
    }
    let export = export_line(CLIENT_DOMAIN, EXPORT_ROOT, 0).ok_or_else(|| StorageError::Volume("bad export path".into()))?;
    write_proc("/proc/net/rpc/nfsd.export/channel", &export)?;
    let fh = root_fh_line(CLIENT_DOMAIN, EXPORT_ROOT).ok_or_else(|| StorageError::Volume("bad export path".into()))?;
    write_proc("/proc/net/rpc/nfsd.fh/channel", &fh)?;
    // Port 2049 over TCP only (RFC 7530 3.1); then the threads, which start
    // the server and its grace period.
    let running = fs::read_to_string("/proc/fs/nfsd/threads").map(|t| t.trim() != "0").unwrap_or(false);
    if !running {
        write_proc("/proc/fs/nfsd/portlist", &format!("tcp {}\n", nfs::NFS_PORT))?;
    }
    // Clients known from before this boot have a record in the recovery
    // directory and may reclaim their state during the grace period
    // (RFC 8881 8.4.2). With no records nobody can reclaim, so the grace
    // period only delays the mail boxes: end it at once.
    let known_clients = fs::read_dir(RECOVERY_DIR).map(|d| d.count()).unwrap_or(0);
    write_proc("/proc/fs/nfsd/threads", &format!("{THREADS}\n"))?;
    if known_clients == 0 {
        match write_proc("/proc/fs/nfsd/v4_end_grace", "Y\n") {
            Ok(()) => crate::say!("no NFS client records from before: grace period ended at once"),
            Err(e) => crate::say!("cannot end the grace period early: {e}"),
        }
    } else {
        crate::say!("{known_clients} NFS client record(s) from before this boot: grace period of {GRACE_SECS} s for their reclaims");
    }
    st.nfs_serving = true;
    st.clients = clients.len();
    crate::say!("NFS server up: {EXPORT_ROOT} (store at /store) for {} client address(es), {THREADS} threads, grace {GRACE_SECS} s", clients.len());
    Ok(())
}

/// The kernel caches whose entries pin the exported filesystem.
const CACHES: &[&str] = &["nfsd.fh", "nfsd.export", "auth.unix.ip"];

/// Stops the NFS server (zero threads), drops its cached exports (they
/// hold the filesystem busy) and unmounts the mirror.
pub fn shut_down() {
    if Path::new("/proc/fs/nfsd/threads").exists() {
        if let Err(e) = write_proc("/proc/fs/nfsd/threads", "0\n") {
            crate::say!("stopping the NFS server: {e}");
        }
        // Writing a time to a cache's `flush` expires every entry
        // refreshed before it (net/sunrpc/cache.c, write_flush).
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        for c in CACHES {
            let _ = write_proc(&format!("/proc/net/rpc/{c}/flush"), &format!("{}\n", now + 1));
        }
        let _ = sys::umount(NFSD_FS);
    }
    sys::sync();
    if nfs::is_mountpoint(Path::new(DATA_DIR)) {
        match sys::umount(DATA_DIR) {
            Ok(()) => crate::say!("mirror unmounted"),
            Err(e) => crate::say!("unmounting {DATA_DIR}: {e}"),
        }
    }
}

/// The disk whose virtio serial is `serial` (QEMU's `-drive ...,serial=`),
/// from /sys/block/<dev>/serial, so disks are found by what they are and
/// not by the order they were attached in.
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
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Serials of the config disk and the mirror's disks in the board's
/// layout (board/qemu-x86_64/CMDLINE.md).
pub const SERIAL_CONFIG: &str = "config";
pub const SERIAL_DATA: &[&str] = &["store0", "store1"];

/// Time the storage box waits for its disks to appear after loading
/// virtio_blk.
pub const DISK_WAIT: Duration = Duration::from_secs(5);

pub fn wait_for_devices(devs: &[PathBuf], deadline: Duration) {
    let t = Instant::now();
    while t.elapsed() < deadline && !devs.iter().all(|d| d.exists()) {
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_lists() {
        let v = expand_clients("192.0.2.0/29").unwrap();
        assert_eq!(v.first(), Some(&"192.0.2.1".parse().unwrap()));
        assert_eq!(v.last(), Some(&"192.0.2.6".parse().unwrap()));
        assert_eq!(v.len(), 6);
        let v = expand_clients("192.0.2.11-192.0.2.13, 192.0.2.20,192.0.2.12").unwrap();
        assert_eq!(v.len(), 4);
        assert_eq!(expand_clients("192.0.2.5/32").unwrap(), vec!["192.0.2.5".parse::<Ipv4Addr>().unwrap()]);
        assert_eq!(expand_clients("192.0.2.4/31").unwrap().len(), 2);
        assert_eq!(expand_clients("10.0.0.0/22").unwrap().len(), 1022);
        for bad in ["10.0.0.0/16", "", "x", "192.0.2.9-192.0.2.1", "10.0.0.0/22,10.1.0.0/22", "192.0.2.1-x"] {
            assert!(expand_clients(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn channel_lines() {
        assert_eq!(client_line("192.0.2.11".parse().unwrap(), "mailboxes"), "nfsd 192.0.2.11 2147483647 mailboxes\n");
        assert_eq!(export_line("mailboxes", "/data/export", 0).unwrap(), "mailboxes /data/export 2147483647 9250 65534 65534 0 secinfo 1 1 9250\n");
        assert_eq!(root_fh_line("mailboxes", "/data/export").unwrap(), "mailboxes 1 \\x00000000 2147483647 /data/export\n");
        assert_eq!(EXPORT_FLAGS, 9250);
        assert!(export_line("m", "/a b", 0).is_none());
        assert!(root_fh_line("m", "relative").is_none());
        assert!(export_line("m", "/a\\b", 0).is_none());
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

    #[test]
    fn ddns_from_settings() {
        let mut s = NodeSettings::default();
        assert!(ddns_settings(&s).unwrap().is_none());
        for (k, v) in [("ddns.server", "192.0.2.53:53"), ("ddns.zone", "example.test"), ("ddns.key_name", "mailfort."), ("ddns.key_secret", "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0")] {
            s.set(k, v).unwrap();
        }
        let d = ddns_settings(&s).unwrap().unwrap();
        assert_eq!(d.tsig.algorithm, "hmac-sha256");
        assert_eq!(d.zone, "example.test");
        // Without a zone, the mail domain is the zone.
        s.ddns.zone = None;
        assert!(ddns_settings(&s).unwrap().is_none());
        s.set("domain", "example.org").unwrap();
        assert_eq!(ddns_settings(&s).unwrap().unwrap().zone, "example.org");
    }
}
