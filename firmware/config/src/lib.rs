//! A node's configuration: the command line's flags and the TOML file of
//! `mailfort serve --config FILE` both fill [`NodeConfig`]. Pure data,
//! defaults and checks, so that whoever reads or edits the file (the mail
//! daemon, the admin console's `node set`) checks it the same way.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use store::settings::{MAX_RECIPIENTS_LIMIT, MESSAGE_SIZE_HARD_CAP, MIN_MESSAGE_SIZE_LIMIT, MIN_RECIPIENTS_LIMIT};

/// What is wrong with a node configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("max_line must be at least {} (RFC 5321 4.5.3.1.4)", proto::smtp::MIN_COMMAND_LINE)]
    MaxLine,
    #[error("max_recipients must be {MIN_RECIPIENTS_LIMIT} to {MAX_RECIPIENTS_LIMIT} (RFC 5321 4.5.3.1.8), not {0}")]
    Recipients(usize),
    #[error("max_message_size must be {MIN_MESSAGE_SIZE_LIMIT} to {MESSAGE_SIZE_HARD_CAP} bytes (RFC 5321 4.5.3.1.7), not {0}")]
    MessageSize(u64),
    #[error("connection limits must be at least 1")]
    Connections,
    #[error("busy_percent must be 1 to 100")]
    BusyPercent,
    #[error("timeouts must be at least 1 second")]
    Timeouts,
    #[error("imap_idle_timeout_secs must be at least {MIN_IMAP_IDLE_SECS} (RFC 3501 5.4)")]
    ImapIdle,
    #[error("data_min_rate must be at least 1 byte per second")]
    DataMinRate,
    #[error("message_memory_per_session must be at least {MIN_MESSAGE_MEMORY} and message_memory_total at least message_memory_per_session")]
    MessageMemory,
    #[error("max_concurrent_auth must be at least 1")]
    ConcurrentAuth,
    #[error("no store given (--store DIR or `store = ...` in the config)")]
    NoStore,
    #[error("node name '{0}' must be 1-{MAX_NODE_NAME} characters of a-z, 0-9 and '-'")]
    NodeName(String),
    #[error("rank must be 1 or more (1 = preferred)")]
    Rank,
    #[error("--tls-cert and --tls-key go together")]
    TlsPair,
    #[error("every service is off and outbound delivery is disabled; nothing to serve")]
    NothingToServe,
    #[error("outbound: concurrency and retry_base_secs must be at least 1, retry_max_secs at least retry_base_secs")]
    Outbound,
}

/// Development defaults, all on loopback (production boxes use the
/// standard ports through their configuration).
pub const DEV_SMTP: &str = "127.0.0.1:2525";
pub const DEV_SUBMISSION: &str = "127.0.0.1:2587";
pub const DEV_SUBMISSIONS: &str = "127.0.0.1:2465";
pub const DEV_POP3: &str = "127.0.0.1:2110";
pub const DEV_POP3S: &str = "127.0.0.1:2995";
pub const DEV_IMAP: &str = "127.0.0.1:2143";
pub const DEV_IMAPS: &str = "127.0.0.1:2993";
/// RFC 3501 5.4: an inactivity autologout timer, when there is one, must
/// be at least 30 minutes after login.
pub const MIN_IMAP_IDLE_SECS: u64 = 30 * 60;

/// Smallest in-memory message buffer per session: smaller ones would turn
/// every few lines of a message into a write of its own.
pub const MIN_MESSAGE_MEMORY: usize = 4096;

/// Limits on what one client can make the node do. Every one of them is a
/// defence against a careless or hostile peer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Longest SMTP command line, CRLF included. RFC 5321 4.5.3.1.4 sets
    /// 512 as the floor; SIZE, BODY, SMTPUTF8 and AUTH parameters make MAIL
    /// lines longer, so we take more (but never an unbounded amount).
    pub max_line: usize,
    /// Largest message accepted, in bytes (advertised with SIZE, RFC 1870).
    pub max_message_size: u64,
    /// Recipients per message. RFC 5321 4.5.3.1.8 requires at least 100.
    pub max_recipients: usize,
    /// Connections at once, all services together.
    pub max_connections: usize,
    /// Connections at once from one client address, so that one host with
    /// hundreds of idle or slow connections cannot lock everyone else out.
    pub max_connections_per_ip: usize,
    /// Connections at once from one network: an IPv4 /24 or an IPv6 /64
    /// (what one customer of a provider usually gets), so that a handful
    /// of neighbouring addresses cannot take every slot either (Postfix's
    /// anvil counts per address; postscreen and most DNSBLs think in /24s).
    pub max_connections_per_network: usize,
    /// Connections at once from one IPv6 /48 (a site's usual assignment,
    /// RFC 6177 3): an attacker with a /48 has 65,536 /64s.
    pub max_connections_per_ipv6_48: usize,
    /// Once this share of `max_connections` (percent) is taken, the node
    /// is nearly full and a network gets at most
    /// `max_connections_per_network_busy` connections: the last free slots
    /// go to networks not yet present.
    pub busy_percent: u32,
    pub max_connections_per_network_busy: usize,
    /// Seconds a whole command line may take to arrive, counted from the
    /// moment the node waits for it (a client trickling a byte every few
    /// seconds is not "active"). RFC 5321 4.5.3.2.7 asks a server to wait
    /// at least 5 minutes for a command; RFC 1939 3 sets the POP3 autologout
    /// timer at 10 minutes at least.
    pub smtp_idle_timeout_secs: u64,
    pub pop3_idle_timeout_secs: u64,
    /// Seconds an IMAP session may be inactive after login (RFC 3501 5.4:
    /// at least 30 minutes; an IDLE command is not inactivity, RFC 2177
    /// has clients re-issue it every 29 minutes). Before login the session
    /// has a shorter, fixed time (`maild::imap`).
    pub imap_idle_timeout_secs: u64,
    /// Seconds to wait for each block of message data (RFC 5321 4.5.3.2.5
    /// suggests 3 minutes for the client side; the server waits as long).
    pub data_timeout_secs: u64,
    /// The whole message data must arrive at `data_min_rate` bytes per
    /// second at least, after the first `data_grace_secs` seconds of DATA:
    /// at any moment, the bytes received must be at least the rate times
    /// the time since DATA began minus the grace. Without it a client sending
    /// a byte per data block timeout holds its session for ever. 500 bytes
    /// per second is Postfix's smtpd_min_data_rate.
    pub data_min_rate: u64,
    pub data_grace_secs: u64,
    /// Bytes of message data all sessions together keep in memory before
    /// they spill to their spool files. Past it, every session writes its
    /// data to the spool file as it comes (writes are cheap; the fsync is at
    /// the end, as always), so memory stays bounded whatever the number of
    /// sessions stalled in DATA.
    pub message_memory_total: usize,
    /// Bytes of message data one session keeps in memory before it spills.
    pub message_memory_per_session: usize,
    /// Delay after the first failed authentication; it doubles with each
    /// further failure from the same address (on any node, counted in the
    /// store), up to `auth_fail_delay_max_ms`.
    pub auth_fail_delay_ms: u64,
    pub auth_fail_delay_max_ms: u64,
    /// Failed authentications in one session before it is closed.
    pub max_auth_failures: u32,
    /// Password checks (argon2, a 19 MiB work buffer each) running at once
    /// in the process, the admin page's included
    /// (`store::password::CHECK_WORKERS` by default).
    pub max_concurrent_auth: usize,
    /// Seconds a shutdown waits for transactions in progress.
    pub shutdown_grace_secs: u64,
    /// Seconds a POP3 maildrop lock stays valid without a refresh.
    pub maildrop_lock_ttl_secs: u64,
    /// Milliseconds the store has to answer a health probe; past it the
    /// node stops accepting mail (421) and stops heartbeating until the
    /// store answers again.
    pub store_probe_deadline_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_line: 4096,
            max_message_size: 32 * 1024 * 1024,
            max_recipients: 100,
            max_connections: 1024,
            max_connections_per_ip: 64,
            max_connections_per_network: 128,
            max_connections_per_ipv6_48: 256,
            busy_percent: 75,
            max_connections_per_network_busy: 16,
            smtp_idle_timeout_secs: 300,
            pop3_idle_timeout_secs: 600,
            imap_idle_timeout_secs: MIN_IMAP_IDLE_SECS,
            data_timeout_secs: 180,
            data_min_rate: 500,
            data_grace_secs: 180,
            message_memory_total: 32 * 1024 * 1024,
            message_memory_per_session: 64 * 1024,
            auth_fail_delay_ms: 1000,
            auth_fail_delay_max_ms: 16_000,
            max_auth_failures: 3,
            max_concurrent_auth: store::password::CHECK_WORKERS,
            shutdown_grace_secs: 30,
            maildrop_lock_ttl_secs: 60,
            store_probe_deadline_ms: 3000,
        }
    }
}

/// The limits one SMTP session works with: the node's, each replaced by
/// the cluster's (`[limits]` in cluster.toml) when that is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// Advertised with SIZE (RFC 1870) and enforced on MAIL and DATA.
    pub max_message_size: u64,
    /// Recipients per message.
    pub max_recipients: usize,
}

impl Limits {
    /// The limits in force with the cluster's settings `cluster`.
    pub fn effective(&self, cluster: &store::ClusterLimits) -> SessionLimits {
        SessionLimits { max_message_size: cluster.max_message_size.unwrap_or(self.max_message_size), max_recipients: cluster.max_recipients.unwrap_or(self.max_recipients) }
    }

    pub fn smtp_idle(&self) -> Duration {
        Duration::from_secs(self.smtp_idle_timeout_secs)
    }
    pub fn pop3_idle(&self) -> Duration {
        Duration::from_secs(self.pop3_idle_timeout_secs)
    }
    pub fn imap_idle(&self) -> Duration {
        Duration::from_secs(self.imap_idle_timeout_secs)
    }
    pub fn data_timeout(&self) -> Duration {
        Duration::from_secs(self.data_timeout_secs)
    }
    pub fn data_grace(&self) -> Duration {
        Duration::from_secs(self.data_grace_secs)
    }

    /// How many connections one network may hold, given `total` taken now.
    pub fn network_cap(&self, total: usize) -> usize {
        let busy = self.max_connections.saturating_mul(self.busy_percent as usize) / 100;
        if total >= busy {
            self.max_connections_per_network.min(self.max_connections_per_network_busy)
        } else {
            self.max_connections_per_network
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_line < proto::smtp::MIN_COMMAND_LINE {
            return Err(ConfigError::MaxLine);
        }
        if !(MIN_RECIPIENTS_LIMIT..=MAX_RECIPIENTS_LIMIT).contains(&self.max_recipients) {
            return Err(ConfigError::Recipients(self.max_recipients));
        }
        if self.max_connections < 1 || self.max_connections_per_ip < 1 || self.max_connections_per_network < 1 || self.max_connections_per_ipv6_48 < 1 || self.max_connections_per_network_busy < 1 {
            return Err(ConfigError::Connections);
        }
        if !(1..=100).contains(&self.busy_percent) {
            return Err(ConfigError::BusyPercent);
        }
        if self.smtp_idle_timeout_secs < 1 || self.pop3_idle_timeout_secs < 1 || self.data_timeout_secs < 1 {
            return Err(ConfigError::Timeouts);
        }
        if self.imap_idle_timeout_secs < MIN_IMAP_IDLE_SECS {
            return Err(ConfigError::ImapIdle);
        }
        if self.data_min_rate < 1 {
            return Err(ConfigError::DataMinRate);
        }
        if self.message_memory_per_session < MIN_MESSAGE_MEMORY || self.message_memory_total < self.message_memory_per_session {
            return Err(ConfigError::MessageMemory);
        }
        if self.max_concurrent_auth < 1 {
            return Err(ConfigError::ConcurrentAuth);
        }
        if !(MIN_MESSAGE_SIZE_LIMIT..=MESSAGE_SIZE_HARD_CAP).contains(&self.max_message_size) {
            return Err(ConfigError::MessageSize(self.max_message_size));
        }
        Ok(())
    }
}

/// Delivery of queued mail to other domains.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboundConfig {
    /// Run the queue runner on this node.
    pub enabled: bool,
    /// The DNS server for MX lookups, IP:PORT; default: /etc/resolv.conf.
    pub dns_server: Option<SocketAddr>,
    /// The port of other domains' mail servers: 25 (RFC 5321 4.5.4.2 uses
    /// the standard port); other values are for tests.
    pub smtp_port: u16,
    /// Queue entries delivered at once by this node.
    pub concurrency: usize,
    /// First retry after this many seconds; doubled after each failure up
    /// to `retry_max_secs`.
    pub retry_base_secs: u64,
    pub retry_max_secs: u64,
    /// Give up and bounce after this long (RFC 5321 4.5.4.1: at least 4-5
    /// days).
    pub max_lifetime_secs: u64,
    /// Tell the sender once when a message has waited this long.
    pub delay_warning_secs: u64,
    pub connect_timeout_secs: u64,
    /// RFC 5321 4.5.3.2: 5 minutes for replies to commands.
    pub command_timeout_secs: u64,
    /// RFC 5321 4.5.3.2.6: 10 minutes for the reply after the data.
    pub data_timeout_secs: u64,
    /// Domains that must be reached over TLS with a valid certificate;
    /// others get opportunistic STARTTLS.
    pub require_tls_domains: Vec<String>,
    /// Extra trust anchors (PEM) for verified TLS, besides Mozilla's roots
    /// compiled in (webpki-roots).
    pub tls_ca_file: Option<PathBuf>,
    /// How often the queue is scanned for due entries, milliseconds.
    pub scan_interval_ms: u64,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        OutboundConfig {
            enabled: true,
            dns_server: None,
            smtp_port: 25,
            concurrency: 64,
            retry_base_secs: 300,
            retry_max_secs: 4 * 3600,
            max_lifetime_secs: 5 * 24 * 3600,
            delay_warning_secs: 4 * 3600,
            connect_timeout_secs: 30,
            command_timeout_secs: 300,
            data_timeout_secs: 600,
            require_tls_domains: Vec::new(),
            tls_ca_file: None,
            scan_interval_ms: 1000,
        }
    }
}

/// Checks of mail from other servers (port 25).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InboundConfig {
    /// Check SPF (RFC 7208), DKIM (RFC 6376) and DMARC (RFC 7489) and add
    /// an Authentication-Results header (RFC 8601).
    pub verify: bool,
    /// The DNS server for those checks, IP:PORT; default: /etc/resolv.conf.
    pub dns_server: Option<SocketAddr>,
    /// Refuse (550 5.7.1) mail that fails DMARC for a domain whose policy
    /// is p=reject (RFC 7489 6.7); otherwise it is accepted and marked.
    pub dmarc_reject: bool,
}

impl Default for InboundConfig {
    fn default() -> Self {
        InboundConfig { verify: true, dns_server: None, dmarc_reject: false }
    }
}

/// Everything a node needs to serve.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    pub store: PathBuf,
    pub node: String,
    /// 1 = preferred.
    pub rank: u32,
    pub smtp: Vec<SocketAddr>,
    pub submission: Vec<SocketAddr>,
    pub submissions: Vec<SocketAddr>,
    pub pop3: Vec<SocketAddr>,
    pub pop3s: Vec<SocketAddr>,
    /// IMAP (RFC 3501) with STARTTLS, and IMAP over implicit TLS (RFC 8314).
    pub imap: Vec<SocketAddr>,
    pub imaps: Vec<SocketAddr>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Addresses published in DNS for this node. Default: the addresses
    /// of the SMTP listeners, unless they are wildcards.
    pub advertise: Vec<std::net::IpAddr>,
    /// AUTH and USER/PASS without TLS: for tests on loopback only.
    pub allow_plaintext_auth: bool,
    pub limits: Limits,
    pub inbound: InboundConfig,
    pub outbound: OutboundConfig,
    pub admin: AdminConfig,
}

/// The HTTPS admin page of a node run as a process (a box serves it from
/// init).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Listen addresses; none: no admin page.
    pub listen: Vec<SocketAddr>,
    /// Seconds a login session lasts without requests (0: the default).
    pub session_idle_secs: u64,
}

impl Default for NodeConfig {
    fn default() -> Self {
        let a = |s: &str| vec![s.parse().expect("valid constant address")];
        NodeConfig {
            store: PathBuf::new(),
            node: String::new(),
            rank: 1,
            smtp: a(DEV_SMTP),
            submission: a(DEV_SUBMISSION),
            submissions: a(DEV_SUBMISSIONS),
            pop3: a(DEV_POP3),
            pop3s: a(DEV_POP3S),
            imap: a(DEV_IMAP),
            imaps: a(DEV_IMAPS),
            tls_cert: None,
            tls_key: None,
            advertise: Vec::new(),
            allow_plaintext_auth: false,
            limits: Limits::default(),
            inbound: InboundConfig::default(),
            outbound: OutboundConfig::default(),
            admin: AdminConfig::default(),
        }
    }
}

/// RFC 1123 host name label rules, and short enough to go into file names
/// and POP3 UIDs (RFC 1939 7: a UID is at most 70 characters).
pub const MAX_NODE_NAME: usize = 32;

pub fn valid_node_name(n: &str) -> bool {
    !n.is_empty() && n.len() <= MAX_NODE_NAME && !n.starts_with('-') && n.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

impl NodeConfig {
    /// The addresses this node publishes in DNS.
    pub fn advertised(&self) -> Vec<std::net::IpAddr> {
        if !self.advertise.is_empty() {
            return self.advertise.clone();
        }
        let mut v: Vec<_> = self.smtp.iter().map(|a| a.ip()).filter(|ip| !ip.is_unspecified()).collect();
        v.dedup();
        v
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.store.as_os_str().is_empty() {
            return Err(ConfigError::NoStore);
        }
        if !valid_node_name(&self.node) {
            return Err(ConfigError::NodeName(self.node.clone()));
        }
        if self.rank == 0 {
            return Err(ConfigError::Rank);
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(ConfigError::TlsPair);
        }
        // A node with every listener off may still deliver the queue.
        if self.smtp.is_empty() && self.submission.is_empty() && self.submissions.is_empty() && self.pop3.is_empty() && self.pop3s.is_empty() && self.imap.is_empty() && self.imaps.is_empty() && !self.outbound.enabled {
            return Err(ConfigError::NothingToServe);
        }
        if self.outbound.concurrency < 1 || self.outbound.retry_base_secs < 1 || self.outbound.retry_max_secs < self.outbound.retry_base_secs {
            return Err(ConfigError::Outbound);
        }
        self.limits.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_limits_override_the_nodes_one_by_one() {
        let node = Limits { max_message_size: 1_000_000, max_recipients: 150, ..Limits::default() };
        let none = store::ClusterLimits::default();
        assert_eq!(node.effective(&none), SessionLimits { max_message_size: 1_000_000, max_recipients: 150 });
        let size = store::ClusterLimits { max_message_size: Some(2_000_000), max_recipients: None };
        assert_eq!(node.effective(&size), SessionLimits { max_message_size: 2_000_000, max_recipients: 150 });
        let rcpts = store::ClusterLimits { max_message_size: None, max_recipients: Some(500) };
        assert_eq!(node.effective(&rcpts), SessionLimits { max_message_size: 1_000_000, max_recipients: 500 });
    }

    #[test]
    fn the_network_cap_tightens_when_the_node_is_nearly_full() {
        let l = Limits { max_connections: 100, max_connections_per_network: 40, max_connections_per_network_busy: 10, busy_percent: 75, ..Limits::default() };
        assert_eq!(l.network_cap(0), 40);
        assert_eq!(l.network_cap(74), 40);
        assert_eq!(l.network_cap(75), 10);
        assert!(l.validate().is_ok());
        assert_eq!(Limits { busy_percent: 0, ..l.clone() }.validate(), Err(ConfigError::BusyPercent));
        assert_eq!(Limits { message_memory_total: 1000, ..l.clone() }.validate(), Err(ConfigError::MessageMemory));
        assert_eq!(Limits { data_min_rate: 0, ..l }.validate(), Err(ConfigError::DataMinRate));
    }

    #[test]
    fn size_and_recipient_limits_share_the_clusters_bounds() {
        let l = Limits::default();
        assert!(l.validate().is_ok());
        let top = Limits { max_recipients: MAX_RECIPIENTS_LIMIT, max_message_size: MESSAGE_SIZE_HARD_CAP, ..l.clone() };
        assert!(top.validate().is_ok());
        assert_eq!(Limits { max_recipients: MAX_RECIPIENTS_LIMIT + 1, ..l.clone() }.validate(), Err(ConfigError::Recipients(MAX_RECIPIENTS_LIMIT + 1)));
        assert_eq!(Limits { max_recipients: MIN_RECIPIENTS_LIMIT - 1, ..l.clone() }.validate(), Err(ConfigError::Recipients(MIN_RECIPIENTS_LIMIT - 1)));
        let bottom = Limits { max_recipients: MIN_RECIPIENTS_LIMIT, max_message_size: MIN_MESSAGE_SIZE_LIMIT, ..l.clone() };
        assert!(bottom.validate().is_ok());
        assert_eq!(Limits { max_message_size: MESSAGE_SIZE_HARD_CAP + 1, ..l.clone() }.validate(), Err(ConfigError::MessageSize(MESSAGE_SIZE_HARD_CAP + 1)));
        assert_eq!(Limits { max_message_size: MIN_MESSAGE_SIZE_LIMIT - 1, ..l }.validate(), Err(ConfigError::MessageSize(MIN_MESSAGE_SIZE_LIMIT - 1)));
    }

    #[test]
    fn node_config_checks() {
        let ok = NodeConfig { store: "/s".into(), node: "n1".into(), ..NodeConfig::default() };
        assert_eq!(ok.validate(), Ok(()));
        assert_eq!(NodeConfig { store: PathBuf::new(), ..ok.clone() }.validate(), Err(ConfigError::NoStore));
        assert_eq!(NodeConfig { node: "Bad".into(), ..ok.clone() }.validate(), Err(ConfigError::NodeName("Bad".into())));
        assert_eq!(NodeConfig { rank: 0, ..ok.clone() }.validate(), Err(ConfigError::Rank));
        assert_eq!(NodeConfig { tls_cert: Some("c".into()), ..ok.clone() }.validate(), Err(ConfigError::TlsPair));
        assert!(valid_node_name(&"a".repeat(MAX_NODE_NAME)) && !valid_node_name(&"a".repeat(MAX_NODE_NAME + 1)) && !valid_node_name("-a"));
        let file: NodeConfig = toml::from_str("store = \"/s\"\nnode = \"n2\"\n[limits]\nmax_recipients = 200\n").unwrap();
        assert_eq!((file.node.as_str(), file.limits.max_recipients, file.rank), ("n2", 200, 1));
        assert!(toml::from_str::<NodeConfig>("no_such_setting = 1\n").is_err());
    }
}
