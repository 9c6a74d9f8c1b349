//! Every file the store makes is 0600 and every directory 0700, whatever
//! the umask: here the common 022, under which files were 0644 and
//! directories 0755 (mail and password hashes readable by any local user).
//! Its own test binary, since the umask belongs to the whole process.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use store::stats::StatsRecorder;
use store::{Address, Claimant, Envelope, Store};

#[test]
fn files_are_0600_and_directories_0700_under_umask_022() {
    // SAFETY: umask only sets the process's file mode creation mask.
    unsafe { libc::umask(0o022) };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let s = Store::init(&root, "example.test", None).unwrap();
    let alice = Address::parse("alice@example.test").unwrap();
    s.accounts().add(&alice, "secret", &s.settings().domains).unwrap();
    // A delivery to a mailbox and to the queue, a DSN queued, a lease, the
    // store's clock, the message counts, and a settings change.
    let mut sp = s.spool("n1").unwrap();
    sp.write_all(b"Subject: x\r\n\r\nhello\r\n").unwrap();
    let env = Envelope { from: "alice@example.test".into(), rcpts: vec!["bob@remote.test".into()], created: 1, node: "n1".into(), ..Default::default() };
    sp.commit(&s, &[alice.clone()], Some(&env)).unwrap();
    s.enqueue("n1", b"dsn\r\n", &env).unwrap();
    let lease = s.take_lease(&store::lock::names::queue_entry("x"), Claimant { node: "n1", instance: "i" }, Duration::from_secs(60)).unwrap();
    lease.refresh().unwrap();
    let stats = StatsRecorder::open(&s, "n1").unwrap();
    stats.count_in();
    stats.flush(&s).unwrap();
    let mut settings = (*s.settings()).clone();
    settings.domains.push("example.org".into());
    s.write_settings(&settings).unwrap();
    // An open spool file too (a message being received).
    let receiving = s.spool("n2").unwrap();

    assert_eq!(s.list_messages(&alice).unwrap().len(), 1);
    let mut loose = Vec::new();
    if std::fs::metadata(&root).unwrap().permissions().mode() & 0o777 != 0o700 {
        loose.push(format!("{} (the root)", root.display()));
    }
    testsupport::store::loose_modes(&root, &mut loose);
    assert!(loose.is_empty(), "entries not private under umask 022:\n{}", loose.join("\n"));
    // The spool, the Maildir, the queue, the accounts really were made.
    for p in ["accounts", "cluster.toml", "mail/example.test/alice/new", "queue", "stats/n1", "cluster/locks/queue.x", "spool/n2"] {
        assert!(root.join(p).exists(), "{p}");
    }
    drop(receiving);
    lease.release().unwrap();
}
