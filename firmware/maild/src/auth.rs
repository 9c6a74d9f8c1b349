//! Password checks shared by SMTP AUTH and POP3: bounded concurrency for
//! the (deliberately expensive) argon2 work, and a delay after failures
//! that grows with repeated failures from the same client address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use store::{Address, Store};
use tokio::sync::Semaphore;

use crate::config::Limits;

/// Failures older than this are forgotten.
const FAILURE_MEMORY: Duration = Duration::from_secs(15 * 60);
/// Entries kept in the failure table at most (a bound against address
/// spraying); the oldest are dropped first.
const MAX_TRACKED_ADDRESSES: usize = 10_000;

pub struct Authenticator {
    store: Arc<Store>,
    permits: Semaphore,
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
    base_delay: Duration,
    max_delay: Duration,
}

impl Authenticator {
    pub fn new(store: Arc<Store>, limits: &Limits) -> Authenticator {
        Authenticator {
            store,
            permits: Semaphore::new(limits.max_concurrent_auth),
            failures: Mutex::new(HashMap::new()),
            base_delay: Duration::from_millis(limits.auth_fail_delay_ms),
            max_delay: Duration::from_millis(limits.auth_fail_delay_max_ms),
        }
    }

    /// The account a login name means: a full address, or a bare name in
    /// the store's only domain (as the cluster's settings are now: a bare
    /// name stops working when a second domain is added).
    pub fn account(&self, login: &str) -> Option<Address> {
        if login.contains('@') {
            Address::parse(login).ok()
        } else {
            let settings = self.store.settings();
            let [d] = settings.domains.as_slice() else { return None };
            Address::parse(&format!("{login}@{d}")).ok()
        }
    }

    /// Checks a login. On failure, waits out the penalty delay before
    /// returning, so that guessing is slow.
    pub async fn check(&self, login: &str, password: &str, peer: IpAddr) -> Option<Address> {
        let ok = match self.account(login) {
            Some(addr) => {
                let permit = self.permits.acquire().await.ok()?;
                let store = self.store.clone();
                let pw = password.to_string();
                let a = addr.clone();
                let r = tokio::task::spawn_blocking(move || store.accounts().verify(&a, &pw)).await;
                drop(permit);
                match r {
                    Ok(Ok(true)) => Some(addr),
                    Ok(Ok(false)) => None,
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "account table unreadable");
                        None
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "password check failed");
                        None
                    }
                }
            }
            None => None,
        };
        match ok {
            Some(addr) => {
                if let Ok(mut f) = self.failures.lock() {
                    f.remove(&peer);
                }
                Some(addr)
            }
            None => {
                let delay = self.record_failure(peer);
                tracing::info!(%peer, login, delay_ms = delay.as_millis() as u64, "authentication failed");
                tokio::time::sleep(delay).await;
                None
            }
        }
    }

    fn record_failure(&self, peer: IpAddr) -> Duration {
        let Ok(mut f) = self.failures.lock() else { return self.max_delay };
        let now = Instant::now();
        if f.len() >= MAX_TRACKED_ADDRESSES {
            f.retain(|_, (_, t)| now.duration_since(*t) < FAILURE_MEMORY);
            if f.len() >= MAX_TRACKED_ADDRESSES {
                f.clear();
            }
        }
        let e = f.entry(peer).or_insert((0, now));
        if now.duration_since(e.1) > FAILURE_MEMORY {
            e.0 = 0;
        }
        e.0 += 1;
        e.1 = now;
        let factor = 1u32 << (e.0 - 1).min(16);
        (self.base_delay * factor).min(self.max_delay)
    }
}
