//! Under umask 022 (the usual one) a whole node's work leaves the store
//! with files 0600 and directories 0700 only: the store, its accounts, the
//! cluster certificate, Maildirs, the queue, heartbeats, counts, leases.
//! Its own test binary, since the umask belongs to the whole process.

use testsupport::prelude::*;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

/// AUTH PLAIN for alice@example.test / secret (RFC 4616).
const ALICE_PLAIN: &str = "AGFsaWNlQGV4YW1wbGUudGVzdABzZWNyZXQ=";
fn smtp_send(addr: std::net::SocketAddr, auth: bool, from: &str, to: &str) {
    let mut s = Wire::connect(addr);
    assert_eq!(s.reply().0, 220);
    assert_eq!(s.smtp("EHLO client.example").0, 250);
    if auth {
        assert_eq!(s.smtp(&format!("AUTH PLAIN {ALICE_PLAIN}")).0, 235);
    }
    assert_eq!(s.smtp(&format!("MAIL FROM:<{from}>")).0, 250);
    assert_eq!(s.smtp(&format!("RCPT TO:<{to}>")).0, 250);
    assert_eq!(s.smtp("DATA").0, 354);
    s.send(b"Subject: modes\r\n\r\nhello\r\n");
    assert_eq!(s.smtp(".").0, 250);
    assert_eq!(s.smtp("QUIT").0, 221);
}

#[test]
fn store_is_private_under_umask_022() {
    // SAFETY: sets this process's (and its children's) file creation mask.
    unsafe { libc::umask(0o022) };
    let f = Fixture::new();
    let cfg = f.fast_config("");
    let mut node = Node::start(&f, "node1", &["--config", cfg.to_str().expect("utf8 path"), "--allow-plaintext-auth"]);
    smtp_send(node.smtp, false, "carol@remote.test", "alice@example.test");
    smtp_send(node.submission, true, "alice@example.test", "bob@remote.test");
    let mut pop = Wire::connect(node.pop3);
    assert!(pop.line().starts_with("+OK"));
    assert!(pop.cmd("USER alice@example.test").starts_with("+OK"));
    assert!(pop.cmd("PASS secret").starts_with("+OK maildrop has 1 messages"));
    let mut loose = Vec::new();
    // While the maildrop lock is held.
    testsupport::store::loose_modes(&f.store, &mut loose);
    assert!(pop.cmd("QUIT").starts_with("+OK"));
    node.signal(libc::SIGTERM);
    assert!(node.wait_exit(Duration::from_secs(20)).is_some(), "the node did not stop");
    assert_eq!(f.mailbox_files("alice@example.test").len(), 1);
    assert!(std::fs::read_dir(f.store.join("queue")).expect("queue").count() >= 2, "the queued message");
    assert!(f.store.join("tls").read_dir().expect("tls").count() > 0, "the cluster certificate");
    if std::fs::metadata(&f.store).expect("root").permissions().mode() & 0o777 != 0o700 {
        loose.push(format!("{} (the root)", f.store.display()));
    }
    testsupport::store::loose_modes(&f.store, &mut loose);
    assert!(loose.is_empty(), "store entries open to other users under umask 022:\n{}", loose.join("\n"));
}
