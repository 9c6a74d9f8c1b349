//! A message on its way into the store: the body as it arrives (in memory
//! while small and while the node's memory budget allows, in the node's
//! spool file otherwise), our trace headers in front of it, and the header
//! edits made once the message is complete. The protocol that receives it
//! (SMTP DATA today, IMAP APPEND later) only feeds bytes and says when the
//! message is complete; what goes to disk, and when, is decided here.
//!
//! The spool file is never rewritten in place: a header added after part
//! of the message was written goes into a copy (the store's rule that
//! nothing rewrites a message, see the crate documentation). Store I/O runs
//! on the blocking pool ([`crate::blocking`]).

use std::io::Read;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::address::Address;
use crate::blocking::{self, Unanswered, STORE_CALL_DEADLINE};
use crate::maildir::Spool;
use crate::queue::Envelope;
use crate::store::{Store, StoreError};

/// The smallest step by which a message buffer grows.
pub const BODY_STEP: usize = 4096;
/// Bytes copied at once when a spilled message gets a late header.
const COPY_CHUNK: usize = 256 * 1024;

/// Why a message could not be assembled or stored.
#[derive(Debug, thiserror::Error)]
pub enum AssemblyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Unanswered(#[from] Unanswered),
    #[error("spool file I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("the spool file was lost after an earlier error")]
    SpoolLost,
}

/// Bytes shared by every session of a node; a session takes some before it
/// grows a buffer and gives them back when it frees it, so that what all
/// sessions hold together stays bounded, not only what one holds.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: usize,
    used: AtomicUsize,
}

impl MemoryBudget {
    pub fn new(limit: usize) -> MemoryBudget {
        MemoryBudget { limit, used: AtomicUsize::new(0) }
    }

    /// Takes `n` bytes if that many are left.
    pub fn try_take(&self, n: usize) -> bool {
        self.used.fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| u.checked_add(n).filter(|&t| t <= self.limit)).is_ok()
    }

    /// Gives back `n` bytes taken before.
    pub fn give(&self, n: usize) {
        let _ = self.used.fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| Some(u.saturating_sub(n)));
    }

    /// Bytes taken now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    pub fn limit(&self) -> usize {
        self.limit
    }
}

/// Where a message body may keep data in memory: up to `per_session`
/// bytes, and only as long as the node-wide budget has them.
#[derive(Debug, Clone)]
pub struct BodyMemory {
    pub budget: Arc<MemoryBudget>,
    pub per_session: usize,
}

/// The trace headers a receiving server puts in front of a message.
#[derive(Debug, Clone)]
pub struct Trace<'a> {
    /// The reverse-path for Return-Path (RFC 5321 4.4: added at final
    /// delivery, so only when the message goes to a local mailbox); empty
    /// for the null reverse-path `<>`.
    pub return_path: Option<&'a str>,
    /// What the client called itself (EHLO/HELO).
    pub helo: &'a str,
    pub ip: std::net::IpAddr,
    /// Our host name.
    pub by: &'a str,
    /// The protocol name for "with" (RFC 3848, RFC 6531 4.3).
    pub with: &'a str,
    /// The message id (the spool name).
    pub id: &'a str,
    /// The one recipient, if there is only one (RFC 5321 4.4: "for" is
    /// given only then, so that Bcc recipients are not shown).
    pub for_rcpt: Option<&'a str>,
    /// The date-time (RFC 5322 3.3).
    pub date: &'a str,
}

impl Trace<'_> {
    /// Return-Path and Received (RFC 5321 4.4), each line ending in CRLF.
    pub fn render(&self) -> String {
        let mut h = String::new();
        if let Some(rp) = self.return_path {
            h.push_str(&format!("Return-Path: <{rp}>\r\n"));
        }
        let only = self.for_rcpt.map(|r| format!("\r\n\tfor <{r}>")).unwrap_or_default();
        h.push_str(&format!("Received: from {} ([{}])\r\n\tby {} (mailfort) with {} id {}{only};\r\n\t{}\r\n", self.helo, self.ip, self.by, self.with, self.id, self.date));
        h
    }
}

/// Where a complete message's bytes as the client sent them (without our
/// trace headers) are: for checks that read it in pieces (DKIM, DMARC).
#[derive(Debug)]
pub enum ClientMessage<'a> {
    /// All in memory.
    Memory(&'a [u8]),
    /// Bytes `start..end` of the spool file at `path`, then `tail` (what is
    /// still in memory).
    Spooled { path: PathBuf, start: u64, end: u64, tail: &'a [u8] },
}

/// A message body on its way to the store: in memory while small and while
/// the node's memory budget allows, in the spool file otherwise.
pub struct Body {
    store: Arc<Store>,
    node: String,
    spool: Option<Spool>,
    name: String,
    mem: Vec<u8>,
    memory: BodyMemory,
    /// Bytes of `memory.budget` taken for `mem`.
    reserved: usize,
    /// Bytes already written to the spool file.
    spilled: u64,
    /// Where our trace headers end and the client's message begins.
    trace_len: usize,
    /// Where Return-Path ends (0 without one): later headers go there.
    return_path_len: usize,
    /// A header to put at `return_path_len` once the message is complete,
    /// and byte ranges to leave out; for a spilled message this means a
    /// copy.
    late_header: Option<(usize, String, Vec<Range<usize>>)>,
    error: Option<AssemblyError>,
}

impl Body {
    /// A new message in `node`'s spool, with `trace` (our trace headers,
    /// [`Trace::render`]) in front; the client's message follows with
    /// [`Body::push`].
    pub async fn begin(store: Arc<Store>, node: String, memory: BodyMemory) -> Result<Body, AssemblyError> {
        let (s, n) = (store.clone(), node.clone());
        let spool = blocking::call(STORE_CALL_DEADLINE, move || s.spool(&n)).await??;
        let name = spool.name().to_string();
        Ok(Body { store, node, spool: Some(spool), name, mem: Vec::new(), memory, reserved: 0, spilled: 0, trace_len: 0, return_path_len: 0, late_header: None, error: None })
    }

    /// The message's name (its spool name, later its Maildir name).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Bytes already written to the spool file.
    pub fn spilled(&self) -> u64 {
        self.spilled
    }

    /// Bytes held in memory now.
    pub fn in_memory(&self) -> usize {
        self.mem.len()
    }

    /// Puts our trace headers in front; called once, before the client's
    /// message.
    pub async fn push_trace(&mut self, trace: &str) {
        debug_assert!(self.trace_len == 0 && self.mem.is_empty() && self.spilled == 0, "trace headers come first");
        self.push(trace.as_bytes()).await;
        self.trace_len = trace.len();
        self.return_path_len = if trace.starts_with("Return-Path:") { trace.find("\r\n").map_or(0, |i| i + 2) } else { 0 };
    }

    /// The message as the client sent it (without our trace headers).
    pub fn client_message(&self) -> ClientMessage<'_> {
        if self.spilled == 0 {
            return ClientMessage::Memory(&self.mem[self.trace_len.min(self.mem.len())..]);
        }
        let path = self.store.spool_dir(&self.node).join(&self.name);
        ClientMessage::Spooled { path, start: self.trace_len as u64, end: self.spilled.max(self.trace_len as u64), tail: &self.mem }
    }

    /// Puts `header` right after our Return-Path (before Received: RFC 8601
    /// 5 puts Authentication-Results above the trace of the hop that made
    /// it) and leaves out the byte ranges `remove` of the client's message
    /// (offsets in the message as the client sent it; sorted, not
    /// overlapping): RFC 8601 5, results claiming to be ours that came with
    /// the message are forgeries and go. Once the message is complete.
    pub fn insert_header(&mut self, header: String, remove: Vec<Range<usize>>) {
        let at = self.return_path_len;
        let remove: Vec<Range<usize>> = remove.into_iter().map(|r| r.start + self.trace_len..r.end + self.trace_len).collect();
        if self.spilled == 0 {
            for r in remove.iter().rev() {
                if r.end <= self.mem.len() {
                    self.mem.drain(r.clone());
                }
            }
            let at = at.min(self.mem.len());
            self.mem.splice(at..at, header.into_bytes());
        } else {
            self.late_header = Some((at, header, remove));
        }
    }

    /// Appends bytes of the client's message.
    pub async fn push(&mut self, data: &[u8]) {
        if self.error.is_some() {
            return;
        }
        let need = self.mem.len() + data.len();
        let fits = need <= self.reserved || self.grow(need);
        self.mem.extend_from_slice(data);
        if !fits {
            // Over this session's share or the node's budget: to the spool
            // file at once (a write; the fsync comes with the commit).
            self.spill().await;
        }
    }

    /// Takes budget for a buffer of at least `need` bytes (doubling, within
    /// the session's share); false if there is none.
    fn grow(&mut self, need: usize) -> bool {
        let cap = self.memory.per_session;
        if need > cap {
            return false;
        }
        let want = need.max(self.reserved * 2).max(BODY_STEP).min(cap);
        if !self.memory.budget.try_take(want - self.reserved) {
            return false;
        }
        self.mem.reserve_exact(want - self.mem.len());
        self.reserved = want;
        true
    }

    /// Gives the buffer and its budget back.
    fn release(&mut self) {
        self.mem = Vec::new();
        self.memory.budget.give(std::mem::take(&mut self.reserved));
    }

    /// Writes what is in memory to the spool file and frees the buffer.
    async fn spill(&mut self) {
        let Some(mut spool) = self.spool.take() else {
            self.release();
            self.error.get_or_insert(AssemblyError::SpoolLost);
            return;
        };
        let mem = std::mem::take(&mut self.mem);
        let r = blocking::call(STORE_CALL_DEADLINE, move || {
            let r = spool.write_all(&mem);
            (spool, mem.len(), r)
        })
        .await;
        self.release();
        match r {
            Ok((spool, n, res)) => {
                self.spool = Some(spool);
                self.spilled += n as u64;
                if let Err(e) = res {
                    self.error = Some(e.into());
                }
            }
            Err(e) => self.error = Some(e.into()),
        }
    }

    /// Makes the message durable in the mailboxes of `local` and, if given,
    /// in the outbound queue (`Spool::commit`): when this returns Ok, a
    /// server may say 250.
    pub async fn commit(mut self, local: Vec<Address>, queue: Option<Envelope>) -> Result<(), AssemblyError> {
        // The budget stays taken until the last byte is written (Drop).
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        let mut spool = self.spool.take().ok_or(AssemblyError::SpoolLost)?;
        let mem = std::mem::take(&mut self.mem);
        let store = self.store.clone();
        let late = self.late_header.take();
        let node = self.node.clone();
        blocking::call(STORE_CALL_DEADLINE, move || -> Result<(), AssemblyError> {
            spool.write_all(&mem)?;
            if let Some((at, header, remove)) = late {
                // A spilled message gets its late header in a copy: the
                // spool file is never rewritten in place.
                spool = with_header(&store, &node, spool, at, &header, &remove)?;
            }
            Ok(spool.commit(&store, &local, queue.as_ref())?)
        })
        .await?
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        self.release();
    }
}

/// A copy of spooled message `old` with `header` put at byte `at` and the
/// byte ranges `remove` (sorted, all after `at`) left out.
fn with_header(store: &Store, node: &str, old: Spool, at: usize, header: &str, remove: &[Range<usize>]) -> Result<Spool, AssemblyError> {
    let path = store.spool_dir(node).join(old.name());
    let mut f = std::fs::File::open(&path)?;
    let mut new = store.spool(node)?;
    let mut head = vec![0u8; at];
    f.read_exact(&mut head)?;
    new.write_all(&head)?;
    new.write_all(header.as_bytes())?;
    let mut buf = vec![0u8; COPY_CHUNK];
    let mut offset = at;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        // Writes the parts of buf[..n] (file bytes offset..offset+n)
        // outside every removed range.
        let mut from = 0;
        for r in remove.iter().filter(|r| r.end > offset && r.start < offset + n) {
            let (s, e) = (r.start.saturating_sub(offset).max(from), (r.end - offset).min(n));
            new.write_all(&buf[from..s])?;
            from = e;
        }
        new.write_all(&buf[from..n])?;
        offset += n;
    }
    drop(old);
    Ok(new)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: &str = "Return-Path: <carol@remote.test>\r\nReceived: from client ([192.0.2.1])\r\n\tby mx; date\r\n";
    const FORGED: &[u8] = b"Authentication-Results: mx.example.test; spf=pass\r\n";

    fn store() -> (tempfile::TempDir, Arc<Store>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(Store::init(&dir.path().join("store"), "example.test", None).expect("store"));
        (dir, store)
    }

    async fn body(store: &Arc<Store>, budget: &Arc<MemoryBudget>, per_session: usize) -> Body {
        Body::begin(store.clone(), "node1".into(), BodyMemory { budget: budget.clone(), per_session }).await.expect("spool")
    }

    fn alice() -> Address {
        Address::parse("alice@example.test").expect("address")
    }

    fn delivered(store: &Store) -> Vec<u8> {
        let m = store.list_messages(&alice()).expect("list");
        assert_eq!(m.len(), 1);
        std::fs::read(&m[0].path).expect("read")
    }

    #[test]
    fn the_budget_takes_up_to_its_limit_and_no_more() {
        let b = MemoryBudget::new(100);
        assert!(b.try_take(60));
        assert!(!b.try_take(41));
        assert!(b.try_take(40));
        assert!(!b.try_take(1));
        b.give(60);
        assert_eq!(b.used(), 40);
        assert!(b.try_take(60));
        assert!(!b.try_take(usize::MAX));
    }

    #[test]
    fn trace_headers_follow_rfc_5321_4_4() {
        let ip = "192.0.2.1".parse().expect("ip");
        let t = Trace { return_path: Some("carol@remote.test"), helo: "client.example", ip, by: "mx.example.test", with: "ESMTPS", id: "1.2_3.node1", for_rcpt: Some("alice@example.test"), date: "Thu, 1 Jan 1970 00:00:00 +0000" };
        assert_eq!(t.render(), "Return-Path: <carol@remote.test>\r\nReceived: from client.example ([192.0.2.1])\r\n\tby mx.example.test (mailfort) with ESMTPS id 1.2_3.node1\r\n\tfor <alice@example.test>;\r\n\tThu, 1 Jan 1970 00:00:00 +0000\r\n");
        let t = Trace { return_path: None, for_rcpt: None, ..t };
        assert_eq!(t.render(), "Received: from client.example ([192.0.2.1])\r\n\tby mx.example.test (mailfort) with ESMTPS id 1.2_3.node1;\r\n\tThu, 1 Jan 1970 00:00:00 +0000\r\n");
    }

    #[tokio::test]
    async fn message_memory_is_bounded_per_session_and_per_node() {
        let (_dir, store) = store();
        let budget = Arc::new(MemoryBudget::new(100 * 1024));
        let chunk = vec![b'x'; 10 * 1024];

        // One session: in memory up to its share (64 KiB), then spilled.
        let mut a = body(&store, &budget, 64 * 1024).await;
        for _ in 0..6 {
            a.push(&chunk).await;
        }
        assert_eq!(a.spilled, 0);
        assert!(a.mem.capacity() <= 64 * 1024 && budget.used() == a.reserved);
        a.push(&chunk).await;
        assert_eq!(a.spilled, 70 * 1024, "past its share the session writes to the spool");
        assert_eq!(a.reserved, 0);

        // Sessions together: once the node's budget is taken, the next
        // session writes every piece at once.
        let mut b = body(&store, &budget, 64 * 1024).await;
        let mut c = body(&store, &budget, 64 * 1024).await;
        for _ in 0..6 {
            b.push(&chunk).await;
        }
        assert_eq!(b.spilled, 0);
        for _ in 0..6 {
            c.push(&chunk).await;
        }
        assert!(budget.used() <= budget.limit(), "{} of {}", budget.used(), budget.limit());
        assert!(c.spilled >= 20 * 1024, "the budget did not make the session spill: {}", c.spilled);
        assert_eq!(c.spilled as usize + c.mem.len(), 60 * 1024);
        let on_disk = std::fs::metadata(store.spool_dir("node1").join(c.name())).expect("spool file").len();
        assert_eq!(on_disk, c.spilled);

        // What a session frees is free for others.
        drop(b);
        let mut d = body(&store, &budget, 64 * 1024).await;
        d.push(&chunk).await;
        assert_eq!(d.spilled, 0);
        drop((a, c, d));
        assert_eq!(budget.used(), 0);
    }

    /// The same edit, on a message kept in memory and on one spilled to
    /// the spool file: the header after Return-Path, our forged results
    /// gone, every other byte as sent.
    #[tokio::test]
    async fn a_late_header_lands_after_return_path_in_memory_and_spilled() {
        let client: Vec<u8> = [b"Subject: hi\r\n".as_slice(), FORGED, b"X-Other: kept\r\n\r\n", &vec![b'z'; 20_000], b"\r\n"].concat();
        let forged_at = b"Subject: hi\r\n".len();
        for per_session in [1 << 20, crate::assembly::BODY_STEP] {
            let (_dir, store) = store();
            let budget = Arc::new(MemoryBudget::new(1 << 20));
            let mut b = body(&store, &budget, per_session).await;
            b.push_trace(TRACE).await;
            for piece in client.chunks(3000) {
                b.push(piece).await;
            }
            let spilled = b.spilled() > 0;
            assert_eq!(spilled, per_session == BODY_STEP);
            // The checks see the client's bytes only.
            match b.client_message() {
                ClientMessage::Memory(m) => {
                    assert!(!spilled);
                    assert_eq!(m, client.as_slice());
                }
                ClientMessage::Spooled { path, start, end, tail } => {
                    assert!(spilled);
                    let file = std::fs::read(path).expect("spool");
                    assert_eq!([&file[start as usize..end as usize], tail].concat(), client);
                }
            }
            b.insert_header("Authentication-Results: mx.example.test; dkim=none\r\n".into(), vec![forged_at..forged_at + FORGED.len()]);
            b.commit(vec![alice()], None).await.expect("commit");
            let got = delivered(&store);
            let rp = TRACE.find("\r\n").expect("line") + 2;
            let want = [TRACE[..rp].as_bytes(), b"Authentication-Results: mx.example.test; dkim=none\r\n", TRACE[rp..].as_bytes(), b"Subject: hi\r\nX-Other: kept\r\n\r\n", &vec![b'z'; 20_000], b"\r\n"].concat();
            assert!(got == want, "spilled={spilled}: {:?}", String::from_utf8_lossy(&got[..300.min(got.len())]));
            assert_eq!(std::fs::read_dir(store.spool_dir("node1")).expect("spool dir").count(), 0, "spool files left");
            assert_eq!(budget.used(), 0);
        }
    }

    #[tokio::test]
    async fn without_return_path_a_header_goes_first() {
        let (_dir, store) = store();
        let budget = Arc::new(MemoryBudget::new(1 << 20));
        let mut b = body(&store, &budget, 1 << 16).await;
        let trace = "Received: from client ([192.0.2.1])\r\n\tby mx; date\r\n";
        b.push_trace(trace).await;
        b.push(b"Subject: x\r\n\r\nbody\r\n").await;
        b.insert_header("A: 1\r\n".into(), Vec::new());
        b.commit(vec![alice()], None).await.expect("commit");
        assert_eq!(delivered(&store), format!("A: 1\r\n{trace}Subject: x\r\n\r\nbody\r\n").into_bytes());
    }

    #[tokio::test]
    async fn a_body_dropped_before_commit_leaves_nothing() {
        let (_dir, store) = store();
        let budget = Arc::new(MemoryBudget::new(1 << 20));
        let mut b = body(&store, &budget, BODY_STEP).await;
        b.push(&vec![b'y'; 3 * BODY_STEP]).await;
        assert!(b.spilled() > 0);
        drop(b);
        // The spool file's removal runs on the blocking pool.
        let dir = store.spool_dir("node1");
        for _ in 0..100 {
            if std::fs::read_dir(&dir).expect("spool dir").count() == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(std::fs::read_dir(&dir).expect("spool dir").count(), 0);
        assert!(store.list_messages(&alice()).expect("list").is_empty());
        assert_eq!(budget.used(), 0);
    }
}
