//! The Authentication-Results header field (RFC 8601).
//!
//! Everything in it that a peer chose (the HELO name, the MAIL FROM
//! address, a signature's d= and s=, the From domain) goes through
//! [`pvalue`] or [`comment`], which let no CR, LF or other control
//! character through and quote what is not a plain token: a peer must not
//! be able to end the field early and add header fields of its own.

/// RFC 5322 2.1.1: lines SHOULD be at most 78 characters; longer results
/// are folded at spaces.
const FOLD_AT: usize = 78;
/// Longest property value written; longer values are cut (RFC 5322 2.1.1
/// caps a line at 998 characters, and a result needs no more than this).
const MAX_PVALUE: usize = 255;
/// Longest comment written.
const MAX_COMMENT: usize = 200;
const FIELD_NAME: &str = "Authentication-Results";

/// One `resinfo` (RFC 8601 2.2): a method's result, an optional comment
/// saying why, and properties (`ptype.property=pvalue`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ResInfo {
    pub method: &'static str,
    pub result: &'static str,
    pub reason: Option<String>,
    pub props: Vec<(&'static str, String)>,
}

impl ResInfo {
    pub fn new(method: &'static str, result: &'static str) -> ResInfo {
        ResInfo { method, result, reason: None, props: Vec::new() }
    }

    pub fn reason(mut self, reason: impl Into<String>) -> ResInfo {
        self.reason = Some(reason.into());
        self
    }

    pub fn prop(mut self, name: &'static str, value: impl Into<String>) -> ResInfo {
        self.props.push((name, value.into()));
        self
    }
}

/// The whole header field, folded, ending in CRLF (RFC 8601 2.2):
/// `Authentication-Results: authserv-id; resinfo; resinfo`, one resinfo a
/// line. No results at all is written `; none`. `utf8`: the message came
/// with SMTPUTF8, so its header may carry UTF-8 (RFC 8616 3, RFC 6532).
pub(crate) fn header(authserv_id: &str, results: &[ResInfo], utf8: bool) -> String {
    let mut out = format!("{FIELD_NAME}: {}", pvalue(authserv_id, utf8));
    if results.is_empty() {
        out.push_str("; none\r\n");
        return out;
    }
    for r in results {
        out.push(';');
        let mut words = vec![format!("{}={}", r.method, r.result)];
        if let Some(reason) = &r.reason {
            words.push(comment(reason, utf8));
        }
        for (name, value) in &r.props {
            words.push(format!("{name}={}", pvalue(value, utf8)));
        }
        // RFC 5322 2.2.3: folding is CRLF followed by white space.
        let mut line = 1;
        out.push_str("\r\n\t");
        for (i, w) in words.iter().enumerate() {
            if i > 0 {
                if line + 1 + w.len() > FOLD_AT {
                    out.push_str("\r\n\t");
                    line = 1;
                } else {
                    out.push(' ');
                    line += 1;
                }
            }
            out.push_str(w);
            line += w.chars().count();
        }
    }
    out.push_str("\r\n");
    out
}

/// RFC 8601 2.2 `pvalue`: a token (RFC 2045 5.1), or an address whose
/// local part is a dot-atom (RFC 5322 3.2.3), written as is; anything else
/// as a quoted-string (RFC 5322 3.2.4) of printable ASCII, with every other
/// character replaced by '?'. With `utf8`, RFC 8616 3 extends pvalue to
/// UTF-8 (RFC 6532 3.2 adds UTF8-non-ascii to atext and qtext): an
/// internationalised address is written as it is, or quoted, and only
/// control characters and white space other than SP become '?'.
pub(crate) fn pvalue(value: &str, utf8: bool) -> String {
    let value = cut(value, MAX_PVALUE);
    if is_token(value) || is_plain_address(value, utf8) {
        return value.to_string();
    }
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ if utf8 && !c.is_control() && !c.is_whitespace() => out.push(c),
            _ => out.push('?'),
        }
    }
    out.push('"');
    out
}

/// RFC 5322 3.2.2 comment: `(` ctext or quoted-pair `)`; parentheses and
/// backslashes are escaped, anything not printable ASCII becomes '?'
/// (with `utf8`, RFC 6532 3.2 lets UTF-8 other than controls through).
pub(crate) fn comment(text: &str, utf8: bool) -> String {
    let text = cut(text, MAX_COMMENT);
    let mut out = String::with_capacity(text.len() + 2);
    out.push('(');
    for c in text.chars() {
        match c {
            '(' | ')' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ if utf8 && !c.is_control() && !c.is_whitespace() => out.push(c),
            _ => out.push('?'),
        }
    }
    out.push(')');
    out
}

fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// RFC 2045 5.1: token = 1*<any (US-ASCII) CHAR except SPACE, CTLs, or tspecials>.
fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| (0x21..=0x7e).contains(&b) && !b"()<>@,;:\\\"/[]?=".contains(&b))
}

/// `local-part "@" domain-name` with a dot-atom local part (RFC 5322
/// 3.2.3 atext) and an LDH domain: the common address, written unquoted.
/// With `utf8`, non-ASCII letters count as atext and as domain label
/// characters (RFC 6532 3.2 UTF8-non-ascii; U-labels, RFC 6531 3.3).
fn is_plain_address(s: &str, utf8: bool) -> bool {
    let Some((local, domain)) = s.rsplit_once('@') else {
        return false;
    };
    let wide = |c: char| utf8 && !c.is_ascii() && !c.is_control() && !c.is_whitespace();
    let atext = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || wide(c);
    let dot_atom = !local.is_empty() && local.split('.').all(|p| !p.is_empty() && p.chars().all(atext));
    let ldh = !domain.is_empty()
        && domain.split('.').all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || wide(c)));
    dot_atom && ldh
}

/// The byte ranges of the Authentication-Results fields in `message`'s
/// header section that claim to come from `authserv_id`, continuation
/// lines included. RFC 8601 5: a border MTA MUST remove (or rename) such
/// fields arriving from outside, or its own results could be forged.
pub fn forged_fields(message: &[u8], authserv_id: &str) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut pos = 0;
    // (start, end) of the field being read.
    let mut field: Option<(usize, usize)> = None;
    let close = |f: Option<(usize, usize)>, out: &mut Vec<std::ops::Range<usize>>| {
        if let Some((start, end)) = f {
            if claims(&message[start..end], authserv_id) {
                out.push(start..end);
            }
        }
    };
    while pos < message.len() {
        let end = message[pos..].iter().position(|&b| b == b'\n').map_or(message.len(), |i| pos + i + 1);
        let line = &message[pos..end];
        // RFC 5322 2.2: the header section ends at the first empty line.
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        if matches!(line.first(), Some(b' ' | b'\t')) {
            // RFC 5322 2.2.3: a folded continuation of the field above.
            if let Some(f) = field.as_mut() {
                f.1 = end;
            }
        } else {
            close(field.take(), &mut out);
            field = Some((pos, end));
        }
        pos = end;
    }
    close(field, &mut out);
    out
}

/// Whether one whole field is an Authentication-Results field whose
/// authserv-id (RFC 8601 2.2: the first token of the value, comments
/// aside) is `authserv_id`.
fn claims(field: &[u8], authserv_id: &str) -> bool {
    let text = String::from_utf8_lossy(field);
    let Some((name, value)) = text.split_once(':') else { return false };
    if !name.trim_end().eq_ignore_ascii_case(FIELD_NAME) {
        return false;
    }
    // RFC 5322 3.2.2: comments are parenthesised (and may nest).
    let mut plain = String::new();
    let mut depth = 0usize;
    for c in value.chars() {
        match c {
            '(' => depth += 1,
            ')' if depth > 0 => depth -= 1,
            _ if depth == 0 => plain.push(c),
            _ => {}
        }
    }
    let id = plain.split(';').next().unwrap_or("").split_whitespace().next().unwrap_or("");
    id.trim_matches('"').trim_end_matches('.').eq_ignore_ascii_case(authserv_id.trim_end_matches('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_result_a_line() {
        let h = header(
            "mx.example.test",
            &[
                ResInfo::new("spf", "pass").reason("domain of example.test designates 127.0.0.1 as permitted sender").prop("smtp.mailfrom", "alice@example.test"),
                ResInfo::new("dkim", "pass").prop("header.d", "example.test").prop("header.s", "s1").prop("header.b", "ab/cd+ef"),
                ResInfo::new("dmarc", "pass").reason("p=reject").prop("header.from", "example.test"),
            ],
            false,
        );
        assert_eq!(
            h,
            "Authentication-Results: mx.example.test;\r\n\
             \tspf=pass (domain of example.test designates 127.0.0.1 as permitted sender)\r\n\
             \tsmtp.mailfrom=alice@example.test;\r\n\
             \tdkim=pass header.d=example.test header.s=s1 header.b=\"ab/cd+ef\";\r\n\
             \tdmarc=pass (p=reject) header.from=example.test\r\n"
        );
        for line in h.split("\r\n") {
            assert!(line.len() <= FOLD_AT + 2, "{line:?}");
        }
    }

    #[test]
    fn no_results_is_none() {
        assert_eq!(header("mx.example.test", &[], false), "Authentication-Results: mx.example.test; none\r\n");
    }

    #[test]
    fn peers_cannot_inject_header_fields() {
        let evil = "x\r\nX-Injected: yes";
        let h = header(
            evil,
            &[ResInfo::new("spf", "none").reason(format!("helo {evil}) (")).prop("smtp.helo", evil).prop("smtp.mailfrom", "a\"b\\c@d\ne")],
            false,
        );
        // Only our own folds: every CRLF is followed by a tab.
        let body = h.strip_suffix("\r\n").unwrap();
        for (i, _) in body.match_indices("\r\n") {
            assert_eq!(body.as_bytes()[i + 2], b'\t', "{h:?}");
        }
        assert!(!body.contains('\n') || body.matches('\n').count() == body.matches("\r\n\t").count());
        assert!(h.contains("smtp.helo=\"x??X-Injected: yes\""), "{h}");
        assert!(h.contains("(helo x??X-Injected: yes\\) \\()"), "{h}");
        assert!(h.contains("smtp.mailfrom=\"a\\\"b\\\\c@d?e\""), "{h}");
    }

    #[test]
    fn pvalues() {
        assert_eq!(pvalue("example.test", false), "example.test");
        assert_eq!(pvalue("first.last+tag@example.test", false), "first.last+tag@example.test");
        assert_eq!(pvalue("\"odd local\"@example.test", false), "\"\\\"odd local\\\"@example.test\"");
        assert_eq!(pvalue("", false), "\"\"");
        assert_eq!(pvalue("2001:db8::1", false), "\"2001:db8::1\"");
        assert_eq!(pvalue("bücher.test", false), "\"b?cher.test\"");
        assert_eq!(pvalue(&"a".repeat(1000), false).len(), MAX_PVALUE);
    }

    #[test]
    fn utf8_pvalues_for_smtputf8_messages() {
        // RFC 8616 3: with SMTPUTF8, the address is written in UTF-8.
        assert_eq!(pvalue("jürgen@bücher.test", true), "jürgen@bücher.test");
        assert_eq!(pvalue("jürgen@bücher.test", false), "\"j?rgen@b?cher.test\"");
        assert_eq!(pvalue("\"jür gen\"@bücher.test", true), "\"\\\"jür gen\\\"@bücher.test\"");
        // Controls and line separators never get through, in any form.
        assert_eq!(pvalue("j\u{85}x@b\u{2028}.test", true), "\"j?x@b?.test\"");
        assert!(!pvalue("a\r\nb@c", true).contains('\n'));
        assert_eq!(comment("für (x)", true), "(für \\(x\\))");
        assert_eq!(comment("für", false), "(f?r)");
        let h = header("mx.example.test", &[ResInfo::new("spf", "pass").prop("smtp.mailfrom", "jürgen@bücher.test")], true);
        assert!(h.contains("smtp.mailfrom=jürgen@bücher.test"), "{h}");
    }

    #[test]
    fn forged_results_are_found() {
        let msg = b"Received: from x\r\nAuthentication-Results: mx.example.test; dkim=pass\r\n\theader.d=bank.test\r\nSubject: hi\r\nauthentication-results: (a comment) MX.Example.Test. 1; spf=pass\r\nAuthentication-Results: other.test; spf=fail\r\nAuthentication-Results-Extra: mx.example.test\r\n\r\nAuthentication-Results: mx.example.test; in the body\r\n";
        let r = forged_fields(msg, "mx.example.test");
        let got: Vec<&str> = r.iter().map(|r| std::str::from_utf8(&msg[r.clone()]).unwrap()).collect();
        assert_eq!(got, vec!["Authentication-Results: mx.example.test; dkim=pass\r\n\theader.d=bank.test\r\n", "authentication-results: (a comment) MX.Example.Test. 1; spf=pass\r\n"]);
        assert!(forged_fields(b"Subject: x\r\n\r\n", "mx.example.test").is_empty());
        assert!(forged_fields(b"Authentication-Results: mx.example.test.evil; x=y\r\n", "mx.example.test").is_empty());
    }
}
