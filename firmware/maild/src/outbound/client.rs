//! The SMTP client that delivers queued mail to other domains' servers
//! (RFC 5321 as a client, with STARTTLS per RFC 3207, PIPELINING per
//! RFC 2920, SIZE per RFC 1870, 8BITMIME per RFC 6152, SMTPUTF8 per
//! RFC 6531). One connection carries all recipients of a domain.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use proto::data::DotStuffer;
use proto::line::{find_line, LineStatus};
use proto::reply::{ReplyError, ReplyReader, MAX_REPLY_LINE};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::mx::Target;
use crate::conn::Stream;

/// Bytes of message data written at once.
const DATA_CHUNK: usize = 64 * 1024;
/// Bytes read from the server at once.
const READ_CHUNK: usize = 4096;

/// What went wrong talking to a server (the text goes into the queue
/// entry's last error and into bounces).
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("timed out waiting for a reply")]
    ReplyTimeout,
    #[error("timed out writing")]
    WriteTimeout,
    #[error("read failed: {0}")]
    Read(std::io::Error),
    #[error("write failed: {0}")]
    Write(std::io::Error),
    #[error("the server closed the connection")]
    Closed,
    #[error("reply line too long")]
    LineTooLong,
    #[error("malformed reply line {0:?}")]
    Malformed(String),
    #[error("reply has too many lines")]
    TooManyLines,
    #[error("HELO refused: {0}")]
    HeloRefused(String),
}

/// Why the TLS client settings cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("cannot read the CA file {}: {source}", path.display())]
    ReadCa { path: std::path::PathBuf, source: std::io::Error },
    #[error("the CA file {} is not valid PEM: {source}", path.display())]
    Pem { path: std::path::PathBuf, source: std::io::Error },
    #[error("a certificate of the CA file {} cannot be a trust anchor: {source}", path.display())]
    Anchor { path: std::path::PathBuf, source: rustls::Error },
    #[error(transparent)]
    Rustls(#[from] rustls::Error),
}

#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// The name we give in EHLO: the cluster's host name.
    pub helo: String,
    /// 25 except in tests.
    pub port: u16,
    pub connect_timeout: Duration,
    /// RFC 5321 4.5.3.2: 5 minutes for most replies.
    pub command_timeout: Duration,
    /// RFC 5321 4.5.3.2.6: 10 minutes for the reply after the data.
    pub data_timeout: Duration,
    /// TLS without certificate checks, for opportunistic STARTTLS.
    pub tls_any: Arc<rustls::ClientConfig>,
    /// TLS with certificate checks, for domains whose policy requires TLS.
    pub tls_verified: Arc<rustls::ClientConfig>,
}

/// What happened to one recipient in one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Delivered { host: String, reply: String },
    /// 5xx (or an equivalent decision of ours): no retry.
    Permanent { status: String, diagnostic: String, host: Option<String> },
    /// 4xx, connection failures, timeouts: retry later.
    Temporary { diagnostic: String },
}

#[derive(Debug, Clone)]
struct Reply {
    code: u16,
    lines: Vec<String>,
}

impl Reply {
    fn text(&self) -> String {
        format!("{} {}", self.code, self.lines.join(" / "))
    }

    /// The enhanced status code (RFC 3463) if the reply has one, else one
    /// derived from the basic code.
    fn status(&self) -> String {
        let first = self.lines.first().map(|s| s.as_str()).unwrap_or("");
        let candidate = first.split_whitespace().next().unwrap_or("");
        let parts: Vec<&str> = candidate.split('.').collect();
        if parts.len() == 3 && parts.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())) && (parts[0] == "2" || parts[0] == "4" || parts[0] == "5") {
            return candidate.to_string();
        }
        format!("{}.0.0", self.code / 100)
    }
}

struct Session {
    stream: Box<dyn Stream>,
    buf: Vec<u8>,
    tls: bool,
}

impl Session {
    async fn read_reply(&mut self, timeout: Duration) -> Result<Reply, SessionError> {
        tokio::time::timeout(timeout, self.read_reply_inner()).await.map_err(|_| SessionError::ReplyTimeout)?
    }

    /// One reply, parsed by [`proto::reply`] (RFC 5321 4.2).
    async fn read_reply_inner(&mut self) -> Result<Reply, SessionError> {
        let mut reader = ReplyReader::default();
        let mut lines = Vec::new();
        loop {
            let (content, total) = loop {
                match find_line(&self.buf, MAX_REPLY_LINE) {
                    LineStatus::Complete { content, total } => break (content, total),
                    LineStatus::TooLong => return Err(SessionError::LineTooLong),
                    LineStatus::Incomplete => {}
                }
                let mut chunk = [0u8; READ_CHUNK];
                let n = self.stream.read(&mut chunk).await.map_err(SessionError::Read)?;
                if n == 0 {
                    return Err(SessionError::Closed);
                }
                self.buf.extend_from_slice(&chunk[..n]);
            };
            let line = &self.buf[..content];
            let parsed = match reader.push(line) {
                Ok(l) => l,
                Err(ReplyError::Malformed) => return Err(SessionError::Malformed(String::from_utf8_lossy(line).into_owned())),
                Err(ReplyError::TooManyLines) => return Err(SessionError::TooManyLines),
            };
            let (code, last) = (parsed.code, parsed.last);
            lines.push(String::from_utf8_lossy(parsed.text).into_owned());
            self.buf.drain(..total);
            if last {
                return Ok(Reply { code, lines });
            }
        }
    }

    async fn send(&mut self, bytes: &[u8], timeout: Duration) -> Result<(), SessionError> {
        let w = async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        };
        tokio::time::timeout(timeout, w).await.map_err(|_| SessionError::WriteTimeout)?.map_err(SessionError::Write)
    }

    async fn command(&mut self, cmd: &str, timeout: Duration) -> Result<Reply, SessionError> {
        self.send(format!("{cmd}\r\n").as_bytes(), timeout).await?;
        self.read_reply(timeout).await
    }
}

/// Delivers `message` for `rcpts` (all of one domain) to the first of
/// `targets` that takes a transaction. Returns one outcome per recipient,
/// in the order given.
pub async fn deliver(s: &ClientSettings, targets: &[Target], from: &str, rcpts: &[String], message: &[u8], require_tls: bool) -> Vec<Outcome> {
    let mut failures = Vec::new();
    for t in targets {
        for ip in &t.addrs {
            let addr = SocketAddr::new(*ip, s.port);
            let mut starttls = true;
            // At most two tries per address: the second without STARTTLS
            // when an opportunistic handshake failed (RFC 7435 3).
            for _ in 0..2 {
                match attempt(s, &t.name, addr, from, rcpts, message, require_tls, starttls).await {
                    Attempt::Done(outcomes) => return outcomes,
                    Attempt::TlsFailed(e) if !require_tls && starttls => {
                        tracing::info!(host = %t.name, %addr, error = %e, "STARTTLS failed; retrying without TLS");
                        starttls = false;
                    }
                    Attempt::TlsFailed(e) | Attempt::NextHost(e) => {
                        failures.push(format!("{} [{}]: {e}", t.name, ip));
                        break;
                    }
                }
            }
        }
    }
    let diagnostic = if failures.is_empty() { "no mail host to try".to_string() } else { failures.join("; ") };
    rcpts.iter().map(|_| Outcome::Temporary { diagnostic: diagnostic.clone() }).collect()
}

enum Attempt {
    /// The server answered the transaction: outcomes are final for now.
    Done(Vec<Outcome>),
    /// Connection-level failure: try the next address or host.
    NextHost(String),
    TlsFailed(String),
}

#[allow(clippy::too_many_arguments)]
async fn attempt(s: &ClientSettings, host: &str, addr: SocketAddr, from: &str, rcpts: &[String], message: &[u8], require_tls: bool, allow_starttls: bool) -> Attempt {
    let tcp = match tokio::time::timeout(s.connect_timeout, TcpStream::connect(addr)).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => return Attempt::NextHost(format!("connect failed: {e}")),
        Err(_) => return Attempt::NextHost("connect timed out".into()),
    };
    let _ = tcp.set_nodelay(true);
    let mut sess = Session { stream: Box::new(tcp), buf: Vec::new(), tls: false };
    let ct = s.command_timeout;
    // RFC 5321 3.1: the greeting must be 220; otherwise try elsewhere.
    match sess.read_reply(ct).await {
        Ok(r) if r.code == 220 => {}
        Ok(r) => return Attempt::NextHost(format!("greeting {}", r.text())),
        Err(e) => return Attempt::NextHost(e.to_string()),
    }
    let mut ext = match ehlo(&mut sess, &s.helo, ct).await {
        Ok(e) => e,
        Err(e) => return Attempt::NextHost(e.to_string()),
    };
    if allow_starttls && ext.iter().any(|e| e == "STARTTLS") {
        match sess.command("STARTTLS", ct).await {
            Ok(r) if r.code == 220 => {
                let cfg = if require_tls { s.tls_verified.clone() } else { s.tls_any.clone() };
                let name = ServerName::try_from(host.to_string()).unwrap_or_else(|_| ServerName::IpAddress(addr.ip().into()));
                let connector = tokio_rustls::TlsConnector::from(cfg);
                let inner = std::mem::replace(&mut sess.stream, Box::new(tokio::io::duplex(1).0));
                // RFC 3207 4.2: anything buffered before TLS is discarded.
                sess.buf.clear();
                match tokio::time::timeout(ct, connector.connect(name, inner)).await {
                    Ok(Ok(tls)) => {
                        sess.stream = Box::new(tls);
                        sess.tls = true;
                    }
                    Ok(Err(e)) => return Attempt::TlsFailed(format!("TLS handshake failed: {e}")),
                    Err(_) => return Attempt::TlsFailed("TLS handshake timed out".into()),
                }
                ext = match ehlo(&mut sess, &s.helo, ct).await {
                    Ok(e) => e,
                    Err(e) => return Attempt::NextHost(e.to_string()),
                };
            }
            Ok(r) => {
                if require_tls {
                    return Attempt::TlsFailed(format!("STARTTLS refused: {}", r.text()));
                }
            }
            Err(e) => return Attempt::NextHost(e.to_string()),
        }
    }
    if require_tls && !sess.tls {
        let _ = sess.command("QUIT", ct).await;
        return Attempt::Done(all(rcpts, Outcome::Temporary { diagnostic: format!("{host}: TLS required by policy but not available") }));
    }
    let has = |k: &str| ext.iter().any(|e| e == k || e.starts_with(&format!("{k} ")));
    let utf8 = !from.is_ascii() || rcpts.iter().any(|r| !r.is_ascii());
    if utf8 && !has("SMTPUTF8") {
        // RFC 6531 3.2: without SMTPUTF8 at the server, the message cannot
        // be sent as it is.
        let _ = sess.command("QUIT", ct).await;
        return Attempt::Done(all(rcpts, Outcome::Permanent { status: "5.6.7".into(), diagnostic: format!("{host} does not support SMTPUTF8, needed for the addresses"), host: Some(host.into()) }));
    }
    let mut mail = format!("MAIL FROM:<{from}>");
    if let Some(limit) = ext.iter().find_map(|e| e.strip_prefix("SIZE ")).and_then(|v| v.trim().parse::<u64>().ok()) {
        if limit > 0 && message.len() as u64 > limit {
            let _ = sess.command("QUIT", ct).await;
            // RFC 1870 6: the message is larger than the server takes.
            return Attempt::Done(all(rcpts, Outcome::Permanent { status: "5.3.4".into(), diagnostic: format!("{host} accepts at most {limit} bytes"), host: Some(host.into()) }));
        }
    }
    if has("SIZE") {
        mail.push_str(&format!(" SIZE={}", message.len()));
    }
    if has("8BITMIME") && message.iter().any(|&b| b >= 0x80) {
        mail.push_str(" BODY=8BITMIME");
    }
    if utf8 {
        mail.push_str(" SMTPUTF8");
    }
    // RFC 2920 3.1: with PIPELINING, MAIL and RCPTs go in one write.
    let mut replies = Vec::with_capacity(rcpts.len() + 1);
    if has("PIPELINING") {
        let mut batch = format!("{mail}\r\n");
        for r in rcpts {
            batch.push_str(&format!("RCPT TO:<{r}>\r\n"));
        }
        if let Err(e) = sess.send(batch.as_bytes(), ct).await {
            return Attempt::Done(all(rcpts, Outcome::Temporary { diagnostic: format!("{host}: {e}") }));
        }
        for _ in 0..=rcpts.len() {
            match sess.read_reply(ct).await {
                Ok(r) => replies.push(r),
                Err(e) => return Attempt::Done(all(rcpts, Outcome::Temporary { diagnostic: format!("{host}: {e}") })),
            }
        }
    } else {
        match sess.command(&mail, ct).await {
            Ok(r) => replies.push(r),
            Err(e) => return Attempt::Done(all(rcpts, Outcome::Temporary { diagnostic: format!("{host}: {e}") })),
        }
        if replies[0].code / 100 == 2 {
            for r in rcpts {
                match sess.command(&format!("RCPT TO:<{r}>"), ct).await {
                    Ok(rep) => replies.push(rep),
                    Err(e) => return Attempt::Done(all(rcpts, Outcome::Temporary { diagnostic: format!("{host}: {e}") })),
                }
            }
        }
    }
    let mail_reply = replies[0].clone();
    if mail_reply.code / 100 != 2 {
        let _ = sess.command("QUIT", ct).await;
        let o = failure(host, &mail_reply);
        return Attempt::Done(all(rcpts, o));
    }
    let mut outcomes: Vec<Option<Outcome>> = vec![None; rcpts.len()];
    for (i, r) in replies[1..].iter().enumerate() {
        if r.code / 100 != 2 {
            outcomes[i] = Some(failure(host, r));
        }
    }
    if outcomes.iter().all(|o| o.is_some()) {
        let _ = sess.command("QUIT", ct).await;
        return Attempt::Done(outcomes.into_iter().map(|o| o.expect("all set")).collect());
    }
    let final_reply = match send_data(&mut sess, message, s).await {
        Ok(r) => r,
        Err(e) => Reply { code: 451, lines: vec![format!("4.4.2 {e}")] },
    };
    let _ = sess.command("QUIT", ct).await;
    let ok = final_reply.code / 100 == 2;
    Attempt::Done(
        outcomes
            .into_iter()
            .map(|o| match o {
                Some(o) => o,
                None if ok => Outcome::Delivered { host: host.to_string(), reply: final_reply.text() },
                None => failure(host, &final_reply),
            })
            .collect(),
    )
}

async fn ehlo(sess: &mut Session, helo: &str, ct: Duration) -> Result<Vec<String>, SessionError> {
    let r = sess.command(&format!("EHLO {helo}"), ct).await?;
    if r.code == 250 {
        return Ok(r.lines.iter().skip(1).map(|l| l.trim().to_ascii_uppercase()).collect());
    }
    // RFC 5321 3.2: a server that does not know EHLO gets HELO.
    let r = sess.command(&format!("HELO {helo}"), ct).await?;
    if r.code == 250 {
        Ok(Vec::new())
    } else {
        Err(SessionError::HeloRefused(r.text()))
    }
}

async fn send_data(sess: &mut Session, message: &[u8], s: &ClientSettings) -> Result<Reply, SessionError> {
    let r = sess.command("DATA", s.command_timeout).await?;
    if r.code != 354 {
        return Ok(r);
    }
    let mut stuffer = DotStuffer::new();
    let mut out = vec![0u8; DATA_CHUNK * 2 + 2];
    let mut pos = 0;
    while pos < message.len() {
        let end = (pos + DATA_CHUNK).min(message.len());
        let (c, w) = stuffer.stuff(&message[pos..end], &mut out);
        pos += c;
        sess.send(&out[..w], s.command_timeout).await?;
    }
    sess.send(stuffer.finish(), s.command_timeout).await?;
    sess.read_reply(s.data_timeout).await
}

fn failure(host: &str, r: &Reply) -> Outcome {
    if r.code / 100 == 5 {
        Outcome::Permanent { status: r.status(), diagnostic: r.text(), host: Some(host.to_string()) }
    } else {
        Outcome::Temporary { diagnostic: format!("{host}: {}", r.text()) }
    }
}

fn all(rcpts: &[String], o: Outcome) -> Vec<Outcome> {
    rcpts.iter().map(|_| o.clone()).collect()
}

/// Opportunistic TLS (RFC 7435): any certificate is accepted, since a
/// certificate problem must not stop delivery that would otherwise go in
/// the clear. The handshake signatures are still checked.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(&self, _: &CertificateDer<'_>, _: &[CertificateDer<'_>], _: &ServerName<'_>, _: &[u8], _: UnixTime) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The trust anchors of verified TLS: Mozilla's root certificates as the
/// webpki-roots crate ships them, compiled in (a box has no system trust
/// store, and the daemon reads none), and the certificates of `extra_ca`
/// (a private CA, or a test's self-signed certificate).
pub fn verified_roots(extra_ca: Option<&std::path::Path>) -> Result<rustls::RootCertStore, TlsSetupError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = extra_ca {
        let pem = std::fs::read(path).map_err(|source| TlsSetupError::ReadCa { path: path.to_path_buf(), source })?;
        for c in rustls_pemfile::certs(&mut &pem[..]) {
            let c = c.map_err(|source| TlsSetupError::Pem { path: path.to_path_buf(), source })?;
            roots.add(c).map_err(|source| TlsSetupError::Anchor { path: path.to_path_buf(), source })?;
        }
    }
    Ok(roots)
}

/// TLS client settings: (opportunistic, verified). The verified settings
/// trust [`verified_roots`].
pub fn tls_configs(extra_ca: Option<&std::path::Path>) -> Result<(Arc<rustls::ClientConfig>, Arc<rustls::ClientConfig>), TlsSetupError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let any = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider.clone())))
        .with_no_client_auth();
    let roots = verified_roots(extra_ca)?;
    let verified = rustls::ClientConfig::builder_with_provider(provider).with_safe_default_protocol_versions()?.with_root_certificates(roots).with_no_client_auth();
    Ok((Arc::new(any), Arc::new(verified)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verified_tls_has_the_compiled_in_roots_and_needs_no_file() {
        let roots = verified_roots(None).unwrap();
        assert_eq!(roots.len(), webpki_roots::TLS_SERVER_ROOTS.len());
        assert!(roots.len() > 100, "{} roots", roots.len());
        assert!(tls_configs(None).is_ok());
        let missing = std::path::Path::new("no/such/ca.pem");
        let e = verified_roots(Some(missing)).unwrap_err();
        assert!(matches!(&e, TlsSetupError::ReadCa { path, .. } if path == missing), "{e:?}");
        assert!(e.to_string().contains("no/such/ca.pem"));
    }

    /// A CA and a server certificate for `mx.example.test` issued by it:
    /// (CA PEM, server chain, server key).
    fn issued() -> (String, Vec<CertificateDer<'static>>, rustls::pki_types::PrivateKeyDer<'static>) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name.push(rcgen::DnType::CommonName, "Test Root");
        let ca = ca.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["mx.example.test".to_string()]).unwrap().signed_by(&key, &ca, &ca_key).unwrap();
        let key_der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
        (ca.pem(), vec![leaf.der().clone(), ca.der().clone()], key_der)
    }

    /// A TLS handshake over memory with a server presenting `chain`.
    async fn handshake(client: Arc<rustls::ClientConfig>, name: &str, chain: Vec<CertificateDer<'static>>, key: rustls::pki_types::PrivateKeyDer<'static>) -> Result<(), std::io::Error> {
        let server = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider())).with_safe_default_protocol_versions().unwrap().with_no_client_auth().with_single_cert(chain, key).unwrap();
        let (c, s) = tokio::io::duplex(64 * 1024);
        let accept = tokio::spawn(async move { tokio_rustls::TlsAcceptor::from(Arc::new(server)).accept(s).await.map(|_| ()) });
        let name = ServerName::try_from(name.to_string()).unwrap();
        let r = tokio_rustls::TlsConnector::from(client).connect(name, c).await.map(|_| ());
        drop(accept);
        r
    }

    #[tokio::test]
    async fn verified_tls_checks_the_chain_to_a_trusted_root() {
        let (ca, chain, key) = issued();
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca).unwrap();
        let (any, with_ca) = tls_configs(Some(&ca_file)).unwrap();
        let (_, mozilla_only) = tls_configs(None).unwrap();
        handshake(with_ca.clone(), "mx.example.test", chain.clone(), key.clone_key()).await.expect("a chain to a trusted root");
        let e = handshake(with_ca, "other.example.test", chain.clone(), key.clone_key()).await.unwrap_err();
        assert!(e.to_string().contains("not valid for name"), "{e}");
        let e = handshake(mozilla_only, "mx.example.test", chain.clone(), key.clone_key()).await.unwrap_err();
        assert!(e.to_string().contains("UnknownIssuer"), "{e}");
        // Opportunistic TLS takes it all the same (RFC 7435).
        handshake(any, "other.example.test", chain, key).await.unwrap();
    }
}
