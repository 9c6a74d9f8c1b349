//! IMAP (RFC 3501 and the extensions offered) rules, sessions in this
//! process over in-memory pipes.

use maild::session::MAX_BAD_COMMANDS;

use crate::harness::*;

const M1: &[u8] = b"From: Bob <bob@example.test>\r\nTo: alice@example.test\r\nSubject: one\r\nDate: Thu, 03 Dec 2026 10:00:00 +0000\r\n\r\nhello alice\r\n";
const M2: &[u8] = b"Subject: two\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\npart one\r\n--b\r\nContent-Type: text/html\r\n\r\n<p>two</p>\r\n--b--\r\n";

async fn login(h: &Harness) -> Client {
    let mut c = h.imap().await;
    let r = c.imap_cmd("a", &format!("LOGIN {ALICE} {ALICE_PASSWORD}")).await;
    assert!(r.last().unwrap().starts_with("a OK [CAPABILITY IMAP4rev1 "), "{r:?}");
    c
}

fn last(r: &[String]) -> &str {
    r.last().map(String::as_str).unwrap_or("")
}

fn has(r: &[String], line: &str) -> bool {
    r.iter().any(|l| l == line)
}

#[tokio::test]
async fn capabilities_follow_the_state_and_tls() {
    let h = Harness::with(|c| c.allow_plaintext_auth = false);
    let mut c = h.imap().await;
    let r = c.imap_cmd("a", "CAPABILITY").await;
    let caps = &r[0];
    // RFC 3501 6.2.3: LOGINDISABLED and no AUTH=PLAIN before TLS.
    assert!(caps.contains(" STARTTLS") && caps.contains(" LOGINDISABLED") && !caps.contains("AUTH=PLAIN"), "{caps}");
    assert!(!caps.contains("UIDPLUS"), "authenticated-state capabilities are not shown before login: {caps}");
    let r = c.imap_cmd("b", &format!("LOGIN {ALICE} {ALICE_PASSWORD}")).await;
    assert_eq!(last(&r), "b NO [PRIVACYREQUIRED] LOGIN is disabled before STARTTLS");
    let r = c.imap_cmd("c", &format!("AUTHENTICATE PLAIN {}", b64("\0alice@example.test\0secret"))).await;
    assert!(last(&r).starts_with("c NO [PRIVACYREQUIRED]"), "{r:?}");
    // Selected-state commands need a login.
    for cmd in ["SELECT INBOX", "LIST \"\" *", "FETCH 1 FLAGS", "IDLE"] {
        let r = c.imap_cmd("d", cmd).await;
        assert!(last(&r).starts_with("d BAD "), "{cmd}: {r:?}");
    }
    // An APPEND before login: a synchronizing literal is never asked for.
    c.send(b"f APPEND INBOX {5}\r\n").await;
    assert_eq!(c.line().await, "f BAD log in first");
    let r = c.imap_cmd("e", "LOGOUT").await;
    assert_eq!(r, vec!["* BYE logging out".to_string(), "e OK LOGOUT completed".to_string()]);
    c.ended().await;
    // Implicit TLS (what IMAPS gives the session): AUTH=PLAIN, no STARTTLS.
    let mut c = h.connect_with(maild::Service::Imaps, true).await;
    let g = c.line().await;
    assert!(g.contains("AUTH=PLAIN") && !g.contains("STARTTLS") && !g.contains("LOGINDISABLED"), "{g}");
    let r = c.imap_cmd("a", &format!("AUTHENTICATE PLAIN {}", b64("\0alice@example.test\0secret"))).await;
    let caps = last(&r);
    for cap in ["IDLE", "UIDPLUS", "MOVE", "SPECIAL-USE", "NAMESPACE", "ID", "ENABLE", "LITERAL+", "UNSELECT", "CHILDREN", "LIST-EXTENDED", "LIST-STATUS", "CONDSTORE", "QRESYNC"] {
        assert!(caps.split([' ', ']']).any(|w| w == cap), "{cap} missing: {caps}");
    }
}

#[tokio::test]
async fn wrong_passwords_are_refused_and_the_session_cut_off() {
    let h = Harness::new();
    let mut c = h.imap().await;
    let max = h.shared.config.limits.max_auth_failures;
    for i in 0..max {
        let r = c.imap_cmd("a", &format!("LOGIN {ALICE} wrong{i}")).await;
        assert_eq!(last(&r), "a NO [AUTHENTICATIONFAILED] authentication failed");
        // RFC 3501 7.1.5: BYE before the close.
        assert_eq!(r.len() == 2 && r[0] == "* BYE too many failed logins", i + 1 == max, "{r:?}");
    }
    c.closed().await;
    // SASL: "*" cancels with BAD (RFC 3501 6.2.2), bad base64 is BAD.
    let mut c = h.imap().await;
    c.send(b"s AUTHENTICATE PLAIN\r\n").await;
    assert_eq!(c.line().await, "+ ");
    c.send(b"*\r\n").await;
    assert_eq!(c.line().await, "s BAD authentication canceled");
    let r = c.imap_cmd("t", "AUTHENTICATE PLAIN !!!").await;
    assert!(last(&r).starts_with("t BAD"), "{r:?}");
    c.send(b"u AUTHENTICATE PLAIN\r\n").await;
    assert_eq!(c.line().await, "+ ");
    c.send(format!("{}\r\n", b64("\0alice@example.test\0secret")).as_bytes()).await;
    assert!(c.line().await.starts_with("u OK [CAPABILITY "));
}

#[tokio::test]
async fn select_reports_the_folder_and_uids_stay() {
    let h = Harness::new();
    h.deliver(&[ALICE], M1);
    h.deliver(&[ALICE], M2);
    let mut c = login(&h).await;
    let r = c.imap_cmd("a", "SELECT INBOX").await;
    for l in ["* 2 EXISTS", "* 2 RECENT", "* OK [UNSEEN 1] first unseen message", "* OK [UIDNEXT 3] predicted next UID"] {
        assert!(has(&r, l), "{l} missing in {r:?}");
    }
    assert!(r.iter().any(|l| l.starts_with("* OK [UIDVALIDITY ")), "{r:?}");
    assert!(r.iter().any(|l| l.starts_with("* OK [PERMANENTFLAGS (") && l.contains("\\*)")), "{r:?}");
    assert_eq!(last(&r), "a OK [READ-WRITE] SELECT completed");
    let uv = r.iter().find_map(|l| l.strip_prefix("* OK [UIDVALIDITY ")).unwrap().split(']').next().unwrap().to_string();
    // A second session sees the same UIDs; the messages are no longer
    // recent for it (the first session claimed them).
    let mut d = login(&h).await;
    let r = d.imap_cmd("b", "EXAMINE INBOX").await;
    assert!(has(&r, "* 0 RECENT") && has(&r, &format!("* OK [UIDVALIDITY {uv}] UIDs valid")), "{r:?}");
    assert_eq!(last(&r), "b OK [READ-ONLY] EXAMINE completed");
    let r = d.imap_cmd("c", "FETCH 1:* (UID FLAGS)").await;
    assert_eq!(&r[..2], &["* 1 FETCH (UID 1 FLAGS ())".to_string(), "* 2 FETCH (UID 2 FLAGS ())".to_string()]);
    // Read-only: no \Seen from a body fetch, no STORE, no EXPUNGE.
    let r = d.imap_cmd("d", "FETCH 1 BODY[TEXT]").await;
    assert_eq!(r[0], "* 1 FETCH (BODY[TEXT] {13}\r\nhello alice\r\n)");
    let r = d.imap_cmd("e", "STORE 1 +FLAGS (\\Seen)").await;
    assert!(last(&r).starts_with("e NO [READ-ONLY]"), "{r:?}");
    let r = c.imap_cmd("f", "FETCH 1 (FLAGS)").await;
    assert_eq!(r[0], "* 1 FETCH (FLAGS (\\Recent))");
    // A failed SELECT leaves no mailbox selected (RFC 3501 6.3.1).
    let r = c.imap_cmd("g", "SELECT nosuch").await;
    assert_eq!(last(&r), "g NO [NONEXISTENT] no such mailbox");
    let r = c.imap_cmd("h", "FETCH 1 FLAGS").await;
    assert_eq!(last(&r), "h BAD no mailbox selected");
}

#[tokio::test]
async fn fetch_sections_are_exact() {
    let h = Harness::new();
    h.deliver(&[ALICE], M1);
    h.deliver(&[ALICE], M2);
    let mut c = login(&h).await;
    c.imap_cmd("a", "SELECT INBOX").await;
    let r = c.imap_cmd("b", "FETCH 1 (BODY.PEEK[] RFC822.SIZE)").await;
    let whole = String::from_utf8(M1.to_vec()).unwrap();
    assert_eq!(r[0], format!("* 1 FETCH (BODY[] {{{}}}\r\n{whole} RFC822.SIZE {})", M1.len(), M1.len()));
    let r = c.imap_cmd("c", "FETCH 1 BODY.PEEK[]<6.3>").await;
    assert_eq!(r[0], "* 1 FETCH (BODY[]<6> {3}\r\nBob)");
    let r = c.imap_cmd("c2", "FETCH 1 BODY.PEEK[]<9999.3>").await;
    assert_eq!(r[0], "* 1 FETCH (BODY[]<9999> {0}\r\n)");
    let r = c.imap_cmd("d", "FETCH 1 BODY.PEEK[HEADER.FIELDS (Subject DATE)]").await;
    assert_eq!(r[0], "* 1 FETCH (BODY[HEADER.FIELDS (Subject DATE)] {55}\r\nSubject: one\r\nDate: Thu, 03 Dec 2026 10:00:00 +0000\r\n\r\n)");
    let r = c.imap_cmd("e", "FETCH 2 (BODY.PEEK[1] BODY.PEEK[2.MIME] BODYSTRUCTURE)").await;
    assert!(r[0].starts_with("* 2 FETCH (BODY[1] {8}\r\npart one BODY[2.MIME] {27}\r\nContent-Type: text/html\r\n\r\n BODYSTRUCTURE ((\"text\" \"plain\""), "{:?}", r[0]);
    assert!(r[0].contains("\"mixed\" (\"boundary\" \"b\")"), "{:?}", r[0]);
    let r = c.imap_cmd("f", "FETCH 1 (ENVELOPE INTERNALDATE)").await;
    assert!(r[0].starts_with("* 1 FETCH (ENVELOPE (\"Thu, 03 Dec 2026 10:00:00 +0000\" \"one\" ((\"Bob\" NIL \"bob\" \"example.test\"))"), "{:?}", r[0]);
    // A non-peek body fetch sets \Seen and says so (RFC 3501 6.4.5).
    let r = c.imap_cmd("g", "FETCH 1 BODY[TEXT]").await;
    assert_eq!(r[0], "* 1 FETCH (BODY[TEXT] {13}\r\nhello alice\r\n FLAGS (\\Seen \\Recent))");
    let r = c.imap_cmd("h", "UID FETCH 2 (FLAGS)").await;
    assert_eq!(r[0], "* 2 FETCH (UID 2 FLAGS (\\Recent))");
    // Sequence numbers past the end are an error; UIDs past the end are
    // not (RFC 3501 6.4.8: 5:* names the last message).
    let r = c.imap_cmd("i", "FETCH 3 FLAGS").await;
    assert!(last(&r).starts_with("i BAD"), "{r:?}");
    let r = c.imap_cmd("j", "UID FETCH 5:* (FLAGS)").await;
    assert_eq!(r[0], "* 2 FETCH (UID 2 FLAGS (\\Recent))");
    let r = c.imap_cmd("k", "UID FETCH 7 (FLAGS)").await;
    assert_eq!(r, vec!["k OK UID FETCH completed".to_string()]);
}

#[tokio::test]
async fn store_copy_move_expunge_with_uidplus() {
    let h = Harness::new();
    h.deliver(&[ALICE], M1);
    h.deliver(&[ALICE], M2);
    h.deliver(&[ALICE], M1);
    let mut c = login(&h).await;
    c.imap_cmd("a", "SELECT INBOX").await;
    let r = c.imap_cmd("b", "STORE 1:2 +FLAGS (\\Flagged Work)").await;
    assert_eq!(r[0], "* 1 FETCH (FLAGS (\\Flagged \\Recent Work))");
    let r = c.imap_cmd("c", "STORE 1 -FLAGS.SILENT (\\Flagged)").await;
    assert_eq!(r, vec!["c OK STORE completed".to_string()]);
    let r = c.imap_cmd("d", "UID STORE 2 FLAGS (\\Seen $Forwarded)").await;
    assert_eq!(r[0], "* 2 FETCH (UID 2 FLAGS (\\Seen $Forwarded \\Recent))");
    let r = c.imap_cmd("e", "STORE 1 +FLAGS (\\Bogus)").await;
    assert!(last(&r).starts_with("e BAD"), "{r:?}");
    let r = c.imap_cmd("f", "COPY 1:2 Archive").await;
    assert!(last(&r).starts_with("f OK [COPYUID ") && last(&r).ends_with(" 1:2 1:2] COPY completed"), "{r:?}");
    let r = c.imap_cmd("g", "COPY 1 Nowhere").await;
    assert_eq!(last(&r), "g NO [TRYCREATE] no such mailbox");
    let r = c.imap_cmd("h", "UID MOVE 2 Trash").await;
    assert!(r[0].starts_with("* OK [COPYUID ") && r[0].ends_with(" 2 1] moved"), "{r:?}");
    assert_eq!(r[1], "* 2 EXPUNGE");
    assert_eq!(last(&r), "h OK MOVE completed");
    // UID EXPUNGE removes only the named \Deleted messages (RFC 4315 2.1).
    c.imap_cmd("i", "STORE 1:2 +FLAGS.SILENT (\\Deleted)").await;
    let r = c.imap_cmd("j", "UID EXPUNGE 3").await;
    assert_eq!(r, vec!["* 2 EXPUNGE".to_string(), "j OK UID EXPUNGE completed".to_string()]);
    let r = c.imap_cmd("k", "EXPUNGE").await;
    assert_eq!(r, vec!["* 1 EXPUNGE".to_string(), "k OK EXPUNGE completed".to_string()]);
    // Archive kept the flags and keywords of its copies.
    let r = c.imap_cmd("l", "SELECT Archive").await;
    assert!(has(&r, "* 2 EXISTS") && r[0].contains("Work"), "{r:?}");
    let r = c.imap_cmd("m", "FETCH 1:2 FLAGS").await;
    // Copies are not recent: they never were in new/.
    assert_eq!(&r[..2], &["* 1 FETCH (FLAGS (Work))".to_string(), "* 2 FETCH (FLAGS (\\Seen $Forwarded))".to_string()]);
    // Read-write CLOSE expunges silently; UNSELECT does not.
    c.imap_cmd("n", "STORE 1 +FLAGS.SILENT (\\Deleted)").await;
    assert_eq!(c.imap_cmd("o", "UNSELECT").await, vec!["o OK UNSELECT completed".to_string()]);
    c.imap_cmd("p", "SELECT Archive").await;
    assert_eq!(c.imap_cmd("q", "CLOSE").await, vec!["q OK CLOSE completed".to_string()]);
    let r = c.imap_cmd("r", "STATUS Archive (MESSAGES UIDNEXT UNSEEN)").await;
    assert_eq!(r[0], "* STATUS \"Archive\" (MESSAGES 1 UIDNEXT 3 UNSEEN 0)");
}

#[tokio::test]
async fn append_takes_literals_and_checks_sizes_first() {
    let h = Harness::new();
    let mut c = login(&h).await;
    c.send(b"a APPEND Drafts (\\Draft \\Seen) \" 4-Dec-2026 09:08:07 +0100\" {21}\r\n").await;
    assert_eq!(c.line().await, "+ Ready for literal data");
    c.send(b"Subject: d\r\n\r\ndraft\r\n\r\n").await;
    let r = c.imap_until("a").await;
    assert!(last(&r).starts_with("a OK [APPENDUID ") && last(&r).ends_with(" 1] APPEND completed"), "{r:?}");
    // LITERAL+ (RFC 7888): no continuation.
    let r = c.imap_cmd("b", "APPEND Drafts {5+}\r\nhello").await;
    assert!(last(&r).ends_with(" 2] APPEND completed"), "{r:?}");
    c.imap_cmd("c", "SELECT Drafts").await;
    let r = c.imap_cmd("d", "FETCH 1 (FLAGS INTERNALDATE RFC822.SIZE)").await;
    assert_eq!(r[0], "* 1 FETCH (FLAGS (\\Seen \\Draft) INTERNALDATE \" 4-Dec-2026 08:08:07 +0000\" RFC822.SIZE 21)");
    // Too big: refused before the literal is asked for (RFC 7888 4).
    let max = h.shared.session_limits().max_message_size;
    c.send(format!("e APPEND Drafts {{{}}}\r\n", max + 1).as_bytes()).await;
    assert!(c.line().await.starts_with("e NO [TOOBIG]"));
    // To a folder that does not exist: TRYCREATE, also before the data.
    c.send(b"f APPEND Nope {5}\r\n").await;
    assert_eq!(c.line().await, "f NO [TRYCREATE] no such mailbox");
    // A non-synchronizing literal to a missing folder is read and dropped.
    let r = c.imap_cmd("g", "APPEND Nope {5+}\r\nhello").await;
    assert_eq!(r, vec!["g NO [TRYCREATE] no such mailbox".to_string()]);
    // The session is in step after all of it.
    let r = c.imap_cmd("h", "NOOP").await;
    assert_eq!(last(&r), "h OK NOOP completed");
    // A folder name as a literal.
    c.send(b"i APPEND {6}\r\n").await;
    assert_eq!(c.line().await, "+ Ready for literal data");
    c.send(b"Drafts {3}\r\n").await;
    assert_eq!(c.line().await, "+ Ready for literal data");
    c.send(b"abc\r\n").await;
    let r = c.imap_until("i").await;
    assert!(last(&r).ends_with(" 3] APPEND completed"), "{r:?}");
    // Too big a non-synchronizing literal closes the session.
    c.send(format!("j APPEND Drafts {{{}+}}\r\n", max + 1).as_bytes()).await;
    assert!(c.line().await.starts_with("j BAD [TOOBIG]"));
    c.closed().await;
    assert!(h.spool_empties().await, "spool files left behind");
}

#[tokio::test]
async fn literals_lines_and_garbage_are_bounded() {
    let h = Harness::new();
    let mut c = login(&h).await;
    let big = maild::imap::MAX_INLINE_LITERAL + 1;
    c.send(format!("a LOGIN {{{big}}}\r\n").as_bytes()).await;
    assert_eq!(c.line().await, "a BAD [TOOBIG] literal too large");
    for i in 0..MAX_BAD_COMMANDS - 2 {
        let r = c.imap_cmd(&format!("t{i}"), "FROB").await;
        assert!(last(&r).starts_with(&format!("t{i} BAD")), "{r:?}");
    }
    c.send(b"\x00\x01\x02 garbage\r\n").await;
    let rest = String::from_utf8_lossy(&c.closed().await).into_owned();
    assert!(rest.contains("BYE too many errors"), "{rest}");
    // An over-long line is answered with BYE.
    let mut c = login(&h).await;
    c.send(&vec![b'a'; maild::imap::MAX_LINE + 10]).await;
    let rest = String::from_utf8_lossy(&c.closed().await).into_owned();
    assert!(rest.contains("* BYE [LIMIT]"), "{rest}");
    // Before login, chatter without a login is cut off.
    let mut c = h.imap().await;
    let mut closed = false;
    for i in 0..maild::session::MAX_JUNK_COMMANDS + 1 {
        c.send(format!("n{i} NOOP\r\n").as_bytes()).await;
        let l = c.line().await;
        if l.starts_with("* BYE") {
            closed = true;
            break;
        }
    }
    assert!(closed, "the session was not cut off");
}

#[tokio::test]
async fn idle_tells_of_deliveries_and_expunges_wait_for_their_turn() {
    let h = Harness::new();
    h.deliver(&[ALICE], M1);
    let mut c = login(&h).await;
    c.imap_cmd("a", "SELECT INBOX").await;
    c.send(b"b IDLE\r\n").await;
    assert_eq!(c.line().await, "+ idling");
    h.deliver(&[ALICE], M2);
    assert_eq!(c.line().await, "* 2 EXISTS");
    // Both are recent for this session: it claimed both from new/.
    assert_eq!(c.line().await, "* 2 RECENT");
    c.send(b"DONE\r\n").await;
    assert_eq!(c.line().await, "b OK IDLE terminated");
    // Another session expunges message 1: a FETCH does not say so
    // (RFC 3501 7.4.1), the NOOP after it does.
    let mut d = login(&h).await;
    d.imap_cmd("x", "SELECT INBOX").await;
    d.imap_cmd("y", "STORE 1 +FLAGS.SILENT (\\Deleted)").await;
    assert_eq!(d.imap_cmd("z", "EXPUNGE").await, vec!["* 1 EXPUNGE".to_string(), "z OK EXPUNGE completed".to_string()]);
    let r = c.imap_cmd("c", "FETCH 1:* (UID)").await;
    assert!(!r.iter().any(|l| l.contains("EXPUNGE")), "{r:?}");
    let r = c.imap_cmd("d", "NOOP").await;
    assert!(has(&r, "* 1 EXPUNGE"), "{r:?}");
    // An IDLE answered with anything but DONE ends with BAD.
    c.send(b"e IDLE\r\n").await;
    assert_eq!(c.line().await, "+ idling");
    c.send(b"NOPE\r\n").await;
    assert_eq!(c.line().await, "e BAD expected DONE");
}

#[tokio::test]
async fn search_keys_and_charsets() {
    let h = Harness::new();
    h.deliver(&[ALICE], M1);
    h.deliver(&[ALICE], M2);
    let mut c = login(&h).await;
    c.imap_cmd("a", "SELECT INBOX").await;
    c.imap_cmd("b", "STORE 2 +FLAGS (\\Seen)").await;
    assert_eq!(c.imap_cmd("c", "SEARCH UNSEEN").await[0], "* SEARCH 1");
    assert_eq!(c.imap_cmd("d", "UID SEARCH SEEN").await[0], "* SEARCH 2");
    assert_eq!(c.imap_cmd("e", "SEARCH CHARSET UTF-8 ALL").await[0], "* SEARCH 1 2");
    let r = c.imap_cmd("f", "SEARCH CHARSET KOI8-R ALL").await;
    assert_eq!(last(&r), "f NO [BADCHARSET (UTF-8 US-ASCII)] unsupported charset");
    let r = c.imap_cmd("g", "SEARCH RETURN (MIN) ALL").await;
    assert!(last(&r).starts_with("g BAD"), "ESEARCH is not offered: {r:?}");
    let r = c.imap_cmd("h", "SEARCH MODSEQ 1").await;
    assert!(r[0].starts_with("* SEARCH 1 2 (MODSEQ "), "{r:?}");
}

#[tokio::test]
async fn folders_list_with_special_use_and_status() {
    let h = Harness::new();
    let mut c = login(&h).await;
    let r = c.imap_cmd("a", "LIST \"\" \"\"").await;
    assert_eq!(r[0], "* LIST (\\Noselect) \"/\" \"\"");
    let r = c.imap_cmd("b", "LIST \"\" *").await;
    for l in ["* LIST (\\HasNoChildren) \"/\" \"INBOX\"", "* LIST (\\HasNoChildren \\Sent) \"/\" \"Sent\"", "* LIST (\\HasNoChildren \\Trash) \"/\" \"Trash\"", "* LIST (\\HasNoChildren \\Junk) \"/\" \"Junk\"", "* LIST (\\HasNoChildren \\Drafts) \"/\" \"Drafts\"", "* LIST (\\HasNoChildren \\Archive) \"/\" \"Archive\""] {
        assert!(has(&r, l), "{l} missing: {r:?}");
    }
    assert_eq!(c.imap_cmd("c", "CREATE Work/2026/").await, vec!["c OK CREATE completed".to_string()]);
    assert_eq!(last(&c.imap_cmd("c2", "CREATE Work").await), "c2 NO [ALREADYEXISTS] mailbox already exists");
    let r = c.imap_cmd("d", "LIST \"\" %").await;
    assert!(has(&r, "* LIST (\\HasChildren) \"/\" \"Work\"") && !r.iter().any(|l| l.contains("2026")), "{r:?}");
    let r = c.imap_cmd("e", "LIST (SPECIAL-USE) \"\" *").await;
    assert_eq!(r.len(), 6, "{r:?}");
    let r = c.imap_cmd("f", "LIST \"\" (INBOX Work/*) RETURN (SUBSCRIBED CHILDREN STATUS (MESSAGES UIDNEXT))").await;
    assert!(has(&r, "* LIST (\\HasNoChildren \\Subscribed) \"/\" \"INBOX\""), "{r:?}");
    assert!(has(&r, "* STATUS \"INBOX\" (MESSAGES 0 UIDNEXT 1)") && has(&r, "* LIST (\\HasNoChildren) \"/\" \"Work/2026\""), "{r:?}");
    c.imap_cmd("g", "SUBSCRIBE Work/2026").await;
    let r = c.imap_cmd("h", "LSUB \"\" Work*").await;
    assert_eq!(r, vec!["* LSUB () \"/\" \"Work/2026\"".to_string(), "h OK LSUB completed".to_string()]);
    let r = c.imap_cmd("i", "LIST (SUBSCRIBED RECURSIVEMATCH) \"\" Work").await;
    assert_eq!(r[0], "* LIST (\\HasChildren) \"/\" \"Work\" (\"CHILDINFO\" (\"SUBSCRIBED\"))");
    assert_eq!(c.imap_cmd("j", "RENAME Work Play").await, vec!["j OK RENAME completed".to_string()]);
    let r = c.imap_cmd("k", "LSUB \"\" *").await;
    assert!(has(&r, "* LSUB () \"/\" \"Play/2026\""), "{r:?}");
    assert_eq!(last(&c.imap_cmd("l", "DELETE INBOX").await), "l NO [CANNOT] the folder is a special folder and cannot be deleted");
    assert_eq!(last(&c.imap_cmd("m", "DELETE Play").await), "m NO [CANNOT] the folder has subfolders");
    assert_eq!(last(&c.imap_cmd("n", "DELETE Play/2026").await), "n OK DELETE completed");
    assert_eq!(last(&c.imap_cmd("o", "CREATE Stars (USE (\\Flagged))").await), "o OK CREATE completed");
    assert!(has(&c.imap_cmd("p", "LIST \"\" Stars").await, "* LIST (\\HasNoChildren \\Flagged) \"/\" \"Stars\""));
    assert_eq!(last(&c.imap_cmd("q", "CREATE X (USE (\\Bogus))").await), "q NO [USEATTR] unknown special-use attribute");
    let r = c.imap_cmd("r", "NAMESPACE").await;
    assert_eq!(r[0], "* NAMESPACE ((\"\" \"/\")) NIL NIL");
    let r = c.imap_cmd("s", "ID (\"name\" \"test\")").await;
    assert!(r[0].starts_with("* ID (\"name\" \"mailfort\""), "{r:?}");
}

#[tokio::test]
async fn condstore_and_qresync() {
    let h = Harness::new();
    h.deliver(&[ALICE], M1);
    h.deliver(&[ALICE], M2);
    let mut c = login(&h).await;
    let r = c.imap_cmd("a", "SELECT INBOX (CONDSTORE)").await;
    let hms: u64 = r.iter().find_map(|l| l.strip_prefix("* OK [HIGHESTMODSEQ ")).unwrap().split(']').next().unwrap().parse().unwrap();
    let uv = r.iter().find_map(|l| l.strip_prefix("* OK [UIDVALIDITY ")).unwrap().split(']').next().unwrap().to_string();
    let r = c.imap_cmd("b", &format!("STORE 1 (UNCHANGEDSINCE {hms}) +FLAGS (\\Answered)")).await;
    assert!(r[0].starts_with("* 1 FETCH (UID 1 FLAGS (\\Answered \\Recent) MODSEQ ("), "{r:?}");
    let r = c.imap_cmd("c", &format!("STORE 1 (UNCHANGEDSINCE {hms}) +FLAGS (\\Seen)")).await;
    assert_eq!(last(&r), "c OK [MODIFIED 1] conditional STORE failed");
    let r = c.imap_cmd("d", &format!("FETCH 1:* (FLAGS) (CHANGEDSINCE {hms})")).await;
    assert_eq!(r.len(), 2, "only message 1 changed: {r:?}");
    c.imap_cmd("e", "STORE 2 +FLAGS.SILENT (\\Deleted)").await;
    c.imap_cmd("f", "EXPUNGE").await;
    c.imap_cmd("g", "LOGOUT").await;
    let mut c = login(&h).await;
    assert_eq!(c.imap_cmd("h", "ENABLE QRESYNC").await[0], "* ENABLED QRESYNC");
    let r = c.imap_cmd("i", &format!("SELECT INBOX (QRESYNC ({uv} {hms}))")).await;
    assert!(has(&r, "* VANISHED (EARLIER) 2"), "{r:?}");
    assert!(r.iter().any(|l| l.starts_with("* 1 FETCH (UID 1 FLAGS (\\Answered) MODSEQ (")), "{r:?}");
    // With QRESYNC, expunges are VANISHED (RFC 7162 3.2.10).
    h.deliver(&[ALICE], M1);
    c.imap_cmd("j", "NOOP").await;
    c.imap_cmd("k", "STORE 2 +FLAGS.SILENT (\\Deleted)").await;
    let r = c.imap_cmd("l", "EXPUNGE").await;
    assert_eq!(r[0], "* VANISHED 3");
}

#[tokio::test]
async fn pop3_and_imap_share_the_inbox() {
    let h = Harness::new();
    let name = h.deliver(&[ALICE], M1);
    h.deliver(&[ALICE], M2);
    let mut c = login(&h).await;
    c.imap_cmd("a", "SELECT INBOX").await;
    c.imap_cmd("b", "STORE 1 +FLAGS (\\Seen \\Flagged)").await;
    let mut p = h.pop3().await;
    p.pop(&format!("USER {ALICE}")).await;
    assert!(p.pop(&format!("PASS {ALICE_PASSWORD}")).await.starts_with("+OK"));
    // Flags set over IMAP leave POP3's unique ids alone.
    assert_eq!(p.pop("UIDL 1").await, format!("+OK 1 {name}"));
    // A flag set while POP3 has the listing: RETR and DELE still work.
    c.imap_cmd("c", "STORE 1 -FLAGS (\\Flagged)").await;
    assert!(p.pop("RETR 1").await.starts_with("+OK"));
    assert_eq!(String::from_utf8(p.multi().await).unwrap().trim_end_matches(".\r\n"), String::from_utf8(M1.to_vec()).unwrap());
    assert_eq!(p.pop("DELE 1").await, "+OK message 1 deleted");
    assert!(p.pop("QUIT").await.starts_with("+OK"));
    let r = c.imap_cmd("d", "NOOP").await;
    assert!(has(&r, "* 1 EXPUNGE"), "{r:?}");
    assert_eq!(h.mailbox(ALICE).len(), 1);
}
