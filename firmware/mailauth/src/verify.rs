//! SPF, DKIM and DMARC checks of mail received from other servers, and the
//! Authentication-Results header field that reports them.
//!
//! DMARC is evaluated by mail-auth, which follows RFC 9989 (the revision of
//! RFC 7489): the policy is found by a DNS tree walk instead of the public
//! suffix list, `pct=` is ignored, and `t=y` lowers the policy one step
//! (reject to quarantine). SPF evaluation stops after 10 DNS-querying
//! terms or 20 seconds (RFC 7208 4.6.4).

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use mail_auth::common::crypto::{CryptoError, HashAlgorithm};
use mail_auth::common::verify::VerifySignature;
use mail_auth::dkim::DkimError;
use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::dmarc::Policy;
use mail_auth::hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use mail_auth::hickory_resolver::net::runtime::TokioRuntimeProvider;
use mail_auth::hickory_resolver::net::NetError;
use mail_auth::hickory_resolver::proto::rr::{Name, RecordType};
use mail_auth::hickory_resolver::TokioResolver;
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{
    AuthenticatedMessage, DkimOutput, DkimResult, DmarcOutput, DmarcResult, DnsError, MessageAuthenticator, SpfOutput, SpfResult,
};
use tokio::sync::watch;

use crate::auth_results::{self, ResInfo};
use crate::source::{BodyHashers, MessageSource, MAX_HEADER_SECTION};
use crate::Error;

/// Messages larger than this are not DKIM-verified: hashing the body costs
/// CPU time in proportion to its size, once for each canonicalisation and
/// hash the signatures ask for (memory does not grow: the body is read in
/// pieces). Such a message gets `dkim=policy` when it carries signatures
/// (RFC 8601 2.7.1: "some aspect of the signature ... was not acceptable
/// to the ADMD") and `dkim=none` when it carries none; SPF is checked as
/// usual. DMARC is then evaluated on SPF alone, and a DMARC failure is not
/// turned into a request to reject, since a signature that was not checked
/// might have passed. The same goes for a header section over
/// [`MAX_HEADER_SECTION`].
pub const MAX_VERIFY_SIZE: usize = 16 * 1024 * 1024;
/// RFC 6376 6.1: a verifier MAY limit the number of signatures it tries, to
/// bound the DNS queries and public-key operations one message can cause.
pub const MAX_SIGNATURES: usize = 5;
/// How long one DNS query may take before it is sent again. A recursive
/// resolver that is still working on a name answers the repeated query
/// from its cache.
pub const DNS_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a DNS query is tried before it is a temporary error.
pub const DNS_ATTEMPTS: usize = 3;
/// DNS answers kept across messages (positive and negative, each for its
/// TTL, RFC 1035 3.2.1 and RFC 2308 5); the least recently used go first.
pub const DNS_CACHE_ENTRIES: u64 = 8192;
/// The longest an answer is kept, whatever its TTL.
const DNS_MAX_POSITIVE_TTL: Duration = Duration::from_secs(24 * 3600);
/// RFC 2308 5: negative answers SHOULD NOT be kept longer than one to three
/// hours.
const DNS_MAX_NEGATIVE_TTL: Duration = Duration::from_secs(3600);
/// RFC 7208 4.6.4: an SPF check may be given a time limit of no less than
/// 20 seconds. The body is hashed meanwhile.
const SPF_DEADLINE: Duration = Duration::from_secs(20);
/// DMARC needs the SPF and DKIM results, so it runs after them; DKIM's key
/// lookups leave it at least this much of the whole check's time.
const DMARC_RESERVE: Duration = Duration::from_secs(5);
/// The longest a whole check can take: the SMTP session waits for it before
/// it answers the message's final dot (RFC 5321 4.5.3.2.6: the client
/// waits 10 minutes for that answer).
pub const CHECK_DEADLINE: Duration = Duration::from_secs(30);
/// A lookup still unanswered after this long makes the verifier ask the
/// resolver something it answers at once if it answers at all (a probe
/// costs one query; a slow sender domain only costs that).
const SLOW_AFTER: Duration = Duration::from_secs(1);
/// How long a probe waits for the resolver's answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Probes unanswered in a row before the resolver is taken to be down:
/// the checks then give temperror at once, without asking it, until a
/// probe is answered again.
pub const DOWN_AFTER: u32 = 2;
/// How often a resolver that is down is probed.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// RFC 6008 2: header.b holds enough of the signature to tell it from the
/// others, at least 8 characters.
const HEADER_B_LEN: usize = 8;
/// resolv.conf(5): at most MAXNS (3) name servers are used.
const MAX_NAME_SERVERS: usize = 3;

/// Checks inbound mail against the sender domains' DNS records.
#[derive(Clone)]
pub struct Verifier {
    auth: Arc<MessageAuthenticator>,
    health: Arc<Health>,
    servers: Vec<SocketAddr>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").field("servers", &self.servers).finish_non_exhaustive()
    }
}

/// Whether the resolver answers; see [`DOWN_AFTER`].
struct Health {
    /// true while the resolver is taken to be down.
    down: watch::Sender<bool>,
    /// A probe task is running.
    probing: AtomicBool,
    /// Asks without a cache, once, so that only the server can answer.
    probe: TokioResolver,
}

/// The outcome of [`Verifier::check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The complete `Authentication-Results:` header field (RFC 8601),
    /// folded, ending in CRLF, to be put in front of the message.
    pub header: String,
    /// DMARC failed and the author domain asks receivers to reject such
    /// mail (RFC 7489 6.3 p=reject, after sp=/np= and t= are applied).
    pub dmarc_policy_reject: bool,
    /// One line for the log, e.g. `spf=pass dkim=pass dmarc=pass`.
    pub summary: String,
    /// The byte ranges of the message's Authentication-Results fields that
    /// claim to be ours (see [`crate::forged_fields`]), to be removed.
    pub forged: Vec<std::ops::Range<usize>>,
}

/// What [`Verifier::sender_spf`] found (RFC 7208 2.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SenderSpf {
    /// The host is authorised to send for the domain.
    Pass,
    /// DNS did not answer in time (RFC 7208 2.6.6): try again later.
    TempError,
    /// Anything else: fail, softfail, neutral, none, permerror.
    NotPass,
}

/// The name servers in resolv.conf(5) text: `nameserver` lines, port 53.
pub fn resolv_conf_servers(text: &str) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        // An IPv6 address may carry a zone (fe80::1%eth0); it is not used.
        if let Some(ip) = words.next().and_then(|w| w.split('%').next()).and_then(|w| w.parse::<IpAddr>().ok()) {
            let addr = SocketAddr::new(ip, 53);
            if !out.contains(&addr) && out.len() < MAX_NAME_SERVERS {
                out.push(addr);
            }
        }
    }
    out
}

/// A resolver that asks `servers` over UDP and TCP only. DNS over TLS is
/// never used, so hickory gets an empty trust store: it would otherwise
/// load the system's CA certificates when it is built, and fail where
/// there are none.
fn resolver(servers: &[SocketAddr], opts: ResolverOpts) -> Result<TokioResolver, Error> {
    let ns = servers
        .iter()
        .map(|addr| {
            let mut server = NameServerConfig::udp_and_tcp(addr.ip());
            for c in &mut server.connections {
                c.port = addr.port();
            }
            server
        })
        .collect();
    let config = ResolverConfig::from_parts(None, vec![], ns);
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Resolver(e.to_string()))?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    TokioResolver::builder_with_config(config, TokioRuntimeProvider::default()).with_options(opts).with_tls_config(tls).build().map_err(|e| Error::Resolver(e.to_string()))
}

impl Verifier {
    /// A verifier that asks the DNS server at `dns` (tests run one on
    /// loopback), or the servers in /etc/resolv.conf when `dns` is None.
    /// The server must resolve recursively for real mail.
    pub fn new(dns: Option<SocketAddr>) -> Result<Verifier, Error> {
        let servers = match dns {
            Some(addr) => vec![addr],
            None => {
                let path = "/etc/resolv.conf";
                let text = std::fs::read_to_string(path).map_err(|e| Error::Resolver(format!("{path}: {e}")))?;
                resolv_conf_servers(&text)
            }
        };
        Verifier::with_servers(&servers)
    }

    /// A verifier that asks `servers` (at most [`MAX_NAME_SERVERS`]).
    pub fn with_servers(servers: &[SocketAddr]) -> Result<Verifier, Error> {
        let servers: Vec<SocketAddr> = servers.iter().copied().take(MAX_NAME_SERVERS).collect();
        if servers.is_empty() {
            return Err(Error::Resolver("no name server configured (inbound.dns_server, or nameserver lines in /etc/resolv.conf)".into()));
        }
        let mut opts = ResolverOpts::default();
        opts.timeout = DNS_TIMEOUT;
        opts.attempts = DNS_ATTEMPTS;
        opts.cache_size = DNS_CACHE_ENTRIES;
        opts.positive_max_ttl = Some(DNS_MAX_POSITIVE_TTL);
        opts.negative_max_ttl = Some(DNS_MAX_NEGATIVE_TTL);
        let auth = MessageAuthenticator(resolver(&servers, opts)?);
        let mut probe_opts = ResolverOpts::default();
        probe_opts.timeout = PROBE_TIMEOUT;
        probe_opts.attempts = 1;
        probe_opts.cache_size = 0;
        let probe = resolver(&servers, probe_opts)?;
        let health = Health { down: watch::Sender::new(false), probing: AtomicBool::new(false), probe };
        Ok(Verifier { auth: Arc::new(auth), health: Arc::new(health), servers })
    }

    /// The name servers asked.
    pub fn servers(&self) -> &[SocketAddr] {
        &self.servers
    }

    /// The resolver has stopped answering: checks give temperror at once.
    pub fn resolver_down(&self) -> bool {
        *self.health.down.borrow()
    }

    /// Checks a message held in memory; see [`Verifier::check_source`].
    /// Addresses may be written in UTF-8 when `mail_from` is not ASCII
    /// (only an SMTPUTF8 transaction can have such a sender).
    pub async fn check(&self, peer_ip: IpAddr, helo: &str, mail_from: &str, message: &[u8], authserv_id: &str) -> Verdict {
        let source = MessageSource::memory(message).smtputf8(!mail_from.is_ascii());
        match self.check_source(peer_ip, helo, mail_from, &source, authserv_id).await {
            Ok(v) => v,
            // Reading memory does not fail; should it, the message is
            // reported as not checked.
            Err(e) => {
                let header = auth_results::header(authserv_id, &[ResInfo::new("dkim", "temperror").reason(e.to_string())], false);
                Verdict { header, dmarc_policy_reject: false, summary: format!("not checked: {e}"), forged: Vec::new() }
            }
        }
    }

    /// Checks a message received from `peer_ip`, which said `helo` and gave
    /// the reverse-path `mail_from` (empty for the null path `<>`).
    /// `authserv_id` names this server in the result (RFC 8601 2.5: the
    /// host name is the usual choice). DNS trouble becomes `temperror`
    /// results, and the whole check ends within [`CHECK_DEADLINE`]. The
    /// message is read once, in bounded pieces: only its header section
    /// (at most [`MAX_HEADER_SECTION`] bytes) is kept while DNS is asked.
    /// Fails only when the message cannot be read.
    pub async fn check_source(&self, peer_ip: IpAddr, helo: &str, mail_from: &str, source: &MessageSource<'_>, authserv_id: &str) -> Result<Verdict, Error> {
        let started = Instant::now();
        let helo = helo.trim();
        let mail_from = mail_from.trim();
        let mail_from = mail_from.strip_prefix('<').and_then(|m| m.strip_suffix('>')).unwrap_or(mail_from);
        let utf8 = source.is_smtputf8();
        let down = self.health.down.subscribe();

        let head = source.read_head().await.map_err(Error::Read)?;
        let forged = auth_results::forged_fields(&head.bytes, authserv_id);
        // A message too large to verify is looked at up to its body only.
        let skip = if !head.complete {
            Some(format!("header section over {MAX_HEADER_SECTION} bytes"))
        } else if source.len() > MAX_VERIFY_SIZE as u64 {
            Some(format!("message over {MAX_VERIFY_SIZE} bytes"))
        } else {
            None
        };
        let mut parsed = AuthenticatedMessage::parse(&head.bytes);
        let signed = parsed.as_ref().is_some_and(|m| !m.dkim_headers.is_empty() || m.has_dkim_errors);
        if let Some(m) = parsed.as_mut() {
            m.dkim_headers.truncate(MAX_SIGNATURES);
            m.errors.truncate(MAX_SIGNATURES);
        }
        let to_verify = parsed.as_ref().filter(|_| skip.is_none());

        // RFC 7208 2.4: the MAIL FROM identity; for the null reverse-path,
        // the HELO identity (as postmaster@<helo>).
        let spf = async {
            let params = if mail_from.is_empty() {
                SpfParameters::verify_ehlo(peer_ip, helo, authserv_id)
            } else {
                SpfParameters::verify_mail_from(peer_ip, helo, authserv_id, mail_from)
            };
            let domain = spf_domain(helo, mail_from).to_string();
            self.bounded(SPF_DEADLINE, &down, self.auth.verify_spf(params), || SpfOutput::new(domain).with_result(SpfResult::TempError)).await
        };
        // RFC 6376 3.7: one body hash per (canonicalisation, hash, l=),
        // computed while SPF waits on DNS; the signatures' keys and the
        // author domain's policy are asked for meanwhile, so that DKIM and
        // DMARC find them in the cache.
        let body = async {
            let m = to_verify?;
            if *down.borrow() {
                return None;
            }
            let wanted = m.body_hashes.iter().map(|(c, h, l, _)| (*c, *h, *l));
            let prefetch = async {
                let mut names: Vec<String> = m.dkim_headers.iter().map(|h| h.header.domain_key()).collect();
                if let Some((_, d)) = m.from.first().and_then(|a| a.rsplit_once('@')) {
                    names.push(format!("_dmarc.{d}."));
                }
                let lookups = names.iter().map(|n| self.auth.txt_raw_lookup(n.as_str()));
                self.bounded(SPF_DEADLINE, &down, join_all(lookups), || ()).await;
            };
            let (hashed, ()) = tokio::join!(source.hash_body(head.bytes.len() as u64, BodyHashers::new(wanted)), prefetch);
            Some(hashed.map(BodyHashers::finish))
        };
        let (spf, hashes) = tokio::join!(spf, body);

        let mut read_error = None;
        if let (Some(m), Some(hashes)) = (parsed.as_mut(), hashes) {
            match hashes {
                Ok(hashes) => {
                    for (c, h, l, bh) in &mut m.body_hashes {
                        if let Some((_, v)) = hashes.iter().find(|(k, _)| *k == (*c, *h, *l)) {
                            *bh = v.clone();
                        }
                    }
                }
                Err(e) => read_error = Some(e),
            }
        }
        if let Some(e) = &read_error {
            tracing::warn!(error = %e, "cannot read a message back for its DKIM check");
        }
        let left = |reserve: Duration| CHECK_DEADLINE.saturating_sub(started.elapsed()).saturating_sub(reserve);
        let dkim = match parsed.as_ref() {
            Some(m) if skip.is_none() && read_error.is_none() => {
                let fallback = || m.dkim_headers.iter().map(|h| DkimOutput::temp_err(timed_out()).with_signature(&h.header)).collect();
                if hashes_done(m) {
                    self.bounded(left(DMARC_RESERVE), &down, self.auth.verify_dkim(m), fallback).await
                } else {
                    fallback()
                }
            }
            Some(m) if skip.is_none() => m.dkim_headers.iter().map(|h| DkimOutput::temp_err(mail_auth::Error::Io("cannot read the message".into())).with_signature(&h.header)).collect(),
            _ => Vec::new(),
        };

        let dmarc = match parsed.as_ref() {
            Some(m) => {
                // RFC 7489 4.1: the SPF-authenticated identifier is the MAIL
                // FROM domain, or the HELO domain for the null path.
                let params = DmarcParameters::new(m, &dkim, spf_domain(helo, mail_from), &spf);
                let author = m.from.first().and_then(|a| a.rsplit_once('@')).map(|(_, d)| d.to_string()).unwrap_or_default();
                self.bounded(left(Duration::ZERO), &down, self.auth.verify_dmarc(params), || {
                    DmarcOutput::default().with_domain(&author).with_spf_result(DmarcResult::TempError(timed_out())).with_dkim_result(DmarcResult::TempError(timed_out()))
                })
                .await
            }
            None => DmarcOutput::default(),
        };

        let dmarc_result = dmarc.result();
        let dmarc_failed = matches!(dmarc_result, DmarcResult::Fail(_));
        let unverified_signatures = skip.is_some() && signed;
        let dmarc_policy_reject = dmarc_failed && dmarc.policy() == Policy::Reject && !unverified_signatures;

        let mut results = vec![spf_resinfo(&spf, peer_ip, helo, mail_from)];
        let dkim_results = dkim_resinfos(&dkim, skip.as_deref(), signed);
        results.extend(dkim_results.iter().cloned());
        results.push(dmarc_resinfo(&dmarc, &dmarc_result));
        let header = auth_results::header(authserv_id, &results, utf8);

        let dkim_words: Vec<&str> = dkim_results.iter().map(|r| r.result).collect();
        let mut summary = format!("spf={} dkim={} dmarc={}", spf_keyword(spf.result()), dkim_words.join(","), dmarc_keyword(&dmarc_result));
        if dmarc_failed {
            summary.push_str(&format!(" (p={})", dmarc.policy()));
        }
        if let (true, Some(why)) = (unverified_signatures, &skip) {
            summary.push_str(&format!(" (DKIM not verified: {why})"));
        }
        if self.resolver_down() {
            summary.push_str(" (resolver not answering)");
        }
        tracing::debug!(peer = %peer_ip, %summary, "message authentication");
        Ok(Verdict { header, dmarc_policy_reject, summary, forged })
    }

    /// Checks only SPF for the MAIL FROM identity (RFC 7208 2.4), with the
    /// same cache, deadline and resolver watch as [`Verifier::check`].
    pub async fn sender_spf(&self, peer_ip: IpAddr, helo: &str, mail_from: &str, authserv_id: &str) -> SenderSpf {
        let down = self.health.down.subscribe();
        let params = SpfParameters::verify_mail_from(peer_ip, helo.trim(), authserv_id, mail_from);
        let out = self.bounded(SPF_DEADLINE, &down, self.auth.verify_spf(params), || SpfOutput::new(String::new()).with_result(SpfResult::TempError)).await;
        match out.result() {
            SpfResult::Pass => SenderSpf::Pass,
            SpfResult::TempError => SenderSpf::TempError,
            _ => SenderSpf::NotPass,
        }
    }

    /// Runs `work` for at most `limit`, and not at all or no longer once
    /// the resolver is down; then returns `fallback()`. A lookup that is
    /// slow has the resolver probed.
    async fn bounded<T>(&self, limit: Duration, down: &watch::Receiver<bool>, work: impl Future<Output = T>, fallback: impl FnOnce() -> T) -> T {
        let mut down = down.clone();
        let work = async {
            tokio::pin!(work);
            tokio::select! {
                v = &mut work => return v,
                _ = tokio::time::sleep(SLOW_AFTER) => self.health.suspect(),
            }
            work.await
        };
        tokio::select! {
            biased;
            _ = down.wait_for(|d| *d) => fallback(),
            r = tokio::time::timeout(limit, work) => r.unwrap_or_else(|_| fallback()),
        }
    }
}

/// Every body hash a message's signatures need has been computed.
fn hashes_done(m: &AuthenticatedMessage<'_>) -> bool {
    m.body_hashes.iter().all(|(_, h, _, bh)| bh.len() == if *h == HashAlgorithm::Sha1 { 20 } else { 32 })
}

/// Awaits every future of `futs`, all at once; their outputs are dropped.
async fn join_all<F: Future>(futs: impl Iterator<Item = F>) {
    let mut futs: Vec<Option<std::pin::Pin<Box<F>>>> = futs.map(|f| Some(Box::pin(f))).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for slot in &mut futs {
            if let Some(f) = slot {
                if f.as_mut().poll(cx).is_ready() {
                    *slot = None;
                } else {
                    pending = true;
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await
}

impl Health {
    /// A lookup is slow: asks the resolver something it answers at once if
    /// it is up. [`DOWN_AFTER`] unanswered probes in a row mark it down;
    /// it is then probed every [`PROBE_INTERVAL`] until it answers.
    fn suspect(self: &Arc<Health>) {
        if self.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        let health = self.clone();
        tokio::spawn(async move {
            let mut misses = 0u32;
            loop {
                if health.answers().await {
                    if *health.down.borrow() {
                        tracing::info!("DNS resolver answers again; SPF/DKIM/DMARC checks resume");
                    }
                    health.down.send_replace(false);
                    break;
                }
                misses += 1;
                if misses >= DOWN_AFTER && !*health.down.borrow() {
                    tracing::warn!(probes = misses, "DNS resolver is not answering; SPF/DKIM/DMARC checks give temperror until it answers again");
                    health.down.send_replace(true);
                }
                if *health.down.borrow() {
                    tokio::time::sleep(PROBE_INTERVAL).await;
                }
            }
            health.probing.store(false, Ordering::Release);
        });
    }

    /// One query for the root's NS records, which a recursive resolver has
    /// cached and any server answers one way or another (an error code is
    /// an answer too).
    async fn answers(&self) -> bool {
        match tokio::time::timeout(PROBE_TIMEOUT * 2, self.probe.lookup(Name::root(), RecordType::NS)).await {
            Ok(Ok(_)) | Ok(Err(NetError::Dns(_))) => true,
            Ok(Err(_)) | Err(_) => false,
        }
    }
}

fn timed_out() -> mail_auth::Error {
    mail_auth::Error::Dns(DnsError::Resolver("timed out".into()))
}

/// The domain SPF checks: the MAIL FROM domain, or HELO for the null path.
fn spf_domain<'a>(helo: &'a str, mail_from: &'a str) -> &'a str {
    if mail_from.is_empty() {
        helo
    } else {
        mail_from.rsplit_once('@').map_or(helo, |(_, d)| d)
    }
}

/// RFC 8601 2.7.2 result names for SPF (RFC 7208 2.6).
fn spf_keyword(r: SpfResult) -> &'static str {
    match r {
        SpfResult::Pass => "pass",
        SpfResult::Fail => "fail",
        SpfResult::SoftFail => "softfail",
        SpfResult::Neutral => "neutral",
        SpfResult::TempError => "temperror",
        SpfResult::PermError => "permerror",
        SpfResult::None => "none",
    }
}

fn spf_resinfo(spf: &SpfOutput, ip: IpAddr, helo: &str, mail_from: &str) -> ResInfo {
    let d = spf.domain();
    // RFC 7208 2.6 says what each result means.
    let reason = match spf.result() {
        SpfResult::Pass => format!("domain of {d} designates {ip} as permitted sender"),
        SpfResult::Fail => format!("domain of {d} does not designate {ip} as permitted sender"),
        SpfResult::SoftFail => format!("domain of {d} says {ip} is probably not a permitted sender"),
        SpfResult::Neutral => format!("domain of {d} makes no assertion about {ip}"),
        SpfResult::None => format!("no SPF record for {d}"),
        SpfResult::TempError => format!("DNS error or time-out looking up SPF for {d}"),
        SpfResult::PermError => format!("SPF record of {d} cannot be used"),
    };
    let r = ResInfo::new("spf", spf_keyword(spf.result())).reason(reason);
    // RFC 8601 2.7.2: smtp.mailfrom for the MAIL FROM identity, smtp.helo
    // when HELO was the identity checked.
    if mail_from.is_empty() {
        r.prop("smtp.helo", helo)
    } else {
        r.prop("smtp.mailfrom", mail_from)
    }
}

/// One dkim result per signature tried (RFC 8601 2.7.1).
/// `skip`: why the signatures were not verified.
fn dkim_resinfos(outputs: &[DkimOutput], skip: Option<&str>, signed: bool) -> Vec<ResInfo> {
    if outputs.is_empty() {
        return vec![if let (Some(why), true) = (skip, signed) {
            ResInfo::new("dkim", "policy").reason(format!("{why}; signatures not verified"))
        } else {
            ResInfo::new("dkim", "none").reason("message not signed")
        }];
    }
    outputs
        .iter()
        .take(MAX_SIGNATURES)
        .map(|o| {
            let (result, reason) = match o.result() {
                DkimResult::Pass => ("pass", None),
                // RFC 6376 6.1.3: a body hash that does not match is a
                // failed verification (PERMFAIL "body hash did not
                // verify"); mail-auth reports it as neutral, as OpenDKIM
                // does, but RFC 8601 2.7.1 calls a signature that failed
                // the verification test "fail".
                DkimResult::Neutral(mail_auth::Error::Dkim(DkimError::FailedBodyHashMatch)) => ("fail", Some("body hash did not verify".to_string())),
                DkimResult::Neutral(e) => ("neutral", Some(dkim_reason(e))),
                DkimResult::Fail(e) => ("fail", Some(dkim_reason(e))),
                DkimResult::PermError(e) => ("permerror", Some(dkim_reason(e))),
                DkimResult::TempError(e) => ("temperror", Some(dkim_reason(e))),
                DkimResult::None => ("none", None),
            };
            let mut r = ResInfo::new("dkim", result);
            if let Some(reason) = reason {
                r = r.reason(reason);
            }
            if let Some(sig) = o.signature() {
                // RFC 8601 2.7.1 header.d, header.s, header.a; RFC 6008 header.b.
                let b = base64::engine::general_purpose::STANDARD.encode(&sig.b);
                r = r.prop("header.d", &sig.d).prop("header.s", &sig.s).prop("header.a", algorithm_name(sig.a));
                if b.len() >= HEADER_B_LEN {
                    r = r.prop("header.b", &b[..HEADER_B_LEN]);
                }
            }
            r
        })
        .collect()
}

fn algorithm_name(a: mail_auth::common::crypto::Algorithm) -> &'static str {
    use mail_auth::common::crypto::Algorithm;
    match a {
        Algorithm::RsaSha1 => "rsa-sha1",
        Algorithm::RsaSha256 => "rsa-sha256",
        Algorithm::Ed25519Sha256 => "ed25519-sha256",
    }
}

/// Why a signature did not pass, in RFC 6376 6.1 terms.
fn dkim_reason(e: &mail_auth::Error) -> String {
    use mail_auth::Error as E;
    match e {
        E::Crypto(CryptoError::FailedVerification | CryptoError::Library(_)) => "signature did not verify".into(),
        E::Crypto(CryptoError::IncompatibleAlgorithms) => "key type does not match the signature algorithm".into(),
        E::Dns(DnsError::RecordNotFound(_) | DnsError::InvalidRecordType) => "no key for signature".into(),
        E::Dns(DnsError::Resolver(_)) => "DNS error or time-out looking up the key".into(),
        E::ParseError => "key record cannot be parsed".into(),
        E::Dkim(DkimError::RevokedPublicKey) => "key revoked".into(),
        E::Dkim(DkimError::SignatureExpired) => "signature expired".into(),
        E::Dkim(DkimError::FailedAuidMatch) => "i= is not within d=".into(),
        E::Dkim(DkimError::SignatureLength) => "l= tag not accepted".into(),
        E::Dkim(DkimError::UnsupportedAlgorithm) => "unsupported algorithm".into(),
        E::Dkim(DkimError::UnsupportedKeyType) => "unsupported key type".into(),
        E::Dkim(DkimError::UnsupportedVersion) => "unsupported version".into(),
        E::Dkim(DkimError::UnsupportedCanonicalization) => "unsupported canonicalization".into(),
        other => other.to_string(),
    }
}

/// RFC 7489 11.2 result names for DMARC.
fn dmarc_keyword(r: &DmarcResult) -> &'static str {
    match r {
        DmarcResult::Pass => "pass",
        DmarcResult::Fail(_) => "fail",
        DmarcResult::TempError(_) => "temperror",
        DmarcResult::PermError(_) => "permerror",
        DmarcResult::None => "none",
    }
}

fn dmarc_resinfo(dmarc: &DmarcOutput, result: &DmarcResult) -> ResInfo {
    let domain = dmarc.domain();
    let mut r = ResInfo::new("dmarc", dmarc_keyword(result));
    r = match (dmarc.dmarc_record(), result) {
        (Some(_), DmarcResult::Fail(_)) => r.reason(format!("p={}; no aligned SPF or DKIM pass", dmarc.policy())),
        (Some(_), _) => r.reason(format!("p={}", dmarc.policy())),
        (None, DmarcResult::TempError(_)) => r.reason("DNS error or time-out looking up the policy"),
        (None, _) if domain.is_empty() => r.reason("no single author domain in From"),
        (None, _) => r.reason(format!("no DMARC record for {domain}")),
    };
    // RFC 7489 11.2: ptype header, property from.
    if !domain.is_empty() {
        r = r.prop("header.from", domain);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spf_identity() {
        assert_eq!(spf_domain("mx.example.test", "a@example.org"), "example.org");
        assert_eq!(spf_domain("mx.example.test", ""), "mx.example.test");
    }

    #[test]
    fn a_verifier_can_be_built_outside_a_runtime() {
        // The daemon may build it while reading its configuration, before
        // the Tokio runtime starts.
        let v = Verifier::new(Some(SocketAddr::from(([127, 0, 0, 1], 53))));
        assert!(v.is_ok(), "{v:?}");
    }

    #[test]
    fn deadlines_add_up() {
        // RFC 7208 4.6.4: at least 20 seconds for SPF, and DMARC still
        // has its reserve after it.
        assert!(SPF_DEADLINE >= Duration::from_secs(20));
        assert!(SPF_DEADLINE + DMARC_RESERVE <= CHECK_DEADLINE);
        // A query gives up well within the check.
        assert!(DNS_TIMEOUT * DNS_ATTEMPTS as u32 <= SPF_DEADLINE / 2);
        // RFC 5321 4.5.3.2.6: far below the client's 10 minutes.
        assert!(CHECK_DEADLINE <= Duration::from_secs(60));
    }

    #[test]
    fn resolv_conf() {
        let text = "# comment\nsearch example.test\nnameserver 192.0.2.53\nnameserver fe80::1%eth0\nnameserver 192.0.2.53\nnameserver bogus\nnameserver 192.0.2.1\nnameserver 192.0.2.2\n";
        let got = resolv_conf_servers(text);
        let want: Vec<SocketAddr> = vec!["192.0.2.53:53".parse().unwrap(), "[fe80::1]:53".parse().unwrap(), "192.0.2.1:53".parse().unwrap()];
        assert_eq!(got, want);
        assert!(resolv_conf_servers("").is_empty());
        assert!(matches!(Verifier::with_servers(&[]), Err(Error::Resolver(_))));
    }
}
