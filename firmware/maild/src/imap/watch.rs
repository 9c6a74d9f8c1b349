//! Change notices for IDLE (RFC 2177) across nodes. A folder some session
//! of this node is idling on has one watcher task that compares the
//! folder's stamp (`store::imap::Stamp`: three stat() calls) every
//! [`WATCH_POLL`], so a message delivered or a flag set through another
//! node is noticed within that time, without reading the folder; a change
//! made by this node's own sessions is announced at once ([`Watchers::poke`]).
//! One watcher serves every session on the folder, however many.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use store::imap::FolderRef;
use store::{Address, Store};
use tokio::sync::watch;

/// How often a watched folder's stamp is compared.
pub const WATCH_POLL: Duration = Duration::from_millis(250);

type Key = (String, String);

/// The folders watched on this node.
#[derive(Default)]
pub struct Watchers {
    map: Arc<Mutex<HashMap<Key, Arc<watch::Sender<u64>>>>>,
}

/// A session's interest in one folder: changes bump the receiver.
pub struct Subscription {
    pub rx: watch::Receiver<u64>,
    _tx: Arc<watch::Sender<u64>>,
}

impl Watchers {
    /// Watches `folder` of `addr` (normalized name) until the returned
    /// subscription and every other one on the folder are dropped.
    pub fn subscribe(&self, store: &Arc<Store>, addr: &Address, folder: &str) -> Subscription {
        let key = (addr.to_string(), folder.to_string());
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = map.get(&key) {
            return Subscription { rx: tx.subscribe(), _tx: tx.clone() };
        }
        let (tx, rx) = watch::channel(0u64);
        let tx = Arc::new(tx);
        map.insert(key.clone(), tx.clone());
        drop(map);
        let poller_tx = tx.clone();
        let map = self.map.clone();
        let store = store.clone();
        let addr = addr.clone();
        let folder = folder.to_string();
        tokio::spawn(async move {
            let mut last = None;
            loop {
                tokio::time::sleep(WATCH_POLL).await;
                {
                    let mut m = map.lock().unwrap_or_else(|e| e.into_inner());
                    // Only the map and this task hold it: no one watches.
                    if Arc::strong_count(&poller_tx) <= 2 {
                        m.remove(&key);
                        return;
                    }
                }
                let (s, a, f) = (store.clone(), addr.clone(), folder.clone());
                let stamp = store::blocking::call(store::blocking::STORE_CALL_DEADLINE, move || s.imap_stamp(FolderRef { addr: &a, name: &f })).await;
                let Ok(Ok(stamp)) = stamp else { continue };
                let changed = match &last {
                    Some(prev) => store::imap::Stamp::changed(prev, &stamp),
                    None => false,
                };
                last = Some(stamp);
                if changed {
                    poller_tx.send_modify(|v| *v = v.wrapping_add(1));
                }
            }
        });
        Subscription { rx, _tx: tx }
    }

    /// Tells this node's sessions on `folder` at once that it changed.
    pub fn poke(&self, addr: &Address, folder: &str) {
        let key = (addr.to_string(), folder.to_string());
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = map.get(&key) {
            tx.send_modify(|v| *v = v.wrapping_add(1));
        }
    }
}
