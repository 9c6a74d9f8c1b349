//! A raw line client for SMTP and POP3 on a plain TCP connection.

use std::net::SocketAddr;
use std::time::Duration;

/// How long a read or write may block before the test fails.
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a connect may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A raw line client on a plain TCP connection, for tests that must act
/// between protocol steps (signals, timeouts) or look at exact bytes.
/// Every read has a timeout, so a silent server fails the test instead of
/// hanging it.
pub struct Wire {
    pub sock: std::net::TcpStream,
    buf: Vec<u8>,
}

impl Wire {
    pub fn connect(addr: SocketAddr) -> Wire {
        Wire::try_connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
    }

    pub fn try_connect(addr: SocketAddr) -> std::io::Result<Wire> {
        let sock = std::net::TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
        Wire::from_stream(sock)
    }

    /// A connection to `addr` from the local address `source` (any of
    /// 127.0.0.0/8 on loopback), for tests of per-address and per-network
    /// limits.
    pub fn connect_from(source: std::net::Ipv4Addr, addr: SocketAddr) -> std::io::Result<Wire> {
        use std::os::fd::FromRawFd;
        let std::net::SocketAddr::V4(dst) = addr else { panic!("IPv4 only: {addr}") };
        let sin = |ip: std::net::Ipv4Addr, port: u16| libc::sockaddr_in { sin_family: libc::AF_INET as libc::sa_family_t, sin_port: port.to_be(), sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(ip.octets()) }, sin_zero: [0; 8] };
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        // SAFETY: plain socket calls on a descriptor this function owns; on
        // success it is handed to a TcpStream, which closes it.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let sock = std::net::TcpStream::from_raw_fd(fd);
            let src = sin(source, 0);
            if libc::bind(fd, &src as *const libc::sockaddr_in as *const libc::sockaddr, len) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let to = sin(*dst.ip(), dst.port());
            if libc::connect(fd, &to as *const libc::sockaddr_in as *const libc::sockaddr, len) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Wire::from_stream(sock)
        }
    }

    /// A client on a connection made elsewhere (from a chosen source
    /// address, say), with the same timeouts.
    pub fn from_stream(sock: std::net::TcpStream) -> std::io::Result<Wire> {
        sock.set_read_timeout(Some(IO_TIMEOUT))?;
        sock.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(Wire { sock, buf: Vec::new() })
    }

    pub fn send(&mut self, data: &[u8]) {
        use std::io::Write;
        self.sock.write_all(data).expect("send to the node");
    }

    /// The next line without its line end, or an error on EOF / timeout.
    pub fn try_line(&mut self) -> std::io::Result<String> {
        use std::io::Read;
        loop {
            if let Some(p) = self.buf.iter().position(|&b| b == b'\n') {
                let mut l: Vec<u8> = self.buf.drain(..=p).collect();
                l.pop();
                if l.last() == Some(&b'\r') {
                    l.pop();
                }
                return Ok(String::from_utf8_lossy(&l).into_owned());
            }
            let mut chunk = [0u8; 16384];
            let n = self.sock.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, format!("connection closed; buffered {:?}", String::from_utf8_lossy(&self.buf))));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    pub fn line(&mut self) -> String {
        self.try_line().unwrap_or_else(|e| panic!("reading a line from the node: {e}"))
    }

    /// Sends a command line and returns the one-line reply (POP3).
    pub fn cmd(&mut self, c: &str) -> String {
        self.send(format!("{c}\r\n").as_bytes());
        self.line()
    }

    /// One SMTP reply: (code, all lines joined with '\n').
    pub fn reply(&mut self) -> (u16, String) {
        let mut all = Vec::new();
        loop {
            let l = self.line();
            let code: u16 = l.get(..3).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("not an SMTP reply: {l:?}"));
            let more = l.as_bytes().get(3) == Some(&b'-');
            all.push(l);
            if !more {
                return (code, all.join("\n"));
            }
        }
    }

    /// Sends an SMTP command and returns its reply.
    pub fn smtp(&mut self, c: &str) -> (u16, String) {
        self.send(format!("{c}\r\n").as_bytes());
        self.reply()
    }

    /// Whether the node closes the connection (EOF or reset) within
    /// `timeout`; bytes that arrive meanwhile are returned as well.
    pub fn closed_within(&mut self, timeout: Duration) -> (bool, Vec<u8>) {
        use std::io::Read;
        let end = std::time::Instant::now() + timeout;
        let mut got = std::mem::take(&mut self.buf);
        loop {
            let left = end.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return (false, got);
            }
            self.sock.set_read_timeout(Some(left.max(Duration::from_millis(1)))).expect("set timeout");
            let mut chunk = [0u8; 16384];
            match self.sock.read(&mut chunk) {
                Ok(0) => return (true, got),
                Ok(n) => got.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => return (false, got),
                Err(_) => return (true, got),
            }
        }
    }
}

