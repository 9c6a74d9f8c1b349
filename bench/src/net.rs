//! A line-oriented client connection with a timeout on every step.

use anyhow::{anyhow, bail, Context, Result};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
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
