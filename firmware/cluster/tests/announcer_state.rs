//! The announcer's report of the DNS state (`<store>/cluster/dns-state.toml`)
//! against the embedded DNS server: what it says after a success, after a
//! failure, and that a repeated failure does not rewrite it.

// The DNS fixtures (zone, keys, BIND and dig) are the dns crate's own.
#[path = "../../dns/tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::time::Duration;

use cluster::announcer::{dns_state_path, read_dns_state, Announcer, BACKOFF_START};
use dns::{EmbeddedServer, ZoneData};
use cluster::live::{new_instance, read_live_set, Heartbeat, LiveSet, NodeInfo, STATE_SERVING};
use common::*;
use store::{DnsSettings, Store, TsigSettings};

fn heartbeat(store: &Arc<Store>, node: &str, rank: u32, addresses: &[&str]) -> Heartbeat {
    let info = NodeInfo {
        node: node.into(),
        rank,
        instance: new_instance(),
        pid: std::process::id(),
        addresses: addresses.iter().map(|a| a.parse::<IpAddr>().expect("ip")).collect(),
        services: vec![],
        state: STATE_SERVING.into(),
        protections: vec![],
    };
    let hb = Heartbeat::new(store.clone(), info);
    hb.publish().expect("heartbeat");
    hb
}

/// The live set after a fresh beat of every node (the test's pauses are
/// longer than a heartbeat lives).
fn live(store: &Store, nodes: &[&Heartbeat]) -> LiveSet {
    for n in nodes {
        n.beat().expect("beat");
    }
    read_live_set(store, "n1").expect("live set")
}

fn set_secret(store: &Store, server: &str, secret: &str) {
    let mut s = (*store.settings()).clone();
    s.dns = Some(DnsSettings {
        server: server.into(),
        zone: ZONE.into(),
        client_host: None,
        ttl: TTL,
        recheck_secs: 30,
        tsig: TsigSettings { name: KEY_NAME.into(), algorithm: "hmac-sha256".into(), secret: secret.into() },
    });
    store.write_settings(&s).expect("write settings");
}

fn inode(store: &Store) -> u64 {
    std::fs::metadata(dns_state_path(store)).expect("report").ino()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announcer_reports_what_dns_holds() {
    let server = EmbeddedServer::start(
        "127.0.0.1:0".parse().expect("addr"),
        ZONE,
        key(),
        ZoneData { ttl: 300, mx: vec![], hosts: BTreeMap::new() },
    )
    .await
    .expect("embedded server");
    let addr = server.local_addr().to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(Store::init(&dir.path().join("s"), ZONE, None).expect("store"));
    set_secret(&store, &addr, KEY_SECRET);
    assert!(matches!(read_dns_state(&store), Ok(None)), "no report before the first attempt");

    let n1 = heartbeat(&store, "n1", 1, &["127.0.0.1", "::1"]);
    let mut a = Announcer::new(store.clone(), "n1".into(), n1.info().instance.clone());
    a.tick(&live(&store, &[&n1])).await;
    let st = read_dns_state(&store).expect("readable").expect("a report");
    assert_eq!((st.node.as_str(), st.zone.as_str(), st.server.as_str()), ("n1", ZONE, addr.as_str()));
    assert!(st.in_step && st.last_error.is_none(), "{st:?}");
    assert!(st.at_unix > 0);
    assert_eq!(
        st.records,
        [
            format!("example.test. {TTL} IN MX 10 n1.example.test."),
            format!("mail.example.test. {TTL} IN A 127.0.0.1"),
            format!("mail.example.test. {TTL} IN AAAA ::1"),
            format!("n1.example.test. {TTL} IN A 127.0.0.1"),
            format!("n1.example.test. {TTL} IN AAAA ::1"),
        ]
    );
    // The same lines as the server's own zone file.
    let zone = server.zone_text();
    for line in &st.records {
        assert!(zone.contains(&format!("{line}\n")), "{line} not in\n{zone}");
    }

    // A second node joins while the key is wrong: the update fails, the
    // report says so and keeps the records that are still in DNS.
    let n2 = heartbeat(&store, "n2", 2, &["127.0.0.2"]);
    set_secret(&store, &addr, READONLY_KEY_SECRET);
    a.tick(&live(&store, &[&n1, &n2])).await;
    let failed = read_dns_state(&store).expect("readable").expect("a report");
    assert!(!failed.in_step);
    assert!(failed.last_error.as_deref().is_some_and(|e| e.contains("NOTAUTH")), "{failed:?}");
    assert_eq!(failed.records, st.records);
    assert!(!server.zone_text().contains("n2.example.test."));

    // The retry after the back-off fails the same way: nothing to report.
    let before = inode(&store);
    tokio::time::sleep(BACKOFF_START + Duration::from_millis(200)).await;
    a.tick(&live(&store, &[&n1, &n2])).await;
    assert_eq!(a.state.last_error, failed.last_error, "still failing");
    assert_eq!(inode(&store), before, "an unchanged report is not rewritten");

    // The key is fixed: after the (doubled) back-off DNS and report follow.
    set_secret(&store, &addr, KEY_SECRET);
    tokio::time::sleep(BACKOFF_START * 2 + Duration::from_millis(200)).await;
    a.tick(&live(&store, &[&n1, &n2])).await;
    let fixed = read_dns_state(&store).expect("readable").expect("a report");
    assert!(fixed.in_step && fixed.last_error.is_none(), "{fixed:?}");
    assert!(fixed.records.contains(&format!("example.test. {TTL} IN MX 20 n2.example.test.")), "{:?}", fixed.records);
    assert!(fixed.records.contains(&format!("n2.example.test. {TTL} IN A 127.0.0.2")));
    let zone = server.zone_text();
    assert!(fixed.records.iter().all(|l| zone.contains(&format!("{l}\n"))), "{zone}");

    // A corrupt report is an error for the reader, not a panic.
    std::fs::write(dns_state_path(&store), "node = [").expect("write");
    assert!(read_dns_state(&store).is_err());
    server.shutdown().await;
}
