//! Delivery status notifications (RFC 3464, in a multipart/report of
//! RFC 6522) for permanent failures and, once, for long delays.

use std::time::SystemTime;

use crate::date::rfc5322;

/// One recipient's line in a notification.
#[derive(Debug, Clone)]
pub struct Failed {
    pub rcpt: String,
    /// RFC 3463 enhanced status code.
    pub status: String,
    pub diagnostic: String,
    pub remote_mta: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// RFC 3464 2.3.3 Action: failed.
    Failed,
    /// RFC 3464 2.3.3 Action: delayed.
    Delayed,
}

/// Headers of the original message (up to the first empty line), without
/// our own Return-Path, for the text/rfc822-headers part (RFC 6522 3).
pub fn original_headers(message: &[u8]) -> &[u8] {
    let end = message.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 2).unwrap_or(message.len());
    &message[..end]
}

/// Builds the notification to `sender` about `id`.
pub fn build(kind: Kind, hostname: &str, id: &str, sender: &str, arrival: SystemTime, failed: &[Failed], original: &[u8]) -> Vec<u8> {
    let boundary = format!("{id}/{hostname}");
    let now = rfc5322(SystemTime::now());
    let (subject, intro) = match kind {
        Kind::Failed => ("Undelivered Mail Returned to Sender", "Your message could not be delivered to one or more recipients. It was not delivered to:"),
        Kind::Delayed => ("Delayed Mail (still being retried)", "Your message has not been delivered yet to the recipients below. The mail system keeps trying; you need not send it again:"),
    };
    let mut m = String::new();
    m.push_str(&format!("From: Mail Delivery System <MAILER-DAEMON@{hostname}>\r\n"));
    m.push_str(&format!("To: <{sender}>\r\n"));
    m.push_str(&format!("Subject: {subject}\r\n"));
    m.push_str(&format!("Date: {now}\r\n"));
    m.push_str(&format!("Message-ID: <{id}.{}@{hostname}>\r\n", if kind == Kind::Failed { "failed" } else { "delayed" }));
    // RFC 3834 5: notifications are auto-replied, so that no one answers
    // them automatically.
    m.push_str("Auto-Submitted: auto-replied\r\n");
    m.push_str("MIME-Version: 1.0\r\n");
    m.push_str(&format!("Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"{boundary}\"\r\n\r\n"));
    m.push_str("This is a MIME-encapsulated delivery status notification.\r\n\r\n");
    m.push_str(&format!("--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"));
    m.push_str(&format!("This is the mail system at {hostname}.\r\n\r\n{intro}\r\n\r\n"));
    for f in failed {
        m.push_str(&format!("<{}>: {}\r\n", f.rcpt, f.diagnostic));
    }
    m.push_str(&format!("\r\n--{boundary}\r\nContent-Type: message/delivery-status\r\n\r\n"));
    // RFC 3464 2.2: per-message fields.
    m.push_str(&format!("Reporting-MTA: dns; {hostname}\r\n"));
    m.push_str(&format!("X-Mailfort-Queue-ID: {id}\r\n"));
    m.push_str(&format!("Arrival-Date: {}\r\n", rfc5322(arrival)));
    for f in failed {
        // RFC 3464 2.3: per-recipient fields.
        m.push_str(&format!("\r\nFinal-Recipient: rfc822; {}\r\n", f.rcpt));
        m.push_str(&format!("Action: {}\r\n", if kind == Kind::Failed { "failed" } else { "delayed" }));
        m.push_str(&format!("Status: {}\r\n", f.status));
        if let Some(r) = &f.remote_mta {
            m.push_str(&format!("Remote-MTA: dns; {r}\r\n"));
        }
        let diag: String = f.diagnostic.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
        m.push_str(&format!("Diagnostic-Code: smtp; {diag}\r\n"));
    }
    m.push_str(&format!("\r\n--{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n"));
    let mut out = m.into_bytes();
    out.extend_from_slice(original_headers(original));
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_structure() {
        let orig = b"Subject: hello\r\nFrom: a@example.test\r\n\r\nbody text\r\n";
        let f = vec![Failed { rcpt: "x@remote.test".into(), status: "5.1.1".into(), diagnostic: "550 5.1.1 no such user".into(), remote_mta: Some("mx.remote.test".into()) }];
        let d = String::from_utf8(build(Kind::Failed, "mail.example.test", "123.node1", "a@example.test", SystemTime::now(), &f, orig)).unwrap();
        assert!(d.contains("Content-Type: multipart/report; report-type=delivery-status;"));
        assert!(d.contains("Final-Recipient: rfc822; x@remote.test\r\nAction: failed\r\nStatus: 5.1.1\r\nRemote-MTA: dns; mx.remote.test\r\n"));
        assert!(d.contains("Subject: hello\r\nFrom: a@example.test\r\n"));
        assert!(!d.contains("body text"));
        assert!(d.ends_with("--\r\n"));
    }
}
