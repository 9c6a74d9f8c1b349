//! The box's network: loopback and one interface up, a static IPv4
//! address, a default route, and the resolver and hosts files. Done with
//! the classic socket ioctls (netdevice(7), route(4)), which need no
//! netlink code and are enough for one IPv4 address and one route.
//!
//! Traffic flows as soon as the address is set and the link is up; init
//! does not wait for the link's operstate.

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};

use crate::settings::Cidr;

// include/uapi/linux/sockios.h
const SIOCADDRT: libc::c_ulong = 0x890B;
const SIOCGIFFLAGS: libc::c_ulong = 0x8913;
const SIOCSIFFLAGS: libc::c_ulong = 0x8914;
const SIOCGIFADDR: libc::c_ulong = 0x8915;
const SIOCSIFADDR: libc::c_ulong = 0x8916;
const SIOCSIFNETMASK: libc::c_ulong = 0x891C;
// include/uapi/linux/route.h
const RTF_UP: libc::c_ushort = 0x0001;
const RTF_GATEWAY: libc::c_ushort = 0x0002;

/// struct ifreq (include/uapi/linux/if.h): a name and a 24-byte union, of
/// which we use the address and the flags.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    data: IfReqData,
}

#[repr(C)]
union IfReqData {
    addr: libc::sockaddr_in,
    flags: libc::c_short,
    _pad: [u8; 24],
}

/// struct rtentry (include/uapi/linux/route.h).
#[repr(C)]
struct RtEntry {
    rt_pad1: libc::c_ulong,
    rt_dst: libc::sockaddr_in,
    rt_gateway: libc::sockaddr_in,
    rt_genmask: libc::sockaddr_in,
    rt_flags: libc::c_ushort,
    rt_pad2: libc::c_short,
    rt_pad3: libc::c_ulong,
    rt_pad4: *mut libc::c_void,
    rt_metric: libc::c_short,
    rt_dev: *mut libc::c_char,
    rt_mtu: libc::c_ulong,
    rt_window: libc::c_ulong,
    rt_irtt: libc::c_ushort,
}

fn sin(a: Ipv4Addr) -> libc::sockaddr_in {
    libc::sockaddr_in { sin_family: libc::AF_INET as libc::sa_family_t, sin_port: 0, sin_addr: libc::in_addr { s_addr: u32::from(a).to_be() }, sin_zero: [0; 8] }
}

// The ioctls, each tied to the structure it takes (netdevice(7),
// route(4)); the kernel reads or fills it.
nix::ioctl_readwrite_bad!(siocgifflags, SIOCGIFFLAGS, IfReq);
nix::ioctl_write_ptr_bad!(siocsifflags, SIOCSIFFLAGS, IfReq);
nix::ioctl_write_ptr_bad!(siocsifaddr, SIOCSIFADDR, IfReq);
nix::ioctl_write_ptr_bad!(siocsifnetmask, SIOCSIFNETMASK, IfReq);
nix::ioctl_readwrite_bad!(siocgifaddr, SIOCGIFADDR, IfReq);
nix::ioctl_write_ptr_bad!(siocaddrt, SIOCADDRT, RtEntry);

/// A socket for the interface ioctls, closed when dropped.
fn sock() -> io::Result<OwnedFd> {
    Ok(socket(AddressFamily::Inet, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None)?)
}

fn ifreq(name: &str) -> io::Result<IfReq> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("bad interface name '{name}'")));
    }
    let mut r = IfReq { name: [0; libc::IFNAMSIZ], data: IfReqData { _pad: [0; 24] } };
    r.name[..name.len()].copy_from_slice(name.as_bytes());
    Ok(r)
}

/// Sets IFF_UP on an interface.
pub fn link_up(name: &str) -> io::Result<()> {
    let s = sock()?;
    let mut r = ifreq(name)?;
    // SAFETY: `s` is open and `r` is a struct ifreq naming the interface,
    // alive across the call, which fills its flags.
    unsafe { siocgifflags(s.as_raw_fd(), &mut r) }?;
    // SAFETY: SIOCGIFFLAGS filled the flags member.
    let flags = unsafe { r.data.flags };
    r.data.flags = flags | libc::IFF_UP as libc::c_short;
    // SAFETY: as above; the kernel reads the name and the flags.
    unsafe { siocsifflags(s.as_raw_fd(), &r) }?;
    Ok(())
}

/// Gives an interface its address and netmask.
pub fn set_address(name: &str, c: Cidr) -> io::Result<()> {
    let s = sock()?;
    let mut r = ifreq(name)?;
    r.data.addr = sin(c.addr);
    // SAFETY: `s` is open and `r` is a struct ifreq with the name and an
    // AF_INET address, alive across the call.
    unsafe { siocsifaddr(s.as_raw_fd(), &r) }?;
    let mut r = ifreq(name)?;
    r.data.addr = sin(c.netmask());
    // SAFETY: as above, with the netmask.
    unsafe { siocsifnetmask(s.as_raw_fd(), &r) }?;
    Ok(())
}

/// Adds the default route through `gw`. An existing one is kept.
pub fn add_default_route(gw: Ipv4Addr) -> io::Result<()> {
    let s = sock()?;
    let rt = RtEntry {
        rt_pad1: 0,
        rt_dst: sin(Ipv4Addr::UNSPECIFIED),
        rt_gateway: sin(gw),
        rt_genmask: sin(Ipv4Addr::UNSPECIFIED),
        rt_flags: RTF_UP | RTF_GATEWAY,
        rt_pad2: 0,
        rt_pad3: 0,
        rt_pad4: std::ptr::null_mut(),
        rt_metric: 0,
        rt_dev: std::ptr::null_mut(),
        rt_mtu: 0,
        rt_window: 0,
        rt_irtt: 0,
    };
    // SAFETY: `s` is open and `rt` a complete struct rtentry (null device
    // and padding pointers are allowed), alive across the call.
    match unsafe { siocaddrt(s.as_raw_fd(), &rt) } {
        Ok(_) | Err(Errno::EEXIST) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// /etc/resolv.conf (resolv.conf(5)): one `nameserver` line per resolver.
pub fn resolv_conf(servers: &[IpAddr]) -> String {
    let mut s = String::new();
    for a in servers.iter().take(3) {
        // resolv.conf(5): at most MAXNS (3) servers are used.
        s.push_str(&format!("nameserver {a}\n"));
    }
    s
}

/// /etc/hosts (hosts(5)): loopback and this box's own name.
pub fn hosts_file(node: &str, addr: Option<Ipv4Addr>) -> String {
    let mut s = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost\n");
    if let Some(a) = addr {
        s.push_str(&format!("{a}\t{node}\n"));
    } else {
        s.push_str(&format!("127.0.1.1\t{node}\n"));
    }
    s
}

/// The first IPv4 address of an interface, from the kernel (for boxes
/// configured by DHCP, and for `status`).
pub fn interface_address(name: &str) -> Option<Ipv4Addr> {
    let s = sock().ok()?;
    let mut r = ifreq(name).ok()?;
    // SAFETY: `s` is open and `r` a struct ifreq naming the interface,
    // alive across the call, which fills its address.
    unsafe { siocgifaddr(s.as_raw_fd(), &mut r) }.ok()?;
    // SAFETY: SIOCGIFADDR filled the address member.
    let a = unsafe { r.data.addr };
    Some(Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn struct_sizes_match_the_kernel() {
        // x86_64: struct ifreq is 40 bytes, struct rtentry 120.
        assert_eq!(std::mem::size_of::<IfReq>(), 40);
        assert_eq!(std::mem::size_of::<RtEntry>(), 120);
    }

    #[test]
    fn files() {
        let r = resolv_conf(&["192.0.2.53".parse().unwrap(), "2001:db8::53".parse().unwrap(), "192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap()]);
        assert_eq!(r, "nameserver 192.0.2.53\nnameserver 2001:db8::53\nnameserver 192.0.2.1\n");
        assert!(hosts_file("mail1", Some("192.0.2.11".parse().unwrap())).contains("192.0.2.11\tmail1\n"));
        assert!(hosts_file("mail1", None).contains("127.0.1.1\tmail1\n"));
    }

    #[test]
    fn loopback_address_reads_back() {
        // Every test machine has lo with 127.0.0.1.
        assert_eq!(interface_address("lo"), Some(Ipv4Addr::LOCALHOST));
        assert!(ifreq("a-name-far-too-long-for-linux").is_err());
    }
}
