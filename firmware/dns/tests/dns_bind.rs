//! The DNS client against a real BIND 9 (`named`), as in production.
//!
//! Needs the Debian packages bind9 and bind9-dnsutils; fails (does not skip)
//! when `named` is missing.
//!
//! BIND runs in the foreground (`named -g`) as the invoking user with its
//! configuration, zone file and journal in a temporary directory. Debian
//! ships an AppArmor profile for /usr/sbin/named that only allows
//! /etc/bind and /var/cache/bind; where that profile is enforced, point
//! TMPDIR at a directory under /var/cache/bind so named may read and write
//! the files (the start-up failure message says so).

mod common;

use common::*;
use testsupport::dns::{Key, Named, Zone};

/// Starts named on a free port with the zone (dynamic with the test key)
/// and a key it knows but that may not update.
fn start_named(dir: &std::path::Path) -> Named {
    // Each node's own name (the MX targets) is static; BIND's integrity
    // check refuses an MX whose target has no address in the zone.
    let zone = format!(
        "$TTL 300\n\
         @   IN SOA ns1.{ZONE}. hostmaster.{ZONE}. 1 3600 600 604800 60\n\
         @   IN NS  ns1.{ZONE}.\n\
         ns1 IN A   127.0.0.1\n\
         {}",
        node_host_lines()
    );
    testsupport::dns::start(
        dir,
        &[Key { name: KEY_NAME, secret: KEY_SECRET }, Key { name: READONLY_KEY_NAME, secret: READONLY_KEY_SECRET }],
        &[Zone { name: ZONE, text: &zone, update_key: Some(KEY_NAME) }],
    )
}

fn node_host_lines() -> String {
    (1..=3u8)
        .map(|n| format!("mx{n} IN A {}\nmx{n} IN AAAA {}\n", node_v4(n), node_v6(n)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_against_bind() {
    let dir = tempfile::tempdir().expect("temp dir");
    let named = start_named(dir.path());
    let target = target(named.addr);

    failover_scenario(&target).await;
    credential_errors(named.addr).await;
    readonly_key_refused(named.addr).await;

    // The records survived in BIND's journal: BIND itself still serves them.
    assert_server_has(&target, &node_state(&[1, 2, 3])).await;
    assert!(
        dir.path().join(format!("{ZONE}.zone.jnl")).exists(),
        "BIND wrote a journal"
    );
    drop(named);
}

#[tokio::test]
async fn timeouts_and_network_errors_are_classified() {
    transport_errors().await;
}
