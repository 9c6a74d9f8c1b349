//! The log a person reads on the console and the web page: every line
//! goes to a sink (the serial console on a box, standard error in a
//! process) and into a ring buffer that `status` and `log` show. On a box
//! services' output is fed in line by line with their name in front; in a
//! process the tracing output is ([`RingWriter`]).

use std::collections::VecDeque;
use std::fs::File;
use std::io::Write;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

/// Lines kept for `status` and `log`.
pub const RING_LINES: usize = 1000;
/// Longer lines are cut (a runaway service cannot fill memory).
pub const MAX_LINE: usize = 400;

struct Log {
    start: Instant,
    ring: Mutex<VecDeque<String>>,
    sink: Mutex<Option<File>>,
}

static LOG: OnceLock<Log> = OnceLock::new();

fn log() -> &'static Log {
    LOG.get_or_init(|| Log { start: Instant::now(), ring: Mutex::new(VecDeque::with_capacity(RING_LINES)), sink: Mutex::new(None) })
}

/// Sends the log to `f` (the console) from now on; without a sink lines go
/// to standard error.
pub fn set_sink(f: File) {
    if let Ok(mut s) = log().sink.lock() {
        *s = Some(f);
    }
}

/// Logs one line from `source` (`init`, a service name, ...).
pub fn line(source: &str, msg: &str) {
    let l = log();
    let t = l.start.elapsed();
    let mut text: String = msg.trim_end().chars().filter(|c| !c.is_control() || *c == '\t').take(MAX_LINE).collect();
    if text.is_empty() {
        return;
    }
    text = format!("[{:>5}.{:03}] {source}: {text}", t.as_secs(), t.subsec_millis());
    if let Ok(mut s) = l.sink.lock() {
        match s.as_mut() {
            Some(f) => {
                let _ = writeln!(f, "{text}");
            }
            None => eprintln!("{text}"),
        }
    }
    push(l, text);
}

/// The last `n` lines, oldest first.
pub fn tail(n: usize) -> Vec<String> {
    match log().ring.lock() {
        Ok(r) => r.iter().skip(r.len().saturating_sub(n)).cloned().collect(),
        Err(_) => Vec::new(),
    }
}

/// Keeps a line in the ring only (it was written elsewhere already).
pub fn keep(source: &str, msg: &str) {
    let l = log();
    let t = l.start.elapsed();
    let text: String = msg.trim_end().chars().filter(|c| !c.is_control() || *c == '\t').take(MAX_LINE).collect();
    if text.is_empty() {
        return;
    }
    push(l, format!("[{:>5}.{:03}] {source}: {text}", t.as_secs(), t.subsec_millis()));
}

fn push(l: &Log, text: String) {
    if let Ok(mut r) = l.ring.lock() {
        if r.len() == RING_LINES {
            r.pop_front();
        }
        r.push_back(text);
    }
}

/// A writer for a process's tracing output: what is written goes to
/// standard error as before, and each complete line into the ring, so the
/// web page of a node running as a process shows its log.
pub struct RingWriter {
    source: &'static str,
    partial: Vec<u8>,
}

impl RingWriter {
    pub fn new(source: &'static str) -> RingWriter {
        RingWriter { source, partial: Vec::new() }
    }
}

impl std::io::Write for RingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        std::io::stderr().write_all(buf)?;
        self.partial.extend_from_slice(buf);
        while let Some(i) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=i).collect();
            keep(self.source, &String::from_utf8_lossy(&line));
        }
        if self.partial.len() > MAX_LINE * 4 {
            let line = std::mem::take(&mut self.partial);
            keep(self.source, &String::from_utf8_lossy(&line));
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_keeps_the_last_lines() {
        for i in 0..(RING_LINES + 10) {
            line("test", &format!("line {i}\n"));
        }
        let t = tail(3);
        assert_eq!(t.len(), 3);
        assert!(t[2].ends_with(&format!("test: line {}", RING_LINES + 9)), "{t:?}");
        line("test", &"x".repeat(10_000));
        assert!(tail(1)[0].len() < MAX_LINE + 40);
        line("test", "bell\x07 and escape\x1b[31m");
        assert!(!tail(1)[0].contains('\x1b'));
    }
}
