//! Tests of the IMAP command parser: every command of RFC 3501 6 and of
//! the extensions in `types`, the error cases, and property tests (no
//! panic, bounded work).

use super::*;
use std::format;
use std::string::ToString;
use std::time::{Duration, Instant};
use std::vec;

use proptest::prelude::*;

// ---------------------------------------------------------------------------
// Helpers

fn parse_ok(input: &[u8]) -> Command {
    match parse_command(input) {
        Ok(t) => {
            assert_eq!(t.tag, "a1", "{:?}", input.escape_ascii().to_string());
            t.command
        }
        Err(e) => panic!("{:?}: {e:?}", input.escape_ascii().to_string()),
    }
}

fn ok(input: &str) -> Command {
    parse_ok(input.as_bytes())
}

fn parse_err(input: &[u8]) -> ParseError {
    match parse_command(input) {
        Ok(t) => panic!("{:?} parsed as {t:?}", input.escape_ascii().to_string()),
        Err(e) => e,
    }
}

/// An error for a command whose tag, `a1`, was read.
fn err(input: &str) -> &'static str {
    let e = parse_err(input.as_bytes());
    assert_eq!(e.tag.as_deref(), Some("a1"), "{input:?}: {e:?}");
    e.reason
}

fn n(x: u32) -> SeqNum {
    SeqNum::Number(x)
}

fn set(ranges: &[(SeqNum, SeqNum)]) -> SequenceSet {
    SequenceSet(ranges.to_vec())
}

fn one(x: u32) -> SequenceSet {
    set(&[(n(x), n(x))])
}

fn s(x: &str) -> String {
    x.to_string()
}

fn b(x: &str) -> Vec<u8> {
    x.as_bytes().to_vec()
}

fn date(year: u16, month: u8, day: u8) -> Date {
    Date { year, month, day }
}

fn section(part: &[u32], text: SectionText) -> Section {
    Section { part: part.to_vec(), text }
}

fn search_key(input: &str) -> SearchKey {
    match ok(&format!("a1 SEARCH {input}")) {
        Command::Search { uid: false, charset: None, key, ret: None } => key,
        c => panic!("{input:?}: {c:?}"),
    }
}

fn fetch_attrs(input: &str) -> Vec<FetchAttr> {
    match ok(&format!("a1 FETCH 1 {input}")) {
        Command::Fetch { uid: false, set, attrs, modifiers } => {
            assert_eq!(set, one(1));
            assert_eq!(modifiers, FetchModifiers::default());
            attrs
        }
        c => panic!("{input:?}: {c:?}"),
    }
}

fn append_head(input: &str) -> AppendHead {
    match ok(input) {
        Command::Append { mailbox, head } => {
            assert_eq!(mailbox, b"INBOX");
            head
        }
        c => panic!("{input:?}: {c:?}"),
    }
}

fn append_date(date_time: &str) -> Result<DateTime, &'static str> {
    let input = format!("a1 APPEND INBOX {date_time} {{1}}");
    match parse_command(input.as_bytes()) {
        Ok(Tagged { command: Command::Append { head, .. }, .. }) => Ok(head.date.expect("a date")),
        Ok(t) => panic!("{input:?}: {t:?}"),
        Err(e) => Err(e.reason),
    }
}

// ---------------------------------------------------------------------------
// Any state (RFC 3501 6.1), not authenticated (6.2)

#[test]
fn any_state_commands() {
    assert_eq!(ok("a1 CAPABILITY"), Command::Capability);
    assert_eq!(ok("a1 noop"), Command::Noop);
    assert_eq!(ok("a1 LogOut"), Command::Logout);
    assert_eq!(ok("a1 StartTLS"), Command::StartTls);
    assert_eq!(ok("a1 NAMESPACE"), Command::Namespace);
    assert_eq!(ok("a1 idle"), Command::Idle);
}

#[test]
fn tags() {
    // RFC 3501 9 tag = 1*<any ASTRING-CHAR except "+">: resp-specials ("]")
    // are in, as are other punctuation marks.
    for tag in ["A", "a.b-c_d", "x]", "0001", "~!#$&'", "[1]"] {
        let t = parse_command(format!("{tag} NOOP").as_bytes()).unwrap();
        assert_eq!((t.tag.as_str(), t.command), (tag, Command::Noop));
    }
    let long = "t".repeat(MAX_TAG);
    assert_eq!(parse_command(format!("{long} NOOP").as_bytes()).unwrap().tag, long);
}

#[test]
fn id() {
    // RFC 2971 3.1.
    assert_eq!(ok("a1 ID NIL"), Command::Id(None));
    assert_eq!(ok("a1 id nil"), Command::Id(None));
    assert_eq!(ok("a1 ID ()"), Command::Id(Some(vec![])));
    assert_eq!(
        ok("a1 ID (\"name\" \"sodr\" \"version\" \"19.34\" \"vendor\" NIL {2}\r\nos \"\")"),
        Command::Id(Some(vec![(b("name"), Some(b("sodr"))), (b("version"), Some(b("19.34"))), (b("vendor"), None), (b("os"), Some(b("")))]))
    );
    // RFC 2971 3.3 bounds.
    let field = "f".repeat(MAX_ID_FIELD);
    assert!(matches!(ok(&format!("a1 ID (\"{field}\" NIL)")), Command::Id(Some(_))));
    assert_eq!(err(&format!("a1 ID (\"{field}x\" NIL)")), "ID field or value too long");
    let value = "v".repeat(MAX_ID_VALUE);
    assert!(matches!(ok(&format!("a1 ID (\"f\" \"{value}\")")), Command::Id(Some(_))));
    assert_eq!(err(&format!("a1 ID (\"f\" \"{value}v\")")), "ID field or value too long");
    let pairs = |k: usize| (0..k).map(|i| format!("\"f{i}\" NIL")).collect::<Vec<_>>().join(" ");
    assert!(matches!(ok(&format!("a1 ID ({})", pairs(MAX_ID_PAIRS))), Command::Id(Some(p)) if p.len() == MAX_ID_PAIRS));
    assert_eq!(err(&format!("a1 ID ({})", pairs(MAX_ID_PAIRS + 1))), "too many ID fields");
    // A field is a string, not an atom; the list is not optional.
    err("a1 ID (name \"x\")");
    err("a1 ID");
    err("a1 ID (\"name\")");
}

#[test]
fn authenticate() {
    assert_eq!(ok("a1 AUTHENTICATE PLAIN"), Command::Authenticate { mechanism: s("PLAIN"), initial: None });
    assert_eq!(ok("a1 authenticate scram-sha-256"), Command::Authenticate { mechanism: s("SCRAM-SHA-256"), initial: None });
    // RFC 4959 3: SASL-IR, base64 or "=" for an empty response.
    assert_eq!(ok("a1 AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA=="), Command::Authenticate { mechanism: s("PLAIN"), initial: Some(b("AGFsaWNlAHNlY3JldA==")) });
    assert_eq!(ok("a1 AUTHENTICATE PLAIN YWJj"), Command::Authenticate { mechanism: s("PLAIN"), initial: Some(b("YWJj")) });
    assert_eq!(ok("a1 AUTHENTICATE PLAIN YWI="), Command::Authenticate { mechanism: s("PLAIN"), initial: Some(b("YWI=")) });
    assert_eq!(ok("a1 AUTHENTICATE EXTERNAL ="), Command::Authenticate { mechanism: s("EXTERNAL"), initial: Some(vec![]) });
    // RFC 3501 9 base64 = *(4base64-char) [base64-terminal].
    for bad in ["YWJ", "YW==Jj", "Y===", "=YWJ", "==", "YWJj=", "AG!s", ""] {
        err(&format!("a1 AUTHENTICATE PLAIN {bad}"));
    }
    err("a1 AUTHENTICATE");
    err("a1 AUTHENTICATE PLAIN  AGFs");
    assert_eq!(err(&format!("a1 AUTHENTICATE {}", "X".repeat(MAX_MECHANISM + 1))), "mechanism name too long");
    assert!(matches!(ok(&format!("a1 AUTHENTICATE {}", "X".repeat(MAX_MECHANISM))), Command::Authenticate { .. }));
}

#[test]
fn login() {
    let login = |u: &str, p: &str| Command::Login { user: b(u), password: b(p) };
    assert_eq!(ok("a1 LOGIN alice secret"), login("alice", "secret"));
    assert_eq!(ok("a1 login alice@example.test s]cr~t"), login("alice@example.test", "s]cr~t"));
    // RFC 3501 9 quoted, with its two escapes.
    assert_eq!(ok(r#"a1 LOGIN "alice smith" "p\"a\\ss""#), login("alice smith", r#"p"a\ss"#));
    assert_eq!(ok(r#"a1 LOGIN "" """#), login("", ""));
    // RFC 3501 4.3 literals, synchronizing and (RFC 7888) not.
    assert_eq!(ok("a1 LOGIN {5}\r\nalice {6+}\r\nsecret"), login("alice", "secret"));
    assert_eq!(ok("a1 LOGIN {12}\r\nalice\r\nsmith \"x\""), login("alice\r\nsmith", "x"));
    assert_eq!(ok("a1 LOGIN {0}\r\n {3}\r\n\"(*"), login("", "\"(*"));
    // Bytes over 0x7f in quoted strings and literals (RFC 9051 allows UTF-8).
    assert_eq!(parse_ok(b"a1 LOGIN \"j\xc3\xb6rg\" {2}\r\n\xff\xfe"), Command::Login { user: b("j\u{f6}rg"), password: vec![0xff, 0xfe] });
    // Atoms end at atom-specials.
    err("a1 LOGIN al(ce secret");
    err("a1 LOGIN alice sec%ret");
    err("a1 LOGIN alice");
    err(r#"a1 LOGIN "alice" "a\b""#);
    err("a1 LOGIN \"al\rice\" x");
}

// ---------------------------------------------------------------------------
// Authenticated state (RFC 3501 6.3)

#[test]
fn enable() {
    // RFC 5161 3.1.
    assert_eq!(ok("a1 ENABLE CONDSTORE"), Command::Enable(vec![s("CONDSTORE")]));
    assert_eq!(ok("a1 enable QRESYNC utf8=accept"), Command::Enable(vec![s("QRESYNC"), s("utf8=accept")]));
    assert_eq!(err("a1 ENABLE"), "ENABLE needs a capability");
    err("a1 ENABLE ");
    err("a1 ENABLE (CONDSTORE)");
}

#[test]
fn select_examine() {
    let plain = SelectParams::default();
    assert_eq!(ok("a1 SELECT INBOX"), Command::Select { mailbox: b("INBOX"), params: plain.clone() });
    // RFC 3501 5.1: INBOX in any case is the inbox.
    assert_eq!(ok("a1 select inbox"), Command::Select { mailbox: b("INBOX"), params: plain.clone() });
    assert_eq!(ok("a1 SELECT \"InBox\""), Command::Select { mailbox: b("INBOX"), params: plain.clone() });
    assert_eq!(ok("a1 SELECT InBoxes"), Command::Select { mailbox: b("InBoxes"), params: plain.clone() });
    assert_eq!(ok("a1 EXAMINE \"Sent Items\""), Command::Examine { mailbox: b("Sent Items"), params: plain.clone() });
    assert_eq!(ok("a1 EXAMINE {7}\r\nArchive"), Command::Examine { mailbox: b("Archive"), params: plain });
    // RFC 7162 3.1.8.
    let condstore = SelectParams { condstore: true, qresync: None };
    assert_eq!(ok("a1 SELECT INBOX (CONDSTORE)"), Command::Select { mailbox: b("INBOX"), params: condstore.clone() });
    assert_eq!(ok("a1 EXAMINE INBOX (condstore)"), Command::Examine { mailbox: b("INBOX"), params: condstore });
    // RFC 7162 3.2.5 (the example of 3.2.5.2).
    let q = |known_uids, seq_match| SelectParams { condstore: false, qresync: Some(Qresync { uid_validity: 67890007, mod_seq: 20050715194045000, known_uids, seq_match }) };
    assert_eq!(
        ok("a1 SELECT INBOX (QRESYNC (67890007 20050715194045000 41,43:211,214:541))"),
        Command::Select { mailbox: b("INBOX"), params: q(Some(set(&[(n(41), n(41)), (n(43), n(211)), (n(214), n(541))])), None) }
    );
    assert_eq!(ok("a1 SELECT INBOX (QRESYNC (67890007 20050715194045000))"), Command::Select { mailbox: b("INBOX"), params: q(None, None) });
    assert_eq!(
        ok("a1 SELECT INBOX (QRESYNC (67890007 20050715194045000 1:29997 (5000,7500,9000,9990:9999 15000,22500,27000,29970,29973,29976,29979,29982,29985,29988,29991,29994,29997)))"),
        Command::Select {
            mailbox: b("INBOX"),
            params: q(
                Some(set(&[(n(1), n(29997))])),
                Some((
                    set(&[(n(5000), n(5000)), (n(7500), n(7500)), (n(9000), n(9000)), (n(9990), n(9999))]),
                    SequenceSet([15000, 22500, 27000, 29970, 29973, 29976, 29979, 29982, 29985, 29988, 29991, 29994, 29997].iter().map(|&x| (n(x), n(x))).collect()),
                ))
            )
        }
    );
    assert_eq!(ok("a1 SELECT INBOX (QRESYNC (67890007 20050715194045000 (1 2)))"), Command::Select { mailbox: b("INBOX"), params: q(None, Some((one(1), one(2)))) });
    match ok("a1 SELECT INBOX (CONDSTORE QRESYNC (1 2))") {
        Command::Select { params: SelectParams { condstore: true, qresync: Some(q) }, .. } => assert_eq!((q.uid_validity, q.mod_seq), (1, 2)),
        c => panic!("{c:?}"),
    }
    // "*" is not a UID here; uidvalidity and mod-sequence-value are not zero.
    assert_eq!(err("a1 SELECT INBOX (QRESYNC (1 2 1:*))"), "\"*\" is not allowed here");
    err("a1 SELECT INBOX (QRESYNC (1 2 1 (1 *)))");
    err("a1 SELECT INBOX (QRESYNC (0 2))");
    err("a1 SELECT INBOX (QRESYNC (1 0))");
    err("a1 SELECT INBOX (QRESYNC (1))");
    err("a1 SELECT INBOX (QRESYNC 1 2)");
    err("a1 SELECT INBOX ()");
    err("a1 SELECT INBOX (FROB)");
    err("a1 SELECT INBOX CONDSTORE");
    err("a1 SELECT");
}

#[test]
fn create() {
    assert_eq!(ok("a1 CREATE owatagusiam/"), Command::Create { mailbox: b("owatagusiam/"), special_use: vec![] });
    // RFC 6154 3.
    assert_eq!(ok("a1 CREATE MyArchive (USE (\\Archive))"), Command::Create { mailbox: b("MyArchive"), special_use: vec![s("\\Archive")] });
    assert_eq!(ok("a1 create \"My Junk\" (use (\\Junk \\Flagged))"), Command::Create { mailbox: b("My Junk"), special_use: vec![s("\\Junk"), s("\\Flagged")] });
    assert_eq!(ok("a1 CREATE x (USE ())"), Command::Create { mailbox: b("x"), special_use: vec![] });
    err("a1 CREATE x (USE (Archive))");
    err("a1 CREATE x (FOO (\\Archive))");
    err("a1 CREATE x ()");
    err("a1 CREATE");
}

#[test]
fn delete_rename_subscribe() {
    assert_eq!(ok("a1 DELETE blurdybloop"), Command::Delete(b("blurdybloop")));
    assert_eq!(ok("a1 delete \"foo/bar\""), Command::Delete(b("foo/bar")));
    assert_eq!(ok("a1 RENAME blurdybloop sarasoop"), Command::Rename { from: b("blurdybloop"), to: b("sarasoop") });
    assert_eq!(ok("a1 RENAME \"a b\" {3}\r\nc d"), Command::Rename { from: b("a b"), to: b("c d") });
    assert_eq!(ok("a1 SUBSCRIBE #news.comp.mail.mime"), Command::Subscribe(b("#news.comp.mail.mime")));
    assert_eq!(ok("a1 UNSUBSCRIBE #news.comp.mail.mime"), Command::Unsubscribe(b("#news.comp.mail.mime")));
    // A mailbox is an astring: no wildcards.
    err("a1 DELETE foo*");
    err("a1 DELETE");
    err("a1 RENAME a");
    err("a1 SUBSCRIBE");
}

#[test]
fn list_basic() {
    let list = |reference: &str, pattern: &str| Command::List { select: ListSelect::default(), reference: b(reference), patterns: vec![b(pattern)], ret: ListReturn::default() };
    assert_eq!(ok("a1 LIST \"\" \"\""), list("", ""));
    assert_eq!(ok("a1 LIST \"#news.comp.mail.misc\" \"\""), list("#news.comp.mail.misc", ""));
    assert_eq!(ok("a1 LIST /usr/staff/jones \"\""), list("/usr/staff/jones", ""));
    assert_eq!(ok("a1 LIST ~/Mail/ %"), list("~/Mail/", "%"));
    assert_eq!(ok("a1 list \"\" *"), list("", "*"));
    assert_eq!(ok("a1 LIST \"\" Sent/%/x*]"), list("", "Sent/%/x*]"));
    assert_eq!(ok("a1 LIST \"\" {3}\r\n*%x"), list("", "*%x"));
    err("a1 LIST \"\"");
    err("a1 LIST \"\" ()");
    err("a1 LIST \"\" * RETURN");
    err("a1 LIST \"\" * FOO ()");
}

#[test]
fn list_extended() {
    // RFC 5258 3, RFC 6154 5.1, RFC 5819 2.
    match ok("a1 LIST (SUBSCRIBED RECURSIVEMATCH) \"\" (\"INBOX\" Sent/% {3}\r\nx*y) RETURN (SUBSCRIBED CHILDREN SPECIAL-USE STATUS (MESSAGES UNSEEN))") {
        Command::List { select, reference, patterns, ret } => {
            assert_eq!(select, ListSelect { subscribed: true, remote: false, recursive_match: true, special_use: false });
            assert_eq!(reference, b"");
            assert_eq!(patterns, vec![b("INBOX"), b("Sent/%"), b("x*y")]);
            assert_eq!(ret, ListReturn { subscribed: true, children: true, special_use: true, status: Some(vec![StatusItem::Messages, StatusItem::Unseen]) });
        }
        c => panic!("{c:?}"),
    }
    match ok("a1 list (special-use remote) \"\" * return ()") {
        Command::List { select, ret, .. } => {
            assert_eq!(select, ListSelect { subscribed: false, remote: true, recursive_match: false, special_use: true });
            assert_eq!(ret, ListReturn::default());
        }
        c => panic!("{c:?}"),
    }
    match ok("a1 LIST () \"\" % RETURN (CHILDREN)") {
        Command::List { select, ret, .. } => {
            assert_eq!(select, ListSelect::default());
            assert_eq!(ret, ListReturn { children: true, ..ListReturn::default() });
        }
        c => panic!("{c:?}"),
    }
    // RFC 5258 3.1: RECURSIVEMATCH modifies a base option.
    assert_eq!(err("a1 LIST (RECURSIVEMATCH) \"\" *"), "RECURSIVEMATCH without a base option");
    assert_eq!(err("a1 LIST (REMOTE RECURSIVEMATCH) \"\" *"), "RECURSIVEMATCH without a base option");
    err("a1 LIST (FROB) \"\" *");
    err("a1 LIST \"\" * RETURN (FROB)");
    err("a1 LIST \"\" * RETURN (STATUS ())");
    err("a1 LIST \"\" * RETURN (STATUS)");
    err("a1 LIST (SUBSCRIBED)\"\" *");
}

#[test]
fn lsub_status_namespace() {
    assert_eq!(ok("a1 LSUB \"#news.\" \"comp.mail.*\""), Command::Lsub { reference: b("#news."), pattern: b("comp.mail.*") });
    assert_eq!(ok("a1 lsub \"\" %"), Command::Lsub { reference: b(""), pattern: b("%") });
    err("a1 LSUB \"\" (a b)");
    assert_eq!(ok("a1 STATUS blurdybloop (UIDNEXT MESSAGES)"), Command::Status { mailbox: b("blurdybloop"), items: vec![StatusItem::UidNext, StatusItem::Messages] });
    assert_eq!(
        ok("a1 status inbox (messages recent uidnext uidvalidity unseen highestmodseq)"),
        Command::Status { mailbox: b("INBOX"), items: vec![StatusItem::Messages, StatusItem::Recent, StatusItem::UidNext, StatusItem::UidValidity, StatusItem::Unseen, StatusItem::HighestModSeq] }
    );
    err("a1 STATUS INBOX ()");
    err("a1 STATUS INBOX (SIZE)");
    err("a1 STATUS INBOX MESSAGES");
    err("a1 NAMESPACE x");
}

#[test]
fn append() {
    let head = |flags, date, length, non_sync, binary| AppendHead { flags, date, length, non_sync, binary };
    assert_eq!(append_head("a1 APPEND INBOX {310}"), head(vec![], None, 310, false, false));
    // The CRLF after the announcement may be there.
    assert_eq!(append_head("a1 APPEND INBOX {310}\r\n"), head(vec![], None, 310, false, false));
    assert_eq!(append_head("a1 append inbox {0}\n"), head(vec![], None, 0, false, false));
    // RFC 7888 LITERAL+, RFC 3516 4.4 literal8.
    assert_eq!(append_head("a1 APPEND INBOX {310+}"), head(vec![], None, 310, true, false));
    assert_eq!(append_head("a1 APPEND INBOX ~{310}"), head(vec![], None, 310, false, true));
    assert_eq!(append_head("a1 APPEND INBOX ~{310+}\r\n"), head(vec![], None, 310, true, true));
    // Flags and date (RFC 3501 6.3.11 example).
    let july = DateTime { unix: 837_596_665, zone_minutes: -420 };
    assert_eq!(append_head("a1 APPEND INBOX (\\Seen) \"17-Jul-1996 02:44:25 -0700\" {310}"), head(vec![Flag::Seen], Some(july), 310, false, false));
    assert_eq!(append_head("a1 APPEND INBOX \"17-Jul-1996 02:44:25 -0700\" {310}"), head(vec![], Some(july), 310, false, false));
    assert_eq!(append_head("a1 APPEND INBOX () {1}"), head(vec![], None, 1, false, false));
    assert_eq!(
        append_head("a1 APPEND INBOX (\\Seen \\answered \\Flagged \\Deleted \\Draft $Forwarded \\Recent) {1+}"),
        head(vec![Flag::Seen, Flag::Answered, Flag::Flagged, Flag::Deleted, Flag::Draft, Flag::Keyword(s("$Forwarded")), Flag::Extension(s("\\Recent"))], None, 1, true, false)
    );
    match ok("a1 APPEND \"Sent Items\" {1}") {
        Command::Append { mailbox, .. } => assert_eq!(mailbox, b"Sent Items"),
        c => panic!("{c:?}"),
    }
    // The message is streamed, not parsed.
    assert_eq!(err("a1 APPEND INBOX {5}\r\nhello"), "APPEND message must be streamed");
    err("a1 APPEND INBOX {5} ");
    err("a1 APPEND INBOX");
    err("a1 APPEND INBOX \"msg\"");
    err("a1 APPEND INBOX (\\Seen) (\\Draft) {1}");
    err("a1 APPEND INBOX \"17-Jul-1996 02:44:25 -0700\" (\\Seen) {1}");
    err("a1 APPEND INBOX (\\Seen){1}");
    err("a1 APPEND INBOX {4294967296}");
    err("a1 APPEND INBOX {1-}");
    err("a1 APPEND INBOX ~ {1}");
}

#[test]
fn date_time() {
    // RFC 3501 9 date-time = DQUOTE date-day-fixed "-" date-month "-"
    // date-year SP time SP zone DQUOTE; date-day-fixed = (SP DIGIT) / 2DIGIT.
    let july4 = DateTime { unix: 1_720_044_000, zone_minutes: 120 };
    assert_eq!(append_date("\" 4-Jul-2024 00:00:00 +0200\""), Ok(july4));
    assert_eq!(append_date("\"04-jul-2024 00:00:00 +0200\""), Ok(july4));
    assert_eq!(append_date("\"03-JUL-2024 22:00:00 +0000\""), Ok(DateTime { unix: 1_720_044_000, zone_minutes: 0 }));
    // A single digit without the space, as clients send it.
    assert_eq!(append_date("\"4-Jul-2024 00:00:00 +0200\""), Ok(july4));
    assert_eq!(append_date("\"01-Jan-1970 00:00:00 +0000\""), Ok(DateTime { unix: 0, zone_minutes: 0 }));
    assert_eq!(append_date("\"31-Dec-1969 23:59:59 -0000\""), Ok(DateTime { unix: -1, zone_minutes: 0 }));
    assert_eq!(append_date("\"29-Feb-2024 12:00:00 +0000\"").map(|d| d.unix), Ok(1_709_208_000));
    assert_eq!(append_date("\"01-Jan-1970 00:00:00 -1230\""), Ok(DateTime { unix: 45_000, zone_minutes: -750 }));
    // A leap second.
    assert!(append_date("\"30-Jun-2015 23:59:60 +0000\"").is_ok());
    for bad in [
        "\" 14-Jul-2024 00:00:00 +0000\"",
        "\"  4-Jul-2024 00:00:00 +0000\"",
        "\"004-Jul-2024 00:00:00 +0000\"",
        "\"31-Apr-2024 00:00:00 +0000\"",
        "\"29-Feb-2023 00:00:00 +0000\"",
        "\"00-Jan-2024 00:00:00 +0000\"",
        "\"01-Jux-2024 00:00:00 +0000\"",
        "\"01-Jan-24 00:00:00 +0000\"",
        "\"01-Jan-2024 24:00:00 +0000\"",
        "\"01-Jan-2024 00:60:00 +0000\"",
        "\"01-Jan-2024 00:00:61 +0000\"",
        "\"01-Jan-2024 0:00:00 +0000\"",
        "\"01-Jan-2024 00:00 +0000\"",
        "\"01-Jan-2024 00:00:00 +02\"",
        "\"01-Jan-2024 00:00:00 0200\"",
        "\"01-Jan-2024 00:00:00 +0260\"",
        "\"01-Jan-2024 00:00:00 GMT\"",
        "\"01-Jan-2024  00:00:00 +0000\"",
        "\"01-Jan-2024 00:00:00 +0000 \"",
        "\"01-Jan-2024 00:00:00 +0000",
        "\"01 Jan 2024 00:00:00 +0000\"",
        "01-Jan-2024 00:00:00 +0000",
    ] {
        assert!(append_date(bad).is_err(), "{bad}");
    }
}

#[test]
fn idle_done() {
    // RFC 2177 3.
    assert!(is_done(b"DONE"));
    assert!(is_done(b"done\r\n"));
    assert!(is_done(b"Done\n"));
    assert!(!is_done(b"DONE "));
    assert!(!is_done(b"a1 DONE"));
    assert!(!is_done(b"DONEX\r\n"));
    assert!(!is_done(b""));
    err("a1 IDLE now");
}

// ---------------------------------------------------------------------------
// Selected state (RFC 3501 6.4)

#[test]
fn simple_selected_commands() {
    assert_eq!(ok("a1 CHECK"), Command::Check);
    assert_eq!(ok("a1 close"), Command::Close);
    assert_eq!(ok("a1 Unselect"), Command::Unselect);
    assert_eq!(ok("a1 EXPUNGE"), Command::Expunge);
    // RFC 4315 2.1.
    assert_eq!(ok("a1 UID EXPUNGE 3000:3002"), Command::UidExpunge(set(&[(n(3000), n(3002))])));
    assert_eq!(ok("a1 uid expunge 1,5:*"), Command::UidExpunge(set(&[(n(1), n(1)), (n(5), SeqNum::Last)])));
    err("a1 UID EXPUNGE");
    err("a1 EXPUNGE 1");
    err("a1 CHECK ALL");
}

#[test]
fn sequence_sets() {
    let uid_expunge = |input: &str| match ok(&format!("a1 UID EXPUNGE {input}")) {
        Command::UidExpunge(s) => s,
        c => panic!("{c:?}"),
    };
    assert_eq!(uid_expunge("*"), set(&[(SeqNum::Last, SeqNum::Last)]));
    assert_eq!(uid_expunge("*:4"), set(&[(SeqNum::Last, n(4))]));
    assert_eq!(uid_expunge("4:*"), set(&[(n(4), SeqNum::Last)]));
    // Either end first (RFC 3501 9 seq-range).
    assert_eq!(uid_expunge("9:2,1"), set(&[(n(9), n(2)), (n(1), n(1))]));
    assert_eq!(uid_expunge("2,4:7,9,12:*"), set(&[(n(2), n(2)), (n(4), n(7)), (n(9), n(9)), (n(12), SeqNum::Last)]));
    assert_eq!(uid_expunge("4294967295"), one(u32::MAX));
    let many = (1..=MAX_SEQUENCE_RANGES).map(|i| i.to_string()).collect::<Vec<_>>().join(",");
    assert_eq!(uid_expunge(&many).0.len(), MAX_SEQUENCE_RANGES);
    assert_eq!(err(&format!("a1 UID EXPUNGE {many},1")), "too many ranges in a sequence set");
    // RFC 3501 9: seq-number = nz-number / "*".
    for bad in ["0", "0:5", "5:0", "1,0", "4294967296", "99999999999999999999999", "1,", ",1", "1:", ":1", "1::2", "1:2:3", "**", "-1", "1 ,2", "$"] {
        assert!(parse_command(format!("a1 UID EXPUNGE {bad}").as_bytes()).is_err(), "{bad}");
    }
    assert_eq!(err("a1 UID EXPUNGE 0"), "zero is not allowed here");
    assert_eq!(err("a1 UID EXPUNGE 4294967296"), "number out of range");
}

#[test]
fn search_program() {
    // RFC 3501 6.4.4 example.
    match ok("a1 SEARCH FLAGGED SINCE 1-Feb-1994 NOT FROM \"Smith\"") {
        Command::Search { uid: false, charset: None, key, ret: None } => {
            assert_eq!(key, SearchKey::And(vec![SearchKey::Flagged, SearchKey::Since(date(1994, 2, 1)), SearchKey::Not(Box::new(SearchKey::From(b("Smith"))))]));
        }
        c => panic!("{c:?}"),
    }
    // CHARSET (RFC 3501 6.4.4) with a literal in it.
    match parse_ok("a1 SEARCH CHARSET UTF-8 TEXT {5}\r\nt\u{e9}st".as_bytes()) {
        Command::Search { uid: false, charset: Some(c), key, ret: None } => {
            assert_eq!(c, "UTF-8");
            assert_eq!(key, SearchKey::Text(b("t\u{e9}st")));
        }
        c => panic!("{c:?}"),
    }
    match ok("a1 uid search charset \"us-ascii\" all") {
        Command::Search { uid: true, charset: Some(c), key: SearchKey::All, ret: None } => assert_eq!(c, "us-ascii"),
        c => panic!("{c:?}"),
    }
    // RFC 4731 3 / RFC 4466 2.6: RETURN before CHARSET.
    assert_eq!(ok("a1 SEARCH RETURN () ALL"), Command::Search { uid: false, charset: None, key: SearchKey::All, ret: Some(vec![]) });
    assert_eq!(
        ok("a1 UID SEARCH RETURN (MIN COUNT) CHARSET UTF-8 UNSEEN"),
        Command::Search { uid: true, charset: Some(s("UTF-8")), key: SearchKey::Unseen, ret: Some(vec![s("MIN"), s("COUNT")]) }
    );
    err("a1 SEARCH");
    err("a1 SEARCH CHARSET UTF-8");
    err("a1 SEARCH CHARSET \"\u{e9}\" ALL");
    err("a1 SEARCH RETURN ALL");
    err("a1 SEARCH ALL CHARSET UTF-8");
    err("a1 SEARCH  ALL");
    err("a1 SEARCH ALL ");
    err("a1 SEARCH FROB");
}

#[test]
fn search_keys() {
    use SearchKey as K;
    let cases: Vec<(&str, SearchKey)> = vec![
        ("ALL", K::All),
        ("ANSWERED", K::Answered),
        ("BCC bob", K::Bcc(b("bob"))),
        ("BEFORE 1-Feb-1994", K::Before(date(1994, 2, 1))),
        ("BODY {3}\r\na b", K::Body(b("a b"))),
        ("CC \"c d\"", K::Cc(b("c d"))),
        ("DELETED", K::Deleted),
        ("DRAFT", K::Draft),
        ("FLAGGED", K::Flagged),
        ("FROM alice@example.test", K::From(b("alice@example.test"))),
        ("HEADER Message-ID <x@y>", K::Header(s("Message-ID"), b("<x@y>"))),
        ("HEADER \"X-Spam\" \"\"", K::Header(s("X-Spam"), b(""))),
        ("KEYWORD $Forwarded", K::Keyword(s("$Forwarded"))),
        ("LARGER 4294967295", K::Larger(u32::MAX)),
        ("NEW", K::New),
        ("NOT SEEN", K::Not(Box::new(K::Seen))),
        ("OLD", K::Old),
        ("ON 29-Feb-2024", K::On(date(2024, 2, 29))),
        ("OR SEEN FLAGGED", K::Or(Box::new(K::Seen), Box::new(K::Flagged))),
        ("RECENT", K::Recent),
        ("SEEN", K::Seen),
        ("SENTBEFORE 31-Dec-1999", K::SentBefore(date(1999, 12, 31))),
        ("SENTON \"9-sep-2001\"", K::SentOn(date(2001, 9, 9))),
        ("SENTSINCE \"09-SEP-2001\"", K::SentSince(date(2001, 9, 9))),
        ("SINCE 01-Jan-2000", K::Since(date(2000, 1, 1))),
        ("SMALLER 0", K::Smaller(0)),
        ("SUBJECT \"\"", K::Subject(b(""))),
        ("TEXT x", K::Text(b("x"))),
        ("TO {0}\r\n", K::To(b(""))),
        ("UID 1:*", K::Uid(set(&[(n(1), SeqNum::Last)]))),
        ("UNANSWERED", K::Unanswered),
        ("UNDELETED", K::Undeleted),
        ("UNDRAFT", K::Undraft),
        ("UNFLAGGED", K::Unflagged),
        ("UNKEYWORD Junk", K::Unkeyword(s("Junk"))),
        ("UNSEEN", K::Unseen),
        ("2,4:*", K::Sequence(set(&[(n(2), n(2)), (n(4), SeqNum::Last)]))),
        ("*", K::Sequence(set(&[(SeqNum::Last, SeqNum::Last)]))),
        ("(SEEN)", K::And(vec![K::Seen])),
        // RFC 7162 3.1.5 (the example of 3.1.5 with its entry).
        ("MODSEQ 620162338", K::ModSeq(620162338)),
        (r#"MODSEQ "/flags/\\draft" all 620162338"#, K::ModSeq(620162338)),
        (r#"MODSEQ "/flags/$Junk" PRIV 0"#, K::ModSeq(0)),
        ("modseq \"/flags/x\" shared 5", K::ModSeq(5)),
        // Keywords in any case.
        ("uid 5", K::Uid(one(5))),
        ("Since 1-feb-1994", K::Since(date(1994, 2, 1))),
        ("unseen", K::Unseen),
    ];
    for (input, key) in cases {
        assert_eq!(search_key(input), key, "{input:?}");
    }
    for bad in [
        "BCC",
        "BEFORE",
        "BEFORE 1-Feb-94",
        "BEFORE 123-Feb-1994",
        "BEFORE 0-Feb-1994",
        "BEFORE 30-Feb-2024",
        "BEFORE 1-Fev-1994",
        "BEFORE \"1-Feb-1994",
        "BEFORE 1 Feb 1994",
        "HEADER Subject",
        "HEADER \"\" x",
        "HEADER \"a b\" x",
        "KEYWORD \\Seen",
        "KEYWORD",
        "LARGER",
        "LARGER 4294967296",
        "LARGER -1",
        "NOT",
        "NOT  SEEN",
        "OR SEEN",
        "UID",
        "UID 0",
        "MODSEQ",
        "MODSEQ x",
        "MODSEQ 9223372036854775808",
        "MODSEQ \"/x/y\" all 1",
        "MODSEQ \"/flags/x\" everything 1",
        "MODSEQ \"/flags/x\" 1",
        "()",
        "(SEEN",
        "SEEN)",
        "(SEEN )",
        "( SEEN)",
        "0",
        "ALL(SEEN)",
    ] {
        let input = format!("a1 SEARCH {bad}");
        let e = parse_err(input.as_bytes());
        assert_eq!(e.tag.as_deref(), Some("a1"), "{input:?}");
    }
}

#[test]
fn nested_search() {
    use SearchKey as K;
    assert_eq!(
        search_key("OR (SEEN FLAGGED) NOT (1:5,* UID 7:*)"),
        K::Or(Box::new(K::And(vec![K::Seen, K::Flagged])), Box::new(K::Not(Box::new(K::And(vec![K::Sequence(set(&[(n(1), n(5)), (SeqNum::Last, SeqNum::Last)])), K::Uid(set(&[(n(7), SeqNum::Last)]))])))))
    );
    assert_eq!(search_key("NOT OR NOT SEEN ((DRAFT))"), K::Not(Box::new(K::Or(Box::new(K::Not(Box::new(K::Seen))), Box::new(K::And(vec![K::And(vec![K::Draft])]))))));
    assert_eq!(search_key("OR OR 1 2 3"), K::Or(Box::new(K::Or(Box::new(K::Sequence(one(1))), Box::new(K::Sequence(one(2))))), Box::new(K::Sequence(one(3)))));
    // MAX_NESTING levels of parentheses, of NOT and of OR.
    let parens = |k: usize| format!("{}ALL{}", "(".repeat(k), ")".repeat(k));
    assert!(matches!(search_key(&parens(MAX_NESTING)), K::And(_)));
    assert_eq!(err(&format!("a1 SEARCH {}", parens(MAX_NESTING + 1))), "search program nested too deep");
    let nots = |k: usize| format!("{}ALL", "NOT ".repeat(k));
    assert!(matches!(search_key(&nots(MAX_NESTING)), K::Not(_)));
    assert_eq!(err(&format!("a1 SEARCH {}", nots(MAX_NESTING + 1))), "search program nested too deep");
    let ors = |k: usize| format!("{}ALL{}", "OR ALL ".repeat(k), "");
    assert!(matches!(search_key(&ors(MAX_NESTING)), K::Or(..)));
    assert_eq!(err(&format!("a1 SEARCH {}", ors(MAX_NESTING + 1))), "search program nested too deep");
}

#[test]
fn search_size_bounds() {
    // MAX_SEARCH_KEYS keys in all, parentheses included.
    let keys = |k: usize| vec!["SEEN"; k].join(" ");
    assert!(matches!(search_key(&keys(MAX_SEARCH_KEYS)), SearchKey::And(v) if v.len() == MAX_SEARCH_KEYS));
    assert_eq!(err(&format!("a1 SEARCH {}", keys(MAX_SEARCH_KEYS + 1))), "search program too long");
    assert_eq!(err(&format!("a1 SEARCH ({})", keys(MAX_SEARCH_KEYS))), "search program too long");
    let ors = format!("{}SEEN", "OR SEEN SEEN ".repeat(MAX_SEARCH_KEYS / 2));
    assert_eq!(err(&format!("a1 SEARCH {ors}")), "search program too long");
}

#[test]
fn fetch_macros() {
    use FetchAttr as A;
    // RFC 3501 6.4.5: the macros are equivalent to these lists.
    assert_eq!(fetch_attrs("ALL"), vec![A::Flags, A::InternalDate, A::Rfc822Size, A::Envelope]);
    assert_eq!(fetch_attrs("fast"), vec![A::Flags, A::InternalDate, A::Rfc822Size]);
    assert_eq!(fetch_attrs("Full"), vec![A::Flags, A::InternalDate, A::Rfc822Size, A::Envelope, A::Body]);
    // Macros stand alone (RFC 3501 9 fetch), not in a list.
    err("a1 FETCH 1 (ALL)");
    err("a1 FETCH 1 (FLAGS FAST)");
    err("a1 FETCH 1 ALLX");
    err("a1 FETCH 1 ALL FAST");
    match ok("a1 UID FETCH 1:* FAST (CHANGEDSINCE 5)") {
        Command::Fetch { uid: true, attrs, modifiers, .. } => {
            assert_eq!(attrs.len(), 3);
            assert_eq!(modifiers, FetchModifiers { changed_since: Some(5), vanished: false });
        }
        c => panic!("{c:?}"),
    }
}

#[test]
fn fetch_items() {
    use FetchAttr as A;
    assert_eq!(
        fetch_attrs("(ENVELOPE FLAGS INTERNALDATE RFC822 RFC822.HEADER RFC822.SIZE RFC822.TEXT BODY BODYSTRUCTURE UID MODSEQ)"),
        vec![A::Envelope, A::Flags, A::InternalDate, A::Rfc822, A::Rfc822Header, A::Rfc822Size, A::Rfc822Text, A::Body, A::BodyStructure, A::Uid, A::ModSeq]
    );
    assert_eq!(fetch_attrs("(flags uid rfc822.size)"), vec![A::Flags, A::Uid, A::Rfc822Size]);
    assert_eq!(fetch_attrs("FLAGS"), vec![A::Flags]);
    let body = |section, partial, peek| A::BodySection { section, partial, peek };
    assert_eq!(fetch_attrs("BODY[]"), vec![body(section(&[], SectionText::Full), None, false)]);
    assert_eq!(fetch_attrs("(BODY.PEEK[])"), vec![body(section(&[], SectionText::Full), None, true)]);
    assert_eq!(
        fetch_attrs("BODY.PEEK[HEADER.FIELDS (A B)]<0.100>"),
        vec![body(section(&[], SectionText::HeaderFields(vec![s("A"), s("B")])), Some(Partial { origin: 0, length: 100 }), true)]
    );
    assert_eq!(
        fetch_attrs("body[header.fields.not (Received \"X-Spam\" {4}\r\nDate)]"),
        vec![body(section(&[], SectionText::HeaderFieldsNot(vec![s("Received"), s("X-Spam"), s("Date")])), None, false)]
    );
    assert_eq!(fetch_attrs("BODY[1.2.MIME]"), vec![body(section(&[1, 2], SectionText::Mime), None, false)]);
    assert_eq!(fetch_attrs("BODY[1.2.3]"), vec![body(section(&[1, 2, 3], SectionText::Full), None, false)]);
    assert_eq!(fetch_attrs("BODY[HEADER]"), vec![body(section(&[], SectionText::Header), None, false)]);
    assert_eq!(fetch_attrs("BODY[TEXT]<10.4294967295>"), vec![body(section(&[], SectionText::Text), Some(Partial { origin: 10, length: u32::MAX }), false)]);
    assert_eq!(fetch_attrs("BODY[4.2.HEADER]"), vec![body(section(&[4, 2], SectionText::Header), None, false)]);
    assert_eq!(fetch_attrs("BODY[3.TEXT]"), vec![body(section(&[3], SectionText::Text), None, false)]);
    assert_eq!(fetch_attrs("BODY[1.HEADER.FIELDS (Subject)]"), vec![body(section(&[1], SectionText::HeaderFields(vec![s("Subject")])), None, false)]);
    // RFC 3516 4.2.
    assert_eq!(fetch_attrs("BINARY.PEEK[1]"), vec![A::Binary { part: vec![1], partial: None, peek: true }]);
    assert_eq!(fetch_attrs("BINARY[]<5.6>"), vec![A::Binary { part: vec![], partial: Some(Partial { origin: 5, length: 6 }), peek: false }]);
    assert_eq!(fetch_attrs("BINARY.SIZE[2]"), vec![A::BinarySize { part: vec![2] }]);
    assert_eq!(fetch_attrs("(BINARY.PEEK[1] BINARY.SIZE[2.3] UID)"), vec![A::Binary { part: vec![1], partial: None, peek: true }, A::BinarySize { part: vec![2, 3] }, A::Uid]);
    let deep = (1..=MAX_PART_DEPTH).map(|i| i.to_string()).collect::<Vec<_>>().join(".");
    assert!(matches!(&fetch_attrs(&format!("BODY[{deep}]"))[0], A::BodySection { section, .. } if section.part.len() == MAX_PART_DEPTH));
    assert_eq!(err(&format!("a1 FETCH 1 BODY[{deep}.1]")), "section nested too deep");
    for bad in [
        "BODY[MIME]",
        "BODY[0]",
        "BODY[1.]",
        "BODY[.1]",
        "BODY[1.0]",
        "BODY[HEADER.FIELDS]",
        "BODY[HEADER.FIELDS ()]",
        "BODY[HEADER.FIELDS (A B]",
        "BODY[TEXT.MIME]",
        "BODY[FROB]",
        "BODY[",
        "BODY[]<0>",
        "BODY[]<0.0>",
        "BODY[]<.1>",
        "BODY[]<1.2",
        "BODY<0.10>",
        "BODY.PEEK",
        "BODY.PEEK []",
        "BINARY[TEXT]",
        "BINARY[1.MIME]",
        "BINARY.SIZE[1]<0.1>",
        "BINARY.SIZE",
        "RFC822.PEEK",
        "()",
        "(FLAGS",
        "(FLAGS  UID)",
        "( FLAGS)",
        "FLAGS UID",
    ] {
        let input = format!("a1 FETCH 1 {bad}");
        assert_eq!(parse_err(input.as_bytes()).tag.as_deref(), Some("a1"), "{input:?}");
    }
}

#[test]
fn fetch_modifiers() {
    // RFC 7162 3.1.4.1, 3.2.6.
    match ok("a1 UID FETCH 300:500 (FLAGS) (CHANGEDSINCE 12345 VANISHED)") {
        Command::Fetch { uid: true, set: s, attrs, modifiers } => {
            assert_eq!(s, set(&[(n(300), n(500))]));
            assert_eq!(attrs, vec![FetchAttr::Flags]);
            assert_eq!(modifiers, FetchModifiers { changed_since: Some(12345), vanished: true });
        }
        c => panic!("{c:?}"),
    }
    match ok("a1 fetch 1:* (uid) (changedsince 9223372036854775807)") {
        Command::Fetch { uid: false, modifiers, .. } => assert_eq!(modifiers.changed_since, Some(i64::MAX as u64)),
        c => panic!("{c:?}"),
    }
    assert_eq!(err("a1 FETCH 1:* (FLAGS) (CHANGEDSINCE 12345 VANISHED)"), "VANISHED needs UID FETCH and CHANGEDSINCE");
    assert_eq!(err("a1 UID FETCH 1:* (FLAGS) (VANISHED)"), "VANISHED needs UID FETCH and CHANGEDSINCE");
    err("a1 FETCH 1 FLAGS (CHANGEDSINCE 0)");
    err("a1 FETCH 1 FLAGS (CHANGEDSINCE)");
    err("a1 FETCH 1 FLAGS (CHANGEDSINCE 9223372036854775808)");
    err("a1 FETCH 1 FLAGS ()");
    err("a1 FETCH 1 FLAGS (FROB)");
    err("a1 FETCH 1 FLAGS CHANGEDSINCE 1");
    err("a1 FETCH 0 FLAGS");
    err("a1 FETCH FLAGS");
    err("a1 FETCH 1");
}

#[test]
fn store() {
    let store = |uid, set, mode, silent, flags, unchanged_since| Command::Store { uid, set, mode, silent, flags, unchanged_since };
    assert_eq!(ok("a1 STORE 2:4 +FLAGS (\\Deleted)"), store(false, set(&[(n(2), n(4))]), StoreMode::Add, false, vec![Flag::Deleted], None));
    assert_eq!(ok("a1 store 1 -flags \\Seen \\Flagged"), store(false, one(1), StoreMode::Remove, false, vec![Flag::Seen, Flag::Flagged], None));
    assert_eq!(ok("a1 STORE 1 FLAGS ()"), store(false, one(1), StoreMode::Replace, false, vec![], None));
    assert_eq!(ok("a1 STORE 1 FLAGS.SILENT $Junk"), store(false, one(1), StoreMode::Replace, true, vec![Flag::Keyword(s("$Junk"))], None));
    // RFC 7162 3.1.3.
    assert_eq!(
        ok("a1 UID STORE 1:* (UNCHANGEDSINCE 12345) +FLAGS.SILENT (\\Seen \\Draft)"),
        store(true, set(&[(n(1), SeqNum::Last)]), StoreMode::Add, true, vec![Flag::Seen, Flag::Draft], Some(12345))
    );
    // mod-sequence-valzer: zero is allowed.
    assert_eq!(ok("a1 STORE 7 (unchangedsince 0) -FLAGS.silent (x)"), store(false, one(7), StoreMode::Remove, true, vec![Flag::Keyword(s("x"))], Some(0)));
    let flags = |k: usize| vec!["\\Seen"; k].join(" ");
    assert!(matches!(ok(&format!("a1 STORE 1 FLAGS ({})", flags(MAX_LIST_ITEMS))), Command::Store { flags, .. } if flags.len() == MAX_LIST_ITEMS));
    assert_eq!(err(&format!("a1 STORE 1 FLAGS ({})", flags(MAX_LIST_ITEMS + 1))), "list too long");
    assert!(matches!(ok(&format!("a1 STORE 1 FLAGS {}", flags(MAX_LIST_ITEMS))), Command::Store { flags, .. } if flags.len() == MAX_LIST_ITEMS));
    assert_eq!(err(&format!("a1 STORE 1 FLAGS {}", flags(MAX_LIST_ITEMS + 1))), "too many flags");
    for bad in [
        "STORE 1 FLAGS",
        "STORE 1 FLAGS ",
        "STORE 1 +FLAGS.LOUD (\\Seen)",
        "STORE 1 *FLAGS (\\Seen)",
        "STORE 1 + FLAGS (\\Seen)",
        "STORE 1 FLAGS (\\*)",
        "STORE 1 FLAGS (\\)",
        "STORE 1 FLAGS (\\Seen",
        "STORE 1 FLAGS (\"x\")",
        "STORE 1 FLAGS \\Seen  \\Draft",
        "STORE 1 (UNCHANGEDSINCE) FLAGS x",
        "STORE 1 (FROB 1) FLAGS x",
        "STORE 1 () FLAGS x",
        // RFC 7162 3.1.3: the modifier comes before the flags.
        "STORE 1 +FLAGS.SILENT (\\Seen) (UNCHANGEDSINCE 1)",
        "STORE FLAGS x",
        "STORE 0 FLAGS x",
    ] {
        let input = format!("a1 {bad}");
        assert_eq!(parse_err(input.as_bytes()).tag.as_deref(), Some("a1"), "{input:?}");
    }
}

#[test]
fn copy_move_uid() {
    assert_eq!(ok("a1 COPY 2:4 MEETING"), Command::Copy { uid: false, set: set(&[(n(2), n(4))]), mailbox: b("MEETING") });
    assert_eq!(ok("a1 uid copy 1,3 \"Saved Messages\""), Command::Copy { uid: true, set: set(&[(n(1), n(1)), (n(3), n(3))]), mailbox: b("Saved Messages") });
    // RFC 6851 3.
    assert_eq!(ok("a1 MOVE 1:* inbox"), Command::Move { uid: false, set: set(&[(n(1), SeqNum::Last)]), mailbox: b("INBOX") });
    assert_eq!(ok("a1 UID MOVE 42 {5}\r\nTrash"), Command::Move { uid: true, set: one(42), mailbox: b("Trash") });
    match ok("a1 UID SEARCH UID 1:5") {
        Command::Search { uid: true, key, .. } => assert_eq!(key, SearchKey::Uid(set(&[(n(1), n(5))]))),
        c => panic!("{c:?}"),
    }
    match ok("a1 UID FETCH 1 BODY.PEEK[]") {
        Command::Fetch { uid: true, .. } => {}
        c => panic!("{c:?}"),
    }
    err("a1 COPY 1");
    err("a1 COPY INBOX");
    err("a1 MOVE 1 a b");
    err("a1 UID");
    err("a1 UID NOOP");
    err("a1 UID  FETCH 1 FLAGS");
    err("a1 UID EXAMINE INBOX");
}

// ---------------------------------------------------------------------------
// Errors

#[test]
fn tag_errors() {
    for (input, reason) in [
        ("", "missing tag"),
        (" NOOP", "missing tag"),
        ("+ NOOP", "missing tag"),
        ("* NOOP", "missing tag"),
        ("\"a1\" NOOP", "missing tag"),
        ("a*b NOOP", "bad character in the tag"),
        ("a+ NOOP", "bad character in the tag"),
        ("a{1} NOOP", "bad character in the tag"),
        ("a%1 NOOP", "bad character in the tag"),
        ("a(1) NOOP", "bad character in the tag"),
        ("a\"1 NOOP", "bad character in the tag"),
        ("a\\1 NOOP", "bad character in the tag"),
        ("a\x011 NOOP", "bad character in the tag"),
        ("a\t NOOP", "bad character in the tag"),
        ("\u{e9}1 NOOP", "missing tag"),
        ("a\u{e9} NOOP", "bad character in the tag"),
    ] {
        let e = parse_err(input.as_bytes());
        assert_eq!((e.tag, e.reason), (None, reason), "{input:?}");
    }
    let e = parse_err(format!("{} NOOP", "t".repeat(MAX_TAG + 1)).as_bytes());
    assert_eq!((e.tag, e.reason), (None, "tag too long"));
    // A tag followed by nothing was read.
    assert_eq!(err("a1"), "expected a space");
}

#[test]
fn command_errors() {
    assert_eq!(err("a1 FROB"), "unknown command");
    assert_eq!(err("a1 NOOP2"), "unknown command");
    assert_eq!(err("a1 NO-OP"), "unknown command");
    assert_eq!(err("a1  NOOP"), "expected a keyword");
    assert_eq!(err("a1 NOOP "), "unexpected characters after the command");
    assert_eq!(err("a1 NOOP\r\n"), "unexpected characters after the command");
    assert_eq!(err("a1 NOOP x"), "unexpected characters after the command");
    assert_eq!(err("a1 "), "expected a keyword");
    err("a1 LOGIN alice  secret");
    err("a1 LOGIN  alice secret");
    err("a1 FETCH 1  FLAGS");
    err("a1 FETCH  1 FLAGS");
    err("a1 STATUS INBOX  (MESSAGES)");
    err("a1 STATUS INBOX (MESSAGES  UNSEEN)");
    err("a1 STATUS INBOX ( MESSAGES)");
    err("a1 STATUS INBOX (MESSAGES )");
    err("a1 \u{e9}");
}

#[test]
fn string_errors() {
    assert_eq!(err("a1 LOGIN \"alice secret"), "unterminated quoted string");
    assert_eq!(err("a1 LOGIN alice \"secret"), "unterminated quoted string");
    assert_eq!(err("a1 LOGIN alice \"sec\\"), "bad escape in a quoted string");
    assert_eq!(err("a1 LOGIN alice \"s\\ecret\""), "bad escape in a quoted string");
    assert_eq!(err("a1 LOGIN alice \"sec\0ret\""), "control character in a quoted string");
    assert_eq!(err("a1 LOGIN alice \"sec\nret\""), "control character in a quoted string");
    assert_eq!(err("a1 LOGIN {10}\r\nabc"), "literal shorter than announced");
    assert_eq!(err("a1 LOGIN alice {7}\r\nsecret"), "literal shorter than announced");
    assert_eq!(err("a1 LOGIN {3}\r\na\0b x"), "NUL in a literal");
    assert_eq!(err("a1 LOGIN {5}alice x"), "expected CRLF after a literal");
    assert_eq!(err("a1 LOGIN {5}\ralice x"), "expected CRLF after a literal");
    assert_eq!(err("a1 LOGIN {4294967296}\r\n x"), "number out of range");
    // "~" is an ASTRING-CHAR: a literal8 is not a string (RFC 3516 4.4).
    err("a1 LOGIN ~{5}\r\nalice x");
    err("a1 LOGIN {}\r\n x");
    err("a1 LOGIN {5\r\nalice x");
    err("a1 LOGIN {x}\r\nalice x");
    err("a1 LOGIN {-1}\r\nalice x");
    // The literal's bytes are not the end of the command.
    assert_eq!(ok("a1 LOGIN {5}\nalice x"), Command::Login { user: b("alice"), password: b("x") });
    err("a1 LOGIN {5}\r\nalicex");
}

#[test]
fn list_bounds() {
    let items = |k: usize| vec!["MESSAGES"; k].join(" ");
    assert!(matches!(ok(&format!("a1 STATUS INBOX ({})", items(MAX_LIST_ITEMS))), Command::Status { items, .. } if items.len() == MAX_LIST_ITEMS));
    assert_eq!(err(&format!("a1 STATUS INBOX ({})", items(MAX_LIST_ITEMS + 1))), "list too long");
    let caps = |k: usize| vec!["X"; k].join(" ");
    assert!(matches!(ok(&format!("a1 ENABLE {}", caps(MAX_LIST_ITEMS))), Command::Enable(c) if c.len() == MAX_LIST_ITEMS));
    assert_eq!(err(&format!("a1 ENABLE {}", caps(MAX_LIST_ITEMS + 1))), "too many capabilities");
    let patterns = |k: usize| vec!["%"; k].join(" ");
    assert!(matches!(ok(&format!("a1 LIST \"\" ({})", patterns(MAX_LIST_ITEMS))), Command::List { patterns, .. } if patterns.len() == MAX_LIST_ITEMS));
    assert_eq!(err(&format!("a1 LIST \"\" ({})", patterns(MAX_LIST_ITEMS + 1))), "list too long");
    let attrs = |k: usize| vec!["UID"; k].join(" ");
    assert_eq!(fetch_attrs(&format!("({})", attrs(MAX_LIST_ITEMS))).len(), MAX_LIST_ITEMS);
    assert_eq!(err(&format!("a1 FETCH 1 ({})", attrs(MAX_LIST_ITEMS + 1))), "list too long");
    let names = |k: usize| vec!["X"; k].join(" ");
    assert_eq!(fetch_attrs(&format!("BODY[HEADER.FIELDS ({})]", names(MAX_LIST_ITEMS))).len(), 1);
    assert_eq!(err(&format!("a1 FETCH 1 BODY[HEADER.FIELDS ({})]", names(MAX_LIST_ITEMS + 1))), "list too long");
    let flags = |k: usize| vec!["x"; k].join(" ");
    assert_eq!(append_head(&format!("a1 APPEND INBOX ({}) {{1}}", flags(MAX_LIST_ITEMS))).flags.len(), MAX_LIST_ITEMS);
    assert_eq!(err(&format!("a1 APPEND INBOX ({}) {{1}}", flags(MAX_LIST_ITEMS + 1))), "list too long");
}

// ---------------------------------------------------------------------------
// Property tests: no panic, errors carry the tag, bounded work.

/// Commands of every kind, for the mutation property.
const VALID: &[&str] = &[
    "a1 CAPABILITY",
    "a1 ID (\"name\" \"x\" \"version\" NIL)",
    "a1 AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==",
    "a1 LOGIN {5}\r\nalice \"se\\\"cret\"",
    "a1 ENABLE CONDSTORE QRESYNC",
    "a1 SELECT INBOX (QRESYNC (67890007 20050715194045000 41,43:211 (1,3 41,43)))",
    "a1 CREATE Archive (USE (\\Archive))",
    "a1 RENAME a {1}\r\nb",
    "a1 LIST (SUBSCRIBED RECURSIVEMATCH) \"\" (INBOX Sent/%) RETURN (CHILDREN STATUS (MESSAGES UNSEEN))",
    "a1 LSUB \"\" *",
    "a1 STATUS INBOX (UIDNEXT MESSAGES HIGHESTMODSEQ)",
    "a1 APPEND INBOX (\\Seen) \" 4-Jul-2024 10:00:00 +0200\" ~{310+}\r\n",
    "a1 UID EXPUNGE 1:5,7",
    "a1 SEARCH RETURN (MIN) CHARSET UTF-8 OR (SEEN NOT FLAGGED) SINCE 1-Feb-1994 HEADER X-A {2}\r\nbc MODSEQ \"/flags/\\\\draft\" all 5 UID 1:*",
    "a1 UID FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (A B)]<0.100> BODY[1.2.MIME] BINARY.PEEK[1] BINARY.SIZE[2]) (CHANGEDSINCE 1 VANISHED)",
    "a1 FETCH 1 FULL",
    "a1 UID STORE 1:* (UNCHANGEDSINCE 5) +FLAGS.SILENT (\\Deleted $Junk)",
    "a1 UID MOVE 1:* Trash",
];

#[test]
fn valid_commands_parse() {
    for c in VALID {
        ok(c);
    }
}

/// What must hold for any input: an error's tag and a command's tag are
/// the input's first bytes, and parsing gives the same result twice.
fn check_any(input: &[u8]) -> Result<(), TestCaseError> {
    let r = parse_command(input);
    prop_assert_eq!(&r, &parse_command(input));
    let tag = match &r {
        Ok(t) => Some(&t.tag),
        Err(e) => e.tag.as_ref(),
    };
    if let Some(tag) = tag {
        prop_assert!(!tag.is_empty() && tag.len() <= MAX_TAG);
        prop_assert!(input.starts_with(tag.as_bytes()));
        prop_assert!(input.get(tag.len()).is_none_or(|&b| b == b' '));
    }
    if let Ok(t) = &r {
        prop_assert!(input.len() > t.tag.len() + 1);
    }
    Ok(())
}

/// A mutation of a valid command: bytes replaced, inserted, removed or
/// repeated, and IMAP tokens inserted.
#[derive(Debug, Clone)]
enum Mutation {
    Replace(usize, u8),
    Insert(usize, u8),
    Remove(usize),
    Token(usize, usize),
    Repeat(usize, usize, usize),
    Truncate(usize),
}

const TOKENS: &[&[u8]] = &[b" ", b"(", b")", b"{", b"}", b"{5}\r\n", b"{0+}\r\n", b"~{3}", b"\"", b"\\", b"*", b":", b",", b"[", b"]", b"<", b">", b".", b"\r\n", b"\0", b"NOT ", b"OR ", b"NIL", b"0", b"4294967296", b"99999999999999999999", b"\xff"];

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Replace(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<usize>().prop_map(Mutation::Remove),
        (any::<usize>(), 0..TOKENS.len()).prop_map(|(i, t)| Mutation::Token(i, t)),
        (any::<usize>(), 1usize..16, 1usize..64).prop_map(|(i, l, k)| Mutation::Repeat(i, l, k)),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn apply(input: &mut Vec<u8>, m: &Mutation) {
    let at = |i: usize, len: usize| if len == 0 { 0 } else { i % (len + 1) };
    match *m {
        Mutation::Replace(i, b) if !input.is_empty() => {
            let i = i % input.len();
            input[i] = b;
        }
        Mutation::Insert(i, b) => input.insert(at(i, input.len()), b),
        Mutation::Remove(i) if !input.is_empty() => {
            input.remove(i % input.len());
        }
        Mutation::Token(i, t) => {
            let i = at(i, input.len());
            input.splice(i..i, TOKENS[t].iter().copied());
        }
        Mutation::Repeat(i, l, k) if !input.is_empty() => {
            let i = i % input.len();
            let piece = input[i..(i + l).min(input.len())].to_vec();
            for _ in 0..k {
                input.splice(i..i, piece.iter().copied());
            }
        }
        Mutation::Truncate(i) => input.truncate(at(i, input.len())),
        _ => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..512)) {
        check_any(&input)?;
    }

    #[test]
    fn random_commandish_text_never_panics(tag in "[a-z0-9]{1,4}", rest in "[ -~]{0,200}") {
        check_any(format!("{tag} {rest}").as_bytes())?;
    }

    #[test]
    fn mutated_valid_commands_never_panic(which in 0..VALID.len(), mutations in proptest::collection::vec(mutation(), 1..8)) {
        let mut input = VALID[which].as_bytes().to_vec();
        for m in &mutations {
            apply(&mut input, m);
        }
        check_any(&input)?;
    }
}

/// Inputs of 64 KiB that would nest or repeat without end: each is refused
/// (or, for a long flat list that is within bounds, read) at once, without
/// a deep stack.
#[test]
fn work_is_bounded() {
    const HUGE: usize = 64 * 1024;
    let rep = |prefix: &str, piece: &str| {
        let mut v = prefix.as_bytes().to_vec();
        while v.len() < HUGE {
            v.extend_from_slice(piece.as_bytes());
        }
        v
    };
    let inputs = [
        rep("a1 SEARCH ", "("),
        rep("a1 SEARCH ", "NOT "),
        rep("a1 SEARCH ", "OR "),
        rep("a1 SEARCH ", "OR ALL "),
        rep("a1 SEARCH ", "ALL "),
        rep("a1 SEARCH ", "(ALL) "),
        rep("a1 SEARCH ", "1,"),
        rep("a1 SEARCH UID ", "1:*,"),
        rep("a1 FETCH 1 ", "("),
        rep("a1 FETCH 1 (", "UID "),
        rep("a1 FETCH 1 BODY[", "1."),
        rep("a1 FETCH 1 BODY[HEADER.FIELDS (", "X "),
        rep("a1 STORE 1 FLAGS ", "\\Seen "),
        rep("a1 STORE 1 FLAGS (", "x "),
        rep("a1 STATUS INBOX (", "MESSAGES "),
        rep("a1 ENABLE", " X"),
        rep("a1 LIST \"\" (", "% "),
        rep("a1 ID (", "\"a\" NIL "),
        rep("a1 LOGIN ", "{0}\r\n"),
        rep("a1 LOGIN \"", "\\\\"),
        rep("a1 LOGIN ", "9"),
        rep("a1 FETCH ", "9"),
        rep("a1 SELECT INBOX (QRESYNC (1 1 ", "1,"),
        rep("", "a"),
        rep("a1 ", "("),
        rep("a1 ", " "),
    ];
    let budget = Duration::from_secs(2);
    for input in &inputs {
        let start = Instant::now();
        let r = parse_command(input);
        let took = start.elapsed();
        assert!(r.is_err(), "{:?}...", input[..40].escape_ascii().to_string());
        assert!(took < budget, "{:?}... took {took:?}", input[..40].escape_ascii().to_string());
    }
    // And in a thread with a quarter of the usual 2 MiB stack: MAX_NESTING
    // levels take about 160 KiB in a debug build, a few KiB optimized.
    let deep = inputs[0].clone();
    let nots = inputs[1].clone();
    std::thread::Builder::new()
        .stack_size(512 * 1024)
        .spawn(move || {
            assert!(parse_command(&deep).is_err());
            assert!(parse_command(&nots).is_err());
            let mut ok = b"a1 SEARCH ".to_vec();
            for _ in 0..MAX_NESTING {
                ok.extend_from_slice(b"NOT (");
            }
            ok.extend_from_slice(b"ALL");
            ok.extend(core::iter::repeat(b')').take(MAX_NESTING));
            assert!(parse_command(&ok).is_err(), "NOT ( counts two levels");
        })
        .unwrap()
        .join()
        .unwrap();
}

