//! A line-oriented client connection with a timeout on every step.

use anyhow::{anyhow, bail, Context, Result};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;

/// Longest line accepted from a server.
const MAX_LINE: usize = 1 << 20;

pub struct Conn {
    rd: BufReader<OwnedReadHalf>,
    wr: OwnedWriteHalf,
    timeout: Duration,
}

impl Conn {
    pub async fn connect(target: &str, t: Duration) -> Result<Conn> {
        let stream = timeout(t, TcpStream::connect(target))
            .await
            .map_err(|_| anyhow!("connect to {target}: timed out after {t:?}"))?
            .with_context(|| format!("connect to {target}"))?;
        Ok(Conn::from_stream(stream, t))
    }

    /// A connection made elsewhere (from a chosen source address, say).
    pub fn from_stream(stream: TcpStream, t: Duration) -> Conn {
        stream.set_nodelay(true).ok();
        let (r, w) = stream.into_split();
        Conn {
            rd: BufReader::with_capacity(64 * 1024, r),
            wr: w,
            timeout: t,
        }
    }

    /// Connects from a chosen local address (one of 127.0.0.0/8, say).
    pub async fn connect_from(src: Ipv4Addr, target: &str, t: Duration) -> Result<Conn> {
        let dst: SocketAddr = target.parse().with_context(|| format!("{target}: not IP:PORT"))?;
        let s = TcpSocket::new_v4()?;
        s.bind(SocketAddr::new(IpAddr::V4(src), 0)).with_context(|| format!("bind {src}"))?;
        let stream = timeout(t, s.connect(dst))
            .await
            .map_err(|_| anyhow!("connect to {target} from {src}: timed out after {t:?}"))?
            .with_context(|| format!("connect to {target} from {src}"))?;
        Ok(Conn::from_stream(stream, t))
    }

    /// Changes the timeout of every later step.
    pub fn set_timeout(&mut self, t: Duration) {
        self.timeout = t;
    }

    /// Reads exactly `n` bytes, appended to `buf`.
    pub async fn read_exact_into(&mut self, n: usize, buf: &mut Vec<u8>) -> Result<()> {
        let start = buf.len();
        buf.resize(start + n, 0);
        let t = self.timeout;
        timeout(t, self.rd.read_exact(&mut buf[start..]))
            .await
            .map_err(|_| anyhow!("read of {n} bytes timed out after {t:?}"))?
            .context("read (connection closed by server?)")?;
        Ok(())
    }

    pub async fn send(&mut self, bytes: &[u8]) -> Result<()> {
        timeout(self.timeout, self.wr.write_all(bytes))
            .await
            .map_err(|_| anyhow!("write timed out after {:?}", self.timeout))?
            .context("write")
    }

    /// Reads one line including its terminator into `buf` (cleared first).
    pub async fn line(&mut self, buf: &mut Vec<u8>) -> Result<()> {
        buf.clear();
        let t = self.timeout;
        timeout(t, read_line(&mut self.rd, buf))
            .await
            .map_err(|_| anyhow!("read timed out after {t:?}"))?
    }

    pub async fn close(mut self) {
        let _ = timeout(Duration::from_secs(2), self.wr.shutdown()).await;
    }
}

async fn read_line(rd: &mut BufReader<OwnedReadHalf>, buf: &mut Vec<u8>) -> Result<()> {
    loop {
        let avail = rd.fill_buf().await.context("read")?;
        if avail.is_empty() {
            bail!("connection closed by server");
        }
        if let Some(i) = avail.iter().position(|&b| b == b'\n') {
            buf.extend_from_slice(&avail[..=i]);
            rd.consume(i + 1);
            return Ok(());
        }
        let n = avail.len();
        buf.extend_from_slice(avail);
        rd.consume(n);
        if buf.len() > MAX_LINE {
            bail!("line longer than {MAX_LINE} bytes from server");
        }
    }
}

/// Printable form of a server line for error messages.
pub fn show(line: &[u8]) -> String {
    String::from_utf8_lossy(line)
        .trim_end()
        .chars()
        .take(200)
        .collect()
}

/// Source address number `i` of a spread over 127.0.0.0/8: `per_net`
/// connections per /24 (from 127.10.0.1 on), so that a server's limits per
/// address and per network (mailfort: 64 and 128, 16 when busy) see many
/// clients, as they would in real life.
pub fn spread_source(i: usize, per_net: usize) -> Ipv4Addr {
    let net = i / per_net.max(1);
    let host = (i % per_net.max(1)) as u8 + 1;
    Ipv4Addr::new(127, 10 + (net / 250) as u8, (net % 250) as u8 + 1, host)
}

/// Whether `target` is an IPv4 loopback address (spreading sources over
/// 127.0.0.0/8 works only there).
pub fn is_loopback_v4(target: &str) -> bool {
    matches!(target.parse::<SocketAddr>(), Ok(SocketAddr::V4(a)) if a.ip().is_loopback())
}
