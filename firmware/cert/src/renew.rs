//! Renewal of the self-signed cluster certificate before its end, agreed
//! between nodes through the store; an uploaded one is only warned about.

use std::fs;
use std::io;
use std::path::Path;

use store::Store;

use crate::check::{parse_bundle, parse_x509};
use crate::generate::{generate_self_signed, self_signed_due};
use crate::info::{fingerprint, info_of, CertInfo, SOURCE_SELF_SIGNED, SOURCE_UPLOADED};
use crate::storage::{link_new, rand_suffix, read_cert_file, read_or_create, SELF_SIGNED};
use crate::{CertError, RENEW_BEFORE_DAYS, SECS_PER_DAY};

/// What [`renew_if_due`] found or did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Renewal {
    /// The certificate in effect has time left.
    NotDue,
    /// The self-signed certificate in effect was due and has been
    /// replaced by this one (by this call, or by another node just before).
    Renewed(CertInfo),
    /// The certificate in effect is an uploaded one and expires within
    /// [`RENEW_BEFORE_DAYS`]: only an operator can replace it.
    UploadedExpiring(CertInfo),
}

/// The leaf's validity (RFC 5280 4.1.2.5) in a PEM text, without the
/// other checks: for deciding whether it is due.
fn leaf_validity(text: &[u8], what: &str) -> Result<(i64, i64, String), CertError> {
    let p = parse_bundle(text, what, None)?;
    let v = parse_x509(&p.certs[0], what, 0)?.validity().clone();
    Ok((v.not_before.timestamp(), v.not_after.timestamp(), p.fingerprint()))
}

/// Renews the self-signed cluster certificate if it is in effect and due
/// at `now` (see [`RENEW_BEFORE_DAYS`]); every node calls this from its
/// reloader, and the others follow the new file. An uploaded certificate
/// is never replaced; near its end it is reported instead.
///
/// Nodes do not race: the successor of a certificate is first linked to a
/// name derived from the old one's fingerprint (`self-signed.pem.next-…`),
/// which only the first node manages to create, and then every node that
/// finds the old certificate still in place moves that same successor in
/// (link to a temporary name, then rename over `self-signed.pem`). Each
/// file is complete before it gets a name, chain and key in one file, so
/// a crash at any step leaves either the old pair or the new one, and the
/// next call finishes the switch.
pub fn renew_if_due(store: &Store, now: i64) -> Result<Renewal, CertError> {
    let dir = store.tls_dir();
    let e = read_or_create(store)?;
    if e.source == SOURCE_UPLOADED {
        // A broken upload is not in effect: the self-signed one is.
        if let Ok((_, not_after, _)) = leaf_validity(&e.text, &e.path.display().to_string()) {
            if not_after - now < RENEW_BEFORE_DAYS * SECS_PER_DAY {
                let b = parse_bundle(&e.text, &e.path.display().to_string(), None)?;
                return Ok(Renewal::UploadedExpiring(info_of(&b.certs[0], SOURCE_UPLOADED, &e.path, now)?));
            }
            return Ok(Renewal::NotDue);
        }
    }
    let path = dir.join(SELF_SIGNED);
    let what = path.display().to_string();
    let current = read_cert_file(&path, SOURCE_SELF_SIGNED)?.ok_or_else(|| CertError::NoCert(what.clone()))?;
    // A self-signed file that cannot be used is replaced as well.
    let old_id = match leaf_validity(&current.text, &what) {
        Ok((nb, na, _)) if !self_signed_due(nb, na, now) => return Ok(Renewal::NotDue),
        Ok((_, _, fp)) => fp,
        Err(_) => fingerprint(&current.text),
    };
    let next = dir.join(format!("{SELF_SIGNED}.next-{}", old_id.replace(':', "").get(..32).unwrap_or_default()));
    let werr = |p: &Path| {
        let p = p.display().to_string();
        move |e| CertError::Write { path: p, source: e }
    };
    if !next.exists() {
        let pem = generate_self_signed(store, now)?;
        parse_bundle(pem.as_bytes(), "the generated certificate", None)?;
        if !link_new(&dir, &pem, &next).map_err(werr(&next))? {
            tracing::info!("another node renews the self-signed certificate; following it");
        }
    }
    let successor = read_cert_file(&next, SOURCE_SELF_SIGNED)?.ok_or_else(|| CertError::NoCert(next.display().to_string()))?;
    let checked = match parse_bundle(&successor.text, &next.display().to_string(), None) {
        Ok(c) => c,
        Err(err) => {
            // Not made by this program: out of the way, for the next try.
            let _ = fs::remove_file(&next);
            return Err(err);
        }
    };
    // Still the old certificate (another node may have finished already)?
    let again = read_cert_file(&path, SOURCE_SELF_SIGNED)?.map(|f| f.text);
    if again.as_deref() == Some(&current.text[..]) {
        let tmp = dir.join(format!(".{SELF_SIGNED}.{}.{:x}", std::process::id(), rand_suffix()));
        let install = || -> io::Result<()> {
            fs::hard_link(&next, &tmp)?;
            fs::rename(&tmp, &path)?;
            store::fsutil::sync_dir(&dir)
        };
        let r = install();
        let _ = fs::remove_file(&tmp);
        r.map_err(werr(&path))?;
        tracing::info!(sha256 = %checked.fingerprint(), "self-signed cluster certificate renewed");
    }
    // The successors of earlier certificates are done with.
    if let Ok(entries) = fs::read_dir(&dir) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(&format!("{SELF_SIGNED}.next-")) && entry.path() != next {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
    Ok(Renewal::Renewed(info_of(&checked.certs[0], SOURCE_SELF_SIGNED, &path, now)?))
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::check::check_pair;
    use crate::generate::SELF_SIGNED_LIFETIME_SECS;
    use crate::info::{expiry_warning, SOURCE_SELF_SIGNED};
    use crate::resolver::ClusterCertResolver;
    use crate::storage::{cert_info, save_key_file, upload};
    use crate::testutil::*;
    use crate::now_secs;

    #[test]
    fn a_self_signed_certificate_near_its_end_is_renewed_and_presented() {
        let (_d, store) = new_store();
        let r = ClusterCertResolver::load(&store).unwrap();
        let fresh = presented(&r);
        let now = now_secs();
        assert_eq!(renew_if_due(&store, now).unwrap(), Renewal::NotDue);
        assert!(!r.maintain(&store, now).unwrap());
        // 20 days before the end: less than RENEW_BEFORE_DAYS left.
        let old = age_self_signed(&store, SELF_SIGNED_LIFETIME_SECS - 20 * SECS_PER_DAY);
        assert!(r.check(&store).unwrap());
        assert_eq!(presented(&r), old);
        assert_ne!(old, fresh);
        assert!(r.maintain(&store, now).unwrap(), "renewed");
        let renewed = presented(&r);
        assert_ne!(renewed, old);
        let info = r.info();
        assert_eq!(info, cert_info(&store).unwrap());
        assert!(info.expires_in_days >= 396, "{info:?}");
        // Done: nothing more to do, for this node or another.
        assert_eq!(renew_if_due(&store, now).unwrap(), Renewal::NotDue);
        assert!(!r.maintain(&store, now).unwrap());
        assert_eq!(presented(&r), renewed);
        let successors: Vec<_> = fs::read_dir(store.tls_dir()).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n.contains(".next-")).collect();
        assert_eq!(successors.len(), 1, "{successors:?}");

        // A certificate of an earlier version, valid for centuries, is
        // replaced at once; the successor of the previous renewal goes.
        let pem = {
            let key = rcgen::KeyPair::generate().unwrap();
            let mut p = rcgen::CertificateParams::new(vec!["mail.example.test".to_string()]).unwrap();
            p.not_before = rcgen::date_time_ymd(1975, 1, 1);
            p.not_after = rcgen::date_time_ymd(4096, 1, 1);
            format!("{}{}", key.serialize_pem(), p.self_signed(&key).unwrap().pem())
        };
        save_key_file(&store.tls_dir().join(SELF_SIGNED), &pem).unwrap();
        assert!(matches!(renew_if_due(&store, now).unwrap(), Renewal::Renewed(i) if i.expires_in_days >= 396));
        let successors: Vec<_> = fs::read_dir(store.tls_dir()).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().contains(".next-")).collect();
        assert_eq!(successors.len(), 1);
    }

    #[test]
    fn nodes_renewing_at_once_agree_on_one_certificate() {
        let (_d, store) = new_store();
        age_self_signed(&store, SELF_SIGNED_LIFETIME_SECS - 5 * SECS_PER_DAY);
        let now = now_secs();
        // Two nodes (threads) at once, and a third later: all end with the same certificate.
        let results: Vec<_> = std::thread::scope(|s| {
            let a = s.spawn(|| renew_if_due(&store, now).unwrap());
            let b = s.spawn(|| renew_if_due(&store, now).unwrap());
            vec![a.join().unwrap(), b.join().unwrap()]
        });
        let mut fps = Vec::new();
        for r in results {
            match r {
                Renewal::Renewed(i) => fps.push(i.sha256),
                Renewal::NotDue => {}
                other => panic!("{other:?}"),
            }
        }
        let now_in_effect = cert_info(&store).unwrap().sha256;
        assert!(!fps.is_empty());
        assert!(fps.iter().all(|f| *f == now_in_effect), "{fps:?} vs {now_in_effect}");
        assert_eq!(renew_if_due(&store, now).unwrap(), Renewal::NotDue);

        // A crash between deciding the successor and moving it in: the
        // next call finishes the switch with the same successor.
        let old = age_self_signed(&store, SELF_SIGNED_LIFETIME_SECS - 5 * SECS_PER_DAY);
        let next = store.tls_dir().join(format!("{SELF_SIGNED}.next-{}", &old.replace(':', "")[..32]));
        let successor = generate_self_signed(&store, now).unwrap();
        save_key_file(&next, &successor).unwrap();
        let Renewal::Renewed(info) = renew_if_due(&store, now).unwrap() else { panic!("not renewed") };
        assert_eq!(info.sha256, check_pair(successor.as_bytes(), b"").unwrap().fingerprint());
        assert_eq!(cert_info(&store).unwrap().sha256, info.sha256);
    }

    #[test]
    fn an_uploaded_certificate_near_its_end_is_reported_not_replaced() {
        let (_d, store) = new_store();
        let (cert, key) = make_with(&["mail.example.test"], |p| {
            p.not_before = rcgen::date_time_ymd(2020, 1, 1);
            p.not_after = rcgen::date_time_ymd(2999, 1, 1);
        });
        let uploaded = upload(&store, &format!("{}{}", cert.pem(), key.serialize_pem())).unwrap();
        assert_eq!(uploaded.warning, None);
        let r = ClusterCertResolver::load(&store).unwrap();
        // 10 days before its end.
        let na = parse_x509(cert.der(), "test", 0).unwrap().validity().not_after.timestamp();
        let late = na - 10 * SECS_PER_DAY;
        let Renewal::UploadedExpiring(info) = renew_if_due(&store, late).unwrap() else { panic!("not reported") };
        assert_eq!(info.expires_in_days, 10);
        assert!(info.warning.as_deref().unwrap_or_default().contains("expires in 10 days"), "{info:?}");
        assert!(!r.maintain(&store, late).unwrap());
        assert_eq!(presented(&r), fingerprint(cert.der()));
        assert_eq!(cert_info(&store).unwrap().sha256, fingerprint(cert.der()));
        assert!(expiry_warning(SOURCE_UPLOADED, na, na + 1).unwrap().contains("expired"));
        assert_eq!(expiry_warning(SOURCE_SELF_SIGNED, na, late), None);
    }
}
