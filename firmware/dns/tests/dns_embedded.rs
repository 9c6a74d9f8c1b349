//! The DNS client against the embedded server, plus the embedded server
//! against BIND's own tools (dig, nsupdate) when they are installed
//! (Debian package bind9-dnsutils).

mod common;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use dns::{query_current, DnsError, EmbeddedServer, ZoneData};
use common::*;
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};

fn initial_zone() -> ZoneData {
    let mut hosts = BTreeMap::new();
    hosts.insert(
        BYSTANDER.to_string(),
        vec!["127.0.0.1".parse::<IpAddr>().expect("ip")],
    );
    for n in 1..=3u8 {
        hosts.insert(format!("mx{n}.{ZONE}"), vec![node_v4(n), node_v6(n)]);
    }
    ZoneData {
        ttl: 300,
        mx: vec![],
        hosts,
    }
}

async fn start() -> EmbeddedServer {
    EmbeddedServer::start(
        "127.0.0.1:0".parse().expect("addr"),
        ZONE,
        key(),
        initial_zone(),
    )
    .await
    .expect("start the embedded server")
}

/// Sends an unsigned UPDATE over UDP and returns the answer's RCODE.
async fn unsigned_update(server: SocketAddr) -> ResponseCode {
    let mut m = Message::new();
    m.set_id(4242)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Update);
    m.add_query(Query::query(
        Name::from_ascii("example.test.").expect("zone"),
        RecordType::SOA,
    ));
    m.add_name_server(Record::from_rdata(
        Name::from_ascii("sneaky.example.test.").expect("name"),
        60,
        RData::A(A::new(192, 0, 2, 66)),
    ));
    let bytes = m.to_vec().expect("encode");
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    socket.connect(server).await.expect("connect");
    socket.send(&bytes).await.expect("send");
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(3), socket.recv(&mut buf))
        .await
        .expect("answer in time")
        .expect("recv");
    let answer = Message::from_vec(&buf[..n]).expect("parse answer");
    assert_eq!(answer.id(), 4242);
    assert!(
        answer.signature().is_empty(),
        "an unsigned request gets an unsigned answer"
    );
    answer.response_code()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_against_embedded_server() {
    let server = start().await;
    let addr = server.local_addr();
    assert_eq!(server.zone(), "example.test.");
    let serial_before = server.serial();

    failover_scenario(&target(addr)).await;
    credential_errors(addr).await;

    // The server's own view agrees, and every change bumped the serial.
    let data = server.data();
    let expected = node_state(&[1, 2, 3]);
    let mut want_mx: Vec<(u16, String)> = expected
        .mx
        .iter()
        .map(|(p, e)| (*p, format!("{e}.")))
        .collect();
    want_mx.sort();
    assert_eq!(data.mx, want_mx);
    assert_eq!(data.hosts[&format!("{MAIL_HOST}.")].len(), 6);
    assert!(
        server.serial() > serial_before + 5,
        "serial {} after many updates",
        server.serial()
    );
    let text = server.zone_text();
    assert!(
        text.contains("example.test. 300 IN SOA ns1.example.test. hostmaster.example.test."),
        "{text}"
    );
    assert!(
        text.contains("mail.example.test. 60 IN A 127.0.0.11"),
        "{text}"
    );

    // An unsigned update is refused and changes nothing.
    let serial = server.serial();
    assert_eq!(unsigned_update(addr).await, ResponseCode::Refused);
    assert_eq!(server.serial(), serial);
    assert!(query_current(&target(addr), ["sneaky.example.test"])
        .await
        .expect("query")
        .addresses("sneaky.example.test")
        .is_empty());

    server.shutdown().await;
    let mut t = target(addr);
    t.timeout = Duration::from_millis(300);
    let err = query_current(&t, [MAIL_HOST])
        .await
        .expect_err("no server after shutdown");
    assert!(
        matches!(err, DnsError::Timeout { .. } | DnsError::Network { .. }),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_server_answers_dig() {
    let server = start().await;
    let addr = server.local_addr();
    reconcile_state(addr, &[1, 2]).await;

    let Some(mx) = dig_short(addr, "MX", ZONE, &[]).await else {
        eprintln!("dig not installed (bind9-dnsutils): skipping the dig checks");
        return;
    };
    assert_eq!(
        mx,
        vec![
            "10 mx1.example.test.".to_string(),
            "20 mx2.example.test.".to_string()
        ]
    );
    let tcp = dig_short(addr, "MX", ZONE, &["+tcp"])
        .await
        .unwrap_or_default();
    assert_eq!(tcp.len(), 2, "over TCP: {tcp:?}");
    let no_edns = dig_short(addr, "A", MAIL_HOST, &["+noedns"])
        .await
        .unwrap_or_default();
    assert_eq!(
        no_edns,
        vec!["127.0.0.11".to_string(), "127.0.0.12".to_string()]
    );

    // NXDOMAIN with the SOA in the authority section (RFC 2308 2.1).
    let out = dig_full(addr, &["A", "nope.example.test"])
        .await
        .unwrap_or_default();
    assert!(out.contains("status: NXDOMAIN"), "{out}");
    assert!(
        out.contains("AUTHORITY SECTION") && out.contains("SOA"),
        "{out}"
    );
    assert!(out.contains("flags: qr aa"), "authoritative: {out}");

    // NODATA: the name exists, not the type.
    let out = dig_full(addr, &["TXT", MAIL_HOST])
        .await
        .unwrap_or_default();
    assert!(
        out.contains("status: NOERROR") && out.contains("ANSWER: 0"),
        "{out}"
    );

    // Another zone: REFUSED.
    let out = dig_full(addr, &["A", "www.example.org"])
        .await
        .unwrap_or_default();
    assert!(out.contains("status: REFUSED"), "{out}");

    // SOA and NS at the apex.
    let soa = dig_short(addr, "SOA", ZONE, &[]).await.unwrap_or_default();
    assert_eq!(soa.len(), 1);
    assert!(
        soa[0].starts_with("ns1.example.test. hostmaster.example.test. "),
        "{soa:?}"
    );
    assert_eq!(
        dig_short(addr, "NS", ZONE, &[]).await.unwrap_or_default(),
        vec!["ns1.example.test.".to_string()]
    );

    // A TSIG-signed query: dig verifies the signature of the answer.
    let y = format!("hmac-sha256:{KEY_NAME}:{KEY_SECRET}");
    let out = dig_full(addr, &["-y", &y, "MX", ZONE])
        .await
        .unwrap_or_default();
    assert!(out.contains("status: NOERROR"), "{out}");
    assert!(out.contains("TSIG PSEUDOSECTION"), "{out}");
    assert!(
        !out.contains("Couldn't verify") && !out.contains("could not be validated"),
        "dig rejected our TSIG: {out}"
    );

    // A signed query with the wrong secret: NOTAUTH, BADSIG.
    let bad = format!("hmac-sha256:{KEY_NAME}:{READONLY_KEY_SECRET}");
    let out = dig_full(addr, &["-y", &bad, "MX", ZONE])
        .await
        .unwrap_or_default();
    assert!(out.contains("NOTAUTH") || out.contains("BADSIG"), "{out}");

    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_server_accepts_nsupdate_only_with_the_key() {
    let server = start().await;
    let addr = server.local_addr();
    let Some(nsupdate) = find_tool("nsupdate") else {
        eprintln!("nsupdate not installed (bind9-dnsutils): skipping");
        return;
    };
    let script = |extra: &str| {
        format!(
            "server {} {}\nzone {ZONE}\nupdate add {extra}.{ZONE} 60 A 192.0.2.7\nsend\n",
            addr.ip(),
            addr.port()
        )
    };
    let serial = server.serial();

    // Unsigned: REFUSED.
    let out = run_tool(
        nsupdate.clone(),
        vec!["-t".into(), "5".into()],
        Some(script("unsigned")),
    )
    .await;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "unsigned nsupdate must fail: {text}");
    assert!(text.contains("REFUSED"), "{text}");
    assert_eq!(server.serial(), serial);

    // Wrong secret: NOTAUTH / BADSIG.
    let bad = format!("hmac-sha256:{KEY_NAME}:{READONLY_KEY_SECRET}");
    let out = run_tool(
        nsupdate.clone(),
        vec!["-t".into(), "5".into(), "-y".into(), bad],
        Some(script("badsig")),
    )
    .await;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success(),
        "wrong-secret nsupdate must fail: {text}"
    );
    assert!(
        text.contains("NOTAUTH") || text.contains("BADSIG") || text.contains("tsig"),
        "{text}"
    );
    assert_eq!(server.serial(), serial);

    // Signed with the key: accepted, and nsupdate verified our signed answer.
    let good = format!("hmac-sha256:{KEY_NAME}:{KEY_SECRET}");
    let out = run_tool(
        nsupdate,
        vec!["-t".into(), "5".into(), "-y".into(), good],
        Some(script("signed")),
    )
    .await;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "signed nsupdate must succeed: {text}");
    assert_eq!(server.serial(), serial + 1);
    let current = query_current(&target(addr), ["signed.example.test"])
        .await
        .expect("query");
    assert_eq!(
        current.addresses("signed.example.test"),
        vec!["192.0.2.7".parse::<IpAddr>().expect("ip")]
    );
    assert!(server
        .zone_text()
        .contains("signed.example.test. 60 IN A 192.0.2.7"));

    server.shutdown().await;
}

async fn reconcile_state(addr: SocketAddr, live: &[u8]) {
    let desired = node_state(live);
    dns::reconcile(&target(addr), &desired)
        .await
        .expect("reconcile");
    assert_server_has(&target(addr), &desired).await;
}
