//! Shared scenario of the DNS tests: three mail nodes, one fails, it comes
//! back; run against BIND and against the embedded server.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use dns::{
    query_current, reconcile, DesiredRecords, DnsError, DnsTarget, TsigAlgorithm, TsigError,
    TsigKey,
};

pub const ZONE: &str = "example.test";
pub const MAIL_HOST: &str = "mail.example.test";
/// Present in both zones and never named in `hosts`: must stay untouched.
pub const BYSTANDER: &str = "ns1.example.test";
pub const KEY_NAME: &str = "mailfort-announcer.";
/// 32 random octets.
pub const KEY_SECRET: &str = "q3Fv2m0u1yRk9Yc3o6bD0i9H1pX7rT2sN4wL8eJ5aZE=";
/// A key the server knows but that may not update.
pub const READONLY_KEY_NAME: &str = "mailfort-readonly.";
pub const READONLY_KEY_SECRET: &str = "Zm9yLXRlc3RzLW9ubHktcmVhZG9ubHkta2V5LTAwMDE=";
pub const TTL: u32 = 60;
/// Per-exchange timeout used in the tests.
pub const TIMEOUT: Duration = Duration::from_secs(3);
/// Upper bound of one external tool run (dig, nsupdate).
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(30);

pub fn key() -> TsigKey {
    TsigKey::from_base64(KEY_NAME, "hmac-sha256", KEY_SECRET).expect("test key")
}

pub fn target(server: SocketAddr) -> DnsTarget {
    let mut t = DnsTarget::new(server, ZONE, key());
    t.timeout = TIMEOUT;
    t
}

pub fn node_v4(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 10 + n))
}

pub fn node_v6(n: u8) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, u16::from(n)))
}

/// What the announcer would want with these nodes alive: MX preference by
/// rank (10, 20, ...), and mail.example.test pointing at every live node.
pub fn node_state(live: &[u8]) -> DesiredRecords {
    let mut sorted = live.to_vec();
    sorted.sort_unstable();
    let mx = sorted
        .iter()
        .enumerate()
        .map(|(rank, n)| ((rank as u16 + 1) * 10, format!("mx{n}.{ZONE}")))
        .collect();
    let mut addresses = Vec::new();
    for n in &sorted {
        addresses.push(node_v4(*n));
        addresses.push(node_v6(*n));
    }
    let mut hosts = BTreeMap::new();
    hosts.insert(MAIL_HOST.to_string(), addresses);
    DesiredRecords {
        ttl: TTL,
        mx,
        hosts,
    }
}

fn expected_mx(desired: &DesiredRecords) -> Vec<(u16, String)> {
    let mut v: Vec<(u16, String)> = desired
        .mx
        .iter()
        .map(|(p, e)| (*p, format!("{e}.")))
        .collect();
    v.sort();
    v
}

/// Reads the zone back with the crate's own query function and compares.
pub async fn assert_server_has(target: &DnsTarget, desired: &DesiredRecords) {
    let names: Vec<&String> = desired.hosts.keys().collect();
    let current = query_current(target, names).await.expect("query_current");
    assert_eq!(
        current.mx_pairs(),
        expected_mx(desired),
        "MX records on the server"
    );
    for m in &current.mx {
        assert_eq!(m.ttl, desired.ttl, "MX TTL");
    }
    for (name, addresses) in &desired.hosts {
        let mut want = addresses.clone();
        want.sort();
        assert_eq!(current.addresses(name), want, "addresses of {name}");
    }
}

pub use testsupport::dns::find_tool;

/// Runs a tool off the async runtime, bounded by [`TOOL_TIMEOUT`].
pub async fn run_tool(program: PathBuf, args: Vec<String>, stdin: Option<String>) -> Output {
    let shown = format!("{} {}", program.display(), args.join(" "));
    let job = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = Command::new(&program)
            .args(&args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tool");
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(text.as_bytes()).expect("write tool stdin");
        }
        child.wait_with_output().expect("tool output")
    });
    match tokio::time::timeout(TOOL_TIMEOUT, job).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => panic!("{shown}: {e}"),
        Err(_) => panic!("{shown} did not finish within {TOOL_TIMEOUT:?}"),
    }
}

/// `dig +short` output lines, sorted; None when dig is not installed.
pub async fn dig_short(
    server: SocketAddr,
    rtype: &str,
    name: &str,
    extra: &[&str],
) -> Option<Vec<String>> {
    let dig = find_tool("dig")?;
    let mut args = vec![
        format!("@{}", server.ip()),
        "-p".into(),
        server.port().to_string(),
        "+short".into(),
        "+time=2".into(),
        "+tries=2".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push(rtype.into());
    args.push(name.into());
    let out = run_tool(dig, args, None).await;
    assert!(
        out.status.success(),
        "dig failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut lines: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    lines.sort();
    Some(lines)
}

/// Full `dig` output; None when dig is not installed.
pub async fn dig_full(server: SocketAddr, args_in: &[&str]) -> Option<String> {
    let dig = find_tool("dig")?;
    let mut args = vec![
        format!("@{}", server.ip()),
        "-p".into(),
        server.port().to_string(),
        "+time=2".into(),
        "+tries=2".into(),
    ];
    args.extend(args_in.iter().map(|s| s.to_string()));
    let out = run_tool(dig, args, None).await;
    Some(format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

/// Checks with dig (when installed) that the server has `desired`.
pub async fn assert_dig_sees(server: SocketAddr, desired: &DesiredRecords) {
    let Some(mx) = dig_short(server, "MX", ZONE, &[]).await else {
        eprintln!("dig not installed: skipping the dig cross-check");
        return;
    };
    let want: BTreeSet<String> = expected_mx(desired)
        .iter()
        .map(|(p, e)| format!("{p} {e}"))
        .collect();
    assert_eq!(
        mx.into_iter().collect::<BTreeSet<_>>(),
        want,
        "dig MX {ZONE}"
    );
    let addresses = &desired.hosts[MAIL_HOST];
    let v4 = dig_short(server, "A", MAIL_HOST, &[])
        .await
        .unwrap_or_default();
    let want_v4: BTreeSet<String> = addresses
        .iter()
        .filter(|a| a.is_ipv4())
        .map(|a| a.to_string())
        .collect();
    assert_eq!(
        v4.into_iter().collect::<BTreeSet<_>>(),
        want_v4,
        "dig A {MAIL_HOST}"
    );
    let v6 = dig_short(server, "AAAA", MAIL_HOST, &[])
        .await
        .unwrap_or_default();
    let want_v6: BTreeSet<String> = addresses
        .iter()
        .filter(|a| a.is_ipv6())
        .map(|a| a.to_string())
        .collect();
    assert_eq!(
        v6.into_iter().collect::<BTreeSet<_>>(),
        want_v6,
        "dig AAAA {MAIL_HOST}"
    );
}

/// 3 nodes -> node 2 fails -> back to 3, then an empty MX set, a TTL
/// change and a large RRset (UPDATE and answers over TCP).
pub async fn failover_scenario(target: &DnsTarget) {
    let bystander_before = query_current(target, [BYSTANDER])
        .await
        .expect("bystander")
        .addresses(BYSTANDER);
    assert!(
        !bystander_before.is_empty(),
        "the zone file has {BYSTANDER}"
    );

    let all = node_state(&[1, 2, 3]);
    let outcome = reconcile(target, &all).await.expect("reconcile 3 nodes");
    assert!(outcome.changed, "first reconcile changes: {outcome}");
    assert_eq!(outcome.added.len(), 3 + 6, "{outcome}");
    assert_server_has(target, &all).await;
    assert_dig_sees(target.server, &all).await;

    let again = reconcile(target, &all).await.expect("reconcile again");
    assert!(!again.changed, "nothing to do the second time: {again}");

    // Node 2 fails: mx3 moves up to preference 20.
    let two = node_state(&[1, 3]);
    let outcome = reconcile(target, &two).await.expect("reconcile 2 nodes");
    assert!(outcome.changed);
    let removed = outcome.removed.join("\n");
    assert!(removed.contains("MX 20 mx2.example.test."), "{removed}");
    assert!(removed.contains("MX 30 mx3.example.test."), "{removed}");
    assert!(removed.contains(&format!("A {}", node_v4(2))), "{removed}");
    assert!(
        removed.contains(&format!("AAAA {}", node_v6(2))),
        "{removed}"
    );
    assert!(
        outcome.added.join("\n").contains("MX 20 mx3.example.test."),
        "{outcome}"
    );
    assert_server_has(target, &two).await;
    assert_dig_sees(target.server, &two).await;

    // Node 2 is back.
    let outcome = reconcile(target, &all).await.expect("reconcile back to 3");
    assert!(outcome.changed);
    assert_server_has(target, &all).await;
    assert_dig_sees(target.server, &all).await;

    // Names not in `hosts` are left alone.
    let bystander_after = query_current(target, [BYSTANDER])
        .await
        .expect("bystander")
        .addresses(BYSTANDER);
    assert_eq!(bystander_after, bystander_before);

    // TTL change rewrites the RRsets.
    let mut longer = all.clone();
    longer.ttl = 120;
    assert!(
        reconcile(target, &longer)
            .await
            .expect("ttl change")
            .changed
    );
    assert_server_has(target, &longer).await;

    // No MX at all, and no addresses.
    let mut none = node_state(&[]);
    none.ttl = 120;
    let outcome = reconcile(target, &none)
        .await
        .expect("reconcile to nothing");
    assert!(outcome.changed);
    assert_server_has(target, &none).await;
    let current = query_current(target, [MAIL_HOST]).await.expect("query");
    assert!(
        current.mx.is_empty() && current.addresses(MAIL_HOST).is_empty(),
        "{current:?}"
    );

    // A large RRset: the UPDATE exceeds 512 octets (sent over TCP) and so
    // do the answers (truncated over UDP, retried over TCP).
    let mut big = node_state(&[1, 2, 3]);
    let addresses = big.hosts.get_mut(MAIL_HOST).expect("mail host");
    addresses.extend((1..=60u8).map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 1, i))));
    let outcome = reconcile(target, &big).await.expect("large update");
    assert!(outcome.changed);
    assert_server_has(target, &big).await;
    assert!(!reconcile(target, &big).await.expect("large again").changed);

    // Finish in the three-node state.
    reconcile(target, &all).await.expect("final");
    assert_server_has(target, &all).await;
}

/// Wrong secret -> NOTAUTH/BADSIG, unknown key -> NOTAUTH/BADKEY, a zone
/// the server does not serve -> REFUSED (or NOTAUTH).
pub async fn credential_errors(server: SocketAddr) {
    let desired = node_state(&[1]);

    let mut wrong_secret = target(server);
    wrong_secret.key.secret = b"definitely not the secret".to_vec();
    let err = reconcile(&wrong_secret, &desired)
        .await
        .expect_err("wrong secret must fail");
    assert!(
        matches!(
            err,
            DnsError::NotAuthorized {
                tsig: Some(TsigError::BadSig),
                ..
            }
        ),
        "wrong secret: {err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("NOTAUTH") && text.contains("BADSIG"),
        "{text}"
    );
    assert!(!err.is_transient());

    let mut unknown = target(server);
    unknown.key =
        TsigKey::new("nobody-knows-me.", TsigAlgorithm::HmacSha256, key().secret).expect("key");
    let err = reconcile(&unknown, &desired)
        .await
        .expect_err("unknown key must fail");
    assert!(
        matches!(
            err,
            DnsError::NotAuthorized {
                tsig: Some(TsigError::BadKey),
                ..
            }
        ),
        "unknown key: {err}"
    );
    assert!(err.to_string().contains("BADKEY"), "{err}");

    let mut other_zone = target(server);
    other_zone.zone = "not-served.test".into();
    let err = reconcile(
        &other_zone,
        &DesiredRecords {
            ttl: TTL,
            mx: vec![],
            hosts: BTreeMap::new(),
        },
    )
    .await
    .expect_err("unknown zone must fail");
    assert!(
        matches!(
            err,
            DnsError::Refused { .. } | DnsError::NotAuthorized { .. }
        ),
        "other zone: {err}"
    );
}

/// A key the server knows but that is not allowed to update: reading works,
/// a change is REFUSED.
pub async fn readonly_key_refused(server: SocketAddr) {
    let mut readonly = target(server);
    readonly.key =
        TsigKey::from_base64(READONLY_KEY_NAME, "hmac-sha256", READONLY_KEY_SECRET).expect("key");
    query_current(&readonly, [MAIL_HOST])
        .await
        .expect("reading with the read-only key");
    let mut changed = node_state(&[1]);
    changed.mx.push((99, format!("other.{ZONE}")));
    let err = reconcile(&readonly, &changed)
        .await
        .expect_err("read-only key must not update");
    assert!(
        matches!(err, DnsError::Refused { .. }),
        "read-only key: {err}"
    );
    assert!(err.to_string().contains("REFUSED"), "{err}");
}

/// Timeout and network errors against sockets that do not answer.
pub async fn transport_errors() {
    // A bound UDP socket that never answers (and no TCP listener).
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let addr = silent.local_addr().expect("addr");
    let mut t = target(addr);
    t.timeout = Duration::from_millis(300);
    let started = std::time::Instant::now();
    let err = reconcile(&t, &node_state(&[1]))
        .await
        .expect_err("silence must fail");
    assert!(
        matches!(err, DnsError::Timeout { .. }),
        "silent server: {err}"
    );
    assert!(err.is_transient());
    assert!(started.elapsed() < Duration::from_secs(3), "bounded wait");
    assert!(err.to_string().contains("no answer"), "{err}");
    drop(silent);

    // Nothing bound at all: ICMP port unreachable -> connection refused.
    let free = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let addr = free.local_addr().expect("addr");
    drop(free);
    let mut t = target(addr);
    t.timeout = Duration::from_millis(500);
    let err = reconcile(&t, &node_state(&[1]))
        .await
        .expect_err("closed port must fail");
    assert!(
        matches!(err, DnsError::Network { .. } | DnsError::Timeout { .. }),
        "closed port: {err}"
    );
}
