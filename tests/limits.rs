//! Limits and hostile input on the SMTP and POP3 ports of a running node:
//! endless lines, NUL bytes, garbage, connection floods, idle clients and
//! clients that stop reading. The size and recipient limits and sessions
//! that die part way are protocol rules, tested in-process
//! (`firmware/maild/tests/sessions/`).

use testsupport::prelude::*;

use std::time::{Duration, Instant};

fn start(f: &Fixture, limits: &str) -> Node {
    let cfg = f.fast_config(limits);
    Node::start(f, "node1", &["--config", cfg.to_str().expect("utf8 path"), "--allow-plaintext-auth"])
}

fn spool_is_empty(f: &Fixture) -> bool {
    std::fs::read_dir(f.store.join("spool/node1")).map_or(true, |mut d| d.next().is_none())
}

#[test]
fn hostile_input_gets_errors_and_the_node_keeps_serving() {
    let f = Fixture::new();
    let node = start(&f, "");
    let out = python("limits_hostile.py", &node, &f, &[]);
    for step in [
        "ok SMTP endless line",
        "ok SMTP NUL -> 500",
        "ok SMTP garbage -> 500s then 421 and disconnect",
        "ok POP3 endless line",
        "ok POP3 NUL -> -ERR",
        "ok POP3 garbage -> -ERR then disconnect",
        "ok node still serves",
    ] {
        assert!(out.contains(step), "missing {step:?} in:\n{out}");
    }
}

#[test]
fn per_ip_connection_limit() {
    let f = Fixture::new();
    let node = start(&f, "max_connections_per_ip = 20\n");
    let out = python("limits_connections.py", &node, &f, &[("MODE", "per_ip"), ("LIMIT", "20")]);
    assert!(out.contains("ok freed places reused"), "{out}");
    assert!(node.log_text().contains("connection limit reached"));
}

#[test]
fn total_connection_limit() {
    let f = Fixture::new();
    let node = start(&f, "max_connections = 10\n");
    let out = python("limits_connections.py", &node, &f, &[("MODE", "total"), ("LIMIT", "10")]);
    assert!(out.contains("ok freed place reused"), "{out}");
}

#[test]
fn idle_clients_are_timed_out() {
    let f = Fixture::new();
    let node = start(&f, "smtp_idle_timeout_secs = 2\npop3_idle_timeout_secs = 2\ndata_timeout_secs = 2\n");

    // SMTP: 421 4.4.2 after the idle timeout, then the connection closes.
    let mut idle = Wire::connect(node.smtp);
    let t0 = Instant::now();
    assert_eq!(idle.reply().0, 220);
    // POP3: closed without entering UPDATE (RFC 1939 3).
    let mut pop = Wire::connect(node.pop3);
    assert!(pop.line().starts_with("+OK"));
    assert!(pop.cmd("USER alice@example.test").starts_with("+OK"));
    assert!(pop.cmd("PASS secret").starts_with("+OK"));
    // In DATA, the data timeout applies.
    let mut data = Wire::connect(node.smtp);
    assert_eq!(data.reply().0, 220);
    assert_eq!(data.smtp("HELO client.example").0, 250);
    assert_eq!(data.smtp("MAIL FROM:<carol@remote.test>").0, 250);
    assert_eq!(data.smtp("RCPT TO:<alice@example.test>").0, 250);
    assert_eq!(data.smtp("DATA").0, 354);
    data.send(b"Subject: stalled\r\n\r\nand then nothing");
    // A client that keeps talking is not timed out.
    let smtp = node.smtp;
    let busy = std::thread::spawn(move || {
        let mut busy = Wire::connect(smtp);
        assert_eq!(busy.reply().0, 220);
        for _ in 0..4 {
            std::thread::sleep(Duration::from_millis(900));
            assert_eq!(busy.smtp("NOOP").0, 250, "an active client was timed out");
        }
        assert_eq!(busy.smtp("QUIT").0, 221);
    });

    let (code, text) = idle.reply();
    let waited = t0.elapsed();
    assert_eq!(code, 421, "{text}");
    assert!(text.starts_with("421 4.4.2"), "{text}");
    assert!(waited >= Duration::from_millis(1900) && waited < Duration::from_secs(10), "timed out after {waited:?}");
    assert!(idle.closed_within(Duration::from_secs(5)).0, "the connection stays open after 421");

    let (closed, got) = pop.closed_within(Duration::from_secs(10));
    assert!(closed, "idle POP3 session not closed");
    assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
    // The lock goes with the session (a moment after the socket closes).
    let released = wait_until(Duration::from_secs(2), || !f.store.join("cluster/locks/pop3.alice@example.test").exists());
    assert!(released, "the timed-out session kept its lock");

    let (closed, _) = data.closed_within(Duration::from_secs(10));
    assert!(closed, "stalled DATA not closed");
    assert!(wait_until(Duration::from_secs(5), || spool_is_empty(&f)), "the stalled message left a spool file");
    assert!(f.mailbox_files("alice@example.test").is_empty());
    busy.join().expect("the busy client");
}

/// The idle timeout must also end a session whose client has stopped
/// reading (the node blocked writing a RETR or pipelined replies), or such
/// a client holds a connection slot, and the maildrop lock, for ever.
#[test]
fn clients_that_stop_reading_are_timed_out() {
    let f = Fixture::new();
    let node = start(&f, "smtp_idle_timeout_secs = 2\npop3_idle_timeout_secs = 2\nmax_connections_per_ip = 1\n");
    let out = python("limits_stall.py", &node, &f, &[]);
    eprintln!("{out}");
    assert!(out.contains("ok POP3 client that stops reading is dropped"), "{out}");
    assert!(out.contains("ok SMTP client that stops reading is dropped"), "{out}");
}
