//! IDLE (RFC 2177): how soon a delivery is told to an idling session
//! (`imap-idle`), and what a thousand idling sessions cost the server in
//! memory (`imap-idle-many`).

use crate::imap::{expand_users, open_selected, Mbox};
use crate::imapc::Client;
use crate::msg;
use crate::net::{is_loopback_v4, show, spread_source, Conn};
use crate::stats::{median_ms, mib, percentile_ms, tree_mem, TreeMem};
use anyhow::{anyhow, bail, Context, Result};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug, Clone)]
pub struct IdleArgs {
    /// IMAP server address, HOST:PORT.
    #[arg(long)]
    pub target: String,
    #[arg(long)]
    pub user: String,
    #[arg(long)]
    pub password: String,
    /// SMTP server that delivers into the same mailbox (for mailfort: another
    /// node on the same store, so the notice has to cross nodes).
    #[arg(long, conflicts_with = "maildir")]
    pub smtp: Option<String>,
    /// Instead of SMTP: write each message straight into this Maildir's new/
    /// (the idling user's INBOX on disk).
    #[arg(long)]
    pub maildir: Option<PathBuf>,
    /// Owner UID:GID of files written with --maildir.
    #[arg(long)]
    pub owner: Option<String>,
    /// Recipient of the SMTP deliveries (default: --user).
    #[arg(long)]
    pub rcpt: Option<String>,
    /// Deliveries to time.
    #[arg(long, default_value_t = 30)]
    pub samples: u32,
    /// Size of the delivered messages.
    #[arg(long, default_value_t = 2048)]
    pub size: usize,
    /// Longest wait for one EXISTS, in seconds.
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,
}

/// A tiny SMTP sender: one connection, one transaction per call.
struct Smtp {
    c: Conn,
    buf: Vec<u8>,
}

impl Smtp {
    async fn reply(&mut self) -> Result<(u16, String)> {
        loop {
            self.c.line(&mut self.buf).await?;
            let code: u16 = std::str::from_utf8(self.buf.get(..3).unwrap_or(b"")).ok().and_then(|s| s.parse().ok()).with_context(|| format!("malformed SMTP reply {:?}", show(&self.buf)))?;
            if self.buf.get(3) != Some(&b'-') {
                return Ok((code, show(&self.buf)));
            }
        }
    }
    async fn expect(&mut self, cmd: Option<String>, want: u16) -> Result<()> {
        if let Some(cmd) = &cmd {
            self.c.send(cmd.as_bytes()).await?;
        }
        let (code, text) = self.reply().await?;
        if code != want {
            bail!("SMTP {}: {text}", cmd.as_deref().unwrap_or("greeting").trim_end());
        }
        Ok(())
    }
    async fn open(target: &str, t: Duration) -> Result<Smtp> {
        let mut s = Smtp { c: Conn::connect(target, t).await?, buf: Vec::new() };
        s.expect(None, 220).await?;
        s.expect(Some("EHLO bench.localhost\r\n".into()), 250).await?;
        Ok(s)
    }
    /// Up to the data; the caller sends it with [`Smtp::finish`].
    async fn begin(&mut self, rcpt: &str) -> Result<()> {
        self.expect(Some("MAIL FROM:<bench@sender.test>\r\n".into()), 250).await?;
        self.expect(Some(format!("RCPT TO:<{rcpt}>\r\n")), 250).await?;
        self.expect(Some("DATA\r\n".into()), 354).await
    }
}

/// Delivers message `seq`; returns when the message is complete on the
/// server's side (the final dot sent, or the file renamed into new/) and a
/// task that ends with the time of the 250.
async fn deliver(a: &IdleArgs, smtp: &mut Option<Smtp>, run: &str, seq: u64) -> Result<(Instant, Option<tokio::task::JoinHandle<Result<(Smtp, Instant)>>>)> {
    let rcpt = a.rcpt.clone().unwrap_or_else(|| a.user.clone());
    if let Some(dir) = &a.maildir {
        let body = msg::raw(run, seq, a.size, "bench@sender.test", &rcpt);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let name = format!("{}.{:06}_{seq}.bench", now.as_secs(), now.subsec_micros());
        let tmp = dir.join("tmp").join(&name);
        std::fs::write(&tmp, &body).with_context(|| format!("write {}", tmp.display()))?;
        if let Some(o) = &a.owner {
            let (u, g) = o.split_once(':').context("--owner UID:GID")?;
            std::os::unix::fs::chown(&tmp, Some(u.parse()?), Some(g.parse()?))?;
        }
        let t0 = Instant::now();
        std::fs::rename(&tmp, dir.join("new").join(&name)).context("rename into new/")?;
        return Ok((t0, None));
    }
    let mut s = smtp.take().context("no SMTP connection")?;
    s.begin(&rcpt).await?;
    let w = msg::build(run, seq, a.size, "bench@sender.test", &rcpt, "bench.localhost");
    let t0 = Instant::now();
    s.c.send(&w.wire).await?;
    let h = tokio::spawn(async move {
        s.expect(None, 250).await?;
        Ok((s, Instant::now()))
    });
    Ok((t0, Some(h)))
}

pub async fn run_idle(a: IdleArgs) -> Result<bool> {
    if a.smtp.is_none() && a.maildir.is_none() {
        bail!("give --smtp HOST:PORT or --maildir DIR as the delivery path");
    }
    if let Some(dir) = &a.maildir {
        // new/, cur/ and tmp/ must be there.
        crate::fill::fill(dir, 0, 0, a.owner.as_deref())?;
    }
    let t = Duration::from_secs(a.timeout);
    let mut mb = Mbox::default();
    let mut c = open_selected(&a.target, None, t, &a.user, &a.password, &mut mb).await?.client;
    let mut smtp = match &a.smtp {
        Some(s) => Some(Smtp::open(s, t).await?),
        None => None,
    };
    let run = msg::new_run_id();
    let mut to_exists = Vec::new();
    let mut after_250 = Vec::new();
    let mut failures = 0u32;
    let mut rng = Instant::now().elapsed().subsec_nanos() as u64 | 1;
    for k in 0..a.samples {
        let tag = c.idle_start(&mut |r| mb.on(r)).await?;
        // A pause of 100 to 400 ms, so that deliveries fall at any point of
        // a server's polling period.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        tokio::time::sleep(Duration::from_millis(100 + rng % 300)).await;
        let before = mb.exists();
        let (t0, acked) = deliver(&a, &mut smtp, &run, k as u64).await?;
        let deadline = t0 + t;
        let mut seen = None;
        while seen.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            c.conn.set_timeout(left);
            let r = match c.read().await {
                Ok(r) => r,
                Err(e) if e.to_string().contains("timed out") => break,
                Err(e) => return Err(e),
            };
            let now = Instant::now();
            mb.on(&r);
            if mb.exists() > before {
                seen = Some(now);
            }
        }
        c.conn.set_timeout(t);
        let t250 = match acked {
            Some(h) => {
                let (s, at) = h.await.map_err(|e| anyhow!("SMTP task: {e}"))??;
                smtp = Some(s);
                Some(at)
            }
            None => None,
        };
        match seen {
            Some(at) => {
                to_exists.push(at - t0);
                if let Some(a250) = t250 {
                    // Signed: a server that stores before its 250 may tell
                    // the idler first.
                    after_250.push(at.saturating_duration_since(a250));
                }
            }
            None => {
                failures += 1;
                println!("sample {}: no EXISTS within {} s", k + 1, a.timeout);
            }
        }
        c.idle_done(&tag, &mut |r| mb.on(r)).await?;
    }
    c.logout().await;
    to_exists.sort();
    after_250.sort();
    let via = match (&a.smtp, &a.maildir) {
        (Some(s), _) => format!("SMTP {s}"),
        (None, Some(d)) => format!("file into {}/new", d.display()),
        _ => unreachable!(),
    };
    println!("imap target: {}, delivery: {via}", a.target);
    println!(
        "delivery (end of data) to '* n EXISTS' in IDLE: {} samples, median {:.1} ms, p90 {:.1} ms, max {:.1} ms, min {:.1} ms",
        to_exists.len(),
        percentile_ms(&to_exists, 50.0),
        percentile_ms(&to_exists, 90.0),
        percentile_ms(&to_exists, 100.0),
        to_exists.first().map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    );
    if !after_250.is_empty() {
        println!(
            "  after the SMTP 250 (0 if EXISTS came first): median {:.1} ms, p90 {:.1} ms, max {:.1} ms",
            percentile_ms(&after_250, 50.0),
            percentile_ms(&after_250, 90.0),
            percentile_ms(&after_250, 100.0)
        );
    }
    println!(
        "summary: proto=imap-idle samples={} missed={failures} median_ms={:.2} p90_ms={:.2} max_ms={:.2} after250_median_ms={:.2}",
        to_exists.len(),
        percentile_ms(&to_exists, 50.0),
        percentile_ms(&to_exists, 90.0),
        percentile_ms(&to_exists, 100.0),
        percentile_ms(&after_250, 50.0)
    );
    Ok(failures == 0)
}

#[derive(clap::Args, Debug, Clone)]
pub struct IdleManyArgs {
    #[arg(long)]
    pub target: String,
    /// User(s), as for `imap` ({n} with --mailboxes).
    #[arg(long, required = true)]
    pub user: Vec<String>,
    #[arg(long, required = true)]
    pub password: Vec<String>,
    #[arg(long)]
    pub mailboxes: Option<usize>,
    /// Sessions to open, each logged in, INBOX selected, idling.
    #[arg(long, default_value_t = 1000)]
    pub sessions: usize,
    /// Seconds to hold them all.
    #[arg(long, default_value_t = 30)]
    pub hold: u64,
    /// The server's (main) process: its memory and its children's is read
    /// from /proc (VmRSS summed, and Pss).
    #[arg(long)]
    pub pid: u32,
    /// Sessions being opened at once.
    #[arg(long, default_value_t = 32)]
    pub parallel: usize,
    /// Sessions per source /24 on a loopback target (0: one address).
    #[arg(long, default_value_t = 8)]
    pub sources_per_net: usize,
    /// Timeout in seconds for each connect, write and response.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
}

fn show_mem(what: &str, m: &TreeMem) {
    println!("{what:<34} VmRSS {:>8.1} MiB, Pss {:>8.1} MiB over {} process(es)", mib(m.rss_kib), mib(m.pss_kib), m.procs);
}

pub async fn run_idle_many(a: IdleManyArgs) -> Result<bool> {
    let users = expand_users(&a.user, &a.password, a.mailboxes)?;
    crate::limits::raise_nofile(a.sessions as u64 + 64);
    if tree_mem(a.pid).procs == 0 {
        bail!("cannot read the memory of process {} (no such process?)", a.pid);
    }
    let before = tree_mem(a.pid);
    let t = Duration::from_secs(a.timeout);
    let sem = Arc::new(tokio::sync::Semaphore::new(a.parallel.max(1)));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..a.sessions {
        let (u, p) = users[i % users.len()].clone();
        let target = a.target.clone();
        let src = (a.sources_per_net > 0 && is_loopback_v4(&a.target)).then(|| spread_source(i, a.sources_per_net));
        let sem = sem.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire().await;
            let t0 = Instant::now();
            let mut mb = Mbox::default();
            let o = open_selected(&target, src, t, &u, &p, &mut mb).await.with_context(|| format!("session {i} ({u})"))?;
            let mut c = o.client;
            let tag = c.idle_start(&mut |_| {}).await.with_context(|| format!("session {i}: IDLE"))?;
            Ok::<(Client, String, Duration, u32), anyhow::Error>((c, tag, t0.elapsed(), o.retries))
        }));
    }
    let mut open = Vec::new();
    let mut setup = Vec::new();
    let mut errors = Vec::new();
    let mut retries = 0u64;
    for tk in tasks {
        match tk.await.map_err(|e| anyhow!("{e}"))? {
            Ok((c, tag, d, r)) => {
                open.push((c, tag));
                setup.push(d);
                retries += u64::from(r);
            }
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    let opened_in = start.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let with = tree_mem(a.pid);
    let mut peak = with;
    let hold_end = Instant::now() + Duration::from_secs(a.hold);
    while Instant::now() < hold_end {
        tokio::time::sleep(Duration::from_secs(1).min(hold_end.saturating_duration_since(Instant::now()))).await;
        let m = tree_mem(a.pid);
        if m.rss_kib > peak.rss_kib {
            peak = m;
        }
    }
    let at_end = tree_mem(a.pid);
    // Every session must still answer: DONE, then LOGOUT.
    let mut alive = 0usize;
    let mut closers = Vec::new();
    for (mut c, tag) in open.drain(..) {
        closers.push(tokio::spawn(async move {
            c.conn.set_timeout(Duration::from_secs(30));
            let r = c.idle_done(&tag, &mut |_| {}).await;
            c.logout().await;
            r.map(|_| ())
        }));
    }
    for cl in closers {
        match cl.await.map_err(|e| anyhow!("{e}"))? {
            Ok(()) => alive += 1,
            Err(e) => {
                if errors.len() < 1000 {
                    errors.push(format!("after the hold: {e:#}"));
                }
            }
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = tree_mem(a.pid);
    let n = setup.len().max(1) as f64;
    let per_rss = (with.rss_kib as f64 - before.rss_kib as f64) * 1024.0 / n;
    let per_pss = (with.pss_kib as f64 - before.pss_kib as f64) * 1024.0 / n;
    println!("imap target: {}", a.target);
    println!(
        "sessions: {} of {} logged in, selected and idling, opened in {:.1} s ({} at once, {retries} LOGINs tried again after NO [UNAVAILABLE]; per session p50 {:.0} ms, max {:.0} ms); {} answered DONE after {} s",
        setup.len(),
        a.sessions,
        opened_in.as_secs_f64(),
        a.parallel,
        median_ms(&setup),
        setup.iter().max().map_or(0.0, |d| d.as_secs_f64() * 1000.0),
        alive,
        a.hold
    );
    show_mem("server before:", &before);
    show_mem("with the sessions (2 s after):", &with);
    show_mem("at the end of the hold:", &at_end);
    show_mem("peak during the hold (VmRSS):", &peak);
    show_mem("2 s after closing them:", &after);
    println!("per session: {:.0} bytes VmRSS, {:.0} bytes Pss", per_rss, per_pss);
    for e in errors.iter().take(10) {
        println!("error: {e}");
    }
    if errors.len() > 10 {
        println!("... {} errors in all", errors.len());
    }
    println!(
        "summary: proto=imap-idle-many sessions={} wanted={} alive={alive} login_retries={retries} open_s={:.2} procs_before={} procs_with={} rss_before_kib={} rss_with_kib={} rss_peak_kib={} rss_after_kib={} pss_before_kib={} pss_with_kib={} per_session_rss_bytes={:.0} per_session_pss_bytes={:.0}",
        setup.len(),
        a.sessions,
        opened_in.as_secs_f64(),
        before.procs,
        with.procs,
        before.rss_kib,
        with.rss_kib,
        peak.rss_kib,
        after.rss_kib,
        before.pss_kib,
        with.pss_kib,
        per_rss,
        per_pss
    );
    Ok(errors.is_empty() && setup.len() == a.sessions)
}
