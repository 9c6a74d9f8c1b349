//! Node settings ([`config`], the `mailfort-config` crate, re-exported
//! here) and what the daemon builds from them.

pub use ::config::*;

/// The name under which a node publishes the state of its sender checks.
pub const SENDER_CHECKS: &str = "SPF/DKIM/DMARC checks";

/// The verifier for the inbound checks, and what the node publishes about
/// them. A node that cannot run them says so (in the log here, and in its
/// heartbeat for `status` and the dashboard), never silently. The name
/// servers are `dns_server`, or those in /etc/resolv.conf (which a box
/// writes at boot from its settings); no CA certificates are needed.
pub fn inbound_verifier(cfg: &InboundConfig) -> (Option<mailauth::Verifier>, cluster::live::Protection) {
    let state = |on: bool, detail: String| cluster::live::Protection { name: SENDER_CHECKS.into(), on, detail };
    if !cfg.verify {
        tracing::warn!("SPF/DKIM/DMARC checks are off: inbound.verify = false; mail from our own domains on port 25 is taken only from listed outside senders");
        return (None, state(false, "turned off (inbound.verify = false)".into()));
    }
    match mailauth::Verifier::new(cfg.dns_server) {
        Ok(v) => {
            let servers: Vec<String> = v.servers().iter().map(|s| s.to_string()).collect();
            tracing::info!(servers = %servers.join(","), "SPF/DKIM/DMARC checks are on");
            (Some(v), state(true, format!("resolver {}", servers.join(", "))))
        }
        Err(e) => {
            tracing::error!(error = %e, "SPF/DKIM/DMARC checks are OFF: no resolver");
            (None, state(false, format!("no resolver: {e}")))
        }
    }
}

