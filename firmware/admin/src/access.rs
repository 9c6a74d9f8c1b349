//! The store as the administration front ends reach it: every call runs in
//! a helper thread with a deadline, so a store that hangs (a hard NFS
//! mount whose server is down) never hangs the console or the web page.
//! At most a few calls are under way at once (the console and the web
//! page's requests); while that many are stuck, further calls are refused
//! until one returns, so a hung store does not pile up threads.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cert::ClusterCertResolver;
use store::{AccountError, Address, Store, StoreError};

use crate::cluster_keys::ClusterKeyError;
use crate::commands::Setting;

/// How long a read (status, lists) waits for the store; past it the store
/// is reported as not answering.
pub const STORE_READ_DEADLINE: Duration = Duration::from_secs(3);
/// How long a change may take (argon2 hashing and key generation
/// included, slow under emulation).
pub const STORE_CHANGE_DEADLINE: Duration = Duration::from_secs(60);
/// Store calls under way at once, at most.
pub const STORE_CALLS_AT_ONCE: usize = 4;
/// The clock-file name administrative reads of the live set use.
const ADMIN_CLOCK: &str = "admin";
/// Longest queue id taken from a person (ids are `secs.micros_n.node`).
const MAX_QUEUE_ID: usize = 200;
/// Header bytes `queue show` prints at most.
const MAX_SHOWN_HEADER: usize = 16 * 1024;

pub use cert::CertInfo as CertView;

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("the store has not answered earlier requests yet")]
    Busy,
    #[error("cannot start a thread: {0}")]
    Thread(std::io::Error),
    #[error("the store at {} does not answer within {secs} s", root.display())]
    Timeout { root: PathBuf, secs: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Account(#[from] AccountError),
    #[error(transparent)]
    Live(#[from] cluster::live::LiveError),
    #[error(transparent)]
    ClusterKey(#[from] ClusterKeyError),
    #[error("{0} does not exist")]
    NoAccount(Address),
    #[error("'{0}' is not a queue id")]
    BadQueueId(String),
    #[error("no queue entry {0}")]
    NoQueueEntry(String),
    #[error("cannot read the message: {0}")]
    Message(std::io::Error),
    #[error("{} does not hold an argon2 hash", .0.display())]
    BadAdminHash(PathBuf),
    #[error("not an argon2 hash")]
    NotArgon2,
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    /// The cluster's certificate could not be read or replaced.
    #[error(transparent)]
    Cert(#[from] cert::CertError),
    /// The cluster's state could not be read.
    #[error(transparent)]
    Report(#[from] cluster::report::ReportError),
}

/// One node of the live set.
#[derive(Debug, Clone)]
pub struct LiveNode {
    pub node: String,
    pub rank: u32,
    /// `live`, `drain`, `stop` or `dead` (`cluster::report::NodeState`).
    pub state: String,
    pub age: String,
    pub addresses: String,
    /// The node's protections that are off, `name: why`.
    pub protections_off: Vec<String>,
}

/// The store as `status` and the dashboard show it.
#[derive(Debug, Clone, Default)]
pub struct StoreReport {
    pub root: String,
    pub store_id: String,
    pub domains: Vec<String>,
    pub hostname: String,
    pub accounts: usize,
    pub queued: usize,
    /// Free and total bytes of the store's filesystem.
    pub space: Option<(u64, u64)>,
    pub live: Vec<LiveNode>,
    /// Who holds the announcer lease, and how fresh it is.
    pub announcer: String,
    pub announcer_node: Option<String>,
    /// The DNS state as the announcer last saw it, with its last error;
    /// the same words as `mailfort cluster status` (`cluster::report`).
    pub dns: String,
    pub dns_records: Vec<String>,
}

/// One queue entry for lists.
#[derive(Debug, Clone)]
pub struct QueueItem {
    pub id: String,
    pub size: u64,
    pub from: String,
    pub rcpts: Vec<String>,
    pub attempts: u32,
    pub state: String,
    pub last_error: Option<String>,
    pub created: String,
}

/// Whether `id` can be a queue id (so that no path is built from
/// anything else).
pub fn valid_queue_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_QUEUE_ID && !id.starts_with('.') && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

#[derive(Clone)]
pub struct StoreAccess {
    root: PathBuf,
    busy: Arc<AtomicUsize>,
    /// The process's resolver of the cluster certificate, once it has one
    /// (see [`StoreAccess::use_cert_resolver`]).
    cert: Arc<OnceLock<Arc<ClusterCertResolver>>>,
}

impl StoreAccess {
    pub fn new(root: &Path) -> StoreAccess {
        StoreAccess { root: root.to_path_buf(), busy: Arc::new(AtomicUsize::new(0)), cert: Arc::new(OnceLock::new()) }
    }

    /// Gives the command set the process's resolver of this store's
    /// cluster certificate (the one its TLS servers present): `cert
    /// upload` and `cert regenerate` then go through it, so that this
    /// process presents the new certificate at once. Without one they
    /// change only the store, and every process, this one too, follows
    /// within [`cert::RELOAD_INTERVAL`]. Once for this access and its
    /// clones: false if it has one already.
    pub fn use_cert_resolver(&self, resolver: Arc<ClusterCertResolver>) -> bool {
        self.cert.set(resolver).is_ok()
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn call<T: Send + 'static>(&self, deadline: Duration, f: impl FnOnce(&Store) -> Result<T, AccessError> + Send + 'static) -> Result<T, AccessError> {
        if self.busy.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < STORE_CALLS_AT_ONCE).then_some(n + 1)).is_err() {
            return Err(AccessError::Busy);
        }
        let (tx, rx) = mpsc::channel();
        let (root, busy) = (self.root.clone(), self.busy.clone());
        let spawned = std::thread::Builder::new().name("store-call".into()).spawn(move || {
            let r = Store::open(&root).map_err(AccessError::from).and_then(|s| f(&s));
            busy.fetch_sub(1, Ordering::AcqRel);
            let _ = tx.send(r);
        });
        if let Err(e) = spawned {
            self.busy.fetch_sub(1, Ordering::AcqRel);
            return Err(AccessError::Thread(e));
        }
        match rx.recv_timeout(deadline) {
            Ok(r) => r,
            Err(_) => Err(AccessError::Timeout { root: self.root.clone(), secs: deadline.as_secs() }),
        }
    }

    pub fn report(&self) -> Result<StoreReport, AccessError> {
        let root = self.root.display().to_string();
        self.call(STORE_READ_DEADLINE, move |s| {
            s.probe()?;
            let cluster = cluster::report::read(s, ADMIN_CLOCK)?;
            let st = s.settings();
            Ok(StoreReport {
                root,
                store_id: st.store_id.clone(),
                domains: st.domains.clone(),
                hostname: st.hostname.clone(),
                accounts: s.accounts().list().map(|l| l.len()).unwrap_or(0),
                queued: s.queue_list().map(|l| l.len()).unwrap_or(0),
                space: free_space(s.root()),
                live: cluster
                    .nodes
                    .iter()
                    .map(|n| LiveNode { node: n.info.node.clone(), rank: n.info.rank, state: n.state.as_str().into(), age: n.age_text(), addresses: n.addresses_text(), protections_off: n.protections_off() })
                    .collect(),
                announcer: cluster.announcer_text(),
                announcer_node: cluster.announcer_node().map(str::to_string),
                dns: cluster.dns_text(),
                dns_records: cluster.dns_records().to_vec(),
            })
        })
    }

    /// Messages in and out per minute over the last hour, per node.
    pub fn stats(&self) -> Result<Vec<store::stats::NodeStats>, AccessError> {
        self.call(STORE_READ_DEADLINE, |s| {
            let now = s.now(ADMIN_CLOCK)?;
            Ok(store::stats::read_last_hour(s, now)?)
        })
    }

    pub fn user_list(&self) -> Result<Vec<Address>, AccessError> {
        self.call(STORE_READ_DEADLINE, |s| Ok(s.accounts().list()?))
    }

    pub fn user_add(&self, a: &Address, pw: &str) -> Result<(), AccessError> {
        let (a, pw) = (a.clone(), pw.to_string());
        self.call(STORE_CHANGE_DEADLINE, move |s| {
            s.accounts().add(&a, &pw, &s.settings().domains)?;
            Ok(s.ensure_maildir(&a).map(drop)?)
        })
    }

    pub fn user_passwd(&self, a: &Address, pw: &str) -> Result<(), AccessError> {
        let (a, pw) = (a.clone(), pw.to_string());
        self.call(STORE_CHANGE_DEADLINE, move |s| {
            if !s.accounts().exists(&a)? {
                return Err(AccessError::NoAccount(a));
            }
            Ok(s.accounts().set_password(&a, &pw)?)
        })
    }

    /// Returns where the kept mailbox is.
    pub fn user_del(&self, a: &Address) -> Result<String, AccessError> {
        let a = a.clone();
        self.call(STORE_CHANGE_DEADLINE, move |s| {
            s.accounts().delete(&a)?;
            Ok(s.maildir_path(&a).display().to_string())
        })
    }

    pub fn cluster_settings(&self) -> Result<Vec<Setting>, AccessError> {
        self.call(STORE_READ_DEADLINE, |s| {
            let st = s.reload_settings()?;
            Ok(crate::cluster_keys::describe(&st))
        })
    }

    /// Validates and saves one shared setting in the store.
    pub fn set_cluster_setting(&self, key: &str, value: &str) -> Result<(), AccessError> {
        let (key, value) = (key.to_string(), value.to_string());
        self.call(STORE_CHANGE_DEADLINE, move |s| {
            let mut st = s.reload_settings()?;
            crate::cluster_keys::set(&mut st, &key, &value)?;
            crate::cluster_keys::check_accounts(&st, &s.accounts().list()?)?;
            Ok(s.write_settings(&st)?)
        })
    }

    pub fn queue_list(&self) -> Result<Vec<QueueItem>, AccessError> {
        self.call(STORE_READ_DEADLINE, |s| {
            let now = unix_now();
            Ok(s.queue_list()?.iter().map(|e| queue_item(s, e, now)).collect())
        })
    }

    pub fn queue_show(&self, id: &str) -> Result<String, AccessError> {
        let id = checked_id(id)?;
        self.call(STORE_READ_DEADLINE, move |s| {
            let e = s.queue_get(&id).map_err(|_| AccessError::NoQueueEntry(id.clone()))?;
            let i = queue_item(s, &e, unix_now());
            let mut t = format!(
                "id:           {}\nsize:         {} bytes\nfrom:         {}\nto:           {}\naccepted by:  {} at {}\nattempts:     {}\nstate:        {}\n",
                i.id,
                i.size,
                i.from,
                i.rcpts.join(", "),
                e.envelope.node,
                i.created,
                i.attempts,
                i.state
            );
            if let Some(err) = &i.last_error {
                t.push_str(&format!("last error:   {err}\n"));
            }
            let msg = std::fs::read(s.queue_message_path(&id)).map_err(AccessError::Message)?;
            let end = msg.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(msg.len()).min(MAX_SHOWN_HEADER);
            t.push('\n');
            t.push_str(&String::from_utf8_lossy(&msg[..end]).replace("\r\n", "\n"));
            Ok(t)
        })
    }

    pub fn queue_retry(&self, id: &str) -> Result<(), AccessError> {
        let id = checked_id(id)?;
        self.call(STORE_CHANGE_DEADLINE, move |s| {
            let mut e = s.queue_get(&id).map_err(|_| AccessError::NoQueueEntry(id.clone()))?;
            e.envelope.next_attempt = 0;
            if !s.queue_update(&id, &e.envelope)? {
                return Err(AccessError::NoQueueEntry(id));
            }
            Ok(())
        })
    }

    pub fn queue_delete(&self, id: &str) -> Result<(), AccessError> {
        let id = checked_id(id)?;
        self.call(STORE_CHANGE_DEADLINE, move |s| if s.queue_remove(&id)? { Ok(()) } else { Err(AccessError::NoQueueEntry(id)) })
    }

    pub fn cert_show(&self) -> Result<CertView, AccessError> {
        self.call(STORE_READ_DEADLINE, |s| Ok(cert::cert_info(s)?))
    }

    /// Saves an uploaded certificate; the second value warns when it does
    /// not name the host name clients use (it is saved all the same: the
    /// host name may be about to change).
    pub fn cert_upload(&self, pem: &str) -> Result<(CertView, Option<String>), AccessError> {
        let pem = pem.to_string();
        let resolver = self.cert.get().cloned();
        self.call(STORE_CHANGE_DEADLINE, move |s| {
            let view = match &resolver {
                Some(r) => r.upload(s, &pem),
                None => cert::upload(s, &pem),
            }?;
            let host = s.settings().hostname.clone();
            let warning = (!names_cover(&view.names, &host)).then(|| format!("WARNING: the certificate does not name {host}, the name clients use; they will refuse it"));
            Ok((view, warning))
        })
    }

    pub fn cert_regenerate(&self) -> Result<CertView, AccessError> {
        let resolver = self.cert.get().cloned();
        self.call(STORE_CHANGE_DEADLINE, move |s| {
            Ok(match &resolver {
                Some(r) => r.regenerate(s),
                None => cert::regenerate(s),
            }?)
        })
    }

    /// The admin password's hash in the store; Ok(None) when none is set.
    pub fn admin_hash(&self) -> Result<Option<String>, AccessError> {
        self.call(STORE_READ_DEADLINE, |s| read_admin_hash(s.root()))
    }

    pub fn set_admin_hash(&self, hash: &str) -> Result<(), AccessError> {
        let hash = hash.to_string();
        self.call(STORE_CHANGE_DEADLINE, move |s| write_admin_hash(s.root(), &hash))
    }
}

fn checked_id(id: &str) -> Result<String, AccessError> {
    if valid_queue_id(id) {
        Ok(id.to_string())
    } else {
        Err(AccessError::BadQueueId(id.to_string()))
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn queue_item(s: &Store, e: &store::QueueEntry, now: u64) -> QueueItem {
    let held = s.lease_holder(&store::lock::names::queue_entry(&e.id), ADMIN_CLOCK).ok().flatten();
    let state = match held {
        Some((h, _)) => format!("being delivered by {}", h.node),
        None if e.envelope.next_attempt <= now => "due now".into(),
        None => format!("next attempt in {}s", e.envelope.next_attempt - now),
    };
    QueueItem {
        id: e.id.clone(),
        size: e.size,
        from: if e.envelope.from.is_empty() { "<>".into() } else { e.envelope.from.clone() },
        rcpts: e.envelope.rcpts.clone(),
        attempts: e.envelope.attempts,
        state,
        last_error: e.envelope.last_error.clone(),
        created: proto::date::Rfc5322(i64::try_from(e.envelope.created).unwrap_or(i64::MAX)).to_string(),
    }
}

/// Whether a certificate's DNS names cover `host`: the same name, or a
/// wildcard for its leftmost label only (RFC 6125 6.4.3).
pub fn names_cover(names: &[String], host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    names.iter().any(|n| {
        let n = n.trim_end_matches('.').to_ascii_lowercase();
        match n.strip_prefix("*.") {
            Some(rest) => host.split_once('.').is_some_and(|(first, parent)| !first.is_empty() && parent == rest),
            None => n == host,
        }
    })
}

/// The hash in `<store>/admin.hash`; Ok(None) when there is none.
pub fn read_admin_hash(root: &Path) -> Result<Option<String>, AccessError> {
    let p = store::Layout::new(root).admin_hash();
    match std::fs::read_to_string(&p) {
        Ok(t) if t.trim().starts_with("$argon2") => Ok(Some(t.trim().to_string())),
        Ok(_) => Err(AccessError::BadAdminHash(p)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(AccessError::Io { path: p, source }),
    }
}

pub fn write_admin_hash(root: &Path, hash: &str) -> Result<(), AccessError> {
    if !hash.starts_with("$argon2") {
        return Err(AccessError::NotArgon2);
    }
    let p = store::Layout::new(root).admin_hash();
    store::fsutil::write_atomic(&p, format!("{hash}\n").as_bytes()).map_err(|source| AccessError::Io { path: p, source })
}

/// Free and total bytes of the filesystem holding `p`.
pub fn free_space(p: &Path) -> Option<(u64, u64)> {
    let v = nix::sys::statvfs::statvfs(p).ok()?;
    let frag = v.fragment_size() as u64;
    Some((v.blocks_available() as u64 * frag, v.blocks() as u64 * frag))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_calls_have_deadlines() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("s");
        Store::init(&root, "example.test", None).unwrap();
        let a = StoreAccess::new(&root);
        for _ in 0..STORE_CALLS_AT_ONCE {
            let r = a.call(Duration::from_millis(100), |_| {
                std::thread::sleep(Duration::from_millis(600));
                Ok(())
            });
            assert!(matches!(r, Err(AccessError::Timeout { .. })), "{r:?}");
        }
        // While the stuck calls last, others are refused at once.
        assert!(matches!(a.user_list(), Err(AccessError::Busy)));
        std::thread::sleep(Duration::from_millis(800));
        assert_eq!(a.user_list().unwrap(), vec![]);
        let r = a.report().unwrap();
        assert!(r.store_id.len() >= 16);
        assert!(r.space.is_some_and(|(free, total)| total > 0 && free <= total));
    }

    #[test]
    fn admin_hash_lives_in_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("s");
        Store::init(&root, "example.test", None).unwrap();
        let a = StoreAccess::new(&root);
        assert_eq!(a.admin_hash().unwrap(), None);
        assert!(matches!(a.set_admin_hash("plain text"), Err(AccessError::NotArgon2)));
        let h = crate::password::hash_password("pw").unwrap();
        a.set_admin_hash(&h).unwrap();
        assert_eq!(a.admin_hash().unwrap().as_deref(), Some(h.as_str()));
        std::fs::write(store::Layout::new(&root).admin_hash(), "garbage").unwrap();
        assert!(matches!(a.admin_hash(), Err(AccessError::BadAdminHash(_))));
    }

    #[test]
    fn certificate_names_cover_the_host() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(names_cover(&names(&["mail.example.test"]), "Mail.Example.Test."));
        assert!(names_cover(&names(&["*.example.test"]), "mail.example.test"));
        assert!(!names_cover(&names(&["*.example.test"]), "a.mail.example.test"));
        assert!(!names_cover(&names(&["*.example.test"]), "example.test"));
        assert!(!names_cover(&names(&["other.test", "localhost"]), "mail.example.test"));
    }

    #[test]
    fn queue_ids_are_checked() {
        assert!(valid_queue_id("1700000000.123456_7.mail1"));
        for bad in ["", ".hidden", "../x", "a/b", "a b", &"x".repeat(MAX_QUEUE_ID + 1)] {
            assert!(!valid_queue_id(bad), "{bad}");
        }
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("s");
        Store::init(&root, "example.test", None).unwrap();
        let a = StoreAccess::new(&root);
        assert!(a.queue_list().unwrap().is_empty());
        assert!(matches!(a.queue_retry("1.2_3.n"), Err(AccessError::NoQueueEntry(id)) if id == "1.2_3.n"));
        assert!(matches!(a.queue_delete("../../accounts"), Err(AccessError::BadQueueId(_))));
    }
}
