//! Reply writers.

use core::fmt::{self, Write};

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
    use std::string::String;

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
