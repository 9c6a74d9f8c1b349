//! The cluster certificate in the store: `<store>/tls/cluster.pem` when an
//! operator uploaded one, else `<store>/tls/self-signed.pem`, generated
//! once by whichever node needs it first. Each file holds the chain and
//! the private key together, so that they can never get out of step: each
//! file is written whole under a temporary name and then renamed or
//! linked into place.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use store::Store;

use crate::check::parse_bundle;
use crate::generate::generate_self_signed;
use crate::info::{fingerprint, info_of, CertInfo, SOURCE_SELF_SIGNED, SOURCE_UPLOADED};
use crate::{now_secs, CertError, MAX_PEM_BYTES};

/// certificate together.
pub(crate) const SELF_SIGNED: &str = "self-signed.pem";
/// The file in `<store>/tls/` that holds an uploaded chain and key; it
/// takes precedence over the self-signed one.
pub(crate) const UPLOADED: &str = "cluster.pem";


/// Files holding a private key: owner only; the directory too.
pub(crate) const KEY_FILE_MODE: u32 = 0o600;
const KEY_DIR_MODE: u32 = 0o700;


/// Makes the store's self-signed certificate if there is none, and returns
/// its path. Creation is a link() of a complete file, which fails if
/// another node won the race; then that node's certificate is used.
pub(crate) fn ensure_self_signed(store: &Store) -> Result<PathBuf, CertError> {
    let dir = store.tls_dir();
    let path = dir.join(SELF_SIGNED);
    if !path.exists() {
        let pem = generate_self_signed(store, now_secs())?;
        parse_bundle(pem.as_bytes(), "the generated certificate", None)?;
        let werr = |e| CertError::Write { path: path.display().to_string(), source: e };
        store::fsutil::create_dir_durable(&dir).map_err(werr)?;
        restrict_dir(&dir);
        link_new(&dir, &pem, &path).map_err(werr)?;
    }
    Ok(path)
}

/// Writes `text` (a key and certificate) completely under a temporary
/// name, then links it to `name` if nothing has that name yet. True if
/// this call made `name`; false if it was there already (made by another
/// node). The link is what makes the file visible: a crash before it
/// leaves only the temporary file.
pub(crate) fn link_new(dir: &Path, text: &str, name: &Path) -> io::Result<bool> {
    let tmp = dir.join(format!(".{SELF_SIGNED}.{}.{:x}", std::process::id(), rand_suffix()));
    let r = (|| {
        store::fsutil::write_atomic(&tmp, text.as_bytes())?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(KEY_FILE_MODE))?;
        match fs::hard_link(&tmp, name) {
            Ok(()) => store::fsutil::sync_dir(dir).map(|()| true),
            // On NFS a retransmitted LINK may report EEXIST for a link it
            // made: the link count of the temporary file tells.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(fs::metadata(&tmp).map(|m| std::os::unix::fs::MetadataExt::nlink(&m) > 1).unwrap_or(false)),
            Err(e) => Err(e),
        }
    })();
    let _ = fs::remove_file(&tmp);
    r
}

/// A random suffix for a temporary name in the shared `tls/` directory:
/// random, because threads of one process and nodes with the same process
/// id write there at the same moment (a clock reading collided).
pub(crate) fn rand_suffix() -> u64 {
    rand::random()
}


/// One version of a certificate file: which file, and its identity, size
/// and times. Uploads replace the file by rename, so the inode changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    uploaded: bool,
    file: store::fsutil::FileStamp,
}

/// The certificate file in effect, opened, with its stamp and text.
pub(crate) struct Effective {
    pub(crate) path: PathBuf,
    pub(crate) source: &'static str,
    pub(crate) stamp: Stamp,
    pub(crate) text: Vec<u8>,
}

/// Opens the uploaded file, or else the self-signed one; None if neither
/// exists. The stamp is taken from the open file (on NFS, open revalidates
/// the name and attributes: close-to-open consistency), and the text is
/// read from the same file, so the two always agree.
pub(crate) fn read_effective(dir: &Path) -> Result<Option<Effective>, CertError> {
    for (name, source) in [(UPLOADED, SOURCE_UPLOADED), (SELF_SIGNED, SOURCE_SELF_SIGNED)] {
        if let Some(e) = read_cert_file(&dir.join(name), source)? {
            return Ok(Some(e));
        }
    }
    Ok(None)
}

/// One certificate file, None if it does not exist.
pub(crate) fn read_cert_file(path: &Path, source: &'static str) -> Result<Option<Effective>, CertError> {
    let err = |e| CertError::Read { path: path.display().to_string(), source: e };
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(err(e)),
    };
    let m = f.metadata().map_err(err)?;
    let stamp = Stamp { uploaded: source == SOURCE_UPLOADED, file: store::fsutil::FileStamp::of(&m) };
    let mut text = Vec::new();
    f.take(MAX_PEM_BYTES as u64 + 1).read_to_end(&mut text).map_err(err)?;
    Ok(Some(Effective { path: path.to_path_buf(), source, stamp, text }))
}

/// Like [`read_effective`], but makes the self-signed certificate when
/// neither file exists.
pub(crate) fn read_or_create(store: &Store) -> Result<Effective, CertError> {
    let dir = store.tls_dir();
    if let Some(e) = read_effective(&dir)? {
        return Ok(e);
    }
    ensure_self_signed(store)?;
    read_effective(&dir)?.ok_or_else(|| CertError::NoCert(dir.join(SELF_SIGNED).display().to_string()))
}

/// The cluster certificate currently in effect in the store (the uploaded
/// one if any, else the self-signed one, made now if there is none yet).
pub fn cert_info(store: &Store) -> Result<CertInfo, CertError> {
    let e = read_or_create(store)?;
    let what = e.path.display().to_string();
    let b = parse_bundle(&e.text, &what, None)?;
    info_of(&b.certs[0], e.source, &e.path, now_secs())
}

/// Makes the store's TLS directory private (it holds private keys); best
/// effort, since another node may own it.
fn restrict_dir(dir: &Path) {
    if let Ok(m) = fs::metadata(dir) {
        if m.permissions().mode() & 0o077 != 0 {
            if let Err(e) = fs::set_permissions(dir, fs::Permissions::from_mode(KEY_DIR_MODE)) {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot restrict the TLS directory to its owner");
            }
        }
    }
}

/// Writes a file holding a private key atomically (store::fsutil) and
/// restricts it to its owner.
pub(crate) fn save_key_file(path: &Path, text: &str) -> Result<(), CertError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let werr = |e| CertError::Write { path: path.display().to_string(), source: e };
    store::fsutil::create_dir_durable(dir).map_err(werr)?;
    restrict_dir(dir);
    store::fsutil::write_atomic(path, text.as_bytes()).map_err(werr)?;
    fs::set_permissions(path, fs::Permissions::from_mode(KEY_FILE_MODE)).map_err(werr)
}

/// Checks a PEM text holding a certificate chain and its private key
/// (PKCS#8, PKCS#1 RSA or SEC1 EC; any order) and makes it the cluster
/// certificate (`<store>/tls/cluster.pem`). Bad input changes nothing.
/// Every node presents it within [`RELOAD_INTERVAL`](crate::RELOAD_INTERVAL);
/// [`ClusterCertResolver::upload`](crate::ClusterCertResolver::upload) also
/// presents it in this process at once.
pub fn upload(store: &Store, pem: &str) -> Result<CertInfo, CertError> {
    let now = now_secs();
    let bundle = parse_bundle(pem.as_bytes(), "the uploaded text", Some(now))?;
    // The saved text is the checked one, re-encoded: what nodes read back
    // is exactly what passed.
    let path = store.tls_dir().join(UPLOADED);
    save_key_file(&path, &bundle.to_pem()?)?;
    tracing::info!(path = %path.display(), sha256 = %fingerprint(&bundle.certs[0]), "cluster certificate uploaded");
    info_of(&bundle.certs[0], SOURCE_UPLOADED, &path, now)
}

/// Replaces the self-signed certificate with a new one for the store's
/// host name and domains (and localhost), and removes an uploaded one, so
/// that the new self-signed certificate is in effect. As with [`upload`],
/// [`ClusterCertResolver::regenerate`](crate::ClusterCertResolver::regenerate)
/// presents it in this process at once.
pub fn regenerate(store: &Store) -> Result<CertInfo, CertError> {
    let dir = store.tls_dir();
    let path = dir.join(SELF_SIGNED);
    let pem = generate_self_signed(store, now_secs())?;
    let bundle = parse_bundle(pem.as_bytes(), "the generated certificate", None)?;
    // The new self-signed file first, then the uploaded one goes: at every
    // moment one of them is there for the nodes to read.
    save_key_file(&path, &pem)?;
    let uploaded = dir.join(UPLOADED);
    match fs::remove_file(&uploaded) {
        Ok(()) => store::fsutil::sync_dir(&dir).map_err(|e| CertError::Write { path: dir.display().to_string(), source: e })?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(CertError::Write { path: uploaded.display().to_string(), source: e }),
    }
    tracing::info!(path = %path.display(), sha256 = %fingerprint(&bundle.certs[0]), "new self-signed cluster certificate");
    info_of(&bundle.certs[0], SOURCE_SELF_SIGNED, &path, now_secs())
}

#[cfg(test)]
mod tests {
    use std::io::BufReader;

    use super::*;
    use crate::check::{check_pair, pem_section};
    use crate::testutil::*;

    #[test]
    fn upload_valid_certificate_shows_its_names() {
        let (_d, store) = new_store();
        let before = cert_info(&store).unwrap();
        assert_eq!(before.source, SOURCE_SELF_SIGNED);
        let (cert, key) = make(&["mail.example.test", "mx.example.test"]);
        // Key first: any order is accepted.
        let info = upload(&store, &format!("{}{}", key.serialize_pem(), cert.pem())).unwrap();
        assert_eq!(info.source, SOURCE_UPLOADED);
        assert_eq!(info.names, vec!["mail.example.test", "mx.example.test"]);
        assert_eq!(info.sha256, fingerprint(cert.der()));
        assert_eq!(info.sha256.len(), 32 * 3 - 1);
        assert!(info.expires_in_days > 365, "{info:?}");
        assert!(info.path.ends_with("tls/cluster.pem"), "{}", info.path);
        // The store now reports it, and it takes precedence over the self-signed one.
        assert_eq!(cert_info(&store).unwrap(), info);
        assert_ne!(info.sha256, before.sha256);
        let mode = fs::metadata(uploaded_path(&store)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, KEY_FILE_MODE);
    }

    #[test]
    fn text_from_a_web_form_with_crlf_and_extra_sections_is_accepted() {
        let (_d, store) = new_store();
        let (cert, key) = make(&["mail.example.test"]);
        // Browsers submit a textarea with CRLF line ends (the HTML standard,
        // textarea element); OpenSSL may add EC PARAMETERS and text around.
        let text = format!("subject=CN = mail.example.test\n{}-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n{}", cert.pem(), key.serialize_pem()).replace('\n', "\r\n");
        let info = upload(&store, &text).unwrap();
        assert_eq!(info.sha256, fingerprint(cert.der()));
    }

    #[test]
    fn the_leaf_is_the_certificate_of_the_key_whatever_the_order() {
        let (_d, store) = new_store();
        let (ca, _) = make(&["ca.example.test"]);
        let (leaf, key) = make(&["mail.example.test"]);
        let info = upload(&store, &format!("{}{}{}", ca.pem(), key.serialize_pem(), leaf.pem())).unwrap();
        assert_eq!(info.sha256, fingerprint(leaf.der()));
        // Saved leaf first (RFC 8446 4.4.2), then the rest of the chain.
        let saved = fs::read(uploaded_path(&store)).unwrap();
        let certs: Vec<_> = rustls_pemfile::certs(&mut BufReader::new(&saved[..])).collect::<Result<_, _>>().unwrap();
        assert_eq!(certs, vec![leaf.der().clone(), ca.der().clone()]);
    }

    #[test]
    fn rsa_pkcs1_and_pkcs8_keys_are_accepted() {
        use rsa::pkcs1::EncodeRsaPrivateKey;
        use rsa::pkcs8::EncodePrivateKey;
        let (_d, store) = new_store();
        let rsa_key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap();
        let pkcs8 = rsa_key.to_pkcs8_der().unwrap();
        let kp = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8.as_bytes().into(), &rcgen::PKCS_RSA_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["mail.example.test".to_string()]).unwrap().self_signed(&kp).unwrap();
        let pkcs1 = pem_section("RSA PRIVATE KEY", rsa_key.to_pkcs1_der().unwrap().as_bytes());
        let info = upload(&store, &format!("{}{pkcs1}", cert.pem())).unwrap();
        assert_eq!(info.sha256, fingerprint(cert.der()));
        let saved = String::from_utf8(fs::read(uploaded_path(&store)).unwrap()).unwrap();
        assert!(saved.contains("-----BEGIN RSA PRIVATE KEY-----"));
        let info = upload(&store, &format!("{}{}", pem_section("PRIVATE KEY", pkcs8.as_bytes()), cert.pem())).unwrap();
        assert_eq!(info.sha256, fingerprint(cert.der()));
    }

    #[test]
    fn a_key_that_does_not_match_is_refused_and_the_old_certificate_stays() {
        let (_d, store) = new_store();
        let (good, good_key) = make(&["mail.example.test"]);
        upload(&store, &format!("{}{}", good.pem(), good_key.serialize_pem())).unwrap();
        let saved = fs::read(uploaded_path(&store)).unwrap();
        let (other, _) = make(&["mail.example.test"]);
        let (_, wrong_key) = make(&["mail.example.test"]);
        let err = upload(&store, &format!("{}{}", other.pem(), wrong_key.serialize_pem())).unwrap_err();
        assert!(matches!(err, CertError::KeyMismatch), "{err}");
        assert_eq!(cert_info(&store).unwrap().sha256, fingerprint(good.der()));
        assert_eq!(fs::read(uploaded_path(&store)).unwrap(), saved);
    }

    #[test]
    fn bad_texts_are_refused_and_change_nothing() {
        let (_d, store) = new_store();
        let before = cert_info(&store).unwrap();
        let (cert, key) = make(&["mail.example.test"]);
        let (expired, expired_key) = make_with(&["mail.example.test"], |p| {
            p.not_before = rcgen::date_time_ymd(2000, 1, 1);
            p.not_after = rcgen::date_time_ymd(2001, 1, 1);
        });
        let (future, future_key) = make_with(&["mail.example.test"], |p| {
            p.not_before = rcgen::date_time_ymd(2999, 1, 1);
            p.not_after = rcgen::date_time_ymd(3000, 1, 1);
        });
        let (_, key2) = make(&["x.test"]);
        let not_base64 = "-----BEGIN CERTIFICATE-----\n!!not base64!!\n-----END CERTIFICATE-----\n";
        let not_x509 = pem_section("CERTIFICATE", b"this is not DER at all");
        let big = format!("{}{}{}", cert.pem(), key.serialize_pem(), "#".repeat(MAX_PEM_BYTES));
        let encrypted = "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n";
        type Expect = fn(&CertError) -> bool;
        let cases: Vec<(String, Expect)> = vec![
            (String::new(), |e| matches!(e, CertError::Empty)),
            (" \r\n\t\n".into(), |e| matches!(e, CertError::Empty)),
            ("hello, this is no certificate".into(), |e| matches!(e, CertError::NoCert(_))),
            (key.serialize_pem(), |e| matches!(e, CertError::NoCert(_))),
            (cert.pem(), |e| matches!(e, CertError::NoKey(_))),
            (format!("{}{}{}", cert.pem(), key.serialize_pem(), key2.serialize_pem()), |e| matches!(e, CertError::ManyKeys { count: 2, .. })),
            (format!("{not_base64}{}", key.serialize_pem()), |e| matches!(e, CertError::BadPem { .. })),
            (format!("{not_x509}{}", key.serialize_pem()), |e| matches!(e, CertError::BadCert { index: 1, .. })),
            (format!("{}{}", expired.pem(), expired_key.serialize_pem()), |e| matches!(e, CertError::Expired(d) if d == "2001-01-01T00:00:00Z")),
            (format!("{}{}", future.pem(), future_key.serialize_pem()), |e| matches!(e, CertError::NotYetValid(_))),
            (format!("{}{encrypted}", cert.pem()), |e| matches!(e, CertError::EncryptedKey)),
            (big, |e| matches!(e, CertError::TooLarge { max: MAX_PEM_BYTES, .. })),
        ];
        for (i, (text, expected)) in cases.iter().enumerate() {
            let err = upload(&store, text).expect_err(&format!("case {i} was accepted"));
            assert!(expected(&err), "case {i}: unexpected error {err:?}");
            assert!(!err.to_string().is_empty());
        }
        assert!(!uploaded_path(&store).exists());
        assert_eq!(cert_info(&store).unwrap(), before);
    }

    #[test]
    fn regenerate_makes_a_new_self_signed_certificate_and_drops_the_upload() {
        let (_d, store) = new_store();
        let first = cert_info(&store).unwrap();
        let (cert, key) = make(&["mail.example.test"]);
        upload(&store, &format!("{}{}", cert.pem(), key.serialize_pem())).unwrap();
        let info = regenerate(&store).unwrap();
        assert_eq!(info.source, SOURCE_SELF_SIGNED);
        assert_ne!(info.sha256, first.sha256);
        assert_ne!(info.sha256, fingerprint(cert.der()));
        assert_eq!(info.names, vec!["mail.example.test", "example.test", "localhost"]);
        assert_eq!(info.subject, "CN=mail.example.test");
        assert!(!uploaded_path(&store).exists());
        assert_eq!(cert_info(&store).unwrap(), info);
        let again = regenerate(&store).unwrap();
        assert_ne!(again.sha256, info.sha256);
    }

    #[test]
    fn damaged_certificates_are_refused_with_the_reason_and_change_nothing() {
        let (_d, store) = new_store();
        let before = cert_info(&store).unwrap();
        let (cert, key) = make(&["mail.example.test"]);
        let der = cert.der().to_vec();
        let issuer_oid_len = find(&der, &CN_OID, 0) + 1;
        // A leaf issued by a CA, uploaded without the CA: its signature
        // cannot be checked here, only its encoding.
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(vec!["ca.example.test".to_string()]).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, "Test CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["mail.example.test".to_string()]).unwrap().signed_by(&leaf_key, &ca_cert, &ca_key).unwrap();
        let leaf_der = leaf.der().to_vec();
        // The CA-issued leaf itself is fine, alone or with its CA.
        assert_eq!(check_pair(leaf.pem().as_bytes(), leaf_key.serialize_pem().as_bytes()).unwrap().fingerprint(), fingerprint(&leaf_der));
        check_pair(format!("{}{}", leaf.pem(), ca_cert.pem()).as_bytes(), leaf_key.serialize_pem().as_bytes()).unwrap();
        let leaf_issuer_oid_len = find(&leaf_der, &CN_OID, 0) + 1;
        let mut bad_signature = der.clone();
        *bad_signature.last_mut().unwrap() ^= 1;
        // A letter of the subjectAltName's dNSName (RFC 5280 4.2.1.6).
        let bad_name = patched(&der, find(&der, b"mail.example.test", 0), b'n');
        let mut trailing = der.clone();
        trailing.extend_from_slice(b"\0\0garbage");
        let mut tampered_leaf_with_ca = pem_of(&patched(&leaf_der, find(&leaf_der, b"mail.example.test", 0), b'n'), &leaf_key);
        tampered_leaf_with_ca.push_str(&ca_cert.pem());
        let is_der = |e: &CertError| matches!(e, CertError::BadCert { index: 1, reason, .. } if reason.starts_with("invalid DER at byte"));
        type Expect = Box<dyn Fn(&CertError) -> bool>;
        let cases: Vec<(&str, String, Expect)> = vec![
            ("the issuer OID's length 3 -> 2", pem_of(&patched(&der, issuer_oid_len, 2), &key), Box::new(is_der)),
            ("the issuer OID's length 3 -> 4", pem_of(&patched(&der, issuer_oid_len, 4), &key), Box::new(is_der)),
            ("the issuer OID's length 3 -> 0x83", pem_of(&patched(&der, issuer_oid_len, 0x83), &key), Box::new(is_der)),
            ("a CA-issued leaf's issuer OID length", pem_of(&patched(&leaf_der, leaf_issuer_oid_len, 2), &leaf_key), Box::new(is_der)),
            ("truncated", pem_of(&der[..der.len() - 10], &key), Box::new(is_der)),
            ("trailing garbage", pem_of(&trailing, &key), Box::new(is_der)),
            ("a damaged signature", pem_of(&bad_signature, &key), Box::new(|e| matches!(e, CertError::BadSignature { index: 1, issuer: 1, .. }))),
            ("a changed name", pem_of(&bad_name, &key), Box::new(|e| matches!(e, CertError::BadSignature { index: 1, issuer: 1, .. }))),
            ("a changed CA-issued leaf", tampered_leaf_with_ca, Box::new(|e| matches!(e, CertError::BadSignature { index: 1, issuer: 2, .. }))),
            ("the key of another certificate", pem_of(&der, &leaf_key), Box::new(|e| matches!(e, CertError::KeyMismatch))),
        ];
        for (what, text, expected) in &cases {
            let err = upload(&store, text).expect_err(&format!("{what}: accepted"));
            assert!(expected(&err), "{what}: unexpected error {err:?}");
            // The same from the pure check, with the key in its own text.
            assert!(check_pair(text.as_bytes(), b"").is_err(), "{what}");
            eprintln!("{what}: {err}");
        }
        assert!(!uploaded_path(&store).exists());
        assert_eq!(cert_info(&store).unwrap(), before);
    }
}
