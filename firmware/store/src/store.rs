use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::accounts::Accounts;
use crate::address::{valid_domain, Address};
use crate::fsutil;

/// The FORMAT file's content for stores this code can run on.
pub const FORMAT_VERSION: &str = "mailfort-store 1";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} is not a mailfort store (no FORMAT file); create one with `mailfort store init`")]
    NotAStore(PathBuf),
    #[error("{path} has store format '{found}', but this mailfort understands only '{FORMAT_VERSION}'")]
    UnknownFormat { path: PathBuf, found: String },
    #[error("{0} already holds a mailfort store")]
    AlreadyExists(PathBuf),
    #[error("{0} exists and is not empty; a store is created in a new or empty directory")]
    NotEmpty(PathBuf),
    #[error("'{0}' is not a valid domain name")]
    BadDomain(String),
    #[error("bad cluster settings in {path}: {reason}")]
    Settings { path: PathBuf, reason: String },
    #[error("store I/O error at {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io { path: path.to_path_buf(), source }
}

/// Cluster-wide settings kept in `<store>/cluster.toml`, the same for every
/// node. Unknown keys are kept by serde's default of ignoring them, so newer
/// settings do not stop older nodes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClusterSettings {
    /// Random id written at creation: a node checks it to be sure that a
    /// mounted tree is the store it expects, not an empty mountpoint.
    pub store_id: String,
    /// Domains whose mail is stored here.
    pub domains: Vec<String>,
    /// The name clients use for every node (the TLS certificate's name).
    pub hostname: String,
    /// The DNS failover announcer; without it DNS is left alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsSettings>,
}

/// Where the announcer keeps the cluster's DNS records (RFC 2136 UPDATE,
/// signed with TSIG, RFC 8945).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DnsSettings {
    /// The zone's primary server, IP:PORT.
    pub server: String,
    /// The zone the records live in, e.g. "example.test".
    pub zone: String,
    /// The name clients use (A/AAAA = the live nodes); default: `hostname`.
    #[serde(default)]
    pub client_host: Option<String>,
    /// TTL of the records, seconds.
    #[serde(default = "default_dns_ttl")]
    pub ttl: u32,
    /// How often the announcer compares the server's records with the
    /// live set even when nothing changed (a server restarted with old
    /// data is corrected within this time), seconds.
    #[serde(default = "default_recheck")]
    pub recheck_secs: u64,
    pub tsig: TsigSettings,
}

pub const DEFAULT_DNS_RECHECK_SECS: u64 = 30;

fn default_recheck() -> u64 {
    DEFAULT_DNS_RECHECK_SECS
}

/// Low enough that senders and clients follow a failover quickly.
pub const DEFAULT_DNS_TTL: u32 = 30;

fn default_dns_ttl() -> u32 {
    DEFAULT_DNS_TTL
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TsigSettings {
    pub name: String,
    /// "hmac-sha256" (RFC 8945 6).
    #[serde(default = "default_tsig_algorithm")]
    pub algorithm: String,
    /// The shared secret, base64.
    pub secret: String,
}

fn default_tsig_algorithm() -> String {
    "hmac-sha256".into()
}

/// An open store.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    settings: ClusterSettings,
    accounts: Accounts,
    /// The store is an NFS mount (durability needs an extra step).
    on_nfs: bool,
}

impl Store {
    /// Creates a new store at `root` for `domain`.
    pub fn init(root: &Path, domain: &str, hostname: Option<&str>) -> Result<Store, StoreError> {
        let domain = domain.trim().to_lowercase();
        if !valid_domain(&domain) {
            return Err(StoreError::BadDomain(domain));
        }
        let hostname = hostname.map(|h| h.to_lowercase()).unwrap_or_else(|| format!("mail.{domain}"));
        if !valid_domain(&hostname) {
            return Err(StoreError::BadDomain(hostname));
        }
        if root.join("FORMAT").exists() {
            return Err(StoreError::AlreadyExists(root.to_path_buf()));
        }
        if root.exists() && fs::read_dir(root).map_err(io_err(root))?.next().is_some() {
            return Err(StoreError::NotEmpty(root.to_path_buf()));
        }
        for d in ["mail", "queue", "spool", "cluster/nodes", "cluster/locks", "tls"] {
            fsutil::create_dir_durable(&root.join(d)).map_err(io_err(root))?;
        }
        let settings = ClusterSettings { store_id: format!("{:032x}", rand::random::<u128>()), domains: vec![domain], hostname, dns: None };
        let toml = toml::to_string(&settings).map_err(|e| StoreError::Settings { path: root.join("cluster.toml"), reason: e.to_string() })?;
        fsutil::write_atomic(&root.join("cluster.toml"), toml.as_bytes()).map_err(io_err(root))?;
        fsutil::write_atomic(&root.join("accounts"), b"").map_err(io_err(root))?;
        // FORMAT last: a tree without it is not a store, so a crash during
        // init leaves something `open` refuses rather than half a store.
        fsutil::write_atomic(&root.join("FORMAT"), format!("{FORMAT_VERSION}\n").as_bytes()).map_err(io_err(root))?;
        Store::open(root)
    }

    /// Opens an existing store, refusing anything that is not one of our
    /// format.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        let format_path = root.join("FORMAT");
        let found = match fs::read_to_string(&format_path) {
            Ok(s) => s,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(StoreError::NotAStore(root.to_path_buf())),
            Err(e) => return Err(StoreError::Io { path: format_path, source: e }),
        };
        if found.trim() != FORMAT_VERSION {
            return Err(StoreError::UnknownFormat { path: root.to_path_buf(), found: found.trim().chars().take(80).collect() });
        }
        let settings = Self::read_settings(root)?;
        Ok(Store { root: root.to_path_buf(), accounts: Accounts::new(root.join("accounts")), settings, on_nfs: fsutil::is_nfs(root) })
    }

    /// Reads `cluster.toml` again (it may have been edited since `open`).
    pub fn reload_settings(&self) -> Result<ClusterSettings, StoreError> {
        Self::read_settings(&self.root)
    }

    /// Replaces `cluster.toml` atomically.
    pub fn write_settings(&self, settings: &ClusterSettings) -> Result<(), StoreError> {
        let path = self.root.join("cluster.toml");
        let toml = toml::to_string(settings).map_err(|e| StoreError::Settings { path: path.clone(), reason: e.to_string() })?;
        fsutil::write_atomic(&path, toml.as_bytes()).map_err(io_err(&path))
    }

    fn read_settings(root: &Path) -> Result<ClusterSettings, StoreError> {
        let path = root.join("cluster.toml");
        let text = fs::read_to_string(&path).map_err(io_err(&path))?;
        let s: ClusterSettings = toml::from_str(&text).map_err(|e| StoreError::Settings { path: path.clone(), reason: e.to_string() })?;
        if s.domains.is_empty() || !s.domains.iter().all(|d| valid_domain(d)) {
            return Err(StoreError::Settings { path, reason: "domains must be a non-empty list of domain names".into() });
        }
        Ok(s)
    }

    pub fn on_nfs(&self) -> bool {
        self.on_nfs
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn settings(&self) -> &ClusterSettings {
        &self.settings
    }

    pub fn accounts(&self) -> &Accounts {
        &self.accounts
    }

    /// Whether mail for `domain` is stored here.
    pub fn is_local_domain(&self, domain: &str) -> bool {
        let d = domain.trim_end_matches('.');
        self.settings.domains.iter().any(|x| x.eq_ignore_ascii_case(d))
    }

    /// The Maildir of `addr`.
    pub fn maildir_path(&self, addr: &Address) -> PathBuf {
        self.root.join("mail").join(addr.domain()).join(addr.local())
    }

    pub fn queue_dir(&self) -> PathBuf {
        self.root.join("queue")
    }

    pub fn locks_dir(&self) -> PathBuf {
        self.root.join("cluster").join("locks")
    }

    pub fn tls_dir(&self) -> PathBuf {
        self.root.join("tls")
    }

    /// A node's private spool directory for messages being received.
    pub fn spool_dir(&self, node: &str) -> PathBuf {
        self.root.join("spool").join(node)
    }

    /// The store's clock: touches a file of this node's and reads back the
    /// mtime the store gave it. Every node that asks gets the same clock.
    pub fn now(&self, node: &str) -> Result<SystemTime, StoreError> {
        let p = self.root.join("cluster").join("nodes").join(format!(".clock.{node}"));
        fsutil::touch_server_time(&p).map_err(io_err(&p))
    }

    /// A health probe: the store answers, holds our FORMAT, and is the same
    /// store (by its id) that was opened, so that an empty mountpoint or
    /// another store mounted in its place is never taken for it.
    pub fn probe(&self) -> Result<(), StoreError> {
        let f = self.root.join("FORMAT");
        let s = fs::read_to_string(&f).map_err(io_err(&f))?;
        if s.trim() != FORMAT_VERSION {
            return Err(StoreError::UnknownFormat { path: self.root.clone(), found: s.trim().to_string() });
        }
        let now = Self::read_settings(&self.root)?;
        if now.store_id != self.settings.store_id {
            return Err(StoreError::Settings { path: self.root.join("cluster.toml"), reason: format!("store id changed from {} to {}: not the store this node opened", self.settings.store_id, now.store_id) });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_and_open() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("s");
        let s = Store::init(&root, "Example.TEST", None).unwrap();
        assert_eq!(s.settings().domains, vec!["example.test"]);
        assert_eq!(s.settings().hostname, "mail.example.test");
        assert!(s.is_local_domain("EXAMPLE.test"));
        assert!(matches!(Store::init(&root, "example.test", None), Err(StoreError::AlreadyExists(_))));
        let s2 = Store::open(&root).unwrap();
        assert_eq!(s2.settings().store_id, s.settings().store_id);
    }

    #[test]
    fn refuses_non_stores() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(Store::open(dir.path()), Err(StoreError::NotAStore(_))));
        fs::write(dir.path().join("FORMAT"), "mailfort-store 99\n").unwrap();
        assert!(matches!(Store::open(dir.path()), Err(StoreError::UnknownFormat { .. })));
        assert!(matches!(Store::init(dir.path(), "example.test", None), Err(StoreError::AlreadyExists(_))));
        let other = dir.path().join("other");
        fs::create_dir(&other).unwrap();
        fs::write(other.join("x"), "").unwrap();
        assert!(matches!(Store::init(&other, "example.test", None), Err(StoreError::NotEmpty(_))));
        assert!(matches!(Store::init(&dir.path().join("n"), "bad/domain", None), Err(StoreError::BadDomain(_))));
    }

    #[test]
    fn store_clock_moves() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::init(&dir.path().join("s"), "example.test", None).unwrap();
        let a = s.now("n1").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let b = s.now("n1").unwrap();
        assert!(b > a);
    }
}
