//! For tests only: a throwaway BIND 9 `named` in the foreground on
//! 127.0.0.1, serving the zones a test writes, with the TSIG keys it names,
//! stopped when dropped. The DNS tests of several crates use it; it runs
//! the real server, never a stand-in.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long named may take to load its zones and say it runs.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Ports tried when one turns out to be taken meanwhile.
pub const PORT_ATTEMPTS: usize = 5;
const PROBE_INTERVAL: Duration = Duration::from_millis(50);

/// A TSIG key (RFC 8945) the server knows, hmac-sha256.
#[derive(Debug, Clone, Copy)]
pub struct Key<'a> {
    pub name: &'a str,
    /// Base64.
    pub secret: &'a str,
}

/// One primary zone: its name, the zone file's text, and the key that
/// may update it (RFC 2136), if any.
#[derive(Debug, Clone, Copy)]
pub struct Zone<'a> {
    pub name: &'a str,
    pub text: &'a str,
    pub update_key: Option<&'a str>,
}

/// A running named; killed on drop (its log printed if the test panics).
pub struct Named {
    child: Child,
    pub addr: SocketAddr,
    pub port: u16,
    pub dir: PathBuf,
    log: PathBuf,
}

impl Named {
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Named {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("named log:\n{}", self.log_text());
        }
    }
}

/// A program on PATH or in the usual system directories.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).chain(["/usr/sbin", "/usr/bin", "/sbin"].iter().map(PathBuf::from)).map(|dir| dir.join(name)).find(|p| p.is_file())
}

/// A port free for both UDP and TCP on 127.0.0.1 right now.
pub fn free_udp_tcp_port() -> u16 {
    for _ in 0..64 {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind UDP");
        let port = udp.local_addr().expect("local addr").port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on 127.0.0.1");
}

fn write_config(dir: &Path, port: u16, keys: &[Key], zones: &[Zone]) -> PathBuf {
    let d = dir.display();
    let mut conf = format!(
        "options {{ directory \"{d}\"; pid-file \"{d}/named.pid\"; listen-on port {port} {{ 127.0.0.1; }}; listen-on-v6 {{ none; }}; recursion no; notify no; dnssec-validation no; }};\ncontrols {{ }};\n"
    );
    for k in keys {
        conf.push_str(&format!("key \"{}\" {{ algorithm hmac-sha256; secret \"{}\"; }};\n", k.name, k.secret));
    }
    for z in zones {
        let update = z.update_key.map(|k| format!(" allow-update {{ key \"{k}\"; }};")).unwrap_or_default();
        conf.push_str(&format!("zone \"{}\" {{ type primary; file \"{d}/{}.zone\";{update} }};\n", z.name, z.name));
        std::fs::write(dir.join(format!("{}.zone", z.name)), z.text).expect("write zone");
        // A journal from an earlier run would replay old updates.
        let _ = std::fs::remove_file(dir.join(format!("{}.zone.jnl", z.name)));
    }
    let path = dir.join("named.conf");
    std::fs::write(&path, conf).expect("write named.conf");
    path
}

/// Starts named on `port`; None if it exited (the port was taken).
fn try_start(dir: &Path, port: u16, keys: &[Key], zones: &[Zone]) -> Option<Named> {
    let Some(named) = find_tool("named") else {
        panic!("BIND 9 `named` is not installed; the tests need it (scripts/test installs it: apt-get install -y bind9 bind9-dnsutils)");
    };
    let conf = write_config(dir, port, keys, zones);
    let log = dir.join("named.log");
    let log_file = std::fs::File::create(&log).expect("create named.log");
    let child = Command::new(&named)
        .arg("-g")
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().expect("log fd"))
        .stderr(log_file)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", named.display()));
    let mut server = Named { child, addr: SocketAddr::from(([127, 0, 0, 1], port)), port, dir: dir.to_path_buf(), log };
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        let text = server.log_text();
        if let Ok(Some(status)) = server.child.try_wait() {
            eprintln!("named exited ({status}) on port {port}:\n{text}");
            return None;
        }
        // named -g logs "running" once every zone is loaded and it answers.
        if text.lines().any(|l| l.ends_with("running")) {
            for z in zones {
                assert!(text.contains(&format!("zone {}/IN: loaded serial", z.name)), "named did not load the zone {}:\n{text}", z.name);
            }
            return Some(server);
        }
        assert!(Instant::now() < deadline, "named did not start within {STARTUP_TIMEOUT:?}; log:\n{text}");
        std::thread::sleep(PROBE_INTERVAL);
    }
}

/// Starts named on a free port, trying another when one is taken.
pub fn start(dir: &Path, keys: &[Key], zones: &[Zone]) -> Named {
    for _ in 0..PORT_ATTEMPTS {
        if let Some(n) = try_start(dir, free_udp_tcp_port(), keys, zones) {
            return n;
        }
    }
    panic!(
        "named did not start after {PORT_ATTEMPTS} tries. If the log shows permission denied under the \
         temporary directory, AppArmor confines named: set TMPDIR to a directory under /var/cache/bind."
    );
}

/// Starts named on the given port (a test that wrote it into other
/// settings first).
pub fn start_on(dir: &Path, port: u16, keys: &[Key], zones: &[Zone]) -> Named {
    try_start(dir, port, keys, zones).unwrap_or_else(|| panic!("named could not start on port {port}"))
}
