//! IMAP load: many logged-in sessions on one or many mailboxes running a
//! mix of SELECT, FETCH 1:* (FLAGS), UID FETCH n BODY.PEEK[], STORE,
//! APPEND and EXPUNGE; throughput and latency per command, and checks of
//! what the server answers.

use crate::imapc::{item, Client, Response, Tagged, Tok};
use crate::msg::{self, Check};
use crate::net::{is_loopback_v4, spread_source};
use crate::stats::{mib, percentile_ms, tree_mem, TreeMem};
use anyhow::{anyhow, bail, Context, Result};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug, Clone)]
pub struct ImapArgs {
    /// Server address, HOST:PORT (a loopback address).
    #[arg(long)]
    pub target: String,
    /// Mailbox user; several times for several mailboxes, or once with
    /// `{n}` (user{n}@example.test) and --mailboxes M for users 1..M.
    #[arg(long, required = true)]
    pub user: Vec<String>,
    /// Password: one for all users or one per --user.
    #[arg(long, required = true)]
    pub password: Vec<String>,
    /// Concurrent sessions, spread round-robin over the mailboxes.
    #[arg(long, default_value_t = 8)]
    pub sessions: usize,
    /// Number of mailboxes (users) when --user has `{n}`.
    #[arg(long)]
    pub mailboxes: Option<usize>,
    /// Measured run time in seconds (default 20 unless --ops is given).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Stop after this many commands in all (instead of --duration).
    #[arg(long)]
    pub ops: Option<u64>,
    /// Weights of the commands.
    #[arg(
        long,
        default_value = "select=5,fetch-flags=15,fetch-body=40,store=20,append=10,expunge=10"
    )]
    pub mix: String,
    /// Approximate size of appended messages.
    #[arg(long, default_value_t = 4096)]
    pub size: usize,
    /// Messages each mailbox gets (by APPEND) before the run, if it holds fewer.
    #[arg(long, default_value_t = 200)]
    pub seed: u32,
    /// Server process whose VmRSS is sampled during the run.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Sessions per source /24 (127.10.x.y) on a loopback target, so that
    /// per-address connection limits see many clients; 0: connect from
    /// the default address.
    #[arg(long, default_value_t = 8)]
    pub sources_per_net: usize,
    /// Timeout in seconds for each connect, write and response.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Select,
    FetchFlags,
    FetchBody,
    Store,
    Append,
    Expunge,
}

const OPS: [Op; 6] = [
    Op::Select,
    Op::FetchFlags,
    Op::FetchBody,
    Op::Store,
    Op::Append,
    Op::Expunge,
];

impl Op {
    fn key(self) -> &'static str {
        match self {
            Op::Select => "select",
            Op::FetchFlags => "fetch-flags",
            Op::FetchBody => "fetch-body",
            Op::Store => "store",
            Op::Append => "append",
            Op::Expunge => "expunge",
        }
    }
    fn label(self) -> &'static str {
        match self {
            Op::Select => "SELECT INBOX",
            Op::FetchFlags => "FETCH 1:* (FLAGS)",
            Op::FetchBody => "UID FETCH n BODY.PEEK[]",
            Op::Store => "STORE n +/-FLAGS (\\Flagged)",
            Op::Append => "APPEND (literal)",
            Op::Expunge => "EXPUNGE (one \\Deleted)",
        }
    }
    fn idx(self) -> usize {
        OPS.iter().position(|&o| o == self).unwrap_or(0)
    }
}

fn parse_mix(s: &str) -> Result<Vec<(Op, u32)>> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .with_context(|| format!("--mix: {part:?} is not name=weight"))?;
        let op = OPS.iter().copied().find(|o| o.key() == k.trim()).with_context(|| format!("--mix: unknown command {k:?} (select, fetch-flags, fetch-body, store, append, expunge)"))?;
        let w: u32 = v
            .trim()
            .parse()
            .with_context(|| format!("--mix: weight of {k}"))?;
        if w > 0 {
            out.push((op, w));
        }
    }
    if out.is_empty() {
        bail!("--mix: no command has a weight");
    }
    Ok(out)
}

/// Users and passwords from --user/--password/--mailboxes.
pub fn expand_users(
    users: &[String],
    passwords: &[String],
    mailboxes: Option<usize>,
) -> Result<Vec<(String, String)>> {
    let list: Vec<String> = if users.len() == 1 && users[0].contains("{n}") {
        let m = mailboxes.context("--user with {n} needs --mailboxes M")?;
        if m == 0 {
            bail!("--mailboxes: at least 1");
        }
        (1..=m)
            .map(|i| users[0].replace("{n}", &i.to_string()))
            .collect()
    } else {
        if let Some(m) = mailboxes {
            if m != users.len() {
                bail!("--mailboxes {m} but {} --user given (use --user 'name{{n}}@domain' for a numbered set)", users.len());
            }
        }
        users.to_vec()
    };
    if passwords.len() != 1 && passwords.len() != list.len() {
        bail!("give --password once, or once per user");
    }
    Ok(list
        .iter()
        .enumerate()
        .map(|(i, u)| (u.clone(), passwords.get(i).unwrap_or(&passwords[0]).clone()))
        .collect())
}

/// What a session knows of its selected mailbox: the UID of every
/// sequence number it was told (0: not known yet).
#[derive(Default)]
pub struct Mbox {
    pub uids: Vec<u32>,
    pub uidvalidity: Option<u32>,
    pub uidnext: Option<u32>,
    pub expunged: u32,
}

impl Mbox {
    pub fn exists(&self) -> u32 {
        self.uids.len() as u32
    }

    /// Follows EXISTS, EXPUNGE and the UIDs in FETCH responses.
    pub fn on(&mut self, r: &Response) {
        if let Some((n, w)) = r.numbered() {
            match w.as_str() {
                "EXISTS" => self.uids.resize(n as usize, 0),
                "EXPUNGE" if n >= 1 && (n as usize) <= self.uids.len() => {
                    self.uids.remove(n as usize - 1);
                    self.expunged += 1;
                }
                "FETCH" => {
                    if let Some((_, items)) = r.fetch() {
                        if let Some(uid) = item(&items, "UID").and_then(Tok::number) {
                            if n >= 1 && (n as usize) <= self.uids.len() {
                                self.uids[n as usize - 1] = uid as u32;
                            }
                        }
                    }
                }
                _ => {}
            }
            return;
        }
        let t = String::from_utf8_lossy(&r.text).to_ascii_uppercase();
        let code_num = |name: &str| -> Option<u32> {
            let i = t.find(name)?;
            t[i + name.len()..]
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        };
        if t.starts_with("* OK [UIDVALIDITY ") {
            self.uidvalidity = code_num("[UIDVALIDITY ");
        } else if t.starts_with("* OK [UIDNEXT ") {
            self.uidnext = code_num("[UIDNEXT ");
        }
    }

    /// The first sequence number whose UID is not known.
    fn first_unknown(&self) -> Option<usize> {
        self.uids.iter().position(|&u| u == 0).map(|i| i + 1)
    }
}

/// Counters of one command kind.
#[derive(Default, Clone)]
struct OpStats {
    lat: Vec<Duration>,
    /// NO/BAD answers and failed checks.
    failed: u64,
}

#[derive(Default)]
struct SessionOut {
    ops: Vec<OpStats>,
    login: Option<Duration>,
    appenduid_missing: u64,
    size_mismatch: u64,
    corrupt: u64,
    bench_intact: u64,
    /// UID FETCH of a message another session expunged meanwhile.
    gone: u64,
    store_no_fetch: u64,
    store_wrong_flags: u64,
    store_raced: u64,
    fetch_short: u64,
    still_listed: u64,
    no_uidvalidity: u64,
    refreshes: u64,
    login_retries: u32,
    errors: Vec<String>,
    /// The session broke (connection error, timeout).
    broken: bool,
}

impl SessionOut {
    fn new() -> Self {
        SessionOut {
            ops: vec![OpStats::default(); OPS.len()],
            ..Default::default()
        }
    }
    fn error(&mut self, e: String) {
        if self.errors.len() < 5 {
            self.errors.push(e);
        }
    }
}

fn source(a_target: &str, per_net: usize, i: usize) -> Option<Ipv4Addr> {
    (per_net > 0 && is_loopback_v4(a_target)).then(|| spread_source(i, per_net))
}

/// A session logged in with INBOX selected.
pub struct Opened {
    pub client: Client,
    /// LOGIN to its OK, the retries included.
    pub login: Duration,
    /// LOGINs answered NO [UNAVAILABLE] and tried again.
    pub retries: u32,
}

/// LOGINs refused as busy on one connection before the next try is on a
/// new one: mailfort counts a busy refusal as a failed login and closes
/// the session at the third (`max_auth_failures`).
const BUSY_PER_CONNECTION: u32 = 2;

/// Connects and logs in; while the server answers NO [UNAVAILABLE] (busy),
/// tries again after a pause of 50-300 ms, on a new connection after
/// [`BUSY_PER_CONNECTION`] refusals, for up to `t`. Returns the client,
/// the time from the first LOGIN to its OK, and the busy refusals.
pub async fn connect_login(
    target: &str,
    src: Option<Ipv4Addr>,
    t: Duration,
    user: &str,
    pw: &str,
) -> Result<(Client, Duration, u32)> {
    let give_up = Instant::now() + t;
    let mut retries = 0u32;
    let mut first: Option<Instant> = None;
    let mut seed = (std::process::id() as u64) ^ ((src.map_or(0, u32::from) as u64) << 16) | 1;
    loop {
        let mut c = Client::connect(target, src, t).await?;
        let mut busy_here = 0;
        loop {
            let t0 = *first.get_or_insert_with(Instant::now);
            if c.login_once(user, pw).await? {
                return Ok((c, t0.elapsed(), retries));
            }
            retries += 1;
            busy_here += 1;
            if Instant::now() >= give_up {
                bail!("LOGIN {user}: the server stayed busy (NO [UNAVAILABLE]) for {t:?}, {retries} tries");
            }
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            tokio::time::sleep(Duration::from_millis(50 + seed % 250)).await;
            if busy_here >= BUSY_PER_CONNECTION {
                c.logout().await;
                break;
            }
        }
    }
}

/// Connects, logs in ([`connect_login`]) and selects INBOX.
pub async fn open_selected(
    target: &str,
    src: Option<Ipv4Addr>,
    t: Duration,
    user: &str,
    pw: &str,
    mb: &mut Mbox,
) -> Result<Opened> {
    let (mut c, login, retries) = connect_login(target, src, t, user, pw).await?;
    c.command_ok("SELECT INBOX", &mut |r| mb.on(r)).await?;
    Ok(Opened {
        client: c,
        login,
        retries,
    })
}

/// Learns the UIDs the session does not know yet (new messages at the end).
async fn refresh(c: &mut Client, mb: &mut Mbox, out: &mut SessionOut) -> Result<()> {
    if let Some(first) = mb.first_unknown() {
        out.refreshes += 1;
        let r = c
            .command(&format!("FETCH {first}:* (UID)"), &mut |r| mb.on(r))
            .await?;
        if !r.ok() {
            bail!("FETCH {first}:* (UID): {} {}", r.status, r.text);
        }
    }
    Ok(())
}

struct Ctx {
    run_id: String,
    seq: AtomicU64,
    size: usize,
    /// One session per mailbox: answers must reflect this session's own
    /// changes exactly.
    solo: bool,
}

/// One command of the mix; Err only for a broken connection.
#[allow(clippy::too_many_arguments)]
async fn one(
    op: Op,
    c: &mut Client,
    mb: &mut Mbox,
    own: &mut Vec<u32>,
    flag_on: &mut bool,
    rng: &mut crate::msg::Rng,
    ctx: &Ctx,
    out: &mut SessionOut,
) -> Result<()> {
    // Commands that need messages fall back to APPEND in an empty mailbox;
    // EXPUNGE removes a message this session appended (so that the mailbox
    // keeps its size when append and expunge weigh the same), else it
    // appends one first.
    let op = match op {
        Op::FetchFlags | Op::FetchBody | Op::Store if mb.exists() == 0 => Op::Append,
        Op::Expunge if own.is_empty() => Op::Append,
        o => o,
    };
    if matches!(op, Op::FetchBody | Op::Store | Op::Expunge) {
        refresh(c, mb, out).await?;
    }
    let i = op.idx();
    let fail = |out: &mut SessionOut, what: String| {
        out.ops[i].failed += 1;
        out.error(format!("{}: {what}", op.label()));
    };
    let no = |t: &Tagged| format!("{} {}", t.status, t.text);
    match op {
        Op::Select => {
            mb.uids.clear();
            mb.uidvalidity = None;
            let t0 = Instant::now();
            let r = c.command("SELECT INBOX", &mut |r| mb.on(r)).await?;
            out.ops[i].lat.push(t0.elapsed());
            if !r.ok() {
                fail(out, no(&r));
            } else if mb.uidvalidity.is_none() {
                out.no_uidvalidity += 1;
                fail(out, "no UIDVALIDITY".into());
            }
        }
        Op::FetchFlags => {
            let before = mb.exists();
            let mut seen = std::collections::HashSet::new();
            let mut flagless = 0u64;
            let t0 = Instant::now();
            let r = c
                .command("FETCH 1:* (FLAGS)", &mut |r| {
                    if let Some((n, items)) = r.fetch() {
                        if matches!(item(&items, "FLAGS"), Some(Tok::List(_))) {
                            seen.insert(n);
                        } else {
                            flagless += 1;
                        }
                    }
                    mb.on(r)
                })
                .await?;
            out.ops[i].lat.push(t0.elapsed());
            if !r.ok() {
                fail(out, no(&r));
            } else if (seen.len() as u32) < before || flagless > 0 {
                out.fetch_short += 1;
                fail(
                    out,
                    format!(
                        "{} messages with FLAGS of {before} ({flagless} FETCH without FLAGS)",
                        seen.len()
                    ),
                );
            }
        }
        Op::FetchBody => {
            let known: Vec<u32> = mb.uids.iter().copied().filter(|&u| u != 0).collect();
            if known.is_empty() {
                return Ok(());
            }
            let uid = known[rng.below(known.len() as u64) as usize];
            let mut got: Option<(Option<u64>, Option<usize>, Check)> = None;
            let t0 = Instant::now();
            let r = c
                .command(
                    &format!("UID FETCH {uid} (RFC822.SIZE BODY.PEEK[])"),
                    &mut |r| {
                        if let Some((_, items)) = r.fetch() {
                            // The answer, not a flag change told meanwhile.
                            let body = match item(&items, "BODY[]") {
                                Some(Tok::Lit(k)) => r.literals.get(*k).map(|b| b.as_slice()),
                                Some(Tok::Str(s)) => Some(s.as_slice()),
                                _ => None,
                            };
                            if item(&items, "UID").and_then(Tok::number) == Some(uid as u64)
                                && (body.is_some() || item(&items, "RFC822.SIZE").is_some())
                            {
                                let size = item(&items, "RFC822.SIZE").and_then(Tok::number);
                                got = Some((
                                    size,
                                    body.map(<[u8]>::len),
                                    body.map_or(Check::Foreign, msg::check),
                                ));
                            }
                        }
                        mb.on(r)
                    },
                )
                .await?;
            out.ops[i].lat.push(t0.elapsed());
            if r.status == "NO" && r.code("EXPUNGEISSUED").is_some() {
                // RFC 5530: another session expunged it meanwhile.
                out.gone += 1;
            } else if !r.ok() {
                fail(out, no(&r));
            } else {
                match got {
                    None => out.gone += 1,
                    // Dovecot answers for a message another session expunged
                    // meanwhile with RFC822.SIZE 0 and BODY[] NIL.
                    Some((Some(0), None, _)) if !ctx.solo => out.gone += 1,
                    Some((size, body_len, check)) => {
                        if size.is_none()
                            || body_len.is_none()
                            || size != body_len.map(|l| l as u64)
                        {
                            out.size_mismatch += 1;
                            fail(
                                out,
                                format!(
                                    "UID {uid}: RFC822.SIZE {size:?}, BODY[] of {body_len:?} bytes"
                                ),
                            );
                        }
                        match check {
                            Check::Bench {
                                intact: false,
                                token,
                            } => {
                                out.corrupt += 1;
                                fail(out, format!("UID {uid}: body of {token} corrupt"));
                            }
                            Check::Bench { intact: true, .. } => out.bench_intact += 1,
                            Check::Foreign => {}
                        }
                    }
                }
            }
        }
        Op::Store => {
            let n = 1 + rng.below(mb.exists() as u64) as u32;
            let sign = if *flag_on { '+' } else { '-' };
            *flag_on = !*flag_on;
            let mut flags_back: Option<bool> = None;
            let t0 = Instant::now();
            let r = c
                .command(&format!("STORE {n} {sign}FLAGS (\\Flagged)"), &mut |r| {
                    if let Some((m, items)) = r.fetch() {
                        if m == n {
                            if let Some(Tok::List(fl)) = item(&items, "FLAGS") {
                                flags_back = Some(fl.iter().any(|f| {
                                    f.atom()
                                        .is_some_and(|a| a.eq_ignore_ascii_case("\\Flagged"))
                                }));
                            }
                        }
                    }
                    mb.on(r)
                })
                .await?;
            out.ops[i].lat.push(t0.elapsed());
            if !r.ok() {
                fail(out, no(&r));
            } else {
                match flags_back {
                    None => out.store_no_fetch += 1,
                    // With other sessions on the mailbox, one of them may
                    // have changed the flag again before the answer.
                    Some(has) if has != (sign == '+') && !ctx.solo => out.store_raced += 1,
                    Some(has) if has != (sign == '+') => {
                        out.store_wrong_flags += 1;
                        fail(
                            out,
                            format!(
                                "{sign}FLAGS on {n}: FLAGS answered {}",
                                if has { "with" } else { "without" }
                            ),
                        );
                    }
                    Some(_) => {}
                }
            }
        }
        Op::Append => {
            let seq = ctx.seq.fetch_add(1, Ordering::Relaxed);
            let m = msg::raw(
                &ctx.run_id,
                seq,
                ctx.size,
                "bench@sender.test",
                "imap@example.test",
            );
            let t0 = Instant::now();
            let r = c.append("INBOX", "", &m, &mut |r| mb.on(r)).await?;
            out.ops[i].lat.push(t0.elapsed());
            if !r.ok() {
                fail(out, no(&r));
            } else {
                match r.code("APPENDUID").and_then(|v| {
                    Some((
                        v.first()?.parse::<u32>().ok()?,
                        v.get(1)?.parse::<u32>().ok()?,
                    ))
                }) {
                    Some((_, uid)) => own.push(uid),
                    None => {
                        out.appenduid_missing += 1;
                        fail(out, format!("no APPENDUID in {}", r.text));
                    }
                }
            }
        }
        Op::Expunge => {
            let uid = own.remove(rng.below(own.len() as u64) as usize);
            let r = c
                .command(
                    &format!("UID STORE {uid} +FLAGS.SILENT (\\Deleted)"),
                    &mut |r| mb.on(r),
                )
                .await?;
            if !r.ok() {
                fail(
                    out,
                    format!("UID STORE {uid} +FLAGS.SILENT (\\Deleted): {}", no(&r)),
                );
                return Ok(());
            }
            let t0 = Instant::now();
            let r = c.command("EXPUNGE", &mut |r| mb.on(r)).await?;
            out.ops[i].lat.push(t0.elapsed());
            if !r.ok() {
                fail(out, no(&r));
            } else if mb.uids.contains(&uid) {
                out.still_listed += 1;
                fail(out, format!("UID {uid} still listed after EXPUNGE"));
            }
        }
    }
    Ok(())
}

enum Ready {
    Up,
    Failed(String),
}

#[allow(clippy::too_many_arguments)]
async fn session(
    a: Arc<ImapArgs>,
    idx: usize,
    user: String,
    pw: String,
    mix: Arc<Vec<(Op, u32)>>,
    ctx: Arc<Ctx>,
    ready: tokio::sync::mpsc::Sender<Ready>,
    mut go: tokio::sync::watch::Receiver<Option<Instant>>,
    done_ops: Arc<AtomicU64>,
) -> SessionOut {
    let mut out = SessionOut::new();
    let t = Duration::from_secs(a.timeout);
    let mut mb = Mbox::default();
    let mut c = match open_selected(
        &a.target,
        source(&a.target, a.sources_per_net, idx),
        t,
        &user,
        &pw,
        &mut mb,
    )
    .await
    {
        Ok(o) => {
            out.login = Some(o.login);
            out.login_retries = o.retries;
            let _ = ready.send(Ready::Up).await;
            o.client
        }
        Err(e) => {
            let msg = format!("session {idx} ({user}): {e:#}");
            out.error(msg.clone());
            out.broken = true;
            let _ = ready.send(Ready::Failed(msg)).await;
            return out;
        }
    };
    drop(ready);
    // Wait for the start (every session logged in), or for the run to be
    // called off (the sender dropped).
    let deadline = loop {
        if let Some(d) = *go.borrow() {
            break d;
        }
        if go.changed().await.is_err() {
            return out;
        }
    };
    let total: u32 = mix.iter().map(|(_, w)| w).sum();
    let mut rng = crate::msg::Rng::new(0x9e37_79b9_7f4a_7c15 ^ ((idx as u64 + 1) * 0x1000_0000_01b3));
    let mut own = Vec::new();
    let mut flag_on = true;
    loop {
        if Instant::now() >= deadline {
            break;
        }
        if let Some(limit) = a.ops {
            if done_ops.fetch_add(1, Ordering::Relaxed) >= limit {
                break;
            }
        }
        let mut pick = rng.below(total as u64) as u32;
        let mut op = mix[0].0;
        for (o, w) in mix.iter() {
            if pick < *w {
                op = *o;
                break;
            }
            pick -= w;
        }
        if let Err(e) = one(
            op,
            &mut c,
            &mut mb,
            &mut own,
            &mut flag_on,
            &mut rng,
            &ctx,
            &mut out,
        )
        .await
        {
            out.error(format!("session {idx} ({user}): {e:#}"));
            out.broken = true;
            return out;
        }
    }
    c.logout().await;
    out
}

/// Gives every mailbox `seed` messages at least, by APPEND.
async fn seed(a: &ImapArgs, users: &[(String, String)], ctx: &Ctx) -> Result<()> {
    let mut tasks = Vec::new();
    for (i, (u, p)) in users.iter().cloned().enumerate() {
        let target = a.target.clone();
        let (want, t, size) = (a.seed, Duration::from_secs(a.timeout), a.size);
        let src = source(&a.target, a.sources_per_net, 100_000 + i);
        let run = ctx.run_id.clone();
        tasks.push(tokio::spawn(async move {
            let mut mb = Mbox::default();
            let mut c = open_selected(&target, src, t, &u, &p, &mut mb)
                .await
                .with_context(|| format!("seeding {u}"))?
                .client;
            let have = mb.exists();
            for k in have..want {
                let m = msg::raw(
                    &run,
                    1_000_000 + (i as u64) * 100_000 + k as u64,
                    size,
                    "bench@sender.test",
                    "imap@example.test",
                );
                let r = c.append("INBOX", "", &m, &mut |r| mb.on(r)).await?;
                if !r.ok() {
                    bail!("seeding {u}: APPEND: {} {}", r.status, r.text);
                }
            }
            c.logout().await;
            Ok::<u32, anyhow::Error>(want.saturating_sub(have))
        }));
    }
    let mut added = 0;
    for t in tasks {
        added += t.await??;
    }
    if added > 0 {
        println!(
            "seeded: {added} messages appended ({} per mailbox at least)",
            a.seed
        );
    }
    Ok(())
}

pub async fn run(a: ImapArgs) -> Result<bool> {
    let users = expand_users(&a.user, &a.password, a.mailboxes)?;
    let mix = Arc::new(parse_mix(&a.mix)?);
    if a.sessions == 0 {
        bail!("--sessions: at least 1");
    }
    if a.duration.is_some() && a.ops.is_some() {
        bail!("give --duration or --ops, not both");
    }
    crate::limits::check_nofile(a.sessions as u64 + 64);
    let ctx = Arc::new(Ctx {
        run_id: msg::new_run_id(),
        seq: AtomicU64::new(0),
        size: a.size,
        solo: a.sessions <= users.len(),
    });
    seed(&a, &users, &ctx).await?;

    let a = Arc::new(a);
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(a.sessions.max(1));
    let (go_tx, go_rx) = tokio::sync::watch::channel(None);
    let done_ops = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    let setup_start = Instant::now();
    for i in 0..a.sessions {
        let (u, p) = users[i % users.len()].clone();
        tasks.push(tokio::spawn(session(
            a.clone(),
            i,
            u,
            p,
            mix.clone(),
            ctx.clone(),
            ready_tx.clone(),
            go_rx.clone(),
            done_ops.clone(),
        )));
    }
    drop(ready_tx);
    let mut up = 0usize;
    let mut setup_failed = Vec::new();
    while let Some(r) = ready_rx.recv().await {
        match r {
            Ready::Up => up += 1,
            Ready::Failed(e) => setup_failed.push(e),
        }
    }
    let setup = setup_start.elapsed();
    // The server's memory over its process tree (Dovecot runs one imap
    // process per session), every 250 ms: the peak of the summed Pss.
    let sampler = match a.pid {
        Some(pid) => {
            if tree_mem(pid).procs == 0 {
                bail!("cannot read the memory of process {pid} (no such process?)");
            }
            let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
            let h = tokio::spawn(async move {
                let mut peak = TreeMem::default();
                loop {
                    let m = tokio::task::spawn_blocking(move || tree_mem(pid))
                        .await
                        .unwrap_or_default();
                    if m.pss_kib > peak.pss_kib {
                        peak = m;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                        _ = stop_rx.changed() => return peak,
                    }
                }
            });
            Some((stop_tx, h))
        }
        None => None,
    };
    let start = Instant::now();
    let secs = a
        .duration
        .unwrap_or(if a.ops.is_some() { 24.0 * 3600.0 } else { 20.0 });
    go_tx.send_replace(Some(start + Duration::from_secs_f64(secs)));
    let mut outs = Vec::new();
    for t in tasks {
        outs.push(t.await.map_err(|e| anyhow!("session task: {e}"))?);
    }
    let elapsed = start.elapsed().as_secs_f64().max(1e-9);
    let mem = match sampler {
        Some((stop, h)) => {
            let _ = stop.send(true);
            h.await.ok()
        }
        None => None,
    };
    drop(go_tx);

    // Tally.
    let mut per: Vec<OpStats> = vec![OpStats::default(); OPS.len()];
    let mut logins = Vec::new();
    let mut tot = SessionOut::new();
    let mut broken = 0;
    let mut errors = Vec::new();
    for o in outs {
        for (k, s) in o.ops.iter().enumerate() {
            per[k].lat.extend_from_slice(&s.lat);
            per[k].failed += s.failed;
        }
        logins.extend(o.login);
        tot.appenduid_missing += o.appenduid_missing;
        tot.size_mismatch += o.size_mismatch;
        tot.corrupt += o.corrupt;
        tot.bench_intact += o.bench_intact;
        tot.gone += o.gone;
        tot.store_no_fetch += o.store_no_fetch;
        tot.store_wrong_flags += o.store_wrong_flags;
        tot.store_raced += o.store_raced;
        tot.fetch_short += o.fetch_short;
        tot.still_listed += o.still_listed;
        tot.no_uidvalidity += o.no_uidvalidity;
        tot.refreshes += o.refreshes;
        tot.login_retries += o.login_retries;
        broken += o.broken as u64;
        errors.extend(o.errors);
    }
    logins.sort();
    let total_ops: usize = per.iter().map(|s| s.lat.len()).sum();
    let failures: u64 = per.iter().map(|s| s.failed).sum::<u64>() + broken;

    println!("imap target: {}", a.target);
    println!(
        "sessions: {} ({} up) over {} mailbox(es); setup (connect, LOGIN, SELECT) {:.2} s, LOGIN p50 {:.1} ms p99 {:.1} ms, {} LOGIN(s) tried again after NO [UNAVAILABLE]",
        a.sessions,
        up,
        users.len(),
        setup.as_secs_f64(),
        percentile_ms(&logins, 50.0),
        percentile_ms(&logins, 99.0),
        tot.login_retries
    );
    println!(
        "mix: {}",
        mix.iter()
            .map(|(o, w)| format!("{}={w}", o.key()))
            .collect::<Vec<_>>()
            .join(",")
    );
    println!(
        "elapsed: {elapsed:.2} s, commands: {total_ops}, {:.1} commands/s",
        total_ops as f64 / elapsed
    );
    println!(
        "{:<30} {:>8} {:>9} {:>9} {:>9} {:>7}",
        "command", "count", "ops/s", "p50 ms", "p99 ms", "failed"
    );
    let mut summary = format!(
        "summary: proto=imap sessions={} up={up} mailboxes={} elapsed_s={elapsed:.3} ops={total_ops} ops_per_s={:.1} failures={failures} broken={broken} login_p50_ms={:.2} login_p99_ms={:.2} login_retries={}",
        a.sessions,
        users.len(),
        total_ops as f64 / elapsed,
        percentile_ms(&logins, 50.0),
        percentile_ms(&logins, 99.0),
        tot.login_retries
    );
    for (k, op) in OPS.iter().enumerate() {
        let s = &mut per[k];
        s.lat.sort();
        let n = s.lat.len();
        let rate = n as f64 / elapsed;
        let (p50, p99) = (percentile_ms(&s.lat, 50.0), percentile_ms(&s.lat, 99.0));
        if n > 0 || s.failed > 0 {
            println!(
                "{:<30} {:>8} {:>9.1} {:>9.2} {:>9.2} {:>7}",
                op.label(),
                n,
                rate,
                p50,
                p99,
                s.failed
            );
        }
        let key = op.key().replace('-', "_");
        summary.push_str(&format!(" {key}_n={n} {key}_ops_s={rate:.1} {key}_p50_ms={p50:.2} {key}_p99_ms={p99:.2} {key}_failed={}", s.failed));
    }
    println!(
        "checks: APPENDUID missing {}, RFC822.SIZE != body length {}, corrupt bodies {} (intact benchmark bodies {}), FETCH 1:* short {}, STORE with wrong FLAGS {}, expunged but listed {}, SELECT without UIDVALIDITY {}",
        tot.appenduid_missing, tot.size_mismatch, tot.corrupt, tot.bench_intact, tot.fetch_short, tot.store_wrong_flags, tot.still_listed, tot.no_uidvalidity
    );
    println!(
        "notes: UID FETCH of a message expunged meanwhile {} (no answer, NO [EXPUNGEISSUED], or RFC822.SIZE 0 and BODY[] NIL), STORE without an untagged FETCH {}, STORE answered with another session's later flags {}, UID refreshes {}",
        tot.gone, tot.store_no_fetch, tot.store_raced, tot.refreshes
    );
    if let Some(m) = mem {
        println!("server at its peak (process and descendants): Pss {:.1} MiB, VmRSS {:.1} MiB summed over {} process(es)", mib(m.pss_kib), mib(m.rss_kib), m.procs);
        summary.push_str(&format!(
            " peak_pss_kib={} peak_rss_kib={} procs={}",
            m.pss_kib, m.rss_kib, m.procs
        ));
    }
    summary.push_str(&format!(
        " appenduid_missing={} size_mismatch={} corrupt={} gone={} store_no_fetch={}",
        tot.appenduid_missing, tot.size_mismatch, tot.corrupt, tot.gone, tot.store_no_fetch
    ));
    for e in setup_failed.iter().chain(errors.iter()).take(10) {
        println!("error: {e}");
    }
    println!("{summary}");
    Ok(failures == 0 && setup_failed.is_empty())
}
