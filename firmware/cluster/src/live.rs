//! Heartbeats and the live set.
//!
//! Every serving node keeps a file `<store>/cluster/nodes/<node>` that
//! describes it (rank, addresses, process instance) and touches it every
//! [`HEARTBEAT_INTERVAL`]. The touch sets the file's mtime to the *store's*
//! clock (the storage host's, over NFS), and every node judges ages against
//! that same clock, read back from a file of its own; so nodes whose clocks
//! disagree still agree on who is alive.

use std::fs;
use std::io;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use store::{Holder, Store, StoreError};

/// How often a node touches its heartbeat.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// A node whose heartbeat is older than this is dead: one missed beat and
/// a margin for a slow store. Lower means faster failover and more risk of
/// declaring a merely slow node dead; a node wrongly declared dead only
/// loses its MX record and leases until its next beat, never mail.
pub const DEAD_AFTER: Duration = Duration::from_millis(2500);

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
    /// "serving", or "stopped" after a clean shutdown.
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

pub const STATE_SERVING: &str = "serving";
/// Shutting down: finishing transactions, still holding its leases; no
/// longer in DNS.
pub const STATE_DRAINING: &str = "draining";
pub const STATE_STOPPED: &str = "stopped";

#[derive(Debug, Clone)]
pub struct NodeStatus {
    pub info: NodeInfo,
    /// Age of the last heartbeat by the store's clock.
    pub age: Duration,
    pub live: bool,
}

/// Every node the store knows, with who is alive, ordered by rank.
#[derive(Debug, Clone, Default)]
pub struct LiveSet {
    pub nodes: Vec<NodeStatus>,
}

impl LiveSet {
    pub fn live(&self) -> impl Iterator<Item = &NodeStatus> {
        self.nodes.iter().filter(|n| n.live)
    }

    pub fn live_names(&self) -> Vec<String> {
        self.live().map(|n| n.info.node.clone()).collect()
    }

    /// Whether a lease holder is alive: its node is live and still the same
    /// process instance that took the lease.
    pub fn holder_alive(&self, h: &Holder) -> bool {
        self.live().any(|n| n.info.node == h.node && (h.instance.is_empty() || n.info.instance == h.instance))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("heartbeat file {path}: {reason}")]
    Bad { path: PathBuf, reason: String },
}

fn nodes_dir(store: &Store) -> PathBuf {
    store.root().join("cluster").join("nodes")
}

/// A node's own heartbeat.
pub struct Heartbeat {
    path: PathBuf,
    info: NodeInfo,
}

impl Heartbeat {
    pub fn new(store: &Store, info: NodeInfo) -> Heartbeat {
        Heartbeat { path: nodes_dir(store).join(&info.node), info }
    }

    pub fn info(&self) -> &NodeInfo {
        &self.info
    }

    /// Writes the node's description (atomically) and so beats once.
    pub fn publish(&self) -> Result<(), LiveError> {
        let text = toml::to_string(&self.info).map_err(|e| LiveError::Bad { path: self.path.clone(), reason: e.to_string() })?;
        store::fsutil::write_atomic(&self.path, text.as_bytes()).map_err(|e| StoreError::Io { path: self.path.clone(), source: e })?;
        Ok(())
    }

    /// One beat: the store's clock goes into the file's mtime. If the file
    /// was removed (or belongs to another instance), it is written again.
    pub fn beat(&self) -> Result<(), LiveError> {
        let current = fs::read_to_string(&self.path).ok().and_then(|t| toml::from_str::<NodeInfo>(&t).ok());
        if current.as_ref() != Some(&self.info) {
            return self.publish();
        }
        store::fsutil::touch_server_time(&self.path).map_err(|e| StoreError::Io { path: self.path.clone(), source: e })?;
        Ok(())
    }

    /// Marks the node stopped (a clean shutdown), so that others need not
    /// wait for the heartbeat to age.
    pub fn stop(&mut self) -> Result<(), LiveError> {
        self.set_state(STATE_STOPPED)
    }

    /// Publishes a new state (serving, draining, stopped).
    pub fn set_state(&mut self, state: &str) -> Result<(), LiveError> {
        self.info.state = state.to_string();
        self.publish()
    }
}

/// Reads every node's heartbeat and judges it by the store's clock.
pub fn read_live_set(store: &Store, me: &str) -> Result<LiveSet, LiveError> {
    let dir = nodes_dir(store);
    let now = store.now(me)?;
    let mut nodes = Vec::new();
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(LiveSet::default()),
        Err(e) => return Err(StoreError::Io { path: dir, source: e }.into()),
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with('.') {
            continue;
        }
        let path = e.path();
        let (text, mtime) = match (fs::read_to_string(&path), fs::metadata(&path).and_then(|m| m.modified())) {
            (Ok(t), Ok(m)) => (t, m),
            // Replaced or removed while we looked: skip this round.
            _ => continue,
        };
        let Ok(info) = toml::from_str::<NodeInfo>(&text) else {
            tracing::warn!(path = %path.display(), "unreadable heartbeat file");
            continue;
        };
        let age = now.duration_since(mtime).unwrap_or_default();
        let live = info.state == STATE_SERVING && age <= DEAD_AFTER;
        nodes.push(NodeStatus { info, age, live });
    }
    nodes.sort_by(|a, b| (a.info.rank, &a.info.node).cmp(&(b.info.rank, &b.info.node)));
    Ok(LiveSet { nodes })
}

/// Whether the holder of a lease is dead, judged from its node's heartbeat
/// read *now* (not from a cached live set, which may predate a node that
/// just started or restarted): dead when the heartbeat says stopped (not
/// when it says draining), is
/// older than [`DEAD_AFTER`], or belongs to another process instance (the
/// node restarted since it took the lease). A node with no heartbeat at
/// all is not judged here; the lease's own TTL covers it.
pub fn holder_dead(store: &Store, me: &str, h: &Holder) -> bool {
    let path = nodes_dir(store).join(&h.node);
    let (Ok(text), Ok(mtime)) = (fs::read_to_string(&path), fs::metadata(&path).and_then(|m| m.modified())) else {
        return false;
    };
    let Ok(info) = toml::from_str::<NodeInfo>(&text) else {
        return false;
    };
    let Ok(now) = store.now(me) else {
        return false;
    };
    let age = now.duration_since(mtime).unwrap_or_default();
    // A draining node still finishes its sessions: its leases stand.
    info.state == STATE_STOPPED || age > DEAD_AFTER || (!h.instance.is_empty() && info.instance != h.instance)
}

/// A fresh random instance id.
pub fn new_instance() -> String {
    format!("{:016x}", rand::random::<u64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(node: &str, rank: u32) -> NodeInfo {
        NodeInfo { node: node.into(), rank, instance: new_instance(), pid: 1, addresses: vec!["127.0.0.1".parse().unwrap()], services: vec![], state: STATE_SERVING.into(), protections: vec![] }
    }

    #[test]
    fn live_set_follows_heartbeats() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::init(&dir.path().join("s"), "example.test", None).unwrap();
        let h1 = Heartbeat::new(&s, info("n1", 1));
        let mut h2 = Heartbeat::new(&s, info("n2", 2));
        h1.publish().unwrap();
        h2.publish().unwrap();
        let ls = read_live_set(&s, "n1").unwrap();
        assert_eq!(ls.live_names(), vec!["n1", "n2"]);
        let holder = Holder { node: "n2".into(), instance: h2.info().instance.clone(), pid: 1, nonce: "x".into() };
        assert!(ls.holder_alive(&holder));
        assert!(!ls.holder_alive(&Holder { instance: "other".into(), ..holder.clone() }));
        // Draining: out of the live set (and DNS), but its leases stand.
        h2.set_state(STATE_DRAINING).unwrap();
        assert_eq!(read_live_set(&s, "n1").unwrap().live_names(), vec!["n1"]);
        assert!(!holder_dead(&s, "n1", &holder));
        assert!(holder_dead(&s, "n1", &Holder { instance: "other".into(), ..holder.clone() }));
        h2.stop().unwrap();
        assert!(holder_dead(&s, "n1", &holder));
        let ls = read_live_set(&s, "n1").unwrap();
        assert_eq!(ls.live_names(), vec!["n1"]);
        assert!(!ls.holder_alive(&holder));
        // An old heartbeat is dead: set its mtime into the past.
        let p = dir.path().join("s/cluster/nodes/n1");
        let old = std::time::SystemTime::now() - Duration::from_secs(10);
        fs::File::options().write(true).open(&p).unwrap().set_modified(old).unwrap();
        assert!(read_live_set(&s, "n2").unwrap().live_names().is_empty());
        h1.beat().unwrap();
        assert_eq!(read_live_set(&s, "n2").unwrap().live_names(), vec!["n1"]);
    }
}
