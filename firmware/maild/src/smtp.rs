//! An SMTP session (RFC 5321) for mail from other servers (port 25) and for
//! the organisation's own users (submission, RFC 6409 / RFC 8314).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use proto::data::DataDecoder;
use proto::smtp::{parse_command, Command, Error as ParseError, ForwardPath, Mailbox, Params};
use store::{Address, Envelope, Spool, Store};

use crate::auth::AuthOutcome;
use crate::config::SessionLimits;
use crate::conn::{Conn, ConnError};
use crate::memory::MemoryBudget;
use crate::server::{Service, Shared};

/// Bad commands tolerated in one session before it is closed (Postfix's
/// smtpd_hard_error_limit has the same purpose): a peer sending binary
/// garbage is cut off rather than answered forever.
const MAX_BAD_COMMANDS: u32 = 20;
/// Commands that move no mail (NOOP, RSET, VRFY, EXPN, HELP) tolerated
/// between two accepted messages, as Postfix's smtpd_junk_command_limit:
/// each resets the command deadline, so without a bound a client could
/// hold its slot for ever with one NOOP every few minutes.
const MAX_JUNK_COMMANDS: u32 = 100;
/// RFC 4954 4: a server must accept SASL responses of at least 12288 octets.
const MAX_AUTH_LINE: usize = 12288 + 2;
/// Output buffer of the DATA decoder: one read's worth (the decoder never
/// writes more than it reads).
const DECODE_CHUNK: usize = crate::conn::READ_CHUNK;
/// The smallest step by which a message buffer grows.
const BODY_STEP: usize = 4096;

struct Transaction {
    /// The reverse-path as given (empty for `<>`).
    from: String,
    local: Vec<Address>,
    remote: Vec<String>,
    smtputf8: bool,
}

pub struct Session {
    shared: Arc<Shared>,
    conn: Option<Conn>,
    peer: SocketAddr,
    service: Service,
    helo: Option<String>,
    esmtp: bool,
    user: Option<Address>,
    auth_failures: u32,
    bad_commands: u32,
    junk_commands: u32,
    tx: Option<Transaction>,
    /// Message size and recipient limits, taken at the start and again at
    /// each EHLO/HELO, so that what EHLO advertised is what is enforced
    /// until the next one (the cluster's settings may change meanwhile).
    limits: SessionLimits,
}

enum Flow {
    Continue,
    Close,
}

impl Session {
    pub fn new(shared: Arc<Shared>, conn: Conn, peer: SocketAddr, service: Service) -> Session {
        let limits = shared.session_limits();
        Session { shared, conn: Some(conn), peer, service, helo: None, esmtp: false, user: None, auth_failures: 0, bad_commands: 0, junk_commands: 0, tx: None, limits }
    }

    fn conn(&mut self) -> &mut Conn {
        self.conn.as_mut().expect("a session always has its connection")
    }

    async fn reply(&mut self, code: u16, enhanced: &str, text: &str) -> Result<(), ConnError> {
        let mut s = String::with_capacity(text.len() + 16);
        let e = if enhanced.is_empty() { None } else { Some(enhanced) };
        let _ = proto::reply::smtp(&mut s, code, e, &[text]);
        self.conn().send(s.as_bytes()).await
    }

    pub async fn run(mut self) {
        if !self.shared.store_healthy() {
            // RFC 5321 3.1, 4.2.3: 421 at the greeting; the client tries
            // the next MX. Never accept mail that cannot be stored.
            let _ = self.reply(421, "4.3.0", &format!("{} mail store unavailable, try again later", self.shared.hostname())).await;
            if let Some(c) = self.conn.take() {
                c.close().await;
            }
            return;
        }
        let greeting = format!("{} ESMTP mailfort", self.shared.hostname());
        // RFC 5321 4.3.1: the greeting is 220 (no enhanced code, RFC 2034 3).
        if self.reply(220, "", &greeting).await.is_err() {
            return;
        }
        let max_line = self.shared.config.limits.max_line;
        let idle = self.shared.config.limits.smtp_idle();
        loop {
            let line = match self.conn().read_line(max_line, idle).await {
                Ok(l) => l,
                Err(ConnError::LineTooLong(_)) => {
                    // RFC 5321 4.5.3.1.10 "500 Line too long"; the rest of
                    // the line cannot be trusted to be a command, so close.
                    let _ = self.reply(500, "5.5.2", "Line too long").await;
                    break;
                }
                Err(ConnError::Timeout) => {
                    // RFC 5321 4.5.3.2.7: the command deadline (5 minutes
                    // at least, for the whole line); 421 closes the channel
                    // (3.8).
                    let _ = self.reply(421, "4.4.2", "Timeout waiting for a command, closing connection").await;
                    break;
                }
                Err(ConnError::Shutdown) => {
                    let _ = self.reply(421, "4.3.2", "Service shutting down, try again later").await;
                    break;
                }
                Err(_) => return,
            };
            match self.dispatch(&line).await {
                Ok(Flow::Continue) => {}
                Ok(Flow::Close) => break,
                Err(e) => {
                    tracing::debug!(peer = %self.peer, error = %e, "session ended");
                    return;
                }
            }
        }
        if let Some(c) = self.conn.take() {
            c.close().await;
        }
    }

    async fn dispatch(&mut self, line: &[u8]) -> Result<Flow, ConnError> {
        let cmd = match parse_command(line) {
            Ok(c) => c,
            Err(e) => {
                self.bad_commands += 1;
                match e {
                    // RFC 5321 4.2.4: 500 for an unrecognised command.
                    ParseError::Unknown => self.reply(500, "5.5.2", "Command not recognized").await?,
                    ParseError::BadBytes => self.reply(500, "5.5.2", "Invalid characters in command").await?,
                    // RFC 5321 4.2.4: 501 for bad arguments.
                    ParseError::Syntax(why) => self.reply(501, "5.5.4", &format!("Syntax error: {why}")).await?,
                    // RFC 5321 4.5.3.1.10: "501 Path too long" / "553".
                    ParseError::TooLong(what) => self.reply(501, "5.1.3", &format!("The {what} is too long")).await?,
                    // RFC 5321 4.1.1.11: 555 for unrecognised parameters.
                    ParseError::BadParam => self.reply(555, "5.5.4", "Malformed parameter").await?,
                }
                if self.bad_commands >= MAX_BAD_COMMANDS {
                    self.reply(421, "4.7.0", "Too many errors, closing connection").await?;
                    return Ok(Flow::Close);
                }
                return Ok(Flow::Continue);
            }
        };
        if matches!(cmd, Command::Noop | Command::Rset | Command::Vrfy(_) | Command::Expn(_) | Command::Help) {
            self.junk_commands += 1;
            if self.junk_commands > MAX_JUNK_COMMANDS {
                self.reply(421, "4.7.0", "Too many commands without mail, closing connection").await?;
                return Ok(Flow::Close);
            }
        }
        match cmd {
            Command::Ehlo(domain) => self.ehlo(domain, true).await?,
            Command::Helo(domain) => self.ehlo(domain, false).await?,
            Command::Mail { .. } | Command::Data if !self.shared.store_healthy() => {
                self.reply(421, "4.3.0", "Mail store unavailable, try again later").await?;
                return Ok(Flow::Close);
            }
            Command::Mail { from, params } => self.mail(from, params).await?,
            Command::Rcpt { to, params } => self.rcpt(to, params).await?,
            Command::Data => return self.data().await,
            Command::Rset => {
                // RFC 5321 4.1.1.5
                self.tx = None;
                self.reply(250, "2.0.0", "OK").await?;
            }
            Command::Noop => self.reply(250, "2.0.0", "OK").await?,
            Command::Quit => {
                // RFC 5321 4.1.1.10
                self.reply(221, "2.0.0", "Bye").await?;
                return Ok(Flow::Close);
            }
            // RFC 5321 3.5.3: 252 when the server will not verify but will
            // accept mail for the address; confirming would help harvesters.
            Command::Vrfy(_) => self.reply(252, "2.5.0", "Cannot VRFY user, but will accept message and attempt delivery").await?,
            // RFC 5321 3.5.2 allows EXPN to be disabled.
            Command::Expn(_) => self.reply(502, "5.5.1", "EXPN not available").await?,
            Command::Help => {
                // RFC 5321 4.1.1.8
                self.reply(214, "2.0.0", "Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP STARTTLS AUTH; see RFC 5321").await?
            }
            Command::StartTls => return self.starttls().await,
            Command::Auth { mechanism, initial } => return self.auth(mechanism, initial).await,
        }
        Ok(Flow::Continue)
    }

    fn offers_auth(&self) -> bool {
        // AUTH is for submission only; on port 25 mail is accepted for local
        // users without it, and never relayed.
        matches!(self.service, Service::Submission | Service::Submissions) && (self.conn.as_ref().map_or(false, |c| c.tls) || self.shared.config.allow_plaintext_auth)
    }

    async fn ehlo(&mut self, domain: &str, esmtp: bool) -> Result<(), ConnError> {
        // RFC 5321 4.1.4: EHLO/HELO resets the transaction.
        self.tx = None;
        self.helo = Some(domain.to_string());
        self.esmtp = esmtp;
        self.limits = self.shared.session_limits();
        let first = format!("{} greets {}", self.shared.hostname(), domain);
        if !esmtp {
            return self.reply(250, "", &first).await;
        }
        // RFC 1870 4: SIZE with the fixed maximum message size in octets.
        let size = format!("SIZE {}", self.limits.max_message_size);
        let mut lines: Vec<&str> = vec![&first, "PIPELINING", &size, "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8"];
        // RFC 3207 4.2: STARTTLS is not offered once TLS is in use.
        let tls = self.conn.as_ref().map_or(false, |c| c.tls);
        if !tls {
            lines.push("STARTTLS");
        }
        if self.offers_auth() && self.user.is_none() {
            lines.push("AUTH PLAIN LOGIN");
        }
        let mut s = String::new();
        let _ = proto::reply::smtp(&mut s, 250, None, &lines);
        self.conn().send(s.as_bytes()).await
    }

    async fn mail(&mut self, from: Option<Mailbox<'_>>, params: Params<'_>) -> Result<(), ConnError> {
        if self.helo.is_none() {
            return self.reply(503, "5.5.1", "Send EHLO or HELO first").await;
        }
        if self.tx.is_some() {
            // RFC 5321 4.1.4: MAIL inside a transaction is a bad sequence.
            return self.reply(503, "5.5.1", "Nested MAIL command").await;
        }
        if self.service != Service::Smtp && self.user.is_none() {
            // RFC 4954 6: 530 when authentication is required.
            return self.reply(530, "5.7.0", "Authentication required").await;
        }
        if !self.esmtp && !params.is_empty() {
            return self.reply(555, "5.5.4", "Parameters need EHLO").await;
        }
        let mut smtputf8 = false;
        for (key, value) in params.iter() {
            if key.eq_ignore_ascii_case("SIZE") {
                // RFC 1870 6: a declared size over our limit is refused now.
                match value.and_then(|v| v.parse::<u64>().ok()) {
                    Some(n) if n > self.limits.max_message_size => {
                        return self.reply(552, "5.3.4", "Message size exceeds fixed maximum message size").await;
                    }
                    Some(_) => {}
                    None => return self.reply(501, "5.5.4", "Bad SIZE value").await,
                }
            } else if key.eq_ignore_ascii_case("BODY") {
                // RFC 6152 3: BODY=7BIT or BODY=8BITMIME.
                match value {
                    Some(v) if v.eq_ignore_ascii_case("7BIT") || v.eq_ignore_ascii_case("8BITMIME") => {}
                    _ => return self.reply(501, "5.5.4", "BODY must be 7BIT or 8BITMIME").await,
                }
            } else if key.eq_ignore_ascii_case("SMTPUTF8") && value.is_none() {
                // RFC 6531 3.4
                smtputf8 = true;
            } else if key.eq_ignore_ascii_case("AUTH") {
                // RFC 4954 5: AUTH=<mailbox> is accepted and, from an
                // untrusted client, ignored.
            } else {
                return self.reply(555, "5.5.4", &format!("Unsupported parameter {key}")).await;
            }
        }
        let from_str = match from {
            Some(m) => format!("{}@{}", m.local, m.domain),
            None => String::new(),
        };
        if !smtputf8 && !from_str.is_ascii() {
            // RFC 6531 3.7.4.1: non-ASCII addresses need SMTPUTF8.
            return self.reply(553, "5.6.7", "Non-ASCII address requires SMTPUTF8").await;
        }
        let (shared, helo) = (self.shared.clone(), self.helo.clone().unwrap_or_default());
        if let Some((code, enhanced, text)) = local_sender_refusal(&shared, self.service, self.user.is_some(), self.peer.ip(), &helo, &from_str).await {
            return self.reply(code, enhanced, &text).await;
        }
        if let Some(user) = &self.user {
            // Submission: a user sends as themselves only.
            let own = Address::parse(&from_str).map_or(false, |a| &a == user);
            if !own {
                return self.reply(553, "5.7.1", &format!("Sender address not owned by {user}")).await;
            }
        }
        self.tx = Some(Transaction { from: from_str, local: Vec::new(), remote: Vec::new(), smtputf8 });
        self.reply(250, "2.1.0", "OK").await
    }

    async fn rcpt(&mut self, to: ForwardPath<'_>, params: Params<'_>) -> Result<(), ConnError> {
        let Some(tx) = self.tx.as_ref() else {
            return self.reply(503, "5.5.1", "Need MAIL before RCPT").await;
        };
        if let Some((k, _)) = params.iter().next() {
            return self.reply(555, "5.5.4", &format!("Unsupported parameter {k}")).await;
        }
        if tx.local.len() + tx.remote.len() >= self.limits.max_recipients {
            // RFC 5321 4.5.3.1.10: 452 for too many recipients.
            return self.reply(452, "4.5.3", "Too many recipients").await;
        }
        let smtputf8 = tx.smtputf8;
        let (local, domain) = match to {
            ForwardPath::Mailbox(m) => (m.local.to_string(), m.domain.to_string()),
            // RFC 5321 4.1.1.3: <Postmaster> means postmaster of our domain.
            ForwardPath::Postmaster => ("postmaster".to_string(), self.shared.store.settings().domains[0].clone()),
        };
        let rcpt = format!("{local}@{domain}");
        if !smtputf8 && !rcpt.is_ascii() {
            return self.reply(553, "5.6.7", "Non-ASCII address requires SMTPUTF8").await;
        }
        if self.shared.store.is_local_domain(&domain) {
            let addr = match Address::parse(&rcpt) {
                Ok(a) => a,
                Err(_) => return self.reply(550, "5.1.1", &format!("<{rcpt}>: no such user here")).await,
            };
            let store = self.shared.store.clone();
            let a = addr.clone();
            match store::blocking::call(store::blocking::STORE_CALL_DEADLINE, move || store.accounts().exists(&a)).await {
                Ok(Ok(true)) => {}
                Ok(Ok(false)) => return self.reply(550, "5.1.1", &format!("<{rcpt}>: no such user here")).await,
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "account lookup failed");
                    return self.reply(451, "4.3.0", "Temporary local problem, try again later").await;
                }
                Err(_) => return self.reply(451, "4.3.0", "Temporary local problem, try again later").await,
            }
            let tx = self.tx.as_mut().expect("checked above");
            if !tx.local.contains(&addr) {
                tx.local.push(addr);
            }
            return self.reply(250, "2.1.5", "OK").await;
        }
        if self.user.is_none() {
            // Never an open relay: only authenticated users may send to
            // other domains.
            return self.reply(554, "5.7.1", &format!("<{rcpt}>: relay access denied")).await;
        }
        let tx = self.tx.as_mut().expect("checked above");
        if !tx.remote.contains(&rcpt) {
            tx.remote.push(rcpt);
        }
        self.reply(250, "2.1.5", "OK").await
    }

    async fn data(&mut self) -> Result<Flow, ConnError> {
        match &self.tx {
            None => {
                self.reply(503, "5.5.1", "Need MAIL and RCPT before DATA").await?;
                return Ok(Flow::Continue);
            }
            Some(tx) if tx.local.is_empty() && tx.remote.is_empty() => {
                // RFC 5321 3.3: "554 No valid recipients" (with PIPELINING,
                // RFC 2920 3.1, the data is then not sent).
                self.reply(554, "5.5.1", "No valid recipients").await?;
                return Ok(Flow::Continue);
            }
            Some(_) => {}
        }
        let tx = self.tx.take().expect("checked above");
        let memory = BodyMemory { budget: self.shared.message_memory.clone(), per_session: self.shared.config.limits.message_memory_per_session };
        let mut body = match Body::begin(self.shared.store.clone(), self.shared.config.node.clone(), memory).await {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "cannot spool a message");
                self.reply(451, "4.3.0", "Temporary local problem, try again later").await?;
                return Ok(Flow::Continue);
            }
        };
        let trace = self.trace_headers(&tx, body.name());
        body.push(trace.as_bytes()).await;
        body.trace_len = trace.len();
        let return_path_len = if trace.starts_with("Return-Path:") { trace.find("\r\n").map_or(0, |i| i + 2) } else { 0 };
        // RFC 5321 4.1.1.4: 354, then the data up to <CRLF>.<CRLF>.
        self.reply(354, "", "End data with <CR><LF>.<CR><LF>").await?;
        let max = self.limits.max_message_size;
        let limits = &self.shared.config.limits;
        let (block_timeout, grace, min_rate) = (limits.data_timeout(), limits.data_grace(), limits.data_min_rate.max(1));
        let started = tokio::time::Instant::now();
        let mut received: u64 = 0;
        let mut dec = DataDecoder::new();
        let mut out = vec![0u8; DECODE_CHUNK];
        let mut size: u64 = 0;
        let mut too_big = false;
        loop {
            let conn = self.conn.as_mut().expect("a session always has its connection");
            if conn.buffered().is_empty() {
                // RFC 5321 4.5.3.2.5: each data block within the block
                // timeout (3 minutes), and the data as a whole at
                // `data_min_rate` once the grace period is over: the
                // deadline moves on by one second per `min_rate` bytes.
                let due = started + grace + Duration::from_secs_f64(received as f64 / min_rate as f64);
                let wait = block_timeout.min(due.saturating_duration_since(tokio::time::Instant::now()));
                match conn.fill(wait).await {
                    Ok(n) => received += n as u64,
                    Err(ConnError::Timeout) => {
                        tracing::info!(peer = %self.peer, received, "message data too slow; closing");
                        // RFC 5321 3.8: 421 and close; nothing is stored.
                        self.reply(421, "4.4.2", "Timeout: message data too slow, closing connection").await?;
                        return Ok(Flow::Close);
                    }
                    Err(e) => return Err(e),
                }
                continue;
            }
            let p = dec.decode(conn.buffered(), &mut out);
            conn.consume(p.consumed);
            size += p.written as u64;
            if size > max {
                // RFC 1870 6.3: read to the end, then 552.
                too_big = true;
            } else {
                body.push(&out[..p.written]).await;
            }
            if p.done {
                break;
            }
        }
        let defects = dec.defects();
        if too_big {
            self.reply(552, "5.3.4", "Message size exceeds fixed maximum message size").await?;
        } else if defects.any() {
            let what = if defects.nul { "a NUL character" } else if defects.bare_lf { "a bare LF" } else { "a bare CR" };
            // RFC 5321 2.3.8: CR and LF only as CRLF. Refusing the whole
            // message keeps a smuggled second message inside the first.
            tracing::info!(peer = %self.peer, what, "refused a message with bad line ends");
            self.reply(554, "5.6.0", &format!("Message contains {what}; lines must end with CRLF")).await?;
        } else {
            if let (Service::Smtp, Some(verifier)) = (self.service, self.shared.verifier.as_ref()) {
                let helo = self.helo.clone().unwrap_or_default();
                let source = body.auth_source().smtputf8(tx.smtputf8);
                match verifier.check_source(self.peer.ip(), &helo, &tx.from, &source, &self.shared.hostname()).await {
                    Ok(v) => {
                        tracing::info!(peer = %self.peer, result = %v.summary, "authentication checks");
                        if v.dmarc_policy_reject && self.shared.config.inbound.dmarc_reject {
                            // RFC 7489 6.7 and 10.3: the domain asks for
                            // rejection; 550 5.7.1.
                            self.reply(550, "5.7.1", "Rejected by the DMARC policy of the sender's domain").await?;
                            return Ok(Flow::Continue);
                        }
                        // RFC 8601 5: results claiming to be ours that came
                        // with the message are forgeries; they go.
                        body.insert_header(return_path_len, v.header, v.forged);
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot read a message back for its checks"),
                }
            }
            let name = body.name().to_string();
            let env = if tx.remote.is_empty() {
                None
            } else {
                let created = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
                Some(Envelope { from: tx.from.clone(), rcpts: tx.remote.clone(), created, node: self.shared.config.node.clone(), ..Default::default() })
            };
            match body.commit(tx.local.clone(), env).await {
                Ok(()) => {
                    tracing::info!(id = %name, from = %tx.from, local = tx.local.len(), remote = tx.remote.len(), size, "accepted");
                    // Durable now: counted once, whatever happens to the 250.
                    self.shared.stats.count_in();
                    if !tx.remote.is_empty() {
                        self.shared.queue_notify.notify_one();
                    }
                    self.junk_commands = 0;
                    self.reply(250, "2.0.0", &format!("OK: queued as {name}")).await?;
                }
                Err(e) => {
                    tracing::error!(id = %name, error = %e, "could not store a message");
                    // Never 250 for mail we could not make durable.
                    self.reply(451, "4.3.0", "Temporary local problem, try again later").await?;
                }
            }
        }
        Ok(Flow::Continue)
    }

    /// Return-Path (RFC 5321 4.4: added at final delivery) and Received
    /// (RFC 5321 4.4, with the protocol names of RFC 3848 and RFC 6531 4.3).
    fn trace_headers(&self, tx: &Transaction, id: &str) -> String {
        let tls = self.conn.as_ref().map_or(false, |c| c.tls);
        let mut proto = String::new();
        if tx.smtputf8 {
            proto.push_str("UTF8SMTP");
        } else if self.esmtp {
            proto.push_str("ESMTP");
        } else {
            proto.push_str("SMTP");
        }
        if self.esmtp || tx.smtputf8 {
            if tls {
                proto.push('S');
            }
            if self.user.is_some() {
                proto.push('A');
            }
        }
        let helo = self.helo.as_deref().unwrap_or("unknown");
        let ip = self.peer.ip();
        let only = if tx.local.len() + tx.remote.len() == 1 {
            let r = tx.local.first().map(|a| a.to_string()).or_else(|| tx.remote.first().cloned()).unwrap_or_default();
            format!("\r\n\tfor <{r}>")
        } else {
            String::new()
        };
        let date = crate::date::rfc5322(SystemTime::now());
        let mut h = String::new();
        if !tx.local.is_empty() {
            h.push_str(&format!("Return-Path: <{}>\r\n", tx.from));
        }
        h.push_str(&format!("Received: from {helo} ([{ip}])\r\n\tby {} (mailfort) with {proto} id {id}{only};\r\n\t{date}\r\n", self.shared.hostname()));
        h
    }

    async fn starttls(&mut self) -> Result<Flow, ConnError> {
        if self.conn.as_ref().map_or(false, |c| c.tls) {
            self.reply(503, "5.5.1", "TLS already active").await?;
            return Ok(Flow::Continue);
        }
        // RFC 3207 4
        self.reply(220, "2.0.0", "Ready to start TLS").await?;
        let conn = self.conn.take().expect("a session always has its connection");
        let acceptor = self.shared.tls.clone();
        match tokio::time::timeout(Duration::from_secs(30), conn.start_tls(&acceptor)).await {
            Ok(Ok(c)) => {
                self.conn = Some(c);
                // RFC 3207 4.2: forget everything learnt before TLS.
                self.helo = None;
                self.esmtp = false;
                self.tx = None;
                self.user = None;
                Ok(Flow::Continue)
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ConnError::Timeout),
        }
    }

    async fn read_auth_line(&mut self) -> Result<Option<Vec<u8>>, ConnError> {
        let idle = self.shared.config.limits.smtp_idle();
        let line = self.conn().read_line(MAX_AUTH_LINE, idle).await?;
        if line == b"*" {
            // RFC 4954 4: the client cancels with "*".
            self.reply(501, "5.0.0", "Authentication canceled").await?;
            return Ok(None);
        }
        match base64::engine::general_purpose::STANDARD.decode(&line) {
            Ok(v) => Ok(Some(v)),
            Err(_) => {
                self.reply(501, "5.5.2", "Cannot decode response").await?;
                Ok(None)
            }
        }
    }

    /// A SASL response: the initial response given with AUTH (RFC 4954 4:
    /// "=" is an empty one), or the answer to `challenge`. None when the
    /// client cancelled or sent something undecodable (already answered).
    async fn sasl_response(&mut self, initial: Option<&str>, challenge: &[u8]) -> Result<Option<Vec<u8>>, ConnError> {
        match initial {
            Some("=") => Ok(Some(Vec::new())),
            Some(i) => match base64::engine::general_purpose::STANDARD.decode(i) {
                Ok(v) => Ok(Some(v)),
                Err(_) => {
                    self.reply(501, "5.5.2", "Cannot decode response").await?;
                    Ok(None)
                }
            },
            None => {
                self.conn().send(challenge).await?;
                self.read_auth_line().await
            }
        }
    }

    async fn auth(&mut self, mechanism: &str, initial: Option<&str>) -> Result<Flow, ConnError> {
        if !matches!(self.service, Service::Submission | Service::Submissions) {
            self.reply(503, "5.5.1", "AUTH is offered on the submission ports only").await?;
            return Ok(Flow::Continue);
        }
        if !self.offers_auth() {
            // RFC 4954 6: 538 when the mechanism needs encryption.
            self.reply(538, "5.7.11", "Encryption required for requested authentication mechanism").await?;
            return Ok(Flow::Continue);
        }
        if self.helo.is_none() || !self.esmtp {
            self.reply(503, "5.5.1", "Send EHLO first").await?;
            return Ok(Flow::Continue);
        }
        if self.user.is_some() || self.tx.is_some() {
            // RFC 4954 4: no AUTH after a successful AUTH or during a
            // transaction.
            self.reply(503, "5.5.1", "Already authenticated or in a transaction").await?;
            return Ok(Flow::Continue);
        }
        let (login, password) = if mechanism.eq_ignore_ascii_case("PLAIN") {
            let Some(msg) = self.sasl_response(initial, b"334 \r\n").await? else {
                return Ok(Flow::Continue);
            };
            proto::sasl::parse_plain(&msg).and_then(|p| p.login()).map(|(u, p)| (u.to_string(), p.to_string())).unwrap_or_default()
        } else if mechanism.eq_ignore_ascii_case("LOGIN") {
            // draft-murchison-sasl-login: "Username:" then "Password:".
            let Some(user) = self.sasl_response(initial, b"334 VXNlcm5hbWU6\r\n").await? else {
                return Ok(Flow::Continue);
            };
            self.conn().send(b"334 UGFzc3dvcmQ6\r\n").await?;
            let pass = match self.read_auth_line().await? {
                Some(v) => v,
                None => return Ok(Flow::Continue),
            };
            (String::from_utf8(user).unwrap_or_default(), String::from_utf8(pass).unwrap_or_default())
        } else {
            // RFC 4954 4: 504 for an unsupported mechanism.
            self.reply(504, "5.5.4", "Unrecognized authentication type").await?;
            return Ok(Flow::Continue);
        };
        match self.shared.auth.check(&login, &password, self.peer.ip()).await {
            AuthOutcome::Accepted(addr) => {
                tracing::info!(peer = %self.peer, user = %addr, "authenticated");
                self.user = Some(addr);
                // RFC 4954 6
                self.reply(235, "2.7.0", "Authentication successful").await?;
                Ok(Flow::Continue)
            }
            outcome => {
                self.auth_failures += 1;
                match outcome {
                    // RFC 4954 6: 454 4.7.0 for a temporary failure.
                    AuthOutcome::TryLater(why) => self.reply(454, "4.7.0", why).await?,
                    // RFC 4954 6: 535 5.7.8 for bad credentials.
                    _ => self.reply(535, "5.7.8", "Authentication credentials invalid").await?,
                }
                if self.auth_failures >= self.shared.config.limits.max_auth_failures {
                    self.reply(421, "4.7.0", "Too many failed authentications, closing connection").await?;
                    return Ok(Flow::Close);
                }
                Ok(Flow::Continue)
            }
        }
    }
}

/// Mail "from" one of our own domains arriving on port 25 without
/// authentication: the organisation's users send through submission
/// (RFC 6409 3.1), so such a sender is refused (RFC 5321 3.3: a server
/// may refuse at MAIL; 550 5.7.1, RFC 3463 3.8) unless the host passes
/// the domain's SPF for this MAIL FROM identity (RFC 7208 2.4, checked
/// at MAIL as RFC 7208 2.5 allows) or the cluster lists it as an
/// outside sender. With the checks off, only a listed host may.
async fn local_sender_refusal(shared: &Shared, service: Service, authenticated: bool, ip: std::net::IpAddr, helo: &str, from: &str) -> Option<(u16, &'static str, String)> {
    if service != Service::Smtp || authenticated {
        return None;
    }
    let (_, domain) = from.rsplit_once('@')?;
    if !shared.store.is_local_domain(domain) {
        return None;
    }
    if shared.store.settings().senders.is_outside_sender(ip) {
        return None;
    }
    let refused = Some((550, "5.7.1", format!("<{from}>: {ip} may not send as {domain} here; our users send through submission")));
    let Some(verifier) = shared.verifier.as_ref() else { return refused };
    match verifier.sender_spf(ip, helo, from, &shared.hostname()).await {
        mailauth::SenderSpf::Pass => None,
        // RFC 7208 8.6: a temporary error may be answered with 451 4.4.3.
        mailauth::SenderSpf::TempError => Some((451, "4.4.3", format!("<{from}>: cannot check the SPF record of {domain} now, try again later"))),
        mailauth::SenderSpf::NotPass => refused,
    }
}

/// Copies spooled message `old` into a new spool file with `header`
/// inserted at byte `at`.
/// A copy of a spooled message with `header` put at byte `at` and the
/// byte ranges `remove` (sorted, all after `at`) left out.
fn with_header(store: &Store, node: &str, old: Spool, at: usize, header: &str, remove: &[std::ops::Range<usize>]) -> Result<Spool, String> {
    use std::io::Read;
    let path = store.spool_dir(node).join(old.name());
    let mut f = std::fs::File::open(&path).map_err(|e| e.to_string())?;
    let mut new = store.spool(node).map_err(|e| e.to_string())?;
    let mut head = vec![0u8; at];
    f.read_exact(&mut head).map_err(|e| e.to_string())?;
    new.write_all(&head).map_err(|e| e.to_string())?;
    new.write_all(header.as_bytes()).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut offset = at;
    loop {
        let n = f.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        // Writes the parts of buf[..n] (file bytes offset..offset+n)
        // outside every removed range.
        let mut from = 0;
        for r in remove.iter().filter(|r| r.end > offset && r.start < offset + n) {
            let (s, e) = (r.start.saturating_sub(offset).max(from), (r.end - offset).min(n));
            new.write_all(&buf[from..s]).map_err(|e| e.to_string())?;
            from = e;
        }
        new.write_all(&buf[from..n]).map_err(|e| e.to_string())?;
        offset += n;
    }
    drop(old);
    Ok(new)
}

/// Where a message body may keep data in memory: up to `per_session`
/// bytes, and only as long as the node-wide budget has them.
struct BodyMemory {
    budget: Arc<MemoryBudget>,
    per_session: usize,
}

/// A message body on its way to the store: in memory while small and while
/// the node's memory budget allows, in the spool file otherwise. Store I/O
/// runs on the blocking pool.
struct Body {
    store: Arc<Store>,
    node: String,
    spool: Option<Spool>,
    name: String,
    mem: Vec<u8>,
    memory: BodyMemory,
    /// Bytes of `memory.budget` taken for `mem`.
    reserved: usize,
    /// Bytes already written to the spool file.
    spilled: u64,
    /// Where our trace headers end and the client's message begins.
    trace_len: usize,
    /// A header to put at `insert_at` (after Return-Path) once the
    /// message is complete; for a spilled message this means a copy.
    late_header: Option<(usize, String, Vec<std::ops::Range<usize>>)>,
    error: Option<String>,
}

impl Body {
    async fn begin(store: Arc<Store>, node: String, memory: BodyMemory) -> Result<Body, String> {
        let (s, n) = (store.clone(), node.clone());
        let spool = store::blocking::call(store::blocking::STORE_CALL_DEADLINE, move || s.spool(&n)).await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
        let name = spool.name().to_string();
        Ok(Body { store, node, spool: Some(spool), name, mem: Vec::new(), memory, reserved: 0, spilled: 0, trace_len: 0, late_header: None, error: None })
    }

    /// The message as the client sent it (without our trace headers), for
    /// the checks to read in pieces: the spooled part from the file, then
    /// what is still in memory.
    fn auth_source(&self) -> mailauth::MessageSource<'_> {
        if self.spilled == 0 {
            return mailauth::MessageSource::memory(&self.mem[self.trace_len.min(self.mem.len())..]);
        }
        let path = self.store.spool_dir(&self.node).join(&self.name);
        mailauth::MessageSource::spooled(path, self.trace_len as u64, self.spilled, &self.mem)
    }

    /// Puts `header` at byte `at` of the stored message (within our trace
    /// headers) and removes the byte ranges `remove` of the client's
    /// message (offsets in the message as the client sent it).
    fn insert_header(&mut self, at: usize, header: String, remove: Vec<std::ops::Range<usize>>) {
        let remove: Vec<std::ops::Range<usize>> = remove.into_iter().map(|r| r.start + self.trace_len..r.end + self.trace_len).collect();
        if self.spilled == 0 {
            for r in remove.iter().rev() {
                if r.end <= self.mem.len() {
                    self.mem.drain(r.clone());
                }
            }
            let at = at.min(self.mem.len());
            self.mem.splice(at..at, header.into_bytes());
        } else {
            self.late_header = Some((at, header, remove));
        }
    }

    fn name(&self) -> &str {
        &self.name
    }

    async fn push(&mut self, data: &[u8]) {
        if self.error.is_some() {
            return;
        }
        let need = self.mem.len() + data.len();
        let fits = need <= self.reserved || self.grow(need);
        self.mem.extend_from_slice(data);
        if !fits {
            // Over this session's share or the node's budget: to the spool
            // file at once (a write; the fsync comes with the commit).
            self.spill().await;
        }
    }

    /// Takes budget for a buffer of at least `need` bytes (doubling, within
    /// the session's share); false if there is none.
    fn grow(&mut self, need: usize) -> bool {
        let cap = self.memory.per_session;
        if need > cap {
            return false;
        }
        let want = need.max(self.reserved * 2).max(BODY_STEP).min(cap);
        if !self.memory.budget.try_take(want - self.reserved) {
            return false;
        }
        self.mem.reserve_exact(want - self.mem.len());
        self.reserved = want;
        true
    }

    /// Gives the buffer and its budget back.
    fn release(&mut self) {
        self.mem = Vec::new();
        self.memory.budget.give(std::mem::take(&mut self.reserved));
    }

    /// Writes what is in memory to the spool file and frees the buffer.
    async fn spill(&mut self) {
        let Some(mut spool) = self.spool.take() else {
            self.release();
            self.error.get_or_insert_with(|| "spool lost".into());
            return;
        };
        let mem = std::mem::take(&mut self.mem);
        let r = store::blocking::call(store::blocking::STORE_CALL_DEADLINE, move || {
            let r = spool.write_all(&mem);
            (spool, mem.len(), r)
        })
        .await;
        self.release();
        match r {
            Ok((spool, n, res)) => {
                self.spool = Some(spool);
                self.spilled += n as u64;
                if let Err(e) = res {
                    self.error = Some(e.to_string());
                }
            }
            Err(e) => self.error = Some(e.to_string()),
        }
    }

    async fn commit(mut self, local: Vec<Address>, queue: Option<Envelope>) -> Result<(), String> {
        // The budget stays taken until the last byte is written (Drop).
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        let mut spool = self.spool.take().ok_or("spool lost")?;
        let mem = std::mem::take(&mut self.mem);
        let store = self.store.clone();
        let late = self.late_header.take();
        let node = self.node.clone();
        store::blocking::call(store::blocking::STORE_CALL_DEADLINE, move || {
            spool.write_all(&mem).map_err(|e| e.to_string())?;
            if let Some((at, header, remove)) = late {
                // A spilled message gets its late header in a copy: the
                // spool file is never rewritten in place.
                spool = with_header(&store, &node, spool, at, &header, &remove)?;
            }
            spool.commit(&store, &local, queue.as_ref()).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())?
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(store: &Arc<Store>, budget: &Arc<MemoryBudget>, per_session: usize) -> Body {
        Body::begin(store.clone(), "node1".into(), BodyMemory { budget: budget.clone(), per_session }).await.expect("spool")
    }

    #[tokio::test]
    async fn message_memory_is_bounded_per_session_and_per_node() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::init(&dir.path().join("store"), "example.test", None).unwrap());
        let budget = Arc::new(MemoryBudget::new(100 * 1024));
        let chunk = vec![b'x'; 10 * 1024];

        // One session: in memory up to its share (64 KiB), then spilled.
        let mut a = body(&store, &budget, 64 * 1024).await;
        for _ in 0..6 {
            a.push(&chunk).await;
        }
        assert_eq!(a.spilled, 0);
        assert!(a.mem.capacity() <= 64 * 1024 && budget.used() == a.reserved);
        a.push(&chunk).await;
        assert_eq!(a.spilled, 70 * 1024, "past its share the session writes to the spool");
        assert_eq!(a.reserved, 0);

        // Sessions together: once the node's budget is taken, the next
        // session writes every piece at once.
        let mut b = body(&store, &budget, 64 * 1024).await;
        let mut c = body(&store, &budget, 64 * 1024).await;
        for _ in 0..6 {
            b.push(&chunk).await;
        }
        assert_eq!(b.spilled, 0);
        for _ in 0..6 {
            c.push(&chunk).await;
        }
        assert!(budget.used() <= budget.limit(), "{} of {}", budget.used(), budget.limit());
        assert!(c.spilled >= 20 * 1024, "the budget did not make the session spill: {}", c.spilled);
        assert_eq!(c.spilled as usize + c.mem.len(), 60 * 1024);
        let on_disk = std::fs::metadata(store.spool_dir("node1").join(c.name())).unwrap().len();
        assert_eq!(on_disk, c.spilled);

        // What a session frees is free for others.
        drop(b);
        let mut d = body(&store, &budget, 64 * 1024).await;
        d.push(&chunk).await;
        assert_eq!(d.spilled, 0);
        drop((a, c, d));
        assert_eq!(budget.used(), 0);
    }
}
