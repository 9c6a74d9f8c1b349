//! SMTP (RFC 5321) and submission (RFC 6409, RFC 4954) rules.

use maild::session::{MAX_BAD_COMMANDS, MAX_JUNK_COMMANDS};
use maild::Service;

use crate::harness::*;

/// MAIL, RCPT and DATA up to the 354.
async fn start_data(c: &mut Client, rcpts: &[&str]) {
    assert_eq!(c.cmd("MAIL FROM:<carol@remote.test>").await.0, 250);
    for r in rcpts {
        assert_eq!(c.cmd(&format!("RCPT TO:<{r}>")).await.0, 250, "{r}");
    }
    assert_eq!(c.cmd("DATA").await.0, 354);
}

#[tokio::test]
async fn ehlo_lists_the_extensions_and_helo_none() {
    let h = Harness::new();
    let mut c = h.connect(Service::Smtp).await;
    let (code, text) = c.reply().await;
    // RFC 5321 4.3.1: the greeting is 220 with our name.
    assert_eq!((code, text.as_str()), (220, "mail.example.test ESMTP mailfort"));
    c.send(b"EHLO client.example\r\n").await;
    let lines = c.reply_lines().await;
    assert!(lines.iter().all(|(code, _)| *code == 250), "{lines:?}");
    let names: Vec<&str> = lines.iter().skip(1).map(|(_, t)| t.as_str()).collect();
    let size = format!("SIZE {}", maild::Limits::default().max_message_size);
    for ext in ["PIPELINING", size.as_str(), "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8", "STARTTLS"] {
        assert!(names.contains(&ext), "{ext} missing from {names:?}");
    }
    assert!(!names.iter().any(|n| n.starts_with("AUTH")), "AUTH on port 25: {names:?}");
    // HELO: one line, and no ESMTP parameters afterwards (RFC 5321 4.1.1.1).
    c.send(b"HELO old.example\r\n").await;
    assert_eq!(c.reply_lines().await.len(), 1);
    assert_eq!(c.cmd("MAIL FROM:<o@remote.test> SIZE=10").await.0, 555);
    assert_eq!(c.cmd("MAIL FROM:<o@remote.test>").await.0, 250);
    assert_eq!(c.cmd("QUIT").await.0, 221);
    assert!(c.closed().await.is_empty());
    c.ended().await;
}

#[tokio::test]
async fn commands_out_of_sequence_get_503_and_the_other_codes_hold() {
    let h = Harness::new();
    let mut c = h.smtp().await;
    // RFC 5321 4.1.4: nothing before EHLO/HELO.
    assert_eq!(c.cmd("MAIL FROM:<o@remote.test>").await.0, 503);
    assert_eq!(c.cmd("EHLO client.example").await.0, 250);
    assert_eq!(c.cmd("RCPT TO:<alice@example.test>").await.0, 503);
    assert_eq!(c.cmd("DATA").await.0, 503);
    assert_eq!(c.cmd("MAIL FROM:<carol@remote.test>").await.0, 250);
    assert_eq!(c.cmd("MAIL FROM:<x@y.test>").await.0, 503, "nested MAIL");
    // RFC 5321 3.3: DATA without a valid recipient.
    assert_eq!(c.cmd("RCPT TO:<nobody@example.test>").await, (550, "5.1.1 <nobody@example.test>: no such user here".into()));
    assert_eq!(c.cmd("DATA").await.0, 554);
    // The transaction is still open: a recipient now makes DATA possible.
    assert_eq!(c.cmd("RCPT TO:<alice@example.test>").await.0, 250);
    assert_eq!(c.cmd("RSET").await.0, 250);
    assert_eq!(c.cmd("RCPT TO:<alice@example.test>").await.0, 503, "RSET ends the transaction");
    // RFC 5321 4.1.4: EHLO resets a transaction too.
    assert_eq!(c.cmd("MAIL FROM:<carol@remote.test>").await.0, 250);
    assert_eq!(c.cmd("EHLO again.example").await.0, 250);
    assert_eq!(c.cmd("RCPT TO:<alice@example.test>").await.0, 503);
    // The other codes of RFC 5321 4.2 and 3.5.
    assert_eq!(c.cmd("VRFY alice").await.0, 252);
    assert_eq!(c.cmd("EXPN staff").await.0, 502);
    assert_eq!(c.cmd("HELP").await.0, 214);
    assert_eq!(c.cmd("NOOP").await.0, 250);
    assert_eq!(c.cmd("FROBNICATE").await.0, 500);
    assert_eq!(c.cmd("MAIL TO:<x@y.test>").await.0, 501);
    assert_eq!(c.cmd("MAIL FROM:<a@b.test> FOO=BAR").await.0, 555);
    assert_eq!(c.cmd("MAIL FROM:<a@b.test> BODY=BINARYMIME").await.0, 501);
    // Relaying needs a login (never an open relay).
    assert_eq!(c.cmd("MAIL FROM:<carol@remote.test>").await.0, 250);
    assert_eq!(c.cmd("RCPT TO:<victim@elsewhere.test>").await, (554, "5.7.1 <victim@elsewhere.test>: relay access denied".into()));
    // Non-ASCII needs SMTPUTF8 (RFC 6531 3.4).
    assert_eq!(c.cmd("RSET").await.0, 250);
    assert_eq!(c.cmd("MAIL FROM:<jörg@bücher.test>").await.0, 553);
    assert_eq!(c.cmd("MAIL FROM:<jörg@bücher.test> SMTPUTF8").await.0, 250);
    assert_eq!(c.cmd("QUIT").await.0, 221);
    c.ended().await;
}

#[tokio::test]
async fn a_message_is_stored_with_our_trace_headers_and_exact_bytes() {
    let h = Harness::new();
    let mut c = h.smtp().await;
    assert_eq!(c.cmd("EHLO client.example").await.0, 250);
    start_data(&mut c, &["alice@example.test"]).await;
    c.send(b"Subject: hello\r\n\r\nfirst\r\n..leading dot\r\n.\r\n").await;
    let (code, text) = c.reply().await;
    assert_eq!(code, 250, "{text}");
    let m = h.mailbox(ALICE);
    assert_eq!(m.len(), 1);
    let m = String::from_utf8(m[0].clone()).expect("utf8");
    assert!(m.starts_with("Return-Path: <carol@remote.test>\r\nReceived: from client.example ([192.0.2.25])\r\n\tby mail.example.test (mailfort) with ESMTP id "), "{m}");
    assert!(m.contains("\r\n\tfor <alice@example.test>;\r\n"), "{m}");
    assert!(m.ends_with("\r\nSubject: hello\r\n\r\nfirst\r\n.leading dot\r\n"), "{m}");
    // Pipelined (RFC 2920): the whole transaction in one write.
    c.send(b"MAIL FROM:<p@remote.test>\r\nRCPT TO:<alice@example.test>\r\nRCPT TO:<nobody@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n").await;
    let mut codes = Vec::new();
    for _ in 0..5 {
        codes.push(c.reply().await.0);
    }
    assert_eq!(codes, [250, 250, 550, 250, 354]);
    c.send(b"Subject: piped\r\n\r\nto two, no for\r\n.\r\nQUIT\r\n").await;
    assert_eq!(c.reply().await.0, 250);
    assert_eq!(c.reply().await.0, 221);
    c.ended().await;
    let bob = h.mailbox(BOB);
    assert_eq!(bob.len(), 1);
    let text = String::from_utf8_lossy(&bob[0]);
    assert!(text.ends_with("to two, no for\r\n") && !text.contains("\tfor <"), "RFC 5321 4.4: no \"for\" with two recipients: {text}");
    assert!(h.spool_empties().await, "spool files left");
}

#[tokio::test]
async fn a_line_too_long_gets_500_and_the_connection_closes() {
    let h = Harness::new();
    let mut c = h.smtp().await;
    let long = format!("NOOP {}\r\n", "x".repeat(maild::Limits::default().max_line));
    c.send(long.as_bytes()).await;
    // RFC 5321 4.5.3.1.10
    assert_eq!(c.reply().await, (500, "5.5.2 Line too long".into()));
    assert!(c.closed().await.is_empty());
    c.ended().await;
}

#[tokio::test]
async fn garbage_is_answered_until_the_bad_command_limit_then_cut_off() {
    let h = Harness::new();
    let mut c = h.smtp().await;
    // NUL and bytes that no command has: 500, and the session goes on.
    for bad in [&b"NOOP\0\r\n"[..], b"\xff\xfe\r\n"] {
        c.send(bad).await;
        let (code, text) = c.reply().await;
        assert_eq!(code, 500, "{text}");
        assert!(text.starts_with("5.5.2"), "{text}");
    }
    assert_eq!(c.cmd("NOOP").await.0, 250);
    for _ in 2..MAX_BAD_COMMANDS - 1 {
        assert_eq!(c.cmd("FROBNICATE").await.0, 500);
    }
    c.send(b"FROBNICATE\r\n").await;
    assert_eq!(c.reply().await.0, 500);
    assert_eq!(c.reply().await, (421, "4.7.0 Too many errors, closing connection".into()));
    assert!(c.closed().await.is_empty());
    c.ended().await;
}

#[tokio::test]
async fn junk_commands_are_cut_off_and_a_message_starts_the_count_again() {
    let h = Harness::new();
    let mut c = h.smtp().await;
    assert_eq!(c.cmd("EHLO client.example").await.0, 250);
    for _ in 0..MAX_JUNK_COMMANDS - 1 {
        assert_eq!(c.cmd("NOOP").await.0, 250);
    }
    start_data(&mut c, &["alice@example.test"]).await;
    assert_eq!(c.cmd("Subject: x\r\n\r\nx\r\n.").await.0, 250);
    for i in 0..MAX_JUNK_COMMANDS {
        let cmd = ["NOOP", "RSET", "VRFY alice", "HELP"][i as usize % 4];
        let code = c.cmd(cmd).await.0;
        assert!(code / 100 == 2, "{cmd}: {code}");
    }
    assert_eq!(c.cmd("NOOP").await, (421, "4.7.0 Too many commands without mail, closing connection".into()));
    assert!(c.closed().await.is_empty());
    c.ended().await;
}

/// The smallest size limit a node may have (RFC 5321 4.5.3.1.7: 64K).
const MAX_SIZE: u64 = store::settings::MIN_MESSAGE_SIZE_LIMIT;

/// A message of exactly `size` octets ending in CRLF, with lines that
/// need dot-stuffing; and its stuffed form.
fn message(size: usize) -> (Vec<u8>, Vec<u8>) {
    let mut m = b"Subject: size test\r\n\r\n".to_vec();
    let line = [b".dotted line ".as_slice(), &[b'z'; 50], b"\r\n"].concat();
    while m.len() + line.len() <= size - 3 {
        m.extend_from_slice(&line);
    }
    m.resize(size - 2, b'y');
    m.extend_from_slice(b"\r\n");
    let stuffed: Vec<u8> = m.split_inclusive(|&b| b == b'\n').flat_map(|l| if l.starts_with(b".") { [b".", l].concat() } else { l.to_vec() }).collect();
    (m, stuffed)
}

#[tokio::test]
async fn the_message_size_limit_holds_at_mail_and_after_data() {
    let h = Harness::with(|c| c.limits.max_message_size = MAX_SIZE);
    let mut c = h.smtp().await;
    c.send(b"EHLO client.example\r\n").await;
    assert!(c.reply_lines().await.iter().any(|(_, t)| t == &format!("SIZE {MAX_SIZE}")), "RFC 1870 4: SIZE advertised");
    // RFC 1870 6: a declared size over the limit is refused at MAIL.
    assert_eq!(c.cmd(&format!("MAIL FROM:<carol@remote.test> SIZE={}", MAX_SIZE + 1)).await, (552, "5.3.4 Message size exceeds fixed maximum message size".into()));
    assert_eq!(c.cmd("MAIL FROM:<carol@remote.test> SIZE=x").await.0, 501);
    // Undeclared and too big: read to the end, then 552; nothing stored.
    for size in [MAX_SIZE as usize + 1, 300 * 1024] {
        start_data(&mut c, &["alice@example.test"]).await;
        let (_, stuffed) = message(size);
        c.send(&stuffed).await;
        c.send(b".\r\n").await;
        let (code, text) = c.reply().await;
        assert_eq!(code, 552, "{size}: {text}");
    }
    assert!(h.mailbox(ALICE).is_empty());
    // Exactly the limit, counted after un-stuffing, is accepted.
    let (m, stuffed) = message(MAX_SIZE as usize);
    assert!(stuffed.len() as u64 > MAX_SIZE);
    assert_eq!(c.cmd(&format!("MAIL FROM:<carol@remote.test> SIZE={MAX_SIZE}")).await.0, 250);
    assert_eq!(c.cmd("RCPT TO:<alice@example.test>").await.0, 250);
    assert_eq!(c.cmd("DATA").await.0, 354);
    c.send(&stuffed).await;
    c.send(b".\r\n").await;
    assert_eq!(c.reply().await.0, 250);
    let stored = h.mailbox(ALICE);
    assert_eq!(stored.len(), 1);
    assert!(stored[0].ends_with(&m));
    assert_eq!(c.cmd("QUIT").await.0, 221);
    c.ended().await;
    assert!(h.spool_empties().await, "spool files left");
}

#[tokio::test]
async fn recipients_over_the_limit_get_452_and_the_others_the_message() {
    // The smallest limit a node may have: RFC 5321 4.5.3.1.8's 100.
    const LIMIT: usize = store::settings::MIN_RECIPIENTS_LIMIT;
    let h = Harness::with(|c| c.limits.max_recipients = LIMIT);
    let mut c = submission(&h).await;
    assert_eq!(c.cmd(&format!("AUTH PLAIN {}", b64(&format!("\0{ALICE}\0{ALICE_PASSWORD}")))).await.0, 235);
    assert_eq!(c.cmd("MAIL FROM:<alice@example.test>").await.0, 250);
    assert_eq!(c.cmd("RCPT TO:<alice@example.test>").await.0, 250);
    assert_eq!(c.cmd("RCPT TO:<bob@example.test>").await.0, 250);
    // A repeated recipient is one recipient.
    assert_eq!(c.cmd("RCPT TO:<bob@example.test>").await.0, 250);
    for i in 2..LIMIT {
        assert_eq!(c.cmd(&format!("RCPT TO:<r{i}@elsewhere.test>")).await.0, 250, "recipient {i}");
    }
    // RFC 5321 4.5.3.1.10; the count comes before any other check.
    for r in ["carol@example.test", "nobody@example.test", "x@elsewhere.test"] {
        assert_eq!(c.cmd(&format!("RCPT TO:<{r}>")).await, (452, "4.5.3 Too many recipients".into()), "{r}");
    }
    assert_eq!(c.cmd("DATA").await.0, 354);
    assert_eq!(c.cmd("Subject: many\r\n\r\nto a hundred\r\n.").await.0, 250);
    assert_eq!((h.mailbox(ALICE).len(), h.mailbox(BOB).len()), (1, 1));
    // Per transaction.
    assert_eq!(c.cmd("MAIL FROM:<alice@example.test>").await.0, 250);
    assert_eq!(c.cmd("RCPT TO:<bob@example.test>").await.0, 250);
    assert_eq!(c.cmd("RCPT TO:<alice@example.test>").await.0, 250);
}

#[tokio::test]
async fn bare_line_ends_and_nul_refuse_the_whole_message() {
    let h = Harness::new();
    let mut c = h.smtp().await;
    assert_eq!(c.cmd("EHLO client.example").await.0, 250);
    for (name, data) in [("bare LF", &b"Subject: a\r\n\r\nline\nline\r\n.\r\n"[..]), ("smuggled", b"Subject: a\r\n\r\nhello\n.\nMAIL FROM:<admin@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\nevil\r\n.\r\n"), ("NUL", b"Subject: a\r\n\r\na\0b\r\n.\r\n")] {
        start_data(&mut c, &["alice@example.test"]).await;
        c.send(data).await;
        let (code, text) = c.reply().await;
        // RFC 5321 2.3.8: CR and LF only as CRLF.
        assert_eq!(code, 554, "{name}: {text}");
        assert!(text.starts_with("5.6.0"), "{name}: {text}");
        // Still in step.
        assert_eq!(c.cmd("NOOP").await.0, 250, "{name}");
    }
    assert!(h.mailbox(ALICE).is_empty() && h.mailbox(BOB).is_empty());
    assert!(h.spool_empties().await, "spool files left");
}

#[tokio::test]
async fn a_session_dropped_in_data_stores_nothing() {
    let h = Harness::with(|c| c.limits.message_memory_per_session = maild::config::MIN_MESSAGE_MEMORY);
    let mut c = h.smtp().await;
    assert_eq!(c.cmd("EHLO client.example").await.0, 250);
    start_data(&mut c, &["alice@example.test", "bob@example.test"]).await;
    // More than the session keeps in memory: the spool file has data.
    c.send(b"Subject: cut off\r\n\r\n").await;
    c.send(&b"a line of a message that never ends\r\n".repeat(1000)).await;
    c.send(b"NOOP\r\n").await;
    c.hang_up().await;
    assert!(h.mailbox(ALICE).is_empty() && h.mailbox(BOB).is_empty());
    // The spool file is removed on the blocking pool after the session.
    assert!(h.spool_empties().await, "spool files left");
}

#[tokio::test]
async fn auth_is_for_submission_under_tls_only() {
    let h = Harness::with(|c| c.allow_plaintext_auth = false);
    // Port 25: no AUTH at all.
    let mut c = h.smtp().await;
    assert_eq!(c.cmd("EHLO client.example").await.0, 250);
    assert_eq!(c.cmd(&format!("AUTH PLAIN {}", b64("\0alice@example.test\0secret"))).await.0, 503);
    // Submission without TLS: not offered, 538 if tried, MAIL needs it.
    let mut c = h.connect(Service::Submission).await;
    assert_eq!(c.reply().await.0, 220);
    c.send(b"EHLO client.example\r\n").await;
    let names: Vec<String> = c.reply_lines().await.into_iter().map(|(_, t)| t).collect();
    assert!(!names.iter().any(|n| n.starts_with("AUTH")) && names.contains(&"STARTTLS".to_string()), "{names:?}");
    assert_eq!(c.cmd(&format!("AUTH PLAIN {}", b64("\0alice@example.test\0secret"))).await.0, 538);
    assert_eq!(c.cmd("MAIL FROM:<alice@example.test>").await.0, 530);
    // Under TLS: offered, no STARTTLS (RFC 3207 4.2).
    let mut c = h.connect_with(Service::Submissions, true).await;
    assert_eq!(c.reply().await.0, 220);
    c.send(b"EHLO client.example\r\n").await;
    let names: Vec<String> = c.reply_lines().await.into_iter().map(|(_, t)| t).collect();
    assert!(names.contains(&"AUTH PLAIN LOGIN".to_string()) && !names.contains(&"STARTTLS".to_string()), "{names:?}");
    assert_eq!(c.cmd("STARTTLS").await.0, 503);
}

async fn submission(h: &Harness) -> Client {
    let mut c = h.connect_with(Service::Submissions, true).await;
    assert_eq!(c.reply().await.0, 220);
    assert_eq!(c.cmd("EHLO client.example").await.0, 250);
    c
}

#[tokio::test]
async fn auth_plain_and_login_and_what_they_refuse() {
    let h = Harness::new();
    let mut c = submission(&h).await;
    // RFC 4954 4: an undecodable response rejects the AUTH command with
    // 501, at once, as often as it comes: it is not a failed login.
    let limits = maild::Limits::default();
    for _ in 0..limits.max_auth_failures + 1 {
        assert_eq!(c.cmd("AUTH PLAIN not-base64!").await, (501, "5.5.2 Cannot decode response".into()));
    }
    assert_eq!(c.cmd("AUTH PLAIN").await, (334, String::new()));
    assert_eq!(c.cmd("%%%").await, (501, "5.5.2 Cannot decode response".into()));
    assert_eq!(c.cmd("AUTH LOGIN").await, (334, "VXNlcm5hbWU6".into()));
    assert_eq!(c.cmd(&b64(ALICE)).await, (334, "UGFzc3dvcmQ6".into()));
    assert_eq!(c.cmd("not base64").await.0, 501);
    // "*" cancels (RFC 4954 4).
    assert_eq!(c.cmd("AUTH PLAIN").await.0, 334);
    assert_eq!(c.cmd("*").await, (501, "5.0.0 Authentication canceled".into()));
    // RFC 4954 4: 504 for an unknown mechanism.
    assert_eq!(c.cmd("AUTH CRAM-MD5").await.0, 504);
    // Nor is a transaction started before AUTH.
    assert_eq!(c.cmd("MAIL FROM:<alice@example.test>").await.0, 530);
    // AUTH LOGIN with the right password.
    assert_eq!(c.cmd("AUTH LOGIN").await.0, 334);
    assert_eq!(c.cmd(&b64(ALICE)).await.0, 334);
    assert_eq!(c.cmd(&b64(ALICE_PASSWORD)).await, (235, "2.7.0 Authentication successful".into()));
    // RFC 4954 4: no second AUTH.
    assert_eq!(c.cmd(&format!("AUTH PLAIN {}", b64("\0alice@example.test\0secret"))).await.0, 503);
    // A user sends as themselves only, and may send elsewhere.
    assert_eq!(c.cmd("MAIL FROM:<bob@example.test>").await.0, 553);
    assert_eq!(c.cmd("MAIL FROM:<>").await.0, 553);
    assert_eq!(c.cmd("MAIL FROM:<alice@example.test>").await.0, 250);
    assert_eq!(c.cmd("RCPT TO:<friend@remote.test>").await.0, 250);
    assert_eq!(c.cmd("RCPT TO:<bob@example.test>").await.0, 250);
    assert_eq!(c.cmd("DATA").await.0, 354);
    assert_eq!(c.cmd("Subject: from alice\r\n\r\nhi\r\n.").await.0, 250);
    assert_eq!(h.mailbox(BOB).len(), 1);
    let queued = h.store.queue_list().expect("queue");
    assert_eq!(queued.len(), 1, "the foreign recipient is queued");

    // AUTH PLAIN with the initial response, and "=" for an empty one.
    let mut c = submission(&h).await;
    assert_eq!(c.cmd("AUTH PLAIN =").await.0, 535);
    assert_eq!(c.cmd(&format!("AUTH PLAIN {}", b64("\0alice@example.test\0secret"))).await.0, 235);
}

#[tokio::test]
async fn wrong_passwords_get_535_and_the_third_closes_the_session() {
    let h = Harness::new();
    let mut c = submission(&h).await;
    let limits = &h.shared.config.limits;
    for i in 1..limits.max_auth_failures {
        assert_eq!(c.cmd(&format!("AUTH PLAIN {}", b64(&format!("\0alice@example.test\0wrong{i}")))).await, (535, "5.7.8 Authentication credentials invalid".into()));
    }
    // A foreign authorization identity is refused the same way (RFC 4616 2).
    c.send(format!("AUTH PLAIN {}\r\n", b64("bob@example.test\0alice@example.test\0secret")).as_bytes()).await;
    assert_eq!(c.reply().await.0, 535);
    assert_eq!(c.reply().await, (421, "4.7.0 Too many failed authentications, closing connection".into()));
    assert!(c.closed().await.is_empty());
    c.ended().await;
    // An unknown user fails the same way (or is told to wait, after the
    // failures before).
    let mut c = submission(&h).await;
    let (code, text) = c.cmd(&format!("AUTH PLAIN {}", b64("\0mallory@example.test\0secret"))).await;
    assert!(code == 535 || code == 454, "{code} {text}");
}

/// The SMTP smuggling family (CVE-2023-51764 and relatives): only
/// <CRLF>.<CRLF> ends the data, so nothing can be smuggled behind a
/// sloppy end; the one message that results has bare line ends and is
/// refused.
#[tokio::test]
async fn no_end_of_data_but_crlf_dot_crlf_and_dots_undone_exactly() {
    let h = Harness::new();
    let mut c = h.smtp().await;
    assert_eq!(c.cmd("EHLO attacker.example").await.0, 250);
    let smuggled = b"MAIL FROM:<admin@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\nSubject: smuggled\r\n\r\nevil\r\n.\r\n";
    for (name, end) in [("LF.LF", &b"\n.\n"[..]), ("CR.CR", b"\r.\r"), ("LF.CRLF", b"\n.\r\n"), ("CR.CRLF", b"\r.\r\n"), ("CRLF.LF", b"\r\n.\n"), ("CRLF.CR", b"\r\n.\r")] {
        start_data(&mut c, &["alice@example.test"]).await;
        c.send(&[&b"Subject: first\r\n\r\nhello"[..], end, smuggled].concat()).await;
        let (code, text) = c.reply().await;
        assert_eq!(code, 554, "{name}: {text}");
        assert!(text.starts_with("5.6.0"), "{name}: {text}");
        assert_eq!(c.cmd("RSET").await.0, 250, "{name}: out of step");
    }
    assert!(h.mailbox(ALICE).is_empty() && h.mailbox(BOB).is_empty());
    // RFC 5321 4.5.2: one leading dot is removed, no more.
    start_data(&mut c, &["alice@example.test"]).await;
    c.send(b"Subject: dots\r\n\r\n..\r\n...\r\n.x\r\n..y\r\nend\r\n.\r\n").await;
    assert_eq!(c.reply().await.0, 250);
    let m = h.mailbox(ALICE);
    assert_eq!(m.len(), 1);
    assert!(m[0].ends_with(b"\r\nSubject: dots\r\n\r\n.\r\n..\r\nx\r\n.y\r\nend\r\n"), "{:?}", String::from_utf8_lossy(&m[0]));
}

/// Wherever a session is cut off in a transaction, nothing is stored
/// and the spool is left empty.
#[tokio::test]
async fn sessions_dropped_anywhere_in_a_transaction_store_nothing() {
    let h = Harness::new();
    let cuts: [&[u8]; 4] = [b"", b"Subject: half\r\n\r\nhalf a li", b"Subject: almost\r\n\r\nbody\r\n.", b"Subject: almost\r\n\r\nbody\r\n.\r"];
    for cut in cuts {
        let mut c = h.smtp().await;
        assert_eq!(c.cmd("EHLO client.example").await.0, 250);
        start_data(&mut c, &["alice@example.test", "bob@example.test"]).await;
        c.send(cut).await;
        c.hang_up().await;
    }
    let mut c = h.smtp().await;
    assert_eq!(c.cmd("EHLO client.example").await.0, 250);
    assert_eq!(c.cmd("MAIL FROM:<carol@remote.test>").await.0, 250);
    assert_eq!(c.cmd("RCPT TO:<alice@example.test>").await.0, 250);
    c.hang_up().await;
    assert!(h.mailbox(ALICE).is_empty() && h.mailbox(BOB).is_empty());
    assert!(h.spool_empties().await, "spool files left");
}

/// Logins and recipients are compared with ASCII case folded and nothing
/// else: U+212A KELVIN SIGN, which lower-cases to an ASCII k in Unicode,
/// is no alias of kim.
#[tokio::test]
async fn a_kelvin_sign_is_no_alias_of_k() {
    let h = Harness::new();
    let domains = h.store.settings().domains.clone();
    h.store.accounts().add(&addr("kim@example.test"), "kimpass", &domains).expect("add kim");
    let mut c = submission(&h).await;
    assert_eq!(c.cmd(&format!("AUTH PLAIN {}", b64("\0\u{212A}im@example.test\0kimpass"))).await.0, 535);
    assert_eq!(c.cmd(&format!("AUTH PLAIN {}", b64("\0KIM@Example.TEST\0kimpass"))).await.0, 235);
    let mut c = h.smtp().await;
    assert_eq!(c.cmd("EHLO client.example").await.0, 250);
    assert_eq!(c.cmd("MAIL FROM:<carol@remote.test> SMTPUTF8").await.0, 250);
    assert_eq!(c.cmd("RCPT TO:<\u{212A}im@example.test>").await.0, 550);
    assert_eq!(c.cmd("RCPT TO:<Kim@example.test>").await.0, 250);
    assert_eq!(c.cmd("RCPT TO:<Alice@EXAMPLE.Test>").await.0, 250);
}
