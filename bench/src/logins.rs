//! Wrong passwords in parallel against a node, and what they leave in its
//! resident memory.

use crate::net::{show, Conn};
use crate::stats::{mib, Sampler};
use anyhow::{anyhow, bail, Context, Result};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::net::TcpSocket;

#[derive(clap::Args, Debug, Clone)]
pub struct LoginsArgs {
    /// Submission address with AUTH PLAIN allowed (a node started with
    /// --allow-plaintext-auth), HOST:PORT on 127.0.0.1.
    #[arg(long)]
    pub submission: String,
    /// POP3 address with USER/PASS allowed, HOST:PORT on 127.0.0.1.
    #[arg(long)]
    pub pop3: String,
    /// The node's process, whose VmRSS is measured.
    #[arg(long)]
    pub pid: u32,
    /// An existing account (its password is never sent right).
    #[arg(long, default_value = "alice@example.test")]
    pub user: String,
    /// Wrong passwords at once, per protocol (each from its own address in
    /// its own /24 of 127.0.0.0/8, so that no failure counting per address
    /// or network spares the node the checks).
    #[arg(long, default_value_t = 50)]
    pub parallel: u8,
    /// Bursts, one after another.
    #[arg(long, default_value_t = 1)]
    pub rounds: u8,
    /// Fail when the growth over idle is larger (MiB).
    #[arg(long, default_value_t = 64)]
    pub target_mib: u64,
    /// Timeout in seconds for each connect, write and reply line.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
}

fn vm_rss_kib(pid: u32) -> Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).with_context(|| format!("no process {pid}"))?;
    s.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse().ok()).ok_or_else(|| anyhow!("no VmRSS for {pid}"))
}

async fn connect_from(src: Ipv4Addr, dst: &str, t: Duration) -> Result<Conn> {
    let dst: SocketAddr = dst.parse().with_context(|| format!("{dst}: not IP:PORT"))?;
    let s = TcpSocket::new_v4()?;
    s.bind(SocketAddr::new(IpAddr::V4(src), 0)).with_context(|| format!("bind {src}"))?;
    let stream = tokio::time::timeout(t, s.connect(dst)).await.map_err(|_| anyhow!("connect to {dst}: timed out"))??;
    Ok(Conn::from_stream(stream, t))
}

/// The first line of an SMTP reply after reading all of it.
async fn smtp_reply(c: &mut Conn, buf: &mut Vec<u8>) -> Result<String> {
    loop {
        c.line(buf).await?;
        if buf.get(3) != Some(&b'-') {
            return Ok(show(buf));
        }
    }
}

fn b64(data: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16) | (u32::from(*c.get(1).unwrap_or(&0)) << 8) | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            out.push(if i <= c.len() { ABC[(n >> (18 - 6 * i) & 63) as usize] as char } else { '=' });
        }
    }
    out
}

async fn smtp_attempt(a: &LoginsArgs, src: Ipv4Addr, pw: String) -> Result<String> {
    let t = Duration::from_secs(a.timeout);
    let mut c = connect_from(src, &a.submission, t).await?;
    let mut buf = Vec::new();
    smtp_reply(&mut c, &mut buf).await?;
    c.send(b"EHLO bench.example\r\n").await?;
    smtp_reply(&mut c, &mut buf).await?;
    c.send(format!("AUTH PLAIN {}\r\n", b64(format!("\0{}\0{pw}", a.user).as_bytes())).as_bytes()).await?;
    let r = smtp_reply(&mut c, &mut buf).await?;
    c.close().await;
    Ok(r)
}

async fn pop3_attempt(a: &LoginsArgs, src: Ipv4Addr, pw: String) -> Result<String> {
    let t = Duration::from_secs(a.timeout);
    let mut c = connect_from(src, &a.pop3, t).await?;
    let mut buf = Vec::new();
    c.line(&mut buf).await?;
    c.send(format!("USER {}\r\n", a.user).as_bytes()).await?;
    c.line(&mut buf).await?;
    c.send(format!("PASS {pw}\r\n").as_bytes()).await?;
    c.line(&mut buf).await?;
    let r = show(&buf);
    c.close().await;
    Ok(r)
}

/// The replies' first words (code and enhanced code, or -ERR and its
/// response code), counted.
fn tally(replies: &[Result<String>]) -> String {
    let mut m = std::collections::BTreeMap::<String, usize>::new();
    for r in replies {
        let k = match r {
            Ok(l) => l.split_whitespace().take(2).collect::<Vec<_>>().join(" "),
            Err(e) => format!("error: {e}"),
        };
        *m.entry(k).or_default() += 1;
    }
    m.iter().map(|(k, n)| format!("{n} x {k}")).collect::<Vec<_>>().join(", ")
}

pub async fn run(a: LoginsArgs) -> Result<bool> {
    if a.parallel == 0 || a.parallel > 120 {
        bail!("--parallel: 1 to 120");
    }
    let idle = vm_rss_kib(a.pid)?;
    let sampler = Sampler::start(a.pid)?;
    let start = Instant::now();
    let mut ok = true;
    for round in 0..a.rounds {
        let base = 1 + 2 * round;
        let smtp: Vec<_> = (1..=a.parallel).map(|i| tokio::spawn(smtp_attempt_owned(a.clone(), Ipv4Addr::new(127, base, i, 1), format!("wrong-{round}-{i}")))).collect();
        let mut replies = Vec::new();
        for t in smtp {
            replies.push(t.await.map_err(|e| anyhow!("{e}")).and_then(|r| r));
        }
        println!("round {}: submission AUTH PLAIN: {}", round + 1, tally(&replies));
        ok &= replies.iter().all(|r| r.as_ref().is_ok_and(|l| l.starts_with("535") || l.starts_with("454")));
        let pop3: Vec<_> = (1..=a.parallel).map(|i| tokio::spawn(pop3_attempt_owned(a.clone(), Ipv4Addr::new(127, base + 1, i, 1), format!("wrong-{round}-{i}")))).collect();
        let mut replies = Vec::new();
        for t in pop3 {
            replies.push(t.await.map_err(|e| anyhow!("{e}")).and_then(|r| r));
        }
        println!("round {}: POP3 USER/PASS: {}", round + 1, tally(&replies));
        ok &= replies.iter().all(|r| r.as_ref().is_ok_and(|l| l.starts_with("-ERR")));
    }
    let took = start.elapsed();
    // Let the node finish what it does after the last reply.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = vm_rss_kib(a.pid)?;
    let mem = sampler.finish().await;
    let growth = after.saturating_sub(idle);
    println!("{} wrong passwords in {:.1} s", 2 * u64::from(a.parallel) * u64::from(a.rounds), took.as_secs_f64());
    println!("VmRSS idle {:.1} MiB, after {:.1} MiB: growth {:.1} MiB (target: under {} MiB); peak {:.1} MiB", mib(idle), mib(after), mib(growth), a.target_mib, mib(mem.peak_rss_kib));
    println!("summary: idle_kib={idle} after_kib={after} growth_kib={growth} peak_kib={}", mem.peak_rss_kib);
    if growth >= a.target_mib * 1024 {
        println!("FAILED: the growth is over the target");
        ok = false;
    }
    Ok(ok)
}

async fn smtp_attempt_owned(a: LoginsArgs, src: Ipv4Addr, pw: String) -> Result<String> {
    smtp_attempt(&a, src, pw).await
}

async fn pop3_attempt_owned(a: LoginsArgs, src: Ipv4Addr, pw: String) -> Result<String> {
    pop3_attempt(&a, src, pw).await
}
