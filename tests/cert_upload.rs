//! `cert upload` through the command set, in process: a damaged
//! certificate is refused with the reason, the stored certificate stays,
//! and TLS handshakes go on presenting it.

use std::sync::Arc;

use admin::commands::{execute, Command, Host};
use admin::process::{ProcessHost, ProcessInfo};
use base64::Engine;

/// id-at-commonName (2.5.4.3, RFC 5280 A.1) with its tag and length; its
/// first occurrence in a certificate is in the issuer (RFC 5280 4.1).
const CN_OID: [u8; 5] = [0x06, 0x03, 0x55, 0x04, 0x03];

/// RFC 7468: one CERTIFICATE section.
fn cert_pem(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64.as_bytes().chunks(64).map(|l| std::str::from_utf8(l).unwrap()).collect();
    format!("-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n", lines.join("\n"))
}

/// The fingerprint of the certificate a TLS server with `config` presents,
/// from a handshake over memory.
fn presented(config: Arc<rustls::ServerConfig>) -> String {
    let (any, _) = maild::outbound::client::tls_configs(None).unwrap();
    let name = rustls::pki_types::ServerName::try_from("mail.example.test").unwrap();
    let mut client: rustls::Connection = rustls::ClientConnection::new(any, name).unwrap().into();
    let mut server: rustls::Connection = rustls::ServerConnection::new(config).unwrap().into();
    fn pump(from: &mut rustls::Connection, to: &mut rustls::Connection) {
        let mut wire = Vec::new();
        while from.wants_write() {
            from.write_tls(&mut wire).unwrap();
        }
        let mut rd = &wire[..];
        while !rd.is_empty() {
            to.read_tls(&mut rd).unwrap();
            to.process_new_packets().expect("handshake");
        }
    }
    for _ in 0..8 {
        pump(&mut client, &mut server);
        pump(&mut server, &mut client);
    }
    assert!(!client.is_handshaking(), "handshake incomplete");
    let rustls::Connection::Client(c) = client else { unreachable!() };
    cert::fingerprint(&c.peer_certificates().expect("a certificate")[0])
}

#[test]
fn a_damaged_certificate_is_refused_and_tls_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let store = store::Store::init(&root, "example.test", None).unwrap();
    // The process's one resolver, for its TLS server and its command set.
    let resolver = cert::ClusterCertResolver::load(&store).unwrap();
    let tls = cert::server_config(resolver.clone());
    let host = ProcessHost::new(&root, None, ProcessInfo { node: "n1".into(), rank: Some(1), address: "127.0.0.1".into() });
    assert!(host.store().use_cert_resolver(resolver.clone()));
    assert!(!host.store().use_cert_resolver(resolver), "one resolver per access");
    let upload = |text: &str| execute(&Command::CertUpload, &host, None, Some(text));

    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["mail.example.test".to_string()]).unwrap().self_signed(&key).unwrap();
    let good = cert::fingerprint(cert.der());
    let r = upload(&format!("{}{}", cert.pem(), key.serialize_pem()));
    assert!(!r.error, "{}", r.text);
    assert!(r.text.starts_with("certificate saved"), "{}", r.text);
    assert_eq!(presented(tls.clone()), good);
    let saved = std::fs::read(root.join("tls/cluster.pem")).unwrap();

    let der = cert.der().to_vec();
    let oid_len = der.windows(CN_OID.len()).position(|w| w == CN_OID).unwrap() + 1;
    let mut flipped = der.clone();
    flipped[oid_len] = 2;
    let mut trailing = der.clone();
    trailing.extend_from_slice(b"garbage");
    let other_key = rcgen::KeyPair::generate().unwrap();
    let cases = [
        ("the issuer OID's length changed", cert_pem(&flipped), key.serialize_pem(), "invalid DER at byte"),
        ("truncated", cert_pem(&der[..der.len() - 20]), key.serialize_pem(), "invalid DER at byte"),
        ("trailing garbage", cert_pem(&trailing), key.serialize_pem(), "bytes after the end"),
        ("another key", cert.pem(), other_key.serialize_pem(), "does not match"),
    ];
    for (what, c, k, reason) in cases {
        let r = upload(&format!("{c}{k}"));
        assert!(r.error, "{what}: accepted: {}", r.text);
        assert!(r.text.starts_with("error: ") && r.text.contains(reason), "{what}: {}", r.text);
        assert_eq!(std::fs::read(root.join("tls/cluster.pem")).unwrap(), saved, "{what}");
        let shown = execute(&Command::CertShow, &host, None, None);
        assert!(shown.text.contains(&good), "{what}: {}", shown.text);
        assert_eq!(presented(tls.clone()), good, "{what}");
    }
}
