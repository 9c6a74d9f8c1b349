//! A small DHCP client (RFC 2131, options RFC 2132) for boxes set to
//! `ip=dhcp`: DISCOVER, OFFER, REQUEST, ACK, then the address, route and
//! resolvers are applied. It asks the server to broadcast its replies (the
//! BROADCAST flag, RFC 2131 4.1), so an ordinary UDP socket bound to the
//! interface receives them before the interface has an address, and no
//! packet socket is needed. The packet format is a handful of fixed fields
//! and options, written here rather than taken from a crate.
//!
//! Not done: renewing the lease (RFC 2131 4.4.5). Appliances normally get
//! a static address; with DHCP, give the box a long or reserved lease.

use std::ffi::OsString;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use nix::sys::socket::setsockopt;
use nix::sys::socket::sockopt::BindToDevice;

use crate::settings::Cidr;

/// RFC 2131 4.1: clients send from port 68 to port 67.
const CLIENT_PORT: u16 = 68;
const SERVER_PORT: u16 = 67;
/// RFC 2131 3: the magic cookie starting the options (RFC 2132 2).
const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
const OP_REQUEST: u8 = 1;
const OP_REPLY: u8 = 2;
const HTYPE_ETHERNET: u8 = 1;
const FLAG_BROADCAST: u16 = 0x8000;
/// The fixed part before the options (RFC 2131 2, figure 1) plus cookie.
const FIXED_LEN: usize = 240;
/// RFC 2131 2: a client must accept messages of up to 576 bytes; servers
/// may send more with option 57. We read up to this.
const MAX_PACKET: usize = 1500;
/// RFC 2132 9.6 message types.
pub const DHCPDISCOVER: u8 = 1;
pub const DHCPOFFER: u8 = 2;
pub const DHCPREQUEST: u8 = 3;
pub const DHCPACK: u8 = 5;
pub const DHCPNAK: u8 = 6;
// RFC 2132 option codes.
const OPT_PAD: u8 = 0;
const OPT_SUBNET_MASK: u8 = 1;
const OPT_ROUTER: u8 = 3;
const OPT_DNS: u8 = 6;
const OPT_HOSTNAME: u8 = 12;
const OPT_REQUESTED_IP: u8 = 50;
const OPT_LEASE_TIME: u8 = 51;
const OPT_MESSAGE_TYPE: u8 = 53;
const OPT_SERVER_ID: u8 = 54;
const OPT_PARAMS: u8 = 55;
const OPT_END: u8 = 255;
/// RFC 2131 4.1: retransmit with exponential back-off from 4 s (we start
/// lower: a LAN answers within milliseconds) and give up after a bound.
const RETRY_START: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(8);
const GIVE_UP_AFTER: Duration = Duration::from_secs(60);

/// What the server offered or acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub addr: Ipv4Addr,
    pub prefix: u8,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub server: Ipv4Addr,
    pub lease_secs: u32,
}

impl Lease {
    pub fn cidr(&self) -> Cidr {
        Cidr { addr: self.addr, prefix: self.prefix }
    }
}

/// A reply as far as we care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub xid: u32,
    pub msg_type: u8,
    pub lease: Lease,
}

/// Encodes a DISCOVER or REQUEST.
pub fn encode(msg_type: u8, xid: u32, mac: [u8; 6], hostname: &str, requested: Option<(Ipv4Addr, Ipv4Addr)>) -> Vec<u8> {
    let mut p = vec![0u8; FIXED_LEN - 4];
    p[0] = OP_REQUEST;
    p[1] = HTYPE_ETHERNET;
    p[2] = 6;
    p[4..8].copy_from_slice(&xid.to_be_bytes());
    p[10..12].copy_from_slice(&FLAG_BROADCAST.to_be_bytes());
    p[28..34].copy_from_slice(&mac);
    p.extend_from_slice(&MAGIC_COOKIE);
    p.extend_from_slice(&[OPT_MESSAGE_TYPE, 1, msg_type]);
    if let Some((ip, server)) = requested {
        p.extend_from_slice(&[OPT_REQUESTED_IP, 4]);
        p.extend_from_slice(&ip.octets());
        p.extend_from_slice(&[OPT_SERVER_ID, 4]);
        p.extend_from_slice(&server.octets());
    }
    let h = hostname.as_bytes();
    if !h.is_empty() && h.len() < 64 {
        p.extend_from_slice(&[OPT_HOSTNAME, h.len() as u8]);
        p.extend_from_slice(h);
    }
    p.extend_from_slice(&[OPT_PARAMS, 4, OPT_SUBNET_MASK, OPT_ROUTER, OPT_DNS, OPT_LEASE_TIME]);
    p.push(OPT_END);
    p
}

/// Decodes a server's reply; None for anything that is not a well-formed
/// BOOTREPLY with a message type.
pub fn decode(b: &[u8]) -> Option<Reply> {
    if b.len() < FIXED_LEN || b[0] != OP_REPLY || b[236..240] != MAGIC_COOKIE {
        return None;
    }
    let xid = u32::from_be_bytes(b[4..8].try_into().ok()?);
    let yiaddr = Ipv4Addr::new(b[16], b[17], b[18], b[19]);
    let mut msg_type = None;
    let mut lease = Lease { addr: yiaddr, prefix: 24, router: None, dns: Vec::new(), server: Ipv4Addr::UNSPECIFIED, lease_secs: 0 };
    let ip4 = |v: &[u8]| (v.len() >= 4).then(|| Ipv4Addr::new(v[0], v[1], v[2], v[3]));
    let mut i = FIXED_LEN;
    while i < b.len() {
        let code = b[i];
        if code == OPT_END {
            break;
        }
        if code == OPT_PAD {
            i += 1;
            continue;
        }
        let len = *b.get(i + 1)? as usize;
        let v = b.get(i + 2..i + 2 + len)?;
        match code {
            OPT_MESSAGE_TYPE => msg_type = v.first().copied(),
            OPT_SUBNET_MASK => lease.prefix = ip4(v).map(|m| u32::from(m).leading_ones() as u8).unwrap_or(24),
            OPT_ROUTER => lease.router = ip4(v),
            OPT_DNS => lease.dns = v.chunks_exact(4).filter_map(ip4).collect(),
            OPT_LEASE_TIME => lease.lease_secs = v.get(..4).and_then(|x| x.try_into().ok()).map(u32::from_be_bytes).unwrap_or(0),
            OPT_SERVER_ID => lease.server = ip4(v).unwrap_or(Ipv4Addr::UNSPECIFIED),
            _ => {}
        }
        i += 2 + len;
    }
    Some(Reply { xid, msg_type: msg_type?, lease })
}

#[derive(Debug, thiserror::Error)]
pub enum DhcpError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("no answer from a DHCP server within {0} s")]
    NoAnswer(u64),
    #[error("the server refused the address (DHCPNAK)")]
    Nak,
}

fn hw_addr(iface: &str) -> io::Result<[u8; 6]> {
    let text = std::fs::read_to_string(format!("/sys/class/net/{iface}/address"))?;
    let mut mac = [0u8; 6];
    let parts: Vec<&str> = text.trim().split(':').collect();
    if parts.len() != 6 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "bad hardware address"));
    }
    for (m, p) in mac.iter_mut().zip(parts) {
        *m = u8::from_str_radix(p, 16).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad hardware address"))?;
    }
    Ok(mac)
}

fn socket(iface: &str) -> io::Result<UdpSocket> {
    let s = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, CLIENT_PORT))?;
    s.set_broadcast(true)?;
    // SO_BINDTODEVICE (socket(7)): send and receive on this interface only,
    // which is what lets a broadcast leave an interface with no address.
    setsockopt(&s, BindToDevice, &OsString::from(iface))?;
    Ok(s)
}

/// Sends `packet` and waits for a reply of `want` for `xid`, retrying with
/// back-off.
fn exchange(s: &UdpSocket, packet: &[u8], xid: u32, want: u8, start: Instant) -> Result<Reply, DhcpError> {
    let dest = SocketAddrV4::new(Ipv4Addr::BROADCAST, SERVER_PORT);
    let mut wait = RETRY_START;
    let mut buf = [0u8; MAX_PACKET];
    while start.elapsed() < GIVE_UP_AFTER {
        s.send_to(packet, dest)?;
        let until = Instant::now() + wait;
        while let Some(left) = until.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
            s.set_read_timeout(Some(left))?;
            let n = match s.recv_from(&mut buf) {
                Ok((n, _)) => n,
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => break,
                Err(e) => return Err(e.into()),
            };
            match decode(&buf[..n]) {
                Some(r) if r.xid == xid && r.msg_type == DHCPNAK => return Err(DhcpError::Nak),
                Some(r) if r.xid == xid && r.msg_type == want => return Ok(r),
                _ => {}
            }
        }
        wait = (wait * 2).min(RETRY_MAX);
    }
    Err(DhcpError::NoAnswer(GIVE_UP_AFTER.as_secs()))
}

/// Gets a lease on `iface` and applies it (address, netmask, default
/// route). The interface must be up.
pub fn configure(iface: &str, hostname: &str) -> Result<Lease, DhcpError> {
    let mac = hw_addr(iface)?;
    let s = socket(iface)?;
    let xid: u32 = rand_xid(&mac);
    let start = Instant::now();
    let offer = exchange(&s, &encode(DHCPDISCOVER, xid, mac, hostname, None), xid, DHCPOFFER, start)?;
    let ack = exchange(&s, &encode(DHCPREQUEST, xid, mac, hostname, Some((offer.lease.addr, offer.lease.server))), xid, DHCPACK, start)?;
    let lease = ack.lease;
    crate::net::set_address(iface, lease.cidr())?;
    if let Some(gw) = lease.router {
        crate::net::add_default_route(gw)?;
    }
    Ok(lease)
}

/// A transaction id that differs between boxes and boots (RFC 2131 4.4.1:
/// chosen by the client, random).
fn rand_xid(mac: &[u8; 6]) -> u32 {
    let mut b = [0u8; 4];
    if std::fs::File::open("/dev/urandom").and_then(|mut f| io::Read::read_exact(&mut f, &mut b)).is_ok() {
        return u32::from_ne_bytes(b);
    }
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    t ^ u32::from_be_bytes([mac[2], mac[3], mac[4], mac[5]])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(msg_type: u8, xid: u32) -> Vec<u8> {
        let mut p = encode(DHCPDISCOVER, xid, [2, 0, 0, 0, 0, 1], "", None);
        p[0] = OP_REPLY;
        p[16..20].copy_from_slice(&[192, 0, 2, 50]);
        p.truncate(FIXED_LEN);
        p.extend_from_slice(&[OPT_MESSAGE_TYPE, 1, msg_type, OPT_PAD, OPT_SUBNET_MASK, 4, 255, 255, 255, 0, OPT_ROUTER, 4, 192, 0, 2, 1, OPT_DNS, 8, 192, 0, 2, 53, 192, 0, 2, 54, OPT_LEASE_TIME, 4, 0, 0, 14, 16, OPT_SERVER_ID, 4, 192, 0, 2, 2, OPT_END]);
        p
    }

    #[test]
    fn requests_are_well_formed() {
        let p = encode(DHCPREQUEST, 0x1234_5678, [2, 0, 0, 0, 0, 1], "mail1", Some(("192.0.2.50".parse().unwrap(), "192.0.2.2".parse().unwrap())));
        assert_eq!(p[0], OP_REQUEST);
        assert_eq!(&p[4..8], &[0x12, 0x34, 0x56, 0x78]);
        assert_eq!(&p[10..12], &[0x80, 0]);
        assert_eq!(&p[28..34], &[2, 0, 0, 0, 0, 1]);
        assert_eq!(&p[236..240], &MAGIC_COOKIE);
        assert_eq!(&p[240..243], &[OPT_MESSAGE_TYPE, 1, DHCPREQUEST]);
        assert_eq!(&p[243..249], &[OPT_REQUESTED_IP, 4, 192, 0, 2, 50]);
        assert!(p.windows(7).any(|w| w == [OPT_HOSTNAME, 5, b'm', b'a', b'i', b'l', b'1']));
        assert_eq!(p.last(), Some(&OPT_END));
    }

    #[test]
    fn replies_decode() {
        let r = decode(&reply(DHCPOFFER, 7)).unwrap();
        assert_eq!(r.xid, 7);
        assert_eq!(r.msg_type, DHCPOFFER);
        assert_eq!(r.lease, Lease { addr: "192.0.2.50".parse().unwrap(), prefix: 24, router: Some("192.0.2.1".parse().unwrap()), dns: vec!["192.0.2.53".parse().unwrap(), "192.0.2.54".parse().unwrap()], server: "192.0.2.2".parse().unwrap(), lease_secs: 3600 });
    }

    #[test]
    fn garbage_is_ignored() {
        assert!(decode(&[]).is_none());
        assert!(decode(&[2; 300]).is_none());
        let mut r = reply(DHCPACK, 1);
        // An option running past the end of the packet.
        let n = r.len();
        r[n - 1] = OPT_DNS;
        r.push(200);
        assert!(decode(&r).is_none());
        // Our own request is not a reply.
        assert!(decode(&encode(DHCPDISCOVER, 1, [0; 6], "", None)).is_none());
    }
}
