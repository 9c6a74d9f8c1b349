//! SPF, DKIM and DMARC checks of mail from other servers, with the sender
//! domains' records served by BIND on loopback.

use testsupport::prelude::*;

use std::process::Command;

fn zone(name: &str, body: &str) -> String {
    format!("$TTL 60\n@ IN SOA ns1.{name}. hostmaster.{name}. 1 3600 600 604800 60\n@ IN NS ns1.{name}.\nns1 IN A 127.0.0.1\n{body}")
}

/// Sends a message from `from` (envelope and From header) to alice over
/// port 25; returns the SMTP code of the final reply.
fn send(node: &Node, from: &str, extra_body: usize) -> u16 {
    let script = format!(
        "import smtplib\ns = smtplib.SMTP('127.0.0.1', {})\nmsg = b'From: {from}\\r\\nAuthentication-Results: mail.example.test; dkim=pass\\r\\n header.d=bank.test\\r\\nAuthentication-Results: other.test; spf=pass\\r\\nTo: alice@example.test\\r\\nSubject: checked\\r\\n\\r\\n' + b'x' * {extra_body} + b'\\r\\nend\\r\\n'\ntry:\n    s.sendmail('{from}', ['alice@example.test'], msg)\n    print(250)\nexcept smtplib.SMTPDataError as e:\n    print(e.smtp_code, e.smtp_error)\n",
        node.smtp.port()
    );
    let o = Command::new("python3").arg("-c").arg(script).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    String::from_utf8_lossy(&o.stdout).split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn spf_dkim_dmarc_are_checked_and_reported() {
    let f = Fixture::new();
    let bind_dir = f.dir.path().join("bind");
    std::fs::create_dir(&bind_dir).unwrap();
    let good = zone("good.test", "@ IN TXT \"v=spf1 ip4:127.0.0.1 -all\"\n_dmarc IN TXT \"v=DMARC1; p=reject\"\n");
    let strict = zone("strict.test", "@ IN TXT \"v=spf1 -all\"\n_dmarc IN TXT \"v=DMARC1; p=reject\"\n");
    // The parent zone too: DMARC's tree walk (RFC 9989) asks _dmarc.test,
    // which must get an authoritative "no such name", not a refusal.
    let parent = zone("test", "");
    let dns = start_named(&bind_dir, &[("good.test", &good), ("strict.test", &strict), ("test", &parent)]);
    let strict_cfg = f.fast_config(&format!("[inbound]\ndns_server = \"127.0.0.1:{}\"\ndmarc_reject = true\n", dns.port));
    let node = Node::start(&f, "node1", &["--config", strict_cfg.to_str().unwrap()]);

    assert_eq!(send(&node, "carol@good.test", 10), 250);
    let files = f.mailbox_files("alice@example.test");
    assert_eq!(files.len(), 1);
    let stored = std::fs::read_to_string(&files[0]).unwrap();
    assert!(stored.starts_with("Return-Path: <carol@good.test>\r\nAuthentication-Results: mail.example.test;"), "{stored}");
    assert!(stored.contains("spf=pass") && stored.contains("dmarc=pass"), "{stored}");
    // RFC 8601 5: the results the sender wrote in our name are gone;
    // another server's stay.
    assert_eq!(stored.matches("Authentication-Results: mail.example.test").count(), 1, "{stored}");
    assert!(!stored.contains("bank.test") && stored.contains("Authentication-Results: other.test; spf=pass\r\nTo: alice@example.test\r\n"), "{stored}");

    // A domain whose SPF excludes us and whose policy is p=reject.
    assert_eq!(send(&node, "eve@strict.test", 10), 550);
    assert_eq!(f.mailbox_files("alice@example.test").len(), 1, "nothing stored for a DMARC rejection");

    // A large message (kept on disk while received) gets its header too.
    assert_eq!(send(&node, "carol@good.test", 600_000), 250);
    let files = f.mailbox_files("alice@example.test");
    assert_eq!(files.len(), 2);
    let big = files.iter().map(|p| std::fs::read(p).unwrap()).find(|d| d.len() > 600_000).expect("the big message");
    let text_big = String::from_utf8_lossy(&big);
    assert!(text_big.starts_with("Return-Path: <carol@good.test>\r\nAuthentication-Results: mail.example.test;"), "{}", &text_big[..400]);
    assert!(text_big.contains("spf=pass"));
    assert_eq!(text_big.matches("Authentication-Results: mail.example.test").count(), 1);
    assert!(!text_big.contains("bank.test") && text_big.contains("From: carol@good.test\r\nAuthentication-Results: other.test; spf=pass\r\nTo: alice@example.test\r\n"), "{}", &text_big[..600]);
    assert!(big.ends_with(&[&b"x".repeat(600_000)[..], b"\r\nend\r\n"].concat()), "the body is intact");

    // With rejection off, DMARC failures are accepted and marked.
    drop(node);
    let lax_cfg = f.fast_config(&format!("[inbound]\ndns_server = \"127.0.0.1:{}\"\n", dns.port));
    let node = Node::start(&f, "node2", &["--config", lax_cfg.to_str().unwrap()]);
    assert_eq!(send(&node, "eve@strict.test", 10), 250);
    let files = f.mailbox_files("alice@example.test");
    let marked = files.iter().map(|p| std::fs::read_to_string(p).unwrap()).find(|d| d.contains("eve@strict.test")).expect("stored");
    assert!(marked.contains("spf=fail") && marked.contains("dmarc=fail"), "{marked}");
}

/// MAIL FROM one of our own domains on port 25, unauthenticated, from
/// 127.0.0.1: (code, reply).
fn mail_from(node: &Node, from: &str) -> (u16, String) {
    let mut w = Wire::connect(node.smtp);
    assert_eq!(w.reply().0, 220);
    assert_eq!(w.smtp("EHLO client.test").0, 250);
    let r = w.smtp(&format!("MAIL FROM:<{from}>"));
    let _ = w.smtp("QUIT");
    r
}

/// Port 25 takes our own domains as the envelope sender only from a host
/// their SPF allows or one the cluster lists as an outside sender.
#[test]
fn our_own_domains_as_sender_need_spf_or_a_listing() {
    let f = Fixture::new();
    let bind_dir = f.dir.path().join("bind");
    std::fs::create_dir(&bind_dir).unwrap();
    // spf.test allows 127.0.0.1; example.test has no records at all.
    let spf = zone("spf.test", "@ IN TXT \"v=spf1 ip4:127.0.0.1 -all\"\n");
    let parent = zone("test", "");
    let dns = start_named(&bind_dir, &[("spf.test", &spf), ("test", &parent)]);
    // Both are our domains.
    let settings = f.store.join("cluster.toml");
    let text = std::fs::read_to_string(&settings).unwrap();
    let both = text.replace("domains = [\"example.test\"]", "domains = [\"example.test\", \"spf.test\"]");
    assert_ne!(both, text, "{text}");
    std::fs::write(&settings, &both).unwrap();
    let cfg = f.fast_config(&format!("[inbound]\ndns_server = \"127.0.0.1:{}\"\n", dns.port));
    let node = Node::start(&f, "node1", &["--config", cfg.to_str().unwrap()]);

    let (code, reply) = mail_from(&node, "alice@example.test");
    assert_eq!(code, 550, "{reply}");
    assert!(reply.starts_with("550 5.7.1"), "{reply}");
    // SPF passes for 127.0.0.1.
    let (code, reply) = mail_from(&node, "anyone@spf.test");
    assert_eq!(code, 250, "{reply}");
    // Other domains are not ours to judge here.
    assert_eq!(mail_from(&node, "carol@remote.test").0, 250);

    // Listed as an outside sender: taken (the node follows cluster.toml).
    std::fs::write(&settings, format!("{both}\n[senders]\noutside = [\"127.0.0.0/8\"]\n")).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (code, reply) = mail_from(&node, "alice@example.test");
        if code == 250 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the listing was not followed: {reply}");
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    drop(node);

    // With the checks off, only a listed host may.
    std::fs::write(&settings, &both).unwrap();
    let off = f.fast_config("[inbound]\nverify = false\n");
    let node = Node::start(&f, "node2", &["--config", off.to_str().unwrap()]);
    let (code, reply) = mail_from(&node, "anyone@spf.test");
    assert_eq!(code, 550, "{reply}");
    drop(node);
    std::fs::write(&settings, format!("{both}\n[senders]\noutside = [\"127.0.0.1\"]\n")).unwrap();
    let node = Node::start(&f, "node3", &["--config", off.to_str().unwrap()]);
    assert_eq!(mail_from(&node, "anyone@spf.test").0, 250);
}
