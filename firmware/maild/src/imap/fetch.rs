//! FETCH responses (RFC 3501 6.4.5, 7.4.2; RFC 7162 3.1.4 MODSEQ; RFC
//! 3516 BINARY): one message's data items.

use proto::imap::{FetchAttr, Partial, Section, SectionText};
use store::imap::{Msg, View};

use super::message::{apply_partial, BinaryError, Parsed};
use super::respond;

/// Whether any item needs the message's bytes.
pub fn needs_message(attrs: &[FetchAttr]) -> bool {
    attrs.iter().any(|a| {
        matches!(a, FetchAttr::Envelope | FetchAttr::Rfc822 | FetchAttr::Rfc822Header | FetchAttr::Rfc822Text | FetchAttr::Body | FetchAttr::BodyStructure | FetchAttr::BodySection { .. } | FetchAttr::Binary { .. } | FetchAttr::BinarySize { .. })
    })
}

/// Whether fetching the items sets `\Seen` (RFC 3501 6.4.5: BODY[...],
/// RFC822 and RFC822.TEXT do; the .PEEK forms and RFC822.HEADER do not).
pub fn sets_seen(attrs: &[FetchAttr]) -> bool {
    attrs.iter().any(|a| matches!(a, FetchAttr::Rfc822 | FetchAttr::Rfc822Text | FetchAttr::BodySection { peek: false, .. } | FetchAttr::Binary { peek: false, .. }))
}

/// What one message's FETCH response is made of.
pub struct Item<'a> {
    pub seq: u32,
    pub msg: &'a Msg,
    pub flags: store::imap::Flags,
    pub recent: bool,
    pub view: &'a View,
    pub parsed: Option<&'a Parsed<'a>>,
    /// Add UID (UID FETCH, RFC 3501 6.4.8) and MODSEQ (CHANGEDSINCE or a
    /// MODSEQ item, RFC 7162 3.1.4.1) if the items do not name them.
    pub with_uid: bool,
    pub with_modseq: bool,
    /// Add FLAGS (the message's \Seen was set by this FETCH, RFC 3501 6.4.5).
    pub with_flags: bool,
}

/// Why one message has no FETCH response.
#[derive(Debug)]
pub enum ItemError {
    /// RFC 3516 4.3: BINARY of a part whose encoding is unknown.
    UnknownCte,
}

fn section_spec(out: &mut Vec<u8>, s: &Section) {
    let mut first = true;
    for p in &s.part {
        if !first {
            out.push(b'.');
        }
        respond::num(out, u64::from(*p));
        first = false;
    }
    let text: Option<&str> = match &s.text {
        SectionText::Full => None,
        SectionText::Header => Some("HEADER"),
        SectionText::HeaderFields(_) => Some("HEADER.FIELDS"),
        SectionText::HeaderFieldsNot(_) => Some("HEADER.FIELDS.NOT"),
        SectionText::Text => Some("TEXT"),
        SectionText::Mime => Some("MIME"),
    };
    if let Some(t) = text {
        if !first {
            out.push(b'.');
        }
        out.extend_from_slice(t.as_bytes());
    }
    if let SectionText::HeaderFields(names) | SectionText::HeaderFieldsNot(names) = &s.text {
        out.extend_from_slice(b" (");
        for (i, n) in names.iter().enumerate() {
            if i > 0 {
                out.push(b' ');
            }
            // As the client wrote it: an atom when it is one (RFC 3501 9
            // header-fld-name = astring), which is what clients match.
            if !n.is_empty() && n.bytes().all(|b| b.is_ascii_graphic() && !b"(){%*\"\\]".contains(&b)) {
                out.extend_from_slice(n.as_bytes());
            } else {
                respond::string(out, n.as_bytes());
            }
        }
        out.push(b')');
    }
}

fn origin(out: &mut Vec<u8>, p: Option<Partial>) {
    // RFC 3501 7.4.2: the response names the origin only.
    if let Some(p) = p {
        out.push(b'<');
        respond::num(out, u64::from(p.origin));
        out.push(b'>');
    }
}

/// Writes `* seq FETCH (...)` CRLF for one message.
pub fn write(out: &mut Vec<u8>, attrs: &[FetchAttr], it: &Item<'_>) -> Result<(), ItemError> {
    let start = out.len();
    out.extend_from_slice(b"* ");
    respond::num(out, u64::from(it.seq));
    out.extend_from_slice(b" FETCH (");
    let body_start = out.len();
    let sep = |out: &mut Vec<u8>| {
        if out.len() > body_start {
            out.push(b' ');
        }
    };
    let names_uid = attrs.iter().any(|a| matches!(a, FetchAttr::Uid));
    let names_flags = attrs.iter().any(|a| matches!(a, FetchAttr::Flags));
    let names_modseq = attrs.iter().any(|a| matches!(a, FetchAttr::ModSeq));
    if it.with_uid && !names_uid {
        out.extend_from_slice(b"UID ");
        respond::num(out, u64::from(it.msg.uid));
    }
    for a in attrs {
        sep(out);
        match a {
            FetchAttr::Uid => {
                out.extend_from_slice(b"UID ");
                respond::num(out, u64::from(it.msg.uid));
            }
            FetchAttr::Flags => {
                out.extend_from_slice(b"FLAGS ");
                respond::flags(out, it.flags, it.view, it.recent);
            }
            FetchAttr::ModSeq => modseq(out, it),
            FetchAttr::InternalDate => {
                out.extend_from_slice(b"INTERNALDATE ");
                out.extend_from_slice(respond::date_time(it.msg.date).as_bytes());
            }
            FetchAttr::Rfc822Size => {
                out.extend_from_slice(b"RFC822.SIZE ");
                respond::num(out, it.msg.size);
            }
            FetchAttr::Envelope => {
                out.extend_from_slice(b"ENVELOPE ");
                parsed(it).envelope(out);
            }
            FetchAttr::Body => {
                out.extend_from_slice(b"BODY ");
                parsed(it).body_structure(out, false);
            }
            FetchAttr::BodyStructure => {
                out.extend_from_slice(b"BODYSTRUCTURE ");
                parsed(it).body_structure(out, true);
            }
            FetchAttr::Rfc822 => {
                out.extend_from_slice(b"RFC822 ");
                respond::literal(out, parsed(it).raw());
            }
            FetchAttr::Rfc822Header => {
                out.extend_from_slice(b"RFC822.HEADER ");
                respond::literal(out, parsed(it).header());
            }
            FetchAttr::Rfc822Text => {
                out.extend_from_slice(b"RFC822.TEXT ");
                respond::literal(out, parsed(it).text());
            }
            FetchAttr::BodySection { section, partial, .. } => {
                out.extend_from_slice(b"BODY[");
                section_spec(out, section);
                out.push(b']');
                origin(out, *partial);
                out.push(b' ');
                match parsed(it).section(section) {
                    Some(data) => respond::literal(out, apply_partial(&data, *partial)),
                    // RFC 3501 6.4.5 does not say; RFC 9051 7.5.2: a
                    // section that does not exist is NIL.
                    None => out.extend_from_slice(b"NIL"),
                }
            }
            FetchAttr::Binary { part, partial, .. } => {
                out.extend_from_slice(b"BINARY[");
                section_spec(out, &Section { part: part.clone(), text: SectionText::Full });
                out.push(b']');
                origin(out, *partial);
                out.push(b' ');
                match parsed(it).binary(part) {
                    Ok(data) => {
                        let data = apply_partial(&data, *partial);
                        // RFC 3516 4.2: literal8 when the data holds NUL.
                        if data.contains(&0) {
                            out.push(b'~');
                        }
                        respond::literal(out, data);
                    }
                    Err(BinaryError::NoSuchPart) => out.extend_from_slice(b"NIL"),
                    Err(BinaryError::UnknownCte) => {
                        out.truncate(start);
                        return Err(ItemError::UnknownCte);
                    }
                }
            }
            FetchAttr::BinarySize { part } => {
                out.extend_from_slice(b"BINARY.SIZE[");
                section_spec(out, &Section { part: part.clone(), text: SectionText::Full });
                out.extend_from_slice(b"] ");
                match parsed(it).binary(part) {
                    Ok(data) => respond::num(out, data.len() as u64),
                    Err(BinaryError::NoSuchPart) => out.extend_from_slice(b"NIL"),
                    Err(BinaryError::UnknownCte) => {
                        out.truncate(start);
                        return Err(ItemError::UnknownCte);
                    }
                }
            }
        }
    }
    if it.with_flags && !names_flags {
        sep(out);
        out.extend_from_slice(b"FLAGS ");
        respond::flags(out, it.flags, it.view, it.recent);
    }
    if it.with_modseq && !names_modseq {
        sep(out);
        modseq(out, it);
    }
    out.extend_from_slice(b")\r\n");
    Ok(())
}

fn modseq(out: &mut Vec<u8>, it: &Item<'_>) {
    // RFC 7162 3.1.4.1: MODSEQ (value), in parentheses.
    out.extend_from_slice(b"MODSEQ (");
    respond::num(out, it.msg.modseq);
    out.push(b')');
}

fn parsed<'a>(it: &'a Item<'a>) -> &'a Parsed<'a> {
    // needs_message() made sure the caller parsed the message.
    it.parsed.expect("message parsed for a body item")
}
