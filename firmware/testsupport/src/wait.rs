//! Waiting for a condition with a deadline, instead of sleeping and
//! hoping it holds.

use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

/// How often a condition is looked at again.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Polls `cond` every [`POLL_INTERVAL`] for up to `timeout`; true once it
/// holds.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Waits until `cond` holds, failing the test after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, cond: impl FnMut() -> bool) {
    assert!(wait_until(timeout, cond), "timed out after {timeout:?} waiting for {what}");
}

/// The first `Some` that `f` returns within `timeout`.
pub fn wait_some<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let mut out = None;
    wait_until(timeout, || {
        out = f();
        out.is_some()
    });
    out
}

/// The child's exit status, if it exits within `timeout`.
pub fn exit_within(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    wait_some(timeout, || child.try_wait().ok().flatten())
}

/// The value of `sample` once two samples `interval` apart agree (a
/// node done reading what was sent, memory no longer moving), or None if
/// it still changes after `timeout`.
pub fn settled<T: PartialEq>(timeout: Duration, interval: Duration, mut sample: impl FnMut() -> T) -> Option<T> {
    let end = Instant::now() + timeout;
    let mut last = sample();
    while Instant::now() < end {
        std::thread::sleep(interval);
        let now = sample();
        if now == last {
            return Some(now);
        }
        last = now;
    }
    None
}
