//! The HTTPS admin page, over real TLS: login, sessions, CSRF, the lockout,
//! escaping, forms that run the command set against a store, and the
//! connection limits that keep the page reachable under hostile clients.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use admin::access::StoreAccess;
use admin::commands::Host;
use admin::process::{ProcessHost, ProcessInfo};
use admin::web::{self, Limits, WebConfig};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

const PASSWORD: &str = "correct horse battery";
const HOSTILE: &str = "<script>alert(1)</script>";

/// Accepts exactly the server's certificate (self-signed).
#[derive(Debug)]
struct Pinned {
    cert: CertificateDer<'static>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(&self, end_entity: &CertificateDer<'_>, _: &[CertificateDer<'_>], _: &ServerName<'_>, _: &[u8], _: UnixTime) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.cert.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General("not the pinned certificate".into()))
        }
    }
    fn verify_tls12_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }
    fn verify_tls13_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

struct Server {
    addr: SocketAddr,
    root: PathBuf,
    config: PathBuf,
    cert: CertificateDer<'static>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    _dir: tempfile::TempDir,
}

async fn start(node: &str, idle: Duration) -> Server {
    start_with(node, WebConfig { session_idle: idle, ..WebConfig::default() }).await
}

async fn start_with(node: &str, cfg: WebConfig) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let store = store::Store::init(&root, "example.test", None).unwrap();
    let resolver = cert::ClusterCertResolver::load(&store).unwrap();
    let cert = resolver.current().cert[0].clone();
    let tls = cert::server_config(resolver.clone());
    let config = dir.path().join("node.toml");
    std::fs::write(&config, "node = \"n1\"\nrank = 1\n").unwrap();
    let info = ProcessInfo { node: node.into(), rank: Some(1), address: "127.0.0.1".into() };
    let host = Arc::new(ProcessHost::new(&root, Some(config.clone()), info));
    host.store().use_cert_resolver(resolver);
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(web::serve(vec![l], host, tls, cfg, async move {
        let _ = rx.await;
    }));
    Server { addr, root, config, cert, stop: Some(tx), task, _dir: dir }
}

impl Server {
    fn client(&self) -> Client {
        self.client_from("127.0.0.1")
    }

    fn connector(&self) -> tokio_rustls::TlsConnector {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned { cert: self.cert.clone(), provider }))
            .with_no_client_auth();
        tokio_rustls::TlsConnector::from(Arc::new(cfg))
    }

    /// A client whose connections come from `local` (any of 127.0.0.0/8).
    fn client_from(&self, local: &str) -> Client {
        Client { addr: self.addr, local: local.parse().unwrap(), tls: self.connector(), cookies: BTreeMap::new() }
    }

    async fn set_password(&self, pw: &str) {
        let (root, pw) = (self.root.clone(), pw.to_string());
        tokio::task::spawn_blocking(move || StoreAccess::new(&root).set_admin_hash(&admin::password::hash_password(&pw).unwrap()).unwrap()).await.unwrap();
    }

    async fn users(&self) -> Vec<String> {
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || StoreAccess::new(&root).user_list().unwrap().iter().map(|a| a.to_string()).collect()).await.unwrap()
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(10), &mut self.task).await.expect("serve ends on shutdown").unwrap().unwrap();
    }
}

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: hyper::HeaderMap,
    body: String,
}

impl Resp {
    fn header(&self, n: &str) -> &str {
        self.headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("")
    }
    fn set_cookie(&self, name: &str) -> Option<String> {
        self.headers.get_all("set-cookie").iter().filter_map(|v| v.to_str().ok()).find(|c| c.starts_with(&format!("{name}="))).map(str::to_string)
    }
}

struct Client {
    addr: SocketAddr,
    local: IpAddr,
    tls: tokio_rustls::TlsConnector,
    cookies: BTreeMap<String, String>,
}

/// A TCP connection to `addr` from the local address `local`.
async fn tcp_from(addr: SocketAddr, local: IpAddr) -> TcpStream {
    let s = TcpSocket::new_v4().unwrap();
    s.bind(SocketAddr::new(local, 0)).unwrap();
    s.connect(addr).await.unwrap()
}

fn enc(s: &str) -> String {
    s.bytes().map(|b| if b.is_ascii_alphanumeric() || b"-._~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

fn form(fields: &[(&str, &str)]) -> Vec<u8> {
    fields.iter().map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect::<Vec<_>>().join("&").into_bytes()
}

/// The first form's CSRF token on a page.
fn csrf_of(body: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    let i = body.find(marker).unwrap_or_else(|| panic!("no csrf field in {body}")) + marker.len();
    body[i..].split('"').next().unwrap().to_string()
}

impl Client {
    async fn send(&mut self, method: &str, path: &str, content_type: Option<&str>, body: Vec<u8>, extra: &[(&str, &str)]) -> Resp {
        let tcp = tcp_from(self.addr, self.local).await;
        let tls = self.tls.connect(ServerName::try_from("mail.example.test").unwrap(), tcp).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
        tokio::spawn(conn);
        let mut req = hyper::Request::builder().method(method).uri(path).header("host", self.addr.to_string());
        if !self.cookies.is_empty() {
            req = req.header("cookie", self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; "));
        }
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        let res = sender.send_request(req.body(Full::new(Bytes::from(body))).unwrap()).await.unwrap();
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let body = String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
        for c in headers.get_all("set-cookie").iter().filter_map(|v| v.to_str().ok()) {
            let pair = c.split(';').next().unwrap();
            let (k, v) = pair.split_once('=').unwrap();
            if c.contains("Max-Age=0") {
                self.cookies.remove(k);
            } else {
                self.cookies.insert(k.to_string(), v.to_string());
            }
        }
        Resp { status, headers, body }
    }

    async fn get(&mut self, path: &str) -> Resp {
        self.send("GET", path, None, Vec::new(), &[]).await
    }

    async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Resp {
        self.send("POST", path, Some("application/x-www-form-urlencoded"), form(fields), &[]).await
    }

    async fn login(&mut self, pw: &str) -> Resp {
        let page = self.get("/login").await;
        assert_eq!(page.status, 200);
        let csrf = csrf_of(&page.body);
        self.post("/login", &[("csrf", &csrf), ("password", pw)]).await
    }
}

fn assert_security_headers(r: &Resp) {
    assert_eq!(r.header("content-security-policy"), "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'");
    assert_eq!(r.header("x-content-type-options"), "nosniff");
    assert_eq!(r.header("referrer-policy"), "no-referrer");
    assert_eq!(r.header("cache-control"), "no-store");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_needs_the_admin_password_and_slows_guessing() {
    let srv = start("n1", Duration::from_secs(60)).await;
    let mut c = srv.client();

    // Plain HTTP on the TLS port gets no HTTP answer.
    let mut plain = TcpStream::connect(srv.addr).await.unwrap();
    plain.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut buf)).await;
    assert!(!buf.starts_with(b"HTTP/"), "plain HTTP answered: {:?}", String::from_utf8_lossy(&buf));

    // Not logged in: pages send to the login.
    let r = c.get("/").await;
    assert_eq!((r.status, r.header("location")), (303, "/login"));

    // No admin password yet: the page says how to set one; nobody gets in.
    let r = c.get("/login").await;
    assert_eq!(r.status, 200);
    assert_security_headers(&r);
    assert!(r.body.contains("id=\"no-password\"") && r.body.contains("admin-passwd"), "{}", r.body);
    assert!(r.body.contains("<form id=\"login\""));
    let login_cookie = r.set_cookie(web::LOGIN_COOKIE).expect("pre-session csrf cookie");
    assert!(login_cookie.contains("HttpOnly") && login_cookie.contains("SameSite=Strict"));
    for pw in ["", "x", PASSWORD] {
        let r = c.login(pw).await;
        assert_ne!(r.status, 303, "let in without a password set");
        assert!(r.set_cookie(web::SESSION_COOKIE).is_none());
    }
    assert!(!c.cookies.contains_key(web::SESSION_COOKIE));

    srv.set_password(PASSWORD).await;
    let r = c.get("/login").await;
    assert!(!r.body.contains("id=\"no-password\""));
    let csrf = csrf_of(&r.body);

    // The login form's CSRF token and origin are checked before the password.
    let r = c.post("/login", &[("password", PASSWORD)]).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("csrf"));
    let r = c.post("/login", &[("csrf", "wrong"), ("password", PASSWORD)]).await;
    assert_eq!(r.status, 403);
    let r = c.get("/login").await;
    let csrf2 = csrf_of(&r.body);
    assert_eq!(csrf, csrf2, "the login token stays for the browser session");
    let r = c.send("POST", "/login", Some("application/x-www-form-urlencoded"), form(&[("csrf", &csrf), ("password", PASSWORD)]), &[("origin", "https://evil.test")]).await;
    assert_eq!(r.status, 403);
    let r = c.send("POST", "/login", Some("application/x-www-form-urlencoded"), form(&[("csrf", &csrf), ("password", PASSWORD)]), &[("sec-fetch-site", "cross-site")]).await;
    assert_eq!(r.status, 403);
    assert!(!c.cookies.contains_key(web::SESSION_COOKIE));

    // A wrong password, then at once the right one: refused unchecked.
    let r = c.post("/login", &[("csrf", &csrf), ("password", "guess")]).await;
    assert_eq!(r.status, 403);
    assert!(r.body.contains("wrong password"), "{}", r.body);
    let r = c.post("/login", &[("csrf", &csrf), ("password", PASSWORD)]).await;
    assert_eq!(r.status, 429, "{}", r.body);
    let wait: u64 = r.header("retry-after").parse().expect("Retry-After in seconds");
    assert!((1..=web::LOGIN_DELAY_MAX.as_secs()).contains(&wait));
    assert!(r.set_cookie(web::SESSION_COOKIE).is_none());

    // After the wait, the right password opens a session.
    tokio::time::sleep(Duration::from_secs(wait) + Duration::from_millis(100)).await;
    let r = c.post("/login", &[("csrf", &csrf), ("password", PASSWORD)]).await;
    assert_eq!((r.status, r.header("location")), (303, "/"), "{}", r.body);
    let cookie = r.set_cookie(web::SESSION_COOKIE).unwrap();
    for attr in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(cookie.split("; ").any(|a| a == attr), "{attr} missing in {cookie}");
    }
    let id = cookie.split(';').next().unwrap().split_once('=').unwrap().1.to_string();
    assert_eq!(id.len(), 43, "32 random bytes, base64url");
    assert!(id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));

    let r = c.get("/").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_security_headers(&r);
    assert!(r.body.contains("<td id=\"node-name\">n1</td>"), "{}", r.body);

    // Logout (a POST with the token) ends the session, here and for the
    // cookie if it is used again.
    let csrf = csrf_of(&r.body);
    let r = c.post("/logout", &[("csrf", "wrong")]).await;
    assert_eq!(r.status, 403);
    let r = c.post("/logout", &[("csrf", &csrf)]).await;
    assert_eq!((r.status, r.header("location")), (303, "/login"));
    assert!(!c.cookies.contains_key(web::SESSION_COOKIE));
    c.cookies.insert(web::SESSION_COOKIE.into(), id);
    let r = c.get("/").await;
    assert_eq!((r.status, r.header("location")), (303, "/login?expired=1"));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_end_when_idle() {
    let idle = Duration::from_secs(2);
    let srv = start("n1", idle).await;
    srv.set_password(PASSWORD).await;
    let mut c = srv.client();
    assert_eq!(c.login(PASSWORD).await.status, 303);
    let r = c.get("/users").await;
    assert_eq!(r.status, 200);
    let csrf = csrf_of(&r.body);
    // The dashboard's own refresh is no activity of a person.
    tokio::time::sleep(idle * 6 / 10).await;
    let r = c.get("/?auto=1").await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("http-equiv=\"refresh\" content=\"5; url=/?auto=1\""));
    tokio::time::sleep(idle * 6 / 10).await;
    // Past the idle time: refused, sent to the login, nothing changed.
    let r = c.post("/users/add", &[("csrf", &csrf), ("address", "late@example.test"), ("password", "pw"), ("password2", "pw")]).await;
    assert_eq!((r.status, r.header("location")), (303, "/login?expired=1"));
    assert!(srv.users().await.is_empty());
    let r = c.get("/").await;
    assert_eq!(r.status, 303);
    assert!(r.header("location").starts_with("/login"));
    let r = c.get("/login?expired=1").await;
    assert!(r.body.contains("session expired"), "{}", r.body);
    srv.stop().await;
}

fn cluster_toml(root: &Path) -> String {
    std::fs::read_to_string(root.join("cluster.toml")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_run_the_command_set() {
    let srv = start(&format!("n1{HOSTILE}"), Duration::from_secs(60)).await;
    srv.set_password(PASSWORD).await;
    // A live node, a stopped one, message counts, a hostile log line.
    {
        let store = store::Store::open(&srv.root).unwrap();
        let info = |node: &str, state: &str| cluster::live::NodeInfo {
            node: node.into(),
            rank: 1,
            instance: cluster::live::new_instance(),
            pid: 1,
            addresses: vec!["192.0.2.1".parse().unwrap()],
            services: vec![],
            state: state.into(),
            protections: vec![cluster::live::Protection { name: "SPF/DKIM/DMARC checks".into(), on: false, detail: "no <resolver>".into() }],
        };
        store.write_heartbeat(&info("n1", cluster::live::STATE_SERVING)).unwrap();
        store.write_heartbeat(&info("n2", cluster::live::STATE_STOPPED)).unwrap();
        let rec = store::stats::StatsRecorder::open(&store, "n1").unwrap();
        for _ in 0..3 {
            rec.count_in();
        }
        rec.count_out(2);
        rec.flush(&store).unwrap();
    }
    admin::log::line("webtest", &format!("evil {HOSTILE}"));

    let mut c = srv.client();
    assert_eq!(c.login(PASSWORD).await.status, 303);

    // Dashboard: the live set with states, the chart with the counts, the
    // hostile node name escaped.
    let r = c.get("/").await;
    assert_eq!(r.status, 200);
    let b = &r.body;
    assert!(b.contains("<tr id=\"node-n1\" class=\"state-live\""), "{b}");
    assert!(b.contains("<tr id=\"node-n2\" class=\"state-stop\""), "{b}");
    // A live node whose checks are off says so, escaped; a stopped one's
    // old state is not shown.
    assert!(b.contains("<p class=\"problem protection-off\" id=\"protection-off-n1\">n1: SPF/DKIM/DMARC checks off: no &lt;resolver&gt;</p>"), "{b}");
    assert!(!b.contains("protection-off-n2"), "{b}");
    assert!(b.contains("<svg id=\"chart\"") && b.contains("data-in=\"3\"") && b.contains("data-out=\"2\""), "{b}");
    assert!(b.contains("<td id=\"accounts\">0</td>"));
    assert!(b.contains("n1&lt;script&gt;alert(1)&lt;/script&gt;"), "{b}");
    assert!(!b.contains(HOSTILE), "unescaped value on the dashboard");
    // The log page, escaped too.
    let r = c.get("/log").await;
    assert!(r.body.contains("evil &lt;script&gt;alert(1)&lt;/script&gt;"), "{}", r.body);
    assert!(!r.body.contains(HOSTILE));
    let r = c.get("/static/style.css").await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").starts_with("text/css"));

    // Users: added through the form with the token, not without.
    let r = c.get("/users").await;
    assert!(r.body.contains("<form id=\"user-add\""));
    let csrf = csrf_of(&r.body);
    let bob = [("address", "bob@example.test"), ("password", "pw-1"), ("password2", "pw-1")];
    for token in [None, Some(""), Some("not-the-token")] {
        let mut f = bob.to_vec();
        if let Some(t) = token {
            f.push(("csrf", t));
        }
        let r = c.post("/users/add", &f).await;
        assert_eq!(r.status, 403, "{}", r.body);
        assert!(r.body.contains("csrf"), "{}", r.body);
    }
    let r = c.post("/users/add", &[("csrf", &csrf), ("address", "carol@example.test"), ("password", "pw-1"), ("password2", "pw-2")]).await;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("differ"));
    assert!(srv.users().await.is_empty(), "a refused form added an account");
    let r = c.post("/users/add", &[("csrf", &csrf), ("address", "alice@example.test"), ("password", "pw-1"), ("password2", "pw-1")]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("added alice@example.test"));
    assert!(r.body.contains("<tr id=\"user-alice-example-test\"><td>alice@example.test</td>"), "{}", r.body);
    assert_eq!(srv.users().await, vec!["alice@example.test".to_string()]);
    // The same command's errors come back as errors.
    let r = c.post("/users/add", &[("csrf", &csrf), ("address", "x@elsewhere.test"), ("password", "pw"), ("password2", "pw")]).await;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("class=\"msg error\""));
    assert_eq!(srv.users().await.len(), 1);
    let r = c.post("/users/del", &[("csrf", &csrf), ("address", "alice@example.test")]).await;
    assert_eq!(r.status, 400, "deleting needs the confirmation box");
    assert_eq!(srv.users().await.len(), 1);
    let r = c.post("/users/del", &[("csrf", &csrf), ("address", "alice@example.test"), ("confirm", "yes")]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(srv.users().await.is_empty());

    // Cluster settings: domains through the form change cluster.toml; a
    // bad value shows an error and changes nothing.
    let r = c.get("/settings").await;
    assert!(r.body.contains("<form class=\"inline\" id=\"cluster-set-domains\""));
    assert!(r.body.contains("id=\"cluster-set-dns-tsig-secret\""));
    assert!(r.body.contains("id=\"node-set-rank\"") && r.body.contains("id=\"admin-passwd\""));
    let before = cluster_toml(&srv.root);
    for (k, v) in [("domains", "not a domain!"), ("domains", "   "), ("bogus", "1"), ("hostname", HOSTILE)] {
        let r = c.post("/settings/cluster", &[("csrf", &csrf), ("key", k), ("value", v)]).await;
        assert_eq!(r.status, 400, "{k} = {v}: {}", r.body);
        assert!(r.body.contains("<div id=\"result\" class=\"msg error\">"));
        assert!(!r.body.contains(HOSTILE));
        assert_eq!(cluster_toml(&srv.root), before, "{k} = {v} changed cluster.toml");
    }
    let r = c.post("/settings/cluster", &[("key", "domains"), ("value", "example.test, other.test")]).await;
    assert_eq!(r.status, 403);
    assert_eq!(cluster_toml(&srv.root), before);
    let r = c.post("/settings/cluster", &[("csrf", &csrf), ("key", "domains"), ("value", "example.test, other.test")]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let after: toml::Table = cluster_toml(&srv.root).parse().unwrap();
    assert_eq!(after["domains"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect::<Vec<_>>(), ["example.test", "other.test"]);
    // Node settings: into the config file.
    let r = c.post("/settings/node", &[("csrf", &csrf), ("key", "rank"), ("value", "x")]).await;
    assert_eq!(r.status, 400);
    let r = c.post("/settings/node", &[("csrf", &csrf), ("key", "rank"), ("value", "3")]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let node: toml::Table = std::fs::read_to_string(&srv.config).unwrap().parse().unwrap();
    assert_eq!(node["rank"].as_integer(), Some(3));

    // Queue: an id that is none is refused.
    let r = c.get("/queue").await;
    assert!(r.status == 200 && r.body.contains("id=\"queue\""));
    let r = c.post("/queue/retry", &[("csrf", &csrf), ("id", "../../etc")]).await;
    assert_eq!(r.status, 400);
    let r = c.post("/queue/retry", &[("csrf", &csrf), ("id", "1.2_3.n1")]).await;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("no queue entry"));

    // Certificate: shown; a broken upload (as a browser's multipart form)
    // is an error and changes nothing; a too large body is refused.
    let sha = {
        let root = srv.root.clone();
        tokio::task::spawn_blocking(move || StoreAccess::new(&root).cert_show().unwrap().sha256).await.unwrap()
    };
    let r = c.get("/cert").await;
    assert!(r.body.contains(&format!("<td id=\"cert-sha256\">{sha}</td>")), "{}", r.body);
    let boundary = "----b0undary";
    let body = format!("--{boundary}\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n{csrf}\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"pem\"\r\n\r\n-----BEGIN CERTIFICATE-----\r\nnonsense\r\n-----END CERTIFICATE-----\r\n\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"pem_file\"; filename=\"\"\r\nContent-Type: application/octet-stream\r\n\r\n\r\n--{boundary}--\r\n");
    let ct = format!("multipart/form-data; boundary={boundary}");
    let r = c.send("POST", "/cert/upload", Some(&ct), body.clone().into_bytes(), &[]).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("class=\"msg error\""));
    let r = c.send("POST", "/cert/upload", Some(&ct), body.replace(&csrf, "forged").into_bytes(), &[]).await;
    assert_eq!(r.status, 403);
    let r = c.post("/cert/upload", &[("csrf", &csrf), ("pem", &"A".repeat(web::MAX_BODY_BYTES + 1))]).await;
    assert_eq!(r.status, 413);
    let r = c.get("/cert").await;
    assert!(r.body.contains(&sha), "the certificate changed");

    // Actions: a process cannot reboot; the command says so.
    let r = c.get("/actions").await;
    assert!(r.body.contains("id=\"no-actions\""));
    let r = c.post("/actions/reboot", &[("csrf", &csrf), ("confirm", "yes")]).await;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("not on an appliance"), "{}", r.body);

    // The admin password: the current one is needed.
    let r = c.post("/settings/admin-passwd", &[("csrf", &csrf), ("current", PASSWORD), ("password", "new-pw"), ("password2", "other")]).await;
    assert_eq!(r.status, 400);
    let r = c.post("/settings/admin-passwd", &[("csrf", &csrf), ("current", PASSWORD), ("password", "new-pw"), ("password2", "new-pw")]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("admin password changed"));
    let hash = {
        let root = srv.root.clone();
        tokio::task::spawn_blocking(move || StoreAccess::new(&root).admin_hash().unwrap().unwrap()).await.unwrap()
    };
    assert!(admin::password::verify_password(&hash, "new-pw"));
    let mut other = srv.client();
    assert_eq!(other.login("new-pw").await.status, 303);
    srv.stop().await;
}

/// How long the page may take to answer while hostile clients hold
/// connections: far below what they held it for before (the handshake
/// deadline of 10 s, keep-alive and slow bodies for minutes).
const REACHABLE_WITHIN: Duration = Duration::from_secs(5);
/// Hostile connections opened from one address: more than the pool.
const HOSTILE_CONNECTIONS: usize = web::MAX_CONNECTIONS + 6;

/// How a hostile client holds a connection.
#[derive(Debug, Clone, Copy)]
enum Hold {
    /// Connects and sends nothing.
    Silent,
    /// One request answered, then the connection kept open, idle.
    KeepAlive,
    /// `POST /login` whose body comes a byte a second.
    SlowBody,
}

/// Opens a connection from `local` and holds it as `how`, saying on
/// `established` when it is (connected, answered, body begun; or failed);
/// ends when the server closes it.
async fn hold(addr: SocketAddr, tls: tokio_rustls::TlsConnector, local: IpAddr, how: Hold, established: tokio::sync::mpsc::UnboundedSender<()>) {
    let tcp = tcp_from(addr, local).await;
    let name = ServerName::try_from("mail.example.test").unwrap();
    let mut buf = [0u8; 1024];
    match how {
        Hold::Silent => {
            let _ = established.send(());
            let mut tcp = tcp;
            while matches!(tcp.read(&mut buf).await, Ok(n) if n > 0) {}
        }
        Hold::KeepAlive => {
            let answered = async {
                let tls = tls.connect(name, tcp).await.ok()?;
                let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.ok()?;
                let conn = tokio::spawn(conn);
                let req = hyper::Request::builder().uri("/login").header("host", addr.to_string()).body(Full::new(Bytes::new())).unwrap();
                let res = sender.send_request(req).await.ok()?;
                assert_eq!(res.status(), 200);
                res.into_body().collect().await.ok()?;
                Some((sender, conn))
            }
            .await;
            let _ = established.send(());
            if let Some((_sender, conn)) = answered {
                let _ = conn.await;
            }
        }
        Hold::SlowBody => {
            let Ok(tls) = tls.connect(name, tcp).await else {
                let _ = established.send(());
                return;
            };
            let (mut r, mut w) = tokio::io::split(tls);
            let head = format!("POST /login HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\ncsrf=");
            let begun = w.write_all(head.as_bytes()).await.is_ok() && w.flush().await.is_ok();
            let _ = established.send(());
            if !begun {
                return;
            }
            loop {
                tokio::select! {
                    n = r.read(&mut buf) => if !matches!(n, Ok(n) if n > 0) { return },
                    _ = tokio::time::sleep(Duration::from_secs(1)) => if w.write_all(b"a").await.is_err() || w.flush().await.is_err() { return },
                }
            }
        }
    }
}

/// Opens `n` connections at once from each of `from`, held as `how`;
/// returns when they are established (or after 30 s, when the server
/// does not take them all).
async fn attack(srv: &Server, from: &[&str], how: Hold, n: usize) -> Vec<tokio::task::JoinHandle<()>> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut held = Vec::new();
    for ip in from {
        for _ in 0..n {
            held.push(tokio::spawn(hold(srv.addr, srv.connector(), ip.parse().unwrap(), how, tx.clone())));
        }
    }
    let want = (from.len() * n).min(web::MAX_CONNECTIONS);
    let _ = tokio::time::timeout(Duration::from_secs(30), async {
        for _ in 0..want {
            rx.recv().await;
        }
    })
    .await;
    // Stragglers beyond the pool, if the server takes them.
    tokio::time::sleep(Duration::from_millis(500)).await;
    held
}

/// Connections of `held` the server has not closed.
async fn still_open(held: &[tokio::task::JoinHandle<()>]) -> usize {
    tokio::time::sleep(Duration::from_millis(500)).await;
    held.iter().filter(|h| !h.is_finished()).count()
}

async fn reachable_from(srv: &Server, local: &str, how: Hold) {
    let mut c = srv.client_from(local);
    let r = tokio::time::timeout(REACHABLE_WITHIN, c.get("/login")).await.unwrap_or_else(|_| panic!("{how:?}: no answer from {local} within {REACHABLE_WITHIN:?}"));
    assert_eq!(r.status, 200, "{how:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_shut_the_page_out() {
    let srv = start("n1", Duration::from_secs(60)).await;
    for how in [Hold::Silent, Hold::KeepAlive, Hold::SlowBody] {
        let held = attack(&srv, &["127.0.0.1"], how, HOSTILE_CONNECTIONS).await;
        // Another address of the same /24, and the attacker's own address
        // (it competes only with itself: its oldest connection gives way).
        reachable_from(&srv, "127.0.0.2", how).await;
        reachable_from(&srv, "127.0.0.1", how).await;
        let open = still_open(&held).await;
        assert!(open <= web::MAX_CONNECTIONS_PER_ADDRESS, "{how:?}: {open} connections of one address kept");
        for h in held {
            h.abort();
        }
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_full_of_a_few_networks_still_serves_another() {
    // Bodies may take long here: the pool stays full for the whole test.
    let limits = Limits { body: Duration::from_secs(300), ..Limits::default() };
    let srv = start_with("n1", WebConfig { limits, ..WebConfig::default() }).await;
    // Four /24s, two addresses each, each at its cap: every slot taken.
    let from = ["127.0.1.1", "127.0.1.2", "127.0.2.1", "127.0.2.2", "127.0.3.1", "127.0.3.2", "127.0.4.1", "127.0.4.2"];
    assert_eq!(from.len() * web::MAX_CONNECTIONS_PER_ADDRESS, web::MAX_CONNECTIONS);
    let held = attack(&srv, &from, Hold::SlowBody, web::MAX_CONNECTIONS_PER_ADDRESS).await;
    assert_eq!(still_open(&held).await, web::MAX_CONNECTIONS, "the pool takes them all");
    reachable_from(&srv, "127.0.9.1", Hold::SlowBody).await;
    assert_eq!(still_open(&held).await, web::MAX_CONNECTIONS - 1, "one connection gave way");
    for h in held {
        h.abort();
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_phase_of_a_connection_has_a_deadline() {
    let limit = Duration::from_secs(1);
    let ends_within = Duration::from_secs(8);
    let limits = Limits { handshake: limit, idle: limit, body: limit, requests_per_connection: 3, ..Limits::default() };
    let srv = start_with("n1", WebConfig { limits, ..WebConfig::default() }).await;
    let local: IpAddr = "127.0.0.1".parse().unwrap();
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    for how in [Hold::Silent, Hold::KeepAlive, Hold::SlowBody] {
        let h = tokio::spawn(hold(srv.addr, srv.connector(), local, how, tx.clone()));
        tokio::time::timeout(ends_within, h).await.unwrap_or_else(|_| panic!("{how:?}: connection not closed")).unwrap();
    }

    // Requests per connection: the last answer says so, and it ends.
    let tls = srv.connector().connect(ServerName::try_from("mail.example.test").unwrap(), tcp_from(srv.addr, local).await).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
    let conn = tokio::spawn(conn);
    for i in 1..=3 {
        let req = hyper::Request::builder().uri("/login").header("host", srv.addr.to_string()).body(Full::new(Bytes::new())).unwrap();
        sender.ready().await.unwrap();
        let res = sender.send_request(req).await.unwrap();
        assert_eq!(res.status(), 200);
        let close = res.headers().get("connection").is_some_and(|v| v == "close");
        assert_eq!(close, i == 3, "request {i}");
        res.into_body().collect().await.unwrap();
    }
    tokio::time::timeout(ends_within, conn).await.expect("closed after its last request").unwrap().unwrap();
    srv.stop().await;
}
