//! Where mail for a domain goes (RFC 5321 5.1).

use std::net::{IpAddr, SocketAddr};

use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::TokioResolver;

/// One host to try, with its addresses in the order to try them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    pub addrs: Vec<IpAddr>,
}

/// Why a domain has nowhere to deliver to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unroutable {
    /// Permanent: the domain does not exist (RFC 5321 5.1) or publishes a
    /// null MX (RFC 7505). `status` is the enhanced code for the DSN.
    Permanent { status: &'static str, reason: String },
    /// Temporary: DNS did not answer, or the hosts have no addresses now.
    Temporary(String),
}

/// Why no resolver could be made.
#[derive(Debug, thiserror::Error)]
pub enum ResolverError {
    #[error("cannot read the system's resolver configuration: {0}")]
    SystemConfig(String),
}

#[derive(Clone)]
pub struct MxResolver {
    resolver: TokioResolver,
}

impl MxResolver {
    /// A resolver that asks `server` (tests, or a configured resolver), or
    /// the system's resolvers from /etc/resolv.conf.
    pub fn new(server: Option<SocketAddr>) -> Result<MxResolver, ResolverError> {
        let resolver = match server {
            Some(s) => {
                let group = NameServerConfigGroup::from_ips_clear(&[s.ip()], s.port(), true);
                TokioResolver::builder_with_config(ResolverConfig::from_parts(None, vec![], group), TokioConnectionProvider::default()).build()
            }
            None => TokioResolver::builder_tokio().map_err(|e| ResolverError::SystemConfig(e.to_string()))?.build(),
        };
        Ok(MxResolver { resolver })
    }

    /// The hosts to try for `domain`, most preferred first.
    pub async fn targets(&self, domain: &str) -> Result<Vec<Target>, Unroutable> {
        let fqdn = format!("{}.", domain.trim_end_matches('.'));
        let mut mxs: Vec<(u16, String)> = match self.resolver.mx_lookup(fqdn.as_str()).await {
            Ok(l) => l.iter().map(|mx| (mx.preference(), mx.exchange().to_utf8())).collect(),
            Err(e) if e.is_nx_domain() => {
                // RFC 5321 5.1 / RFC 3463 5.1.2: the domain does not exist.
                return Err(Unroutable::Permanent { status: "5.1.2", reason: format!("domain {domain} does not exist") });
            }
            Err(e) if e.is_no_records_found() => Vec::new(),
            Err(e) => return Err(Unroutable::Temporary(format!("MX lookup for {domain} failed: {e}"))),
        };
        // RFC 7505 3: a single MX with an empty exchange (".") says the
        // domain accepts no mail.
        if mxs.len() == 1 && (mxs[0].1 == "." || mxs[0].1.is_empty()) {
            return Err(Unroutable::Permanent { status: "5.1.10", reason: format!("domain {domain} accepts no mail (null MX, RFC 7505)") });
        }
        if mxs.is_empty() {
            // RFC 5321 5.1: no MX -> the domain itself is the implicit MX.
            mxs.push((0, fqdn.clone()));
        }
        // RFC 5321 5.1: lowest preference first; equal preferences in
        // random order to spread load.
        mxs.sort_by_key(|(p, _)| (*p, rand_key()));
        let mut out = Vec::new();
        let mut errors = Vec::new();
        for (_, name) in mxs {
            if name == "." {
                continue;
            }
            match self.resolver.lookup_ip(name.as_str()).await {
                Ok(ips) => {
                    let addrs: Vec<IpAddr> = ips.iter().collect();
                    if !addrs.is_empty() {
                        out.push(Target { name: name.trim_end_matches('.').to_string(), addrs });
                    }
                }
                Err(e) if e.is_nx_domain() || e.is_no_records_found() => errors.push(format!("{name} has no address")),
                Err(e) => errors.push(format!("address lookup of {name} failed: {e}")),
            }
        }
        if out.is_empty() {
            return Err(Unroutable::Temporary(if errors.is_empty() { format!("no usable mail host for {domain}") } else { errors.join("; ") }));
        }
        Ok(out)
    }
}

fn rand_key() -> u32 {
    rand_u32()
}

fn rand_u32() -> u32 {
    use std::time::{SystemTime, UNIX_EPOCH};
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let t = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    t.wrapping_mul(2_654_435_761).wrapping_add(N.fetch_add(0x9E37_79B9, std::sync::atomic::Ordering::Relaxed))
}
