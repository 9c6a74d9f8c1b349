//! The box's log: every line goes to the serial console and into a ring
//! buffer that `status` and `log` show. Services' output is fed in line by
//! line with their name in front.

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
    if let Ok(mut r) = l.ring.lock() {
        if r.len() == RING_LINES {
            r.pop_front();
        }
        r.push_back(text);
    }
}

/// The last `n` lines, oldest first.
pub fn tail(n: usize) -> Vec<String> {
    match log().ring.lock() {
        Ok(r) => r.iter().skip(r.len().saturating_sub(n)).cloned().collect(),
        Err(_) => Vec::new(),
    }
}

/// Logs a formatted line from init itself.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => { $crate::log::line("init", &format!($($arg)*)) };
}

/// Logs a line that needs a person's attention, marked so it stands out
/// on the console and in `status`.
#[macro_export]
macro_rules! alarm {
    ($($arg:tt)*) => { $crate::log::line("init", &format!("*** {} ***", format!($($arg)*))) };
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
