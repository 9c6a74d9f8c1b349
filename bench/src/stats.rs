//! Percentiles and a /proc based memory sampler.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Nearest-rank percentile of sorted samples, in milliseconds.
pub fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    let idx = rank.clamp(1, sorted.len()) - 1;
    sorted[idx].as_secs_f64() * 1000.0
}

#[derive(Default, Clone, Copy)]
pub struct Mem {
    pub peak_rss_kib: u64,
    pub hwm_kib: u64,
    pub samples: u64,
}

/// Samples VmRSS and VmHWM of `pid` every 100 ms until `stop` is set.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    handle: tokio::task::JoinHandle<Mem>,
}

fn read_status(pid: u32) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        s.lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    Some((field("VmRSS:")?, field("VmHWM:").unwrap_or(0)))
}

impl Sampler {
    pub fn start(pid: u32) -> anyhow::Result<Sampler> {
        if read_status(pid).is_none() {
            anyhow::bail!("cannot read VmRSS of process {pid} (no such process?)");
        }
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let handle = tokio::spawn(async move {
            let mut mem = Mem::default();
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                match read_status(pid) {
                    Some((rss, hwm)) => {
                        mem.peak_rss_kib = mem.peak_rss_kib.max(rss);
                        mem.hwm_kib = mem.hwm_kib.max(hwm);
                        mem.samples += 1;
                    }
                    None => break, // the process is gone
                }
                if s.load(Ordering::Relaxed) {
                    break;
                }
            }
            mem
        });
        Ok(Sampler { stop, handle })
    }

    pub async fn finish(self) -> Mem {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.await.unwrap_or_default()
    }
}

pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Memory of a process and all its descendants: summed VmRSS (KiB, shared
/// pages counted in every process) and Pss (shared pages split among the
/// processes sharing them), and how many processes.
#[derive(Default, Clone, Copy, Debug)]
pub struct TreeMem {
    pub rss_kib: u64,
    pub pss_kib: u64,
    pub procs: u64,
}

fn status_field(pid: u32, file: &str, name: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok()?;
    s.lines().find(|l| l.starts_with(name))?.split_whitespace().nth(1)?.parse().ok()
}

/// The process `root` and its descendants (from /proc/*/stat).
pub fn tree_pids(root: u32) -> Vec<u32> {
    let mut parent = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
            // pid (comm) state ppid ...: comm may hold spaces and parens.
            let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else { continue };
            if let Some(ppid) = after.split_whitespace().nth(1).and_then(|s| s.parse::<u32>().ok()) {
                parent.push((pid, ppid));
            }
        }
    }
    let mut keep = vec![root];
    loop {
        let before = keep.len();
        for &(pid, ppid) in &parent {
            if keep.contains(&ppid) && !keep.contains(&pid) {
                keep.push(pid);
            }
        }
        if keep.len() == before {
            return keep;
        }
    }
}

pub fn tree_mem(root: u32) -> TreeMem {
    let mut m = TreeMem::default();
    for pid in tree_pids(root) {
        if let Some(rss) = status_field(pid, "status", "VmRSS:") {
            m.rss_kib += rss;
            m.procs += 1;
            m.pss_kib += status_field(pid, "smaps_rollup", "Pss:").unwrap_or(0);
        }
    }
    m
}

/// Median of unsorted samples in milliseconds (0 when empty).
pub fn median_ms(v: &[Duration]) -> f64 {
    let mut s = v.to_vec();
    s.sort();
    percentile_ms(&s, 50.0)
}
