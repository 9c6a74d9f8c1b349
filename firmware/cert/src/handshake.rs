//! The proof that clients can use a chain and key: a TLS handshake over
//! memory, TLS 1.3 and TLS 1.2.

use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::CertError;

/// each way and TLS 1.2 3; more means it is stuck.
const MAX_HANDSHAKE_ROUNDS: usize = 8;

/// Completes a TLS handshake in memory, TLS 1.3 (RFC 8446) and TLS 1.2
/// (RFC 5246), between a server presenting `key` and a client that takes
/// exactly that chain and checks the server's handshake signature with
/// the leaf's public key: the proof that clients can use the pair.
pub(crate) fn prove_handshake(key: &Arc<CertifiedKey>) -> Result<(), CertError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    for (version, name) in [(&rustls::version::TLS13, "TLS 1.3"), (&rustls::version::TLS12, "TLS 1.2")] {
        let fail = |reason: String| CertError::Handshake { version: name, reason };
        let server = rustls::ServerConfig::builder_with_provider(provider.clone()).with_protocol_versions(&[version]).map_err(|e| fail(e.to_string()))?.with_no_client_auth().with_cert_resolver(Arc::new(Fixed(key.clone())));
        let verifier = Arc::new(PresentedChain { chain: key.cert.clone(), provider: provider.clone() });
        let client = rustls::ClientConfig::builder_with_provider(provider.clone()).with_protocol_versions(&[version]).map_err(|e| fail(e.to_string()))?.dangerous().with_custom_certificate_verifier(verifier).with_no_client_auth();
        let name_checked = rustls::pki_types::ServerName::try_from("certificate-check.invalid").map_err(|e| fail(e.to_string()))?;
        let mut server: rustls::Connection = rustls::ServerConnection::new(Arc::new(server)).map_err(|e| fail(e.to_string()))?.into();
        let mut client: rustls::Connection = rustls::ClientConnection::new(Arc::new(client), name_checked).map_err(|e| fail(e.to_string()))?.into();
        let mut rounds = 0;
        while client.is_handshaking() || server.is_handshaking() {
            rounds += 1;
            if rounds > MAX_HANDSHAKE_ROUNDS {
                return Err(fail("it did not complete".into()));
            }
            // The server's error says more than the alert the client gets.
            let to_server = pump(&mut client, &mut server);
            let to_client = pump(&mut server, &mut client);
            to_server.and(to_client).map_err(fail)?;
        }
    }
    Ok(())
}

/// Moves what `from` has to send into `to` and has `to` process it.
fn pump(from: &mut rustls::Connection, to: &mut rustls::Connection) -> Result<(), String> {
    let mut wire = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut wire).map_err(|e| e.to_string())?;
    }
    let mut rd = &wire[..];
    while !rd.is_empty() {
        to.read_tls(&mut rd).map_err(|e| e.to_string())?;
        to.process_new_packets().map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The server side of [`prove_handshake`].
#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// The client side of [`prove_handshake`]: the server must present the
/// chain given, readable by rustls (webpki), and sign the handshake with
/// the leaf's key (RFC 8446 4.4.3, RFC 5246 7.4.3).
#[derive(Debug)]
struct PresentedChain {
    chain: Vec<CertificateDer<'static>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for PresentedChain {
    fn verify_server_cert(&self, end_entity: &CertificateDer<'_>, intermediates: &[CertificateDer<'_>], _: &rustls::pki_types::ServerName<'_>, _: &[u8], _: rustls::pki_types::UnixTime) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let same = self.chain.first() == Some(end_entity) && self.chain.len() == intermediates.len() + 1 && self.chain[1..].iter().zip(intermediates).all(|(a, b)| a == b);
        if !same {
            return Err(rustls::Error::General("the server presented another chain".into()));
        }
        rustls::server::ParsedCertificate::try_from(end_entity)?;
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &rustls::DigitallySignedStruct) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }
    fn verify_tls13_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &rustls::DigitallySignedStruct) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
