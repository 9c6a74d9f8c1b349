//! The IMAP command parser (RFC 3501 9, with the extensions mailfort
//! offers). [`parse_command`] reads one complete command as the daemon's framer
//! (`maild::imap`) delimits it: its lines with their literals
//! inline, without the final CRLF. An APPEND is read only up to the
//! announcement of its message literal (see [`AppendHead`]).
//!
//! Every list, string and nesting level is bounded by a named constant;
//! keywords are case-insensitive (RFC 3501 9, "case-insensitive" note).

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use super::types::*;
use crate::date::days_from_civil;

/// Longest tag. RFC 3501 sets no bound; clients use a few characters.
pub const MAX_TAG: usize = 64;
/// Parenthesis depth of a SEARCH program (NOT, OR and lists count too).
pub const MAX_NESTING: usize = 32;
/// Ranges in one sequence set.
pub const MAX_SEQUENCE_RANGES: usize = 1024;
/// Keys in one SEARCH program, all levels together.
pub const MAX_SEARCH_KEYS: usize = 1024;
/// Items of any other list in a command (flags, FETCH items, header
/// field names, STATUS items, ENABLE capabilities, LIST patterns).
pub const MAX_LIST_ITEMS: usize = 256;
/// Part numbers in one section (`1.2.3...`).
pub const MAX_PART_DEPTH: usize = 32;
/// RFC 2971 3.3: at most 30 field/value pairs in ID.
pub const MAX_ID_PAIRS: usize = 30;
/// RFC 2971 3.3: a field name is at most 30 octets.
pub const MAX_ID_FIELD: usize = 30;
/// RFC 2971 3.3: a value is at most 1024 octets.
pub const MAX_ID_VALUE: usize = 1024;
/// Longest mechanism name (RFC 4422 3.1: 20 characters).
pub const MAX_MECHANISM: usize = 20;

/// Why a command was refused: the tag when one was read (so that the
/// server can answer `tag BAD reason`), and a short fixed reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub tag: Option<String>,
    pub reason: &'static str,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason)
    }
}

type R<T> = Result<T, &'static str>;

/// Whether `line` (with or without its CRLF) is the `DONE` that ends IDLE
/// (RFC 2177 3: "DONE", case-insensitive as every keyword).
pub fn is_done(line: &[u8]) -> bool {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    line.eq_ignore_ascii_case(b"DONE")
}

/// Parses one complete command (see the module documentation).
pub fn parse_command(input: &[u8]) -> Result<Tagged, ParseError> {
    let mut p = P { s: input, i: 0, keys: 0 };
    let tag = p.tag().map_err(|reason| ParseError { tag: None, reason })?;
    let tagged = |reason| ParseError { tag: Some(tag.clone()), reason };
    p.sp().map_err(tagged)?;
    let command = command(&mut p).map_err(tagged)?;
    if !p.at_end() {
        return Err(tagged("unexpected characters after the command"));
    }
    Ok(Tagged { tag, command })
}

// ---------------------------------------------------------------------------
// Characters (RFC 3501 9)

/// RFC 3501 9 CTL: %x00-1F / %x7F.
fn is_ctl(b: u8) -> bool {
    b < 0x20 || b == 0x7f
}

/// RFC 3501 9 ATOM-CHAR: any CHAR except atom-specials ("(" / ")" / "{" /
/// SP / CTL / list-wildcards / quoted-specials / resp-specials).
fn is_atom_char(b: u8) -> bool {
    b < 0x80 && !is_ctl(b) && !matches!(b, b'(' | b')' | b'{' | b' ' | b'%' | b'*' | b'"' | b'\\' | b']')
}

/// RFC 3501 9 ASTRING-CHAR: ATOM-CHAR / resp-specials.
fn is_astring_char(b: u8) -> bool {
    is_atom_char(b) || b == b']'
}

/// RFC 3501 9 list-char: ATOM-CHAR / list-wildcards / resp-specials.
fn is_list_char(b: u8) -> bool {
    is_astring_char(b) || b == b'%' || b == b'*'
}

/// RFC 3501 9 tag: 1*<any ASTRING-CHAR except "+">.
fn is_tag_char(b: u8) -> bool {
    is_astring_char(b) && b != b'+'
}

/// RFC 4648 4 base64 alphabet and padding (SASL responses, RFC 4959).
fn is_base64_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=')
}

/// RFC 3501 9 base64 = *(4base64-char) [base64-terminal];
/// base64-terminal = (2base64-char "==") / (3base64-char "="), not empty
/// (an empty response is "=", RFC 4959 3).
fn is_base64(b: &[u8]) -> bool {
    let data = b.strip_suffix(b"==").or_else(|| b.strip_suffix(b"=")).unwrap_or(b);
    !b.is_empty() && b.len() % 4 == 0 && !data.contains(&b'=')
}

fn ascii_string(b: &[u8]) -> String {
    // Only called on bytes checked to be ASCII.
    b.iter().map(|&c| c as char).collect()
}

// ---------------------------------------------------------------------------
// The cursor

struct P<'a> {
    s: &'a [u8],
    i: usize,
    /// SEARCH keys read so far.
    keys: usize,
}

impl<'a> P<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn at_end(&self) -> bool {
        self.i >= self.s.len()
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, b: u8, reason: &'static str) -> R<()> {
        if self.eat(b) {
            Ok(())
        } else {
            Err(reason)
        }
    }

    /// Exactly one SP (RFC 3501 9: arguments are separated by one space).
    fn sp(&mut self) -> R<()> {
        self.expect(b' ', "expected a space")
    }

    fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &'a [u8] {
        let start = self.i;
        while self.peek().is_some_and(&f) {
            self.i += 1;
        }
        &self.s[start..self.i]
    }

    /// A case-insensitive keyword, consumed only if it is there and not
    /// followed by more atom characters.
    fn keyword(&mut self, kw: &str) -> bool {
        let kw = kw.as_bytes();
        let end = self.i + kw.len();
        if end <= self.s.len() && self.s[self.i..end].eq_ignore_ascii_case(kw) && !self.s.get(end).is_some_and(|&b| is_atom_char(b) && b != b'[' && b != b'<') {
            self.i = end;
            true
        } else {
            false
        }
    }

    /// A word naming a command, key or item: letters, digits, `.`, `-`
    /// and `=`, upper-cased.
    fn word(&mut self) -> R<String> {
        let w = self.take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'='));
        if w.is_empty() {
            return Err("expected a keyword");
        }
        Ok(w.iter().map(|b| b.to_ascii_uppercase() as char).collect())
    }

    /// RFC 3501 2.2.1, 9 tag. A tag ends at the SP before the command
    /// (RFC 3501 9 command = tag SP ...) or at the end of the input; one
    /// that runs into another character is not the client's tag, which is
    /// not echoed (the server answers `* BAD`).
    fn tag(&mut self) -> R<String> {
        let t = self.take_while(is_tag_char);
        if t.is_empty() {
            return Err("missing tag");
        }
        if t.len() > MAX_TAG {
            return Err("tag too long");
        }
        if self.peek().is_some_and(|b| b != b' ') {
            return Err("bad character in the tag");
        }
        Ok(ascii_string(t))
    }

    /// RFC 3501 9 atom: 1*ATOM-CHAR.
    fn atom(&mut self) -> R<&'a [u8]> {
        let a = self.take_while(is_atom_char);
        if a.is_empty() {
            return Err("expected an atom");
        }
        Ok(a)
    }

    /// RFC 3501 9 number: 1*DIGIT, unsigned 32-bit.
    fn number(&mut self) -> R<u32> {
        let n = self.number64()?;
        u32::try_from(n).map_err(|_| "number out of range")
    }

    /// RFC 3501 9 nz-number: a number that is not zero.
    fn nz_number(&mut self) -> R<u32> {
        match self.number()? {
            0 => Err("zero is not allowed here"),
            n => Ok(n),
        }
    }

    /// RFC 7162 7 mod-sequence-value: 1*DIGIT up to 2^63-1 (also used for
    /// numbers generally, checked narrower by the callers).
    fn number64(&mut self) -> R<u64> {
        let d = self.take_while(|b| b.is_ascii_digit());
        if d.is_empty() {
            return Err("expected a number");
        }
        let mut n: u64 = 0;
        for &c in d {
            n = n.checked_mul(10).and_then(|n| n.checked_add(u64::from(c - b'0'))).ok_or("number out of range")?;
        }
        if n > i64::MAX as u64 {
            return Err("number out of range");
        }
        Ok(n)
    }

    /// RFC 7162 7 mod-sequence-value: 1*DIGIT, not zero.
    fn mod_sequence_value(&mut self) -> R<u64> {
        match self.number64()? {
            0 => Err("zero mod-sequence"),
            n => Ok(n),
        }
    }

    /// RFC 3501 9 quoted: DQUOTE *QUOTED-CHAR DQUOTE, where QUOTED-CHAR is
    /// any TEXT-CHAR except quoted-specials, or `\` quoted-specials. Bytes
    /// over 0x7f are taken (RFC 9051 allows UTF-8 here), CR, LF and NUL are
    /// not.
    fn quoted(&mut self) -> R<Vec<u8>> {
        self.expect(b'"', "expected a quoted string")?;
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None => return Err("unterminated quoted string"),
                Some(b'"') => {
                    self.i += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.i += 1;
                    match self.peek() {
                        Some(c @ (b'"' | b'\\')) => {
                            out.push(c);
                            self.i += 1;
                        }
                        _ => return Err("bad escape in a quoted string"),
                    }
                }
                Some(b'\r' | b'\n' | 0) => return Err("control character in a quoted string"),
                Some(c) => {
                    out.push(c);
                    self.i += 1;
                }
            }
        }
    }

    /// The announcement of a literal: `{n}` or `{n+}` (RFC 7888 LITERAL+),
    /// with `~` before it for a literal8 (RFC 3516 4.4). Returns (length,
    /// non_sync, binary); the CRLF after it is not consumed.
    fn literal_head(&mut self, binary_allowed: bool) -> R<(u32, bool, bool)> {
        let binary = self.eat(b'~');
        if binary && !binary_allowed {
            return Err("binary literal not allowed here");
        }
        self.expect(b'{', "expected a literal")?;
        let n = self.number()?;
        let non_sync = self.eat(b'+');
        self.expect(b'}', "bad literal")?;
        Ok((n, non_sync, binary))
    }

    /// The CRLF after a literal's announcement (a bare LF is taken, as the
    /// framer takes it).
    fn literal_crlf(&mut self) -> R<()> {
        self.eat(b'\r');
        self.expect(b'\n', "expected CRLF after a literal")
    }

    /// RFC 3501 9 literal: "{" number "}" CRLF *CHAR8, CHAR8 being any
    /// octet but NUL.
    fn literal(&mut self) -> R<Vec<u8>> {
        let (n, _, _) = self.literal_head(false)?;
        self.literal_crlf()?;
        let n = n as usize;
        let body = self.s.get(self.i..).filter(|r| r.len() >= n).ok_or("literal shorter than announced")?;
        let body = &body[..n];
        if body.contains(&0) {
            return Err("NUL in a literal");
        }
        self.i += n;
        Ok(body.to_vec())
    }

    /// RFC 3501 9 string: quoted / literal.
    fn string(&mut self) -> R<Vec<u8>> {
        match self.peek() {
            Some(b'"') => self.quoted(),
            Some(b'{') => self.literal(),
            _ => Err("expected a string"),
        }
    }

    /// RFC 3501 9 astring: 1*ASTRING-CHAR / string.
    fn astring(&mut self) -> R<Vec<u8>> {
        match self.peek() {
            Some(b'"' | b'{') => self.string(),
            _ => {
                let a = self.take_while(is_astring_char);
                if a.is_empty() {
                    return Err("expected a string");
                }
                Ok(a.to_vec())
            }
        }
    }

    /// RFC 3501 9 nstring: string / nil.
    fn nstring(&mut self) -> R<Option<Vec<u8>>> {
        if self.keyword("NIL") {
            Ok(None)
        } else {
            self.string().map(Some)
        }
    }

    /// RFC 3501 9 mailbox: "INBOX" / astring; INBOX is case-insensitive
    /// (RFC 3501 5.1) and given as `INBOX`.
    fn mailbox(&mut self) -> R<MailboxName> {
        let m = self.astring()?;
        Ok(if m.eq_ignore_ascii_case(b"INBOX") { b"INBOX".to_vec() } else { m })
    }

    /// RFC 3501 9 list-mailbox: 1*list-char / string.
    fn list_mailbox(&mut self) -> R<MailboxName> {
        match self.peek() {
            Some(b'"' | b'{') => self.string(),
            _ => {
                let a = self.take_while(is_list_char);
                if a.is_empty() {
                    return Err("expected a mailbox pattern");
                }
                Ok(a.to_vec())
            }
        }
    }

    /// RFC 3501 9 seq-number: nz-number / "*".
    fn seq_number(&mut self) -> R<SeqNum> {
        if self.eat(b'*') {
            Ok(SeqNum::Last)
        } else {
            self.nz_number().map(SeqNum::Number)
        }
    }

    /// RFC 3501 9 sequence-set: (seq-number / seq-range) ["," sequence-set];
    /// seq-range = seq-number ":" seq-number, either end first.
    fn sequence_set(&mut self) -> R<SequenceSet> {
        let mut ranges = Vec::new();
        loop {
            if ranges.len() >= MAX_SEQUENCE_RANGES {
                return Err("too many ranges in a sequence set");
            }
            let a = self.seq_number()?;
            let b = if self.eat(b':') { self.seq_number()? } else { a };
            ranges.push((a, b));
            if !self.eat(b',') {
                return Ok(SequenceSet(ranges));
            }
        }
    }

    /// A sequence set of UIDs where `*` is not allowed (RFC 7162 3.2.5
    /// known-uids, seq-match-data).
    fn sequence_set_no_star(&mut self) -> R<SequenceSet> {
        let s = self.sequence_set()?;
        if s.0.iter().any(|&(a, b)| a == SeqNum::Last || b == SeqNum::Last) {
            return Err("\"*\" is not allowed here");
        }
        Ok(s)
    }

    /// `(` items separated by SP `)`, empty allowed when `empty_ok`.
    fn list<T>(&mut self, empty_ok: bool, mut item: impl FnMut(&mut Self) -> R<T>) -> R<Vec<T>> {
        self.expect(b'(', "expected \"(\"")?;
        let mut out = Vec::new();
        if self.eat(b')') {
            return if empty_ok { Ok(out) } else { Err("empty list") };
        }
        loop {
            if out.len() >= MAX_LIST_ITEMS {
                return Err("list too long");
            }
            out.push(item(self)?);
            if self.eat(b')') {
                return Ok(out);
            }
            self.sp()?;
        }
    }

    /// RFC 3501 9 flag: "\Answered" / "\Flagged" / "\Deleted" / "\Seen" /
    /// "\Draft" / flag-keyword / flag-extension. `\Recent` and other
    /// `\atom`s are kept as [`Flag::Extension`].
    fn flag(&mut self) -> R<Flag> {
        if self.eat(b'\\') {
            let a = self.atom()?;
            let known = [("Seen", Flag::Seen), ("Answered", Flag::Answered), ("Flagged", Flag::Flagged), ("Deleted", Flag::Deleted), ("Draft", Flag::Draft)];
            for (name, f) in known {
                if a.eq_ignore_ascii_case(name.as_bytes()) {
                    return Ok(f);
                }
            }
            let mut s = String::from("\\");
            s.push_str(&ascii_string(a));
            Ok(Flag::Extension(s))
        } else {
            Ok(Flag::Keyword(ascii_string(self.atom()?)))
        }
    }

    /// RFC 3501 9 flag-list: "(" [flag *(SP flag)] ")".
    fn flag_list(&mut self) -> R<Vec<Flag>> {
        self.list(true, Self::flag)
    }

    /// RFC 3501 9 date-month, case-insensitive.
    fn month(&mut self) -> R<u8> {
        const MONTHS: [&[u8]; 12] = [b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec"];
        let m = self.s.get(self.i..self.i + 3).ok_or("expected a month")?;
        let n = MONTHS.iter().position(|x| x.eq_ignore_ascii_case(m)).ok_or("bad month")?;
        self.i += 3;
        Ok(n as u8 + 1)
    }

    fn digits(&mut self, n: usize) -> R<u32> {
        let d = self.s.get(self.i..self.i + n).filter(|d| d.iter().all(u8::is_ascii_digit)).ok_or("expected digits")?;
        self.i += n;
        Ok(d.iter().fold(0, |a, &c| a * 10 + u32::from(c - b'0')))
    }

    /// RFC 3501 9 date-text: date-day "-" date-month "-" date-year, with
    /// date-day = 1*2DIGIT and date-year = 4DIGIT.
    fn date_text(&mut self) -> R<Date> {
        let day = self.take_while(|b| b.is_ascii_digit());
        if day.is_empty() || day.len() > 2 {
            return Err("bad day");
        }
        let day = day.iter().fold(0u8, |a, &c| a * 10 + (c - b'0'));
        self.expect(b'-', "bad date")?;
        let month = self.month()?;
        self.expect(b'-', "bad date")?;
        let year = self.digits(4)? as u16;
        check_day(year, month, day)?;
        Ok(Date { year, month, day })
    }

    /// RFC 3501 9 date: date-text / DQUOTE date-text DQUOTE.
    fn date(&mut self) -> R<Date> {
        if self.eat(b'"') {
            let d = self.date_text()?;
            self.expect(b'"', "bad date")?;
            Ok(d)
        } else {
            self.date_text()
        }
    }

    /// RFC 3501 9 date-time: DQUOTE date-day-fixed "-" date-month "-"
    /// date-year SP time SP zone DQUOTE; date-day-fixed = (SP DIGIT) /
    /// 2DIGIT (a single digit is taken too); time = 2DIGIT ":" 2DIGIT ":"
    /// 2DIGIT; zone = ("+" / "-") 4DIGIT.
    fn date_time(&mut self) -> R<DateTime> {
        self.expect(b'"', "expected a date-time")?;
        // RFC 3501 9 date-day-fixed: the space pads a one-digit day only.
        let padded = self.eat(b' ');
        let day_start = self.i;
        let Date { year, month, day } = self.date_text()?;
        if padded && self.s[day_start..].iter().take_while(|b| b.is_ascii_digit()).count() != 1 {
            return Err("bad day");
        }
        self.sp()?;
        let h = self.digits(2)?;
        self.expect(b':', "bad time")?;
        let m = self.digits(2)?;
        self.expect(b':', "bad time")?;
        let s = self.digits(2)?;
        // A leap second (60) is taken as RFC 5322 3.3 allows it.
        if h > 23 || m > 59 || s > 60 {
            return Err("bad time");
        }
        self.sp()?;
        let sign: i16 = match self.peek() {
            Some(b'+') => 1,
            Some(b'-') => -1,
            _ => return Err("bad zone"),
        };
        self.i += 1;
        let zh = self.digits(2)?;
        let zm = self.digits(2)?;
        if zm > 59 {
            return Err("bad zone");
        }
        self.expect(b'"', "bad date-time")?;
        let zone_minutes = sign * (zh * 60 + zm) as i16;
        let local = days_from_civil(i64::from(year), u32::from(month), u32::from(day)) * 86_400 + i64::from(h * 3600 + m * 60 + s);
        Ok(DateTime { unix: local - i64::from(zone_minutes) * 60, zone_minutes })
    }
}

fn is_leap(y: u16) -> bool {
    y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
}

fn check_day(year: u16, month: u8, day: u8) -> R<()> {
    let last = match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    if day == 0 || day > last {
        return Err("bad day");
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Commands (RFC 3501 6 and 9 command)

fn command(p: &mut P<'_>) -> R<Command> {
    let name = p.word()?;
    let c = match name.as_str() {
        // RFC 3501 9 command-any.
        "CAPABILITY" => Command::Capability,
        "NOOP" => Command::Noop,
        "LOGOUT" => Command::Logout,
        // RFC 2971 4: "ID" SP id-params-list.
        "ID" => {
            p.sp()?;
            Command::Id(id_params(p)?)
        }
        // RFC 3501 9 command-nonauth.
        "STARTTLS" => Command::StartTls,
        "AUTHENTICATE" => authenticate(p)?,
        // RFC 3501 9 login = "LOGIN" SP userid SP password.
        "LOGIN" => {
            p.sp()?;
            let user = p.astring()?;
            p.sp()?;
            let password = p.astring()?;
            Command::Login { user, password }
        }
        // RFC 5161 4: "ENABLE" 1*(SP capability).
        "ENABLE" => {
            let mut caps = Vec::new();
            while p.eat(b' ') {
                if caps.len() >= MAX_LIST_ITEMS {
                    return Err("too many capabilities");
                }
                caps.push(ascii_string(p.atom()?));
            }
            if caps.is_empty() {
                return Err("ENABLE needs a capability");
            }
            Command::Enable(caps)
        }
        // RFC 3501 9 select / examine, RFC 4466 2.1 select-params.
        "SELECT" | "EXAMINE" => {
            p.sp()?;
            let mailbox = p.mailbox()?;
            let params = if p.eat(b' ') { select_params(p)? } else { SelectParams::default() };
            if name == "SELECT" {
                Command::Select { mailbox, params }
            } else {
                Command::Examine { mailbox, params }
            }
        }
        "CREATE" => create(p)?,
        "DELETE" => Command::Delete(mailbox_arg(p)?),
        // RFC 3501 9 rename = "RENAME" SP mailbox SP mailbox.
        "RENAME" => {
            let from = mailbox_arg(p)?;
            let to = mailbox_arg(p)?;
            Command::Rename { from, to }
        }
        "SUBSCRIBE" => Command::Subscribe(mailbox_arg(p)?),
        "UNSUBSCRIBE" => Command::Unsubscribe(mailbox_arg(p)?),
        "LIST" => list(p)?,
        // RFC 3501 9 lsub = "LSUB" SP mailbox SP list-mailbox.
        "LSUB" => {
            let reference = mailbox_arg(p)?;
            p.sp()?;
            let pattern = p.list_mailbox()?;
            Command::Lsub { reference, pattern }
        }
        // RFC 2342 5.
        "NAMESPACE" => Command::Namespace,
        // RFC 3501 9 status = "STATUS" SP mailbox SP "(" status-att *(SP status-att) ")".
        "STATUS" => {
            let mailbox = mailbox_arg(p)?;
            p.sp()?;
            let items = p.list(false, status_att)?;
            Command::Status { mailbox, items }
        }
        "APPEND" => append(p)?,
        // RFC 2177 3: "IDLE" (DONE is read by the daemon, see is_done).
        "IDLE" => Command::Idle,
        // RFC 3501 9 command-select.
        "CHECK" => Command::Check,
        "CLOSE" => Command::Close,
        // RFC 3691 3.
        "UNSELECT" => Command::Unselect,
        "EXPUNGE" => Command::Expunge,
        "SEARCH" => search(p, false)?,
        "FETCH" => fetch(p, false)?,
        "STORE" => store(p, false)?,
        "COPY" => copy_move(p, false, false)?,
        // RFC 6851 3.1: "MOVE" SP sequence-set SP mailbox.
        "MOVE" => copy_move(p, false, true)?,
        // RFC 3501 9 uid = "UID" SP (copy / fetch / search / store);
        // RFC 4315 2.1 UID EXPUNGE; RFC 6851 3.2 UID MOVE.
        "UID" => {
            p.sp()?;
            match p.word()?.as_str() {
                "COPY" => copy_move(p, true, false)?,
                "MOVE" => copy_move(p, true, true)?,
                "FETCH" => fetch(p, true)?,
                "SEARCH" => search(p, true)?,
                "STORE" => store(p, true)?,
                "EXPUNGE" => {
                    p.sp()?;
                    Command::UidExpunge(p.sequence_set()?)
                }
                _ => return Err("unknown UID command"),
            }
        }
        _ => return Err("unknown command"),
    };
    Ok(c)
}

fn mailbox_arg(p: &mut P<'_>) -> R<MailboxName> {
    p.sp()?;
    p.mailbox()
}

/// RFC 2971 4: id-params-list = "(" *(string SP nstring) ")" / nil, with
/// the RFC 2971 3.3 bounds.
fn id_params(p: &mut P<'_>) -> R<Option<Vec<(Vec<u8>, Option<Vec<u8>>)>>> {
    if p.keyword("NIL") {
        return Ok(None);
    }
    let pairs = p.list(true, |p| {
        let field = p.string()?;
        p.sp()?;
        let value = p.nstring()?;
        if field.len() > MAX_ID_FIELD || value.as_ref().is_some_and(|v| v.len() > MAX_ID_VALUE) {
            return Err("ID field or value too long");
        }
        Ok((field, value))
    })?;
    if pairs.len() > MAX_ID_PAIRS {
        return Err("too many ID fields");
    }
    Ok(Some(pairs))
}

/// RFC 3501 9 authenticate = "AUTHENTICATE" SP auth-type; RFC 4959 3
/// adds [SP (base64 / "=")]: the initial response as sent (base64 text),
/// `=` giving an empty one.
fn authenticate(p: &mut P<'_>) -> R<Command> {
    p.sp()?;
    let m = p.atom()?;
    if m.len() > MAX_MECHANISM {
        return Err("mechanism name too long");
    }
    let mechanism = m.iter().map(|b| b.to_ascii_uppercase() as char).collect();
    let initial = if p.eat(b' ') {
        let r = p.take_while(is_base64_char);
        if r == b"=" {
            Some(Vec::new())
        } else if is_base64(r) {
            Some(r.to_vec())
        } else {
            return Err("bad initial response");
        }
    } else {
        None
    };
    Ok(Command::Authenticate { mechanism, initial })
}

/// RFC 4466 2.1 select-params = SP "(" select-param *(SP select-param) ")";
/// RFC 7162 3.1.8 CONDSTORE, 3.2.5 QRESYNC SP "(" uidvalidity SP
/// mod-sequence-value [SP known-uids] [SP seq-match-data] ")".
fn select_params(p: &mut P<'_>) -> R<SelectParams> {
    let mut params = SelectParams::default();
    p.list(false, |p| {
        match p.word()?.as_str() {
            "CONDSTORE" => params.condstore = true,
            "QRESYNC" => {
                p.sp()?;
                p.expect(b'(', "expected \"(\"")?;
                let uid_validity = p.nz_number()?;
                p.sp()?;
                let mod_seq = p.mod_sequence_value()?;
                let mut q = Qresync { uid_validity, mod_seq, known_uids: None, seq_match: None };
                if p.eat(b' ') {
                    if p.peek() != Some(b'(') {
                        q.known_uids = Some(p.sequence_set_no_star()?);
                        if p.eat(b' ') {
                            q.seq_match = Some(seq_match(p)?);
                        }
                    } else {
                        q.seq_match = Some(seq_match(p)?);
                    }
                }
                p.expect(b')', "expected \")\"")?;
                params.qresync = Some(q);
            }
            _ => return Err("unknown SELECT parameter"),
        }
        Ok(())
    })?;
    Ok(params)
}

/// RFC 7162 7 seq-match-data = "(" known-sequence-set SP known-uid-set ")".
fn seq_match(p: &mut P<'_>) -> R<(SequenceSet, SequenceSet)> {
    p.expect(b'(', "expected \"(\"")?;
    let seqs = p.sequence_set_no_star()?;
    p.sp()?;
    let uids = p.sequence_set_no_star()?;
    p.expect(b')', "expected \")\"")?;
    Ok((seqs, uids))
}

/// RFC 3501 9 create = "CREATE" SP mailbox; RFC 4466 2.2 [create-params];
/// RFC 6154 3 create-param =/ "USE" SP "(" [use-attr *(SP use-attr)] ")".
fn create(p: &mut P<'_>) -> R<Command> {
    let mailbox = mailbox_arg(p)?;
    let mut special_use = Vec::new();
    if p.eat(b' ') {
        p.list(false, |p| {
            if p.word()? != "USE" {
                return Err("unknown CREATE parameter");
            }
            p.sp()?;
            let attrs = p.list(true, |p| {
                p.expect(b'\\', "expected a special-use attribute")?;
                let mut s = String::from("\\");
                s.push_str(&ascii_string(p.atom()?));
                Ok(s)
            })?;
            special_use.extend(attrs);
            Ok(())
        })?;
    }
    Ok(Command::Create { mailbox, special_use })
}

/// RFC 5258 6: list = "LIST" [SP list-select-opts] SP mailbox SP
/// mbox-or-pat [SP list-return-opts].
fn list(p: &mut P<'_>) -> R<Command> {
    p.sp()?;
    let mut select = ListSelect::default();
    if p.peek() == Some(b'(') {
        let mut base = false;
        let mut independent = false;
        p.list(true, |p| {
            match p.word()?.as_str() {
                // list-select-base-opt.
                "SUBSCRIBED" => (select.subscribed, base) = (true, true),
                // RFC 6154 5.1.
                "SPECIAL-USE" => (select.special_use, base) = (true, true),
                // list-select-independent-opt.
                "REMOTE" => (select.remote, independent) = (true, true),
                // list-select-mod.
                "RECURSIVEMATCH" => select.recursive_match = true,
                _ => return Err("unknown LIST selection option"),
            }
            Ok(())
        })?;
        // RFC 5258 3.1: RECURSIVEMATCH needs a base option to modify.
        if select.recursive_match && !base {
            return Err("RECURSIVEMATCH without a base option");
        }
        let _ = independent;
        p.sp()?;
    }
    let reference = p.mailbox()?;
    p.sp()?;
    // RFC 5258 6: mbox-or-pat = list-mailbox / patterns; patterns = "("
    // list-mailbox *(SP list-mailbox) ")".
    let patterns = if p.peek() == Some(b'(') { p.list(false, P::list_mailbox)? } else { alloc::vec![p.list_mailbox()?] };
    let mut ret = ListReturn::default();
    if p.eat(b' ') {
        // RFC 5258 6: list-return-opts = "RETURN" SP "(" [return-option
        // *(SP return-option)] ")".
        if p.word()? != "RETURN" {
            return Err("expected RETURN");
        }
        p.sp()?;
        p.list(true, |p| {
            match p.word()?.as_str() {
                "SUBSCRIBED" => ret.subscribed = true,
                "CHILDREN" => ret.children = true,
                // RFC 6154 5.1.
                "SPECIAL-USE" => ret.special_use = true,
                // RFC 5819 2: "STATUS" SP "(" status-att *(SP status-att) ")".
                "STATUS" => {
                    p.sp()?;
                    ret.status = Some(p.list(false, status_att)?);
                }
                _ => return Err("unknown LIST return option"),
            }
            Ok(())
        })?;
    }
    Ok(Command::List { select, reference, patterns, ret })
}

/// RFC 3501 9 status-att; RFC 7162 3.1.7 HIGHESTMODSEQ.
fn status_att(p: &mut P<'_>) -> R<StatusItem> {
    Ok(match p.word()?.as_str() {
        "MESSAGES" => StatusItem::Messages,
        "RECENT" => StatusItem::Recent,
        "UIDNEXT" => StatusItem::UidNext,
        "UIDVALIDITY" => StatusItem::UidValidity,
        "UNSEEN" => StatusItem::Unseen,
        "HIGHESTMODSEQ" => StatusItem::HighestModSeq,
        _ => return Err("unknown STATUS item"),
    })
}

/// RFC 3501 9 append = "APPEND" SP mailbox [SP flag-list] [SP date-time]
/// SP literal, read up to the literal's announcement (`{n}`, `{n+}` RFC
/// 7888, `~{n}` RFC 3516 4.4), with or without the CRLF after it.
fn append(p: &mut P<'_>) -> R<Command> {
    let mailbox = mailbox_arg(p)?;
    p.sp()?;
    let mut flags = Vec::new();
    let mut date = None;
    if p.peek() == Some(b'(') {
        flags = p.flag_list()?;
        p.sp()?;
    }
    if p.peek() == Some(b'"') {
        date = Some(p.date_time()?);
        p.sp()?;
    }
    let (length, non_sync, binary) = p.literal_head(true)?;
    if !p.at_end() {
        p.literal_crlf()?;
    }
    if !p.at_end() {
        return Err("APPEND message must be streamed");
    }
    Ok(Command::Append { mailbox, head: AppendHead { flags, date, length, non_sync, binary } })
}

/// RFC 3501 9 copy = "COPY" SP sequence-set SP mailbox; RFC 6851 3 MOVE.
fn copy_move(p: &mut P<'_>, uid: bool, is_move: bool) -> R<Command> {
    p.sp()?;
    let set = p.sequence_set()?;
    let mailbox = mailbox_arg(p)?;
    Ok(if is_move { Command::Move { uid, set, mailbox } } else { Command::Copy { uid, set, mailbox } })
}

/// RFC 3501 9 store = "STORE" SP sequence-set SP store-att-flags; RFC
/// 7162 3.1.3 store-modifier "(" "UNCHANGEDSINCE" SP mod-sequence-valzer
/// ")"; store-att-flags = (["+" / "-"] "FLAGS" [".SILENT"]) SP (flag-list /
/// (flag *(SP flag))).
fn store(p: &mut P<'_>, uid: bool) -> R<Command> {
    p.sp()?;
    let set = p.sequence_set()?;
    p.sp()?;
    let mut unchanged_since = None;
    if p.peek() == Some(b'(') {
        p.list(false, |p| {
            if p.word()? != "UNCHANGEDSINCE" {
                return Err("unknown STORE modifier");
            }
            p.sp()?;
            // mod-sequence-valzer: zero allowed.
            unchanged_since = Some(p.number64()?);
            Ok(())
        })?;
        p.sp()?;
    }
    let mode = if p.eat(b'+') {
        StoreMode::Add
    } else if p.eat(b'-') {
        StoreMode::Remove
    } else {
        StoreMode::Replace
    };
    let silent = match p.word()?.as_str() {
        "FLAGS" => false,
        "FLAGS.SILENT" => true,
        _ => return Err("expected FLAGS"),
    };
    p.sp()?;
    let flags = if p.peek() == Some(b'(') {
        p.flag_list()?
    } else {
        let mut v = alloc::vec![p.flag()?];
        while p.eat(b' ') {
            if v.len() >= MAX_LIST_ITEMS {
                return Err("too many flags");
            }
            v.push(p.flag()?);
        }
        v
    };
    Ok(Command::Store { uid, set, mode, silent, flags, unchanged_since })
}

// ---------------------------------------------------------------------------
// SEARCH (RFC 3501 6.4.4, 9 search)

/// RFC 3501 9 search = "SEARCH" [SP "CHARSET" SP astring] 1*(SP
/// search-key); RFC 4466 2.6 / RFC 4731 3 search-return-opts = SP
/// "RETURN" SP "(" [search-return-opt *(SP search-return-opt)] ")",
/// before CHARSET (kept, not acted on: ESEARCH is not offered).
fn search(p: &mut P<'_>, uid: bool) -> R<Command> {
    p.sp()?;
    let mut ret = None;
    let mut charset = None;
    if p.keyword("RETURN") {
        p.sp()?;
        ret = Some(p.list(true, |p| Ok(ascii_string(p.atom()?)))?);
        p.sp()?;
    }
    if p.keyword("CHARSET") {
        p.sp()?;
        let c = p.astring()?;
        if !c.is_ascii() {
            return Err("bad charset name");
        }
        charset = Some(ascii_string(&c));
        p.sp()?;
    }
    let mut keys = alloc::vec![search_key(p, 0)?];
    while p.eat(b' ') {
        keys.push(search_key(p, 0)?);
    }
    let key = if keys.len() == 1 { keys.pop().ok_or("no search key")? } else { SearchKey::And(keys) };
    Ok(Command::Search { uid, charset, key, ret })
}

fn header_name(p: &mut P<'_>) -> R<String> {
    // RFC 3501 9 header-fld-name = astring; RFC 5322 3.6.8 field names are
    // printable ASCII.
    let n = p.astring()?;
    if n.is_empty() || !n.iter().all(|&b| b.is_ascii_graphic()) {
        return Err("bad header field name");
    }
    Ok(ascii_string(&n))
}

/// RFC 3501 9 search-key; RFC 7162 3.1.5 MODSEQ [SP entry-name SP
/// entry-type-req] SP mod-sequence-valzer.
fn search_key(p: &mut P<'_>, depth: usize) -> R<SearchKey> {
    if depth > MAX_NESTING {
        return Err("search program nested too deep");
    }
    p.keys += 1;
    if p.keys > MAX_SEARCH_KEYS {
        return Err("search program too long");
    }
    match p.peek() {
        // "(" search-key *(SP search-key) ")".
        Some(b'(') => {
            p.i += 1;
            let mut keys = Vec::new();
            loop {
                keys.push(search_key(p, depth + 1)?);
                if p.eat(b')') {
                    return Ok(SearchKey::And(keys));
                }
                p.sp()?;
            }
        }
        // A bare sequence-set.
        Some(b'0'..=b'9' | b'*') => return Ok(SearchKey::Sequence(p.sequence_set()?)),
        _ => {}
    }
    use SearchKey as K;
    let name = p.word()?;
    let k = match name.as_str() {
        "ALL" => K::All,
        "ANSWERED" => K::Answered,
        "DELETED" => K::Deleted,
        "DRAFT" => K::Draft,
        "FLAGGED" => K::Flagged,
        "NEW" => K::New,
        "OLD" => K::Old,
        "RECENT" => K::Recent,
        "SEEN" => K::Seen,
        "UNANSWERED" => K::Unanswered,
        "UNDELETED" => K::Undeleted,
        "UNDRAFT" => K::Undraft,
        "UNFLAGGED" => K::Unflagged,
        "UNSEEN" => K::Unseen,
        "BCC" | "BODY" | "CC" | "FROM" | "SUBJECT" | "TEXT" | "TO" => {
            p.sp()?;
            let s = p.astring()?;
            match name.as_str() {
                "BCC" => K::Bcc(s),
                "BODY" => K::Body(s),
                "CC" => K::Cc(s),
                "FROM" => K::From(s),
                "SUBJECT" => K::Subject(s),
                "TEXT" => K::Text(s),
                _ => K::To(s),
            }
        }
        "BEFORE" | "ON" | "SINCE" | "SENTBEFORE" | "SENTON" | "SENTSINCE" => {
            p.sp()?;
            let d = p.date()?;
            match name.as_str() {
                "BEFORE" => K::Before(d),
                "ON" => K::On(d),
                "SINCE" => K::Since(d),
                "SENTBEFORE" => K::SentBefore(d),
                "SENTON" => K::SentOn(d),
                _ => K::SentSince(d),
            }
        }
        "KEYWORD" | "UNKEYWORD" => {
            p.sp()?;
            // flag-keyword = atom.
            let a = ascii_string(p.atom()?);
            if name == "KEYWORD" {
                K::Keyword(a)
            } else {
                K::Unkeyword(a)
            }
        }
        "HEADER" => {
            p.sp()?;
            let n = header_name(p)?;
            p.sp()?;
            K::Header(n, p.astring()?)
        }
        "LARGER" | "SMALLER" => {
            p.sp()?;
            let n = p.number()?;
            if name == "LARGER" {
                K::Larger(n)
            } else {
                K::Smaller(n)
            }
        }
        "NOT" => {
            p.sp()?;
            K::Not(Box::new(search_key(p, depth + 1)?))
        }
        "OR" => {
            p.sp()?;
            let a = search_key(p, depth + 1)?;
            p.sp()?;
            let b = search_key(p, depth + 1)?;
            K::Or(Box::new(a), Box::new(b))
        }
        "UID" => {
            p.sp()?;
            K::Uid(p.sequence_set()?)
        }
        "MODSEQ" => {
            p.sp()?;
            if p.peek() == Some(b'"') {
                // entry-name = entry-flag-name (DQUOTE "/flags/" attr-flag DQUOTE).
                let e = p.quoted()?;
                if !e.starts_with(b"/flags/") {
                    return Err("bad MODSEQ entry name");
                }
                p.sp()?;
                // entry-type-req = entry-type-resp / "all"; entry-type-resp = "priv" / "shared".
                match p.word()?.as_str() {
                    "PRIV" | "SHARED" | "ALL" => {}
                    _ => return Err("bad MODSEQ entry type"),
                }
                p.sp()?;
            }
            K::ModSeq(p.number64()?)
        }
        _ => return Err("unknown search key"),
    };
    Ok(k)
}

// ---------------------------------------------------------------------------
// FETCH (RFC 3501 6.4.5, 9 fetch)

/// RFC 3501 9 fetch = "FETCH" SP sequence-set SP ("ALL" / "FULL" / "FAST"
/// / fetch-att / "(" fetch-att *(SP fetch-att) ")"); RFC 4466 2.4
/// [fetch-modifiers]; RFC 7162 3.1.4.1 CHANGEDSINCE, 3.2.6 VANISHED.
fn fetch(p: &mut P<'_>, uid: bool) -> R<Command> {
    use FetchAttr as A;
    p.sp()?;
    let set = p.sequence_set()?;
    p.sp()?;
    let attrs = if p.peek() == Some(b'(') {
        p.list(false, fetch_att)?
    } else if p.keyword("ALL") {
        alloc::vec![A::Flags, A::InternalDate, A::Rfc822Size, A::Envelope]
    } else if p.keyword("FAST") {
        alloc::vec![A::Flags, A::InternalDate, A::Rfc822Size]
    } else if p.keyword("FULL") {
        alloc::vec![A::Flags, A::InternalDate, A::Rfc822Size, A::Envelope, A::Body]
    } else {
        alloc::vec![fetch_att(p)?]
    };
    let mut modifiers = FetchModifiers::default();
    if p.eat(b' ') {
        p.list(false, |p| {
            match p.word()?.as_str() {
                "CHANGEDSINCE" => {
                    p.sp()?;
                    modifiers.changed_since = Some(p.mod_sequence_value()?);
                }
                "VANISHED" => modifiers.vanished = true,
                _ => return Err("unknown FETCH modifier"),
            }
            Ok(())
        })?;
        // RFC 7162 3.2.6: VANISHED only in UID FETCH, with CHANGEDSINCE.
        if modifiers.vanished && (!uid || modifiers.changed_since.is_none()) {
            return Err("VANISHED needs UID FETCH and CHANGEDSINCE");
        }
    }
    Ok(Command::Fetch { uid, set, attrs, modifiers })
}

/// RFC 3501 9 fetch-att; RFC 3516 4.2 BINARY[.PEEK] and BINARY.SIZE;
/// RFC 7162 3.1.4 MODSEQ.
fn fetch_att(p: &mut P<'_>) -> R<FetchAttr> {
    use FetchAttr as A;
    Ok(match p.word()?.as_str() {
        "ENVELOPE" => A::Envelope,
        "FLAGS" => A::Flags,
        "INTERNALDATE" => A::InternalDate,
        "RFC822" => A::Rfc822,
        "RFC822.HEADER" => A::Rfc822Header,
        "RFC822.SIZE" => A::Rfc822Size,
        "RFC822.TEXT" => A::Rfc822Text,
        "BODYSTRUCTURE" => A::BodyStructure,
        "UID" => A::Uid,
        "MODSEQ" => A::ModSeq,
        "BODY" if p.peek() != Some(b'[') => A::Body,
        // "BODY" section ["<" number "." nz-number ">"] / "BODY.PEEK" ...
        w @ ("BODY" | "BODY.PEEK") => {
            let peek = w == "BODY.PEEK";
            let section = section(p)?;
            let partial = partial(p)?;
            A::BodySection { section, partial, peek }
        }
        w @ ("BINARY" | "BINARY.PEEK") => {
            let peek = w == "BINARY.PEEK";
            let part = section_binary(p)?;
            let partial = partial(p)?;
            A::Binary { part, partial, peek }
        }
        "BINARY.SIZE" => A::BinarySize { part: section_binary(p)? },
        _ => return Err("unknown FETCH item"),
    })
}

/// RFC 3501 9 section-part = nz-number *("." nz-number); the "." after the
/// last number is left when a section-text follows.
fn section_part(p: &mut P<'_>) -> R<Vec<u32>> {
    let mut part = alloc::vec![p.nz_number()?];
    while p.peek() == Some(b'.') && p.s.get(p.i + 1).is_some_and(u8::is_ascii_digit) {
        p.i += 1;
        if part.len() >= MAX_PART_DEPTH {
            return Err("section nested too deep");
        }
        part.push(p.nz_number()?);
    }
    Ok(part)
}

/// RFC 3501 9 section = "[" [section-spec] "]"; section-spec =
/// section-msgtext / (section-part ["." section-text]); section-text =
/// section-msgtext / "MIME"; section-msgtext = "HEADER" /
/// "HEADER.FIELDS" [".NOT"] SP header-list / "TEXT".
fn section(p: &mut P<'_>) -> R<Section> {
    p.expect(b'[', "expected \"[\"")?;
    let mut part = Vec::new();
    let mut text = SectionText::Full;
    if p.peek().is_some_and(|b| b.is_ascii_digit()) {
        part = section_part(p)?;
        if p.eat(b'.') {
            text = section_text(p, true)?;
        }
    } else if p.peek() != Some(b']') {
        text = section_text(p, false)?;
    }
    p.expect(b']', "expected \"]\"")?;
    Ok(Section { part, text })
}

fn section_text(p: &mut P<'_>, mime_ok: bool) -> R<SectionText> {
    Ok(match p.word()?.as_str() {
        "HEADER" => SectionText::Header,
        "TEXT" => SectionText::Text,
        "MIME" if mime_ok => SectionText::Mime,
        w @ ("HEADER.FIELDS" | "HEADER.FIELDS.NOT") => {
            p.sp()?;
            // header-list = "(" header-fld-name *(SP header-fld-name) ")".
            let names = p.list(false, header_name)?;
            if w == "HEADER.FIELDS" {
                SectionText::HeaderFields(names)
            } else {
                SectionText::HeaderFieldsNot(names)
            }
        }
        _ => return Err("bad section"),
    })
}

/// RFC 3516 4.2 section-binary = "[" [section-part] "]".
fn section_binary(p: &mut P<'_>) -> R<Vec<u32>> {
    p.expect(b'[', "expected \"[\"")?;
    let part = if p.peek() == Some(b']') { Vec::new() } else { section_part(p)? };
    p.expect(b']', "expected \"]\"")?;
    Ok(part)
}

/// RFC 3501 9 "<" number "." nz-number ">" after a section.
fn partial(p: &mut P<'_>) -> R<Option<Partial>> {
    if !p.eat(b'<') {
        return Ok(None);
    }
    let origin = p.number()?;
    p.expect(b'.', "bad partial")?;
    let length = p.nz_number()?;
    p.expect(b'>', "bad partial")?;
    Ok(Some(Partial { origin, length }))
}

#[cfg(test)]
mod tests;
