//! The fuzz targets: one per parser that reads what a client or an
//! administrator sends. Each takes any bytes, calls the parser the way the
//! daemon or the admin page does, and asserts what must hold whatever the
//! input: no panic, outputs within their bounds, results that point into
//! the input, and a round trip wherever the project has (or the target
//! has) a writer for the parsed form. A broken invariant is a panic, which
//! the fuzzer records as a crash.
//!
//! Targets also note the class of each outcome (which command, which
//! error) in [`Features`]; the fuzzer keeps inputs that reach a class not
//! seen before, which is the only guidance it has without coverage.

use std::cell::RefCell;
use std::hash::{DefaultHasher, Hash, Hasher};

use proto::line::{find_line, skip_to_line_end, LineStatus};

/// Classes of outcome one run reached.
#[derive(Debug, Default, Clone)]
pub struct Features(Vec<u64>);

impl Features {
    pub fn new() -> Features {
        Features::default()
    }

    /// Notes that the run reached `class` (a variant name, an error text).
    pub fn note(&mut self, class: impl Hash) {
        let mut h = DefaultHasher::new();
        class.hash(&mut h);
        self.0.push(h.finish());
    }

    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.0.iter().copied()
    }

    pub fn clear(&mut self) {
        self.0.clear();
    }
}

/// One fuzz target.
pub struct Target {
    pub name: &'static str,
    pub about: &'static str,
    pub run: fn(&[u8], &mut Features),
    /// Tokens the mutator inserts: the parser's keywords and delimiters.
    pub dict: &'static [&'static [u8]],
    /// Longest input the fuzzer makes for it.
    pub max_len: usize,
}

/// Runs `target` once on `data`, as a libFuzzer-style `fn(&[u8])`.
pub fn check(target: &Target, data: &[u8]) {
    (target.run)(data, &mut Features::new())
}

/// maild's default longest SMTP command line (`Limits::max_line`), the
/// bound the SMTP target frames its lines with.
pub const SMTP_MAX_LINE: usize = 4096;
/// Longest input of the protocol targets: a few long lines.
const PROTO_MAX_INPUT: usize = 16 * 1024;
/// Longest input of the DATA target: several read chunks' worth.
const DATA_MAX_INPUT: usize = 64 * 1024;

const SMTP_DICT: &[&[u8]] = &[
    b"EHLO ", b"HELO ", b"MAIL FROM:<", b"MAIL FROM:<>", b"RCPT TO:<", b"<Postmaster>", b"DATA\r\n", b"BDAT ", b" LAST", b"RSET", b"NOOP", b"QUIT", b"VRFY ", b"EXPN ", b"HELP", b"STARTTLS", b"AUTH PLAIN ", b"AUTH LOGIN", b"AGFsaWNlAHNlY3JldA==", b" SIZE=", b" BODY=8BITMIME", b" SMTPUTF8", b" AUTH=<>", b"@example.test", b"alice", b"\"quoted local\"", b"[127.0.0.1]", b"[IPv6:::1]", b"@relay.example:", b"@\"r:", b"\"", b">", b"\\", b"\r\n", b"\r\n.\r\n", "jörg@bücher.example".as_bytes(), "\u{212a}".as_bytes(), b"\xc0\x80",
];

const POP3_DICT: &[&[u8]] = &[b"USER ", b"PASS ", b"AUTH PLAIN ", b"AUTH", b"CAPA", b"STLS", b"STAT", b"LIST ", b"UIDL ", b"RETR ", b"DELE ", b"TOP ", b"RSET", b"NOOP", b"QUIT", b"alice@example.test", b"4294967295", b"4294967296", b"\r\n", b" ", b"AGFsaWNlAHNlY3JldA=="];

const IMAP_DICT: &[&[u8]] = &[
    b"a1 ", b"* ", b"+ ", b"\r\n", b" ", b"(", b")", b"\"", b"\\", b"{5}\r\n", b"{0}\r\n", b"{3+}\r\n", b"~{4}", b"{4294967296}", b"NIL", b"INBOX", b"\"\"", b"*", b":", b",", b"1:*", b"4294967295", b"0", b"9223372036854775807", b"[", b"]", b"<0.100>", b".",
    b"LOGIN ", b"AUTHENTICATE PLAIN ", b"AGFsaWNlAHNlY3JldA==", b" =", b"ID ", b"ENABLE ", b"SELECT ", b"EXAMINE ", b"(CONDSTORE)", b"(QRESYNC (", b"CREATE ", b"(USE (\\Archive))", b"DELETE ", b"RENAME ", b"SUBSCRIBE ", b"LIST ", b"(SUBSCRIBED RECURSIVEMATCH) ", b"RETURN (", b"CHILDREN", b"SPECIAL-USE", b"STATUS (MESSAGES UNSEEN)", b"LSUB ", b"APPEND ", b"\" 4-Jul-2024 10:00:00 +0200\"", b"IDLE", b"DONE", b"UID ",
    b"SEARCH ", b"CHARSET UTF-8 ", b"NOT ", b"OR ", b"ALL", b"SINCE 1-Feb-1994", b"HEADER ", b"MODSEQ ", b"\"/flags/\\\\draft\" all ", b"KEYWORD ",
    b"FETCH ", b"FAST", b"FULL", b"BODY[", b"BODY.PEEK[", b"HEADER.FIELDS (", b"MIME", b"TEXT", b"BINARY.PEEK[", b"BINARY.SIZE[", b" (CHANGEDSINCE 1 VANISHED)", b"STORE ", b"+FLAGS.SILENT ", b"(UNCHANGEDSINCE 0) ", b"\\Seen", b"$Junk", b"COPY ", b"MOVE ", b"EXPUNGE", b"\0", b"\xff",
];

const DATA_DICT: &[&[u8]] = &[b"\r\n.\r\n", b"\r\n..", b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r.\r\n", b"\r\n.\n", b"\r\n.\r", b".\r\n", b"\r\n", b"\0", b"MAIL FROM:<a@b>\r\n", b"Subject: x\r\n", b"\r\n\r\n", b"BDAT 10 LAST\r\n"];

const LINE_DICT: &[&[u8]] = &[b"\r\n", b"\n", b"\r", b"\r\r\n", b"NOOP", b"MAIL FROM:<", b"\r\n.\r\n"];

const MULTIPART_DICT: &[&[u8]] = &[
    b"multipart/form-data; boundary=", b"; boundary=\"", b"\r\n--", b"--", b"--\r\n", b"\r\n\r\n", b"Content-Disposition: form-data; name=\"", b"\"; filename=\"", b"Content-Type: application/x-pem-file\r\n", b"name=", b"filename=", b"\\\"", b";", b"csrf", b"pem", b"pem_file", b"----WebKitFormBoundaryAbc123", b"-----BEGIN CERTIFICATE-----",
];

const FORMS_DICT: &[&[u8]] = &[b"csrf=", b"&password=", b"&password2=", b"&address=", b"&confirm=yes", b"&id=", b"&key=", b"&value=", b"&current=", b"&pem=", b"&service=", b"expired=1", b"auto=1", b"%", b"%00", b"%FF", b"%C3%A9", b"%E2%84%AA", b"+", b"&", b"=", b"&&", b"%25", b"%2", b"\xff"];

const CERT_DICT: &[&[u8]] = &[
    b"-----BEGIN CERTIFICATE-----\n", b"-----END CERTIFICATE-----\n", b"-----BEGIN PRIVATE KEY-----\n", b"-----END PRIVATE KEY-----\n", b"-----BEGIN EC PRIVATE KEY-----\n", b"-----END EC PRIVATE KEY-----\n", b"-----BEGIN RSA PRIVATE KEY-----\n", b"-----END RSA PRIVATE KEY-----\n", b"-----BEGIN ENCRYPTED PRIVATE KEY-----\n", b"Proc-Type: 4,ENCRYPTED\n", b"=", b"==", b"\r\n", b"MII", b"AAAA", b"////",
];

const SASL_DICT: &[&[u8]] = &[b"\0", b"alice", b"alice@example.test", b"secret", "\u{212a}".as_bytes(), b"\xff"];

/// Every target.
pub const TARGETS: &[Target] = &[
    Target { name: "smtp", about: "SMTP command lines (proto::smtp::parse_command), framed as the daemon frames them", run: smtp, dict: SMTP_DICT, max_len: PROTO_MAX_INPUT },
    Target { name: "pop3", about: "POP3 command lines (proto::pop3::parse_command)", run: pop3, dict: POP3_DICT, max_len: PROTO_MAX_INPUT },
    Target { name: "imap", about: "IMAP commands (proto::imap::parse::parse_command), their literals inline as the daemon frames them", run: imap, dict: IMAP_DICT, max_len: PROTO_MAX_INPUT },
    Target { name: "data", about: "the DATA decoder and the dot-stuffer (proto::data)", run: data, dict: DATA_DICT, max_len: DATA_MAX_INPUT },
    Target { name: "line", about: "command line framing (proto::line), fed in chunks as a socket delivers them", run: line, dict: LINE_DICT, max_len: PROTO_MAX_INPUT },
    Target { name: "sasl", about: "SASL PLAIN messages (proto::sasl::parse_plain)", run: sasl, dict: SASL_DICT, max_len: 1024 },
    Target { name: "multipart", about: "the admin page's multipart/form-data parser; the first line is the Content-Type", run: multipart, dict: MULTIPART_DICT, max_len: PROTO_MAX_INPUT },
    Target { name: "forms", about: "the admin page's urlencoded forms and queries, through its extractors and field checks", run: forms, dict: FORMS_DICT, max_len: PROTO_MAX_INPUT },
    Target { name: "cert", about: "the check of an uploaded certificate chain and key (cert::upload)", run: cert, dict: CERT_DICT, max_len: cert::MAX_PEM_BYTES + 16 },
];

/// The target called `name`.
pub fn find(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

/// Whether `inner` lies inside `outer` (a parser's borrowed result points
/// into its input).
fn within(outer: &[u8], inner: &str) -> bool {
    let (o, i) = (outer.as_ptr() as usize, inner.as_ptr() as usize);
    i >= o && i + inner.len() <= o + outer.len()
}

/// The command lines of `data` as the daemon's reader frames them
/// (maild::conn::Conn::read_line over proto::line): lines of at most `max`
/// bytes; an over-long line is skipped to its end.
fn command_lines(data: &[u8], max: usize) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    loop {
        match find_line(rest, max) {
            LineStatus::Complete { content, total } => {
                out.push(&rest[..content]);
                rest = &rest[total..];
            }
            LineStatus::TooLong => match skip_to_line_end(rest) {
                Some(n) => rest = &rest[n..],
                None => break,
            },
            // The last line, as if the client closed after it.
            LineStatus::Incomplete => {
                if !rest.is_empty() {
                    out.push(rest);
                }
                break;
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------
// SMTP

fn smtp(data: &[u8], f: &mut Features) {
    for l in command_lines(data, SMTP_MAX_LINE) {
        smtp_line(l, f);
    }
}

/// RFC 5321 4.1.1: a command is printable characters and SP (tabs are
/// tolerated); anything else, or non-UTF-8, is refused as bad bytes.
fn smtp_bad_bytes(line: &[u8]) -> bool {
    line.iter().any(|&b| b < 0x20 && b != b'\t' || b == 0x7f) || std::str::from_utf8(line).is_err()
}

fn smtp_variant(c: &proto::smtp::Command<'_>) -> &'static str {
    use proto::smtp::Command::*;
    match c {
        Helo(_) => "HELO",
        Ehlo(_) => "EHLO",
        Mail { from: None, .. } => "MAIL <>",
        Mail { .. } => "MAIL",
        Rcpt { to: proto::smtp::ForwardPath::Postmaster, .. } => "RCPT <Postmaster>",
        Rcpt { .. } => "RCPT",
        Data => "DATA",
        Rset => "RSET",
        Noop => "NOOP",
        Quit => "QUIT",
        Vrfy(_) => "VRFY",
        Expn(_) => "EXPN",
        Help => "HELP",
        StartTls => "STARTTLS",
        Auth { initial: None, .. } => "AUTH",
        Auth { .. } => "AUTH initial",
    }
}

fn params_text(p: &proto::smtp::Params<'_>) -> String {
    p.iter().map(|(k, v)| match v {
        Some(v) => format!(" {k}={v}"),
        None => format!(" {k}"),
    }).collect()
}

fn mailbox_ok(line: &[u8], m: &proto::smtp::Mailbox<'_>) {
    use proto::smtp::{MAX_DOMAIN, MAX_LOCAL_PART};
    assert!(!m.local.is_empty() && m.local.len() <= MAX_LOCAL_PART, "local part out of bounds: {m:?}");
    assert!(!m.domain.is_empty() && m.domain.len() <= MAX_DOMAIN, "domain out of bounds: {m:?}");
    assert!(within(line, m.local) && within(line, m.domain), "address not taken from the line");
    assert!(!m.domain.contains('@'), "domain with an @: {m:?}");
}

/// The command written back as a line, the way a client would send it.
fn smtp_text(c: &proto::smtp::Command<'_>) -> String {
    use proto::smtp::{Command::*, ForwardPath};
    match c {
        Helo(d) => format!("HELO {d}"),
        Ehlo(d) => format!("EHLO {d}"),
        Mail { from, params } => format!("MAIL FROM:<{}>{}", from.map(|m| format!("{}@{}", m.local, m.domain)).unwrap_or_default(), params_text(params)),
        Rcpt { to: ForwardPath::Postmaster, params } => format!("RCPT TO:<Postmaster>{}", params_text(params)),
        Rcpt { to: ForwardPath::Mailbox(m), params } => format!("RCPT TO:<{}@{}>{}", m.local, m.domain, params_text(params)),
        Data => "DATA".into(),
        Rset => "RSET".into(),
        Noop => "NOOP".into(),
        Quit => "QUIT".into(),
        Vrfy(a) => format!("VRFY {a}"),
        Expn(a) => format!("EXPN {a}"),
        Help => "HELP".into(),
        StartTls => "STARTTLS".into(),
        Auth { mechanism, initial: None } => format!("AUTH {mechanism}"),
        Auth { mechanism, initial: Some(i) } => format!("AUTH {mechanism} {i}"),
    }
}

/// Commands equal up to the spacing of their parameters.
fn smtp_same(a: &proto::smtp::Command<'_>, b: &proto::smtp::Command<'_>) -> bool {
    use proto::smtp::Command::*;
    let ps = |p: &proto::smtp::Params<'_>| p.iter().map(|(k, v)| (k.to_string(), v.map(str::to_string))).collect::<Vec<_>>();
    match (a, b) {
        (Mail { from: f1, params: p1 }, Mail { from: f2, params: p2 }) => f1 == f2 && ps(p1) == ps(p2),
        (Rcpt { to: t1, params: p1 }, Rcpt { to: t2, params: p2 }) => t1 == t2 && ps(p1) == ps(p2),
        _ => a == b,
    }
}

fn smtp_line(line: &[u8], f: &mut Features) {
    use proto::smtp::{parse_command, Command, Error, ForwardPath, MAX_DOMAIN};
    let r = parse_command(line);
    assert_eq!(r, parse_command(line), "parsing is not deterministic");
    assert_eq!(matches!(r, Err(Error::BadBytes)), smtp_bad_bytes(line), "BadBytes must be given exactly for controls and non-UTF-8: {:?}", String::from_utf8_lossy(line));
    let cmd = match r {
        Err(e) => {
            f.note(("smtp error", format!("{e:?}")));
            return;
        }
        Ok(c) => c,
    };
    f.note(("smtp", smtp_variant(&cmd)));
    match &cmd {
        Command::Helo(d) | Command::Ehlo(d) => {
            assert!(!d.is_empty() && d.len() <= MAX_DOMAIN && !d.contains(' ') && within(line, d), "bad HELO argument {d:?}");
        }
        Command::Mail { from, params } => {
            if let Some(m) = from {
                mailbox_ok(line, m);
            }
            for (k, v) in params.iter() {
                assert!(!k.is_empty() && within(line, k) && v.is_none_or(|v| !v.is_empty() && within(line, v)), "bad parameter {k:?}={v:?}");
                // Only the keywords the daemon knows: others are one class.
                let known = ["SIZE", "BODY", "SMTPUTF8", "AUTH", "RET", "ENVID", "NOTIFY", "ORCPT"].into_iter().find(|n| k.eq_ignore_ascii_case(n));
                f.note(("smtp param", known.unwrap_or("other"), v.is_some()));
            }
        }
        Command::Rcpt { to, .. } => {
            if let ForwardPath::Mailbox(m) = to {
                mailbox_ok(line, m);
            }
        }
        Command::Vrfy(a) | Command::Expn(a) => assert!(!a.is_empty() && within(line, a)),
        Command::Auth { mechanism, initial } => {
            assert!(!mechanism.is_empty() && !mechanism.contains(' ') && within(line, mechanism));
            assert!(initial.is_none_or(|i| !i.is_empty() && !i.contains(' ') && within(line, i)));
        }
        _ => {}
    }
    // Round trip: the command written back reads as the same command.
    let text = smtp_text(&cmd);
    match parse_command(text.as_bytes()) {
        Ok(again) => assert!(smtp_same(&cmd, &again), "{:?} read back from {text:?} as {again:?}", cmd),
        Err(e) => panic!("{cmd:?} written as {text:?} does not read back: {e:?}"),
    }
}

// ---------------------------------------------------------------------------
// POP3

fn pop3(data: &[u8], f: &mut Features) {
    for l in command_lines(data, proto::pop3::MAX_COMMAND_LINE) {
        pop3_line(l, f);
    }
}

fn pop3_text(c: &proto::pop3::Command<'_>) -> String {
    use proto::pop3::Command::*;
    let opt = |verb: &str, n: &Option<u32>| match n {
        Some(n) => format!("{verb} {n}"),
        None => verb.to_string(),
    };
    match c {
        User(u) => format!("USER {u}"),
        Pass(p) => format!("PASS {p}"),
        Auth { mechanism: None, initial: None } => "AUTH".into(),
        Auth { mechanism: Some(m), initial: None } => format!("AUTH {m}"),
        Auth { mechanism: Some(m), initial: Some(i) } => format!("AUTH {m} {i}"),
        Auth { mechanism: None, initial: Some(_) } => panic!("an AUTH initial response without a mechanism"),
        Capa => "CAPA".into(),
        Stls => "STLS".into(),
        Stat => "STAT".into(),
        List(n) => opt("LIST", n),
        Uidl(n) => opt("UIDL", n),
        Retr(n) => format!("RETR {n}"),
        Dele(n) => format!("DELE {n}"),
        Top { msg, lines } => format!("TOP {msg} {lines}"),
        Rset => "RSET".into(),
        Noop => "NOOP".into(),
        Quit => "QUIT".into(),
    }
}

fn pop3_line(line: &[u8], f: &mut Features) {
    use proto::pop3::{parse_command, Command, Error};
    let r = parse_command(line);
    assert_eq!(r, parse_command(line), "parsing is not deterministic");
    // RFC 1939 3: printable ASCII and SP; UTF-8 for arguments (RFC 6856).
    let bad = line.iter().any(|&b| b < 0x20 || b == 0x7f) || std::str::from_utf8(line).is_err();
    assert_eq!(matches!(r, Err(Error::BadBytes)), bad, "BadBytes must be given exactly for controls and non-UTF-8: {:?}", String::from_utf8_lossy(line));
    let cmd = match r {
        Err(e) => {
            f.note(("pop3 error", format!("{e:?}")));
            return;
        }
        Ok(c) => c,
    };
    let text = pop3_text(&cmd);
    f.note(("pop3", text.split(' ').next().unwrap_or_default().to_string()));
    match cmd {
        Command::User(u) => assert!(!u.is_empty() && !u.contains(' ') && within(line, u)),
        Command::Pass(p) => assert!(!p.is_empty() && within(line, p) && line.ends_with(p.as_bytes())),
        Command::Auth { mechanism, initial } => assert!([mechanism, initial].iter().flatten().all(|s| !s.is_empty() && !s.contains(' ') && within(line, s))),
        _ => {}
    }
    assert_eq!(parse_command(text.as_bytes()), Ok(cmd), "{cmd:?} written as {text:?} does not read back");
}

// ---------------------------------------------------------------------------
// IMAP

/// The IMAP commands of `data` as the daemon frames them: a line (without
/// its CRLF) is a command unless it ends with a literal's announcement
/// (`{n}`, `{n+}`, `~{n}`, RFC 3501 4.3, RFC 7888, RFC 3516 4.4), when the
/// line break and the next `n` bytes belong to it and the command goes on.
/// APPEND's message literal is the exception: it is streamed, not parsed,
/// so the command ends at its announcement and the message is skipped.
fn imap_commands(data: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let mut cmd = Vec::new();
        loop {
            let (content, whole) = match rest.iter().position(|&b| b == b'\n') {
                Some(i) => (rest[..i].strip_suffix(b"\r").unwrap_or(&rest[..i]), &rest[..=i]),
                None => (rest, rest),
            };
            rest = &rest[whole.len()..];
            let literal = if whole.len() > content.len() { imap_literal_at_end(content) } else { None };
            cmd.extend_from_slice(content);
            let Some(n) = literal else { break };
            let n = n.min(rest.len());
            if imap_is_append(&cmd) {
                // The message, and the CRLF that ends the command after it.
                rest = &rest[n..];
                let end = rest.iter().position(|&b| b == b'\n').map_or(rest.len(), |i| i + 1);
                rest = &rest[end..];
                break;
            }
            cmd.extend_from_slice(&whole[content.len()..]);
            cmd.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
        }
        out.push(cmd);
    }
    out
}

/// The length a line's closing literal announcement gives, if it ends with one.
fn imap_literal_at_end(line: &[u8]) -> Option<usize> {
    let body = line.strip_suffix(b"}")?;
    let open = body.iter().rposition(|&b| b == b'{')?;
    let digits = &body[open + 1..];
    let digits = digits.strip_suffix(b"+").unwrap_or(digits);
    if digits.is_empty() || digits.len() > 10 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse::<u32>().ok().map(|n| n as usize)
}

/// Whether the command read so far is an APPEND up to its message literal.
fn imap_is_append(cmd: &[u8]) -> bool {
    let mut words = cmd.splitn(3, |&b| b == b' ');
    words.next();
    words.next().is_some_and(|w| w.eq_ignore_ascii_case(b"APPEND")) && matches!(proto::imap::parse::parse_command(cmd), Ok(proto::imap::Tagged { command: proto::imap::Command::Append { .. }, .. }))
}

fn imap(data: &[u8], f: &mut Features) {
    for cmd in imap_commands(data) {
        imap_command(&cmd, f);
    }
}

fn imap_variant(c: &proto::imap::Command) -> &'static str {
    use proto::imap::Command::*;
    match c {
        Capability => "CAPABILITY",
        Noop => "NOOP",
        Logout => "LOGOUT",
        Id(_) => "ID",
        StartTls => "STARTTLS",
        Authenticate { .. } => "AUTHENTICATE",
        Login { .. } => "LOGIN",
        Enable(_) => "ENABLE",
        Select { .. } => "SELECT",
        Examine { .. } => "EXAMINE",
        Create { .. } => "CREATE",
        Delete(_) => "DELETE",
        Rename { .. } => "RENAME",
        Subscribe(_) => "SUBSCRIBE",
        Unsubscribe(_) => "UNSUBSCRIBE",
        List { .. } => "LIST",
        Lsub { .. } => "LSUB",
        Namespace => "NAMESPACE",
        Status { .. } => "STATUS",
        Append { .. } => "APPEND",
        Idle => "IDLE",
        Check => "CHECK",
        Close => "CLOSE",
        Unselect => "UNSELECT",
        Expunge => "EXPUNGE",
        UidExpunge(_) => "UID EXPUNGE",
        Search { .. } => "SEARCH",
        Fetch { .. } => "FETCH",
        Store { .. } => "STORE",
        Copy { .. } => "COPY",
        Move { .. } => "MOVE",
    }
}

/// A string as a synchronizing literal: every string the parser gives
/// back can be written so (it has no NUL, RFC 3501 9 CHAR8).
fn imap_literal(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(format!("{{{}}}\r\n", s.len()).as_bytes());
    out.extend_from_slice(s);
}

fn imap_seq(s: &proto::imap::SequenceSet) -> String {
    use proto::imap::SeqNum;
    let num = |n: &SeqNum| match n {
        SeqNum::Number(n) => n.to_string(),
        SeqNum::Last => "*".into(),
    };
    s.0.iter().map(|(a, b)| if a == b { num(a) } else { format!("{}:{}", num(a), num(b)) }).collect::<Vec<_>>().join(",")
}

fn imap_flag(f: &proto::imap::Flag) -> String {
    use proto::imap::Flag::*;
    match f {
        Seen => "\\Seen".into(),
        Answered => "\\Answered".into(),
        Flagged => "\\Flagged".into(),
        Deleted => "\\Deleted".into(),
        Draft => "\\Draft".into(),
        Keyword(k) | Extension(k) => k.clone(),
    }
}

fn imap_flags(flags: &[proto::imap::Flag]) -> String {
    format!("({})", flags.iter().map(imap_flag).collect::<Vec<_>>().join(" "))
}

const IMAP_MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

fn imap_date(d: &proto::imap::Date) -> String {
    format!("{}-{}-{:04}", d.day, IMAP_MONTHS[usize::from(d.month) - 1], d.year)
}

/// RFC 3501 9 date-time, from the time in UTC and the zone; None when the
/// local time is past 9999 (a leap second at the very end of the year 9999,
/// which the parser takes as the next second).
fn imap_date_time(d: &proto::imap::DateTime) -> Option<String> {
    let local = d.unix + i64::from(d.zone_minutes) * 60;
    let (y, m, day) = proto::date::civil_from_days(local.div_euclid(86_400));
    let sod = local.rem_euclid(86_400);
    let z = i64::from(d.zone_minutes).abs();
    let sign = if d.zone_minutes < 0 { '-' } else { '+' };
    (0..=9999).contains(&y).then(|| format!("\"{day:02}-{}-{y:04} {:02}:{:02}:{:02} {sign}{:02}{:02}\"", IMAP_MONTHS[m as usize - 1], sod / 3600, sod / 60 % 60, sod % 60, z / 60, z % 60))
}

fn imap_status_item(i: &proto::imap::StatusItem) -> &'static str {
    use proto::imap::StatusItem::*;
    match i {
        Messages => "MESSAGES",
        Recent => "RECENT",
        UidNext => "UIDNEXT",
        UidValidity => "UIDVALIDITY",
        Unseen => "UNSEEN",
        HighestModSeq => "HIGHESTMODSEQ",
    }
}

fn imap_key(out: &mut Vec<u8>, k: &proto::imap::SearchKey) {
    use proto::imap::SearchKey::*;
    let word = |out: &mut Vec<u8>, w: &str| out.extend_from_slice(w.as_bytes());
    match k {
        All => word(out, "ALL"),
        Answered => word(out, "ANSWERED"),
        Deleted => word(out, "DELETED"),
        Draft => word(out, "DRAFT"),
        Flagged => word(out, "FLAGGED"),
        New => word(out, "NEW"),
        Old => word(out, "OLD"),
        Recent => word(out, "RECENT"),
        Seen => word(out, "SEEN"),
        Unanswered => word(out, "UNANSWERED"),
        Undeleted => word(out, "UNDELETED"),
        Undraft => word(out, "UNDRAFT"),
        Unflagged => word(out, "UNFLAGGED"),
        Unseen => word(out, "UNSEEN"),
        Bcc(s) | Body(s) | Cc(s) | From(s) | Subject(s) | Text(s) | To(s) => {
            let name = match k {
                Bcc(_) => "BCC ",
                Body(_) => "BODY ",
                Cc(_) => "CC ",
                From(_) => "FROM ",
                Subject(_) => "SUBJECT ",
                Text(_) => "TEXT ",
                _ => "TO ",
            };
            word(out, name);
            imap_literal(out, s);
        }
        Before(d) => word(out, &format!("BEFORE {}", imap_date(d))),
        On(d) => word(out, &format!("ON {}", imap_date(d))),
        Since(d) => word(out, &format!("SINCE {}", imap_date(d))),
        SentBefore(d) => word(out, &format!("SENTBEFORE {}", imap_date(d))),
        SentOn(d) => word(out, &format!("SENTON \"{}\"", imap_date(d))),
        SentSince(d) => word(out, &format!("SENTSINCE {}", imap_date(d))),
        Header(name, value) => {
            word(out, "HEADER ");
            imap_literal(out, name.as_bytes());
            word(out, " ");
            imap_literal(out, value);
        }
        Keyword(a) => word(out, &format!("KEYWORD {a}")),
        Unkeyword(a) => word(out, &format!("UNKEYWORD {a}")),
        Larger(n) => word(out, &format!("LARGER {n}")),
        Smaller(n) => word(out, &format!("SMALLER {n}")),
        Not(k) => {
            word(out, "NOT ");
            imap_key(out, k);
        }
        Or(a, b) => {
            word(out, "OR ");
            imap_key(out, a);
            word(out, " ");
            imap_key(out, b);
        }
        Uid(s) => word(out, &format!("UID {}", imap_seq(s))),
        Sequence(s) => word(out, &imap_seq(s)),
        And(keys) => {
            word(out, "(");
            imap_keys(out, keys);
            word(out, ")");
        }
        ModSeq(n) => word(out, &format!("MODSEQ {n}")),
    }
}

fn imap_keys(out: &mut Vec<u8>, keys: &[proto::imap::SearchKey]) {
    for (i, k) in keys.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        imap_key(out, k);
    }
}

fn imap_part(part: &[u32]) -> String {
    part.iter().map(u32::to_string).collect::<Vec<_>>().join(".")
}

fn imap_fetch_att(out: &mut Vec<u8>, a: &proto::imap::FetchAttr) {
    use proto::imap::{FetchAttr::*, SectionText};
    let partial = |p: &Option<proto::imap::Partial>| p.map(|p| format!("<{}.{}>", p.origin, p.length)).unwrap_or_default();
    let w = match a {
        Envelope => "ENVELOPE".into(),
        Flags => "FLAGS".into(),
        InternalDate => "INTERNALDATE".into(),
        Rfc822 => "RFC822".into(),
        Rfc822Header => "RFC822.HEADER".into(),
        Rfc822Size => "RFC822.SIZE".into(),
        Rfc822Text => "RFC822.TEXT".into(),
        Body => "BODY".into(),
        BodyStructure => "BODYSTRUCTURE".into(),
        Uid => "UID".into(),
        ModSeq => "MODSEQ".into(),
        Binary { part, partial: p, peek } => format!("BINARY{}[{}]{}", if *peek { ".PEEK" } else { "" }, imap_part(part), partial(p)),
        BinarySize { part } => format!("BINARY.SIZE[{}]", imap_part(part)),
        BodySection { section, partial: p, peek } => {
            out.extend_from_slice(format!("BODY{}[{}", if *peek { ".PEEK" } else { "" }, imap_part(&section.part)).as_bytes());
            let dot = if section.part.is_empty() { "" } else { "." };
            let names = match &section.text {
                SectionText::Full => None,
                SectionText::Header => Some(("HEADER", None)),
                SectionText::Text => Some(("TEXT", None)),
                SectionText::Mime => Some(("MIME", None)),
                SectionText::HeaderFields(n) => Some(("HEADER.FIELDS", Some(n))),
                SectionText::HeaderFieldsNot(n) => Some(("HEADER.FIELDS.NOT", Some(n))),
            };
            if let Some((text, names)) = names {
                out.extend_from_slice(format!("{dot}{text}").as_bytes());
                if let Some(names) = names {
                    out.extend_from_slice(b" (");
                    for (i, n) in names.iter().enumerate() {
                        if i > 0 {
                            out.push(b' ');
                        }
                        imap_literal(out, n.as_bytes());
                    }
                    out.push(b')');
                }
            }
            format!("]{}", partial(p))
        }
    };
    out.extend_from_slice(w.as_bytes());
}

/// The command written back as a client would send it, its strings as
/// literals; None when it cannot be (see [`imap_date_time`]).
fn imap_text(t: &proto::imap::Tagged) -> Option<Vec<u8>> {
    use proto::imap::{Command::*, StoreMode};
    let mut o = format!("{} ", t.tag).into_bytes();
    let out = &mut o;
    let put = |out: &mut Vec<u8>, s: &str| out.extend_from_slice(s.as_bytes());
    match &t.command {
        Capability | Noop | Logout | StartTls | Namespace | Idle | Check | Close | Unselect | Expunge => put(out, imap_variant(&t.command)),
        Id(None) => put(out, "ID NIL"),
        Id(Some(pairs)) => {
            put(out, "ID (");
            for (i, (k, v)) in pairs.iter().enumerate() {
                if i > 0 {
                    put(out, " ");
                }
                imap_literal(out, k);
                put(out, " ");
                match v {
                    Some(v) => imap_literal(out, v),
                    None => put(out, "NIL"),
                }
            }
            put(out, ")");
        }
        Authenticate { mechanism, initial } => {
            put(out, &format!("AUTHENTICATE {mechanism}"));
            match initial {
                Some(i) if i.is_empty() => put(out, " ="),
                Some(i) => {
                    put(out, " ");
                    out.extend_from_slice(i);
                }
                None => {}
            }
        }
        Login { user, password } => {
            put(out, "LOGIN ");
            imap_literal(out, user);
            put(out, " ");
            imap_literal(out, password);
        }
        Enable(caps) => put(out, &format!("ENABLE {}", caps.join(" "))),
        Select { mailbox, params } | Examine { mailbox, params } => {
            put(out, imap_variant(&t.command));
            put(out, " ");
            imap_literal(out, mailbox);
            let mut ps = Vec::new();
            if params.condstore {
                ps.push("CONDSTORE".to_string());
            }
            if let Some(q) = &params.qresync {
                let mut s = format!("QRESYNC ({} {}", q.uid_validity, q.mod_seq);
                if let Some(k) = &q.known_uids {
                    s += &format!(" {}", imap_seq(k));
                }
                if let Some((a, b)) = &q.seq_match {
                    s += &format!(" ({} {})", imap_seq(a), imap_seq(b));
                }
                ps.push(s + ")");
            }
            if !ps.is_empty() {
                put(out, &format!(" ({})", ps.join(" ")));
            }
        }
        Create { mailbox, special_use } => {
            put(out, "CREATE ");
            imap_literal(out, mailbox);
            if !special_use.is_empty() {
                put(out, &format!(" (USE ({}))", special_use.join(" ")));
            }
        }
        Delete(m) | Subscribe(m) | Unsubscribe(m) => {
            put(out, imap_variant(&t.command));
            put(out, " ");
            imap_literal(out, m);
        }
        Rename { from, to } => {
            put(out, "RENAME ");
            imap_literal(out, from);
            put(out, " ");
            imap_literal(out, to);
        }
        List { select, reference, patterns, ret } => {
            put(out, "LIST ");
            let opts: Vec<&str> = [(select.subscribed, "SUBSCRIBED"), (select.remote, "REMOTE"), (select.recursive_match, "RECURSIVEMATCH"), (select.special_use, "SPECIAL-USE")].into_iter().filter(|o| o.0).map(|o| o.1).collect();
            if !opts.is_empty() {
                put(out, &format!("({}) ", opts.join(" ")));
            }
            imap_literal(out, reference);
            put(out, " (");
            for (i, p) in patterns.iter().enumerate() {
                if i > 0 {
                    put(out, " ");
                }
                imap_literal(out, p);
            }
            put(out, ")");
            let mut r: Vec<String> = [(ret.subscribed, "SUBSCRIBED"), (ret.children, "CHILDREN"), (ret.special_use, "SPECIAL-USE")].into_iter().filter(|o| o.0).map(|o| o.1.to_string()).collect();
            if let Some(items) = &ret.status {
                r.push(format!("STATUS ({})", items.iter().map(imap_status_item).collect::<Vec<_>>().join(" ")));
            }
            if !r.is_empty() {
                put(out, &format!(" RETURN ({})", r.join(" ")));
            }
        }
        Lsub { reference, pattern } => {
            put(out, "LSUB ");
            imap_literal(out, reference);
            put(out, " ");
            imap_literal(out, pattern);
        }
        Status { mailbox, items } => {
            put(out, "STATUS ");
            imap_literal(out, mailbox);
            put(out, &format!(" ({})", items.iter().map(imap_status_item).collect::<Vec<_>>().join(" ")));
        }
        Append { mailbox, head } => {
            put(out, "APPEND ");
            imap_literal(out, mailbox);
            if !head.flags.is_empty() {
                put(out, &format!(" {}", imap_flags(&head.flags)));
            }
            if let Some(d) = &head.date {
                put(out, &format!(" {}", imap_date_time(d)?));
            }
            put(out, &format!(" {}{{{}{}}}", if head.binary { "~" } else { "" }, head.length, if head.non_sync { "+" } else { "" }));
        }
        UidExpunge(s) => put(out, &format!("UID EXPUNGE {}", imap_seq(s))),
        Search { uid, charset, key, ret } => {
            put(out, if *uid { "UID SEARCH " } else { "SEARCH " });
            if let Some(r) = ret {
                put(out, &format!("RETURN ({}) ", r.join(" ")));
            }
            if let Some(c) = charset {
                put(out, "CHARSET ");
                imap_literal(out, c.as_bytes());
                put(out, " ");
            }
            // Several keys at the top are written without the parentheses
            // of one list (which would be one level deeper).
            match key {
                proto::imap::SearchKey::And(keys) if keys.len() > 1 => imap_keys(out, keys),
                k => imap_key(out, k),
            }
        }
        Fetch { uid, set, attrs, modifiers } => {
            put(out, &format!("{}FETCH {} (", if *uid { "UID " } else { "" }, imap_seq(set)));
            for (i, a) in attrs.iter().enumerate() {
                if i > 0 {
                    put(out, " ");
                }
                imap_fetch_att(out, a);
            }
            put(out, ")");
            let mut m = Vec::new();
            if let Some(c) = modifiers.changed_since {
                m.push(format!("CHANGEDSINCE {c}"));
            }
            if modifiers.vanished {
                m.push("VANISHED".into());
            }
            if !m.is_empty() {
                put(out, &format!(" ({})", m.join(" ")));
            }
        }
        Store { uid, set, mode, silent, flags, unchanged_since } => {
            put(out, &format!("{}STORE {}", if *uid { "UID " } else { "" }, imap_seq(set)));
            if let Some(u) = unchanged_since {
                put(out, &format!(" (UNCHANGEDSINCE {u})"));
            }
            let mode = match mode {
                StoreMode::Replace => "",
                StoreMode::Add => "+",
                StoreMode::Remove => "-",
            };
            put(out, &format!(" {mode}FLAGS{} {}", if *silent { ".SILENT" } else { "" }, imap_flags(flags)));
        }
        Copy { uid, set, mailbox } | Move { uid, set, mailbox } => {
            put(out, &format!("{}{} {} ", if *uid { "UID " } else { "" }, imap_variant(&t.command), imap_seq(set)));
            imap_literal(out, mailbox);
        }
    }
    Some(o)
}

/// Depth and key count of a search program, as the parser counts them.
fn imap_search_size(k: &proto::imap::SearchKey, depth: usize, max_depth: &mut usize, keys: &mut usize) {
    use proto::imap::SearchKey::*;
    *max_depth = (*max_depth).max(depth);
    *keys += 1;
    match k {
        Not(k) => imap_search_size(k, depth + 1, max_depth, keys),
        Or(a, b) => {
            imap_search_size(a, depth + 1, max_depth, keys);
            imap_search_size(b, depth + 1, max_depth, keys);
        }
        And(v) => v.iter().for_each(|k| imap_search_size(k, depth + 1, max_depth, keys)),
        Uid(s) | Sequence(s) => imap_set_ok(s),
        _ => {}
    }
}

fn imap_set_ok(s: &proto::imap::SequenceSet) {
    use proto::imap::{parse::MAX_SEQUENCE_RANGES, SeqNum};
    assert!(!s.0.is_empty() && s.0.len() <= MAX_SEQUENCE_RANGES, "sequence set of {} ranges", s.0.len());
    assert!(s.0.iter().all(|(a, b)| *a != SeqNum::Number(0) && *b != SeqNum::Number(0)), "zero in a sequence set: {s:?}");
}

/// The parser's bounds on what it gives back (its named limits).
fn imap_bounds(input: &[u8], c: &proto::imap::Command) {
    use proto::imap::parse::{MAX_ID_FIELD, MAX_ID_PAIRS, MAX_ID_VALUE, MAX_LIST_ITEMS, MAX_NESTING, MAX_PART_DEPTH, MAX_SEARCH_KEYS};
    use proto::imap::{Command::*, FetchAttr, SectionText};
    let list = |n: usize| assert!(n <= MAX_LIST_ITEMS, "a list of {n} items");
    let string = |s: &[u8]| assert!(s.len() <= input.len() && !s.contains(&0), "a string of {} bytes from {} or with a NUL", s.len(), input.len());
    match c {
        Id(Some(pairs)) => {
            assert!(pairs.len() <= MAX_ID_PAIRS && pairs.iter().all(|(k, v)| k.len() <= MAX_ID_FIELD && v.as_ref().is_none_or(|v| v.len() <= MAX_ID_VALUE)), "ID beyond RFC 2971 3.3");
        }
        Login { user, password } => {
            string(user);
            string(password);
        }
        Enable(caps) => list(caps.len()),
        Select { mailbox, params } | Examine { mailbox, params } => {
            string(mailbox);
            if let Some(q) = &params.qresync {
                q.known_uids.iter().chain(q.seq_match.iter().flat_map(|(a, b)| [a, b])).for_each(imap_set_ok);
            }
        }
        Create { mailbox, special_use } => {
            string(mailbox);
            assert!(special_use.iter().all(|a| a.starts_with('\\')), "special-use {special_use:?}");
        }
        List { patterns, ret, .. } => {
            list(patterns.len());
            patterns.iter().for_each(|p| string(p));
            if let Some(s) = &ret.status {
                assert!(!s.is_empty());
                list(s.len());
            }
        }
        Status { items, .. } => {
            assert!(!items.is_empty());
            list(items.len());
        }
        Append { head, .. } => list(head.flags.len()),
        UidExpunge(s) => imap_set_ok(s),
        Search { key, ret, .. } => {
            // Keys side by side at the top are given as one And, which the
            // parser does not count (a parenthesized one it does).
            let (mut depth, mut keys) = (0, 0);
            match key {
                proto::imap::SearchKey::And(top) => top.iter().for_each(|k| imap_search_size(k, 0, &mut depth, &mut keys)),
                k => imap_search_size(k, 0, &mut depth, &mut keys),
            }
            assert!(depth <= MAX_NESTING && keys <= MAX_SEARCH_KEYS, "a search program {depth} deep of {keys} keys");
            if let Some(r) = ret {
                list(r.len());
            }
        }
        Fetch { set, attrs, modifiers, uid } => {
            imap_set_ok(set);
            assert!(!attrs.is_empty());
            list(attrs.len());
            assert!(!modifiers.vanished || (*uid && modifiers.changed_since.is_some()), "VANISHED without UID FETCH and CHANGEDSINCE");
            for a in attrs {
                let part = match a {
                    FetchAttr::BodySection { section, .. } => {
                        if let SectionText::HeaderFields(n) | SectionText::HeaderFieldsNot(n) = &section.text {
                            assert!(!n.is_empty());
                            list(n.len());
                        }
                        assert!(section.text != SectionText::Mime || !section.part.is_empty(), "MIME without a part");
                        &section.part
                    }
                    FetchAttr::Binary { part, .. } | FetchAttr::BinarySize { part } => part,
                    _ => continue,
                };
                assert!(part.len() <= MAX_PART_DEPTH && !part.contains(&0), "part {part:?}");
            }
        }
        Store { set, flags, .. } => {
            imap_set_ok(set);
            list(flags.len());
        }
        Copy { set, mailbox, .. } | Move { set, mailbox, .. } => {
            imap_set_ok(set);
            string(mailbox);
        }
        _ => {}
    }
}

fn imap_command(input: &[u8], f: &mut Features) {
    use proto::imap::parse::{parse_command, MAX_TAG};
    let r = parse_command(input);
    assert_eq!(r, parse_command(input), "parsing is not deterministic");
    let t = match r {
        Err(e) => {
            // The tag given back is the input's, and ends at a space.
            if let Some(tag) = &e.tag {
                assert!(!tag.is_empty() && tag.len() <= MAX_TAG && input.starts_with(tag.as_bytes()) && input.get(tag.len()).is_none_or(|&b| b == b' '), "error tag {tag:?} is not the input's");
            }
            f.note(("imap error", e.tag.is_some(), e.reason));
            return;
        }
        Ok(t) => t,
    };
    assert!(!t.tag.is_empty() && t.tag.len() <= MAX_TAG && input.starts_with(t.tag.as_bytes()) && input.get(t.tag.len()) == Some(&b' '), "tag {:?} is not the input's", t.tag);
    f.note(("imap", imap_variant(&t.command)));
    match &t.command {
        proto::imap::Command::Search { key, .. } => f.note(("imap search", format!("{key:?}").split(['(', ' ']).next().unwrap_or_default().to_string())),
        proto::imap::Command::Fetch { attrs, .. } => attrs.iter().for_each(|a| f.note(("imap fetch", format!("{a:?}").split(['(', ' ', '{']).next().unwrap_or_default().to_string()))),
        _ => {}
    }
    imap_bounds(input, &t.command);
    // Round trip: the command written back reads as the same command.
    let Some(text) = imap_text(&t) else { return };
    match parse_command(&text) {
        Ok(again) => assert_eq!(again, t, "read back from {:?}", text.escape_ascii().to_string()),
        Err(e) => panic!("{t:?} written as {:?} does not read back: {e:?}", text.escape_ascii().to_string()),
    }
}

// ---------------------------------------------------------------------------
// DATA

/// What decoding one input gave.
#[derive(Debug, PartialEq, Eq)]
struct Decoded {
    out: Vec<u8>,
    consumed: usize,
    defects: proto::data::Defects,
    done: bool,
}

/// Decodes `input` in pieces of `chunk(i)` bytes into an output buffer of
/// `out_len` bytes, as the session does with its socket buffer.
fn decode_with(input: &[u8], out_len: usize, mut chunk: impl FnMut() -> usize) -> Decoded {
    let mut d = proto::data::DataDecoder::new();
    let mut out = Vec::new();
    let mut buf = vec![0u8; out_len];
    let mut pos = 0;
    let mut stuck = 0;
    while pos < input.len() && !d.is_done() {
        let end = (pos + chunk().max(1)).min(input.len());
        let p = d.decode(&input[pos..end], &mut buf);
        assert!(p.consumed <= end - pos && p.written <= buf.len(), "decode went past its buffers");
        assert!(p.written <= p.consumed + 1, "decode wrote {} bytes from {} (one pending CR at most)", p.written, p.consumed);
        assert_eq!(p.done, d.is_done());
        out.extend_from_slice(&buf[..p.written]);
        pos += p.consumed;
        stuck = if p.consumed == 0 { stuck + 1 } else { 0 };
        assert!(stuck < 2, "decode made no progress with room for {out_len} bytes");
    }
    Decoded { out, consumed: pos, defects: d.defects(), done: d.is_done() }
}

/// The DATA rules written the plain way (RFC 5321 4.1.1.4, 4.5.2, 2.3.8),
/// to compare the streaming decoder with: the data ends after the first
/// `<CRLF>.<CRLF>` (the first CRLF may be the start of the data); a period
/// that starts a line is removed; CR and LF only as CRLF.
fn reference_decode(input: &[u8]) -> Decoded {
    let end = if input.starts_with(b".\r\n") { Some(3) } else { input.windows(5).position(|w| w == b"\r\n.\r\n").map(|i| i + 5) };
    let consumed = end.unwrap_or(input.len());
    let text = match end {
        Some(e) => &input[..e - 3],
        None => input,
    };
    let mut out = Vec::new();
    for (i, &b) in text.iter().enumerate() {
        let line_start = i == 0 || (i >= 2 && &text[i - 2..i] == b"\r\n");
        if !(line_start && b == b'.') {
            out.push(b);
        }
    }
    let scan = &input[..consumed];
    let defects = proto::data::Defects {
        bare_lf: scan.iter().enumerate().any(|(i, &b)| b == b'\n' && (i == 0 || scan[i - 1] != b'\r')),
        bare_cr: scan.iter().enumerate().any(|(i, &b)| b == b'\r' && scan.get(i + 1).is_some_and(|&n| n != b'\n')),
        nul: scan.contains(&0),
    };
    Decoded { out, consumed, defects, done: end.is_some() }
}

fn stuff(msg: &[u8], out_len: usize) -> Vec<u8> {
    let mut s = proto::data::DotStuffer::new();
    let mut out = Vec::new();
    let mut buf = vec![0u8; out_len];
    let mut pos = 0;
    while pos < msg.len() {
        let (c, w) = s.stuff(&msg[pos..], &mut buf);
        assert!(c > 0 && w <= buf.len() && w <= 2 * c, "dot-stuffing made no progress or grew too much");
        out.extend_from_slice(&buf[..w]);
        pos += c;
    }
    out.extend_from_slice(s.finish());
    out
}

fn data(input: &[u8], f: &mut Features) {
    // Chunk and buffer sizes from the input itself, so that a crash
    // replays from its bytes alone.
    let mut h = DefaultHasher::new();
    input.hash(&mut h);
    let mut rng = crate::rng::Rng::new(h.finish());
    let whole = decode_with(input, input.len() + 2, || usize::MAX);
    let pieces = decode_with(input, rng.between(2, 16), || rng.between(1, 9));
    assert_eq!(whole, pieces, "the result depends on how the input is cut");
    assert!(whole.out.len() <= whole.consumed, "the message is longer than what it was decoded from");
    let reference = reference_decode(input);
    assert_eq!((whole.consumed, whole.done), (reference.consumed, reference.done), "the data does not end where RFC 5321 4.1.1.4 ends it");
    if whole.done {
        assert_eq!(whole.out, reference.out, "dot-unstuffing differs from RFC 5321 4.5.2");
        assert_eq!(whole.defects, reference.defects, "line end defects differ from RFC 5321 2.3.8");
    } else {
        // Bytes that may still become a line end or the end mark are held.
        assert!(reference.out.starts_with(&whole.out) && reference.out.len() - whole.out.len() <= 2, "decoded text is not the reference's");
        assert!(!whole.defects.nul || reference.defects.nul);
    }
    f.note(("data", whole.done, whole.defects.bare_cr, whole.defects.bare_lf, whole.defects.nul));
    // Round trip: the decoded message, dot-stuffed and terminated as the
    // SMTP client and POP3 RETR send it, decodes to itself (plus the CRLF
    // that the stuffer adds to a message not ending in one).
    let stuffed = stuff(&whole.out, rng.between(2, 16));
    assert!(stuffed.len() <= 2 * whole.out.len() + 5, "dot-stuffing more than doubled the message");
    let back = decode_with(&stuffed, rng.between(2, 16), || rng.between(1, 64));
    assert!(back.done && back.consumed == stuffed.len(), "a stuffed message does not end at its terminator");
    let mut expect = whole.out.clone();
    if !expect.is_empty() && !expect.ends_with(b"\r\n") {
        expect.extend_from_slice(b"\r\n");
    }
    assert_eq!(back.out, expect, "dot-stuffing then decoding changed the message");
}

// ---------------------------------------------------------------------------
// Line framing

/// Line bounds the line target tries: tiny ones reach every edge.
const LINE_BOUNDS: &[usize] = &[1, 2, 3, 4, 7, 64, proto::pop3::MAX_COMMAND_LINE, proto::smtp::MIN_COMMAND_LINE, SMTP_MAX_LINE];

/// What a reader made of a stream: each event and the bytes left over.
#[derive(Debug, PartialEq, Eq)]
enum LineEvent {
    Line(Vec<u8>, usize),
    Skipped(usize),
}

/// Reads `stream` as a session does: bytes arrive in pieces, complete lines
/// are taken, an over-long line is skipped to its end.
fn read_lines(stream: &[u8], max: usize, mut chunk: impl FnMut() -> usize) -> (Vec<LineEvent>, Vec<u8>) {
    let mut events = Vec::new();
    // The bytes received and not yet taken are buf[start..].
    let mut buf: Vec<u8> = Vec::new();
    let mut start = 0;
    let mut skipping = false;
    let mut pos = 0;
    loop {
        if skipping {
            match skip_to_line_end(&buf[start..]) {
                Some(n) => {
                    start += n;
                    events.push(LineEvent::Skipped(n));
                    skipping = false;
                }
                None => {
                    events.push(LineEvent::Skipped(buf.len() - start));
                    start = buf.len();
                }
            }
        }
        if !skipping {
            let b = &buf[start..];
            match find_line(b, max) {
                LineStatus::Complete { content, total } => {
                    assert!(total <= max && total <= b.len() && content < total && total - content <= 2, "bad line bounds {content}/{total} for {max}");
                    assert_eq!(b[total - 1], b'\n');
                    assert!(!b[..content].contains(&b'\n'), "a line with an LF inside");
                    assert!(total - content == 1 || b[content] == b'\r');
                    events.push(LineEvent::Line(b[..content].to_vec(), total - content));
                    start += total;
                    continue;
                }
                LineStatus::TooLong => {
                    assert!(b.len() >= max && !b[..max].contains(&b'\n'), "TooLong with a line end within the bound");
                    skipping = true;
                    continue;
                }
                LineStatus::Incomplete => assert!(b.len() < max && !b.contains(&b'\n'), "Incomplete with a line end or past the bound"),
            }
        }
        if pos == stream.len() {
            return (events, buf[start..].to_vec());
        }
        buf.drain(..start);
        start = 0;
        let end = (pos + chunk().max(1)).min(stream.len());
        buf.extend_from_slice(&stream[pos..end]);
        pos = end;
    }
}

fn line(input: &[u8], f: &mut Features) {
    let Some((&sel, stream)) = input.split_first() else { return };
    let max = LINE_BOUNDS[sel as usize % LINE_BOUNDS.len()];
    let mut h = DefaultHasher::new();
    input.hash(&mut h);
    let mut rng = crate::rng::Rng::new(h.finish());
    let (whole, rest) = read_lines(stream, max, || usize::MAX);
    let (pieces, rest2) = read_lines(stream, max, || rng.between(1, 2 * max + 3));
    // A line is skipped in one go only when it arrives in one piece; the
    // skipped amounts add up the same.
    let merge = |ev: &[LineEvent]| {
        let mut v: Vec<LineEvent> = Vec::new();
        for e in ev {
            match (v.last_mut(), e) {
                (Some(LineEvent::Skipped(a)), LineEvent::Skipped(b)) => *a += b,
                (_, LineEvent::Line(l, k)) => v.push(LineEvent::Line(l.clone(), *k)),
                (_, LineEvent::Skipped(b)) => v.push(LineEvent::Skipped(*b)),
            }
        }
        v
    };
    assert_eq!(merge(&whole), merge(&pieces), "lines depend on how the stream is cut");
    assert_eq!(rest, rest2);
    // Nothing lost, nothing made up.
    let mut total = rest.len();
    for e in &whole {
        match e {
            LineEvent::Line(l, k) => {
                assert!(l.len() + k <= max, "a line longer than the bound");
                total += l.len() + k;
                f.note(("line", *k, l.is_empty()));
            }
            LineEvent::Skipped(n) => {
                total += n;
                f.note("skipped");
            }
        }
    }
    assert_eq!(total, stream.len(), "framing lost or invented bytes");
}

// ---------------------------------------------------------------------------
// SASL PLAIN

fn sasl(input: &[u8], f: &mut Features) {
    let Some(p) = proto::sasl::parse_plain(input) else {
        f.note("sasl refused");
        return;
    };
    use proto::sasl::MAX_PLAIN_PART;
    assert!(!p.authcid.is_empty() && !p.password.is_empty());
    assert!([p.authzid, p.authcid, p.password].iter().all(|s| s.len() <= MAX_PLAIN_PART && within(input, s) && !s.contains('\0')));
    // RFC 4616 2: the message is exactly the three parts and two NULs.
    assert_eq!(format!("{}\0{}\0{}", p.authzid, p.authcid, p.password).as_bytes(), input);
    let login = p.login();
    assert_eq!(login.is_some(), p.authzid.is_empty() || p.authzid == p.authcid);
    f.note(("sasl", login.is_some(), p.authzid.is_empty()));
}

// ---------------------------------------------------------------------------
// The admin page: multipart/form-data

/// Writes parts as a browser does (RFC 7578 4), for the round trip.
fn multipart_body(boundary: &str, parts: &[admin::web::fuzzing::Part]) -> Vec<u8> {
    let quote = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    let mut b = Vec::new();
    for p in parts {
        b.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{}\"", quote(&p.name)).as_bytes());
        if let Some(f) = &p.filename {
            b.extend_from_slice(format!("; filename=\"{}\"", quote(f)).as_bytes());
        }
        b.extend_from_slice(b"\r\n\r\n");
        b.extend_from_slice(&p.data);
        b.extend_from_slice(b"\r\n");
    }
    b.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    b
}

/// Longest header of a part the admin page takes (its MAX_PART_HEADER).
const MULTIPART_MAX_PART_HEADER: usize = 4096;

fn multipart(input: &[u8], f: &mut Features) {
    use admin::web::fuzzing::{is_multipart, parse_multipart, MAX_PARTS};
    let (ct, body) = match input.iter().position(|&b| b == b'\n') {
        Some(i) => (&input[..i], &input[i + 1..]),
        None => (input, &[][..]),
    };
    let ct = String::from_utf8_lossy(ct.strip_suffix(b"\r").unwrap_or(ct)).into_owned();
    let _ = is_multipart(&ct);
    let parts = match parse_multipart(&ct, body) {
        Err(e) => {
            f.note(("multipart error", format!("{e:?}")));
            return;
        }
        Ok(p) => p,
    };
    f.note(("multipart parts", parts.len(), parts.iter().filter(|p| p.filename.is_some()).count()));
    assert!(parts.len() <= MAX_PARTS, "{} parts", parts.len());
    assert!(parts.iter().map(|p| p.data.len()).sum::<usize>() <= body.len(), "parts larger than the body");
    for p in &parts {
        assert!(p.data.is_empty() || body.windows(p.data.len()).any(|w| w == p.data), "a part's data is not from the body");
    }
    // Round trip: the parts written back as a browser writes them, with a
    // boundary of our own that none of them contains, read the same.
    if parts.iter().any(|p| p.name.contains(['\r', '\n']) || p.filename.as_deref().is_some_and(|f| f.contains(['\r', '\n'])) || 2 * (p.name.len() + p.filename.as_ref().map_or(0, String::len)) + 128 > MULTIPART_MAX_PART_HEADER) {
        return;
    }
    let Some(boundary) = (0u32..).map(|i| format!("mailfortFuzzBoundary{i}")).take(64).find(|b| {
        let delim = format!("\r\n--{b}").into_bytes();
        parts.iter().all(|p| {
            let mut tail = p.data.clone();
            tail.extend_from_slice(&delim);
            tail.windows(delim.len()).position(|w| w == delim.as_slice()) == Some(p.data.len())
        })
    }) else {
        return;
    };
    let again = multipart_body(&boundary, &parts);
    match parse_multipart(&format!("multipart/form-data; boundary={boundary}"), &again) {
        Ok(back) => assert_eq!(back, parts, "parts written back read differently"),
        Err(e) => panic!("parts written back do not parse: {e}"),
    }
}

// ---------------------------------------------------------------------------
// The admin page: urlencoded forms

/// Polls a future that needs no I/O to its end (the extractors over a body
/// already in memory).
fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    for _ in 0..1000 {
        if let std::task::Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
    }
    panic!("form decoding waited for something with its whole body in memory");
}

/// application/x-www-form-urlencoded as a browser writes it: every byte
/// but unreserved ones percent-encoded.
fn urlencode(fields: &[(&str, Option<String>)]) -> Vec<u8> {
    let enc = |s: &str| s.bytes().map(|b| if b.is_ascii_alphanumeric() || b"-._*".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") }).collect::<String>();
    fields.iter().filter_map(|(k, v)| v.as_ref().map(|v| format!("{}={}", enc(k), enc(v)))).collect::<Vec<_>>().join("&").into_bytes()
}

fn forms(input: &[u8], f: &mut Features) {
    let decoded = block_on(admin::web::fuzzing::decode_forms(input));
    for (i, (name, fields)) in decoded.iter().enumerate() {
        f.note(("form", *name, fields.is_some()));
        let Some(fields) = fields else { continue };
        for (k, v) in fields {
            // Percent-decoding shrinks; an invalid UTF-8 byte becomes
            // U+FFFD, three bytes.
            assert!(v.as_ref().is_none_or(|v| v.len() <= 3 * input.len()), "field {k} of {name} longer than three times the body");
        }
        let body = urlencode(fields);
        let back = block_on(admin::web::fuzzing::decode_forms(&body));
        assert_eq!(&back[i].1.as_ref(), &Some(fields), "form {name} written back as {:?} reads differently", String::from_utf8_lossy(&body));
    }
}

// ---------------------------------------------------------------------------
// The admin page and console: certificate upload

/// A store to upload to, one per thread, removed when the thread ends.
struct CertStore {
    store: store::Store,
    _dir: tempfile::TempDir,
}

thread_local! {
    static CERT_STORE: RefCell<Option<CertStore>> = const { RefCell::new(None) };
}

/// The check an uploaded certificate chain and key pass before they are
/// saved: today it is part of `cert::upload`, which saves the pair
/// when it passes. This is the one line to change when the check has an
/// entry point of its own.
fn upload_check(store: &store::Store, pem: &str) -> Result<cert::CertInfo, cert::CertError> {
    cert::upload(store, pem)
}

fn cert(input: &[u8], f: &mut Features) {
    CERT_STORE.with(|cell| {
        let mut cell = cell.borrow_mut();
        let cs = cell.get_or_insert_with(|| {
            let dir = tempfile::tempdir().expect("a temporary directory for the certificate store");
            let store = store::Store::init(&dir.path().join("store"), "example.test", Some("mail.example.test")).expect("a store for the certificate target");
            CertStore { store, _dir: dir }
        });
        // The admin page refuses text that is not UTF-8 before the check;
        // the rest of the bytes still reach it.
        let text = String::from_utf8_lossy(input);
        let before = cert::cert_info(&cs.store).expect("the store's certificate reads");
        match upload_check(&cs.store, &text) {
            Err(e) => {
                // The kind of error and the first words of its reason:
                // the rest quotes the input (labels, bytes, offsets).
                let debug = format!("{e:?}");
                let kind = debug.split([' ', '(']).next().unwrap_or_default().to_string();
                let text = e.to_string();
                let reason: Vec<String> = text.rsplit(": ").next().unwrap_or_default().split(' ').filter(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_alphabetic())).take(3).map(str::to_string).collect();
                f.note(("cert error", kind, reason));
                let after = cert::cert_info(&cs.store).unwrap_or_else(|err| panic!("a refused upload ({e}) left a certificate that does not read: {err}"));
                assert_eq!((&before.sha256, &before.source), (&after.sha256, &after.source), "a refused upload ({e}) changed the certificate");
            }
            Ok(info) => {
                f.note("cert accepted");
                assert_eq!(info.source, cert::SOURCE_UPLOADED);
                assert_eq!(info.sha256.len(), 32 * 3 - 1, "bad fingerprint {}", info.sha256);
                let now = cert::cert_info(&cs.store).expect("the uploaded certificate reads back");
                assert_eq!((&now.sha256, &now.source), (&info.sha256, &info.source), "the node does not present what was uploaded");
                // Round trip: the saved text is an upload that passes too,
                // with the same certificate.
                let saved = std::fs::read_to_string(cs.store.tls_dir().join("cluster.pem")).expect("the saved certificate file");
                let again = upload_check(&cs.store, &saved).unwrap_or_else(|e| panic!("the saved certificate is refused when uploaded again: {e}"));
                assert_eq!(again.sha256, info.sha256);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines_frame_like_the_daemon() {
        assert_eq!(command_lines(b"NOOP\r\nQUIT\nRSET", 512), vec![&b"NOOP"[..], b"QUIT", b"RSET"]);
        assert_eq!(command_lines(b"AAAAAAAA\r\nNOOP\r\n", 6), vec![&b"NOOP"[..]]);
    }

    #[test]
    fn reference_decoder_follows_rfc_5321() {
        let d = reference_decode(b"a\r\n..b\r\n.\r\nQUIT");
        assert_eq!((d.out.as_slice(), d.consumed, d.done), (&b"a\r\n.b\r\n"[..], 11, true));
        assert!(!reference_decode(b"a\n.\nb").done);
        assert!(reference_decode(b"a\n.\nb").defects.bare_lf);
    }

    #[test]
    fn urlencoded_round_trip() {
        let body = urlencode(&[("csrf", Some("a b&c=d%".into())), ("password", Some("\u{212a}".into()))]);
        let forms = block_on(admin::web::fuzzing::decode_forms(&body));
        assert_eq!(forms[0], ("login", Some(vec![("csrf", Some("a b&c=d%".to_string())), ("password", Some("\u{212a}".to_string()))])));
    }

    #[test]
    fn imap_commands_frame_like_the_daemon() {
        let framed = imap_commands(b"a1 NOOP\r\na2 LOGIN {5}\r\nal\nce {3+}\nx y\r\na3 APPEND INBOX {4}\r\nab\r\n\r\na4 APPEND {1}\r\nX {2}\r\nhi\r\nDONE\na5 LOGIN {9}\r\nab");
        let framed: Vec<&[u8]> = framed.iter().map(Vec::as_slice).collect();
        assert_eq!(framed, vec![&b"a1 NOOP"[..], b"a2 LOGIN {5}\r\nal\nce {3+}\nx y", b"a3 APPEND INBOX {4}", b"a4 APPEND {1}\r\nX {2}", b"DONE", b"a5 LOGIN {9}\r\nab"]);
    }

    /// Every seed command parses (the seeds reach the parser's commands,
    /// not its first error), and reads back when written.
    #[test]
    fn imap_seeds_parse() {
        for seed in crate::engine::load_corpus(&crate::engine::default_corpus_dir(), "imap").unwrap() {
            for cmd in imap_commands(&seed) {
                if proto::imap::parse::is_done(&cmd) {
                    continue;
                }
                if let Err(e) = proto::imap::parse::parse_command(&cmd) {
                    panic!("{:?}: {e:?}", cmd.escape_ascii().to_string());
                }
                imap_command(&cmd, &mut Features::new());
            }
        }
    }

    #[test]
    fn every_target_takes_empty_and_junk_input() {
        for t in TARGETS {
            check(t, b"");
            check(t, b"\r\n\0\xff junk\r\n.\r\n");
        }
    }
}
