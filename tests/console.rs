//! `mailfort console` driven through a pseudo-terminal, as a person types
//! at it: prompts, passwords without echo, account changes that the rest
//! of the CLI sees, and a clean exit.

use testsupport::prelude::*;

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long one expected piece of output may take (argon2 hashing in a
/// debug build included).
const EXPECT_TIMEOUT: Duration = Duration::from_secs(30);

struct Pty {
    master: File,
    out: mpsc::Receiver<u8>,
    seen: String,
}

impl Pty {
    /// Opens a pseudo-terminal pair; returns it and the slave side.
    fn open() -> (Pty, OwnedFd) {
        let (mut m, mut s) = (0, 0);
        // SAFETY: openpty fills two descriptors; name, termios and winsize
        // may be null.
        let r = unsafe { libc::openpty(&mut m, &mut s, std::ptr::null_mut(), std::ptr::null(), std::ptr::null()) };
        assert_eq!(r, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: both descriptors are new and owned by us from here on.
        let (master, slave) = unsafe { (File::from_raw_fd(m), OwnedFd::from_raw_fd(s)) };
        let mut reader = master.try_clone().expect("clone master");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut b = [0u8; 256];
            while let Ok(n) = reader.read(&mut b) {
                if n == 0 {
                    break;
                }
                for &c in &b[..n] {
                    if tx.send(c).is_err() {
                        return;
                    }
                }
            }
        });
        (Pty { master, out: rx, seen: String::new() }, slave)
    }

    /// Reads until `want` appears; returns what was read up to and
    /// including it.
    fn expect(&mut self, want: &str) -> String {
        let start = Instant::now();
        let mut got = String::new();
        while !got.contains(want) {
            let left = EXPECT_TIMEOUT.checked_sub(start.elapsed()).unwrap_or_else(|| panic!("no '{want}' within {EXPECT_TIMEOUT:?}; got: {got:?}"));
            match self.out.recv_timeout(left) {
                Ok(c) => got.push(c as char),
                Err(_) => panic!("no '{want}' within {EXPECT_TIMEOUT:?}; got: {got:?}"),
            }
        }
        self.seen.push_str(&got);
        got
    }

    fn type_line(&mut self, line: &str) {
        // A terminal sends CR for Enter; the tty turns it into NL.
        self.master.write_all(format!("{line}\r").as_bytes()).expect("type");
    }
}

#[test]
fn console_on_a_terminal() {
    let f = Fixture::new();
    let (mut pty, slave) = Pty::open();
    let stdin: Stdio = slave.try_clone().expect("dup").into();
    let stdout: Stdio = slave.try_clone().expect("dup").into();
    let stderr: Stdio = slave.into();
    let mut child = mailfort().args(["console", "--store", f.store_arg()]).stdin(stdin).stdout(stdout).stderr(stderr).spawn().expect("start mailfort console");

    pty.expect("mailfort> ");
    pty.type_line("user add carol@example.test");
    pty.expect("New password: ");
    pty.type_line("pw-of-carol");
    pty.expect("Again: ");
    pty.type_line("pw-of-carol");
    let t = pty.expect("mailfort> ");
    assert!(t.contains("added carol@example.test"), "{t}");
    // The password was typed with echo off.
    assert!(!pty.seen.contains("pw-of-carol"), "password echoed: {}", pty.seen);

    pty.type_line("user list");
    let t = pty.expect("mailfort> ");
    assert!(t.contains("alice@example.test") && t.contains("carol@example.test"), "{t}");

    pty.type_line("status");
    let t = pty.expect("mailfort> ");
    assert!(t.contains("3 account(s)") && t.contains("no node has served from this store yet") && t.contains("announcer nobody"), "{t}");

    pty.type_line("user add dave@example.test");
    pty.expect("New password: ");
    pty.type_line("one");
    pty.expect("Again: ");
    pty.type_line("two");
    let t = pty.expect("mailfort> ");
    assert!(t.contains("the passwords differ; nothing changed"), "{t}");

    pty.type_line("user del bob@example.test");
    let t = pty.expect("mailfort> ");
    assert!(t.contains("deleted bob@example.test (its mailbox"), "{t}");

    pty.type_line("frobnicate");
    assert!(pty.expect("mailfort> ").contains("unknown command 'frobnicate'"));
    pty.type_line("poweroff");
    assert!(pty.expect("mailfort> ").contains("not on an appliance"));
    pty.type_line("history");
    let t = pty.expect("mailfort> ");
    assert!(t.contains("   1  user add carol@example.test") && t.contains("   3  status"), "{t}");
    pty.type_line("!2");
    assert!(pty.expect("mailfort> ").contains("carol@example.test"));

    pty.type_line("logout");
    let status = testsupport::wait::exit_within(&mut child, Duration::from_secs(10)).expect("console did not exit after logout");
    assert!(status.success());

    // The rest of the CLI sees the changes.
    let o = run(&["user", "list", "--store", f.store_arg()], "");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "alice@example.test\ncarol@example.test\n");
}

#[test]
fn console_from_a_pipe() {
    let f = Fixture::new();
    let o = run(&["console", "--store", f.store_arg()], "user add erin@example.test\nsecret-e\nsecret-e\nuser list\n");
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("added erin@example.test") && t.contains("erin@example.test\n"), "{t}");
    let o = run(&["console", "--store", "/nonexistent/store"], "status\n");
    assert!(text(&o).contains("store     NOT AVAILABLE"), "{}", text(&o));
}

#[test]
fn bare_init_outside_a_box_refuses() {
    // A process named .../init that is not PID 1 must not take over the
    // machine (mount, reboot): it explains and exits.
    let dir = tempfile::tempdir().expect("tempdir");
    let link = dir.path().join("init");
    std::os::unix::fs::symlink(mailfort_bin(), &link).expect("symlink");
    let o = std::process::Command::new(&link).output().expect("run");
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("only as PID 1"));
}

#[test]
fn console_covers_node_cluster_queue_and_certificate() {
    let f = Fixture::new();
    let cfg = f.dir.path().join("node.toml");
    std::fs::write(&cfg, "node = \"n1\"\n").expect("config");
    let cfg_arg = cfg.to_str().expect("utf8");
    let script = "node set rank 0\nnode set rank 3\nnode show\n\
                  cluster set domains example.test, other.test\ncluster set hostname bad host\ncluster set limits.max_recipients 50\ncluster show\n\
                  queue list\nqueue retry 1.2_3.nowhere\ncert show\ncert regenerate\n\
                  cert upload\nnot a certificate\n.\n\
                  admin-passwd\nadmin-pw\nadmin-pw\n";
    let o = run(&["console", "--store", f.store_arg(), "--config", cfg_arg], script);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    for want in [
        "error: rank: 1 or more",
        "rank = 3 saved; written to",
        "domains = example.test, other.test saved in the store",
        "error: 'bad host' is not a valid host name",
        "error: limits.max_recipients",
        "the queue is empty",
        "no queue entry 1.2_3.nowhere",
        "source       self-signed",
        "new self-signed certificate",
        "admin password changed",
    ] {
        assert!(t.contains(want), "no '{want}' in:\n{t}");
    }
    // The upload of garbage was refused and changed nothing: still the
    // self-signed certificate.
    assert!(t.matches("error:").count() >= 5, "{t}");
    // What the console saved is where the rest of mailfort reads it.
    let c = std::fs::read_to_string(&cfg).expect("config");
    assert!(c.contains("rank = 3") && c.contains("node = \"n1\""), "{c}");
    let cluster = std::fs::read_to_string(f.store.join("cluster.toml")).expect("cluster.toml");
    assert!(cluster.contains("other.test") && !cluster.contains("bad host"), "{cluster}");
    let hash = std::fs::read_to_string(f.store.join("admin.hash")).expect("admin hash");
    assert!(hash.starts_with("$argon2id$"), "{hash}");
}

#[test]
fn console_uploads_a_certificate_and_warns_about_its_names() {
    let f = Fixture::new();
    let upload = |names: Vec<String>| {
        let c = rcgen::generate_simple_self_signed(names).expect("certificate");
        let script = format!("cert upload\n{}{}.\ncert show\n", c.cert.pem(), c.key_pair.serialize_pem());
        text(&run(&["console", "--store", f.store_arg()], &script))
    };
    // Pasted as a person would: the chain and the key, then a line with `.`.
    let t = upload(vec!["mail.example.test".into()]);
    assert!(t.contains("certificate saved") && !t.contains("WARNING"), "{t}");
    assert!(t.contains("source       uploaded") && t.contains("names        mail.example.test"), "{t}");
    // One for another name is kept too, with a warning.
    let t = upload(vec!["elsewhere.test".into()]);
    assert!(t.contains("certificate saved") && t.contains("WARNING: the certificate does not name mail.example.test"), "{t}");
}
