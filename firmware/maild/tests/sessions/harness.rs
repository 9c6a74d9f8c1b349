//! Sessions run in the test's process: an SMTP or POP3 session over an
//! in-memory pipe (`tokio::io::duplex`) against a store in a temporary
//! directory. No ports, no processes; each test gets its own store.

use std::sync::Arc;
use std::time::Duration;

use maild::auth::Authenticator;
use maild::conn::Conn;
use maild::server::Shared;
use maild::{imap, pop3, smtp, NodeConfig, Service};
use store::stats::StatsRecorder;
use store::{Address, Store};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, DuplexStream};
use tokio::sync::watch;

pub const DOMAIN: &str = "example.test";
pub const HOSTNAME: &str = "mail.example.test";
pub const NODE: &str = "node1";
pub const ALICE: &str = "alice@example.test";
pub const ALICE_PASSWORD: &str = "secret";
pub const BOB: &str = "bob@example.test";
pub const BOB_PASSWORD: &str = "hunter2";
/// The client address every session of a harness comes from.
pub const PEER: &str = "192.0.2.25:40000";
/// How long a test waits for a reply or for the session to end before it
/// fails: far longer than a session takes, short enough for a hung test.
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);
/// How often `spool_empties` looks.
const SPOOL_POLL: Duration = Duration::from_millis(10);
/// The in-memory pipe's buffer in each direction.
const PIPE_BUFFER: usize = 256 * 1024;
/// How long a session's write may wait for the test to read.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// The first delay after a failed login (doubling per failure): short, so
/// tests of wrong passwords stay quick.
pub const FAIL_DELAY_MS: u64 = 20;

pub struct Harness {
    _dir: tempfile::TempDir,
    pub store: Arc<Store>,
    pub shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
}

impl Harness {
    /// A node for example.test with alice and bob, plaintext logins
    /// allowed (as on loopback in tests), no sender checks.
    pub fn new() -> Harness {
        Harness::with(|_| {})
    }

    /// The same, with the node's settings changed by `edit`.
    pub fn with(edit: impl FnOnce(&mut NodeConfig)) -> Harness {
        let dir = tempfile::tempdir().expect("temporary directory");
        let root = dir.path().join("store");
        let store = Store::init(&root, DOMAIN, Some(HOSTNAME)).expect("store");
        let domains = store.settings().domains.clone();
        for (user, pw) in [(ALICE, ALICE_PASSWORD), (BOB, BOB_PASSWORD)] {
            store.accounts().add(&addr(user), pw, &domains).expect("add user");
        }
        let mut config = NodeConfig { store: root, node: NODE.into(), allow_plaintext_auth: true, ..NodeConfig::default() };
        config.limits.auth_fail_delay_ms = FAIL_DELAY_MS;
        config.limits.auth_fail_delay_max_ms = FAIL_DELAY_MS * 4;
        config.inbound.verify = false;
        config.outbound.enabled = false;
        edit(&mut config);
        config.validate().expect("valid test configuration");
        let store = Arc::new(store);
        let auth = Authenticator::new(store.clone(), &config.limits, NODE);
        let stats = StatsRecorder::open(&store, NODE).expect("stats");
        let info = cluster::live::NodeInfo { node: NODE.into(), rank: 1, instance: "test-instance".into(), pid: std::process::id(), addresses: Vec::new(), services: Vec::new(), state: cluster::live::STATE_SERVING.into(), protections: Vec::new() };
        let member = cluster::Member::join_blocking(store.clone(), info).expect("the node's first heartbeat");
        let shared = Arc::new(Shared::new(config, store.clone(), auth, test_acceptor(), "test-instance".into(), None, stats, member));
        let (shutdown, _) = watch::channel(false);
        Harness { _dir: dir, store, shared, shutdown }
    }

    /// A session of `service` on a plaintext connection.
    pub async fn connect(&self, service: Service) -> Client {
        self.connect_with(service, false).await
    }

    /// A session of `service`, its connection marked as encrypted when
    /// `tls` (what implicit TLS gives a session, without a handshake).
    pub async fn connect_with(&self, service: Service, tls: bool) -> Client {
        let (client, server) = tokio::io::duplex(PIPE_BUFFER);
        let conn = Conn::new(Box::new(server), tls, self.shutdown.subscribe(), WRITE_TIMEOUT);
        let (shared, peer) = (self.shared.clone(), PEER.parse().expect("peer address"));
        let session = tokio::spawn(async move {
            match service {
                Service::Pop3 | Service::Pop3s => pop3::Session::new(shared, conn, peer).run().await,
                Service::Imap | Service::Imaps => imap::Session::new(shared, conn, peer).run().await,
                _ => smtp::Session::new(shared, conn, peer, service).run().await,
            }
        });
        Client { io: BufReader::new(client), session }
    }

    /// An SMTP session on port 25, past the greeting.
    pub async fn smtp(&self) -> Client {
        let mut c = self.connect(Service::Smtp).await;
        let (code, text) = c.reply().await;
        assert_eq!(code, 220, "{text}");
        c
    }

    /// A POP3 session, past the greeting.
    pub async fn pop3(&self) -> Client {
        let mut c = self.connect(Service::Pop3).await;
        let g = c.line().await;
        assert!(g.starts_with("+OK"), "{g}");
        c
    }

    /// An IMAP session, past its greeting.
    pub async fn imap(&self) -> Client {
        let mut c = self.connect(Service::Imap).await;
        let g = c.line().await;
        assert!(g.starts_with("* OK [CAPABILITY IMAP4rev1 "), "{g}");
        c
    }

    /// Puts `message` into the mailboxes of `to` as delivery would
    /// (without trace headers); returns its name.
    pub fn deliver(&self, to: &[&str], message: &[u8]) -> String {
        let mut sp = self.store.spool(NODE).expect("spool");
        sp.write_all(message).expect("write");
        let name = sp.name().to_string();
        let to: Vec<Address> = to.iter().map(|a| addr(a)).collect();
        sp.commit(&self.store, &to, None).expect("commit");
        name
    }

    /// The messages in `user`'s mailbox, oldest first.
    pub fn mailbox(&self, user: &str) -> Vec<Vec<u8>> {
        self.store.list_messages(&addr(user)).expect("list").iter().map(|m| std::fs::read(&m.path).expect("read")).collect()
    }

    /// Files left in the node's spool directory.
    pub fn spool_files(&self) -> usize {
        std::fs::read_dir(self.store.spool_dir(NODE)).map_or(0, |d| d.count())
    }

    /// Waits until the spool is empty: a refused or abandoned message's
    /// spool file is removed on the blocking pool, a moment after the
    /// reply (there is no event to await). False if it never empties.
    pub async fn spool_empties(&self) -> bool {
        let deadline = tokio::time::Instant::now() + IO_TIMEOUT;
        while self.spool_files() > 0 {
            if tokio::time::Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(SPOOL_POLL).await;
        }
        true
    }
}

pub fn addr(a: &str) -> Address {
    Address::parse(a).expect("address")
}

/// Base64 (RFC 4648 4).
pub fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// A self-signed certificate's acceptor: sessions need one, and the
/// tests here never complete a handshake.
fn test_acceptor() -> tokio_rustls::TlsAcceptor {
    let cert = rcgen::generate_simple_self_signed(vec![HOSTNAME.to_string()]).expect("certificate");
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
    let config = rustls::ServerConfig::builder().with_no_client_auth().with_single_cert(vec![cert.cert.der().clone()], key).expect("a working certificate");
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// The test's end of a session.
pub struct Client {
    io: BufReader<DuplexStream>,
    session: tokio::task::JoinHandle<()>,
}

impl Client {
    /// One line, without its CRLF.
    pub async fn line(&mut self) -> String {
        let mut l = String::new();
        let n = tokio::time::timeout(IO_TIMEOUT, self.io.read_line(&mut l)).await.expect("a line in time").expect("read");
        assert!(n > 0, "the session closed the connection");
        assert!(l.ends_with("\r\n"), "line without CRLF: {l:?}");
        l.truncate(l.len() - 2);
        l
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.io.get_mut().write_all(bytes).await.expect("write");
    }

    /// One SMTP reply: its code and the text of its last line (with the
    /// enhanced code).
    pub async fn reply(&mut self) -> (u16, String) {
        let lines = self.reply_lines().await;
        let last = lines.last().expect("a reply has a line");
        (last.0, last.1.clone())
    }

    /// Every line of one SMTP reply.
    pub async fn reply_lines(&mut self) -> Vec<(u16, String)> {
        let mut out = Vec::new();
        loop {
            let l = self.line().await;
            let code: u16 = l.get(..3).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("not a reply: {l:?}"));
            let more = l.as_bytes().get(3) == Some(&b'-');
            out.push((code, l.get(4..).unwrap_or("").to_string()));
            if !more {
                return out;
            }
        }
    }

    /// An SMTP command and its reply.
    pub async fn cmd(&mut self, line: &str) -> (u16, String) {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.reply().await
    }

    /// A POP3 command and its status line.
    pub async fn pop(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.line().await
    }

    /// The rest of a POP3 multi-line response, exactly as sent (still
    /// dot-stuffed), with its terminating ".\r\n".
    pub async fn multi(&mut self) -> Vec<u8> {
        let mut body = Vec::new();
        loop {
            let start = body.len();
            let n = tokio::time::timeout(IO_TIMEOUT, self.io.read_until(b'\n', &mut body)).await.expect("data in time").expect("read");
            assert!(n > 0, "closed inside a multi-line response");
            if &body[start..] == b".\r\n" {
                return body;
            }
        }
    }

    /// An IMAP command and every line of its response up to and with the
    /// tagged one (literals inline, as sent).
    pub async fn imap_cmd(&mut self, tag: &str, cmd: &str) -> Vec<String> {
        self.send(format!("{tag} {cmd}\r\n").as_bytes()).await;
        self.imap_until(tag).await
    }

    /// Lines up to and with the one starting with `tag ` (a literal's bytes
    /// are read as announced and kept inline).
    pub async fn imap_until(&mut self, tag: &str) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            let mut l = self.line().await;
            while let Some(n) = l.strip_suffix('}').and_then(|x| x.rsplit_once('{')).and_then(|(_, n)| n.parse::<usize>().ok()) {
                let mut buf = vec![0u8; n];
                tokio::time::timeout(IO_TIMEOUT, self.io.read_exact(&mut buf)).await.expect("literal in time").expect("read");
                l.push_str("\r\n");
                l.push_str(&String::from_utf8_lossy(&buf));
                l.push_str(&self.line().await);
            }
            let done = l.starts_with(&format!("{tag} "));
            out.push(l);
            if done {
                return out;
            }
        }
    }

    /// Waits for the session to close the connection; what it sent before
    /// that.
    pub async fn closed(&mut self) -> Vec<u8> {
        let mut rest = Vec::new();
        tokio::time::timeout(IO_TIMEOUT, self.io.read_to_end(&mut rest)).await.expect("the session closes the connection").expect("read");
        rest
    }

    /// Drops the connection (a client that goes away) and waits for the
    /// session to end.
    pub async fn hang_up(self) {
        let Client { io, session } = self;
        drop(io);
        tokio::time::timeout(IO_TIMEOUT, session).await.expect("the session ends").expect("the session did not panic");
    }

    /// Waits for the session task to end after it closed the connection.
    pub async fn ended(self) {
        tokio::time::timeout(IO_TIMEOUT, self.session).await.expect("the session ends").expect("the session did not panic");
    }
}
