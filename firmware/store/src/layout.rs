//! Where everything lives under the store's root: the one place that
//! names the store's files and directories. Every crate asks a [`Layout`]
//! (or [`Store::layout`](crate::Store::layout)) for a path instead of
//! joining names itself, so that the tree in the crate docs is the tree
//! on disk.

use std::path::{Path, PathBuf};

use crate::address::Address;

/// Format version; nothing runs on an unknown one.
pub const FORMAT: &str = "FORMAT";
/// Cluster-wide settings (`crate::settings::ClusterSettings`).
pub const SETTINGS: &str = "cluster.toml";
/// One account a line, argon2id PHC hash.
pub const ACCOUNTS: &str = "accounts";
/// The admin password's hash, the same on every node.
pub const ADMIN_HASH: &str = "admin.hash";
/// DKIM keys, `dkim/<domain>/<selector>.pem`.
pub const DKIM: &str = "dkim";
/// The cluster's certificate and key.
pub const TLS: &str = "tls";
/// Maildirs, `mail/<domain>/<local>/{tmp,new,cur}`.
pub const MAIL: &str = "mail";
/// Messages being received, `spool/<node>/`.
pub const SPOOL: &str = "spool";
/// Outbound messages (.msg) and envelopes (.env).
pub const QUEUE: &str = "queue";
/// A node's message counts of the last hour, `stats/<node>`.
pub const STATS: &str = "stats";
/// What the nodes share about themselves (the entries below).
pub const CLUSTER: &str = "cluster";
/// Heartbeats and the nodes' clock files.
pub const NODES: &str = "cluster/nodes";
/// POP3 maildrop locks and leases.
pub const LOCKS: &str = "cluster/locks";
/// Failed logins per writer (node and service).
pub const LOGIN_FAILURES: &str = "cluster/login-failures";
/// The DNS announcer's last report.
pub const DNS_STATE: &str = "cluster/dns-state.toml";

/// The directories a new store is created with.
pub const INIT_DIRS: &[&str] = &[MAIL, QUEUE, SPOOL, NODES, LOCKS, TLS];

/// The paths of one store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    pub fn new(root: &Path) -> Layout {
        Layout { root: root.to_path_buf() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn format(&self) -> PathBuf {
        self.root.join(FORMAT)
    }

    pub fn settings(&self) -> PathBuf {
        self.root.join(SETTINGS)
    }

    pub fn accounts(&self) -> PathBuf {
        self.root.join(ACCOUNTS)
    }

    pub fn admin_hash(&self) -> PathBuf {
        self.root.join(ADMIN_HASH)
    }

    pub fn dkim_dir(&self) -> PathBuf {
        self.root.join(DKIM)
    }

    /// The DKIM keys of `domain` (a checked domain name: no path
    /// separators).
    pub fn dkim_domain_dir(&self, domain: &str) -> PathBuf {
        self.dkim_dir().join(domain)
    }

    pub fn tls_dir(&self) -> PathBuf {
        self.root.join(TLS)
    }

    pub fn mail_dir(&self) -> PathBuf {
        self.root.join(MAIL)
    }

    /// The Maildir of `addr`.
    pub fn maildir(&self, addr: &Address) -> PathBuf {
        self.mail_dir().join(addr.domain()).join(addr.local())
    }

    /// Where every node's spool directory is.
    pub fn spool_root(&self) -> PathBuf {
        self.root.join(SPOOL)
    }

    /// A node's private spool directory for messages being received.
    pub fn spool_dir(&self, node: &str) -> PathBuf {
        self.spool_root().join(node)
    }

    pub fn queue_dir(&self) -> PathBuf {
        self.root.join(QUEUE)
    }

    pub fn stats_dir(&self) -> PathBuf {
        self.root.join(STATS)
    }

    pub fn stats_file(&self, node: &str) -> PathBuf {
        self.stats_dir().join(node)
    }

    pub fn cluster_dir(&self) -> PathBuf {
        self.root.join(CLUSTER)
    }

    pub fn nodes_dir(&self) -> PathBuf {
        self.root.join(NODES)
    }

    /// The file a node touches to read the store's clock.
    pub fn clock_file(&self, node: &str) -> PathBuf {
        self.nodes_dir().join(format!(".clock.{node}"))
    }

    pub fn locks_dir(&self) -> PathBuf {
        self.root.join(LOCKS)
    }

    pub fn login_failures_dir(&self) -> PathBuf {
        self.root.join(LOGIN_FAILURES)
    }

    pub fn dns_state(&self) -> PathBuf {
        self.root.join(DNS_STATE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_under_the_root() {
        let l = Layout::new(Path::new("/s"));
        let a = Address::parse("bob@example.test").unwrap();
        assert_eq!(l.maildir(&a), Path::new("/s/mail/example.test/bob"));
        assert_eq!(l.spool_dir("n1"), Path::new("/s/spool/n1"));
        assert_eq!(l.clock_file("n1"), Path::new("/s/cluster/nodes/.clock.n1"));
        assert_eq!(l.login_failures_dir(), Path::new("/s/cluster/login-failures"));
        assert_eq!(l.dkim_domain_dir("example.test"), Path::new("/s/dkim/example.test"));
        assert_eq!(l.stats_file("n2"), Path::new("/s/stats/n2"));
        for p in [l.format(), l.settings(), l.accounts(), l.admin_hash(), l.tls_dir(), l.queue_dir(), l.locks_dir(), l.dns_state()] {
            assert!(p.starts_with("/s") && p != Path::new("/s"), "{}", p.display());
        }
    }
}
