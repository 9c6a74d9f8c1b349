//! POP3 (RFC 1939, RFC 2449, RFC 5034) rules.

use maild::session::{MAX_BAD_COMMANDS, MAX_JUNK_COMMANDS};
use maild::Service;

use crate::harness::*;

const M1: &[u8] = b"Subject: one\r\n\r\nhello alice\r\n";
const M2: &[u8] = b"Subject: dots\r\n\r\n.leading dot\r\n.\r\nlast\r\n";

/// A logged-in session for alice.
async fn login(h: &Harness) -> Client {
    let mut c = h.pop3().await;
    assert_eq!(c.pop(&format!("USER {ALICE}")).await, "+OK send PASS");
    let r = c.pop(&format!("PASS {ALICE_PASSWORD}")).await;
    assert!(r.starts_with("+OK maildrop has "), "{r}");
    c
}

fn stuffed(m: &[u8]) -> Vec<u8> {
    let mut out: Vec<u8> = m.split_inclusive(|&b| b == b'\n').flat_map(|l| if l.starts_with(b".") { [b".", l].concat() } else { l.to_vec() }).collect();
    out.extend_from_slice(b".\r\n");
    out
}

#[tokio::test]
async fn the_authorization_state_refuses_what_needs_a_login() {
    let h = Harness::new();
    let mut c = h.pop3().await;
    for cmd in ["STAT", "LIST", "UIDL", "RETR 1", "DELE 1", "TOP 1 0", "RSET", "NOOP"] {
        assert_eq!(c.pop(cmd).await, "-ERR not allowed before login", "{cmd}");
    }
    // RFC 1939 7: PASS only right after USER.
    assert_eq!(c.pop("PASS secret").await, "-ERR USER first");
    assert_eq!(c.pop(&format!("USER {ALICE}")).await, "+OK send PASS");
    assert_eq!(c.pop("PASS secret").await, "+OK maildrop has 0 messages (0 octets)");
    // And the TRANSACTION state refuses what belongs before it.
    for cmd in ["USER alice", "PASS secret", "STLS", "AUTH PLAIN"] {
        assert_eq!(c.pop(cmd).await, "-ERR not allowed in the TRANSACTION state", "{cmd}");
    }
    assert_eq!(c.pop("QUIT").await, "+OK bye (0 messages left)");
    assert!(c.closed().await.is_empty());
    c.ended().await;
}

#[tokio::test]
async fn capa_and_plaintext_logins_follow_tls() {
    // RFC 2595 2: without TLS, no plaintext login.
    let h = Harness::with(|c| c.allow_plaintext_auth = false);
    let mut c = h.pop3().await;
    c.send(b"CAPA\r\n").await;
    assert_eq!(c.line().await, "+OK Capability list follows");
    let caps = String::from_utf8(c.multi().await).expect("utf8");
    assert!(caps.contains("STLS\r\n") && caps.contains("UIDL\r\n") && caps.contains("RESP-CODES\r\n"), "{caps}");
    assert!(!caps.contains("USER\r\n") && !caps.contains("SASL"), "{caps}");
    assert_eq!(c.pop(&format!("USER {ALICE}")).await, "-ERR [AUTH] plaintext authentication needs TLS; use STLS");
    assert_eq!(c.pop("AUTH").await, "+OK");
    assert_eq!(c.line().await, ".", "no mechanism without TLS");
    assert_eq!(c.pop(&format!("AUTH PLAIN {}", b64("\0alice@example.test\0secret"))).await, "-ERR [AUTH] plaintext authentication needs TLS; use STLS");
    // Under TLS: USER and SASL PLAIN, no STLS.
    let mut c = h.connect_with(Service::Pop3s, true).await;
    assert!(c.line().await.starts_with("+OK"));
    c.send(b"CAPA\r\n").await;
    assert_eq!(c.line().await, "+OK Capability list follows");
    let caps = String::from_utf8(c.multi().await).expect("utf8");
    assert!(caps.contains("USER\r\n") && caps.contains("SASL PLAIN\r\n") && !caps.contains("STLS"), "{caps}");
    assert_eq!(c.pop("STLS").await, "-ERR TLS already active");
    assert_eq!(c.pop(&format!("USER {ALICE}")).await, "+OK send PASS");
    assert!(c.pop("PASS secret").await.starts_with("+OK"));
    // After login CAPA offers no login.
    c.send(b"CAPA\r\n").await;
    assert_eq!(c.line().await, "+OK Capability list follows");
    let caps = String::from_utf8(c.multi().await).expect("utf8");
    assert!(!caps.contains("USER") && !caps.contains("SASL") && !caps.contains("STLS"), "{caps}");
}

#[tokio::test]
async fn stat_list_uidl_retr_top_with_exact_octets() {
    let h = Harness::new();
    let n1 = h.deliver(&[ALICE], M1);
    let n2 = h.deliver(&[ALICE], M2);
    let total = M1.len() + M2.len();
    let mut c = h.pop3().await;
    assert_eq!(c.pop(&format!("USER {ALICE}")).await, "+OK send PASS");
    assert_eq!(c.pop("PASS secret").await, format!("+OK maildrop has 2 messages ({total} octets)"));
    assert_eq!(c.pop("STAT").await, format!("+OK 2 {total}"));
    assert_eq!(c.pop("LIST").await, "+OK");
    assert_eq!(c.multi().await, format!("1 {}\r\n2 {}\r\n.\r\n", M1.len(), M2.len()).into_bytes());
    assert_eq!(c.pop("LIST 2").await, format!("+OK 2 {}", M2.len()));
    assert_eq!(c.pop("UIDL").await, "+OK");
    assert_eq!(c.multi().await, format!("1 {n1}\r\n2 {n2}\r\n.\r\n").into_bytes());
    assert_eq!(c.pop("UIDL 1").await, format!("+OK 1 {n1}"));
    // RFC 1939 3: dot-stuffed on the wire.
    assert_eq!(c.pop("RETR 2").await, format!("+OK {} octets", M2.len()));
    assert_eq!(c.multi().await, stuffed(M2));
    // RFC 1939 7: TOP n 0 is the header and the blank line.
    assert_eq!(c.pop("TOP 2 0").await, "+OK");
    assert_eq!(c.multi().await, stuffed(b"Subject: dots\r\n\r\n"));
    assert_eq!(c.pop("TOP 2 1").await, "+OK");
    assert_eq!(c.multi().await, stuffed(b"Subject: dots\r\n\r\n.leading dot\r\n"));
    for cmd in ["RETR 3", "RETR 0", "LIST 9", "UIDL 3", "DELE 3"] {
        assert_eq!(c.pop(cmd).await, "-ERR no such message", "{cmd}");
    }
    assert!(c.pop("RETR x").await.starts_with("-ERR"));
    // Pipelined (RFC 2449 6.6): answered in order.
    c.send(b"NOOP\r\nSTAT\r\nLIST 1\r\n").await;
    assert_eq!(c.line().await, "+OK");
    assert_eq!(c.line().await, format!("+OK 2 {total}"));
    assert_eq!(c.line().await, format!("+OK 1 {}", M1.len()));
    assert_eq!(c.pop("QUIT").await, "+OK bye (2 messages left)");
    c.ended().await;
}

#[tokio::test]
async fn deletions_count_only_at_quit() {
    let h = Harness::new();
    h.deliver(&[ALICE], M1);
    let n2 = h.deliver(&[ALICE], M2);
    // DELE hides the message at once (RFC 1939 7) ...
    let mut c = login(&h).await;
    assert_eq!(c.pop("DELE 1").await, "+OK message 1 deleted");
    assert_eq!(c.pop("STAT").await, format!("+OK 1 {}", M2.len()));
    for cmd in ["RETR 1", "TOP 1 0", "DELE 1", "LIST 1", "UIDL 1"] {
        assert_eq!(c.pop(cmd).await, "-ERR message 1 already deleted", "{cmd}");
    }
    assert_eq!(c.pop("LIST").await, "+OK");
    assert_eq!(c.multi().await, format!("2 {}\r\n.\r\n", M2.len()).into_bytes());
    // ... but a dropped connection deletes nothing (RFC 1939 6) ...
    c.hang_up().await;
    assert_eq!(h.mailbox(ALICE).len(), 2);
    // ... nor does RSET then QUIT ...
    let mut c = login(&h).await;
    assert_eq!(c.pop("DELE 1").await, "+OK message 1 deleted");
    assert_eq!(c.pop("DELE 2").await, "+OK message 2 deleted");
    assert_eq!(c.pop("RSET").await, "+OK maildrop has 2 messages");
    assert_eq!(c.pop("STAT").await, format!("+OK 2 {}", M1.len() + M2.len()));
    assert_eq!(c.pop("QUIT").await, "+OK bye (2 messages left)");
    c.ended().await;
    assert_eq!(h.mailbox(ALICE).len(), 2);
    // ... QUIT does, and the rest keep their UIDs.
    let mut c = login(&h).await;
    assert_eq!(c.pop("DELE 1").await, "+OK message 1 deleted");
    assert_eq!(c.pop("QUIT").await, "+OK bye (1 messages left)");
    c.ended().await;
    assert_eq!(h.mailbox(ALICE), vec![M2.to_vec()]);
    let mut c = login(&h).await;
    assert_eq!(c.pop("UIDL 1").await, format!("+OK 1 {n2}"));
    assert!(c.pop("QUIT").await.starts_with("+OK"));
    c.ended().await;
    // Every session ended: no maildrop lock is left behind.
    assert!(!h.store.locks_dir().join(format!("pop3.{ALICE}")).exists(), "maildrop lock left");
}

/// Messages too large to be read whole are streamed from the file: the
/// stuffing and the TOP cut stay exact across the read boundaries.
#[tokio::test]
async fn large_messages_are_streamed_exactly() {
    let h = Harness::new();
    let mut m = b"Subject: big\r\nX-Long: header\r\n\r\n".to_vec();
    for i in 0..3000 {
        if i % 7 == 0 {
            m.push(b'.');
        }
        m.extend_from_slice(format!("{i:05} {}\r\n", "x".repeat(64)).as_bytes());
    }
    assert!(m.len() > 128 * 1024);
    h.deliver(&[ALICE], &m);
    let mut c = login(&h).await;
    assert_eq!(c.pop("RETR 1").await, format!("+OK {} octets", m.len()));
    assert_eq!(c.multi().await, stuffed(&m));
    let head_end = m.windows(4).position(|w| w == b"\r\n\r\n").expect("header end") + 4;
    let top: Vec<u8> = m[..head_end].iter().copied().chain(m[head_end..].split_inclusive(|&b| b == b'\n').take(2500).flatten().copied()).collect();
    assert_eq!(c.pop("TOP 1 2500").await, "+OK");
    assert_eq!(c.multi().await, stuffed(&top));
}

/// RFC 2449 4: command lines up to 255 octets, so a user name longer than
/// RFC 1939's 40 characters logs in.
#[tokio::test]
async fn long_user_names_log_in() {
    let h = Harness::new();
    let long = "firstname.middlename.lastname.department@example.test";
    let domains = h.store.settings().domains.clone();
    h.store.accounts().add(&addr(long), "pw", &domains).expect("add user");
    let mut c = h.pop3().await;
    assert_eq!(c.pop(&format!("USER {long}")).await, "+OK send PASS");
    assert_eq!(c.pop("PASS pw").await, "+OK maildrop has 0 messages (0 octets)");
}

#[tokio::test]
async fn one_session_per_maildrop() {
    let h = Harness::new();
    let mut a = login(&h).await;
    let mut b = h.pop3().await;
    assert_eq!(b.pop(&format!("USER {ALICE}")).await, "+OK send PASS");
    // RFC 2449 8.1.1
    assert_eq!(b.pop("PASS secret").await, "-ERR [IN-USE] maildrop is in use by another session");
    // Another user's maildrop is another lock.
    let mut c = h.pop3().await;
    assert_eq!(c.pop(&format!("USER {BOB}")).await, "+OK send PASS");
    assert!(c.pop(&format!("PASS {BOB_PASSWORD}")).await.starts_with("+OK"));
    assert!(a.pop("QUIT").await.starts_with("+OK"));
    a.ended().await;
    assert_eq!(b.pop(&format!("USER {ALICE}")).await, "+OK send PASS");
    assert!(b.pop("PASS secret").await.starts_with("+OK maildrop has"));
}

#[tokio::test]
async fn auth_plain_and_what_it_refuses() {
    let h = Harness::new();
    let mut c = h.pop3().await;
    assert_eq!(c.pop("AUTH").await, "+OK");
    assert_eq!(c.line().await, "PLAIN");
    assert_eq!(c.line().await, ".");
    assert_eq!(c.pop("AUTH CRAM-MD5").await, "-ERR unsupported authentication mechanism");
    // RFC 5034 4: an undecodable response rejects the AUTH command at
    // once; it is no failed login, however often it comes.
    for _ in 0..h.shared.config.limits.max_auth_failures + 1 {
        assert_eq!(c.pop("AUTH PLAIN not-base64!").await, "-ERR cannot decode response");
    }
    assert_eq!(c.pop("AUTH PLAIN").await, "+ ");
    assert_eq!(c.pop("%%%").await, "-ERR cannot decode response");
    // "*" cancels.
    assert_eq!(c.pop("AUTH PLAIN").await, "+ ");
    assert_eq!(c.pop("*").await, "-ERR authentication canceled");
    // A foreign authorization identity fails like a wrong password.
    assert_eq!(c.pop(&format!("AUTH PLAIN {}", b64("bob@example.test\0alice@example.test\0secret"))).await, "-ERR [AUTH] authentication failed");
    // Without and with the initial response.
    assert_eq!(c.pop("AUTH PLAIN").await, "+ ");
    assert_eq!(c.pop(&b64("\0alice@example.test\0secret")).await, "+OK maildrop has 0 messages (0 octets)");
    assert!(c.pop("QUIT").await.starts_with("+OK"));
    c.ended().await;
    let mut c = h.pop3().await;
    assert_eq!(c.pop(&format!("AUTH PLAIN {}", b64("alice@example.test\0alice@example.test\0secret"))).await, "+OK maildrop has 0 messages (0 octets)");
}

#[tokio::test]
async fn wrong_passwords_get_auth_errors_and_the_third_closes() {
    let h = Harness::new();
    let mut c = h.pop3().await;
    let max = h.shared.config.limits.max_auth_failures;
    let mut replies = Vec::new();
    for i in 0..max {
        assert_eq!(c.pop(&format!("USER {ALICE}")).await, "+OK send PASS");
        replies.push(c.pop(&format!("PASS wrong{i}")).await);
    }
    // RFC 3206 3: [AUTH]
    assert!(replies.iter().all(|r| r == "-ERR [AUTH] authentication failed"), "{replies:?}");
    assert!(c.closed().await.is_empty());
    c.ended().await;
    // An unknown user gets the same answer.
    let mut c = h.pop3().await;
    assert_eq!(c.pop("USER nobody@example.test").await, "+OK send PASS");
    let r = c.pop("PASS secret").await;
    assert!(r == "-ERR [AUTH] authentication failed" || r.starts_with("-ERR [SYS/TEMP]"), "{r}");
}

#[tokio::test]
async fn a_line_too_long_ends_the_session() {
    let h = Harness::new();
    let mut c = h.pop3().await;
    // RFC 2449 4: at most 255 octets; a long address still fits.
    let long = format!("USER {}@example.test", "a".repeat(200));
    assert_eq!(c.pop(&long).await, "+OK send PASS");
    c.send(format!("USER {}\r\n", "x".repeat(300)).as_bytes()).await;
    assert_eq!(c.closed().await, b"-ERR line too long\r\n");
    c.ended().await;
}

#[tokio::test]
async fn garbage_is_answered_until_the_bad_command_limit_then_cut_off() {
    let h = Harness::new();
    let mut c = h.pop3().await;
    for bad in [&b"NOOP\0\r\n"[..], b"USER ali\0ce@example.test\r\n", b"\xff\xfe\r\n"] {
        c.send(bad).await;
        let l = c.line().await;
        assert!(l.starts_with("-ERR"), "{l}");
    }
    assert!(c.pop("CAPA").await.starts_with("+OK"));
    c.multi().await;
    for _ in 3..MAX_BAD_COMMANDS - 1 {
        assert_eq!(c.pop("XYZZY").await, "-ERR unknown command");
    }
    c.send(b"XYZZY\r\n").await;
    assert_eq!(c.closed().await, b"-ERR unknown command\r\n-ERR too many errors\r\n");
    c.ended().await;
}

#[tokio::test]
async fn commands_without_progress_are_cut_off_before_and_after_login() {
    let h = Harness::new();
    // Before a login: CAPA (or anything else) forever does not hold a slot.
    let mut c = h.pop3().await;
    for _ in 0..MAX_JUNK_COMMANDS {
        assert!(c.pop("CAPA").await.starts_with("+OK"));
        c.multi().await;
    }
    c.send(b"CAPA\r\n").await;
    assert_eq!(c.closed().await, b"-ERR too many commands without progress\r\n");
    c.ended().await;
    // After it: NOOP and RSET count, the rest does not.
    let mut c = login(&h).await;
    for i in 0..MAX_JUNK_COMMANDS {
        assert!(c.pop(if i % 2 == 0 { "NOOP" } else { "RSET" }).await.starts_with("+OK"), "command {i}");
        assert!(c.pop("STAT").await.starts_with("+OK"));
    }
    c.send(b"NOOP\r\n").await;
    assert_eq!(c.closed().await, b"-ERR too many commands without progress\r\n");
    c.ended().await;
}
