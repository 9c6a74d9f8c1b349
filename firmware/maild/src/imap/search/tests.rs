//! Unit tests of search.rs: every RFC 3501 6.4.4 key, matching and not.

use super::*;
use crate::imap::message::parse;
use proto::imap::SearchKey as K;

fn crlf(lines: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for l in lines {
        out.extend_from_slice(l.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// 2025-01-01T00:30:00Z.
const INTERNAL: i64 = 1_735_689_600 + 1_800;

fn meta(keywords: &[String]) -> Meta<'_> {
    Meta {
        seq: 3,
        uid: 30,
        seen: false,
        answered: false,
        flagged: false,
        deleted: false,
        draft: false,
        recent: false,
        keywords,
        internal_date: INTERNAL,
        size: 1000,
        modseq: 7,
    }
}

const BOUNDS: Bounds = Bounds { last_seq: 5, last_uid: 50 };

fn date(year: u16, month: u8, day: u8) -> Date {
    Date { year, month, day }
}

fn set(ranges: &[(SeqNum, SeqNum)]) -> SequenceSet {
    SequenceSet(ranges.to_vec())
}

fn n(v: u32) -> SeqNum {
    SeqNum::Number(v)
}

fn s(v: &str) -> Vec<u8> {
    v.as_bytes().to_vec()
}

/// A message with encoded header words, a date late on 31 December in
/// its own zone (1 January in UTC) and a quoted-printable UTF-8 body.
fn message() -> Vec<u8> {
    crlf(&[
        "From: =?utf-8?q?J=C3=B6rg?= <joerg@example.com>",
        "To: Alice <alice@example.org>, bob@example.net",
        "Cc: carol@example.com",
        "Bcc: dave@example.com",
        "Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe_aus_K=C3=B6ln?=",
        "Date: Tue, 31 Dec 2024 23:30:00 -0800",
        "X-Empty:",
        "X-Folded: first",
        "  second",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: quoted-printable",
        "",
        "Stra=C3=9Fe und Meer, das Wetter ist sch=C3=B6=",
        "n heute.",
    ])
}

fn check(raw: &[u8], key: &K, meta: &Meta<'_>) -> bool {
    let p = parse(raw);
    let msg = needs_message(key).then_some(&p);
    matches(key, meta, msg, &BOUNDS)
}

fn yes(key: K) {
    assert!(check(&message(), &key, &meta(&[])), "{key:?} should match");
}

fn no(key: K) {
    assert!(!check(&message(), &key, &meta(&[])), "{key:?} should not match");
}

#[test]
fn flags() {
    let kw = vec!["$Label1".to_string(), "Work".to_string()];
    let base = meta(&kw);
    let flags = [
        (K::Answered, K::Unanswered, Meta { answered: true, ..meta(&kw) }),
        (K::Deleted, K::Undeleted, Meta { deleted: true, ..meta(&kw) }),
        (K::Draft, K::Undraft, Meta { draft: true, ..meta(&kw) }),
        (K::Flagged, K::Unflagged, Meta { flagged: true, ..meta(&kw) }),
        (K::Seen, K::Unseen, Meta { seen: true, ..meta(&kw) }),
    ];
    let raw = message();
    for (set_key, unset_key, with) in &flags {
        assert!(check(&raw, set_key, with), "{set_key:?}");
        assert!(!check(&raw, set_key, &base), "{set_key:?}");
        assert!(check(&raw, unset_key, &base), "{unset_key:?}");
        assert!(!check(&raw, unset_key, with), "{unset_key:?}");
    }
    assert!(check(&raw, &K::Recent, &Meta { recent: true, ..meta(&kw) }));
    assert!(!check(&raw, &K::Recent, &base));
    // RFC 3501 6.4.4: NEW is RECENT and not SEEN; OLD is not RECENT.
    assert!(check(&raw, &K::New, &Meta { recent: true, ..meta(&kw) }));
    assert!(!check(&raw, &K::New, &Meta { recent: true, seen: true, ..meta(&kw) }));
    assert!(!check(&raw, &K::New, &base));
    assert!(check(&raw, &K::Old, &base));
    assert!(check(&raw, &K::Old, &Meta { seen: true, ..meta(&kw) }));
    assert!(!check(&raw, &K::Old, &Meta { recent: true, ..meta(&kw) }));
    assert!(check(&raw, &K::All, &base));
    // Keywords, in any case.
    assert!(check(&raw, &K::Keyword("work".into()), &base));
    assert!(check(&raw, &K::Keyword("$Label1".into()), &base));
    assert!(!check(&raw, &K::Keyword("Home".into()), &base));
    assert!(check(&raw, &K::Unkeyword("Home".into()), &base));
    assert!(!check(&raw, &K::Unkeyword("WORK".into()), &base));
    assert!(!check(&raw, &K::Keyword("Work".into()), &meta(&[])));
}

#[test]
fn size_and_modseq() {
    // RFC 3501 6.4.4: strictly larger / smaller than the RFC822.SIZE (1000).
    yes(K::Larger(999));
    no(K::Larger(1000));
    yes(K::Smaller(1001));
    no(K::Smaller(1000));
    no(K::Smaller(0));
    // RFC 7162 3.1.5: mod-sequence at least n (it is 7).
    yes(K::ModSeq(7));
    yes(K::ModSeq(1));
    no(K::ModSeq(8));
}

#[test]
fn internal_date_keys() {
    // 2025-01-01T00:30Z: the UTC date is 1 January 2025.
    yes(K::On(date(2025, 1, 1)));
    no(K::On(date(2024, 12, 31)));
    yes(K::Since(date(2025, 1, 1)));
    yes(K::Since(date(2024, 12, 31)));
    no(K::Since(date(2025, 1, 2)));
    yes(K::Before(date(2025, 1, 2)));
    no(K::Before(date(2025, 1, 1)));
    no(K::Before(date(2024, 6, 1)));
}

#[test]
fn sent_date_keys() {
    // The Date: field in its own zone: 31 December 2024 (UTC would say 1 January).
    yes(K::SentOn(date(2024, 12, 31)));
    no(K::SentOn(date(2025, 1, 1)));
    yes(K::SentBefore(date(2025, 1, 1)));
    no(K::SentBefore(date(2024, 12, 31)));
    yes(K::SentSince(date(2024, 12, 31)));
    no(K::SentSince(date(2025, 1, 1)));
    // No Date: (or one that does not parse): the internal date, as Dovecot.
    for raw in [crlf(&["Subject: undated", "", "x"]), crlf(&["Date: someday", "", "x"])] {
        assert!(check(&raw, &K::SentOn(date(2025, 1, 1)), &meta(&[])));
        assert!(!check(&raw, &K::SentBefore(date(2025, 1, 1)), &meta(&[])));
        assert!(check(&raw, &K::SentSince(date(2025, 1, 1)), &meta(&[])));
    }
}

#[test]
fn address_keys() {
    // RFC 2047 words decoded, any case (Unicode too).
    yes(K::From(s("jörg")));
    yes(K::From(s("JÖRG")));
    yes(K::From(s("joerg@EXAMPLE.com")));
    no(K::From(s("alice")));
    no(K::From(s("=?utf-8?")));
    yes(K::To(s("alice <alice@")));
    yes(K::To(s("BOB@example.net")));
    no(K::To(s("carol")));
    yes(K::Cc(s("carol")));
    no(K::Cc(s("dave")));
    yes(K::Bcc(s("dave@")));
    no(K::Bcc(s("joerg")));
    // An empty string matches a message that has the field.
    yes(K::Bcc(Vec::new()));
    let raw = crlf(&["From: a@example.com", "", "x"]);
    assert!(!check(&raw, &K::Bcc(Vec::new()), &meta(&[])));
    assert!(check(&raw, &K::From(Vec::new()), &meta(&[])));
}

#[test]
fn subject_and_header_keys() {
    // An RFC 2047 encoded subject is searched decoded.
    yes(K::Subject(s("grüße aus köln")));
    yes(K::Subject(s("KÖLN")));
    yes(K::Subject(s("Grüße")));
    no(K::Subject(s("=?utf-8?q?")));
    no(K::Subject(s("Bonn")));
    yes(K::Header("SUBJECT".into(), s("aus")));
    yes(K::Header("content-transfer-encoding".into(), s("QUOTED")));
    no(K::Header("content-transfer-encoding".into(), s("base64")));
    // Folded values are unfolded.
    yes(K::Header("x-folded".into(), s("first second")));
    // RFC 3501 6.4.4: HEADER with an empty string matches any message
    // that has the field, even an empty one.
    yes(K::Header("X-Empty".into(), Vec::new()));
    no(K::Header("X-Empty".into(), s("a")));
    no(K::Header("X-Missing".into(), Vec::new()));
    no(K::Header("X-Missing".into(), s("a")));
}

#[test]
fn body_and_text_keys() {
    // The quoted-printable body is decoded (a soft line break joins "schön").
    yes(K::Body(s("schön heute")));
    yes(K::Body(s("SCHÖN")));
    // Unicode case: capital sharp s lowercases to ß.
    yes(K::Body(s("STRA\u{1e9e}E")));
    no(K::Body(s("sch=C3=B6")));
    // BODY does not search the header; TEXT does.
    no(K::Body(s("köln")));
    yes(K::Text(s("köln")));
    yes(K::Text(s("joerg@example")));
    yes(K::Text(s("meer")));
    yes(K::Text(s("x-folded: first")));
    no(K::Text(s("nowhere")));
    yes(K::Body(Vec::new()));
    yes(K::Text(Vec::new()));
}

#[test]
fn body_of_multipart() {
    let raw = crlf(&[
        "Subject: parts",
        "Content-Type: multipart/mixed; boundary=b",
        "",
        "preamble text",
        "--b",
        "Content-Type: text/plain; charset=iso-8859-1",
        "Content-Transfer-Encoding: quoted-printable",
        "",
        "caf=E9 au lait",
        "--b",
        "Content-Type: text/html",
        "Content-Transfer-Encoding: base64",
        "",
        "PHA+SGVsbG8gV29ybGQ8L3A+",
        "--b",
        "Content-Type: application/octet-stream",
        "Content-Transfer-Encoding: base64",
        "",
        "c2VjcmV0IGJpbmFyeQ==",
        "--b--",
    ]);
    let m = meta(&[]);
    assert!(check(&raw, &K::Body(s("CAFÉ AU")), &m));
    assert!(check(&raw, &K::Body(s("hello world")), &m));
    // Only text parts are searched.
    assert!(!check(&raw, &K::Body(s("secret")), &m));
    assert!(!check(&raw, &K::Body(s("parts")), &m));
    assert!(check(&raw, &K::Text(s("parts")), &m));
}

#[test]
fn numbers() {
    yes(K::Uid(set(&[(n(30), n(30))])));
    yes(K::Uid(set(&[(n(1), SeqNum::Last)])));
    no(K::Uid(set(&[(n(31), SeqNum::Last)])));
    no(K::Uid(set(&[(n(1), n(29)), (n(31), n(40))])));
    yes(K::Sequence(set(&[(n(3), n(3))])));
    yes(K::Sequence(set(&[(n(5), n(2))])));
    no(K::Sequence(set(&[(n(4), SeqNum::Last)])));
    no(K::Uid(set(&[(n(3), n(3))])));
}

#[test]
fn sequence_sets() {
    let s1 = set(&[(n(1), n(3)), (n(7), n(7))]);
    assert!(set_contains(&s1, 1, 10));
    assert!(set_contains(&s1, 3, 10));
    assert!(!set_contains(&s1, 4, 10));
    assert!(set_contains(&s1, 7, 10));
    assert!(!set_contains(&s1, 8, 10));
    // `*` is the largest number in use.
    let last = set(&[(SeqNum::Last, SeqNum::Last)]);
    assert!(set_contains(&last, 5, 5));
    assert!(!set_contains(&last, 4, 5));
    // Ranges in either order (RFC 3501 9).
    let rev = set(&[(n(5), n(2))]);
    assert!(set_contains(&rev, 2, 9) && set_contains(&rev, 4, 9) && set_contains(&rev, 5, 9));
    assert!(!set_contains(&rev, 1, 9) && !set_contains(&rev, 6, 9));
    // `559:*` with 500 the largest: 500 to 559, so 500 is in.
    let past = set(&[(n(559), SeqNum::Last)]);
    assert!(set_contains(&past, 500, 500));
    assert!(!set_contains(&past, 499, 500));
    let star_first = set(&[(SeqNum::Last, n(3))]);
    assert!(set_contains(&star_first, 3, 6) && set_contains(&star_first, 6, 6) && !set_contains(&star_first, 2, 6));
    // An empty folder: `*` matches nothing.
    assert!(!set_contains(&last, 0, 0));
    assert!(!set_contains(&set(&[(n(1), SeqNum::Last)]), 1, 0));
    assert!(!set_contains(&SequenceSet(Vec::new()), 1, 5));
}

#[test]
fn combinators() {
    yes(K::Not(Box::new(K::Seen)));
    no(K::Not(Box::new(K::All)));
    yes(K::Or(Box::new(K::Seen), Box::new(K::From(s("jörg")))));
    yes(K::Or(Box::new(K::From(s("jörg"))), Box::new(K::Seen)));
    no(K::Or(Box::new(K::Seen), Box::new(K::Flagged)));
    yes(K::And(vec![K::Unseen, K::Subject(s("köln")), K::Body(s("meer")), K::Uid(set(&[(n(30), n(30))]))]));
    no(K::And(vec![K::Unseen, K::Subject(s("köln")), K::Body(s("nope"))]));
    yes(K::And(Vec::new()));
    yes(K::Not(Box::new(K::Not(Box::new(K::Text(s("wetter")))))));
}

#[test]
fn needs_message_only_for_content_keys() {
    for k in [K::Subject(s("a")), K::Header("x".into(), Vec::new()), K::Body(s("a")), K::Text(s("a")), K::SentOn(date(2024, 1, 1))] {
        assert!(needs_message(&k), "{k:?}");
        assert!(needs_message(&K::Not(Box::new(k.clone()))));
        assert!(needs_message(&K::Or(Box::new(K::Seen), Box::new(k.clone()))));
        assert!(needs_message(&K::And(vec![K::All, k])));
    }
    for k in [K::All, K::Seen, K::On(date(2024, 1, 1)), K::Larger(1), K::Uid(set(&[(n(1), n(1))])), K::ModSeq(1), K::Keyword("a".into())] {
        assert!(!needs_message(&k), "{k:?}");
    }
    assert!(!needs_message(&K::And(vec![K::Seen, K::Not(Box::new(K::Old))])));
    // Without the message, content keys match nothing; SENT* use the internal date.
    let m = meta(&[]);
    assert!(!matches(&K::Subject(Vec::new()), &m, None, &BOUNDS));
    assert!(!matches(&K::Body(Vec::new()), &m, None, &BOUNDS));
    assert!(matches(&K::SentOn(date(2025, 1, 1)), &m, None, &BOUNDS));
}

#[test]
fn charsets() {
    assert_eq!(check_charset(None), Ok(()));
    assert_eq!(check_charset(Some("UTF-8")), Ok(()));
    assert_eq!(check_charset(Some("utf-8")), Ok(()));
    assert_eq!(check_charset(Some("US-ASCII")), Ok(()));
    assert_eq!(check_charset(Some("us-Ascii")), Ok(()));
    assert_eq!(check_charset(Some("ISO-8859-1")), Err(()));
    assert_eq!(check_charset(Some("UTF8")), Err(()));
    assert_eq!(check_charset(Some("")), Err(()));
}

#[test]
fn unstructured_message_is_still_searched() {
    // Shown without structure (see message::parse_plan): the header is
    // still read, and BODY searches the raw body.
    let mut raw = crlf(&["Subject: big one", "Content-Type: message/rfc822", "Content-Transfer-Encoding: base64", ""]);
    raw.extend_from_slice(&vec![b'A'; 300_000]);
    raw.extend_from_slice(b"\r\nQUJD\r\n");
    let m = meta(&[]);
    assert!(check(&raw, &K::Subject(s("BIG")), &m));
    assert!(check(&raw, &K::Body(s("aaaa\r\nqujd")), &m));
    assert!(check(&raw, &K::Text(s("big one")), &m));
}

#[test]
fn text_is_capped() {
    // Past MAX_SEARCH_TEXT the body is not searched.
    let mut raw = crlf(&["Subject: long", ""]);
    raw.extend_from_slice(&vec![b'a'; MAX_SEARCH_TEXT + 10]);
    raw.extend_from_slice(b"needle\r\n");
    let m = meta(&[]);
    assert!(check(&raw, &K::Body(s("aaa")), &m));
    assert!(!check(&raw, &K::Body(s("needle")), &m));
}

#[test]
fn utc_dates() {
    assert_eq!(utc_date(0), date(1970, 1, 1));
    assert_eq!(utc_date(-1), date(1969, 12, 31));
    assert_eq!(utc_date(951_782_400), date(2000, 2, 29));
    assert_eq!(utc_date(INTERNAL), date(2025, 1, 1));
    assert_eq!(utc_date(1_735_689_599), date(2024, 12, 31));
    assert_eq!(utc_date(4_102_444_800), date(2100, 1, 1));
    assert_eq!(utc_date(i64::MIN), date(0, 1, 1));
    assert_eq!(utc_date(i64::MAX), date(u16::MAX, 12, 31));
}
