//! `<store>/accounts`: one account a line, `address:argon2id-PHC-hash`.
//!
//! The file is replaced atomically on every change, so readers on any node
//! see the old or the new table. A node keeps a parsed copy and re-reads it
//! whenever the file's identity (inode, size, mtime) changes, so a user
//! added through one node can log in on every node at once.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::address::{Address, AddressError};
use crate::fsutil;
use crate::password::{self, PasswordError};

pub use crate::password::MAX_PASSWORD;
/// How long a writer waits for another writer's lock on the table.
const WRITE_LOCK_WAIT: Duration = Duration::from_secs(10);
/// A write lock older than this was left by a crashed writer.
const WRITE_LOCK_STALE: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error(transparent)]
    Address(#[from] AddressError),
    #[error("{0} already exists")]
    Exists(Address),
    #[error("{0} does not exist")]
    NoSuchUser(Address),
    #[error("the domain of {0} is not one of this store's domains")]
    ForeignDomain(Address),
    #[error(transparent)]
    Password(#[from] PasswordError),
    #[error("the accounts file is corrupt at line {line}: {reason}")]
    Corrupt { line: usize, reason: String },
    #[error("another change to the accounts is in progress (lock {0} held); try again")]
    Busy(PathBuf),
    #[error("accounts I/O error: {0}")]
    Io(#[from] io::Error),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    ino: u64,
    size: u64,
    mtime_ns: i128,
}

type Table = BTreeMap<Address, String>;

#[derive(Debug)]
pub struct Accounts {
    path: PathBuf,
    cache: RwLock<Option<(Stamp, Arc<Table>)>>,
}

impl Accounts {
    pub fn new(path: PathBuf) -> Accounts {
        Accounts { path, cache: RwLock::new(None) }
    }

    fn stamp(path: &Path) -> io::Result<Stamp> {
        let m = fs::metadata(path)?;
        Ok(Stamp { ino: m.ino(), size: m.size(), mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128 })
    }

    /// The current table, re-read if the file changed.
    fn table(&self) -> Result<Arc<Table>, AccountError> {
        let stamp = Self::stamp(&self.path)?;
        if let Ok(guard) = self.cache.read() {
            if let Some((s, t)) = guard.as_ref() {
                if *s == stamp {
                    return Ok(t.clone());
                }
            }
        }
        let text = fs::read_to_string(&self.path)?;
        let table = Arc::new(parse(&text)?);
        if let Ok(mut guard) = self.cache.write() {
            *guard = Some((stamp, table.clone()));
        }
        Ok(table)
    }

    pub fn exists(&self, addr: &Address) -> Result<bool, AccountError> {
        Ok(self.table()?.contains_key(addr))
    }

    pub fn list(&self) -> Result<Vec<Address>, AccountError> {
        Ok(self.table()?.keys().cloned().collect())
    }

    /// Checks a password with the process's verifier
    /// ([`password::verifier`]). `Ok(false)` for a wrong password and for
    /// an unknown user alike; the caller must not tell them apart to a
    /// client. This costs an argon2 evaluation and may wait for a turn
    /// (`AccountError::Password(PasswordError::Busy)` when too many checks
    /// are under way): call it off the async threads.
    pub fn verify(&self, addr: &Address, password: &str) -> Result<bool, AccountError> {
        let table = self.table()?;
        match table.get(addr) {
            Some(phc) => Ok(password::verify(phc, password)?),
            None => {
                // Spend the same work for an unknown user, so that timing
                // does not reveal which accounts exist.
                password::verifier().verify_nobody(password)?;
                Ok(false)
            }
        }
    }

    /// Adds a user; `domains` are the store's domains.
    pub fn add(&self, addr: &Address, password: &str, domains: &[String]) -> Result<(), AccountError> {
        if !domains.iter().any(|d| crate::address::same_domain(d, addr.domain())) {
            return Err(AccountError::ForeignDomain(addr.clone()));
        }
        let hash = hash_password(password)?;
        self.modify(|t| {
            if t.contains_key(addr) {
                return Err(AccountError::Exists(addr.clone()));
            }
            t.insert(addr.clone(), hash);
            Ok(())
        })
    }

    pub fn set_password(&self, addr: &Address, password: &str) -> Result<(), AccountError> {
        let hash = hash_password(password)?;
        self.modify(|t| match t.get_mut(addr) {
            Some(h) => {
                *h = hash;
                Ok(())
            }
            None => Err(AccountError::NoSuchUser(addr.clone())),
        })
    }

    /// Removes a user from the table. The Maildir is left in place: deleting
    /// an account must never destroy mail by accident.
    pub fn delete(&self, addr: &Address) -> Result<(), AccountError> {
        self.modify(|t| t.remove(addr).map(|_| ()).ok_or_else(|| AccountError::NoSuchUser(addr.clone())))
    }

    /// Read-modify-write under a lock file shared by all nodes (O_EXCL
    /// creation works on NFSv3+ and locally).
    fn modify(&self, f: impl FnOnce(&mut Table) -> Result<(), AccountError>) -> Result<(), AccountError> {
        let lock = self.path.with_extension("lock");
        let start = Instant::now();
        loop {
            match fsutil::create_private_file(&lock) {
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    let meta = fs::metadata(&lock).ok();
                    let stale = meta.as_ref().and_then(|m| m.modified().ok()).and_then(|t| t.elapsed().ok()).map_or(false, |age| age > WRITE_LOCK_STALE);
                    if let (true, Some(m)) = (stale, meta) {
                        break_stale_lock(&lock, m.ino());
                        continue;
                    }
                    if start.elapsed() > WRITE_LOCK_WAIT {
                        return Err(AccountError::Busy(lock));
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(e.into()),
            }
        }
        let result = (|| {
            let text = fs::read_to_string(&self.path)?;
            let mut table = parse(&text)?;
            f(&mut table)?;
            let mut out = String::new();
            for (a, h) in &table {
                out.push_str(&format!("{a}:{h}\n"));
            }
            fsutil::write_atomic(&self.path, out.as_bytes())?;
            Ok(())
        })();
        let _ = fs::remove_file(&lock);
        result
    }
}

/// Breaks the write lock left by a crashed writer: renamed aside (a dot
/// name that the crash sweep removes if we stop here), then removed. Of
/// two writers that both found it stale, the second renames the lock the
/// first has taken since: seen by its inode, it is linked back.
fn break_stale_lock(lock: &Path, stale_ino: u64) {
    let name = lock.file_name().and_then(|n| n.to_str()).unwrap_or("accounts.lock");
    let aside = lock.with_file_name(format!(".{name}{}broken.{:016x}", fsutil::TEMP_MARK, rand::random::<u64>()));
    if fs::rename(lock, &aside).is_err() {
        return; // someone else broke it first
    }
    if fs::metadata(&aside).map_or(false, |m| m.ino() != stale_ino) {
        let _ = fs::hard_link(&aside, lock);
    }
    let _ = fs::remove_file(&aside);
}

fn parse(text: &str) -> Result<Table, AccountError> {
    let mut t = Table::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let (addr, hash) = line.split_once(':').ok_or_else(|| AccountError::Corrupt { line: i + 1, reason: "no ':'".into() })?;
        let addr = Address::parse(addr).map_err(|e| AccountError::Corrupt { line: i + 1, reason: e.to_string() })?;
        if !hash.starts_with("$argon2") {
            return Err(AccountError::Corrupt { line: i + 1, reason: "not an argon2 hash".into() });
        }
        t.insert(addr, hash.to_string());
    }
    Ok(t)
}

/// Hashes a password with argon2id and a random salt (PHC string format),
/// with the process's verifier ([`password::hash`]).
pub fn hash_password(password: &str) -> Result<String, AccountError> {
    Ok(password::hash(password)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_verify_passwd_delete() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("accounts");
        fs::write(&path, "").unwrap();
        let a = Accounts::new(path.clone());
        let other = Accounts::new(path.clone());
        let alice = Address::parse("alice@example.test").unwrap();
        let domains = vec!["example.test".to_string()];
        a.add(&alice, "secret", &domains).unwrap();
        assert!(matches!(a.add(&alice, "x", &domains), Err(AccountError::Exists(_))));
        // A second reader (another node) sees it at once.
        assert!(other.verify(&alice, "secret").unwrap());
        assert!(!other.verify(&alice, "wrong").unwrap());
        a.set_password(&alice, "new").unwrap();
        assert!(other.verify(&alice, "new").unwrap());
        assert!(!other.verify(&alice, "secret").unwrap());
        assert!(matches!(a.add(&Address::parse("bob@other.test").unwrap(), "x", &domains), Err(AccountError::ForeignDomain(_))));
        assert!(matches!(a.add(&Address::parse("bob@example.test").unwrap(), "", &domains), Err(AccountError::Password(PasswordError::Empty))));
        a.delete(&alice).unwrap();
        assert!(!other.exists(&alice).unwrap());
        assert!(matches!(a.delete(&alice), Err(AccountError::NoSuchUser(_))));
    }

    #[test]
    fn corrupt_file_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("accounts");
        fs::write(&path, "garbage line\n").unwrap();
        let a = Accounts::new(path);
        assert!(matches!(a.list(), Err(AccountError::Corrupt { line: 1, .. })));
    }
}
