//! The outbound queue: `<store>/queue/<name>.msg` holds the message (a hard
//! link to the spooled file), `<name>.env` its envelope. The envelope is
//! written last, atomically, so an entry without one is incomplete and is
//! never delivered; removal takes the envelope first. A `.msg` without its
//! `.env` is what a crash leaves, and `Store::sweep_crash_leftovers`
//! removes it.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fsutil;
use crate::store::{io_err, Store, StoreError};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct Envelope {
    /// Envelope sender; empty for the null reverse-path.
    pub from: String,
    /// Recipients not yet delivered.
    pub rcpts: Vec<String>,
    /// Seconds since the epoch when the message was accepted.
    pub created: u64,
    /// The node that accepted it.
    pub node: String,
    pub attempts: u32,
    /// Seconds since the epoch before which no node tries again (0: now).
    pub next_attempt: u64,
    pub last_error: Option<String>,
    /// A "delayed" notification went to the sender already (it is sent
    /// once, RFC 3464 2.3.3).
    pub delay_notified: bool,
}

#[derive(Debug, Clone)]
pub struct QueueEntry {
    pub id: String,
    pub envelope: Envelope,
    pub size: u64,
}

impl Store {
    pub(crate) fn enqueue_linked(&self, spool_path: &Path, name: &str, env: &Envelope) -> Result<(), StoreError> {
        let q = self.queue_dir();
        let msg = q.join(format!("{name}.msg"));
        fs::hard_link(spool_path, &msg).map_err(io_err(&msg))?;
        fsutil::crash_point("enqueue:after-link");
        let bytes = postcard::to_allocvec(env).map_err(|e| StoreError::Io { path: msg.clone(), source: io::Error::other(e) })?;
        // write_atomic fsyncs the queue directory, which also makes the
        // .msg link durable.
        let env_path = q.join(format!("{name}.env"));
        fsutil::write_atomic_at(&env_path, &bytes, "enqueue:before-env-rename").map_err(io_err(&q))?;
        fsutil::crash_point("enqueue:after-env");
        // A node stalled between link and envelope for longer than the
        // sweep's age may have lost its .msg to another node's sweep: then
        // the entry is taken back and the message refused, never
        // acknowledged without its content.
        if !msg.exists() {
            let _ = fs::remove_file(&env_path);
            return Err(StoreError::Io { path: msg, source: io::Error::new(io::ErrorKind::NotFound, "the queued message vanished before its envelope was written") });
        }
        Ok(())
    }

    /// Every complete queue entry, oldest first.
    pub fn queue_list(&self) -> Result<Vec<QueueEntry>, StoreError> {
        let q = self.queue_dir();
        let mut out = Vec::new();
        for e in fs::read_dir(&q).map_err(io_err(&q))? {
            let e = e.map_err(io_err(&q))?;
            let name = e.file_name();
            let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".env")) else { continue };
            if id.starts_with('.') {
                continue;
            }
            match self.queue_get(id) {
                Ok(entry) => out.push(entry),
                Err(StoreError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => continue,
                Err(err) => return Err(err),
            }
        }
        out.sort_by(|a, b| (a.envelope.created, &a.id).cmp(&(b.envelope.created, &b.id)));
        Ok(out)
    }

    /// The message file of a queue entry. The stored message begins with
    /// the trace headers added on receipt (Return-Path among them).
    pub fn queue_message_path(&self, id: &str) -> PathBuf {
        self.queue_dir().join(format!("{id}.msg"))
    }

    /// Replaces an entry's envelope. Returns false (and writes nothing) if
    /// the entry was deleted meanwhile, so a deletion is never undone.
    pub fn queue_update(&self, id: &str, env: &Envelope) -> Result<bool, StoreError> {
        let q = self.queue_dir();
        let path = q.join(format!("{id}.env"));
        if !path.exists() {
            return Ok(false);
        }
        let bytes = postcard::to_allocvec(env).map_err(|e| StoreError::Io { path: path.clone(), source: io::Error::other(e) })?;
        fsutil::write_atomic(&path, &bytes).map_err(io_err(&q))?;
        Ok(true)
    }

    /// Removes an entry: the envelope first (so the entry is gone for every
    /// node at once), then the message.
    pub fn queue_remove(&self, id: &str) -> Result<bool, StoreError> {
        if id.contains('/') || id.starts_with('.') || id.is_empty() {
            return Ok(false);
        }
        let q = self.queue_dir();
        let env = q.join(format!("{id}.env"));
        let existed = match fs::remove_file(&env) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(StoreError::Io { path: env, source: e }),
        };
        let _ = fs::remove_file(q.join(format!("{id}.msg")));
        fsutil::sync_dir(&q).map_err(io_err(&q))?;
        Ok(existed)
    }

    /// Queues a message made here (a delivery status notification, say).
    pub fn enqueue(&self, node: &str, message: &[u8], env: &Envelope) -> Result<String, StoreError> {
        let mut spool = self.spool(node)?;
        let id = spool.name().to_string();
        spool.write_all(message).map_err(io_err(&self.queue_dir()))?;
        spool.commit(self, &[], Some(env))?;
        Ok(id)
    }

    pub fn queue_get(&self, id: &str) -> Result<QueueEntry, StoreError> {
        if id.contains('/') || id.starts_with('.') {
            return Err(StoreError::Io { path: PathBuf::from(id), source: io::Error::new(io::ErrorKind::NotFound, "no such queue entry") });
        }
        let q = self.queue_dir();
        let env_path = q.join(format!("{id}.env"));
        let bytes = fs::read(&env_path).map_err(io_err(&env_path))?;
        let envelope: Envelope = postcard::from_bytes(&bytes).map_err(|e| StoreError::Io { path: env_path.clone(), source: io::Error::new(io::ErrorKind::InvalidData, e) })?;
        let msg = q.join(format!("{id}.msg"));
        let size = fs::metadata(&msg).map_err(io_err(&msg))?.len();
        Ok(QueueEntry { id: id.to_string(), envelope, size })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enqueue_and_list() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::init(&dir.path().join("s"), "example.test", None).unwrap();
        let mut sp = s.spool("n1").unwrap();
        sp.write_all(b"body\r\n").unwrap();
        let id = sp.name().to_string();
        let env = Envelope { from: "a@example.test".into(), rcpts: vec!["x@remote.test".into()], created: 1, node: "n1".into(), ..Default::default() };
        sp.commit(&s, &[], Some(&env)).unwrap();
        let l = s.queue_list().unwrap();
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].id, id);
        assert_eq!(l[0].envelope, env);
        assert_eq!(l[0].size, 6);
        assert!(s.queue_get("../x").is_err());
        let mut env2 = env.clone();
        env2.attempts = 3;
        assert!(s.queue_update(&id, &env2).unwrap());
        assert_eq!(s.queue_get(&id).unwrap().envelope.attempts, 3);
        assert!(s.queue_remove(&id).unwrap());
        assert!(!s.queue_update(&id, &env2).unwrap());
        assert!(s.queue_list().unwrap().is_empty());
        let id2 = s.enqueue("n1", b"dsn\r\n", &env).unwrap();
        assert_eq!(s.queue_get(&id2).unwrap().size, 5);
    }
}
