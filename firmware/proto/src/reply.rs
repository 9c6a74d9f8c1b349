//! SMTP replies: the writer a server uses and the parser a client uses
//! (RFC 5321 4.2).

use core::fmt::{self, Write};

/// RFC 5321 4.5.3.1.5: a reply line is at most 512 octets; a client takes
/// more from lenient servers, but never an unbounded amount. Counted with
/// the line end, as [`crate::line::find_line`] counts.
pub const MAX_REPLY_LINE: usize = 4096;
/// Lines of one multi-line reply at most (an EHLO reply has one per
/// extension: a few dozen at the very most).
pub const MAX_REPLY_LINES: usize = 128;

/// Why a reply line was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyError {
    /// Not `ddd`, `ddd text` or `ddd-text` with a code from 200 to 599.
    Malformed,
    /// More than [`MAX_REPLY_LINES`] (or the reader's bound) lines.
    TooManyLines,
}

impl fmt::Display for ReplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplyError::Malformed => f.write_str("malformed reply line"),
            ReplyError::TooManyLines => f.write_str("reply has too many lines"),
        }
    }
}

/// One line of a reply, without its line end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyLine<'a> {
    pub code: u16,
    /// Whether this is the reply's last line (`ddd text` or `ddd`);
    /// otherwise (`ddd-text`) more lines follow.
    pub last: bool,
    /// The text after the separator, possibly empty.
    pub text: &'a [u8],
}

/// Parses one reply line (without CRLF). RFC 5321 4.2:
///
/// ```text
/// Reply-line = *( Reply-code "-" [ textstring ] CRLF )
///              Reply-code [ SP textstring ] CRLF
/// ```
///
/// The client takes only codes 200 to 599 (4.2.1: 1yz is not used in
/// SMTP); anything but a space or a hyphen after the code is refused.
pub fn parse_line(line: &[u8]) -> Result<ReplyLine<'_>, ReplyError> {
    let digits = line.get(..3).ok_or(ReplyError::Malformed)?;
    if !digits.iter().all(u8::is_ascii_digit) {
        return Err(ReplyError::Malformed);
    }
    let code = digits.iter().fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    if !(200..600).contains(&code) {
        return Err(ReplyError::Malformed);
    }
    let (last, text) = match line.get(3) {
        None => (true, &line[3..]),
        Some(b' ') => (true, &line[4..]),
        Some(b'-') => (false, &line[4..]),
        Some(_) => return Err(ReplyError::Malformed),
    };
    Ok(ReplyLine { code, last, text })
}

/// Follows the lines of one (possibly multi-line) reply and bounds them.
/// RFC 5321 4.2.1 says every line of a multi-line reply carries the same
/// code; as a client we are lenient and take the last line's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyReader {
    lines: usize,
    max_lines: usize,
}

impl Default for ReplyReader {
    fn default() -> Self {
        ReplyReader::new(MAX_REPLY_LINES)
    }
}

impl ReplyReader {
    pub fn new(max_lines: usize) -> ReplyReader {
        ReplyReader { lines: 0, max_lines }
    }

    /// Takes the next line. When it is the last ([`ReplyLine::last`]) the
    /// reply is complete and the reader starts over for the next one.
    pub fn push<'a>(&mut self, line: &'a [u8]) -> Result<ReplyLine<'a>, ReplyError> {
        let l = parse_line(line)?;
        self.lines += 1;
        if self.lines > self.max_lines {
            return Err(ReplyError::TooManyLines);
        }
        if l.last {
            self.lines = 0;
        }
        Ok(l)
    }
}

/// Writes an SMTP reply (RFC 5321 4.2): every line but the last as
/// `code-text`, the last as `code text`, each ending in CRLF. With an
/// enhanced status code (RFC 2034 3), it follows the code on every line.
pub fn smtp<W: Write>(w: &mut W, code: u16, enhanced: Option<&str>, lines: &[&str]) -> fmt::Result {
    let n = lines.len().max(1);
    for i in 0..n {
        let text = lines.get(i).copied().unwrap_or("");
        let sep = if i + 1 == n { ' ' } else { '-' };
        match enhanced {
            Some(e) => write!(w, "{code}{sep}{e} {text}\r\n")?,
            None => write!(w, "{code}{sep}{text}\r\n")?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::string::String;
    use std::vec::Vec;

    #[test]
    fn reply_lines() {
        assert_eq!(parse_line(b"250 ok"), Ok(ReplyLine { code: 250, last: true, text: b"ok" }));
        assert_eq!(parse_line(b"250-PIPELINING"), Ok(ReplyLine { code: 250, last: false, text: b"PIPELINING" }));
        assert_eq!(parse_line(b"354"), Ok(ReplyLine { code: 354, last: true, text: b"" }));
        assert_eq!(parse_line(b"550 "), Ok(ReplyLine { code: 550, last: true, text: b"" }));
        assert_eq!(parse_line(b"421-"), Ok(ReplyLine { code: 421, last: false, text: b"" }));
        for bad in [&b""[..], b"25", b"2500 x", b"250x", b"abc ok", b"199 no", b"600 no", b"099 x", b" 250 x", b"25a ok"] {
            assert_eq!(parse_line(bad), Err(ReplyError::Malformed), "{bad:?}");
        }
    }

    #[test]
    fn multiline_replies_are_bounded() {
        let mut r = ReplyReader::new(3);
        assert!(!r.push(b"250-a").unwrap().last);
        assert!(!r.push(b"250-b").unwrap().last);
        assert_eq!(r.push(b"250 c").unwrap(), ReplyLine { code: 250, last: true, text: b"c" });
        // The next reply starts afresh.
        assert!(r.push(b"220 again").unwrap().last);
        let mut r = ReplyReader::new(2);
        r.push(b"250-a").unwrap();
        r.push(b"250-b").unwrap();
        assert_eq!(r.push(b"250 c"), Err(ReplyError::TooManyLines));
    }

    #[test]
    fn what_is_written_parses_back() {
        let mut s = String::new();
        smtp(&mut s, 250, Some("2.0.0"), &["mx.example", "SIZE 1000", "8BITMIME"]).unwrap();
        let mut r = ReplyReader::default();
        let lines: Vec<ReplyLine> = s.split_terminator("\r\n").map(|l| r.push(l.as_bytes()).unwrap()).collect();
        assert_eq!(lines.iter().map(|l| (l.code, l.last)).collect::<Vec<_>>(), [(250, false), (250, false), (250, true)]);
        assert_eq!(lines[1].text, b"2.0.0 SIZE 1000");
    }

    proptest! {
        #[test]
        fn parse_line_never_panics(line in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(l) = parse_line(&line) {
                prop_assert!((200..600).contains(&l.code));
                prop_assert!(l.text.len() + 3 <= line.len());
            }
        }

        #[test]
        fn written_replies_round_trip(code in 200u16..600, texts in proptest::collection::vec("[ -~]{0,40}", 1..8)) {
            let lines: Vec<&str> = texts.iter().map(|t| t.as_str()).collect();
            let mut s = String::new();
            smtp(&mut s, code, None, &lines).unwrap();
            let mut r = ReplyReader::default();
            let parsed: Vec<ReplyLine> = s.split_terminator("\r\n").map(|l| r.push(l.as_bytes()).unwrap()).collect();
            prop_assert_eq!(parsed.len(), lines.len());
            for (i, (p, t)) in parsed.iter().zip(&lines).enumerate() {
                prop_assert_eq!(p.code, code);
                prop_assert_eq!(p.last, i + 1 == lines.len());
                prop_assert_eq!(p.text, t.as_bytes());
            }
        }

        #[test]
        fn a_reply_ends_within_the_bound(n in 1usize..200) {
            let mut r = ReplyReader::default();
            let mut result = Ok(());
            for i in 0..n {
                let line: &[u8] = if i + 1 == n { b"250 end" } else { b"250-more" };
                if let Err(e) = r.push(line) {
                    result = Err(e);
                    break;
                }
            }
            prop_assert_eq!(result.is_ok(), n <= MAX_REPLY_LINES);
        }
    }

    #[test]
    fn multiline() {
        let mut s = String::new();
        smtp(&mut s, 250, None, &["mx.example", "PIPELINING", "8BITMIME"]).unwrap();
        assert_eq!(s, "250-mx.example\r\n250-PIPELINING\r\n250 8BITMIME\r\n");
        let mut s = String::new();
        smtp(&mut s, 550, Some("5.1.1"), &["no such user"]).unwrap();
        assert_eq!(s, "550 5.1.1 no such user\r\n");
    }
}
