//! Addresses and logins are compared by one normalisation (ASCII case
//! folded, nothing else): a look-alike non-ASCII character is not an alias
//! of an ASCII letter.

use testsupport::prelude::*;

/// Base64 (RFC 4648 4), for SASL PLAIN.
fn b64(s: &str) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in s.as_bytes().chunks(3) {
        let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            out.push(if i <= c.len() { A[(n >> (18 - 6 * i) & 63) as usize] as char } else { '=' });
        }
    }
    out
}

/// U+212A KELVIN SIGN lower-cases to an ASCII `k` in Unicode; as a login
/// or a recipient it must not reach kim@example.test.
#[test]
fn a_kelvin_sign_is_no_alias_of_k() {
    assert_eq!((b64("a"), b64("ab"), b64("abc")), ("YQ==".to_string(), "YWI=".to_string(), "YWJj".to_string()));
    let f = Fixture::new();
    f.add_user("kim@example.test", "kimpass");
    let cfg = f.fast_config("");
    let node = Node::start(&f, "node1", &["--config", cfg.to_str().expect("utf8 path"), "--allow-plaintext-auth"]);

    let mut w = Wire::connect(node.submission);
    assert_eq!(w.reply().0, 220);
    assert_eq!(w.smtp("EHLO client.example").0, 250);
    let (code, text) = w.smtp(&format!("AUTH PLAIN {}", b64("\0\u{212A}im@example.test\0kimpass")));
    assert_eq!(code, 535, "a look-alike login reached the account: {text}");
    let (code, text) = w.smtp(&format!("AUTH PLAIN {}", b64("\0KIM@Example.TEST\0kimpass")));
    assert_eq!(code, 235, "ASCII case is folded: {text}");

    let mut w = Wire::connect(node.smtp);
    assert_eq!(w.reply().0, 220);
    assert_eq!(w.smtp("EHLO client.example").0, 250);
    assert_eq!(w.smtp("MAIL FROM:<carol@remote.test> SMTPUTF8").0, 250);
    let (code, text) = w.smtp("RCPT TO:<\u{212A}im@example.test>");
    assert_eq!(code, 550, "a look-alike recipient reached the mailbox: {text}");
    assert_eq!(w.smtp("RCPT TO:<Kim@example.test>").0, 250);
}
