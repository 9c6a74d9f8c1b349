//! `mailfort serve` nodes: every service on a loopback port the node
//! picks itself (port 0), found from its `ready` line.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::store::{mailfort, Fixture};

/// How long a node may take to start listening.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Node {
    pub child: Child,
    pub name: String,
    pub smtp: SocketAddr,
    pub submission: SocketAddr,
    pub submissions: SocketAddr,
    pub pop3: SocketAddr,
    pub pop3s: SocketAddr,
    pub imap: SocketAddr,
    pub imaps: SocketAddr,
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
        for svc in ["--smtp", "--submission", "--submissions", "--pop3", "--pop3s", "--imap", "--imaps"] {
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
        Node { name: name.to_string(), smtp: addr("smtp"), submission: addr("submission"), submissions: addr("submissions"), pop3: addr("pop3"), pop3s: addr("pop3s"), imap: addr("imap"), imaps: addr("imaps"), admin: addr("admin"), child, log }
    }

    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("SMTP".into(), self.smtp.to_string()),
            ("SUBMISSION".into(), self.submission.to_string()),
            ("SUBMISSIONS".into(), self.submissions.to_string()),
            ("POP3".into(), self.pop3.to_string()),
            ("POP3S".into(), self.pop3s.to_string()),
            ("IMAP".into(), self.imap.to_string()),
            ("IMAPS".into(), self.imaps.to_string()),
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
        crate::wait::exit_within(&mut self.child, timeout)
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

