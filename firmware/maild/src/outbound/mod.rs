//! The outbound queue runner: every live node scans `<store>/queue` and
//! delivers due entries to other domains' mail servers. An entry is worked
//! on by one node at a time under a lease in the store; when a node dies,
//! its leases go stale with its heartbeat and another node continues, so
//! no message waits for a dead node to come back.

pub mod client;
pub mod dsn;
pub mod mx;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use store::{Address, Envelope, LockError};
use tokio::sync::{watch, Semaphore};

use crate::server::Shared;
use client::{ClientSettings, Outcome};
use mx::{MxResolver, Unroutable};

/// How long a queue lease stays valid without a refresh (by the store's
/// clock); the holder refreshes it every third of that.
pub const QUEUE_LEASE_TTL: Duration = Duration::from_secs(60);

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

struct Runner {
    shared: Arc<Shared>,
    resolver: MxResolver,
    client: ClientSettings,
    busy: Mutex<HashSet<String>>,
    permits: Arc<Semaphore>,
}

/// Runs until `stop` changes.
pub async fn run(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let cfg = shared.config.outbound.clone();
    if !cfg.enabled {
        return;
    }
    let resolver = match MxResolver::new(cfg.dns_server) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "outbound delivery disabled: no resolver");
            return;
        }
    };
    let (tls_any, tls_verified) = match client::tls_configs(cfg.tls_ca_file.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "outbound delivery disabled: TLS settings");
            return;
        }
    };
    let client = ClientSettings {
        helo: shared.hostname(),
        port: cfg.smtp_port,
        connect_timeout: Duration::from_secs(cfg.connect_timeout_secs),
        command_timeout: Duration::from_secs(cfg.command_timeout_secs),
        data_timeout: Duration::from_secs(cfg.data_timeout_secs),
        tls_any,
        tls_verified,
    };
    let runner = Arc::new(Runner { shared: shared.clone(), resolver, client, busy: Mutex::new(HashSet::new()), permits: Arc::new(Semaphore::new(cfg.concurrency)) });
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(cfg.scan_interval_ms)) => {}
            _ = shared.queue_notify.notified() => {}
            _ = stop.changed() => return,
        }
        if !shared.store_healthy() {
            continue;
        }
        let store = shared.store.clone();
        let entries = match store::blocking::call(store::blocking::STORE_CALL_DEADLINE, move || store.queue_list()).await {
            Ok(Ok(e)) => e,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot read the queue");
                continue;
            }
            Err(_) => continue,
        };
        let now = unix_now();
        for e in entries {
            if e.envelope.next_attempt > now {
                continue;
            }
            // Wait for a free delivery slot rather than for the next scan:
            // the entries found due are fed to the slots as they free up.
            let permit = tokio::select! {
                p = runner.permits.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => return,
                },
                _ = stop.changed() => return,
            };
            if !runner.busy.lock().map(|mut b| b.insert(e.id.clone())).unwrap_or(false) {
                continue;
            }
            let r = runner.clone();
            tokio::spawn(async move {
                r.work(&e.id).await;
                drop(permit);
                if let Ok(mut b) = r.busy.lock() {
                    b.remove(&e.id);
                }
            });
        }
    }
}

/// Removes our own Return-Path header: it is added at final delivery and a
/// relaying client must not send one (RFC 5321 4.4).
fn without_return_path(msg: &[u8]) -> &[u8] {
    if msg.len() >= 12 && msg[..12].eq_ignore_ascii_case(b"Return-Path:") {
        if let Some(p) = msg.windows(2).position(|w| w == b"\r\n") {
            return &msg[p + 2..];
        }
    }
    msg
}

impl Runner {
    async fn work(&self, id: &str) {
        let shared = &self.shared;
        let store = shared.store.clone();
        let (node, instance) = (shared.config.node.clone(), shared.instance.clone());
        let name = store::lock::names::queue_entry(id);
        let lease = store::blocking::call(store::blocking::STORE_CALL_DEADLINE, move || {
            let who = store::Claimant { node: &node, instance: &instance };
            store.take_lease(&name, who, QUEUE_LEASE_TTL)
        })
        .await;
        let lease = match lease {
            Ok(Ok(l)) => Arc::new(l),
            Ok(Err(LockError::InUse { .. })) => return,
            Ok(Err(e)) => {
                tracing::warn!(id, error = %e, "cannot take a queue lease");
                return;
            }
            Err(_) => return,
        };
        let refresher = {
            let lease = lease.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(QUEUE_LEASE_TTL / 3).await;
                    let l = lease.clone();
                    if !matches!(store::blocking::call(store::blocking::STORE_CALL_DEADLINE, move || l.refresh()).await, Ok(Ok(()))) {
                        return;
                    }
                }
            })
        };
        self.attempt(id).await;
        refresher.abort();
        // Cancelled once this returns; if it was refreshing just then, the
        // refresh holds the lease, and its drop releases it (on the
        // blocking pool).
        let _ = refresher.await;
        if let Ok(l) = Arc::try_unwrap(lease) {
            if let Err(e) = l.release_async(store::lock::LEASE_RELEASE_DEADLINE).await {
                tracing::warn!(id, error = %e, "cannot release a queue lease; it goes stale by its TTL");
            }
        }
    }

    /// One delivery attempt of entry `id`, under its lease.
    async fn attempt(&self, id: &str) {
        let shared = &self.shared;
        let cfg = &shared.config.outbound;
        let store = shared.store.clone();
        let i = id.to_string();
        // Read again under the lease: another node may have finished it.
        let read = store::blocking::call(store::blocking::STORE_CALL_DEADLINE, move || {
            let e = store.queue_get(&i)?;
            let m = std::fs::read(store.queue_message_path(&i)).map_err(|source| store::StoreError::Io { path: store.queue_message_path(&i), source })?;
            Ok::<_, store::StoreError>((e, m))
        })
        .await;
        let (entry, message) = match read {
            Ok(Ok(v)) => v,
            _ => return,
        };
        let mut env = entry.envelope;
        let now = unix_now();
        if env.next_attempt > now || env.rcpts.is_empty() {
            return;
        }
        let unsigned = without_return_path(&message);
        let signed: Vec<u8>;
        let body: &[u8] = match self.dkim_signature(unsigned).await {
            Some(sig) => {
                signed = [sig.as_bytes(), unsigned].concat();
                &signed
            }
            None => unsigned,
        };
        let mut by_domain: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for r in &env.rcpts {
            let d = r.rsplit_once('@').map(|(_, d)| store::address::normalize_domain(d)).unwrap_or_default();
            by_domain.entry(d).or_default().push(r.clone());
        }
        let mut failed = Vec::new();
        let mut pending = Vec::new();
        let mut last_error = None;
        // EHLO with the host name cluster.toml gives now.
        let client = ClientSettings { helo: shared.hostname(), ..self.client.clone() };
        // A message from <> is one of our notifications (RFC 5321 4.5.5:
        // they are the mail sent with a null reverse-path; users and other
        // servers cannot queue one here), not counted as a delivery.
        let counted = !env.from.is_empty();
        for (domain, rcpts) in by_domain {
            let require_tls = cfg.require_tls_domains.iter().any(|d| d.eq_ignore_ascii_case(&domain));
            let outcomes = match self.resolver.targets(&domain).await {
                Ok(targets) => client::deliver(&client, &targets, &env.from, &rcpts, body, require_tls).await,
                Err(Unroutable::Permanent { status, reason }) => rcpts.iter().map(|_| Outcome::Permanent { status: status.to_string(), diagnostic: reason.clone(), host: None }).collect(),
                Err(Unroutable::Temporary(reason)) => rcpts.iter().map(|_| Outcome::Temporary { diagnostic: reason.clone() }).collect(),
            };
            for (rcpt, o) in rcpts.into_iter().zip(outcomes) {
                match o {
                    Outcome::Delivered { host, reply } => {
                        tracing::info!(id, %rcpt, %host, %reply, "delivered");
                        if counted {
                            shared.stats.count_out(1);
                        }
                    }
                    Outcome::Permanent { status, diagnostic, host } => {
                        tracing::info!(id, %rcpt, %status, %diagnostic, "delivery failed permanently");
                        failed.push(dsn::Failed { rcpt, status, diagnostic, remote_mta: host });
                    }
                    Outcome::Temporary { diagnostic } => {
                        tracing::info!(id, %rcpt, %diagnostic, "delivery deferred");
                        last_error = Some(diagnostic.clone());
                        pending.push((rcpt, diagnostic));
                    }
                }
            }
        }
        let arrival = UNIX_EPOCH + Duration::from_secs(env.created);
        let age = now.saturating_sub(env.created);
        let mut delayed = Vec::new();
        if !pending.is_empty() && age >= cfg.max_lifetime_secs {
            // RFC 5321 4.5.4.1: give up after the retry period; RFC 3463
            // 4.4.7: delivery time expired.
            for (rcpt, diagnostic) in pending.drain(..) {
                failed.push(dsn::Failed { rcpt, status: "4.4.7".into(), diagnostic: format!("gave up after {} hours: {diagnostic}", age / 3600), remote_mta: None });
            }
        } else if !pending.is_empty() && age >= cfg.delay_warning_secs && !env.delay_notified {
            delayed = pending.iter().map(|(rcpt, d)| dsn::Failed { rcpt: rcpt.clone(), status: "4.4.7".into(), diagnostic: d.clone(), remote_mta: None }).collect();
            env.delay_notified = true;
        }
        let store = shared.store.clone();
        let i = id.to_string();
        if pending.is_empty() {
            let _ = store::blocking::call(store::blocking::STORE_CALL_DEADLINE, move || store.queue_remove(&i)).await;
        } else {
            env.attempts += 1;
            let backoff = cfg.retry_base_secs.saturating_mul(1u64 << (env.attempts - 1).min(20)).min(cfg.retry_max_secs);
            env.next_attempt = now + backoff;
            env.rcpts = pending.into_iter().map(|(r, _)| r).collect();
            env.last_error = last_error;
            let e2 = env.clone();
            match store::blocking::call(store::blocking::STORE_CALL_DEADLINE, move || store.queue_update(&i, &e2)).await {
                Ok(Ok(true)) => {}
                Ok(Ok(false)) => tracing::info!(id, "queue entry deleted during delivery"),
                _ => tracing::error!(id, "cannot update a queue entry"),
            }
        }
        for (kind, list) in [(dsn::Kind::Failed, failed), (dsn::Kind::Delayed, delayed)] {
            if list.is_empty() {
                continue;
            }
            if env.from.is_empty() {
                // No notifications about notifications (RFC 3461 / RFC
                // 5321 6.1: never to the null reverse-path).
                tracing::info!(id, "no notification: the sender is <>");
                continue;
            }
            let report = dsn::build(kind, &shared.hostname(), id, &env.from, arrival, &list, body);
            if let Err(e) = self.notify(&env.from, report).await {
                tracing::error!(id, error = %e, "cannot send a delivery status notification");
            }
        }
    }

    /// A DKIM-Signature header (RFC 6376) for mail whose author (From) is
    /// in one of our domains and that domain has a key in the store.
    async fn dkim_signature(&self, message: &[u8]) -> Option<String> {
        let domain = mailauth::author_domain(message)?;
        if !self.shared.store.is_local_domain(&domain) {
            return None;
        }
        let root = self.shared.store.root().to_path_buf();
        let msg = message.to_vec();
        let d = domain.clone();
        let r = store::blocking::call(store::blocking::STORE_CALL_DEADLINE, move || -> Result<Option<String>, mailauth::Error> {
            match mailauth::Signer::load(&root, &d)? {
                Some(signer) => signer.sign(&msg).map(Some),
                None => Ok(None),
            }
        })
        .await;
        match r {
            Ok(Ok(sig)) => sig,
            Ok(Err(e)) => {
                tracing::error!(%domain, error = %e, "DKIM signing failed; sending unsigned");
                None
            }
            Err(_) => None,
        }
    }

    /// Sends a notification to `sender`: into the mailbox if the sender is
    /// a local user, else through the queue from `<>`.
    async fn notify(&self, sender: &str, report: Vec<u8>) -> Result<(), NotifyError> {
        let shared = self.shared.clone();
        let sender = sender.to_string();
        store::blocking::call(store::blocking::STORE_CALL_DEADLINE, move || {
            let sender = sender.as_str();
            let store = &shared.store;
            let node = &shared.config.node;
            let local = Address::parse(sender).ok().filter(|a| store.is_local_domain(a.domain()));
            match local {
                Some(addr) => {
                    if !store.accounts().exists(&addr)? {
                        return Err(NotifyError::Gone(addr));
                    }
                    let mut spool = store.spool(node)?;
                    let trace = format!("Return-Path: <>\r\nReceived: by {} (mailfort) id {}; {}\r\n", shared.hostname(), spool.name(), crate::date::rfc5322(SystemTime::now()));
                    spool.write_all(trace.as_bytes()).map_err(NotifyError::Spool)?;
                    spool.write_all(&report).map_err(NotifyError::Spool)?;
                    Ok(spool.commit(store, &[addr], None)?)
                }
                None => {
                    let env = Envelope { from: String::new(), rcpts: vec![sender.to_string()], created: unix_now(), node: node.clone(), ..Default::default() };
                    Ok(store.enqueue(node, &report, &env).map(|_| ())?)
                }
            }
        })
        .await?
    }
}

/// Why a notification to a sender could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("{0} no longer exists")]
    Gone(Address),
    #[error(transparent)]
    Account(#[from] store::AccountError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("cannot write the spool file: {0}")]
    Spool(std::io::Error),
    #[error(transparent)]
    Unanswered(#[from] store::blocking::Unanswered),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_path_is_stripped() {
        assert_eq!(without_return_path(b"Return-Path: <a@b>\r\nReceived: x\r\n\r\nbody"), b"Received: x\r\n\r\nbody");
        assert_eq!(without_return_path(b"Received: x\r\n\r\nbody"), b"Received: x\r\n\r\nbody");
    }
}
