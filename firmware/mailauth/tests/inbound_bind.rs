//! SPF, DKIM and DMARC checks of inbound mail against a real BIND 9
//! (`named`) that serves the sender domains' records, as a resolver on the
//! internet would find them.
//!
//! Needs the Debian package bind9; fails (does not skip) when `named` is
//! missing. BIND runs in the foreground (`named -g`) with its configuration
//! and zone in a temporary directory. Debian ships an AppArmor profile for
//! /usr/sbin/named that only allows /etc/bind and /var/cache/bind; where it
//! is enforced, point TMPDIR at a directory under /var/cache/bind.

mod common;

use std::fs;
use std::net::{IpAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use testsupport::dns::{Named, Zone};
use mailauth::{keygen, Algorithm, DkimKeyInfo, MessageSource, Signer, Verdict, Verifier, CHECK_DEADLINE, MAX_VERIFY_SIZE};

/// The name this server reports results under (RFC 8601 2.5).
const AUTHSERV_ID: &str = "mx.receiver.test";
/// The domain signing with RSA; SPF allows 127.0.0.1 only; DMARC p=reject.
const RSA_DOMAIN: &str = "example.test";
/// The domain signing with Ed25519, same SPF and DMARC.
const ED_DOMAIN: &str = "edmail.test";
/// In SPF.
const GOOD_IP: &str = "127.0.0.1";
/// Not in SPF (TEST-NET-1, RFC 5737).
const BAD_IP: &str = "192.0.2.1";

/// The zone `test.`, so that named is authoritative for every name the
/// checks look up, including the DMARC tree walk's `_dmarc.test`
/// (RFC 9989 4.10), which must get NXDOMAIN rather than REFUSED.
fn zone(keys: &[DkimKeyInfo]) -> String {
    let mut z = String::from(
        "$TTL 300\n\
         @ IN SOA ns1.test. hostmaster.test. 1 3600 600 604800 60\n\
         @ IN NS ns1.test.\n\
         ns1 IN A 127.0.0.1\n",
    );
    for domain in [RSA_DOMAIN, ED_DOMAIN] {
        z.push_str(&format!("{domain}. IN TXT \"v=spf1 ip4:{GOOD_IP} -all\"\n"));
        z.push_str(&format!("_dmarc.{domain}. IN TXT \"v=DMARC1; p=reject\"\n"));
    }
    for k in keys {
        // The line keygen's caller would paste into a zone file.
        z.push_str(&k.zone_line());
        z.push('\n');
    }
    z
}

/// Starts named on a free port with the zone `test` holding every
/// domain's records.
fn start_named(dir: &Path, keys: &[DkimKeyInfo]) -> Named {
    let text = zone(keys);
    testsupport::dns::start(dir, &[], &[Zone { name: "test", text: &text, update_key: None }])
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test IP")
}

/// The header field is well formed: its name, the authserv-id, CRLF at the
/// end, and every further line a continuation (RFC 5322 2.2.3).
fn assert_well_formed(v: &Verdict) {
    let h = &v.header;
    assert!(h.starts_with(&format!("Authentication-Results: {AUTHSERV_ID};")), "{h}");
    assert!(h.ends_with("\r\n"), "{h:?}");
    for line in h.trim_end_matches("\r\n").split("\r\n").skip(1) {
        assert!(line.starts_with('\t'), "unfolded line {line:?} in {h:?}");
    }
}

/// The result `method=result` appears in the header, as a whole word.
fn has(v: &Verdict, result: &str) -> bool {
    v.header.split(|c: char| c.is_whitespace() || c == ';').any(|w| w == result)
}

fn show(v: &Verdict) -> String {
    format!("{}\n{}", v.summary, v.header)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spf_dkim_dmarc_against_bind() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = dir.path().join("store");
    fs::create_dir(&store).expect("store dir");
    let rsa = keygen(&store, RSA_DOMAIN, "mf2025", Algorithm::RsaSha256).expect("rsa keygen");
    let ed = keygen(&store, ED_DOMAIN, "ed2025", Algorithm::Ed25519Sha256).expect("ed25519 keygen");
    let named = start_named(dir.path(), &[rsa, ed]);
    let verifier = Verifier::new(Some(named.addr)).expect("verifier");
    let rsa_signer = Signer::load(&store, RSA_DOMAIN).expect("load").expect("a key");
    let ed_signer = Signer::load(&store, ED_DOMAIN).expect("load").expect("a key");
    let alice = format!("alice@{RSA_DOMAIN}");
    let helo = format!("mail.{RSA_DOMAIN}");

    // Signed by our Signer, sent from an address SPF allows: all pass.
    let msg = message(&alice, "bob@receiver.test", "Hello", "Signed and from the right place.");
    let signed = prepend(&rsa_signer.sign(&msg).expect("sign"), &msg);
    let v = verifier.check(ip(GOOD_IP), &helo, &alice, &signed, AUTHSERV_ID).await;
    assert_well_formed(&v);
    assert!(has(&v, "spf=pass") && has(&v, "dkim=pass") && has(&v, "dmarc=pass"), "{}", show(&v));
    assert!(v.header.contains(&format!("header.d={RSA_DOMAIN}")) && v.header.contains("header.s=mf2025"), "{}", show(&v));
    assert!(v.header.contains(&format!("smtp.mailfrom={alice}")) && v.header.contains(&format!("header.from={RSA_DOMAIN}")), "{}", show(&v));
    assert!(!v.dmarc_policy_reject);
    assert_eq!(v.summary, "spf=pass dkim=pass dmarc=pass");

    // Unsigned, from an address SPF does not allow: DMARC fails and the
    // domain's policy is reject.
    let unsigned = message(&alice, "bob@receiver.test", "Forged", "Not from us.");
    let v = verifier.check(ip(BAD_IP), "forger.invalid", &alice, &unsigned, AUTHSERV_ID).await;
    assert_well_formed(&v);
    assert!(has(&v, "spf=fail") && has(&v, "dkim=none") && has(&v, "dmarc=fail"), "{}", show(&v));
    assert!(v.dmarc_policy_reject, "{}", show(&v));
    assert!(v.summary.starts_with("spf=fail dkim=none dmarc=fail") && v.summary.contains("p=reject"), "{}", v.summary);

    // A body changed after signing: the signature fails; SPF still aligns.
    let tampered = tamper(&signed, "right place", "wrong place");
    let v = verifier.check(ip(GOOD_IP), &helo, &alice, &tampered, AUTHSERV_ID).await;
    assert_well_formed(&v);
    assert!(has(&v, "dkim=fail") && v.header.contains("(body hash did not verify)"), "{}", show(&v));
    assert!(has(&v, "spf=pass") && has(&v, "dmarc=pass") && !v.dmarc_policy_reject, "{}", show(&v));

    // A signed header changed: the signature itself does not verify.
    let text = String::from_utf8(signed.clone()).expect("UTF-8");
    let subject_changed = text.replacen("Subject: Hello", "Subject: Hello!", 1).into_bytes();
    let v = verifier.check(ip(GOOD_IP), &helo, &alice, &subject_changed, AUTHSERV_ID).await;
    assert!(has(&v, "dkim=fail") && v.header.contains("(signature did not verify)"), "{}", show(&v));

    // Tampered and from a bad address: nothing aligned passes, reject.
    let v = verifier.check(ip(BAD_IP), &helo, &alice, &tampered, AUTHSERV_ID).await;
    assert!(has(&v, "spf=fail") && has(&v, "dkim=fail") && has(&v, "dmarc=fail") && v.dmarc_policy_reject, "{}", show(&v));

    // Ed25519, from an address SPF does not allow: the aligned DKIM pass
    // alone makes DMARC pass (RFC 7489 4.2), as for mail forwarded on.
    let bea = format!("bea@{ED_DOMAIN}");
    let msg = message(&bea, "bob@receiver.test", "Via a forwarder", "Signed with Ed25519.");
    let signed = prepend(&ed_signer.sign(&msg).expect("sign"), &msg);
    let v = verifier.check(ip(BAD_IP), "forwarder.invalid", &bea, &signed, AUTHSERV_ID).await;
    assert_well_formed(&v);
    assert!(has(&v, "spf=fail") && has(&v, "dkim=pass") && has(&v, "dmarc=pass"), "{}", show(&v));
    assert!(v.header.contains("header.a=ed25519-sha256"), "{}", show(&v));
    assert!(!v.dmarc_policy_reject);

    // A signature by a domain other than the author's passes DKIM but does
    // not align (RFC 7489 3.1.1): DMARC fails for the author domain.
    let msg = message(&alice, "bob@receiver.test", "Signed by someone else", "Third party.");
    let signed = prepend(&ed_signer.sign(&msg).expect("sign"), &msg);
    let v = verifier.check(ip(BAD_IP), "forwarder.invalid", &alice, &signed, AUTHSERV_ID).await;
    assert!(has(&v, "dkim=pass") && has(&v, "dmarc=fail") && v.dmarc_policy_reject, "{}", show(&v));

    // The null reverse-path: SPF checks the HELO identity (RFC 7208 2.4).
    let bounce = message(&alice, "bob@receiver.test", "Undeliverable", "A bounce.");
    let v = verifier.check(ip(GOOD_IP), RSA_DOMAIN, "", &bounce, AUTHSERV_ID).await;
    assert!(has(&v, "spf=pass") && v.header.contains(&format!("smtp.helo={RSA_DOMAIN}")), "{}", show(&v));

    // A domain with no records at all: none everywhere, nothing to reject.
    let stranger = "someone@nowhere.test";
    let msg = message(stranger, "bob@receiver.test", "Hi", "No records.");
    let v = verifier.check(ip(BAD_IP), "nowhere.test", stranger, &msg, AUTHSERV_ID).await;
    assert!(has(&v, "spf=none") && has(&v, "dkim=none") && has(&v, "dmarc=none") && !v.dmarc_policy_reject, "{}", show(&v));

    // A peer's HELO cannot add header fields of its own.
    let v = verifier.check(ip(BAD_IP), "evil\r\nX-Injected: yes", "", &bounce, AUTHSERV_ID).await;
    assert_well_formed(&v);
    assert!(!v.header.contains("\r\nX-Injected"), "{}", show(&v));

    // A message the session has partly written to its spool file (after
    // its own trace header) and partly holds in memory is read from both:
    // the same verdict as for the whole message in memory.
    let msg = message(&alice, "bob@receiver.test", "Spooled", &"A long line of the body.\r\n".repeat(20_000));
    let signed = prepend(&rsa_signer.sign(&msg).expect("sign"), &msg);
    let trace = b"Received: from mail.example.test by mx.receiver.test\r\n";
    let split = signed.len() - 1234;
    let spool = dir.path().join("spool-file");
    fs::write(&spool, [&trace[..], &signed[..split]].concat()).expect("spool file");
    let source = MessageSource::spooled(spool.clone(), trace.len() as u64, (trace.len() + split) as u64, &signed[split..]);
    let v = verifier.check_source(ip(GOOD_IP), &helo, &alice, &source, AUTHSERV_ID).await.expect("readable");
    assert!(has(&v, "spf=pass") && has(&v, "dkim=pass") && has(&v, "dmarc=pass"), "{}", show(&v));
    let in_memory = verifier.check(ip(GOOD_IP), &helo, &alice, &signed, AUTHSERV_ID).await;
    assert_eq!(v.header, in_memory.header);
    // Changed in the part on disk: the body hash no longer matches.
    let mut file = fs::read(&spool).expect("read spool");
    let at = file.len() - 5000;
    file[at] = b'!';
    fs::write(&spool, &file).expect("spool file");
    let v = verifier.check_source(ip(GOOD_IP), &helo, &alice, &source, AUTHSERV_ID).await.expect("readable");
    assert!(has(&v, "dkim=fail") && v.header.contains("(body hash did not verify)"), "{}", show(&v));

    // DNS answers are kept across messages, positive and negative: with
    // BIND gone, the same checks give the same results, not temperror.
    let msg = message(&alice, "bob@receiver.test", "Hello", "Signed and from the right place.");
    let signed = prepend(&rsa_signer.sign(&msg).expect("sign"), &msg);
    drop(named);
    let v = verifier.check(ip(GOOD_IP), &helo, &alice, &signed, AUTHSERV_ID).await;
    assert_eq!(v.summary, "spf=pass dkim=pass dmarc=pass", "{}", show(&v));
    let v = verifier.check(ip(BAD_IP), "nowhere.test", stranger, &message(stranger, "bob@receiver.test", "Hi", "No records."), AUTHSERV_ID).await;
    assert!(has(&v, "spf=none") && has(&v, "dmarc=none"), "{}", show(&v));
}

/// An SMTPUTF8 sender is written in UTF-8 (RFC 8616 3), not as '?'.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_smtputf8_sender_is_reported_in_utf8() {
    let dir = tempfile::tempdir().expect("temp dir");
    let named = start_named(dir.path(), &[]);
    let verifier = Verifier::new(Some(named.addr)).expect("verifier");
    let jurgen = format!("jürgen@{RSA_DOMAIN}");
    let msg = message(&jurgen, "bob@receiver.test", "Grüße", "UTF-8 throughout.");
    let v = verifier.check(ip(GOOD_IP), "mail.example.test", &jurgen, &msg, AUTHSERV_ID).await;
    assert!(v.header.contains(&format!("smtp.mailfrom={jurgen}")), "{}", show(&v));
    assert!(!v.header.contains('?'), "{}", show(&v));
    assert!(has(&v, "spf=pass"), "{}", show(&v));
    drop(named);
}

/// A message over MAX_VERIFY_SIZE is not DKIM-verified; its DMARC failure
/// is then not a reason to reject, since its signature might have passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_messages_are_not_dkim_verified() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = dir.path().join("store");
    fs::create_dir(&store).expect("store dir");
    let ed = keygen(&store, ED_DOMAIN, "ed2025", Algorithm::Ed25519Sha256).expect("keygen");
    let named = start_named(dir.path(), &[ed]);
    let verifier = Verifier::new(Some(named.addr)).expect("verifier");
    let signer = Signer::load(&store, ED_DOMAIN).expect("load").expect("a key");
    let bea = format!("bea@{ED_DOMAIN}");

    let line = "x".repeat(76);
    let body = vec![line.as_str(); MAX_VERIFY_SIZE / 78 + 1].join("\r\n");
    let msg = message(&bea, "bob@receiver.test", "Big", &body);
    assert!(msg.len() > MAX_VERIFY_SIZE);
    let signed = prepend(&signer.sign(&msg).expect("sign"), &msg);

    let v = verifier.check(ip(BAD_IP), "forwarder.invalid", &bea, &signed, AUTHSERV_ID).await;
    assert_well_formed(&v);
    assert!(has(&v, "spf=fail") && has(&v, "dkim=policy") && has(&v, "dmarc=fail"), "{}", show(&v));
    assert!(!v.dmarc_policy_reject, "{}", show(&v));
    assert!(v.summary.contains("not verified"), "{}", v.summary);

    // Unsigned and oversized: plainly dkim=none, and DMARC may reject.
    let unsigned = message(&bea, "bob@receiver.test", "Big", &body);
    let v = verifier.check(ip(BAD_IP), "forwarder.invalid", &bea, &unsigned, AUTHSERV_ID).await;
    assert!(has(&v, "dkim=none") && has(&v, "dmarc=fail") && v.dmarc_policy_reject, "{}", show(&v));
    drop(named);
}

/// A DNS server that never answers: the check still ends in bounded time,
/// with temperror results and no request to reject.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_dns_server_gives_temperror_in_bounded_time() {
    // Bound but never read: queries go unanswered (TCP to it is refused).
    let silent = UdpSocket::bind("127.0.0.1:0").expect("bind UDP");
    let verifier = Verifier::new(Some(silent.local_addr().expect("addr"))).expect("verifier");
    let alice = format!("alice@{RSA_DOMAIN}");
    let msg = message(&alice, "bob@receiver.test", "Hello", "Body.");
    let started = Instant::now();
    let v = verifier.check(ip(GOOD_IP), "mail.example.test", &alice, &msg, AUTHSERV_ID).await;
    let took = started.elapsed();
    assert!(took <= CHECK_DEADLINE + Duration::from_secs(2), "took {took:?}");
    assert_well_formed(&v);
    assert!(has(&v, "spf=temperror") && has(&v, "dmarc=temperror"), "{}", show(&v));
    assert!(!v.dmarc_policy_reject);
    eprintln!("silent DNS server: check took {took:?}");

    // The resolver was probed and found silent: the next checks give
    // temperror without asking it.
    assert!(verifier.resolver_down(), "a silent resolver is noticed");
    let started = Instant::now();
    for _ in 0..3 {
        let v = verifier.check(ip(GOOD_IP), "mail.example.test", &alice, &msg, AUTHSERV_ID).await;
        assert!(has(&v, "spf=temperror") && v.summary.contains("resolver not answering"), "{}", show(&v));
    }
    let took = started.elapsed();
    // Generous: three checks that waited on DNS would take minutes.
    assert!(took < CHECK_DEADLINE, "took {took:?}");

    // It answers again (BIND on the same port): the probes notice and
    // the checks resume.
    let port = silent.local_addr().expect("addr").port();
    drop(silent);
    let dir = tempfile::tempdir().expect("temp dir");
    let text = zone(&[]);
    let named = testsupport::dns::start_on(dir.path(), port, &[], &[Zone { name: "test", text: &text, update_key: None }]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while verifier.resolver_down() {
        assert!(Instant::now() < deadline, "the resolver's return was not noticed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let v = verifier.check(ip(GOOD_IP), "mail.example.test", &alice, &msg, AUTHSERV_ID).await;
    assert!(has(&v, "spf=pass"), "{}", show(&v));
    drop(named);
}
