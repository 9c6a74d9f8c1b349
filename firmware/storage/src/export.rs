//! The storage box's NFS server: the kernel's NFSv4 server configured by
//! writes into /proc (no nfs-utils, no rpcbind, no mountd: NFSv4 needs
//! none of them).
//!
//! ```text
//! /data                       the mirrored volume (btrfs raid1, see mirror)
//! /data/export                the NFSv4 root (fsid 0) the mail boxes see
//! /data/export/store          the store; mail boxes mount <box>:/store
//! /data/nfs4recovery          the server's client records, so clients
//!                             reclaim their state after a reboot
//! ```

use std::fs;
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::path::Path;

use nix::mount::{MntFlags, MsFlags};

use crate::{client, Hooks, StorageStatus};

pub const EXPORT_ROOT: &str = "/data/export";
pub const STORE_DIR: &str = "/data/export/store";
pub const RECOVERY_DIR: &str = "/data/nfs4recovery";

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

const NFSD_FS: &str = "/proc/fs/nfsd";
/// The kernel caches whose entries pin the exported filesystem.
const CACHES: &[&str] = &["nfsd.fh", "nfsd.export", "auth.unix.ip"];

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{what}: {err}")]
    Io { what: String, err: io::Error },
    #[error("the export path {0} cannot be written into the kernel's export cache")]
    BadPath(&'static str),
}

/// Why a client list (`mailfort.clients=`) is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientListError {
    #[error("{0} is more than {MAX_CLIENTS} addresses")]
    NetworkTooLarge(String),
    #[error("'{0}' is not a range a-b")]
    NotARange(String),
    #[error("'{0}' ends before it starts")]
    Backwards(String),
    #[error("'{0}' is not an address, CIDR or range")]
    NotAnAddress(String),
    #[error("the client list is more than {MAX_CLIENTS} addresses")]
    TooMany,
    #[error("the client list is empty")]
    Empty,
}

/// `a.b.c.d/prefix` as (network, prefix).
fn cidr(s: &str) -> Option<(u32, u32)> {
    let (a, p) = s.split_once('/')?;
    let prefix: u32 = p.parse().ok().filter(|p| *p <= 32)?;
    let a: Ipv4Addr = a.parse().ok()?;
    let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
    Some((u32::from(a) & mask, prefix))
}

/// The addresses a client list stands for: `192.0.2.0/24` (hosts only),
/// `192.0.2.11`, `192.0.2.11-192.0.2.13`, comma-separated.
pub fn expand_clients(spec: &str) -> Result<Vec<Ipv4Addr>, ClientListError> {
    let mut out: Vec<Ipv4Addr> = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (lo, hi) = if let Some((net, prefix)) = cidr(part) {
            let size = 1u64 << (32 - prefix);
            if size > MAX_CLIENTS as u64 + 2 {
                return Err(ClientListError::NetworkTooLarge(part.to_string()));
            }
            // /31 and /32 have no network and broadcast address (RFC 3021).
            if prefix >= 31 {
                (net, net + (size as u32 - 1))
            } else {
                (net + 1, net + (size as u32 - 2))
            }
        } else if let Some((a, b)) = part.split_once('-') {
            let a: Ipv4Addr = a.trim().parse().map_err(|_| ClientListError::NotARange(part.to_string()))?;
            let b: Ipv4Addr = b.trim().parse().map_err(|_| ClientListError::NotARange(part.to_string()))?;
            if u32::from(b) < u32::from(a) {
                return Err(ClientListError::Backwards(part.to_string()));
            }
            (u32::from(a), u32::from(b))
        } else {
            let a: Ipv4Addr = part.parse().map_err(|_| ClientListError::NotAnAddress(part.to_string()))?;
            (u32::from(a), u32::from(a))
        };
        if (hi - lo) as usize >= MAX_CLIENTS || out.len() + (hi - lo) as usize >= MAX_CLIENTS {
            return Err(ClientListError::TooMany);
        }
        out.extend((lo..=hi).map(Ipv4Addr::from));
    }
    if out.is_empty() {
        return Err(ClientListError::Empty);
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

fn ioe(what: impl Into<String>) -> impl FnOnce(io::Error) -> ExportError {
    let what = what.into();
    move |err| ExportError::Io { what, err }
}

fn write_proc(path: &str, text: &str) -> Result<(), ExportError> {
    // Each line must reach the kernel in one write(2): the cache channels
    // parse a write as one request.
    let mut f = fs::OpenOptions::new().write(true).open(path).map_err(ioe(path))?;
    f.write_all(text.as_bytes()).map_err(ioe(format!("{path} <- {}", text.trim_end())))
}

/// Configures and starts the kernel NFSv4 server, exporting the store to
/// `clients` only.
pub fn start_nfs_server(clients: &[Ipv4Addr], st: &mut StorageStatus, hooks: &Hooks) -> Result<(), ExportError> {
    fs::create_dir_all(NFSD_FS).map_err(ioe(NFSD_FS))?;
    if !client::is_mountpoint(Path::new(NFSD_FS)) {
        nix::mount::mount(Some("nfsd"), NFSD_FS, Some("nfsd"), MsFlags::empty(), None::<&str>).map_err(|e| ExportError::Io { what: "mount nfsd".into(), err: e.into() })?;
    }
    // Versions before threads start; v2 is not built and `-2` is refused.
    write_proc("/proc/fs/nfsd/versions", "-3 +4 +4.1 +4.2\n")?;
    write_proc("/proc/fs/nfsd/nfsv4leasetime", &format!("{LEASE_SECS}\n"))?;
    write_proc("/proc/fs/nfsd/nfsv4gracetime", &format!("{GRACE_SECS}\n"))?;
    write_proc("/proc/fs/nfsd/nfsv4recoverydir", &format!("{RECOVERY_DIR}\n"))?;
    for ip in clients {
        write_proc("/proc/net/rpc/auth.unix.ip/channel", &client_line(*ip, CLIENT_DOMAIN))?;
    }
    let export = export_line(CLIENT_DOMAIN, EXPORT_ROOT, 0).ok_or(ExportError::BadPath(EXPORT_ROOT))?;
    write_proc("/proc/net/rpc/nfsd.export/channel", &export)?;
    let fh = root_fh_line(CLIENT_DOMAIN, EXPORT_ROOT).ok_or(ExportError::BadPath(EXPORT_ROOT))?;
    write_proc("/proc/net/rpc/nfsd.fh/channel", &fh)?;
    // Port 2049 over TCP only (RFC 7530 3.1); then the threads, which start
    // the server and its grace period.
    let running = fs::read_to_string("/proc/fs/nfsd/threads").map(|t| t.trim() != "0").unwrap_or(false);
    if !running {
        write_proc("/proc/fs/nfsd/portlist", &format!("tcp {}\n", client::NFS_PORT))?;
    }
    // Clients known from before this boot have a record in the recovery
    // directory and may reclaim their state during the grace period
    // (RFC 8881 8.4.2). With no records nobody can reclaim, so the grace
    // period only delays the mail boxes: end it at once.
    let known_clients = fs::read_dir(RECOVERY_DIR).map(|d| d.count()).unwrap_or(0);
    write_proc("/proc/fs/nfsd/threads", &format!("{THREADS}\n"))?;
    if known_clients == 0 {
        match write_proc("/proc/fs/nfsd/v4_end_grace", "Y\n") {
            Ok(()) => (hooks.say)("no NFS client records from before: grace period ended at once"),
            Err(e) => (hooks.say)(&format!("cannot end the grace period early: {e}")),
        }
    } else {
        (hooks.say)(&format!("{known_clients} NFS client record(s) from before this boot: grace period of {GRACE_SECS} s for their reclaims"));
    }
    st.nfs_serving = true;
    st.clients = clients.len();
    (hooks.say)(&format!("NFS server up: {EXPORT_ROOT} (store at /store) for {} client address(es), {THREADS} threads, grace {GRACE_SECS} s", clients.len()));
    Ok(())
}

/// Stops the NFS server (zero threads) and drops its cached exports (they
/// hold the exported filesystem busy).
pub fn shut_down(hooks: &Hooks) {
    if !Path::new("/proc/fs/nfsd/threads").exists() {
        return;
    }
    if let Err(e) = write_proc("/proc/fs/nfsd/threads", "0\n") {
        (hooks.say)(&format!("stopping the NFS server: {e}"));
    }
    // Writing a time to a cache's `flush` expires every entry refreshed
    // before it (net/sunrpc/cache.c, write_flush).
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    for c in CACHES {
        let _ = write_proc(&format!("/proc/net/rpc/{c}/flush"), &format!("{}\n", now + 1));
    }
    let _ = nix::mount::umount2(NFSD_FS, MntFlags::empty());
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
        // A host address with its prefix stands for its network.
        assert_eq!(expand_clients("192.0.2.77/30").unwrap(), expand_clients("192.0.2.77-192.0.2.78").unwrap());
        assert_eq!(expand_clients("10.0.0.0/16"), Err(ClientListError::NetworkTooLarge("10.0.0.0/16".into())));
        assert_eq!(expand_clients(""), Err(ClientListError::Empty));
        assert_eq!(expand_clients("x"), Err(ClientListError::NotAnAddress("x".into())));
        assert_eq!(expand_clients("10.0.0.1/33"), Err(ClientListError::NotAnAddress("10.0.0.1/33".into())));
        assert_eq!(expand_clients("192.0.2.9-192.0.2.1"), Err(ClientListError::Backwards("192.0.2.9-192.0.2.1".into())));
        assert_eq!(expand_clients("10.0.0.0/22,10.1.0.0/22"), Err(ClientListError::TooMany));
        assert_eq!(expand_clients("192.0.2.1-x"), Err(ClientListError::NotARange("192.0.2.1-x".into())));
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
}
