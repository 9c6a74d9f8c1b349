//! A running node presents a new cluster certificate on every TLS service
//! after an upload or a regeneration, without a restart.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cert::ClusterCertResolver;
use maild::{NodeConfig, Service};
use rustls::pki_types::ServerName;
use store::Store;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a reload by the node's own timer may take in this test: a few
/// of its intervals, for a slow machine.
const RELOAD_WAIT: Duration = Duration::from_secs(4 * cert::RELOAD_INTERVAL.as_secs());
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Takes any certificate (the outbound client's opportunistic settings):
/// the test looks at which one it was.
fn connector() -> tokio_rustls::TlsConnector {
    let (any, _) = maild::outbound::client::tls_configs(None).expect("client TLS settings");
    tokio_rustls::TlsConnector::from(any)
}

/// The fingerprint of the certificate presented after the handshake on `sock`.
async fn handshake(sock: TcpStream) -> String {
    let name = ServerName::try_from("mail.example.test").unwrap();
    let tls = tokio::time::timeout(IO_TIMEOUT, connector().connect(name, sock)).await.expect("handshake in time").expect("handshake");
    let (_, conn) = tls.get_ref();
    cert::fingerprint(&conn.peer_certificates().expect("a certificate")[0])
}

/// Implicit TLS (RFC 8314 3.3): the handshake comes first.
async fn implicit(addr: SocketAddr) -> String {
    handshake(TcpStream::connect(addr).await.unwrap()).await
}

/// One reply line, read a byte at a time so that nothing of the TLS
/// handshake after it is consumed.
async fn line(sock: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    while !out.ends_with(b"\r\n") {
        let n = tokio::time::timeout(IO_TIMEOUT, sock.read(&mut b)).await.expect("reply in time").unwrap();
        assert_eq!(n, 1, "connection closed after {:?}", String::from_utf8_lossy(&out));
        out.push(b[0]);
    }
    String::from_utf8(out).unwrap()
}

/// SMTP STARTTLS (RFC 3207 4) on the submission port.
async fn starttls(addr: SocketAddr) -> String {
    let mut sock = TcpStream::connect(addr).await.unwrap();
    assert!(line(&mut sock).await.starts_with("220"));
    sock.write_all(b"EHLO client.test\r\n").await.unwrap();
    // RFC 5321 4.2.1: the last line of a multiline reply has a space after the code.
    while !line(&mut sock).await.starts_with("250 ") {}
    sock.write_all(b"STARTTLS\r\n").await.unwrap();
    assert!(line(&mut sock).await.starts_with("220"));
    handshake(sock).await
}

/// POP3 STLS (RFC 2595 4).
async fn stls(addr: SocketAddr) -> String {
    let mut sock = TcpStream::connect(addr).await.unwrap();
    assert!(line(&mut sock).await.starts_with("+OK"));
    sock.write_all(b"STLS\r\n").await.unwrap();
    assert!(line(&mut sock).await.starts_with("+OK"));
    handshake(sock).await
}

/// IMAP STARTTLS (RFC 3501 6.2.1).
async fn imap_starttls(addr: SocketAddr) -> String {
    let mut sock = TcpStream::connect(addr).await.unwrap();
    assert!(line(&mut sock).await.starts_with("* OK"));
    sock.write_all(b"t STARTTLS\r\n").await.unwrap();
    assert!(line(&mut sock).await.starts_with("t OK"));
    handshake(sock).await
}

/// Every TLS service of the node, by fingerprint presented.
async fn all_services(addrs: &[(Service, SocketAddr)]) -> Vec<(Service, String)> {
    let mut out = Vec::new();
    for &(service, addr) in addrs {
        let fp = match service {
            Service::Submissions | Service::Pop3s | Service::Imaps => implicit(addr).await,
            Service::Smtp | Service::Submission => starttls(addr).await,
            Service::Pop3 => stls(addr).await,
            Service::Imap => imap_starttls(addr).await,
        };
        out.push((service, fp));
    }
    out
}

async fn wait_for(addr: SocketAddr, expected: &str, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let fp = implicit(addr).await;
        if fp == expected {
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "still presenting {fp} after {within:?}, expected {expected}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// (certificate PEM, key PEM, fingerprint)
fn new_cert(name: &str) -> (String, String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap().self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem(), cert::fingerprint(cert.der()))
}

/// A valid certificate for mail.example.test with one length byte
/// changed: the issuer's first attribute type, id-at-commonName (06 03 55
/// 04 03, RFC 5280 A.1), says 2 bytes instead of 3. (PEM, key PEM)
fn damaged_cert() -> (String, String) {
    use base64::Engine;
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["mail.example.test".to_string()]).unwrap().self_signed(&key).unwrap();
    let mut der = cert.der().to_vec();
    let at = der.windows(5).position(|w| w == [0x06, 0x03, 0x55, 0x04, 0x03]).unwrap();
    der[at + 1] = 2;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&der);
    let lines: Vec<&str> = b64.as_bytes().chunks(64).map(|l| std::str::from_utf8(l).unwrap()).collect();
    (format!("-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n", lines.join("\n")), key.serialize_pem())
}

/// A self-signed certificate and key (one PEM text) that ends `days` from
/// now, and its fingerprint.
fn short_lived_self_signed(days: u64) -> (String, String) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(vec!["mail.example.test".to_string()]).unwrap();
    p.not_before = rcgen::date_time_ymd(1970, 1, 1) + (now - Duration::from_secs(86_400));
    p.not_after = rcgen::date_time_ymd(1970, 1, 1) + (now + Duration::from_secs(days * 86_400));
    let cert = p.self_signed(&key).unwrap();
    (format!("{}{}", key.serialize_pem(), cert.pem()), cert::fingerprint(cert.der()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_node_presents_the_new_certificate_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let store = Store::init(&root, "example.test", None).unwrap();
    let local: Vec<SocketAddr> = vec!["127.0.0.1:0".parse().unwrap()];
    let mut cfg = NodeConfig { store: root.clone(), node: "n1".into(), smtp: local.clone(), submission: local.clone(), submissions: local.clone(), pop3: local.clone(), pop3s: local.clone(), imap: local.clone(), imaps: local.clone(), ..Default::default() };
    cfg.outbound.enabled = false;
    cfg.inbound.verify = false;
    // The process's one resolver, as the binary makes it.
    let resolver = ClusterCertResolver::load(&store).unwrap();
    let node = maild::Node::bind(cfg, Some(resolver.clone())).await.unwrap();
    let addrs = node.local_addrs();
    assert_eq!(addrs.len(), 7);
    let pop3s = addrs.iter().find(|(s, _)| *s == Service::Pop3s).unwrap().1;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(node.run(async move {
        let _ = stop_rx.await;
    }));

    // At start: the store's self-signed certificate, on every service.
    let first = cert::cert_info(&store).unwrap();
    assert_eq!(first.source, cert::SOURCE_SELF_SIGNED);
    for (service, fp) in all_services(&addrs).await {
        assert_eq!(fp, first.sha256, "{service}");
    }

    // Another node uploads (the file changes under this node): its timer
    // picks the new certificate up.
    let (cert, key, fp_other) = new_cert("mail.example.test");
    store::fsutil::write_atomic(&root.join("tls/cluster.pem"), format!("{cert}{key}").as_bytes()).unwrap();
    let took = wait_for(pop3s, &fp_other, RELOAD_WAIT).await;
    eprintln!("reloaded after {took:?}");
    for (service, fp) in all_services(&addrs).await {
        assert_eq!(fp, fp_other, "{service}");
    }

    // An upload through this process's resolver: in effect at once.
    let (cert, key, fp_uploaded) = new_cert("mail.example.test");
    let info = resolver.upload(&store, &format!("{key}{cert}")).unwrap();
    assert_eq!(info.sha256, fp_uploaded);
    for (service, fp) in all_services(&addrs).await {
        assert_eq!(fp, fp_uploaded, "{service}");
    }

    // A refused upload changes nothing.
    let (_, wrong_key, _) = new_cert("mail.example.test");
    assert!(matches!(resolver.upload(&store, &format!("{cert}{wrong_key}")), Err(cert::CertError::KeyMismatch)));
    assert_eq!(implicit(pop3s).await, fp_uploaded);

    // A certificate with damaged DER (one length byte of the issuer's OID)
    // is refused, whether uploaded or written into the store by another
    // node; every service goes on with the one it had.
    let (damaged, damaged_key) = damaged_cert();
    let err = resolver.upload(&store, &format!("{damaged}{damaged_key}")).unwrap_err();
    assert!(err.to_string().contains("invalid DER"), "{err}");
    store::fsutil::write_atomic(&root.join("tls/cluster.pem"), format!("{damaged}{damaged_key}").as_bytes()).unwrap();
    // The node's resolver looks now.
    let _ = resolver.check(&store);
    assert_eq!(resolver.info().sha256, fp_uploaded);
    for (service, fp) in all_services(&addrs).await {
        assert_eq!(fp, fp_uploaded, "{service}");
    }

    // Regeneration: a fresh self-signed certificate.
    let fresh = resolver.regenerate(&store).unwrap();
    assert_ne!(fresh.sha256, first.sha256);
    for (service, fp) in all_services(&addrs).await {
        assert_eq!(fp, fresh.sha256, "{service}");
    }

    // The self-signed certificate near its end (as another node might
    // have left it): the node's own timer renews it, and every service
    // presents the renewed one.
    let aged = short_lived_self_signed(10);
    store::fsutil::write_atomic(&root.join("tls/self-signed.pem"), aged.0.as_bytes()).unwrap();
    let start = Instant::now();
    let renewed = loop {
        let fp = implicit(pop3s).await;
        if fp != fresh.sha256 && fp != aged.1 {
            break fp;
        }
        assert!(start.elapsed() < 2 * RELOAD_WAIT, "not renewed after {:?}", start.elapsed());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let info = cert::cert_info(&store).unwrap();
    assert_eq!(info.sha256, renewed);
    assert!(info.expires_in_days > 300, "{info:?}");
    for (service, fp) in all_services(&addrs).await {
        assert_eq!(fp, renewed, "{service}");
    }

    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(30), running).await.expect("node stops").unwrap().unwrap();
}
