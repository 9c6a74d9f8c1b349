//! A small IMAP4rev1 client for the load generators: tagged commands,
//! untagged responses with literals, APPEND with LITERAL+ or a
//! synchronizing literal, IDLE. Every read and write has the connection's
//! timeout (`net::Conn`).

use crate::net::{show, Conn};
use anyhow::{anyhow, bail, Context, Result};
use std::net::Ipv4Addr;
use std::time::Duration;

/// Largest literal accepted from a server (a message body).
const MAX_LITERAL: usize = 64 << 20;
/// Longest response (text and literals) accepted.
const MAX_RESPONSE: usize = 80 << 20;

/// One server response: its text with every literal replaced by a marker
/// (`\0<index>\0`; NUL cannot occur in IMAP text) and the literals.
#[derive(Debug, Default, Clone)]
pub struct Response {
    pub text: Vec<u8>,
    pub literals: Vec<Vec<u8>>,
}

impl Response {
    pub fn is_untagged(&self) -> bool {
        self.text.starts_with(b"* ")
    }
    pub fn is_continuation(&self) -> bool {
        self.text.starts_with(b"+")
    }
    pub fn show(&self) -> String {
        show(&self.text)
    }
    /// `* <n> <WORD>` : the number and the word (upper case), for EXISTS,
    /// EXPUNGE, FETCH, RECENT.
    pub fn numbered(&self) -> Option<(u32, String)> {
        let rest = self.text.strip_prefix(b"* ")?;
        let sp = rest.iter().position(|&b| b == b' ')?;
        let n: u32 = std::str::from_utf8(&rest[..sp]).ok()?.parse().ok()?;
        let word_end = rest[sp + 1..].iter().position(|&b| b == b' ' || b == b'\r' || b == b'\n').map_or(rest.len(), |i| sp + 1 + i);
        let word = String::from_utf8_lossy(&rest[sp + 1..word_end]).to_ascii_uppercase();
        Some((n, word))
    }
    /// The items of `* n FETCH (...)`.
    pub fn fetch(&self) -> Option<(u32, Vec<Tok>)> {
        let (n, w) = self.numbered()?;
        if w != "FETCH" {
            return None;
        }
        let start = self.text.iter().position(|&b| b == b'(')?;
        let mut t = Tokenizer { s: &self.text, pos: start };
        match t.next_tok()? {
            Tok::List(items) => Some((n, items)),
            _ => None,
        }
    }
}

/// A token of a parsed response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tok {
    Atom(String),
    Str(Vec<u8>),
    /// Index into `Response::literals`.
    Lit(usize),
    List(Vec<Tok>),
}

impl Tok {
    pub fn atom(&self) -> Option<&str> {
        match self {
            Tok::Atom(a) => Some(a),
            _ => None,
        }
    }
    pub fn number(&self) -> Option<u64> {
        self.atom()?.parse().ok()
    }
}

/// Looks up `key` (case-insensitive) in a FETCH item list.
pub fn item<'a>(items: &'a [Tok], key: &str) -> Option<&'a Tok> {
    let mut i = 0;
    while i + 1 < items.len() {
        if items[i].atom().is_some_and(|a| a.eq_ignore_ascii_case(key)) {
            return Some(&items[i + 1]);
        }
        i += 2;
    }
    None
}

struct Tokenizer<'a> {
    s: &'a [u8],
    pos: usize,
}

impl Tokenizer<'_> {
    fn next_tok(&mut self) -> Option<Tok> {
        while self.pos < self.s.len() && matches!(self.s[self.pos], b' ' | b'\r' | b'\n') {
            self.pos += 1;
        }
        let c = *self.s.get(self.pos)?;
        match c {
            b'(' => {
                self.pos += 1;
                let mut items = Vec::new();
                loop {
                    while self.pos < self.s.len() && self.s[self.pos] == b' ' {
                        self.pos += 1;
                    }
                    match self.s.get(self.pos) {
                        None => return Some(Tok::List(items)),
                        Some(b')') => {
                            self.pos += 1;
                            return Some(Tok::List(items));
                        }
                        _ => items.push(self.next_tok()?),
                    }
                }
            }
            b'"' => {
                self.pos += 1;
                let mut out = Vec::new();
                while let Some(&b) = self.s.get(self.pos) {
                    self.pos += 1;
                    match b {
                        b'\\' => {
                            if let Some(&e) = self.s.get(self.pos) {
                                out.push(e);
                                self.pos += 1;
                            }
                        }
                        b'"' => break,
                        _ => out.push(b),
                    }
                }
                Some(Tok::Str(out))
            }
            0 => {
                let end = self.s[self.pos + 1..].iter().position(|&b| b == 0)? + self.pos + 1;
                let idx = std::str::from_utf8(&self.s[self.pos + 1..end]).ok()?.parse().ok()?;
                self.pos = end + 1;
                Some(Tok::Lit(idx))
            }
            _ => {
                let start = self.pos;
                let mut depth = 0;
                while let Some(&b) = self.s.get(self.pos) {
                    match b {
                        b'[' => depth += 1,
                        b']' => depth -= 1,
                        b' ' | b'(' | b')' | b'\r' | b'\n' if depth <= 0 => break,
                        _ => {}
                    }
                    self.pos += 1;
                }
                if self.pos == start {
                    self.pos += 1;
                    return None;
                }
                Some(Tok::Atom(String::from_utf8_lossy(&self.s[start..self.pos]).into_owned()))
            }
        }
    }
}

/// The outcome of a tagged command.
#[derive(Debug)]
pub struct Tagged {
    /// OK, NO or BAD.
    pub status: String,
    /// The text after the status (with a response code, if any).
    pub text: String,
}

impl Tagged {
    pub fn ok(&self) -> bool {
        self.status == "OK"
    }
    /// A response code's arguments: `[APPENDUID 7 42]` -> ["7", "42"].
    pub fn code(&self, name: &str) -> Option<Vec<String>> {
        let rest = self.text.strip_prefix('[')?;
        let end = rest.find(']')?;
        let mut words = rest[..end].split_whitespace();
        if !words.next()?.eq_ignore_ascii_case(name) {
            return None;
        }
        Some(words.map(str::to_string).collect())
    }
}

pub struct Client {
    pub conn: Conn,
    tag: u64,
    pub caps: Vec<String>,
    line: Vec<u8>,
}

/// Quotes a string for a command (RFC 3501 quoted; no CR/LF expected).
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

impl Client {
    /// Connects (from `src` if given) and reads the greeting.
    pub async fn connect(target: &str, src: Option<Ipv4Addr>, t: Duration) -> Result<Client> {
        let conn = match src {
            Some(ip) => Conn::connect_from(ip, target, t).await?,
            None => Conn::connect(target, t).await?,
        };
        let mut c = Client { conn, tag: 0, caps: Vec::new(), line: Vec::with_capacity(4096) };
        let g = c.read().await.context("greeting")?;
        if !g.text.starts_with(b"* OK") {
            bail!("greeting: {}", g.show());
        }
        c.note_caps(&g.text);
        Ok(c)
    }

    fn note_caps(&mut self, text: &[u8]) {
        let t = String::from_utf8_lossy(text);
        let upper = t.to_ascii_uppercase();
        let list = if let Some(i) = upper.find("[CAPABILITY ") {
            let rest = &t[i + 12..];
            rest.split(']').next().unwrap_or("")
        } else if let Some(rest) = upper.strip_prefix("* CAPABILITY ") {
            &t[t.len() - rest.len()..]
        } else {
            return;
        };
        self.caps = list.split_whitespace().map(|s| s.to_ascii_uppercase()).collect();
    }

    pub fn has_cap(&self, cap: &str) -> bool {
        self.caps.iter().any(|c| c == cap)
    }

    /// Reads one response with its literals.
    pub async fn read(&mut self) -> Result<Response> {
        let mut r = Response::default();
        loop {
            self.conn.line(&mut self.line).await?;
            let l = &self.line;
            // A literal announcement ends the line: `{123}\r\n` (or `{123+}`).
            let trimmed = l.strip_suffix(b"\r\n").or_else(|| l.strip_suffix(b"\n")).unwrap_or(l);
            let lit = if trimmed.ends_with(b"}") {
                trimmed.iter().rposition(|&b| b == b'{').and_then(|open| {
                    let inner = &trimmed[open + 1..trimmed.len() - 1];
                    let inner = inner.strip_suffix(b"+").unwrap_or(inner);
                    let n: usize = std::str::from_utf8(inner).ok()?.parse().ok()?;
                    Some((open, n))
                })
            } else {
                None
            };
            match lit {
                Some((open, n)) => {
                    if n > MAX_LITERAL {
                        bail!("literal of {n} bytes from server");
                    }
                    r.text.extend_from_slice(&trimmed[..open]);
                    r.text.extend_from_slice(format!("\0{}\0", r.literals.len()).as_bytes());
                    let mut data = Vec::with_capacity(n);
                    self.conn.read_exact_into(n, &mut data).await?;
                    r.literals.push(data);
                    if r.text.len() + r.literals.iter().map(Vec::len).sum::<usize>() > MAX_RESPONSE {
                        bail!("response longer than {MAX_RESPONSE} bytes");
                    }
                }
                None => {
                    r.text.extend_from_slice(trimmed);
                    return Ok(r);
                }
            }
        }
    }

    fn next_tag(&mut self) -> String {
        self.tag += 1;
        format!("b{}", self.tag)
    }

    /// Reads until the tagged response of `tag`; untagged responses go to
    /// `on_untagged`. A continuation request here is an error.
    pub async fn finish(&mut self, tag: &str, on_untagged: &mut (dyn FnMut(&Response) + Send)) -> Result<Tagged> {
        loop {
            let r = self.read().await?;
            if r.is_untagged() {
                if r.text.len() > 13 && r.text[..13].eq_ignore_ascii_case(b"* CAPABILITY ") {
                    let t = r.text.clone();
                    self.note_caps(&t);
                }
                if r.text.starts_with(b"* BYE") {
                    // The tagged response may still follow (LOGOUT); others end here.
                    on_untagged(&r);
                    continue;
                }
                on_untagged(&r);
                continue;
            }
            if r.is_continuation() {
                bail!("unexpected continuation request: {}", r.show());
            }
            let text = String::from_utf8_lossy(&r.text).into_owned();
            let mut parts = text.splitn(3, ' ');
            let t = parts.next().unwrap_or("");
            if t != tag {
                bail!("response with tag {t:?} while waiting for {tag}: {}", r.show());
            }
            let status = parts.next().unwrap_or("").to_ascii_uppercase();
            let rest = parts.next().unwrap_or("").to_string();
            if !matches!(status.as_str(), "OK" | "NO" | "BAD") {
                bail!("malformed tagged response: {}", r.show());
            }
            if status == "OK" {
                self.note_caps(rest.as_bytes());
            }
            return Ok(Tagged { status, text: rest });
        }
    }

    /// Sends `cmd` (without tag and line end) and reads up to its tagged
    /// response.
    pub async fn command(&mut self, cmd: &str, on_untagged: &mut (dyn FnMut(&Response) + Send)) -> Result<Tagged> {
        let tag = self.next_tag();
        self.conn.send(format!("{tag} {cmd}\r\n").as_bytes()).await?;
        self.finish(&tag, on_untagged).await
    }

    /// A command that must end in OK.
    pub async fn command_ok(&mut self, cmd: &str, on_untagged: &mut (dyn FnMut(&Response) + Send)) -> Result<Tagged> {
        let r = self.command(cmd, on_untagged).await?;
        if !r.ok() {
            let shown: String = cmd.chars().take(60).collect();
            bail!("{shown}: {} {}", r.status, r.text);
        }
        Ok(r)
    }

    /// One LOGIN: Ok(true) when logged in, Ok(false) when the server is
    /// busy (NO [UNAVAILABLE]: mailfort bounds the password checks in
    /// progress and asks the rest to come back), Err when refused.
    pub async fn login_once(&mut self, user: &str, password: &str) -> Result<bool> {
        let r = self.command(&format!("LOGIN {} {}", quote(user), quote(password)), &mut |_| {}).await?;
        if !r.ok() {
            if r.status == "NO" && r.code("UNAVAILABLE").is_some() {
                return Ok(false);
            }
            bail!("LOGIN {user}: {} {}", r.status, r.text);
        }
        if self.caps.is_empty() || !self.has_cap("IMAP4REV1") {
            self.command_ok("CAPABILITY", &mut |_| {}).await?;
        }
        Ok(true)
    }

    /// APPEND of `msg` to `mailbox`: one write with LITERAL+ (RFC 7888),
    /// else a synchronizing literal after the server's `+`.
    pub async fn append(&mut self, mailbox: &str, flags: &str, msg: &[u8], on_untagged: &mut (dyn FnMut(&Response) + Send)) -> Result<Tagged> {
        let tag = self.next_tag();
        let flags = if flags.is_empty() { String::new() } else { format!("({flags}) ") };
        if self.has_cap("LITERAL+") {
            let mut buf = format!("{tag} APPEND {} {flags}{{{}+}}\r\n", quote(mailbox), msg.len()).into_bytes();
            buf.extend_from_slice(msg);
            buf.extend_from_slice(b"\r\n");
            self.conn.send(&buf).await?;
        } else {
            self.conn.send(format!("{tag} APPEND {} {flags}{{{}}}\r\n", quote(mailbox), msg.len()).as_bytes()).await?;
            loop {
                let r = self.read().await?;
                if r.is_continuation() {
                    break;
                }
                if r.is_untagged() {
                    on_untagged(&r);
                    continue;
                }
                let text = String::from_utf8_lossy(&r.text).into_owned();
                bail!("APPEND refused before the literal: {text}");
            }
            let mut buf = msg.to_vec();
            buf.extend_from_slice(b"\r\n");
            self.conn.send(&buf).await?;
        }
        self.finish(&tag, on_untagged).await
    }

    /// Starts IDLE (RFC 2177): returns once the server's `+` came; untagged
    /// responses before it go to `on_untagged`. Returns the tag for
    /// [`Client::idle_done`].
    pub async fn idle_start(&mut self, on_untagged: &mut (dyn FnMut(&Response) + Send)) -> Result<String> {
        let tag = self.next_tag();
        self.conn.send(format!("{tag} IDLE\r\n").as_bytes()).await?;
        loop {
            let r = self.read().await?;
            if r.is_continuation() {
                return Ok(tag);
            }
            if r.is_untagged() {
                on_untagged(&r);
                continue;
            }
            bail!("IDLE refused: {}", r.show());
        }
    }

    pub async fn idle_done(&mut self, tag: &str, on_untagged: &mut (dyn FnMut(&Response) + Send)) -> Result<Tagged> {
        self.conn.send(b"DONE\r\n").await?;
        let r = self.finish(tag, on_untagged).await?;
        if !r.ok() {
            return Err(anyhow!("IDLE ended with {} {}", r.status, r.text));
        }
        Ok(r)
    }

    pub async fn logout(mut self) {
        let _ = self.command("LOGOUT", &mut |_| {}).await;
        self.conn.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fetch_items_with_literal_and_brackets() {
        let r = Response { text: b"* 3 FETCH (UID 17 RFC822.SIZE 5 FLAGS (\\Seen $x) BODY[HEADER.FIELDS (FROM)] \x000\x00)".to_vec(), literals: vec![b"hello".to_vec()] };
        let (n, items) = r.fetch().unwrap();
        assert_eq!(n, 3);
        assert_eq!(item(&items, "UID").and_then(Tok::number), Some(17));
        assert_eq!(item(&items, "rfc822.size").and_then(Tok::number), Some(5));
        assert_eq!(item(&items, "FLAGS"), Some(&Tok::List(vec![Tok::Atom("\\Seen".into()), Tok::Atom("$x".into())])));
        assert_eq!(item(&items, "BODY[HEADER.FIELDS (FROM)]"), Some(&Tok::Lit(0)));
    }

    #[test]
    fn response_codes() {
        let t = Tagged { status: "OK".into(), text: "[APPENDUID 7 42] APPEND completed".into() };
        assert_eq!(t.code("APPENDUID"), Some(vec!["7".to_string(), "42".to_string()]));
        assert_eq!(t.code("COPYUID"), None);
        let r = Response { text: b"* 12 EXISTS".to_vec(), literals: vec![] };
        assert_eq!(r.numbered(), Some((12, "EXISTS".into())));
    }
}
