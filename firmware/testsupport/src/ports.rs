//! Free loopback ports.
//!
//! Where a server can bind port 0 and say where it listens (`mailfort
//! serve` does), tests let it. Where a port must be known before the
//! server starts (BIND, the demo's fixed layout, receivers that share one
//! port), a port is found free by binding it, and the start is retried
//! with another one if it was taken in between ([`retry`]): never a fixed
//! range of ports.

use std::net::{Ipv4Addr, TcpListener, UdpSocket};

/// How many ports a start tries before the test fails.
pub const ATTEMPTS: usize = 8;
/// How many ports are looked at to find one free on every address asked.
const PROBES: usize = 64;

/// Why one attempt did not start: its port was taken (or the start failed
/// in a way another port may cure), with what was seen.
#[derive(Debug)]
pub struct Taken(pub String);

/// Runs `attempt` until it starts, at most [`ATTEMPTS`] times; each
/// attempt picks its own free port(s).
pub fn retry<T>(what: &str, mut attempt: impl FnMut() -> Result<T, Taken>) -> T {
    let mut seen = Vec::new();
    for _ in 0..ATTEMPTS {
        match attempt() {
            Ok(t) => return t,
            Err(Taken(why)) => seen.push(why),
        }
    }
    panic!("{what} did not start on any of {ATTEMPTS} free ports:\n{}", seen.join("\n---\n"));
}

/// Whether `e` says the address was in use.
pub fn in_use(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::AddrInUse
}

/// A port free for both UDP and TCP on 127.0.0.1 right now.
pub fn free_udp_tcp_port() -> u16 {
    for _ in 0..PROBES {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind UDP");
        let port = udp.local_addr().expect("local addr").port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for UDP and TCP on 127.0.0.1");
}

/// A port free for TCP on every one of `ips` right now (servers on several
/// loopback addresses that share one port).
pub fn free_tcp_port_on(ips: &[Ipv4Addr]) -> u16 {
    'probe: for _ in 0..PROBES {
        let port = TcpListener::bind("127.0.0.1:0").expect("bind TCP").local_addr().expect("local addr").port();
        for ip in ips {
            if TcpListener::bind((*ip, port)).is_err() {
                continue 'probe;
            }
        }
        return port;
    }
    panic!("no port free for TCP on all of {ips:?}");
}

/// Whether every one of `ports` is free for TCP on 127.0.0.1 right now.
pub fn tcp_ports_free(ports: &[u16]) -> bool {
    let held: Result<Vec<TcpListener>, _> = ports.iter().map(|p| TcpListener::bind(("127.0.0.1", *p))).collect();
    held.is_ok()
}
