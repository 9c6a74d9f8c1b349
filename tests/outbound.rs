//! Delivery to other domains, as it happens for real: MX records served by
//! BIND on loopback, receiving servers on other loopback addresses (a
//! second mailfort, and a scriptable sink), retries, bounces, and a node
//! killed in the middle of a delivery.

use testsupport::prelude::*;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(40);

fn zone(name: &str, body: &str) -> String {
    format!("$TTL 60\n@ IN SOA ns1.{name}. hostmaster.{name}. 1 3600 600 604800 60\n@ IN NS ns1.{name}.\nns1 IN A 127.0.0.1\n{body}")
}

/// DNS for the tests' foreign domains: each domain's MX is a loopback
/// address of its own.
fn foreign_dns(dir: &Path) -> Named {
    let bind_dir = dir.join("bind");
    std::fs::create_dir_all(&bind_dir).unwrap();
    let zones = [
        ("remote.test", zone("remote.test", "@ IN MX 10 mx.remote.test.\nmx IN A 127.0.0.2\n")),
        ("bounce.test", zone("bounce.test", "@ IN MX 10 mx.bounce.test.\nmx IN A 127.0.0.3\n")),
        ("flaky.test", zone("flaky.test", "@ IN MX 10 mx.flaky.test.\nmx IN A 127.0.0.4\n")),
        ("takeover.test", zone("takeover.test", "@ IN MX 10 mx.takeover.test.\nmx IN A 127.0.0.5\n")),
        // RFC 7505: a null MX.
        ("nullmx.test", zone("nullmx.test", "@ IN MX 0 .\n")),
        // No MX: the domain's own address is the implicit MX (RFC 5321 5.1).
        ("implicit.test", zone("implicit.test", "@ IN A 127.0.0.6\n")),
    ];
    let z: Vec<(&str, &str)> = zones.iter().map(|(n, t)| (*n, t.as_str())).collect();
    start_named(&bind_dir, &z)
}

/// A port free on the receivers' addresses (127.0.0.2 to .6): the node
/// delivers to one SMTP port, so every receiver listens on it.
fn receiver_port() -> u16 {
    let ips: Vec<std::net::Ipv4Addr> = (2..=6u8).map(|last| std::net::Ipv4Addr::new(127, 0, 0, last)).collect();
    testsupport::ports::free_tcp_port_on(&ips)
}

fn outbound_config(f: &Fixture, dns: &Named, port: u16) -> String {
    f.fast_config(&format!(
        "[outbound]\ndns_server = \"127.0.0.1:{}\"\nsmtp_port = {port}\nretry_base_secs = 1\nretry_max_secs = 2\nscan_interval_ms = 200\nconnect_timeout_secs = 5\ncommand_timeout_secs = 30\n",
        dns.port
    ))
    .to_str()
    .unwrap()
    .to_string()
}

struct Sink {
    child: Child,
    dir: PathBuf,
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Sink {
    fn start(f: &Fixture, ip: &str, port: u16, args: &[&str]) -> Sink {
        let dir = f.dir.path().join(format!("sink-{ip}"));
        std::fs::create_dir_all(&dir).unwrap();
        let child = testsupport::python::script("sink.py").args([ip, &port.to_string(), dir.to_str().unwrap()]).args(args).stdin(Stdio::null()).spawn().expect("python3");
        let s = Sink { child, dir };
        let mut s = s;
        let listening = wait_until(WAIT, || s.dir.join("ready").exists() || s.child.try_wait().ok().flatten().is_some());
        assert!(listening && s.dir.join("ready").exists(), "the sink did not listen on {ip}:{port} (exit status {:?})", s.child.try_wait());
        s
    }

    fn messages(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.dir).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().starts_with("msg-")).map(|e| std::fs::read_to_string(e.path()).unwrap()).collect();
        v.sort();
        v
    }

    fn transactions(&self) -> usize {
        std::fs::read_dir(&self.dir).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().starts_with("inflight-")).count()
    }
}

/// Alice submits a message (plaintext AUTH on loopback).
fn submit(node: &Node, rcpts: &[&str], subject: &str) {
    let script = format!(
        "import smtplib\ns = smtplib.SMTP('127.0.0.1', {})\ns.login('alice@example.test', 'secret')\nr = s.sendmail('alice@example.test', {:?}, b'From: alice@example.test\\r\\nTo: someone\\r\\nSubject: {subject}\\r\\nMessage-ID: <{subject}@example.test>\\r\\n\\r\\nhello from alice\\r\\n')\nassert r == {{}}, r\ns.quit()\n",
        node.submission.port(),
        rcpts
    );
    let o = Command::new("python3").arg("-c").arg(script).output().unwrap();
    assert!(o.status.success(), "submission failed: {}", text(&o));
}

fn queue_list(f: &Fixture) -> String {
    text(&run(&["queue", "list", "--store", f.store_arg()], ""))
}

#[test]
fn delivers_to_a_foreign_mx_over_starttls() {
    let f = Fixture::new();
    let dns = foreign_dns(f.dir.path());
    let port = receiver_port();
    // The receiving side: another mailfort for remote.test.
    let remote_store = f.dir.path().join("remote-store");
    assert!(run(&["store", "init", remote_store.to_str().unwrap(), "--domain", "remote.test"], "").status.success());
    for u in ["bob@remote.test", "dave@remote.test"] {
        assert!(run(&["user", "add", "--store", remote_store.to_str().unwrap(), u, "--password-stdin"], "pw\n").status.success());
    }
    let remote = Node::start(&f, "remote1", &["--store", remote_store.to_str().unwrap(), "--smtp", &format!("127.0.0.2:{port}"), "--submission", "off", "--submissions", "off", "--pop3", "off", "--pop3s", "off"]);
    // Outbound mail from example.test is DKIM-signed with the store's key.
    let o = run(&["dkim", "keygen", "--store", f.store_arg(), "--domain", "example.test", "--selector", "s1"], "");
    assert!(o.status.success(), "{}", text(&o));
    let show = text(&run(&["dkim", "show", "--store", f.store_arg(), "--domain", "example.test"], ""));
    assert!(show.starts_with("s1._domainkey.example.test. IN TXT"), "{show}");
    let cfg = outbound_config(&f, &dns, port);
    let node = Node::start(&f, "node1", &["--config", &cfg, "--allow-plaintext-auth"]);
    submit(&node, &["bob@remote.test", "dave@remote.test"], "outbound-1");
    let bob_new = remote_store.join("mail/remote.test/bob/new");
    wait_for("the message at bob's server", WAIT, || std::fs::read_dir(&bob_new).map(|d| d.count() == 1).unwrap_or(false));
    let file = std::fs::read_dir(&bob_new).unwrap().next().unwrap().unwrap().path();
    let data = std::fs::read_to_string(file).unwrap();
    assert!(data.contains("Subject: outbound-1"), "{data}");
    // STARTTLS was used (RFC 3848 ESMTPS), and only one Return-Path.
    assert!(data.contains(" with ESMTPS id "), "{data}");
    assert_eq!(data.matches("Return-Path:").count(), 1, "{data}");
    // The signature verifies with an independent verifier (dkimpy), given
    // the TXT record `dkim show` printed.
    assert!(data.contains("DKIM-Signature: v=1; a=rsa-sha256;") || data.contains("DKIM-Signature: v=1;"), "{data}");
    let txt: String = show.split('"').skip(1).step_by(2).collect();
    let verify = format!(
        "import dkim, sys\nmsg = open(sys.argv[1], 'rb').read()\nmsg = msg[msg.index(b'DKIM-Signature:'):]\nok = dkim.verify(msg, dnsfunc=lambda name, timeout=5: {txt:?}.encode())\nprint('dkimpy', ok)\nsys.exit(0 if ok else 1)\n"
    );
    let path = std::fs::read_dir(&bob_new).unwrap().next().unwrap().unwrap().path();
    let o = Command::new("python3").arg("-c").arg(verify).arg(&path).output().unwrap();
    assert!(o.status.success(), "dkimpy did not verify our signature (pip install dkimpy pynacl): {}", text(&o));
    // Both recipients of the domain in one transaction.
    assert!(remote.log_text().contains("local=2"), "{}", remote.log_text());
    assert_eq!(std::fs::read_dir(remote_store.join("mail/remote.test/dave/new")).unwrap().count(), 1);
    wait_for("an empty queue", WAIT, || queue_list(&f).contains("the queue is empty"));
}

#[test]
fn temporary_failure_then_success() {
    let f = Fixture::new();
    let dns = foreign_dns(f.dir.path());
    let port = receiver_port();
    let sink = Sink::start(&f, "127.0.0.4", port, &["--tempfail", "1"]);
    let cfg = outbound_config(&f, &dns, port);
    let node = Node::start(&f, "node1", &["--config", &cfg, "--allow-plaintext-auth"]);
    submit(&node, &["x@flaky.test"], "flaky");
    wait_for("the retried message at the sink", WAIT, || sink.messages().len() == 1);
    assert_eq!(sink.transactions(), 2, "one refused attempt, one accepted");
    assert!(sink.messages()[0].contains("Subject: flaky"));
    assert!(node.log_text().contains("delivery deferred"), "{}", node.log_text());
    wait_for("an empty queue", WAIT, || queue_list(&f).contains("the queue is empty"));
}

#[test]
fn permanent_failures_bounce_to_the_local_sender() {
    let f = Fixture::new();
    let dns = foreign_dns(f.dir.path());
    let port = receiver_port();
    let sink = Sink::start(&f, "127.0.0.3", port, &["--reject", "nobody@bounce.test"]);
    let implicit = Sink::start(&f, "127.0.0.6", port, &[]);
    let cfg = outbound_config(&f, &dns, port);
    let node = Node::start(&f, "node1", &["--config", &cfg, "--allow-plaintext-auth"]);
    let before = f.mailbox_files("alice@example.test").len();
    submit(&node, &["nobody@bounce.test", "ok@bounce.test", "y@nullmx.test", "z@nosuch.remote.test", "w@implicit.test"], "doomed");
    wait_for("a notification in alice's mailbox", WAIT, || f.mailbox_files("alice@example.test").len() > before);
    wait_for("an empty queue", WAIT, || queue_list(&f).contains("the queue is empty"));
    let files = f.mailbox_files("alice@example.test");
    assert_eq!(files.len(), before + 1, "one notification for the three failures");
    let dsn = std::fs::read_to_string(files.last().unwrap()).unwrap();
    for needle in [
        "Return-Path: <>",
        "Content-Type: multipart/report; report-type=delivery-status;",
        "Final-Recipient: rfc822; nobody@bounce.test\r\nAction: failed\r\nStatus: 5.1.1\r\nRemote-MTA: dns; mx.bounce.test",
        "Final-Recipient: rfc822; y@nullmx.test\r\nAction: failed\r\nStatus: 5.1.10",
        "Final-Recipient: rfc822; z@nosuch.remote.test\r\nAction: failed\r\nStatus: 5.1.2",
        "Content-Type: text/rfc822-headers",
        "Subject: doomed",
        "Message-ID: <doomed@example.test>",
    ] {
        assert!(dsn.contains(needle), "{needle:?} missing from:\n{dsn}");
    }
    assert!(!dsn.contains("hello from alice"), "the notification must carry headers only");
    assert!(!dsn.contains("ok@bounce.test"));
    // The good recipients were delivered, the implicit MX used.
    assert_eq!(sink.messages().len(), 1);
    assert!(sink.messages()[0].contains("ok@bounce.test"));
    assert_eq!(implicit.messages().len(), 1);

    // A message from the null sender that fails produces no notification
    // (no bounce loops).
    let s = store::Store::open(&f.store).unwrap();
    let env = store::Envelope { from: String::new(), rcpts: vec!["nobody@bounce.test".into()], created: 1, node: "test".into(), ..Default::default() };
    s.enqueue("test", b"From: MAILER-DAEMON@example.test\r\nSubject: a notification\r\n\r\nx\r\n", &env).unwrap();
    wait_for("the null-sender entry to be dropped", WAIT, || queue_list(&f).contains("the queue is empty"));
    wait_for("the node to log that it sends no notification", WAIT, || node.log_text().contains("no notification: the sender is <>"));
    assert_eq!(f.mailbox_files("alice@example.test").len(), before + 1);
}

#[test]
fn a_killed_nodes_delivery_is_taken_over() {
    let f = Fixture::new();
    let dns = foreign_dns(f.dir.path());
    let port = receiver_port();
    // The sink holds the first message's reply long enough to kill the
    // node that is delivering it.
    let sink = Sink::start(&f, "127.0.0.5", port, &["--delay-first-data", "8"]);
    let cfg = outbound_config(&f, &dns, port);
    let n1 = Node::start(&f, "node1", &["--config", &cfg, "--allow-plaintext-auth", "--rank", "1"]);
    let n2 = Node::start(&f, "node2", &["--config", &cfg, "--allow-plaintext-auth", "--rank", "2"]);
    submit(&n1, &["t@takeover.test"], "takeover");
    wait_for("the first delivery attempt in progress", WAIT, || sink.transactions() == 1);
    let q = queue_list(&f);
    let holder = if q.contains("being delivered by node1") {
        "node1"
    } else if q.contains("being delivered by node2") {
        "node2"
    } else {
        panic!("no node holds the entry's lease: {q}")
    };
    let (victim, survivor) = if holder == "node1" { (&n1, &n2) } else { (&n2, &n1) };
    victim.signal(libc::SIGKILL);
    wait_for("the survivor to deliver", WAIT, || sink.messages().len() == 1);
    // Nothing is left to deliver once the queue is empty: no second copy can come.
    wait_for("an empty queue", WAIT, || queue_list(&f).contains("the queue is empty"));
    assert_eq!(sink.messages().len(), 1, "delivered exactly once");
    assert!(survivor.log_text().contains("broke a stale lease"), "the take-over is logged: {}", survivor.log_text());
}

#[test]
fn queue_commands() {
    let f = Fixture::new();
    let dns = foreign_dns(f.dir.path());
    let port = receiver_port();
    // Nobody listens for flaky.test: the entry stays queued.
    let cfg = f.fast_config(&format!("[outbound]\ndns_server = \"127.0.0.1:{}\"\nsmtp_port = {port}\nretry_base_secs = 3600\nretry_max_secs = 3600\nscan_interval_ms = 200\nconnect_timeout_secs = 2\n", dns.port));
    let node = Node::start(&f, "node1", &["--config", cfg.to_str().unwrap(), "--allow-plaintext-auth"]);
    submit(&node, &["x@flaky.test"], "held");
    wait_for("a failed attempt", WAIT, || queue_list(&f).contains("attempts 1"));
    let q = queue_list(&f);
    let id = q.split_whitespace().next().unwrap().to_string();
    assert!(q.contains("next attempt in") && q.contains("last error:"), "{q}");
    let show = text(&run(&["queue", "show", "--store", f.store_arg(), &id], ""));
    assert!(show.contains("to:           x@flaky.test") && show.contains("Subject: held"), "{show}");
    let o = run(&["queue", "retry", "--store", f.store_arg(), &id], "");
    assert!(o.status.success(), "{}", text(&o));
    wait_for("the retried attempt", WAIT, || queue_list(&f).contains("attempts 2"));
    let o = run(&["queue", "delete", "--store", f.store_arg(), &id], "");
    assert!(o.status.success(), "{}", text(&o));
    assert!(queue_list(&f).contains("the queue is empty"));
    let o = run(&["queue", "show", "--store", f.store_arg(), &id], "");
    assert!(!o.status.success() && text(&o).contains("no queue entry"), "{}", text(&o));
    let o = run(&["queue", "delete", "--store", f.store_arg(), "../../etc"], "");
    assert!(!o.status.success());
}

#[test]
fn a_long_delay_is_reported_once() {
    let f = Fixture::new();
    let dns = foreign_dns(f.dir.path());
    let port = receiver_port();
    let sink = Sink::start(&f, "127.0.0.4", port, &["--tempfail", "1000"]);
    let cfg = f.fast_config(&format!("[outbound]\ndns_server = \"127.0.0.1:{}\"\nsmtp_port = {port}\nretry_base_secs = 1\nretry_max_secs = 1\nscan_interval_ms = 200\ndelay_warning_secs = 2\n", dns.port));
    let node = Node::start(&f, "node1", &["--config", cfg.to_str().unwrap(), "--allow-plaintext-auth"]);
    let before = f.mailbox_files("alice@example.test").len();
    submit(&node, &["x@flaky.test"], "slow");
    wait_for("a delay notification", WAIT, || f.mailbox_files("alice@example.test").len() == before + 1);
    // Several more attempts, and still one notification.
    let seen = sink.transactions();
    wait_for("more attempts", WAIT, || sink.transactions() >= seen + 3);
    assert_eq!(f.mailbox_files("alice@example.test").len(), before + 1);
    let dsn = std::fs::read_to_string(f.mailbox_files("alice@example.test").last().unwrap()).unwrap();
    assert!(dsn.contains("Action: delayed") && dsn.contains("Final-Recipient: rfc822; x@flaky.test"), "{dsn}");
    assert!(dsn.contains("Subject: Delayed Mail"), "{dsn}");
    assert!(queue_list(&f).contains("x@flaky.test"), "still queued");
}
