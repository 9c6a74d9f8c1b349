//! Who a client is, for every per-client limit of every node (connection
//! slots, login failures, the admin page, the demo's DNS server): its
//! address and the network it is counted in, so that a client with many
//! addresses cannot escape a limit by spreading over them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Prefix length of the IPv4 network whose addresses share a limit: one
/// customer's or provider's block (Postfix anvil's habit).
pub const IPV4_NETWORK_BITS: u8 = 24;
/// Prefix length of the IPv6 network whose addresses share a limit: one
/// site gets a /64 at least (RFC 6177 3), so a single client has 2^64
/// addresses.
pub const IPV6_NETWORK_BITS: u8 = 64;

/// The network `ip` is counted in (IPv4-mapped IPv6 counts as IPv4).
pub fn network(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from(u32::from(v4) & (u32::MAX << (32 - u32::from(IPV4_NETWORK_BITS))))),
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & (u128::MAX << (128 - u32::from(IPV6_NETWORK_BITS))))),
    }
}

/// The prefix length of the network [`network`] puts `ip` in.
pub fn network_bits(ip: IpAddr) -> u8 {
    match ip.to_canonical() {
        IpAddr::V4(_) => IPV4_NETWORK_BITS,
        IpAddr::V6(_) => IPV6_NETWORK_BITS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn networks_are_slash_24_and_slash_64() {
        assert_eq!(network(ip("192.0.2.77")), ip("192.0.2.0"));
        assert_eq!(network(ip("::ffff:192.0.2.77")), ip("192.0.2.0"));
        assert_eq!(network(ip("2001:db8:1:2:3:4:5:6")), ip("2001:db8:1:2::"));
        assert_eq!((network_bits(ip("192.0.2.1")), network_bits(ip("2001:db8::1"))), (24, 64));
    }
}
