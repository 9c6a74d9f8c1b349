//! An SMTP session (RFC 5321) for mail from other servers (port 25) and for
//! the organisation's own users (submission, RFC 6409 / RFC 8314).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proto::data::DataDecoder;
use proto::smtp::{parse_command, Command, Error as ParseError, ForwardPath, Mailbox, Params};
use store::assembly::{Body, BodyMemory, ClientMessage, Trace};
use store::{Address, Envelope};

use crate::auth::AuthOutcome;
use crate::config::SessionLimits;
use crate::conn::{Conn, ConnError};
use crate::server::{Service, Shared};
use crate::session::{plain_credentials, Core, Flow, Input, Sasl};

/// Output buffer of the DATA decoder: one read's worth (the decoder never
/// writes more than it reads).
const DECODE_CHUNK: usize = crate::conn::READ_CHUNK;
/// The AUTH LOGIN prompts (draft-murchison-sasl-login): "Username:" and
/// "Password:" in base64.
const LOGIN_USER_PROMPT: &[u8] = b"334 VXNlcm5hbWU6\r\n";
const LOGIN_PASSWORD_PROMPT: &[u8] = b"334 UGFzc3dvcmQ6\r\n";
/// RFC 4954 4: the empty server challenge of PLAIN without an initial
/// response.
const EMPTY_CHALLENGE: &[u8] = b"334 \r\n";

struct Transaction {
    /// The reverse-path as given (empty for `<>`).
    from: String,
    local: Vec<Address>,
    remote: Vec<String>,
    smtputf8: bool,
}

pub struct Session {
    shared: Arc<Shared>,
    core: Core,
    peer: SocketAddr,
    service: Service,
    helo: Option<String>,
    esmtp: bool,
    user: Option<Address>,
    auth_failures: u32,
    tx: Option<Transaction>,
    /// Message size and recipient limits, taken at the start and again at
    /// each EHLO/HELO, so that what EHLO advertised is what is enforced
    /// until the next one (the cluster's settings may change meanwhile).
    limits: SessionLimits,
}

impl Session {
    pub fn new(shared: Arc<Shared>, conn: Conn, peer: SocketAddr, service: Service) -> Session {
        let limits = shared.session_limits();
        Session { shared, core: Core::new(conn, peer), peer, service, helo: None, esmtp: false, user: None, auth_failures: 0, tx: None, limits }
    }

    async fn reply(&mut self, code: u16, enhanced: &str, text: &str) -> Result<(), ConnError> {
        let mut s = String::with_capacity(text.len() + 16);
        let e = if enhanced.is_empty() { None } else { Some(enhanced) };
        let _ = proto::reply::smtp(&mut s, code, e, &[text]);
        self.core.send(s.as_bytes()).await
    }

    pub async fn run(mut self) {
        if !self.shared.store_healthy() {
            // RFC 5321 3.1, 4.2.3: 421 at the greeting; the client tries
            // the next MX. Never accept mail that cannot be stored.
            let _ = self.reply(421, "4.3.0", &format!("{} mail store unavailable, try again later", self.shared.hostname())).await;
            self.core.close().await;
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
            let line = match self.core.read_command(max_line, idle).await {
                Input::Line(l) => l,
                Input::TooLong => {
                    // RFC 5321 4.5.3.1.10 "500 Line too long"; the rest of
                    // the line cannot be trusted to be a command, so close.
                    let _ = self.reply(500, "5.5.2", "Line too long").await;
                    break;
                }
                Input::Timeout => {
                    // RFC 5321 4.5.3.2.7: the command deadline (5 minutes
                    // at least, for the whole line); 421 closes the channel
                    // (3.8).
                    let _ = self.reply(421, "4.4.2", "Timeout waiting for a command, closing connection").await;
                    break;
                }
                Input::Shutdown => {
                    let _ = self.reply(421, "4.3.2", "Service shutting down, try again later").await;
                    break;
                }
                Input::Gone(_) => return,
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
        self.core.close().await;
    }

    async fn dispatch(&mut self, line: &[u8]) -> Result<Flow, ConnError> {
        let cmd = match parse_command(line) {
            Ok(c) => c,
            Err(e) => {
                let cut_off = self.core.bad_command();
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
                if cut_off {
                    self.reply(421, "4.7.0", "Too many errors, closing connection").await?;
                    return Ok(Flow::Close);
                }
                return Ok(Flow::Continue);
            }
        };
        if matches!(cmd, Command::Noop | Command::Rset | Command::Vrfy(_) | Command::Expn(_) | Command::Help) {
            if self.core.junk_command() {
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
        matches!(self.service, Service::Submission | Service::Submissions) && (self.core.tls() || self.shared.config.allow_plaintext_auth)
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
        if !self.core.tls() {
            lines.push("STARTTLS");
        }
        if self.offers_auth() && self.user.is_none() {
            lines.push("AUTH PLAIN LOGIN");
        }
        let mut s = String::new();
        let _ = proto::reply::smtp(&mut s, 250, None, &lines);
        self.core.send(s.as_bytes()).await
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
            if let Some(tx) = self.tx.as_mut() {
                if !tx.local.contains(&addr) {
                    tx.local.push(addr);
                }
            }
            return self.reply(250, "2.1.5", "OK").await;
        }
        if self.user.is_none() {
            // Never an open relay: only authenticated users may send to
            // other domains.
            return self.reply(554, "5.7.1", &format!("<{rcpt}>: relay access denied")).await;
        }
        if let Some(tx) = self.tx.as_mut() {
            if !tx.remote.contains(&rcpt) {
                tx.remote.push(rcpt);
            }
        }
        self.reply(250, "2.1.5", "OK").await
    }

    async fn data(&mut self) -> Result<Flow, ConnError> {
        let tx = match self.tx.take() {
            None => {
                self.reply(503, "5.5.1", "Need MAIL and RCPT before DATA").await?;
                return Ok(Flow::Continue);
            }
            Some(tx) if tx.local.is_empty() && tx.remote.is_empty() => {
                // RFC 5321 3.3: "554 No valid recipients" (with PIPELINING,
                // RFC 2920 3.1, the data is then not sent). The transaction
                // stays open.
                self.tx = Some(tx);
                self.reply(554, "5.5.1", "No valid recipients").await?;
                return Ok(Flow::Continue);
            }
            Some(tx) => tx,
        };
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
        body.push_trace(&trace).await;
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
            let conn = self.core.conn()?;
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
                let source = match body.client_message() {
                    ClientMessage::Memory(m) => mailauth::MessageSource::memory(m),
                    ClientMessage::Spooled { path, start, end, tail } => mailauth::MessageSource::spooled(path, start, end, tail),
                }
                .smtputf8(tx.smtputf8);
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
                        body.insert_header(v.header, v.forged);
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
                    // This node's IDLE sessions hear of it at once (other
                    // nodes' watchers see the folder's stamp change).
                    for a in &tx.local {
                        self.shared.imap_watchers.poke(a, "INBOX");
                    }
                    if !tx.remote.is_empty() {
                        self.shared.queue_notify.notify_one();
                    }
                    self.core.useful();
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
        let mut with = String::new();
        if tx.smtputf8 {
            with.push_str("UTF8SMTP");
        } else if self.esmtp {
            with.push_str("ESMTP");
        } else {
            with.push_str("SMTP");
        }
        if self.esmtp || tx.smtputf8 {
            if self.core.tls() {
                with.push('S');
            }
            if self.user.is_some() {
                with.push('A');
            }
        }
        let only = if tx.local.len() + tx.remote.len() == 1 { tx.local.first().map(|a| a.to_string()).or_else(|| tx.remote.first().cloned()) } else { None };
        let date = crate::date::rfc5322(SystemTime::now());
        let by = self.shared.hostname();
        let trace = Trace {
            return_path: (!tx.local.is_empty()).then_some(tx.from.as_str()),
            helo: self.helo.as_deref().unwrap_or("unknown"),
            ip: self.peer.ip(),
            by: &by,
            with: &with,
            id,
            for_rcpt: only.as_deref(),
            date: &date,
        };
        trace.render()
    }

    async fn starttls(&mut self) -> Result<Flow, ConnError> {
        if self.core.tls() {
            self.reply(503, "5.5.1", "TLS already active").await?;
            return Ok(Flow::Continue);
        }
        // RFC 3207 4
        self.reply(220, "2.0.0", "Ready to start TLS").await?;
        let acceptor = self.shared.tls.clone();
        self.core.start_tls(&acceptor).await?;
        // RFC 3207 4.2: forget everything learnt before TLS.
        self.helo = None;
        self.esmtp = false;
        self.tx = None;
        self.user = None;
        Ok(Flow::Continue)
    }

    /// A SASL response (initial with AUTH, or the answer to `challenge`);
    /// None when the client cancelled or sent something undecodable, which
    /// rejects the AUTH command (RFC 4954 4: 501), already answered.
    async fn sasl(&mut self, initial: Option<&str>, challenge: &[u8]) -> Result<Option<Vec<u8>>, ConnError> {
        let idle = self.shared.config.limits.smtp_idle();
        match self.core.sasl_response(initial, challenge, idle).await? {
            Sasl::Response(v) => Ok(Some(v)),
            Sasl::Cancelled => {
                // RFC 4954 4: the client cancels with "*"; 501.
                self.reply(501, "5.0.0", "Authentication canceled").await?;
                Ok(None)
            }
            Sasl::Undecodable => {
                // RFC 4954 4: a response that cannot be base64-decoded
                // rejects the AUTH command with 501.
                self.reply(501, "5.5.2", "Cannot decode response").await?;
                Ok(None)
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
            let Some(msg) = self.sasl(initial, EMPTY_CHALLENGE).await? else {
                return Ok(Flow::Continue);
            };
            plain_credentials(&msg)
        } else if mechanism.eq_ignore_ascii_case("LOGIN") {
            // draft-murchison-sasl-login: "Username:" then "Password:".
            let Some(user) = self.sasl(initial, LOGIN_USER_PROMPT).await? else {
                return Ok(Flow::Continue);
            };
            let Some(pass) = self.sasl(None, LOGIN_PASSWORD_PROMPT).await? else {
                return Ok(Flow::Continue);
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
