//! The network fuzzer: realistic SMTP, submission and POP3 sessions,
//! mutated (garbage commands, huge lines, pipelined bursts, broken DATA,
//! abrupt closes, bad AUTH, STARTTLS followed by junk), driven against a
//! live node over TCP from several connections at once.
//!
//! Password checks are expensive on purpose (argon2), so the sessions that
//! make the node check a password are counted against a [`Budget`]: a run
//! makes a realistic number of wrong (and right) password attempts, and a
//! mutation never turns another line into one (see [`disarm`]).

use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;

use crate::mutate::Mutator;
use crate::rng::Rng;

/// Longest line a mutation sends: past every line limit of the node (4096
/// for SMTP, 255 for POP3) by far.
pub const MAX_HUGE_LINE: usize = 256 * 1024;
/// Largest message body a mutation sends: big enough to spill to the spool
/// file, small enough for many sessions per second.
pub const MAX_BIG_MESSAGE: usize = 2 * 1024 * 1024;
/// How long a connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a write may block (a node that stops reading is not a hang of
/// the fuzzer).
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the greeting may take.
const GREETING_WAIT: Duration = Duration::from_secs(5);
/// After a reply began, how long to wait for more of it.
const DRAIN_WAIT: Duration = Duration::from_millis(20);
/// Reply bytes kept per read (the rest is counted and dropped).
const MAX_REPLY_KEPT: usize = 64 * 1024;
/// Byte mutations of a line stop at this length.
const MAX_MUTATED_LINE: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// Port 25: inbound mail, no AUTH.
    Smtp,
    /// Port 587 with plaintext AUTH allowed (a test node).
    Submission,
    Pop3,
}

/// The account the sessions log in with, and where their mail goes.
#[derive(Debug, Clone)]
pub struct Account {
    pub login: String,
    pub password: String,
    /// A second local address, to send to.
    pub other: String,
}

impl Account {
    fn domain(&self) -> &str {
        self.login.split_once('@').map_or("example.test", |(_, d)| d)
    }
}

/// A number of uses allowed at the start, growing by `per_minute`.
#[derive(Debug)]
pub struct Allowance {
    initial: u64,
    per_minute: u64,
    used: AtomicU64,
}

impl Allowance {
    pub fn new(initial: u64, per_minute: u64) -> Allowance {
        Allowance { initial, per_minute, used: AtomicU64::new(0) }
    }

    fn take(&self, elapsed: Duration) -> bool {
        let allowed = self.initial + (self.per_minute as u128 * elapsed.as_millis() / 60_000) as u64;
        self.used.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |u| (u < allowed).then_some(u + 1)).is_ok()
    }

    pub fn used(&self) -> u64 {
        self.used.load(Ordering::SeqCst)
    }
}

/// The password checks a run may make the node do.
#[derive(Debug)]
pub struct Budget {
    pub wrong: Allowance,
    pub right: Allowance,
    start: Instant,
}

impl Budget {
    pub fn new(wrong: Allowance, right: Allowance) -> Budget {
        Budget { wrong, right, start: Instant::now() }
    }

    /// At most `wrong` wrong and `right` right passwords in the whole run.
    pub fn fixed(wrong: u64, right: u64) -> Budget {
        Budget::new(Allowance::new(wrong, 0), Allowance::new(right, 0))
    }

    fn take_wrong(&self) -> bool {
        self.wrong.take(self.start.elapsed())
    }

    fn take_right(&self) -> bool {
        self.right.take(self.start.elapsed())
    }
}

/// One step of a client session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Bytes sent in one write, then the replies read.
    Send(Vec<u8>),
    /// Bytes sent without waiting for a reply (a pipelined burst).
    Burst(Vec<u8>),
    /// An authentication exchange, each line sent and its reply read.
    /// Byte mutations never touch it: it is the one step that can make the
    /// node check a password, which it does when `password` is set.
    Auth { lines: Vec<Vec<u8>>, password: bool },
    Pause(Duration),
    /// The client goes away; with `reset`, with a TCP RST.
    Close { reset: bool },
}

#[derive(Debug, Clone)]
pub struct Session {
    pub service: Service,
    pub steps: Vec<Step>,
}

/// Tokens the byte mutations insert into session lines.
const NET_DICT: &[&[u8]] = &[
    b"EHLO ", b"HELO ", b"MAIL FROM:<", b"RCPT TO:<", b"DATA\r\n", b"BDAT 100 LAST\r\n", b"RSET\r\n", b"NOOP\r\n", b"QUIT\r\n", b"VRFY ", b"STARTTLS\r\n", b" SIZE=", b" BODY=8BITMIME", b" SMTPUTF8", b"<>", b"<Postmaster>", b"@example.test", b"[127.0.0.1]", b"\r\n", b"\r\n.\r\n", b"\n.\n", b"\r.\r", b"\0", b"USER ", b"STAT\r\n", b"LIST ", b"RETR ", b"TOP 1 ", b"DELE ", b"UIDL\r\n", b"CAPA\r\n", b"STLS\r\n", b"4294967296", "\u{212a}".as_bytes(), b"\xff\xfe",
];

/// Verbs for garbage commands with junk arguments.
const VERBS: &[&str] = &["EHLO", "HELO", "MAIL", "RCPT", "DATA", "RSET", "NOOP", "QUIT", "VRFY", "EXPN", "HELP", "BDAT", "ETRN", "XCLIENT", "USER", "STAT", "LIST", "RETR", "DELE", "TOP", "UIDL", "CAPA", "APOP", "GET", "POST"];

/// Makes `bytes` unable to start a password check: every line whose verb
/// is AUTH or PASS (as the node reads verbs: up to the first space, any
/// case, lines ending at LF) gets its first byte changed.
pub fn disarm(bytes: &mut [u8]) {
    let mut start = 0;
    while start < bytes.len() {
        let end = bytes[start..].iter().position(|&b| b == b'\n').map_or(bytes.len(), |p| start + p);
        let line = &bytes[start..end];
        let verb_end = line.iter().position(|&b| b == b' ').unwrap_or(line.len());
        let verb = line[..verb_end].strip_suffix(b"\r").unwrap_or(&line[..verb_end]);
        if verb.eq_ignore_ascii_case(b"AUTH") || verb.eq_ignore_ascii_case(b"PASS") {
            bytes[start] = b'X';
        }
        start = end + 1;
    }
}

fn b64(s: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// Makes sessions, realistic or mutated.
pub struct SessionGen<'a> {
    pub account: &'a Account,
    pub budget: &'a Budget,
}

impl SessionGen<'_> {
    /// A mail message as clients send it (dot-stuffed, CRLF), of about
    /// `size` bytes, with the end mark.
    fn message(&self, rng: &mut Rng, from: &str, to: &str, size: usize) -> Vec<u8> {
        let id = rng.next_u64();
        let mut m = format!("From: <{from}>\r\nTo: <{to}>\r\nSubject: test {id:x}\r\nDate: Thu, 03 Dec 2026 18:00:00 +0000\r\nMessage-ID: <{id:x}@client.example>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n").into_bytes();
        while m.len() < size {
            match rng.below(6) {
                // A line that starts with a period, stuffed (RFC 5321 4.5.2).
                0 => m.extend_from_slice(b"..a line that starts with a period\r\n"),
                1 => m.extend_from_slice(b"\r\n"),
                2 => m.extend_from_slice("caf\u{e9} \u{fc}ber na\u{ef}ve\r\n".as_bytes()),
                _ => {
                    const TEXT: &[u8] = b"the quick brown fox jumps over the lazy dog and runs back again to the start";
                    let from = rng.below(TEXT.len());
                    m.extend_from_slice(&TEXT[from..]);
                    m.extend_from_slice(b"\r\n");
                }
            }
        }
        m.extend_from_slice(b".\r\n");
        m
    }

    /// The authentication exchange with the right password, if the
    /// budget allows one.
    fn login(&self, rng: &mut Rng, service: Service) -> Option<Step> {
        if !self.budget.take_right() {
            return None;
        }
        Some(self.credentials(rng, service, &self.account.password.clone()))
    }

    fn credentials(&self, rng: &mut Rng, service: Service, password: &str) -> Step {
        let a = self.account;
        let plain = b64(format!("\0{}\0{}", a.login, password).as_bytes());
        let lines = match (service, rng.below(3)) {
            (Service::Pop3, 0) => vec![format!("USER {}\r\n", a.login).into_bytes(), format!("PASS {password}\r\n").into_bytes()],
            (Service::Pop3, 1) => vec![format!("AUTH PLAIN {plain}\r\n").into_bytes()],
            (Service::Pop3, _) => vec![b"AUTH PLAIN\r\n".to_vec(), format!("{plain}\r\n").into_bytes()],
            (_, 0) => vec![format!("AUTH PLAIN {plain}\r\n").into_bytes()],
            (_, 1) => vec![b"AUTH PLAIN\r\n".to_vec(), format!("{plain}\r\n").into_bytes()],
            (_, _) => vec![b"AUTH LOGIN\r\n".to_vec(), format!("{}\r\n", b64(a.login.as_bytes())).into_bytes(), format!("{}\r\n", b64(password.as_bytes())).into_bytes()],
        };
        Step::Auth { lines, password: true }
    }

    /// An authentication exchange that can never reach a password check:
    /// bad base64, an empty or cancelled response, a message that is not
    /// SASL PLAIN; each completes its exchange, so no later line is taken
    /// as a response.
    fn bad_auth(&self, rng: &mut Rng, service: Service) -> Step {
        let junk = ["!!!!", "AGFsaWNl*", "=", "*", "A", "AAA", "====", "YWxpY2U=", "\u{212a}", "AGFsaWNlAA==AA"];
        let j = *rng.pick(&junk);
        let lines = match (service, rng.below(4)) {
            (Service::Pop3, 0) => vec![format!("AUTH PLAIN {j}\r\n").into_bytes()],
            (Service::Pop3, 1) => vec![b"AUTH PLAIN\r\n".to_vec(), format!("{j}\r\n").into_bytes()],
            (Service::Pop3, 2) => vec![b"AUTH X-UNKNOWN\r\n".to_vec()],
            (Service::Pop3, _) => vec![b"AUTH\r\n".to_vec()],
            (_, 0) => vec![format!("AUTH PLAIN {j}\r\n").into_bytes()],
            (_, 1) => vec![b"AUTH PLAIN\r\n".to_vec(), format!("{j}\r\n").into_bytes()],
            (_, 2) => vec![b"AUTH LOGIN\r\n".to_vec(), b"*\r\n".to_vec()],
            (_, _) => vec![format!("AUTH CRAM-MD5 {j}\r\n").into_bytes()],
        };
        Step::Auth { lines, password: false }
    }

    /// A session as a well-behaved client runs it.
    pub fn realistic(&self, rng: &mut Rng, service: Service) -> Session {
        let a = self.account;
        let mut steps = Vec::new();
        let send = |s: String| Step::Send(s.into_bytes());
        match service {
            Service::Smtp | Service::Submission => {
                let n = rng.next_u64() % 1000;
                steps.push(send(if rng.chance(1, 8) { format!("HELO client{n}.example\r\n") } else { format!("EHLO client{n}.example\r\n") }));
                let (from, authed) = if service == Service::Submission {
                    match self.login(rng, service) {
                        Some(step) => {
                            steps.push(step);
                            (a.login.clone(), true)
                        }
                        None => (a.login.clone(), false),
                    }
                } else {
                    (format!("sender{n}@outside.example"), false)
                };
                let _ = authed;
                for _ in 0..rng.between(1, 2) {
                    let size = if rng.chance(1, 10) { rng.between(200 * 1024, 400 * 1024) } else { rng.between(100, 8 * 1024) };
                    let params = match rng.below(4) {
                        0 => format!(" SIZE={size}"),
                        1 => " BODY=8BITMIME".to_string(),
                        2 => " SMTPUTF8".to_string(),
                        _ => String::new(),
                    };
                    steps.push(send(format!("MAIL FROM:<{from}>{params}\r\n")));
                    let to = if service == Service::Smtp { a.login.clone() } else { a.other.clone() };
                    steps.push(send(format!("RCPT TO:<{to}>\r\n")));
                    match rng.below(4) {
                        0 => steps.push(send(format!("RCPT TO:<{}>\r\n", a.other))),
                        1 => steps.push(send("RCPT TO:<Postmaster>\r\n".into())),
                        // A relay attempt and an unknown user: refused.
                        2 => steps.push(send(format!("RCPT TO:<nobody{n}@{}>\r\n", if rng.chance(1, 2) { "elsewhere.example" } else { a.domain() }))),
                        _ => {}
                    }
                    steps.push(send("DATA\r\n".into()));
                    steps.push(Step::Send(self.message(rng, &from, &to, size)));
                    if rng.chance(1, 4) {
                        steps.push(send(if rng.chance(1, 2) { "RSET\r\n".into() } else { "NOOP\r\n".into() }));
                    }
                }
                steps.push(send("QUIT\r\n".into()));
            }
            Service::Pop3 => {
                steps.push(send("CAPA\r\n".into()));
                match self.login(rng, service) {
                    Some(step) => {
                        steps.push(step);
                        steps.push(send("STAT\r\n".into()));
                        steps.push(send("LIST\r\n".into()));
                        if rng.chance(1, 2) {
                            steps.push(send("UIDL\r\n".into()));
                        }
                        match rng.below(4) {
                            0 => steps.push(send("RETR 1\r\n".into())),
                            1 => steps.push(send(format!("TOP 1 {}\r\n", rng.below(10)))),
                            // Mail is taken away now and then, as clients do.
                            2 if rng.chance(1, 4) => steps.push(send("DELE 1\r\n".into())),
                            _ => steps.push(send("NOOP\r\n".into())),
                        }
                    }
                    None => {
                        steps.push(send(format!("USER {}\r\n", a.login)));
                        steps.push(send("NOOP\r\n".into()));
                    }
                }
                steps.push(send("QUIT\r\n".into()));
            }
        }
        Session { service, steps }
    }

    /// A session, mutated most of the time.
    pub fn session(&self, rng: &mut Rng, service: Service) -> Session {
        let mut s = self.realistic(rng, service);
        if !rng.chance(1, 8) {
            for _ in 0..rng.between(1, 5) {
                self.mutate(rng, &mut s);
            }
        }
        for step in &mut s.steps {
            if let Step::Send(b) | Step::Burst(b) = step {
                disarm(b);
            }
        }
        s
    }

    /// The index of a step holding message content (ends in the end mark).
    fn data_step(s: &Session) -> Option<usize> {
        s.steps.iter().position(|st| matches!(st, Step::Send(b) if b.len() > 8 && b.ends_with(b"\r\n.\r\n")))
    }

    /// Applies one session mutation.
    pub fn mutate(&self, rng: &mut Rng, s: &mut Session) {
        let at = rng.below(s.steps.len() + 1);
        let tls_verb: &str = if s.service == Service::Pop3 { "STLS\r\n" } else { "STARTTLS\r\n" };
        match rng.below(14) {
            0 | 1 => {
                // Bytes of one line changed.
                let idx: Vec<usize> = (0..s.steps.len()).filter(|&i| matches!(s.steps[i], Step::Send(_) | Step::Burst(_))).collect();
                if let Some(&i) = idx.get(rng.below(idx.len())) {
                    if let Step::Send(b) | Step::Burst(b) = &mut s.steps[i] {
                        let m = Mutator { dict: NET_DICT, max_len: MAX_MUTATED_LINE.max(b.len()) };
                        m.mutate(rng, b, &[]);
                    }
                }
            }
            2 => {
                // A garbage line, or a known verb with junk.
                let mut line: Vec<u8> = if rng.chance(1, 2) { (0..rng.between(1, 200)).map(|_| rng.byte()).collect() } else { format!("{} ", rng.pick(VERBS)).into_bytes().into_iter().chain((0..rng.between(0, 40)).map(|_| rng.byte())).collect() };
                line.extend_from_slice(b"\r\n");
                s.steps.insert(at, Step::Send(line));
            }
            3 => {
                // A huge line, ended or not.
                let n = rng.between(1024, MAX_HUGE_LINE);
                let mut line = vec![if rng.chance(1, 2) { b'A' } else { b' ' }; n];
                if rng.chance(2, 3) {
                    line.extend_from_slice(b"\r\n");
                }
                s.steps.insert(at, Step::Send(line));
            }
            4 => {
                // A pipelined burst: several steps in one write, no reads.
                let i = rng.below(s.steps.len());
                let j = (i + rng.between(2, 8)).min(s.steps.len());
                let mut all = Vec::new();
                let mut k = i;
                while k < j {
                    match &s.steps[k] {
                        Step::Send(b) | Step::Burst(b) => all.extend_from_slice(b),
                        _ => break,
                    }
                    k += 1;
                }
                if k > i {
                    s.steps.splice(i..k, [Step::Send(all)]);
                }
            }
            5 => {
                // One command many times over, in one write.
                let idx: Vec<usize> = (0..s.steps.len()).filter(|&i| matches!(&s.steps[i], Step::Send(b) if b.len() < 512)).collect();
                if let Some(&i) = idx.get(rng.below(idx.len())) {
                    if let Step::Send(b) = &s.steps[i] {
                        let times = rng.between(2, 200);
                        s.steps[i] = Step::Send(b.repeat(times));
                    }
                }
            }
            6 | 7 => {
                // Broken DATA.
                let Some(i) = Self::data_step(s) else { return };
                let Step::Send(b) = &mut s.steps[i] else { return };
                let body_len = b.len() - 3;
                match rng.below(7) {
                    // No end mark: the client stops or goes on with commands.
                    0 => b.truncate(body_len),
                    // End marks of the SMTP smuggling family.
                    1 => {
                        let fake: &[u8] = rng.pick::<&[u8]>(&[&b"\n.\n"[..], b"\r.\r", b"\r\n.\n", b"\n.\r\n", b"\r.\r\n"]);
                        b.truncate(body_len - 2);
                        b.extend_from_slice(fake);
                        b.extend_from_slice(format!("MAIL FROM:<x@outside.example>\r\nRCPT TO:<{}>\r\nDATA\r\nsmuggled\r\n.\r\n", self.account.other).as_bytes());
                    }
                    // A NUL or a bare CR or LF in the text.
                    2 => {
                        let p = rng.below(body_len);
                        let bad: &[u8] = rng.pick::<&[u8]>(&[&b"\0"[..], b"\r", b"\n"]);
                        b.splice(p..p, bad.iter().copied());
                    }
                    // A big message.
                    3 => {
                        let target = rng.between(256 * 1024, MAX_BIG_MESSAGE);
                        let body = b[..body_len].to_vec();
                        let mut big = Vec::with_capacity(target + body.len());
                        while big.len() < target {
                            big.extend_from_slice(&body);
                        }
                        big.extend_from_slice(b".\r\n");
                        *b = big;
                    }
                    // Cut short, then the client goes away.
                    4 => {
                        b.truncate(rng.below(body_len));
                        s.steps.truncate(i + 1);
                        s.steps.push(Step::Close { reset: rng.chance(1, 2) });
                    }
                    // Lines of bytes that are not text.
                    5 => {
                        let p = rng.below(body_len);
                        let junk: Vec<u8> = (0..rng.between(1, 300)).map(|_| rng.byte()).collect();
                        b.splice(p..p, junk);
                    }
                    // The data sent in pieces with pauses.
                    _ => {
                        let whole = std::mem::take(b);
                        let cut = rng.below(whole.len());
                        s.steps.splice(i..=i, [Step::Burst(whole[..cut].to_vec()), Step::Pause(Duration::from_millis(rng.between(1, 200) as u64)), Step::Send(whole[cut..].to_vec())]);
                    }
                }
            }
            8 => {
                // The client goes away in the middle.
                s.steps.truncate(at);
                s.steps.push(Step::Close { reset: rng.chance(1, 2) });
            }
            9 => {
                // Authentication gone wrong: bad base64 and the like, or a
                // wrong password while the budget lasts.
                if s.service == Service::Smtp {
                    // Refused on port 25 whatever it holds.
                    s.steps.insert(at, self.bad_auth(rng, Service::Submission));
                    return;
                }
                let step = if self.budget.take_wrong() {
                    let pw = format!("wrong-{}", rng.next_u64() % 10_000);
                    self.credentials(rng, s.service, &pw)
                } else {
                    self.bad_auth(rng, s.service)
                };
                match s.steps.iter().position(|st| matches!(st, Step::Auth { .. })) {
                    Some(i) if rng.chance(2, 3) => s.steps[i] = step,
                    _ => s.steps.insert(at, step),
                }
            }
            10 => {
                // STARTTLS, then something that is not a TLS handshake (or
                // is half of one), and the session ends.
                let junk: Vec<u8> = match rng.below(4) {
                    0 => (0..rng.between(1, 2000)).map(|_| rng.byte()).collect(),
                    1 => {
                        // A TLS record header (handshake, TLS 1.0) and a
                        // ClientHello of random content and length.
                        let len = rng.between(4, 600);
                        let mut r = vec![0x16, 0x03, 0x01, (len >> 8) as u8, len as u8, 0x01];
                        r.extend((0..rng.below(len)).map(|_| rng.byte()));
                        r
                    }
                    2 => b"EHLO after.starttls\r\nMAIL FROM:<a@b>\r\n".to_vec(),
                    _ => vec![0x80, 0x2e, 0x01, 0x03, 0x01],
                };
                s.steps.truncate(at);
                s.steps.push(Step::Send(tls_verb.as_bytes().to_vec()));
                s.steps.push(Step::Send(junk));
                if rng.chance(1, 2) {
                    s.steps.push(Step::Close { reset: rng.chance(1, 2) });
                }
            }
            11 => s.steps.insert(at, Step::Pause(Duration::from_millis(rng.between(1, 300) as u64))),
            12 => {
                // Commands out of order.
                if s.steps.len() >= 2 {
                    let (i, j) = (rng.below(s.steps.len()), rng.below(s.steps.len()));
                    s.steps.swap(i, j);
                }
            }
            _ => {
                if !s.steps.is_empty() {
                    s.steps.remove(rng.below(s.steps.len()));
                }
            }
        }
    }
}

/// What the sessions saw, counted across connections.
#[derive(Debug, Default)]
pub struct NetStats {
    pub sessions: AtomicU64,
    pub connect_failures: AtomicU64,
    /// Sessions the node ended before the client did.
    pub closed_by_node: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub bytes_received: AtomicU64,
    /// Exchanges that gave the node a password to check.
    pub password_exchanges: AtomicU64,
    /// Reply lines starting 2, 3, 4, 5, "+OK", "-ERR".
    pub replies: [AtomicU64; 6],
}

impl NetStats {
    fn count_replies(&self, data: &[u8]) {
        for l in data.split(|&b| b == b'\n') {
            let i = match l.first() {
                Some(b'2') => 0,
                Some(b'3') => 1,
                Some(b'4') => 2,
                Some(b'5') => 3,
                _ if l.starts_with(b"+OK") => 4,
                _ if l.starts_with(b"-ERR") => 5,
                _ => continue,
            };
            self.replies[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn summary(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let r: Vec<u64> = self.replies.iter().map(g).collect();
        format!(
            "sessions={} connect_failures={} closed_by_node={} passwords={} sent={} KiB received={} KiB replies 2xx={} 3xx={} 4xx={} 5xx={} +OK={} -ERR={}",
            g(&self.sessions),
            g(&self.connect_failures),
            g(&self.closed_by_node),
            g(&self.password_exchanges),
            g(&self.bytes_sent) / 1024,
            g(&self.bytes_received) / 1024,
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            r[5]
        )
    }
}

/// Opens a connection to `to`, from `from` if given.
fn connect(to: SocketAddr, from: Option<IpAddr>) -> io::Result<TcpStream> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(Domain::for_address(to), Type::STREAM, Some(Protocol::TCP))?;
    if let Some(ip) = from {
        sock.bind(&SocketAddr::new(ip, 0).into())?;
    }
    sock.connect_timeout(&to.into(), CONNECT_TIMEOUT)?;
    let s: TcpStream = sock.into();
    s.set_write_timeout(Some(WRITE_TIMEOUT))?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// Reads what the node sends within `wait` (then drains what follows at
/// once). Ok(false) when the node closed the connection.
fn read_replies(s: &mut TcpStream, wait: Duration, stats: &NetStats) -> io::Result<bool> {
    let mut buf = vec![0u8; 16 * 1024];
    let mut kept = Vec::new();
    let mut timeout = wait.max(Duration::from_millis(1));
    loop {
        s.set_read_timeout(Some(timeout))?;
        match s.read(&mut buf) {
            Ok(0) => {
                stats.count_replies(&kept);
                return Ok(false);
            }
            Ok(n) => {
                stats.bytes_received.fetch_add(n as u64, Ordering::Relaxed);
                if kept.len() < MAX_REPLY_KEPT {
                    kept.extend_from_slice(&buf[..n]);
                }
                timeout = DRAIN_WAIT;
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                stats.count_replies(&kept);
                return Ok(true);
            }
            Err(e) => return Err(e),
        }
    }
}

fn send(s: &mut TcpStream, bytes: &[u8], stats: &NetStats) -> io::Result<()> {
    s.write_all(bytes)?;
    stats.bytes_sent.fetch_add(bytes.len() as u64, Ordering::Relaxed);
    Ok(())
}

/// Runs `session` against `to`; stops at `deadline`. Errors of the
/// connection are outcomes, not failures: the node may close or reset.
pub fn run_session(session: &Session, to: SocketAddr, from: Option<IpAddr>, reply_wait: Duration, deadline: Instant, stats: &NetStats) {
    let mut s = match connect(to, from) {
        Ok(s) => s,
        Err(_) => {
            stats.connect_failures.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(50));
            return;
        }
    };
    stats.sessions.fetch_add(1, Ordering::Relaxed);
    // Ok(true): the session went as far as it meant to (a close right
    // after its last step, QUIT, is the node's answer to it).
    let n = session.steps.len();
    let r = (|| -> io::Result<bool> {
        if !read_replies(&mut s, GREETING_WAIT, stats)? {
            return Ok(n == 0);
        }
        for (i, step) in session.steps.iter().enumerate() {
            let last = i + 1 == n;
            if Instant::now() >= deadline {
                return Ok(true);
            }
            match step {
                Step::Send(b) => {
                    send(&mut s, b, stats)?;
                    if !read_replies(&mut s, reply_wait, stats)? {
                        return Ok(last);
                    }
                }
                Step::Burst(b) => send(&mut s, b, stats)?,
                Step::Auth { lines, password } => {
                    if *password {
                        stats.password_exchanges.fetch_add(1, Ordering::Relaxed);
                    }
                    for l in lines {
                        send(&mut s, l, stats)?;
                        if !read_replies(&mut s, reply_wait.max(Duration::from_secs(2)), stats)? {
                            return Ok(false);
                        }
                    }
                }
                Step::Pause(d) => std::thread::sleep(*d),
                Step::Close { reset } => {
                    if *reset {
                        let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
                    }
                    return Ok(true);
                }
            }
        }
        Ok(true)
    })();
    if !matches!(r, Ok(true)) {
        stats.closed_by_node.fetch_add(1, Ordering::Relaxed);
    }
    let _ = s.shutdown(Shutdown::Both);
}

/// Where and how to fuzz.
#[derive(Debug, Clone)]
pub struct NetOptions {
    pub smtp: Option<SocketAddr>,
    pub submission: Option<SocketAddr>,
    pub pop3: Option<SocketAddr>,
    /// Connections at once.
    pub connections: usize,
    pub duration: Duration,
    pub seed: u64,
    /// Client addresses to connect from, one per connection in turn (e.g.
    /// several of 127.0.0.0/8); empty: the system's choice.
    pub sources: Vec<IpAddr>,
    pub account: Account,
    /// How long to wait for a reply before the next step.
    pub reply_wait: Duration,
}

/// Fuzzes the node with `opts.connections` connections at once until
/// `opts.duration` has passed; `tick` is called about every `tick_every`
/// meanwhile. Returns once every connection has ended.
pub fn fuzz_network(opts: &NetOptions, budget: &Budget, tick_every: Duration, mut tick: impl FnMut(&NetStats)) -> Arc<NetStats> {
    let stats = Arc::new(NetStats::default());
    let deadline = Instant::now() + opts.duration;
    let mut services = Vec::new();
    // Weights: port 25 gets most, as on the internet.
    for (svc, addr, w) in [(Service::Smtp, opts.smtp, 5), (Service::Submission, opts.submission, 3), (Service::Pop3, opts.pop3, 3)] {
        if let Some(a) = addr {
            services.extend(std::iter::repeat_n((svc, a), w));
        }
    }
    if services.is_empty() {
        return stats;
    }
    let mut rng = Rng::new(opts.seed);
    std::thread::scope(|scope| {
        for w in 0..opts.connections.max(1) {
            let mut rng = rng.fork();
            let stats = &stats;
            let services = &services;
            let from = (!opts.sources.is_empty()).then(|| opts.sources[w % opts.sources.len()]);
            scope.spawn(move || {
                let gen = SessionGen { account: &opts.account, budget };
                while Instant::now() < deadline {
                    let (svc, addr) = *rng.pick(services);
                    let session = gen.session(&mut rng, svc);
                    run_session(&session, addr, from, opts.reply_wait, deadline, stats);
                }
            });
        }
        let mut next = Instant::now() + tick_every;
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100).min(deadline.saturating_duration_since(Instant::now())));
            if Instant::now() >= next {
                tick(&stats);
                next += tick_every;
            }
        }
    });
    stats
}

/// The resident memory of process `pid` in KiB (VmRSS of /proc/PID/status).
pub fn rss_kib(pid: u32) -> io::Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no VmRSS line"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account() -> Account {
        Account { login: "alice@example.test".into(), password: "secret".into(), other: "bob@example.test".into() }
    }

    #[test]
    fn disarm_stops_every_password_command() {
        let mut b = b"NOOP\r\nauth PLAIN AGE=\r\nPass x\nAUTH\r\nAUTHX y\r\nXAUTH z\r\n".to_vec();
        disarm(&mut b);
        assert_eq!(b, b"NOOP\r\nXuth PLAIN AGE=\r\nXass x\nXUTH\r\nAUTHX y\r\nXAUTH z\r\n");
    }

    /// Whether a line is an AUTH or PASS command as the node reads it.
    fn is_password_command(l: &[u8]) -> bool {
        let verb = l.split(|&c| c == b' ').next().unwrap_or_default();
        let verb = verb.strip_suffix(b"\r").unwrap_or(verb);
        verb.eq_ignore_ascii_case(b"AUTH") || verb.eq_ignore_ascii_case(b"PASS")
    }

    #[test]
    fn password_attempts_stay_within_the_budget() {
        let acc = account();
        let budget = Budget::fixed(3, 5);
        let gen = SessionGen { account: &acc, budget: &budget };
        let mut rng = Rng::new(5);
        let mut with_password = 0;
        for i in 0..300 {
            let svc = [Service::Smtp, Service::Submission, Service::Pop3][i % 3];
            let s = gen.session(&mut rng, svc);
            for st in &s.steps {
                match st {
                    Step::Send(b) | Step::Burst(b) => assert!(!b.split(|&c| c == b'\n').any(is_password_command), "a mutated line can start a password check: {st:?}"),
                    Step::Auth { lines, password } => {
                        with_password += usize::from(*password);
                        // An exchange without a password never gives one:
                        // its response is not base64 of "\0login\0password".
                        if !*password {
                            let resp = lines.last().map(|l| l.strip_suffix(b"\r\n").unwrap_or(l)).unwrap_or_default();
                            let resp = resp.rsplit(|&c| c == b' ').next().unwrap_or_default();
                            let decoded = base64::engine::general_purpose::STANDARD.decode(resp).unwrap_or_default();
                            assert!(proto::sasl::parse_plain(&decoded).is_none(), "{lines:?}");
                        }
                    }
                    _ => {}
                }
            }
        }
        assert_eq!((budget.wrong.used(), budget.right.used()), (3, 5));
        assert!(with_password <= 8, "{with_password} exchanges with a password");
    }

    #[test]
    fn realistic_sessions_are_well_formed() {
        let acc = account();
        let budget = Budget::fixed(0, 10);
        let gen = SessionGen { account: &acc, budget: &budget };
        let mut rng = Rng::new(1);
        let s = gen.realistic(&mut rng, Service::Submission);
        assert!(matches!(&s.steps[1], Step::Auth { password: true, .. }));
        assert_eq!(s.steps.last(), Some(&Step::Send(b"QUIT\r\n".to_vec())));
        let data = SessionGen::data_step(&s).expect("a message");
        let Step::Send(m) = &s.steps[data] else { panic!() };
        let mut d = proto::data::DataDecoder::new();
        let mut out = vec![0u8; m.len() + 2];
        let p = d.decode(m, &mut out);
        assert!(p.done && p.consumed == m.len() && !d.defects().any());
    }

    #[test]
    fn rss_of_this_process() {
        let kib = rss_kib(std::process::id()).unwrap();
        assert!(kib > 100, "{kib} KiB");
    }
}
