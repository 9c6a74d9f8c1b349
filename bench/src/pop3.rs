//! POP3 retrieval load: whole-mailbox downloads (RETR of every message).

use crate::msg::{self, Check};
use crate::net::{show, Conn};
use anyhow::{bail, Context, Result};
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug, Clone)]
pub struct Pop3Args {
    /// Server address, HOST:PORT (a loopback address).
    #[arg(long)]
    pub target: String,
    /// Mailbox user; give it several times to retrieve several mailboxes
    /// in parallel, one session per user at a time.
    #[arg(long, required = true)]
    pub user: Vec<String>,
    /// Password; one for all users, or one per --user in the same order.
    #[arg(long, required = true)]
    pub password: Vec<String>,
    /// Whole-mailbox sessions per user, run one after another (a POP3
    /// server locks a mailbox to one session at a time).
    #[arg(long, default_value_t = 1)]
    pub connections: u64,
    /// Fail unless every session sees at least this many messages.
    #[arg(long, default_value_t = 0)]
    pub expect_min: u64,
    /// Only log in, STAT and QUIT (no LIST or RETR): times connect to the
    /// STAT reply, for a big mailbox.
    #[arg(long)]
    pub stat_only: bool,
    /// Timeout in seconds for each connect, write and reply line.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
}

#[derive(Default)]
struct Session {
    messages: u64,
    bytes: u64,
    bench_intact: u64,
    bench_corrupt: u64,
    /// From the connect to the STAT reply.
    to_stat: Duration,
}

async fn status(c: &mut Conn, buf: &mut Vec<u8>, what: &str) -> Result<String> {
    c.line(buf).await?;
    if buf.starts_with(b"+OK") {
        Ok(show(buf))
    } else {
        bail!("{what}: {}", show(buf))
    }
}

/// Reads a multi-line body up to the terminating dot line, undoing
/// dot-stuffing; `out` gets the message with CRLF line ends.
async fn multiline(c: &mut Conn, buf: &mut Vec<u8>, out: &mut Vec<u8>) -> Result<()> {
    out.clear();
    loop {
        c.line(buf).await?;
        if buf == b".\r\n" || buf == b".\n" {
            return Ok(());
        }
        let line = if buf.first() == Some(&b'.') {
            &buf[1..]
        } else {
            &buf[..]
        };
        out.extend_from_slice(line);
    }
}

async fn session(a: &Pop3Args, user: &str, password: &str) -> Result<Session> {
    let mut s = Session::default();
    let t0 = Instant::now();
    let mut c = Conn::connect(&a.target, Duration::from_secs(a.timeout)).await?;
    let mut buf = Vec::with_capacity(4096);
    let mut body = Vec::with_capacity(64 * 1024);
    status(&mut c, &mut buf, "greeting").await?;
    c.send(format!("USER {user}\r\n").as_bytes()).await?;
    status(&mut c, &mut buf, "USER").await?;
    c.send(format!("PASS {password}\r\n").as_bytes()).await?;
    status(&mut c, &mut buf, "PASS").await?;
    c.send(b"STAT\r\n").await?;
    let stat = status(&mut c, &mut buf, "STAT").await?;
    let count: u64 = stat
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("STAT reply {stat:?}"))?;
    s.to_stat = t0.elapsed();
    if a.stat_only {
        s.messages = count;
        c.send(b"QUIT\r\n").await?;
        status(&mut c, &mut buf, "QUIT").await?;
        c.close().await;
        return Ok(s);
    }
    c.send(b"LIST\r\n").await?;
    status(&mut c, &mut buf, "LIST").await?;
    multiline(&mut c, &mut buf, &mut body).await?;
    let listing = String::from_utf8_lossy(&body).into_owned();
    let numbers: Vec<u64> = listing
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    if numbers.len() as u64 != count {
        bail!("STAT says {count} messages, LIST lists {}", numbers.len());
    }
    for n in numbers {
        c.send(format!("RETR {n}\r\n").as_bytes()).await?;
        status(&mut c, &mut buf, "RETR").await?;
        multiline(&mut c, &mut buf, &mut body).await?;
        s.messages += 1;
        s.bytes += body.len() as u64;
        match msg::check(&body) {
            Check::Bench { intact: true, .. } => s.bench_intact += 1,
            Check::Bench { intact: false, .. } => s.bench_corrupt += 1,
            Check::Foreign => {}
        }
    }
    c.send(b"QUIT\r\n").await?;
    status(&mut c, &mut buf, "QUIT").await?;
    c.close().await;
    Ok(s)
}

pub async fn run(a: Pop3Args) -> Result<bool> {
    if a.password.len() != 1 && a.password.len() != a.user.len() {
        bail!("give --password once, or once per --user");
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (i, user) in a.user.iter().enumerate() {
        let a2 = a.clone();
        let user = user.clone();
        let pw = a.password.get(i).unwrap_or(&a.password[0]).clone();
        tasks.push(tokio::spawn(async move {
            let mut done = Vec::new();
            for _ in 0..a2.connections {
                let r = session(&a2, &user, &pw)
                    .await
                    .with_context(|| format!("POP3 session of {user}"));
                let failed = r.is_err();
                done.push(r);
                if failed {
                    break;
                }
            }
            done
        }));
    }
    let mut total = Session::default();
    let mut to_stat = Vec::new();
    let mut sessions = 0u64;
    let mut ok = true;
    for t in tasks {
        for r in t.await? {
            match r {
                Ok(s) => {
                    sessions += 1;
                    to_stat.push(s.to_stat);
                    if s.messages < a.expect_min {
                        println!(
                            "error: a session saw {} messages, expected at least {}",
                            s.messages, a.expect_min
                        );
                        ok = false;
                    }
                    total.messages += s.messages;
                    total.bytes += s.bytes;
                    total.bench_intact += s.bench_intact;
                    total.bench_corrupt += s.bench_corrupt;
                }
                Err(e) => {
                    println!("error: {e:#}");
                    ok = false;
                }
            }
        }
    }
    let secs = start.elapsed().as_secs_f64().max(1e-9);
    let rate = total.messages as f64 / secs;
    let mbs = total.bytes as f64 / 1e6 / secs;
    if total.bench_corrupt > 0 {
        ok = false;
    }
    println!("pop3 target: {}", a.target);
    println!(
        "sessions: {sessions} ({} users x {} sequential)",
        a.user.len(),
        a.connections
    );
    println!("messages: {}, bytes: {}", total.messages, total.bytes);
    println!(
        "benchmark messages: {} intact, {} corrupt",
        total.bench_intact, total.bench_corrupt
    );
    let first_ms = to_stat.first().map_or(0.0, |d| d.as_secs_f64() * 1000.0);
    let warm_ms = if to_stat.len() > 1 { crate::stats::median_ms(&to_stat[1..]) } else { first_ms };
    println!("connect to STAT reply: first session {first_ms:.1} ms, later sessions median {warm_ms:.1} ms");
    println!("elapsed: {secs:.3} s");
    if a.stat_only {
        println!("(STAT only: messages counted, none retrieved)");
    } else {
        println!("throughput: {rate:.1} msgs/s, {mbs:.2} MB/s");
    }
    println!(
        "summary: proto=pop3 sessions={sessions} messages={} bytes={} corrupt={} elapsed_s={secs:.3} msgs_per_s={rate:.1} mb_per_s={mbs:.2} stat_first_ms={first_ms:.1} stat_warm_ms={warm_ms:.1}",
        total.messages, total.bytes, total.bench_corrupt
    );
    Ok(ok)
}
