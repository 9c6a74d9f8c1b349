//! One IMAP connection (RFC 3501): framing of commands with their literals,
//! the states of RFC 3501 3, and the commands.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use proto::imap::parse::{is_done, parse_command, ParseError};
use proto::imap::{Command, FetchAttr, FetchModifiers, Flag, ListReturn, ListSelect, SearchKey, SelectParams, SeqNum, SequenceSet, StatusItem, StoreMode, Tagged};
use proto::line::{find_line, LineStatus};
use store::imap::{FlagMode, Flags, FolderRef, ImapError, Msg, SyncMode, View};
use store::{Address, Claimant, Store};

use super::fetch;
use super::message;
use super::respond;
use super::search;
use crate::auth::AuthOutcome;
use crate::conn::ConnError;
use crate::server::Shared;
use crate::session::{plain_credentials, Core, Flow, Input, Sasl};

/// How long a client may be idle before it logs in (RFC 3501 5.4 asks
/// for 30 minutes only after login).
pub const NOT_AUTHENTICATED_IDLE: Duration = Duration::from_secs(60);
/// Longest command line, without its literals (Dovecot's
/// imap_max_line_length is 64 KiB too).
pub const MAX_LINE: usize = 64 * 1024;
/// Longest literal inside a command other than APPEND's message (a
/// password, a folder name, a search string).
pub const MAX_INLINE_LITERAL: usize = 64 * 1024;
/// Literals in one command.
pub const MAX_LITERALS: usize = 64;
/// One command with its literals.
pub const MAX_COMMAND: usize = 256 * 1024;
/// APPEND data is read and written to the spool in pieces of this size.
const APPEND_CHUNK: usize = 64 * 1024;
/// FETCH output is handed to the connection once this much is queued.
const FETCH_PIECE: usize = 64 * 1024;
/// While idling, the folder is also looked at this often, whatever the
/// watcher says (a safety net, not the notification path).
const IDLE_RECHECK: Duration = Duration::from_secs(30);
/// Buffer reserved ahead for a message read (its recorded size, at most
/// this: a record is not trusted to size allocations).
const MAX_PREALLOC: u64 = 1024 * 1024;
/// Messages a SEARCH reads to match header or body keys; past it the
/// search fails with NO [LIMIT] rather than keep a slot busy for minutes.
const MAX_SEARCH_READS: usize = 200_000;

/// RFC 3501 3: the states (LOGOUT is the end of `run`).
enum State {
    NotAuthenticated,
    Authenticated(Address),
    Selected(Address, Box<Selected>),
}

/// A message as this session knows it: its sequence number is its index
/// + 1. Expunges seen while they may not be announced are kept (`gone`)
/// until a command that allows EXPUNGE responses (RFC 3501 7.4.1).
#[derive(Clone, Copy)]
struct SMsg {
    uid: u32,
    modseq: u64,
    flags: Flags,
    recent: bool,
    gone: bool,
}

impl SMsg {
    fn of(m: &Msg, recent: bool) -> SMsg {
        SMsg { uid: m.uid, modseq: m.modseq, flags: m.flags(), recent, gone: false }
    }
}

struct Selected {
    name: String,
    read_only: bool,
    view: View,
    msgs: Vec<SMsg>,
    /// The message count the client was last told (EXISTS, less the
    /// EXPUNGEs sent since).
    known: usize,
    /// The store's record of messages expunged elsewhere that the client
    /// has not been told of yet (by UID): FETCH still answers for them.
    gone: Vec<Msg>,
}

impl Selected {
    /// The stored message behind a sequence entry, also one expunged
    /// elsewhere and not announced yet.
    fn msg_of(&self, uid: u32) -> Option<&Msg> {
        self.view.by_uid(uid).or_else(|| self.gone.binary_search_by_key(&uid, |m| m.uid).ok().map(|i| &self.gone[i]))
    }

    fn max_uid(&self) -> u32 {
        self.msgs.last().map_or(0, |m| m.uid)
    }

    fn index_of_uid(&self, uid: u32) -> Option<usize> {
        self.msgs.binary_search_by_key(&uid, |m| m.uid).ok()
    }

    /// Indexes of the messages a sequence set names, ascending. Sequence
    /// numbers: `*` is the last message (RFC 3501 9 seq-number); UIDs:
    /// `*` is the largest UID, and `n:*` names it even when n is larger
    /// (RFC 3501 6.4.8).
    fn resolve(&self, set: &SequenceSet, uid: bool) -> Result<Vec<usize>, &'static str> {
        let n = self.msgs.len();
        let mut out = Vec::new();
        for &(a, b) in &set.0 {
            if uid {
                let last = self.max_uid();
                let v = |s: SeqNum| match s {
                    SeqNum::Number(x) => x,
                    SeqNum::Last => last,
                };
                let (lo, hi) = (v(a).min(v(b)), v(a).max(v(b)));
                let start = self.msgs.partition_point(|m| m.uid < lo);
                let end = self.msgs.partition_point(|m| m.uid <= hi);
                out.extend(start..end);
            } else {
                let v = |s: SeqNum| match s {
                    SeqNum::Number(x) => x as usize,
                    SeqNum::Last => n,
                };
                let (lo, hi) = (v(a).min(v(b)), v(a).max(v(b)));
                // RFC 3501 9: a sequence number past the last message is
                // invalid (RFC 9051 6.4: BAD); `*` in an empty folder too.
                if lo == 0 || hi > n {
                    return Err("no such message sequence number");
                }
                out.extend(lo - 1..hi);
            }
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }
}

/// A command's outcome: the tagged response's status and text.
enum Done {
    Ok(String),
    No(String),
    Bad(String),
    /// The tagged response was sent already (STARTTLS).
    Sent,
}

fn ok(s: impl Into<String>) -> Done {
    Done::Ok(s.into())
}
fn no(s: impl Into<String>) -> Done {
    Done::No(s.into())
}
fn bad(s: impl Into<String>) -> Done {
    Done::Bad(s.into())
}

/// What reading the next command gave.
enum Frame {
    Command(Vec<u8>),
    /// An APPEND up to its message literal (read by `append`).
    Append(Vec<u8>),
    /// Refused while reading: the response to send, and whether to close.
    Refused(Vec<u8>, bool),
    Input(Input),
}

pub struct Session {
    shared: Arc<Shared>,
    core: Core,
    peer: SocketAddr,
    state: State,
    auth_failures: u32,
    /// ENABLE CONDSTORE (or a command that uses it, RFC 7162 3.1).
    condstore: bool,
    /// ENABLE QRESYNC (RFC 7162 3.2.3).
    qresync: bool,
}

/// The literal announced at the end of a line: (length, non-synchronizing).
/// RFC 3501 9 literal `{n}`, RFC 7888 `{n+}`, RFC 3516 literal8 `~{n}`.
fn literal_at_end(line: &[u8]) -> Option<(u64, bool)> {
    let inner = line.strip_suffix(b"}")?;
    let open = inner.iter().rposition(|&b| b == b'{')?;
    let mut digits = &inner[open + 1..];
    let non_sync = digits.last() == Some(&b'+');
    if non_sync {
        digits = &digits[..digits.len() - 1];
    }
    if digits.is_empty() || digits.len() > 12 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some((std::str::from_utf8(digits).ok()?.parse().ok()?, non_sync))
}

/// The tag at the start of a command, for a response to a command that
/// could not be read whole.
fn tag_of(buf: &[u8]) -> String {
    let t: Vec<u8> = buf.iter().take_while(|&&b| b > b' ' && b < 0x7f && !matches!(b, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\' | b'+')).take(proto::imap::parse::MAX_TAG).copied().collect();
    if t.is_empty() {
        "*".into()
    } else {
        String::from_utf8_lossy(&t).into_owned()
    }
}

fn is_append(buf: &[u8]) -> bool {
    let mut it = buf.splitn(3, |&b| b == b' ');
    it.next();
    it.next().is_some_and(|w| w.eq_ignore_ascii_case(b"APPEND"))
}

/// A mailbox name as sent (modified UTF-7 is ASCII, RFC 3501 5.1.3).
fn mailbox_name(raw: &[u8]) -> Result<String, Done> {
    String::from_utf8(raw.to_vec()).map_err(|_| bad("mailbox name is not valid UTF-8"))
}

/// Flags of STORE and APPEND: the system flags, `$Forwarded` and keywords.
fn to_flags(flags: &[Flag]) -> Result<(Flags, Vec<String>), Done> {
    let mut f = Flags::default();
    let mut kw: Vec<String> = Vec::new();
    for fl in flags {
        f = f.union(match fl {
            Flag::Seen => Flags::SEEN,
            Flag::Answered => Flags::ANSWERED,
            Flag::Flagged => Flags::FLAGGED,
            Flag::Deleted => Flags::DELETED,
            Flag::Draft => Flags::DRAFT,
            Flag::Keyword(k) if k.eq_ignore_ascii_case("$Forwarded") => Flags::FORWARDED,
            Flag::Keyword(k) => {
                if k.len() > store::imap::MAX_KEYWORD_LEN {
                    return Err(bad("keyword too long"));
                }
                if !kw.iter().any(|x| x.eq_ignore_ascii_case(k)) {
                    kw.push(k.clone());
                }
                Flags::default()
            }
            // RFC 3501 2.3.2: \Recent cannot be set by a client.
            Flag::Extension(e) if e.eq_ignore_ascii_case("\\Recent") => Flags::default(),
            Flag::Extension(_) => return Err(bad("unknown system flag")),
        });
    }
    Ok((f, kw))
}

/// RFC 5258 / RFC 3501 6.3.8 mailbox patterns: `*` matches anything, `%`
/// anything but the delimiter.
fn pattern_match(pat: &[u8], name: &[u8]) -> bool {
    match pat.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => (0..=name.len()).any(|i| pattern_match(rest, &name[i..])),
        Some((b'%', rest)) => {
            let mut i = 0;
            loop {
                if pattern_match(rest, &name[i..]) {
                    return true;
                }
                if i >= name.len() || name[i] == b'/' {
                    return false;
                }
                i += 1;
            }
        }
        Some((c, rest)) => name.first() == Some(c) && pattern_match(rest, &name[1..]),
    }
}

/// The largest pattern or name LIST compares (bounds the backtracking of
/// `pattern_match`: names are at most `store::imap::MAX_FOLDER_NAME`).
const MAX_PATTERN: usize = 1024;
/// Wildcards in one pattern.
const MAX_WILDCARDS: usize = 8;

impl Session {
    pub fn new(shared: Arc<Shared>, conn: crate::conn::Conn, peer: SocketAddr) -> Session {
        Session { shared, core: Core::new(conn, peer), peer, state: State::NotAuthenticated, auth_failures: 0, condstore: false, qresync: false }
    }

    fn plaintext_ok(&self) -> bool {
        self.core.tls() || self.shared.config.allow_plaintext_auth
    }

    fn who(&self) -> (String, String) {
        (self.shared.config.node.clone(), self.shared.instance.clone())
    }

    /// The capability list for the current state (RFC 3501 7.2.1). Every
    /// name here is implemented as its RFC says.
    fn capabilities(&self) -> String {
        let mut s = String::from("IMAP4rev1 SASL-IR LITERAL+ ID ENABLE IDLE");
        match self.state {
            State::NotAuthenticated => {
                if !self.core.tls() {
                    s.push_str(" STARTTLS");
                }
                if self.plaintext_ok() {
                    s.push_str(" AUTH=PLAIN");
                } else {
                    // RFC 3501 6.2.3, 7.2.1: LOGIN is refused until TLS.
                    s.push_str(" LOGINDISABLED");
                }
            }
            _ => s.push_str(" NAMESPACE UNSELECT UIDPLUS MOVE CHILDREN SPECIAL-USE LIST-EXTENDED LIST-STATUS CONDSTORE QRESYNC"),
        }
        s
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), ConnError> {
        self.core.send(bytes).await
    }

    async fn untagged(&mut self, text: &str) -> Result<(), ConnError> {
        self.core.send(format!("* {text}\r\n").as_bytes()).await
    }

    pub async fn run(mut self) {
        // RFC 3501 7.1.1: the greeting, with the capabilities (RFC 3501
        // 7.1 CAPABILITY response code) so clients need not ask.
        let greeting = format!("* OK [CAPABILITY {}] mailfort IMAP ready\r\n", self.capabilities());
        if self.send(greeting.as_bytes()).await.is_err() {
            return;
        }
        loop {
            let frame = self.read_frame().await;
            let flow = match frame {
                Frame::Command(buf) => self.dispatch(&buf, false).await,
                Frame::Append(buf) => self.dispatch(&buf, true).await,
                Frame::Refused(resp, close) => match self.send(&resp).await {
                    Ok(()) if !close => {
                        if self.core.bad_command() {
                            let _ = self.untagged("BYE too many errors").await;
                            break;
                        }
                        Ok(Flow::Continue)
                    }
                    _ => break,
                },
                Frame::Input(Input::TooLong) => {
                    let _ = self.untagged("BYE [LIMIT] command line too long").await;
                    break;
                }
                Frame::Input(Input::Shutdown) => {
                    // RFC 3501 7.1.5
                    let _ = self.untagged("BYE [UNAVAILABLE] server shutting down").await;
                    break;
                }
                Frame::Input(Input::Timeout) => {
                    // RFC 3501 5.4: the autologout timer.
                    let _ = self.untagged("BYE autologout; idle for too long").await;
                    break;
                }
                Frame::Input(Input::Line(_)) | Frame::Input(Input::Gone(_)) => break,
            };
            match flow {
                Ok(Flow::Continue) => {}
                Ok(Flow::Close) | Err(_) => break,
            }
        }
        self.core.close().await;
    }

    fn idle_limit(&self) -> Duration {
        match self.state {
            State::NotAuthenticated => NOT_AUTHENTICATED_IDLE,
            _ => self.shared.config.limits.imap_idle(),
        }
    }

    /// Reads one command with its literals (RFC 3501 2.2, 4.3; RFC 7888),
    /// bounded by the limits above; a synchronizing literal is asked for
    /// with a continuation (RFC 3501 7.5) only once it is known to fit.
    async fn read_frame(&mut self) -> Frame {
        let deadline = self.idle_limit();
        let mut buf = Vec::new();
        let mut literals = 0;
        loop {
            let line = match self.core.read_command(MAX_LINE, deadline).await {
                Input::Line(l) => l,
                other => return Frame::Input(other),
            };
            buf.extend_from_slice(&line);
            let Some((n, non_sync)) = literal_at_end(&line) else {
                return Frame::Command(buf);
            };
            if is_append(&buf) {
                if let Ok(Tagged { command: Command::Append { .. }, .. }) = parse_command(&buf) {
                    return Frame::Append(buf);
                }
            }
            literals += 1;
            let tag = tag_of(&buf);
            if n as usize > MAX_INLINE_LITERAL || literals > MAX_LITERALS || buf.len() + n as usize > MAX_COMMAND {
                // RFC 7888 4: a non-synchronizing literal that is too big
                // is refused with BAD [TOOBIG]; its data is on its way and
                // cannot be told from commands, so the connection closes.
                // A synchronizing one is refused before it is sent.
                let resp = format!("{tag} BAD [TOOBIG] literal too large\r\n");
                return Frame::Refused(resp.into_bytes(), non_sync);
            }
            if !non_sync {
                // RFC 3501 7.5: the command continuation request.
                if self.send(b"+ Ready for literal data\r\n").await.is_err() {
                    return Frame::Input(Input::Gone(ConnError::Closed));
                }
            }
            buf.extend_from_slice(b"\r\n");
            let n = n as usize;
            let data_deadline = tokio::time::Instant::now() + self.shared.config.limits.data_timeout();
            let conn = match self.core.conn() {
                Ok(c) => c,
                Err(e) => return Frame::Input(Input::Gone(e)),
            };
            while conn.buffered().len() < n {
                match conn.read_more(data_deadline).await {
                    Ok(_) => {}
                    Err(ConnError::Timeout) => return Frame::Input(Input::Timeout),
                    Err(e) => return Frame::Input(Input::Gone(e)),
                }
            }
            buf.extend_from_slice(&conn.buffered()[..n]);
            conn.consume(n);
        }
    }

    async fn dispatch(&mut self, buf: &[u8], append: bool) -> Result<Flow, ConnError> {
        let Tagged { tag, command } = match parse_command(buf) {
            Ok(t) => t,
            Err(ParseError { tag, reason }) => {
                let cut = self.core.bad_command();
                let tag = tag.unwrap_or_else(|| "*".into());
                self.send(format!("{tag} BAD {reason}\r\n").as_bytes()).await?;
                if append {
                    // The message literal is on its way: it cannot be told
                    // from commands.
                    self.untagged("BYE cannot read that APPEND").await?;
                    return Ok(Flow::Close);
                }
                if cut {
                    self.untagged("BYE too many errors").await?;
                    return Ok(Flow::Close);
                }
                return Ok(Flow::Continue);
            }
        };
        // Before login every command but LOGOUT counts as junk: a client
        // cannot hold a slot by chatting without logging in.
        if matches!(self.state, State::NotAuthenticated) && !matches!(command, Command::Logout) && self.core.junk_command() {
            self.untagged("BYE too many commands without login").await?;
            return Ok(Flow::Close);
        }
        let (done, flow) = self.command(&tag, command).await?;
        let line = match done {
            Done::Ok(t) => format!("{tag} OK {t}\r\n"),
            Done::No(t) => format!("{tag} NO {t}\r\n"),
            Done::Sent => return Ok(flow),
            Done::Bad(t) => {
                if self.core.bad_command() {
                    self.send(format!("{tag} BAD {t}\r\n").as_bytes()).await?;
                    self.untagged("BYE too many errors").await?;
                    return Ok(Flow::Close);
                }
                format!("{tag} BAD {t}\r\n")
            }
        };
        self.send(line.as_bytes()).await?;
        Ok(flow)
    }

    async fn command(&mut self, tag: &str, command: Command) -> Result<(Done, Flow), ConnError> {
        let c = Flow::Continue;
        // Any state (RFC 3501 6.1).
        match command {
            Command::Capability => {
                let caps = self.capabilities();
                self.untagged(&format!("CAPABILITY {caps}")).await?;
                return Ok((ok("CAPABILITY completed"), c));
            }
            Command::Noop => {
                self.sync(true).await?;
                return Ok((ok("NOOP completed"), c));
            }
            Command::Logout => {
                // RFC 3501 6.1.3
                self.untagged("BYE logging out").await?;
                return Ok((ok("LOGOUT completed"), Flow::Close));
            }
            Command::Id(_) => {
                // RFC 2971 3.2: the server's identification.
                self.untagged(&format!("ID (\"name\" \"mailfort\" \"version\" \"{}\")", env!("CARGO_PKG_VERSION"))).await?;
                return Ok((ok("ID completed"), c));
            }
            _ => {}
        }
        if matches!(self.state, State::NotAuthenticated) {
            return self.not_authenticated(tag, command).await;
        }
        match command {
            Command::StartTls | Command::Login { .. } | Command::Authenticate { .. } => {
                // RFC 3501 6.2: only before login.
                Ok((bad("already authenticated"), c))
            }
            Command::Enable(caps) => {
                let mut enabled = Vec::new();
                for cap in caps {
                    // RFC 5161 3.1: capabilities not known are ignored.
                    match cap.to_ascii_uppercase().as_str() {
                        "CONDSTORE" if !self.condstore => {
                            self.condstore = true;
                            enabled.push("CONDSTORE");
                        }
                        // RFC 7162 3.2.3: QRESYNC implies CONDSTORE.
                        "QRESYNC" if !self.qresync => {
                            self.qresync = true;
                            self.condstore = true;
                            enabled.push("QRESYNC");
                        }
                        _ => {}
                    }
                }
                self.untagged(&format!("ENABLED{}", enabled.iter().map(|e| format!(" {e}")).collect::<String>())).await?;
                Ok((ok("ENABLE completed"), c))
            }
            Command::Select { mailbox, params } => Ok((self.select(&mailbox, params, false).await?, c)),
            Command::Examine { mailbox, params } => Ok((self.select(&mailbox, params, true).await?, c)),
            Command::Create { mailbox, special_use } => Ok((self.create(&mailbox, &special_use).await, c)),
            Command::Delete(mailbox) => Ok((self.delete(&mailbox).await, c)),
            Command::Rename { from, to } => Ok((self.rename(&from, &to).await, c)),
            Command::Subscribe(m) => Ok((self.subscribe(&m, true).await, c)),
            Command::Unsubscribe(m) => Ok((self.subscribe(&m, false).await, c)),
            Command::List { select, reference, patterns, ret } => Ok((self.list(select, &reference, &patterns, ret, false).await?, c)),
            Command::Lsub { reference, pattern } => {
                let select = ListSelect { subscribed: true, ..ListSelect::default() };
                Ok((self.list(select, &reference, std::slice::from_ref(&pattern), ListReturn::default(), true).await?, c))
            }
            Command::Namespace => {
                // RFC 2342 5: one personal namespace, no prefix.
                self.untagged("NAMESPACE ((\"\" \"/\")) NIL NIL").await?;
                Ok((ok("NAMESPACE completed"), c))
            }
            Command::Status { mailbox, items } => Ok((self.status(&mailbox, &items).await?, c)),
            Command::Append { mailbox, head } => self.append(tag, &mailbox, head).await,
            Command::Idle => self.idle().await,
            command => {
                if !matches!(self.state, State::Selected(..)) {
                    return Ok((bad("no mailbox selected"), c));
                }
                self.selected(command).await
            }
        }
    }

    // -----------------------------------------------------------------------
    // Not authenticated (RFC 3501 6.2)

    async fn not_authenticated(&mut self, tag: &str, command: Command) -> Result<(Done, Flow), ConnError> {
        let c = Flow::Continue;
        match command {
            Command::StartTls => {
                if self.core.tls() {
                    return Ok((bad("TLS is already active"), c));
                }
                // RFC 3501 6.2.1: the tagged OK, then the handshake.
                self.send(format!("{tag} OK begin TLS negotiation now\r\n").as_bytes()).await?;
                let acceptor = self.shared.tls.clone();
                if self.core.start_tls(&acceptor).await.is_err() {
                    return Err(ConnError::Closed);
                }
                // RFC 3501 6.2.1: forget what was learnt before; the client
                // asks for CAPABILITY again.
                self.condstore = false;
                self.qresync = false;
                return Ok((Done::Sent, c));
            }
            Command::Login { user, password } => {
                if !self.plaintext_ok() {
                    // RFC 3501 6.2.3 (LOGINDISABLED); RFC 5530 3.
                    return Ok((no("[PRIVACYREQUIRED] LOGIN is disabled before STARTTLS"), c));
                }
                let (Ok(u), Ok(p)) = (String::from_utf8(user), String::from_utf8(password)) else {
                    return self.login_failed(no("[AUTHENTICATIONFAILED] authentication failed")).await;
                };
                self.login(&u, &p).await
            }
            Command::Authenticate { mechanism, initial } => {
                if !mechanism.eq_ignore_ascii_case("PLAIN") {
                    // RFC 3501 6.2.2
                    return Ok((no("unsupported authentication mechanism"), c));
                }
                if !self.plaintext_ok() {
                    return Ok((no("[PRIVACYREQUIRED] PLAIN is disabled before STARTTLS"), c));
                }
                let idle = self.idle_limit();
                // RFC 4959 3: an initial response ("=" for an empty one).
                let initial = initial.map(|i| String::from_utf8_lossy(&i).into_owned());
                let sasl = self.core.sasl_response(initial.as_deref(), b"+ \r\n", idle).await;
                let response = match sasl {
                    Ok(Sasl::Response(r)) => r,
                    // RFC 3501 6.2.2: "*" cancels, with a tagged BAD.
                    Ok(Sasl::Cancelled) => return Ok((bad("authentication canceled"), c)),
                    Ok(Sasl::Undecodable) => return Ok((bad("cannot decode the response"), c)),
                    Err(ConnError::LineTooLong(_)) => return Ok((bad("response too long"), Flow::Close)),
                    Err(e) => return Err(e),
                };
                let (u, p) = plain_credentials(&response);
                self.login(&u, &p).await
            }
            // A non-synchronizing APPEND literal is on its way and cannot
            // be told from commands: refuse and close (RFC 7888 4).
            Command::Append { head, .. } if head.non_sync => Ok((bad("log in first"), Flow::Close)),
            _ => Ok((bad("log in first"), c)),
        }
    }

    async fn login_failed(&mut self, done: Done) -> Result<(Done, Flow), ConnError> {
        self.auth_failures += 1;
        if self.auth_failures >= self.shared.config.limits.max_auth_failures {
            // RFC 3501 7.1.5: BYE before the server closes.
            self.untagged("BYE too many failed logins").await?;
            return Ok((done, Flow::Close));
        }
        Ok((done, Flow::Continue))
    }

    async fn login(&mut self, login: &str, password: &str) -> Result<(Done, Flow), ConnError> {
        if !self.shared.store_healthy() {
            return Ok((no("[UNAVAILABLE] mail store unavailable, try again later"), Flow::Continue));
        }
        let user = match self.shared.auth.check(login, password, self.peer.ip()).await {
            AuthOutcome::Accepted(u) => u,
            // RFC 5530 3: AUTHENTICATIONFAILED, UNAVAILABLE.
            AuthOutcome::Rejected => return self.login_failed(no("[AUTHENTICATIONFAILED] authentication failed")).await,
            // Not the client's fault (too many logins at once, the store
            // slow): not counted against the session.
            AuthOutcome::TryLater(why) => return Ok((no(format!("[UNAVAILABLE] {why}")), Flow::Continue)),
        };
        let store = self.shared.store.clone();
        let u = user.clone();
        match store::blocking::call(store::blocking::STORE_CALL_DEADLINE, move || store.imap_prepare(&u)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(user = %user, error = %e, "cannot prepare the IMAP folders");
                return Ok((no("[UNAVAILABLE] cannot open the mailbox, try again later"), Flow::Continue));
            }
            Err(e) => {
                tracing::error!(user = %user, error = %e, "the store did not prepare the IMAP folders in time");
                return Ok((no("[UNAVAILABLE] cannot open the mailbox, try again later"), Flow::Continue));
            }
        }
        tracing::info!(peer = %self.peer, user = %user, "IMAP login");
        self.state = State::Authenticated(user);
        self.core.useful();
        // RFC 3501 7.1: the capabilities change with the login.
        Ok((ok(format!("[CAPABILITY {}] logged in", self.capabilities())), Flow::Continue))
    }

    fn user(&self) -> Option<&Address> {
        match &self.state {
            State::Authenticated(u) | State::Selected(u, _) => Some(u),
            State::NotAuthenticated => None,
        }
    }

    /// Runs a store call on the blocking pool with the store's deadline.
    /// (The future holds no reference to the session, which is not Sync.)
    fn store_call<T: Send + 'static>(&self, f: impl FnOnce(&Store, &Address, Claimant<'_>) -> Result<T, ImapError> + Send + 'static) -> impl std::future::Future<Output = Result<T, ImapError>> + Send + 'static {
        let store = self.shared.store.clone();
        let user = self.user().cloned();
        let (node, instance) = self.who();
        async move {
            let user = user.ok_or(ImapError::NoFolder)?;
            match store::blocking::call(store::blocking::STORE_CALL_DEADLINE, move || f(&store, &user, Claimant { node: &node, instance: &instance })).await {
                Ok(r) => r,
                Err(e) => Err(ImapError::Store(store::StoreError::Unanswered(e))),
            }
        }
    }

    /// A stored message's bytes (`None` once it is gone).
    fn read_message(&self, folder: String, m: Msg) -> impl std::future::Future<Output = Result<Option<Vec<u8>>, ImapError>> + Send + 'static {
        self.store_call(move |s, u, _| {
            use std::io::Read;
            match s.imap_open(FolderRef { addr: u, name: &folder }, &m)? {
                Some(mut f) => {
                    let mut v = Vec::with_capacity(m.size.min(MAX_PREALLOC) as usize);
                    f.read_to_end(&mut v).map_err(|e| ImapError::Store(store::StoreError::Io { path: std::path::PathBuf::from(&m.file), source: e }))?;
                    Ok(Some(v))
                }
                None => Ok(None),
            }
        })
    }

    fn poke(&self, folder: &str) {
        if let Some(u) = self.user() {
            if let Ok(name) = store::imap::normalize_name(folder) {
                self.shared.imap_watchers.poke(u, &name);
            }
        }
    }

    // -----------------------------------------------------------------------
    // Authenticated (RFC 3501 6.3)

    async fn select(&mut self, mailbox: &[u8], params: SelectParams, read_only: bool) -> Result<Done, ConnError> {
        let name = match mailbox_name(mailbox) {
            Ok(n) => n,
            Err(d) => return Ok(d),
        };
        // RFC 3501 6.3.1: a SELECT deselects first, even if it fails; RFC
        // 7162 3.2.11: with QRESYNC the client is told with [CLOSED].
        if matches!(self.state, State::Selected(..)) {
            if let State::Selected(u, _) = std::mem::replace(&mut self.state, State::NotAuthenticated) {
                self.state = State::Authenticated(u);
            }
            if self.qresync {
                self.untagged("OK [CLOSED] previous mailbox closed").await?;
            }
        }
        if params.qresync.is_some() && !self.qresync {
            // RFC 7162 3.2.5: QRESYNC must be enabled first.
            return Ok(bad("QRESYNC is not enabled"));
        }
        if params.condstore {
            self.condstore = true;
        }
        let norm = match store::imap::normalize_name(&name) {
            Ok(n) => n,
            Err(e) => return Ok(no(e.to_string())),
        };
        let n2 = norm.clone();
        let view = match self.store_call(move |s, u, who| s.imap_sync(FolderRef { addr: u, name: &n2 }, who, SyncMode { claim_new: !read_only }, None)).await {
            Ok(Some(v)) => v,
            Ok(None) => return Ok(no("[UNAVAILABLE] cannot read the mailbox")),
            Err(ImapError::NoFolder) | Err(ImapError::BadName(_)) => return Ok(no("[NONEXISTENT] no such mailbox")),
            Err(e) => return Ok(self.store_failure(e)),
        };
        let msgs: Vec<SMsg> = view.msgs.iter().map(|m| SMsg::of(m, view.claimed.binary_search(&m.uid).is_ok())).collect();
        let mut out = String::new();
        // RFC 3501 6.3.1: the required untagged responses.
        let _ = write!(out, "* FLAGS {}\r\n", respond::folder_flags(&view));
        let perm = if read_only {
            "()".to_string()
        } else {
            let f = respond::folder_flags(&view);
            let f = &f[..f.len() - 1];
            if view.keywords_full {
                format!("{f})")
            } else {
                format!("{f} \\*)")
            }
        };
        let _ = write!(out, "* OK [PERMANENTFLAGS {perm}] flags permitted\r\n");
        let _ = write!(out, "* {} EXISTS\r\n", msgs.len());
        let _ = write!(out, "* {} RECENT\r\n", msgs.iter().filter(|m| m.recent).count());
        if let Some(i) = msgs.iter().position(|m| !m.flags.contains(Flags::SEEN)) {
            let _ = write!(out, "* OK [UNSEEN {}] first unseen message\r\n", i + 1);
        }
        let _ = write!(out, "* OK [UIDVALIDITY {}] UIDs valid\r\n", view.uidvalidity);
        let _ = write!(out, "* OK [UIDNEXT {}] predicted next UID\r\n", view.uidnext);
        // RFC 7162 3.1.2.1: HIGHESTMODSEQ on every successful SELECT of a
        // server that offers CONDSTORE.
        let _ = write!(out, "* OK [HIGHESTMODSEQ {}] highest modseq\r\n", view.highestmodseq);
        self.send(out.as_bytes()).await?;
        let known = msgs.len();
        let mut sel = Selected { name: norm, read_only, view, msgs, known, gone: Vec::new() };
        if let Some(q) = params.qresync {
            if q.uid_validity == sel.view.uidvalidity {
                self.qresync_report(&mut sel, q.mod_seq, q.known_uids.as_ref()).await?;
            }
        }
        let user = match std::mem::replace(&mut self.state, State::NotAuthenticated) {
            State::Authenticated(u) | State::Selected(u, _) => u,
            State::NotAuthenticated => return Ok(bad("log in first")),
        };
        self.state = State::Selected(user, Box::new(sel));
        Ok(ok(if read_only { "[READ-ONLY] EXAMINE completed" } else { "[READ-WRITE] SELECT completed" }))
    }

    /// RFC 7162 3.2.5.2: what changed since `modseq`: VANISHED (EARLIER)
    /// for expunged UIDs, then FETCH for changed messages.
    async fn qresync_report(&mut self, sel: &mut Selected, modseq: u64, known: Option<&SequenceSet>) -> Result<(), ConnError> {
        let name = sel.name.clone();
        // Unreadable history: as if it did not reach back.
        let (ranges, complete) = self.store_call(move |s, u, _| s.imap_vanished(FolderRef { addr: u, name: &name }, modseq)).await.unwrap_or((Vec::new(), false));
        let mut gone: Vec<u32> = Vec::new();
        let known_has = |uid: u32| known.map_or(true, |k| k.0.iter().any(|&(a, b)| {
            let v = |s: SeqNum| match s {
                SeqNum::Number(x) => x,
                SeqNum::Last => u32::MAX,
            };
            (v(a).min(v(b))..=v(a).max(v(b))).contains(&uid)
        }));
        if complete {
            for (a, b) in ranges {
                for u in a..=b.min(a.saturating_add(1_000_000)) {
                    if known_has(u) {
                        gone.push(u);
                    }
                }
            }
        } else if let Some(k) = known {
            // The history does not reach back: every known UID not here.
            for &(a, b) in &k.0 {
                let v = |s: SeqNum| match s {
                    SeqNum::Number(x) => x,
                    SeqNum::Last => sel.view.uidnext.saturating_sub(1),
                };
                for u in v(a).min(v(b))..=v(a).max(v(b)).min(sel.view.uidnext) {
                    if sel.index_of_uid(u).is_none() {
                        gone.push(u);
                    }
                    if gone.len() > 1_000_000 {
                        break;
                    }
                }
            }
        }
        if !gone.is_empty() {
            self.untagged(&format!("VANISHED (EARLIER) {}", respond::sequence_set(&gone))).await?;
        }
        let mut out = Vec::new();
        for (i, m) in sel.msgs.iter().enumerate() {
            if m.modseq > modseq {
                let _ = write!(Out(&mut out), "* {} FETCH (UID {} FLAGS ", i + 1, m.uid);
                respond::flags(&mut out, m.flags, &sel.view, m.recent);
                let _ = write!(Out(&mut out), " MODSEQ ({}))\r\n", m.modseq);
                if out.len() > FETCH_PIECE {
                    self.send(&out).await?;
                    out.clear();
                }
            }
        }
        self.send(&out).await
    }

    fn store_failure(&self, e: ImapError) -> Done {
        match e {
            ImapError::NoFolder => no("[NONEXISTENT] no such mailbox"),
            ImapError::Exists => no("[ALREADYEXISTS] mailbox already exists"),
            ImapError::BadName(why) => no(format!("[CANNOT] {why}")),
            ImapError::Protected(_) | ImapError::HasChildren => no(format!("[CANNOT] {e}")),
            ImapError::TooManyFolders | ImapError::TooManyKeywords => no(format!("[LIMIT] {e}")),
            ImapError::Busy => no("[INUSE] mailbox busy, try again"),
            ImapError::Unavailable(why) => {
                tracing::error!(reason = %why, "an IMAP folder record cannot be read");
                // Never a new UIDVALIDITY: the folder waits for repair.
                no("[UNAVAILABLE] mailbox unavailable")
            }
            ImapError::Store(e) => {
                tracing::error!(error = %e, "IMAP store error");
                no("[UNAVAILABLE] mail store error, try again later")
            }
        }
    }

    async fn create(&mut self, mailbox: &[u8], special_use: &[String]) -> Done {
        let name = match mailbox_name(mailbox) {
            Ok(n) => n,
            Err(d) => return d,
        };
        // RFC 3501 6.3.3: a trailing delimiter only says the name will
        // have children.
        let name = name.trim_end_matches('/').to_string();
        if special_use.len() > 1 {
            return no("[USEATTR] one special-use attribute per mailbox");
        }
        let use_ = special_use.first().map(|u| {
            let mut c = u.chars();
            match c.next() {
                Some('\\') => {
                    let rest: String = c.collect();
                    store::imap::SPECIAL_USES.iter().find(|s| s[1..].eq_ignore_ascii_case(&rest)).map(|s| s.to_string())
                }
                _ => None,
            }
        });
        if let Some(None) = use_ {
            // RFC 6154 3: USEATTR for an attribute the server does not take.
            return no("[USEATTR] unknown special-use attribute");
        }
        let use_ = use_.flatten();
        match self.store_call(move |s, u, _| s.imap_create(u, &name, use_.as_deref())).await {
            Ok(()) => ok("CREATE completed"),
            Err(e) => self.store_failure(e),
        }
    }

    async fn delete(&mut self, mailbox: &[u8]) -> Done {
        let name = match mailbox_name(mailbox) {
            Ok(n) => n,
            Err(d) => return d,
        };
        let n2 = name.clone();
        match self.store_call(move |s, u, _| s.imap_delete(u, &n2)).await {
            Ok(()) => {
                self.poke(&name);
                ok("DELETE completed")
            }
            Err(e) => self.store_failure(e),
        }
    }

    async fn rename(&mut self, from: &[u8], to: &[u8]) -> Done {
        let (from, to) = match (mailbox_name(from), mailbox_name(to)) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(d), _) | (_, Err(d)) => return d,
        };
        let f2 = from.clone();
        match self.store_call(move |s, u, who| s.imap_rename(u, &f2, &to, who)).await {
            Ok(()) => {
                self.poke(&from);
                ok("RENAME completed")
            }
            Err(e) => self.store_failure(e),
        }
    }

    async fn subscribe(&mut self, mailbox: &[u8], on: bool) -> Done {
        let name = match mailbox_name(mailbox) {
            Ok(n) => n,
            Err(d) => return d,
        };
        match self.store_call(move |s, u, _| s.imap_subscribe(u, &name, on)).await {
            Ok(()) => ok(if on { "SUBSCRIBE completed" } else { "UNSUBSCRIBE completed" }),
            Err(e) => self.store_failure(e),
        }
    }

    /// LIST (RFC 3501 6.3.8, extended by RFC 5258, RFC 6154 and RFC 5819)
    /// and LSUB (RFC 3501 6.3.9).
    async fn list(&mut self, select: ListSelect, reference: &[u8], patterns: &[Vec<u8>], ret: ListReturn, lsub: bool) -> Result<Done, ConnError> {
        let verb = if lsub { "LSUB" } else { "LIST" };
        if select.recursive_match && !(select.subscribed) {
            // RFC 5258 3.1: RECURSIVEMATCH alone is an error.
            return Ok(bad("RECURSIVEMATCH needs another selection option"));
        }
        // RFC 3501 6.3.8: an empty pattern asks for the delimiter.
        if patterns.len() == 1 && patterns[0].is_empty() && !lsub {
            self.untagged("LIST (\\Noselect) \"/\" \"\"").await?;
            return Ok(ok("LIST completed"));
        }
        let listing = self.store_call(|s, u, _| Ok((s.imap_folders(u)?, s.imap_subscriptions(u)?))).await;
        let (folders, subs) = match listing {
            Ok(v) => v,
            Err(e) => return Ok(self.store_failure(e)),
        };
        let mut full_patterns = Vec::new();
        for p in patterns {
            let mut full = reference.to_vec();
            full.extend_from_slice(p);
            if full.len() > MAX_PATTERN || full.iter().filter(|&&b| b == b'*' || b == b'%').count() > MAX_WILDCARDS {
                return Ok(bad("pattern too complex"));
            }
            // INBOX is case-insensitive (RFC 3501 5.1).
            if full.len() >= 5 && full[..5].eq_ignore_ascii_case(b"INBOX") && (full.len() == 5 || full[5] == b'/') {
                full[..5].copy_from_slice(b"INBOX");
            }
            full_patterns.push(full);
        }
        let matches = |name: &str| full_patterns.iter().any(|p| pattern_match(p, name.as_bytes()));
        let mut names: Vec<(String, Option<String>, bool)> = Vec::new();
        for f in &folders {
            names.push((f.name.clone(), f.special_use.clone(), true));
        }
        // Subscribed names that no longer exist (RFC 5258 3.1 \NonExistent).
        if select.subscribed || lsub {
            for s in &subs {
                if !folders.iter().any(|f| f.name == *s) {
                    names.push((s.clone(), None, false));
                }
            }
        }
        // LSUB: the levels above subscribed names, for RFC 3501 6.3.9's
        // `%` rule below.
        if lsub {
            for s in &subs {
                let mut at = 0;
                while let Some(i) = s[at..].find('/') {
                    let parent = &s[..at + i];
                    if !names.iter().any(|(n, _, _)| n == parent) {
                        names.push((parent.to_string(), None, folders.iter().any(|f| f.name == parent)));
                    }
                    at += i + 1;
                }
            }
        }
        let mut out = Vec::new();
        let mut status_for = Vec::new();
        for (name, use_, exists) in &names {
            let subscribed = subs.iter().any(|s| s == name);
            let prefix = format!("{name}/");
            let has_children = folders.iter().any(|f| f.name.starts_with(&prefix));
            let sub_child = subs.iter().any(|s| s.starts_with(&prefix));
            let listed = matches(name);
            // RFC 5258 3.5: with RECURSIVEMATCH, a parent that is not
            // subscribed is listed with CHILDINFO when a child is.
            let childinfo = select.subscribed && select.recursive_match && !subscribed && sub_child && listed;
            // RFC 3501 6.3.9: when `%` stops above a subscribed name, LSUB
            // lists the unsubscribed level it stopped at, as \Noselect.
            let lsub_parent = lsub && !subscribed && listed && subs.iter().any(|s| s.starts_with(&prefix) && !matches(s));
            if !listed || (select.subscribed || lsub) && !subscribed && !childinfo && !lsub_parent {
                continue;
            }
            if select.special_use && use_.is_none() {
                continue;
            }
            let mut attrs: Vec<&str> = Vec::new();
            if !exists {
                attrs.push(if lsub { "\\Noselect" } else { "\\NonExistent" });
            }
            if lsub_parent {
                attrs.push("\\Noselect");
            }
            if !lsub {
                // CHILDREN (RFC 3348) and LIST-EXTENDED (RFC 5258 4).
                attrs.push(if has_children { "\\HasChildren" } else { "\\HasNoChildren" });
                if subscribed && (ret.subscribed || select.subscribed) {
                    attrs.push("\\Subscribed");
                }
                if let Some(u) = use_ {
                    attrs.push(u.as_str());
                }
            }
            let _ = write!(Out(&mut out), "* {verb} ({}) \"/\" ", attrs.join(" "));
            respond::mailbox(&mut out, name);
            if childinfo && !lsub {
                out.extend_from_slice(b" (\"CHILDINFO\" (\"SUBSCRIBED\"))");
            }
            out.extend_from_slice(b"\r\n");
            if ret.status.is_some() && *exists {
                status_for.push(name.clone());
            }
        }
        self.send(&out).await?;
        if let Some(items) = &ret.status {
            // RFC 5819 2: a STATUS response after the LIST of each
            // selectable mailbox.
            for name in status_for {
                if let Some(line) = self.status_line(&name, items).await {
                    self.send(line.as_bytes()).await?;
                }
            }
        }
        Ok(ok(format!("{verb} completed")))
    }

    async fn status_line(&mut self, name: &str, items: &[StatusItem]) -> Option<String> {
        let n2 = name.to_string();
        // The selected folder as this session knows it (RFC 3501 6.3.10
        // warns against STATUS on it; the answer is still right).
        let view = self.store_call(move |s, u, who| s.imap_sync(FolderRef { addr: u, name: &n2 }, who, SyncMode::default(), None)).await.ok().flatten()?;
        let mut parts = Vec::new();
        for it in items {
            parts.push(match it {
                StatusItem::Messages => format!("MESSAGES {}", view.msgs.len()),
                StatusItem::Recent => format!("RECENT {}", view.msgs.iter().filter(|m| m.in_new()).count()),
                StatusItem::UidNext => format!("UIDNEXT {}", view.uidnext),
                StatusItem::UidValidity => format!("UIDVALIDITY {}", view.uidvalidity),
                StatusItem::Unseen => format!("UNSEEN {}", view.msgs.iter().filter(|m| !m.flags().contains(Flags::SEEN)).count()),
                StatusItem::HighestModSeq => format!("HIGHESTMODSEQ {}", view.highestmodseq),
            });
        }
        let mut out = Vec::new();
        out.extend_from_slice(b"* STATUS ");
        respond::mailbox(&mut out, name);
        let _ = write!(Out(&mut out), " ({})\r\n", parts.join(" "));
        String::from_utf8(out).ok()
    }

    async fn status(&mut self, mailbox: &[u8], items: &[StatusItem]) -> Result<Done, ConnError> {
        let name = match mailbox_name(mailbox) {
            Ok(n) => n,
            Err(d) => return Ok(d),
        };
        let norm = match store::imap::normalize_name(&name) {
            Ok(n) => n,
            Err(_) => return Ok(no("[NONEXISTENT] no such mailbox")),
        };
        if items.contains(&StatusItem::HighestModSeq) {
            self.condstore = true;
        }
        match self.status_line(&norm, items).await {
            Some(line) => {
                self.send(line.as_bytes()).await?;
                Ok(ok("STATUS completed"))
            }
            None => Ok(no("[NONEXISTENT] no such mailbox")),
        }
    }

    /// APPEND (RFC 3501 6.3.11): the message literal is streamed to the
    /// node's spool, fsynced, and linked into the folder under its new UID
    /// (RFC 4315 3 APPENDUID). Its size is checked before it is asked for.
    async fn append(&mut self, _tag: &str, mailbox: &[u8], head: proto::imap::AppendHead) -> Result<(Done, Flow), ConnError> {
        let c = Flow::Continue;
        let max = self.shared.session_limits().max_message_size;
        let length = u64::from(head.length);
        if length > max {
            // RFC 7888 4: a non-synchronizing literal too large cannot be
            // skipped safely: BAD [TOOBIG] and close. RFC 9051 7.1: TOOBIG.
            if head.non_sync {
                return Ok((bad("[TOOBIG] message too large"), Flow::Close));
            }
            return Ok((no(format!("[TOOBIG] messages are limited to {max} octets")), c));
        }
        if head.binary {
            // BINARY (RFC 3516) is not offered: literal8 is refused.
            if head.non_sync {
                return Ok((bad("binary literals are not supported"), Flow::Close));
            }
            return Ok((bad("binary literals are not supported"), c));
        }
        let name = match mailbox_name(mailbox).and_then(|n| store::imap::normalize_name(&n).map_err(|e| no(e.to_string()))) {
            Ok(n) => n,
            Err(d) => return self.append_refused(d, &head).await,
        };
        let (flags, keywords) = match to_flags(&head.flags) {
            Ok(v) => v,
            Err(d) => return self.append_refused(d, &head).await,
        };
        let n2 = name.clone();
        let exists = self.store_call(move |s, u, _| Ok(s.imap_folders(u)?.iter().any(|f| f.name == n2))).await;
        match exists {
            Ok(true) => {}
            // RFC 3501 6.3.11: TRYCREATE when the mailbox does not exist.
            Ok(false) => return self.append_refused(no("[TRYCREATE] no such mailbox"), &head).await,
            Err(e) => return self.append_refused(self.store_failure(e), &head).await,
        }
        if !head.non_sync {
            self.send(b"+ Ready for literal data\r\n").await?;
        }
        let store = self.shared.store.clone();
        let node = self.shared.config.node.clone();
        let spool = match store::blocking::call(store::blocking::STORE_CALL_DEADLINE, move || store.spool(&node)).await {
            Ok(Ok(s)) => s,
            _ => {
                self.discard(length).await?;
                return Ok((no("[UNAVAILABLE] mail store unavailable"), c));
            }
        };
        let mut spool = Some(spool);
        let mut left = length as usize;
        let deadline_step = self.shared.config.limits.data_timeout();
        while left > 0 {
            let conn = self.core.conn()?;
            if conn.buffered().is_empty() {
                match conn.read_more(tokio::time::Instant::now() + deadline_step).await {
                    Ok(_) => {}
                    Err(e) => return Err(e),
                }
            }
            let conn = self.core.conn()?;
            let take = conn.buffered().len().min(left).min(APPEND_CHUNK);
            let piece = conn.buffered()[..take].to_vec();
            conn.consume(take);
            left -= take;
            let mut sp = spool.take().expect("spool held while reading");
            let r = store::blocking::call(store::blocking::STORE_CALL_DEADLINE, move || sp.write_all(&piece).map(|()| sp)).await;
            match r {
                Ok(Ok(sp)) => spool = Some(sp),
                _ => {
                    self.discard(left as u64).await?;
                    let _ = self.core.read_command(MAX_LINE, deadline_step).await;
                    return Ok((no("[UNAVAILABLE] cannot write the message"), c));
                }
            }
        }
        // The rest of the command line: nothing, as MULTIAPPEND is not
        // offered (RFC 3502).
        match self.core.read_command(MAX_LINE, deadline_step).await {
            Input::Line(l) if l.is_empty() => {}
            Input::Line(_) => return Ok((bad("one message per APPEND"), c)),
            Input::TooLong => return Ok((bad("line too long"), Flow::Close)),
            _ => return Err(ConnError::Closed),
        }
        let mut sp = spool.take().expect("spool held after reading");
        let date = head.date.map(|d| d.unix);
        let n2 = name.clone();
        let r = self
            .store_call(move |s, u, who| {
                let path = sp.sync().map_err(|e| ImapError::Store(store::StoreError::Io { path: std::path::PathBuf::new(), source: e }))?.to_path_buf();
                let r = s.imap_append(FolderRef { addr: u, name: &n2 }, who, &path, flags, &keywords, date);
                drop(sp);
                r
            })
            .await;
        match r {
            Ok((uv, uid)) => {
                self.poke(&name);
                self.core.useful();
                self.sync(true).await?;
                Ok((ok(format!("[APPENDUID {uv} {uid}] APPEND completed")), c))
            }
            Err(e) => Ok((self.store_failure(e), c)),
        }
    }

    /// Refuses an APPEND before its literal: a synchronizing literal is
    /// never sent; a non-synchronizing one is read and dropped.
    async fn append_refused(&mut self, d: Done, head: &proto::imap::AppendHead) -> Result<(Done, Flow), ConnError> {
        if head.non_sync {
            self.discard(u64::from(head.length)).await?;
            let _ = self.core.read_command(MAX_LINE, self.shared.config.limits.data_timeout()).await;
        }
        Ok((d, Flow::Continue))
    }

    async fn discard(&mut self, mut n: u64) -> Result<(), ConnError> {
        let step = self.shared.config.limits.data_timeout();
        while n > 0 {
            let conn = self.core.conn()?;
            if conn.buffered().is_empty() {
                conn.read_more(tokio::time::Instant::now() + step).await?;
            }
            let conn = self.core.conn()?;
            let take = (conn.buffered().len() as u64).min(n) as usize;
            conn.consume(take);
            n -= take as u64;
        }
        Ok(())
    }

    /// IDLE (RFC 2177): changes of the selected folder are told as they
    /// happen, through this node's watcher of the folder, until DONE.
    async fn idle(&mut self) -> Result<(Done, Flow), ConnError> {
        self.send(b"+ idling\r\n").await?;
        self.core.conn()?.flush().await?;
        let sub = match &self.state {
            State::Selected(u, sel) => Some(self.shared.imap_watchers.subscribe(&self.shared.store, u, &sel.name)),
            _ => None,
        };
        let mut rx = sub.as_ref().map(|s| s.rx.clone());
        let deadline = tokio::time::Instant::now() + self.shared.config.limits.imap_idle();
        self.sync(true).await?;
        self.core.conn()?.flush().await?;
        loop {
            let conn = self.core.conn()?;
            match find_line(conn.buffered(), MAX_LINE) {
                LineStatus::Complete { content, total } => {
                    let done = is_done(&conn.buffered()[..content]);
                    conn.consume(total);
                    // RFC 2177 3: anything but DONE ends IDLE with BAD.
                    return Ok((if done { ok("IDLE terminated") } else { bad("expected DONE") }, Flow::Continue));
                }
                LineStatus::TooLong => return Ok((bad("line too long"), Flow::Close)),
                LineStatus::Incomplete => {}
            }
            let changed = async {
                match rx.as_mut() {
                    Some(r) => r.changed().await.is_ok(),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = conn.read_more(deadline) => match r {
                    Ok(_) => {}
                    Err(ConnError::Timeout) => {
                        self.untagged("BYE autologout; idle for too long").await?;
                        return Ok((ok("IDLE terminated"), Flow::Close));
                    }
                    Err(ConnError::Shutdown) => {
                        self.untagged("BYE [UNAVAILABLE] server shutting down").await?;
                        return Ok((ok("IDLE terminated"), Flow::Close));
                    }
                    Err(e) => return Err(e),
                },
                alive = changed => {
                    if !alive {
                        rx = None;
                    }
                    self.sync(true).await?;
                    self.core.conn()?.flush().await?;
                }
                _ = tokio::time::sleep(IDLE_RECHECK) => {
                    self.sync(true).await?;
                    self.core.conn()?.flush().await?;
                }
            }
        }
    }

    // -----------------------------------------------------------------------
    // Selected (RFC 3501 6.4)

    fn sel(&mut self) -> Option<&mut Selected> {
        match &mut self.state {
            State::Selected(_, s) => Some(s),
            _ => None,
        }
    }

    /// Looks at the selected folder and tells the client what changed
    /// (RFC 3501 7.3.1 EXISTS, 7.3.2 RECENT, 7.4.1 EXPUNGE or RFC 7162
    /// 3.2.10 VANISHED, 7.4.2 FETCH FLAGS). EXPUNGE only when
    /// `allow_expunge` (RFC 3501 7.4.1: not during FETCH, STORE, SEARCH).
    async fn sync(&mut self, allow_expunge: bool) -> Result<(), ConnError> {
        let Some(sel) = self.sel() else { return Ok(()) };
        let name = sel.name.clone();
        let read_only = sel.read_only;
        let prev = sel.view.clone();
        let r = self.store_call(move |s, u, who| s.imap_sync(FolderRef { addr: u, name: &name }, who, SyncMode { claim_new: !read_only }, Some(&prev))).await;
        let view = match r {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "cannot look at the selected IMAP folder");
                None
            }
        };
        self.apply(view, allow_expunge, &[]).await
    }

    /// Applies a newer view of the folder (if any) and announces changes;
    /// `quiet` UIDs' flag changes are not announced (the command's own
    /// responses tell them).
    async fn apply(&mut self, view: Option<View>, allow_expunge: bool, quiet: &[u32]) -> Result<(), ConnError> {
        let condstore = self.condstore;
        let qresync = self.qresync;
        let Some(sel) = self.sel() else { return Ok(()) };
        let mut out = Vec::new();
        let mut changed_seqs = Vec::new();
        if let Some(view) = view {
            let old_max = sel.max_uid();
            for sm in sel.msgs.iter_mut() {
                match view.by_uid(sm.uid) {
                    None => {
                        if !sm.gone {
                            sm.gone = true;
                            if let Some(m) = sel.view.by_uid(sm.uid) {
                                sel.gone.push(m.clone());
                            }
                        }
                    }
                    Some(m) => {
                        let nf = m.flags();
                        if nf != sm.flags && !quiet.contains(&m.uid) {
                            changed_seqs.push(m.uid);
                        }
                        sm.flags = nf;
                        sm.modseq = m.modseq;
                    }
                }
            }
            sel.gone.sort_by_key(|m| m.uid);
            for m in view.msgs.iter().filter(|m| m.uid > old_max) {
                sel.msgs.push(SMsg::of(m, view.claimed.binary_search(&m.uid).is_ok()));
            }
            sel.view = view;
        }
        if allow_expunge && sel.msgs.iter().any(|m| m.gone) {
            if qresync {
                let gone: Vec<u32> = sel.msgs.iter().filter(|m| m.gone).map(|m| m.uid).collect();
                let _ = write!(Out(&mut out), "* VANISHED {}\r\n", respond::sequence_set(&gone));
            } else {
                for i in (0..sel.msgs.len()).rev() {
                    if sel.msgs[i].gone {
                        let _ = write!(Out(&mut out), "* {} EXPUNGE\r\n", i + 1);
                    }
                }
            }
            let before = sel.msgs.len();
            sel.msgs.retain(|m| !m.gone);
            sel.gone.clear();
            sel.known = sel.known.saturating_sub(before - sel.msgs.len());
        }
        // EXISTS whenever the count the client knows changed.
        let exists = sel.msgs.len();
        if exists != sel.known {
            let _ = write!(Out(&mut out), "* {exists} EXISTS\r\n* {} RECENT\r\n", sel.msgs.iter().filter(|m| m.recent).count());
            sel.known = exists;
        }
        for uid in changed_seqs {
            if let Some(i) = sel.index_of_uid(uid) {
                let sm = &sel.msgs[i];
                let _ = write!(Out(&mut out), "* {} FETCH (UID {} FLAGS ", i + 1, uid);
                respond::flags(&mut out, sm.flags, &sel.view, sm.recent);
                if condstore {
                    let _ = write!(Out(&mut out), " MODSEQ ({})", sm.modseq);
                }
                out.extend_from_slice(b")\r\n");
            }
        }
        if !out.is_empty() {
            self.send(&out).await?;
        }
        Ok(())
    }

    async fn selected(&mut self, command: Command) -> Result<(Done, Flow), ConnError> {
        let c = Flow::Continue;
        match command {
            Command::Check => {
                self.sync(true).await?;
                Ok((ok("CHECK completed"), c))
            }
            Command::Close | Command::Unselect => {
                let is_close = matches!(command, Command::Close);
                if let State::Selected(u, sel) = std::mem::replace(&mut self.state, State::NotAuthenticated) {
                    let name = sel.name.clone();
                    self.state = State::Authenticated(u);
                    if is_close && !sel.read_only {
                        // RFC 3501 6.4.2: CLOSE expunges silently.
                        let n2 = name.clone();
                        let r = self.store_call(move |s, u, who| s.imap_expunge(FolderRef { addr: u, name: &n2 }, who, None)).await;
                        if let Err(e) = r {
                            tracing::warn!(error = %e, "CLOSE could not expunge");
                        } else {
                            self.poke(&name);
                        }
                    }
                }
                Ok((ok(if is_close { "CLOSE completed" } else { "UNSELECT completed" }), c))
            }
            Command::Expunge => self.expunge(None).await,
            Command::UidExpunge(set) => self.expunge(Some(set)).await,
            Command::Fetch { uid, set, attrs, modifiers } => self.fetch(uid, &set, &attrs, modifiers).await,
            Command::Store { uid, set, mode, silent, flags, unchanged_since } => self.store(uid, &set, mode, silent, &flags, unchanged_since).await,
            Command::Search { uid, charset, key, ret } => self.search(uid, charset.as_deref(), &key, ret).await,
            Command::Copy { uid, set, mailbox } => self.copy(uid, &set, &mailbox, false).await,
            Command::Move { uid, set, mailbox } => self.copy(uid, &set, &mailbox, true).await,
            _ => Ok((bad("command not valid in this state"), c)),
        }
    }

    async fn expunge(&mut self, set: Option<SequenceSet>) -> Result<(Done, Flow), ConnError> {
        let c = Flow::Continue;
        let sel = self.sel().expect("selected");
        if sel.read_only {
            return Ok((no("[READ-ONLY] mailbox is read-only"), c));
        }
        let name = sel.name.clone();
        let only: Option<Vec<u32>> = match &set {
            Some(s) => match sel.resolve(s, true) {
                Ok(ix) => Some(ix.into_iter().map(|i| sel.msgs[i].uid).collect()),
                Err(e) => return Ok((bad(e), c)),
            },
            None => None,
        };
        let n2 = name.clone();
        let r = self.store_call(move |s, u, who| s.imap_expunge(FolderRef { addr: u, name: &n2 }, who, only.as_deref())).await;
        match r {
            Ok((view, gone)) => {
                if !gone.is_empty() {
                    self.poke(&name);
                }
                // The record view has no stamp: the next sync looks again.
                self.apply(Some(view), true, &[]).await?;
                Ok((ok(if set.is_some() { "UID EXPUNGE completed" } else { "EXPUNGE completed" }), c))
            }
            Err(e) => Ok((self.store_failure(e), c)),
        }
    }

    async fn fetch(&mut self, uid: bool, set: &SequenceSet, attrs: &[FetchAttr], modifiers: FetchModifiers) -> Result<(Done, Flow), ConnError> {
        let c = Flow::Continue;
        if modifiers.vanished && !(uid && self.qresync) {
            // RFC 7162 3.2.6: VANISHED only in UID FETCH, with QRESYNC.
            return Ok((bad("VANISHED needs UID FETCH and QRESYNC"), c));
        }
        if modifiers.vanished && modifiers.changed_since.is_none() {
            return Ok((bad("VANISHED needs CHANGEDSINCE"), c));
        }
        if modifiers.changed_since.is_some() || attrs.iter().any(|a| matches!(a, FetchAttr::ModSeq)) {
            // RFC 7162 3.1: a CONDSTORE-enabling command.
            self.condstore = true;
        }
        let sel = self.sel().expect("selected");
        let ix = match sel.resolve(set, uid) {
            Ok(ix) => ix,
            Err(e) => return Ok((bad(e), c)),
        };
        if modifiers.vanished {
            let since = modifiers.changed_since.unwrap_or(0);
            let last = sel.max_uid();
            let name = sel.name.clone();
            let ranges = match self.store_call(move |s, u, _| s.imap_vanished(FolderRef { addr: u, name: &name }, since)).await {
                Ok((r, _)) => r,
                Err(e) => return Ok((self.store_failure(e), c)),
            };
            let mut gone = Vec::new();
            for (a, b) in ranges {
                for u in a..=b.min(a.saturating_add(1_000_000)) {
                    if search::set_contains(set, u, last.max(u)) {
                        gone.push(u);
                    }
                }
            }
            if !gone.is_empty() {
                self.untagged(&format!("VANISHED (EARLIER) {}", respond::sequence_set(&gone))).await?;
            }
        }
        let sel = self.sel().expect("selected");
        let ix: Vec<usize> = match modifiers.changed_since {
            Some(since) => ix.into_iter().filter(|&i| sel.msgs[i].modseq > since).collect(),
            None => ix,
        };
        // RFC 3501 6.4.5: body items other than .PEEK set \Seen.
        let mut seen_set = Vec::new();
        if fetch::sets_seen(attrs) && !sel.read_only {
            let uids: Vec<u32> = ix.iter().map(|&i| &sel.msgs[i]).filter(|m| !m.flags.contains(Flags::SEEN) && !m.gone).map(|m| m.uid).collect();
            if !uids.is_empty() {
                let name = sel.name.clone();
                let u2 = uids.clone();
                let r = self.store_call(move |s, u, who| s.imap_store(FolderRef { addr: u, name: &name }, who, &u2, FlagMode::Add, Flags::SEEN, &[], None)).await;
                match r {
                    Ok(out) => {
                        seen_set = out.changed.clone();
                        let name = self.sel().expect("selected").name.clone();
                        self.poke(&name);
                        self.apply(Some(out.view), false, &seen_set).await?;
                    }
                    Err(e) => return Ok((self.store_failure(e), c)),
                }
            }
        }
        let needs = fetch::needs_message(attrs);
        let condstore = self.condstore;
        let mut out = Vec::new();
        let mut missing = false;
        let mut bad_cte = false;
        for i in ix {
            let raw = if needs {
                let sel = self.sel().expect("selected");
                let (name, m) = (sel.name.clone(), sel.msgs.get(i).and_then(|sm| sel.msg_of(sm.uid)).cloned());
                let Some(m) = m else {
                    missing = true;
                    continue;
                };
                match self.read_message(name, m).await {
                    Ok(Some(v)) => Some(v),
                    Ok(None) => {
                        missing = true;
                        continue;
                    }
                    Err(e) => return Ok((self.store_failure(e), c)),
                }
            } else {
                None
            };
            let parsed = raw.as_deref().map(message::parse);
            let sel = self.sel().expect("selected");
            let Some(sm) = sel.msgs.get(i).copied() else { continue };
            let Some(m) = sel.msg_of(sm.uid) else {
                missing = true;
                continue;
            };
            let item = fetch::Item {
                seq: i as u32 + 1,
                msg: m,
                flags: sm.flags,
                recent: sm.recent,
                view: &sel.view,
                parsed: parsed.as_ref(),
                // RFC 7162 3.2.4: once CONDSTORE is on, UID and MODSEQ in
                // every untagged FETCH.
                with_uid: uid || condstore,
                with_modseq: condstore,
                with_flags: seen_set.contains(&sm.uid),
            };
            if fetch::write(&mut out, attrs, &item).is_err() {
                bad_cte = true;
            }
            if out.len() >= FETCH_PIECE {
                self.send(&out).await?;
                out.clear();
            }
        }
        self.send(&out).await?;
        self.sync(false).await?;
        if bad_cte {
            // RFC 3516 4.3
            return Ok((no("[UNKNOWN-CTE] unknown content transfer encoding"), c));
        }
        if missing {
            // RFC 5530 3: some messages were expunged by another session.
            return Ok((no("[EXPUNGEISSUED] some messages were expunged"), c));
        }
        Ok((ok(if uid { "UID FETCH completed" } else { "FETCH completed" }), c))
    }

    #[allow(clippy::too_many_arguments)]
    async fn store(&mut self, uid: bool, set: &SequenceSet, mode: StoreMode, silent: bool, flags: &[Flag], unchanged_since: Option<u64>) -> Result<(Done, Flow), ConnError> {
        let c = Flow::Continue;
        if unchanged_since.is_some() {
            // RFC 7162 3.1: a CONDSTORE-enabling command.
            self.condstore = true;
        }
        let condstore = self.condstore;
        let sel = self.sel().expect("selected");
        if sel.read_only {
            return Ok((no("[READ-ONLY] mailbox is read-only"), c));
        }
        let ix = match sel.resolve(set, uid) {
            Ok(ix) => ix,
            Err(e) => return Ok((bad(e), c)),
        };
        let (fl, kw) = match to_flags(flags) {
            Ok(v) => v,
            Err(d) => return Ok((d, c)),
        };
        let uids: Vec<u32> = ix.iter().map(|&i| sel.msgs[i].uid).collect();
        let name = sel.name.clone();
        let fmode = match mode {
            StoreMode::Replace => FlagMode::Replace,
            StoreMode::Add => FlagMode::Add,
            StoreMode::Remove => FlagMode::Remove,
        };
        let n2 = name.clone();
        let u2 = uids.clone();
        let r = self.store_call(move |s, u, who| s.imap_store(FolderRef { addr: u, name: &n2 }, who, &u2, fmode, fl, &kw, unchanged_since)).await;
        let outcome = match r {
            Ok(o) => o,
            Err(e) => return Ok((self.store_failure(e), c)),
        };
        if !outcome.changed.is_empty() {
            self.poke(&name);
        }
        self.apply(Some(outcome.view), false, &uids).await?;
        // RFC 3501 6.4.6: the new flags of every message named, unless
        // .SILENT; RFC 7162 3.1.3: with MODSEQ when CONDSTORE is on (and
        // even with .SILENT for messages whose flags changed otherwise).
        let mut out = Vec::new();
        let sel = self.sel().expect("selected");
        for &u in &uids {
            if outcome.failed.contains(&u) {
                continue;
            }
            let Some(i) = sel.index_of_uid(u) else { continue };
            let sm = &sel.msgs[i];
            if silent && !(condstore && outcome.changed.contains(&u) && unchanged_since.is_some()) {
                continue;
            }
            let _ = write!(Out(&mut out), "* {} FETCH (", i + 1);
            if uid || condstore {
                let _ = write!(Out(&mut out), "UID {} ", u);
            }
            if !silent {
                out.extend_from_slice(b"FLAGS ");
                respond::flags(&mut out, sm.flags, &sel.view, sm.recent);
            }
            if condstore {
                if !silent {
                    out.push(b' ');
                }
                let _ = write!(Out(&mut out), "MODSEQ ({})", sm.modseq);
            }
            out.extend_from_slice(b")\r\n");
        }
        self.send(&out).await?;
        if !outcome.failed.is_empty() {
            // RFC 7162 3.1.3: MODIFIED with the numbers that failed.
            let sel = self.sel().expect("selected");
            let nums: Vec<u32> = if uid { outcome.failed.clone() } else { outcome.failed.iter().filter_map(|u| sel.index_of_uid(*u)).map(|i| i as u32 + 1).collect() };
            return Ok((ok(format!("[MODIFIED {}] conditional STORE failed", respond::sequence_set(&nums))), c));
        }
        Ok((ok(if uid { "UID STORE completed" } else { "STORE completed" }), c))
    }

    async fn search(&mut self, uid: bool, charset: Option<&str>, key: &SearchKey, ret: Option<Vec<String>>) -> Result<(Done, Flow), ConnError> {
        let c = Flow::Continue;
        if ret.is_some() {
            // ESEARCH (RFC 4731) is not offered.
            return Ok((bad("SEARCH RETURN is not supported"), c));
        }
        if search::check_charset(charset).is_err() {
            // RFC 3501 6.4.4
            return Ok((no("[BADCHARSET (UTF-8 US-ASCII)] unsupported charset"), c));
        }
        let uses_modseq = has_modseq(key);
        if uses_modseq {
            self.condstore = true;
        }
        let needs = search::needs_message(key);
        let sel = self.sel().expect("selected");
        let total = sel.msgs.len();
        if needs && total > MAX_SEARCH_READS {
            return Ok((no("[LIMIT] mailbox too large to search its text"), c));
        }
        let bounds = search::Bounds { last_seq: total as u32, last_uid: sel.max_uid() };
        let mut hits: Vec<(u32, u32, u64)> = Vec::new();
        for i in 0..total {
            let sel = self.sel().expect("selected");
            let sm = sel.msgs[i];
            let Some(m) = sel.msg_of(sm.uid).cloned() else { continue };
            let keywords: Vec<String> = sel.view.keyword_names(sm.flags).map(str::to_string).collect();
            let raw = if needs {
                let name = sel.name.clone();
                match self.read_message(name, m.clone()).await {
                    Ok(Some(v)) => Some(v),
                    Ok(None) => continue,
                    Err(e) => return Ok((self.store_failure(e), c)),
                }
            } else {
                None
            };
            let parsed = raw.as_deref().map(message::parse);
            let f = sm.flags;
            let meta = search::Meta {
                seq: i as u32 + 1,
                uid: sm.uid,
                seen: f.contains(Flags::SEEN),
                answered: f.contains(Flags::ANSWERED),
                flagged: f.contains(Flags::FLAGGED),
                deleted: f.contains(Flags::DELETED),
                draft: f.contains(Flags::DRAFT),
                recent: sm.recent,
                keywords: &with_forwarded(keywords, f),
                internal_date: m.date,
                size: m.size,
                modseq: sm.modseq,
            };
            if search::matches(key, &meta, parsed.as_ref(), &bounds) {
                hits.push((i as u32 + 1, sm.uid, sm.modseq));
            }
        }
        let mut line = String::from("* SEARCH");
        for (seq, u, _) in &hits {
            let _ = write!(line, " {}", if uid { *u } else { *seq });
        }
        if uses_modseq && !hits.is_empty() {
            // RFC 7162 3.1.5: the highest modseq of the messages found.
            let _ = write!(line, " (MODSEQ {})", hits.iter().map(|h| h.2).max().unwrap_or(0));
        }
        line.push_str("\r\n");
        self.send(line.as_bytes()).await?;
        self.sync(false).await?;
        Ok((ok(if uid { "UID SEARCH completed" } else { "SEARCH completed" }), c))
    }

    /// COPY (RFC 3501 6.4.7) and MOVE (RFC 6851), answered with COPYUID
    /// (RFC 4315 3).
    async fn copy(&mut self, uid: bool, set: &SequenceSet, mailbox: &[u8], is_move: bool) -> Result<(Done, Flow), ConnError> {
        let c = Flow::Continue;
        let target = match mailbox_name(mailbox).and_then(|n| store::imap::normalize_name(&n).map_err(|_| no("[TRYCREATE] no such mailbox"))) {
            Ok(n) => n,
            Err(d) => return Ok((d, c)),
        };
        let sel = self.sel().expect("selected");
        if is_move && sel.read_only {
            return Ok((no("[READ-ONLY] mailbox is read-only"), c));
        }
        let ix = match sel.resolve(set, uid) {
            Ok(ix) => ix,
            Err(e) => return Ok((bad(e), c)),
        };
        let uids: Vec<u32> = ix.iter().map(|&i| sel.msgs[i].uid).collect();
        if uids.is_empty() {
            // RFC 4315 3: no COPYUID when nothing was copied.
            return Ok((ok(if is_move { "MOVE completed" } else { "COPY completed" }), c));
        }
        let from = sel.name.clone();
        let view = sel.view.clone();
        let t2 = target.clone();
        let f2 = from.clone();
        let u2 = uids.clone();
        let r = self
            .store_call(move |s, u, who| {
                let src = FolderRef { addr: u, name: &f2 };
                let dst = FolderRef { addr: u, name: &t2 };
                let (uv, pairs) = s.imap_copy(src, &view, &u2, dst, who)?;
                let removed = if is_move {
                    let moved: Vec<u32> = pairs.iter().map(|p| p.0).collect();
                    Some(s.imap_remove(src, who, &moved)?)
                } else {
                    None
                };
                Ok((uv, pairs, removed))
            })
            .await;
        let (uv, pairs, removed) = match r {
            Ok(v) => v,
            // RFC 3501 6.4.7: TRYCREATE when the target does not exist.
            Err(ImapError::NoFolder) => return Ok((no("[TRYCREATE] no such mailbox"), c)),
            Err(e) => return Ok((self.store_failure(e), c)),
        };
        self.poke(&target);
        let code = if pairs.is_empty() {
            String::new()
        } else {
            let src: Vec<u32> = pairs.iter().map(|p| p.0).collect();
            let dst: Vec<u32> = pairs.iter().map(|p| p.1).collect();
            // RFC 4315 3: the sets in the same order; ours ascend together.
            format!("[COPYUID {uv} {} {}] ", respond::sequence_set(&src), respond::sequence_set(&dst))
        };
        if let Some((view, _)) = removed {
            self.poke(&from);
            // RFC 6851 4.3: COPYUID in an untagged OK before the expunges.
            if !code.is_empty() {
                self.untagged(&format!("OK {code}moved")).await?;
            }
            self.apply(Some(view), true, &[]).await?;
            return Ok((ok("MOVE completed"), c));
        }
        Ok((ok(format!("{code}COPY completed")), c))
    }
}

fn with_forwarded(mut keywords: Vec<String>, f: Flags) -> Vec<String> {
    if f.contains(Flags::FORWARDED) {
        keywords.push("$Forwarded".into());
    }
    keywords
}

fn has_modseq(k: &SearchKey) -> bool {
    match k {
        SearchKey::ModSeq(_) => true,
        SearchKey::Not(a) => has_modseq(a),
        SearchKey::Or(a, b) => has_modseq(a) || has_modseq(b),
        SearchKey::And(v) => v.iter().any(has_modseq),
        _ => false,
    }
}

struct Out<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Out<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}
