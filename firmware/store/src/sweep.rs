//! What a crash leaves in the store, and its removal when a node starts.
//!
//! Every change that spans several files is ordered so that the file that
//! makes it visible comes last: a queue entry is its `.msg` and then its
//! `.env`; an atomic write is a temporary file and then a rename; a broken
//! lease is renamed aside and then removed. A crash in between leaves a
//! file that no reader takes for anything (an entry without its `.env`, a
//! dot-file) and that only costs space; [`Store::sweep_crash_leftovers`]
//! removes it. It never removes a complete entry, and it leaves alone
//! what a live node may be writing at this moment: another node's
//! leftovers go only once they are older than a generous age, by the
//! store's clock.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::fsutil;
use crate::layout;
use crate::lock::BROKEN_PREFIX;
use crate::store::{io_err, Store, StoreError};

/// Another node's queue `.msg` without `.env` is removed once its link is
/// this old: the gap between link and envelope is milliseconds, but a node
/// whose store stalls may sit in it for long, and removing its message
/// then would refuse mail (enqueue checks the `.msg` after writing the
/// `.env`). The node's own are removed at its start, whatever their age.
pub const ORPHAN_MIN_AGE: Duration = Duration::from_secs(3600);
/// A temporary file of an atomic write, or a lease renamed aside, is
/// removed once this old: both live for milliseconds, and removing one in
/// use only makes that write fail (it is retried or reported), never
/// loses data.
pub const TEMP_MIN_AGE: Duration = Duration::from_secs(600);
/// Another node's spool file is removed once this old (since its last
/// write): a message being received is written to at least every session
/// timeout, so a day-old one belongs to a node that died and never came
/// back under its name. A node's own spool is emptied at its start
/// (`clean_spool`).
pub const STALE_SPOOL_AGE: Duration = Duration::from_secs(24 * 3600);

/// What [`Store::sweep_crash_leftovers`] removed or fixed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepReport {
    /// Queue messages without an envelope (and envelopes without a message).
    pub orphan_queue_files: usize,
    /// Temporary files of atomic writes.
    pub temp_files: usize,
    /// Leases renamed aside by a breaker that stopped before removing them.
    pub broken_leases: usize,
    /// Other nodes' spool files past [`STALE_SPOOL_AGE`].
    pub stale_spool_files: usize,
}

impl SweepReport {
    pub fn total(&self) -> usize {
        self.orphan_queue_files + self.temp_files + self.broken_leases + self.stale_spool_files
    }
}

/// The directories that hold atomically written files (Maildirs do not:
/// mail is linked, never rewritten, and they are not walked).
const TEMP_DIRS: &[&str] = &["", layout::TLS, layout::DKIM, layout::CLUSTER, layout::NODES, layout::LOCKS, layout::QUEUE, layout::STATS];

/// The owning node of a message name `<secs>.<micros>_<counter>.<node>`.
fn owner_of(name: &str) -> Option<&str> {
    name.split_once('_').and_then(|(_, rest)| rest.split_once('.')).map(|(_, node)| node)
}

fn age(now: SystemTime, t: SystemTime) -> Duration {
    now.duration_since(t).unwrap_or_default()
}

/// The time of the last change of a file's name or inode (a link, a
/// rename), by the store's clock.
fn ctime(m: &fs::Metadata) -> SystemTime {
    use std::os::unix::fs::MetadataExt;
    SystemTime::UNIX_EPOCH + Duration::new(m.ctime().max(0) as u64, m.ctime_nsec().clamp(0, 999_999_999) as u32)
}

/// Removes a file that vanished meanwhile without complaint.
fn remove(path: &Path) -> Result<bool, StoreError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(StoreError::Io { path: path.to_path_buf(), source: e }),
    }
}

/// The entries of `dir`, none when it does not exist.
fn entries(dir: &Path) -> Result<Vec<(String, PathBuf)>, StoreError> {
    match fs::read_dir(dir) {
        Ok(rd) => Ok(rd.flatten().filter_map(|e| e.file_name().to_str().map(|n| (n.to_string(), e.path()))).collect()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(StoreError::Io { path: dir.to_path_buf(), source: e }),
    }
}

impl Store {
    /// Removes what a crash (of this node or another) left in the store:
    /// queue `.msg` files without their `.env` (this node's at once,
    /// others' after [`ORPHAN_MIN_AGE`]), temporary files of atomic writes
    /// and leases renamed aside (after [`TEMP_MIN_AGE`]), and other nodes'
    /// spool files after [`STALE_SPOOL_AGE`]. Call at the node's start,
    /// before it serves, next to [`Store::clean_spool`] (which empties the
    /// node's own spool). A complete queue entry is never touched.
    pub fn sweep_crash_leftovers(&self, node: &str) -> Result<SweepReport, StoreError> {
        let now = self.now(node)?;
        let mut report = SweepReport::default();
        self.sweep_queue(node, now, &mut report)?;
        for d in TEMP_DIRS {
            let dir = if d.is_empty() { self.root().to_path_buf() } else { self.root().join(d) };
            self.sweep_temp_files(&dir, node, now, &mut report)?;
            // dkim/<domain>/ holds the keys, written the same way.
            if *d == layout::DKIM {
                for (_, sub) in entries(&dir)? {
                    if sub.is_dir() {
                        self.sweep_temp_files(&sub, node, now, &mut report)?;
                    }
                }
            }
        }
        for (name, path) in entries(&self.locks_dir())? {
            if !name.starts_with(BROKEN_PREFIX) {
                continue;
            }
            let Ok(m) = fs::symlink_metadata(&path) else { continue };
            if m.is_file() && age(now, ctime(&m)) > TEMP_MIN_AGE && remove(&path)? {
                report.broken_leases += 1;
            }
        }
        for (name, dir) in entries(&self.layout().spool_root())? {
            if name == node || !dir.is_dir() {
                continue;
            }
            for (_, path) in entries(&dir)? {
                let Ok(m) = fs::symlink_metadata(&path) else { continue };
                if m.is_file() && m.modified().is_ok_and(|t| age(now, t) > STALE_SPOOL_AGE) && remove(&path)? {
                    report.stale_spool_files += 1;
                }
            }
        }
        if report.total() > 0 {
            fsutil::sync_dir(&self.queue_dir()).map_err(io_err(&self.queue_dir()))?;
        }
        Ok(report)
    }

    fn sweep_queue(&self, node: &str, now: SystemTime, report: &mut SweepReport) -> Result<(), StoreError> {
        let q = self.queue_dir();
        for (name, path) in entries(&q)? {
            if name.starts_with('.') {
                continue;
            }
            let (id, other) = if let Some(id) = name.strip_suffix(".msg") {
                (id, "env")
            } else if let Some(id) = name.strip_suffix(".env") {
                (id, "msg")
            } else {
                continue;
            };
            if q.join(format!("{id}.{other}")).exists() {
                continue;
            }
            let Ok(m) = fs::symlink_metadata(&path) else { continue };
            let old = age(now, ctime(&m));
            // A .msg is the first half of an entry being made: its own
            // node's at once (it is not making one now: it is starting),
            // another's only when old. An .env without .msg is made by no
            // writer (the .msg comes first, removal takes the .env first).
            let gone = match other {
                "env" => owner_of(id) == Some(node) || old > ORPHAN_MIN_AGE,
                _ => old > TEMP_MIN_AGE,
            };
            // Checked again just before: an envelope written meanwhile
            // makes the entry complete, and complete entries stay.
            if gone && !q.join(format!("{id}.{other}")).exists() && remove(&path)? {
                tracing::info!(file = %path.display(), "removed an incomplete queue entry left by a crash");
                report.orphan_queue_files += 1;
            }
        }
        Ok(())
    }

    /// Temporary files in `dir`: dot-files with [`fsutil::TEMP_MARK`] in
    /// their name (and, in `tls/`, any dot-file: the certificate is made
    /// under a temporary dot-name and linked into place).
    /// Those of files that belong to `node` (its queue envelopes, its
    /// heartbeat and counts: the node's name is in the file's) go at once,
    /// since the node is starting and writes none of them now; the others
    /// after [`TEMP_MIN_AGE`].
    fn sweep_temp_files(&self, dir: &Path, node: &str, now: SystemTime, report: &mut SweepReport) -> Result<(), StoreError> {
        let any_dot = dir == self.tls_dir();
        let in_queue = dir == self.queue_dir();
        let per_node = dir == self.layout().nodes_dir() || dir == self.layout().stats_dir();
        for (name, path) in entries(dir)? {
            if !name.starts_with('.') || !(any_dot || name.contains(fsutil::TEMP_MARK)) {
                continue;
            }
            // `.<target><TEMP_MARK><pid>.<n>`
            let target = name[1..].split(fsutil::TEMP_MARK).next().unwrap_or("");
            let mine = (in_queue && target.strip_suffix(".env").and_then(owner_of) == Some(node)) || (per_node && target == node);
            let Ok(m) = fs::symlink_metadata(&path) else { continue };
            if m.is_file() && (mine || m.modified().is_ok_and(|t| age(now, t) > TEMP_MIN_AGE)) && remove(&path)? {
                report.temp_files += 1;
            }
        }
        Ok(())
    }

    /// Takes group and other bits off the store's root, its top-level
    /// files and directories, and the key directories (`tls/`, `dkim/`),
    /// as a store made under a loose umask by an older version has them.
    /// The directories at 0700 close everything below them to other users,
    /// so the Maildirs are not walked. Returns how many modes changed.
    pub(crate) fn tighten_modes(root: &Path) -> Result<usize, StoreError> {
        let mut n = 0;
        let mut fix = |p: &Path| -> Result<(), StoreError> {
            match fsutil::restrict_mode(p) {
                Ok(true) => n += 1,
                Ok(false) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::Io { path: p.to_path_buf(), source: e }),
            }
            Ok(())
        };
        fix(root)?;
        for (_, p) in entries(root)? {
            fix(&p)?;
        }
        for d in [layout::TLS, layout::DKIM, layout::CLUSTER] {
            for (_, p) in entries(&root.join(d))? {
                fix(&p)?;
                if d == layout::DKIM && p.is_dir() {
                    for (_, k) in entries(&p)? {
                        fix(&k)?;
                    }
                }
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::Envelope;
    use std::os::unix::fs::PermissionsExt;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::init(&dir.path().join("s"), "example.test", None).unwrap();
        (dir, s)
    }

    /// Sets a file's mtime (and so, with a rename, nothing else) into the past.
    fn backdate(path: &Path, by: Duration) {
        let t = SystemTime::now() - by;
        fs::File::options().write(true).open(path).unwrap().set_modified(t).unwrap();
    }

    #[test]
    fn owner_is_the_last_part_of_a_message_name() {
        assert_eq!(owner_of("1700000000.000123_42.node1"), Some("node1"));
        assert_eq!(owner_of("1700000000.000123_42.node.a"), Some("node.a"));
        assert_eq!(owner_of("nonsense"), None);
    }

    #[test]
    fn sweep_removes_leftovers_and_keeps_complete_entries() {
        let (_d, s) = store();
        let env = Envelope { from: "a@example.test".into(), rcpts: vec!["x@remote.test".into()], created: 1, node: "n1".into(), ..Default::default() };
        let kept = s.enqueue("n1", b"complete\r\n", &env).unwrap();
        let q = s.queue_dir();
        // What a kill between link and envelope leaves: a .msg alone, of
        // this node and of another.
        let mine = "1700000000.000001_1.n1";
        let theirs = "1700000000.000002_1.n2";
        fs::write(q.join(format!("{mine}.msg")), "x").unwrap();
        fs::write(q.join(format!("{theirs}.msg")), "x").unwrap();
        // Temporary files of atomic writes, old and fresh.
        let old_tmp = [s.root().join(".accounts.tmp.1.2"), q.join(format!(".{mine}.env.tmp.1.2")), s.tls_dir().join(".self-signed.pem.1.2"), s.root().join("cluster/nodes/.n2.tmp.1.2")];
        for p in &old_tmp {
            fs::write(p, "t").unwrap();
            backdate(p, TEMP_MIN_AGE * 2);
        }
        let fresh_tmp = s.root().join(".cluster.toml.tmp.9.9");
        fs::write(&fresh_tmp, "t").unwrap();
        // This node's envelope and heartbeat in the making: its own, at once.
        let own_tmp = [q.join(format!(".{mine}.env.tmp.3.4")), s.root().join("cluster/nodes/.n1.tmp.3.4")];
        for p in &own_tmp {
            fs::write(p, "t").unwrap();
        }
        let theirs_tmp = q.join(format!(".{theirs}.env.tmp.3.4"));
        fs::write(&theirs_tmp, "t").unwrap();
        // A clock file is a dot-file but no temporary file.
        s.now("n2").unwrap();
        let report = s.sweep_crash_leftovers("n1").unwrap();
        assert_eq!(report.orphan_queue_files, 1, "{report:?}");
        assert_eq!(report.temp_files, old_tmp.len() + own_tmp.len(), "{report:?}");
        assert!(own_tmp.iter().all(|p| !p.exists()));
        assert!(theirs_tmp.exists(), "another node's fresh envelope in the making");
        assert!(!q.join(format!("{mine}.msg")).exists(), "this node's orphan is removed at once");
        assert!(q.join(format!("{theirs}.msg")).exists(), "another node's fresh orphan may be an entry in the making");
        assert!(old_tmp.iter().all(|p| !p.exists()));
        assert!(fresh_tmp.exists(), "a fresh temporary file may be a write in progress");
        assert!(s.root().join("cluster/nodes/.clock.n2").exists());
        let l = s.queue_list().unwrap();
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].id, kept);
        assert_eq!(fs::read(s.queue_message_path(&kept)).unwrap(), b"complete\r\n");
        // Nothing more the second time.
        assert_eq!(s.sweep_crash_leftovers("n1").unwrap(), SweepReport::default());
        // n2's orphan goes when n2 starts.
        assert_eq!(s.sweep_crash_leftovers("n2").unwrap().orphan_queue_files, 1);
        assert_eq!(s.queue_list().unwrap().len(), 1);
    }

    #[test]
    fn open_tightens_old_modes() {
        let (_d, s) = store();
        let root = s.root().to_path_buf();
        for p in [root.clone(), root.join("mail"), root.join("tls")] {
            fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        }
        fs::write(root.join("tls/cluster.pem"), "key").unwrap();
        for p in [root.join("accounts"), root.join("tls/cluster.pem")] {
            fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        }
        Store::open(&root).unwrap();
        for (p, mode) in [(root.clone(), 0o700), (root.join("mail"), 0o700), (root.join("tls"), 0o700), (root.join("accounts"), 0o600), (root.join("tls/cluster.pem"), 0o600)] {
            assert_eq!(fs::metadata(&p).unwrap().permissions().mode() & 0o777, mode, "{}", p.display());
        }
        assert_eq!(Store::tighten_modes(&root).unwrap(), 0);
    }
}
