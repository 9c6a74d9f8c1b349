//! The outbound queue: `<store>/queue/<name>.msg` holds the message (a hard
//! link to the spooled file), `<name>.env` its envelope. The envelope is
//! written last, atomically, so an entry without one is incomplete and is
//! never delivered.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fsutil;
use crate::store::{io_err, Store, StoreError};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
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
    pub last_error: Option<String>,
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
        let bytes = postcard::to_allocvec(env).map_err(|e| StoreError::Io { path: msg.clone(), source: io::Error::other(e) })?;
        // write_atomic fsyncs the queue directory, which also makes the
        // .msg link durable.
        fsutil::write_atomic(&q.join(format!("{name}.env")), &bytes).map_err(io_err(&q))
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
        let env = Envelope { from: "a@example.test".into(), rcpts: vec!["x@remote.test".into()], created: 1, node: "n1".into(), attempts: 0, last_error: None };
        sp.commit(&s, &[], Some(&env)).unwrap();
        let l = s.queue_list().unwrap();
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].id, id);
        assert_eq!(l[0].envelope, env);
        assert_eq!(l[0].size, 6);
        assert!(s.queue_get("../x").is_err());
    }
}
