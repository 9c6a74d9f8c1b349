//! Logins under attack, from the outside: what a burst of wrong passwords
//! costs a node in memory, and failures counted across sessions, services
//! and nodes (in the store).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use testsupport::prelude::*;
use store::login_failures::MAX_ADDRESS_FAILURES;

/// Resident memory that a burst of wrong passwords may leave behind, over
/// the idle node: a few work buffers' worth with a generous margin (each
/// password check used to leave its 19 MiB argon2 buffer resident).
const MAX_RSS_GROWTH_KIB: u64 = 64 * 1024;
/// Parallel attempts per protocol.
const PARALLEL: u8 = 50;

fn vm_rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the node's /proc status");
    s.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok()).expect("VmRSS in /proc status")
}

/// A client connection from `src`: all of 127.0.0.0/8 is this machine's,
/// so each test client can have an address and a /24 of its own.
fn connect_from(rt: &tokio::runtime::Runtime, src: Ipv4Addr, dst: SocketAddr) -> Wire {
    let sock = rt
        .block_on(async {
            let s = tokio::net::TcpSocket::new_v4()?;
            s.bind(SocketAddr::new(IpAddr::V4(src), 0))?;
            let c = tokio::time::timeout(Duration::from_secs(10), s.connect(dst)).await.map_err(|_| std::io::Error::other("connect timed out"))??;
            c.into_std()
        })
        .unwrap_or_else(|e| panic!("connect from {src} to {dst}: {e}"));
    sock.set_nonblocking(false).expect("blocking socket");
    Wire::from_stream(sock).expect("socket timeouts")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

/// An AUTH PLAIN response (RFC 4616 2), base64 (RFC 4648 4, padded).
fn plain(user: &str, pw: &str) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let raw = format!("\0{user}\0{pw}");
    let mut out = String::new();
    for c in raw.as_bytes().chunks(3) {
        let n = (u32::from(c[0]) << 16) | (u32::from(*c.get(1).unwrap_or(&0)) << 8) | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            out.push(if i <= c.len() { ABC[(n >> (18 - 6 * i) & 63) as usize] as char } else { '=' });
        }
    }
    out
}

/// One AUTH PLAIN on submission from `src`: the reply's code and text.
fn submission_auth(rt: &tokio::runtime::Runtime, node: &Node, src: Ipv4Addr, pw: &str) -> (u16, String) {
    let mut w = connect_from(rt, src, node.submission);
    assert_eq!(w.reply().0, 220);
    assert_eq!(w.smtp("EHLO client.example").0, 250);
    w.smtp(&format!("AUTH PLAIN {}", plain("alice@example.test", pw)))
}

/// USER/PASS on POP3 from `src`: the reply to PASS.
fn pop3_login(rt: &tokio::runtime::Runtime, node: &Node, src: Ipv4Addr, pw: &str) -> String {
    let mut w = connect_from(rt, src, node.pop3);
    assert!(w.line().starts_with("+OK"));
    assert!(w.cmd("USER alice@example.test").starts_with("+OK"));
    w.cmd(&format!("PASS {pw}"))
}

/// 50 wrong AUTH PLAIN at once on submission, then 50 wrong POP3 PASS at
/// once, each from an address (and /24) of its own: the node's resident
/// memory afterwards stays within a bound over its idle size. The checks
/// beyond the verifier's queue are refused as temporary failures.
#[test]
fn wrong_passwords_in_parallel_leave_memory_bounded() {
    let f = Fixture::new();
    let cfg = f.fast_config("");
    let node = Node::start(&f, "node1", &["--config", cfg.to_str().unwrap(), "--allow-plaintext-auth"]);
    let pid = node.child.id();
    let rt = runtime();
    // A right login on each protocol first, so that what any login needs
    // once (code paged in, tables) is in the idle figure.
    assert_eq!(submission_auth(&rt, &node, Ipv4Addr::new(127, 0, 0, 1), "secret").0, 235);
    assert!(pop3_login(&rt, &node, Ipv4Addr::new(127, 0, 0, 1), "secret").starts_with("+OK"));
    std::thread::sleep(Duration::from_millis(500));
    let idle = vm_rss_kib(pid);

    let node = &node;
    let (smtp, pop3): (Vec<(u16, String)>, Vec<String>) = std::thread::scope(|s| {
        let smtp: Vec<_> = (1..=PARALLEL)
            .map(|i| {
                s.spawn(move || {
                    let rt = runtime();
                    submission_auth(&rt, node, Ipv4Addr::new(127, 0, i, 1), "wrong")
                })
            })
            .collect();
        let smtp = smtp.into_iter().map(|t| t.join().expect("client thread")).collect();
        let pop3: Vec<_> = (1..=PARALLEL)
            .map(|i| {
                s.spawn(move || {
                    let rt = runtime();
                    pop3_login(&rt, node, Ipv4Addr::new(127, 0, 100 + i, 1), "wrong")
                })
            })
            .collect();
        (smtp, pop3.into_iter().map(|t| t.join().expect("client thread")).collect())
    });
    std::thread::sleep(Duration::from_millis(500));
    let after = vm_rss_kib(pid);
    eprintln!("VmRSS idle {idle} kB, after {PARALLEL}+{PARALLEL} parallel wrong passwords {after} kB");

    // RFC 4954 6: 535 5.7.8 for a wrong password, 454 4.7.0 when the
    // check could not be made now.
    for (code, text) in &smtp {
        assert!((*code == 535 && text.contains("5.7.8")) || (*code == 454 && text.contains("4.7.0")), "{code} {text}");
    }
    let checked = smtp.iter().filter(|(c, _)| *c == 535).count();
    assert!(checked >= store::password::CHECK_WORKERS, "only {checked} of the wrong passwords were checked: {smtp:?}");
    // RFC 3206: [AUTH] for the wrong password, [SYS/TEMP] for busy.
    for r in &pop3 {
        assert!(r.starts_with("-ERR [AUTH]") || r.starts_with("-ERR [SYS/TEMP]"), "{r}");
    }
    assert!(pop3.iter().any(|r| r.starts_with("-ERR [AUTH]")), "{pop3:?}");
    let growth = after.saturating_sub(idle);
    assert!(growth < MAX_RSS_GROWTH_KIB, "wrong passwords left {growth} kB resident (idle {idle} kB, after {after} kB)\n{}", node.log_text());
}

/// Failures in some sessions on node1 refuse a login in a new session from
/// the same address, with the right password and without a password
/// check, on node1 and on node2 (same store), SMTP and POP3 alike; a
/// client in another network is not affected.
#[test]
fn failures_count_across_sessions_and_nodes() {
    let f = Fixture::new();
    let cfg = f.fast_config("");
    let cfg = cfg.to_str().unwrap();
    let node1 = Node::start(&f, "node1", &["--config", cfg, "--allow-plaintext-auth"]);
    let node2 = Node::start(&f, "node2", &["--config", cfg, "--allow-plaintext-auth"]);
    let rt = runtime();
    let attacker = Ipv4Addr::new(127, 0, 20, 1);
    let mut failures = 0;
    while failures < MAX_ADDRESS_FAILURES {
        // A session is closed after three failures: the guesser opens
        // another one, as guessers do.
        let mut w = connect_from(&rt, attacker, node1.submission);
        assert_eq!(w.reply().0, 220);
        assert_eq!(w.smtp("EHLO guesser.example").0, 250);
        for _ in 0..3 {
            if failures == MAX_ADDRESS_FAILURES {
                break;
            }
            let (code, text) = w.smtp(&format!("AUTH PLAIN {}", plain("alice@example.test", &format!("guess{failures}"))));
            assert_eq!(code, 535, "{text}");
            failures += 1;
        }
    }
    // A new session on node1, the right password: refused unchecked.
    let (code, text) = submission_auth(&rt, &node1, attacker, "secret");
    assert_eq!(code, 454, "{text}");
    assert!(text.contains("4.7.0"), "{text}");
    // On node2 too, for SMTP and POP3 (RFC 3206 4: [SYS/TEMP]).
    let (code, text) = submission_auth(&rt, &node2, attacker, "secret");
    assert_eq!(code, 454, "node2 did not see node1's failures: {text}");
    let r = pop3_login(&rt, &node2, attacker, "secret");
    assert!(r.starts_with("-ERR [SYS/TEMP]"), "{r}");
    // No argon2 work was spent on the refused attempts.
    assert!(node2.log_text().contains("authentication refused unchecked"), "{}", node2.log_text());
    // Another network is not affected, on either node.
    let other = Ipv4Addr::new(127, 0, 21, 1);
    assert_eq!(submission_auth(&rt, &node2, other, "secret").0, 235);
    assert!(pop3_login(&rt, &node1, other, "secret").starts_with("+OK maildrop"));
}
