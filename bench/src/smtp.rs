//! SMTP ingest load: N messages over C concurrent connections.

use crate::maildir;
use crate::msg;
use crate::net::{show, Conn};
use crate::stats::{mib, percentile_ms, Sampler};
use anyhow::{anyhow, bail, Result};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug, Clone)]
pub struct SmtpArgs {
    /// Server address, HOST:PORT (a loopback address).
    #[arg(long)]
    pub target: String,
    /// Number of messages to send.
    #[arg(long, default_value_t = 1000)]
    pub messages: u64,
    /// Approximate size of each message in bytes.
    #[arg(long, default_value_t = 10 * 1024)]
    pub size: usize,
    /// Concurrent connections; each sends transactions until all are sent.
    #[arg(long, default_value_t = 8)]
    pub connections: u64,
    /// Envelope and header sender.
    #[arg(long)]
    pub from: String,
    /// Envelope and header recipient.
    #[arg(long)]
    pub to: String,
    /// Name given in EHLO.
    #[arg(long, default_value = "bench.localhost")]
    pub helo: String,
    /// Maildir (with new/ and cur/) to check for every accepted message.
    #[arg(long)]
    pub verify_maildir: Option<PathBuf>,
    /// Seconds to wait for accepted messages to appear in the Maildir.
    #[arg(long, default_value_t = 30)]
    pub verify_timeout: u64,
    /// Server process whose VmRSS/VmHWM is sampled every 100 ms.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Timeout in seconds for each connect, write and reply.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
    /// Stop starting new transactions after this many seconds.
    #[arg(long, default_value_t = 3600)]
    pub max_time: u64,
}

/// What one connection task reports.
#[derive(Default)]
struct Outcome {
    accepted: Vec<String>,
    /// Refused by the server (4xx/5xx); must not be stored.
    rejected: Vec<String>,
    /// Connection failed after the data was sent; may or may not be stored.
    uncertain: Vec<String>,
    /// Lost before the data phase (connection error).
    failed_early: u64,
    bytes: u64,
    data_lat: Vec<Duration>,
    commit_lat: Vec<Duration>,
    errors: Vec<String>,
}

/// Reads a possibly multi-line reply; returns its code and last line.
async fn reply(c: &mut Conn, buf: &mut Vec<u8>) -> Result<(u16, String)> {
    loop {
        c.line(buf).await?;
        if buf.len() < 4 || !buf[..3].iter().all(u8::is_ascii_digit) {
            bail!("malformed SMTP reply: {:?}", show(buf));
        }
        let code: u16 = std::str::from_utf8(&buf[..3])?.parse()?;
        if buf[3] != b'-' {
            return Ok((code, show(buf)));
        }
    }
}

async fn expect(c: &mut Conn, buf: &mut Vec<u8>, what: &str, ok: fn(u16) -> bool) -> Result<()> {
    let (code, text) = reply(c, buf).await?;
    if ok(code) {
        Ok(())
    } else {
        bail!("{what}: {text}")
    }
}

async fn open(a: &SmtpArgs, buf: &mut Vec<u8>) -> Result<Conn> {
    let mut c = Conn::connect(&a.target, Duration::from_secs(a.timeout)).await?;
    expect(&mut c, buf, "greeting", |x| x == 220).await?;
    c.send(format!("EHLO {}\r\n", a.helo).as_bytes()).await?;
    let (code, text) = reply(&mut c, buf).await?;
    if code != 250 {
        c.send(format!("HELO {}\r\n", a.helo).as_bytes()).await?;
        expect(&mut c, buf, "HELO", |x| x == 250)
            .await
            .map_err(|e| anyhow!("EHLO: {text}; {e}"))?;
    }
    Ok(c)
}

enum Step {
    Accepted,
    Rejected(String),
}

/// One transaction. An Err means the connection is unusable; `sent_data`
/// then tells whether the server may have received the whole message.
async fn transaction(
    c: &mut Conn,
    buf: &mut Vec<u8>,
    a: &SmtpArgs,
    m: &msg::WireMessage,
    out: &mut Outcome,
    sent_data: &mut bool,
) -> Result<Step> {
    c.send(format!("MAIL FROM:<{}>\r\n", a.from).as_bytes())
        .await?;
    let (code, text) = reply(c, buf).await?;
    if code == 421 {
        bail!("MAIL: {text}");
    }
    if code != 250 {
        return Ok(Step::Rejected(format!("MAIL: {text}")));
    }
    c.send(format!("RCPT TO:<{}>\r\n", a.to).as_bytes()).await?;
    let (code, text) = reply(c, buf).await?;
    if code == 421 {
        bail!("RCPT: {text}");
    }
    if code != 250 && code != 251 {
        return Ok(Step::Rejected(format!("RCPT: {text}")));
    }
    let t0 = Instant::now();
    c.send(b"DATA\r\n").await?;
    let (code, text) = reply(c, buf).await?;
    if code == 421 {
        bail!("DATA: {text}");
    }
    if code != 354 {
        return Ok(Step::Rejected(format!("DATA: {text}")));
    }
    c.send(&m.wire).await?;
    *sent_data = true;
    let t1 = Instant::now();
    let (code, text) = reply(c, buf).await?;
    let done = Instant::now();
    if code == 421 {
        bail!("end of data: {text}");
    }
    if code != 250 {
        return Ok(Step::Rejected(format!("end of data: {text}")));
    }
    out.data_lat.push(done - t0);
    out.commit_lat.push(done - t1);
    Ok(Step::Accepted)
}

async fn worker(
    a: Arc<SmtpArgs>,
    run_id: Arc<String>,
    next: Arc<AtomicU64>,
    deadline: Instant,
) -> Outcome {
    let mut out = Outcome::default();
    let mut buf = Vec::with_capacity(1024);
    let mut consecutive_errors = 0u32;
    'conn: loop {
        if next.load(Ordering::Relaxed) >= a.messages || Instant::now() >= deadline {
            break;
        }
        let mut c = match open(&a, &mut buf).await {
            Ok(c) => c,
            Err(e) => {
                out.errors.push(format!("{e:#}"));
                consecutive_errors += 1;
                if consecutive_errors >= 3 {
                    break 'conn;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue 'conn;
            }
        };
        loop {
            if Instant::now() >= deadline {
                break 'conn;
            }
            let seq = next.fetch_add(1, Ordering::Relaxed);
            if seq >= a.messages {
                let _ = c.send(b"QUIT\r\n").await;
                let _ = reply(&mut c, &mut buf).await;
                c.close().await;
                break 'conn;
            }
            let m = msg::build(&run_id, seq, a.size, &a.from, &a.to, &a.helo);
            let tok = msg::token(&run_id, seq);
            let mut sent_data = false;
            match transaction(&mut c, &mut buf, &a, &m, &mut out, &mut sent_data).await {
                Ok(Step::Accepted) => {
                    consecutive_errors = 0;
                    out.bytes += m.size as u64;
                    out.accepted.push(tok);
                }
                Ok(Step::Rejected(why)) => {
                    out.errors.push(why);
                    out.rejected.push(tok);
                    // Leave the transaction state clean for the next one.
                    let r = async {
                        c.send(b"RSET\r\n").await?;
                        reply(&mut c, &mut buf).await
                    }
                    .await;
                    if r.is_err() {
                        continue 'conn;
                    }
                }
                Err(e) => {
                    out.errors.push(format!("{e:#}"));
                    if sent_data {
                        out.uncertain.push(tok);
                    } else {
                        out.failed_early += 1;
                    }
                    consecutive_errors += 1;
                    if consecutive_errors >= 3 {
                        break 'conn;
                    }
                    continue 'conn;
                }
            }
        }
    }
    out
}

pub async fn run(a: SmtpArgs) -> Result<bool> {
    if a.connections == 0 {
        bail!("--connections must be at least 1");
    }
    let run_id = Arc::new(msg::new_run_id());
    let sampler = match a.pid {
        Some(pid) => Some(Sampler::start(pid)?),
        None => None,
    };
    let a = Arc::new(a);
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + Duration::from_secs(a.max_time);
    let tasks: Vec<_> = (0..a.connections.min(a.messages.max(1)))
        .map(|_| tokio::spawn(worker(a.clone(), run_id.clone(), next.clone(), deadline)))
        .collect();
    let mut all = Outcome::default();
    for t in tasks {
        let o = t.await?;
        all.accepted.extend(o.accepted);
        all.rejected.extend(o.rejected);
        all.uncertain.extend(o.uncertain);
        all.failed_early += o.failed_early;
        all.bytes += o.bytes;
        all.data_lat.extend(o.data_lat);
        all.commit_lat.extend(o.commit_lat);
        all.errors.extend(o.errors);
    }
    let elapsed = start.elapsed();
    let mem = match sampler {
        Some(s) => Some(s.finish().await),
        None => None,
    };

    let attempted = next.load(Ordering::Relaxed).min(a.messages);
    let accepted = all.accepted.len() as u64;
    let failed = all.rejected.len() as u64 + all.uncertain.len() as u64 + all.failed_early;
    let not_attempted = a.messages - attempted.min(a.messages);
    let secs = elapsed.as_secs_f64().max(1e-9);
    let rate = accepted as f64 / secs;
    let mbs = all.bytes as f64 / 1e6 / secs;
    all.data_lat.sort();
    all.commit_lat.sort();

    println!("smtp target: {}", a.target);
    println!("run id: {run_id}");
    println!(
        "messages: {} requested, {} accepted, {} failed, {} not attempted",
        a.messages, accepted, failed, not_attempted
    );
    if failed > 0 {
        println!(
            "  failed: {} rejected by server, {} connection lost after data, {} connection lost before data",
            all.rejected.len(),
            all.uncertain.len(),
            all.failed_early
        );
    }
    println!(
        "connections: {}, message size: ~{} bytes",
        a.connections, a.size
    );
    println!("elapsed: {secs:.3} s");
    println!("throughput: {rate:.1} msgs/s, {mbs:.2} MB/s");
    println!(
        "latency DATA to 250: p50 {:.2} ms, p99 {:.2} ms",
        percentile_ms(&all.data_lat, 50.0),
        percentile_ms(&all.data_lat, 99.0)
    );
    println!(
        "latency end-of-data to 250: p50 {:.2} ms, p99 {:.2} ms",
        percentile_ms(&all.commit_lat, 50.0),
        percentile_ms(&all.commit_lat, 99.0)
    );
    if let Some(m) = mem {
        println!(
            "server memory: peak VmRSS {:.1} MiB, VmHWM {:.1} MiB ({} samples)",
            mib(m.peak_rss_kib),
            mib(m.hwm_kib),
            m.samples
        );
    }
    if !all.errors.is_empty() {
        let mut distinct: Vec<&String> = Vec::new();
        for e in &all.errors {
            if !distinct.contains(&e) && distinct.len() < 5 {
                distinct.push(e);
            }
        }
        println!("errors: {} (first distinct ones below)", all.errors.len());
        for e in distinct {
            println!("  {e}");
        }
    }
    let mut ok = failed == 0 && not_attempted == 0 && accepted == a.messages;

    let mut verify_s = String::new();
    if let Some(dir) = &a.verify_maildir {
        let accepted_set: HashSet<String> = all.accepted.iter().cloned().collect();
        let rejected_set: HashSet<String> = all.rejected.iter().cloned().collect();
        let v = maildir::verify(
            dir,
            &run_id,
            &accepted_set,
            &rejected_set,
            Duration::from_secs(a.verify_timeout),
        )
        .await?;
        println!(
            "verified: {} of {} accepted, {} missing, {} duplicates, {} corrupt",
            v.present, accepted, v.missing, v.duplicates, v.corrupt
        );
        if v.unexpected > 0 {
            println!(
                "  {} messages refused by the server were stored anyway",
                v.unexpected
            );
        }
        if v.uncertain_found > 0 {
            println!(
                "  {} messages whose connection failed after the data were stored",
                v.uncertain_found
            );
        }
        let after = (v.complete_at - start).as_secs_f64();
        if v.missing == 0 {
            println!("stored: all accepted messages present {after:.3} s after the first was sent");
        } else {
            println!(
                "stored: {} of {} accepted messages present when checking stopped, {after:.3} s after the first was sent",
                v.present, accepted
            );
        }
        verify_s = format!(
            " verified={} missing={} duplicates={} corrupt={}{}",
            v.present,
            v.missing,
            v.duplicates,
            v.corrupt,
            if v.missing == 0 {
                format!(" stored_all_s={after:.3}")
            } else {
                String::new()
            }
        );
        if v.missing + v.duplicates + v.corrupt + v.unexpected > 0 {
            ok = false;
        }
    }
    // One machine-readable line for scripts.
    println!(
        "summary: proto=smtp accepted={} failed={} elapsed_s={:.3} msgs_per_s={:.1} mb_per_s={:.2} \
         data_p50_ms={:.2} data_p99_ms={:.2} commit_p50_ms={:.2} commit_p99_ms={:.2} peak_rss_kib={} hwm_kib={}{}",
        accepted,
        failed + not_attempted,
        secs,
        rate,
        mbs,
        percentile_ms(&all.data_lat, 50.0),
        percentile_ms(&all.data_lat, 99.0),
        percentile_ms(&all.commit_lat, 50.0),
        percentile_ms(&all.commit_lat, 99.0),
        mem.map(|m| m.peak_rss_kib).unwrap_or(0),
        mem.map(|m| m.hwm_kib).unwrap_or(0),
        verify_s
    );
    Ok(ok)
}
