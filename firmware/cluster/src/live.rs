//! Heartbeats and the live set.
//!
//! Every serving node keeps a record `<store>/cluster/nodes/<node>` that
//! describes it (rank, addresses, process instance) and touches it every
//! [`HEARTBEAT_INTERVAL`]. The record's format and how its age is judged
//! (by the store's clock, so that nodes whose clocks disagree still agree
//! on who is alive) are the store's (`store::heartbeat`), next to the
//! leases judged by it; here are a node's own [`Heartbeat`] and the
//! [`LiveSet`] read from every record.

use std::time::Duration;

use store::{Holder, Store, StoreError};

pub use store::heartbeat::{HeartbeatError, NodeInfo, Protection, DEAD_AFTER, HEARTBEAT_INTERVAL, STATE_DRAINING, STATE_SERVING, STATE_STOPPED};

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
    #[error(transparent)]
    Heartbeat(#[from] HeartbeatError),
}

/// A node's own heartbeat.
pub struct Heartbeat {
    store: std::sync::Arc<Store>,
    info: NodeInfo,
}

impl Heartbeat {
    pub fn new(store: std::sync::Arc<Store>, info: NodeInfo) -> Heartbeat {
        Heartbeat { store, info }
    }

    pub fn info(&self) -> &NodeInfo {
        &self.info
    }

    /// Writes the node's description (atomically) and so beats once.
    pub fn publish(&self) -> Result<(), LiveError> {
        Ok(self.store.write_heartbeat(&self.info)?)
    }

    /// One beat: the store's clock goes into the record's mtime. If the
    /// record was removed (or belongs to another instance), it is written
    /// again.
    pub fn beat(&self) -> Result<(), LiveError> {
        Ok(self.store.beat(&self.info)?)
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
    let mut nodes: Vec<NodeStatus> = store.read_heartbeats(me)?.into_iter().map(|r| NodeStatus { live: r.live(), info: r.info, age: r.age }).collect();
    nodes.sort_by(|a, b| (a.info.rank, &a.info.node).cmp(&(b.info.rank, &b.info.node)));
    Ok(LiveSet { nodes })
}

/// A fresh random instance id.
pub fn new_instance() -> String {
    format!("{:016x}", rand::random::<u64>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn info(node: &str, rank: u32) -> NodeInfo {
        NodeInfo { node: node.into(), rank, instance: new_instance(), pid: 1, addresses: vec!["127.0.0.1".parse().unwrap()], services: vec![], state: STATE_SERVING.into(), protections: vec![] }
    }

    #[test]
    fn live_set_follows_heartbeats() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::init(&dir.path().join("s"), "example.test", None).unwrap();
        let s = std::sync::Arc::new(s);
        let h1 = Heartbeat::new(s.clone(), info("n1", 1));
        let mut h2 = Heartbeat::new(s.clone(), info("n2", 2));
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
        assert!(!s.read_heartbeat("n1", "n2").unwrap().holder_dead(&holder));
        h2.stop().unwrap();
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
