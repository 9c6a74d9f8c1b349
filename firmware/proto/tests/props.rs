//! Property tests: the parsers never panic on arbitrary bytes, never report
//! reading past their input, and the data codec round-trips.

use proptest::prelude::*;
use proto::data::{DataDecoder, DotStuffer};
use proto::line::{find_line, LineStatus};

proptest! {
    #[test]
    fn smtp_parser_total(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = proto::smtp::parse_command(&bytes);
    }

    #[test]
    fn smtp_parser_on_commandish(s in "(MAIL FROM:|RCPT TO:|EHLO |AUTH |VRFY )[ -~]{0,80}") {
        let _ = proto::smtp::parse_command(s.as_bytes());
    }

    #[test]
    fn pop3_parser_total(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = proto::pop3::parse_command(&bytes);
    }

    #[test]
    fn sasl_total(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = proto::sasl::parse_plain(&bytes);
    }

    #[test]
    fn line_bound(bytes in proptest::collection::vec(any::<u8>(), 0..300), max in 1usize..200) {
        match find_line(&bytes, max) {
            LineStatus::Complete { content, total } => {
                prop_assert!(content < total && total <= max && total <= bytes.len());
                prop_assert_eq!(bytes[total - 1], b'\n');
            }
            LineStatus::TooLong => prop_assert!(bytes.len() >= max),
            LineStatus::Incomplete => prop_assert!(bytes.len() < max),
        }
    }

    #[test]
    fn decoder_bounded(bytes in proptest::collection::vec(any::<u8>(), 0..500), chunk in 1usize..64, outsz in 2usize..16) {
        let mut d = DataDecoder::new();
        let mut out = vec![0u8; outsz];
        let mut pos = 0;
        let mut guard = 0;
        while pos < bytes.len() && !d.is_done() {
            let end = (pos + chunk).min(bytes.len());
            let p = d.decode(&bytes[pos..end], &mut out);
            prop_assert!(p.consumed <= end - pos);
            prop_assert!(p.written <= outsz);
            prop_assert!(p.consumed > 0 || p.done);
            pos += p.consumed;
            guard += 1;
            prop_assert!(guard < 10_000);
        }
    }

    #[test]
    fn stuff_then_decode_is_identity(lines in proptest::collection::vec("[.a-z ]{0,12}", 0..20), chunk in 1usize..40) {
        // Any CRLF text round-trips exactly through stuffing and decoding.
        let mut msg = Vec::new();
        for l in &lines { msg.extend_from_slice(l.as_bytes()); msg.extend_from_slice(b"\r\n"); }
        let mut s = DotStuffer::new();
        let mut wire = Vec::new();
        let mut buf = [0u8; 8];
        let mut pos = 0;
        while pos < msg.len() { let (c, w) = s.stuff(&msg[pos..], &mut buf); wire.extend_from_slice(&buf[..w]); pos += c; }
        wire.extend_from_slice(s.finish());
        wire.extend_from_slice(b"NEXT COMMAND\r\n");
        let mut d = DataDecoder::new();
        let mut out = Vec::new();
        let mut pos = 0;
        while !d.is_done() {
            let end = (pos + chunk).min(wire.len());
            let p = d.decode(&wire[pos..end], &mut buf);
            out.extend_from_slice(&buf[..p.written]);
            pos += p.consumed;
        }
        prop_assert!(!d.defects().any());
        prop_assert_eq!(&out, &msg);
        prop_assert_eq!(&wire[pos..], b"NEXT COMMAND\r\n");
    }
}
