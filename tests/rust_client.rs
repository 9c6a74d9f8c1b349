//! A Rust client (std sockets and rustls) against a node: plain SMTP, the
//! STARTTLS upgrade, and implicit TLS, verifying that every node presents
//! the cluster's one certificate for the cluster's host name.

use testsupport::prelude::*;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

struct Client<S: Read + Write> {
    r: BufReader<S>,
}

impl<S: Read + Write> Client<S> {
    fn reply(&mut self) -> (u16, String) {
        let mut all = String::new();
        loop {
            let mut l = String::new();
            self.r.read_line(&mut l).expect("read reply");
            assert!(l.ends_with("\r\n"), "reply line without CRLF: {l:?}");
            all.push_str(&l);
            if l.as_bytes().get(3) != Some(&b'-') {
                return (l[..3].parse().expect("code"), all);
            }
        }
    }
    fn cmd(&mut self, c: &str) -> (u16, String) {
        self.r.get_mut().write_all(format!("{c}\r\n").as_bytes()).expect("write");
        self.reply()
    }
}

fn tls_config(f: &Fixture) -> Arc<rustls::ClientConfig> {
    let pem = std::fs::read(f.store.join("tls/self-signed.pem")).expect("the cluster certificate is kept in the store");
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut &pem[..]) {
        roots.add(c.expect("cert")).expect("add root");
    }
    Arc::new(rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth())
}

#[test]
fn plain_smtp_then_starttls_with_verified_certificate() {
    let f = Fixture::new();
    let node = Node::start(&f, "node1", &[]);
    let sock = TcpStream::connect(node.smtp).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut c = Client { r: BufReader::new(sock) };
    assert_eq!(c.reply().0, 220);
    let (code, ehlo) = c.cmd("EHLO rust.example");
    assert_eq!(code, 250);
    assert!(ehlo.contains("250-STARTTLS\r\n") || ehlo.contains("250 STARTTLS\r\n"), "{ehlo}");
    assert_eq!(c.cmd("STARTTLS").0, 220);
    let sock = c.r.into_inner();
    let name = rustls::pki_types::ServerName::try_from("mail.example.test").unwrap();
    let conn = rustls::ClientConnection::new(tls_config(&f), name).unwrap();
    let tls = rustls::StreamOwned::new(conn, sock);
    let mut c = Client { r: BufReader::new(tls) };
    let (code, ehlo) = c.cmd("EHLO rust.example");
    assert_eq!(code, 250);
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    assert_eq!(c.cmd("MAIL FROM:<rust@remote.test>").0, 250);
    assert_eq!(c.cmd("RCPT TO:<alice@example.test>").0, 250);
    assert_eq!(c.cmd("DATA").0, 354);
    let (code, text) = c.cmd("Subject: tls\r\n\r\n..stuffed\r\n.");
    assert_eq!(code, 250, "{text}");
    assert_eq!(c.cmd("QUIT").0, 221);
    let files = f.mailbox_files("alice@example.test");
    assert_eq!(files.len(), 1);
    let data = std::fs::read(&files[0]).unwrap();
    assert!(data.ends_with(b"Subject: tls\r\n\r\n.stuffed\r\n"));
    // RFC 3848: ESMTPS for a TLS session.
    assert!(String::from_utf8_lossy(&data).contains("with ESMTPS id"));
}

#[test]
fn every_node_presents_the_same_certificate() {
    let f = Fixture::new();
    let n1 = Node::start(&f, "node1", &["--allow-plaintext-auth"]);
    let n2 = Node::start(&f, "node2", &["--allow-plaintext-auth"]);
    let cfg = tls_config(&f);
    for node in [&n1, &n2] {
        let sock = TcpStream::connect(node.pop3s).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let name = rustls::pki_types::ServerName::try_from("mail.example.test").unwrap();
        let conn = rustls::ClientConnection::new(cfg.clone(), name).unwrap();
        let mut r = BufReader::new(rustls::StreamOwned::new(conn, sock));
        let mut l = String::new();
        r.read_line(&mut l).expect("a verified TLS greeting");
        assert!(l.starts_with("+OK"), "{l}");
        r.get_mut().write_all(b"QUIT\r\n").unwrap();
        l.clear();
        r.read_line(&mut l).unwrap();
        assert!(l.starts_with("+OK"), "{l}");
    }
}

#[test]
fn certificate_and_key_from_files() {
    let f = Fixture::new();
    // A certificate made elsewhere (here: by rcgen for another name).
    let other = rcgen::generate_simple_self_signed(vec!["mx.other.test".to_string()]).unwrap();
    let cert = f.dir.path().join("cert.pem");
    let key = f.dir.path().join("key.pem");
    std::fs::write(&cert, other.cert.pem()).unwrap();
    std::fs::write(&key, other.key_pair.serialize_pem()).unwrap();
    let node = Node::start(&f, "node1", &["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()]);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(other.cert.der().clone()).unwrap();
    let cfg = Arc::new(rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth());
    let sock = TcpStream::connect(node.submissions).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let conn = rustls::ClientConnection::new(cfg, rustls::pki_types::ServerName::try_from("mx.other.test").unwrap()).unwrap();
    let mut c = Client { r: BufReader::new(rustls::StreamOwned::new(conn, sock)) };
    assert_eq!(c.reply().0, 220, "the configured certificate verifies");
    assert_eq!(c.cmd("QUIT").0, 221);
    // No self-signed certificate was made when one was configured.
    assert!(!f.store.join("tls/self-signed.pem").exists());
    // A file without a key, or a missing file, is a clear error at start.
    let o = run(&["serve", "--store", f.store_arg(), "--node", "n2", "--smtp", "127.0.0.1:0", "--tls-cert", cert.to_str().unwrap(), "--tls-key", cert.to_str().unwrap()], "");
    assert!(!o.status.success() && text(&o).contains("no PEM private key"), "{}", text(&o));
    let o = run(&["serve", "--store", f.store_arg(), "--node", "n2", "--smtp", "127.0.0.1:0", "--tls-cert", "/nonexistent/cert.pem", "--tls-key", key.to_str().unwrap()], "");
    assert!(!o.status.success() && text(&o).contains("/nonexistent/cert.pem"), "{}", text(&o));
}
