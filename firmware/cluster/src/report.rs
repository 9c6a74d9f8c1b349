//! The cluster's state as every status display shows it (`mailfort
//! cluster status`, the console's and the admin page's `status`): the
//! nodes and how each is, who holds the announcer lease, and DNS as the
//! announcer last saw it, with its last error. One reading, one set of
//! words, so that the displays never disagree.

use std::time::{Duration, UNIX_EPOCH};

use store::heartbeat::{NodeInfo, DEAD_AFTER, STATE_DRAINING, STATE_STOPPED};
use store::{Store, StoreError};

use crate::announcer::{read_dns_state, DnsState, LEASE_TTL};
use crate::live::{read_live_set, LiveError, NodeStatus};

/// How a node is, in one word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    /// Serving and beating: in the live set and DNS.
    Live,
    /// Shutting down: out of DNS, finishing its sessions, its leases stand.
    Draining,
    /// Shut down cleanly.
    Stopped,
    /// Its heartbeat aged out: killed, or its store does not answer.
    Dead,
}

impl NodeState {
    fn of(n: &NodeStatus) -> NodeState {
        if n.live {
            NodeState::Live
        } else if n.info.state == STATE_STOPPED {
            NodeState::Stopped
        } else if n.info.state == STATE_DRAINING && n.age <= DEAD_AFTER {
            NodeState::Draining
        } else {
            NodeState::Dead
        }
    }

    /// The word the displays show: at most five letters, for columns.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Live => "live",
            NodeState::Draining => "drain",
            NodeState::Stopped => "stop",
            NodeState::Dead => "dead",
        }
    }
}

impl std::fmt::Display for NodeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One node as the report shows it.
#[derive(Debug, Clone)]
pub struct NodeReport {
    pub info: NodeInfo,
    /// Age of its heartbeat by the store's clock.
    pub age: Duration,
    pub state: NodeState,
}

impl NodeReport {
    /// `1.5s`.
    pub fn age_text(&self) -> String {
        seconds(self.age)
    }

    /// The node's addresses, comma-separated.
    pub fn addresses_text(&self) -> String {
        self.info.addresses.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(",")
    }

    /// The node's protections that are off, `name off: why`.
    pub fn protections_off(&self) -> Vec<String> {
        self.info.protections.iter().filter(|p| !p.on).map(|p| format!("{} off: {}", p.name, p.detail)).collect()
    }
}

/// Who holds the announcer lease.
#[derive(Debug, Clone)]
pub struct LeaseReport {
    pub node: String,
    /// Since its last refresh, by the store's clock.
    pub age: Duration,
    /// Its holder is live (the same process instance) and refreshed it
    /// within the lease's TTL.
    pub valid: bool,
}

/// The DNS announcer's settings and its last report.
#[derive(Debug, Clone)]
pub enum DnsReport {
    /// No `dns` in cluster.toml: DNS is left alone.
    Off,
    On {
        zone: String,
        server: String,
        client_host: String,
        ttl: u32,
        /// The announcer's last report, and its age by the store's clock;
        /// None before any announcer wrote one.
        last: Result<Option<(DnsState, Duration)>, String>,
    },
}

/// The cluster's state, read at one moment.
#[derive(Debug, Clone)]
pub struct ClusterReport {
    /// Every node the store knows, ordered by rank.
    pub nodes: Vec<NodeReport>,
    pub announcer: Option<LeaseReport>,
    pub dns: DnsReport,
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot read the heartbeats: {0}")]
    Live(#[from] LiveError),
    #[error("cannot read the announcer lease: {0}")]
    Lease(#[source] StoreError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Reads the cluster's state; ages are by the store's clock, read as
/// `clock` (a clock-file name: a node's, or the admin tools').
pub fn read(store: &Store, clock: &str) -> Result<ClusterReport, ReportError> {
    let live = read_live_set(store, clock)?;
    let announcer = store.lease_holder(store::lock::names::ANNOUNCER, clock).map_err(ReportError::Lease)?.map(|(h, age)| LeaseReport { valid: live.holder_alive(&h) && age <= LEASE_TTL, node: h.node, age });
    let settings = store.settings();
    let dns = match &settings.dns {
        None => DnsReport::Off,
        Some(d) => {
            let last = match read_dns_state(store) {
                Ok(Some(st)) => {
                    let now = store.now(clock)?.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
                    let age = Duration::from_secs(now.saturating_sub(st.at_unix));
                    Ok(Some((st, age)))
                }
                Ok(None) => Ok(None),
                Err(e) => Err(e.to_string()),
            };
            DnsReport::On { zone: d.zone.clone(), server: d.server.clone(), client_host: d.client_host.clone().unwrap_or_else(|| settings.hostname.clone()), ttl: d.ttl, last }
        }
    };
    let nodes = live.nodes.iter().map(|n| NodeReport { state: NodeState::of(n), info: n.info.clone(), age: n.age }).collect();
    Ok(ClusterReport { nodes, announcer, dns })
}

fn seconds(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

impl ClusterReport {
    /// The node whose announcer lease is valid, if any.
    pub fn announcer_node(&self) -> Option<&str> {
        self.announcer.as_ref().filter(|l| l.valid).map(|l| l.node.as_str())
    }

    /// `node2 (refreshed 0.4s ago)`, `..., stale)`, or `nobody`.
    pub fn announcer_text(&self) -> String {
        match &self.announcer {
            Some(l) => format!("{} (refreshed {} ago{})", l.node, seconds(l.age), if l.valid { "" } else { ", stale" }),
            None => "nobody".into(),
        }
    }

    /// The DNS state in one line, with the announcer's last error:
    /// `zone example.test on 192.0.2.53:53 (client host mail.example.test,
    /// TTL 30 s): FAILING: ... BADSIG ...; checked by node1 2 s ago`.
    pub fn dns_text(&self) -> String {
        match &self.dns {
            DnsReport::Off => "not configured".into(),
            DnsReport::On { zone, server, client_host, ttl, last } => {
                let head = format!("zone {zone} on {server} (client host {client_host}, TTL {ttl} s)");
                match last {
                    Ok(Some((st, age))) => {
                        let how = match (&st.last_error, st.in_step) {
                            (Some(e), _) => format!("FAILING: {e}"),
                            (None, true) => "in step with the live set".into(),
                            (None, false) => "not yet in step".into(),
                        };
                        format!("{head}: {how}; checked by {} {} s ago", st.node, age.as_secs())
                    }
                    Ok(None) => format!("{head}: no announcer has reported yet"),
                    Err(e) => format!("{head}: cannot read the announcer's report: {e}"),
                }
            }
        }
    }

    /// The records the announcer keeps, as they are in DNS (zone-file
    /// lines); empty before any report.
    pub fn dns_records(&self) -> &[String] {
        match &self.dns {
            DnsReport::On { last: Ok(Some((st, _))), .. } => &st.records,
            _ => &[],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::{new_instance, Heartbeat, STATE_SERVING};
    use std::sync::Arc;

    fn info(node: &str, rank: u32) -> NodeInfo {
        NodeInfo { node: node.into(), rank, instance: new_instance(), pid: 1, addresses: vec!["192.0.2.1".parse().unwrap()], services: vec![], state: STATE_SERVING.into(), protections: vec![] }
    }

    #[test]
    fn states_lease_and_dns_error() {
        let dir = tempfile::tempdir().unwrap();
        let s = Arc::new(Store::init(&dir.path().join("s"), "example.test", None).unwrap());
        let r = read(&s, "admin").unwrap();
        assert!(r.nodes.is_empty());
        assert_eq!((r.announcer_text(), r.dns_text()), ("nobody".to_string(), "not configured".to_string()));

        let mut hb = [Heartbeat::new(s.clone(), info("n1", 1)), Heartbeat::new(s.clone(), info("n2", 2)), Heartbeat::new(s.clone(), info("n3", 3))];
        for h in &hb {
            h.publish().unwrap();
        }
        hb[1].set_state(STATE_DRAINING).unwrap();
        hb[2].stop().unwrap();
        let claim = store::Claimant { node: "n1", instance: &hb[0].info().instance.clone() };
        let _lease = s.take_lease(store::lock::names::ANNOUNCER, claim, LEASE_TTL).unwrap();

        let mut settings = (*s.settings()).clone();
        settings.dns = Some(store::DnsSettings { server: "192.0.2.53:53".into(), zone: "example.test".into(), client_host: None, ttl: 30, recheck_secs: 30, tsig: store::TsigSettings { name: "k.".into(), algorithm: "hmac-sha256".into(), secret: "AAAA".into() } });
        s.write_settings(&settings).unwrap();
        let r = read(&s, "admin").unwrap();
        assert!(r.dns_text().ends_with("no announcer has reported yet"), "{}", r.dns_text());

        let failing = DnsState { node: "n1".into(), at_unix: 0, zone: "example.test".into(), server: "192.0.2.53:53".into(), records: vec!["example.test. 30 IN MX 10 n1.example.test.".into()], in_step: false, last_error: Some("BADSIG: the key's secret does not match the server's".into()) };
        std::fs::write(crate::announcer::dns_state_path(&s), toml::to_string(&failing).unwrap()).unwrap();
        let r = read(&s, "admin").unwrap();
        let states: Vec<_> = r.nodes.iter().map(|n| (n.info.node.as_str(), n.state.as_str())).collect();
        assert_eq!(states, [("n1", "live"), ("n2", "drain"), ("n3", "stop")]);
        assert_eq!(r.announcer_node(), Some("n1"));
        assert!(r.announcer_text().starts_with("n1 (refreshed "), "{}", r.announcer_text());
        assert!(!r.announcer_text().contains("stale"), "{}", r.announcer_text());
        let dns = r.dns_text();
        assert!(dns.starts_with("zone example.test on 192.0.2.53:53 (client host mail.example.test, TTL 30 s): FAILING: BADSIG: "), "{dns}");
        assert!(dns.contains("; checked by n1 "), "{dns}");
        assert_eq!(r.dns_records(), failing.records.as_slice());
    }
}
