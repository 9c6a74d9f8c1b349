//! Leases shared by all nodes: the POP3 maildrop lock (RFC 1939 8: the
//! server must lock the maildrop while a session is in the TRANSACTION
//! state), queue entry claims, and the DNS announcer's lease; their names
//! are in [`names`].
//!
//! A lease is a file created with O_EXCL under `<store>/cluster/locks/`,
//! naming its node, the node's process instance and a random nonce. Its holder refreshes the
//! mtime; a lock whose mtime is older than the TTL by the store's clock, or
//! whose holder is dead by its heartbeat (`crate::heartbeat`), is broken. Breaking renames the stale
//! file aside first, so two nodes breaking the same lock cannot both win;
//! and the holder checks its nonce before it applies deletions, so a holder
//! whose lock was broken never deletes anything.

use std::fs;
use std::io::{self, Write};
use std::path::PathBuf;
use std::time::Duration;

use crate::address::Address;
use crate::fsutil;
use crate::store::{Store, StoreError};

/// The names of the leases under `<store>/cluster/locks/`, all in one
/// place so that no two kinds can collide.
pub mod names {
    use crate::address::Address;

    /// The DNS failover announcer's lease (one holder in the cluster).
    pub const ANNOUNCER: &str = "announcer";

    /// The claim on an outbound queue entry while it is being delivered.
    pub fn queue_entry(id: &str) -> String {
        format!("queue.{id}")
    }

    /// The POP3 maildrop lock of a mailbox.
    pub fn maildrop(addr: &Address) -> String {
        format!("pop3.{addr}")
    }
}

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

/// How long async code waits for a lease's release
/// ([`Lease::release_async`]): a removal of one small file, so a store that
/// takes longer is in trouble; the lease then goes stale by its TTL.
pub const LEASE_RELEASE_DEADLINE: Duration = Duration::from_secs(5);

/// The prefix of a lease renamed aside by the node breaking it.
pub(crate) const BROKEN_PREFIX: &str = ".broken.";

/// A held lease. Release it with [`Lease::release`] (blocking) or
/// [`Lease::release_async`]; a lease that is only dropped is released too,
/// on the blocking pool when dropped inside a tokio runtime (Drop never
/// does store I/O on an async thread), so a caller that drops it cannot
/// rely on the lease being free at once.
#[derive(Debug)]
pub struct Lease {
    path: PathBuf,
    me: Holder,
    /// Still to be released (false once `release` ran).
    held: bool,
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
    pub fn lock_maildrop(&self, addr: &Address, who: Claimant<'_>, ttl: Duration) -> Result<MaildropLock, LockError> {
        self.take_lease(&names::maildrop(addr), who, ttl)
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

    /// Takes lease `name` (see [`names`]) for `who`. A lease older than
    /// `ttl` by the store's clock is stale; so is one whose holder is dead
    /// by its node's heartbeat, read now (stopped, too old, or another
    /// process instance: [`crate::heartbeat::HeartbeatRecord::holder_dead`]),
    /// or whose holder process on this same node is gone.
    pub fn take_lease(&self, name: &str, who: Claimant<'_>, ttl: Duration) -> Result<Lease, LockError> {
        let node = who.node;
        let dir = self.locks_dir();
        let path = dir.join(name);
        let addr = name;
        let me = Holder { node: node.to_string(), instance: who.instance.to_string(), pid: std::process::id(), nonce: format!("{:016x}", rand::random::<u64>()) };
        // Two rounds: the second after breaking a stale lock.
        for _ in 0..2 {
            match fsutil::create_private_file(&path) {
                Ok(mut f) => {
                    // Not fsynced: a lease only matters while the store is
                    // up; after a crash of the store every holder is gone
                    // too, and an unreadable lease is judged stale.
                    f.write_all(me.encode().as_bytes()).map_err(|e| StoreError::Io { path: path.clone(), source: e })?;
                    return Ok(Lease { path, me, held: true });
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
                    Some(h) => self.holder_dead(node, h) || (h.node == node && !process_alive(h.pid)),
                };
            if !stale {
                let who_holds = holder.map(|h| h.to_string()).unwrap_or_else(|| "another session".into());
                return Err(LockError::InUse { holder: who_holds });
            }
            // Renamed aside, then removed: a crash in between leaves a
            // `.broken.` file that no one takes for a lease, and that
            // sweep_crash_leftovers removes.
            let aside = dir.join(format!("{BROKEN_PREFIX}{addr}.{}", me.nonce));
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

    /// Releases the lease now: removes the lease file if it is still ours.
    /// Blocking store I/O: from async code use [`Lease::release_async`].
    /// `Ok(false)` when the lease had been broken by someone else (their
    /// lease is left alone).
    pub fn release(mut self) -> Result<bool, StoreError> {
        self.held = false;
        release_file(&self.path, &self.me)
    }

    /// [`Lease::release`] for async code: on the blocking pool, waiting at
    /// most `deadline` (see [`LEASE_RELEASE_DEADLINE`]). Past it the
    /// release goes on in the background.
    pub async fn release_async(self, deadline: Duration) -> Result<bool, StoreError> {
        crate::blocking::call(deadline, move || self.release()).await?
    }
}

/// Removes the lease file at `path` if `me` holds it.
fn release_file(path: &std::path::Path, me: &Holder) -> Result<bool, StoreError> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(StoreError::Io { path: path.to_path_buf(), source: e }),
    };
    if Holder::decode(&text).as_ref() != Some(me) {
        return Ok(false);
    }
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(StoreError::Io { path: path.to_path_buf(), source: e }),
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if !self.held {
            return;
        }
        self.held = false;
        let (path, me) = (std::mem::take(&mut self.path), self.me.clone());
        crate::blocking::off_async(move || {
            if let Err(e) = release_file(&path, &me) {
                tracing::warn!(lease = %path.display(), error = %e, "cannot release a lease; it goes stale by its TTL");
            }
        });
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
    use crate::heartbeat::{NodeInfo, STATE_SERVING, STATE_STOPPED};

    fn c(node: &str) -> Claimant<'_> {
        Claimant { node, instance: "i1" }
    }

    /// n1's heartbeat, of the instance that `c` claims for.
    fn n1_heartbeat(state: &str) -> NodeInfo {
        NodeInfo { node: "n1".into(), rank: 1, instance: "i1".into(), pid: std::process::id(), addresses: vec![], services: vec![], state: state.into(), protections: vec![] }
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
        let l = s.lock_maildrop(&a, c("n1"), ttl).unwrap();
        assert!(matches!(s.lock_maildrop(&a, c("n2"), ttl), Err(LockError::InUse { .. })));
        l.refresh().unwrap();
        drop(l);
        s.lock_maildrop(&a, c("n2"), ttl).unwrap();
    }

    #[test]
    fn dead_holder_is_broken_and_notices() {
        let (_d, s) = store();
        let a = Address::parse("a@example.test").unwrap();
        let ttl = Duration::from_secs(60);
        let old = s.lock_maildrop(&a, c("n1"), ttl).unwrap();
        // A live n1 keeps its lock; stopped, it loses it.
        s.write_heartbeat(&n1_heartbeat(STATE_SERVING)).unwrap();
        assert!(matches!(s.lock_maildrop(&a, c("n2"), ttl), Err(LockError::InUse { .. })));
        s.write_heartbeat(&n1_heartbeat(STATE_STOPPED)).unwrap();
        let new = s.lock_maildrop(&a, c("n2"), ttl).unwrap();
        assert!(!old.still_held());
        assert!(old.refresh().is_err());
        drop(old); // must not remove n2's lock
        assert!(new.still_held());
    }

    #[test]
    fn release_is_explicit_and_spares_a_breaker() {
        let (_d, s) = store();
        let a = Address::parse("a@example.test").unwrap();
        let ttl = Duration::from_secs(60);
        let l = s.lock_maildrop(&a, c("n1"), ttl).unwrap();
        assert!(l.release().unwrap(), "ours, released");
        assert!(!s.locks_dir().join(names::maildrop(&a)).exists());
        let old = s.lock_maildrop(&a, c("n1"), ttl).unwrap();
        // A live n1 keeps its lock; stopped, it loses it.
        s.write_heartbeat(&n1_heartbeat(STATE_SERVING)).unwrap();
        assert!(matches!(s.lock_maildrop(&a, c("n2"), ttl), Err(LockError::InUse { .. })));
        s.write_heartbeat(&n1_heartbeat(STATE_STOPPED)).unwrap();
        let new = s.lock_maildrop(&a, c("n2"), ttl).unwrap();
        assert!(!old.release().unwrap(), "broken meanwhile: nothing removed");
        assert!(new.still_held());
    }

    /// Replaces a held lease's file by a FIFO: reading it (what a release
    /// does first) blocks until someone opens the FIFO for writing, as a
    /// read from a hung NFS server would. Returns the writer that ends the
    /// block, writing the lease's own content so that the release goes on.
    fn stall(l: &Lease) -> impl FnOnce() {
        let path = l.path.clone();
        let content = l.me.encode();
        fs::remove_file(&path).unwrap();
        let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: a valid C string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        move || {
            fs::OpenOptions::new().write(true).open(&path).unwrap().write_all(content.as_bytes()).unwrap();
        }
    }

    /// A lease dropped in async code while the store hangs: the drop
    /// returns at once (the release runs on the blocking pool), the
    /// runtime's only thread goes on working, and the release completes
    /// once the store answers. Before, the drop read the lease file on the
    /// async thread and the runtime stood still until the store answered.
    #[test]
    fn drop_in_async_code_does_not_block_the_runtime() {
        let (_d, s) = store();
        let a = Address::parse("a@example.test").unwrap();
        let l = s.lock_maildrop(&a, c("n1"), Duration::from_secs(60)).unwrap();
        let path = l.path.clone();
        let unblock = stall(&l);
        let (tx, rx) = std::sync::mpsc::channel();
        let rt = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                drop(l);
                // The runtime still runs timers and tasks.
                tokio::time::sleep(Duration::from_millis(10)).await;
                let ticked = tokio::spawn(async { 42 }).await.unwrap();
                tx.send(ticked).unwrap();
            });
            // Dropping the runtime waits for the blocking release.
        });
        let got = rx.recv_timeout(Duration::from_secs(30));
        unblock();
        rt.join().unwrap();
        assert_eq!(got, Ok(42), "the runtime stood still while a dropped lease waited for the store");
        assert!(!path.exists(), "the lease was not released once the store answered");
    }

    /// release_async gives up after its deadline while the store hangs; the
    /// runtime meanwhile stays free, and the release still happens.
    #[test]
    fn release_async_has_a_deadline() {
        let (_d, s) = store();
        let l = s.take_lease(names::ANNOUNCER, c("n1"), Duration::from_secs(60)).unwrap();
        let path = l.path.clone();
        let unblock = stall(&l);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let r = rt.block_on(async move {
            let ticker = tokio::spawn(async {
                let mut n = 0u32;
                loop {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    n += 1;
                    if n == 3 {
                        return n;
                    }
                }
            });
            let r = l.release_async(Duration::from_millis(300)).await;
            (r, ticker.await.unwrap())
        });
        assert!(matches!(r.0, Err(StoreError::Unanswered(crate::blocking::Unanswered::Deadline(_)))), "{:?}", r.0);
        assert_eq!(r.1, 3, "other tasks ran while the release waited");
        unblock();
        drop(rt);
        assert!(!path.exists(), "the release went on after the deadline");
    }

    #[test]
    fn expired_lock_is_broken() {
        let (_d, s) = store();
        let a = Address::parse("a@example.test").unwrap();
        let _old = s.lock_maildrop(&a, c("n1"), Duration::from_secs(60)).unwrap();
        std::thread::sleep(Duration::from_millis(30));
        s.lock_maildrop(&a, c("n2"), Duration::from_millis(10)).unwrap();
    }
}
