//! SMTP and submission driven by Python's smtplib and a raw socket client.

use testsupport::prelude::*;

#[test]
fn inbound_smtp_with_smtplib() {
    let f = Fixture::new();
    let node = Node::start(&f, "node1", &[]);
    let out = python("smtp_inbound.py", &node, &f, &[]);
    assert!(out.contains("ok 10 MiB message intact"), "{out}");
}

#[test]
fn submission_over_tls() {
    let f = Fixture::new();
    let cfg = f.fast_config("");
    let node = Node::start(&f, "node1", &["--config", cfg.to_str().unwrap()]);
    let out = python("submission.py", &node, &f, &[("MAILFORT", mailfort_bin().to_str().expect("utf8 path"))]);
    assert!(out.contains("ok unknown user 535"), "{out}");
}

#[test]
fn submission_plaintext_when_allowed() {
    let f = Fixture::new();
    let cfg = f.fast_config("");
    let node = Node::start(&f, "node1", &["--config", cfg.to_str().unwrap(), "--allow-plaintext-auth"]);
    let out = python("submission.py", &node, &f, &[("MAILFORT", mailfort_bin().to_str().expect("utf8 path")), ("PLAINTEXT", "1")]);
    assert!(out.contains("ok foreign recipient queued"), "{out}");
}
