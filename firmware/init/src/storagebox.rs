//! The storage box's role: find its disks, bring up the mirror, create the
//! store on first boot (and keep its DNS settings in step with this box's
//! settings), then export it over NFSv4. The work itself is in the
//! `storage` crate; this is the order and what the console shows of it.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;

use storage::export::{self, RECOVERY_DIR, STORE_DIR};
use storage::{mirror, Hooks, StorageStatus};

use crate::cmdline::Cmdline;
use crate::disks;
use crate::host::{with, Shared};
use crate::pid1::Event;
use crate::settings::NodeSettings;
use crate::{alarm, say, service};

/// TSIG's algorithm when the settings name none.
const DEFAULT_TSIG_ALGORITHM: &str = "hmac-sha256";

/// Why the store cannot be served from the mirror.
#[derive(Debug, thiserror::Error)]
pub enum StoreSetupError {
    #[error("{what}: {err}")]
    Io { what: &'static str, err: std::io::Error },
    #[error("no store yet and no mail domain to create one: `config set domain example.org`, then reboot")]
    NoDomain,
    #[error("ddns settings: {0}")]
    Ddns(String),
    #[error("store: {0}")]
    Store(#[from] store::StoreError),
}

fn log_say(line: &str) {
    say!("{line}");
}

fn log_alarm(line: &str) {
    alarm!("{line}");
}

/// What the storage crate reports through (the box's log) and runs
/// helpers with (their output in the log, their status from PID 1's
/// reaper).
pub const HOOKS: Hooks = Hooks { say: log_say, alarm: log_alarm, run: service::run_helper };

/// Creates the store on first boot and keeps cluster.toml's DNS settings
/// in step with this box's settings.
pub fn prepare_store(settings: &NodeSettings, st: &mut StorageStatus) -> Result<(), StoreSetupError> {
    fs::create_dir_all(STORE_DIR).map_err(|err| StoreSetupError::Io { what: STORE_DIR, err })?;
    fs::create_dir_all(RECOVERY_DIR).map_err(|err| StoreSetupError::Io { what: RECOVERY_DIR, err })?;
    let store = if store::layout::Layout::new(Path::new(STORE_DIR)).format().exists() {
        store::Store::open(Path::new(STORE_DIR))?
    } else {
        let Some(domain) = settings.domain.as_deref() else {
            return Err(StoreSetupError::NoDomain);
        };
        let s = store::Store::init(Path::new(STORE_DIR), domain, None)?;
        say!("created the store for {domain} (store id {})", s.settings().store_id);
        s
    };
    if let Some(dns) = ddns_settings(settings)? {
        let mut cs = store.reload_settings()?;
        if cs.dns.as_ref() != Some(&dns) {
            cs.dns = Some(dns);
            store.write_settings(&cs)?;
            say!("DNS announcer settings written to cluster.toml");
        }
    }
    st.store_ready = true;
    Ok(())
}

/// The store's DNS settings from this box's `ddns.*` settings, when they
/// are complete.
pub fn ddns_settings(s: &NodeSettings) -> Result<Option<store::DnsSettings>, StoreSetupError> {
    let d = &s.ddns;
    // The zone defaults to the mail domain (the board's contract).
    let zone = d.zone.as_ref().or(s.domain.as_ref());
    let (Some(server), Some(zone), Some(name), Some(secret)) = (&d.server, zone, &d.key_name, &d.key_secret) else {
        return Ok(None);
    };
    let dns = store::DnsSettings {
        server: server.clone(),
        zone: zone.clone(),
        client_host: d.client_host.clone(),
        ttl: store::DEFAULT_DNS_TTL,
        recheck_secs: store::DEFAULT_DNS_RECHECK_SECS,
        tsig: store::TsigSettings { name: name.clone(), algorithm: d.key_algorithm.clone().unwrap_or_else(|| DEFAULT_TSIG_ALGORITHM.into()), secret: secret.clone() },
    };
    cluster::announcer::target(&dns).map_err(|e| StoreSetupError::Ddns(e.to_string()))?;
    Ok(Some(dns))
}

/// The mirror's disks: named on the command line, else found by serial (a
/// missing one keeps a placeholder name so it is reported), else by
/// position.
fn find_disks(cmdline_disks: Option<Vec<PathBuf>>) -> Vec<PathBuf> {
    match cmdline_disks {
        Some(d) => {
            disks::wait_for_devices(&d, disks::DISK_WAIT);
            d
        }
        None => {
            let found = disks::wait_for_serials(disks::SERIAL_DATA, disks::DISK_WAIT);
            if found.iter().all(Option::is_none) {
                let d: Vec<PathBuf> = mirror::DEFAULT_DISKS.iter().map(PathBuf::from).collect();
                disks::wait_for_devices(&d, disks::DISK_WAIT);
                d
            } else {
                found.into_iter().zip(disks::SERIAL_DATA).map(|(p, serial)| p.unwrap_or_else(|| Path::new("/dev/disk/by-serial").join(serial))).collect()
            }
        }
    }
}

/// Brings up the mirror, the store and the NFS server in a thread of its
/// own; tells the main loop when the store is there.
pub fn start(cmdline: &Cmdline, s: &NodeSettings, state: Shared, tx: Sender<Event>) {
    let cmdline_disks: Option<Vec<PathBuf>> = cmdline.get("disks").map(|d| d.split(',').map(PathBuf::from).collect());
    let s = s.clone();
    let _ = std::thread::Builder::new().name("storage".into()).spawn(move || {
        let mut st = StorageStatus::default();
        let disks = find_disks(cmdline_disks);
        let publish = |st: &StorageStatus, msg: &str| {
            with(&state, |b| {
                b.storage = Some(st.clone());
                b.store_state = msg.to_string();
            });
        };
        publish(&st, "bringing up the mirror");
        if let Err(e) = mirror::bring_up_volume(&disks, &mut st, &HOOKS) {
            alarm!("{e}");
            st.problems.push(e.to_string());
            publish(&st, &format!("no mirror: {e}"));
            return;
        }
        publish(&st, "mirror mounted; preparing the store");
        if let Err(e) = prepare_store(&s, &mut st) {
            alarm!("{e}");
            st.problems.push(e.to_string());
            publish(&st, &format!("no store: {e}"));
        } else {
            with(&state, |b| b.store_path = Some(PathBuf::from(STORE_DIR)));
            let _ = tx.send(Event::StoreReady);
        }
        let clients = match s.clients.as_deref().map(export::expand_clients) {
            Some(Ok(c)) => c,
            Some(Err(e)) => {
                alarm!("clients: {e}; the store is not exported");
                st.problems.push(format!("clients: {e}"));
                publish(&st, "store not exported: bad client list");
                return;
            }
            None => {
                alarm!("no clients configured (mailfort.clients=CIDR); the store is not exported");
                st.problems.push("no clients configured".into());
                publish(&st, "store not exported: no clients configured");
                return;
            }
        };
        match export::start_nfs_server(&clients, &mut st, &HOOKS) {
            Ok(()) => {
                publish(&st, &format!("{STORE_DIR} exported over NFSv4"));
                crate::log::line("mailfort", &format!("ready: the store is exported to {} client address(es)", clients.len()));
            }
            Err(e) => {
                alarm!("NFS server: {e}");
                st.problems.push(format!("NFS server: {e}"));
                publish(&st, &format!("NFS server not running: {e}"));
            }
        }
    });
}

/// Stops the NFS server and unmounts the mirror.
pub fn shut_down() {
    export::shut_down(&HOOKS);
    mirror::unmount(&HOOKS);
}

#[cfg(test)]
mod tests {
    use std::process::{Command, Stdio};
    use std::time::Duration;

    use super::*;

    #[test]
    fn ddns_from_settings() {
        let mut s = NodeSettings::default();
        assert!(ddns_settings(&s).unwrap().is_none());
        for (k, v) in [("ddns.server", "192.0.2.53:53"), ("ddns.zone", "example.test"), ("ddns.key_name", "mailfort."), ("ddns.key_secret", "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0")] {
            s.set(k, v).unwrap();
        }
        let d = ddns_settings(&s).unwrap().unwrap();
        assert_eq!(d.tsig.algorithm, DEFAULT_TSIG_ALGORITHM);
        assert_eq!(d.zone, "example.test");
        // Without a zone, the mail domain is the zone.
        s.ddns.zone = None;
        assert!(ddns_settings(&s).unwrap().is_none());
        s.set("domain", "example.org").unwrap();
        assert_eq!(ddns_settings(&s).unwrap().unwrap().zone, "example.org");
    }

    #[test]
    fn helpers_run_to_their_end_or_are_cut_off() {
        let mut ok = Command::new("/bin/sh");
        ok.args(["-c", "echo formatting; exit 3"]).stdin(Stdio::null());
        assert_eq!((HOOKS.run)(ok, "sh", Duration::from_secs(10)).unwrap(), Some(3));
        let mut slow = Command::new("/bin/sleep");
        slow.arg("30");
        assert_eq!((HOOKS.run)(slow, "sleep", Duration::from_millis(200)).unwrap(), None);
        assert!((HOOKS.run)(Command::new("/nonexistent/mkfs"), "mkfs", Duration::from_secs(1)).is_err());
    }
}
