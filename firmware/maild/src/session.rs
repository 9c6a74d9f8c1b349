//! What every session shares, whatever its protocol (SMTP, POP3, later
//! IMAP): the connection, bounded command reading, the count of bad and of
//! idle commands that cuts off a peer that only wastes its slot, the switch
//! to TLS (STARTTLS, STLS) and the decoding of SASL responses (PLAIN and
//! LOGIN) with one rule for what cannot be decoded. The protocols keep only
//! their replies.

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine;

use crate::conn::{Conn, ConnError};

/// Bad commands tolerated in one session before it is closed (Postfix's
/// smtpd_hard_error_limit has the same purpose): a peer sending binary
/// garbage is cut off rather than answered forever.
pub const MAX_BAD_COMMANDS: u32 = 20;
/// Commands that move no mail (SMTP NOOP, RSET, VRFY, EXPN, HELP) tolerated
/// between two accepted messages, as Postfix's smtpd_junk_command_limit:
/// each resets the command deadline, so without a bound a client could
/// hold its slot for ever with one NOOP every few minutes.
pub const MAX_JUNK_COMMANDS: u32 = 100;
/// The longest SASL response line, CRLF included. RFC 4954 4: a server
/// must accept responses of at least 12288 octets; RFC 5034 4 exempts POP3
/// AUTH responses from the 255-octet line limit and defers to the same
/// SASL sizes.
pub const MAX_SASL_LINE: usize = 12288 + 2;
/// How long a TLS handshake after STARTTLS or STLS may take.
pub const TLS_UPGRADE_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether a session goes on after a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Close,
}

/// What waiting for the next command line gave.
#[derive(Debug)]
pub enum Input {
    Line(Vec<u8>),
    /// Longer than the protocol's limit: the rest of it cannot be trusted
    /// to be a command, so the session answers and closes.
    TooLong,
    /// The whole line did not arrive within the command deadline.
    Timeout,
    /// The server is shutting down and no command was pending.
    Shutdown,
    /// The client went away or the connection failed: nothing to answer.
    Gone(ConnError),
}

/// A SASL client response, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sasl {
    Response(Vec<u8>),
    /// The client sent "*" (RFC 4954 4, RFC 5034 4): the AUTH command is
    /// rejected.
    Cancelled,
    /// Not base64. RFC 4954 4 ("the server MUST reject the AUTH command
    /// with a 501 reply") and RFC 5034 4 ("it MUST reject the AUTH command
    /// with a -ERR response") agree: the AUTH command is refused at once,
    /// no password is checked and no login failure is counted. (POP3 used
    /// to take such a response for empty credentials, a failed login.)
    Undecodable,
}

/// An initial response given with the AUTH command. RFC 4954 4 and
/// RFC 5034 4: "=" is an empty one.
pub fn decode_initial(initial: &str) -> Sasl {
    if initial == "=" {
        return Sasl::Response(Vec::new());
    }
    decode_base64(initial.as_bytes())
}

/// A response line to a challenge: "*" cancels (RFC 4954 4, RFC 5034 4).
pub fn decode_response(line: &[u8]) -> Sasl {
    if line == b"*" {
        return Sasl::Cancelled;
    }
    decode_base64(line)
}

fn decode_base64(text: &[u8]) -> Sasl {
    match base64::engine::general_purpose::STANDARD.decode(text) {
        Ok(v) => Sasl::Response(v),
        Err(_) => Sasl::Undecodable,
    }
}

/// The login name and password of a SASL PLAIN message (RFC 4616 2), or
/// empty ones for a malformed message or a foreign authorization identity:
/// a login that fails like a wrong password (counted, after the delay).
pub fn plain_credentials(msg: &[u8]) -> (String, String) {
    proto::sasl::parse_plain(msg).and_then(|p| p.login()).map(|(u, p)| (u.to_string(), p.to_string())).unwrap_or_default()
}

/// The part of a session every protocol has.
pub struct Core {
    /// None only after a failed TLS upgrade, when the session ends.
    conn: Option<Conn>,
    pub peer: SocketAddr,
    bad_commands: u32,
    junk_commands: u32,
}

impl Core {
    pub fn new(conn: Conn, peer: SocketAddr) -> Core {
        Core { conn: Some(conn), peer, bad_commands: 0, junk_commands: 0 }
    }

    /// The connection; `Closed` once it is gone.
    pub fn conn(&mut self) -> Result<&mut Conn, ConnError> {
        self.conn.as_mut().ok_or(ConnError::Closed)
    }

    /// Queues reply bytes (sent at the next read or flush).
    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), ConnError> {
        self.conn()?.send(bytes).await
    }

    /// True when the connection is encrypted.
    pub fn tls(&self) -> bool {
        self.conn.as_ref().is_some_and(|c| c.tls)
    }

    /// Waits for the next command line, at most `max` bytes with its line
    /// end, the whole of it within `deadline`.
    pub async fn read_command(&mut self, max: usize, deadline: Duration) -> Input {
        let conn = match self.conn() {
            Ok(c) => c,
            Err(e) => return Input::Gone(e),
        };
        match conn.read_line(max, deadline).await {
            Ok(l) => Input::Line(l),
            Err(ConnError::LineTooLong(_)) => Input::TooLong,
            Err(ConnError::Timeout) => Input::Timeout,
            Err(ConnError::Shutdown) => Input::Shutdown,
            Err(e) => Input::Gone(e),
        }
    }

    /// Counts a command that could not be parsed; true when the session
    /// has had [`MAX_BAD_COMMANDS`] and is to be closed.
    pub fn bad_command(&mut self) -> bool {
        self.bad_commands += 1;
        self.bad_commands >= MAX_BAD_COMMANDS
    }

    /// Counts a command that moves nothing on; true when the session has
    /// had more than [`MAX_JUNK_COMMANDS`] since [`Core::useful`] and is to
    /// be closed.
    pub fn junk_command(&mut self) -> bool {
        self.junk_commands += 1;
        self.junk_commands > MAX_JUNK_COMMANDS
    }

    /// The session did something useful (accepted a message): the junk
    /// count starts again.
    pub fn useful(&mut self) {
        self.junk_commands = 0;
    }

    /// Switches to TLS after the protocol's "go ahead" reply (RFC 3207 4,
    /// RFC 2595 4). Input sent before the handshake is discarded
    /// ([`Conn::start_tls`]); the protocol forgets what it learnt before
    /// (RFC 3207 4.2, RFC 2595 4). An error ends the session.
    pub async fn start_tls(&mut self, acceptor: &tokio_rustls::TlsAcceptor) -> Result<(), ConnError> {
        let conn = self.conn.take().ok_or(ConnError::Closed)?;
        match tokio::time::timeout(TLS_UPGRADE_TIMEOUT, conn.start_tls(acceptor)).await {
            Ok(Ok(c)) => {
                self.conn = Some(c);
                Ok(())
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ConnError::Timeout),
        }
    }

    /// A SASL response: the initial response given with AUTH, or, without
    /// one, the answer to `challenge` (the protocol's continuation line).
    pub async fn sasl_response(&mut self, initial: Option<&str>, challenge: &[u8], deadline: Duration) -> Result<Sasl, ConnError> {
        match initial {
            Some(i) => Ok(decode_initial(i)),
            None => self.sasl_next(challenge, deadline).await,
        }
    }

    /// Sends `challenge` and decodes the client's answer.
    pub async fn sasl_next(&mut self, challenge: &[u8], deadline: Duration) -> Result<Sasl, ConnError> {
        let conn = self.conn()?;
        conn.send(challenge).await?;
        let line = conn.read_line(MAX_SASL_LINE, deadline).await?;
        Ok(decode_response(&line))
    }

    /// Flushes what is queued and closes the connection.
    pub async fn close(&mut self) {
        if let Some(c) = self.conn.take() {
            c.close().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sasl_responses_decode_by_one_rule() {
        assert_eq!(decode_initial("="), Sasl::Response(Vec::new()));
        assert_eq!(decode_initial("AGFsaWNlAHNlY3JldA=="), Sasl::Response(b"\0alice\0secret".to_vec()));
        assert_eq!(decode_initial("not base64!"), Sasl::Undecodable);
        assert_eq!(decode_response(b"*"), Sasl::Cancelled);
        assert_eq!(decode_response(b"YWxpY2U="), Sasl::Response(b"alice".to_vec()));
        assert_eq!(decode_response(b"YWxpY2U"), Sasl::Undecodable, "padding is required (RFC 4648 3.2)");
        assert_eq!(plain_credentials(b"\0alice\0secret"), ("alice".to_string(), "secret".to_string()));
        assert_eq!(plain_credentials(b"bob\0alice\0secret"), (String::new(), String::new()));
    }

    #[test]
    fn counters_cut_off_at_their_limits() {
        let (_client, server) = tokio::io::duplex(64);
        let (_tx, rx) = tokio::sync::watch::channel(false);
        let conn = Conn::new(Box::new(server), false, rx, Duration::from_secs(1));
        let mut core = Core::new(conn, "192.0.2.1:1".parse().expect("address"));
        for _ in 1..MAX_BAD_COMMANDS {
            assert!(!core.bad_command());
        }
        assert!(core.bad_command());
        for _ in 0..MAX_JUNK_COMMANDS {
            assert!(!core.junk_command());
        }
        assert!(core.junk_command());
        core.useful();
        assert!(!core.junk_command());
    }
}
