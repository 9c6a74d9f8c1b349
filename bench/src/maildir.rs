//! Checks a Maildir for the messages a run got accepted.

use crate::msg::{self, Check};
use anyhow::{Context, Result};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

pub struct Verdict {
    /// Accepted messages found at least once.
    pub present: u64,
    pub missing: u64,
    /// Extra copies of messages of this run (beyond the first).
    pub duplicates: u64,
    /// Messages of this run whose body hash does not match.
    pub corrupt: u64,
    /// Refused messages that were stored anyway.
    pub unexpected: u64,
    /// Messages neither accepted nor refused (connection lost) that were stored.
    pub uncertain_found: u64,
    /// When the last accepted message was first seen.
    pub complete_at: Instant,
}

/// One file already read: its token (of this run) and whether it is intact.
type Seen = Option<(String, bool)>;

/// Scans `dir/new` and `dir/cur`, re-reading only files not seen before
/// (keyed by the unique part of the name, before `:`, so a move from new/
/// to cur/ is not counted twice). Polls until every accepted message is
/// there or `wait` has passed.
pub async fn verify(
    dir: &Path,
    run_id: &str,
    accepted: &HashSet<String>,
    rejected: &HashSet<String>,
    wait: Duration,
) -> Result<Verdict> {
    let deadline = Instant::now() + wait;
    let mut files: HashMap<String, Seen> = HashMap::new();
    loop {
        scan(dir, run_id, &mut files)?;
        let found: HashSet<&str> = files
            .values()
            .flatten()
            .map(|(t, _)| t.as_str())
            .filter(|t| accepted.contains(*t))
            .collect();
        let now = Instant::now();
        if found.len() == accepted.len() || now >= deadline {
            // Let a late duplicate show up: one more scan after a short pause.
            let complete_at = now;
            if found.len() == accepted.len() {
                tokio::time::sleep(Duration::from_millis(300)).await;
                scan(dir, run_id, &mut files)?;
            }
            return Ok(tally(files, accepted, rejected, complete_at));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn tally(
    files: HashMap<String, Seen>,
    accepted: &HashSet<String>,
    rejected: &HashSet<String>,
    complete_at: Instant,
) -> Verdict {
    let mut count: HashMap<String, u64> = HashMap::new();
    let mut corrupt = 0;
    for (tok, intact) in files.into_values().flatten() {
        if !intact {
            corrupt += 1;
        }
        *count.entry(tok).or_default() += 1;
    }
    let mut v = Verdict {
        present: 0,
        missing: 0,
        duplicates: 0,
        corrupt,
        unexpected: 0,
        uncertain_found: 0,
        complete_at,
    };
    for (tok, n) in &count {
        v.duplicates += n - 1;
        if accepted.contains(tok) {
            v.present += 1;
        } else if rejected.contains(tok) {
            v.unexpected += 1;
        } else {
            v.uncertain_found += 1;
        }
    }
    v.missing = accepted.len() as u64 - v.present;
    v
}

fn scan(dir: &Path, run_id: &str, files: &mut HashMap<String, Seen>) -> Result<()> {
    for sub in ["new", "cur"] {
        let d = dir.join(sub);
        let entries = match std::fs::read_dir(&d) {
            Ok(e) => e,
            // The Maildir may not exist before the first delivery.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("read {}", d.display())),
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let key = name.split(':').next().unwrap_or(&name).to_string();
            if files.contains_key(&key) {
                continue;
            }
            let raw = match std::fs::read(entry.path()) {
                Ok(r) => r,
                // Moved from new/ to cur/ between listing and reading.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(e).with_context(|| format!("read {}", entry.path().display()))
                }
            };
            let seen = match msg::check(&raw) {
                Check::Bench { token, intact } if msg::token_run(&token) == Some(run_id) => {
                    Some((token, intact))
                }
                _ => None,
            };
            files.insert(key, seen);
        }
    }
    Ok(())
}
