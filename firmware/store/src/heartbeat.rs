//! Heartbeat records: what each serving node publishes about itself in
//! `<store>/cluster/nodes/<node>`, and how old it is.
//!
//! A node rewrites its record when it changes (start, draining, stopped)
//! and otherwise touches it every [`HEARTBEAT_INTERVAL`]. The touch sets
//! the file's mtime to the *store's* clock (the storage host's, over NFS),
//! and every reader judges ages against that same clock
//! ([`Store::now`]); so nodes whose clocks disagree still agree on who is
//! alive. The record is read here, next to the leases that are judged by
//! it ([`Store::take_lease`] breaks a lease whose holder is dead by its
//! heartbeat); `cluster::live` keeps a node's own heartbeat going.

use std::fs;
use std::io;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::fsutil;
use crate::lock::Holder;
use crate::store::{Store, StoreError};

/// How often a node touches its heartbeat.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// A node whose heartbeat is older than this is dead: one missed beat and
/// a margin for a slow store. Lower means faster failover and more risk of
/// declaring a merely slow node dead; a node wrongly declared dead only
/// loses its MX record and leases until its next beat, never mail.
pub const DEAD_AFTER: Duration = Duration::from_millis(2500);

/// Serving: in the live set and in DNS.
pub const STATE_SERVING: &str = "serving";
/// Shutting down: finishing transactions, still holding its leases; no
/// longer in DNS.
pub const STATE_DRAINING: &str = "draining";
/// After a clean shutdown: its leases may be taken at once.
pub const STATE_STOPPED: &str = "stopped";

/// What a node publishes about itself.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeInfo {
    pub node: String,
    /// 1 = preferred.
    pub rank: u32,
    /// Random per process start: a lease taken by an earlier run of the
    /// same node is recognisably stale.
    pub instance: String,
    pub pid: u32,
    /// The addresses DNS should give for this node.
    pub addresses: Vec<IpAddr>,
    /// `service=ip:port` for people and scripts.
    pub services: Vec<String>,
    /// [`STATE_SERVING`], [`STATE_DRAINING`] or [`STATE_STOPPED`].
    pub state: String,
    /// The node's protections of inbound mail, on or off and why, so that
    /// one that cannot run is never off silently.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub protections: Vec<Protection>,
}

/// One protection a node runs, or cannot run (e.g. the SPF/DKIM/DMARC
/// checks without a resolver).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Protection {
    pub name: String,
    pub on: bool,
    /// Why it is off, or how it runs.
    pub detail: String,
}

/// A heartbeat record as read, with its age by the store's clock.
#[derive(Debug, Clone)]
pub struct HeartbeatRecord {
    pub info: NodeInfo,
    /// Age of the last beat by the store's clock.
    pub age: Duration,
}

impl HeartbeatRecord {
    /// Live: serving, and beat within [`DEAD_AFTER`].
    pub fn live(&self) -> bool {
        self.info.state == STATE_SERVING && self.age <= DEAD_AFTER
    }

    /// Whether the holder of a lease is dead by this record (the holder's
    /// node's): it says stopped (not draining: a draining node still
    /// finishes its sessions, and its leases stand), is older than
    /// [`DEAD_AFTER`], or belongs to another process instance (the node
    /// restarted since it took the lease).
    pub fn holder_dead(&self, h: &Holder) -> bool {
        self.info.state == STATE_STOPPED || self.age > DEAD_AFTER || (!h.instance.is_empty() && self.info.instance != h.instance)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HeartbeatError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("heartbeat file {path}: {reason}")]
    Encode { path: PathBuf, reason: String },
}

impl Store {
    /// Where heartbeats are: `<store>/cluster/nodes/`.
    pub fn nodes_dir(&self) -> PathBuf {
        self.layout().nodes_dir()
    }

    fn heartbeat_path(&self, node: &str) -> PathBuf {
        self.nodes_dir().join(node)
    }

    /// Writes `info` as its node's heartbeat record (atomically), and so
    /// beats once.
    pub fn write_heartbeat(&self, info: &NodeInfo) -> Result<(), HeartbeatError> {
        let path = self.heartbeat_path(&info.node);
        let text = toml::to_string(info).map_err(|e| HeartbeatError::Encode { path: path.clone(), reason: e.to_string() })?;
        fsutil::write_atomic(&path, text.as_bytes()).map_err(|e| StoreError::Io { path, source: e })?;
        Ok(())
    }

    /// One beat of `info`'s node: the store's clock goes into the record's
    /// mtime. A record that was removed or differs (another instance wrote
    /// it) is written again.
    pub fn beat(&self, info: &NodeInfo) -> Result<(), HeartbeatError> {
        let path = self.heartbeat_path(&info.node);
        let current = fs::read_to_string(&path).ok().and_then(|t| toml::from_str::<NodeInfo>(&t).ok());
        if current.as_ref() != Some(info) {
            return self.write_heartbeat(info);
        }
        fsutil::touch_server_time(&path).map_err(|e| StoreError::Io { path, source: e })?;
        Ok(())
    }

    /// Every node's heartbeat record, aged by the store's clock (read as
    /// `me`), in no particular order. Records replaced or removed while
    /// being read are left out of this round; unreadable ones are logged
    /// and left out.
    pub fn read_heartbeats(&self, me: &str) -> Result<Vec<HeartbeatRecord>, StoreError> {
        let dir = self.nodes_dir();
        let now = self.now(me)?;
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(StoreError::Io { path: dir, source: e }),
        };
        let mut records = Vec::new();
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            // Clock files and temporaries.
            if name.starts_with('.') {
                continue;
            }
            let path = e.path();
            let (text, mtime) = match (fs::read_to_string(&path), fs::metadata(&path).and_then(|m| m.modified())) {
                (Ok(t), Ok(m)) => (t, m),
                _ => continue,
            };
            let Ok(info) = toml::from_str::<NodeInfo>(&text) else {
                tracing::warn!(path = %path.display(), "unreadable heartbeat file");
                continue;
            };
            records.push(HeartbeatRecord { info, age: now.duration_since(mtime).unwrap_or_default() });
        }
        Ok(records)
    }

    /// `node`'s heartbeat record read now, aged by the store's clock (read
    /// as `me`); None when it has none or it cannot be read.
    pub fn read_heartbeat(&self, me: &str, node: &str) -> Option<HeartbeatRecord> {
        let path = self.heartbeat_path(node);
        let (Ok(text), Ok(mtime)) = (fs::read_to_string(&path), fs::metadata(&path).and_then(|m| m.modified())) else {
            return None;
        };
        let info = toml::from_str::<NodeInfo>(&text).ok()?;
        let now = self.now(me).ok()?;
        Some(HeartbeatRecord { info, age: now.duration_since(mtime).unwrap_or_default() })
    }

    /// Whether the holder of a lease is dead, judged from its node's
    /// heartbeat read *now* (not from a cached live set, which may predate
    /// a node that just started or restarted); see
    /// [`HeartbeatRecord::holder_dead`]. A node with no heartbeat at all is
    /// not judged here; the lease's own TTL covers it.
    pub(crate) fn holder_dead(&self, me: &str, h: &Holder) -> bool {
        self.read_heartbeat(me, &h.node).is_some_and(|r| r.holder_dead(h))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(node: &str, instance: &str) -> NodeInfo {
        NodeInfo { node: node.into(), rank: 1, instance: instance.into(), pid: 1, addresses: vec![], services: vec![], state: STATE_SERVING.into(), protections: vec![] }
    }

    #[test]
    fn a_holder_is_dead_by_its_heartbeat() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::init(&dir.path().join("s"), "example.test", None).unwrap();
        let holder = Holder { node: "n2".into(), instance: "i2".into(), pid: 1, nonce: "x".into() };
        // No heartbeat at all: left to the lease's TTL.
        assert!(!s.holder_dead("n1", &holder));
        let mut n2 = info("n2", "i2");
        s.write_heartbeat(&n2).unwrap();
        assert!(!s.holder_dead("n1", &holder));
        assert!(s.holder_dead("n1", &Holder { instance: "restarted".into(), ..holder.clone() }));
        // An empty instance (an old lease format) is judged by state and age only.
        assert!(!s.holder_dead("n1", &Holder { instance: String::new(), ..holder.clone() }));
        n2.state = STATE_DRAINING.into();
        s.write_heartbeat(&n2).unwrap();
        assert!(!s.holder_dead("n1", &holder), "a draining node keeps its leases");
        assert!(!s.read_heartbeat("n1", "n2").unwrap().live(), "but is not live");
        n2.state = STATE_STOPPED.into();
        s.write_heartbeat(&n2).unwrap();
        assert!(s.holder_dead("n1", &holder));
        // Serving again, then aged past DEAD_AFTER.
        n2.state = STATE_SERVING.into();
        s.beat(&n2).unwrap();
        assert!(s.read_heartbeat("n1", "n2").unwrap().live());
        let old = std::time::SystemTime::now() - Duration::from_secs(10);
        fs::File::options().write(true).open(s.nodes_dir().join("n2")).unwrap().set_modified(old).unwrap();
        assert!(s.holder_dead("n1", &holder));
        assert_eq!(s.read_heartbeats("n1").unwrap().len(), 1, "clock files are not heartbeats");
        s.beat(&n2).unwrap();
        assert!(!s.holder_dead("n1", &holder));
    }
}
