//! A running node follows cluster.toml: a domain and a cluster-wide size
//! limit added by another process are in force within a few seconds,
//! without a restart; and the node counts the messages it accepts.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use maild::{Node, NodeConfig, Service};
use store::{Address, ClusterLimits, Store};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// The node's own limit, and the cluster's that replaces it.
const NODE_SIZE: u64 = 1_000_000;
const CLUSTER_SIZE: u64 = 2_000_000;
/// How long the node may take to follow the change: its refresh interval
/// plus the chores' tick, with a margin for a slow machine.
const FOLLOW_TIMEOUT: Duration = Duration::from_secs(20);
const IO_TIMEOUT: Duration = Duration::from_secs(10);

struct Client {
    r: BufReader<TcpStream>,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        let s = TcpStream::connect(addr).await.expect("connect");
        let mut c = Client { r: BufReader::new(s) };
        let (code, _) = c.reply().await;
        assert_eq!(code, 220);
        c
    }

    /// One reply: its code and its lines' text.
    async fn reply(&mut self) -> (u16, Vec<String>) {
        let mut lines = Vec::new();
        loop {
            let mut l = String::new();
            let n = tokio::time::timeout(IO_TIMEOUT, self.r.read_line(&mut l)).await.expect("reply in time").expect("read");
            assert!(n > 0, "connection closed");
            let l = l.trim_end().to_string();
            let last = l.as_bytes().get(3) != Some(&b'-');
            lines.push(l.get(4..).unwrap_or("").to_string());
            if last {
                return (l[..3].parse().expect("reply code"), lines);
            }
        }
    }

    async fn cmd(&mut self, line: &str) -> (u16, Vec<String>) {
        self.r.get_mut().write_all(format!("{line}\r\n").as_bytes()).await.expect("write");
        self.reply().await
    }

    /// The SIZE the server advertises in EHLO.
    async fn ehlo_size(&mut self) -> Option<u64> {
        let (code, lines) = self.cmd("EHLO client.example.net").await;
        assert_eq!(code, 250);
        lines.iter().find_map(|l| l.strip_prefix("SIZE ")).map(|v| v.parse().expect("SIZE value"))
    }
}

fn config(store: &Path) -> NodeConfig {
    let mut c = NodeConfig { store: store.to_path_buf(), node: "n1".into(), ..NodeConfig::default() };
    c.smtp = vec!["127.0.0.1:0".parse().expect("addr")];
    c.submission.clear();
    c.submissions.clear();
    c.pop3.clear();
    c.pop3s.clear();
    c.imap.clear();
    c.imaps.clear();
    c.limits.max_message_size = NODE_SIZE;
    c.inbound.verify = false;
    c.outbound.enabled = false;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_follows_cluster_settings_and_counts_messages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("s");
    let admin = Store::init(&root, "example.test", None).expect("store");
    let resolver = cert::ClusterCertResolver::load(&admin).expect("the cluster certificate");
    let node = Node::bind(config(&root), Some(resolver)).await.expect("bind");
    let smtp = node.local_addrs().into_iter().find(|(s, _)| *s == Service::Smtp).expect("smtp listener").1;
    let shared = node.shared().clone();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(node.run(async {
        let _ = stop_rx.await;
    }));

    // Before: the node's own limit, and example.org is not ours.
    let mut c = Client::connect(smtp).await;
    assert_eq!(c.ehlo_size().await, Some(NODE_SIZE));
    assert_eq!(c.cmd("MAIL FROM:<a@example.net>").await.0, 250);
    assert_eq!(c.cmd("RCPT TO:<bob@example.org>").await.0, 554, "relay refused for a foreign domain");
    assert_eq!(c.cmd("QUIT").await.0, 221);

    // Another process (the admin page) adds a domain, a user in it and a
    // cluster-wide size limit.
    let mut s = (*admin.settings()).clone();
    s.domains.push("example.org".into());
    s.limits = ClusterLimits { max_message_size: Some(CLUSTER_SIZE), max_recipients: None };
    admin.write_settings(&s).expect("write settings");
    let bob = Address::parse("bob@example.org").expect("address");
    admin.accounts().add(&bob, "secret", &s.domains).expect("add bob");

    let start = Instant::now();
    let mut c = loop {
        let mut c = Client::connect(smtp).await;
        if c.ehlo_size().await == Some(CLUSTER_SIZE) {
            break c;
        }
        assert!(start.elapsed() < FOLLOW_TIMEOUT, "the node did not follow cluster.toml within {FOLLOW_TIMEOUT:?}");
        let _ = c.cmd("QUIT").await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // The new limit is enforced (RFC 1870 6.1: a declared size over it is
    // refused at MAIL), and the new domain takes mail.
    assert_eq!(c.cmd(&format!("MAIL FROM:<a@example.net> SIZE={}", CLUSTER_SIZE + 1)).await.0, 552);
    assert_eq!(c.cmd(&format!("MAIL FROM:<a@example.net> SIZE={}", NODE_SIZE + 1)).await.0, 250, "the node's own limit no longer applies");
    assert_eq!(c.cmd("RCPT TO:<bob@example.org>").await.0, 250);
    assert_eq!(c.cmd("DATA").await.0, 354);
    let (code, text) = c.cmd("Subject: hi\r\n\r\nhello bob\r\n.").await;
    assert_eq!(code, 250, "{text:?}");
    assert_eq!(c.cmd("QUIT").await.0, 221);
    let new = root.join("mail/example.org/bob/new");
    assert_eq!(std::fs::read_dir(&new).expect("bob's new/").count(), 1);
    let counted = shared.stats.snapshot();
    assert_eq!((counted.inbound.iter().sum::<u64>(), counted.outbound.iter().sum::<u64>()), (1, 0));

    // A bad file is refused: the settings in force stay.
    std::fs::write(root.join("cluster.toml"), "domains = [").expect("break cluster.toml");
    tokio::time::sleep(maild::server::SETTINGS_REFRESH_INTERVAL * 2).await;
    let mut c = Client::connect(smtp).await;
    assert_eq!(c.ehlo_size().await, Some(CLUSTER_SIZE));
    assert_eq!(c.cmd("QUIT").await.0, 221);

    // The counts are written at shutdown at the latest.
    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(60), running).await.expect("the node stops").expect("join").expect("run");
    let now = admin.now("reader").expect("store clock");
    let stats = store::stats::read_last_hour(&admin, now).expect("stats");
    assert_eq!(stats.len(), 1);
    assert_eq!(stats[0].node, "n1");
    assert_eq!(stats[0].inbound.iter().sum::<u64>(), 1);
}
