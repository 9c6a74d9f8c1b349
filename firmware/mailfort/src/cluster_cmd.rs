//! `mailfort cluster ...`: the cluster's state as the store sees it (the
//! same report as the console's `status`, `cluster::report`), and the DNS
//! announcer's settings.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Subcommand;
use store::Store;

/// The clock file name used by administrative commands (not a node).
const ADMIN_CLOCK: &str = "admin";

#[derive(Subcommand)]
pub enum ClusterCmd {
    /// Every node with its rank, addresses, heartbeat age and liveness,
    /// who holds the DNS announcer's lease, and DNS as the announcer last
    /// saw it (with its last error).
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

fn status(s: &Store) -> anyhow::Result<()> {
    let r = cluster::report::read(s, ADMIN_CLOCK).context("cannot read the cluster's state")?;
    if r.nodes.is_empty() {
        println!("no node has ever served from this store");
    } else {
        println!("{:<12} {:>4}  {:<5}  {:>9}  {:<22} SERVICES", "NODE", "RANK", "STATE", "HEARTBEAT", "ADDRESSES");
        for n in &r.nodes {
            println!("{:<12} {:>4}  {:<5}  {:>9}  {:<22} {}", n.info.node, n.info.rank, n.state, n.age_text(), n.addresses_text(), n.info.services.join(" "));
        }
    }
    println!("announcer lease: {}", r.announcer_text());
    match r.dns {
        cluster::report::DnsReport::Off => println!("DNS: {} (mailfort cluster set-dns)", r.dns_text()),
        cluster::report::DnsReport::On { .. } => println!("DNS: {}", r.dns_text()),
    }
    for rec in r.dns_records() {
        println!("     {rec}");
    }
    Ok(())
}
