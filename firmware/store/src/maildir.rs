//! Maildir delivery and reading.
//!
//! Delivery writes one spool file, fsyncs it, hard-links it into every
//! recipient's `new/` (and the queue, for remote recipients), fsyncs those
//! directories, and only then reports success; the spool name is dropped
//! afterwards. One copy on disk however many recipients.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::address::Address;
use crate::fsutil;
use crate::queue::Envelope;
use crate::store::{io_err, Store, StoreError};

/// A message being received, in the node's spool directory.
#[derive(Debug)]
pub struct Spool {
    file: Option<File>,
    path: PathBuf,
    name: String,
    size: u64,
}

/// Message names must be unique across nodes and across restarts of one
/// node: seconds, microseconds, a per-process counter that starts at a
/// random value, and the node name (DESIGN: `<secs>.<micros>_<counter>.<node>`).
pub(crate) fn unique_name(node: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static START: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let base = *START.get_or_init(|| rand::random::<u32>() as u64);
    let n = base + COUNTER.fetch_add(1, Ordering::Relaxed);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    format!("{}.{:06}_{}.{}", now.as_secs(), now.subsec_micros(), n, node)
}

impl Store {
    /// Starts receiving a message on `node`.
    pub fn spool(&self, node: &str) -> Result<Spool, StoreError> {
        let dir = self.spool_dir(node);
        if !dir.is_dir() {
            fsutil::create_dir_durable(&dir).map_err(io_err(&dir))?;
        }
        let name = unique_name(node);
        let path = dir.join(&name);
        // Every mailbox's copy is a hard link of this file: its mode is theirs.
        let file = fsutil::create_private_file(&path).map_err(io_err(&path))?;
        Ok(Spool { file: Some(file), path, name, size: 0 })
    }

    /// Removes what a node left in its spool when it stopped: messages that
    /// were never acknowledged. Call before the node starts serving.
    pub fn clean_spool(&self, node: &str) -> Result<usize, StoreError> {
        let dir = self.spool_dir(node);
        let mut n = 0;
        match fs::read_dir(&dir) {
            Ok(entries) => {
                for e in entries.flatten() {
                    if fs::remove_file(e.path()).is_ok() {
                        n += 1;
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::Io { path: dir, source: e }),
        }
        Ok(n)
    }

    /// Creates a Maildir (tmp, new, cur) if it does not exist.
    pub fn ensure_maildir(&self, addr: &Address) -> Result<PathBuf, StoreError> {
        let md = self.maildir_path(addr);
        if !md.join("cur").is_dir() {
            for sub in ["tmp", "new", "cur"] {
                fsutil::create_dir_durable(&md.join(sub)).map_err(io_err(&md))?;
            }
        }
        Ok(md)
    }

    /// The messages in a mailbox, oldest first. Sizes come from INBOX's
    /// IMAP record where it names the file as it is now (no stat() per
    /// message: POP3's time to STAT), from the file otherwise.
    pub fn list_messages(&self, addr: &Address) -> Result<Vec<MessageEntry>, StoreError> {
        let md = self.maildir_path(addr);
        let known = crate::imap::recorded_sizes(&md);
        let mut out = Vec::new();
        for sub in ["new", "cur"] {
            let dir = md.join(sub);
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StoreError::Io { path: dir, source: e }),
            };
            for e in entries {
                let e = e.map_err(io_err(&dir))?;
                let name = e.file_name();
                let Some(name) = name.to_str() else { continue };
                if name.starts_with('.') {
                    continue;
                }
                let uid = name.split(':').next().unwrap_or(name).to_string();
                if let Some(&size) = known.get(&format!("{sub}/{name}")) {
                    out.push(MessageEntry { uid, path: e.path(), size });
                    continue;
                }
                let meta = match e.metadata() {
                    Ok(m) => m,
                    // Deleted by a session on another node between readdir
                    // and stat: not there any more.
                    Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
                    Err(err) => return Err(StoreError::Io { path: e.path(), source: err }),
                };
                if !meta.is_file() {
                    continue;
                }
                // The part before Maildir's ":2,flags" info is the unique
                // name, the same on every node and in every session.
                out.push(MessageEntry { uid, path: e.path(), size: meta.len() });
            }
        }
        out.sort_by(|a, b| sort_key(&a.uid).cmp(&sort_key(&b.uid)));
        out.dedup_by(|a, b| a.uid == b.uid);
        Ok(out)
    }

    /// Removes messages (POP3 UPDATE state) and makes the removal durable.
    /// A message renamed since it was listed (IMAP keeps flags in the file
    /// name) is found by its unique name and removed all the same.
    pub fn delete_messages(&self, paths: &[&Path]) -> Result<(), StoreError> {
        let mut dirs: Vec<PathBuf> = Vec::new();
        for p in paths {
            let mut target = p.to_path_buf();
            match fs::remove_file(p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => match renamed(p) {
                    Some(now) => {
                        match fs::remove_file(&now) {
                            Ok(()) => {}
                            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                            Err(e) => return Err(StoreError::Io { path: now.clone(), source: e }),
                        }
                        target = now;
                    }
                    // Already removed (another session on another node,
                    // before the lock was ours): the wish is fulfilled.
                    None => {}
                },
                Err(e) => return Err(StoreError::Io { path: p.to_path_buf(), source: e }),
            }
            if let Some(d) = target.parent() {
                if !dirs.iter().any(|x| x == d) {
                    dirs.push(d.to_path_buf());
                }
            }
        }
        for d in dirs {
            fsutil::sync_dir(&d).map_err(io_err(&d))?;
        }
        Ok(())
    }

    /// Where a listed message is now: its listed path, or the name it was
    /// renamed to since (a flag change over IMAP moves it to `cur/` with
    /// a new info suffix; its unique name stays). `None` once removed.
    pub fn current_path(&self, m: &MessageEntry) -> Option<PathBuf> {
        if m.path.exists() {
            return Some(m.path.clone());
        }
        renamed(&m.path)
    }
}

/// The name a message file at `old` (`<maildir>/{new,cur}/<base>[:2,...]`)
/// has now, if it is still in that Maildir under the same base name.
fn renamed(old: &Path) -> Option<PathBuf> {
    let name = old.file_name()?.to_str()?;
    let base = name.split(':').next()?;
    let md = old.parent()?.parent()?;
    for sub in ["cur", "new"] {
        let dir = md.join(sub);
        let Ok(rd) = fs::read_dir(&dir) else { continue };
        for e in rd.flatten() {
            let n = e.file_name();
            if n.to_str().and_then(|n| n.split(':').next()) == Some(base) {
                return Some(e.path());
            }
        }
    }
    None
}

pub(crate) fn sort_key(uid: &str) -> (u64, u64, &str) {
    let (secs, rest) = uid.split_once('.').unwrap_or((uid, ""));
    let micros = rest.split('_').next().unwrap_or("");
    (secs.parse().unwrap_or(u64::MAX), micros.parse().unwrap_or(u64::MAX), uid)
}

/// One message in a mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageEntry {
    /// Stable unique id (the Maildir base name).
    pub uid: String,
    pub path: PathBuf,
    /// Exact size in octets, as it is sent to a POP3 client before stuffing.
    pub size: u64,
}

impl Spool {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Makes what was written durable and returns the spool file's path,
    /// for a caller that links it somewhere itself (IMAP APPEND); dropping
    /// the spool afterwards removes only the spool's own name.
    pub fn sync(&mut self) -> io::Result<&Path> {
        let f = self.file.as_mut().ok_or_else(|| io::Error::other("spool already committed"))?;
        f.sync_all()?;
        Ok(&self.path)
    }

    pub fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let f = self.file.as_mut().ok_or_else(|| io::Error::other("spool already committed"))?;
        f.write_all(buf)?;
        self.size += buf.len() as u64;
        Ok(())
    }

    /// Makes the message durable in every recipient's Maildir and, if given,
    /// in the outbound queue. Returns only when all of it is on stable
    /// storage: the point after which a server may say 250.
    pub fn commit(mut self, store: &Store, mailboxes: &[Address], queue: Option<&Envelope>) -> Result<(), StoreError> {
        let file = self.file.take().ok_or_else(|| StoreError::Io { path: self.path.clone(), source: io::Error::other("spool already committed") })?;
        file.sync_all().map_err(io_err(&self.path))?;
        fsutil::crash_point("commit:after-spool-sync");
        let mut dirs = Vec::with_capacity(mailboxes.len() + 1);
        for addr in mailboxes {
            let md = store.ensure_maildir(addr)?;
            let new = md.join("new");
            let target = new.join(&self.name);
            match fs::hard_link(&self.path, &target) {
                Ok(()) => {}
                // The same recipient twice: one copy is enough.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(StoreError::Io { path: target, source: e }),
            }
            dirs.push(new);
        }
        fsutil::crash_point("commit:after-mailbox-links");
        // The queue entry after the mailboxes, its envelope last of all
        // (see enqueue_linked). A crash before the end leaves the spool
        // file (removed by clean_spool at the node's next start), maybe
        // mailbox copies (a message is delivered once its link is in
        // new/; the client, told nothing, sends again: a duplicate, never
        // a loss) and maybe a queue .msg without .env, which is invisible
        // and swept (sweep_crash_leftovers).
        if let Some(env) = queue {
            store.enqueue_linked(&self.path, &self.name, env)?;
        }
        for d in &dirs {
            fsutil::sync_dir(d).map_err(io_err(d))?;
        }
        // On NFS the links are durable only once the server fsyncs the
        // inode (see fsutil::persist_names_nfs).
        fsutil::persist_names_nfs(&file, store.on_nfs()).map_err(io_err(&self.path))?;
        fsutil::crash_point("commit:before-spool-remove");
        drop(file);
        let _ = fs::remove_file(&self.path);
        Ok(())
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        // Not committed: the message was refused or the session failed.
        // The removal is store I/O: never on an async worker thread.
        if let Some(file) = self.file.take() {
            let path = std::mem::take(&mut self.path);
            crate::blocking::off_async(move || {
                // Closing an NFS file flushes it: I/O too.
                drop(file);
                let _ = fs::remove_file(&path);
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliver_two_recipients_one_copy() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::init(&dir.path().join("s"), "example.test", None).unwrap();
        let a = Address::parse("a@example.test").unwrap();
        let b = Address::parse("b@example.test").unwrap();
        let mut sp = s.spool("n1").unwrap();
        sp.write_all(b"Subject: x\r\n\r\nhello\r\n").unwrap();
        let name = sp.name().to_string();
        sp.commit(&s, &[a.clone(), b.clone(), a.clone()], None).unwrap();
        let la = s.list_messages(&a).unwrap();
        let lb = s.list_messages(&b).unwrap();
        assert_eq!(la.len(), 1);
        assert_eq!(lb.len(), 1);
        assert_eq!(la[0].uid, name);
        assert_eq!(la[0].size, 21);
        use std::os::unix::fs::MetadataExt;
        assert_eq!(fs::metadata(&la[0].path).unwrap().ino(), fs::metadata(&lb[0].path).unwrap().ino());
        assert_eq!(fs::read_dir(s.spool_dir("n1")).unwrap().count(), 0);
        s.delete_messages(&[la[0].path.as_path()]).unwrap();
        assert!(s.list_messages(&a).unwrap().is_empty());
        assert_eq!(s.list_messages(&b).unwrap().len(), 1);
    }

    #[test]
    fn dropped_spool_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::init(&dir.path().join("s"), "example.test", None).unwrap();
        let mut sp = s.spool("n1").unwrap();
        sp.write_all(b"partial").unwrap();
        drop(sp);
        assert_eq!(fs::read_dir(s.spool_dir("n1")).unwrap().count(), 0);
    }

    #[test]
    fn order_is_by_time() {
        assert!(sort_key("9.000001_5.n") < sort_key("10.000000_1.n"));
        assert!(sort_key("10.000002_1.n") > sort_key("10.000001_9.n"));
    }
}
