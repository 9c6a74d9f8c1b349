//! A throwaway BIND 9 `named` in the foreground on 127.0.0.1, serving the
//! zones a test writes, with the TSIG keys it names, stopped when dropped.
//! The DNS tests of several crates use it; it runs the real server, never
//! a stand-in.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::ports::{self, free_udp_tcp_port, Taken};

/// How long named may take to load its zones and say it runs.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
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

/// Starts named on `port`; `Taken` if it exited (the port was taken).
fn try_start(dir: &Path, port: u16, keys: &[Key], zones: &[Zone]) -> Result<Named, Taken> {
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
            return Err(Taken(format!("named exited ({status}) on port {port}:\n{text}")));
        }
        // named -g logs "running" once every zone is loaded and it answers.
        if text.lines().any(|l| l.ends_with("running")) {
            for z in zones {
                assert!(text.contains(&format!("zone {}/IN: loaded serial", z.name)), "named did not load the zone {}:\n{text}", z.name);
            }
            return Ok(server);
        }
        assert!(Instant::now() < deadline, "named did not start within {STARTUP_TIMEOUT:?}; log:\n{text}");
        std::thread::sleep(PROBE_INTERVAL);
    }
}

/// Starts named on a free port, trying another when one is taken.
pub fn start(dir: &Path, keys: &[Key], zones: &[Zone]) -> Named {
    ports::retry(
        "named (if its log shows permission denied under the temporary directory, AppArmor confines \
         named: set TMPDIR to a directory under /var/cache/bind)",
        || try_start(dir, free_udp_tcp_port(), keys, zones),
    )
}

/// Starts named again on the port it had (a test that wrote the port into
/// other settings, or restarts the server).
pub fn start_on(dir: &Path, port: u16, keys: &[Key], zones: &[Zone]) -> Named {
    try_start(dir, port, keys, zones).unwrap_or_else(|Taken(why)| panic!("named could not start on port {port}: {why}"))
}

/// The TSIG key the tests' BIND accepts updates with.
pub const TSIG_KEY_NAME: &str = "mailfort-announcer.";
/// 32 random octets, base64.
pub const TSIG_KEY_SECRET: &str = "q3Fv2m0u1yRk9Yc3o6bD0i9H1pX7rT2sN4wL8eJ5aZE=";
const TEST_KEYS: [Key<'static>; 1] = [Key { name: TSIG_KEY_NAME, secret: TSIG_KEY_SECRET }];

fn dynamic<'a>(zones: &'a [(&'a str, &'a str)]) -> Vec<Zone<'a>> {
    zones.iter().map(|(name, text)| Zone { name, text, update_key: Some(TSIG_KEY_NAME) }).collect()
}

/// Starts named on a free port serving `zones` (name, zone file text;
/// every zone dynamic with the test TSIG key), fresh each time.
pub fn start_named(dir: &Path, zones: &[(&str, &str)]) -> Named {
    start(dir, &TEST_KEYS, &dynamic(zones))
}

/// [`start_named`] on a given port: the server restarted where the
/// clients look for it.
pub fn start_named_on(dir: &Path, port: u16, zones: &[(&str, &str)]) -> Named {
    start_on(dir, port, &TEST_KEYS, &dynamic(zones))
}

/// How long one `dig` may wait for each answer, in seconds.
const DIG_TIME_SECS: u32 = 2;

/// `dig +short` against the test's BIND on 127.0.0.1:`port`.
pub fn dig(port: u16, rtype: &str, name: &str) -> String {
    let dig = find_tool("dig").expect("dig is installed with bind9-dnsutils");
    let o = Command::new(dig)
        .args(["@127.0.0.1", "-p", &port.to_string(), "+short", "+tries=1", &format!("+time={DIG_TIME_SECS}"), rtype, name])
        .output()
        .expect("run dig");
    String::from_utf8_lossy(&o.stdout).to_string()
}
