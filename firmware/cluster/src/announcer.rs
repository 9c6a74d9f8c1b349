//! The failover announcer: the node that holds the announcer lease keeps
//! DNS equal to the live set.
//!
//! Every node runs [`Announcer::tick`] about twice a second. The lease (a
//! file in the store, see `store::lock`) makes exactly one live node the
//! announcer; when it dies, its heartbeat and its lease go stale together
//! and another node takes over. The holder sends an UPDATE whenever the
//! records it wants change, and re-checks the server every
//! `recheck_secs` (cluster.toml), so that a DNS server restarted with old data is
//! corrected. A refused update is logged with the server's reason and
//! retried with back-off.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use store::{Claimant, ClusterSettings, DnsSettings, Lease, Store};

use crate::dns::{reconcile, DesiredRecords, DnsTarget, TsigKey};
use crate::live::{LiveSet, DEAD_AFTER};

/// The lease's name under `<store>/cluster/locks/`.
pub const ANNOUNCER_LEASE: &str = "announcer";
/// A lease not refreshed for this long (by the store's clock) is stale.
pub const LEASE_TTL: Duration = DEAD_AFTER;
/// Back-off after a failed update: first wait, doubling up to the maximum.
pub const BACKOFF_START: Duration = Duration::from_secs(1);
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// MX preference = rank x this (RFC 5321 5.1: lower is preferred).
pub const MX_PREFERENCE_STEP: u16 = 10;

/// The DNS name of a node: `<node>.<zone>`.
pub fn node_fqdn(node: &str, zone: &str) -> String {
    format!("{node}.{}", zone.trim_end_matches('.'))
}

/// The records DNS should hold for this live set: an MX per live node with
/// preference by rank, the client host name's A/AAAA = the live nodes'
/// addresses, and every known node's own name record.
pub fn desired_records(settings: &ClusterSettings, dns: &DnsSettings, live: &LiveSet) -> DesiredRecords {
    let zone = dns.zone.trim_end_matches('.');
    let client = dns.client_host.clone().unwrap_or_else(|| settings.hostname.clone());
    let mut hosts: BTreeMap<String, Vec<std::net::IpAddr>> = BTreeMap::new();
    let mut mx = Vec::new();
    let mut client_addrs = Vec::new();
    for n in &live.nodes {
        let name = node_fqdn(&n.info.node, zone);
        hosts.insert(name.clone(), n.info.addresses.clone());
        if n.live {
            let pref = u16::try_from(n.info.rank).unwrap_or(u16::MAX / MX_PREFERENCE_STEP).saturating_mul(MX_PREFERENCE_STEP);
            mx.push((pref, name));
            for a in &n.info.addresses {
                if !client_addrs.contains(a) {
                    client_addrs.push(*a);
                }
            }
        }
    }
    client_addrs.sort();
    mx.sort();
    hosts.insert(client.trim_end_matches('.').to_string(), client_addrs);
    DesiredRecords { ttl: dns.ttl, mx, hosts }
}

/// The UPDATE target from the settings.
pub fn target(dns: &DnsSettings) -> Result<DnsTarget, String> {
    let server: SocketAddr = dns.server.parse().map_err(|_| format!("dns.server '{}' is not IP:PORT", dns.server))?;
    let key = TsigKey::from_base64(&dns.tsig.name, &dns.tsig.algorithm, &dns.tsig.secret).map_err(|e| e.to_string())?;
    Ok(DnsTarget::new(server, dns.zone.clone(), key))
}

/// What the announcer did last, for status displays.
#[derive(Debug, Clone, Default)]
pub struct AnnouncerState {
    pub holder: bool,
    pub last_applied: Option<DesiredRecords>,
    pub last_error: Option<String>,
}

pub struct Announcer {
    store: Arc<Store>,
    node: String,
    instance: String,
    lease: Option<Lease>,
    applied: Option<DesiredRecords>,
    last_check: Option<Instant>,
    backoff: Duration,
    not_before: Option<Instant>,
    pub state: AnnouncerState,
}

impl Announcer {
    pub fn new(store: Arc<Store>, node: String, instance: String) -> Announcer {
        Announcer { store, node, instance, lease: None, applied: None, last_check: None, backoff: BACKOFF_START, not_before: None, state: AnnouncerState::default() }
    }

    /// Gives the lease up (a clean shutdown), so another node takes over at
    /// once rather than after the TTL.
    pub fn release(&mut self) {
        self.lease = None;
        self.state.holder = false;
    }

    /// One round: keep or take the lease, and if held, bring DNS in step.
    pub async fn tick(&mut self, live: &LiveSet) {
        let settings = {
            let s = self.store.clone();
            match tokio::task::spawn_blocking(move || s.reload_settings()).await {
                Ok(Ok(s)) => s,
                _ => return,
            }
        };
        let Some(dns) = settings.dns.clone() else {
            self.release();
            return;
        };
        self.hold_lease().await;
        self.state.holder = self.lease.is_some();
        if self.lease.is_none() {
            // Another node announces; forget what we applied, so that a
            // takeover later starts from the server's real state.
            self.applied = None;
            self.last_check = None;
            return;
        }
        let desired = desired_records(&settings, &dns, live);
        let due = self.applied.as_ref() != Some(&desired) || self.last_check.map_or(true, |t| t.elapsed() >= Duration::from_secs(dns.recheck_secs));
        if !due || self.not_before.is_some_and(|t| Instant::now() < t) {
            return;
        }
        let target = match target(&dns) {
            Ok(t) => t,
            Err(e) => {
                self.fail(format!("bad DNS settings in cluster.toml: {e}"));
                return;
            }
        };
        match reconcile(&target, &desired).await {
            Ok(outcome) => {
                if outcome.changed {
                    tracing::info!(node = %self.node, "DNS updated: {outcome}");
                }
                self.applied = Some(desired.clone());
                self.state.last_applied = Some(desired);
                self.state.last_error = None;
                self.last_check = Some(Instant::now());
                self.backoff = BACKOFF_START;
                self.not_before = None;
            }
            Err(e) => self.fail(e.to_string()),
        }
    }

    fn fail(&mut self, reason: String) {
        tracing::warn!(node = %self.node, retry_in_s = self.backoff.as_secs(), "DNS update failed: {reason}");
        self.state.last_error = Some(reason);
        self.applied = None;
        self.not_before = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }

    async fn hold_lease(&mut self) {
        let store = self.store.clone();
        let node = self.node.clone();
        let instance = self.instance.clone();
        let lease = self.lease.take();
        let r = tokio::task::spawn_blocking(move || match lease {
            Some(l) => match l.refresh() {
                Ok(()) => Some(l),
                Err(_) => None,
            },
            None => store.take_lease(ANNOUNCER_LEASE, Claimant { node: &node, instance: &instance }, LEASE_TTL, &|h| crate::live::holder_dead(&store, &node, h)).ok(),
        })
        .await;
        let had = self.state.holder;
        self.lease = r.unwrap_or(None);
        if self.lease.is_some() && !had {
            tracing::info!(node = %self.node, "took the announcer lease");
        }
    }
}
