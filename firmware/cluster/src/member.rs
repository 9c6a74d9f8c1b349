//! A serving node's membership of the cluster, and the loops that keep it:
//! the heartbeat with the store probe (the monitor), the live set it
//! re-reads, and the DNS failover announcer.
//!
//! [`Member::join`] publishes the node's first heartbeat and reads the
//! live set before anything is served, so that leases are judged against
//! a real live set from the first session on. [`Member::start`] spawns
//! the loops; the node then asks the [`Member`] whether the store answers
//! ([`Member::store_healthy`], false means: accept no mail) and what the
//! live set is. At shutdown [`ClusterTasks::drain`] takes the node out of
//! DNS at once (draining: its leases still stand), and
//! [`ClusterTasks::stop`], called last, ends the heartbeat and marks the
//! node stopped: a node finishing its sessions must never look dead, or
//! its leases would be taken.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use store::Store;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::announcer::Announcer;
use crate::live::{read_live_set, Heartbeat, LiveError, LiveSet, NodeInfo, HEARTBEAT_INTERVAL, STATE_DRAINING};

/// How often the announcer looks at the live set (and at once on every
/// change of it).
pub const ANNOUNCE_TICK: Duration = Duration::from_millis(500);
/// How long a shutdown waits for each change of the node's published state
/// (draining, stopped); past it the heartbeat ages out instead.
pub const STATE_PUBLISH_DEADLINE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum MemberError {
    #[error(transparent)]
    Live(#[from] LiveError),
    #[error(transparent)]
    Unanswered(#[from] store::blocking::Unanswered),
}

struct Inner {
    store: Arc<Store>,
    node: String,
    instance: String,
    heartbeat: Mutex<Heartbeat>,
    /// False while the store does not answer within the probe deadline:
    /// the node then accepts no mail and does not heartbeat.
    healthy: AtomicBool,
    /// The live set as last read; the announcer wakes on every change.
    live: watch::Sender<Arc<LiveSet>>,
}

/// A node in the cluster: cheap to clone, shared by its sessions.
#[derive(Clone)]
pub struct Member {
    inner: Arc<Inner>,
}

impl Member {
    /// Publishes the node's first heartbeat and reads the live set, each
    /// store step within `deadline`.
    pub async fn join(store: Arc<Store>, info: NodeInfo, deadline: Duration) -> Result<Member, MemberError> {
        Ok(store::blocking::call(deadline, move || Member::join_blocking(store, info)).await??)
    }

    /// [`Member::join`] on the calling thread, without a deadline: for
    /// callers that are not async (tests, tools).
    pub fn join_blocking(store: Arc<Store>, info: NodeInfo) -> Result<Member, LiveError> {
        let (node, instance) = (info.node.clone(), info.instance.clone());
        let heartbeat = Heartbeat::new(store.clone(), info);
        heartbeat.publish()?;
        let live = read_live_set(&store, &node)?;
        let inner = Inner { store, node, instance, heartbeat: Mutex::new(heartbeat), healthy: AtomicBool::new(true), live: watch::Sender::new(Arc::new(live)) };
        Ok(Member { inner: Arc::new(inner) })
    }

    pub fn node(&self) -> &str {
        &self.inner.node
    }

    /// This process's instance id, in its heartbeat and its leases.
    pub fn instance(&self) -> &str {
        &self.inner.instance
    }

    /// Whether the store answered the last probe within its deadline.
    pub fn store_healthy(&self) -> bool {
        self.inner.healthy.load(Ordering::Relaxed)
    }

    /// The live set as last read from the heartbeats.
    pub fn live_set(&self) -> Arc<LiveSet> {
        self.inner.live.borrow().clone()
    }

    /// Wakes on every change of the live set's members.
    pub fn watch_live_set(&self) -> watch::Receiver<Arc<LiveSet>> {
        self.inner.live.subscribe()
    }

    fn set_healthy(&self, ok: bool, why: &str) {
        let was = self.inner.healthy.swap(ok, Ordering::Relaxed);
        if was && !ok {
            tracing::error!(reason = why, "the store does not answer: refusing mail (421) and not heartbeating until it does");
        } else if !was && ok {
            tracing::info!("the store answers again: accepting mail");
        }
    }

    /// Spawns the monitor (a store probe that answers within
    /// `probe_deadline`, the heartbeat, the live set, every
    /// [`HEARTBEAT_INTERVAL`]) and the announcer.
    pub fn start(&self, probe_deadline: Duration) -> ClusterTasks {
        let (monitor_stop, monitor_rx) = watch::channel(false);
        let (announcer_stop, announcer_rx) = watch::channel(false);
        let monitor = tokio::spawn(monitor(self.clone(), probe_deadline, monitor_rx));
        let announcer = tokio::spawn(announce(self.clone(), announcer_rx));
        ClusterTasks { member: self.clone(), monitor_stop, monitor, announcer_stop, announcer }
    }

    /// Publishes a new state of the node (blocking store I/O, on the
    /// blocking pool), waiting at most [`STATE_PUBLISH_DEADLINE`].
    async fn publish_state(&self, change: fn(&mut Heartbeat) -> Result<(), LiveError>) {
        let inner = self.inner.clone();
        let r = store::blocking::call(STATE_PUBLISH_DEADLINE, move || match inner.heartbeat.lock() {
            Ok(mut h) => change(&mut h),
            Err(_) => Ok(()),
        })
        .await;
        let error = match r {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        tracing::warn!(node = %self.inner.node, %error, "cannot publish the node's state; its heartbeat ages out instead");
    }
}

/// The running loops of a [`Member`].
pub struct ClusterTasks {
    member: Member,
    monitor_stop: watch::Sender<bool>,
    monitor: JoinHandle<()>,
    announcer_stop: watch::Sender<bool>,
    announcer: JoinHandle<()>,
}

impl ClusterTasks {
    /// The start of a shutdown: the node publishes that it is draining
    /// (out of the live set and DNS at once, its leases still held), and
    /// the announcer hands its lease over. The heartbeat goes on.
    pub async fn drain(&self) {
        self.member.publish_state(|h| h.set_state(STATE_DRAINING)).await;
        let _ = self.announcer_stop.send(true);
    }

    /// The end of a shutdown, once every session is done: waits for the
    /// announcer, ends the heartbeat and marks the node stopped, so that
    /// the others need not wait for its heartbeat to age.
    pub async fn stop(self) {
        let _ = self.announcer_stop.send(true);
        let _ = self.announcer.await;
        let _ = self.monitor_stop.send(true);
        let _ = self.monitor.await;
        self.member.publish_state(Heartbeat::stop).await;
    }
}

/// Every [`HEARTBEAT_INTERVAL`]: probe the store (with a deadline),
/// heartbeat, and re-read the live set. A probe that hangs (a hard NFS
/// mount whose server is gone) is not repeated until it returns; the node
/// stays unhealthy meanwhile.
async fn monitor(member: Member, deadline: Duration, mut stop: watch::Receiver<bool>) {
    let in_flight = Arc::new(AtomicBool::new(false));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(HEARTBEAT_INTERVAL) => {}
            _ = stop.changed() => return,
        }
        if in_flight.load(Ordering::Acquire) {
            member.set_healthy(false, "the previous store probe has not returned");
            continue;
        }
        in_flight.store(true, Ordering::Release);
        let (inner, flag) = (member.inner.clone(), in_flight.clone());
        let probe = tokio::task::spawn_blocking(move || {
            let r = (|| -> Result<LiveSet, String> {
                inner.store.probe().map_err(|e| e.to_string())?;
                inner.heartbeat.lock().map_err(|_| "heartbeat poisoned".to_string())?.beat().map_err(|e| e.to_string())?;
                read_live_set(&inner.store, &inner.node).map_err(|e| e.to_string())
            })();
            flag.store(false, Ordering::Release);
            r
        });
        match tokio::time::timeout(deadline, probe).await {
            Ok(Ok(Ok(live))) => {
                member.set_healthy(true, "");
                let before = member.inner.live.borrow().live_names();
                let after = live.live_names();
                if before != after {
                    tracing::info!(live = ?after, "live set changed");
                    member.inner.live.send_replace(Arc::new(live));
                } else {
                    // Same members: refresh quietly (ages, instances).
                    member.inner.live.send_if_modified(|l| {
                        *l = Arc::new(live);
                        false
                    });
                }
            }
            Ok(Ok(Err(e))) => member.set_healthy(false, &e),
            Ok(Err(e)) => member.set_healthy(false, &e.to_string()),
            Err(_) => member.set_healthy(false, "no answer within the deadline"),
        }
    }
}

/// Runs the DNS failover announcer while the store answers; gives the
/// lease up while it does not, and at once when stopped.
async fn announce(member: Member, mut stop: watch::Receiver<bool>) {
    let inner = &member.inner;
    let mut a = Announcer::new(inner.store.clone(), inner.node.clone(), inner.instance.clone());
    let mut live_rx = member.watch_live_set();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(ANNOUNCE_TICK) => {}
            // A change of the live set is announced at once.
            _ = live_rx.changed() => {}
            _ = stop.changed() => break,
        }
        if member.store_healthy() {
            a.tick(&member.live_set()).await;
        } else {
            a.release_async().await;
        }
    }
    // Hand the lease over at once.
    a.release_async().await;
}
