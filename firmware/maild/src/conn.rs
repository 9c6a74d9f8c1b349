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
const READ_CHUNK: usize = 16 * 1024;
/// Replies are flushed once this much is buffered, even mid-pipeline.
const WRITE_HIGH_WATER: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("the client closed the connection")]
    Closed,
    #[error("the client was idle too long")]
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
        Conn { stream, rbuf: Vec::with_capacity(READ_CHUNK), rpos: 0, wbuf: Vec::with_capacity(1024), tls, shutdown, write_timeout }
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
        self.flush().await?;
        if self.rpos > 0 && self.rpos * 2 > self.rbuf.capacity() {
            self.rbuf.drain(..self.rpos);
            self.rpos = 0;
        }
        let old = self.rbuf.len();
        self.rbuf.resize(old + READ_CHUNK, 0);
        let r = tokio::time::timeout(timeout, self.stream.read(&mut self.rbuf[old..])).await;
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
    /// bytes including the line end. While waiting for a new command the
    /// session gives way to a server shutdown.
    pub async fn read_line(&mut self, max: usize, timeout: Duration) -> Result<Vec<u8>, ConnError> {
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
            tokio::select! {
                r = self.fill(timeout) => { r?; }
                _ = shutdown.changed(), if idle => return Err(ConnError::Shutdown),
            }
        }
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
        Ok(Conn { stream: Box::new(tls), rbuf: Vec::with_capacity(READ_CHUNK), rpos: 0, wbuf: Vec::new(), tls: true, shutdown: self.shutdown, write_timeout: self.write_timeout })
    }

    pub async fn close(mut self) {
        let _ = self.flush().await;
        let _ = tokio::time::timeout(self.write_timeout, self.stream.shutdown()).await;
    }
}

/// Shared read-only TLS settings.
pub type Acceptor = Arc<tokio_rustls::TlsAcceptor>;
