//! Leases shared by all nodes: the POP3 maildrop lock (RFC 1939 8: the
//! server must lock the maildrop while a session is in the TRANSACTION
//! state), queue entry claims, and the DNS announcer's lease.
//!
//! A lease is a file created with O_EXCL under `<store>/cluster/locks/`,
//! naming its node, the node's process instance and a random nonce. Its holder refreshes the
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
    /// The serving process's instance id (published in its heartbeat), so
    /// that a lease of a node that restarted is known to be stale.
    pub instance: String,
    pub pid: u32,
    pub nonce: String,
}

impl Holder {
    fn encode(&self) -> String {
        format!("node={} instance={} pid={} nonce={}\n", self.node, self.instance, self.pid, self.nonce)
    }

    fn decode(s: &str) -> Option<Holder> {
        let mut node = None;
        let mut instance = String::new();
        let mut pid = None;
        let mut nonce = None;
        for kv in s.split_whitespace() {
            match kv.split_once('=') {
                Some(("node", v)) => node = Some(v.to_string()),
                Some(("instance", v)) => instance = v.to_string(),
                Some(("pid", v)) => pid = v.parse().ok(),
                Some(("nonce", v)) => nonce = Some(v.to_string()),
                _ => {}
            }
        }
        Some(Holder { node: node?, instance, pid: pid?, nonce: nonce? })
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "node {} (pid {})", self.node, self.pid)
    }
}

/// A held lease; dropping it releases it.
#[derive(Debug)]
pub struct Lease {
    path: PathBuf,
    me: Holder,
}

/// The POP3 maildrop lock is a lease named after the mailbox.
pub type MaildropLock = Lease;

/// Who asks for a lease: the node and its process instance.
#[derive(Debug, Clone, Copy)]
pub struct Claimant<'a> {
    pub node: &'a str,
    pub instance: &'a str,
}

impl Store {
    /// Takes the maildrop lock of `addr`.
    pub fn lock_maildrop(&self, addr: &Address, who: Claimant<'_>, ttl: Duration, holder_dead: &dyn Fn(&Holder) -> bool) -> Result<MaildropLock, LockError> {
        self.take_lease(&format!("pop3.{addr}"), who, ttl, holder_dead)
    }

    /// Who holds lease `name` now, if anyone, with the lease's age by the
    /// store's clock.
    pub fn lease_holder(&self, name: &str, node: &str) -> Result<Option<(Holder, Duration)>, StoreError> {
        let path = self.locks_dir().join(name);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::Io { path, source: e }),
        };
        let mtime = match fs::metadata(&path).and_then(|m| m.modified()) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::Io { path, source: e }),
        };
        let now = self.now(node)?;
        Ok(Holder::decode(&text).map(|h| (h, now.duration_since(mtime).unwrap_or_default())))
    }

    /// Takes lease `name` for `who`. A lease older than `ttl` by the
    /// store's clock is stale; so is one whose holder `holder_dead` says is
    /// dead (from the cluster's live set), or whose holder process on this
    /// same node is gone.
    pub fn take_lease(&self, name: &str, who: Claimant<'_>, ttl: Duration, holder_dead: &dyn Fn(&Holder) -> bool) -> Result<Lease, LockError> {
        let node = who.node;
        let dir = self.locks_dir();
        let path = dir.join(name);
        let addr = name;
        let me = Holder { node: node.to_string(), instance: who.instance.to_string(), pid: std::process::id(), nonce: format!("{:016x}", rand::random::<u64>()) };
        // Two rounds: the second after breaking a stale lock.
        for _ in 0..2 {
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut f) => {
                    // Not fsynced: a lease only matters while the store is
                    // up; after a crash of the store every holder is gone
                    // too, and an unreadable lease is judged stale.
                    f.write_all(me.encode().as_bytes()).map_err(|e| StoreError::Io { path: path.clone(), source: e })?;
                    return Ok(Lease { path, me });
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
                let who_holds = holder.map(|h| h.to_string()).unwrap_or_else(|| "another session".into());
                return Err(LockError::InUse { holder: who_holds });
            }
            let aside = dir.join(format!(".broken.{addr}.{}", me.nonce));
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
            tracing::info!(lease = %path.display(), holder = %text.trim(), "broke a stale lease");
        }
        Err(LockError::InUse { holder: "another session".into() })
    }
}

impl Lease {
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

impl Drop for Lease {
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

    fn c(node: &str) -> Claimant<'_> {
        Claimant { node, instance: "i1" }
    }

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
        let l = s.lock_maildrop(&a, c("n1"), ttl, &|_| false).unwrap();
        assert!(matches!(s.lock_maildrop(&a, c("n2"), ttl, &|_| false), Err(LockError::InUse { .. })));
        l.refresh().unwrap();
        drop(l);
        s.lock_maildrop(&a, c("n2"), ttl, &|_| false).unwrap();
    }

    #[test]
    fn dead_holder_is_broken_and_notices() {
        let (_d, s) = store();
        let a = Address::parse("a@example.test").unwrap();
        let ttl = Duration::from_secs(60);
        let old = s.lock_maildrop(&a, c("n1"), ttl, &|_| false).unwrap();
        let new = s.lock_maildrop(&a, c("n2"), ttl, &|h| h.node == "n1").unwrap();
        assert!(!old.still_held());
        assert!(old.refresh().is_err());
        drop(old); // must not remove n2's lock
        assert!(new.still_held());
    }

    #[test]
    fn expired_lock_is_broken() {
        let (_d, s) = store();
        let a = Address::parse("a@example.test").unwrap();
        let _old = s.lock_maildrop(&a, c("n1"), Duration::from_secs(60), &|_| false).unwrap();
        std::thread::sleep(Duration::from_millis(30));
        s.lock_maildrop(&a, c("n2"), Duration::from_millis(10), &|_| false).unwrap();
    }
}
