//! The POP3 maildrop lock (RFC 1939 8: the server must lock the maildrop
//! while a session is in the TRANSACTION state), shared by all nodes.
//!
//! A lock is a file created with O_EXCL under `<store>/cluster/locks/`,
//! naming its node, process and a random nonce. Its holder refreshes the
//! mtime; a lock whose mtime is older than the TTL by the store's clock, or
//! whose holder is known to be dead, is broken. Breaking renames the stale
//! file aside first, so two nodes breaking the same lock cannot both win;
//! and the holder checks its nonce before it applies deletions, so a holder
//! whose lock was broken never deletes anything.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::time::Duration;

use crate::address::Address;
use crate::fsutil;
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("the maildrop is in use by {holder}")]
    InUse { holder: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Who holds a lock, as written in the lock file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub node: String,
    pub pid: u32,
    pub nonce: String,
}

impl Holder {
    fn encode(&self) -> String {
        format!("node={} pid={} nonce={}\n", self.node, self.pid, self.nonce)
    }

    fn decode(s: &str) -> Option<Holder> {
        let mut node = None;
        let mut pid = None;
        let mut nonce = None;
        for kv in s.split_whitespace() {
            match kv.split_once('=') {
                Some(("node", v)) => node = Some(v.to_string()),
                Some(("pid", v)) => pid = v.parse().ok(),
                Some(("nonce", v)) => nonce = Some(v.to_string()),
                _ => {}
            }
        }
        Some(Holder { node: node?, pid: pid?, nonce: nonce? })
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "node {} (pid {})", self.node, self.pid)
    }
}

#[derive(Debug)]
pub struct MaildropLock {
    path: PathBuf,
    me: Holder,
}

impl Store {
    /// Takes the maildrop lock of `addr` for `node`. `holder_dead` tells
    /// whether a holder node is known to be dead (from the cluster's live
    /// set); a holder on this same node whose process is gone is dead too.
    pub fn lock_maildrop(&self, addr: &Address, node: &str, ttl: Duration, holder_dead: &dyn Fn(&Holder) -> bool) -> Result<MaildropLock, LockError> {
        let dir = self.locks_dir();
        let path = dir.join(format!("pop3.{addr}"));
        let me = Holder { node: node.to_string(), pid: std::process::id(), nonce: format!("{:016x}", rand::random::<u64>()) };
        // Two rounds: the second after breaking a stale lock.
        for _ in 0..2 {
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut f) => {
                    f.write_all(me.encode().as_bytes()).and_then(|_| f.sync_all()).map_err(|e| StoreError::Io { path: path.clone(), source: e })?;
                    return Ok(MaildropLock { path, me });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(StoreError::Io { path, source: e }.into()),
            }
            let text = fs::read_to_string(&path).unwrap_or_default();
            let holder = Holder::decode(&text);
            let age = match (fs::metadata(&path).and_then(|m| m.modified()), self.now(node)) {
                (Ok(mtime), Ok(now)) => now.duration_since(mtime).unwrap_or_default(),
                (Err(e), _) if e.kind() == io::ErrorKind::NotFound => continue,
                (_, Err(e)) => return Err(e.into()),
                (Err(e), _) => return Err(StoreError::Io { path, source: e }.into()),
            };
            let stale = age > ttl
                || match &holder {
                    // A file we cannot read is stale once it is older than
                    // a moment (a writer between create and write).
                    None => age > Duration::from_secs(5),
                    Some(h) => holder_dead(h) || (h.node == node && !process_alive(h.pid)),
                };
            if !stale {
                let who = holder.map(|h| h.to_string()).unwrap_or_else(|| "another session".into());
                return Err(LockError::InUse { holder: who });
            }
            let aside = dir.join(format!(".broken.pop3.{addr}.{}", me.nonce));
            if fs::rename(&path, &aside).is_err() {
                continue; // someone else broke it first; try to take it
            }
            let moved = fs::read_to_string(&aside).unwrap_or_default();
            let _ = fs::remove_file(&aside);
            if moved != text {
                // We moved a lock that someone took after our check. Its
                // holder will see its nonce gone and stop; say in use.
                return Err(LockError::InUse { holder: "another session".into() });
            }
            tracing::info!(lock = %path.display(), holder = %text.trim(), "broke a stale maildrop lock");
        }
        Err(LockError::InUse { holder: "another session".into() })
    }
}

impl MaildropLock {
    /// Whether the lock file is still ours.
    pub fn still_held(&self) -> bool {
        fs::read_to_string(&self.path).ok().and_then(|t| Holder::decode(&t)).map_or(false, |h| h == self.me)
    }

    /// Keeps the lock fresh; fails if it was broken.
    pub fn refresh(&self) -> Result<(), LockError> {
        if !self.still_held() {
            return Err(LockError::InUse { holder: "a session that broke our lock".into() });
        }
        fsutil::touch_server_time(&self.path).map_err(|e| StoreError::Io { path: self.path.clone(), source: e })?;
        Ok(())
    }

    pub fn release(self) {
        // Drop does it.
    }
}

impl Drop for MaildropLock {
    fn drop(&mut self) {
        if self.still_held() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

fn process_alive(pid: u32) -> bool {
    // SAFETY: kill with signal 0 only checks for existence.
    let rc = unsafe { libc::kill(pid as libc::pid_t, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::init(&dir.path().join("s"), "example.test", None).unwrap();
        (dir, s)
    }

    #[test]
    fn exclusive_and_released() {
        let (_d, s) = store();
        let a = Address::parse("a@example.test").unwrap();
        let ttl = Duration::from_secs(60);
        let l = s.lock_maildrop(&a, "n1", ttl, &|_| false).unwrap();
        assert!(matches!(s.lock_maildrop(&a, "n2", ttl, &|_| false), Err(LockError::InUse { .. })));
        l.refresh().unwrap();
        drop(l);
        s.lock_maildrop(&a, "n2", ttl, &|_| false).unwrap();
    }

    #[test]
    fn dead_holder_is_broken_and_notices() {
        let (_d, s) = store();
        let a = Address::parse("a@example.test").unwrap();
        let ttl = Duration::from_secs(60);
        let old = s.lock_maildrop(&a, "n1", ttl, &|_| false).unwrap();
        let new = s.lock_maildrop(&a, "n2", ttl, &|h| h.node == "n1").unwrap();
        assert!(!old.still_held());
        assert!(old.refresh().is_err());
        drop(old); // must not remove n2's lock
        assert!(new.still_held());
    }

    #[test]
    fn expired_lock_is_broken() {
        let (_d, s) = store();
        let a = Address::parse("a@example.test").unwrap();
        let _old = s.lock_maildrop(&a, "n1", Duration::from_secs(60), &|_| false).unwrap();
        std::thread::sleep(Duration::from_millis(30));
        s.lock_maildrop(&a, "n2", Duration::from_millis(10), &|_| false).unwrap();
    }
}
