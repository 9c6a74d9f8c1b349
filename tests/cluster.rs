//! The patent's claims, run as a user would: `mailfort demo` (three nodes
//! and the embedded DNS server), and separately nodes announcing to a real
//! BIND 9, and a store that fails under one node.

use testsupport::prelude::*;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running `mailfort demo` whose output is collected line by line.
struct Demo {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Demo {
    fn wait_line(&self, what: &str, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            if let Some(l) = self.lines.lock().unwrap().iter().find(|l| pred(l)) {
                return l.clone();
            }
            assert!(start.elapsed() < timeout, "demo never printed {what}; output:\n{}", self.lines.lock().unwrap().join("\n"));
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn type_line(&mut self, s: &str) {
        let stdin = self.child.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{s}").expect("type into demo");
        stdin.flush().expect("flush");
    }

    fn output(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        // SAFETY: signalling our own child; SIGINT is Ctrl-C.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGINT);
        }
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(15) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The demo's fixed port layout (`mailfort demo`): node 1's ports, and
/// what each further node adds; `--port-offset` moves all of them.
const DEMO_BASE_PORTS: [u16; 6] = [2525, 2587, 2465, 2110, 2995, 2443];
const DEMO_NODE_STEP: u16 = 10_000;
const DEMO_NODES: u16 = 3;
/// Offsets tried: every port stays below the kernel's ephemeral range
/// (32768 up), where client connections take their ports.
const DEMO_OFFSETS: std::ops::Range<u16> = 1_000..9_000;
/// How long the demo may take to have every node in DNS.
const DEMO_START_TIMEOUT: Duration = Duration::from_secs(60);

fn demo_ports(offset: u16) -> Vec<u16> {
    (0..DEMO_NODES).flat_map(|i| DEMO_BASE_PORTS.iter().map(move |p| p + i * DEMO_NODE_STEP + offset)).collect()
}

/// An offset whose every demo port is free right now, picked at random.
fn free_demo_offset() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    for _ in 0..64 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        let span = DEMO_OFFSETS.end - DEMO_OFFSETS.start;
        let offset = DEMO_OFFSETS.start + (h.finish() % u64::from(span)) as u16;
        if testsupport::ports::tcp_ports_free(&demo_ports(offset)) {
            return offset;
        }
    }
    panic!("no port offset with every demo port free");
}

impl Demo {
    /// `mailfort demo` in `dir` with its DNS server on `dns_port`, running
    /// once every node is in the MX set; `Taken` if a node or the DNS
    /// server could not start (a port taken meanwhile).
    fn start(dir: &std::path::Path, dns_port: u16, offset: u16) -> Result<Demo, testsupport::ports::Taken> {
        let mut child = mailfort()
            .args(["demo", "--dir", dir.to_str().unwrap(), "--dns", &format!("127.0.0.1:{dns_port}"), "--port-offset", &offset.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l2 = lines.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                l2.lock().unwrap().push(l);
            }
        });
        let mut demo = Demo { child, lines };
        let full = |l: &str| l.contains("DNS MX example.test: 10 node1.example.test, 20 node2.example.test, 30 node3.example.test");
        // A node that cannot bind its ports exits at once, and the demo says so.
        let failed = |l: &str| l.contains(" process exited");
        let up = wait_until(DEMO_START_TIMEOUT, || {
            let lines = demo.lines.lock().unwrap();
            lines.iter().any(|l| full(l) || failed(l)) || matches!(demo.child.try_wait(), Ok(Some(_)))
        });
        let lines = demo.output();
        if up && lines.lines().any(full) && !lines.lines().any(failed) {
            return Ok(demo);
        }
        assert!(up, "the demo did not have every node in DNS within {DEMO_START_TIMEOUT:?}; output:\n{lines}");
        let _ = demo.child.kill();
        Err(testsupport::ports::Taken(format!("demo with DNS on {dns_port}, port offset {offset}:\n{lines}")))
    }
}

fn field_after<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace().skip_while(|w| *w != key).nth(1).unwrap_or_else(|| panic!("no {key} in {line}"))
}

#[test]
fn demo_failover_keeps_every_message() {
    let dir = tempfile::tempdir().unwrap();
    let mut attempt = 0;
    let (demo, dns_port) = testsupport::ports::retry("mailfort demo", || {
        attempt += 1;
        let (dns_port, offset) = (free_udp_tcp_port(), free_demo_offset());
        Demo::start(&dir.path().join(format!("demo-{attempt}")), dns_port, offset).map(|d| (d, dns_port))
    });
    let mut demo = demo;
    let user_line = demo.wait_line("the demo user", Duration::from_secs(5), |l| l.contains("demo user"));
    let password = field_after(&user_line, "password").to_string();
    // The banner's table: the pid column is the one headed `pid`.
    let header = demo.wait_line("the node table", Duration::from_secs(5), |l| l.trim_start().starts_with("node ") && l.contains(" pid"));
    let col = |name: &str| header.split_whitespace().position(|w| w == name).unwrap_or_else(|| panic!("no {name} column in {header:?}"));
    let row = |node: &str| demo.wait_line(&format!("{node}'s row"), Duration::from_secs(5), |l| l.trim_start().starts_with(&format!("{node} "))).split_whitespace().map(str::to_string).collect::<Vec<_>>();
    let rows: Vec<Vec<String>> = (1..=DEMO_NODES).map(|i| row(&format!("node{i}"))).collect();
    let node1_pid = rows[0][col("pid")].clone();
    let (smtp_col, pop3_col) = (col("smtp"), col("pop3"));

    let state = dir.path().join("state.json");
    let run = |demo: &Demo, phase: &str| {
        let mut c = testsupport::python::script("cluster_failover.py");
        c.arg(phase);
        c.env("PASSWORD", &password).env("DNS", format!("127.0.0.1:{dns_port}")).env("STATE_FILE", &state).env("NODE1_PID", &node1_pid);
        for (i, r) in rows.iter().enumerate() {
            c.env(format!("N{}_SMTP", i + 1), &r[smtp_col]).env(format!("N{}_POP3", i + 1), &r[pop3_col]);
        }
        let o = c.output().expect("python3");
        let t = text(&o);
        println!("{t}");
        assert!(o.status.success(), "phase {phase} failed:\n{t}\n--- demo ---\n{}", demo.output());
        t
    };
    let t = run(&demo, "outage");
    assert!(t.contains("ok all 120 accepted messages readable via node2"), "{t}");
    // The demo saw node1 die and the MX set change.
    demo.wait_line("node1's death", Duration::from_secs(10), |l| l.contains("node1 process killed by signal 9"));
    demo.wait_line("the MX set without node1", Duration::from_secs(10), |l| l.contains("DNS MX example.test: 20 node2.example.test, 30 node3.example.test"));
    demo.type_line("start 1");
    demo.wait_line("node1 restarted", Duration::from_secs(10), |l| l.contains("started node1"));
    let t = run(&demo, "recovered");
    assert!(t.contains("ok node1 delivers again"), "{t}");
    demo.type_line("status");
    demo.wait_line("a status row", Duration::from_secs(10), |l| l.contains("node1  rank 1") && l.contains("live"));
}
