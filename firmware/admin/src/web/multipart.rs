//! `multipart/form-data` (RFC 7578) for the certificate upload form, which
//! carries a file. The whole body is in memory already (bounded by the
//! request body limit); this only splits it.

/// Parts taken at most.
pub const MAX_PARTS: usize = 16;
/// A boundary is 1 to 70 characters (RFC 2046 5.1.1).
const MAX_BOUNDARY: usize = 70;
/// Header bytes of one part at most.
const MAX_PART_HEADER: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub name: String,
    pub filename: Option<String>,
    pub data: Vec<u8>,
}

/// Whether a Content-Type is multipart/form-data.
pub fn is_multipart(content_type: &str) -> bool {
    content_type.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("multipart/form-data"))
}

/// A parameter of a header value (`name=value` or `name="value"` after
/// the first `;`), RFC 7578 4.2 / RFC 2183.
fn param(value: &str, name: &str) -> Option<String> {
    let mut rest = value.split_once(';')?.1;
    loop {
        rest = rest.trim_start_matches([' ', '\t', ';']);
        if rest.is_empty() {
            return None;
        }
        let (k, after) = rest.split_once('=')?;
        let (v, next) = if let Some(q) = after.strip_prefix('"') {
            // Quoted string: up to the next unescaped quote.
            let mut out = String::new();
            let mut chars = q.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            out.push(n);
                        }
                    }
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => out.push(c),
                }
            }
            (out, &q[end?..])
        } else {
            let end = after.find(';').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        if k.trim().eq_ignore_ascii_case(name) {
            return Some(v);
        }
        rest = next;
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Why a multipart/form-data body was refused (RFC 7578, RFC 2046 5.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MultipartError {
    #[error("multipart form without a boundary")]
    NoBoundary,
    #[error("multipart boundary of a bad length")]
    BoundaryLength,
    #[error("multipart body without its boundary")]
    NoDelimiter,
    #[error("multipart delimiter line without its end")]
    UnendedDelimiter,
    #[error("junk after a multipart delimiter")]
    JunkAfterDelimiter,
    #[error("multipart body without its closing delimiter")]
    NoClosingDelimiter,
    #[error("more than {MAX_PARTS} parts in a form")]
    TooManyParts,
    #[error("multipart part without a header end")]
    NoHeaderEnd,
    #[error("multipart part header too long")]
    HeaderTooLong,
    #[error("multipart part without Content-Disposition")]
    NoDisposition,
    #[error("multipart part without a name")]
    NoName,
}

/// Splits a multipart/form-data body into its parts.
pub fn parse(content_type: &str, body: &[u8]) -> Result<Vec<Part>, MultipartError> {
    let boundary = param(content_type, "boundary").ok_or(MultipartError::NoBoundary)?;
    if boundary.is_empty() || boundary.len() > MAX_BOUNDARY {
        return Err(MultipartError::BoundaryLength);
    }
    // The first delimiter may open the body without a line break before it.
    let delim = format!("\r\n--{boundary}").into_bytes();
    let mut rest: &[u8] = if body.starts_with(&delim[2..]) {
        &body[delim.len() - 2..]
    } else {
        let i = find(body, &delim).ok_or(MultipartError::NoDelimiter)?;
        &body[i + delim.len()..]
    };
    let mut parts = Vec::new();
    loop {
        if rest.starts_with(b"--") {
            return Ok(parts);
        }
        // Transport padding, then the line break ending the delimiter line.
        let nl = find(rest, b"\r\n").ok_or(MultipartError::UnendedDelimiter)?;
        if rest[..nl].iter().any(|b| !matches!(b, b' ' | b'\t')) {
            return Err(MultipartError::JunkAfterDelimiter);
        }
        rest = &rest[nl + 2..];
        let end = find(rest, &delim).ok_or(MultipartError::NoClosingDelimiter)?;
        let part = &rest[..end];
        rest = &rest[end + delim.len()..];
        if parts.len() == MAX_PARTS {
            return Err(MultipartError::TooManyParts);
        }
        let (head, data) = match find(part, b"\r\n\r\n") {
            Some(i) => (&part[..i], &part[i + 4..]),
            // No header lines at all (RFC 2046 5.1.1: the blank line only).
            None if part.starts_with(b"\r\n") => (&part[..0], &part[2..]),
            None => return Err(MultipartError::NoHeaderEnd),
        };
        if head.len() > MAX_PART_HEADER {
            return Err(MultipartError::HeaderTooLong);
        }
        let head = String::from_utf8_lossy(head);
        let disposition = head
            .split("\r\n")
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-disposition"))
            .map(|(_, v)| v.trim().to_string())
            .ok_or(MultipartError::NoDisposition)?;
        let name = param(&disposition, "name").ok_or(MultipartError::NoName)?;
        parts.push(Part { name, filename: param(&disposition, "filename"), data: data.to_vec() });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_a_browser_form() {
        let ct = "multipart/form-data; boundary=----WebKitFormBoundaryAbc123";
        let body = "------WebKitFormBoundaryAbc123\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\ntok\r\n------WebKitFormBoundaryAbc123\r\nContent-Disposition: form-data; name=\"pem\"\r\n\r\nline1\r\nline2\r\n------WebKitFormBoundaryAbc123\r\nContent-Disposition: form-data; name=\"pem_file\"; filename=\"a \\\"b\\\".pem\"\r\nContent-Type: application/x-pem-file\r\n\r\n-----BEGIN X-----\r\n\r\n------WebKitFormBoundaryAbc123--\r\n";
        assert!(is_multipart(ct));
        assert!(!is_multipart("application/x-www-form-urlencoded"));
        let p = parse(ct, body.as_bytes()).unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!((p[0].name.as_str(), p[0].data.as_slice()), ("csrf", &b"tok"[..]));
        assert_eq!(p[1].data, b"line1\r\nline2");
        assert_eq!(p[2].filename.as_deref(), Some("a \"b\".pem"));
        assert_eq!(p[2].data, b"-----BEGIN X-----\r\n");
    }

    #[test]
    fn refuses_broken_bodies() {
        let ct = "multipart/form-data; boundary=\"xx\"";
        assert!(parse("multipart/form-data", b"").is_err());
        assert!(parse(ct, b"no boundary here").is_err());
        assert!(parse(ct, b"--xx\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nunterminated").is_err());
        assert!(parse(ct, b"--xx\r\nX: y\r\n\r\nv\r\n--xx--").is_err());
        let many: String = (0..=MAX_PARTS).map(|i| format!("--xx\r\nContent-Disposition: form-data; name=\"f{i}\"\r\n\r\nv\r\n")).collect::<String>() + "--xx--";
        assert_eq!(parse(ct, many.as_bytes()).unwrap_err(), MultipartError::TooManyParts);
        // A preamble before the first delimiter is skipped.
        let p = parse(ct, b"preamble\r\n--xx\r\nContent-Disposition: form-data; name=a\r\n\r\nv\r\n--xx--").unwrap();
        assert_eq!((p[0].name.as_str(), p[0].data.as_slice()), ("a", &b"v"[..]));
    }
}
