//! Message counters for status pages: per node, the messages received and
//! delivered out in each minute of the last hour.
//!
//! Each node counts in memory ([`StatsRecorder`]) and writes its counts to
//! `<store>/stats/<node>` now and then ([`STATS_FLUSH_INTERVAL`]) and when it
//! stops. The file is replaced atomically but not fsynced: a crash may lose
//! the last few seconds of counts, never mail. Minutes are those of the
//! store's clock (`Store::now`), so the nodes' files line up with one
//! another; anyone reads all of them with [`read_last_hour`].

use std::fs;
use std::io;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::fsutil;
use crate::store::{io_err, Store, StoreError};

/// Minutes kept per node: one hour.
pub const STATS_MINUTES: usize = 60;
/// How often a running node writes its counts at most.
pub const STATS_FLUSH_INTERVAL: Duration = Duration::from_secs(10);
/// The directory of the counts under the store's root.
pub const STATS_DIR: &str = crate::layout::STATS;
const SECS_PER_MINUTE: i64 = 60;
/// Counts stamped up to this many minutes after the reader's `now` are
/// taken as the current minute: writers and readers all use the store's
/// clock, but read it at different moments.
const FUTURE_TOLERANCE_MINUTES: u64 = 1;

/// One node's counts. Index `STATS_MINUTES - 1` is the current minute,
/// index 0 the minute an hour minus one minute ago.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStats {
    pub node: String,
    /// Messages accepted (250 after the data), once per message.
    pub inbound: [u64; STATS_MINUTES],
    /// Recipients accepted by another domain's server.
    pub outbound: [u64; STATS_MINUTES],
}

/// The file's form.
#[derive(Debug, Serialize, Deserialize)]
struct StatsFile {
    node: String,
    /// The minute (since the epoch, store's clock) of the last entry.
    minute: u64,
    inbound: Vec<u64>,
    outbound: Vec<u64>,
}

/// A window of `STATS_MINUTES` per-minute counters ending at `minute`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Buckets {
    minute: u64,
    inbound: [u64; STATS_MINUTES],
    outbound: [u64; STATS_MINUTES],
}

impl Buckets {
    fn new(minute: u64) -> Buckets {
        Buckets { minute, inbound: [0; STATS_MINUTES], outbound: [0; STATS_MINUTES] }
    }

    /// Moves the window forward so that it ends at `minute`; counts older
    /// than the window fall off. Never moves back.
    fn roll_to(&mut self, minute: u64) {
        if minute <= self.minute {
            return;
        }
        let shift = minute - self.minute;
        if shift >= STATS_MINUTES as u64 {
            self.inbound = [0; STATS_MINUTES];
            self.outbound = [0; STATS_MINUTES];
        } else {
            let shift = shift as usize;
            for a in [&mut self.inbound, &mut self.outbound] {
                a.rotate_left(shift);
                a[STATS_MINUTES - shift..].fill(0);
            }
        }
        self.minute = minute;
    }

    /// The slot of `minute`, if it lies in the window.
    fn index(&self, minute: u64) -> Option<usize> {
        let age = self.minute.checked_sub(minute)?;
        (age < STATS_MINUTES as u64).then(|| STATS_MINUTES - 1 - age as usize)
    }

    /// Counts at `minute`: a later minute moves the window, one before the
    /// window is dropped.
    fn add(&mut self, minute: u64, inbound: u64, outbound: u64) {
        self.roll_to(minute);
        if let Some(i) = self.index(minute) {
            self.inbound[i] = self.inbound[i].saturating_add(inbound);
            self.outbound[i] = self.outbound[i].saturating_add(outbound);
        }
    }

    /// The minute of slot `i`.
    fn minute_of(&self, i: usize) -> Option<u64> {
        self.minute.checked_sub((STATS_MINUTES - 1 - i) as u64)
    }

    fn to_file(&self, node: &str) -> StatsFile {
        StatsFile { node: node.to_string(), minute: self.minute, inbound: self.inbound.to_vec(), outbound: self.outbound.to_vec() }
    }

    fn from_file(f: &StatsFile) -> Option<Buckets> {
        Some(Buckets { minute: f.minute, inbound: f.inbound.as_slice().try_into().ok()?, outbound: f.outbound.as_slice().try_into().ok()? })
    }
}

/// Seconds since the epoch, negative before it.
fn unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

fn minute_of_secs(secs: i64) -> u64 {
    u64::try_from(secs.div_euclid(SECS_PER_MINUTE)).unwrap_or(0)
}

fn stats_path(store: &Store, node: &str) -> PathBuf {
    store.layout().stats_file(node)
}

/// Reads one node's file; None when it is missing or not a valid file of
/// that node.
fn read_file(store: &Store, node: &str) -> Result<Option<Buckets>, StoreError> {
    let path = stats_path(store, node);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            tracing::warn!(path = %path.display(), "message counts are not UTF-8; ignored");
            return Ok(None);
        }
        Err(e) => return Err(StoreError::Io { path, source: e }),
    };
    let parsed = toml::from_str::<StatsFile>(&text).ok().filter(|f| f.node == node).and_then(|f| Buckets::from_file(&f));
    if parsed.is_none() {
        tracing::warn!(path = %path.display(), "unreadable message counts; ignored");
    }
    Ok(parsed)
}

/// Every node's counts for the hour that ends in the minute of `now` (by
/// the store's clock), sorted by node name. Minutes older than the hour
/// are dropped; a node with no count left in the hour is still listed
/// (with zeros) while its file exists. A corrupt file is skipped.
pub fn read_last_hour(store: &Store, now: SystemTime) -> Result<Vec<NodeStats>, StoreError> {
    let dir = store.layout().stats_dir();
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::Io { path: dir, source: e }),
    };
    let now_minute = minute_of_secs(unix_secs(now));
    let mut out = Vec::new();
    for e in entries {
        let e = e.map_err(io_err(&dir))?;
        let name = e.file_name();
        // Temporary files of atomic writes begin with a dot.
        let Some(node) = name.to_str().filter(|n| !n.starts_with('.')) else { continue };
        let file = match read_file(store, node) {
            Ok(Some(b)) => b,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read message counts; skipped");
                continue;
            }
        };
        let mut hour = Buckets::new(now_minute);
        for i in 0..STATS_MINUTES {
            let Some(minute) = file.minute_of(i) else { continue };
            let at = if minute > now_minute && minute - now_minute <= FUTURE_TOLERANCE_MINUTES { now_minute } else { minute };
            if let Some(j) = hour.index(at) {
                hour.inbound[j] = hour.inbound[j].saturating_add(file.inbound[i]);
                hour.outbound[j] = hour.outbound[j].saturating_add(file.outbound[i]);
            }
        }
        out.push(NodeStats { node: node.to_string(), inbound: hour.inbound, outbound: hour.outbound });
    }
    out.sort_by(|a, b| a.node.cmp(&b.node));
    Ok(out)
}

struct Inner {
    buckets: Buckets,
    /// The store's clock minus ours, seconds, as of the last flush: counts
    /// are stamped by the store's clock without asking the store each time.
    offset: i64,
    /// Counts recorded so far, and as of the last write.
    changes: u64,
    written: Option<u64>,
}

/// A node's counters. Counting is a short lock and no I/O; [`flush`]
/// writes them to the store.
///
/// [`flush`]: StatsRecorder::flush
pub struct StatsRecorder {
    node: String,
    inner: Mutex<Inner>,
    /// One write at a time, so an older snapshot never replaces a newer.
    write: Mutex<()>,
}

impl StatsRecorder {
    /// A recorder for `node` with no counts, on this machine's clock until
    /// the first flush learns the store's.
    pub fn new(node: &str) -> StatsRecorder {
        let minute = minute_of_secs(unix_secs(SystemTime::now()));
        StatsRecorder { node: node.to_string(), inner: Mutex::new(Inner { buckets: Buckets::new(minute), offset: 0, changes: 0, written: None }), write: Mutex::new(()) }
    }

    /// A recorder for `node` that goes on from the counts in its file, so
    /// that a restart keeps the hour's history. A corrupt file is ignored.
    pub fn open(store: &Store, node: &str) -> Result<StatsRecorder, StoreError> {
        let now = store.now(node)?;
        let r = StatsRecorder::new(node);
        {
            let mut i = r.lock();
            i.offset = unix_secs(now) - unix_secs(SystemTime::now());
            if let Some(b) = read_file(store, node)? {
                i.buckets = b;
            }
            i.buckets.roll_to(minute_of_secs(unix_secs(now)));
        }
        Ok(r)
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One message received.
    pub fn count_in(&self) {
        self.count(1, 0);
    }

    /// `n` recipients delivered to other servers.
    pub fn count_out(&self, n: u64) {
        self.count(0, n);
    }

    fn count(&self, inbound: u64, outbound: u64) {
        let mut i = self.lock();
        let secs = unix_secs(SystemTime::now()).saturating_add(i.offset);
        i.buckets.add(minute_of_secs(secs), inbound, outbound);
        i.changes += 1;
    }

    /// The counts as they stand, for the hour ending now (this machine's
    /// clock corrected to the store's at the last flush).
    pub fn snapshot(&self) -> NodeStats {
        let mut i = self.lock();
        let secs = unix_secs(SystemTime::now()).saturating_add(i.offset);
        i.buckets.roll_to(minute_of_secs(secs));
        NodeStats { node: self.node.clone(), inbound: i.buckets.inbound, outbound: i.buckets.outbound }
    }

    /// Writes the counts to `<store>/stats/<node>` if they changed since the
    /// last write (always the first time), and learns the store's clock.
    pub fn flush(&self, store: &Store) -> Result<(), StoreError> {
        let now = store.now(&self.node)?;
        self.flush_at(store, now)
    }

    /// [`flush`](Self::flush) with the store's time given.
    fn flush_at(&self, store: &Store, store_now: SystemTime) -> Result<(), StoreError> {
        let _one = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let (text, changes) = {
            let mut i = self.lock();
            i.offset = unix_secs(store_now) - unix_secs(SystemTime::now());
            i.buckets.roll_to(minute_of_secs(unix_secs(store_now)));
            if i.written == Some(i.changes) {
                return Ok(());
            }
            let f = i.buckets.to_file(&self.node);
            let text = toml::to_string(&f).map_err(|e| StoreError::Io { path: stats_path(store, &self.node), source: io::Error::other(e) })?;
            (text, i.changes)
        };
        let dir = store.layout().stats_dir();
        if !dir.is_dir() {
            fsutil::create_dir_durable(&dir).map_err(io_err(&dir))?;
        }
        let path = stats_path(store, &self.node);
        fsutil::write_atomic_nosync(&path, text.as_bytes()).map_err(io_err(&path))?;
        self.lock().written = Some(changes);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at_minute(m: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(m * 60 + 30)
    }

    #[test]
    fn buckets_roll() {
        let mut b = Buckets::new(1000);
        b.add(1000, 2, 1);
        assert_eq!((b.inbound[STATS_MINUTES - 1], b.outbound[STATS_MINUTES - 1]), (2, 1));
        // The next minute: the count moves one slot toward the past.
        b.add(1001, 1, 0);
        assert_eq!(b.minute, 1001);
        assert_eq!(&b.inbound[STATS_MINUTES - 2..], &[2, 1]);
        assert_eq!(b.outbound[STATS_MINUTES - 2], 1);
        // A late count for a minute inside the window lands in its slot;
        // one for a minute before the window is dropped.
        b.add(1000, 5, 0);
        assert_eq!(b.inbound[STATS_MINUTES - 2], 7);
        b.add(1001 - STATS_MINUTES as u64, 9, 9);
        assert_eq!(b.inbound.iter().sum::<u64>(), 8);
        assert_eq!(b.minute, 1001, "an old count does not move the window back");
        // The oldest slot is still in the hour; one more minute drops it.
        b.roll_to(1000 + STATS_MINUTES as u64 - 1);
        assert_eq!(b.inbound[0], 7);
        b.roll_to(1000 + STATS_MINUTES as u64);
        assert_eq!(b.inbound[0], 1);
        assert_eq!(b.inbound.iter().sum::<u64>(), 1);
        // A jump of more than the window clears everything.
        b.roll_to(5000);
        assert_eq!(b, Buckets::new(5000));
    }

    #[test]
    fn read_last_hour_aligns_nodes_and_drops_old_minutes() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::init(&dir.path().join("s"), "example.test", None).unwrap();
        assert!(read_last_hour(&s, at_minute(100)).unwrap().is_empty(), "no stats directory yet");

        let b = StatsRecorder::new("node-b");
        {
            let mut i = b.lock();
            i.buckets = Buckets::new(100);
            i.buckets.add(100, 3, 2);
            i.buckets.add(90, 1, 0);
            i.changes = 2;
        }
        b.flush_at(&s, at_minute(100)).unwrap();
        let a = StatsRecorder::new("node-a");
        {
            let mut i = a.lock();
            i.buckets = Buckets::new(95);
            i.buckets.add(95, 0, 4);
        }
        a.flush_at(&s, at_minute(95)).unwrap();
        // Debris that must not stop the others: a corrupt file, a file of
        // the wrong length, a leftover temporary file.
        fs::write(s.root().join(STATS_DIR).join("broken"), "node = \"broken\"\nminute = [").unwrap();
        fs::write(s.root().join(STATS_DIR).join("short"), "node = \"short\"\nminute = 1\ninbound = [1]\noutbound = [1]\n").unwrap();
        fs::write(s.root().join(STATS_DIR).join(".node-c.tmp.1.2"), "x").unwrap();

        let now = at_minute(105);
        let got = read_last_hour(&s, now).unwrap();
        assert_eq!(got.iter().map(|n| n.node.as_str()).collect::<Vec<_>>(), ["node-a", "node-b"]);
        let last = STATS_MINUTES - 1;
        // node-a's minute 95 is 10 minutes before now.
        assert_eq!(got[0].outbound[last - 10], 4);
        assert_eq!(got[0].outbound.iter().sum::<u64>(), 4);
        assert_eq!(got[0].inbound.iter().sum::<u64>(), 0);
        // node-b: minute 100 is 5 minutes back, minute 90 is 15.
        assert_eq!(got[1].inbound[last - 5], 3);
        assert_eq!(got[1].outbound[last - 5], 2);
        assert_eq!(got[1].inbound[last - 15], 1);

        // 51 minutes on, node-b's minute 90 (61 minutes back) is gone.
        let got = read_last_hour(&s, at_minute(151)).unwrap();
        assert_eq!(got[1].inbound.iter().sum::<u64>(), 3);
        assert_eq!(got[1].inbound[last - 51], 3);
        // Two hours on, nothing is left but the nodes are still listed.
        let got = read_last_hour(&s, at_minute(220)).unwrap();
        assert_eq!(got.len(), 2);
        assert!(got.iter().all(|n| n.inbound.iter().chain(&n.outbound).all(|&c| c == 0)));
        // A reader whose clock is a minute behind the writer sees the
        // writer's newest counts as the current minute.
        let got = read_last_hour(&s, at_minute(99)).unwrap();
        assert_eq!(got[1].inbound[last], 3);
    }

    #[test]
    fn recorder_counts_flushes_and_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::init(&dir.path().join("s"), "example.test", None).unwrap();
        let r = StatsRecorder::open(&s, "n1").unwrap();
        r.count_in();
        r.count_in();
        r.count_out(3);
        let snap = r.snapshot();
        assert_eq!((snap.inbound.iter().sum::<u64>(), snap.outbound.iter().sum::<u64>()), (2, 3));
        r.flush(&s).unwrap();
        let path = s.root().join(STATS_DIR).join("n1");
        let written = fs::metadata(&path).unwrap().modified().unwrap();
        // Nothing new: no write.
        std::thread::sleep(Duration::from_millis(20));
        r.flush(&s).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().modified().unwrap(), written);

        let now = s.now("reader").unwrap();
        let got = read_last_hour(&s, now).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].inbound.iter().sum::<u64>(), 2);
        assert_eq!(got[0].outbound.iter().sum::<u64>(), 3);

        // A restart goes on from the file.
        drop(r);
        let r = StatsRecorder::open(&s, "n1").unwrap();
        r.count_in();
        r.flush(&s).unwrap();
        let got = read_last_hour(&s, s.now("reader").unwrap()).unwrap();
        assert_eq!(got[0].inbound.iter().sum::<u64>(), 3);
    }
}
