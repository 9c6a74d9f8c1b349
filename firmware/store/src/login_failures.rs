//! Failed logins per client address and per network (IPv4 /24, IPv6 /64),
//! counted across sessions, services and nodes: SMTP AUTH, POP3 and the
//! admin page all record their failures here, so a client that opens many
//! sessions, or tries many nodes, is slowed down and then refused as one.
//!
//! ```text
//! <store>/cluster/login-failures/<writer>   one writer's failures
//! ```
//!
//! Each writer (a node's mail daemon, a node's admin page) counts in
//! memory and writes its whole table to its own file, replaced atomically
//! (no lock between nodes); everyone reads every writer's file and adds the
//! counts up. A client is refused, without its password being checked
//! (no argon2 work), while
//! - its address has [`Policy::max_address`] failures in the window, or
//! - its network has [`Policy::max_network`] failures in the window, or
//! - its last failure is younger than the delay its failures earn (doubling
//!   from [`Policy::delay_start`] to [`Policy::delay_max`]).
//!
//! Times are the store's clock (learnt from the mtimes of our own files),
//! so nodes with different clocks agree on windows.
//!
//! Every store access runs on one I/O thread per table and is waited for
//! at most [`STORE_DEADLINE`]: a store that does not answer never holds a
//! login longer than that, and while the thread is stuck nobody waits at
//! all; the counts this process has (its own, and what it last read of the
//! others') still apply. Sizes are bounded: [`MAX_ENTRIES`] per table (the
//! stalest go first), [`MAX_FILE_BYTES`] read per file, [`MAX_WRITERS`]
//! files read.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs;
use std::io::{self, Read};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::fsutil::{self, FileStamp};

/// The directory of the failure files, under the store's root.
pub const FAILURES_DIR: &str = crate::layout::LOGIN_FAILURES;
/// Failures count for this long after the first one of a series.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Failures from one address within the window after which every login
/// from it is refused until the window passes.
pub const MAX_ADDRESS_FAILURES: u32 = 10;
/// Failures from one network within the window after which every login
/// from it is refused (a client with many addresses is still one client).
pub const MAX_NETWORK_FAILURES: u32 = 30;
/// Entries (addresses and networks) one writer keeps at most; at the limit
/// the one whose last failure is oldest goes. About 70 bytes each in the
/// file.
pub const MAX_ENTRIES: usize = 4096;
/// Bytes read at most from one writer's file (more than [`MAX_ENTRIES`]
/// lines take); the rest of a longer file is ignored.
pub const MAX_FILE_BYTES: u64 = 512 * 1024;
/// Writers' files read at most (nodes times services, with room).
pub const MAX_WRITERS: usize = 64;
/// How much of a delay may be left when a new attempt is still let
/// through: the store's clock is estimated from file mtimes, which the
/// kernel takes from a coarse clock (a few ms behind), and a client that
/// waited out its delay must not be refused for that.
pub const DELAY_GRACE_MS: i64 = 50;
/// Other writers' files are read again when the copy is older than this.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(1);
/// How long a login waits for the store (reading the others' failures,
/// writing its own) before it goes on with what this process knows.
pub const STORE_DEADLINE: Duration = Duration::from_secs(2);
/// Warnings about a store that fails are logged at most this often.
const WARN_INTERVAL: Duration = Duration::from_secs(60);
/// The first line of a failure file.
const FILE_HEADER: &str = "mailfort-login-failures 1";

/// How failures turn into refusals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub delay_start: Duration,
    pub delay_max: Duration,
    pub max_address: u32,
    pub max_network: u32,
    pub window: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy { delay_start: Duration::from_secs(1), delay_max: Duration::from_secs(30), max_address: MAX_ADDRESS_FAILURES, max_network: MAX_NETWORK_FAILURES, window: FAILURE_WINDOW }
    }
}

impl Policy {
    /// The delay after `failures` failures in a row: none for none, then
    /// `delay_start`, doubling, at most `delay_max`.
    pub fn delay_after(&self, failures: u32) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        let doublings = (failures - 1).min(30);
        self.delay_start.saturating_mul(1u32 << doublings).min(self.delay_max)
    }
}

/// Why a login was refused without a look at the password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The delay after the address's last failure has not run out.
    Delay,
    /// Too many failures from the address.
    Address,
    /// Too many failures from the address's network.
    Network,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    Refused { why: Refusal, retry_after: Duration },
}

/// What failures are counted under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    Address(IpAddr),
    Network(IpAddr),
}

impl Key {
    fn address(ip: IpAddr) -> Key {
        Key::Address(ip.to_canonical())
    }

    fn network(ip: IpAddr) -> Key {
        Key::Network(crate::peer::network(ip))
    }

    fn to_line(self, e: &Entry, out: &mut String) {
        let _ = match self {
            Key::Address(ip) => writeln!(out, "a {ip} {} {} {}", e.first_ms, e.last_ms, e.count),
            Key::Network(ip) => writeln!(out, "n {ip}/{} {} {} {}", crate::peer::network_bits(ip), e.first_ms, e.last_ms, e.count),
        };
    }

    fn parse_line(line: &str) -> Option<(Key, Entry)> {
        let mut f = line.split(' ');
        let (kind, what) = (f.next()?, f.next()?);
        let e = Entry { first_ms: f.next()?.parse().ok()?, last_ms: f.next()?.parse().ok()?, count: f.next()?.parse().ok()? };
        if f.next().is_some() {
            return None;
        }
        let key = match kind {
            "a" => Key::Address(what.parse::<IpAddr>().ok()?.to_canonical()),
            "n" => {
                let (ip, len) = what.split_once('/')?;
                let ip: IpAddr = ip.parse().ok()?;
                if len.parse::<u8>().ok()? != crate::peer::network_bits(ip) || crate::peer::network(ip) != ip {
                    return None;
                }
                Key::Network(ip)
            }
            _ => return None,
        };
        Some((key, e))
    }
}

/// A series of failures: the first and last (milliseconds since the epoch,
/// store's clock) and how many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    first_ms: i64,
    last_ms: i64,
    count: u32,
}

/// Another writer's table as last read.
struct Remote {
    stamp: FileStamp,
    entries: HashMap<Key, Entry>,
}

struct State {
    own: HashMap<Key, Entry>,
    /// Bumped on every change of `own`.
    version: u64,
    remote: HashMap<String, Remote>,
    /// The store's clock minus ours, milliseconds.
    offset_ms: i64,
    /// When the others' files were last read.
    refreshed: Option<Instant>,
    /// Our own file has been read back (after a restart it still counts).
    loaded: bool,
}

/// What the I/O thread is asked for and has done.
#[derive(Default)]
struct Io {
    /// `own` versions wanted on disk and written.
    want_flush: u64,
    flushed: u64,
    /// Refresh requests and those done.
    want_refresh: u64,
    refreshes: u64,
    /// The thread has been working on a request since then.
    busy_since: Option<Instant>,
    started: bool,
    stop: bool,
    last_warning: Option<Instant>,
}

struct Shared {
    dir: PathBuf,
    writer: String,
    policy: Policy,
    deadline: Duration,
    state: Mutex<State>,
    io: Mutex<Io>,
    io_cond: Condvar,
    #[cfg(test)]
    hook: Mutex<Option<Box<dyn Fn() + Send>>>,
}

/// One writer's view of the failures of all (see the module's text).
/// Calls may block up to the store deadline: make them off async threads.
pub struct LoginFailures {
    shared: Arc<Shared>,
}

impl Drop for LoginFailures {
    fn drop(&mut self) {
        lock(&self.shared.io).stop = true;
        self.shared.io_cond.notify_all();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn unix_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// A writer name as a file name: a-z, 0-9 and '-' only.
fn file_name(writer: &str) -> String {
    let n: String = writer.chars().take(100).map(|c| if c.is_ascii_alphanumeric() || c == '-' { c.to_ascii_lowercase() } else { '-' }).collect();
    if n.is_empty() {
        "writer".into()
    } else {
        n
    }
}

impl LoginFailures {
    /// The failures as `writer` (unique per node and service, e.g.
    /// `node1-mail`) sees them, in the store at `root`.
    pub fn new(root: &Path, writer: &str, policy: Policy) -> LoginFailures {
        LoginFailures::with_deadline(root, writer, policy, STORE_DEADLINE)
    }

    pub fn with_deadline(root: &Path, writer: &str, policy: Policy, deadline: Duration) -> LoginFailures {
        let state = State { own: HashMap::new(), version: 0, remote: HashMap::new(), offset_ms: 0, refreshed: None, loaded: false };
        let shared = Shared {
            dir: crate::layout::Layout::new(root).login_failures_dir(),
            writer: file_name(writer),
            policy,
            deadline,
            state: Mutex::new(state),
            io: Mutex::new(Io::default()),
            io_cond: Condvar::new(),
            #[cfg(test)]
            hook: Mutex::new(None),
        };
        LoginFailures { shared: Arc::new(shared) }
    }

    pub fn policy(&self) -> &Policy {
        &self.shared.policy
    }

    /// Whether a login from `ip` may have its password checked now.
    pub fn check(&self, ip: IpAddr) -> Verdict {
        let stale = lock(&self.shared.state).refreshed.map_or(true, |t| t.elapsed() >= REFRESH_INTERVAL);
        if stale {
            self.shared.request(false, true);
        }
        let s = lock(&self.shared.state);
        self.shared.verdict(&s, ip, self.shared.now_ms(&s))
    }

    /// A wrong password from `ip`: counted, written to the store (waited
    /// for up to the deadline), and the delay the client has earned is
    /// returned (the caller waits it out before answering).
    pub fn failed(&self, ip: IpAddr) -> Duration {
        {
            let mut s = lock(&self.shared.state);
            let now = self.shared.now_ms(&s);
            let window = self.shared.window_ms();
            for key in [Key::address(ip), Key::network(ip)] {
                make_room(&mut s.own, key, now, window);
                let e = s.own.entry(key).or_insert(Entry { first_ms: now, last_ms: now, count: 0 });
                if now - e.first_ms >= window {
                    *e = Entry { first_ms: now, last_ms: now, count: 0 };
                }
                e.count = e.count.saturating_add(1);
                e.last_ms = e.last_ms.max(now);
            }
            s.version += 1;
        }
        self.shared.request(true, false);
        let s = lock(&self.shared.state);
        let now = self.shared.now_ms(&s);
        let (count, _, _) = self.shared.sum(&s, Key::address(ip), now);
        self.shared.policy.delay_after(count)
    }

    /// A right password from `ip`: this writer forgets the address's
    /// failures (not its network's; other writers' records of it run out
    /// with their window). Written in the background.
    pub fn succeeded(&self, ip: IpAddr) {
        let mut s = lock(&self.shared.state);
        if s.own.remove(&Key::address(ip)).is_some() {
            s.version += 1;
            drop(s);
            self.shared.request_nowait(true, false);
        }
    }

    /// Failures in the window from `ip`'s address and its network, all
    /// writers together, as last read (no store access).
    pub fn counts(&self, ip: IpAddr) -> (u32, u32) {
        let s = lock(&self.shared.state);
        let now = self.shared.now_ms(&s);
        (self.shared.sum(&s, Key::address(ip), now).0, self.shared.sum(&s, Key::network(ip), now).0)
    }

    #[cfg(test)]
    fn set_hook(&self, f: impl Fn() + Send + 'static) {
        *lock(&self.shared.hook) = Some(Box::new(f));
    }
}

/// Before a new key goes in at the limit: expired entries go, then the one
/// whose last failure is oldest.
fn make_room(t: &mut HashMap<Key, Entry>, key: Key, now: i64, window: i64) {
    if t.contains_key(&key) || t.len() < MAX_ENTRIES {
        return;
    }
    t.retain(|_, e| now - e.first_ms < window);
    while t.len() >= MAX_ENTRIES {
        let Some(k) = t.iter().min_by_key(|(_, e)| e.last_ms).map(|(k, _)| *k) else { break };
        t.remove(&k);
    }
}

impl Shared {
    fn window_ms(&self) -> i64 {
        i64::try_from(self.policy.window.as_millis()).unwrap_or(i64::MAX)
    }

    fn now_ms(&self, s: &State) -> i64 {
        unix_ms(SystemTime::now()).saturating_add(s.offset_ms)
    }

    /// Failures of `key` in the window, over all writers: (count, last
    /// failure, when the earliest series still counting runs out).
    fn sum(&self, s: &State, key: Key, now: i64) -> (u32, i64, i64) {
        let window = self.window_ms();
        let (mut count, mut last, mut ends) = (0u32, i64::MIN, i64::MAX);
        for e in s.own.get(&key).into_iter().chain(s.remote.values().filter_map(|r| r.entries.get(&key))) {
            if now - e.first_ms < window {
                count = count.saturating_add(e.count);
                last = last.max(e.last_ms);
                ends = ends.min(e.first_ms.saturating_add(window));
            }
        }
        (count, last, ends)
    }

    fn verdict(&self, s: &State, ip: IpAddr, now: i64) -> Verdict {
        // A session that failed waits out its own delay before it answers;
        // its next attempt must not be refused because the store's clock
        // (estimated from coarse file mtimes) is a few ms behind.
        let ms = |d: i64| Duration::from_millis(u64::try_from(d).unwrap_or(0).max(1));
        let (count, last, ends) = self.sum(s, Key::address(ip), now);
        if count >= self.policy.max_address {
            return Verdict::Refused { why: Refusal::Address, retry_after: ms(ends - now) };
        }
        let (ncount, _, nends) = self.sum(s, Key::network(ip), now);
        if ncount >= self.policy.max_network {
            return Verdict::Refused { why: Refusal::Network, retry_after: ms(nends - now) };
        }
        if count > 0 {
            let until = last.saturating_add(i64::try_from(self.policy.delay_after(count).as_millis()).unwrap_or(i64::MAX));
            if until - now > DELAY_GRACE_MS {
                return Verdict::Refused { why: Refusal::Delay, retry_after: ms(until - now) };
            }
        }
        Verdict::Allowed
    }

    /// Asks the I/O thread for a flush of the current table and/or a
    /// refresh of the others', and waits for it up to the deadline. Does
    /// not wait at all while the thread is stuck on an earlier request.
    fn request(self: &Arc<Self>, flush: bool, refresh: bool) {
        let Some((flush_to, refresh_to)) = self.post(flush, refresh) else { return };
        let end = Instant::now() + self.deadline;
        let mut io = lock(&self.io);
        while io.flushed < flush_to || io.refreshes < refresh_to {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                self.warn(&mut io, format_args!("the store did not answer within {} ms; going on with the failures this process knows", self.deadline.as_millis()));
                return;
            }
            io = self.io_cond.wait_timeout(io, left).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    fn request_nowait(self: &Arc<Self>, flush: bool, refresh: bool) {
        let _ = self.post(flush, refresh);
    }

    /// Posts a request; the targets to wait for, or None when the thread
    /// is stuck (or cannot start).
    fn post(self: &Arc<Self>, flush: bool, refresh: bool) -> Option<(u64, u64)> {
        let version = lock(&self.state).version;
        let mut io = lock(&self.io);
        if io.busy_since.is_some_and(|t| t.elapsed() > self.deadline) {
            return None;
        }
        let flush_to = if flush {
            io.want_flush = io.want_flush.max(version);
            version
        } else {
            0
        };
        let refresh_to = if refresh {
            // A refresh under way may have read the directory before the
            // caller asked: then only the one after it counts.
            io.want_refresh = io.want_refresh.max(io.refreshes + if io.busy_since.is_some() { 2 } else { 1 });
            io.want_refresh
        } else {
            0
        };
        if !io.started {
            let me = self.clone();
            match std::thread::Builder::new().name("login-failures".into()).spawn(move || me.io_loop()) {
                Ok(_) => io.started = true,
                Err(e) => {
                    self.warn(&mut io, format_args!("cannot start the store thread: {e}"));
                    return None;
                }
            }
        }
        drop(io);
        self.io_cond.notify_all();
        Some((flush_to, refresh_to))
    }

    fn warn(&self, io: &mut Io, what: std::fmt::Arguments<'_>) {
        if io.last_warning.map_or(true, |t| t.elapsed() >= WARN_INTERVAL) {
            io.last_warning = Some(Instant::now());
            tracing::warn!(writer = %self.writer, "login failures: {what}");
        }
    }

    fn io_loop(self: Arc<Self>) {
        loop {
            let (flush, refresh) = {
                let mut io = lock(&self.io);
                loop {
                    if io.stop {
                        return;
                    }
                    if io.want_flush > io.flushed || io.want_refresh > io.refreshes {
                        break;
                    }
                    io = self.io_cond.wait(io).unwrap_or_else(|e| e.into_inner());
                }
                io.busy_since = Some(Instant::now());
                ((io.want_flush > io.flushed).then_some(io.want_flush), io.want_refresh)
            };
            #[cfg(test)]
            if let Some(h) = lock(&self.hook).as_ref() {
                h();
            }
            let mut result = self.load_own();
            // A failed write or read counts as done: the next request
            // tries again, and nobody waits longer for a store that fails
            // than for one that answers.
            let mut flushed = flush;
            if let (Some(_), Ok(())) = (flush, &result) {
                match self.flush() {
                    Ok(v) => flushed = Some(v),
                    Err(e) => result = Err(e),
                }
            }
            let refreshing = refresh > lock(&self.io).refreshes;
            if refreshing {
                let r = self.refresh();
                if result.is_ok() {
                    result = r;
                }
                lock(&self.state).refreshed = Some(Instant::now());
            }
            let mut io = lock(&self.io);
            io.busy_since = None;
            if let Some(v) = flushed {
                io.flushed = io.flushed.max(v);
            }
            io.refreshes = io.refreshes.max(refresh);
            if let Err(e) = result {
                self.warn(&mut io, format_args!("{}: {e}", self.dir.display()));
            }
            drop(io);
            self.io_cond.notify_all();
        }
    }

    fn own_path(&self) -> PathBuf {
        self.dir.join(&self.writer)
    }

    /// Once: reads our own file back (a restart does not wipe the
    /// failures) and learns the store's clock.
    fn load_own(&self) -> io::Result<()> {
        if lock(&self.state).loaded {
            return Ok(());
        }
        // The directory is made inside an existing store only (never on
        // an empty mount point).
        match fsutil::create_private_dir(&self.dir) {
            Ok(()) => fsutil::sync_dir(self.dir.parent().unwrap_or(&self.dir))?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        let clock = fsutil::touch_server_time(&self.dir.join(format!(".clock.{}", self.writer)))?;
        let old = match read_file(&self.own_path()) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => HashMap::new(),
            Err(e) => return Err(e),
        };
        let mut s = lock(&self.state);
        s.offset_ms = unix_ms(clock) - unix_ms(SystemTime::now());
        let (now, window) = (self.now_ms(&s), self.window_ms());
        for (k, e) in old {
            match s.own.get_mut(&k) {
                // Failures counted since the start, before this load: one
                // series with the file's if they overlap.
                Some(mine) if (mine.first_ms - e.first_ms).abs() < window => {
                    *mine = Entry { first_ms: mine.first_ms.min(e.first_ms), last_ms: mine.last_ms.max(e.last_ms), count: mine.count.saturating_add(e.count) };
                }
                Some(_) => {}
                None => {
                    make_room(&mut s.own, k, now, window);
                    s.own.insert(k, e);
                }
            }
        }
        s.loaded = true;
        Ok(())
    }

    /// Writes our table; returns the version written.
    fn flush(&self) -> io::Result<u64> {
        let (text, version) = {
            let s = lock(&self.state);
            let now = self.now_ms(&s);
            let window = self.window_ms();
            let mut text = format!("{FILE_HEADER}\n");
            for (k, e) in s.own.iter().filter(|(_, e)| now - e.first_ms < window) {
                k.to_line(e, &mut text);
            }
            (text, s.version)
        };
        let path = self.own_path();
        fsutil::write_atomic_nosync(&path, text.as_bytes())?;
        // The file's mtime is the store's clock at the write.
        if let Ok(m) = fs::metadata(&path).and_then(|m| m.modified()) {
            let mut s = lock(&self.state);
            s.offset_ms = unix_ms(m) - unix_ms(SystemTime::now());
        }
        Ok(version)
    }

    /// Reads the other writers' files that changed since the last time.
    /// The copies in use stay until the new ones are read: a store that
    /// hangs or fails half way leaves what was known.
    fn refresh(&self) -> io::Result<()> {
        let known: HashMap<String, FileStamp> = lock(&self.state).remote.iter().map(|(n, r)| (n.clone(), r.stamp)).collect();
        let mut present = std::collections::HashSet::new();
        let mut changed = Vec::new();
        let window = self.policy.window;
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let Some(name) = entry.file_name().to_str().map(str::to_string) else { continue };
            if name.starts_with('.') || name == self.writer {
                continue;
            }
            if present.len() >= MAX_WRITERS {
                break;
            }
            let path = entry.path();
            let Ok(m) = fs::metadata(&path) else { continue };
            if !m.is_file() || m.modified().ok().and_then(|t| t.elapsed().ok()).is_some_and(|age| age > window + window) {
                // A writer that has not written for two windows has
                // nothing that still counts.
                continue;
            }
            let stamp = FileStamp::of(&m);
            if known.get(&name) != Some(&stamp) {
                match read_file(&path) {
                    Ok(entries) => changed.push((name.clone(), Remote { stamp, entries })),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                }
            }
            present.insert(name);
        }
        let mut s = lock(&self.state);
        s.remote.retain(|n, _| present.contains(n));
        s.remote.extend(changed);
        Ok(())
    }
}

/// A failure file's entries; bad lines are skipped, and at most
/// [`MAX_FILE_BYTES`] and [`MAX_ENTRIES`] are taken.
fn read_file(path: &Path) -> io::Result<HashMap<Key, Entry>> {
    let mut text = String::new();
    fs::File::open(path)?.take(MAX_FILE_BYTES).read_to_string(&mut text).or_else(|e| if e.kind() == io::ErrorKind::InvalidData { Ok(0) } else { Err(e) })?;
    let mut lines = text.lines();
    let mut t = HashMap::new();
    if lines.next() != Some(FILE_HEADER) {
        return Ok(t);
    }
    for (k, e) in lines.filter_map(Key::parse_line) {
        if t.len() >= MAX_ENTRIES {
            break;
        }
        t.insert(k, e);
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_dir() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("cluster")).unwrap();
        d
    }

    fn quick() -> Policy {
        Policy { delay_start: Duration::from_millis(1), delay_max: Duration::from_millis(4), ..Policy::default() }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Records `n` failures, waiting out each delay.
    fn fail(f: &LoginFailures, a: IpAddr, n: u32) {
        for _ in 0..n {
            let d = f.failed(a);
            std::thread::sleep(d);
        }
    }

    #[test]
    fn delays_double_up_to_the_maximum() {
        let p = Policy::default();
        assert_eq!(p.delay_after(0), Duration::ZERO);
        assert_eq!(p.delay_after(1), p.delay_start);
        assert_eq!(p.delay_after(2), p.delay_start * 2);
        assert_eq!(p.delay_after(3), p.delay_start * 4);
        assert_eq!(p.delay_after(u32::MAX), p.delay_max);
    }

    #[test]
    fn a_delay_refuses_until_it_ran_out() {
        let d = store_dir();
        let p = Policy { delay_start: Duration::from_millis(300), ..Policy::default() };
        let f = LoginFailures::new(d.path(), "n1-mail", p);
        let a = ip("192.0.2.1");
        assert_eq!(f.check(a), Verdict::Allowed);
        let failed_at = std::time::Instant::now();
        assert_eq!(f.failed(a), Duration::from_millis(300));
        match f.check(a) {
            Verdict::Refused { why: Refusal::Delay, retry_after } => assert!(retry_after <= Duration::from_millis(300)),
            // A loaded machine may take longer than the delay between the
            // two calls; then the delay has rightly run out.
            Verdict::Allowed if failed_at.elapsed() >= Duration::from_millis(300) => {}
            v => panic!("{v:?} after {:?}", failed_at.elapsed()),
        }
        // Another address, even in the same network, is not delayed.
        assert_eq!(f.check(ip("192.0.2.2")), Verdict::Allowed);
        std::thread::sleep(Duration::from_millis(310));
        assert_eq!(f.check(a), Verdict::Allowed);
        // A success forgets the address's failures.
        f.succeeded(a);
        assert_eq!(f.counts(a), (0, 1));
    }

    #[test]
    fn addresses_and_networks_are_refused_across_writers() {
        let d = store_dir();
        let n1 = LoginFailures::new(d.path(), "n1-mail", quick());
        let n2 = LoginFailures::new(d.path(), "n2-admin", quick());
        let a = ip("198.51.100.7");
        // Failures on one node...
        fail(&n1, a, MAX_ADDRESS_FAILURES - 1);
        assert_eq!(n2.check(a), Verdict::Allowed);
        fail(&n1, a, 1);
        assert!(matches!(n1.check(a), Verdict::Refused { why: Refusal::Address, .. }));
        // ...refuse the address on the other, once its copy is refreshed.
        std::thread::sleep(REFRESH_INTERVAL);
        match n2.check(a) {
            Verdict::Refused { why: Refusal::Address, retry_after } => assert!(retry_after > Duration::from_secs(60) && retry_after <= FAILURE_WINDOW),
            v => panic!("{v:?}"),
        }
        assert_eq!(n2.counts(a), (MAX_ADDRESS_FAILURES, MAX_ADDRESS_FAILURES));
        // The network: many addresses, a few failures each, on both.
        for i in 0..(MAX_NETWORK_FAILURES - MAX_ADDRESS_FAILURES) {
            let w = if i % 2 == 0 { &n1 } else { &n2 };
            fail(w, ip(&format!("198.51.100.{}", 100 + i / 3)), 1);
        }
        std::thread::sleep(REFRESH_INTERVAL);
        let fresh = ip("198.51.100.250");
        assert!(matches!(n1.check(fresh), Verdict::Refused { why: Refusal::Network, .. }));
        assert!(matches!(n2.check(fresh), Verdict::Refused { why: Refusal::Network, .. }));
        // Another network is not affected.
        assert_eq!(n2.check(ip("198.51.101.1")), Verdict::Allowed);
        // IPv6: the /64 is the network; v4-mapped is the v4 address.
        assert_eq!(n1.counts(ip("::ffff:198.51.100.7")).0, MAX_ADDRESS_FAILURES);
        fail(&n1, ip("2001:db8:1:2::1"), 2);
        assert_eq!(n1.counts(ip("2001:db8:1:2:ffff::9")), (0, 2));
        assert_eq!(n1.counts(ip("2001:db8:1:3::1")), (0, 0));
    }

    #[test]
    fn failures_survive_a_restart_and_files_are_bounded() {
        let d = store_dir();
        let a = ip("203.0.113.5");
        {
            let f = LoginFailures::new(d.path(), "n1-mail", quick());
            fail(&f, a, 3);
        }
        let f = LoginFailures::new(d.path(), "n1-mail", quick());
        // The first check loads our own file.
        assert_eq!(f.check(a), Verdict::Allowed);
        assert_eq!(f.counts(a), (3, 3));
        // Spraying addresses: the table stays at its bound.
        for i in 0..(MAX_ENTRIES as u32 + 100) {
            let mut s = lock(&f.shared.state);
            let now = f.shared.now_ms(&s);
            let k = Key::address(IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i)));
            make_room(&mut s.own, k, now, f.shared.window_ms());
            s.own.insert(k, Entry { first_ms: now, last_ms: now + i as i64, count: 1 });
        }
        assert_eq!(lock(&f.shared.state).own.len(), MAX_ENTRIES);
        f.failed(a);
        let len = fs::metadata(d.path().join(FAILURES_DIR).join("n1-mail")).unwrap().len();
        assert!(len <= MAX_FILE_BYTES, "{len}");
        // Junk in another writer's file is skipped, not fatal.
        fs::write(d.path().join(FAILURES_DIR).join("junk"), format!("{FILE_HEADER}\na 203.0.113.5 0 0 x\nn 203.0.113.5/24 1 1 1\nq\na 203.0.113.5 {0} {0} 2\n", unix_ms(SystemTime::now()))).unwrap();
        std::thread::sleep(REFRESH_INTERVAL);
        f.check(a);
        assert_eq!(lock(&f.shared.state).remote["junk"].entries.len(), 1);
    }

    #[test]
    fn no_store_directory_is_made_outside_a_store() {
        let d = tempfile::tempdir().unwrap();
        let f = LoginFailures::new(d.path(), "n1-mail", quick());
        let a = ip("192.0.2.9");
        fail(&f, a, 2);
        assert_eq!(f.counts(a), (2, 2));
        assert!(fs::read_dir(d.path()).unwrap().next().is_none(), "something was created in an empty directory");
    }

    #[test]
    fn a_store_that_hangs_does_not_hold_logins() {
        let d = store_dir();
        let f = LoginFailures::with_deadline(d.path(), "n1-mail", quick(), Duration::from_millis(100));
        let (release, hang) = std::sync::mpsc::channel::<()>();
        let hang = Mutex::new(hang);
        f.set_hook(move || {
            let _ = lock(&hang).recv();
        });
        let a = ip("192.0.2.77");
        // Each call returns (after the deadline at most, then at once while
        // the I/O is stuck), and the failures this process saw count.
        for _ in 0..MAX_ADDRESS_FAILURES {
            f.check(a);
            f.failed(a);
        }
        std::thread::sleep(Duration::from_millis(5));
        assert!(matches!(f.check(a), Verdict::Refused { why: Refusal::Address, .. }));
        assert!(lock(&f.shared.io).busy_since.is_some(), "the I/O thread was not stuck");
        // The store answers again: the failures reach it.
        drop(release);
        let file = d.path().join(FAILURES_DIR).join("n1-mail");
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            f.failed(ip("192.0.2.78"));
            if fs::read_to_string(&file).is_ok_and(|t| t.contains("a 192.0.2.77 ")) {
                break;
            }
            assert!(Instant::now() < end, "the failures never reached the store");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
