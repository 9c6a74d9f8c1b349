//! A node killed at every step of taking a message for another domain
//! (spool, mailbox links, queue link, envelope, spool removal) leaves no
//! half-made queue entry once it has started again, and never loses a
//! message it acknowledged. The kill is the store's crash-point test hook
//! (`MAILFORT_CRASH_AT`, the process aborts there). Its own test binary:
//! the hook is set in this process's environment for the nodes it starts.

use testsupport::prelude::*;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

/// Every crash point on the way of a queued message, in order.
const POINTS: &[&str] = &["commit:after-spool-sync", "commit:after-mailbox-links", "enqueue:after-link", "enqueue:before-env-rename", "enqueue:after-env", "commit:before-spool-remove"];

/// AUTH PLAIN for alice@example.test / secret (RFC 4616).
const ALICE_PLAIN: &str = "AGFsaWNlQGV4YW1wbGUudGVzdABzZWNyZXQ=";

fn start(f: &Fixture) -> Node {
    let cfg = f.fast_config("");
    Node::start(f, "node1", &["--config", cfg.to_str().expect("utf8 path"), "--allow-plaintext-auth"])
}

/// Submits a message from alice to bob@remote.test (queued); the final
/// reply's code, or None when the connection broke before it.
fn submit(node: &Node, subject: &str) -> Option<u16> {
    let mut s = Wire::connect(node.submission);
    assert_eq!(s.reply().0, 220);
    assert_eq!(s.smtp("EHLO client.example").0, 250);
    assert_eq!(s.smtp(&format!("AUTH PLAIN {ALICE_PLAIN}")).0, 235);
    assert_eq!(s.smtp("MAIL FROM:<alice@example.test>").0, 250);
    assert_eq!(s.smtp("RCPT TO:<bob@remote.test>").0, 250);
    assert_eq!(s.smtp("DATA").0, 354);
    s.send(format!("From: alice@example.test\r\nTo: bob@remote.test\r\nSubject: {subject}\r\n\r\nbody of {subject}\r\n.\r\n").as_bytes());
    let line = s.try_line().ok()?;
    line.get(..3).and_then(|c| c.parse().ok())
}

/// The queue's files by id: (has .msg, has .env), and any other file.
fn queue_state(store: &Path) -> (Vec<(String, bool, bool)>, Vec<String>) {
    let mut ids = BTreeSet::new();
    let mut other = Vec::new();
    for e in std::fs::read_dir(store.join("queue")).expect("queue dir").flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        match n.strip_suffix(".msg").or_else(|| n.strip_suffix(".env")) {
            Some(id) if !n.starts_with('.') => {
                ids.insert(id.to_string());
            }
            _ => other.push(n),
        }
    }
    let q = store.join("queue");
    (ids.into_iter().map(|id| (id.clone(), q.join(format!("{id}.msg")).exists(), q.join(format!("{id}.env")).exists())).collect(), other)
}

#[test]
fn kill_at_every_step_of_enqueue_leaves_no_orphan_and_loses_nothing_acknowledged() {
    // No core files from the aborts.
    let no_core = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: setrlimit with a valid struct, for this process and its children.
    unsafe { libc::setrlimit(libc::RLIMIT_CORE, &no_core) };
    let f = Fixture::new();
    let mut acknowledged: Vec<String> = Vec::new();
    for (i, point) in POINTS.iter().enumerate() {
        // The first message passes the point (and is acknowledged), the
        // second dies there.
        std::env::set_var("MAILFORT_CRASH_AT", format!("{point}@2"));
        let mut node = start(&f);
        std::env::remove_var("MAILFORT_CRASH_AT");
        let kept = format!("kept-{i}");
        assert_eq!(submit(&node, &kept), Some(250), "{point}: the first message\n{}", node.log_text());
        acknowledged.push(kept);
        let killed = format!("killed-{i}");
        assert_eq!(submit(&node, &killed), None, "{point}: the node answered instead of dying there");
        let status = node.wait_exit(Duration::from_secs(20)).unwrap_or_else(|| panic!("{point}: the node did not die"));
        assert!(!status.success(), "{point}: {status:?}");
        assert!(node.log_text().contains(&format!("aborting at {point}")), "{point}: {}", node.log_text());
        drop(node);

        // Restarted without the hook: it cleans up before it serves.
        let node = start(&f);
        let (entries, other) = queue_state(&f.store);
        assert!(other.is_empty(), "{point}: leftovers in the queue: {other:?}");
        for (id, msg, env) in &entries {
            assert!(*msg && *env, "{point}: a half-made queue entry {id} (msg {msg}, env {env}) after the restart");
        }
        let spool: Vec<_> = std::fs::read_dir(f.store.join("spool/node1")).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
        assert!(spool.is_empty(), "{point}: spool files after the restart: {spool:?}");
        // Every acknowledged message is queued whole; the killed one is
        // queued whole or not at all.
        let bodies: Vec<String> = entries.iter().map(|(id, _, _)| std::fs::read_to_string(f.store.join("queue").join(format!("{id}.msg"))).expect("read queued message")).collect();
        for subject in &acknowledged {
            let n = bodies.iter().filter(|b| b.contains(&format!("Subject: {subject}\r\n")) && b.ends_with(&format!("body of {subject}\r\n"))).count();
            assert_eq!(n, 1, "{point}: acknowledged message {subject} not queued whole exactly once");
        }
        let partial = bodies.iter().filter(|b| b.contains(&format!("Subject: {killed}\r\n")) && !b.ends_with(&format!("body of {killed}\r\n"))).count();
        assert_eq!(partial, 0, "{point}: the killed message queued in part");
        drop(node);
    }
}

/// The IMAP crash points, in the order an APPEND and an EXPUNGE pass them.
const IMAP_POINTS: &[&str] = &["imap:append-after-link", "imap:record-before-rename", "imap:expunge-after-unlink"];

/// A raw IMAP session logged in as alice (plaintext allowed on loopback).
fn imap(node: &Node) -> Wire {
    let mut w = Wire::connect(node.imap);
    assert!(w.line().starts_with("* OK "));
    w.send(b"a LOGIN alice@example.test secret\r\n");
    assert!(w.line().starts_with("a OK "));
    w
}

/// Reads to the tagged line of `tag`; all lines, or None when the
/// connection broke first.
fn until(w: &mut Wire, tag: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    loop {
        let l = w.try_line().ok()?;
        let done = l.starts_with(&format!("{tag} "));
        out.push(l);
        if done {
            return Some(out);
        }
    }
}

/// APPENDs a message with subject `s` to INBOX: its UID, or None when the
/// node died before answering.
fn append(w: &mut Wire, tag: &str, s: &str) -> Option<u32> {
    let msg = format!("Subject: {s}\r\n\r\nbody of {s}\r\n");
    w.send(format!("{tag} APPEND INBOX {{{}+}}\r\n{msg}\r\n", msg.len()).as_bytes());
    let r = until(w, tag)?;
    let last = r.last()?;
    assert!(last.starts_with(&format!("{tag} OK [APPENDUID ")), "{r:?}");
    last.split(' ').nth(4)?.trim_end_matches(']').parse().ok()
}

/// UID -> subject of every message in INBOX, and UIDVALIDITY.
fn inbox(node: &Node) -> (u32, Vec<(u32, String)>) {
    let mut w = imap(node);
    w.send(b"s SELECT INBOX\r\n");
    let r = until(&mut w, "s").expect("SELECT answered");
    let uv = r.iter().find_map(|l| l.strip_prefix("* OK [UIDVALIDITY ")).and_then(|x| x.split(']').next()).and_then(|x| x.parse().ok()).expect("UIDVALIDITY");
    w.send(b"f UID FETCH 1:* (BODY.PEEK[HEADER.FIELDS (SUBJECT)])\r\n");
    let mut out = Vec::new();
    loop {
        let l = w.line();
        if l.starts_with("f ") {
            break;
        }
        if let Some(rest) = l.strip_prefix("* ") {
            let uid: u32 = rest.split("UID ").nth(1).and_then(|x| x.split(' ').next()).and_then(|x| x.parse().ok()).expect("UID in FETCH");
            let subject = w.line();
            w.line(); // the empty line that ends the header
            w.line(); // ")"
            out.push((uid, subject.trim_start_matches("Subject: ").to_string()));
        }
    }
    (uv, out)
}

#[test]
fn kill_during_append_and_expunge_loses_nothing_acknowledged_and_reuses_no_uid() {
    let no_core = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: setrlimit with a valid struct, for this process and its children.
    unsafe { libc::setrlimit(libc::RLIMIT_CORE, &no_core) };
    let f = Fixture::new();
    // UID -> subject as acknowledged: must hold for good.
    let mut acked: Vec<(u32, String)> = Vec::new();
    let mut uidvalidity = None;
    for (i, point) in IMAP_POINTS.iter().enumerate() {
        std::env::set_var("MAILFORT_CRASH_AT", format!("{point}@2"));
        let mut node = start(&f);
        std::env::remove_var("MAILFORT_CRASH_AT");
        let mut w = imap(&node);
        if point.starts_with("imap:expunge") {
            // Two expunges: the first passes the point, the second dies.
            let targets = [acked[0].0, acked[1].0];
            for (n, tag) in [(0, "x1"), (1, "x2")] {
                let uid = targets[n];
                w.send(format!("{tag}s SELECT INBOX\r\n").as_bytes());
                until(&mut w, &format!("{tag}s"));
                w.send(format!("{tag}d UID STORE {uid} +FLAGS.SILENT (\\Deleted)\r\n").as_bytes());
                until(&mut w, &format!("{tag}d"));
                w.send(format!("{tag} EXPUNGE\r\n").as_bytes());
                let r = until(&mut w, tag);
                assert_eq!(r.is_some(), n == 0, "{point}: EXPUNGE {n} answered: {r:?}");
                // The first is gone for good; the second's fate was never
                // told (its file went just before the kill).
                acked.retain(|a| a.0 != uid);
            }
        } else {
            let kept = format!("kept-{i}");
            let uid = append(&mut w, "a1", &kept).unwrap_or_else(|| panic!("{point}: first APPEND\n{}", node.log_text()));
            acked.push((uid, kept));
            // The second APPEND (or the record write of the sync after
            // it) dies at the point.
            let r = append(&mut w, "a2", &format!("killed-{i}"));
            if r.is_some() {
                // record-before-rename is also passed by syncs: the kill
                // may come with the next command instead.
                w.send(b"n NOOP\r\n");
                let _ = until(&mut w, "n");
            }
        }
        let status = node.wait_exit(Duration::from_secs(20)).unwrap_or_else(|| panic!("{point}: the node did not die\n{}", node.log_text()));
        assert!(!status.success(), "{point}: {status:?}");
        drop(node);
        let node = start(&f);
        let (uv, now) = inbox(&node);
        assert_eq!(*uidvalidity.get_or_insert(uv), uv, "{point}: UIDVALIDITY changed");
        for (uid, subject) in &acked {
            assert!(now.contains(&(*uid, subject.clone())), "{point}: acknowledged {subject} (UID {uid}) not there under its UID: {now:?}");
        }
        // No UID names two messages, and UIDs only grow with time.
        let mut seen = std::collections::HashMap::new();
        for (uid, subject) in &now {
            if let Some(prev) = seen.insert(*uid, subject.clone()) {
                panic!("{point}: UID {uid} names {prev} and {subject}");
            }
        }
        for (uid, subject) in &now {
            if let Some((old, _)) = acked.iter().find(|(_, s)| s == subject) {
                assert_eq!(old, uid, "{point}: {subject} renumbered");
            }
        }
        // Whatever the killed APPEND left is numbered past every UID given.
        let max_acked = acked.iter().map(|a| a.0).max().unwrap_or(0);
        for (uid, subject) in &now {
            if subject.starts_with("killed-") {
                assert!(*uid > max_acked || acked.iter().all(|a| a.0 != *uid), "{point}: {subject} took UID {uid}");
            }
        }
        drop(node);
    }
}
