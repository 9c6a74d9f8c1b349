//! The patent's claims, run as a user would: `mailfort demo` (three nodes
//! and the embedded DNS server), and separately nodes announcing to a real
//! BIND 9, and a store that fails under one node.

mod common;
use common::*;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
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

fn free_udp_tcp_port() -> u16 {
    for _ in 0..64 {
        let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let p = u.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
    panic!("no free port");
}

fn field_after<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace().skip_while(|w| *w != key).nth(1).unwrap_or_else(|| panic!("no {key} in {line}"))
}

#[test]
fn demo_failover_keeps_every_message() {
    let dir = tempfile::tempdir().unwrap();
    let dns_port = free_udp_tcp_port();
    // Node ports are 2525 + offset (+10000, +20000 for nodes 2 and 3).
    let offset = 3000 + (std::process::id() % 2000) as u16;
    let mut child = mailfort()
        .args(["demo", "--dir", dir.path().join("demo").to_str().unwrap(), "--dns", &format!("127.0.0.1:{dns_port}"), "--port-offset", &offset.to_string()])
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
    let user_line = demo.wait_line("the demo user", Duration::from_secs(60), |l| l.contains("demo user"));
    let password = field_after(&user_line, "password").to_string();
    // The banner's table: the pid column is the one headed `pid`.
    let header = demo.wait_line("the node table", Duration::from_secs(5), |l| l.trim_start().starts_with("node ") && l.contains(" pid"));
    let pid_col = header.split_whitespace().position(|w| w == "pid").expect("pid column");
    let node1_line = demo.wait_line("node1's row", Duration::from_secs(5), |l| l.trim_start().starts_with("node1 "));
    let node1_pid = node1_line.split_whitespace().nth(pid_col).unwrap().to_string();
    demo.wait_line("the full MX set", Duration::from_secs(60), |l| l.contains("DNS MX example.test: 10 node1.example.test, 20 node2.example.test, 30 node3.example.test"));

    let state = dir.path().join("state.json");
    let run = |demo: &Demo, phase: &str| {
        let mut c = Command::new("python3");
        c.arg(py_dir().join("cluster_failover.py")).arg(phase);
        c.env("PASSWORD", &password).env("DNS", format!("127.0.0.1:{dns_port}")).env("STATE_FILE", &state).env("NODE1_PID", &node1_pid);
        for i in 0..3u16 {
            c.env(format!("N{}_SMTP", i + 1), (2525 + offset + i * 10_000).to_string());
            c.env(format!("N{}_POP3", i + 1), (2110 + offset + i * 10_000).to_string());
        }
        c.env("PYTHONPATH", py_dir()).env("PYTHONDONTWRITEBYTECODE", "1");
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
