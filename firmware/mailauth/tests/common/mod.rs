//! Helpers shared by the integration tests.
#![allow(dead_code)]

#[allow(unused_imports)]
pub use testsupport::dns::find_tool;

/// A message as a mail client writes it: folded and repeated header
/// fields, trailing white space, an 8-bit body, empty lines at the end
/// (which relaxed body canonicalisation drops, RFC 6376 3.4.4).
pub fn message(from: &str, to: &str, subject: &str, body: &str) -> Vec<u8> {
    format!(
        "Received: from client.example.test (client.example.test [192.0.2.10])\r\n\
         \tby mail.example.test with ESMTPSA; Mon, 6 Jan 2025 10:00:00 +0000\r\n\
         From: \"Alice Example\" <{from}>\r\n\
         To: {to}\r\n\
         Cc: Carol <carol@example.org>,\r\n  Dave <dave@example.org>\r\n\
         Subject: {subject}  \r\n\
         Date: Mon, 6 Jan 2025 10:00:00 +0000\r\n\
         Message-ID: <20250106100000.1@example.test>\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: 8bit\r\n\
         X-Mailer: test\r\n\
         \r\n\
         {body}\r\n\
         Grüße   \r\n\
         \r\n\
         \r\n"
    )
    .into_bytes()
}

/// `header` put in front of `message`, as the sender does with a signature.
pub fn prepend(header: &str, message: &[u8]) -> Vec<u8> {
    let mut out = header.as_bytes().to_vec();
    out.extend_from_slice(message);
    out
}

/// `message` with the first `from` in its body replaced by `to`.
pub fn tamper(message: &[u8], from: &str, to: &str) -> Vec<u8> {
    let text = String::from_utf8(message.to_vec()).expect("test messages are UTF-8");
    let split = text.find("\r\n\r\n").expect("a header section") + 4;
    let (head, body) = text.split_at(split);
    assert!(body.contains(from), "{from:?} is in the body");
    format!("{head}{}", body.replacen(from, to, 1)).into_bytes()
}
