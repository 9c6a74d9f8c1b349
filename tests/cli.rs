//! The command line as an administrator uses it: clear errors for bad
//! input, and nothing already stored is touched by a failed command.

use testsupport::prelude::*;

#[test]
fn help_lists_commands() {
    let o = run(&["--help"], "");
    assert!(o.status.success());
    let t = text(&o);
    for c in ["store", "user", "serve", "queue"] {
        assert!(t.contains(c), "{c} missing from --help: {t}");
    }
    let o = run(&["serve", "--help"], "");
    let t = text(&o);
    for flag in ["--smtp", "--submission", "--submissions", "--pop3", "--pop3s", "--tls-cert", "--tls-key", "--allow-plaintext-auth", "--config"] {
        assert!(t.contains(flag), "{flag} missing: {t}");
    }
}

#[test]
fn user_lifecycle() {
    let f = Fixture::new();
    let s = f.store_arg();
    let o = run(&["user", "list", "--store", s], "");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "alice@example.test\nbob@example.test\n");
    // Exists already (in any case).
    let o = run(&["user", "add", "--store", s, "ALICE@example.test", "--password-stdin"], "x\n");
    assert!(!o.status.success());
    assert!(text(&o).contains("alice@example.test already exists"), "{}", text(&o));
    // Bad addresses, including ones that would escape the store.
    for bad in ["nodomain", "../../etc@example.test", "a/b@example.test", "..@example.test", "a@b/c", "x\u{1}y@example.test"] {
        let o = run(&["user", "add", "--store", s, bad, "--password-stdin"], "x\n");
        assert!(!o.status.success(), "{bad} accepted");
        assert!(text(&o).contains("error"), "{}", text(&o));
    }
    // A domain the store does not serve.
    let o = run(&["user", "add", "--store", s, "carol@other.test", "--password-stdin"], "x\n");
    assert!(text(&o).contains("not one of this store's domains"), "{}", text(&o));
    // Empty password.
    let o = run(&["user", "add", "--store", s, "carol@example.test", "--password-stdin"], "\n");
    assert!(!o.status.success() && text(&o).contains("password"), "{}", text(&o));
    // passwd / del of unknown users.
    let o = run(&["user", "passwd", "--store", s, "nobody@example.test", "--password-stdin"], "x\n");
    assert!(text(&o).contains("does not exist"), "{}", text(&o));
    let o = run(&["user", "del", "--store", s, "nobody@example.test"], "");
    assert!(text(&o).contains("does not exist"), "{}", text(&o));
    // Delete keeps the mailbox.
    let o = run(&["user", "del", "--store", s, "bob@example.test"], "");
    assert!(o.status.success(), "{}", text(&o));
    assert!(f.store.join("mail/example.test/bob").is_dir());
    let o = run(&["user", "list", "--store", s], "");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "alice@example.test\n");
    // The accounts file holds argon2id hashes only.
    let accounts = std::fs::read_to_string(f.store.join("accounts")).unwrap();
    assert!(accounts.starts_with("alice@example.test:$argon2id$"), "{accounts}");
    assert!(!accounts.contains("secret"));
}

#[test]
fn store_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let o = run(&["user", "list", "--store", missing.to_str().unwrap()], "");
    assert!(!o.status.success());
    assert!(text(&o).contains("is not a mailfort store"), "{}", text(&o));
    // A store of an unknown FORMAT is refused by every command.
    let odd = dir.path().join("odd");
    std::fs::create_dir(&odd).unwrap();
    std::fs::write(odd.join("FORMAT"), "mailfort-store 7\n").unwrap();
    for args in [vec!["user", "list", "--store"], vec!["queue", "list", "--store"], vec!["serve", "--node", "n1", "--store"]] {
        let mut a = args.clone();
        a.push(odd.to_str().unwrap());
        let o = run(&a, "");
        assert!(!o.status.success());
        assert!(text(&o).contains("mailfort-store 7"), "{:?}: {}", a, text(&o));
    }
    // init refuses a non-empty directory and a bad domain.
    std::fs::write(dir.path().join("file"), "x").unwrap();
    let o = run(&["store", "init", dir.path().to_str().unwrap(), "--domain", "example.test"], "");
    assert!(text(&o).contains("not empty") || text(&o).contains("already"), "{}", text(&o));
    let o = run(&["store", "init", dir.path().join("new").to_str().unwrap(), "--domain", "bad_domain!"], "");
    assert!(text(&o).contains("not a valid domain"), "{}", text(&o));
}

#[test]
fn serve_flag_errors() {
    let f = Fixture::new();
    let s = f.store_arg();
    let o = run(&["serve", "--store", s, "--node", "n1", "--smtp", "nonsense"], "");
    assert!(text(&o).contains("expected IP:PORT"), "{}", text(&o));
    let o = run(&["serve", "--store", s, "--node", "Bad Name"], "");
    assert!(text(&o).contains("node name"), "{}", text(&o));
    let o = run(&["serve", "--store", s, "--node", "n1", "--tls-cert", "/nonexistent.pem"], "");
    assert!(text(&o).contains("--tls-key"), "{}", text(&o));
    let quiet = f.dir.path().join("quiet.toml");
    std::fs::write(&quiet, "[outbound]\nenabled = false\n").unwrap();
    let o = run(&["serve", "--config", quiet.to_str().unwrap(), "--store", s, "--node", "n1", "--smtp", "off", "--submission", "off", "--submissions", "off", "--pop3", "off", "--pop3s", "off", "--imap", "off", "--imaps", "off"], "");
    assert!(text(&o).contains("nothing to serve"), "{}", text(&o));
    let cfg = f.dir.path().join("bad.toml");
    std::fs::write(&cfg, "no_such_setting = 1\n").unwrap();
    let o = run(&["serve", "--config", cfg.to_str().unwrap()], "");
    assert!(text(&o).contains("bad config file") && text(&o).contains("no_such_setting"), "{}", text(&o));
}

#[test]
fn serve_from_config_file() {
    let f = Fixture::new();
    let cfg = f.dir.path().join("node.toml");
    std::fs::write(
        &cfg,
        format!("store = {:?}\nnode = \"cfgnode\"\nrank = 2\nsmtp = [\"127.0.0.1:0\"]\nsubmission = []\nsubmissions = []\npop3 = [\"127.0.0.1:0\"]\npop3s = []\nimap = []\nimaps = []\n[limits]\nmax_recipients = 150\n", f.store_arg()),
    )
    .unwrap();
    let mut child = mailfort().args(["serve", "--config", cfg.to_str().unwrap()]).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::null()).spawn().unwrap();
    use std::io::BufRead;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(line.starts_with("ready node=cfgnode smtp=127.0.0.1:"), "{line}");
    assert!(line.contains("pop3=127.0.0.1:") && !line.contains("submission="), "{line}");
}

#[test]
fn set_dns_checks_every_value_before_saving() {
    let f = Fixture::new();
    let before = std::fs::read_to_string(f.store.join("cluster.toml")).unwrap();
    let secret = "q3Fv2m0u1yRk9Yc3o6bD0i9H1pX7rT2sN4wL8eJ5aZE=";
    for (flag, bad) in [("--server", "not-an-address"), ("--zone", "bad zone!"), ("--key-algorithm", "hmac-md4"), ("--ttl", "0"), ("--recheck-secs", "0")] {
        let mut args = vec!["cluster", "set-dns", "--store", f.store_arg(), "--server", "127.0.0.1:53", "--zone", "example.test", "--key-name", "k.", "--key-secret", secret];
        args.extend([flag, bad]);
        let o = run(&args, "");
        assert!(!o.status.success(), "{flag} {bad} was taken: {}", text(&o));
        assert_eq!(std::fs::read_to_string(f.store.join("cluster.toml")).unwrap(), before, "{flag} {bad} changed cluster.toml");
    }
    let o = run(&["cluster", "set-dns", "--store", f.store_arg(), "--server", "127.0.0.1:53", "--zone", "example.test", "--key-name", "k.", "--key-secret", secret, "--ttl", "45"], "");
    assert!(o.status.success(), "{}", text(&o));
    let after = std::fs::read_to_string(f.store.join("cluster.toml")).unwrap();
    assert!(after.contains("ttl = 45") && after.contains("server = \"127.0.0.1:53\""), "{after}");
}
