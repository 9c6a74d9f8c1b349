//! A mail box's store: mount it from the storage box (retrying while that
//! box is not up), check it is this box's store, remember its id on first
//! mount, and unmount it at shutdown even when the server is gone. The
//! NFS work itself is `storage::client`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use storage::client::{self, NfsError, StoreMount};

use crate::configdisk::ConfigDisk;
use crate::host::{save_settings, with, Shared};
use crate::pid1::Event;
use crate::settings::NodeSettings;
use crate::{alarm, say};

/// Where a mail box mounts the store.
pub const STORE_MOUNT: &str = "/store";
/// Re-checks of a mounted tree that is not (yet) the store, e.g. a storage
/// box still creating it.
const VERIFY_RETRY: Duration = Duration::from_secs(5);
/// A plain unmount of the store may block on a dead server; after this it
/// is forced and detached.
const UNMOUNT_TIMEOUT: Duration = Duration::from_secs(10);

/// Mounts the store in a thread of its own (retrying while the storage
/// box is not up), checks it is ours, remembers its id, then tells the
/// main loop.
pub fn start(s: &NodeSettings, config: Option<Arc<Mutex<ConfigDisk>>>, state: Shared, tx: Sender<Event>, stopping: Arc<AtomicBool>) {
    let Some(server) = s.storage else {
        alarm!("no storage box configured (mailfort.storage=IP); not serving");
        with(&state, |b| {
            b.store_state = "no storage box configured".into();
            b.problems.push("no storage box configured (mailfort.storage=IP)".into());
        });
        return;
    };
    let target = match StoreMount::new(server, s.export_path(), Path::new(STORE_MOUNT)) {
        Ok(t) => t,
        Err(e) => {
            alarm!("{e}");
            with(&state, |b| b.store_state = e.to_string());
            return;
        }
    };
    let expected = s.store_id.clone();
    let _ = std::thread::Builder::new().name("store-mount".into()).spawn(move || {
        with(&state, |b| b.store_state = format!("mounting {} (waiting for the storage box)", target.source()));
        say!("mounting the store {} on {STORE_MOUNT} ({})", target.source(), target.options());
        loop {
            let keep_going = || !stopping.load(Ordering::Relaxed);
            let mut report = |e: &NfsError, wait: Duration| {
                say!("store not mounted yet: {e}; retrying in {} s", wait.as_secs());
                with(&state, |b| b.store_state = format!("waiting for the storage box: {e}"));
            };
            if target.mount_with_retry(&keep_going, &mut report).is_err() {
                return;
            }
            let expected_now = with(&state, |b| b.settings.store_id.clone()).flatten().or_else(|| expected.clone());
            match client::verify_store(Path::new(STORE_MOUNT), expected_now.as_deref()) {
                Ok(id) => {
                    if expected_now.is_none() {
                        say!("first mount: this box now belongs to store {id}");
                        let next = with(&state, |b| {
                            b.settings.store_id = Some(id.clone());
                            b.settings.clone()
                        });
                        if let (Some(cfg), Some(next)) = (&config, next) {
                            if let Err(e) = save_settings(cfg, &next) {
                                alarm!("cannot save the store id: {e}");
                            }
                        }
                    }
                    say!("store {id} mounted on {STORE_MOUNT}");
                    with(&state, |b| {
                        b.store_state = format!("{} mounted on {STORE_MOUNT}, store {id}", target.source());
                        b.store_path = Some(PathBuf::from(STORE_MOUNT));
                    });
                    let _ = tx.send(Event::StoreReady);
                    return;
                }
                Err(e) => {
                    alarm!("{e}");
                    with(&state, |b| b.store_state = format!("not serving: {e}"));
                    if !keep_going() {
                        return;
                    }
                    // An empty export (a storage box still creating the
                    // store) or the wrong store: look again later.
                    std::thread::sleep(VERIFY_RETRY);
                }
            }
        }
    });
}

/// Unmounts the store; forces and detaches it when the server does not
/// answer.
pub fn unmount_store() {
    if !client::is_mountpoint(Path::new(STORE_MOUNT)) {
        return;
    }
    let (tx, rx) = mpsc::channel();
    let _ = std::thread::Builder::new().name("unmount".into()).spawn(move || {
        let _ = tx.send(nix::mount::umount2(STORE_MOUNT, nix::mount::MntFlags::empty()));
    });
    match rx.recv_timeout(UNMOUNT_TIMEOUT) {
        Ok(Ok(())) => say!("store unmounted"),
        Ok(Err(e)) => {
            say!("unmounting the store: {e}; forcing");
            let _ = client::unmount(Path::new(STORE_MOUNT));
        }
        Err(_) => {
            say!("the store did not unmount within {} s (storage box gone?); forcing", UNMOUNT_TIMEOUT.as_secs());
            let _ = client::unmount(Path::new(STORE_MOUNT));
        }
    }
}
