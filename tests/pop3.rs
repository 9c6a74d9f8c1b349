//! POP3 (RFC 1939, RFC 2449, RFC 2595, RFC 5034) against running nodes,
//! with Python's poplib and raw clients: exact sizes and bytes, UIDs, the
//! deletion rules, the cluster-wide maildrop lock, and accounts changed
//! while a node runs.

use testsupport::prelude::*;

use std::time::{Duration, Instant};

const LOCK: &str = "cluster/locks/pop3.alice@example.test";

fn cfg_arg(p: &std::path::Path) -> String {
    p.to_str().expect("utf8 path").to_string()
}

#[test]
fn pop3_session_with_plaintext_allowed() {
    let f = Fixture::new();
    let cfg = cfg_arg(&f.fast_config(""));
    let node = Node::start(&f, "node1", &["--config", &cfg, "--allow-plaintext-auth"]);
    let out = python("pop3_session.py", &node, &f, &[]);
    for step in [
        "ok CAPA lists USER, SASL PLAIN and STLS",
        "ok STAT LIST UIDL RETR TOP NOOP with exact octet counts",
        "ok dot-stuffing exact on the wire",
        "ok AUTH PLAIN with and without initial response",
        "ok wrong password -ERR [AUTH] after a delay",
        "ok second session -ERR [IN-USE] until the first QUITs",
        "ok DELE then a dropped connection deletes nothing",
        "ok DELE RSET QUIT deletes nothing",
        "ok DELE QUIT deletes, UIDs of the rest unchanged",
    ] {
        assert!(out.contains(step), "missing {step:?} in:\n{out}");
    }
    // Every session ended, so no lock is left behind.
    assert!(!f.store.join(LOCK).exists(), "maildrop lock left after the sessions ended");
}

/// Messages too large to be read whole are streamed from the file; the
/// stuffing and the TOP cut must be exact across the read boundaries.
#[test]
fn pop3_large_messages_streamed_exactly() {
    let f = Fixture::new();
    let cfg = cfg_arg(&f.fast_config(""));
    let node = Node::start(&f, "node1", &["--config", &cfg, "--allow-plaintext-auth"]);
    let out = python("pop3_large.py", &node, &f, &[]);
    assert!(out.contains("ok large RETR and TOP exact on the wire"), "{out}");
    assert!(out.contains("ok large RETR with poplib"), "{out}");
}

#[test]
fn pop3_needs_tls_for_plaintext_logins() {
    let f = Fixture::new();
    let cfg = cfg_arg(&f.fast_config(""));
    let node = Node::start(&f, "node1", &["--config", &cfg]);
    let out = python("pop3_tls.py", &node, &f, &[]);
    for step in ["ok plaintext login refused without TLS", "ok STLS then USER/PASS", "ok STLS then AUTH PLAIN", "ok plaintext after STLS discarded", "ok POP3S with the cluster certificate"] {
        assert!(out.contains(step), "missing {step:?} in:\n{out}");
    }
}

#[test]
fn pop3_two_nodes_share_uids_and_the_lock() {
    let f = Fixture::new();
    let cfg = cfg_arg(&f.fast_config(""));
    let node1 = Node::start(&f, "node1", &["--config", &cfg, "--allow-plaintext-auth"]);
    let node2 = Node::start(&f, "node2", &["--config", &cfg, "--allow-plaintext-auth"]);
    let (p2, s2) = (node2.pop3.to_string(), node2.smtp.to_string());
    let out = python("pop3_two_nodes.py", &node1, &f, &[("POP3_2", &p2), ("SMTP_2", &s2)]);
    assert!(out.contains("ok one maildrop lock across nodes, deletions shared"), "{out}");
    assert_eq!(f.mailbox_files("alice@example.test").len(), 3);
}

fn pop3_login(w: &mut Wire, user: &str, pw: &str) -> String {
    let r = w.cmd(&format!("USER {user}"));
    assert!(r.starts_with("+OK"), "{r}");
    w.cmd(&format!("PASS {pw}"))
}

fn connect_pop3(node: &Node) -> Wire {
    let mut w = Wire::connect(node.pop3);
    let g = w.line();
    assert!(g.starts_with("+OK"), "{g}");
    w
}

/// A node that dies (SIGKILL) holding a maildrop lock cannot release it;
/// another node breaks it once it is older than the TTL.
#[test]
fn lock_of_a_killed_node_is_broken_after_the_ttl() {
    let f = Fixture::new();
    let cfg = cfg_arg(&f.fast_config("maildrop_lock_ttl_secs = 2\n"));
    let mut node1 = Node::start(&f, "node1", &["--config", &cfg, "--allow-plaintext-auth"]);
    let node2 = Node::start(&f, "node2", &["--config", &cfg, "--allow-plaintext-auth"]);
    let mut w = connect_pop3(&node1);
    let r = pop3_login(&mut w, "alice@example.test", "secret");
    assert!(r.starts_with("+OK maildrop has 0 messages"), "{r}");
    let lock = f.store.join(LOCK);
    let held = std::fs::read_to_string(&lock).expect("the lock file exists while a session is in TRANSACTION");
    assert!(held.starts_with("node=node1 ") && held.contains(&format!(" pid={} ", node1.child.id())), "{held}");

    node1.signal(libc::SIGKILL);
    let killed = Instant::now();
    assert!(node1.wait_exit(Duration::from_secs(10)).is_some(), "node1 did not die");
    assert_eq!(std::fs::read_to_string(&lock).ok().as_deref(), Some(held.as_str()), "a killed node leaves its lock");

    // node2 refuses while the lock is young, then breaks it.
    let mut w2 = connect_pop3(&node2);
    let mut first = None;
    let mut attempts = 0;
    let ok = loop {
        let sent = killed.elapsed();
        let r = pop3_login(&mut w2, "alice@example.test", "secret");
        attempts += 1;
        if first.is_none() {
            first = Some((sent, r.clone()));
        }
        if r.starts_with("+OK maildrop has 0 messages") {
            break true;
        }
        assert!(r.starts_with("-ERR [IN-USE]"), "{r}");
        if killed.elapsed() > Duration::from_secs(15) {
            break false;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let took = killed.elapsed();
    assert!(ok, "node2 never broke the stale lock ({attempts} attempts):\n{}", node2.log_text());
    // The lock was refreshed at most ttl/3 before the kill, so a login
    // checked within a second of the kill must still find it in force.
    let (sent, r) = first.expect("one attempt");
    if sent < Duration::from_millis(500) {
        assert!(r.starts_with("-ERR [IN-USE]"), "a fresh lock was broken at once: {r}");
    }
    assert!(took >= Duration::from_millis(1300), "lock broken after only {took:?}");
    let now = std::fs::read_to_string(&lock).expect("node2 holds the lock now");
    assert!(now.starts_with("node=node2 "), "{now}");
    assert!(w2.cmd("QUIT").starts_with("+OK"));
    assert!(wait_until(Duration::from_secs(5), || !lock.exists()), "node2 did not release the lock");
}

/// Accounts are read from the store at every login: a user added or a
/// password changed with the CLI counts at once on a running node.
#[test]
fn accounts_change_without_restart() {
    let f = Fixture::new();
    let cfg = cfg_arg(&f.fast_config(""));
    let node = Node::start(&f, "node1", &["--config", &cfg, "--allow-plaintext-auth"]);

    let mut w = connect_pop3(&node);
    let r = pop3_login(&mut w, "dave@example.test", "pw-one");
    assert!(r.starts_with("-ERR [AUTH]"), "unknown user: {r}");
    assert!(w.cmd("QUIT").starts_with("+OK"));

    let o = run(&["user", "add", "--store", f.store_arg(), "dave@example.test", "--password-stdin"], "pw-one\n");
    assert!(o.status.success(), "{}", text(&o));
    let mut w = connect_pop3(&node);
    let r = pop3_login(&mut w, "dave@example.test", "pw-one");
    assert_eq!(r, "+OK maildrop has 0 messages (0 octets)");
    assert!(w.cmd("QUIT").starts_with("+OK"));

    // Mail to the new user is accepted at once too.
    let mut s = Wire::connect(node.smtp);
    assert_eq!(s.reply().0, 220);
    assert_eq!(s.smtp("HELO client.example").0, 250);
    assert_eq!(s.smtp("MAIL FROM:<carol@remote.test>").0, 250);
    assert_eq!(s.smtp("RCPT TO:<dave@example.test>").0, 250);
    assert_eq!(s.smtp("DATA").0, 354);
    assert_eq!(s.smtp("Subject: welcome\r\n\r\nhi dave\r\n.").0, 250);
    assert_eq!(s.smtp("QUIT").0, 221);

    // RFC 1939 7: PASS takes the rest of the line, spaces included.
    let o = run(&["user", "passwd", "--store", f.store_arg(), "dave@example.test", "--password-stdin"], "pw two  words\n");
    assert!(o.status.success(), "{}", text(&o));
    let mut w = connect_pop3(&node);
    let r = pop3_login(&mut w, "dave@example.test", "pw-one");
    assert!(r.starts_with("-ERR [AUTH]"), "the old password still works: {r}");
    let r = pop3_login(&mut w, "dave@example.test", "pw two");
    assert!(r.starts_with("-ERR [AUTH]"), "a password prefix works: {r}");
    let r = pop3_login(&mut w, "dave@example.test", "pw two  words");
    assert!(r.starts_with("+OK maildrop has 1 messages"), "{r}");
    assert!(w.cmd("QUIT").starts_with("+OK"));

    // A deleted account cannot log in any more (its mail stays).
    let o = run(&["user", "del", "--store", f.store_arg(), "dave@example.test"], "");
    assert!(o.status.success(), "{}", text(&o));
    let mut w = connect_pop3(&node);
    let r = pop3_login(&mut w, "dave@example.test", "pw two  words");
    assert!(r.starts_with("-ERR [AUTH]"), "a deleted account still logs in: {r}");
    assert_eq!(f.mailbox_files("dave@example.test").len(), 1);
}

/// A maildrop lock taken on a node that started a moment ago is in force
/// on the other nodes at once: a node must not take the lock holder for
/// dead just because it has not seen the holder's heartbeat yet.
#[test]
fn lock_of_a_just_started_node_is_respected() {
    let f = Fixture::new();
    let cfg = cfg_arg(&f.fast_config(""));
    let node1 = Node::start(&f, "node1", &["--config", &cfg, "--allow-plaintext-auth"]);
    for round in 0..3 {
        let node2 = Node::start(&f, "node2", &["--config", &cfg, "--allow-plaintext-auth"]);
        let mut a = connect_pop3(&node2);
        let r = pop3_login(&mut a, "alice@example.test", "secret");
        assert!(r.starts_with("+OK"), "round {round}: {r}");
        let mut b = connect_pop3(&node1);
        let r = pop3_login(&mut b, "alice@example.test", "secret");
        assert!(r.starts_with("-ERR [IN-USE]"), "round {round}: node1 took the maildrop locked by a session on node2: {r}\n--- node1 log ---\n{}", node1.log_text());
        assert!(b.cmd("QUIT").starts_with("+OK"));
        let r = a.cmd("QUIT");
        assert!(r.starts_with("+OK"), "round {round}: {r}");
        assert!(wait_until(Duration::from_secs(2), || !f.store.join(LOCK).exists()), "lock not released");
        drop(node2);
    }
}

