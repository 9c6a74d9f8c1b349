//! The box as the command set sees it ([`admin::commands::Host`]): what
//! the console and the admin page show of it (its role, address, store,
//! services, mirror, problems) and what they may change (its settings on
//! the config partition, the admin password, restarts, power).

use std::path::PathBuf;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use admin::access::StoreAccess;
use admin::commands::{Action, Host, HostError as Refusal, NodeView, Setting, StorageView};
use storage::StorageStatus;

use crate::configdisk::{ConfigDisk, ConfigDiskError};
use crate::pid1::{Event, PowerRequest};
use crate::settings::{NodeSettings, Role, SettingError, SettingsFileError};
use crate::say;

/// Why a change to the box did not happen.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("no store yet: {0}")]
    NoStore(String),
    #[error("state unavailable")]
    StateUnavailable,
    #[error("this box has no config partition; the change holds until reboot only")]
    NoConfigPartition,
    #[error("config partition busy")]
    ConfigBusy,
    #[error(transparent)]
    ConfigDisk(#[from] ConfigDiskError),
    #[error(transparent)]
    SettingsFile(#[from] SettingsFileError),
    #[error(transparent)]
    Setting(#[from] SettingError),
    #[error("no service '{name}' on this box (services: {known})")]
    NoService { name: String, known: String },
    #[error("not a power action")]
    NotPower,
    #[error("init is busy")]
    Busy,
    #[error("init does not listen")]
    NotListening,
}

/// Writes `settings` to the config partition.
pub fn save_settings(cfg: &Mutex<ConfigDisk>, settings: &NodeSettings) -> Result<(), HostError> {
    let text = settings.to_toml()?;
    cfg.lock().map_err(|_| HostError::ConfigBusy)?.save(text.as_bytes())?;
    Ok(())
}

/// What the console shows of the box; written by the main thread and the
/// bring-up threads.
pub struct BoxState {
    pub role: Role,
    pub node: String,
    pub address: String,
    pub boot: Instant,
    pub store_state: String,
    pub store_path: Option<PathBuf>,
    pub services: Vec<crate::service::ServiceView>,
    pub storage: Option<StorageStatus>,
    pub problems: Vec<String>,
    pub settings: NodeSettings,
    /// The settings this boot runs with.
    pub booted_with: NodeSettings,
}

pub type Shared = Arc<Mutex<BoxState>>;

pub fn with<T>(s: &Shared, f: impl FnOnce(&mut BoxState) -> T) -> Option<T> {
    s.lock().ok().map(|mut g| f(&mut g))
}

/// The box as the command set sees it (the console and the web page).
pub struct BoxHost {
    pub state: Shared,
    pub config: Option<Arc<Mutex<ConfigDisk>>>,
    pub store: StoreAccess,
    pub events: Mutex<Sender<Event>>,
}

/// The settings the first console login of a new box walks through.
const FIRST_SETUP_MAIL: &[&str] = &["node", "rank", "ip", "gw", "dns", "storage", "export"];
const FIRST_SETUP_STORAGE: &[&str] = &["node", "ip", "gw", "dns", "domain", "clients"];
/// Keys shown and set as node settings (the admin hash has its own
/// command).
fn setting_help(key: &str) -> String {
    crate::settings::KEYS.iter().find(|(k, _)| *k == key).map(|(_, h)| h.to_string()).unwrap_or_default()
}

impl BoxHost {
    fn store_ready(&self) -> Result<(), HostError> {
        with(&self.state, |s| if s.store_path.is_some() { Ok(()) } else { Err(HostError::NoStore(s.store_state.clone())) }).unwrap_or(Err(HostError::StateUnavailable))
    }

    fn settings(&self) -> Option<NodeSettings> {
        with(&self.state, |s| s.settings.clone())
    }

    fn save(&self, settings: &NodeSettings) -> Result<(), HostError> {
        let Some(cfg) = &self.config else { return Err(HostError::NoConfigPartition) };
        save_settings(cfg, settings)
    }

    /// Keeps `hash` as this box's copy of the admin password (used when the
    /// store does not answer).
    fn cache_admin_hash(&self, hash: &str) -> Result<(), HostError> {
        let mut next = self.settings().ok_or(HostError::StateUnavailable)?;
        if next.admin_hash.as_deref() == Some(hash) {
            return Ok(());
        }
        next.admin_hash = Some(hash.to_string());
        let saved = self.save(&next);
        // Kept in memory even without a config partition, so the console
        // stays locked until the next boot.
        with(&self.state, |s| s.settings = next);
        saved
    }

    /// Validates and saves one setting; it takes effect at the next boot.
    fn change_setting(&self, key: &str, value: &str) -> Result<(), HostError> {
        let mut next = self.settings().ok_or(HostError::StateUnavailable)?;
        next.set(key, value)?;
        self.save(&next)?;
        with(&self.state, |s| s.settings = next);
        say!("setting {key} changed by an administrator");
        Ok(())
    }

    fn send(&self, ev: Event) -> Result<(), HostError> {
        self.events.lock().map_err(|_| HostError::Busy)?.send(ev).map_err(|_| HostError::NotListening)
    }

    fn request_restart(&self, name: &str) -> Result<(), HostError> {
        let known = with(&self.state, |s| s.services.iter().any(|x| x.name == name)).unwrap_or(false);
        if !known {
            let names = with(&self.state, |s| s.services.iter().map(|x| x.name.clone()).collect::<Vec<_>>().join(", ")).unwrap_or_default();
            return Err(HostError::NoService { name: name.to_string(), known: if names.is_empty() { "none yet".into() } else { names } });
        }
        self.send(Event::Restart(name.to_string()))
    }

    fn request_power(&self, action: Action) -> Result<(), HostError> {
        let req = match action {
            Action::Reboot => PowerRequest::Reboot,
            Action::Poweroff => PowerRequest::Off,
            _ => return Err(HostError::NotPower),
        };
        self.send(Event::Power(req, "the admin page"))
    }

    /// Once the store is there: the store's admin password wins; a box set
    /// up before it had a store gives the store its password.
    pub fn sync_admin_hash(&self) {
        match self.store.admin_hash() {
            Ok(Some(h)) => {
                if let Err(e) = self.cache_admin_hash(&h) {
                    say!("cannot keep a copy of the admin password: {e}");
                }
            }
            Ok(None) => {
                if let Some(local) = self.settings().and_then(|s| s.admin_hash) {
                    match self.store.set_admin_hash(&local) {
                        Ok(()) => say!("the store had no admin password: it now has this box's"),
                        Err(e) => say!("cannot save the admin password in the store: {e}"),
                    }
                }
            }
            Err(e) => say!("cannot read the admin password from the store: {e}"),
        }
    }
}

impl Host for BoxHost {
    fn store(&self) -> &StoreAccess {
        &self.store
    }
    fn node(&self) -> NodeView {
        with(&self.state, |s| NodeView {
            role: s.role.to_string(),
            node: s.node.clone(),
            rank: if s.role == Role::Mail { s.settings.rank.or(Some(1)) } else { None },
            address: s.address.clone(),
            uptime: crate::service::human(s.boot.elapsed()),
            store: s.store_state.clone(),
            services: s.services.clone(),
            storage: s.storage.as_ref().map(|st| StorageView {
                disks: st.disks.iter().map(|(d, x)| (d.display().to_string(), x.clone())).collect(),
                mounted: st.mounted,
                degraded: st.degraded,
                nfs_serving: st.nfs_serving,
                clients: st.clients,
            }),
            problems: s.problems.clone(),
        })
        .unwrap_or_default()
    }
    fn log_tail(&self, n: usize) -> Vec<String> {
        crate::log::tail(n)
    }
    fn node_settings(&self) -> Option<Vec<Setting>> {
        let s = self.settings()?;
        Some(s.describe().into_iter().map(|(k, v)| Setting { help: setting_help(&k), key: k, value: v }).collect())
    }
    fn set_node_setting(&self, key: &str, value: &str) -> Result<String, Refusal> {
        self.change_setting(key, value).map_err(|e| Refusal::Refused(e.to_string()))?;
        Ok("it takes effect at the next boot".into())
    }
    fn first_setup(&self) -> Vec<Setting> {
        let Some(s) = self.settings() else { return Vec::new() };
        if s.admin_hash.is_some() {
            return Vec::new();
        }
        let keys = if s.role == Some(Role::Storage) || with(&self.state, |b| b.role == Role::Storage).unwrap_or(false) { FIRST_SETUP_STORAGE } else { FIRST_SETUP_MAIL };
        let shown = s.describe();
        keys.iter()
            .map(|k| Setting {
                key: k.to_string(),
                value: shown.iter().find(|(x, _)| x == k).map(|(_, v)| v.clone()).unwrap_or_default(),
                help: setting_help(k),
            })
            .collect()
    }
    fn first_setup_done(&self) -> bool {
        // Values typed in the first setup are saved; the box runs with
        // what it booted with until the next boot.
        with(&self.state, |b| b.settings == b.booted_with).unwrap_or(true)
    }
    fn admin_hash(&self) -> Option<String> {
        let local = self.settings().and_then(|s| s.admin_hash);
        if self.store_ready().is_ok() {
            if let Ok(Some(h)) = self.store.admin_hash() {
                if local.as_deref() != Some(h.as_str()) {
                    let _ = self.cache_admin_hash(&h);
                }
                return Some(h);
            }
        }
        local
    }
    fn set_admin_hash(&self, hash: &str) -> Result<(), Refusal> {
        let in_store = match self.store_ready() {
            Ok(()) => self.store.set_admin_hash(hash).map(|()| true),
            Err(_) => Ok(false),
        };
        let cached = self.cache_admin_hash(hash).map_err(|e| Refusal::Refused(e.to_string()));
        say!("admin password set{}", if matches!(in_store, Ok(true)) { " (in the store, for every node)" } else { " on this box; the store gets it when it has none" });
        in_store.map(drop)?;
        cached
    }
    fn restart_service(&self, name: &str) -> Result<String, Refusal> {
        self.request_restart(name).map_err(|e| Refusal::Refused(e.to_string()))?;
        Ok(format!("restarting {name}: it stops cleanly and starts again"))
    }
    fn can_power(&self) -> bool {
        true
    }
    fn power(&self, action: Action) -> Result<(), Refusal> {
        self.request_power(action).map_err(|e| Refusal::Refused(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn host(config: Option<Arc<Mutex<ConfigDisk>>>) -> (BoxHost, mpsc::Receiver<Event>) {
        let state = Arc::new(Mutex::new(BoxState {
            role: Role::Mail,
            node: "mail1".into(),
            address: "192.0.2.11".into(),
            boot: Instant::now(),
            store_state: "waiting for the storage box".into(),
            store_path: None,
            services: Vec::new(),
            storage: None,
            problems: Vec::new(),
            settings: NodeSettings::default(),
            booted_with: NodeSettings::default(),
        }));
        let (tx, rx) = mpsc::channel();
        (BoxHost { state, config, store: StoreAccess::new(std::path::Path::new("/nonexistent")), events: Mutex::new(tx) }, rx)
    }

    #[test]
    fn changes_fail_with_what_stopped_them() {
        let (h, rx) = host(None);
        assert!(matches!(h.store_ready(), Err(HostError::NoStore(s)) if s == "waiting for the storage box"));
        assert!(matches!(h.change_setting("rank", "0"), Err(HostError::Setting(SettingError::Invalid { .. }))));
        assert!(matches!(h.change_setting("rank", "2"), Err(HostError::NoConfigPartition)));
        assert!(matches!(h.request_restart("serve"), Err(HostError::NoService { name, known }) if name == "serve" && known == "none yet"));
        assert!(matches!(h.request_power(Action::Reboot), Ok(())));
        assert!(matches!(rx.try_recv(), Ok(Event::Power(PowerRequest::Reboot, _))));
        drop(rx);
        assert!(matches!(h.request_power(Action::Poweroff), Err(HostError::NotListening)));
    }

    #[test]
    fn a_setting_is_saved_on_the_config_partition() {
        let dir = tempfile::tempdir().unwrap();
        let dev = dir.path().join("config");
        std::fs::File::create(&dev).unwrap().set_len(1024 * 1024).unwrap();
        let disk = Arc::new(Mutex::new(ConfigDisk::open(&dev).unwrap()));
        let (h, _rx) = host(Some(disk.clone()));
        h.change_setting("rank", "2").unwrap();
        let saved = NodeSettings::from_bytes(&disk.lock().unwrap().load().unwrap().unwrap()).unwrap();
        assert_eq!(saved.rank, Some(2));
        assert_eq!(h.settings().unwrap().rank, Some(2));
    }
}
