
//! A certificate's encoding checked element by element against the
//! Distinguished Encoding Rules (X.690 8, 10 and 11). Parsers differ in
//! what they forgive; OpenSSL, the one most clients use, refuses a
//! certificate with a bad length or tag anywhere in it, so one is refused
//! here before it is saved or presented.

use std::fmt;

/// Nesting depth at which an encoding is refused. A certificate nests
/// about 8 deep (a name's attribute in its RDN in the name in the TBS
/// in the certificate); the bound keeps this recursive check's stack
/// small whatever the input.
pub const MAX_DEPTH: usize = 32;

const UNIVERSAL: u8 = 0;
const BOOLEAN: u32 = 1;
const INTEGER: u32 = 2;
const BIT_STRING: u32 = 3;
const NULL: u32 = 5;
const OID: u32 = 6;
const ENUMERATED: u32 = 10;
const RELATIVE_OID: u32 = 13;
const SEQUENCE: u32 = 16;
const SET: u32 = 17;
const UTC_TIME: u32 = 23;
const GENERALIZED_TIME: u32 = 24;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// Where in the DER the fault is.
    pub offset: usize,
    pub reason: &'static str,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid DER at byte {}: {}", self.offset, self.reason)
    }
}

fn fail<T>(offset: usize, reason: &'static str) -> Result<T, Error> {
    Err(Error { offset, reason })
}

/// `der` is exactly one valid DER element, and so is every element in it.
pub fn check(der: &[u8]) -> Result<(), Error> {
    let end = element(der, 0, der.len(), 0)?;
    if end != der.len() {
        return fail(end, "bytes after the end of the encoding");
    }
    Ok(())
}

/// Checks the element at `at`, which must end by `limit` (its parent's
/// end); returns where it ends.
fn element(buf: &[u8], at: usize, limit: usize, depth: usize) -> Result<usize, Error> {
    if depth > MAX_DEPTH {
        return fail(at, "nested too deeply");
    }
    let byte = |i: usize| if i < limit { Ok(buf[i]) } else { fail(i, "truncated") };
    // X.690 8.1.2: identifier octets.
    let first = byte(at)?;
    let class = first >> 6;
    let constructed = first & 0x20 != 0;
    let mut i = at + 1;
    let number = if first & 0x1f == 0x1f {
        // X.690 8.1.2.4: the high tag number form, base 128; 8.1.2.4.2 c:
        // the first subsequent octet is not 0x80 (DER 10: minimal).
        let mut n: u32 = 0;
        loop {
            let b = byte(i)?;
            if n == 0 && b == 0x80 {
                return fail(i, "tag number not in its shortest form");
            }
            if n > (u32::MAX >> 7) {
                return fail(i, "tag number too large");
            }
            n = n << 7 | u32::from(b & 0x7f);
            i += 1;
            if b & 0x80 == 0 {
                break;
            }
        }
        if n < 31 {
            return fail(at, "tag number below 31 in the long form (X.690 8.1.2.4)");
        }
        n
    } else {
        u32::from(first & 0x1f)
    };
    // X.690 8.1.3 and 10.1: the definite form, in the fewest octets.
    let l0 = byte(i)?;
    i += 1;
    let len = match l0 {
        0..=0x7f => usize::from(l0),
        0x80 => return fail(i - 1, "indefinite length (DER needs a definite one, X.690 10.1)"),
        0xff => return fail(i - 1, "reserved length octet (X.690 8.1.3.5)"),
        _ => {
            let n = usize::from(l0 & 0x7f);
            if n > 4 {
                return fail(i - 1, "length of more than 4 octets");
            }
            let mut v: usize = 0;
            for k in 0..n {
                let b = byte(i + k)?;
                if k == 0 && b == 0 {
                    return fail(i, "length with a leading zero octet (X.690 10.1)");
                }
                v = v << 8 | usize::from(b);
            }
            if v < 0x80 {
                return fail(i - 1, "long-form length below 128 (X.690 10.1)");
            }
            i += n;
            v
        }
    };
    let end = match i.checked_add(len) {
        Some(e) if e <= limit => e,
        _ => return fail(i, "length runs past the end of the enclosing element"),
    };
    if class == UNIVERSAL && (number == SEQUENCE || number == SET) != constructed {
        // X.690 8.9.1, 8.11.1: SEQUENCE and SET are constructed; 10.2:
        // in DER, strings and every other type are primitive.
        return fail(at, if constructed { "constructed encoding of a primitive type (X.690 10.2)" } else { "primitive SEQUENCE or SET (X.690 8.9.1)" });
    }
    if constructed {
        let mut p = i;
        while p < end {
            p = element(buf, p, end, depth + 1)?;
        }
    } else if class == UNIVERSAL {
        primitive(number, &buf[i..end], i)?;
    }
    Ok(end)
}

/// The rules for the contents of the universal primitive types a
/// certificate uses.
fn primitive(number: u32, c: &[u8], at: usize) -> Result<(), Error> {
    match number {
        // X.690 11.1: FALSE is 0x00, TRUE is 0xFF.
        BOOLEAN if c.len() != 1 || (c[0] != 0 && c[0] != 0xff) => fail(at, "BOOLEAN not one octet 00 or FF (X.690 11.1)"),
        // X.690 8.3.1, 8.3.2 (and 8.4 for ENUMERATED): at least one
        // octet, and no redundant leading 00 or FF.
        INTEGER | ENUMERATED if c.is_empty() => fail(at, "empty INTEGER (X.690 8.3.1)"),
        INTEGER | ENUMERATED if c.len() > 1 && ((c[0] == 0 && c[1] & 0x80 == 0) || (c[0] == 0xff && c[1] & 0x80 != 0)) => fail(at, "INTEGER not in its shortest form (X.690 8.3.2)"),
        // X.690 8.6.2: an initial octet of 0 to 7 unused bits, 0 when empty.
        BIT_STRING if c.is_empty() => fail(at, "BIT STRING without its initial octet (X.690 8.6.2)"),
        BIT_STRING if c[0] > 7 || (c.len() == 1 && c[0] != 0) => fail(at, "BIT STRING with a bad count of unused bits (X.690 8.6.2.2)"),
        // X.690 8.8.2: no contents.
        NULL if !c.is_empty() => fail(at, "NULL with contents (X.690 8.8.2)"),
        // X.690 8.19.2, 8.20.2: subidentifiers in base 128, each in its
        // fewest octets (never a leading 0x80), the last octet of each
        // with bit 8 clear.
        OID | RELATIVE_OID if c.is_empty() => fail(at, "empty OBJECT IDENTIFIER (X.690 8.19.2)"),
        OID | RELATIVE_OID if c[c.len() - 1] & 0x80 != 0 => fail(at, "OBJECT IDENTIFIER whose last subidentifier is cut off (X.690 8.19.2)"),
        OID | RELATIVE_OID if c.iter().enumerate().any(|(k, &b)| b == 0x80 && (k == 0 || c[k - 1] & 0x80 == 0)) => fail(at, "OBJECT IDENTIFIER subidentifier not in its shortest form (X.690 8.19.2)"),
        // RFC 5280 4.1.2.5.1: YYMMDDHHMMSSZ; X.690 11.8.
        UTC_TIME if !time_digits(c, 12) => fail(at, "UTCTime not in the form YYMMDDHHMMSSZ (RFC 5280 4.1.2.5.1)"),
        // RFC 5280 4.1.2.5.2: YYYYMMDDHHMMSSZ; X.690 11.7.
        GENERALIZED_TIME if !time_digits(c, 14) => fail(at, "GeneralizedTime not in the form YYYYMMDDHHMMSSZ (RFC 5280 4.1.2.5.2)"),
        _ => Ok(()),
    }
}

fn time_digits(c: &[u8], digits: usize) -> bool {
    c.len() == digits + 1 && c[..digits].iter().all(u8::is_ascii_digit) && c[digits] == b'Z'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_encodings_pass() {
        // SEQUENCE { INTEGER 1, OID 1.2.840.113549, BOOLEAN TRUE, NULL, [0] { UTCTime } }
        let der = [0x30, 0x21, 0x02, 0x01, 0x01, 0x06, 0x06, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0xff, 0x05, 0x00, 0xa0, 0x0f, 0x17, 0x0d, b'2', b'6', b'0', b'1', b'0', b'1', b'0', b'0', b'0', b'0', b'0', b'0', b'Z'];
        assert_eq!(check(&der), Ok(()));
        // A long-form length of 128.
        let mut long = vec![0x04, 0x81, 0x80];
        long.extend([0u8; 128]);
        assert_eq!(check(&long), Ok(()));
    }

    #[test]
    fn each_rule_is_enforced() {
        let cases: &[(&[u8], &str)] = &[
            (&[], "truncated"),
            (&[0x30, 0x03, 0x02, 0x01], "past the end"),
            (&[0x30, 0x03, 0x02, 0x02, 0x01, 0x01], "past the end"),
            (&[0x02, 0x01, 0x01, 0x00], "after the end"),
            (&[0x30, 0x80, 0x00, 0x00], "indefinite"),
            (&[0x04, 0x81, 0x01, 0x00], "below 128"),
            (&[0x04, 0x82, 0x00, 0x81], "leading zero"),
            (&[0x01, 0x01, 0x01], "BOOLEAN"),
            (&[0x02, 0x00], "empty INTEGER"),
            (&[0x02, 0x02, 0x00, 0x01], "shortest form"),
            (&[0x03, 0x01, 0x01], "unused bits"),
            (&[0x05, 0x01, 0x00], "NULL"),
            (&[0x06, 0x02, 0x2a, 0x86], "cut off"),
            (&[0x06, 0x02, 0x80, 0x01], "subidentifier"),
            (&[0x17, 0x03, b'2', b'6', b'Z'], "UTCTime"),
            (&[0x24, 0x03, 0x04, 0x01, 0x00], "constructed encoding"),
            (&[0x10, 0x00], "primitive SEQUENCE"),
            (&[0x1f, 0x01, 0x00], "below 31"),
        ];
        for (der, expected) in cases {
            let e = check(der).expect_err(&format!("{der:02x?} passed"));
            assert!(e.to_string().contains(expected), "{der:02x?}: {e}");
        }
        // Nesting beyond the bound, without a stack overflow.
        let mut deep = Vec::new();
        for _ in 0..1000 {
            deep.extend([0x30, 0x80]);
        }
        assert!(check(&deep).is_err());
        let mut nested = vec![0x05, 0x00];
        for _ in 0..=MAX_DEPTH {
            let len = nested.len();
            let mut outer = vec![0x30, 0x82, (len >> 8) as u8, len as u8];
            if len < 0x80 {
                outer = vec![0x30, len as u8];
            } else if len < 0x100 {
                outer = vec![0x30, 0x81, len as u8];
            }
            outer.extend(nested);
            nested = outer;
        }
        assert!(check(&nested).unwrap_err().to_string().contains("deeply"));
    }
}
