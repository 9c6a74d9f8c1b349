//! A live node under mutated sessions (garbage commands, huge lines,
//! pipelined bursts, broken DATA, abrupt closes, bad AUTH, STARTTLS then
//! junk) on SMTP, submission and POP3 from several connections at once:
//! afterwards it still serves a normal SMTP session and a POP3 login,
//! delivers the message, and its resident memory has stayed bounded.

use testsupport::prelude::*;

use std::net::IpAddr;
use std::time::Duration;

use fuzz::net::{self, Account, Budget, NetOptions};

/// How long the mutated sessions run.
const FUZZ_TIME: Duration = Duration::from_secs(20);
/// Connections at once, each from an address of its own in 127.77.0.0/24
/// (the checks afterwards come from 127.0.0.1, another network).
const CONNECTIONS: usize = 6;
/// Wrong passwords in the whole run: a handful, as a mistyping client or a
/// short guessing burst makes; guessing at scale is limited per address
/// and network, which other tests cover.
const WRONG_PASSWORDS: u64 = 12;
/// Logins with the right password in the whole run.
const LOGINS: u64 = 24;
/// Growth of the node's RSS allowed over the run, in KiB. Generous for a
/// debug build: a node whose memory is bounded (argon2's work memory given
/// back after each check, sessions bounded all together) stays far below
/// it; a node that keeps the ~19 MiB of each password check resident goes
/// past it after a few checks spread over its threads.
const MAX_RSS_GROWTH_KIB: u64 = 128 * 1024;
/// How long the node has to serve normal clients again after the run
/// (sessions that were cut off are still being noticed meanwhile).
const RECOVERY: Duration = Duration::from_secs(20);

fn rss(node: &Node) -> u64 {
    net::rss_kib(node.child.id()).expect("the node's VmRSS")
}

/// A message from outside to alice through port 25; the reply to its end.
fn deliver(node: &Node, token: &str) -> Result<(), String> {
    let mut w = Wire::try_connect(node.smtp).map_err(|e| e.to_string())?;
    let steps = [("", 220), ("EHLO health.example", 250), ("MAIL FROM:<health@outside.example>", 250), ("RCPT TO:<alice@example.test>", 250), ("DATA", 354)];
    for (cmd, want) in steps {
        let (code, text) = if cmd.is_empty() { w.reply() } else { w.smtp(cmd) };
        if code != want {
            return Err(format!("{cmd:?}: {text}"));
        }
    }
    let (code, text) = w.smtp(&format!("From: <health@outside.example>\r\nTo: <alice@example.test>\r\nSubject: {token}\r\n\r\nStill here.\r\n."));
    let _ = w.smtp("QUIT");
    if code == 250 {
        Ok(())
    } else {
        Err(format!("end of data: {text}"))
    }
}

/// A POP3 login with the right password and a STAT.
fn pop3_login(node: &Node) -> Result<(), String> {
    let mut w = Wire::try_connect(node.pop3).map_err(|e| e.to_string())?;
    for cmd in ["", "USER alice@example.test", "PASS secret", "STAT"] {
        let r = if cmd.is_empty() { w.try_line().map_err(|e| e.to_string())? } else { w.cmd(cmd) };
        if !r.starts_with("+OK") {
            return Err(format!("{cmd:?}: {r}"));
        }
    }
    let _ = w.cmd("QUIT");
    Ok(())
}

fn delivered(f: &Fixture, token: &str) -> bool {
    f.mailbox_files("alice@example.test").iter().any(|p| std::fs::read_to_string(p).is_ok_and(|t| t.contains(token)))
}

/// Retries `op` until it succeeds or `RECOVERY` has passed.
fn soon(what: &str, node: &Node, mut op: impl FnMut() -> Result<(), String>) {
    let end = std::time::Instant::now() + RECOVERY;
    loop {
        // Wire panics on a connection closed at the wrong moment: one
        // more try then.
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(&mut op)).unwrap_or_else(|_| Err("the connection broke off".into()));
        match r {
            Ok(()) => return,
            Err(e) if std::time::Instant::now() >= end => panic!("{what} after the fuzzing: {e}\n--- node log ---\n{}", node.log_text()),
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

#[test]
fn the_node_survives_mutated_sessions_with_bounded_memory() {
    let f = Fixture::new();
    // The sender checks would wait on DNS for every message; they have
    // tests of their own.
    let cfg = f.fast_config("[inbound]\nverify = false\n");
    let mut node = Node::start(&f, "node1", &["--config", cfg.to_str().expect("utf8 path"), "--allow-plaintext-auth"]);

    // A normal session and a login first: what one client costs is in the
    // baseline, what the fuzzing adds is measured.
    soon("delivery before", &node, || deliver(&node, "warm-up"));
    soon("POP3 login before", &node, || pop3_login(&node));
    let before = rss(&node);

    let opts = NetOptions {
        smtp: Some(node.smtp),
        submission: Some(node.submission),
        pop3: Some(node.pop3),
        connections: CONNECTIONS,
        duration: FUZZ_TIME,
        seed: 0x6e65_7466_757a_7a,
        sources: (1..=CONNECTIONS as u8).map(|i| IpAddr::from([127, 77, 0, i])).collect(),
        account: Account { login: "alice@example.test".into(), password: "secret".into(), other: "bob@example.test".into() },
        reply_wait: Duration::from_millis(300),
    };
    let budget = Budget::fixed(WRONG_PASSWORDS, LOGINS);
    let mut peak = before;
    let pid = node.child.id();
    let stats = net::fuzz_network(&opts, &budget, Duration::from_secs(2), |_| {
        if let Ok(k) = net::rss_kib(pid) {
            peak = peak.max(k);
        }
    });
    println!("{}", stats.summary());
    assert!(node.child.try_wait().expect("the node's status").is_none(), "the node died under fuzzing:\n{}", node.log_text());
    let sessions = stats.sessions.load(std::sync::atomic::Ordering::Relaxed);
    assert!(sessions >= 50, "only {sessions} sessions ran: {}", stats.summary());
    assert!(stats.replies.iter().map(|r| r.load(std::sync::atomic::Ordering::Relaxed)).sum::<u64>() > sessions, "the node hardly answered: {}", stats.summary());

    soon("delivery", &node, || deliver(&node, "after-the-fuzzing"));
    soon("POP3 login", &node, || pop3_login(&node));
    assert!(wait_until(Duration::from_secs(10), || delivered(&f, "after-the-fuzzing")), "the message after the fuzzing was not delivered");
    let after = rss(&node);
    peak = peak.max(after);
    println!("RSS: {} KiB before, {} KiB after, {} KiB at the peak; wrong passwords {}, logins {}", before, after, peak, budget.wrong.used(), budget.right.used());
    assert!(after <= before + MAX_RSS_GROWTH_KIB, "RSS grew from {before} KiB to {after} KiB (peak {peak} KiB) under fuzzing with {} password checks", budget.wrong.used() + budget.right.used());
    assert!(node.child.try_wait().expect("the node's status").is_none(), "the node died:\n{}", node.log_text());
}
