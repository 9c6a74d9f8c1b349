//! The DNS client against a real BIND 9 (`named`), as in production.
//!
//! Needs the Debian packages bind9 and bind9-dnsutils; fails (does not skip)
//! when `named` is missing.
//!
//! BIND runs in the foreground (`named -g`) as the invoking user with its
//! configuration, zone file and journal in a temporary directory. Debian
//! ships an AppArmor profile for /usr/sbin/named that only allows
//! /etc/bind and /var/cache/bind; where that profile is enforced, point
//! TMPDIR at a directory under /var/cache/bind so named may read and write
//! the files (the start-up failure message says so).

mod common;

use std::fs;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cluster::dns::query_current;
use common::*;

/// How long named may take to load the zone and answer.
const NAMED_STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between readiness probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(200);
/// Ports tried when named cannot bind the one picked.
const PORT_ATTEMPTS: usize = 3;

/// Kills named when the test ends, also on panic.
struct Named {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
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

impl Named {
    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A port free for both UDP and TCP on 127.0.0.1 right now.
fn free_port() -> u16 {
    for _ in 0..64 {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind UDP");
        let port = udp.local_addr().expect("local addr").port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on 127.0.0.1");
}

fn write_config(dir: &Path, port: u16) -> PathBuf {
    let d = dir.display();
    let conf = format!(
        r#"options {{
    directory "{d}";
    pid-file "{d}/named.pid";
    listen-on port {port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    recursion no;
    notify no;
    dnssec-validation no;
}};
controls {{ }};
key "{KEY_NAME}" {{
    algorithm hmac-sha256;
    secret "{KEY_SECRET}";
}};
key "{READONLY_KEY_NAME}" {{
    algorithm hmac-sha256;
    secret "{READONLY_KEY_SECRET}";
}};
zone "{ZONE}" {{
    type primary;
    file "{d}/{ZONE}.zone";
    allow-update {{ key "{KEY_NAME}"; }};
}};
"#
    );
    // Each node's own name (the MX targets) is static; BIND's integrity
    // check refuses an MX whose target has no address in the zone.
    let zone = format!(
        "$TTL 300\n\
         @   IN SOA ns1.{ZONE}. hostmaster.{ZONE}. 1 3600 600 604800 60\n\
         @   IN NS  ns1.{ZONE}.\n\
         ns1 IN A   127.0.0.1\n\
         {}",
        node_host_lines()
    );
    fs::write(dir.join(format!("{ZONE}.zone")), zone).expect("write zone");
    let path = dir.join("named.conf");
    fs::write(&path, conf).expect("write named.conf");
    path
}

fn node_host_lines() -> String {
    (1..=3u8)
        .map(|n| format!("mx{n} IN A {}\nmx{n} IN AAAA {}\n", node_v4(n), node_v6(n)))
        .collect()
}

/// Starts named on a free port and waits until it answers for the zone.
async fn start_named(dir: &Path) -> Named {
    let Some(named) = find_tool("named") else {
        panic!(
            "BIND 9 `named` is not installed; this test needs it: \
             apt-get install -y bind9 bind9-dnsutils"
        );
    };
    let mut last_log = String::new();
    for _ in 0..PORT_ATTEMPTS {
        let port = free_port();
        let conf = write_config(dir, port);
        let log = dir.join("named.log");
        let log_file = fs::File::create(&log).expect("create log");
        let child = Command::new(&named)
            .arg("-g")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log fd"))
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", named.display()));
        let mut server = Named {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            log,
        };
        let deadline = Instant::now() + NAMED_STARTUP_TIMEOUT;
        let mut probe = target(server.addr);
        probe.timeout = Duration::from_millis(500);
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                last_log = server.log_text();
                eprintln!("named exited ({status}) on port {port}:\n{last_log}");
                break;
            }
            if query_current(&probe, [BYSTANDER]).await.is_ok() {
                return server;
            }
            if Instant::now() >= deadline {
                panic!(
                    "named did not answer on {} within {NAMED_STARTUP_TIMEOUT:?}; log:\n{}",
                    server.addr,
                    server.log_text()
                );
            }
            tokio::time::sleep(PROBE_INTERVAL).await;
        }
    }
    panic!(
        "named did not start after {PORT_ATTEMPTS} tries. If the log shows permission \
         denied under the temporary directory, AppArmor confines named: set TMPDIR to a \
         directory under /var/cache/bind. Last log:\n{last_log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_against_bind() {
    let dir = tempfile::tempdir().expect("temp dir");
    let named = start_named(dir.path()).await;
    let target = target(named.addr);

    failover_scenario(&target).await;
    credential_errors(named.addr).await;
    readonly_key_refused(named.addr).await;

    // The records survived in BIND's journal: BIND itself still serves them.
    assert_server_has(&target, &node_state(&[1, 2, 3])).await;
    assert!(
        dir.path().join(format!("{ZONE}.zone.jnl")).exists(),
        "BIND wrote a journal"
    );
    drop(named);
}

#[tokio::test]
async fn timeouts_and_network_errors_are_classified() {
    transport_errors().await;
}
