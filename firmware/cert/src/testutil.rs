//! What the unit tests share: a store, certificates made for them, and
//! ways to damage one.

use std::path::PathBuf;

use store::Store;

use crate::check::pem_section;
use crate::generate::generate_self_signed;
use crate::info::fingerprint;
use crate::resolver::ClusterCertResolver;
use crate::storage::{save_key_file, SELF_SIGNED, UPLOADED};
use crate::check::check_pair;
use crate::now_secs;

pub(crate) fn new_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::init(&dir.path().join("store"), "example.test", None).unwrap();
    (dir, store)
}

/// A certificate for `names`, issued by itself, and its key (P-256, PKCS#8).
pub(crate) fn make(names: &[&str]) -> (rcgen::Certificate, rcgen::KeyPair) {
    make_with(names, |_| {})
}

pub(crate) fn make_with(names: &[&str], f: impl FnOnce(&mut rcgen::CertificateParams)) -> (rcgen::Certificate, rcgen::KeyPair) {
    let mut params = rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    f(&mut params);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert, key)
}

pub(crate) fn uploaded_path(store: &Store) -> PathBuf {
    store.tls_dir().join(UPLOADED)
}

/// `der` with the byte at `at` set to `value`.
pub(crate) fn patched(der: &[u8], at: usize, value: u8) -> Vec<u8> {
    let mut d = der.to_vec();
    d[at] = value;
    d
}

/// Where `pattern` occurs in `der` for the `nth` time (from 0).
pub(crate) fn find(der: &[u8], pattern: &[u8], nth: usize) -> usize {
    der.windows(pattern.len()).enumerate().filter(|(_, w)| *w == pattern).nth(nth).map(|(i, _)| i).expect("pattern in the certificate")
}

pub(crate) fn pem_of(der: &[u8], key: &rcgen::KeyPair) -> String {
    format!("{}{}", pem_section("CERTIFICATE", der), key.serialize_pem())
}

/// Makes the store's self-signed certificate as if it had been made
/// `age` seconds ago.
pub(crate) fn age_self_signed(store: &Store, age: i64) -> String {
    let pem = generate_self_signed(store, now_secs() - age).unwrap();
    save_key_file(&store.tls_dir().join(SELF_SIGNED), &pem).unwrap();
    check_pair(pem.as_bytes(), b"").unwrap().fingerprint()
}

pub(crate) fn presented(r: &ClusterCertResolver) -> String {
    fingerprint(r.current().end_entity_cert().unwrap())
}

/// The OID of id-at-commonName (2.5.4.3, RFC 5280 A.1) with its tag and
/// length; its first occurrence in a certificate is in the issuer (RFC
/// 5280 4.1: the issuer comes before the subject).
pub(crate) const CN_OID: [u8; 5] = [0x06, 0x03, 0x55, 0x04, 0x03];
