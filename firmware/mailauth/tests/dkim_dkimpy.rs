//! Our DKIM signatures checked by an independent verifier: dkimpy, the
//! Python DKIM library behind many mail filters. The test hands dkimpy the
//! TXT record that keygen printed, exactly as it would be published.
//!
//! Needs Python 3 with dkimpy and PyNaCl (for Ed25519):
//! `pip install dkimpy pynacl`, or Debian's python3-dkim and python3-nacl.
//! Fails (does not skip) when they are missing.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use mailauth::{keygen, Algorithm, DkimKeyInfo, Signer};

/// dkimpy's verify() with a DNS function that answers the one name.
const VERIFY_PY: &str = r#"
import io, logging, sys
import dkim
message = open(sys.argv[1], 'rb').read()
name = sys.argv[2].encode().lower()
record = open(sys.argv[3], 'rb').read()
def dnsfunc(qname, timeout=5):
    return record if qname.rstrip(b'.').lower() == name else None
log = io.StringIO()
logger = logging.getLogger('dkimpy-test')
logger.addHandler(logging.StreamHandler(log))
logger.setLevel(logging.DEBUG)
try:
    ok = dkim.DKIM(message, logger=logger).verify(dnsfunc=dnsfunc)
except dkim.DKIMException as e:
    ok = False
    print('FAIL', type(e).__name__, e)
print('PASS' if ok else 'FAIL')
sys.stdout.write(log.getvalue())
"#;

/// The first Python 3 that has dkimpy and PyNaCl.
fn python_with_dkimpy() -> PathBuf {
    let candidates = [find_tool("python3"), Some(PathBuf::from("/usr/bin/python3"))];
    for python in candidates.into_iter().flatten() {
        let ok = Command::new(&python).args(["-c", "import dkim, nacl"]).output().map(|o| o.status.success()).unwrap_or(false);
        if ok {
            return python;
        }
    }
    panic!(
        "this test needs Python 3 with dkimpy and PyNaCl: `pip install dkimpy pynacl` \
         (or apt-get install python3-dkim python3-nacl)"
    );
}

/// Runs dkimpy on `message`; true when it says the signature verifies.
fn dkimpy_verifies(python: &Path, dir: &Path, info: &DkimKeyInfo, message: &[u8]) -> (bool, String) {
    let msg_path = dir.join("message.eml");
    let txt_path = dir.join("record.txt");
    std::fs::write(&msg_path, message).expect("write message");
    // What a resolver returns: the character-strings joined (RFC 6376 3.6.2.2).
    std::fs::write(&txt_path, info.txt_strings().concat()).expect("write record");
    let out = Command::new(python)
        .arg("-c")
        .arg(VERIFY_PY)
        .arg(&msg_path)
        .arg(&info.dns_name)
        .arg(&txt_path)
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "dkimpy crashed:\n{stdout}\n{stderr}");
    (stdout.lines().any(|l| l == "PASS"), format!("{stdout}{stderr}"))
}

fn sign_and_verify(alg: Algorithm, a_tag: &str) {
    let python = python_with_dkimpy();
    let store = tempfile::tempdir().expect("temp dir");
    let info = keygen(store.path(), "example.test", "mf1", alg).expect("keygen");
    assert!(info.active);
    assert_eq!(info.dns_name, "mf1._domainkey.example.test");

    let signer = Signer::load(store.path(), "example.test").expect("load").expect("the domain has a key");
    assert_eq!(signer.algorithm(), alg);
    let message = message("alice@example.test", "bob@example.org", "Quarterly report", "The figures are attached.");
    let header = signer.sign(&message).expect("sign");

    // The field is complete and folded: it starts with its name, ends in
    // CRLF, and every line after the first is a continuation (RFC 5322 2.2.3).
    assert!(header.starts_with("DKIM-Signature: v=1; a="), "{header}");
    assert!(header.ends_with("\r\n"), "{header:?}");
    for line in header.trim_end_matches("\r\n").split("\r\n").skip(1) {
        assert!(line.starts_with([' ', '\t']), "unfolded line {line:?} in {header:?}");
    }
    for line in header.split("\r\n") {
        assert!(line.len() <= 998, "RFC 5322 2.1.1 line limit");
    }
    assert!(header.contains(&format!("a={a_tag};")), "{header}");
    assert!(header.contains("d=example.test;") && header.contains("s=mf1;"), "{header}");
    assert!(header.contains("c=relaxed/relaxed"), "{header}");
    assert!(!header.contains(" l="), "no body length tag: {header}");

    let signed = prepend(&header, &message);
    let (ok, log) = dkimpy_verifies(&python, store.path(), &info, &signed);
    assert!(ok, "dkimpy rejects our {a_tag} signature:\n{log}\n{}", String::from_utf8_lossy(&signed));

    // The verifier really checks: a changed body or a changed subject fails.
    let body_changed = tamper(&signed, "attached", "not attached");
    let (ok, _) = dkimpy_verifies(&python, store.path(), &info, &body_changed);
    assert!(!ok, "dkimpy accepted a changed body");
    let text = String::from_utf8(signed.clone()).expect("UTF-8");
    let subject_changed = text.replacen("Subject: Quarterly report", "Subject: Quarterly REPORT", 1).into_bytes();
    let (ok, _) = dkimpy_verifies(&python, store.path(), &info, &subject_changed);
    assert!(!ok, "dkimpy accepted a changed Subject");
    // A second From added above the signed one breaks it (From is oversigned).
    let extra_from = prepend("From: mallory@example.test\r\n", &signed);
    let (ok, _) = dkimpy_verifies(&python, store.path(), &info, &extra_from);
    assert!(!ok, "dkimpy accepted an added From");

    // A relay that re-folds a header and adds trace fields does not break it
    // (relaxed header canonicalisation, RFC 6376 3.4.2).
    let refolded = text.replacen("Cc: Carol <carol@example.org>,\r\n  Dave", "Cc: Carol <carol@example.org>, Dave", 1);
    let relayed = format!("Received: from mail.example.test by mx.example.org; Mon, 6 Jan 2025 10:00:01 +0000\r\n{refolded}");
    let (ok, log) = dkimpy_verifies(&python, store.path(), &info, relayed.as_bytes());
    assert!(ok, "a relayed, re-folded copy no longer verifies:\n{log}");
}

#[test]
fn rsa_sha256_signatures_verify_with_dkimpy() {
    sign_and_verify(Algorithm::RsaSha256, "rsa-sha256");
}

#[test]
fn ed25519_sha256_signatures_verify_with_dkimpy() {
    sign_and_verify(Algorithm::Ed25519Sha256, "ed25519-sha256");
}

/// A key made elsewhere (PKCS#1 "RSA PRIVATE KEY", as opendkim-genkey
/// writes) can be moved into the store and used.
#[test]
fn an_imported_pkcs1_rsa_key_signs() {
    use rsa::pkcs1::EncodeRsaPrivateKey;
    use rsa::pkcs8::EncodePublicKey;
    let python = python_with_dkimpy();
    let store = tempfile::tempdir().expect("temp dir");
    let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).expect("rsa key");
    let pem = key.to_pkcs1_pem(rsa::pkcs8::LineEnding::LF).expect("pem");
    assert!(pem.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    let dir = store.path().join("dkim/example.test");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("default.pem"), pem.as_bytes()).expect("write key");
    std::fs::write(dir.join("selector"), "default\n").expect("write selector");

    let info = mailauth::txt_record(store.path(), "example.test").expect("txt").expect("a key");
    assert_eq!(info.algorithm, Algorithm::RsaSha256);
    // p= is the SubjectPublicKeyInfo (RFC 6376 3.6.1, erratum 3017).
    let spki = key.to_public_key().to_public_key_der().expect("spki");
    use base64::Engine;
    let p = base64::engine::general_purpose::STANDARD.encode(spki.as_bytes());
    assert_eq!(info.dns_value, format!("v=DKIM1; k=rsa; p={p}"));

    let signer = Signer::load(store.path(), "example.test").expect("load").expect("a key");
    let message = message("alice@example.test", "bob@example.org", "Imported", "Old key, new server.");
    let signed = prepend(&signer.sign(&message).expect("sign"), &message);
    let (ok, log) = dkimpy_verifies(&python, store.path(), &info, &signed);
    assert!(ok, "dkimpy rejects a signature by an imported key:\n{log}");
}

#[test]
fn a_domain_without_a_key_has_no_signer() {
    let store = tempfile::tempdir().expect("temp dir");
    assert!(Signer::load(store.path(), "example.test").expect("load").is_none());
    assert!(mailauth::txt_record(store.path(), "example.test").expect("txt").is_none());
}

#[test]
fn the_author_domain_is_the_from_domain() {
    let m = message("alice@Example.TEST", "bob@example.org", "s", "b");
    assert_eq!(mailauth::author_domain(&m).as_deref(), Some("example.test"));
    assert_eq!(mailauth::author_domain(b"From: a@x.test, b@y.test\r\n\r\nbody\r\n"), None, "two author domains");
    assert_eq!(mailauth::author_domain(b"Subject: none\r\n\r\nbody\r\n"), None);
}
