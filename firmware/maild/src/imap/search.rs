//! SEARCH (RFC 3501 6.4.4; MODSEQ RFC 7162 3.1.5): whether one message
//! matches a search key.
//!
//! Flags, dates, sizes and numbers come from what the session knows about
//! the message (`Meta`); header and body keys read the parsed message.
//! Substring matches ignore case (RFC 3501 6.4.4: "In all search keys
//! that use strings, a message matches the key if the string is a
//! substring of the field. The matching is case-insensitive."): both
//! sides are lowercased with Unicode's simple case mapping
//! (`str::to_lowercase`), after RFC 2047 words in headers and the
//! Content-Transfer-Encoding and charset of text parts are decoded.

use std::borrow::Cow;
use std::cell::OnceCell;

use mail_parser::parsers::MessageStream;
use mail_parser::{HeaderName, HeaderValue, MessageParser};
use proto::imap::{Date, SearchKey, SeqNum, SequenceSet};

use crate::imap::message::Parsed;

/// How much decoded text (headers and bodies, in bytes of UTF-8) one
/// message's BODY and TEXT keys compare; the rest is not searched.
pub const MAX_SEARCH_TEXT: usize = 16 * 1024 * 1024;

/// What SEARCH knows about one message without reading it.
pub struct Meta<'a> {
    pub seq: u32,
    pub uid: u32,
    pub seen: bool,
    pub answered: bool,
    pub flagged: bool,
    pub deleted: bool,
    pub draft: bool,
    pub recent: bool,
    /// The message's keywords as stored.
    pub keywords: &'a [String],
    /// Unix seconds, UTC.
    pub internal_date: i64,
    /// RFC822.SIZE.
    pub size: u64,
    pub modseq: u64,
}

/// The folder as the session sees it, for `*` in sequence sets.
pub struct Bounds {
    pub last_seq: u32,
    pub last_uid: u32,
}

/// Whether evaluating `key` needs the message's bytes (headers, body, or
/// the Date: field for the SENT* keys).
pub fn needs_message(key: &SearchKey) -> bool {
    match key {
        SearchKey::Bcc(_)
        | SearchKey::Body(_)
        | SearchKey::Cc(_)
        | SearchKey::From(_)
        | SearchKey::Header(..)
        | SearchKey::SentBefore(_)
        | SearchKey::SentOn(_)
        | SearchKey::SentSince(_)
        | SearchKey::Subject(_)
        | SearchKey::Text(_)
        | SearchKey::To(_) => true,
        SearchKey::Not(k) => needs_message(k),
        SearchKey::Or(a, b) => needs_message(a) || needs_message(b),
        SearchKey::And(keys) => keys.iter().any(needs_message),
        _ => false,
    }
}

/// Whether the message matches. `msg` is Some when `needs_message(key)`
/// is true; without it, header and body keys match nothing and the SENT*
/// keys use the internal date.
pub fn matches(key: &SearchKey, meta: &Meta<'_>, msg: Option<&Parsed<'_>>, bounds: &Bounds) -> bool {
    let ctx = Ctx { meta, msg, bounds, headers: OnceCell::new(), bodies: OnceCell::new(), sent: OnceCell::new() };
    ctx.eval(key)
}

/// RFC 3501 6.4.4 CHARSET: UTF-8 and US-ASCII (any case) are understood,
/// as is no CHARSET at all; anything else is Err (the session answers
/// `NO [BADCHARSET (UTF-8 US-ASCII)]`, RFC 3501 7.1). There is one way
/// to fail and the session words the answer, hence the unit error.
#[allow(clippy::result_unit_err)]
pub fn check_charset(charset: Option<&str>) -> Result<(), ()> {
    match charset {
        None => Ok(()),
        Some(c) if c.eq_ignore_ascii_case("UTF-8") || c.eq_ignore_ascii_case("US-ASCII") => Ok(()),
        Some(_) => Err(()),
    }
}

/// Whether a sequence set contains `n`, given the largest number in use
/// for `*` (RFC 3501 9: `*` is the largest number in use; a range's ends
/// may come in either order, `4:2` is `2:4`). With an empty folder
/// (`last` 0) a `*` matches nothing.
pub fn set_contains(set: &SequenceSet, n: u32, last: u32) -> bool {
    let resolve = |s: SeqNum| match s {
        SeqNum::Number(v) => Some(v),
        SeqNum::Last if last == 0 => None,
        SeqNum::Last => Some(last),
    };
    set.0.iter().any(|&(a, b)| match (resolve(a), resolve(b)) {
        (Some(a), Some(b)) => a.min(b) <= n && n <= a.max(b),
        _ => false,
    })
}

/// One header field: its name as written and its value with RFC 2047
/// words decoded and folding removed.
struct Field {
    name: String,
    value: String,
}

/// The evaluation of one key tree against one message; what is read from
/// the message is read once, on first need.
struct Ctx<'m, 'p> {
    meta: &'m Meta<'m>,
    msg: Option<&'m Parsed<'p>>,
    bounds: &'m Bounds,
    headers: OnceCell<Vec<Field>>,
    /// Lowercased decoded text of the header then of each text part,
    /// within `MAX_SEARCH_TEXT`; `[0]` is the header.
    bodies: OnceCell<Vec<String>>,
    /// The Date: field's date in its own zone, if it parses.
    sent: OnceCell<Option<Date>>,
}

impl Ctx<'_, '_> {
    fn eval(&self, key: &SearchKey) -> bool {
        let m = self.meta;
        match key {
            SearchKey::All => true,
            SearchKey::Answered => m.answered,
            SearchKey::Deleted => m.deleted,
            SearchKey::Draft => m.draft,
            SearchKey::Flagged => m.flagged,
            SearchKey::Seen => m.seen,
            SearchKey::Recent => m.recent,
            SearchKey::Unanswered => !m.answered,
            SearchKey::Undeleted => !m.deleted,
            SearchKey::Undraft => !m.draft,
            SearchKey::Unflagged => !m.flagged,
            SearchKey::Unseen => !m.seen,
            // RFC 3501 6.4.4: NEW is RECENT UNSEEN; OLD is NOT RECENT.
            SearchKey::New => m.recent && !m.seen,
            SearchKey::Old => !m.recent,
            SearchKey::Keyword(k) => has_keyword(m.keywords, k),
            SearchKey::Unkeyword(k) => !has_keyword(m.keywords, k),
            // RFC 3501 6.4.4: RFC822.SIZE larger / smaller than n, strictly.
            SearchKey::Larger(n) => m.size > u64::from(*n),
            SearchKey::Smaller(n) => m.size < u64::from(*n),
            // RFC 3501 6.4.4: the internal date, disregarding time and zone
            // (taken in UTC, where it is stored).
            SearchKey::Before(d) => utc_date(m.internal_date) < *d,
            SearchKey::On(d) => utc_date(m.internal_date) == *d,
            SearchKey::Since(d) => utc_date(m.internal_date) >= *d,
            // RFC 3501 6.4.4: the Date: header, disregarding time and zone.
            SearchKey::SentBefore(d) => self.sent_date() < *d,
            SearchKey::SentOn(d) => self.sent_date() == *d,
            SearchKey::SentSince(d) => self.sent_date() >= *d,
            SearchKey::From(s) => self.field_contains("from", s),
            SearchKey::To(s) => self.field_contains("to", s),
            SearchKey::Cc(s) => self.field_contains("cc", s),
            SearchKey::Bcc(s) => self.field_contains("bcc", s),
            SearchKey::Subject(s) => self.field_contains("subject", s),
            SearchKey::Header(name, s) => self.field_contains(name, s),
            // RFC 3501 6.4.4: BODY is the body; TEXT is header and body.
            SearchKey::Body(s) => self.text_contains(s, false),
            SearchKey::Text(s) => self.text_contains(s, true),
            SearchKey::Uid(set) => set_contains(set, m.uid, self.bounds.last_uid),
            SearchKey::Sequence(set) => set_contains(set, m.seq, self.bounds.last_seq),
            // RFC 7162 3.1.5: messages whose mod-sequence is at least n.
            SearchKey::ModSeq(n) => m.modseq >= *n,
            SearchKey::Not(k) => !self.eval(k),
            SearchKey::Or(a, b) => self.eval(a) || self.eval(b),
            SearchKey::And(keys) => keys.iter().all(|k| self.eval(k)),
        }
    }

    fn headers(&self) -> &[Field] {
        self.headers.get_or_init(|| self.msg.map(read_fields).unwrap_or_default())
    }

    /// Whether a field named `name` (any case) contains `needle`. An empty
    /// needle matches any message with the field (RFC 3501 6.4.4 HEADER;
    /// the same for FROM, TO, CC, BCC and SUBJECT).
    fn field_contains(&self, name: &str, needle: &[u8]) -> bool {
        let needle = fold(&String::from_utf8_lossy(needle));
        self.headers()
            .iter()
            .filter(|f| f.name.eq_ignore_ascii_case(name))
            .any(|f| needle.is_empty() || fold(&f.value).contains(&needle))
    }

    fn text_contains(&self, needle: &[u8], with_header: bool) -> bool {
        if self.msg.is_none() {
            return false;
        }
        let needle = fold(&String::from_utf8_lossy(needle));
        let bodies = self.bodies.get_or_init(|| self.read_texts());
        let skip = usize::from(!with_header);
        needle.is_empty() || bodies.iter().skip(skip).any(|t| t.contains(&needle))
    }

    /// The header as text, then the text parts, lowercased, within
    /// `MAX_SEARCH_TEXT` altogether.
    fn read_texts(&self) -> Vec<String> {
        let Some(msg) = self.msg else { return vec![String::new()] };
        let mut budget = MAX_SEARCH_TEXT;
        let mut header = String::new();
        for f in self.headers() {
            header.push_str(&f.name);
            header.push_str(": ");
            header.push_str(&f.value);
            header.push('\n');
        }
        let mut out = vec![fold(take_within(&header, &mut budget))];
        for t in msg.body_texts() {
            if budget == 0 {
                break;
            }
            out.push(fold(take_within(&t, &mut budget)));
        }
        out
    }

    /// The date SENT* keys compare: the Date: field's, in its own zone;
    /// without a usable Date:, the internal date's (as Dovecot does).
    fn sent_date(&self) -> Date {
        let sent = *self.sent.get_or_init(|| self.msg.and_then(read_sent_date));
        sent.unwrap_or_else(|| utc_date(self.meta.internal_date))
    }
}

/// Keywords compare without regard to ASCII case, as flag names do
/// elsewhere in the session.
fn has_keyword(keywords: &[String], k: &str) -> bool {
    keywords.iter().any(|have| have.eq_ignore_ascii_case(k))
}

/// Lowercase for case-insensitive comparison (Unicode simple case mapping).
fn fold(s: &str) -> String {
    s.to_lowercase()
}

/// The first `budget` bytes of `s` (cut at a character boundary), taken
/// from the budget.
fn take_within<'s>(s: &'s str, budget: &mut usize) -> &'s str {
    let mut end = s.len().min(*budget);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    *budget -= end;
    &s[..end]
}

/// The top-level header's fields, decoded. A message shown without
/// structure (see `message::parse`) still has its header read, by the
/// parser's header-only mode, which nests nothing.
fn read_fields(msg: &Parsed<'_>) -> Vec<Field> {
    let collect = |raw: &[u8], headers: &[mail_parser::Header<'_>]| -> Vec<Field> {
        headers
            .iter()
            .map(|h| Field { name: h.name.as_str().to_string(), value: decode_value(raw, h) })
            .collect()
    };
    match msg.top_headers() {
        Some((raw, headers)) => collect(raw, headers),
        None => match MessageParser::default().parse_headers(msg.raw()) {
            Some(m) => m.parts.first().map(|p| collect(msg.raw(), &p.headers)).unwrap_or_default(),
            None => Vec::new(),
        },
    }
}

/// A field's value with RFC 2047 encoded words decoded and folding
/// removed (RFC 5322 2.2.3), whatever the field: address fields are
/// searched as written, display names decoded.
fn decode_value(raw: &[u8], h: &mail_parser::Header<'_>) -> String {
    let start = (h.offset_start as usize).min(raw.len());
    let end = (h.offset_end as usize).clamp(start, raw.len());
    let mut bytes: Cow<'_, [u8]> = Cow::Borrowed(&raw[start..end]);
    // The parser reads a value up to its line end.
    if !bytes.ends_with(b"\n") {
        bytes.to_mut().push(b'\n');
    }
    match MessageStream::new(&bytes).parse_unstructured() {
        HeaderValue::Text(t) => t.into_owned(),
        _ => String::new(),
    }
}

/// The Date: field's date as written (RFC 5322 3.3), if it parses to a
/// real calendar date.
fn read_sent_date(msg: &Parsed<'_>) -> Option<Date> {
    let from = |headers: &[mail_parser::Header<'_>]| {
        headers.iter().find(|h| h.name == HeaderName::Date).and_then(|h| h.value.as_datetime()).and_then(|dt| {
            let valid = (1..=12).contains(&dt.month) && (1..=days_in_month(i64::from(dt.year), dt.month)).contains(&dt.day);
            valid.then_some(Date { year: dt.year, month: dt.month, day: dt.day })
        })
    };
    match msg.top_headers() {
        Some((_, headers)) => from(headers),
        None => MessageParser::default().parse_headers(msg.raw()).and_then(|m| m.parts.first().and_then(|p| from(&p.headers))),
    }
}

fn days_in_month(year: i64, month: u8) -> u8 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => 31,
    }
}

/// The UTC calendar date of a unix time (proleptic Gregorian; days from
/// the epoch to a civil date after H. Hinnant's `civil_from_days`).
/// Years outside what a `Date` holds are clamped.
fn utc_date(unix: i64) -> Date {
    let days = unix.div_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let month = (if mp < 10 { mp + 3 } else { mp - 9 }) as u8;
    let year = yoe + era * 400 + i64::from(month <= 2);
    match u16::try_from(year) {
        Ok(year) => Date { year, month, day },
        Err(_) if year < 0 => Date { year: 0, month: 1, day: 1 },
        Err(_) => Date { year: u16::MAX, month: 12, day: 31 },
    }
}

#[cfg(test)]
mod tests;
