//! The NFS-client shim of a mail box: mounts the store that the storage box
//! exports, with mount(2) and the kernel's text options (no mount.nfs), and
//! checks that the mounted tree is the store this box belongs to before
//! anything serves from it.
//!
//! Why each option (measured on the appliance's kernel, see the appliance
//! notes):
//! - `vers=4.2`: without it the kernel mounts NFSv4.0, which has no
//!   sessions (RFC 8881 2.10) and so no exactly-once semantics for retried
//!   non-idempotent operations such as RENAME and LINK, which delivery uses.
//! - `addr=`: mandatory when mount(2) is called directly; mount.nfs
//!   normally resolves the host and adds it (EINVAL without it).
//! - `hard`: an outage of the storage box blocks I/O instead of failing it
//!   with EIO, so nothing half-written is ever taken for an error that the
//!   caller may ignore; the node's store probe, which has its own deadline,
//!   turns a hang into 421 replies, and the mount resumes by itself when the
//!   server is back.
//! - `lookupcache=positive,actimeo=0`: the default attribute and negative
//!   lookup caches hid files created on another box for about 30 s; every
//!   box must see another box's deliveries, locks and heartbeats at once.

use std::fs;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::mount::{MntFlags, MsFlags};

/// RFC 7530 3.1 and RFC 8881 2.9.3: NFSv4 servers listen on port 2049.
pub const NFS_PORT: u16 = 2049;
/// How long a check that the server accepts connections may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The first wait between mount attempts while the storage box is not up,
/// doubled after each failure up to [`RETRY_MAX`].
pub const RETRY_START: Duration = Duration::from_secs(1);
pub const RETRY_MAX: Duration = Duration::from_secs(5);
/// RPC timeout before a retransmission, in tenths of a second (the
/// kernel's unit for `timeo`). Over TCP the default is 60 s; a shorter one
/// lets a hard mount notice a restarted server sooner.
pub const TIMEO_DECISECONDS: u32 = 50;
/// Retransmissions before the kernel logs "server not responding" (a hard
/// mount keeps trying after that).
pub const RETRANS: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum NfsError {
    #[error("the storage box does not accept NFS connections at {0}: {1}")]
    Unreachable(SocketAddr, io::Error),
    #[error("cannot create the mountpoint {0}: {1}")]
    Mountpoint(PathBuf, io::Error),
    #[error("mount of {spec} on {mountpoint} failed: {err}")]
    Mount { spec: String, mountpoint: PathBuf, err: io::Error },
    #[error("the export path '{0}' must be absolute and plain (no spaces, commas or '..')")]
    BadExport(String),
    #[error("the tree at {path} is not a usable store: {reason}")]
    NotTheStore { path: PathBuf, reason: String },
    #[error("{path} holds store {found}, but this box belongs to store {expected}; not serving from it")]
    WrongStore { path: PathBuf, expected: String, found: String },
    #[error("unmount of {path} failed: {err}")]
    Unmount { path: PathBuf, err: io::Error },
}

/// Where the store comes from and where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreMount {
    /// The storage box.
    pub server: IpAddr,
    /// The path under the server's NFSv4 root, e.g. `/store`.
    pub export: String,
    /// Where the store appears on this box, e.g. `/store`.
    pub mountpoint: PathBuf,
}

impl StoreMount {
    pub fn new(server: IpAddr, export: &str, mountpoint: &Path) -> Result<StoreMount, NfsError> {
        if !valid_export(export) {
            return Err(NfsError::BadExport(export.to_string()));
        }
        Ok(StoreMount { server, export: export.to_string(), mountpoint: mountpoint.to_path_buf() })
    }

    /// The source argument of mount(2): `host:/path`, IPv6 in brackets
    /// (as mount.nfs writes it).
    pub fn source(&self) -> String {
        match self.server {
            IpAddr::V4(a) => format!("{a}:{}", self.export),
            IpAddr::V6(a) => format!("[{a}]:{}", self.export),
        }
    }

    /// The text options handed to the kernel's NFS client.
    pub fn options(&self) -> String {
        format!("vers=4.2,addr={},proto={},hard,timeo={TIMEO_DECISECONDS},retrans={RETRANS},lookupcache=positive,actimeo=0", self.server, if self.server.is_ipv4() { "tcp" } else { "tcp6" })
    }

    fn server_addr(&self) -> SocketAddr {
        SocketAddr::new(self.server, NFS_PORT)
    }

    /// Whether the server accepts TCP connections on the NFS port. A
    /// mount(2) against a box that is down can block for a long time in
    /// the kernel; this check keeps each attempt short.
    pub fn server_answers(&self) -> Result<(), NfsError> {
        TcpStream::connect_timeout(&self.server_addr(), CONNECT_TIMEOUT).map(drop).map_err(|e| NfsError::Unreachable(self.server_addr(), e))
    }

    /// One mount attempt. Already mounted: nothing to do.
    pub fn mount_once(&self) -> Result<(), NfsError> {
        if is_mountpoint(&self.mountpoint) {
            return Ok(());
        }
        self.server_answers()?;
        fs::create_dir_all(&self.mountpoint).map_err(|e| NfsError::Mountpoint(self.mountpoint.clone(), e))?;
        let spec = self.source();
        let err = |err| NfsError::Mount { spec: spec.clone(), mountpoint: self.mountpoint.clone(), err };
        // The NFS client parses `data` as text options.
        nix::mount::mount(Some(spec.as_str()), &self.mountpoint, Some("nfs4"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV, Some(self.options().as_str())).map_err(|e| err(e.into()))
    }

    /// Mounts, retrying with back-off while the storage box is not up,
    /// until it works or `keep_going` says stop. `report` hears each
    /// failure (for the console and the log).
    pub fn mount_with_retry(&self, keep_going: &dyn Fn() -> bool, report: &mut dyn FnMut(&NfsError, Duration)) -> Result<(), NfsError> {
        let mut wait = RETRY_START;
        loop {
            match self.mount_once() {
                Ok(()) => return Ok(()),
                Err(e) => {
                    report(&e, wait);
                    if !keep_going() {
                        return Err(e);
                    }
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(RETRY_MAX);
                }
            }
        }
    }

    /// Unmounts. A hard mount whose server is gone may not let go: after
    /// `MNT_FORCE` (which aborts outstanding RPCs) the mount is detached.
    pub fn unmount(&self) -> Result<(), NfsError> {
        unmount(&self.mountpoint)
    }
}

/// Unmounts `path`, forcing and detaching it if a plain unmount fails.
pub fn unmount(path: &Path) -> Result<(), NfsError> {
    if nix::mount::umount2(path, MntFlags::empty()).is_ok() {
        return Ok(());
    }
    nix::mount::umount2(path, MntFlags::MNT_FORCE | MntFlags::MNT_DETACH).map_err(|e| NfsError::Unmount { path: path.to_path_buf(), err: e.into() })
}

/// An export path we are willing to put into a mount source: absolute,
/// no whitespace or commas (the option syntax), no `..`.
pub fn valid_export(p: &str) -> bool {
    p.starts_with('/') && p.len() < 256 && !p.split('/').any(|c| c == "..") && p.bytes().all(|b| b.is_ascii_graphic() && b != b',' && b != b'\\')
}

/// Whether `path` is a mountpoint, from /proc/self/mountinfo (proc(5):
/// field 5 is the mount point, with spaces and such escaped as octal).
pub fn is_mountpoint(path: &Path) -> bool {
    let Ok(text) = fs::read_to_string("/proc/self/mountinfo") else { return false };
    let want = path.as_os_str().as_bytes();
    text.lines().any(|l| l.split(' ').nth(4).map(unescape_mountinfo).as_deref() == Some(want))
}

fn unescape_mountinfo(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// Checks that `path` holds a mailfort store of a format we understand and,
/// when `expected` is given, that it is that store (by its id), so that an
/// empty mountpoint, a half-created tree or another cluster's store is
/// never served from. Returns the store's id, to be remembered on first
/// mount.
pub fn verify_store(path: &Path, expected: Option<&str>) -> Result<String, NfsError> {
    let s = store::Store::open(path).map_err(|e| NfsError::NotTheStore { path: path.to_path_buf(), reason: e.to_string() })?;
    let found = s.settings().store_id.clone();
    match expected {
        Some(want) if want != found => Err(NfsError::WrongStore { path: path.to_path_buf(), expected: want.to_string(), found }),
        _ => Ok(found),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_and_source() {
        let m = StoreMount::new("192.0.2.10".parse().unwrap(), "/store", Path::new("/store")).unwrap();
        assert_eq!(m.source(), "192.0.2.10:/store");
        let o = m.options();
        for want in ["vers=4.2", "addr=192.0.2.10", "hard", "proto=tcp", "lookupcache=positive", "actimeo=0"] {
            assert!(o.split(',').any(|x| x == want), "{want} missing from {o}");
        }
        assert!(!o.contains("soft"));
        let v6 = StoreMount::new("2001:db8::1".parse().unwrap(), "/", Path::new("/store")).unwrap();
        assert_eq!(v6.source(), "[2001:db8::1]:/");
        assert!(v6.options().contains("proto=tcp6"));
    }

    #[test]
    fn export_paths() {
        assert!(valid_export("/store"));
        assert!(valid_export("/"));
        for bad in ["store", "/a,b", "/a b", "/../etc", "/a/../b", ""] {
            assert!(!valid_export(bad), "{bad}");
        }
        assert!(StoreMount::new("192.0.2.1".parse().unwrap(), "x", Path::new("/s")).is_err());
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo("/a\\040b"), b"/a b");
        assert_eq!(unescape_mountinfo("/plain"), b"/plain");
        assert!(is_mountpoint(Path::new("/")));
        assert!(!is_mountpoint(Path::new("/surely/not/a/mountpoint")));
    }

    #[test]
    fn verify_knows_its_store() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("s");
        assert!(matches!(verify_store(dir.path(), None), Err(NfsError::NotTheStore { .. })));
        let s = store::Store::init(&root, "example.test", None).unwrap();
        let id = verify_store(&root, None).unwrap();
        assert_eq!(id, s.settings().store_id);
        assert_eq!(verify_store(&root, Some(&id)).unwrap(), id);
        assert!(matches!(verify_store(&root, Some("other")), Err(NfsError::WrongStore { .. })));
    }

    #[test]
    fn unreachable_server_fails_fast() {
        // Port 2049 on loopback: nothing listens there in tests; the
        // attempt ends with Unreachable instead of blocking in mount(2).
        let m = StoreMount::new("127.0.0.1".parse().unwrap(), "/store", Path::new("/nonexistent-mfort")).unwrap();
        if TcpStream::connect_timeout(&m.server_addr(), Duration::from_millis(200)).is_ok() {
            return;
        }
        assert!(matches!(m.mount_once(), Err(NfsError::Unreachable(..))));
    }
}
