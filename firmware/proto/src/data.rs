//! The SMTP DATA stream: end-of-data detection and dot-unstuffing, and the
//! reverse (dot-stuffing) for POP3 RETR and the SMTP client.
//!
//! The decoder is deliberately strict about line ends, because the "SMTP
//! smuggling" family (CVE-2023-51764 and its relatives) relies on a receiver
//! that takes `<LF>.<LF>` or `<CR>.<CR>` or `<LF>.<CR><LF>` as the end of the
//! data while the sending server did not. Here the data ends only at
//! `<CRLF>.<CRLF>` (RFC 5321 4.1.1.4); a bare CR or bare LF anywhere is
//! recorded so that the whole message can be refused (RFC 5321 2.3.8 forbids
//! them in the transmitted text), and a "second message" hidden behind one
//! stays inside the first.

/// Decoder state: where in a line we are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a line (after CRLF, or at the very beginning).
    LineStart,
    /// In the middle of a line.
    Mid,
    /// Just saw CR in the middle of a line (the CR is not emitted yet).
    Cr,
    /// Saw `.` at the start of a line (not emitted: either stuffing or the
    /// end-of-data mark).
    Dot,
    /// Saw `.` CR at the start of a line.
    DotCr,
    /// Saw the whole `<CRLF>.<CRLF>`.
    Done,
}

/// What was wrong with the message text, if anything. The message is still
/// read to its real end so that the session stays in step with the client.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Defects {
    /// An LF not preceded by CR (RFC 5321 2.3.8).
    pub bare_lf: bool,
    /// A CR not followed by LF (RFC 5321 2.3.8).
    pub bare_cr: bool,
    /// A NUL octet, which no SMTP content type allows without BINARYMIME
    /// (RFC 5321 4.5.2, RFC 6152 2).
    pub nul: bool,
}

impl Defects {
    pub fn any(&self) -> bool {
        self.bare_lf || self.bare_cr || self.nul
    }
}

/// Result of one [`DataDecoder::decode`] call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Input bytes used.
    pub consumed: usize,
    /// Output bytes written.
    pub written: usize,
    /// The end-of-data mark was read; input after `consumed` belongs to the
    /// next command.
    pub done: bool,
}

/// Streaming decoder for the content that follows `DATA` / `354`.
#[derive(Debug, Clone)]
pub struct DataDecoder {
    state: State,
    defects: Defects,
}

impl Default for DataDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl DataDecoder {
    pub fn new() -> Self {
        DataDecoder { state: State::LineStart, defects: Defects::default() }
    }

    pub fn defects(&self) -> Defects {
        self.defects
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes as much of `input` as fits into `out`. `out` must have room
    /// for at least two bytes, since a pending CR may be released together
    /// with the byte that follows it. The output is the message exactly as
    /// the client meant it: dot-stuffing undone (RFC 5321 4.5.2), line ends
    /// as sent, without the final `.<CRLF>`.
    pub fn decode(&mut self, input: &[u8], out: &mut [u8]) -> Progress {
        let mut i = 0;
        let mut w = 0;
        while i < input.len() && self.state != State::Done && out.len() - w >= 2 {
            let b = input[i];
            i += 1;
            if b == 0 {
                self.defects.nul = true;
            }
            match self.state {
                State::LineStart => match b {
                    b'.' => self.state = State::Dot,
                    _ => self.mid(b, out, &mut w),
                },
                State::Mid => self.mid(b, out, &mut w),
                State::Cr => {
                    if b == b'\n' {
                        out[w] = b'\r';
                        out[w + 1] = b'\n';
                        w += 2;
                        self.state = State::LineStart;
                    } else {
                        self.defects.bare_cr = true;
                        out[w] = b'\r';
                        w += 1;
                        self.mid(b, out, &mut w);
                    }
                }
                State::Dot => {
                    if b == b'\r' {
                        self.state = State::DotCr;
                    } else {
                        // RFC 5321 4.5.2: a leading period on a line with
                        // other characters is deleted; what follows is no
                        // longer at the start of the line.
                        self.mid(b, out, &mut w);
                    }
                }
                State::DotCr => {
                    if b == b'\n' {
                        // RFC 5321 4.1.1.4: <CRLF>.<CRLF> ends the data.
                        self.state = State::Done;
                    } else {
                        // ".<CR>x": the dot was stuffing, the CR is bare.
                        self.defects.bare_cr = true;
                        out[w] = b'\r';
                        w += 1;
                        self.mid(b, out, &mut w);
                    }
                }
                State::Done => unreachable!("loop condition excludes Done"),
            }
        }
        Progress { consumed: i, written: w, done: self.state == State::Done }
    }

    /// A byte in the middle of a line (or the first byte of a line that is
    /// not a dot).
    fn mid(&mut self, b: u8, out: &mut [u8], w: &mut usize) {
        match b {
            b'\r' => self.state = State::Cr,
            b'\n' => {
                // A bare LF is not a line end here: the data can only end at
                // <CRLF>.<CRLF>, whatever a sloppy sender meant.
                self.defects.bare_lf = true;
                out[*w] = b'\n';
                *w += 1;
                self.state = State::Mid;
            }
            _ => {
                out[*w] = b;
                *w += 1;
                self.state = State::Mid;
            }
        }
    }
}

/// Streaming dot-stuffer (RFC 5321 4.5.2, RFC 1939 3): doubles a period at
/// the start of every line. Feed the message in chunks; call
/// [`DotStuffer::finish`] for the terminator.
#[derive(Debug, Clone)]
pub struct DotStuffer {
    at_line_start: bool,
    last_was_cr: bool,
    wrote_any: bool,
}

impl Default for DotStuffer {
    fn default() -> Self {
        Self::new()
    }
}

impl DotStuffer {
    pub fn new() -> Self {
        DotStuffer { at_line_start: true, last_was_cr: false, wrote_any: false }
    }

    /// Stuffs `input` into `out`, returning (consumed, written). `out` needs
    /// room for two bytes at least.
    pub fn stuff(&mut self, input: &[u8], out: &mut [u8]) -> (usize, usize) {
        let mut i = 0;
        let mut w = 0;
        while i < input.len() && out.len() - w >= 2 {
            let b = input[i];
            i += 1;
            if self.at_line_start && b == b'.' {
                out[w] = b'.';
                w += 1;
            }
            out[w] = b;
            w += 1;
            self.wrote_any = true;
            self.at_line_start = b == b'\n' && self.last_was_cr;
            self.last_was_cr = b == b'\r';
        }
        (i, w)
    }

    /// The bytes that end the stream: a CRLF if the content did not end
    /// with one, then `.<CRLF>`.
    pub fn finish(&self) -> &'static [u8] {
        if !self.wrote_any || self.at_line_start {
            b".\r\n"
        } else {
            b"\r\n.\r\n"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    fn decode_all(input: &[u8], chunk: usize) -> (Vec<u8>, usize, Defects, bool) {
        let mut d = DataDecoder::new();
        let mut out = Vec::new();
        let mut buf = [0u8; 7];
        let mut pos = 0;
        while pos < input.len() && !d.is_done() {
            let end = (pos + chunk).min(input.len());
            let p = d.decode(&input[pos..end], &mut buf);
            out.extend_from_slice(&buf[..p.written]);
            pos += p.consumed;
        }
        (out, pos, d.defects(), d.is_done())
    }

    fn stuff_all(input: &[u8]) -> Vec<u8> {
        let mut s = DotStuffer::new();
        let mut out = Vec::new();
        let mut buf = [0u8; 5];
        let mut pos = 0;
        while pos < input.len() {
            let (c, w) = s.stuff(&input[pos..], &mut buf);
            out.extend_from_slice(&buf[..w]);
            pos += c;
        }
        out.extend_from_slice(s.finish());
        out
    }

    #[test]
    fn simple_end() {
        let (out, used, def, done) = decode_all(b"Hello\r\n.\r\nQUIT\r\n", 3);
        assert_eq!(out, b"Hello\r\n");
        assert_eq!(used, 10);
        assert!(done && !def.any());
    }

    #[test]
    fn empty_message() {
        let (out, used, _, done) = decode_all(b".\r\n", 1);
        assert!(out.is_empty() && done);
        assert_eq!(used, 3);
    }

    #[test]
    fn unstuffing() {
        let (out, _, def, done) = decode_all(b"..a\r\n...\r\n.\r\n", 2);
        assert_eq!(out, b".a\r\n..\r\n");
        assert!(done && !def.any());
    }

    #[test]
    fn smuggling_patterns_do_not_end_data() {
        // Each of these is a known SMTP smuggling end-of-data variant; none
        // may end the message, and all are flagged.
        for pattern in [&b"a\n.\nMAIL"[..], b"a\r.\rMAIL", b"a\n.\r\nMAIL", b"a\r.\r\nMAIL", b"a\r\n.\nMAIL", b"a\r\n.\rMAIL"] {
            let (_, used, def, done) = decode_all(pattern, 1);
            assert!(!done, "{:?} ended the data", pattern);
            assert_eq!(used, pattern.len());
            assert!(def.bare_lf || def.bare_cr, "{:?} not flagged", pattern);
        }
    }

    #[test]
    fn nul_flagged() {
        let (_, _, def, done) = decode_all(b"a\0b\r\n.\r\n", 4);
        assert!(def.nul && done);
    }

    #[test]
    fn stuffing() {
        assert_eq!(stuff_all(b".a\r\nb\r\n.\r\n"), b"..a\r\nb\r\n..\r\n.\r\n");
        assert_eq!(stuff_all(b"no end"), b"no end\r\n.\r\n");
        assert_eq!(stuff_all(b""), b".\r\n");
    }

    #[test]
    fn round_trip() {
        let msg = b".x\r\n..\r\n.\r\nline\r\n";
        let (out, _, def, done) = decode_all(&stuff_all(msg), 3);
        assert!(done && !def.any());
        assert_eq!(out, msg);
    }
}
