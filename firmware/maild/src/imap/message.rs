//! A stored message as IMAP shows it: ENVELOPE, BODY/BODYSTRUCTURE,
//! BODY[section] and BINARY[part] (RFC 3501 6.4.5, 7.4.2; RFC 3516).
//!
//! Pure functions over the message's bytes. `mail-parser` finds the MIME
//! structure and decodes header values (RFC 2047), addresses and dates;
//! every section is cut out of the raw bytes with the parser's part
//! offsets, so what a client fetches is byte for byte what is stored.
//!
//! Part numbering (RFC 3501 6.4.5): the parts of a multipart are numbered
//! from 1; a non-multipart message has one part, 1, its body; the parts of
//! a message/rfc822 part are those of the embedded message, whose HEADER
//! and TEXT are named by the part number of the message/rfc822 part.

use std::borrow::Cow;

use base64::Engine as _;
use mail_parser::{Address, HeaderName, HeaderValue, MessageParser, MessagePart, PartType};
use proto::imap::{Partial, Section, SectionText};

/// How deep message/multipart nesting is followed for BODYSTRUCTURE and
/// section numbers; deeper parts are shown as opaque leaves (a bound on
/// the recursion over hostile input).
pub const MAX_DEPTH: usize = 32;

/// A message parsed for IMAP: the raw bytes and their MIME tree.
pub struct Parsed<'a> {
    raw: &'a [u8],
    msg: Option<mail_parser::Message<'a>>,
}

/// Why BINARY[part] has no answer (RFC 3516 4.3).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BinaryError {
    /// The part's Content-Transfer-Encoding is not one we can decode: the
    /// session answers `NO [UNKNOWN-CTE]` (RFC 3516 4.3).
    #[error("unknown content transfer encoding")]
    UnknownCte,
    /// No such part.
    #[error("no such part")]
    NoSuchPart,
}

impl Drop for Parsed<'_> {
    /// mail-parser keeps an embedded message/rfc822 by value inside its
    /// parent, so its own drop recurses once per level: a hostile message
    /// nesting thousands of message/rfc822 parts would overflow the stack.
    /// The levels are taken apart here, one at a time.
    fn drop(&mut self) {
        let Some(m) = self.msg.take() else { return };
        let mut stack = vec![m];
        while let Some(mut m) = stack.pop() {
            for p in &mut m.parts {
                if matches!(p.body, PartType::Message(_)) {
                    if let PartType::Message(inner) = std::mem::replace(&mut p.body, PartType::Multipart(Vec::new())) {
                        stack.push(inner);
                    }
                }
            }
        }
    }
}

/// Parses a message. Never fails: bytes the parser cannot make sense of
/// are shown as a header-only message (RFC 5322 2.1: the header ends at
/// the first empty line).
///
/// mail-parser decodes a base64 or quoted-printable message/rfc822 part
/// (RFC 2046 5.2.1 forbids the encoding; some clients use it anyway) and
/// then copies the embedded tree recursively: one chain of stack frames
/// and one copy of the decoded bytes per nesting level inside it. Hostile
/// input there would overflow the stack (aborting the process) or exhaust
/// memory. A message that may hold such a part is parsed inline when what
/// follows that part's header is small, on a thread with a stack that
/// fits the deepest nesting its size allows when that is affordable, and
/// otherwise not at all: it is then shown without structure (one
/// text/plain part), still byte for byte. See `parse_plan`.
pub fn parse(raw: &[u8]) -> Parsed<'_> {
    let run = || MessageParser::default().parse(raw).filter(|m| !m.parts.is_empty());
    let msg = match parse_plan(raw) {
        ParsePlan::Inline => run(),
        ParsePlan::Thread(stack) => std::thread::scope(|s| {
            let t = std::thread::Builder::new().name("mime-parse".into()).stack_size(stack).spawn_scoped(s, run);
            // A thread that cannot start or that failed: no structure.
            t.ok().and_then(|t| t.join().ok()).flatten()
        }),
        ParsePlan::Unstructured => None,
    };
    Parsed { raw, msg }
}

/// Fewest bytes one message level takes inside decoded content:
/// `content-type:message/rfc822` and the empty line ending its header
/// (a digest level takes more).
const MIN_NESTED_MESSAGE_BYTES: usize = 27;
/// The stack mail-parser's recursive copy takes per embedded level, with
/// room to spare (measured at about 1 KiB in debug and release builds).
const PARSER_STACK_PER_LEVEL: usize = 2 * 1024;
/// The nesting the calling thread's stack takes without a parse thread.
const INLINE_PARSE_LEVELS: usize = 64;
/// The stack a parse thread gets on top of the per-level stack.
const PARSE_THREAD_BASE_STACK: usize = 1024 * 1024;
/// The most bytes mail-parser's per-level copies of decoded content may
/// add up to (levels times decoded size, at worst) for a message to be
/// parsed; past it the message is shown without structure.
pub const MAX_PARSE_COPY_BYTES: usize = 256 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ParsePlan {
    Inline,
    Thread(usize),
    Unstructured,
}

/// How to parse `raw`: inline unless an encoded message part may be in it
/// (see `first_encoded_message`), whose decoded content is at most what
/// follows its header and nests at most one level per
/// `MIN_NESTED_MESSAGE_BYTES` of it.
fn parse_plan(raw: &[u8]) -> ParsePlan {
    let Some(start) = first_encoded_message(raw) else { return ParsePlan::Inline };
    let tail = raw.len() - start;
    let levels = tail / MIN_NESTED_MESSAGE_BYTES + 1;
    if levels <= INLINE_PARSE_LEVELS {
        ParsePlan::Inline
    } else if levels.saturating_mul(tail) <= MAX_PARSE_COPY_BYTES {
        ParsePlan::Thread(levels * PARSER_STACK_PER_LEVEL + PARSE_THREAD_BASE_STACK)
    } else {
        ParsePlan::Unstructured
    }
}

/// ASCII whitespace as mail-parser skips it between header fields.
fn is_header_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | 0x0c)
}

/// Where the first header that may be an encoded message part's starts,
/// over-approximating what mail-parser would see as one:
///
/// * a header is a run of lines up to a line of only whitespace that does
///   not start with SP or TAB (one that does may be a folded value's);
///   every header mail-parser reads lies inside one, wherever it starts;
/// * it is a message part's when it names message/rfc822 or
///   message/global (`subtype_token`), or has no usable Content-Type
///   inside a multipart/digest (RFC 2046 5.1.5) -- taken as possible for
///   every header once `digest` is a subtype anywhere;
/// * it is encoded when any field whose name ends in
///   content-transfer-encoding (so a header starting in the middle of a
///   boundary line counts too) has a value other than 7bit, 8bit, binary
///   or nothing on its own line.
fn first_encoded_message(raw: &[u8]) -> Option<usize> {
    let digest = subtype_token(raw, b"digest");
    if !digest && !subtype_token(raw, b"rfc822") && !subtype_token(raw, b"global") {
        return None;
    }
    let mut start = 0;
    let mut pos = 0;
    let (mut message, mut encoded) = (digest, false);
    while pos < raw.len() {
        let end = raw[pos..].iter().position(|&b| b == b'\n').map_or(raw.len(), |n| pos + n);
        let line = &raw[pos..end];
        let next = end + 1;
        if !line.first().is_some_and(|&b| b == b' ' || b == b'\t') && line.iter().all(|&b| is_header_ws(b)) {
            if message && encoded {
                return Some(start);
            }
            start = next;
            (message, encoded) = (digest, false);
        } else {
            message = message || subtype_token(line, b"rfc822") || subtype_token(line, b"global");
            encoded = encoded || cte_not_identity(line, raw.get(next).copied());
        }
        pos = next;
    }
    (message && encoded).then_some(start)
}

/// Whether `line` has a content-transfer-encoding field (as the tail of
/// any colon-separated name) whose value may be an encoding. A value
/// folded onto the next line (`next` is SP or TAB) may be anything.
fn cte_not_identity(line: &[u8], next: Option<u8>) -> bool {
    const NAME: &[u8] = b"content-transfer-encoding";
    let mut segments = line.split(|&b| b == b':');
    let Some(mut name) = segments.next() else { return false };
    let mut rest_start = name.len() + 1;
    for seg in segments {
        let squeezed: Vec<u8> = name.iter().filter(|b| !b.is_ascii_whitespace()).map(u8::to_ascii_lowercase).collect();
        if squeezed.ends_with(NAME) {
            let value = trim_ascii(&line[rest_start.min(line.len())..]);
            let identity = [&b""[..], b"7bit", b"8bit", b"binary"].iter().any(|v| v.eq_ignore_ascii_case(value));
            if !identity || matches!(next, Some(b' ' | b'\t')) {
                return true;
            }
        }
        rest_start += seg.len() + 1;
        name = seg;
    }
    false
}

/// Whether `marker` occurs (ASCII case-insensitively) where mail-parser's
/// Content-Type parser would take it as the whole subtype: after `/` or
/// a comment's `)`, with only the characters it skips (whitespace, `"`,
/// `\\`) around, and ended by `;`, `(`, a line end or the end.
fn subtype_token(hay: &[u8], marker: &[u8]) -> bool {
    let skipped = |b: u8| matches!(b, b' ' | b'\t' | b'\r' | b'"' | b'\\');
    let n = marker.len();
    let mut i = 0;
    while i + n <= hay.len() {
        if hay[i..i + n].eq_ignore_ascii_case(marker) {
            let before = hay[..i].iter().rev().copied().find(|&b| !skipped(b));
            let after = hay[i + n..].iter().copied().find(|&b| !skipped(b));
            if matches!(before, Some(b'/' | b')')) && matches!(after, None | Some(b';' | b'(' | b'\n')) {
                return true;
            }
        }
        i += 1;
    }
    false
}

/// RFC 3501 6.4.5 `<origin.octets>`: the bytes from `origin`, at most
/// `length` of them; an origin past the end gives no bytes.
pub fn apply_partial(data: &[u8], p: Option<Partial>) -> &[u8] {
    match p {
        None => data,
        Some(p) => {
            let start = (p.origin as usize).min(data.len());
            let end = start.saturating_add(p.length as usize).min(data.len());
            &data[start..end]
        }
    }
}

/// `data[a..b]` with both ends clamped, never panicking on offsets a
/// malformed message produced.
fn slice(data: &[u8], a: usize, b: usize) -> &[u8] {
    let b = b.min(data.len());
    &data[a.min(b)..b]
}

/// One message level: the top message or an embedded message/rfc822.
/// The parts' offsets index `raw` (`mail_parser::Message::raw_message`).
#[derive(Clone, Copy)]
struct Level<'p> {
    msg: &'p mail_parser::Message<'p>,
    raw: &'p [u8],
    start: usize,
    end: usize,
}

impl<'p> Level<'p> {
    fn root(&self) -> &'p MessagePart<'p> {
        &self.msg.parts[0]
    }
    fn header(&self) -> &'p [u8] {
        slice(self.raw, self.start, self.root().offset_body as usize)
    }
    fn text(&self) -> &'p [u8] {
        slice(self.raw, self.root().offset_body as usize, self.end)
    }
    fn whole(&self) -> &'p [u8] {
        slice(self.raw, self.start, self.end)
    }
    fn part(&self, idx: usize) -> Option<&'p MessagePart<'p>> {
        self.msg.parts.get(idx)
    }
    /// The MIME header of a part (with its closing empty line).
    fn part_header(&self, idx: usize) -> &'p [u8] {
        if idx == 0 {
            return self.header();
        }
        match self.part(idx) {
            Some(p) => slice(self.raw, p.offset_header as usize, p.offset_body as usize),
            None => &[],
        }
    }
    /// The body of a part, still encoded (RFC 2046 5.1.1: the CRLF before a
    /// boundary belongs to the boundary, not to the part).
    fn part_body(&self, idx: usize) -> &'p [u8] {
        if idx == 0 {
            return self.text();
        }
        match self.part(idx) {
            Some(p) => slice(self.raw, p.offset_body as usize, p.offset_end as usize),
            None => &[],
        }
    }
    /// The embedded message of a message/rfc822 part.
    fn nested(&self, idx: usize) -> Option<Level<'p>> {
        let p = self.part(idx)?;
        let PartType::Message(m) = &p.body else { return None };
        if m.parts.is_empty() {
            return None;
        }
        let raw: &'p [u8] = m.raw_message.as_ref();
        if p.encoding == mail_parser::Encoding::None {
            // Parsed in place: the offsets index the same bytes.
            let start = p.offset_body as usize;
            let end = if idx == 0 { self.end } else { p.offset_end as usize };
            Some(Level { msg: m, raw, start: start.min(m.parts[0].offset_header as usize), end })
        } else {
            // An encoded message/rfc822 (RFC 2046 5.2.1 forbids it, but it
            // happens) was parsed from its decoded bytes.
            Some(Level { msg: m, raw, start: 0, end: raw.len() })
        }
    }
}

/// What a section's part number names.
#[derive(Clone, Copy)]
enum Node<'p> {
    /// A whole message (the top one, or embedded).
    Message(Level<'p>),
    /// Part `idx` of a level.
    Part(Level<'p>, usize),
}

fn resolve_in_level<'p>(level: Level<'p>, path: &[u32], depth: usize) -> Option<Node<'p>> {
    let Some((&first, rest)) = path.split_first() else { return Some(Node::Message(level)) };
    if depth > MAX_DEPTH || first == 0 {
        return None;
    }
    match &level.root().body {
        PartType::Multipart(children) => {
            let &child = children.get(first as usize - 1)?;
            resolve_in_part(level, child as usize, rest, depth + 1)
        }
        // RFC 3501 6.4.5: part 1 of a non-multipart message is its body.
        _ if first == 1 => resolve_in_part(level, 0, rest, depth + 1),
        _ => None,
    }
}

fn resolve_in_part<'p>(level: Level<'p>, idx: usize, rest: &[u32], depth: usize) -> Option<Node<'p>> {
    if rest.is_empty() {
        return Some(Node::Part(level, idx));
    }
    if depth > MAX_DEPTH {
        return None;
    }
    let part = level.part(idx)?;
    match &part.body {
        PartType::Multipart(children) if idx != 0 => {
            let first = rest[0];
            if first == 0 {
                return None;
            }
            let &child = children.get(first as usize - 1)?;
            resolve_in_part(level, child as usize, &rest[1..], depth + 1)
        }
        PartType::Message(_) => resolve_in_level(level.nested(idx)?, rest, depth + 1),
        _ => None,
    }
}

impl<'a> Parsed<'a> {
    fn top(&self) -> Option<Level<'_>> {
        let m = self.msg.as_ref()?;
        Some(Level { msg: m, raw: m.raw_message.as_ref(), start: 0, end: self.raw.len() })
    }

    /// Where the header ends when the parser found no structure: after the
    /// first empty line, or the whole message (RFC 5322 2.1).
    fn fallback_header_end(&self) -> usize {
        let raw = self.raw;
        let mut i = 0;
        let mut line_start = true;
        while i < raw.len() {
            if line_start && raw[i] == b'\n' {
                return i + 1;
            }
            if line_start && raw[i] == b'\r' && raw.get(i + 1) == Some(&b'\n') {
                return i + 2;
            }
            line_start = raw[i] == b'\n';
            i += 1;
        }
        raw.len()
    }

    /// The whole message.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// RFC822.HEADER / BODY[HEADER]: the header with its empty line.
    pub fn header(&self) -> &[u8] {
        match self.top() {
            Some(l) => l.header(),
            None => &self.raw[..self.fallback_header_end()],
        }
    }

    /// RFC822.TEXT / BODY[TEXT]: everything after the header.
    pub fn text(&self) -> &[u8] {
        match self.top() {
            Some(l) => l.text(),
            None => &self.raw[self.fallback_header_end()..],
        }
    }

    /// BODY[section] (RFC 3501 6.4.5), byte-exact; `None` when the
    /// section does not exist (the session answers an empty string or NO).
    pub fn section(&self, section: &Section) -> Option<Cow<'_, [u8]>> {
        let Some(top) = self.top() else {
            // No structure: only the top-level sections and part 1.
            return match (section.part.as_slice(), &section.text) {
                ([], SectionText::Full) => Some(Cow::Borrowed(self.raw)),
                ([], SectionText::Header) | ([1], SectionText::Mime) => Some(Cow::Borrowed(self.header())),
                ([], SectionText::Text) | ([1], SectionText::Full) => Some(Cow::Borrowed(self.text())),
                ([], SectionText::HeaderFields(n)) => Some(Cow::Owned(header_fields(self.header(), n, false))),
                ([], SectionText::HeaderFieldsNot(n)) => Some(Cow::Owned(header_fields(self.header(), n, true))),
                _ => None,
            };
        };
        let node = resolve_in_level(top, &section.part, 0)?;
        // The message whose HEADER/TEXT is asked for, if any.
        let level = match node {
            Node::Message(l) => Some(l),
            Node::Part(l, idx) => l.nested(idx),
        };
        match &section.text {
            SectionText::Full => Some(Cow::Borrowed(match node {
                Node::Message(l) if section.part.is_empty() && l.start == 0 => self.raw,
                Node::Message(l) => l.whole(),
                Node::Part(l, idx) => l.part_body(idx),
            })),
            SectionText::Mime => match node {
                Node::Part(l, idx) => Some(Cow::Borrowed(l.part_header(idx))),
                Node::Message(_) => None,
            },
            SectionText::Header => Some(Cow::Borrowed(level?.header())),
            SectionText::Text => Some(Cow::Borrowed(level?.text())),
            SectionText::HeaderFields(names) => Some(Cow::Owned(header_fields(level?.header(), names, false))),
            SectionText::HeaderFieldsNot(names) => Some(Cow::Owned(header_fields(level?.header(), names, true))),
        }
    }

    /// BINARY[part] (RFC 3516 4.2): the part's body with its
    /// Content-Transfer-Encoding undone. An empty part path is the whole
    /// message; a multipart or message part is returned as stored.
    pub fn binary(&self, part: &[u32]) -> Result<Cow<'_, [u8]>, BinaryError> {
        if part.is_empty() {
            return Ok(Cow::Borrowed(self.raw));
        }
        let Some(top) = self.top() else {
            return if part == [1] { Ok(Cow::Borrowed(self.text())) } else { Err(BinaryError::NoSuchPart) };
        };
        let Some(Node::Part(level, idx)) = resolve_in_level(top, part, 0) else {
            return Err(BinaryError::NoSuchPart);
        };
        let p = level.part(idx).ok_or(BinaryError::NoSuchPart)?;
        let body = level.part_body(idx);
        if matches!(p.body, PartType::Multipart(_)) && idx != 0 {
            return Ok(Cow::Borrowed(body));
        }
        let cte = header_text(level.raw, p, &HeaderName::ContentTransferEncoding);
        let cte = cte.as_deref().map(|s| s.trim().to_ascii_lowercase());
        match cte.as_deref() {
            // RFC 2045 6.1: the identity encodings.
            None | Some("") | Some("7bit") | Some("8bit") | Some("binary") => Ok(Cow::Borrowed(body)),
            Some("base64") => Ok(Cow::Owned(decode_base64(body))),
            Some("quoted-printable") => Ok(Cow::Owned(decode_qp(body))),
            Some(_) => Err(BinaryError::UnknownCte),
        }
    }

    /// ENVELOPE (RFC 3501 7.4.2).
    pub fn envelope(&self, out: &mut Vec<u8>) {
        match self.top() {
            Some(l) => envelope_of(l.raw, l.root(), out),
            // No structure (see `parse`): the header alone is still read;
            // the parser's header-only mode nests nothing.
            None => match MessageParser::default().parse_headers(self.raw) {
                Some(m) if !m.parts.is_empty() => envelope_of(self.raw, &m.parts[0], out),
                _ => out.extend_from_slice(b"(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)"),
            },
        }
    }

    /// BODY (`extensible` false) or BODYSTRUCTURE (true) (RFC 3501 7.4.2).
    pub fn body_structure(&self, out: &mut Vec<u8>, extensible: bool) {
        match self.top() {
            Some(l) => body_of_part(l, 0, out, extensible, 0),
            None => {
                let text = self.text();
                out.extend_from_slice(b"(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" ");
                push_num(out, text.len() as u64);
                out.push(b' ');
                push_num(out, count_lines(text));
                if extensible {
                    out.extend_from_slice(b" NIL NIL NIL NIL");
                }
                out.push(b')');
            }
        }
    }

    /// The headers of the top message (for SEARCH).
    pub(crate) fn top_headers(&self) -> Option<(&[u8], &[mail_parser::Header<'_>])> {
        let l = self.top()?;
        Some((l.raw, &l.root().headers))
    }

    /// The decoded text of every text/* part, for SEARCH BODY/TEXT.
    pub(crate) fn body_texts(&self) -> Vec<Cow<'_, str>> {
        let mut texts = Vec::new();
        match &self.msg {
            Some(m) => collect_texts(m, &mut texts, 0),
            None => texts.push(String::from_utf8_lossy(self.text())),
        }
        texts
    }
}

fn collect_texts<'p>(m: &'p mail_parser::Message<'p>, texts: &mut Vec<Cow<'p, str>>, depth: usize) {
    if depth > MAX_DEPTH {
        return;
    }
    for p in &m.parts {
        match &p.body {
            PartType::Text(t) | PartType::Html(t) => texts.push(mislabeled_utf8(m, p, t)),
            PartType::Message(inner) => collect_texts(inner, texts, depth + 1),
            _ => {}
        }
    }
}

/// A part's text as mail-parser decoded it, except that a part labeled
/// us-ascii whose octets are UTF-8 (a common mislabeling: the label is
/// the RFC 2046 4.1.2 default many senders keep) is read as UTF-8, not as
/// mail-parser's single-byte fallback.
fn mislabeled_utf8<'p>(m: &'p mail_parser::Message<'p>, p: &'p MessagePart<'p>, text: &'p str) -> Cow<'p, str> {
    let ascii_label = content_type(p)
        .and_then(|c| c.attribute("charset"))
        .is_some_and(|c| c.eq_ignore_ascii_case("us-ascii") || c.eq_ignore_ascii_case("ascii"));
    if !ascii_label || text.is_ascii() {
        return Cow::Borrowed(text);
    }
    let body = slice(m.raw_message.as_ref(), p.offset_body as usize, p.offset_end as usize);
    let decoded = match p.encoding {
        mail_parser::Encoding::Base64 => decode_base64(body),
        mail_parser::Encoding::QuotedPrintable => decode_qp(body),
        mail_parser::Encoding::None => body.to_vec(),
    };
    match String::from_utf8(decoded) {
        Ok(s) => Cow::Owned(s),
        Err(_) => Cow::Borrowed(text),
    }
}

/// HEADER.FIELDS / HEADER.FIELDS.NOT (RFC 3501 6.4.5): the fields whose
/// names (case-insensitive) are listed, or are not, as they are in the
/// header (continuation lines included), then the empty line.
pub fn header_fields(header: &[u8], names: &[String], not: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < header.len() {
        // One field: a line and the lines that start with WSP after it.
        let start = i;
        let mut end = i;
        loop {
            match header[end..].iter().position(|&b| b == b'\n') {
                Some(n) => end += n + 1,
                None => end = header.len(),
            }
            if end >= header.len() || !matches!(header[end], b' ' | b'\t') {
                break;
            }
        }
        i = end;
        let field = &header[start..end];
        if field == b"\r\n" || field == b"\n" {
            break; // the empty line ending the header
        }
        let Some(colon) = field.iter().position(|&b| b == b':') else { continue };
        let name = trim_ascii(&field[..colon]);
        let listed = names.iter().any(|n| n.as_bytes().eq_ignore_ascii_case(name));
        if listed != not {
            out.extend_from_slice(field);
            if !field.ends_with(b"\n") {
                out.extend_from_slice(b"\r\n");
            }
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

fn trim_ascii(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|c| !c.is_ascii_whitespace()).unwrap_or(b.len());
    let end = b.iter().rposition(|c| !c.is_ascii_whitespace()).map_or(start, |e| e + 1);
    &b[start..end.max(start)]
}

/// A field's raw value: unfolded (RFC 5322 2.2.3: CRLF before WSP
/// removed), surrounding whitespace trimmed.
fn raw_value<'r>(raw: &'r [u8], h: &mail_parser::Header<'_>) -> Cow<'r, [u8]> {
    let v = trim_ascii(slice(raw, h.offset_start as usize, h.offset_end as usize));
    if v.contains(&b'\n') || v.contains(&b'\r') {
        Cow::Owned(v.iter().copied().filter(|&b| b != b'\r' && b != b'\n').collect())
    } else {
        Cow::Borrowed(v)
    }
}

fn find_header<'h, 'x>(p: &'h MessagePart<'x>, name: &HeaderName<'_>) -> Option<&'h mail_parser::Header<'x>> {
    p.headers.iter().find(|h| &h.name == name)
}

fn header_text(raw: &[u8], p: &MessagePart<'_>, name: &HeaderName<'_>) -> Option<String> {
    find_header(p, name).map(|h| String::from_utf8_lossy(&raw_value(raw, h)).into_owned())
}

fn push_num(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(n.to_string().as_bytes());
}

/// A string (RFC 3501 4.3): quoted when it can be, a literal otherwise.
fn push_string(out: &mut Vec<u8>, s: &[u8]) {
    let quotable = s.len() <= 1024 && s.iter().all(|&b| b.is_ascii() && b != b'\r' && b != b'\n' && b != 0);
    if quotable {
        out.push(b'"');
        for &b in s {
            if b == b'"' || b == b'\\' {
                out.push(b'\\');
            }
            out.push(b);
        }
        out.push(b'"');
    } else {
        out.push(b'{');
        push_num(out, s.len() as u64);
        out.extend_from_slice(b"}\r\n");
        out.extend_from_slice(s);
    }
}

fn push_nstring(out: &mut Vec<u8>, s: Option<&[u8]>) {
    match s {
        Some(s) => push_string(out, s),
        None => out.extend_from_slice(b"NIL"),
    }
}

/// Lines of a body (RFC 3501 7.4.2 body-fld-lines): its line ends, and
/// one more for a last line without one.
fn count_lines(body: &[u8]) -> u64 {
    let n = body.iter().filter(|&&b| b == b'\n').count() as u64;
    n + u64::from(!body.is_empty() && !body.ends_with(b"\n"))
}

fn envelope_of(raw: &[u8], root: &MessagePart<'_>, out: &mut Vec<u8>) {
    let nstr = |out: &mut Vec<u8>, name: HeaderName<'_>| {
        let v = find_header(root, &name).map(|h| raw_value(raw, h));
        push_nstring(out, v.as_deref().filter(|v| !v.is_empty()));
    };
    out.push(b'(');
    nstr(out, HeaderName::Date);
    out.push(b' ');
    nstr(out, HeaderName::Subject);
    out.push(b' ');
    let from = find_header(root, &HeaderName::From);
    push_addresses(out, raw, from);
    // RFC 3501 7.4.2: Sender and Reply-To default to From when absent or empty.
    for name in [HeaderName::Sender, HeaderName::ReplyTo] {
        out.push(b' ');
        let h = find_header(root, &name).filter(|h| !h.value.is_empty());
        push_addresses(out, raw, h.or(from));
    }
    for name in [HeaderName::To, HeaderName::Cc, HeaderName::Bcc] {
        out.push(b' ');
        push_addresses(out, raw, find_header(root, &name));
    }
    out.push(b' ');
    nstr(out, HeaderName::InReplyTo);
    out.push(b' ');
    nstr(out, HeaderName::MessageId);
    out.push(b')');
}

/// An address list (RFC 3501 7.4.2 env-from etc.): `((name adl mailbox
/// host) ...)`, groups as `(NIL NIL "group" NIL) ... (NIL NIL NIL NIL)`.
fn push_addresses(out: &mut Vec<u8>, raw: &[u8], h: Option<&mail_parser::Header<'_>>) {
    let Some(h) = h else {
        out.extend_from_slice(b"NIL");
        return;
    };
    // Names are shown as the header had them: a field written with
    // encoded words (RFC 2047) gets them back, raw UTF-8 stays raw.
    let encoded = slice(raw, h.offset_start as usize, h.offset_end as usize).windows(2).any(|w| w == b"=?");
    let mut body = Vec::new();
    let push_addr = |body: &mut Vec<u8>, a: &mail_parser::Addr<'_>| {
        let name = a.name.as_deref().filter(|n| !n.is_empty());
        let address = a.address.as_deref().filter(|n| !n.is_empty());
        // A lone word without an @ ("To: nobody") is parsed as a name: it
        // is the mailbox the writer meant.
        let (name, addr) = match (name, address) {
            (Some(n), None) => (None, n),
            (n, a) => (n, a.unwrap_or("")),
        };
        body.push(b'(');
        match name {
            Some(n) if encoded && !n.is_ascii() => {
                let word = format!("=?utf-8?b?{}?=", base64::engine::general_purpose::STANDARD.encode(n));
                push_string(body, word.as_bytes());
            }
            Some(n) => push_string(body, n.as_bytes()),
            None => body.extend_from_slice(b"NIL"),
        }
        body.extend_from_slice(b" NIL ");
        let (mailbox, host) = match addr.rfind('@') {
            Some(at) => (&addr[..at], &addr[at + 1..]),
            None => (addr, ""),
        };
        push_string(body, mailbox.as_bytes());
        body.push(b' ');
        // A missing host is an empty string: NIL would mean a group
        // (RFC 3501 7.4.2).
        push_string(body, host.as_bytes());
        body.push(b')');
    };
    match &h.value {
        HeaderValue::Address(Address::List(list)) => {
            for a in list {
                push_addr(&mut body, a);
            }
        }
        HeaderValue::Address(Address::Group(groups)) => {
            for g in groups {
                match &g.name {
                    Some(name) => {
                        body.extend_from_slice(b"(NIL NIL ");
                        push_string(&mut body, name.as_bytes());
                        body.extend_from_slice(b" NIL)");
                        for a in &g.addresses {
                            push_addr(&mut body, a);
                        }
                        body.extend_from_slice(b"(NIL NIL NIL NIL)");
                    }
                    None => {
                        for a in &g.addresses {
                            push_addr(&mut body, a);
                        }
                    }
                }
            }
        }
        _ => {}
    }
    if body.is_empty() {
        out.extend_from_slice(b"NIL");
    } else {
        out.push(b'(');
        out.extend_from_slice(&body);
        out.push(b')');
    }
}

fn content_type<'h>(p: &'h MessagePart<'_>) -> Option<&'h mail_parser::ContentType<'h>> {
    find_header(p, &HeaderName::ContentType).and_then(|h| h.value.as_content_type())
}

/// body-fld-param (RFC 3501 9): `("name" "value" ...)` or NIL. With
/// `text` set, a missing charset is given as us-ascii, the default of
/// every text/* type (RFC 2046 4.1.2).
fn push_params(out: &mut Vec<u8>, attrs: Option<&[mail_parser::Attribute<'_>]>, text: bool) {
    let attrs = attrs.unwrap_or(&[]);
    let add_charset = text && !attrs.iter().any(|a| a.name.eq_ignore_ascii_case("charset"));
    if attrs.is_empty() && !add_charset {
        out.extend_from_slice(b"NIL");
        return;
    }
    out.push(b'(');
    for (i, at) in attrs.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        push_string(out, at.name.as_bytes());
        out.push(b' ');
        push_string(out, at.value.as_bytes());
    }
    if add_charset {
        if !attrs.is_empty() {
            out.push(b' ');
        }
        out.extend_from_slice(b"\"charset\" \"us-ascii\"");
    }
    out.push(b')');
}

/// The extension data after md5 (RFC 3501 7.4.2): disposition, language,
/// location.
fn push_dsp_lang_loc(out: &mut Vec<u8>, raw: &[u8], p: &MessagePart<'_>) {
    out.push(b' ');
    match find_header(p, &HeaderName::ContentDisposition).and_then(|h| h.value.as_content_type()) {
        Some(d) => {
            out.push(b'(');
            push_string(out, d.c_type.as_bytes());
            out.push(b' ');
            push_params(out, d.attributes.as_deref(), false);
            out.push(b')');
        }
        None => out.extend_from_slice(b"NIL"),
    }
    out.push(b' ');
    let langs: Vec<String> = match find_header(p, &HeaderName::ContentLanguage) {
        Some(h) => match &h.value {
            HeaderValue::TextList(l) => l.iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect(),
            HeaderValue::Text(t) => vec![t.trim().to_string()],
            _ => Vec::new(),
        },
        None => Vec::new(),
    };
    match langs.as_slice() {
        [] => out.extend_from_slice(b"NIL"),
        [one] => push_string(out, one.as_bytes()),
        many => {
            out.push(b'(');
            for (i, l) in many.iter().enumerate() {
                if i > 0 {
                    out.push(b' ');
                }
                push_string(out, l.as_bytes());
            }
            out.push(b')');
        }
    }
    out.push(b' ');
    let loc = find_header(p, &HeaderName::ContentLocation).map(|h| raw_value(raw, h));
    push_nstring(out, loc.as_deref().filter(|v| !v.is_empty()));
}

fn body_of_part(level: Level<'_>, idx: usize, out: &mut Vec<u8>, ext: bool, depth: usize) {
    let Some(p) = level.part(idx) else {
        out.extend_from_slice(b"(\"text\" \"plain\" NIL NIL NIL \"7bit\" 0 0)");
        return;
    };
    let raw = level.raw;
    let ct = content_type(p);
    if let (PartType::Multipart(children), true) = (&p.body, depth <= MAX_DEPTH) {
        if !children.is_empty() {
            out.push(b'(');
            for &c in children {
                body_of_part(level, c as usize, out, ext, depth + 1);
            }
            out.push(b' ');
            let sub = ct.and_then(|c| c.c_subtype.as_deref()).unwrap_or("mixed");
            push_string(out, sub.as_bytes());
            if ext {
                out.push(b' ');
                push_params(out, ct.and_then(|c| c.attributes.as_deref()), false);
                push_dsp_lang_loc(out, raw, p);
            }
            out.push(b')');
            return;
        }
    }
    let body = level.part_body(idx);
    // RFC 2045 5.2: no Content-Type means text/plain; charset=us-ascii
    // (message/rfc822 inside multipart/digest, RFC 2046 5.1.5).
    let (ty, sub): (Cow<'_, str>, Cow<'_, str>) = match ct {
        Some(c) => (c.c_type.as_ref().into(), c.c_subtype.as_deref().unwrap_or("").into()),
        None if matches!(p.body, PartType::Message(_)) => ("message".into(), "rfc822".into()),
        None => ("text".into(), "plain".into()),
    };
    let is_multipart = ty.eq_ignore_ascii_case("multipart");
    let is_message = ty.eq_ignore_ascii_case("message") && sub.eq_ignore_ascii_case("rfc822");
    let is_text = ty.eq_ignore_ascii_case("text");
    out.push(b'(');
    if is_multipart {
        // A multipart without parts (no boundary found): shown as a leaf
        // of an opaque type, as the multipart grammar needs a part.
        out.extend_from_slice(b"\"application\" \"octet-stream\"");
    } else {
        push_string(out, ty.as_bytes());
        out.push(b' ');
        push_string(out, sub.as_bytes());
    }
    out.push(b' ');
    push_params(out, ct.and_then(|c| c.attributes.as_deref()), is_text);
    for name in [HeaderName::ContentId, HeaderName::ContentDescription] {
        out.push(b' ');
        let v = find_header(p, &name).map(|h| raw_value(raw, h));
        push_nstring(out, v.as_deref().filter(|v| !v.is_empty()));
    }
    out.push(b' ');
    let enc = find_header(p, &HeaderName::ContentTransferEncoding).map(|h| raw_value(raw, h));
    push_string(out, enc.as_deref().filter(|v| !v.is_empty()).unwrap_or(b"7bit"));
    out.push(b' ');
    push_num(out, body.len() as u64);
    if is_message {
        out.push(b' ');
        match (level.nested(idx), depth < MAX_DEPTH) {
            (Some(inner), true) => {
                envelope_of(inner.raw, inner.root(), out);
                out.push(b' ');
                body_of_part(inner, 0, out, ext, depth + 1);
            }
            _ => {
                // Not parseable as a message: an empty envelope and the
                // bytes as text, so the grammar still holds.
                out.extend_from_slice(b"(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL) (\"text\" \"plain\" NIL NIL NIL \"7bit\" ");
                push_num(out, body.len() as u64);
                out.push(b' ');
                push_num(out, count_lines(body));
                out.push(b')');
            }
        }
        out.push(b' ');
        push_num(out, count_lines(body));
    } else if is_text {
        out.push(b' ');
        push_num(out, count_lines(body));
    }
    if ext {
        // body-fld-md5: not computed.
        out.extend_from_slice(b" NIL");
        push_dsp_lang_loc(out, raw, p);
    }
    out.push(b')');
}

/// Base64 (RFC 2045 6.8), leniently: characters outside the alphabet
/// (line breaks, junk) are skipped, decoding stops at padding.
fn decode_base64(body: &[u8]) -> Vec<u8> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let mut out = Vec::with_capacity(body.len() / 4 * 3);
    let mut acc = 0u32;
    let mut n = 0;
    for &c in body {
        if c == b'=' {
            break;
        }
        let Some(v) = val(c) else { continue };
        acc = (acc << 6) | v;
        n += 1;
        if n == 4 {
            out.extend_from_slice(&[(acc >> 16) as u8, (acc >> 8) as u8, acc as u8]);
            acc = 0;
            n = 0;
        }
    }
    match n {
        2 => out.push((acc >> 4) as u8),
        3 => out.extend_from_slice(&[(acc >> 10) as u8, (acc >> 2) as u8]),
        _ => {}
    }
    out
}

/// Quoted-printable (RFC 2045 6.7): `=XX` octets, soft line breaks
/// (`=` at a line end) removed, a malformed `=` kept as it is.
fn decode_qp(body: &[u8]) -> Vec<u8> {
    fn hex(c: u8) -> Option<u8> {
        (c as char).to_digit(16).map(|d| d as u8)
    }
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        let c = body[i];
        if c != b'=' {
            out.push(c);
            i += 1;
            continue;
        }
        // Soft line break: '=' then optional trailing whitespace then a line end.
        let mut j = i + 1;
        while j < body.len() && matches!(body[j], b' ' | b'\t') {
            j += 1;
        }
        if body.get(j) == Some(&b'\n') {
            i = j + 1;
            continue;
        }
        if body.get(j) == Some(&b'\r') && body.get(j + 1) == Some(&b'\n') {
            i = j + 2;
            continue;
        }
        if j == body.len() {
            i = j;
            continue;
        }
        match (body.get(i + 1).copied().and_then(hex), body.get(i + 2).copied().and_then(hex)) {
            (Some(h), Some(l)) => {
                out.push(h << 4 | l);
                i += 3;
            }
            _ => {
                out.push(b'=');
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
