//! The system calls init needs that are more than one `nix` call: the
//! reaper that PID 1 and helper waits share, the signal mask, and signal
//! waits with a deadline.

use std::collections::HashMap;
use std::io;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::reboot::RebootMode;
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// How often [`wait_pid`] looks again.
const WAIT_POLL: Duration = Duration::from_millis(50);

pub fn sethostname(name: &str) -> io::Result<()> {
    Ok(nix::unistd::sethostname(name)?)
}

/// Flushes every filesystem's dirty data.
pub fn sync() {
    nix::unistd::sync()
}

/// reboot(2) with RB_POWER_OFF or RB_AUTOBOOT; returns only on failure.
pub fn reboot(mode: RebootMode) -> io::Error {
    match nix::sys::reboot::reboot(mode) {
        Ok(never) => match never {},
        Err(e) => e.into(),
    }
}

/// Ctrl-Alt-Del then makes the kernel send SIGINT to init instead of
/// rebooting at once (reboot(2), LINUX_REBOOT_CMD_CAD_OFF).
pub fn ctrl_alt_del_to_signal() -> io::Result<()> {
    Ok(nix::sys::reboot::set_cad_enabled(false)?)
}

/// kill(2) on a pid we started, or -1 for everyone but us.
pub fn kill(pid: i32, sig: Signal) -> bool {
    nix::sys::signal::kill(Pid::from_raw(pid), sig).is_ok()
}

/// How many processes other than init run (kernel threads, which have no
/// command line, do not count).
pub fn other_processes() -> usize {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    let name = e.file_name();
                    let n = name.to_string_lossy();
                    n.bytes().all(|b| b.is_ascii_digit()) && n != me && std::fs::read(e.path().join("cmdline")).is_ok_and(|c| !c.is_empty())
                })
                .count()
        })
        .unwrap_or(0)
}

/// Exit status as a shell shows it: the code, or 128 + the signal; None
/// for a child that has not ended.
fn decode_status(st: WaitStatus) -> Option<(i32, i32)> {
    match st {
        WaitStatus::Exited(pid, code) => Some((pid.as_raw(), code)),
        WaitStatus::Signaled(pid, sig, _) => Some((pid.as_raw(), 128 + sig as i32)),
        _ => None,
    }
}

/// Statuses reaped by PID 1's reaper for children that someone else is
/// waiting for with [`wait_pid`] (init reaps every child, its own and
/// orphans, with waitpid(-1)).
static REAPED: Mutex<Option<HashMap<i32, i32>>> = Mutex::new(None);
/// Unclaimed statuses kept (orphans nobody waits for are dropped).
const REAPED_KEEP: usize = 64;

/// Reaps every child that has exited; returns (pid, status).
pub fn reap_all() -> Vec<(i32, i32)> {
    let mut out = Vec::new();
    // StillAlive, or ECHILD: no child left to reap.
    while let Ok(st) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
        if st == WaitStatus::StillAlive {
            break;
        }
        let Some((pid, code)) = decode_status(st) else { continue };
        out.push((pid, code));
        if let Ok(mut m) = REAPED.lock() {
            let m = m.get_or_insert_with(HashMap::new);
            if m.len() >= REAPED_KEEP {
                m.clear();
            }
            m.insert(pid, code);
        }
    }
    out
}

/// Waits up to `timeout` for child `pid` to exit; its status, or None.
pub fn wait_pid(pid: i32, timeout: Duration) -> Option<i32> {
    let start = Instant::now();
    loop {
        if let Some((_, code)) = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)).ok().and_then(decode_status) {
            return Some(code);
        }
        if let Ok(mut m) = REAPED.lock() {
            if let Some(code) = m.as_mut().and_then(|m| m.remove(&pid)) {
                return Some(code);
            }
        }
        if start.elapsed() >= timeout {
            return None;
        }
        std::thread::sleep(WAIT_POLL);
    }
}

/// The signals PID 1 acts on. They are blocked in every thread (threads
/// inherit the mask) and taken with sigtimedwait by the main loop, which
/// also keeps the kernel from dropping them: PID 1 gets no signal that has
/// the default action unless it is blocked or handled.
pub const HANDLED_SIGNALS: &[Signal] = &[Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP, Signal::SIGUSR1, Signal::SIGUSR2, Signal::SIGPWR];

fn handled() -> SigSet {
    HANDLED_SIGNALS.iter().copied().collect()
}

/// Makes a child start with no blocked signals. Threads and children
/// inherit the signal mask, and std's spawn (posix_spawn) keeps it: without
/// this, `mailfort serve` would never see the SIGTERM that asks it to stop.
pub fn unblock_signals_in_child(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the child between fork and exec; it
    // allocates nothing, and sigemptyset and sigprocmask (all it calls) are
    // async-signal-safe and touch only the child's mask.
    unsafe {
        cmd.pre_exec(|| Ok(nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)?));
    }
}

pub fn block_signals() -> io::Result<()> {
    Ok(handled().thread_block()?)
}

/// Waits up to `timeout` for one of the handled signals.
pub fn wait_signal(timeout: Duration) -> Option<Signal> {
    let set = handled();
    let ts = libc::timespec { tv_sec: timeout.as_secs() as libc::time_t, tv_nsec: timeout.subsec_nanos() as libc::c_long };
    // SAFETY: nix has no sigtimedwait. `set` and `ts` are initialised and
    // live across the call; the siginfo pointer may be null.
    let r = unsafe { libc::sigtimedwait(set.as_ref(), std::ptr::null_mut(), &ts) };
    Signal::try_from(r).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn child_blocked_mask(clean: bool) -> String {
        let mut cmd = std::process::Command::new("/bin/grep");
        cmd.args(["^SigBlk:", "/proc/self/status"]);
        if clean {
            unblock_signals_in_child(&mut cmd);
        }
        let o = cmd.output().expect("run grep");
        String::from_utf8_lossy(&o.stdout).split_whitespace().nth(1).unwrap_or_default().to_string()
    }

    #[test]
    fn children_do_not_inherit_blocked_signals() {
        // Like PID 1: this thread blocks the handled signals, then spawns.
        let t = std::thread::spawn(|| {
            block_signals().unwrap();
            (child_blocked_mask(false), child_blocked_mask(true))
        });
        let (inherited, clean) = t.join().unwrap();
        assert_ne!(inherited, "0000000000000000", "the test no longer shows the inherited mask");
        assert_eq!(clean, "0000000000000000");
    }

    #[test]
    fn a_killed_child_is_reported_as_128_plus_the_signal() {
        let child = std::process::Command::new("/bin/sleep").arg("30").spawn().unwrap();
        let pid = child.id() as i32;
        assert!(kill(pid, Signal::SIGKILL));
        assert_eq!(wait_pid(pid, Duration::from_secs(10)), Some(128 + Signal::SIGKILL as i32));
        let ok = std::process::Command::new("/bin/sh").args(["-c", "exit 7"]).spawn().unwrap();
        assert_eq!(wait_pid(ok.id() as i32, Duration::from_secs(10)), Some(7));
    }

    #[test]
    fn a_blocked_signal_is_taken_by_wait_signal() {
        let t = std::thread::spawn(|| {
            block_signals().unwrap();
            // A signal sent to this thread alone.
            nix::sys::pthread::pthread_kill(nix::sys::pthread::pthread_self(), Signal::SIGUSR2).unwrap();
            (wait_signal(Duration::from_secs(5)), wait_signal(Duration::from_millis(10)))
        });
        assert_eq!(t.join().unwrap(), (Some(Signal::SIGUSR2), None));
    }
}
