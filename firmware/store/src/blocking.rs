//! Store I/O from async code. The store may hang (a hard NFS mount whose
//! server is gone), so no store call may run on an async worker thread:
//! async code runs them on the runtime's blocking pool and waits at most a
//! deadline ([`call`]), and what a `Drop` must still do in the store is
//! handed to the blocking pool too ([`off_async`]).

use std::time::Duration;

/// How long a session or a background task waits for one store call
/// before it gives up with a temporary error: far more than a healthy
/// store takes (an fsync of a large message over NFS under load takes
/// seconds), and well before a client's own timeouts (RFC 5321 4.5.3.2:
/// at least 2 minutes for most replies, 10 for the end of the data).
pub const STORE_CALL_DEADLINE: Duration = Duration::from_secs(30);

/// Why a store call made from async code gave no result.
#[derive(Debug, thiserror::Error)]
pub enum Unanswered {
    #[error("the store did not answer within {} ms", .0.as_millis())]
    Deadline(Duration),
    #[error("a store call failed: {0}")]
    Failed(String),
}

/// Runs `f` (store I/O) on the blocking pool and waits for it at most
/// `deadline`. Past the deadline the call goes on in its thread (a thread
/// stuck in the kernel cannot be stopped) but the caller is free: it gets
/// [`Unanswered::Deadline`] and its async thread was never blocked.
pub async fn call<T: Send + 'static>(deadline: Duration, f: impl FnOnce() -> T + Send + 'static) -> Result<T, Unanswered> {
    match tokio::time::timeout(deadline, tokio::task::spawn_blocking(f)).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Unanswered::Failed(e.to_string())),
        Err(_) => Err(Unanswered::Deadline(deadline)),
    }
}

/// Runs `f` (store I/O that nobody waits for: a release in a `Drop`) on
/// the blocking pool when called inside a tokio runtime, so that it never
/// blocks an async worker thread; outside a runtime, at once.
pub fn off_async(f: impl FnOnce() + Send + 'static) {
    match tokio::runtime::Handle::try_current() {
        Ok(h) => {
            drop(h.spawn_blocking(f));
        }
        Err(_) => f(),
    }
}
