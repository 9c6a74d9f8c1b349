//! Framing of command lines with a hard bound.

/// What a buffer holds at its start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineStatus {
    /// A whole line: `content` bytes of text followed by `total - content`
    /// bytes of line end (CRLF, or a lone LF which command lines tolerate).
    Complete { content: usize, total: usize },
    /// No line end yet, and the bound has not been passed.
    Incomplete,
    /// More than `max` bytes without a line end: the peer must be told and
    /// the rest of the line discarded.
    TooLong,
}

/// Finds the first line in `buf`, allowing at most `max` bytes including the
/// line end.
///
/// Command lines end in CRLF (RFC 5321 2.3.8, RFC 1939 3). A lone LF is
/// accepted as the end of a *command* line, as Postfix does, because no
/// message boundary depends on it; message content is framed by
/// [`crate::data::DataDecoder`], which is strict.
pub fn find_line(buf: &[u8], max: usize) -> LineStatus {
    let window = &buf[..buf.len().min(max)];
    match window.iter().position(|&b| b == b'\n') {
        Some(lf) => {
            let content = if lf > 0 && window[lf - 1] == b'\r' { lf - 1 } else { lf };
            LineStatus::Complete { content, total: lf + 1 }
        }
        None if buf.len() >= max => LineStatus::TooLong,
        None => LineStatus::Incomplete,
    }
}

/// Where the current over-long line ends, if it does within `buf`: the
/// number of bytes to discard including the LF.
pub fn skip_to_line_end(buf: &[u8]) -> Option<usize> {
    buf.iter().position(|&b| b == b'\n').map(|p| p + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crlf_and_lf() {
        assert_eq!(find_line(b"NOOP\r\nX", 512), LineStatus::Complete { content: 4, total: 6 });
        assert_eq!(find_line(b"NOOP\nX", 512), LineStatus::Complete { content: 4, total: 5 });
        assert_eq!(find_line(b"NOOP", 512), LineStatus::Incomplete);
        assert_eq!(find_line(b"NOOPNOOP", 4), LineStatus::TooLong);
        assert_eq!(find_line(b"NOO\n", 4), LineStatus::Complete { content: 3, total: 4 });
        assert_eq!(find_line(b"\r\n", 4), LineStatus::Complete { content: 0, total: 2 });
    }

    #[test]
    fn skip() {
        assert_eq!(skip_to_line_end(b"aaaa\r\nb"), Some(6));
        assert_eq!(skip_to_line_end(b"aaaa"), None);
    }
}
