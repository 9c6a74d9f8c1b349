//! A client connection: bounded line reading, buffered replies, timeouts,
//! and the switch to TLS.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use proto::line::{find_line, LineStatus};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

/// Any byte stream a session can run on: plain TCP or TLS over TCP.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// How much is read from the socket at once.
pub const READ_CHUNK: usize = 16 * 1024;
/// How much is read at once while waiting for a new command: an idle
/// session holds this much read buffer, not `READ_CHUNK` (most command
/// lines are far shorter; a longer one or a pipelined batch is read on
/// with `READ_CHUNK`).
const IDLE_READ: usize = 512;
/// Replies are flushed once this much is buffered, even mid-pipeline.
const WRITE_HIGH_WATER: usize = 64 * 1024;
/// Write buffer capacity kept after a flush; a larger one (a RETR, a long
/// listing) is given back, so an idle session does not keep it.
const WRITE_KEEP: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("the client closed the connection")]
    Closed,
    #[error("the client was idle or slow too long")]
    Timeout,
    #[error("line longer than {0} bytes")]
    LineTooLong(usize),
    #[error("the server is shutting down")]
    Shutdown,
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
}

pub struct Conn {
    stream: Box<dyn Stream>,
    rbuf: Vec<u8>,
    rpos: usize,
    wbuf: Vec<u8>,
    pub tls: bool,
    shutdown: watch::Receiver<bool>,
    /// How long a write may wait for the client to read: a client that
    /// stops reading must not hold its session (and its locks) forever.
    write_timeout: Duration,
}

impl Conn {
    pub fn new(stream: Box<dyn Stream>, tls: bool, shutdown: watch::Receiver<bool>, write_timeout: Duration) -> Conn {
        Conn { stream, rbuf: Vec::new(), rpos: 0, wbuf: Vec::new(), tls, shutdown, write_timeout }
    }

    /// Buffer capacity held now (read and write), for tests and estimates.
    pub fn buffer_capacity(&self) -> usize {
        self.rbuf.capacity() + self.wbuf.capacity()
    }

    /// Bytes received and not yet consumed.
    pub fn buffered(&self) -> &[u8] {
        &self.rbuf[self.rpos..]
    }

    pub fn consume(&mut self, n: usize) {
        self.rpos += n;
        if self.rpos == self.rbuf.len() {
            self.rbuf.clear();
            self.rpos = 0;
        }
    }

    /// Reads more bytes from the client. Replies still buffered are sent
    /// first: a client that pipelines waits for them (RFC 2920 3.2 lets a
    /// server batch replies only while more commands are already waiting).
    pub async fn fill(&mut self, timeout: Duration) -> Result<usize, ConnError> {
        self.fill_until(tokio::time::Instant::now() + timeout, READ_CHUNK).await
    }

    /// Reads up to `want` more bytes, giving up at `deadline`.
    async fn fill_until(&mut self, deadline: tokio::time::Instant, want: usize) -> Result<usize, ConnError> {
        self.flush().await?;
        if self.rpos > 0 && self.rpos * 2 > self.rbuf.capacity() {
            self.rbuf.drain(..self.rpos);
            self.rpos = 0;
        }
        let old = self.rbuf.len();
        self.rbuf.resize(old + want, 0);
        let r = tokio::time::timeout_at(deadline, self.stream.read(&mut self.rbuf[old..])).await;
        let n = match r {
            Err(_) => {
                self.rbuf.truncate(old);
                return Err(ConnError::Timeout);
            }
            Ok(Err(e)) => {
                self.rbuf.truncate(old);
                return Err(e.into());
            }
            Ok(Ok(n)) => n,
        };
        self.rbuf.truncate(old + n);
        if n == 0 {
            return Err(ConnError::Closed);
        }
        Ok(n)
    }

    /// Reads the next command line (without its line end), at most `max`
    /// bytes including the line end. The whole line must arrive within
    /// `limit` of the call, however the client spreads it out: a timeout per
    /// read would let a client sending a byte now and then hold its session
    /// for ever. While waiting for a new command the session gives way to a
    /// server shutdown, and holds no more buffer than it needs.
    pub async fn read_line(&mut self, max: usize, limit: Duration) -> Result<Vec<u8>, ConnError> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match find_line(self.buffered(), max) {
                LineStatus::Complete { content, total } => {
                    let line = self.buffered()[..content].to_vec();
                    self.consume(total);
                    return Ok(line);
                }
                LineStatus::TooLong => return Err(ConnError::LineTooLong(max)),
                LineStatus::Incomplete => {}
            }
            if self.buffered().is_empty() && *self.shutdown.borrow() {
                return Err(ConnError::Shutdown);
            }
            let mut shutdown = self.shutdown.clone();
            let idle = self.buffered().is_empty();
            if idle {
                // Nothing pending: the buffer of a long line or a message
                // goes back, so a waiting session holds IDLE_READ only.
                self.rbuf = Vec::new();
                self.rpos = 0;
            }
            let want = if idle { IDLE_READ } else { READ_CHUNK };
            tokio::select! {
                r = self.fill_until(deadline, want) => { r?; }
                _ = shutdown.changed(), if idle => return Err(ConnError::Shutdown),
            }
        }
    }

    /// Waits for more input until `deadline` and appends it to the receive
    /// buffer; replies still buffered are sent first. Unlike
    /// [`Conn::fill`] it is cancel-safe (bytes are appended only once
    /// read), for a session that waits for input beside other events (IMAP
    /// IDLE, RFC 2177). While nothing is pending it gives way to a server
    /// shutdown, and holds no more buffer than it needs.
    pub async fn read_more(&mut self, deadline: tokio::time::Instant) -> Result<usize, ConnError> {
        self.flush().await?;
        let idle = self.buffered().is_empty();
        if idle {
            if *self.shutdown.borrow() {
                return Err(ConnError::Shutdown);
            }
            self.rbuf = Vec::new();
            self.rpos = 0;
        }
        let mut tmp = vec![0u8; if idle { IDLE_READ } else { READ_CHUNK }];
        let mut shutdown = self.shutdown.clone();
        let n = tokio::select! {
            r = tokio::time::timeout_at(deadline, self.stream.read(&mut tmp)) => match r {
                Err(_) => return Err(ConnError::Timeout),
                Ok(Err(e)) => return Err(e.into()),
                Ok(Ok(0)) => return Err(ConnError::Closed),
                Ok(Ok(n)) => n,
            },
            _ = shutdown.changed(), if idle => return Err(ConnError::Shutdown),
        };
        if self.rpos > 0 && self.rpos * 2 > self.rbuf.capacity() {
            self.rbuf.drain(..self.rpos);
            self.rpos = 0;
        }
        self.rbuf.extend_from_slice(&tmp[..n]);
        Ok(n)
    }

    /// Queues reply bytes; they go out at the next read or flush.
    pub fn queue(&mut self, bytes: &[u8]) {
        self.wbuf.extend_from_slice(bytes);
    }

    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), ConnError> {
        self.queue(bytes);
        if self.wbuf.len() >= WRITE_HIGH_WATER {
            self.flush().await?;
        }
        Ok(())
    }

    pub async fn flush(&mut self) -> Result<(), ConnError> {
        if !self.wbuf.is_empty() {
            let write = async {
                self.stream.write_all(&self.wbuf).await?;
                self.stream.flush().await
            };
            match tokio::time::timeout(self.write_timeout, write).await {
                Ok(r) => r?,
                Err(_) => return Err(ConnError::Timeout),
            }
            self.wbuf.clear();
            self.wbuf.shrink_to(WRITE_KEEP);
        }
        Ok(())
    }

    pub fn shutdown_requested(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Switches to TLS. Input the client sent before the handshake is
    /// discarded: acting on it would let a man in the middle inject
    /// commands into the protected session (RFC 3207 4.2, CVE-2011-0411).
    pub async fn start_tls(mut self, acceptor: &tokio_rustls::TlsAcceptor) -> Result<Conn, ConnError> {
        self.flush().await?;
        let tls = acceptor.accept(self.stream).await?;
        Ok(Conn { stream: Box::new(tls), rbuf: Vec::new(), rpos: 0, wbuf: Vec::new(), tls: true, shutdown: self.shutdown, write_timeout: self.write_timeout })
    }

    pub async fn close(mut self) {
        let _ = self.flush().await;
        let _ = tokio::time::timeout(self.write_timeout, self.stream.shutdown()).await;
    }
}

/// Shared read-only TLS settings.
pub type Acceptor = Arc<tokio_rustls::TlsAcceptor>;

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(stream: tokio::io::DuplexStream) -> (Conn, watch::Sender<bool>) {
        let (tx, rx) = watch::channel(false);
        (Conn::new(Box::new(stream), false, rx, Duration::from_secs(5)), tx)
    }

    #[tokio::test]
    async fn a_line_trickled_in_misses_its_deadline() {
        let (client, server) = tokio::io::duplex(1024);
        let (mut c, _tx) = conn(server);
        let trickle = tokio::spawn(async move {
            let mut client = client;
            for b in b"NOOP and more and more\r\n" {
                if client.write_all(&[*b]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        // A byte every 100 ms, the whole line in 2.4 s: longer than its 1 s.
        let t0 = tokio::time::Instant::now();
        let r = c.read_line(512, Duration::from_secs(1)).await;
        assert!(matches!(r, Err(ConnError::Timeout)), "{r:?}");
        assert!(t0.elapsed() >= Duration::from_secs(1));
        drop(c);
        let _ = trickle.await;
    }

    #[tokio::test]
    async fn lines_that_come_in_time_are_read() {
        let (mut client, server) = tokio::io::duplex(1024);
        let (mut c, _tx) = conn(server);
        client.write_all(b"NO").await.unwrap();
        let line = async { c.read_line(512, Duration::from_secs(10)).await };
        let send = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            client.write_all(b"OP\r\n").await.unwrap();
        };
        let (line, ()) = tokio::join!(line, send);
        assert_eq!(line.unwrap(), b"NOOP");
    }

    #[tokio::test]
    async fn a_waiting_session_gives_its_buffers_back() {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let (mut c, _tx) = conn(server);
        let long = format!("{}\r\n", "x".repeat(12_000));
        client.write_all(long.as_bytes()).await.unwrap();
        assert_eq!(c.read_line(16 * 1024, Duration::from_secs(5)).await.unwrap().len(), 12_000);
        assert!(c.buffer_capacity() >= 12_000);
        let reader = tokio::spawn(async move {
            let mut sink = vec![0u8; 100_000];
            client.read_exact(&mut sink).await.unwrap();
            client
        });
        c.queue(&vec![b'r'; 100_000]);
        c.flush().await.unwrap();
        let _client = reader.await.unwrap();
        // The next wait for a command: the old buffers are gone.
        let r = c.read_line(16 * 1024, Duration::from_millis(300)).await;
        assert!(matches!(r, Err(ConnError::Timeout)), "{r:?}");
        let cap = c.buffer_capacity();
        assert!(cap <= IDLE_READ + WRITE_KEEP, "{cap} bytes kept by an idle session");
    }
}
