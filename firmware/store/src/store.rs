use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use serde::Deserialize;

use crate::accounts::Accounts;
use crate::address::{normalize_domain, same_domain, valid_domain, Address};
use crate::fsutil;
use crate::layout::{self, Layout};
use crate::settings::{ClusterLimits, ClusterSettings, SenderSettings};

/// The FORMAT file's content for stores this code can run on. Version 2
/// added IMAP: folders (`.Name/` Maildir++ subfolders), flags in message
/// file names and one UID record per folder (`imap`). A node of version 1
/// would not follow a message renamed by a flag change, so it must refuse
/// such a store, and does: it knows only its own version.
pub const FORMAT_VERSION: &str = "mailfort-store 2";
/// Older formats [`Store::open`] upgrades in place. From 1: nothing to
/// convert; each folder's UID record is written when IMAP first looks at
/// the folder, numbering its messages in delivery order, which is also
/// the order POP3 lists them in; nothing is renamed or renumbered.
pub const UPGRADABLE_FORMATS: &[&str] = &["mailfort-store 1"];

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
    #[error(transparent)]
    Unanswered(#[from] crate::blocking::Unanswered),
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io { path: path.to_path_buf(), source }
}

/// An open store.
#[derive(Debug)]
pub struct Store {
    layout: Layout,
    /// The id of the store that was opened; settings read later must
    /// carry the same one.
    store_id: String,
    /// The settings as last read; replaced whole by `refresh_settings`.
    settings: RwLock<Arc<ClusterSettings>>,
    /// The stamp of the `cluster.toml` that `settings` came from.
    settings_stamp: Mutex<Option<fsutil::FileStamp>>,
    accounts: Accounts,
    /// The store is an NFS mount (durability needs an extra step).
    on_nfs: bool,
}

impl Store {
    /// Creates a new store at `root` for `domain`.
    pub fn init(root: &Path, domain: &str, hostname: Option<&str>) -> Result<Store, StoreError> {
        let domain = normalize_domain(domain.trim());
        if !valid_domain(&domain) {
            return Err(StoreError::BadDomain(domain));
        }
        let hostname = hostname.map(normalize_domain).unwrap_or_else(|| format!("mail.{domain}"));
        if !valid_domain(&hostname) {
            return Err(StoreError::BadDomain(hostname));
        }
        let layout = Layout::new(root);
        if layout.format().exists() {
            return Err(StoreError::AlreadyExists(root.to_path_buf()));
        }
        if root.exists() && fs::read_dir(root).map_err(io_err(root))?.next().is_some() {
            return Err(StoreError::NotEmpty(root.to_path_buf()));
        }
        for d in layout::INIT_DIRS {
            fsutil::create_dir_durable(&root.join(d)).map_err(io_err(root))?;
        }
        let settings = ClusterSettings { store_id: format!("{:032x}", rand::random::<u128>()), domains: vec![domain], hostname, dns: None, limits: ClusterLimits::default(), senders: SenderSettings::default() };
        let toml = toml::to_string(&settings).map_err(|e| StoreError::Settings { path: layout.settings(), reason: e.to_string() })?;
        fsutil::write_atomic(&layout.settings(), toml.as_bytes()).map_err(io_err(root))?;
        fsutil::write_atomic(&layout.accounts(), b"").map_err(io_err(root))?;
        // FORMAT last: a tree without it is not a store, so a crash during
        // init leaves something `open` refuses rather than half a store.
        fsutil::write_atomic(&layout.format(), format!("{FORMAT_VERSION}\n").as_bytes()).map_err(io_err(root))?;
        Store::open(root)
    }

    /// Opens an existing store, refusing anything that is not one of our
    /// format.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        let layout = Layout::new(root);
        let format_path = layout.format();
        let found = match fs::read_to_string(&format_path) {
            Ok(s) => s,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(StoreError::NotAStore(root.to_path_buf())),
            Err(e) => return Err(StoreError::Io { path: format_path, source: e }),
        };
        if UPGRADABLE_FORMATS.contains(&found.trim()) {
            fsutil::write_atomic(&format_path, format!("{FORMAT_VERSION}\n").as_bytes()).map_err(io_err(&format_path))?;
            tracing::info!(store = %root.display(), from = found.trim(), to = FORMAT_VERSION, "upgraded the store's format");
        } else if found.trim() != FORMAT_VERSION {
            return Err(StoreError::UnknownFormat { path: root.to_path_buf(), found: found.trim().chars().take(80).collect() });
        }
        let (settings, stamp) = Self::read_settings_stamped(root)?;
        // A store made by an older version followed the umask: close it
        // to other local users (cheap: the top level and the key files).
        match Self::tighten_modes(root) {
            Ok(0) => {}
            Ok(n) => tracing::info!(store = %root.display(), changed = n, "restricted the store's files to their owner (0600, directories 0700)"),
            Err(e) => tracing::warn!(error = %e, "cannot restrict the store's files to their owner"),
        }
        Ok(Store {
            accounts: Accounts::new(layout.accounts()),
            layout,
            store_id: settings.store_id.clone(),
            settings: RwLock::new(Arc::new(settings)),
            settings_stamp: Mutex::new(Some(stamp)),
            on_nfs: fsutil::is_nfs(root),
        })
    }

    /// Reads `cluster.toml` again (it may have been edited since `open`),
    /// without changing the settings this store hands out.
    pub fn reload_settings(&self) -> Result<ClusterSettings, StoreError> {
        Self::read_settings(self.layout.root())
    }

    /// Follows changes of `cluster.toml`: when the file is not the one the
    /// current settings came from (another inode, size or time), reads and
    /// checks it and makes it the settings that [`Store::settings`] hands
    /// out. `Ok(true)` when the settings changed. A file that does not
    /// parse, fails the checks or names another store leaves the current
    /// settings in place and is reported again on every call until fixed.
    ///
    /// Cheap when nothing changed (an open and an fstat; the open makes an
    /// NFS client revalidate its cached attributes, close-to-open
    /// consistency, RFC 7530 10.3.1), so it may be called every few
    /// seconds.
    pub fn refresh_settings(&self) -> Result<bool, StoreError> {
        let mut stamp = self.settings_stamp.lock().unwrap_or_else(|e| e.into_inner());
        let path = self.layout.settings();
        let mut file = fs::File::open(&path).map_err(io_err(&path))?;
        let now = fsutil::FileStamp::of(&file.metadata().map_err(io_err(&path))?);
        if *stamp == Some(now) {
            return Ok(false);
        }
        let mut text = String::new();
        file.read_to_string(&mut text).map_err(io_err(&path))?;
        let new = Self::parse_settings(&path, &text)?;
        if new.store_id != self.store_id {
            return Err(StoreError::Settings { path, reason: format!("store id changed from {} to {}: not the store this node opened", self.store_id, new.store_id) });
        }
        let changed = *self.settings() != new;
        if changed {
            *self.settings.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(new);
        }
        *stamp = Some(now);
        Ok(changed)
    }

    /// Replaces `cluster.toml` atomically, after the same checks a reader
    /// makes (a file every node would refuse is never written), and makes
    /// it this store's settings. The store id cannot change.
    pub fn write_settings(&self, settings: &ClusterSettings) -> Result<(), StoreError> {
        let path = self.layout.settings();
        Self::check_settings(&path, settings)?;
        if !valid_domain(&settings.hostname) {
            return Err(StoreError::BadDomain(settings.hostname.clone()));
        }
        if settings.store_id != self.store_id {
            return Err(StoreError::Settings { path, reason: format!("the store id is {}, not {}", self.store_id, settings.store_id) });
        }
        let toml = toml::to_string(settings).map_err(|e| StoreError::Settings { path: path.clone(), reason: e.to_string() })?;
        fsutil::write_atomic(&path, toml.as_bytes()).map_err(io_err(&path))?;
        if let Err(e) = self.refresh_settings() {
            tracing::warn!(error = %e, "cluster.toml written but not read back");
        }
        Ok(())
    }

    fn read_settings(root: &Path) -> Result<ClusterSettings, StoreError> {
        Self::read_settings_stamped(root).map(|(s, _)| s)
    }

    fn read_settings_stamped(root: &Path) -> Result<(ClusterSettings, fsutil::FileStamp), StoreError> {
        let path = Layout::new(root).settings();
        let mut file = fs::File::open(&path).map_err(io_err(&path))?;
        // The stamp before the content: a change while reading shows as a
        // new stamp at the next refresh.
        let stamp = fsutil::FileStamp::of(&file.metadata().map_err(io_err(&path))?);
        let mut text = String::new();
        file.read_to_string(&mut text).map_err(io_err(&path))?;
        Ok((Self::parse_settings(&path, &text)?, stamp))
    }

    fn parse_settings(path: &Path, text: &str) -> Result<ClusterSettings, StoreError> {
        let s: ClusterSettings = toml::from_str(text).map_err(|e| StoreError::Settings { path: path.to_path_buf(), reason: e.to_string() })?;
        Self::check_settings(path, &s)?;
        Ok(s)
    }

    fn check_settings(path: &Path, s: &ClusterSettings) -> Result<(), StoreError> {
        let bad = |reason: String| StoreError::Settings { path: path.to_path_buf(), reason };
        if s.domains.is_empty() || !s.domains.iter().all(|d| valid_domain(d)) {
            return Err(bad("domains must be a non-empty list of domain names".into()));
        }
        s.limits.validate().map_err(|e| bad(e.to_string()))?;
        s.senders.validate().map_err(|e| bad(e.to_string()))
    }

    pub fn on_nfs(&self) -> bool {
        self.on_nfs
    }

    pub fn root(&self) -> &Path {
        self.layout.root()
    }

    /// Where everything is in this store.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The cluster settings as last read (at `open`, or by the latest
    /// [`Store::refresh_settings`] that found a change). A snapshot: it
    /// does not change under the caller.
    pub fn settings(&self) -> Arc<ClusterSettings> {
        self.settings.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn accounts(&self) -> &Accounts {
        &self.accounts
    }

    /// Whether mail for `domain` is stored here.
    pub fn is_local_domain(&self, domain: &str) -> bool {
        self.settings().domains.iter().any(|x| same_domain(x, domain))
    }

    /// The Maildir of `addr`.
    pub fn maildir_path(&self, addr: &Address) -> PathBuf {
        self.layout.maildir(addr)
    }

    pub fn queue_dir(&self) -> PathBuf {
        self.layout.queue_dir()
    }

    pub fn locks_dir(&self) -> PathBuf {
        self.layout.locks_dir()
    }

    pub fn tls_dir(&self) -> PathBuf {
        self.layout.tls_dir()
    }

    /// A node's private spool directory for messages being received.
    pub fn spool_dir(&self, node: &str) -> PathBuf {
        self.layout.spool_dir(node)
    }

    /// The store's clock: touches a file of this node's and reads back the
    /// mtime the store gave it. Every node that asks gets the same clock.
    pub fn now(&self, node: &str) -> Result<SystemTime, StoreError> {
        let p = self.layout.clock_file(node);
        fsutil::touch_server_time(&p).map_err(io_err(&p))
    }

    /// A health probe: the store answers, holds our FORMAT, and is the same
    /// store (by its id) that was opened, so that an empty mountpoint or
    /// another store mounted in its place is never taken for it.
    pub fn probe(&self) -> Result<(), StoreError> {
        let f = self.layout.format();
        let s = fs::read_to_string(&f).map_err(io_err(&f))?;
        if s.trim() != FORMAT_VERSION {
            return Err(StoreError::UnknownFormat { path: self.layout.root().to_path_buf(), found: s.trim().to_string() });
        }
        // Only the id is checked here: settings edited into something
        // unusable are refused by `refresh_settings` (the settings in force
        // stay), and must not make every node stop taking mail.
        #[derive(Deserialize)]
        struct Id {
            store_id: String,
        }
        let path = self.layout.settings();
        let text = fs::read_to_string(&path).map_err(io_err(&path))?;
        match toml::from_str::<Id>(&text) {
            Ok(now) if now.store_id != self.store_id => Err(StoreError::Settings { path, reason: format!("store id changed from {} to {}: not the store this node opened", self.store_id, now.store_id) }),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::*;

    #[test]
    fn outside_sender_networks() {
        let n = |t: &str| Network::parse(t).unwrap();
        let ip = |t: &str| t.parse::<std::net::IpAddr>().unwrap();
        assert!(n("192.0.2.0/24").contains(ip("192.0.2.200")));
        assert!(!n("192.0.2.0/24").contains(ip("192.0.3.1")));
        assert!(n("192.0.2.7").contains(ip("192.0.2.7")) && !n("192.0.2.7").contains(ip("192.0.2.8")));
        assert!(n("0.0.0.0/0").contains(ip("203.0.113.9")) && !n("0.0.0.0/0").contains(ip("2001:db8::1")));
        assert!(n("2001:db8::/32").contains(ip("2001:db8:ffff::1")) && !n("2001:db8::/32").contains(ip("2001:db9::1")));
        assert!(n("192.0.2.0/24").contains(ip("::ffff:192.0.2.9")));
        for bad in ["", "192.0.2.0/33", "2001:db8::/129", "example.test", "192.0.2.0/x", "192.0.2/24"] {
            assert!(Network::parse(bad).is_err(), "{bad}");
        }
        let s = SenderSettings { outside: vec!["192.0.2.0/24".into(), "2001:db8::1".into()] };
        s.validate().unwrap();
        assert!(s.is_outside_sender(ip("192.0.2.1")) && s.is_outside_sender(ip("2001:db8::1")) && !s.is_outside_sender(ip("127.0.0.1")));
        assert!(SenderSettings { outside: vec!["nonsense".into()] }.validate().is_err());
        assert!(SenderSettings { outside: vec!["192.0.2.1".into(); MAX_OUTSIDE_SENDERS + 1] }.validate().is_err());
    }

    #[test]
    fn a_bad_outside_sender_in_the_file_is_refused() {
        let path = Path::new("cluster.toml");
        let base = "store_id = \"x\"\ndomains = [\"example.test\"]\nhostname = \"mx.example.test\"\n";
        let s = Store::parse_settings(path, &format!("{base}[senders]\noutside = [\"192.0.2.0/24\"]\n")).unwrap();
        assert_eq!(s.senders.outside, vec!["192.0.2.0/24"]);
        assert!(Store::parse_settings(path, &format!("{base}[senders]\noutside = [\"192.0.2.0/99\"]\n")).is_err());
        assert!(Store::parse_settings(path, base).unwrap().senders.is_empty());
    }

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
    fn settings_follow_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("s");
        let s = Store::init(&root, "example.test", None).unwrap();
        let other = Store::open(&root).unwrap();
        assert!(!s.refresh_settings().unwrap(), "nothing changed yet");
        let before = s.settings();

        // Another process (here: another Store) writes new settings.
        let mut next = (*other.settings()).clone();
        next.domains.push("example.org".into());
        next.limits = ClusterLimits { max_message_size: Some(MIN_MESSAGE_SIZE_LIMIT), max_recipients: Some(MIN_RECIPIENTS_LIMIT) };
        other.write_settings(&next).unwrap();
        assert!(!s.is_local_domain("example.org"), "not before a refresh");
        assert!(s.refresh_settings().unwrap());
        assert!(s.is_local_domain("example.org"));
        assert_eq!(*s.settings(), next);
        assert_eq!(before.domains, vec!["example.test"], "an earlier snapshot does not change");
        assert!(!s.refresh_settings().unwrap());
        // The writer sees its own change at once.
        assert_eq!(*other.settings(), next);

        // Bad content: the old settings stay, and the error is reported.
        let path = root.join("cluster.toml");
        let good = fs::read_to_string(&path).unwrap();
        fs::write(&path, "domains = [").unwrap();
        assert!(matches!(s.refresh_settings(), Err(StoreError::Settings { .. })));
        assert_eq!(*s.settings(), next);
        fs::write(&path, good.replace("max_recipients = 100", "max_recipients = 99")).unwrap();
        let e = s.refresh_settings().unwrap_err().to_string();
        assert!(e.contains("RFC 5321 4.5.3.1.8"), "{e}");
        assert!(s.probe().is_ok(), "bad settings do not fail the health probe");
        fs::write(&path, good.replace(&next.store_id, "0123")).unwrap();
        assert!(s.refresh_settings().unwrap_err().to_string().contains("store id"));
        assert!(s.probe().is_err(), "another store's settings do");
        assert_eq!(*s.settings(), next);
        // Fixed by hand (an editor writing in place): followed again.
        fs::write(&path, good.replace("example.org", "example.net")).unwrap();
        assert!(s.refresh_settings().unwrap());
        assert!(s.is_local_domain("example.net") && !s.is_local_domain("example.org"));
    }

    #[test]
    fn cluster_limits_are_checked() {
        let ok = ClusterLimits { max_message_size: Some(MESSAGE_SIZE_HARD_CAP), max_recipients: Some(MAX_RECIPIENTS_LIMIT) };
        assert!(ok.validate().is_ok());
        assert!(ClusterLimits::default().validate().is_ok() && ClusterLimits::default().is_empty());
        assert!(ClusterLimits { max_recipients: Some(MIN_RECIPIENTS_LIMIT - 1), ..ok }.validate().is_err());
        assert!(ClusterLimits { max_recipients: Some(MAX_RECIPIENTS_LIMIT + 1), ..ok }.validate().is_err());
        assert!(ClusterLimits { max_message_size: Some(MIN_MESSAGE_SIZE_LIMIT - 1), ..ok }.validate().is_err());
        assert!(ClusterLimits { max_message_size: Some(MESSAGE_SIZE_HARD_CAP + 1), ..ok }.validate().is_err());

        let dir = tempfile::tempdir().unwrap();
        let s = Store::init(&dir.path().join("s"), "example.test", None).unwrap();
        // Not written when unset; refused when invalid; the store id is fixed.
        assert!(!fs::read_to_string(dir.path().join("s/cluster.toml")).unwrap().contains("limits"));
        let mut bad = (*s.settings()).clone();
        bad.limits.max_recipients = Some(10);
        assert!(s.write_settings(&bad).is_err());
        let mut bad = (*s.settings()).clone();
        bad.store_id = "other".into();
        assert!(s.write_settings(&bad).is_err());
        assert_eq!(s.reload_settings().unwrap(), *s.settings());
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
