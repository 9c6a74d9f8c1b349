//! A node's own certificate files (--tls-cert/--tls-key), read with the
//! checks of an upload.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::check::parse_bundle;
use crate::info::{info_of, CertInfo, SOURCE_CONFIGURED};
use crate::{now_secs, CertError, MAX_PEM_BYTES};

/// Reads a PEM file a node is configured with, bounded.
fn read_pem_file(path: &Path) -> Result<Vec<u8>, CertError> {
    let err = |e| CertError::Read { path: path.display().to_string(), source: e };
    let mut text = Vec::new();
    File::open(path).map_err(err)?.take(MAX_PEM_BYTES as u64 + 1).read_to_end(&mut text).map_err(err)?;
    Ok(text)
}

/// Loads the certificate chain and key from PEM files (a node's
/// --tls-cert/--tls-key), with the checks of an upload ([`check_pair`](crate::check_pair)):
/// a pair that clients could not use is refused with the reason, and the
/// node does not start with it.
pub fn load_files(cert: &Path, key: &Path) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), CertError> {
    let mut both = read_pem_file(cert)?;
    both.push(b'\n');
    both.extend(read_pem_file(key)?);
    let pair = parse_bundle(&both, &format!("{} / {}", cert.display(), key.display()), None)?;
    Ok((pair.certs, pair.key))
}

/// What a node started with --tls-cert/--tls-key presents.
pub fn configured_cert_info(cert: &Path, key: &Path) -> Result<CertInfo, CertError> {
    let (certs, _) = load_files(cert, key)?;
    info_of(&certs[0], SOURCE_CONFIGURED, cert, now_secs())
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::check::pem_section;
    use crate::info::fingerprint;
    use crate::testutil::*;

    #[test]
    fn configured_files_with_a_damaged_certificate_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = make(&["mail.example.test"]);
        let (c, k) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        fs::write(&k, key.serialize_pem()).unwrap();
        fs::write(&c, cert.pem()).unwrap();
        let (certs, _) = load_files(&c, &k).unwrap();
        assert_eq!(fingerprint(&certs[0]), fingerprint(cert.der()));
        let der = cert.der().to_vec();
        fs::write(&c, pem_section("CERTIFICATE", &patched(&der, find(&der, &CN_OID, 0) + 1, 2))).unwrap();
        let err = load_files(&c, &k).unwrap_err();
        assert!(err.to_string().contains("cert.pem"), "{err}");
        assert!(matches!(err, CertError::BadCert { .. }), "{err}");
    }
}
