//! The failover announcer: the node that holds the announcer lease keeps
//! DNS equal to the live set.
//!
//! Every node runs [`Announcer::tick`] about twice a second (the loop is
//! `crate::member`'s). The lease (a file in the store, see `store::lock`) makes exactly one live node the
//! announcer; when it dies, its heartbeat and its lease go stale together
//! and another node takes over. The holder sends an UPDATE whenever the
//! records it wants change, and re-checks the server every
//! `recheck_secs` (cluster.toml), so that a DNS server restarted with old data is
//! corrected. A refused update is logged with the server's reason and
//! retried with back-off.
//!
//! After each attempt the holder records what it saw in
//! `<store>/cluster/dns-state.toml` ([`DnsState`], read with
//! [`read_dns_state`]) for status pages: when that changed, and otherwise
//! once per `recheck_secs`.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use store::{Claimant, ClusterSettings, DnsSettings, Lease, Store};

use dns::{reconcile, DesiredRecords, DnsError, DnsTarget, TsigKey};
use crate::live::{LiveSet, DEAD_AFTER};

/// A lease not refreshed for this long (by the store's clock) is stale.
pub const LEASE_TTL: Duration = DEAD_AFTER;
/// How long the announcer waits for one store call (a lease refresh, a
/// report): a lease not refreshed within its TTL is stale anyway, and a
/// store that stops answering then costs the lease, never the announcer
/// (nor the node's shutdown, which waits for the announcer).
pub const STORE_CALL_DEADLINE: Duration = LEASE_TTL;
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

/// Why the DNS settings give no UPDATE target.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("dns.server '{0}' is not IP:PORT")]
    Server(String),
    #[error("dns.tsig: {0}")]
    Key(String),
}

/// The UPDATE target from the settings.
pub fn target(dns: &DnsSettings) -> Result<DnsTarget, TargetError> {
    let server: SocketAddr = dns.server.parse().map_err(|_| TargetError::Server(dns.server.clone()))?;
    let key = TsigKey::from_base64(&dns.tsig.name, &dns.tsig.algorithm, &dns.tsig.secret).map_err(|e| match e {
        // The reason alone: "invalid DNS settings" is what this error says already.
        DnsError::Config(reason) => TargetError::Key(reason),
        other => TargetError::Key(other.to_string()),
    })?;
    Ok(DnsTarget::new(server, dns.zone.clone(), key))
}

/// The announcer's report under the store's root.
pub const DNS_STATE_FILE: &str = store::layout::DNS_STATE;
/// A periodic re-check comes a little less than `recheck_secs` after the
/// previous report was written (the write follows its check); this much
/// earlier still counts as due, so the report is renewed at every re-check.
const DNS_STATE_SLACK: Duration = Duration::from_secs(1);

/// The DNS state as the announcer last saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsState {
    /// The node that holds the announcer lease and wrote this.
    pub node: String,
    /// When, seconds since the epoch by the store's clock.
    pub at_unix: u64,
    pub zone: String,
    pub server: String,
    /// The records the announcer keeps, as they are in DNS, one a line in
    /// zone-file form ("mail.example.test. 30 IN A 127.0.0.1"): after a
    /// successful check or update, exactly what the server holds for the
    /// names the announcer manages; after a failure, what was there at the
    /// last success.
    pub records: Vec<String>,
    /// DNS matched the live set at this check.
    pub in_step: bool,
    /// Why the last attempt failed, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl DnsState {
    /// Equal but for the time of the report.
    fn same_as(&self, other: &DnsState) -> bool {
        DnsState { at_unix: 0, ..self.clone() } == DnsState { at_unix: 0, ..other.clone() }
    }
}

pub fn dns_state_path(store: &Store) -> PathBuf {
    store.layout().dns_state()
}

/// Why the announcer's report cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum DnsStateError {
    #[error("{}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{}: {reason}", path.display())]
    Parse { path: PathBuf, reason: String },
}

/// The announcer's last report; None before any announcer has written one.
pub fn read_dns_state(store: &Store) -> Result<Option<DnsState>, DnsStateError> {
    let path = dns_state_path(store);
    match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text).map(Some).map_err(|e| DnsStateError::Parse { path, reason: e.to_string() }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(DnsStateError::Read { path, source }),
    }
}

/// Zone-file lines of the records `desired` puts in DNS: the MX RRset at
/// the zone apex, then each host's A and AAAA records (RFC 1035 5.1
/// presentation form, absolute names).
pub fn record_lines(zone: &str, desired: &DesiredRecords) -> Vec<String> {
    let abs = |n: &str| format!("{}.", n.trim_end_matches('.').to_ascii_lowercase());
    let ttl = desired.ttl;
    let mut lines = Vec::new();
    let mut mx = desired.mx.clone();
    mx.sort();
    mx.dedup();
    for (pref, exchange) in &mx {
        lines.push(format!("{} {ttl} IN MX {pref} {}", abs(zone), abs(exchange)));
    }
    for (name, addrs) in &desired.hosts {
        let mut addrs = addrs.clone();
        addrs.sort();
        addrs.dedup();
        // A records before AAAA (IPv4 sorts first).
        for a in addrs {
            let rtype = if a.is_ipv4() { "A" } else { "AAAA" };
            lines.push(format!("{} {ttl} IN {rtype} {a}", abs(name)));
        }
    }
    lines
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
    /// The report last written, and when.
    report: Option<(DnsState, Instant)>,
    pub state: AnnouncerState,
}

impl Announcer {
    pub fn new(store: Arc<Store>, node: String, instance: String) -> Announcer {
        Announcer { store, node, instance, lease: None, applied: None, last_check: None, backoff: BACKOFF_START, not_before: None, report: None, state: AnnouncerState::default() }
    }

    /// Gives the lease up (a clean shutdown), so another node takes over at
    /// once rather than after the TTL. Blocking store I/O: async code calls
    /// [`Announcer::release_async`].
    pub fn release(&mut self) {
        if let Some(l) = self.lease.take() {
            if let Err(e) = l.release() {
                tracing::warn!(node = %self.node, error = %e, "cannot release the announcer lease; it goes stale by its TTL");
            }
        }
        self.state.holder = false;
    }

    /// [`Announcer::release`] on the blocking pool, waiting at most
    /// [`store::lock::LEASE_RELEASE_DEADLINE`].
    pub async fn release_async(&mut self) {
        if let Some(l) = self.lease.take() {
            if let Err(e) = l.release_async(store::lock::LEASE_RELEASE_DEADLINE).await {
                tracing::warn!(node = %self.node, error = %e, "cannot release the announcer lease; it goes stale by its TTL");
            }
        }
        self.state.holder = false;
    }

    /// One round: keep or take the lease, and if held, bring DNS in step.
    pub async fn tick(&mut self, live: &LiveSet) {
        // Follow cluster.toml; a bad file leaves the settings as they were
        // (the node's monitor reports it).
        let s = self.store.clone();
        let _ = store::blocking::call(STORE_CALL_DEADLINE, move || s.refresh_settings()).await;
        let settings = self.store.settings();
        let Some(dns) = settings.dns.clone() else {
            self.release_async().await;
            return;
        };
        self.hold_lease().await;
        self.state.holder = self.lease.is_some();
        if self.lease.is_none() {
            // Another node announces; forget what we applied, so that a
            // takeover later starts from the server's real state.
            self.applied = None;
            self.last_check = None;
            self.report = None;
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
                self.report(&dns, None).await;
                return;
            }
        };
        match reconcile(&target, &desired).await {
            Ok(outcome) => {
                if outcome.changed {
                    tracing::info!(node = %self.node, "DNS updated: {outcome}");
                }
                self.applied = Some(desired.clone());
                self.state.last_applied = Some(desired.clone());
                self.state.last_error = None;
                self.last_check = Some(Instant::now());
                self.backoff = BACKOFF_START;
                self.not_before = None;
                self.report(&dns, Some(&desired)).await;
            }
            Err(e) => {
                self.fail(e.to_string());
                self.report(&dns, None).await;
            }
        }
    }

    /// Records the outcome of an attempt in [`DNS_STATE_FILE`]: `now_in_dns`
    /// after a success, None after a failure. Written when the report
    /// changed, or when the last one is a re-check period old.
    async fn report(&mut self, dns: &DnsSettings, now_in_dns: Option<&DesiredRecords>) {
        let records = match now_in_dns {
            Some(d) => record_lines(&dns.zone, d),
            None => match &self.report {
                Some((r, _)) => r.records.clone(),
                // Taken over after a failure: what the previous holder saw.
                None => {
                    let s = self.store.clone();
                    store::blocking::call(STORE_CALL_DEADLINE, move || read_dns_state(&s)).await.ok().and_then(|r| r.ok()).flatten().filter(|r| r.zone == dns.zone).map(|r| r.records).unwrap_or_default()
                }
            },
        };
        let mut state = DnsState { node: self.node.clone(), at_unix: 0, zone: dns.zone.clone(), server: dns.server.clone(), records, in_step: now_in_dns.is_some(), last_error: self.state.last_error.clone() };
        let recheck = Duration::from_secs(dns.recheck_secs);
        let due = match &self.report {
            Some((last, at)) => !last.same_as(&state) || at.elapsed() + DNS_STATE_SLACK >= recheck,
            None => true,
        };
        if !due {
            return;
        }
        let (s, node, st) = (self.store.clone(), self.node.clone(), state.clone());
        let written = store::blocking::call(STORE_CALL_DEADLINE, move || -> Result<u64, String> {
            let now = s.now(&node).map_err(|e| e.to_string())?;
            let at_unix = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
            let text = toml::to_string(&DnsState { at_unix, ..st }).map_err(|e| e.to_string())?;
            // A status report: losing the latest one in a crash costs
            // nothing, so no fsync.
            store::fsutil::write_atomic_nosync(&dns_state_path(&s), text.as_bytes()).map_err(|e| e.to_string())?;
            Ok(at_unix)
        })
        .await;
        match written {
            Ok(Ok(at_unix)) => {
                state.at_unix = at_unix;
                self.report = Some((state, Instant::now()));
            }
            Ok(Err(e)) => tracing::warn!(node = %self.node, error = %e, "cannot write the DNS state report"),
            Err(_) => {}
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
        // Past the deadline the lease is taken for lost: the blocking call
        // still owns it and releases it (Drop) when the store answers.
        let r = store::blocking::call(STORE_CALL_DEADLINE, move || match lease {
            Some(l) => match l.refresh() {
                Ok(()) => Some(l),
                Err(_) => None,
            },
            None => store.take_lease(store::lock::names::ANNOUNCER, Claimant { node: &node, instance: &instance }, LEASE_TTL).ok(),
        })
        .await;
        let had = self.state.holder;
        self.lease = r.unwrap_or(None);
        if self.lease.is_some() && !had {
            tracing::info!(node = %self.node, "took the announcer lease");
        }
    }
}
