//! Nodes announcing to a real BIND 9, and a store that fails under one
//! node only.

use testsupport::prelude::*;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const WRONG_SECRET: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
const KEY_SECRET: &str = TSIG_KEY_SECRET;
const KEY_NAME: &str = TSIG_KEY_NAME;
const WAIT: Duration = Duration::from_secs(30);
const ZONE: &str = "$TTL 300\n@ IN SOA ns1.example.test. hostmaster.example.test. 1 3600 600 604800 60\n@ IN NS ns1.example.test.\nns1 IN A 127.0.0.1\n";

fn bind(dir: &Path) -> Named {
    start_named(dir, &[("example.test", ZONE)])
}

/// BIND again where the nodes look for it.
fn bind_again(dir: &Path, port: u16) -> Named {
    testsupport::dns::start_named_on(dir, port, &[("example.test", ZONE)])
}

fn mx(port: u16) -> Vec<String> {
    let mut v: Vec<String> = dig(port, "MX", "example.test").lines().map(|l| l.trim().to_string()).collect();
    v.sort();
    v
}

fn wait(what: &str, cond: impl Fn() -> bool) {
    wait_for(what, WAIT, cond)
}

fn set_dns(f: &Fixture, port: u16, secret: &str) {
    let o = run(&["cluster", "set-dns", "--store", f.store_arg(), "--server", &format!("127.0.0.1:{port}"), "--zone", "example.test", "--key-name", KEY_NAME, "--key-secret", secret, "--recheck-secs", "2"], "");
    assert!(o.status.success(), "{}", text(&o));
}

/// The nodes `cluster status` shows as live (its STATE column).
fn live_count(st: &str) -> usize {
    st.lines().filter(|l| l.split_whitespace().nth(2) == Some("live")).count()
}

fn status(f: &Fixture) -> String {
    let o = run(&["cluster", "status", "--store", f.store_arg()], "");
    assert!(o.status.success(), "{}", text(&o));
    text(&o)
}

#[test]
fn bind_follows_the_live_set() {
    let f = Fixture::new();
    let bind_dir = f.dir.path().join("bind");
    std::fs::create_dir(&bind_dir).unwrap();
    let named = bind(&bind_dir);
    let port = named.port;
    set_dns(&f, port, KEY_SECRET);
    let n1 = Node::start(&f, "node1", &["--rank", "1"]);
    let _n2 = Node::start(&f, "node2", &["--rank", "2"]);
    let _n3 = Node::start(&f, "node3", &["--rank", "3"]);
    let all = vec!["10 node1.example.test.", "20 node2.example.test.", "30 node3.example.test."];
    wait("three MX records in BIND", || mx(port) == all);
    assert_eq!(dig(port, "A", "mail.example.test").trim(), "127.0.0.1");
    assert_eq!(dig(port, "A", "node2.example.test").trim(), "127.0.0.1");
    // The update is logged once, saying what changed, with the words
    // "DNS updated" once.
    let updated = |n: &Node| n.log_text().contains("DNS updated: ");
    wait("a logged DNS update", || updated(&n1) || updated(&_n2) || updated(&_n3));
    for n in [&n1, &_n2, &_n3] {
        assert!(!n.log_text().contains("DNS updated: DNS updated"), "{}", n.log_text());
    }
    let st = status(&f);
    assert_eq!(live_count(&st), 3, "{st}");
    assert!(st.contains("announcer lease: node"), "{st}");

    // SIGKILL the preferred node (which took the announcer lease first).
    n1.signal(libc::SIGKILL);
    let killed = Instant::now();
    wait("BIND to drop node1", || mx(port) == all[1..].to_vec());
    println!("BIND dropped the killed node after {:.1}s", killed.elapsed().as_secs_f64());
    let st = status(&f);
    assert!(st.lines().any(|l| l.starts_with("node1") && l.contains(" dead ")), "{st}");
    assert!(!st.contains("announcer lease: node1"), "{st}");

    // node1 returns.
    let n1b = Node::start(&f, "node1", &["--rank", "1"]);
    wait("BIND to list node1 again", || mx(port) == all);

    // A DNS server restarted with old data is corrected by the re-check.
    drop(named);
    let named = bind_again(&bind_dir, port);
    assert!(mx(port).is_empty());
    wait("the announcer to restore the records", || mx(port) == all);

    // A refused update is logged with the reason and retried.
    set_dns(&f, port, WRONG_SECRET);
    wait("a logged TSIG refusal", || [&n1b, &_n2, &_n3].iter().any(|n| n.log_text().contains("BADSIG")));
    // `cluster status` shows it too (the console's report, one code path).
    let dns_line = |st: &str| st.lines().find(|l| l.starts_with("DNS: ")).map(str::to_string).unwrap_or_default();
    wait("cluster status to show the TSIG refusal", || {
        let l = dns_line(&status(&f));
        l.contains("FAILING: ") && l.contains("BADSIG")
    });
    set_dns(&f, port, KEY_SECRET);
    wait("cluster status to show DNS in step again", || dns_line(&status(&f)).contains("in step with the live set"));
    drop(named);
}

/// Unmounts the bind mount when the test ends.
struct BindMount(PathBuf);

impl Drop for BindMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn sh(args: &[&str]) {
    let o = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(o.status.success(), "{args:?}: {}", text(&o));
}

#[test]
fn a_node_whose_store_fails_stops_accepting_and_recovers() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "this test bind-mounts the store and needs root (CI runs as root)");
    let f = Fixture::new();
    let mnt = f.dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    sh(&["mount", "--bind", f.store_arg(), mnt.to_str().unwrap()]);
    let _guard = BindMount(mnt.clone());
    let _n1 = Node::start(&f, "node1", &["--rank", "1"]);
    let n2 = Node::start(&f, "node2", &["--rank", "2", "--allow-plaintext-auth", "--store", mnt.to_str().unwrap()]);
    wait("both nodes live", || live_count(&status(&f)) == 2);

    // The store turns read-only under node2 only.
    sh(&["mount", "-o", "remount,bind,ro", mnt.to_str().unwrap()]);
    let out = python("store_failure.py", &n2, &f, &[("PHASE", "failed"), ("OTHER_SMTP", &_n1.smtp.to_string())]);
    assert!(out.contains("ok node2 refuses mail with 421"), "{out}");
    wait("node2 to leave the live set", || status(&f).lines().any(|l| l.starts_with("node2") && l.contains(" dead ")));

    // The store comes back: node2 resumes by itself.
    sh(&["mount", "-o", "remount,bind,rw", mnt.to_str().unwrap()]);
    let out = python("store_failure.py", &n2, &f, &[("PHASE", "recovered")]);
    assert!(out.contains("ok node2 accepts mail again"), "{out}");
    wait("node2 live again", || live_count(&status(&f)) == 2);
    assert!(n2.log_text().contains("the store does not answer"), "{}", n2.log_text());
}
