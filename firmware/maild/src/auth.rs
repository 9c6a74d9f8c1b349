//! Password checks shared by SMTP AUTH and POP3.
//!
//! - The argon2 work runs in the process's one verifier
//!   ([`store::password`]): a few reused work buffers, at most
//!   `max_concurrent_auth` checks at once and a bounded queue; a check that
//!   finds the queue full is a temporary failure, never an unbounded wait.
//! - Failures are counted per client address and per network in the store
//!   ([`store::login_failures`]), for all sessions, services and nodes
//!   together (the admin page's too). A client with too many is refused
//!   without its password being looked at (no argon2 work); after each
//!   failure the session waits out a delay that doubles from
//!   `auth_fail_delay_ms` to `auth_fail_delay_max_ms`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use store::login_failures::{LoginFailures, Policy, Refusal};
use store::{AccountError, Address, PasswordError, Store, Verdict};

use crate::config::Limits;

/// What became of a login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOutcome {
    Accepted(Address),
    /// Wrong credentials (answered after the penalty delay).
    Rejected,
    /// Not decided now; the client should try again later (RFC 4954 6:
    /// 454 4.7.0; RFC 3206 4: POP3 [SYS/TEMP]). The text says why, for
    /// people.
    TryLater(&'static str),
}

pub struct Authenticator {
    store: Arc<Store>,
    failures: Arc<LoginFailures>,
    max_delay: Duration,
}

/// Runs `f` on the blocking pool; None if it panicked.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    tokio::task::spawn_blocking(f).await.ok()
}

impl Authenticator {
    /// The checks of node `node` (its failures are written as
    /// `<node>-mail` in the store).
    pub fn new(store: Arc<Store>, limits: &Limits, node: &str) -> Authenticator {
        store::password::verifier().set_workers(limits.max_concurrent_auth);
        let max_delay = Duration::from_millis(limits.auth_fail_delay_max_ms);
        let policy = Policy { delay_start: Duration::from_millis(limits.auth_fail_delay_ms), delay_max: max_delay, ..Policy::default() };
        let failures = Arc::new(LoginFailures::new(store.root(), &format!("{node}-mail"), policy));
        Authenticator { store, failures, max_delay }
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

    /// Checks a login from `peer`. A wrong password returns only after the
    /// penalty delay, so that guessing is slow.
    pub async fn check(&self, login: &str, password: &str, peer: IpAddr) -> AuthOutcome {
        let f = self.failures.clone();
        match blocking(move || f.check(peer)).await {
            Some(Verdict::Allowed) => {}
            Some(Verdict::Refused { why, retry_after }) => {
                tracing::info!(%peer, login, why = ?why, retry_after_s = retry_after.as_secs(), "authentication refused unchecked");
                return AuthOutcome::TryLater(match why {
                    Refusal::Delay => "Too soon after a failed authentication, try again later",
                    Refusal::Address | Refusal::Network => "Too many failed authentications from your network, try again later",
                });
            }
            None => return AuthOutcome::TryLater("Temporary authentication failure"),
        }
        let Some(addr) = self.account(login) else { return self.failed(peer, login).await };
        let (store, pw, a) = (self.store.clone(), password.to_string(), addr.clone());
        match blocking(move || store.accounts().verify(&a, &pw)).await {
            Some(Ok(true)) => {
                self.failures.succeeded(peer);
                AuthOutcome::Accepted(addr)
            }
            Some(Ok(false)) => self.failed(peer, login).await,
            Some(Err(AccountError::Password(PasswordError::Busy))) => {
                tracing::warn!(%peer, login, "authentication refused: too many password checks at once");
                AuthOutcome::TryLater("Too many authentications at once, try again in a moment")
            }
            Some(Err(e)) => {
                tracing::error!(error = %e, "cannot check a password");
                AuthOutcome::TryLater("Temporary authentication failure")
            }
            None => {
                tracing::error!("password check panicked");
                AuthOutcome::TryLater("Temporary authentication failure")
            }
        }
    }

    async fn failed(&self, peer: IpAddr, login: &str) -> AuthOutcome {
        let f = self.failures.clone();
        let delay = blocking(move || f.failed(peer)).await.unwrap_or(self.max_delay);
        tracing::info!(%peer, login, delay_ms = delay.as_millis() as u64, "authentication failed");
        tokio::time::sleep(delay).await;
        AuthOutcome::Rejected
    }
}
