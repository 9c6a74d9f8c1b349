//! Sending one request and receiving its response over UDP, falling back
//! to TCP when the request is too large or the answer is truncated.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::{timeout_at, Instant};

use super::error::Transport;
use super::wire::RawHeader;

/// RFC 1035 4.2.1: without EDNS a UDP message is at most 512 octets.
pub(crate) const MAX_UDP_MESSAGE: usize = 512;
/// RFC 1035 4.2.2: TCP messages carry a two-octet length, so at most 65535.
pub(crate) const MAX_TCP_MESSAGE: usize = u16::MAX as usize;
/// Largest datagram we read (a server may ignore our 512 and send more).
const UDP_RECV_BUFFER: usize = 65_535;
/// How many times a UDP request is sent before giving up (RFC 1035 4.2.1
/// leaves retransmission to the client).
const UDP_SENDS: u32 = 3;
/// Datagrams that are not our answer (wrong ID, not a response) tolerated
/// per exchange before we stop reading; bounds the loop against a flood.
const MAX_STRAY_DATAGRAMS: usize = 64;

/// Why an exchange failed below the DNS level.
#[derive(Debug)]
pub(crate) enum TransportError {
    Timeout(Transport),
    Io(Transport, io::Error),
}

/// Sends `request` (whose ID is `id`) to `server` and returns the raw
/// response. UDP first unless the request is over 512 octets; TCP when the
/// UDP answer has TC set (RFC 1035 4.2.1, RFC 7766 5). Each transport gets
/// `timeout` of its own.
pub(crate) async fn exchange(
    server: SocketAddr,
    request: &[u8],
    id: u16,
    timeout: Duration,
) -> Result<Vec<u8>, TransportError> {
    if request.len() <= MAX_UDP_MESSAGE {
        let answer = exchange_udp(server, request, id, timeout).await?;
        match RawHeader::parse(&answer) {
            // RFC 1035 4.2.1 / RFC 7766 5: a truncated UDP answer is retried over TCP.
            Ok(h) if h.is_truncated() => {}
            _ => return Ok(answer),
        }
    }
    tracing::debug!(%server, len = request.len(), "DNS exchange over TCP");
    exchange_tcp(server, request, id, timeout).await
}

async fn exchange_udp(
    server: SocketAddr,
    request: &[u8],
    id: u16,
    timeout: Duration,
) -> Result<Vec<u8>, TransportError> {
    let io_err = |e| TransportError::Io(Transport::Udp, e);
    let local: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).await.map_err(io_err)?;
    // Connecting filters out datagrams from other sources and reports ICMP
    // port-unreachable as ConnectionRefused.
    socket.connect(server).await.map_err(io_err)?;

    let deadline = Instant::now() + timeout;
    let resend_every = timeout / UDP_SENDS;
    let mut buf = vec![0u8; UDP_RECV_BUFFER];
    let mut strays = 0usize;
    for attempt in 0..UDP_SENDS {
        socket.send(request).await.map_err(io_err)?;
        let attempt_deadline = if attempt + 1 == UDP_SENDS {
            deadline
        } else {
            (Instant::now() + resend_every).min(deadline)
        };
        loop {
            match timeout_at(attempt_deadline, socket.recv(&mut buf)).await {
                Err(_) => break, // resend, or give up after the last send
                Ok(Err(e)) => return Err(io_err(e)),
                Ok(Ok(n)) => {
                    let datagram = &buf[..n];
                    match RawHeader::parse(datagram) {
                        Ok(h) if h.id == id && h.is_response() => return Ok(datagram.to_vec()),
                        _ => {
                            strays += 1;
                            if strays > MAX_STRAY_DATAGRAMS {
                                return Err(TransportError::Timeout(Transport::Udp));
                            }
                        }
                    }
                }
            }
        }
    }
    Err(TransportError::Timeout(Transport::Udp))
}

async fn exchange_tcp(
    server: SocketAddr,
    request: &[u8],
    id: u16,
    timeout: Duration,
) -> Result<Vec<u8>, TransportError> {
    let deadline = Instant::now() + timeout;
    let work = async {
        let io_err = |e| TransportError::Io(Transport::Tcp, e);
        let mut stream = TcpStream::connect(server).await.map_err(io_err)?;
        // RFC 1035 4.2.2: the length prefix limits a message to 65535 octets.
        let len = match u16::try_from(request.len()) {
            Ok(len) if request.len() <= MAX_TCP_MESSAGE => len,
            _ => {
                return Err(io_err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "request longer than 65535 octets",
                )))
            }
        };
        // RFC 1035 4.2.2: each message is prefixed with a two-octet length.
        let mut framed = Vec::with_capacity(request.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(request);
        stream.write_all(&framed).await.map_err(io_err)?;
        // The server may send other answers first on a shared connection; on
        // our own connection only ours comes, but check the ID anyway.
        let mut len_buf = [0u8; 2];
        stream.read_exact(&mut len_buf).await.map_err(io_err)?;
        let n = usize::from(u16::from_be_bytes(len_buf));
        let mut answer = vec![0u8; n];
        stream.read_exact(&mut answer).await.map_err(io_err)?;
        match RawHeader::parse(&answer) {
            Ok(h) if h.id == id && h.is_response() => Ok(answer),
            _ => Err(io_err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the TCP answer does not match the request ID",
            ))),
        }
    };
    match timeout_at(deadline, work).await {
        Ok(result) => result,
        Err(_) => Err(TransportError::Timeout(Transport::Tcp)),
    }
}
