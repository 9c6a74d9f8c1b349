//! A POP3 session (RFC 1939) with CAPA and response codes (RFC 2449), STLS
//! (RFC 2595), SASL PLAIN (RFC 5034) and [SYS/...] codes (RFC 3206).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use proto::data::DotStuffer;
use proto::pop3::{parse_command, Command, Error as ParseError, MAX_COMMAND_LINE};
use store::{Address, LockError, MaildropLock, MessageEntry, StoreError};
use tokio::io::AsyncReadExt;

use crate::auth::AuthOutcome;
use crate::conn::{Conn, ConnError};
use crate::server::Shared;
use crate::session::{plain_credentials, Core, Flow, Input, Sasl};

/// Bytes read from a message file at once while sending it: with the
/// dot-stuffed copy and the reply buffer, what a session sending a message
/// holds is a small multiple of this, whatever the message's size.
const READ_CHUNK: usize = 16 * 1024;
/// Messages up to this size are read whole (one trip to the blocking pool,
/// most mail); larger ones are streamed in `READ_CHUNK` pieces.
const WHOLE_READ_MAX: u64 = 64 * 1024;
/// A LIST or UIDL of the whole maildrop goes out in pieces of about this
/// size, so a maildrop of many thousand messages is never one string.
const LISTING_PIECE: usize = 16 * 1024;
/// RFC 5034 4: the continuation of AUTH without an initial response.
const EMPTY_CHALLENGE: &[u8] = b"+ \r\n";

/// RFC 1939 3: the states of a session. UPDATE is not kept: it is what
/// QUIT in the TRANSACTION state does before the session ends.
enum State {
    /// Before login; `user` is the name given with USER, waiting for PASS.
    Authorization { user: Option<String> },
    /// Logged in, with the maildrop locked.
    Transaction(Maildrop),
}

/// Why a message number is refused (the texts are the -ERR replies).
#[derive(Debug, thiserror::Error)]
enum NoMessage {
    #[error("no such message")]
    Missing,
    #[error("message {0} already deleted")]
    Deleted(u32),
}

/// Why the UPDATE state removed nothing.
#[derive(Debug, thiserror::Error)]
enum UpdateError {
    /// A holder whose lock was broken must not delete anything.
    #[error("maildrop lock lost")]
    LockLost,
    #[error(transparent)]
    Store(#[from] StoreError),
}

struct Maildrop {
    user: Address,
    lock: Arc<MaildropLock>,
    refresher: tokio::task::JoinHandle<()>,
    messages: Vec<MessageEntry>,
    deleted: Vec<bool>,
}

impl Drop for Maildrop {
    fn drop(&mut self) {
        self.refresher.abort();
    }
}

impl Maildrop {
    /// Ends the maildrop's use: the lock is released on the blocking pool
    /// before the session goes on (a new session of the same user finds it
    /// free), never on the async thread.
    async fn end(self) {
        let lock = self.lock.clone();
        drop(self);
        // The refresher holds only a weak reference between refreshes; if
        // it is refreshing now, the last reference's drop releases.
        if let Ok(l) = Arc::try_unwrap(lock) {
            if let Err(e) = l.release_async(store::lock::LEASE_RELEASE_DEADLINE).await {
                tracing::warn!(error = %e, "cannot release the maildrop lock; it goes stale by its TTL");
            }
        }
    }

    /// The index of message `n` (1-based) if it exists and is not deleted.
    fn index(&self, n: u32) -> Result<usize, NoMessage> {
        let i = (n as usize).checked_sub(1).filter(|&i| i < self.messages.len()).ok_or(NoMessage::Missing)?;
        if self.deleted[i] {
            return Err(NoMessage::Deleted(n));
        }
        Ok(i)
    }

    /// The message numbered `n` if it exists and is not deleted.
    fn message(&self, n: u32) -> Result<&MessageEntry, NoMessage> {
        self.index(n).map(|i| &self.messages[i])
    }

    /// Messages not marked deleted and their octets (STAT, RFC 1939 5).
    fn stat(&self) -> (usize, u64) {
        self.messages.iter().zip(&self.deleted).filter(|(_, d)| !**d).fold((0, 0u64), |(n, s), (m, _)| (n + 1, s + m.size))
    }
}

pub struct Session {
    shared: Arc<Shared>,
    core: Core,
    peer: SocketAddr,
    state: State,
    auth_failures: u32,
}

async fn ok(core: &mut Core, text: &str) -> Result<(), ConnError> {
    let s = if text.is_empty() { "+OK\r\n".to_string() } else { format!("+OK {text}\r\n") };
    core.send(s.as_bytes()).await
}

async fn err(core: &mut Core, text: &str) -> Result<(), ConnError> {
    core.send(format!("-ERR {text}\r\n").as_bytes()).await
}

impl Session {
    pub fn new(shared: Arc<Shared>, conn: Conn, peer: SocketAddr) -> Session {
        Session { shared, core: Core::new(conn, peer), peer, state: State::Authorization { user: None }, auth_failures: 0 }
    }

    async fn ok(&mut self, text: &str) -> Result<(), ConnError> {
        ok(&mut self.core, text).await
    }

    async fn err(&mut self, text: &str) -> Result<(), ConnError> {
        err(&mut self.core, text).await
    }

    /// RFC 2595 2: plaintext logins (USER/PASS, SASL PLAIN) only under TLS,
    /// unless the node allows them for tests.
    fn plaintext_ok(&self) -> bool {
        self.core.tls() || self.shared.config.allow_plaintext_auth
    }

    pub async fn run(mut self) {
        // RFC 1939 4: the greeting; no APOP timestamp, APOP is not offered.
        if self.ok("mailfort POP3 ready").await.is_err() {
            return;
        }
        let idle = self.shared.config.limits.pop3_idle();
        loop {
            let line = match self.core.read_command(MAX_COMMAND_LINE, idle).await {
                Input::Line(l) => l,
                Input::TooLong => {
                    let _ = self.err("line too long").await;
                    break;
                }
                Input::Shutdown => {
                    // Not the UPDATE state: nothing is deleted.
                    let _ = self.err("[SYS/TEMP] server shutting down").await;
                    break;
                }
                // RFC 1939 3: the autologout timer (10 minutes at least,
                // for the whole command line however it is spread out)
                // closes the session without entering the UPDATE state.
                Input::Timeout | Input::Gone(_) => break,
            };
            match self.dispatch(&line).await {
                Ok(Flow::Continue) => {}
                Ok(Flow::Close) | Err(_) => break,
            }
        }
        // Dropping the maildrop releases the lock; deletions were applied
        // only if QUIT reached the UPDATE state.
        if let State::Transaction(md) = std::mem::replace(&mut self.state, State::Authorization { user: None }) {
            md.end().await;
        }
        self.core.close().await;
    }

    async fn dispatch(&mut self, line: &[u8]) -> Result<Flow, ConnError> {
        let cmd = match parse_command(line) {
            Ok(c) => c,
            Err(e) => {
                let cut_off = self.core.bad_command();
                match e {
                    ParseError::Unknown => self.err("unknown command").await?,
                    ParseError::BadBytes => self.err("invalid characters in command").await?,
                    ParseError::Syntax(why) => self.err(why).await?,
                }
                if cut_off {
                    self.err("too many errors").await?;
                    return Ok(Flow::Close);
                }
                return Ok(Flow::Continue);
            }
        };
        // Commands that move nothing on hold a connection slot as long as
        // they come: before a login every command counts (a login ends
        // the AUTHORIZATION state), after it NOOP and RSET do, as SMTP's
        // NOOP/RSET/VRFY/HELP. Past MAX_JUNK_COMMANDS the session ends.
        let junk = match self.state {
            State::Authorization { .. } => !matches!(cmd, Command::Quit),
            State::Transaction(_) => matches!(cmd, Command::Noop | Command::Rset),
        };
        if junk && self.core.junk_command() {
            self.err("too many commands without progress").await?;
            return Ok(Flow::Close);
        }
        match self.state {
            State::Authorization { .. } => self.authorization(cmd).await,
            State::Transaction(_) => self.transaction(cmd).await,
        }
    }

    async fn capa(&mut self) -> Result<(), ConnError> {
        // RFC 2449 5
        let mut s = String::from("+OK Capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\n");
        if let State::Authorization { .. } = self.state {
            // RFC 2449 6.8, RFC 2595 4: what is offered before login.
            if self.plaintext_ok() {
                s.push_str("USER\r\nSASL PLAIN\r\n");
            }
            if !self.core.tls() {
                s.push_str("STLS\r\n");
            }
        }
        s.push_str("IMPLEMENTATION mailfort\r\n.\r\n");
        self.core.send(s.as_bytes()).await
    }

    async fn authorization(&mut self, cmd: Command<'_>) -> Result<Flow, ConnError> {
        match cmd {
            Command::Capa => self.capa().await?,
            Command::Quit => {
                self.ok("bye").await?;
                return Ok(Flow::Close);
            }
            Command::Stls => {
                if self.core.tls() {
                    self.err("TLS already active").await?;
                } else {
                    // RFC 2595 4
                    self.ok("begin TLS negotiation").await?;
                    let acceptor = self.shared.tls.clone();
                    if self.core.start_tls(&acceptor).await.is_err() {
                        return Ok(Flow::Close);
                    }
                    // RFC 2595 4: forget what was learnt before TLS.
                    self.state = State::Authorization { user: None };
                }
            }
            Command::User(name) => {
                if !self.plaintext_ok() {
                    // RFC 2595 2: plaintext logins only under TLS.
                    self.err("[AUTH] plaintext authentication needs TLS; use STLS").await?;
                } else {
                    self.state = State::Authorization { user: Some(name.to_string()) };
                    self.ok("send PASS").await?;
                }
            }
            Command::Pass(pw) => {
                let State::Authorization { user } = &mut self.state else { return Ok(Flow::Close) };
                let Some(user) = user.take() else {
                    // RFC 1939 7: PASS only right after a successful USER.
                    self.err("USER first").await?;
                    return Ok(Flow::Continue);
                };
                return self.login(&user, pw).await;
            }
            Command::Auth { mechanism: None, .. } => {
                // The list of mechanisms, as many clients probe with it.
                let s = if self.plaintext_ok() { "+OK\r\nPLAIN\r\n.\r\n" } else { "+OK\r\n.\r\n" };
                self.core.send(s.as_bytes()).await?;
            }
            Command::Auth { mechanism: Some(m), initial } => {
                if !m.eq_ignore_ascii_case("PLAIN") {
                    self.err("unsupported authentication mechanism").await?;
                    return Ok(Flow::Continue);
                }
                if !self.plaintext_ok() {
                    self.err("[AUTH] plaintext authentication needs TLS; use STLS").await?;
                    return Ok(Flow::Continue);
                }
                let idle = self.shared.config.limits.pop3_idle();
                let response = match self.core.sasl_response(initial, EMPTY_CHALLENGE, idle).await? {
                    Sasl::Response(r) => r,
                    Sasl::Cancelled => {
                        // RFC 5034 4: "*" cancels; the AUTH command is
                        // rejected with -ERR.
                        self.err("authentication canceled").await?;
                        return Ok(Flow::Continue);
                    }
                    Sasl::Undecodable => {
                        // RFC 5034 4: a response that cannot be base64-
                        // decoded rejects the AUTH command with -ERR (not a
                        // failed login: no credentials were given).
                        self.err("cannot decode response").await?;
                        return Ok(Flow::Continue);
                    }
                };
                let (user, pw) = plain_credentials(&response);
                return self.login(&user, &pw).await;
            }
            // RFC 1939 4: the TRANSACTION commands need a login first.
            _ => self.err("not allowed before login").await?,
        }
        Ok(Flow::Continue)
    }

    async fn login(&mut self, login: &str, password: &str) -> Result<Flow, ConnError> {
        if !self.shared.store_healthy() {
            // RFC 3206 4: a temporary problem of the server.
            self.err("[SYS/TEMP] mail store unavailable, try again later").await?;
            return Ok(Flow::Continue);
        }
        let user = match self.shared.auth.check(login, password, self.peer.ip()).await {
            AuthOutcome::Accepted(user) => Some(user),
            AuthOutcome::Rejected => {
                // RFC 3206 3: [AUTH] for a credentials problem.
                self.err("[AUTH] authentication failed").await?;
                None
            }
            AuthOutcome::TryLater(why) => {
                // RFC 3206 4: [SYS/TEMP] for a temporary problem.
                self.err(&format!("[SYS/TEMP] {why}")).await?;
                None
            }
        };
        let Some(user) = user else {
            self.auth_failures += 1;
            if self.auth_failures >= self.shared.config.limits.max_auth_failures {
                return Ok(Flow::Close);
            }
            return Ok(Flow::Continue);
        };
        let store = self.shared.store.clone();
        let node = self.shared.config.node.clone();
        let instance = self.shared.instance.clone();
        let ttl = Duration::from_secs(self.shared.config.limits.maildrop_lock_ttl_secs);
        let u = user.clone();
        let r = store::blocking::call(store::blocking::STORE_CALL_DEADLINE, move || {
            // A lock whose holder is dead by its heartbeat (a node that was
            // killed) is broken at once, without waiting for the TTL.
            let who = store::Claimant { node: &node, instance: &instance };
            let lock = store.lock_maildrop(&u, who, ttl)?;
            let messages = store.list_messages(&u)?;
            Ok::<_, LockError>((lock, messages))
        })
        .await;
        let (lock, messages) = match r {
            Ok(Ok(v)) => v,
            Ok(Err(LockError::InUse { holder })) => {
                tracing::info!(user = %user, %holder, "maildrop in use");
                // RFC 2449 8.1.1
                self.err("[IN-USE] maildrop is in use by another session").await?;
                return Ok(Flow::Continue);
            }
            Ok(Err(e)) => {
                tracing::error!(user = %user, error = %e, "cannot open maildrop");
                self.err("[SYS/TEMP] cannot open maildrop, try again later").await?;
                return Ok(Flow::Continue);
            }
            Err(_) => {
                self.err("[SYS/TEMP] cannot open maildrop, try again later").await?;
                return Ok(Flow::Continue);
            }
        };
        let lock = Arc::new(lock);
        let refresher = {
            // Weak: the session alone decides when the lock goes away.
            let lock = Arc::downgrade(&lock);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(ttl / 3).await;
                    let Some(l) = lock.upgrade() else { return };
                    match store::blocking::call(store::blocking::STORE_CALL_DEADLINE, move || l.refresh()).await {
                        Ok(Ok(())) => {}
                        _ => {
                            tracing::warn!("maildrop lock lost; deletions will not be applied");
                            return;
                        }
                    }
                }
            })
        };
        let total: u64 = messages.iter().map(|m| m.size).sum();
        let n = messages.len();
        tracing::info!(peer = %self.peer, user = %user, messages = n, "POP3 login");
        self.state = State::Transaction(Maildrop { user, lock, refresher, deleted: vec![false; n], messages });
        // A login is progress: the junk count starts again.
        self.core.useful();
        // RFC 1939 7 (PASS)
        self.ok(&format!("maildrop has {n} messages ({total} octets)")).await?;
        Ok(Flow::Continue)
    }

    async fn transaction(&mut self, cmd: Command<'_>) -> Result<Flow, ConnError> {
        match cmd {
            Command::Capa => return self.capa().await.map(|()| Flow::Continue),
            Command::Quit => {
                if let State::Transaction(md) = std::mem::replace(&mut self.state, State::Authorization { user: None }) {
                    self.update(md).await?;
                }
                return Ok(Flow::Close);
            }
            _ => {}
        }
        let State::Transaction(md) = &mut self.state else { return Ok(Flow::Close) };
        let core = &mut self.core;
        let store = self.shared.store.clone();
        match cmd {
            Command::Noop => ok(core, "").await?,
            Command::Stat => {
                let (n, size) = md.stat();
                ok(core, &format!("{n} {size}")).await?;
            }
            Command::List(Some(n)) | Command::Uidl(Some(n)) => {
                let uidl = matches!(cmd, Command::Uidl(_));
                match md.message(n).map(|m| if uidl { m.uid.clone() } else { m.size.to_string() }) {
                    Ok(v) => ok(core, &format!("{n} {v}")).await?,
                    Err(e) => err(core, &e.to_string()).await?,
                }
            }
            Command::List(None) | Command::Uidl(None) => {
                use std::fmt::Write;
                let uidl = matches!(cmd, Command::Uidl(_));
                let mut s = String::from("+OK\r\n");
                for (i, m) in md.messages.iter().enumerate() {
                    if !md.deleted[i] {
                        let _ = if uidl { write!(s, "{} {}\r\n", i + 1, m.uid) } else { write!(s, "{} {}\r\n", i + 1, m.size) };
                    }
                    if s.len() >= LISTING_PIECE {
                        core.send(s.as_bytes()).await?;
                        s.clear();
                    }
                }
                s.push_str(".\r\n");
                core.send(s.as_bytes()).await?;
            }
            Command::Retr(n) => match md.message(n) {
                Ok(m) => send_message(core, &store, m, None).await?,
                Err(e) => err(core, &e.to_string()).await?,
            },
            Command::Top { msg, lines } => match md.message(msg) {
                Ok(m) => send_message(core, &store, m, Some(lines)).await?,
                Err(e) => err(core, &e.to_string()).await?,
            },
            Command::Dele(n) => match md.index(n) {
                Ok(i) => {
                    md.deleted[i] = true;
                    ok(core, &format!("message {n} deleted")).await?;
                }
                Err(e) => err(core, &e.to_string()).await?,
            },
            Command::Rset => {
                md.deleted.iter_mut().for_each(|d| *d = false);
                let n = md.messages.len();
                ok(core, &format!("maildrop has {n} messages")).await?;
            }
            // RFC 1939 5: USER, PASS, AUTH and STLS belong to AUTHORIZATION.
            _ => err(core, "not allowed in the TRANSACTION state").await?,
        }
        Ok(Flow::Continue)
    }

    /// RFC 1939 6: the UPDATE state, entered only by QUIT.
    async fn update(&mut self, md: Maildrop) -> Result<(), ConnError> {
        let doomed: Vec<_> = md.messages.iter().zip(&md.deleted).filter(|(_, d)| **d).map(|(m, _)| m.path.clone()).collect();
        let left = md.messages.len() - doomed.len();
        if doomed.is_empty() {
            md.end().await;
            return self.ok(&format!("bye ({left} messages left)")).await;
        }
        let store = self.shared.store.clone();
        let lock = md.lock.clone();
        let user = md.user.clone();
        let r = store::blocking::call(store::blocking::STORE_CALL_DEADLINE, move || -> Result<(), UpdateError> {
            if !lock.still_held() {
                return Err(UpdateError::LockLost);
            }
            let paths: Vec<&std::path::Path> = doomed.iter().map(|p| p.as_path()).collect();
            Ok(store.delete_messages(&paths)?)
        })
        .await;
        md.end().await;
        match r {
            Ok(Ok(())) => self.ok(&format!("bye ({left} messages left)")).await,
            Ok(Err(e)) => {
                tracing::error!(%user, error = %e, "deletions not applied");
                // RFC 1939 6: -ERR when some deleted messages were not removed.
                self.err("[SYS/TEMP] some deleted messages not removed").await
            }
            Err(_) => self.err("[SYS/TEMP] some deleted messages not removed").await,
        }
    }
}

/// RETR (whole message) or TOP (headers and `lines` body lines), dot-
/// stuffed (RFC 1939 3) and streamed from the file.
async fn send_message(core: &mut Core, store: &Arc<store::Store>, m: &MessageEntry, lines: Option<u32>) -> Result<(), ConnError> {
    // IMAP may have renamed the file since the listing (flags live in its
    // name); the unique name, and so the UIDL, stays.
    let path = {
        let (s, e) = (store.clone(), m.clone());
        match store::blocking::call(store::blocking::STORE_CALL_DEADLINE, move || s.current_path(&e)).await {
            Ok(Some(p)) => p,
            Ok(None) => return err(core, "message was removed by another session").await,
            Err(_) => return err(core, "[SYS/TEMP] message cannot be read now").await,
        }
    };
    let head = match lines {
        None => format!("+OK {} octets\r\n", m.size),
        Some(_) => "+OK\r\n".to_string(),
    };
    if m.size <= WHOLE_READ_MAX {
        // Small messages (most mail) in one trip to the blocking pool.
        let data = match store::blocking::call(store::blocking::STORE_CALL_DEADLINE, move || std::fs::read(path)).await {
            Ok(Ok(d)) => d,
            _ => {
                tracing::error!(path = %m.path.display(), "cannot read message");
                return err(core, "[SYS/TEMP] message cannot be read now").await;
            }
        };
        let take = match lines {
            Some(n) => TopCut::new(n).feed(&data).0,
            None => data.len(),
        };
        let mut out = Vec::with_capacity(head.len() + take + take / 64 + 8);
        out.extend_from_slice(head.as_bytes());
        let mut stuffer = DotStuffer::new();
        let start = out.len();
        out.resize(start + take * 2 + 2, 0);
        let (_, w) = stuffer.stuff(&data[..take], &mut out[start..]);
        out.truncate(start + w);
        out.extend_from_slice(stuffer.finish());
        return core.send(&out).await;
    }
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(path = %m.path.display(), error = %e, "cannot open message");
            return err(core, "[SYS/TEMP] message cannot be read now").await;
        }
    };
    core.send(head.as_bytes()).await?;
    let mut stuffer = DotStuffer::new();
    let mut top = lines.map(TopCut::new);
    let mut buf = vec![0u8; READ_CHUNK];
    let mut out = vec![0u8; READ_CHUNK * 2 + 2];
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        let (take, finished) = match top.as_mut() {
            Some(t) => t.feed(&buf[..n]),
            None => (n, false),
        };
        let mut pos = 0;
        while pos < take {
            let (c, w) = stuffer.stuff(&buf[pos..take], &mut out);
            pos += c;
            core.send(&out[..w]).await?;
        }
        if finished {
            break;
        }
    }
    core.send(stuffer.finish()).await
}

/// Where TOP stops: after the header, the blank line, and `lines` lines of
/// the body (RFC 1939 7, TOP).
struct TopCut {
    in_header: bool,
    last: [u8; 3],
    lines_left: u32,
}

impl TopCut {
    fn new(lines: u32) -> TopCut {
        // A message that starts with an empty line has an empty header.
        TopCut { in_header: true, last: [0, 0, b'\n'], lines_left: lines }
    }

    /// How many bytes of `chunk` to send, and whether that is the end.
    fn feed(&mut self, chunk: &[u8]) -> (usize, bool) {
        for (i, &b) in chunk.iter().enumerate() {
            if self.in_header {
                // The header ends at an empty line: "\n\r\n" (or "\n\n").
                let end = b == b'\n' && (self.last[2] == b'\n' || (self.last[2] == b'\r' && self.last[1] == b'\n'));
                self.last = [self.last[1], self.last[2], b];
                if end {
                    self.in_header = false;
                    if self.lines_left == 0 {
                        return (i + 1, true);
                    }
                }
            } else if b == b'\n' {
                self.lines_left -= 1;
                if self.lines_left == 0 {
                    return (i + 1, true);
                }
            }
        }
        (chunk.len(), false)
    }
}

#[cfg(test)]
mod tests {
    use super::TopCut;

    fn cut(msg: &[u8], n: u32) -> &[u8] {
        let mut t = TopCut::new(n);
        let (k, _) = t.feed(msg);
        &msg[..k]
    }

    #[test]
    fn top_cuts() {
        let m = b"A: 1\r\nB: 2\r\n\r\nl1\r\nl2\r\nl3\r\n";
        assert_eq!(cut(m, 0), b"A: 1\r\nB: 2\r\n\r\n");
        assert_eq!(cut(m, 2), b"A: 1\r\nB: 2\r\n\r\nl1\r\nl2\r\n");
        assert_eq!(cut(m, 10), m);
        assert_eq!(cut(b"\r\nbody\r\n", 0), b"\r\n");
    }
}
