//! The shared mail store: one directory tree on a local disk or an NFS mount
//! that every mail node uses at once.
//!
//! ```text
//! <store>/FORMAT            format version; nothing runs on an unknown one
//! <store>/cluster.toml      cluster-wide settings (domains, host name, ...)
//! <store>/accounts          one account a line, argon2id PHC hash
//! <store>/mail/<domain>/<local>/{tmp,new,cur}   Maildir
//! <store>/queue/            outbound messages (.msg) and envelopes (.env)
//! <store>/spool/<node>/     a node's messages being received (`assembly`)
//! <store>/cluster/nodes/    heartbeats (`heartbeat`)
//! <store>/cluster/locks/    POP3 maildrop locks and leases (`lock`, names in `lock::names`)
//! <store>/cluster/dns-state.toml  the DNS announcer's last report
//! <store>/cluster/login-failures/  failed logins per writer (node and service)
//! <store>/tls/              the cluster's certificate and key
//! <store>/stats/<node>      a node's message counts of the last hour
//! <store>/dkim/<domain>/    DKIM keys
//! <store>/admin.hash        the admin password's hash
//! ```
//!
//! Every one of these paths is named in [`layout`] and nowhere else.
//!
//! The rules that make several writers safe, also over NFS: a message is
//! written once to a private spool file, fsynced, and only then linked into
//! each recipient's `new/`; the directories are fsynced before the caller
//! may say 250. Nothing rewrites a message in place. Times that several
//! nodes must agree on come from the store's clock (file mtimes set by the
//! storage host), not from the nodes' own clocks. A change of several
//! files writes the one that makes it visible last, so a crash leaves only
//! invisible debris, removed at a node's start
//! (`Store::sweep_crash_leftovers`). Every file is 0600 and every
//! directory 0700, whatever the umask (`fsutil::create_private_file`).
//! No store call runs on an async thread (`blocking`).

pub mod accounts;
pub mod address;
pub mod assembly;
pub mod blocking;
pub mod fsutil;
pub mod heartbeat;
pub mod imap;
pub mod layout;
pub mod lock;
pub mod login_failures;
pub mod maildir;
pub mod password;
pub mod peer;
pub mod queue;
pub mod settings;
pub mod stats;
mod store;
pub mod sweep;

pub use accounts::{Accounts, AccountError};
pub use address::{Address, AddressError};
pub use layout::Layout;
pub use lock::{Claimant, Holder, Lease, LockError, MaildropLock};
pub use login_failures::{LoginFailures, Verdict};
pub use maildir::{MessageEntry, Spool};
pub use password::PasswordError;
pub use queue::{Envelope, QueueEntry};
pub use sweep::SweepReport;
pub use settings::{
    ClusterLimits, ClusterSettings, DnsSettings, Network, SenderSettings, SettingError, TsigSettings, DEFAULT_DNS_RECHECK_SECS, DEFAULT_DNS_TTL, MAX_OUTSIDE_SENDERS, MAX_RECIPIENTS_LIMIT, MESSAGE_SIZE_HARD_CAP,
    MIN_MESSAGE_SIZE_LIMIT, MIN_RECIPIENTS_LIMIT,
};
pub use store::{Store, StoreError, FORMAT_VERSION};
