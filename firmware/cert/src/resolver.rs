//! What a process presents: [`ClusterCertResolver`] holds the cluster
//! certificate in memory for handshakes and follows its file in the store
//! ([`spawn_reloader`]), so that an upload on any node reaches every node
//! within [`RELOAD_INTERVAL`], without a restart. A process makes one and
//! hands it to everything that serves TLS with the cluster certificate.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use store::Store;

use crate::check::{parse_bundle, parse_x509};
use crate::generate::self_signed_due;
use crate::info::{expires_in_days, expiry_warning, info_of, rfc3339, CertInfo, SOURCE_SELF_SIGNED, SOURCE_UPLOADED};
use crate::renew::{renew_if_due, Renewal};
use crate::storage::{ensure_self_signed, read_cert_file, read_effective, read_or_create, Effective, Stamp, SELF_SIGNED};
use crate::{now_secs, CertError, RELOAD_INTERVAL};

#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    info: CertInfo,
    not_before: i64,
    not_after: i64,
    /// The version of the file last looked at (loaded, or found broken).
    stamp: Stamp,
    /// The version of the uploaded file last found unusable: while it is
    /// there, the self-signed file underneath is followed, if that is what
    /// is presented.
    broken_upload: Option<Stamp>,
}

/// Presents the store's cluster certificate and follows its changes.
/// Handshakes only take the current key from memory; the files are read by
/// [`ClusterCertResolver::check`], off the handshake path.
#[derive(Debug)]
pub struct ClusterCertResolver {
    current: RwLock<Loaded>,
    reloading: AtomicBool,
    /// The days left when an expiring upload was last warned about: one
    /// warning a day in the log.
    expiry_warned: Mutex<Option<i64>>,
}

impl ClusterCertResolver {
    /// Loads the store's cluster certificate, making the self-signed one if
    /// there is none. A broken uploaded file does not stop a node: it falls
    /// back to the self-signed certificate and says so.
    ///
    /// A process makes one and hands it to every server that presents the
    /// cluster certificate (the node's sessions, the admin page) and to what
    /// changes it ([`upload`](Self::upload), [`regenerate`](Self::regenerate)),
    /// so that they all present the same certificate and a change through
    /// any of them takes effect at once in all. [`spawn_reloader`] makes it
    /// follow changes made elsewhere. Blocking file I/O.
    pub fn load(store: &Store) -> Result<Arc<Self>, CertError> {
        let e = read_or_create(store)?;
        let loaded = match Self::parse(&e) {
            Ok(l) => l,
            Err(err) if e.source == SOURCE_UPLOADED => {
                tracing::error!(path = %e.path.display(), error = %err, "the uploaded certificate is unusable; presenting the self-signed one");
                let path = ensure_self_signed(store)?;
                let f = read_cert_file(&path, SOURCE_SELF_SIGNED)?.ok_or_else(|| CertError::NoCert(path.display().to_string()))?;
                Loaded { broken_upload: Some(e.stamp), ..Self::parse(&f)? }
            }
            Err(err) => return Err(err),
        };
        Ok(Arc::new(ClusterCertResolver { current: RwLock::new(loaded), reloading: AtomicBool::new(false), expiry_warned: Mutex::new(None) }))
    }

    fn parse(e: &Effective) -> Result<Loaded, CertError> {
        let what = e.path.display().to_string();
        let b = parse_bundle(&e.text, &what, None)?;
        let info = info_of(&b.certs[0], e.source, &e.path, now_secs())?;
        let v = parse_x509(&b.certs[0], &what, 0)?.validity().clone();
        Ok(Loaded { key: b.certified, info, not_before: v.not_before.timestamp(), not_after: v.not_after.timestamp(), stamp: e.stamp, broken_upload: None })
    }

    /// Re-reads the cluster certificate if its file changed since the last
    /// look (the uploaded file if present, else the self-signed one). True
    /// when a new certificate is now presented. A file that cannot be used
    /// leaves the current certificate in place; its error is returned once
    /// per version of the file. Blocking file I/O: call it off the async
    /// threads (spawn_blocking).
    pub fn check(&self, store: &Store) -> Result<bool, CertError> {
        let dir = store.tls_dir();
        let mut e = match read_effective(&dir)? {
            Some(e) => e,
            // Both files deleted by hand: make a self-signed one, as at start.
            None => read_or_create(store)?,
        };
        let (stamp, broken_upload, presents_self_signed) = {
            let l = self.read();
            (l.stamp, l.broken_upload, l.info.source == SOURCE_SELF_SIGNED)
        };
        if e.source == SOURCE_UPLOADED && broken_upload == Some(e.stamp) {
            // The same unusable upload: keep presenting what we present,
            // following the self-signed file if that is it (it is renewed).
            match read_cert_file(&dir.join(SELF_SIGNED), SOURCE_SELF_SIGNED)? {
                Some(s) if presents_self_signed => e = s,
                _ => return Ok(false),
            }
        }
        if stamp == e.stamp {
            return Ok(false);
        }
        match Self::parse(&e) {
            Ok(l) => {
                let mut w = self.current.write().unwrap_or_else(|p| p.into_inner());
                let changed = l.info.sha256 != w.info.sha256;
                if changed {
                    tracing::info!(source = l.info.source, sha256 = %l.info.sha256, not_after = %l.info.not_after, "TLS certificate reloaded");
                }
                let broken_upload = if e.source == SOURCE_UPLOADED { None } else { w.broken_upload };
                *w = Loaded { broken_upload, ..l };
                Ok(changed)
            }
            Err(err) => {
                let mut w = self.current.write().unwrap_or_else(|p| p.into_inner());
                if e.source == SOURCE_UPLOADED {
                    w.broken_upload = Some(e.stamp);
                } else {
                    w.stamp = e.stamp;
                }
                Err(err)
            }
        }
    }

    /// Keeps the certificate in effect from running out, after a
    /// [`check`](Self::check): the self-signed one, when due, is renewed
    /// ([`renew_if_due`]) and presented; an uploaded one that expires
    /// within [`RENEW_BEFORE_DAYS`](crate::RENEW_BEFORE_DAYS) is warned about in the log once a day.
    /// True when a renewed certificate is now presented. Blocking file I/O.
    pub fn maintain(&self, store: &Store, now: i64) -> Result<bool, CertError> {
        let (source, not_before, not_after) = {
            let l = self.read();
            (l.info.source.clone(), l.not_before, l.not_after)
        };
        if source == SOURCE_SELF_SIGNED && self_signed_due(not_before, not_after, now) {
            let before = self.read().info.sha256.clone();
            if let Renewal::Renewed(_) = renew_if_due(store, now)? {
                // The renewed file, now rather than at the next check.
                self.check(store)?;
                return Ok(self.read().info.sha256 != before);
            }
        } else if source != SOURCE_SELF_SIGNED {
            if let Some(w) = expiry_warning(&source, not_after, now) {
                let days = expires_in_days(not_after, now);
                let mut warned = self.expiry_warned.lock().unwrap_or_else(|p| p.into_inner());
                if *warned != Some(days) {
                    tracing::warn!(not_after = %rfc3339(not_after), days, "{w}");
                    *warned = Some(days);
                }
            }
        }
        Ok(false)
    }

    /// Makes `pem` the cluster certificate ([`crate::upload`]) and presents
    /// it at once; the other nodes follow within [`RELOAD_INTERVAL`].
    /// Blocking file I/O.
    pub fn upload(&self, store: &Store, pem: &str) -> Result<CertInfo, CertError> {
        let info = crate::storage::upload(store, pem)?;
        self.refresh(store);
        Ok(info)
    }

    /// Goes back to a new self-signed certificate ([`crate::regenerate`])
    /// and presents it at once; the other nodes follow within
    /// [`RELOAD_INTERVAL`]. Blocking file I/O.
    pub fn regenerate(&self, store: &Store) -> Result<CertInfo, CertError> {
        let info = crate::storage::regenerate(store)?;
        self.refresh(store);
        Ok(info)
    }

    /// After a change through this process: the new certificate now rather
    /// than at the next check. The change is saved whatever this finds; a
    /// failure is logged, and the next check tries again.
    fn refresh(&self, store: &Store) {
        if let Err(e) = self.check(store) {
            tracing::warn!(error = %e, "the new cluster certificate is not in effect in this process");
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Loaded> {
        self.current.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The certificate and key presented now.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.read().key.clone()
    }

    /// What is presented now.
    pub fn info(&self) -> CertInfo {
        let l = self.read();
        let mut info = l.info.clone();
        let now = now_secs();
        info.expires_in_days = expires_in_days(l.not_after, now);
        info.warning = expiry_warning(&info.source, l.not_after, now);
        info
    }
}

impl ResolvesServerCert for ClusterCertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// The server side of every TLS service, presenting what `resolver` holds.
pub fn server_config(resolver: Arc<ClusterCertResolver>) -> Arc<rustls::ServerConfig> {
    Arc::new(rustls::ServerConfig::builder().with_no_client_auth().with_cert_resolver(resolver))
}

/// Starts the task that calls [`ClusterCertResolver::check`] and
/// [`ClusterCertResolver::maintain`] every
/// [`RELOAD_INTERVAL`], on a blocking thread (the store may hang on NFS; a
/// check that hangs delays the next one, nothing else). At most one task
/// per resolver: false if one runs already, or if there is no tokio
/// runtime. The task ends when the resolver is dropped.
pub fn spawn_reloader(resolver: &Arc<ClusterCertResolver>, store: Arc<Store>) -> bool {
    let Ok(rt) = tokio::runtime::Handle::try_current() else { return false };
    if resolver.reloading.swap(true, Ordering::AcqRel) {
        return false;
    }
    let weak = Arc::downgrade(resolver);
    rt.spawn(async move {
        let mut last_error = String::new();
        loop {
            tokio::time::sleep(RELOAD_INTERVAL).await;
            let Some(r) = weak.upgrade() else { return };
            let s = store.clone();
            match tokio::task::spawn_blocking(move || r.check(&s).and_then(|changed| Ok(r.maintain(&s, now_secs())? || changed))).await {
                Ok(Err(e)) => {
                    let msg = e.to_string();
                    if msg != last_error {
                        tracing::warn!(error = %msg, "cannot reload the cluster certificate; presenting the previous one");
                        last_error = msg;
                    }
                }
                Ok(Ok(_)) => last_error.clear(),
                Err(e) => tracing::warn!(error = %e, "certificate check failed"),
            }
        }
    });
    true
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::generate::SELF_SIGNED_LIFETIME_SECS;
    use crate::info::fingerprint;
    use crate::storage::{cert_info, regenerate, upload};
    use crate::testutil::*;
    use crate::SECS_PER_DAY;

    #[test]
    fn a_damaged_file_on_disk_is_not_presented_and_the_node_keeps_the_old_one() {
        let (_d, store) = new_store();
        let r = ClusterCertResolver::load(&store).unwrap();
        let (cert, key) = make(&["mail.example.test"]);
        r.upload(&store, &format!("{}{}", cert.pem(), key.serialize_pem())).unwrap();
        assert_eq!(presented(&r), fingerprint(cert.der()));
        // Another node (or a hand) writes a damaged pair into the store.
        let (other, other_key) = make(&["mail.example.test"]);
        let der = other.der().to_vec();
        let damaged = pem_of(&patched(&der, find(&der, &CN_OID, 0) + 1, 2), &other_key);
        store::fsutil::write_atomic(&uploaded_path(&store), damaged.as_bytes()).unwrap();
        let err = r.check(&store).unwrap_err();
        assert!(err.to_string().contains("invalid DER"), "{err}");
        assert_eq!(presented(&r), fingerprint(cert.der()));
        assert!(!r.check(&store).unwrap());
        // A node starting now presents the self-signed certificate, and
        // follows its renewal while the damaged upload stays.
        drop(r);
        let r = ClusterCertResolver::load(&store).unwrap();
        assert_eq!(r.info().source, SOURCE_SELF_SIGNED);
        let aged = age_self_signed(&store, SELF_SIGNED_LIFETIME_SECS - SECS_PER_DAY);
        assert!(r.check(&store).unwrap());
        assert_eq!(presented(&r), aged);
        assert!(r.maintain(&store, now_secs()).unwrap());
        assert_ne!(presented(&r), aged);
        assert_eq!(r.info().source, SOURCE_SELF_SIGNED);
    }

    #[test]
    fn the_resolver_follows_changes_of_the_files() {
        let (_d, store) = new_store();
        let r = ClusterCertResolver::load(&store).unwrap();
        let self_signed_fp = cert_info(&store).unwrap().sha256;
        assert_eq!(presented(&r), self_signed_fp);
        assert!(!r.check(&store).unwrap(), "nothing changed yet");

        // Another node uploads: the file changes under us.
        let (cert, key) = make(&["mail.example.test"]);
        store::fsutil::write_atomic(&uploaded_path(&store), format!("{}{}", cert.pem(), key.serialize_pem()).as_bytes()).unwrap();
        assert!(r.check(&store).unwrap());
        assert_eq!(presented(&r), fingerprint(cert.der()));
        assert_eq!(r.info().source, SOURCE_UPLOADED);
        assert!(!r.check(&store).unwrap());

        // A broken file: the error once, the previous certificate stays.
        store::fsutil::write_atomic(&uploaded_path(&store), b"garbage").unwrap();
        assert!(r.check(&store).is_err());
        assert!(!r.check(&store).unwrap(), "the same broken file is reported once");
        assert_eq!(presented(&r), fingerprint(cert.der()));

        // The uploaded file removed: back to the self-signed one.
        fs::remove_file(uploaded_path(&store)).unwrap();
        assert!(r.check(&store).unwrap());
        assert_eq!(presented(&r), self_signed_fp);

        // An upload and a regeneration through the resolver take effect at
        // once; one past it (another process) at the next check.
        let (cert2, key2) = make(&["mail.example.test"]);
        r.upload(&store, &format!("{}{}", cert2.pem(), key2.serialize_pem())).unwrap();
        assert_eq!(presented(&r), fingerprint(cert2.der()));
        let fresh = r.regenerate(&store).unwrap();
        assert_eq!(presented(&r), fresh.sha256);
        assert_eq!(r.info(), cert_info(&store).unwrap());
        let elsewhere = regenerate(&store).unwrap();
        assert_eq!(presented(&r), fresh.sha256);
        assert!(r.check(&store).unwrap());
        assert_eq!(presented(&r), elsewhere.sha256);
        let (cert3, key3) = make(&["mail.example.test"]);
        upload(&store, &format!("{}{}", cert3.pem(), key3.serialize_pem())).unwrap();
        assert_eq!(presented(&r), elsewhere.sha256);
        assert!(r.check(&store).unwrap());
        assert_eq!(presented(&r), fingerprint(cert3.der()));
    }

    #[test]
    fn a_broken_upload_on_disk_falls_back_to_the_self_signed_certificate() {
        let (_d, store) = new_store();
        let self_signed_fp = cert_info(&store).unwrap().sha256;
        store::fsutil::write_atomic(&uploaded_path(&store), b"garbage").unwrap();
        assert!(cert_info(&store).is_err(), "cert_info tells the truth about the store");
        let r = ClusterCertResolver::load(&store).unwrap();
        assert_eq!(presented(&r), self_signed_fp);
    }
}
