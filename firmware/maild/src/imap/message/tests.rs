//! Unit tests of message.rs: every expected string is written out from
//! RFC 3501 7.4.2 and 6.4.5, byte for byte.

use super::*;

/// Joins lines with CRLF (each line gets one).
fn crlf(lines: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for l in lines {
        out.extend_from_slice(l.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn bodystructure(raw: &[u8]) -> String {
    let mut out = Vec::new();
    parse(raw).body_structure(&mut out, true);
    String::from_utf8(out).unwrap()
}

fn body(raw: &[u8]) -> String {
    let mut out = Vec::new();
    parse(raw).body_structure(&mut out, false);
    String::from_utf8(out).unwrap()
}

fn envelope(raw: &[u8]) -> String {
    let mut out = Vec::new();
    parse(raw).envelope(&mut out);
    String::from_utf8(out).unwrap()
}

fn sec(part: &[u32], text: SectionText) -> Section {
    Section { part: part.to_vec(), text }
}

fn section(raw: &[u8], part: &[u32], text: SectionText) -> Option<Vec<u8>> {
    parse(raw).section(&sec(part, text)).map(|c| c.into_owned())
}

/// The RFC 3501 6.3.11 example message.
fn simple() -> Vec<u8> {
    crlf(&[
        "Date: Mon, 7 Feb 1994 21:52:25 -0800 (PST)",
        "From: Fred Foobar <foobar@Blurdybloop.example>",
        "Subject: afternoon meeting",
        "To: mooch@owatagu.example",
        "Message-Id: <B27397-0100000@Blurdybloop.example>",
        "MIME-Version: 1.0",
        "Content-Type: TEXT/PLAIN; CHARSET=US-ASCII",
        "",
        "Hello Joe, do you think we can meet at 3:30 tomorrow?",
    ])
}

const SIMPLE_BODY: &[u8] = b"Hello Joe, do you think we can meet at 3:30 tomorrow?\r\n";

fn alternative() -> Vec<u8> {
    crlf(&[
        "From: a@example.com",
        "To: b@example.com",
        "Subject: alt",
        "MIME-Version: 1.0",
        "Content-Type: multipart/alternative; boundary=\"XX\"",
        "",
        "preamble",
        "--XX",
        "Content-Type: text/plain; charset=utf-8",
        "",
        "plain body",
        "--XX",
        "Content-Type: text/html; charset=utf-8",
        "Content-Transfer-Encoding: quoted-printable",
        "",
        "<p>html =3D body</p>",
        "--XX--",
        "epilogue",
    ])
}

/// multipart/mixed: 1 multipart/alternative (1.1 text, 1.2 html), 2 a
/// base64 attachment, 3 a message/rfc822 with a quoted-printable body.
fn mixed() -> Vec<u8> {
    crlf(&[
        "From: Sender <s@example.com>",
        "To: r@example.com",
        "Cc: Group: c1@example.com, Carl <c2@example.com>;",
        "Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=",
        "Date: Tue, 2 Jan 2024 10:00:00 +0100",
        "Message-ID: <mixed@example.com>",
        "In-Reply-To: <parent@example.com>",
        "MIME-Version: 1.0",
        "Content-Type: multipart/mixed; boundary=\"outer\"",
        "",
        "--outer",
        "Content-Type: multipart/alternative; boundary=\"inner\"",
        "",
        "--inner",
        "Content-Type: text/plain",
        "",
        "Hi there",
        "--inner",
        "Content-Type: text/html",
        "",
        "<b>Hi</b> there",
        "--inner--",
        "--outer",
        "Content-Type: application/octet-stream; name=\"a.bin\"",
        "Content-Transfer-Encoding: base64",
        "Content-Disposition: attachment; filename=\"a.bin\"",
        "Content-ID: <att@example.com>",
        "Content-Description: some bytes",
        "",
        "AAECAwQFBgc=",
        "--outer",
        "Content-Type: message/rfc822",
        "",
        "From: Inner <inner@example.com>",
        "Subject: inner subject",
        "Content-Type: text/plain; charset=us-ascii",
        "Content-Transfer-Encoding: quoted-printable",
        "",
        "caf=C3=A9 soft=",
        "break",
        "--outer--",
    ])
}

const INNER_MESSAGE: &[u8] = b"From: Inner <inner@example.com>\r\nSubject: inner subject\r\n\
Content-Type: text/plain; charset=us-ascii\r\nContent-Transfer-Encoding: quoted-printable\r\n\
\r\ncaf=C3=A9 soft=\r\nbreak";

#[test]
fn simple_bodystructure_and_body() {
    let raw = simple();
    assert_eq!(SIMPLE_BODY.len(), 55);
    assert_eq!(bodystructure(&raw), r#"("text" "plain" ("charset" "US-ASCII") NIL NIL "7bit" 55 1 NIL NIL NIL NIL)"#);
    assert_eq!(body(&raw), r#"("text" "plain" ("charset" "US-ASCII") NIL NIL "7bit" 55 1)"#);
}

#[test]
fn simple_envelope() {
    // RFC 3501 7.4.2: Sender and Reply-To absent, so both are From.
    let fred = r#"(("Fred Foobar" NIL "foobar" "Blurdybloop.example"))"#;
    assert_eq!(
        envelope(&simple()),
        format!(
            r#"("Mon, 7 Feb 1994 21:52:25 -0800 (PST)" "afternoon meeting" {fred} {fred} {fred} ((NIL NIL "mooch" "owatagu.example")) NIL NIL NIL "<B27397-0100000@Blurdybloop.example>")"#
        )
    );
}

#[test]
fn simple_sections() {
    let raw = simple();
    let p = parse(&raw);
    let header_len = raw.len() - SIMPLE_BODY.len();
    assert_eq!(p.header(), &raw[..header_len]);
    assert_eq!(p.text(), SIMPLE_BODY);
    assert_eq!(section(&raw, &[], SectionText::Full).unwrap(), raw);
    assert_eq!(section(&raw, &[], SectionText::Header).unwrap(), &raw[..header_len]);
    assert_eq!(section(&raw, &[], SectionText::Text).unwrap(), SIMPLE_BODY);
    // RFC 3501 6.4.5: part 1 of a non-multipart message is its body, and
    // its MIME header is the message header.
    assert_eq!(section(&raw, &[1], SectionText::Full).unwrap(), SIMPLE_BODY);
    assert_eq!(section(&raw, &[1], SectionText::Mime).unwrap(), &raw[..header_len]);
    assert_eq!(section(&raw, &[2], SectionText::Full), None);
    assert_eq!(section(&raw, &[0], SectionText::Full), None);
    assert_eq!(section(&raw, &[1, 1], SectionText::Full), None);
    assert_eq!(section(&raw, &[], SectionText::Mime), None);
    // HEADER of a part that is not message/rfc822 does not exist.
    assert_eq!(section(&raw, &[1], SectionText::Header), None);
}

#[test]
fn alternative_bodystructure() {
    let raw = alternative();
    assert_eq!(
        bodystructure(&raw),
        concat!(
            r#"(("text" "plain" ("charset" "utf-8") NIL NIL "7bit" 10 1 NIL NIL NIL NIL)"#,
            r#"("text" "html" ("charset" "utf-8") NIL NIL "quoted-printable" 20 1 NIL NIL NIL NIL)"#,
            r#" "alternative" ("boundary" "XX") NIL NIL NIL)"#
        )
    );
    assert_eq!(
        body(&raw),
        concat!(
            r#"(("text" "plain" ("charset" "utf-8") NIL NIL "7bit" 10 1)"#,
            r#"("text" "html" ("charset" "utf-8") NIL NIL "quoted-printable" 20 1) "alternative")"#
        )
    );
}

#[test]
fn alternative_envelope_and_sections() {
    let raw = alternative();
    let a = r#"((NIL NIL "a" "example.com"))"#;
    assert_eq!(envelope(&raw), format!(r#"(NIL "alt" {a} {a} {a} ((NIL NIL "b" "example.com")) NIL NIL NIL NIL)"#));
    assert_eq!(section(&raw, &[1], SectionText::Full).unwrap(), b"plain body");
    assert_eq!(section(&raw, &[2], SectionText::Full).unwrap(), b"<p>html =3D body</p>");
    assert_eq!(
        section(&raw, &[2], SectionText::Mime).unwrap(),
        b"Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
    );
    // TEXT of a multipart: preamble, parts and epilogue as stored.
    let text = section(&raw, &[], SectionText::Text).unwrap();
    assert!(text.starts_with(b"preamble\r\n--XX\r\n"));
    assert!(text.ends_with(b"--XX--\r\nepilogue\r\n"));
    assert_eq!(section(&raw, &[3], SectionText::Full), None);
    assert_eq!(parse(&raw).binary(&[2]).unwrap().as_ref(), b"<p>html = body</p>");
}

#[test]
fn mixed_bodystructure() {
    let raw = mixed();
    assert_eq!(INNER_MESSAGE.len(), 170);
    let inner_env = r#"(NIL "inner subject" (("Inner" NIL "inner" "example.com")) (("Inner" NIL "inner" "example.com")) (("Inner" NIL "inner" "example.com")) NIL NIL NIL NIL NIL)"#;
    let expected = [
        r#"((("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 8 1 NIL NIL NIL NIL)"#,
        r#"("text" "html" ("charset" "us-ascii") NIL NIL "7bit" 15 1 NIL NIL NIL NIL)"#,
        r#" "alternative" ("boundary" "inner") NIL NIL NIL)"#,
        r#"("application" "octet-stream" ("name" "a.bin") "<att@example.com>" "some bytes" "base64" 12 NIL ("attachment" ("filename" "a.bin")) NIL NIL)"#,
        r#"("message" "rfc822" NIL NIL NIL "7bit" 170 "#,
        inner_env,
        r#" ("text" "plain" ("charset" "us-ascii") NIL NIL "quoted-printable" 22 2 NIL NIL NIL NIL) 7 NIL NIL NIL NIL)"#,
        r#" "mixed" ("boundary" "outer") NIL NIL NIL)"#,
    ]
    .concat();
    assert_eq!(bodystructure(&raw), expected);
    let expected_body = [
        r#"((("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 8 1)"#,
        r#"("text" "html" ("charset" "us-ascii") NIL NIL "7bit" 15 1) "alternative")"#,
        r#"("application" "octet-stream" ("name" "a.bin") "<att@example.com>" "some bytes" "base64" 12)"#,
        r#"("message" "rfc822" NIL NIL NIL "7bit" 170 "#,
        inner_env,
        r#" ("text" "plain" ("charset" "us-ascii") NIL NIL "quoted-printable" 22 2) 7) "mixed")"#,
    ]
    .concat();
    assert_eq!(body(&raw), expected_body);
}

#[test]
fn mixed_envelope() {
    let s = r#"(("Sender" NIL "s" "example.com"))"#;
    assert_eq!(
        envelope(&mixed()),
        [
            r#"("Tue, 2 Jan 2024 10:00:00 +0100" "=?utf-8?q?Gr=C3=BC=C3=9Fe?=" "#,
            s,
            " ",
            s,
            " ",
            s,
            r#" ((NIL NIL "r" "example.com"))"#,
            // RFC 3501 7.4.2: a group is (NIL NIL name NIL) ... (NIL NIL NIL NIL).
            r#" ((NIL NIL "Group" NIL)(NIL NIL "c1" "example.com")("Carl" NIL "c2" "example.com")(NIL NIL NIL NIL))"#,
            r#" NIL "<parent@example.com>" "<mixed@example.com>")"#,
        ]
        .concat()
    );
}

#[test]
fn mixed_sections() {
    let raw = mixed();
    let full = |part: &[u32]| section(&raw, part, SectionText::Full).unwrap();
    assert_eq!(
        full(&[1]),
        b"--inner\r\nContent-Type: text/plain\r\n\r\nHi there\r\n--inner\r\nContent-Type: text/html\r\n\r\n<b>Hi</b> there\r\n--inner--"
    );
    assert_eq!(full(&[1, 1]), b"Hi there");
    assert_eq!(full(&[1, 2]), b"<b>Hi</b> there");
    assert_eq!(full(&[2]), b"AAECAwQFBgc=");
    assert_eq!(
        section(&raw, &[2], SectionText::Mime).unwrap(),
        crlf(&[
            "Content-Type: application/octet-stream; name=\"a.bin\"",
            "Content-Transfer-Encoding: base64",
            "Content-Disposition: attachment; filename=\"a.bin\"",
            "Content-ID: <att@example.com>",
            "Content-Description: some bytes",
            "",
        ])
    );
    assert_eq!(section(&raw, &[1, 2], SectionText::Mime).unwrap(), b"Content-Type: text/html\r\n\r\n");
    // A message/rfc822 part: its body is the embedded message; HEADER and
    // TEXT are the embedded message's (RFC 3501 6.4.5).
    assert_eq!(full(&[3]), INNER_MESSAGE);
    assert_eq!(section(&raw, &[3], SectionText::Mime).unwrap(), b"Content-Type: message/rfc822\r\n\r\n");
    let inner_header_len = INNER_MESSAGE.len() - b"caf=C3=A9 soft=\r\nbreak".len();
    assert_eq!(section(&raw, &[3], SectionText::Header).unwrap(), &INNER_MESSAGE[..inner_header_len]);
    assert_eq!(section(&raw, &[3], SectionText::Text).unwrap(), b"caf=C3=A9 soft=\r\nbreak");
    assert_eq!(full(&[3, 1]), b"caf=C3=A9 soft=\r\nbreak");
    assert_eq!(
        section(&raw, &[3], SectionText::HeaderFields(vec!["subject".into()])).unwrap(),
        b"Subject: inner subject\r\n\r\n"
    );
    // Parts that do not exist.
    let missing: [&[u32]; 6] = [&[4], &[1, 3], &[2, 1], &[3, 2], &[1, 1, 1], &[0]];
    for part in missing {
        assert_eq!(section(&raw, part, SectionText::Full), None, "{part:?}");
    }
    assert_eq!(section(&raw, &[2], SectionText::Header), None);
    assert_eq!(section(&raw, &[1], SectionText::Text), None);
    // The top level.
    assert_eq!(section(&raw, &[], SectionText::Full).unwrap(), raw);
    let text = section(&raw, &[], SectionText::Text).unwrap();
    let header = section(&raw, &[], SectionText::Header).unwrap();
    assert_eq!([header.as_slice(), text.as_slice()].concat(), raw);
    assert!(header.ends_with(b"boundary=\"outer\"\r\n\r\n"));
}

#[test]
fn header_fields() {
    let raw = mixed();
    assert_eq!(
        section(&raw, &[], SectionText::HeaderFields(vec!["Subject".into(), "From".into()])).unwrap(),
        b"From: Sender <s@example.com>\r\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n\r\n"
    );
    assert_eq!(
        section(&raw, &[], SectionText::HeaderFields(vec!["X-None".into()])).unwrap(),
        b"\r\n"
    );
    let not = section(
        &raw,
        &[],
        SectionText::HeaderFieldsNot(vec![
            "from".into(),
            "TO".into(),
            "cc".into(),
            "subject".into(),
            "date".into(),
            "message-id".into(),
            "in-reply-to".into(),
        ]),
    )
    .unwrap();
    assert_eq!(not, b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"outer\"\r\n\r\n");
    // Folded fields keep their continuation lines; names match in any case.
    let folded = crlf(&["Subject: one", "\ttwo", "X-A: 1", "x-a: 2", "", "body"]);
    assert_eq!(
        section(&folded, &[], SectionText::HeaderFields(vec!["SUBJECT".into(), "X-a".into()])).unwrap(),
        b"Subject: one\r\n\ttwo\r\nX-A: 1\r\nx-a: 2\r\n\r\n"
    );
    assert_eq!(section(&folded, &[], SectionText::HeaderFieldsNot(vec!["x-a".into()])).unwrap(), b"Subject: one\r\n\ttwo\r\n\r\n");
}

#[test]
fn partial_fetches() {
    let raw = simple();
    let full = parse(&raw);
    let all = full.section(&sec(&[], SectionText::Full)).unwrap();
    let p = |origin, length| Some(Partial { origin, length });
    assert_eq!(apply_partial(&all, None), raw.as_slice());
    assert_eq!(apply_partial(&all, p(0, 4)), b"Date");
    assert_eq!(apply_partial(&all, p(6, 3)), b"Mon");
    let len = raw.len() as u32;
    assert_eq!(apply_partial(&all, p(len - 3, 100)), b"?\r\n");
    // RFC 3501 6.4.5: an origin past the end gives an empty string.
    assert_eq!(apply_partial(&all, p(len, 10)), b"");
    assert_eq!(apply_partial(&all, p(len + 10, 10)), b"");
    assert_eq!(apply_partial(&all, p(0, 0)), b"");
    assert_eq!(apply_partial(&all, p(u32::MAX, u32::MAX)), b"");
    assert_eq!(apply_partial(&all, p(5, u32::MAX)), &raw[5..]);
    // On a section: the octets of the section, not of the message.
    let text = full.section(&sec(&[1], SectionText::Full)).unwrap();
    assert_eq!(apply_partial(&text, p(6, 3)), b"Joe");
    let mixed = mixed();
    let m = parse(&mixed);
    let two = m.section(&sec(&[1, 2], SectionText::Full)).unwrap();
    assert_eq!(apply_partial(&two, p(3, 2)), b"Hi");
}

#[test]
fn binary_base64_and_qp() {
    let raw = mixed();
    let p = parse(&raw);
    assert_eq!(p.binary(&[2]).unwrap().as_ref(), &[0u8, 1, 2, 3, 4, 5, 6, 7]);
    // RFC 2045 6.7: =XX octets and a soft line break.
    assert_eq!(p.binary(&[3, 1]).unwrap().as_ref(), "café softbreak".as_bytes());
    assert_eq!(p.binary(&[1, 1]).unwrap().as_ref(), b"Hi there");
    // A multipart or message part is returned as stored.
    assert_eq!(p.binary(&[3]).unwrap().as_ref(), INNER_MESSAGE);
    assert_eq!(p.binary(&[]).unwrap().as_ref(), raw.as_slice());
    assert_eq!(p.binary(&[9]), Err(BinaryError::NoSuchPart));
    // A top-level base64 body, with line breaks and no padding issues.
    let b64 = crlf(&["Content-Type: application/pdf", "Content-Transfer-Encoding: BASE64 ", "", "aGVsbG8g", "d29ybGQ="]);
    assert_eq!(parse(&b64).binary(&[1]).unwrap().as_ref(), b"hello world");
    let qp = crlf(&["Content-Transfer-Encoding: Quoted-Printable", "", "a=3Db =", "c=\t", "d=ZZ=4"]);
    assert_eq!(parse(&qp).binary(&[1]).unwrap().as_ref(), b"a=b cd=ZZ=4\r\n");
}

#[test]
fn binary_unknown_cte() {
    let raw = crlf(&[
        "Content-Type: multipart/mixed; boundary=b",
        "",
        "--b",
        "Content-Type: application/octet-stream",
        "Content-Transfer-Encoding: x-uuencode",
        "",
        "begin 644 a",
        "--b",
        "Content-Transfer-Encoding: 8bit",
        "",
        "caf\u{e9}",
        "--b--",
    ]);
    let p = parse(&raw);
    // RFC 3516 4.3: NO [UNKNOWN-CTE].
    assert_eq!(p.binary(&[1]), Err(BinaryError::UnknownCte));
    assert_eq!(p.binary(&[2]).unwrap().as_ref(), "caf\u{e9}".as_bytes());
    assert_eq!(section(&raw, &[1], SectionText::Full).unwrap(), b"begin 644 a");
    // BODYSTRUCTURE shows the encoding as written.
    assert_eq!(
        bodystructure(&raw),
        concat!(
            r#"(("application" "octet-stream" NIL NIL NIL "x-uuencode" 11 NIL NIL NIL NIL)"#,
            r#"("text" "plain" ("charset" "us-ascii") NIL NIL "8bit" 5 1 NIL NIL NIL NIL)"#,
            r#" "mixed" ("boundary" "b") NIL NIL NIL)"#
        )
    );
}

#[test]
fn no_header_body_separator() {
    let raw = b"Subject: no body\r\nFrom: a@example.com\r\n".to_vec();
    let p = parse(&raw);
    assert_eq!(p.header(), raw.as_slice());
    assert_eq!(p.text(), b"");
    assert_eq!(section(&raw, &[1], SectionText::Full).unwrap(), b"");
    assert_eq!(bodystructure(&raw), r#"("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0 NIL NIL NIL NIL)"#);
    let a = r#"((NIL NIL "a" "example.com"))"#;
    assert_eq!(envelope(&raw), format!(r#"(NIL "no body" {a} {a} {a} NIL NIL NIL NIL NIL)"#));
    assert_eq!(
        section(&raw, &[], SectionText::HeaderFields(vec!["subject".into()])).unwrap(),
        b"Subject: no body\r\n\r\n"
    );
    // No line end at all.
    let raw = b"Subject: x".to_vec();
    let p = parse(&raw);
    assert_eq!(p.header(), b"Subject: x");
    assert_eq!(p.text(), b"");
    assert_eq!(section(&raw, &[], SectionText::HeaderFields(vec!["subject".into()])).unwrap(), b"Subject: x\r\n\r\n");
}

#[test]
fn not_a_message() {
    // Nothing the parser sees as a header: all header, nothing else.
    let raws: [&[u8]; 3] = [b"", b"no colon here", b"\x00\xff\xfe"];
    for raw in raws {
        let p = parse(raw);
        assert_eq!(p.header(), raw);
        assert_eq!(p.text(), b"");
        assert_eq!(bodystructure(raw), r#"("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0 NIL NIL NIL NIL)"#);
        assert_eq!(envelope(raw), "(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)");
        assert_eq!(p.binary(&[1]).unwrap().as_ref(), b"");
        assert_eq!(p.binary(&[2]), Err(BinaryError::NoSuchPart));
    }
    // An empty line first: no header, the rest is the body.
    let raw = b"\r\nbody text\r\n";
    let p = parse(raw);
    assert_eq!(p.header(), b"\r\n");
    assert_eq!(p.text(), b"body text\r\n");
}

#[test]
fn envelope_details() {
    let raw = crlf(&[
        "From: =?utf-8?b?SsO2cmc=?= <joerg@example.com>",
        "Sender: ",
        "Reply-To: \"Q \\\"x\\\"\" <q@example.com>",
        "To: undisclosed-recipients:;",
        "Bcc: nohost",
        "Subject: folded",
        " subject",
        "",
        "x",
    ]);
    assert_eq!(
        envelope(&raw),
        concat!(
            r#"(NIL "folded subject" (("=?utf-8?b?SsO2cmc=?=" NIL "joerg" "example.com"))"#,
            // RFC 3501 7.4.2: an empty Sender is From.
            r#" (("=?utf-8?b?SsO2cmc=?=" NIL "joerg" "example.com"))"#,
            r#" (("Q \"x\"" NIL "q" "example.com"))"#,
            r#" ((NIL NIL "undisclosed-recipients" NIL)(NIL NIL NIL NIL)) NIL"#,
            r#" ((NIL NIL "nohost" "")) NIL NIL)"#
        )
    );
    // A raw UTF-8 name is sent as a literal, as it is.
    let raw = crlf(&["From: J\u{f6}rg <j@example.com>", "", ""]);
    let env = envelope(&raw);
    assert!(env.starts_with("(NIL NIL (({5}\r\nJ\u{f6}rg NIL \"j\" \"example.com\"))"), "{env}");
}

#[test]
fn no_content_type_and_digest() {
    // RFC 2046 5.1.5: in multipart/digest a part without Content-Type is message/rfc822.
    let raw = crlf(&[
        "Content-Type: multipart/digest; boundary=d",
        "",
        "--d",
        "",
        "Subject: one",
        "",
        "first",
        "--d--",
    ]);
    let bs = bodystructure(&raw);
    assert_eq!(
        bs,
        concat!(
            r#"(("message" "rfc822" NIL NIL NIL "7bit" 21 (NIL "one" NIL NIL NIL NIL NIL NIL NIL NIL)"#,
            r#" ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 5 1 NIL NIL NIL NIL) 3 NIL NIL NIL NIL)"#,
            r#" "digest" ("boundary" "d") NIL NIL NIL)"#
        )
    );
    assert_eq!(section(&raw, &[1, 1], SectionText::Full).unwrap(), b"first");
    assert_eq!(section(&raw, &[1], SectionText::Header).unwrap(), b"Subject: one\r\n\r\n");
}

#[test]
fn top_level_message_rfc822() {
    let raw = crlf(&["Content-Type: message/rfc822", "", "Subject: in", "", "inner body"]);
    assert_eq!(section(&raw, &[1], SectionText::Full).unwrap(), b"Subject: in\r\n\r\ninner body\r\n");
    assert_eq!(section(&raw, &[1], SectionText::Header).unwrap(), b"Subject: in\r\n\r\n");
    assert_eq!(section(&raw, &[1], SectionText::Text).unwrap(), b"inner body\r\n");
    assert_eq!(section(&raw, &[1, 1], SectionText::Full).unwrap(), b"inner body\r\n");
    assert_eq!(
        bodystructure(&raw),
        concat!(
            r#"("message" "rfc822" NIL NIL NIL "7bit" 27 (NIL "in" NIL NIL NIL NIL NIL NIL NIL NIL)"#,
            r#" ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 12 1 NIL NIL NIL NIL) 3 NIL NIL NIL NIL)"#
        )
    );
}

#[test]
fn extension_fields() {
    let raw = crlf(&[
        "Content-Type: text/plain; charset=iso-8859-1; format=flowed",
        "Content-Disposition: inline",
        "Content-Language: en, de",
        "Content-Location: http://example.com/a",
        "",
        "x",
    ]);
    assert_eq!(
        bodystructure(&raw),
        r#"("text" "plain" ("charset" "iso-8859-1" "format" "flowed") NIL NIL "7bit" 3 1 NIL ("inline" NIL) ("en" "de") "http://example.com/a")"#
    );
    let raw = crlf(&["Content-Type: text/plain; format=flowed", "Content-Language: fr", "", "x"]);
    assert_eq!(
        bodystructure(&raw),
        r#"("text" "plain" ("format" "flowed" "charset" "us-ascii") NIL NIL "7bit" 3 1 NIL NIL "fr" NIL)"#
    );
}

#[test]
fn body_texts_decoded() {
    let raw = mixed();
    let p = parse(&raw);
    let texts: Vec<String> = p.body_texts().into_iter().map(|c| c.into_owned()).collect();
    // The inner part is labeled us-ascii but its octets are UTF-8.
    assert_eq!(texts, ["Hi there", "<b>Hi</b> there", "café softbreak"]);
    // A declared charset is honored.
    let mut raw = crlf(&["Content-Type: text/plain; charset=iso-8859-1", ""]);
    raw.extend_from_slice(b"caf\xe9\r\n");
    assert_eq!(parse(&raw).body_texts(), ["caf\u{e9}\r\n"]);
    let raw = crlf(&["Content-Type: text/plain; charset=us-ascii", "Content-Transfer-Encoding: base64", "", "Y2Fmw6k="]);
    assert_eq!(parse(&raw).body_texts(), ["caf\u{e9}"]);
}

/// `n` multiparts, each the only part of the one around it, then a text.
fn nested_multiparts(n: usize) -> Vec<u8> {
    let mut raw = Vec::new();
    for i in 0..n {
        raw.extend_from_slice(format!("Content-Type: multipart/mixed; boundary=\"bnd{i}end\"\r\n\r\n--bnd{i}end\r\n").as_bytes());
    }
    raw.extend_from_slice(b"Content-Type: text/plain\r\n\r\nleaf\r\n");
    for i in (0..n).rev() {
        raw.extend_from_slice(format!("--bnd{i}end--\r\n").as_bytes());
    }
    raw
}

#[test]
fn deep_multipart_nesting_is_bounded() {
    let raw = nested_multiparts(200);
    let p = parse(&raw);
    let mut out = Vec::new();
    p.body_structure(&mut out, true);
    // Followed to MAX_DEPTH, then an opaque leaf.
    let depth = out.iter().take_while(|&&b| b == b'(').count();
    assert!(depth <= MAX_DEPTH + 2, "{depth}");
    let opens = out.iter().filter(|&&b| b == b'(').count();
    let closes = out.iter().filter(|&&b| b == b')').count();
    assert_eq!(opens, closes);
    assert!(out.windows(b"\"application\" \"octet-stream\"".len()).any(|w| w == b"\"application\" \"octet-stream\""));
    out.clear();
    p.body_structure(&mut out, false);
    p.envelope(&mut out);
    // A path deeper than MAX_DEPTH is no part; a shallow one is.
    assert!(p.section(&sec(&vec![1; 200], SectionText::Full)).is_none());
    assert!(p.binary(&vec![1; 200]).is_err());
    assert!(p.section(&sec(&[1, 1, 1], SectionText::Mime)).unwrap().starts_with(b"Content-Type: multipart/mixed"));
    let _ = p.body_texts();
}

#[test]
fn deep_message_nesting_does_not_overflow() {
    // 100 000 message/rfc822 levels (3.4 MB): parsing, every accessor and
    // dropping run in a thread with a small stack.
    let mut raw = Vec::new();
    for _ in 0..100_000 {
        raw.extend_from_slice(b"Content-Type: message/rfc822\r\n\r\n");
    }
    raw.extend_from_slice(b"Subject: deep\r\n\r\nbody\r\n");
    let t = std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(move || {
            let p = parse(&raw);
            let mut out = Vec::new();
            p.body_structure(&mut out, true);
            assert_eq!(out.iter().filter(|&&b| b == b'(').count(), out.iter().filter(|&&b| b == b')').count());
            out.clear();
            p.envelope(&mut out);
            let _ = p.body_texts();
            assert!(p.section(&sec(&vec![1; 1000], SectionText::Full)).is_none());
            assert!(p.section(&sec(&[1, 1], SectionText::Header)).is_some());
            let _ = p.binary(&[1, 1, 1]);
            drop(p);
        })
        .unwrap();
    t.join().unwrap();
    // 200 nested multiparts inside message/rfc822 parts, alternating.
    let mut raw = Vec::new();
    for i in 0..200 {
        raw.extend_from_slice(format!("Content-Type: multipart/mixed; boundary=\"m{i}x\"\r\n\r\n--m{i}x\r\nContent-Type: message/rfc822\r\n\r\n").as_bytes());
    }
    raw.extend_from_slice(b"Subject: leaf\r\n\r\nleaf\r\n");
    for i in (0..200).rev() {
        raw.extend_from_slice(format!("--m{i}x--\r\n").as_bytes());
    }
    let t = std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(move || {
            let p = parse(&raw);
            let mut out = Vec::new();
            p.body_structure(&mut out, true);
            let _ = p.body_texts();
        })
        .unwrap();
    t.join().unwrap();
}

#[test]
fn base64_decoder_is_lenient() {
    assert_eq!(decode_base64(b"aGVs\r\nbG8=\r\n"), b"hello");
    assert_eq!(decode_base64(b"aGVsbG8"), b"hello");
    assert_eq!(decode_base64(b"aG!!Vs*bG8"), b"hello");
    assert_eq!(decode_base64(b""), b"");
}

#[test]
fn string_quoting() {
    let mut out = Vec::new();
    push_string(&mut out, b"a\"b\\c");
    assert_eq!(out, b"\"a\\\"b\\\\c\"");
    out.clear();
    push_string(&mut out, b"line\r\nbreak");
    assert_eq!(out, b"{11}\r\nline\r\nbreak");
}

/// A message/rfc822 part in base64 whose decoded content nests `levels`
/// message/rfc822 parts.
fn encoded_deep(levels: usize) -> Vec<u8> {
    let mut inner = Vec::new();
    for _ in 0..levels {
        inner.extend_from_slice(b"Content-Type:message/rfc822\n\n");
    }
    inner.extend_from_slice(b"Subject: deep\r\n\r\nbody\r\n");
    let mut raw = b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n".to_vec();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&inner);
    for line in b64.as_bytes().chunks(76) {
        raw.extend_from_slice(line);
        raw.extend_from_slice(b"\r\n");
    }
    raw
}

#[test]
fn encoded_deep_nesting_does_not_overflow() {
    // mail-parser's copy of a decoded embedded message recurses per level
    // (about 1 KiB each): 2 000 levels overflow a small stack.
    let raw = encoded_deep(2_000);
    assert!(matches!(parse_plan(&raw), ParsePlan::Thread(_)));
    let t = std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(move || {
            let p = parse(&raw);
            let mut out = Vec::new();
            p.body_structure(&mut out, true);
            assert!(out.starts_with(b"(\"message\" \"rfc822\" NIL NIL NIL \"base64\" "), "{}", String::from_utf8_lossy(&out[..100]));
            assert_eq!(out.iter().filter(|&&b| b == b'(').count(), out.iter().filter(|&&b| b == b')').count());
            let _ = p.body_texts();
            assert!(p.section(&sec(&[1, 1], SectionText::Header)).is_some());
        })
        .unwrap();
    t.join().unwrap();
    // Too big to copy per level: no structure, but no crash either.
    let raw = encoded_deep(20_000);
    assert_eq!(parse_plan(&raw), ParsePlan::Unstructured);
    let p = parse(&raw);
    assert_eq!(p.header(), b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n");
    let mut out = Vec::new();
    p.body_structure(&mut out, false);
    assert!(out.starts_with(b"(\"text\" \"plain\""));
    // Its header is still read for ENVELOPE.
    let mut raw = crlf(&["Subject: big one", "From: a@example.com", "Content-Type: message/rfc822", "Content-Transfer-Encoding: base64", ""]);
    raw.extend_from_slice(&vec![b'A'; 300_000]);
    assert_eq!(parse_plan(&raw), ParsePlan::Unstructured);
    let a = r#"((NIL NIL "a" "example.com"))"#;
    assert_eq!(envelope(&raw), format!(r#"(NIL "big one" {a} {a} {a} NIL NIL NIL NIL NIL)"#));
    assert_eq!(section(&raw, &[], SectionText::HeaderFields(vec!["subject".into()])).unwrap(), b"Subject: big one\r\n\r\n");
}

#[test]
fn parse_plan_is_inline_for_ordinary_mail() {
    let mut big_attachment = mixed();
    // Ordinary structure, however large: a 7bit message/rfc822 and a base64 attachment.
    big_attachment.extend_from_slice(&vec![b'A'; 100_000]);
    assert_eq!(parse_plan(&big_attachment), ParsePlan::Inline);
    assert_eq!(parse_plan(&alternative()), ParsePlan::Inline);
    let rfc822_headers = crlf(&[
        "Content-Type: multipart/report; report-type=delivery-status; boundary=r",
        "",
        "--r",
        "Content-Type: text/rfc822-headers",
        "Content-Transfer-Encoding: base64",
        "",
        &"QUFB".repeat(10_000),
        "--r--",
    ]);
    assert_eq!(parse_plan(&rfc822_headers), ParsePlan::Inline);
    // A small encoded message part is parsed inline, a larger one on a thread.
    assert_eq!(parse_plan(&encoded_deep(1)), ParsePlan::Inline);
    assert!(matches!(parse_plan(&encoded_deep(1000)), ParsePlan::Thread(_)));
    assert_eq!(parse_plan(&encoded_deep(10_000)), ParsePlan::Unstructured);
}

#[test]
fn encoded_message_detection() {
    let pad = "A".repeat(64 * 27);
    let thread = |lines: &[&str]| {
        let mut lines = lines.to_vec();
        lines.push(&pad);
        matches!(parse_plan(&crlf(&lines)), ParsePlan::Thread(_))
    };
    assert!(thread(&["Content-Type: message/rfc822", "Content-Transfer-Encoding: base64", ""]));
    assert!(thread(&["Content-Type: MESSAGE/GLOBAL; x=y", "content-transfer-encoding: Quoted-Printable", ""]));
    // Comments, quotes and folding that mail-parser looks through.
    assert!(thread(&["Content-Type: message/(c)rfc822", "Content-Transfer-Encoding: base64", ""]));
    assert!(thread(&["Content-Type: message/ \"rfc822\"", "Content-Transfer-Encoding:", " base64", ""]));
    // An encoded word that decodes to base64; a name with spaces; a header
    // that starts in the middle of a boundary line.
    assert!(thread(&["Content-Type: message/rfc822", "Content-Transfer-Encoding: =?us-ascii?q?base64?=", ""]));
    assert!(thread(&["Content-Type: message/rfc822", "Content - Transfer-Encoding: base64", ""]));
    assert!(thread(&["--bContent-Type: message/rfc822", "--b:Content-Transfer-Encoding: base64", ""]));
    // A whitespace line starting with SP may be a folded value: same header.
    assert!(thread(&["Content-Type: message/rfc822", "X-Pad: a", " ", "Content-Transfer-Encoding: base64", ""]));
    // Inside a digest, a part needs no Content-Type to be a message.
    assert!(thread(&["Content-Type: multipart/digest; boundary=d", "", "--d", "Content-Transfer-Encoding: base64", ""]));
    // Not a message part, or not encoded.
    assert!(!thread(&["Content-Type: message/rfc822", "Content-Transfer-Encoding: 7BIT", ""]));
    assert!(!thread(&["Content-Type: message/rfc822", "", "Content-Transfer-Encoding: base64", ""]));
    assert!(!thread(&["Content-Type: application/x-global", "Content-Transfer-Encoding: base64", ""]));
    assert!(!thread(&["Content-Type: text/plain; name=global.txt", "Content-Transfer-Encoding: base64", ""]));
    assert!(!thread(&["Subject: weekly digest", "Content-Transfer-Encoding: base64", ""]));
}
