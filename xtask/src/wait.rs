//! Bounded waiting: every wait in the xtask has a deadline.

use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// Calls `probe` every `interval` until it returns `Some`, or fails after
/// `timeout` saying what was awaited.
pub fn until<T>(what: &str, timeout: Duration, interval: Duration, mut probe: impl FnMut() -> Option<T>) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe() {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {:.0} s waiting for {what}", timeout.as_secs_f64());
        }
        sleep(interval);
    }
}

/// Runs a command to completion within `timeout` (killed after it),
/// capturing its output.
pub fn output(cmd: &mut Command, timeout: Duration) -> anyhow::Result<Output> {
    let name = format!("{:?}", cmd.get_program());
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().with_context(|| format!("cannot run {name}"))?;
    // Drain both pipes on threads so a chatty child cannot block on a full pipe.
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(o) = out.as_mut() {
            let _ = o.read_to_end(&mut v);
        }
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(e) = err.as_mut() {
            let _ = e.read_to_end(&mut v);
        }
        v
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{name} did not finish within {:.0} s", timeout.as_secs_f64());
        }
        sleep(Duration::from_millis(20));
    };
    Ok(Output { status, stdout: t_out.join().unwrap_or_default(), stderr: t_err.join().unwrap_or_default() })
}

/// Runs a command that must succeed within `timeout`; returns its stdout.
pub fn run(cmd: &mut Command, timeout: Duration) -> anyhow::Result<String> {
    let desc = format!("{:?}", cmd);
    let out = output(cmd, timeout)?;
    if !out.status.success() {
        bail!("{desc} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
