//! What clients that are slow on purpose, or many, can take from a node:
//! every phase of a session has a deadline that a trickle of bytes does
//! not extend, the connection slots are shared fairly between networks,
//! and the memory of many sessions stalled in DATA stays bounded.

use testsupport::prelude::*;

use std::io::Write;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

fn start(f: &Fixture, limits: &str) -> Node {
    let cfg = f.fast_config(limits);
    Node::start(f, "node1", &["--config", cfg.to_str().expect("utf8 path"), "--allow-plaintext-auth"])
}

/// Sends `bytes` over and over, one byte a second, never a line end,
/// until the node closes the connection or `give_up` has passed. Returns
/// whether it closed, what it sent meanwhile, and when.
fn trickle(w: &mut Wire, bytes: &[u8], give_up: Duration) -> (bool, String, Duration) {
    let t0 = Instant::now();
    let mut got = Vec::new();
    for b in bytes.iter().cycle() {
        if t0.elapsed() > give_up {
            return (false, String::from_utf8_lossy(&got).into_owned(), t0.elapsed());
        }
        // The node may have closed already: a failed write is no error here.
        let _ = w.sock.write_all(&[*b]);
        let (closed, g) = w.closed_within(Duration::from_secs(1));
        got.extend(g);
        if closed {
            return (true, String::from_utf8_lossy(&got).into_owned(), t0.elapsed());
        }
    }
    unreachable!("cycle never ends")
}

/// The bytes in node1's spool: what it has read of unfinished messages.
fn spool_bytes(f: &Fixture) -> u64 {
    std::fs::read_dir(f.store.join("spool/node1")).map_or(0, |d| d.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum())
}

fn spool_is_empty(f: &Fixture) -> bool {
    std::fs::read_dir(f.store.join("spool/node1")).map_or(true, |mut d| d.next().is_none())
}

/// A client that sends a byte every second is never idle for a read
/// timeout, yet its command line, its message data and its POP3 command
/// must still end within their deadlines.
#[test]
fn trickling_clients_are_cut_off_at_their_deadlines() {
    let f = Fixture::new();
    let node = start(&f, "smtp_idle_timeout_secs = 3\npop3_idle_timeout_secs = 3\ndata_timeout_secs = 3\ndata_grace_secs = 2\ndata_min_rate = 100\n");
    let give_up = Duration::from_secs(20);

    let smtp = node.smtp;
    let command = std::thread::spawn(move || {
        let mut w = Wire::connect(smtp);
        assert_eq!(w.reply().0, 220);
        trickle(&mut w, b"NOOP", give_up)
    });
    let data = std::thread::spawn(move || {
        let mut w = Wire::connect(smtp);
        assert_eq!(w.reply().0, 220);
        assert_eq!(w.smtp("EHLO client.example").0, 250);
        assert_eq!(w.smtp("MAIL FROM:<carol@remote.test>").0, 250);
        assert_eq!(w.smtp("RCPT TO:<alice@example.test>").0, 250);
        assert_eq!(w.smtp("DATA").0, 354);
        w.send(b"Subject: slow\r\n\r\n");
        trickle(&mut w, b"x", give_up)
    });
    let pop3 = node.pop3;
    let pop = std::thread::spawn(move || {
        let mut w = Wire::connect(pop3);
        assert!(w.line().starts_with("+OK"));
        trickle(&mut w, b"USER alice", give_up)
    });

    let (closed, got, after) = command.join().expect("command trickle");
    assert!(closed, "a trickled SMTP command line held its session for {after:?}: {got:?}");
    assert!(got.starts_with("421 4.4.2"), "{got:?}");
    assert!(after >= Duration::from_secs(2), "cut off before its deadline: {after:?}");

    let (closed, got, after) = data.join().expect("data trickle");
    assert!(closed, "trickled message data held its session for {after:?}: {got:?}");
    assert!(got.starts_with("421 4.4.2"), "{got:?}");
    assert!(wait_until(Duration::from_secs(5), || spool_is_empty(&f)), "the cut-off message left a spool file");
    assert!(f.mailbox_files("alice@example.test").is_empty());

    let (closed, got, after) = pop.join().expect("POP3 trickle");
    // RFC 1939 3: the autologout closes the session without a response.
    assert!(closed, "a trickled POP3 command held its session for {after:?}: {got:?}");
    assert!(got.is_empty(), "{got:?}");

    // The node serves on; a session of NOOPs alone ends after 100 of them,
    // although each command comes at once.
    let mut w = Wire::connect(node.smtp);
    assert_eq!(w.reply().0, 220);
    for _ in 0..100 {
        assert_eq!(w.smtp("NOOP").0, 250);
    }
    let (code, text) = w.smtp("NOOP");
    assert!(code == 421 && text.starts_with("421 4.7.0"), "{text}");
    assert!(w.closed_within(Duration::from_secs(5)).0);
}

/// A message sent slowly but steadily (above the minimum rate) gets
/// through, even though it takes longer than the grace period and a
/// command deadline.
#[test]
fn slow_but_steady_message_data_is_accepted() {
    let f = Fixture::new();
    let node = start(&f, "data_timeout_secs = 3\ndata_grace_secs = 1\ndata_min_rate = 100\n");
    let mut w = Wire::connect(node.smtp);
    assert_eq!(w.reply().0, 220);
    assert_eq!(w.smtp("EHLO client.example").0, 250);
    assert_eq!(w.smtp("MAIL FROM:<carol@remote.test>").0, 250);
    assert_eq!(w.smtp("RCPT TO:<alice@example.test>").0, 250);
    assert_eq!(w.smtp("DATA").0, 354);
    w.send(b"Subject: steady\r\n\r\n");
    // 400 bytes a second, 5 seconds: four times the minimum rate.
    for _ in 0..10 {
        w.send(format!("{}\r\n", "y".repeat(198)).as_bytes());
        std::thread::sleep(Duration::from_millis(500));
    }
    let (code, text) = w.smtp(".");
    assert_eq!(code, 250, "{text}");
    assert_eq!(f.mailbox_files("alice@example.test").len(), 1);
}

fn greeting_code(w: &mut Wire) -> u16 {
    let l = w.line();
    l.get(..3).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("not a greeting: {l:?}"))
}

/// Opens `n` connections from `source` and returns those that got 220,
/// and how many were refused with 421 4.7.0.
fn open_from(node: &Node, source: Ipv4Addr, n: usize) -> (Vec<Wire>, usize) {
    let (mut held, mut refused) = (Vec::new(), 0);
    for _ in 0..n {
        let mut w = Wire::connect_from(source, node.smtp).unwrap_or_else(|e| panic!("connect from {source}: {e}"));
        match greeting_code(&mut w) {
            220 => held.push(w),
            421 => refused += 1,
            c => panic!("unexpected greeting {c} for {source}"),
        }
    }
    (held, refused)
}

/// Many idle connections from a few addresses and networks cannot take
/// every slot: past the per-address and per-/24 caps they are refused at
/// once, and once the node is nearly full the cap per network tightens, so
/// a client from another network still gets in.
#[test]
fn a_few_networks_cannot_take_every_slot() {
    let f = Fixture::new();
    let node = start(&f, "max_connections = 64\nmax_connections_per_ip = 8\nmax_connections_per_network = 16\nbusy_percent = 75\nmax_connections_per_network_busy = 8\n");
    let ip = |c: u8, d: u8| Ipv4Addr::new(127, 0, c, d);
    let mut held = Vec::new();

    // Per address: the 9th connection from one address is refused.
    let (h, refused) = open_from(&node, ip(1, 1), 9);
    assert_eq!((h.len(), refused), (8, 1), "per-address cap");
    held.extend(h);
    // Per /24: a second address of the network gets its 8, a third none.
    let (h, refused) = open_from(&node, ip(1, 2), 8);
    assert_eq!((h.len(), refused), (8, 0));
    held.extend(h);
    let (h, refused) = open_from(&node, ip(1, 3), 8);
    assert_eq!((h.len(), refused), (0, 8), "per-/24 cap");
    // Two more networks the same way: 48 connections, 75% of the slots.
    for net in [2, 3] {
        for host in 1..=3 {
            let (h, _) = open_from(&node, ip(net, host), 8);
            held.extend(h);
        }
    }
    assert_eq!(held.len(), 48);

    // The node is nearly full: a new network gets in, up to the tighter
    // cap (8 rather than 16).
    let (h, refused) = open_from(&node, ip(9, 1), 5);
    assert_eq!((h.len(), refused), (5, 0), "a client from another network was refused");
    held.extend(h);
    let (h, refused) = open_from(&node, ip(9, 2), 5);
    assert_eq!((h.len(), refused), (3, 2), "the per-network cap did not tighten");
    held.extend(h);
    let (h, refused) = open_from(&node, ip(10, 1), 1);
    assert_eq!((h.len(), refused), (1, 0));
    held.extend(h);
    // The heavy networks get nothing more.
    let (h, refused) = open_from(&node, ip(2, 9), 1);
    assert_eq!((h.len(), refused), (0, 1));

    let log = node.log_text();
    for why in ["connection limit of the client address reached", "connection limit of the client network reached"] {
        assert!(log.contains(why), "no {why:?} in the log");
    }
    // Every held session is a live one.
    for w in held.iter_mut().take(3) {
        assert_eq!(w.smtp("NOOP").0, 250);
    }
    drop(held);
}

/// The node's resident memory, from /proc.
fn rss_kib(node: &Node) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", node.child.id())).expect("/proc status");
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok()).expect("VmRSS")
}

/// Starts a message of `size` bytes on `w` and leaves it unfinished.
fn stall_in_data(w: &mut Wire, size: usize) {
    assert_eq!(w.reply().0, 220);
    assert_eq!(w.smtp("EHLO client.example").0, 250);
    assert_eq!(w.smtp("MAIL FROM:<carol@remote.test>").0, 250);
    assert_eq!(w.smtp("RCPT TO:<alice@example.test>").0, 250);
    assert_eq!(w.smtp("DATA").0, 354);
    let line = format!("{}\r\n", "z".repeat(98));
    let mut sent = 0;
    while sent < size {
        w.send(line.as_bytes());
        sent += line.len();
    }
}

/// 200 sessions each stalled 250 KB into DATA: the node's memory grows by
/// far less than 200 x 250 KB, because a session keeps little of a message
/// in memory and all of them together no more than the node's budget.
#[test]
fn sessions_stalled_in_data_hold_bounded_memory() {
    const SESSIONS: usize = 200;
    const STALLED_AT: usize = 250_000;
    // Generous: 200 KiB a session; holding the data would take 250 KB each.
    const MAX_GROWTH_KIB: u64 = 40 * 1024;
    let f = Fixture::new();
    let node = start(&f, "max_connections_per_ip = 512\nmax_connections_per_network = 512\n");
    // Warm up (threads, allocator arenas) with one whole message.
    let mut w = Wire::connect(node.smtp);
    stall_in_data(&mut w, STALLED_AT);
    assert_eq!(w.smtp(".").0, 250);
    drop(w);
    std::thread::sleep(Duration::from_millis(500));
    let before = rss_kib(&node);

    let mut held = Vec::new();
    for _ in 0..SESSIONS {
        let mut w = Wire::connect(node.smtp);
        stall_in_data(&mut w, STALLED_AT);
        held.push(w);
    }
    // The node reads what was sent; then its memory is what it holds.
    let spooled = testsupport::wait::settled(Duration::from_secs(30), Duration::from_millis(500), || spool_bytes(&f));
    assert!(spooled.is_some(), "the spool still grows");
    let after = (0..3)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(300));
            rss_kib(&node)
        })
        .max()
        .expect("samples");
    let growth = after.saturating_sub(before);
    eprintln!("RSS {before} KiB -> {after} KiB with {SESSIONS} sessions stalled {STALLED_AT} bytes into DATA: {} KiB each", growth / SESSIONS as u64);
    assert!(growth < MAX_GROWTH_KIB, "memory grew by {growth} KiB for {SESSIONS} stalled sessions");

    // The node still serves, and the stalled messages are dropped whole.
    let mut w = Wire::connect(node.smtp);
    assert_eq!(w.reply().0, 220);
    drop(held);
    assert!(wait_until(Duration::from_secs(10), || spool_is_empty(&f)), "stalled messages left spool files");
}
