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
use std::time::Duration;

use base64::Engine;
use mail_auth::common::crypto::CryptoError;
use mail_auth::dkim::DkimError;
use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::dmarc::Policy;
use mail_auth::hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{
    AuthenticatedMessage, DkimOutput, DkimResult, DmarcOutput, DmarcResult, DnsError, MessageAuthenticator, SpfOutput, SpfResult,
};

use crate::auth_results::{self, ResInfo};
use crate::Error;

/// Messages larger than this are not DKIM-verified: the body would have to
/// be hashed once for each canonicalisation and hash the signatures ask for.
/// Such a message gets `dkim=policy` when it carries signatures (RFC 8601
/// 2.7.1: "some aspect of the signature ... was not acceptable to the
/// ADMD") and `dkim=none` when it carries none; SPF is checked as usual.
/// DMARC is then evaluated on SPF alone, and a DMARC failure is not turned
/// into a request to reject, since a signature that was not checked might
/// have passed.
pub const MAX_VERIFY_SIZE: usize = 16 * 1024 * 1024;
/// RFC 6376 6.1: a verifier MAY limit the number of signatures it tries, to
/// bound the DNS queries and public-key operations one message can cause.
pub const MAX_SIGNATURES: usize = 5;
/// How long one DNS query may take before it is retried (the resolv.conf
/// default).
pub const DNS_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a DNS query is tried.
pub const DNS_ATTEMPTS: usize = 2;
/// RFC 7208 4.6.4: an SPF check may be given a time limit of no less than
/// 20 seconds. DKIM runs at the same time with the same limit.
const SPF_DKIM_DEADLINE: Duration = Duration::from_secs(20);
/// DMARC needs the SPF and DKIM results, so it runs after them.
const DMARC_DEADLINE: Duration = Duration::from_secs(10);
/// The longest a whole check can take: the SMTP session waits for it before
/// it answers the message's final dot.
pub const CHECK_DEADLINE: Duration = Duration::from_secs(SPF_DKIM_DEADLINE.as_secs() + DMARC_DEADLINE.as_secs());
/// RFC 6008 2: header.b holds enough of the signature to tell it from the
/// others, at least 8 characters.
const HEADER_B_LEN: usize = 8;

/// Checks inbound mail against the sender domains' DNS records.
#[derive(Clone)]
pub struct Verifier {
    auth: MessageAuthenticator,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").finish_non_exhaustive()
    }
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
}

impl Verifier {
    /// A verifier that asks the DNS server at `dns` (tests run one on
    /// loopback), or the servers in /etc/resolv.conf when `dns` is None.
    /// The server must resolve recursively for real mail.
    pub fn new(dns: Option<SocketAddr>) -> Result<Verifier, Error> {
        use mail_auth::hickory_resolver::system_conf::read_system_conf;
        let (config, mut opts) = match dns {
            Some(addr) => {
                let mut server = NameServerConfig::udp_and_tcp(addr.ip());
                for c in &mut server.connections {
                    c.port = addr.port();
                }
                (ResolverConfig::from_parts(None, vec![], vec![server]), ResolverOpts::default())
            }
            None => read_system_conf().map_err(|e| Error::Resolver(format!("/etc/resolv.conf: {e}")))?,
        };
        opts.timeout = DNS_TIMEOUT;
        opts.attempts = DNS_ATTEMPTS;
        let auth = MessageAuthenticator::new(config, opts).map_err(|e| Error::Resolver(e.to_string()))?;
        Ok(Verifier { auth })
    }

    /// Checks a message received from `peer_ip`, which said `helo` and gave
    /// the reverse-path `mail_from` (empty for the null path `<>`).
    /// `authserv_id` names this server in the result (RFC 8601 2.5: the
    /// host name is the usual choice). Never fails: DNS trouble becomes
    /// `temperror` results, and the whole check ends within
    /// [`CHECK_DEADLINE`].
    pub async fn check(&self, peer_ip: IpAddr, helo: &str, mail_from: &str, message: &[u8], authserv_id: &str) -> Verdict {
        let helo = helo.trim();
        let mail_from = mail_from.trim();
        let mail_from = mail_from.strip_prefix('<').and_then(|m| m.strip_suffix('>')).unwrap_or(mail_from);

        // A message too large to verify is looked at up to its body only.
        let oversize = message.len() > MAX_VERIFY_SIZE;
        let input = if oversize {
            let head = header_section(message);
            &head[..head.len().min(MAX_VERIFY_SIZE)]
        } else {
            message
        };
        let mut parsed = AuthenticatedMessage::parse(input);
        let signed = parsed.as_ref().is_some_and(|m| !m.dkim_headers.is_empty() || m.has_dkim_errors);
        if let Some(m) = parsed.as_mut() {
            m.dkim_headers.truncate(MAX_SIGNATURES);
            m.errors.truncate(MAX_SIGNATURES);
        }

        // RFC 7208 2.4: the MAIL FROM identity; for the null reverse-path,
        // the HELO identity (as postmaster@<helo>).
        let spf = async {
            let params = if mail_from.is_empty() {
                SpfParameters::verify_ehlo(peer_ip, helo, authserv_id)
            } else {
                SpfParameters::verify_mail_from(peer_ip, helo, authserv_id, mail_from)
            };
            let domain = spf_domain(helo, mail_from).to_string();
            bounded(SPF_DKIM_DEADLINE, self.auth.verify_spf(params), || SpfOutput::new(domain).with_result(SpfResult::TempError)).await
        };
        let dkim = async {
            match parsed.as_ref() {
                Some(m) if !oversize => {
                    bounded(SPF_DKIM_DEADLINE, self.auth.verify_dkim(m), || {
                        m.dkim_headers.iter().map(|h| DkimOutput::temp_err(timed_out()).with_signature(&h.header)).collect()
                    })
                    .await
                }
                _ => Vec::new(),
            }
        };
        let (spf, dkim) = tokio::join!(spf, dkim);

        let dmarc = match parsed.as_ref() {
            Some(m) => {
                // RFC 7489 4.1: the SPF-authenticated identifier is the MAIL
                // FROM domain, or the HELO domain for the null path.
                let params = DmarcParameters::new(m, &dkim, spf_domain(helo, mail_from), &spf);
                let author = m.from.first().and_then(|a| a.rsplit_once('@')).map(|(_, d)| d.to_string()).unwrap_or_default();
                bounded(DMARC_DEADLINE, self.auth.verify_dmarc(params), || {
                    DmarcOutput::default().with_domain(&author).with_spf_result(DmarcResult::TempError(timed_out())).with_dkim_result(DmarcResult::TempError(timed_out()))
                })
                .await
            }
            None => DmarcOutput::default(),
        };

        let dmarc_result = dmarc.result();
        let dmarc_failed = matches!(dmarc_result, DmarcResult::Fail(_));
        let unverified_signatures = oversize && signed;
        let dmarc_policy_reject = dmarc_failed && dmarc.policy() == Policy::Reject && !unverified_signatures;

        let mut results = vec![spf_resinfo(&spf, peer_ip, helo, mail_from)];
        let dkim_results = dkim_resinfos(&dkim, oversize, signed);
        results.extend(dkim_results.iter().cloned());
        results.push(dmarc_resinfo(&dmarc, &dmarc_result));
        let header = auth_results::header(authserv_id, &results);

        let dkim_words: Vec<&str> = dkim_results.iter().map(|r| r.result).collect();
        let mut summary = format!("spf={} dkim={} dmarc={}", spf_keyword(spf.result()), dkim_words.join(","), dmarc_keyword(&dmarc_result));
        if dmarc_failed {
            summary.push_str(&format!(" (p={})", dmarc.policy()));
        }
        if unverified_signatures {
            summary.push_str(&format!(" (DKIM not verified: message over {MAX_VERIFY_SIZE} bytes)"));
        }
        tracing::debug!(peer = %peer_ip, %summary, "message authentication");
        Verdict { header, dmarc_policy_reject, summary }
    }
}

/// Runs `work` for at most `limit`; on time-out returns `on_timeout()`.
async fn bounded<T>(limit: Duration, work: impl Future<Output = T>, on_timeout: impl FnOnce() -> T) -> T {
    match tokio::time::timeout(limit, work).await {
        Ok(v) => v,
        Err(_) => on_timeout(),
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

/// The header section of a message, with the blank line that ends it (RFC
/// 5322 2.1); the whole message when it has no body.
pub(crate) fn header_section(message: &[u8]) -> &[u8] {
    if message.starts_with(b"\r\n") {
        return &message[..2];
    }
    match message.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(p) => &message[..p + 4],
        None => message,
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
fn dkim_resinfos(outputs: &[DkimOutput], oversize: bool, signed: bool) -> Vec<ResInfo> {
    if outputs.is_empty() {
        return vec![if oversize && signed {
            ResInfo::new("dkim", "policy").reason(format!("message over {MAX_VERIFY_SIZE} bytes; signatures not verified"))
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
    fn header_section_ends_at_the_blank_line() {
        assert_eq!(header_section(b"A: b\r\n\r\nbody\r\n\r\nmore"), b"A: b\r\n\r\n");
        assert_eq!(header_section(b"\r\nbody"), b"\r\n");
        assert_eq!(header_section(b"A: b\r\n"), b"A: b\r\n");
        assert_eq!(header_section(b""), b"");
    }

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
        assert_eq!(CHECK_DEADLINE, SPF_DKIM_DEADLINE + DMARC_DEADLINE);
        // RFC 7208 4.6.4: at least 20 seconds for SPF.
        assert!(SPF_DKIM_DEADLINE >= Duration::from_secs(20));
    }
}
