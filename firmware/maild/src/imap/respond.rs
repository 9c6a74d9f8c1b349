//! Writing IMAP's strings, lists and dates (RFC 3501 9, 4.3).

use std::fmt::Write as _;

use store::imap::{Flags, View};

/// The longest string sent quoted; longer ones go as literals (RFC 3501
/// 4.3: either is a string).
const MAX_QUOTED: usize = 1024;

/// A number.
pub fn num(out: &mut Vec<u8>, n: u64) {
    let _ = write!(Buf(out), "{n}");
}

struct Buf<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Buf<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// A string (RFC 3501 4.3): quoted when it can be (no CR, LF or NUL, not
/// too long; RFC 3501 9 QUOTED-CHAR with `\` before `"` and `\`), a
/// literal otherwise.
pub fn string(out: &mut Vec<u8>, s: &[u8]) {
    // RFC 3501 9: QUOTED-CHAR is a 7-bit CHAR other than CR and LF.
    if s.len() <= MAX_QUOTED && s.iter().all(|&b| b != b'\r' && b != b'\n' && b != 0 && b < 0x80) {
        out.push(b'"');
        for &b in s {
            if b == b'"' || b == b'\\' {
                out.push(b'\\');
            }
            out.push(b);
        }
        out.push(b'"');
    } else {
        literal(out, s);
    }
}

/// A literal (RFC 3501 4.3): `{n}` CRLF and the bytes.
pub fn literal(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'{');
    num(out, s.len() as u64);
    out.extend_from_slice(b"}\r\n");
    out.extend_from_slice(s);
}

/// An nstring (RFC 3501 4.5: NIL when absent).
pub fn nstring(out: &mut Vec<u8>, s: Option<&[u8]>) {
    match s {
        Some(s) => string(out, s),
        None => out.extend_from_slice(b"NIL"),
    }
}

/// A message's flags as a parenthesized list (RFC 3501 2.3.2, 7.4.2 FLAGS).
pub fn flags(out: &mut Vec<u8>, f: Flags, view: &View, recent: bool) {
    out.push(b'(');
    let start = out.len();
    let sep = |out: &mut Vec<u8>| {
        if out.len() > start {
            out.push(b' ');
        }
    };
    for (bit, name) in [(Flags::SEEN, "\\Seen"), (Flags::ANSWERED, "\\Answered"), (Flags::FLAGGED, "\\Flagged"), (Flags::DELETED, "\\Deleted"), (Flags::DRAFT, "\\Draft"), (Flags::FORWARDED, "$Forwarded")] {
        if f.contains(bit) {
            sep(out);
            out.extend_from_slice(name.as_bytes());
        }
    }
    if recent {
        sep(out);
        out.extend_from_slice(b"\\Recent");
    }
    for k in view.keyword_names(f) {
        sep(out);
        out.extend_from_slice(k.as_bytes());
    }
    out.push(b')');
}

/// The flags a folder knows (RFC 3501 7.2.6 FLAGS): the system flags,
/// `$Forwarded` and the folder's keywords.
pub fn folder_flags(view: &View) -> String {
    let mut s = String::from("(\\Answered \\Flagged \\Deleted \\Seen \\Draft $Forwarded");
    for k in &view.keywords {
        s.push(' ');
        s.push_str(k);
    }
    s.push(')');
    s
}

/// RFC 3501 9 date-time: `"dd-Mon-yyyy hh:mm:ss +0000"` (the day
/// space-padded), in UTC.
pub fn date_time(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let (y, m, d) = proto::date::civil_from_days(days);
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    format!("\"{d:>2}-{}-{y:04} {:02}:{:02}:{:02} +0000\"", MONTHS[(m - 1) as usize], secs / 3600, secs % 3600 / 60, secs % 60)
}

/// A set of numbers in RFC 3501 9 sequence-set form (`1:3,7`), from
/// numbers in any order.
pub fn sequence_set(nums: &[u32]) -> String {
    let mut v = nums.to_vec();
    v.sort_unstable();
    v.dedup();
    let mut s = String::new();
    let mut i = 0;
    while i < v.len() {
        let start = v[i];
        let mut end = start;
        while i + 1 < v.len() && v[i + 1] == end + 1 {
            i += 1;
            end = v[i];
        }
        if !s.is_empty() {
            s.push(',');
        }
        if start == end {
            let _ = write!(s, "{start}");
        } else {
            let _ = write!(s, "{start}:{end}");
        }
        i += 1;
    }
    s
}

/// A sequence set of UID ranges (first, last) as `1:3,7`.
pub fn ranges(r: &[(u32, u32)]) -> String {
    let mut s = String::new();
    for (a, b) in r {
        if !s.is_empty() {
            s.push(',');
        }
        if a == b {
            let _ = write!(s, "{a}");
        } else {
            let _ = write!(s, "{a}:{b}");
        }
    }
    s
}

/// A mailbox name as sent in LIST, STATUS and the like: quoted (names
/// hold no CR, LF or NUL: `store::imap::normalize_name`).
pub fn mailbox(out: &mut Vec<u8>, name: &str) {
    if name.is_ascii() {
        string(out, name.as_bytes());
    } else {
        // RFC 3501 9: QUOTED-CHAR is 7-bit; a name some other tool gave
        // the directory goes as a literal.
        literal(out, name.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_quote_or_go_literal() {
        let mut o = Vec::new();
        string(&mut o, b"a \"b\" \\c");
        assert_eq!(o, b"\"a \\\"b\\\" \\\\c\"");
        o.clear();
        string(&mut o, b"two\r\nlines");
        assert_eq!(o, b"{10}\r\ntwo\r\nlines");
        o.clear();
        nstring(&mut o, None);
        assert_eq!(o, b"NIL");
    }

    #[test]
    fn dates_and_sets() {
        assert_eq!(date_time(0), "\" 1-Jan-1970 00:00:00 +0000\"");
        assert_eq!(date_time(1_733_312_345), "\" 4-Dec-2024 11:39:05 +0000\"");
        assert_eq!(sequence_set(&[5, 1, 2, 3, 9, 10]), "1:3,5,9:10");
        assert_eq!(sequence_set(&[]), "");
        assert_eq!(ranges(&[(1, 1), (4, 6)]), "1,4:6");
    }
}
