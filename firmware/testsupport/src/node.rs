//! Test fixtures: a temporary store, `mailfort serve` nodes on free ports,
//! and the Python client scripts that drive them as real clients do.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long a node may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(60);

pub fn mailfort() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mailfort"))
}

/// Runs `mailfort ARGS` with `stdin` and returns its output.
pub fn run(args: &[&str], stdin: &str) -> Output {
    use std::io::Write;
    let mut c = mailfort().args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("run mailfort");
    // The command may exit before reading (a bad address): ignore EPIPE.
    let _ = c.stdin.take().expect("stdin").write_all(stdin.as_bytes());
    c.wait_with_output().expect("wait mailfort")
}

pub fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub store: PathBuf,
}

impl Fixture {
    /// A store for example.test with alice (password "secret") and bob
    /// (password "hunter2").
    pub fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = dir.path().join("store");
        let o = run(&["store", "init", store.to_str().expect("utf8 path"), "--domain", "example.test"], "");
        assert!(o.status.success(), "store init: {}", text(&o));
        let f = Fixture { dir, store };
        f.add_user("alice@example.test", "secret");
        f.add_user("bob@example.test", "hunter2");
        f
    }

    pub fn store_arg(&self) -> &str {
        self.store.to_str().expect("utf8 path")
    }

    pub fn add_user(&self, addr: &str, pw: &str) {
        let o = run(&["user", "add", "--store", self.store_arg(), addr, "--password-stdin"], &format!("{pw}\n"));
        assert!(o.status.success(), "user add: {}", text(&o));
    }

    /// A config file with short failure delays, so tests of wrong
    /// passwords stay quick.
    pub fn fast_config(&self, extra: &str) -> PathBuf {
        let p = self.dir.path().join(format!("node-{}.toml", rand_tag()));
        // Delivery to other domains is off unless a test sets it up: the
        // queue runner would otherwise try the tests' made-up domains.
        let outbound = if extra.contains("[outbound]") { "" } else { "[outbound]\nenabled = false\n" };
        std::fs::write(&p, format!("[limits]\nauth_fail_delay_ms = 100\nauth_fail_delay_max_ms = 400\n{extra}\n{outbound}")).expect("write config");
        p
    }

    /// Files in alice's (or anyone's) new/ and cur/.
    pub fn mailbox_files(&self, addr: &str) -> Vec<PathBuf> {
        let (local, domain) = addr.split_once('@').expect("address");
        let md = self.store.join("mail").join(domain).join(local);
        let mut v = Vec::new();
        for sub in ["new", "cur"] {
            if let Ok(rd) = std::fs::read_dir(md.join(sub)) {
                v.extend(rd.flatten().map(|e| e.path()));
            }
        }
        v.sort();
        v
    }
}

fn rand_tag() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

pub struct Node {
    pub child: Child,
    pub name: String,
    pub smtp: SocketAddr,
    pub submission: SocketAddr,
    pub submissions: SocketAddr,
    pub pop3: SocketAddr,
    pub pop3s: SocketAddr,
    /// The admin page (only with `--admin`).
    pub admin: SocketAddr,
    pub log: PathBuf,
}

impl Node {
    /// Starts `mailfort serve` with every service on a free loopback port.
    pub fn start(f: &Fixture, name: &str, extra: &[&str]) -> Node {
        let log = f.dir.path().join(format!("{name}.log"));
        let logf = std::fs::OpenOptions::new().create(true).append(true).open(&log).expect("log file");
        let has = |flag: &str| extra.contains(&flag);
        let mut args: Vec<String> = ["serve", "--node", name].iter().map(|s| s.to_string()).collect();
        if !has("--store") {
            args.extend(["--store".to_string(), f.store_arg().to_string()]);
        }
        for svc in ["--smtp", "--submission", "--submissions", "--pop3", "--pop3s"] {
            if !has(svc) {
                args.push(svc.into());
                args.push("127.0.0.1:0".into());
            }
        }
        if !has("--config") {
            let quiet = f.dir.path().join(format!("{name}-default.toml"));
            std::fs::write(&quiet, "[outbound]\nenabled = false\n").expect("write config");
            args.extend(["--config".to_string(), quiet.to_str().expect("utf8 path").to_string()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut child = mailfort().args(&args).stdout(Stdio::piped()).stderr(logf).spawn().expect("spawn mailfort serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("ready ") {
                    let _ = tx.send(line);
                }
            }
        });
        let ready = match rx.recv_timeout(START_TIMEOUT) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                panic!("node {name} did not start: {}", std::fs::read_to_string(&log).unwrap_or_default());
            }
        };
        let addr = |svc: &str| -> SocketAddr {
            ready
                .split_whitespace()
                .find_map(|kv| kv.strip_prefix(&format!("{svc}=")))
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| "127.0.0.1:9".parse().expect("addr"))
        };
        Node { name: name.to_string(), smtp: addr("smtp"), submission: addr("submission"), submissions: addr("submissions"), pop3: addr("pop3"), pop3s: addr("pop3s"), admin: addr("admin"), child, log }
    }

    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("SMTP".into(), self.smtp.to_string()),
            ("SUBMISSION".into(), self.submission.to_string()),
            ("SUBMISSIONS".into(), self.submissions.to_string()),
            ("POP3".into(), self.pop3.to_string()),
            ("POP3S".into(), self.pop3s.to_string()),
        ]
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: sending a signal to our own child process.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    /// Waits for the node to exit, up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let start = std::time::Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn py_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("py")
}

/// Runs a Python client script against `node` with extra environment, and
/// fails the test with the script's output if the script fails.
pub fn python(script: &str, node: &Node, f: &Fixture, extra_env: &[(&str, &str)]) -> String {
    let mut c = Command::new("python3");
    c.arg(py_dir().join(script)).env("STORE", &f.store).env("PYTHONDONTWRITEBYTECODE", "1");
    for (k, v) in node.env() {
        c.env(k, v);
    }
    for (k, v) in extra_env {
        c.env(k, v);
    }
    let o = c.output().expect("python3 must be installed");
    let out = text(&o);
    assert!(o.status.success(), "{script} failed:\n{out}\n--- node log ---\n{}", node.log_text());
    out
}

/// A raw line client on a plain TCP connection, for tests that must act
/// between protocol steps (signals, timeouts) or look at exact bytes.
/// Every read has a timeout, so a silent server fails the test instead of
/// hanging it.
pub struct Wire {
    pub sock: std::net::TcpStream,
    buf: Vec<u8>,
}

impl Wire {
    pub fn connect(addr: SocketAddr) -> Wire {
        Wire::try_connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
    }

    pub fn try_connect(addr: SocketAddr) -> std::io::Result<Wire> {
        let sock = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
        Wire::from_stream(sock)
    }

    /// A connection to `addr` from the local address `source` (any of
    /// 127.0.0.0/8 on loopback), for tests of per-address and per-network
    /// limits.
    pub fn connect_from(source: std::net::Ipv4Addr, addr: SocketAddr) -> std::io::Result<Wire> {
        use std::os::fd::FromRawFd;
        let std::net::SocketAddr::V4(dst) = addr else { panic!("IPv4 only: {addr}") };
        let sin = |ip: std::net::Ipv4Addr, port: u16| libc::sockaddr_in { sin_family: libc::AF_INET as libc::sa_family_t, sin_port: port.to_be(), sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(ip.octets()) }, sin_zero: [0; 8] };
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        // SAFETY: plain socket calls on a descriptor this function owns; on
        // success it is handed to a TcpStream, which closes it.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let sock = std::net::TcpStream::from_raw_fd(fd);
            let src = sin(source, 0);
            if libc::bind(fd, &src as *const libc::sockaddr_in as *const libc::sockaddr, len) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let to = sin(*dst.ip(), dst.port());
            if libc::connect(fd, &to as *const libc::sockaddr_in as *const libc::sockaddr, len) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Wire::from_stream(sock)
        }
    }

    /// A client on a connection made elsewhere (from a chosen source
    /// address, say), with the same timeouts.
    pub fn from_stream(sock: std::net::TcpStream) -> std::io::Result<Wire> {
        sock.set_read_timeout(Some(Duration::from_secs(20)))?;
        sock.set_write_timeout(Some(Duration::from_secs(20)))?;
        Ok(Wire { sock, buf: Vec::new() })
    }

    pub fn send(&mut self, data: &[u8]) {
        use std::io::Write;
        self.sock.write_all(data).expect("send to the node");
    }

    /// The next line without its line end, or an error on EOF / timeout.
    pub fn try_line(&mut self) -> std::io::Result<String> {
        use std::io::Read;
        loop {
            if let Some(p) = self.buf.iter().position(|&b| b == b'\n') {
                let mut l: Vec<u8> = self.buf.drain(..=p).collect();
                l.pop();
                if l.last() == Some(&b'\r') {
                    l.pop();
                }
                return Ok(String::from_utf8_lossy(&l).into_owned());
            }
            let mut chunk = [0u8; 16384];
            let n = self.sock.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, format!("connection closed; buffered {:?}", String::from_utf8_lossy(&self.buf))));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    pub fn line(&mut self) -> String {
        self.try_line().unwrap_or_else(|e| panic!("reading a line from the node: {e}"))
    }

    /// Sends a command line and returns the one-line reply (POP3).
    pub fn cmd(&mut self, c: &str) -> String {
        self.send(format!("{c}\r\n").as_bytes());
        self.line()
    }

    /// One SMTP reply: (code, all lines joined with '\n').
    pub fn reply(&mut self) -> (u16, String) {
        let mut all = Vec::new();
        loop {
            let l = self.line();
            let code: u16 = l.get(..3).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("not an SMTP reply: {l:?}"));
            let more = l.as_bytes().get(3) == Some(&b'-');
            all.push(l);
            if !more {
                return (code, all.join("\n"));
            }
        }
    }

    /// Sends an SMTP command and returns its reply.
    pub fn smtp(&mut self, c: &str) -> (u16, String) {
        self.send(format!("{c}\r\n").as_bytes());
        self.reply()
    }

    /// Whether the node closes the connection (EOF or reset) within
    /// `timeout`; bytes that arrive meanwhile are returned as well.
    pub fn closed_within(&mut self, timeout: Duration) -> (bool, Vec<u8>) {
        use std::io::Read;
        let end = std::time::Instant::now() + timeout;
        let mut got = std::mem::take(&mut self.buf);
        loop {
            let left = end.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return (false, got);
            }
            self.sock.set_read_timeout(Some(left.max(Duration::from_millis(1)))).expect("set timeout");
            let mut chunk = [0u8; 16384];
            match self.sock.read(&mut chunk) {
                Ok(0) => return (true, got),
                Ok(n) => got.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => return (false, got),
                Err(_) => return (true, got),
            }
        }
    }
}

/// Polls `cond` every 50 ms for up to `timeout`; true once it holds.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if std::time::Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The TSIG key the tests' BIND accepts updates with.
pub const TSIG_KEY_NAME: &str = "mailfort-announcer.";
/// 32 random octets, base64.
pub const TSIG_KEY_SECRET: &str = "q3Fv2m0u1yRk9Yc3o6bD0i9H1pX7rT2sN4wL8eJ5aZE=";

#[allow(unused_imports)]
pub use testdns::{free_udp_tcp_port, Named};

/// Starts named on 127.0.0.1:`port` serving `zones` (name, zone file
/// text; every zone dynamic with the test TSIG key), fresh each time.
pub fn start_named(dir: &Path, port: u16, zones: &[(&str, &str)]) -> Named {
    let zones: Vec<testdns::Zone> = zones.iter().map(|(name, text)| testdns::Zone { name, text, update_key: Some(TSIG_KEY_NAME) }).collect();
    testdns::start_on(dir, port, &[testdns::Key { name: TSIG_KEY_NAME, secret: TSIG_KEY_SECRET }], &zones)
}

/// `dig +short` against the test's BIND on 127.0.0.1:`port`.
pub fn dig(port: u16, rtype: &str, name: &str) -> String {
    let o = Command::new("dig").args(["@127.0.0.1", "-p", &port.to_string(), "+short", "+tries=1", "+time=2", rtype, name]).output().expect("dig is installed with bind9-dnsutils");
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// Waits until `cond` holds, failing the test after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, cond: impl Fn() -> bool) {
    let start = std::time::Instant::now();
    while !cond() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
