//! Raw DNS wire-format helpers.
//!
//! TSIG (RFC 8945) is computed over the exact octets of a message, so it is
//! handled on raw bytes rather than on parsed messages. This module has just
//! enough of RFC 1035 to walk a message, find its last record and read or
//! write domain names in canonical form.

use thiserror::Error;

/// RFC 1035 4.1.1: the header is 12 octets.
pub(crate) const HEADER_LEN: usize = 12;
/// RFC 1035 2.3.4: a label is at most 63 octets.
pub(crate) const MAX_LABEL_LEN: usize = 63;
/// RFC 1035 2.3.4: a name is at most 255 octets in wire form.
pub(crate) const MAX_NAME_LEN: usize = 255;
/// RFC 1035 4.1.4: a compression pointer has its two high bits set.
const POINTER_TAG: u8 = 0xC0;
/// A name of at most 255 octets has at most 127 labels, so following more
/// compression pointers than that while reading one name means a loop.
const MAX_POINTER_HOPS: usize = 128;
/// RFC 1035 4.1.1: offset of ARCOUNT in the header.
const ARCOUNT_OFFSET: usize = 10;
/// RFC 1035 4.1.1: OPCODE bits of the header flags.
pub(crate) const FLAG_OPCODE_MASK: u16 = 0x7800;
/// RFC 1035 4.1.1: RD bit of the header flags.
pub(crate) const FLAG_RD: u16 = 0x0100;
/// RFC 1035 4.1.1: RCODE bits of the header flags.
const FLAG_RCODE_MASK: u16 = 0x000F;
/// RFC 1035 4.1.1: QR bit of the header flags.
pub(crate) const FLAG_QR: u16 = 0x8000;
/// RFC 1035 4.1.1: TC bit of the header flags.
pub(crate) const FLAG_TC: u16 = 0x0200;
/// RFC 1035 4.1.1: fixed part of a question after its name (QTYPE, QCLASS).
const QUESTION_FIXED_LEN: usize = 4;
/// RFC 1035 4.1.3: fixed part of a record after its name
/// (TYPE, CLASS, TTL, RDLENGTH).
pub(crate) const RECORD_FIXED_LEN: usize = 10;

/// Why raw bytes could not be read or written as a DNS message.
#[derive(Debug, Error, PartialEq, Eq)]
pub(crate) enum WireError {
    #[error("message ends early (needed octet {0})")]
    Truncated(usize),
    #[error("unsupported label type at offset {0}")]
    BadLabel(usize),
    #[error("domain name longer than 255 octets")]
    NameTooLong,
    #[error("compression pointer loop")]
    PointerLoop,
    #[error("a TSIG record is present but is not the last record of the message")]
    TsigNotLast,
    #[error("malformed TSIG record: {0}")]
    BadTsig(&'static str),
    #[error("invalid domain name {0:?}: {1}")]
    BadName(String, &'static str),
    #[error("too many records for one message")]
    TooManyRecords,
}

/// The fixed header of a message (RFC 1035 4.1.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RawHeader {
    pub id: u16,
    pub flags: u16,
    pub qdcount: u16,
    pub ancount: u16,
    pub nscount: u16,
    pub arcount: u16,
}

impl RawHeader {
    pub(crate) fn parse(buf: &[u8]) -> Result<Self, WireError> {
        Ok(Self {
            id: u16_at(buf, 0)?,
            flags: u16_at(buf, 2)?,
            qdcount: u16_at(buf, 4)?,
            ancount: u16_at(buf, 6)?,
            nscount: u16_at(buf, 8)?,
            arcount: u16_at(buf, 10)?,
        })
    }

    /// RFC 1035 4.1.1: QR is set in responses.
    pub(crate) fn is_response(&self) -> bool {
        self.flags & FLAG_QR != 0
    }

    /// RFC 1035 4.1.1: TC is set when the message was truncated.
    pub(crate) fn is_truncated(&self) -> bool {
        self.flags & FLAG_TC != 0
    }

    /// RFC 1035 4.1.1: RCODE is the low four bits of the flags.
    pub(crate) fn rcode(&self) -> u16 {
        self.flags & FLAG_RCODE_MASK
    }
}

pub(crate) fn u16_at(buf: &[u8], pos: usize) -> Result<u16, WireError> {
    match buf.get(pos..pos + 2) {
        Some(b) => Ok(u16::from_be_bytes([b[0], b[1]])),
        None => Err(WireError::Truncated(pos + 1)),
    }
}

pub(crate) fn u32_at(buf: &[u8], pos: usize) -> Result<u32, WireError> {
    match buf.get(pos..pos + 4) {
        Some(b) => Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]])),
        None => Err(WireError::Truncated(pos + 3)),
    }
}

pub(crate) fn u48_at(buf: &[u8], pos: usize) -> Result<u64, WireError> {
    let high = u64::from(u16_at(buf, pos)?);
    let low = u64::from(u32_at(buf, pos + 2)?);
    Ok((high << 32) | low)
}

fn byte_at(buf: &[u8], pos: usize) -> Result<u8, WireError> {
    buf.get(pos).copied().ok_or(WireError::Truncated(pos))
}

/// Reads the name starting at `pos` and returns it in canonical wire form
/// (uncompressed, ASCII letters lowercased: RFC 4034 6.2) together with the
/// offset just past the name in the original stream.
pub(crate) fn read_name(buf: &[u8], pos: usize) -> Result<(Vec<u8>, usize), WireError> {
    let mut out = Vec::with_capacity(32);
    let mut cursor = pos;
    // Where the name ends in the original stream: after the first pointer,
    // or after the terminating zero octet (RFC 1035 4.1.4).
    let mut end: Option<usize> = None;
    let mut hops = 0usize;
    loop {
        let len = byte_at(buf, cursor)?;
        if len & POINTER_TAG == POINTER_TAG {
            // RFC 1035 4.1.4: a pointer is two octets, the offset is 14 bits.
            let low = byte_at(buf, cursor + 1)?;
            if end.is_none() {
                end = Some(cursor + 2);
            }
            hops += 1;
            if hops > MAX_POINTER_HOPS {
                return Err(WireError::PointerLoop);
            }
            let target = (usize::from(len & !POINTER_TAG) << 8) | usize::from(low);
            // A pointer must point backwards, which also rules out loops
            // through forward references.
            if target >= cursor {
                return Err(WireError::PointerLoop);
            }
            cursor = target;
            continue;
        }
        if len & POINTER_TAG != 0 {
            // RFC 6891 / RFC 2673 label types are not used in messages we handle.
            return Err(WireError::BadLabel(cursor));
        }
        let len = usize::from(len);
        out.push(len as u8);
        if out.len() > MAX_NAME_LEN {
            return Err(WireError::NameTooLong);
        }
        if len == 0 {
            let end = end.unwrap_or(cursor + 1);
            return Ok((out, end));
        }
        let label = buf
            .get(cursor + 1..cursor + 1 + len)
            .ok_or(WireError::Truncated(cursor + len))?;
        out.extend(label.iter().map(u8::to_ascii_lowercase));
        if out.len() > MAX_NAME_LEN {
            return Err(WireError::NameTooLong);
        }
        cursor += 1 + len;
    }
}

/// Returns the offset just past the name starting at `pos`.
pub(crate) fn skip_name(buf: &[u8], pos: usize) -> Result<usize, WireError> {
    read_name(buf, pos).map(|(_, end)| end)
}

/// Encodes a presentation-format name ("mail.example.test" or with a trailing
/// dot) in canonical wire form: uncompressed, lowercased (RFC 4034 6.2, which
/// RFC 8945 4.3.3 requires for the key and algorithm names).
pub(crate) fn canonical_name(name: &str) -> Result<Vec<u8>, WireError> {
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    let mut out = Vec::with_capacity(trimmed.len() + 2);
    if !trimmed.is_empty() {
        for label in trimmed.split('.') {
            if label.is_empty() {
                return Err(WireError::BadName(name.to_owned(), "empty label"));
            }
            if label.len() > MAX_LABEL_LEN {
                return Err(WireError::BadName(
                    name.to_owned(),
                    "label longer than 63 octets",
                ));
            }
            if label.contains('\\') {
                return Err(WireError::BadName(
                    name.to_owned(),
                    "escapes are not supported",
                ));
            }
            out.push(label.len() as u8);
            out.extend(label.bytes().map(|b| b.to_ascii_lowercase()));
        }
    }
    out.push(0);
    if out.len() > MAX_NAME_LEN {
        return Err(WireError::NameTooLong);
    }
    Ok(out)
}

/// Presentation form of a name in uncompressed wire form, for messages.
pub(crate) fn name_to_text(wire: &[u8]) -> String {
    let mut out = String::new();
    let mut pos = 0usize;
    while let Some(&len) = wire.get(pos) {
        if len == 0 {
            break;
        }
        let label = wire.get(pos + 1..pos + 1 + usize::from(len)).unwrap_or(&[]);
        for &b in label {
            if b.is_ascii_graphic() && b != b'.' && b != b'\\' {
                out.push(char::from(b));
            } else {
                // RFC 1035 5.1: \DDD for octets that are not printable.
                out.push_str(&format!("\\{b:03}"));
            }
        }
        out.push('.');
        pos += 1 + usize::from(len);
    }
    if out.is_empty() {
        out.push('.');
    }
    out
}

/// Where one record lies in a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RecordSpan {
    pub start: usize,
    pub rtype: u16,
    pub end: usize,
}

/// Every record of a message (answer, authority and additional sections in
/// order) with the header.
pub(crate) fn record_spans(buf: &[u8]) -> Result<(RawHeader, Vec<RecordSpan>), WireError> {
    let header = RawHeader::parse(buf)?;
    let mut pos = HEADER_LEN;
    for _ in 0..header.qdcount {
        pos = skip_name(buf, pos)? + QUESTION_FIXED_LEN;
        if pos > buf.len() {
            return Err(WireError::Truncated(pos));
        }
    }
    let total =
        usize::from(header.ancount) + usize::from(header.nscount) + usize::from(header.arcount);
    // Each record needs at least 11 octets; refuse counts the buffer can't hold
    // before allocating for them.
    if total > buf.len() / (RECORD_FIXED_LEN + 1) + 1 {
        return Err(WireError::TooManyRecords);
    }
    let mut spans = Vec::with_capacity(total);
    for _ in 0..total {
        let start = pos;
        let after_name = skip_name(buf, pos)?;
        let rtype = u16_at(buf, after_name)?;
        let rdlength = usize::from(u16_at(buf, after_name + 8)?);
        let end = after_name + RECORD_FIXED_LEN + rdlength;
        if end > buf.len() {
            return Err(WireError::Truncated(end));
        }
        spans.push(RecordSpan { start, rtype, end });
        pos = end;
    }
    Ok((header, spans))
}

/// Adds `delta` to ARCOUNT of the message in `buf` (RFC 1035 4.1.1).
pub(crate) fn adjust_arcount(buf: &mut [u8], delta: i32) -> Result<(), WireError> {
    let current = i32::from(u16_at(buf, ARCOUNT_OFFSET)?);
    let next = u16::try_from(current + delta).map_err(|_| WireError::TooManyRecords)?;
    let field = buf
        .get_mut(ARCOUNT_OFFSET..ARCOUNT_OFFSET + 2)
        .ok_or(WireError::Truncated(ARCOUNT_OFFSET + 1))?;
    field.copy_from_slice(&next.to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_name_lowercases_and_terminates() {
        assert_eq!(
            canonical_name("Key.Example.").unwrap(),
            b"\x03key\x07example\x00".to_vec()
        );
        assert_eq!(
            canonical_name("key.example").unwrap(),
            canonical_name("key.example.").unwrap()
        );
        assert_eq!(canonical_name(".").unwrap(), vec![0]);
        assert!(canonical_name("a..b").is_err());
        assert!(canonical_name(&"x".repeat(64)).is_err());
    }

    #[test]
    fn read_name_follows_pointers() {
        // "example." at 12, then "www" + pointer to 12 at 21.
        let mut buf = vec![0u8; 12];
        buf.extend_from_slice(b"\x07EXAMPLE\x00");
        buf.extend_from_slice(b"\x03www\xC0\x0C");
        let (name, end) = read_name(&buf, 21).unwrap();
        assert_eq!(name, b"\x03www\x07example\x00".to_vec());
        assert_eq!(end, buf.len());
        assert_eq!(name_to_text(&name), "www.example.");
    }

    #[test]
    fn read_name_rejects_loops_and_truncation() {
        let mut buf = vec![0u8; 12];
        buf.extend_from_slice(b"\xC0\x0C");
        assert_eq!(read_name(&buf, 12), Err(WireError::PointerLoop));
        let mut buf = vec![0u8; 12];
        buf.extend_from_slice(b"\x05ab");
        assert!(matches!(read_name(&buf, 12), Err(WireError::Truncated(_))));
    }
}
