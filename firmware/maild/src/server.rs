//! The node: listeners, connection limits, sessions, graceful shutdown.
//!
//! One accept loop per listening address (mini-redis' `Listener`), each
//! connection its own task. Connections are limited in total, per client
//! address, per network (IPv4 /24, IPv6 /64 and /48), and more tightly per
//! network once the node is nearly full; a connection over a limit is told
//! so (421 / -ERR) and closed at once, without waiting, so a flood of idle
//! connections never stops the accept loop or a new client elsewhere.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use cluster::live::{LiveSet, NodeInfo, HEARTBEAT_INTERVAL, STATE_SERVING};
use cluster::Member;
use store::stats::{StatsRecorder, STATS_FLUSH_INTERVAL};
use store::{Claimant, Store};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use crate::auth::Authenticator;
use crate::config::NodeConfig;
use crate::conn::Conn;
use crate::{imap, pop3, smtp, tls};

/// How long a TLS handshake may take before the connection is dropped.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Back-off after a failed accept (out of file descriptors, say): the first
/// wait, doubled up to the maximum.
const ACCEPT_BACKOFF_START: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(2);
/// How long the refusal of an over-limit connection may take to send.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the node looks for a changed cluster.toml (domains, host
/// name, limits): an edit is followed within this time, without restart.
pub const SETTINGS_REFRESH_INTERVAL: Duration = Duration::from_secs(2);
/// How long a node's start waits for each step in the store (opening it
/// and removing what a crash left, the message counts, the first
/// heartbeat): a store that does not answer fails the start with an error
/// rather than hanging it.
const STORE_START_DEADLINE: Duration = Duration::from_secs(60);
/// How long a shutdown waits for the last write of the message counts.
const STATS_FINAL_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// Port 25: mail from other servers (RFC 5321).
    Smtp,
    /// Port 587: message submission with STARTTLS (RFC 6409).
    Submission,
    /// Port 465: submission over implicit TLS (RFC 8314 3.3).
    Submissions,
    /// Port 110 (RFC 1939) with STLS (RFC 2595).
    Pop3,
    /// Port 995: POP3 over implicit TLS (RFC 8314 3.3).
    Pop3s,
    /// Port 143 (RFC 3501) with STARTTLS (RFC 3501 6.2.1).
    Imap,
    /// Port 993: IMAP over implicit TLS (RFC 8314 3.3).
    Imaps,
}

impl Service {
    pub fn name(self) -> &'static str {
        match self {
            Service::Smtp => "smtp",
            Service::Submission => "submission",
            Service::Submissions => "submissions",
            Service::Pop3 => "pop3",
            Service::Pop3s => "pop3s",
            Service::Imap => "imap",
            Service::Imaps => "imaps",
        }
    }

    fn implicit_tls(self) -> bool {
        matches!(self, Service::Submissions | Service::Pop3s | Service::Imaps)
    }

    fn is_pop3(self) -> bool {
        matches!(self, Service::Pop3 | Service::Pop3s)
    }

    fn is_imap(self) -> bool {
        matches!(self, Service::Imap | Service::Imaps)
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What every session of a node shares.
pub struct Shared {
    pub config: NodeConfig,
    pub store: Arc<Store>,
    pub auth: Authenticator,
    pub tls: tokio_rustls::TlsAcceptor,
    /// This process's instance id, in its heartbeat and its leases.
    pub instance: String,
    /// The node in the cluster: whether the store answers (while it does
    /// not, the node accepts no mail: 421), the live set.
    pub cluster: Member,
    /// Wakes the queue runner when a message for another domain arrives.
    pub queue_notify: tokio::sync::Notify,
    /// SPF/DKIM/DMARC checks of mail from other servers, if enabled.
    pub verifier: Option<mailauth::Verifier>,
    /// Messages in and out per minute, written to `<store>/stats/<node>`.
    pub stats: StatsRecorder,
    /// Message data held in memory by all sessions together.
    pub message_memory: Arc<crate::memory::MemoryBudget>,
    /// The IMAP folders watched for IDLE sessions on this node.
    pub imap_watchers: crate::imap::Watchers,
    counts: Mutex<ConnCounts>,
}

/// What connections are counted by: the client's address and the
/// networks it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Origin {
    Ip(IpAddr),
    /// An IPv4 /24 (its first three octets).
    V4Net([u8; 3]),
    /// An IPv6 /64 (its first 64 bits).
    V6Net(u64),
    /// An IPv6 /48.
    V6Site(u64),
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Total,
    Address,
    Network,
    Site,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::Total => "all connection slots taken",
            Refusal::Address => "connection limit of the client address reached",
            Refusal::Network => "connection limit of the client network reached",
            Refusal::Site => "connection limit of the client IPv6 /48 reached",
        })
    }
}

/// The origins `ip` is counted under: its address, then its network (/24
/// or /64), then for IPv6 its /48. IPv4-mapped IPv6 addresses (a dual-stack
/// listener) count as the IPv4 address they are.
fn origins(ip: IpAddr) -> [Option<Origin>; 3] {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            [Some(Origin::Ip(IpAddr::V4(v4))), Some(Origin::V4Net([o[0], o[1], o[2]])), None]
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            [Some(Origin::Ip(IpAddr::V6(v6))), Some(Origin::V6Net((bits >> 64) as u64)), Some(Origin::V6Site((bits >> 80) as u64))]
        }
    }
}

/// Connections now, in total and per origin; an origin with none is not
/// kept, so the table is as large as the connections at most.
#[derive(Default)]
struct ConnCounts {
    total: usize,
    per_origin: HashMap<Origin, usize>,
}

impl ConnCounts {
    fn count(&self, o: &Origin) -> usize {
        self.per_origin.get(o).copied().unwrap_or(0)
    }

    /// Takes a place for `ip` within `limits`, or says which limit stops it.
    fn take(&mut self, ip: IpAddr, limits: &crate::config::Limits) -> Result<[Option<Origin>; 3], Refusal> {
        if self.total >= limits.max_connections {
            return Err(Refusal::Total);
        }
        let keys = origins(ip);
        let network_cap = limits.network_cap(self.total);
        for o in keys.iter().flatten() {
            let (cap, why) = match o {
                Origin::Ip(_) => (limits.max_connections_per_ip, Refusal::Address),
                Origin::V4Net(_) | Origin::V6Net(_) => (network_cap, Refusal::Network),
                Origin::V6Site(_) => (limits.max_connections_per_ipv6_48, Refusal::Site),
            };
            if self.count(o) >= cap {
                return Err(why);
            }
        }
        self.total += 1;
        for o in keys.iter().flatten() {
            *self.per_origin.entry(*o).or_insert(0) += 1;
        }
        Ok(keys)
    }

    fn give_back(&mut self, keys: &[Option<Origin>; 3]) {
        self.total -= 1;
        for o in keys.iter().flatten() {
            if let Some(n) = self.per_origin.get_mut(o) {
                *n -= 1;
                if *n == 0 {
                    self.per_origin.remove(o);
                }
            }
        }
    }
}

/// Holds a connection's place in the counts; gives it back on drop.
struct ConnSlot {
    shared: Arc<Shared>,
    keys: [Option<Origin>; 3],
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        if let Ok(mut c) = self.shared.counts.lock() {
            c.give_back(&self.keys);
        }
    }
}

impl Shared {
    /// What the sessions of a node share; `cluster` is the node's
    /// membership (store health, live set).
    #[allow(clippy::too_many_arguments)]
    pub fn new(config: NodeConfig, store: Arc<Store>, auth: Authenticator, tls: tokio_rustls::TlsAcceptor, instance: String, verifier: Option<mailauth::Verifier>, stats: StatsRecorder, cluster: Member) -> Shared {
        let message_memory = Arc::new(crate::memory::MemoryBudget::new(config.limits.message_memory_total));
        Shared { config, store, auth, tls, instance, verifier, stats, cluster, queue_notify: tokio::sync::Notify::new(), message_memory, imap_watchers: crate::imap::Watchers::default(), counts: Mutex::new(ConnCounts::default()) }
    }

    pub fn store_healthy(&self) -> bool {
        self.cluster.store_healthy()
    }

    /// The name the node announces: the cluster's host name, as
    /// cluster.toml has it now.
    pub fn hostname(&self) -> String {
        self.store.settings().hostname.clone()
    }

    /// The SMTP limits in force now: the node's, overridden by the
    /// cluster's where cluster.toml sets them.
    pub fn session_limits(&self) -> crate::config::SessionLimits {
        self.config.limits.effective(&self.store.settings().limits)
    }

    /// The live set as last read from the heartbeats.
    pub fn live_set(&self) -> Arc<LiveSet> {
        self.cluster.live_set()
    }

    pub fn claimant(&self) -> Claimant<'_> {
        Claimant { node: &self.config.node, instance: &self.instance }
    }

    fn take_slot(self: &Arc<Self>, ip: IpAddr) -> Result<ConnSlot, Refusal> {
        let mut c = self.counts.lock().map_err(|_| Refusal::Total)?;
        let keys = c.take(ip, &self.config.limits)?;
        Ok(ConnSlot { shared: self.clone(), keys })
    }
}

pub struct Node {
    shared: Arc<Shared>,
    listeners: Vec<(Service, TcpListener)>,
}

impl Node {
    /// Opens the store, prepares TLS and binds every listener, so that a
    /// configuration error is reported before anything is served.
    ///
    /// The sessions present the node's --tls-cert/--tls-key files if it
    /// has them, else `cluster_cert`: the process's one resolver of the
    /// cluster certificate (made by the caller, who may share it with an
    /// admin page), which the node keeps following the store
    /// ([`cert::spawn_reloader`]).
    pub async fn bind(config: NodeConfig, cluster_cert: Option<Arc<cert::ClusterCertResolver>>) -> anyhow::Result<Node> {
        config.validate().map_err(anyhow::Error::msg)?;
        let (root, node) = (config.store.clone(), config.node.clone());
        let (store, cleaned, swept) = store::blocking::call(STORE_START_DEADLINE, move || -> Result<_, store::StoreError> {
            let store = Store::open(&root)?;
            let cleaned = store.clean_spool(&node)?;
            let swept = store.sweep_crash_leftovers(&node)?;
            Ok((Arc::new(store), cleaned, swept))
        })
        .await??;
        if cleaned > 0 {
            tracing::info!(cleaned, "removed unacknowledged messages left in this node's spool");
        }
        if swept.total() > 0 {
            tracing::info!(report = ?swept, "removed what a crash left in the store");
        }
        let tls = match (&config.tls_cert, &config.tls_key, cluster_cert) {
            (Some(c), Some(k), _) => tls::files_acceptor(c, k)?,
            (_, _, Some(resolver)) => {
                // The store's cluster certificate, followed when it changes
                // (an upload or regeneration on any node).
                cert::spawn_reloader(&resolver, store.clone());
                let info = resolver.info();
                tracing::info!(certificate = %info.path, source = %info.source, sha256 = %info.sha256, "using the cluster certificate");
                tls::cluster_acceptor(resolver)
            }
            _ => anyhow::bail!("no certificate: neither --tls-cert/--tls-key nor the cluster certificate"),
        };
        let mut listeners = Vec::new();
        for (service, addrs) in [
            (Service::Smtp, &config.smtp),
            (Service::Submission, &config.submission),
            (Service::Submissions, &config.submissions),
            (Service::Pop3, &config.pop3),
            (Service::Pop3s, &config.pop3s),
            (Service::Imap, &config.imap),
            (Service::Imaps, &config.imaps),
        ] {
            for addr in addrs {
                let l = TcpListener::bind(addr).await.with_context(|| format!("cannot listen for {service} on {addr}"))?;
                listeners.push((service, l));
            }
        }
        let auth = Authenticator::new(store.clone(), &config.limits, &config.node);
        let (s, node) = (store.clone(), config.node.clone());
        let stats = store::blocking::call(STORE_START_DEADLINE, move || StatsRecorder::open(&s, &node)).await??;
        let instance = cluster::live::new_instance();
        let services = listeners.iter().filter_map(|(s, l)| l.local_addr().ok().map(|a| format!("{s}={a}"))).collect();
        let (verifier, checks) = crate::config::inbound_verifier(&config.inbound);
        let info = NodeInfo { node: config.node.clone(), rank: config.rank, instance: instance.clone(), pid: std::process::id(), addresses: config.advertised(), services, state: STATE_SERVING.into(), protections: vec![checks] };
        // The first heartbeat and live set before serving, so that leases
        // are judged against a real live set from the first session on.
        let cluster = Member::join(store.clone(), info, STORE_START_DEADLINE).await?;
        let shared = Arc::new(Shared::new(config, store, auth, tls, instance, verifier, stats, cluster));
        Ok(Node { shared, listeners })
    }

    /// The addresses actually bound (useful with port 0).
    pub fn local_addrs(&self) -> Vec<(Service, SocketAddr)> {
        self.listeners.iter().filter_map(|(s, l)| l.local_addr().ok().map(|a| (*s, a))).collect()
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Serves until `stop` resolves, then stops accepting, lets sessions
    /// finish their transactions (up to the grace period) and returns.
    pub async fn run(self, stop: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        // Every session holds a clone of `done_tx`; when all are dropped,
        // `done_rx` yields None and the node may exit (mini-redis' pattern).
        let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
        let mut accept_tasks = Vec::new();
        for (service, listener) in self.listeners {
            let shared = self.shared.clone();
            let mut stop_rx = shutdown_rx.clone();
            let done = done_tx.clone();
            accept_tasks.push(tokio::spawn(async move {
                let mut backoff = ACCEPT_BACKOFF_START;
                loop {
                    tokio::select! {
                        r = listener.accept() => match r {
                            Ok((sock, peer)) => {
                                backoff = ACCEPT_BACKOFF_START;
                                spawn_session(&shared, service, sock, peer, stop_rx.clone(), done.clone());
                            }
                            Err(e) => {
                                tracing::warn!(%service, error = %e, "accept failed; backing off");
                                tokio::time::sleep(backoff).await;
                                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                            }
                        },
                        _ = stop_rx.changed() => break,
                    }
                }
            }));
        }
        drop(done_tx);
        // The cluster's loops (heartbeat with the store probe, the live
        // set, the announcer); the heartbeat runs until the very end: a
        // node finishing its sessions must not look dead, or its leases
        // would be taken.
        let cluster = self.shared.cluster.start(Duration::from_millis(self.shared.config.limits.store_probe_deadline_ms));
        let (chores_stop_tx, chores_stop_rx) = watch::channel(false);
        let chores = tokio::spawn(chores(self.shared.clone(), chores_stop_rx));
        let outbound = tokio::spawn(crate::outbound::run(self.shared.clone(), shutdown_rx.clone()));
        stop.await;
        tracing::info!("shutting down: no new connections; finishing transactions in progress");
        // Draining: out of DNS at once, leases still held.
        cluster.drain().await;
        let _ = shutdown_tx.send(true);
        for t in accept_tasks {
            let _ = t.await;
        }
        let _ = outbound.await;
        let grace = Duration::from_secs(self.shared.config.limits.shutdown_grace_secs);
        if tokio::time::timeout(grace, done_rx.recv()).await.is_err() {
            tracing::warn!("sessions still open after the grace period; closing them");
        }
        let _ = chores_stop_tx.send(true);
        let _ = chores.await;
        // The last counts, now that every session is done.
        let sh = self.shared.clone();
        match tokio::time::timeout(STATS_FINAL_FLUSH_TIMEOUT, tokio::task::spawn_blocking(move || sh.stats.flush(&sh.store))).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "cannot write the message counts"),
            _ => tracing::warn!("the message counts were not written in time"),
        }
        // The heartbeat ends; the node leaves the live set at once rather
        // than after its heartbeat ages.
        cluster.stop().await;
        Ok(())
    }
}

/// Less often than the heartbeat (`cluster::member`'s), and never holding
/// it up: follow cluster.toml and write the message counts, while the
/// store answers. A store call that hangs holds up only these chores, and
/// a second round never starts while one is under way.
async fn chores(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let chores = Arc::new(AtomicBool::new(false));
    let mut next_refresh = tokio::time::Instant::now() + SETTINGS_REFRESH_INTERVAL;
    let mut next_flush = tokio::time::Instant::now() + STATS_FLUSH_INTERVAL;
    let settings_error: Arc<Mutex<Option<String>>> = Arc::default();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(HEARTBEAT_INTERVAL) => {}
            _ = stop.changed() => return,
        }
        let now = tokio::time::Instant::now();
        let (refresh, flush) = (now >= next_refresh, now >= next_flush);
        if (refresh || flush) && shared.store_healthy() && !chores.swap(true, Ordering::AcqRel) {
            if refresh {
                next_refresh = now + SETTINGS_REFRESH_INTERVAL;
            }
            if flush {
                next_flush = now + STATS_FLUSH_INTERVAL;
            }
            let (sh, busy, last_error) = (shared.clone(), chores.clone(), settings_error.clone());
            tokio::task::spawn_blocking(move || {
                if refresh {
                    refresh_settings(&sh.store, &last_error);
                }
                if flush {
                    if let Err(e) = sh.stats.flush(&sh.store) {
                        tracing::warn!(error = %e, "cannot write the message counts");
                    }
                }
                busy.store(false, Ordering::Release);
            });
        }
    }
}

/// Follows cluster.toml, logging a change once and a bad file once per
/// distinct error.
fn refresh_settings(store: &Store, last_error: &Mutex<Option<String>>) {
    let r = store.refresh_settings();
    let mut last = last_error.lock().unwrap_or_else(|e| e.into_inner());
    match r {
        Ok(changed) => {
            if changed {
                let s = store.settings();
                tracing::info!(domains = ?s.domains, hostname = %s.hostname, limits = ?s.limits, "cluster settings changed");
            }
            if last.take().is_some() {
                tracing::info!("cluster.toml is readable again");
            }
        }
        Err(e) => {
            let e = e.to_string();
            if last.as_deref() != Some(e.as_str()) {
                tracing::error!(error = %e, "cluster.toml changed but cannot be used; keeping the settings in force");
                *last = Some(e);
            }
        }
    }
}

fn spawn_session(shared: &Arc<Shared>, service: Service, mut sock: TcpStream, peer: SocketAddr, shutdown: watch::Receiver<bool>, done: mpsc::Sender<()>) {
    let _ = sock.set_nodelay(true);
    let slot = match shared.take_slot(peer.ip()) {
        Ok(s) => s,
        Err(why) => {
            tracing::warn!(%peer, %service, reason = %why, "connection limit reached; refusing");
            let refusal: &'static [u8] = if service.is_pop3() {
                // RFC 3206 4: a temporary condition of the server.
                b"-ERR [SYS/TEMP] too many connections, try again later\r\n"
            } else if service.is_imap() {
                // RFC 3501 7.1.5: BYE as the greeting refuses the
                // connection; RFC 5530 3: UNAVAILABLE.
                b"* BYE [UNAVAILABLE] too many connections, try again later\r\n"
            } else {
                // RFC 5321 3.8, 4.2.3: 421 closes the transmission channel.
                b"421 4.7.0 Too many connections, try again later\r\n"
            };
            tokio::spawn(async move {
                if !service.implicit_tls() {
                    let _ = tokio::time::timeout(REFUSAL_TIMEOUT, sock.write_all(refusal)).await;
                }
            });
            return;
        }
    };
    let shared = shared.clone();
    let write_timeout = if service.is_pop3() {
        shared.config.limits.pop3_idle()
    } else if service.is_imap() {
        crate::imap::WRITE_TIMEOUT
    } else {
        shared.config.limits.smtp_idle()
    };
    tokio::spawn(async move {
        let _slot = slot;
        let _done = done;
        let conn = if service.implicit_tls() {
            match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, shared.tls.accept(sock)).await {
                Ok(Ok(s)) => Conn::new(Box::new(s), true, shutdown, write_timeout),
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            }
        } else {
            Conn::new(Box::new(sock), false, shutdown, write_timeout)
        };
        if service.is_pop3() {
            pop3::Session::new(shared, conn, peer).run().await;
        } else if service.is_imap() {
            imap::Session::new(shared, conn, peer).run().await;
        } else {
            smtp::Session::new(shared, conn, peer, service).run().await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Limits;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    #[test]
    fn slots_are_capped_per_address_and_network() {
        let l = Limits { max_connections: 20, max_connections_per_ip: 3, max_connections_per_network: 5, max_connections_per_ipv6_48: 7, busy_percent: 100, ..Limits::default() };
        let mut c = ConnCounts::default();
        for _ in 0..3 {
            assert!(c.take(ip("192.0.2.1"), &l).is_ok());
        }
        assert_eq!(c.take(ip("192.0.2.1"), &l), Err(Refusal::Address));
        assert!(c.take(ip("192.0.2.2"), &l).is_ok());
        assert!(c.take(ip("192.0.2.3"), &l).is_ok());
        assert_eq!(c.take(ip("192.0.2.4"), &l), Err(Refusal::Network));
        // A mapped address is the IPv4 address it carries.
        assert_eq!(c.take(ip("::ffff:192.0.2.5"), &l), Err(Refusal::Network));
        assert!(c.take(ip("198.51.100.1"), &l).is_ok());
        // IPv6: per /64, and per /48 across its /64s.
        for i in 0..5 {
            assert!(c.take(ip(&format!("2001:db8:0:1::{i}")), &l).is_ok());
        }
        assert_eq!(c.take(ip("2001:db8:0:1::ff"), &l), Err(Refusal::Network));
        assert!(c.take(ip("2001:db8:0:2::1"), &l).is_ok());
        assert!(c.take(ip("2001:db8:0:3::1"), &l).is_ok());
        assert_eq!(c.take(ip("2001:db8:0:4::1"), &l), Err(Refusal::Site));
        assert!(c.take(ip("2001:db8:1::1"), &l).is_ok());
        // Given back, a place is free again, and empty entries go.
        let keys = origins(ip("192.0.2.1"));
        c.give_back(&keys);
        assert!(c.take(ip("192.0.2.9"), &l).is_ok());
        assert_eq!(c.total, 14);
    }

    #[test]
    fn a_nearly_full_node_keeps_its_last_slots_for_new_networks() {
        let l = Limits { max_connections: 8, max_connections_per_ip: 8, max_connections_per_network: 8, max_connections_per_network_busy: 2, busy_percent: 50, ..Limits::default() };
        let mut c = ConnCounts::default();
        for _ in 0..4 {
            assert!(c.take(ip("192.0.2.1"), &l).is_ok());
        }
        // Half full: the heavy network gets no more, others up to 2 each.
        assert_eq!(c.take(ip("192.0.2.1"), &l), Err(Refusal::Network));
        assert!(c.take(ip("198.51.100.1"), &l).is_ok());
        assert!(c.take(ip("198.51.100.2"), &l).is_ok());
        assert_eq!(c.take(ip("198.51.100.3"), &l), Err(Refusal::Network));
        assert!(c.take(ip("203.0.113.1"), &l).is_ok());
        assert!(c.take(ip("203.0.113.1"), &l).is_ok());
        assert_eq!(c.take(ip("100.64.0.1"), &l), Err(Refusal::Total));
        assert!(c.per_origin.len() <= 2 * c.total);
    }
}
