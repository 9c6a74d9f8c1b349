//! Thin wrappers around the system calls init needs, each returning
//! io::Result instead of a C status.

use std::collections::HashMap;
use std::ffi::CString;
use std::io;
use std::sync::Mutex;
use std::time::{Duration, Instant};

fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// mount(2) with a text data argument (empty for none).
pub fn mount(src: &str, target: &str, fstype: &str, flags: libc::c_ulong, data: &str) -> io::Result<()> {
    let (s, t, f, d) = (cstr(src)?, cstr(target)?, cstr(fstype)?, cstr(data)?);
    let dp = if data.is_empty() { std::ptr::null() } else { d.as_ptr().cast() };
    // SAFETY: NUL-terminated strings alive for the call.
    check(unsafe { libc::mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), flags, dp) })
}

pub fn umount(target: &str) -> io::Result<()> {
    let t = cstr(target)?;
    // SAFETY: as above.
    check(unsafe { libc::umount2(t.as_ptr(), 0) })
}

pub fn sethostname(name: &str) -> io::Result<()> {
    // SAFETY: pointer and length describe `name`.
    check(unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) })
}

/// Flushes every filesystem's dirty data.
pub fn sync() {
    // SAFETY: no arguments.
    unsafe { libc::sync() }
}

/// reboot(2) with RB_POWER_OFF or RB_AUTOBOOT; returns only on failure.
pub fn reboot(cmd: libc::c_int) -> io::Error {
    // SAFETY: reboot takes a command constant.
    unsafe { libc::reboot(cmd) };
    io::Error::last_os_error()
}

/// Ctrl-Alt-Del then makes the kernel send SIGINT to init instead of
/// rebooting at once (reboot(2), LINUX_REBOOT_CMD_CAD_OFF).
pub fn ctrl_alt_del_to_signal() -> io::Result<()> {
    // SAFETY: as above.
    check(unsafe { libc::reboot(libc::RB_DISABLE_CAD) })
}

pub fn kill(pid: i32, sig: libc::c_int) -> bool {
    // SAFETY: kill(2) on a pid we started (or -1 for everyone but us).
    unsafe { libc::kill(pid, sig) == 0 }
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

/// Exit status as a shell shows it: the code, or 128 + the signal.
fn decode_status(st: libc::c_int) -> i32 {
    if libc::WIFEXITED(st) {
        libc::WEXITSTATUS(st)
    } else if libc::WIFSIGNALED(st) {
        128 + libc::WTERMSIG(st)
    } else {
        st
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
    loop {
        let mut st: libc::c_int = 0;
        // SAFETY: waitpid with a valid status pointer.
        let pid = unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG) };
        if pid <= 0 {
            break;
        }
        let code = decode_status(st);
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
        let mut st: libc::c_int = 0;
        // SAFETY: as above.
        let r = unsafe { libc::waitpid(pid, &mut st, libc::WNOHANG) };
        if r == pid {
            return Some(decode_status(st));
        }
        if let Ok(mut m) = REAPED.lock() {
            if let Some(code) = m.as_mut().and_then(|m| m.remove(&pid)) {
                return Some(code);
            }
        }
        if start.elapsed() >= timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The signals PID 1 acts on. They are blocked in every thread (threads
/// inherit the mask) and taken with sigtimedwait by the main loop, which
/// also keeps the kernel from dropping them: PID 1 gets no signal that has
/// the default action unless it is blocked or handled.
pub const HANDLED_SIGNALS: &[libc::c_int] = &[libc::SIGCHLD, libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGUSR1, libc::SIGUSR2, libc::SIGPWR];

fn sigset(sigs: &[libc::c_int]) -> libc::sigset_t {
    // SAFETY: sigset_t is plain data initialised by sigemptyset.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &s in sigs {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Makes a child start with no blocked signals. Threads and children
/// inherit the signal mask, and std's spawn (posix_spawn) keeps it: without
/// this, `mailfort serve` would never see the SIGTERM that asks it to stop.
pub fn unblock_signals_in_child(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: runs in the child between fork and exec; sigemptyset and
    // sigprocmask are async-signal-safe and touch only the child's mask.
    unsafe {
        cmd.pre_exec(|| {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            if libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

pub fn block_signals() -> io::Result<()> {
    let set = sigset(HANDLED_SIGNALS);
    // SAFETY: set is initialised; the old mask is not wanted.
    let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(r))
    }
}

/// Waits up to `timeout` for one of the handled signals.
pub fn wait_signal(timeout: Duration) -> Option<libc::c_int> {
    let set = sigset(HANDLED_SIGNALS);
    let ts = libc::timespec { tv_sec: timeout.as_secs() as libc::time_t, tv_nsec: timeout.subsec_nanos() as libc::c_long };
    // SAFETY: set and ts are initialised; info may be null.
    let r = unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &ts) };
    (r > 0).then_some(r)
}

pub fn signal_name(sig: libc::c_int) -> &'static str {
    match sig {
        libc::SIGCHLD => "SIGCHLD",
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGHUP => "SIGHUP",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPWR => "SIGPWR",
        _ => "signal",
    }
}

pub use admin::term::EchoOff;

/// Puts a serial line into the state a person at a terminal expects:
/// line editing, echo, CR to NL on input and NL to CR NL on output, 8N1.
/// The speed is left as the kernel set it from `console=ttyS0,115200`.
pub fn sane_terminal(fd: libc::c_int) {
    // SAFETY: as above.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(fd, &mut t) != 0 {
            return;
        }
        t.c_iflag |= libc::ICRNL | libc::IXON;
        t.c_iflag &= !(libc::INLCR | libc::IGNCR);
        t.c_oflag |= libc::OPOST | libc::ONLCR;
        t.c_lflag |= libc::ICANON | libc::ECHO | libc::ECHOE | libc::ECHOK;
        // No signals from the keyboard: a Ctrl-C on the console must not
        // reach init (which takes SIGINT as a power-off request).
        t.c_lflag &= !libc::ISIG;
        t.c_cflag |= libc::CS8 | libc::CREAD | libc::CLOCAL;
        libc::tcsetattr(fd, libc::TCSANOW, &t);
    }
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
}
