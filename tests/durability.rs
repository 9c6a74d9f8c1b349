//! Durability: many concurrent deliveries all arrive intact exactly once;
//! a graceful shutdown finishes the transactions in progress; a node
//! killed mid-message leaves nothing half-stored.

use testsupport::prelude::*;

use std::time::{Duration, Instant};

fn start(f: &Fixture, name: &str, limits: &str) -> Node {
    let cfg = f.fast_config(limits);
    Node::start(f, name, &["--config", cfg.to_str().expect("utf8 path"), "--allow-plaintext-auth"])
}

fn spool_files(f: &Fixture, node: &str) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(f.store.join("spool").join(node)).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default()
}

fn smtp_deliver(node: &Node, body: &str) {
    let mut s = begin_data(node);
    s.send(body.as_bytes());
    let (code, text) = s.smtp(".");
    assert_eq!(code, 250, "{text}");
    assert_eq!(s.smtp("QUIT").0, 221);
}

/// Starts a transaction and leaves it inside DATA.
fn begin_data(node: &Node) -> Wire {
    let mut s = Wire::connect(node.smtp);
    assert_eq!(s.reply().0, 220);
    assert_eq!(s.smtp("EHLO client.example").0, 250);
    assert_eq!(s.smtp("MAIL FROM:<carol@remote.test>").0, 250);
    assert_eq!(s.smtp("RCPT TO:<alice@example.test>").0, 250);
    assert_eq!(s.smtp("DATA").0, 354);
    s
}

#[test]
fn five_hundred_messages_over_sixteen_connections() {
    let f = Fixture::new();
    let node = start(&f, "node1", "");
    let out = python("durability_load.py", &node, &f, &[("COUNT", "500"), ("THREADS", "16")]);
    assert!(out.contains("ok 500 messages in the Maildir, intact, no duplicates"), "{out}");
    assert!(out.contains("ok 500 messages over POP3, intact, no duplicates"), "{out}");
    assert!(spool_files(&f, "node1").is_empty());
    eprintln!("{out}");
}

/// SIGTERM: no new connections; the transaction in DATA completes with 250
/// and is stored; idle sessions are told 421 4.3.2 (POP3: -ERR, without
/// applying deletions); the process exits 0 within the grace period.
#[test]
fn sigterm_finishes_transactions_in_progress() {
    let f = Fixture::new();
    let mut node = start(&f, "node1", "shutdown_grace_secs = 20\n");
    smtp_deliver(&node, "Subject: before\r\n\r\nalready stored\r\n");

    let mut tx = begin_data(&node);
    tx.send(b"Subject: in flight\r\n\r\nfirst half\r\n");
    let mut idle = Wire::connect(node.smtp);
    assert_eq!(idle.reply().0, 220);
    assert_eq!(idle.smtp("EHLO idle.example").0, 250);
    let mut pop = Wire::connect(node.pop3);
    assert!(pop.line().starts_with("+OK"));
    assert!(pop.cmd("USER alice@example.test").starts_with("+OK"));
    assert!(pop.cmd("PASS secret").starts_with("+OK maildrop has 1 messages"));
    assert!(pop.cmd("DELE 1").starts_with("+OK"));

    node.signal(libc::SIGTERM);
    let signalled = Instant::now();

    let (code, text) = idle.reply();
    assert!(code == 421 && text.starts_with("421 4.3.2"), "idle session got {text}");
    assert!(idle.closed_within(Duration::from_secs(5)).0, "idle session not closed after 421");
    let l = pop.line();
    assert!(l.starts_with("-ERR [SYS/TEMP]"), "{l}");
    assert!(pop.closed_within(Duration::from_secs(5)).0, "POP3 session not closed");

    // No new connections are accepted.
    let refused = wait_until(Duration::from_secs(5), || match Wire::try_connect(node.smtp) {
        Err(_) => true,
        Ok(mut w) => w.closed_within(Duration::from_millis(500)).0,
    });
    assert!(refused, "the node still accepts connections after SIGTERM");
    assert!(wait_until(Duration::from_secs(5), || Wire::try_connect(node.pop3).is_err()), "POP3 still listening");
    // The transaction holds the node up.
    assert!(node.wait_exit(Duration::from_millis(300)).is_none(), "the node exited with a transaction in DATA");

    tx.send(b"second half\r\n");
    let (code, text) = tx.smtp(".");
    assert_eq!(code, 250, "the in-flight message was not accepted: {text}");
    let (code, text) = tx.reply();
    assert!(code == 421 && text.starts_with("421 4.3.2"), "after the transaction: {text}");
    assert!(tx.closed_within(Duration::from_secs(5)).0);

    let status = node.wait_exit(Duration::from_secs(10)).expect("the node did not exit after its last session");
    assert!(status.success(), "exit status {status:?}\n{}", node.log_text());
    assert!(signalled.elapsed() < Duration::from_secs(20), "took longer than the grace period");

    let files = f.mailbox_files("alice@example.test");
    assert_eq!(files.len(), 2, "the DELE of an interrupted POP3 session was applied, or the message is missing");
    let bodies: Vec<Vec<u8>> = files.iter().map(|p| std::fs::read(p).expect("read")).collect();
    assert!(bodies.iter().any(|b| b.ends_with(b"Subject: before\r\n\r\nalready stored\r\n")));
    assert!(bodies.iter().any(|b| b.ends_with(b"Subject: in flight\r\n\r\nfirst half\r\nsecond half\r\n")));
    assert!(spool_files(&f, "node1").is_empty());
    assert!(!f.store.join("cluster/locks/pop3.alice@example.test").exists(), "the POP3 lock outlived the node");
}

/// A client that never finishes its DATA does not keep the node from
/// stopping: it exits when the grace period ends, and stores nothing.
#[test]
fn sigterm_grace_period_is_bounded() {
    let f = Fixture::new();
    let mut node = start(&f, "node1", "shutdown_grace_secs = 2\n");
    let mut tx = begin_data(&node);
    tx.send(b"Subject: never finished\r\n\r\npart\r\n");
    wait_for("the unfinished message in the spool", Duration::from_secs(10), || !spool_files(&f, "node1").is_empty());
    node.signal(libc::SIGTERM);
    let t0 = Instant::now();
    let status = node.wait_exit(Duration::from_secs(15)).expect("the node did not exit after the grace period");
    let took = t0.elapsed();
    assert!(status.success(), "exit status {status:?}\n{}", node.log_text());
    assert!(took >= Duration::from_millis(1500), "exited after {took:?}, before the grace period ended");
    assert!(took < Duration::from_secs(10), "exited only after {took:?}");
    assert!(tx.closed_within(Duration::from_secs(5)).0);
    assert!(f.mailbox_files("alice@example.test").is_empty());
    // A restart finds nothing half-stored either.
    drop(node);
    let node = start(&f, "node1", "");
    assert!(spool_files(&f, "node1").is_empty());
    smtp_deliver(&node, "Subject: after\r\n\r\nrestarted\r\n");
    assert_eq!(f.mailbox_files("alice@example.test").len(), 1);
}

/// SIGKILL in the middle of DATA: the partial message stays in the node's
/// spool, never in a mailbox, and the node removes it when it starts again.
#[test]
fn sigkill_mid_data_leaves_nothing_after_restart() {
    let f = Fixture::new();
    let mut node = start(&f, "node1", "");
    smtp_deliver(&node, "Subject: kept\r\n\r\nalready here\r\n");
    let before: Vec<(std::path::PathBuf, Vec<u8>)> = f.mailbox_files("alice@example.test").into_iter().map(|p| (p.clone(), std::fs::read(&p).expect("read"))).collect();
    assert_eq!(before.len(), 1);

    let mut tx = begin_data(&node);
    tx.send(b"Subject: killed\r\n\r\n");
    // More than the node keeps in memory, so part of it reaches the spool.
    let line = "x".repeat(98) + "\r\n";
    tx.send(line.repeat(4000).as_bytes());
    assert!(wait_until(Duration::from_secs(10), || spool_files(&f, "node1").iter().any(|p| p.metadata().map_or(false, |m| m.len() > 0))), "no spool file with data");
    node.signal(libc::SIGKILL);
    assert!(node.wait_exit(Duration::from_secs(10)).is_some());
    assert_eq!(spool_files(&f, "node1").len(), 1, "the killed node's spool file");
    drop(node);

    let node = start(&f, "node1", "");
    assert!(spool_files(&f, "node1").is_empty(), "the restarted node left the partial message in its spool");
    assert!(node.log_text().contains("removed unacknowledged messages"), "{}", node.log_text());
    let after: Vec<(std::path::PathBuf, Vec<u8>)> = f.mailbox_files("alice@example.test").into_iter().map(|p| (p.clone(), std::fs::read(&p).expect("read"))).collect();
    assert_eq!(after, before, "mailbox changed by a message that was never acknowledged");
    assert!(f.mailbox_files("bob@example.test").is_empty());
}

/// A POP3 session still running when its node is told to stop keeps the
/// maildrop lock until it ends, even though the node stops heartbeating:
/// another node must answer [IN-USE] meanwhile, and the session's QUIT
/// still applies its deletions.
#[test]
fn pop3_lock_holds_through_the_grace_period() {
    let f = Fixture::new();
    let mut node1 = start(&f, "node1", "shutdown_grace_secs = 30\n");
    let node2 = start(&f, "node2", "");
    let pid = node1.child.id().to_string();
    let p2 = node2.pop3.to_string();
    let out = python("durability_shutdown_lock.py", &node1, &f, &[("NODE1_PID", &pid), ("POP3_2", &p2)]);
    assert!(out.contains("ok QUIT during the grace period applies deletions"), "{out}");
    let status = node1.wait_exit(Duration::from_secs(10)).expect("node1 did not exit after its last session");
    assert!(status.success(), "{status:?}");
}
