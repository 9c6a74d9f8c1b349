//! Supervised services: a program init starts, logs, and restarts with
//! back-off when it exits (gokrazy's model). PID 1 reaps every child with
//! waitpid(-1) and tells the service whose pid it was.

use std::io::{self, BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

/// The first wait before a restart, doubled after each quick exit up to
/// the maximum; a service that ran for [`HEALTHY_AFTER`] starts over at the
/// first wait. A crashing service costs little and still comes back soon.
pub const RESTART_START: Duration = Duration::from_secs(1);
pub const RESTART_MAX: Duration = Duration::from_secs(60);
pub const HEALTHY_AFTER: Duration = Duration::from_secs(60);
/// How long a helper killed at its deadline gets to be reaped.
const KILLED_HELPER_WAIT: Duration = Duration::from_secs(2);

/// The wait before the next start, after a run of `ran_for` that followed
/// a wait of `previous`.
pub fn next_delay(previous: Option<Duration>, ran_for: Duration) -> Duration {
    match previous {
        _ if ran_for >= HEALTHY_AFTER => RESTART_START,
        None => RESTART_START,
        Some(p) => (p * 2).clamp(RESTART_START, RESTART_MAX),
    }
}

#[derive(Debug, Clone)]
pub struct ServiceSpec {
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<String>,
}

#[derive(Debug)]
pub struct Service {
    pub spec: ServiceSpec,
    pid: Option<i32>,
    started: Option<Instant>,
    restart_at: Option<Instant>,
    delay: Option<Duration>,
    pub restarts: u32,
    pub last_exit: Option<String>,
    /// False once init stops it: no more restarts.
    pub enabled: bool,
}

pub use admin::commands::ServiceView;

impl Service {
    pub fn new(spec: ServiceSpec) -> Service {
        Service { spec, pid: None, started: None, restart_at: Some(Instant::now()), delay: None, restarts: 0, last_exit: None, enabled: true }
    }

    pub fn pid(&self) -> Option<i32> {
        self.pid
    }

    /// Whether it should be started now.
    pub fn due(&self, now: Instant) -> bool {
        self.enabled && self.pid.is_none() && self.restart_at.is_some_and(|t| now >= t)
    }

    /// Starts the program with its output forwarded to the log.
    pub fn start(&mut self, now: Instant) {
        let mut cmd = Command::new(&self.spec.program);
        cmd.args(&self.spec.args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        crate::sys::unblock_signals_in_child(&mut cmd);
        match cmd.spawn() {
            Ok(mut child) => {
                let pid = child.id() as i32;
                let (out, err) = (child.stdout.take(), child.stderr.take());
                let (n1, n2) = (self.spec.name.clone(), self.spec.name.clone());
                let _ = std::thread::Builder::new().name(format!("{n1}-out")).spawn(move || forward_lines(&n1, out));
                let _ = std::thread::Builder::new().name(format!("{n2}-err")).spawn(move || forward_lines(&n2, err));
                // `child` is dropped without waiting: PID 1's reaper collects
                // the exit status with waitpid(-1).
                drop(child);
                crate::say!("started {} (pid {pid})", self.spec.name);
                self.pid = Some(pid);
                self.started = Some(now);
                self.restart_at = None;
            }
            Err(e) => {
                crate::say!("cannot start {}: {e}", self.spec.name);
                self.schedule_restart(now, Duration::ZERO);
                self.last_exit = Some(format!("could not start: {e}"));
            }
        }
    }

    /// Called when the reaper saw `pid` exit; true if it was this service.
    pub fn exited(&mut self, pid: i32, code: i32, now: Instant) -> bool {
        if self.pid != Some(pid) {
            return false;
        }
        let ran = self.started.map(|s| now.duration_since(s)).unwrap_or_default();
        self.pid = None;
        self.last_exit = Some(format!("exit status {code} after {}", human(ran)));
        if self.enabled {
            self.schedule_restart(now, ran);
            self.restarts += 1;
            crate::say!("{} exited with status {code} after {}; restarting in {}", self.spec.name, human(ran), human(self.delay.unwrap_or_default()));
        } else {
            crate::say!("{} stopped (status {code})", self.spec.name);
        }
        true
    }

    fn schedule_restart(&mut self, now: Instant, ran: Duration) {
        let d = next_delay(self.delay, ran);
        self.delay = Some(d);
        self.restart_at = Some(now + d);
    }

    /// Asks it to stop cleanly (SIGTERM) and start again: the reaper sees
    /// it exit and schedules the start as after any exit.
    pub fn restart(&mut self) {
        if let Some(pid) = self.pid {
            crate::sys::kill(pid, Signal::SIGTERM);
        } else {
            self.restart_at = Some(Instant::now());
            self.delay = None;
        }
    }

    /// Asks it to stop (SIGTERM: `mailfort serve` then finishes its SMTP
    /// transactions and leaves the live set) and never restarts it.
    pub fn stop(&mut self) {
        self.enabled = false;
        if let Some(pid) = self.pid {
            crate::say!("stopping {} (SIGTERM to pid {pid})", self.spec.name);
            crate::sys::kill(pid, Signal::SIGTERM);
        }
    }

    pub fn view(&self, now: Instant) -> ServiceView {
        let state = match (self.pid, self.restart_at) {
            (Some(pid), _) => format!("running, pid {pid}, up {}", human(self.started.map(|s| now.duration_since(s)).unwrap_or_default())),
            (None, Some(t)) if self.enabled => format!("restarting in {}", human(t.saturating_duration_since(now))),
            _ => "stopped".into(),
        };
        ServiceView { name: self.spec.name.clone(), state, restarts: self.restarts, last_exit: self.last_exit.clone() }
    }
}

/// Runs a helper program (mkfs.btrfs) to its end, its output in the log
/// under `name`: its exit status, or None when it did not finish within
/// `timeout` (it is then killed). On the box PID 1's reaper may collect the
/// status first; [`crate::sys::wait_pid`] looks there too.
pub fn run_helper(mut cmd: Command, name: &str, timeout: Duration) -> io::Result<Option<i32>> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    crate::sys::unblock_signals_in_child(&mut cmd);
    let mut child = cmd.spawn()?;
    let pid = child.id() as i32;
    let (out, err) = (child.stdout.take(), child.stderr.take());
    let (n1, n2) = (name.to_string(), name.to_string());
    let t1 = std::thread::spawn(move || forward_lines(&n1, out));
    let t2 = std::thread::spawn(move || forward_lines(&n2, err));
    let status = crate::sys::wait_pid(pid, timeout);
    if status.is_none() {
        // Killed before its output is drained: the readers end only when
        // the helper's pipes close.
        crate::sys::kill(pid, Signal::SIGKILL);
        let _ = crate::sys::wait_pid(pid, KILLED_HELPER_WAIT);
    }
    let _ = (t1.join(), t2.join());
    Ok(status)
}

/// `1h2m`, `3m4s`, `5s`.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{}s", s / 60, s % 60),
        3600..=86399 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{}h", s / 86400, (s % 86400) / 3600),
    }
}

/// Copies a child's output into the log, line by line, with its name.
pub fn forward_lines<R: Read>(name: &str, r: Option<R>) {
    let Some(r) = r else { return };
    let mut reader = BufReader::new(r);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        // Bounded: a line longer than the log keeps is cut there and the
        // rest is read as further lines.
        match reader.by_ref().take(crate::log::MAX_LINE as u64 * 4).read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf);
                // `mailfort serve` prints `ready node=... smtp=...` once it
                // listens; the console shows it as `mailfort: ready ...`,
                // the line the system test waits for.
                let source = if line.starts_with("ready ") { "mailfort" } else { name };
                crate::log::line(source, &line)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_off_doubles_and_resets() {
        let quick = Duration::from_millis(100);
        let mut d = next_delay(None, quick);
        assert_eq!(d, RESTART_START);
        let mut seen = vec![d];
        for _ in 0..10 {
            d = next_delay(Some(d), quick);
            seen.push(d);
        }
        assert_eq!(seen[1], RESTART_START * 2);
        assert_eq!(*seen.last().unwrap(), RESTART_MAX);
        assert_eq!(next_delay(Some(RESTART_MAX), HEALTHY_AFTER), RESTART_START);
    }

    #[test]
    fn a_crashing_service_is_restarted_with_back_off() {
        let spec = ServiceSpec { name: "false".into(), program: "/bin/false".into(), args: vec![] };
        let mut s = Service::new(spec);
        let t0 = Instant::now();
        assert!(s.due(t0));
        s.start(t0);
        let pid = s.pid().expect("started");
        let code = crate::sys::wait_pid(pid, Duration::from_secs(10)).expect("exits");
        assert_eq!(code, 1);
        assert!(!s.exited(pid + 100_000, 0, t0));
        assert!(s.exited(pid, code, t0 + quick()));
        assert_eq!(s.restarts, 1);
        assert!(!s.due(t0 + quick()));
        assert!(s.due(t0 + quick() + RESTART_START));
        assert!(s.view(t0 + quick()).state.starts_with("restarting in"));
        s.stop();
        assert!(!s.due(t0 + RESTART_MAX * 2));
        assert_eq!(s.view(t0).state, "stopped");
    }

    fn quick() -> Duration {
        Duration::from_millis(10)
    }

    #[test]
    fn human_durations() {
        assert_eq!(human(Duration::from_secs(5)), "5s");
        assert_eq!(human(Duration::from_secs(125)), "2m5s");
        assert_eq!(human(Duration::from_secs(7300)), "2h1m");
        assert_eq!(human(Duration::from_secs(90000)), "1d1h");
    }
}
