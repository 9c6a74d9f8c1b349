//! Generated benchmark messages and their verification.
//!
//! Every message carries two headers:
//!
//! * `X-Mailfort-Bench-Token: <run>.<seq>` — unique per message and run;
//! * `X-Mailfort-Bench-Hash: fnv1a64:<hex>` — FNV-1a (64 bit) over the
//!   canonical form of the body.
//!
//! The canonical body is every body line without its line terminator
//! (`\r\n` or `\n`) followed by a single `\n`. That makes the check
//! independent of whether a store keeps CRLF or LF line ends, while any
//! changed, lost or added byte inside the body is still detected. Headers a
//! server prepends (Received:, Return-Path:, ...) are not part of the hash.

use std::time::{SystemTime, UNIX_EPOCH};

pub const TOKEN_HEADER: &str = "X-Mailfort-Bench-Token";
pub const HASH_HEADER: &str = "X-Mailfort-Bench-Hash";
const HASH_PREFIX: &str = "fnv1a64:";

/// Incremental FNV-1a, 64 bit.
#[derive(Clone, Copy)]
pub struct Fnv1a(u64);

impl Fnv1a {
    pub fn new() -> Self {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
    pub fn update(&mut self, bytes: &[u8]) {
        let mut h = self.0;
        for &b in bytes {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.0 = h;
    }
    pub fn finish(self) -> u64 {
        self.0
    }
}

/// Small deterministic PRNG (xorshift64*), enough to make bodies differ
/// and to pick commands.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }
    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// In 0..n (0 for n = 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}

/// A fresh run identifier: distinct between runs so that messages of an
/// earlier run left in the same mailbox are never mistaken for this one's.
pub fn new_run_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut h = Fnv1a::new();
    h.update(&nanos.to_le_bytes());
    h.update(&std::process::id().to_le_bytes());
    format!("{:012x}", h.finish() & 0xffff_ffff_ffff)
}

pub fn token(run_id: &str, seq: u64) -> String {
    format!("{run_id}.{seq}")
}

/// Run id part of a token, if it has the expected shape.
pub fn token_run(token: &str) -> Option<&str> {
    token.split_once('.').map(|(r, _)| r)
}

/// A message ready for the DATA phase.
pub struct WireMessage {
    /// Dot-stuffed, CRLF line ends, terminated by `.\r\n`.
    pub wire: Vec<u8>,
    /// Size of the message itself (without stuffing and the final dot).
    pub size: usize,
}

const ALPHABET: &[u8] =
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ,;:-_()'!?";

/// Builds message number `seq` of run `run_id`, about `size` bytes long.
pub fn build(run_id: &str, seq: u64, size: usize, from: &str, to: &str, helo: &str) -> WireMessage {
    let tok = token(run_id, seq);
    let mut seed = Fnv1a::new();
    seed.update(tok.as_bytes());
    let mut rng = Rng::new(seed.finish());

    // Body lines first (the hash goes into the header).
    let mut lines: Vec<Vec<u8>> = Vec::new();
    let mut hash = Fnv1a::new();
    let header_estimate = 330 + from.len() + to.len() + 2 * tok.len() + helo.len();
    let body_target = size.saturating_sub(header_estimate).max(1);
    let mut body_len = 0usize;
    let mut n = 0u64;
    while body_len < body_target {
        let remaining = body_target - body_len;
        let mut len = (20 + rng.below(57)) as usize; // 20..=76 characters
        if remaining < len + 2 {
            len = remaining.saturating_sub(2).max(1);
        }
        let mut line: Vec<u8> = (0..len)
            .map(|_| ALPHABET[rng.below(ALPHABET.len() as u64) as usize])
            .collect();
        // Exercise transparency (RFC 5321 4.5.2): some lines begin with a dot,
        // and now and then a line is a lone dot.
        match n % 13 {
            3 => line[0] = b'.',
            7 if len > 1 => {
                line[0] = b'.';
                line[1] = b'.';
            }
            11 if n % 26 == 11 => line = b".".to_vec(),
            _ => {}
        }
        // Never end a line with a space: some paths strip trailing blanks.
        if line.last() == Some(&b' ') {
            *line.last_mut().unwrap() = b'x';
        }
        hash.update(&line);
        hash.update(b"\n");
        body_len += line.len() + 2;
        lines.push(line);
        n += 1;
    }

    let header = format!(
        "From: <{from}>\r\n\
         To: <{to}>\r\n\
         Subject: mailfort-bench message {seq}\r\n\
         Date: {date}\r\n\
         Message-ID: <{tok}@{helo}>\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=us-ascii\r\n\
         {TOKEN_HEADER}: {tok}\r\n\
         {HASH_HEADER}: {HASH_PREFIX}{hash:016x}\r\n\
         \r\n",
        date = rfc5322_now(),
        hash = hash.finish(),
    );

    let mut wire = Vec::with_capacity(header.len() + body_len + body_len / 40 + 8);
    wire.extend_from_slice(header.as_bytes());
    let mut size = header.len();
    for line in &lines {
        if line.first() == Some(&b'.') {
            wire.push(b'.');
        }
        wire.extend_from_slice(line);
        wire.extend_from_slice(b"\r\n");
        size += line.len() + 2;
    }
    wire.extend_from_slice(b".\r\n");
    WireMessage { wire, size }
}

/// What a stored or retrieved message says about itself.
#[derive(Debug, PartialEq, Eq)]
pub enum Check {
    /// Not a benchmark message (no token header).
    Foreign,
    /// A benchmark message; `intact` tells whether the body hash matches.
    Bench { token: String, intact: bool },
}

/// Parses a stored message (CRLF or LF line ends, not dot-stuffed).
pub fn check(raw: &[u8]) -> Check {
    let mut token: Option<String> = None;
    let mut declared: Option<u64> = None;
    let mut pos = 0usize;
    let mut in_header = true;
    let mut hash = Fnv1a::new();
    while pos < raw.len() {
        let end = match raw[pos..].iter().position(|&b| b == b'\n') {
            Some(i) => pos + i,
            None => raw.len(),
        };
        let mut line = &raw[pos..end];
        pos = end + 1;
        if line.last() == Some(&b'\r') {
            line = &line[..line.len() - 1];
        }
        if in_header {
            if line.is_empty() {
                in_header = false;
                continue;
            }
            if let Some(v) = header_value(line, TOKEN_HEADER) {
                token = Some(v.to_string());
            } else if let Some(v) = header_value(line, HASH_HEADER) {
                declared = v
                    .strip_prefix(HASH_PREFIX)
                    .and_then(|h| u64::from_str_radix(h, 16).ok());
            }
        } else {
            hash.update(line);
            hash.update(b"\n");
        }
    }
    match token {
        None => Check::Foreign,
        Some(token) => Check::Bench {
            token,
            intact: !in_header && declared == Some(hash.finish()),
        },
    }
}

fn header_value<'a>(line: &'a [u8], name: &str) -> Option<&'a str> {
    let n = name.len();
    if line.len() > n && line[n] == b':' && line[..n].eq_ignore_ascii_case(name.as_bytes()) {
        std::str::from_utf8(&line[n + 1..]).ok().map(str::trim)
    } else {
        None
    }
}

/// The current time as an RFC 5322 date in UTC.
fn rfc5322_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    const WD: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MON: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {} {} {} {:02}:{:02}:{:02} +0000",
        WD[days.rem_euclid(7) as usize],
        d,
        MON[(m - 1) as usize],
        y,
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// Message number `seq` of run `run_id` as stored (CRLF line ends, no
/// dot-stuffing): for APPEND and for files written into a Maildir.
pub fn raw(run_id: &str, seq: u64, size: usize, from: &str, to: &str) -> Vec<u8> {
    let w = build(run_id, seq, size, from, to, "bench.localhost");
    let body = &w.wire[..w.wire.len() - 3]; // without the final ".\r\n"
    let mut out = Vec::with_capacity(w.size);
    let mut at_line_start = true;
    for &b in body {
        if at_line_start && b == b'.' {
            at_line_start = false;
            continue; // the stuffed dot
        }
        at_line_start = b == b'\n';
        out.push(b);
    }
    debug_assert_eq!(out.len(), w.size);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unstuff(wire: &[u8]) -> Vec<u8> {
        let text = &wire[..wire.len() - 3]; // drop ".\r\n"
        let mut out = Vec::new();
        for line in text.split_inclusive(|&b| b == b'\n') {
            out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
        }
        out
    }

    #[test]
    fn roundtrip_crlf_and_lf() {
        let m = build("abc", 7, 10 * 1024, "a@x.test", "b@x.test", "bench");
        let raw = unstuff(&m.wire);
        assert_eq!(raw.len(), m.size);
        assert!((m.size as i64 - 10 * 1024).abs() < 200, "size {}", m.size);
        let want = Check::Bench {
            token: "abc.7".into(),
            intact: true,
        };
        assert_eq!(check(&raw), want);
        let mut stored = b"Return-Path: <a@x.test>\r\nReceived: from x\r\n\tby y\r\n".to_vec();
        stored.extend_from_slice(&raw);
        let lf: Vec<u8> = stored.iter().copied().filter(|&b| b != b'\r').collect();
        assert_eq!(check(&lf), want);
        let mut bad = lf.clone();
        let n = bad.len();
        bad[n - 5] ^= 1;
        assert_eq!(
            check(&bad),
            Check::Bench {
                token: "abc.7".into(),
                intact: false
            }
        );
        // the wire form has stuffed dots and no bare lone dot line
        let text = std::str::from_utf8(&m.wire).unwrap();
        assert!(text.contains("\r\n..") && !text[..text.len() - 3].contains("\r\n.\r\n"));
    }

    #[test]
    fn small_sizes() {
        for size in [0, 1, 100, 500, 1000] {
            let m = build("r", 1, size, "a@x.test", "b@x.test", "h");
            assert!(matches!(
                check(&unstuff(&m.wire)),
                Check::Bench { intact: true, .. }
            ));
        }
    }

    #[test]
    fn date_shape() {
        let d = rfc5322_now();
        assert!(d.ends_with(" +0000") && d.len() >= 29, "{d}");
    }

    #[test]
    fn raw_is_the_unstuffed_message() {
        for size in [200, 4096, 20000] {
            let r = raw("abcdef012345", 7, size, "a@x.test", "b@y.test");
            assert!(matches!(check(&r), Check::Bench { intact: true, .. }));
            assert_eq!(
                r.len(),
                build(
                    "abcdef012345",
                    7,
                    size,
                    "a@x.test",
                    "b@y.test",
                    "bench.localhost"
                )
                .size
            );
            if size >= 4096 {
                assert!(
                    r.windows(2).any(|w| w == b"\n."),
                    "lines starting with a dot are kept"
                );
            }
        }
    }
}
