//! `mailfort cluster ...`: the live set as the store sees it, and the DNS
//! announcer's settings.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Subcommand;
use cluster::announcer::ANNOUNCER_LEASE;
use cluster::live::read_live_set;
use store::Store;

/// The clock file name used by administrative commands (not a node).
const ADMIN_CLOCK: &str = "admin";

#[derive(Subcommand)]
pub enum ClusterCmd {
    /// Every node with its rank, addresses, heartbeat age and liveness, and
    /// who holds the DNS announcer's lease.
    Status {
        #[arg(long)]
        store: PathBuf,
    },
    /// Configure the DNS failover announcer (kept in cluster.toml).
    SetDns {
        #[arg(long)]
        store: PathBuf,
        /// The zone's primary DNS server, IP:PORT.
        #[arg(long)]
        server: String,
        /// The zone, e.g. example.test.
        #[arg(long)]
        zone: String,
        /// TSIG key name.
        #[arg(long)]
        key_name: String,
        /// TSIG secret, base64.
        #[arg(long)]
        key_secret: String,
        /// TSIG algorithm.
        #[arg(long, default_value = "hmac-sha256")]
        key_algorithm: String,
        /// The name clients use (default: the store's host name).
        #[arg(long)]
        client_host: Option<String>,
        /// Record TTL in seconds.
        #[arg(long, default_value_t = store::DEFAULT_DNS_TTL)]
        ttl: u32,
        /// Seconds between checks of the server's records when nothing
        /// changed (corrects a server restarted with old data).
        #[arg(long, default_value_t = store::DEFAULT_DNS_RECHECK_SECS)]
        recheck_secs: u64,
    },
}

pub fn run(cmd: ClusterCmd) -> anyhow::Result<()> {
    match cmd {
        ClusterCmd::Status { store } => status(&Store::open(&store)?),
        ClusterCmd::SetDns { store, server, zone, key_name, key_secret, key_algorithm, client_host, ttl, recheck_secs } => {
            let s = Store::open(&store)?;
            // The same checks as `cluster set` on the console and the
            // admin page: every value first, then one write.
            let mut settings = s.reload_settings()?;
            let set = |st: &mut store::ClusterSettings, k: &str, v: &str| admin::cluster_keys::set(st, k, v).map_err(anyhow::Error::msg);
            for w in [&server, &zone, &key_name, &key_algorithm, &key_secret] {
                if w.is_empty() || w.contains(char::is_whitespace) {
                    bail!("'{w}': the DNS settings are single words");
                }
            }
            set(&mut settings, "dns", &format!("{server} {zone} {key_name} {key_algorithm} {key_secret}"))?;
            if let Some(h) = &client_host {
                set(&mut settings, "dns.client_host", h)?;
            }
            set(&mut settings, "dns.ttl", &ttl.to_string())?;
            set(&mut settings, "dns.recheck_secs", &recheck_secs.to_string())?;
            s.write_settings(&settings)?;
            println!("DNS announcer configured; the nodes pick it up within a second");
            Ok(())
        }
    }
}

fn fmt_age(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

fn status(s: &Store) -> anyhow::Result<()> {
    let live = read_live_set(s, ADMIN_CLOCK).context("cannot read the heartbeats")?;
    if live.nodes.is_empty() {
        println!("no node has ever served from this store");
    } else {
        println!("{:<12} {:>4}  {:<5}  {:>9}  {:<22} SERVICES", "NODE", "RANK", "STATE", "HEARTBEAT", "ADDRESSES");
        for n in &live.nodes {
            let state = if n.live {
                "live"
            } else if n.info.state == cluster::live::STATE_STOPPED {
                "stop"
            } else if n.info.state == cluster::live::STATE_DRAINING && n.age <= cluster::live::DEAD_AFTER {
                "drain"
            } else {
                "dead"
            };
            let addrs: Vec<String> = n.info.addresses.iter().map(|a| a.to_string()).collect();
            println!("{:<12} {:>4}  {:<5}  {:>9}  {:<22} {}", n.info.node, n.info.rank, state, fmt_age(n.age), addrs.join(","), n.info.services.join(" "));
        }
    }
    match s.lease_holder(ANNOUNCER_LEASE, ADMIN_CLOCK)? {
        Some((h, age)) => {
            let valid = live.holder_alive(&h) && age <= cluster::announcer::LEASE_TTL;
            println!("announcer lease: {} (refreshed {} ago{})", h.node, fmt_age(age), if valid { "" } else { ", stale" });
        }
        None => println!("announcer lease: nobody"),
    }
    match s.settings().dns.as_ref() {
        Some(d) => println!("DNS: zone {} on {} (client host {}, TTL {} s)", d.zone, d.server, d.client_host.as_deref().unwrap_or(&s.settings().hostname), d.ttl),
        None => println!("DNS: not configured (mailfort cluster set-dns)"),
    }
    Ok(())
}
