//! Connections of the admin page: who gets one of the slots, and the
//! deadlines that keep a slot from being held by a client that does nothing.
//!
//! Slots are taken after accept, so that the server sees who asks. One
//! address and one network (IPv4 /24, IPv6 /64) may hold only a few: a new
//! connection from an address or network at its cap replaces that one's
//! oldest connection (an idle one first), so a client only ever competes
//! with itself. When all slots are taken, the newcomer replaces a connection
//! of the network holding the most, if that holds more than the newcomer's
//! would; else an idle keep-alive connection anywhere; else it is closed.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Bytes, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{oneshot, watch};
use tokio::time::{Instant, Sleep};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub(crate) use store::peer::network;

/// What a connection is doing, in the order in which connections are
/// given up when a slot is needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Phase {
    /// Waiting for a request (keep-alive, or before the first): closing it
    /// loses nothing, a browser opens another.
    Idle,
    /// The TLS handshake is under way.
    Handshake,
    /// A request is being read, handled or answered.
    Busy,
}

/// How many connections the pool takes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Caps {
    pub total: usize,
    pub per_address: usize,
    pub per_network: usize,
}

struct Entry {
    address: IpAddr,
    network: IpAddr,
    phase: Phase,
    since: Instant,
    /// Dropped when the connection is to close (its receiver then wakes).
    _close: oneshot::Sender<()>,
}

#[derive(Default)]
struct State {
    next: u64,
    conns: HashMap<u64, Entry>,
    per_address: HashMap<IpAddr, usize>,
    per_network: HashMap<IpAddr, usize>,
}

fn count(m: &HashMap<IpAddr, usize>, k: IpAddr) -> usize {
    m.get(&k).copied().unwrap_or(0)
}

fn decrement(m: &mut HashMap<IpAddr, usize>, k: IpAddr) {
    if let Some(n) = m.get_mut(&k) {
        *n -= 1;
        if *n == 0 {
            m.remove(&k);
        }
    }
}

impl State {
    /// The connection to give up among those matching `f`: idle first,
    /// then handshaking, then busy; the oldest in its phase.
    fn oldest(&self, f: impl Fn(&Entry) -> bool) -> Option<u64> {
        self.conns.iter().filter(|(_, e)| f(e)).min_by_key(|(id, e)| (e.phase, e.since, **id)).map(|(id, _)| *id)
    }

    /// Which connection a newcomer from `address` replaces: `Ok(None)` for
    /// none (a slot is free), `Err(())` when it gets no slot.
    fn victim(&self, caps: &Caps, address: IpAddr, network: IpAddr) -> Result<Option<u64>, ()> {
        if count(&self.per_address, address) >= caps.per_address {
            return self.oldest(|e| e.address == address).map(Some).ok_or(());
        }
        if count(&self.per_network, network) >= caps.per_network {
            return self.oldest(|e| e.network == network).map(Some).ok_or(());
        }
        if self.conns.len() < caps.total {
            return Ok(None);
        }
        let mine = count(&self.per_network, network);
        if let Some((&big, &n)) = self.per_network.iter().max_by_key(|(_, n)| **n) {
            if n > mine + 1 {
                return self.oldest(|e| e.network == big).map(Some).ok_or(());
            }
        }
        self.oldest(|e| e.phase == Phase::Idle).map(Some).ok_or(())
    }

    fn remove(&mut self, id: u64) {
        if let Some(e) = self.conns.remove(&id) {
            decrement(&mut self.per_address, e.address);
            decrement(&mut self.per_network, e.network);
        }
    }
}

/// The connection slots of one server.
pub(crate) struct Pool {
    caps: Caps,
    state: Mutex<State>,
}

/// A connection let in: its slot, and what wakes when it must close to
/// free the slot for another.
pub(crate) struct Admitted {
    pub slot: Slot,
    pub closed: oneshot::Receiver<()>,
}

impl Pool {
    pub fn new(caps: Caps) -> Arc<Pool> {
        let caps = Caps { total: caps.total.max(1), per_address: caps.per_address.max(1), per_network: caps.per_network.max(1) };
        Arc::new(Pool { caps, state: Mutex::new(State::default()) })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every change is finished under the lock: a poisoned one is usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A slot for a new connection from `ip` (in its TLS handshake), closing
    /// another connection if needed; `None`: refused.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Admitted> {
        let address = ip.to_canonical();
        let network = network(address);
        let mut st = self.state();
        match st.victim(&self.caps, address, network) {
            Err(()) => return None,
            Ok(Some(id)) => st.remove(id),
            Ok(None) => {}
        }
        let (tx, rx) = oneshot::channel();
        let id = st.next;
        st.next += 1;
        let now = Instant::now();
        st.conns.insert(id, Entry { address, network, phase: Phase::Handshake, since: now, _close: tx });
        *st.per_address.entry(address).or_default() += 1;
        *st.per_network.entry(network).or_default() += 1;
        drop(st);
        let (phase, _) = watch::channel((Phase::Handshake, now));
        Some(Admitted { slot: Slot { id, pool: self.clone(), phase, requests: AtomicUsize::new(0) }, closed: rx })
    }

    /// Connections holding a slot now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.state().conns.len()
    }
}

/// A connection's slot; given back when dropped.
pub(crate) struct Slot {
    id: u64,
    pool: Arc<Pool>,
    phase: watch::Sender<(Phase, Instant)>,
    requests: AtomicUsize,
}

impl Slot {
    pub fn set_phase(&self, phase: Phase) {
        let now = Instant::now();
        if let Some(e) = self.pool.state().conns.get_mut(&self.id) {
            e.phase = phase;
            e.since = now;
        }
        self.phase.send_replace((phase, now));
    }

    /// The phase and since when, as it changes.
    pub fn watch(&self) -> watch::Receiver<(Phase, Instant)> {
        self.phase.subscribe()
    }

    /// Counts a request; its number on the connection, from 1.
    pub fn count_request(&self) -> usize {
        self.requests.fetch_add(1, Ordering::Relaxed) + 1
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.pool.state().remove(self.id);
    }
}

/// A request body that must be complete within a deadline: a client that
/// trickles it (a byte a second) gets an error and its connection ends.
pub(crate) struct DeadlineBody<B> {
    inner: B,
    deadline: Pin<Box<Sleep>>,
}

impl<B> DeadlineBody<B> {
    pub fn new(inner: B, limit: Duration) -> DeadlineBody<B> {
        DeadlineBody { inner, deadline: Box::pin(tokio::time::sleep(limit)) }
    }
}

impl<B> Body for DeadlineBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(f) => Poll::Ready(f.map(|r| r.map_err(Into::into))),
            Poll::Pending if this.deadline.as_mut().poll(cx).is_ready() => Poll::Ready(Some(Err(io::Error::new(io::ErrorKind::TimedOut, "request body not received in time").into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that marks its connection idle once it is sent (or
/// dropped): from then on the idle deadline runs.
pub(crate) struct IdleWhenSent<B> {
    inner: B,
    slot: Arc<Slot>,
}

impl<B> IdleWhenSent<B> {
    pub fn new(inner: B, slot: Arc<Slot>) -> IdleWhenSent<B> {
        IdleWhenSent { inner, slot }
    }
}

impl<B> Drop for IdleWhenSent<B> {
    fn drop(&mut self) {
        self.slot.set_phase(Phase::Idle);
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for IdleWhenSent<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A stream whose writes fail when they make no progress for `limit`: a
/// client that does not read what it asked for cannot keep the
/// connection (nor a slot) by filling its window.
pub(crate) struct WriteDeadline<S> {
    inner: S,
    limit: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<S> WriteDeadline<S> {
    pub fn new(inner: S, limit: Duration) -> WriteDeadline<S> {
        WriteDeadline { inner, limit, stalled: None }
    }

    fn check<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if r.is_ready() {
            self.stalled = None;
            return r;
        }
        let limit = self.limit;
        let timer = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "client does not read")));
        }
        Poll::Pending
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteDeadline<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.check(cx, r)
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.check(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_flush(cx);
        this.check(cx, r)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.check(cx, r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tokio::io::AsyncWriteExt;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn closed(a: &mut Admitted) -> bool {
        !matches!(a.closed.try_recv(), Err(oneshot::error::TryRecvError::Empty))
    }


    #[tokio::test]
    async fn an_address_at_its_cap_replaces_its_own_oldest_idle_first() {
        let pool = Pool::new(Caps { total: 10, per_address: 3, per_network: 5 });
        let mut a: Vec<Admitted> = (0..3).map(|_| pool.admit(ip("192.0.2.1")).unwrap()).collect();
        for c in &a {
            c.slot.set_phase(Phase::Busy);
        }
        a[1].slot.set_phase(Phase::Idle);
        let other = pool.admit(ip("198.51.100.1")).unwrap();
        let mut b = pool.admit(ip("192.0.2.1")).unwrap();
        assert_eq!(a.iter_mut().map(closed).collect::<Vec<_>>(), [false, true, false], "the idle one goes");
        // All busy now: the oldest goes.
        b.slot.set_phase(Phase::Busy);
        let _c = pool.admit(ip("192.0.2.1")).unwrap();
        assert_eq!(a.iter_mut().map(closed).collect::<Vec<_>>(), [true, true, false]);
        assert!(!closed(&mut b));
        assert_eq!(pool.len(), 4);
        drop(other);
        assert_eq!(pool.len(), 3);
    }

    #[tokio::test]
    async fn a_network_at_its_cap_replaces_its_own() {
        let pool = Pool::new(Caps { total: 10, per_address: 2, per_network: 3 });
        let mut first = pool.admit(ip("2001:db8::1")).unwrap();
        let _more: Vec<Admitted> = ["2001:db8::2", "2001:db8::3"].iter().map(|a| pool.admit(ip(a)).unwrap()).collect();
        let _elsewhere = pool.admit(ip("2001:db8:0:1::1")).unwrap();
        let _new = pool.admit(ip("2001:db8::ffff")).unwrap();
        assert!(closed(&mut first));
        assert_eq!(pool.len(), 4);
    }

    #[tokio::test]
    async fn a_full_pool_takes_from_the_network_holding_most() {
        let pool = Pool::new(Caps { total: 6, per_address: 4, per_network: 4 });
        let mut big: Vec<Admitted> = (1..=4).map(|i| pool.admit(ip(&format!("192.0.2.{i}"))).unwrap()).collect();
        let mut small: Vec<Admitted> = (1..=2).map(|i| pool.admit(ip(&format!("198.51.100.{i}"))).unwrap()).collect();
        for c in big.iter().chain(&small) {
            c.slot.set_phase(Phase::Busy);
        }
        let mut newcomer = pool.admit(ip("203.0.113.1")).unwrap();
        assert_eq!(big.iter_mut().map(closed).collect::<Vec<_>>(), [true, false, false, false]);
        assert!(!small.iter_mut().any(closed));
        // 3 + 2 + 1: a second newcomer of the small network would not make
        // things fairer, and nothing is idle: refused.
        newcomer.slot.set_phase(Phase::Busy);
        assert!(pool.admit(ip("198.51.100.9")).is_none());
        // An idle connection anywhere is given up for it.
        small[0].slot.set_phase(Phase::Idle);
        let _kept = pool.admit(ip("198.51.100.10")).expect("an idle connection gives way");
        assert!(closed(&mut small[0]));
        assert!(!closed(&mut newcomer));
        assert_eq!(pool.len(), 6);
    }

    /// Never ends, never sends.
    struct Silent;
    impl Body for Silent {
        type Data = Bytes;
        type Error = io::Error;
        fn poll_frame(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
            Poll::Pending
        }
    }

    #[tokio::test]
    async fn a_body_not_received_in_time_is_an_error() {
        let r = tokio::time::timeout(Duration::from_secs(10), DeadlineBody::new(Silent, Duration::from_millis(50)).collect()).await.expect("the deadline ends it");
        assert!(r.is_err());
        let full = DeadlineBody::new(http_body_util::Full::new(Bytes::from_static(b"abc")), Duration::from_millis(50)).collect().await.unwrap();
        assert_eq!(full.to_bytes(), Bytes::from_static(b"abc"));
    }

    #[tokio::test]
    async fn a_write_the_peer_does_not_read_fails() {
        let (a, mut b) = tokio::io::duplex(1024);
        let mut w = WriteDeadline::new(a, Duration::from_millis(100));
        // Read as it comes: no deadline is hit.
        let reader = tokio::spawn(async move {
            let mut n = 0;
            let mut buf = [0u8; 4096];
            while n < 64 * 1024 {
                n += tokio::io::AsyncReadExt::read(&mut b, &mut buf).await.unwrap();
            }
            b
        });
        w.write_all(&[7u8; 64 * 1024]).await.unwrap();
        let _b = reader.await.unwrap();
        // Nobody reads: the write fails after the deadline.
        let e = tokio::time::timeout(Duration::from_secs(10), w.write_all(&[7u8; 64 * 1024])).await.expect("the deadline ends it").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }
}
