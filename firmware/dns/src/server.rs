//! A small authoritative DNS server for one zone, accepting TSIG-signed
//! UPDATEs: what `mailfort demo` announces to when no real DNS server is
//! around.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{timeout, Instant};

use super::client::parse_name;
use super::error::{ServerError, Transport};
use super::transport::MAX_UDP_MESSAGE;
use super::tsig::{self, code, Check, TsigKey};
use super::wire::{RawHeader, FLAG_OPCODE_MASK, FLAG_QR, FLAG_RD, HEADER_LEN, RECORD_FIXED_LEN};
use super::zone::{ZoneData, ZoneStore};

/// Largest datagram read.
const UDP_RECV_BUFFER: usize = 65_535;
/// RFC 6891 6.2.5: the UDP payload size we advertise; 1232 avoids IP
/// fragmentation on common paths.
const EDNS_PAYLOAD: u16 = 1232;
/// RFC 6891 6.1.3: the only EDNS version there is.
const EDNS_VERSION: u8 = 0;
/// Simultaneous TCP clients served. When all are taken, a newcomer
/// replaces a connection of the network holding the most (if it holds
/// more than the newcomer's), else an idle one, else it is closed at once.
const MAX_TCP_CLIENTS: usize = 32;
/// TCP connections one address holds; one more replaces its oldest (idle
/// first), so one address cannot take the slots (RFC 7766 6.2.2: servers
/// may limit connections per client).
const MAX_TCP_CLIENTS_PER_ADDRESS: usize = 4;
/// TCP connections one network (IPv4 /24, IPv6 /64) holds, far below
/// [`MAX_TCP_CLIENTS`]; one more replaces the network's oldest.
const MAX_TCP_CLIENTS_PER_NETWORK: usize = 8;
/// RFC 7766 6.2.3: close idle TCP connections; seconds to wait for a
/// message, and for the whole of one message once it has begun.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// No TCP connection is kept longer than this, however it trickles.
const TCP_CONNECTION_LIFETIME: Duration = Duration::from_secs(120);
/// Upper bound of one TCP write.
const TCP_WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Messages answered on one TCP connection before it is closed.
const MAX_MESSAGES_PER_TCP_CONNECTION: usize = 1000;
/// Pause after a socket error, so a failing socket cannot spin the loop.
const ERROR_BACKOFF: Duration = Duration::from_millis(10);
/// Tries at finding a port free for both UDP and TCP when asked for port 0.
const BIND_ATTEMPTS: usize = 16;
/// How long `shutdown` waits for the tasks before aborting them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// RFC 1035 4.1.1 RCODE FORMERR, used before a message could be parsed.
const RCODE_FORMERR: u16 = 1;

struct Shared {
    key: TsigKey,
    store: Mutex<ZoneStore>,
}

impl Shared {
    fn store(&self) -> MutexGuard<'_, ZoneStore> {
        // A panic while holding the lock cannot leave the zone half-updated
        // (updates swap in a finished copy), so a poisoned lock is usable.
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The embedded authoritative server. Serves one zone over UDP and TCP on
/// the same port; stops on [`EmbeddedServer::shutdown`] or when dropped.
pub struct EmbeddedServer {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for EmbeddedServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedServer")
            .field("local_addr", &self.local_addr)
            .field("zone", &self.shared.store().origin().to_ascii())
            .finish()
    }
}

impl EmbeddedServer {
    /// Starts serving `zone` on `bind` (port 0 picks a free port, the same
    /// for UDP and TCP). The zone gets a SOA and an NS record at its apex
    /// plus `initial`; UPDATEs are accepted only when signed with `key`.
    pub async fn start(
        bind: SocketAddr,
        zone: &str,
        key: TsigKey,
        initial: ZoneData,
    ) -> Result<Self, ServerError> {
        let origin = parse_name(zone, "zone")?;
        let store = ZoneStore::new(&origin, &initial)?;
        let (udp, tcp) = bind_pair(bind).await?;
        let local_addr = udp.local_addr().map_err(|source| ServerError::Bind {
            addr: bind,
            transport: Transport::Udp,
            source,
        })?;
        let shared = Arc::new(Shared {
            key,
            store: Mutex::new(store),
        });
        let (shutdown, rx) = watch::channel(false);
        let tasks = vec![
            tokio::spawn(udp_loop(udp, Arc::clone(&shared), rx.clone())),
            tokio::spawn(tcp_loop(tcp, Arc::clone(&shared), rx)),
        ];
        tracing::info!(%local_addr, zone = %origin, "embedded DNS server listening");
        Ok(Self {
            local_addr,
            shared,
            shutdown,
            tasks,
        })
    }

    /// The address it listens on (UDP and TCP).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The zone, lowercase with a trailing dot.
    pub fn zone(&self) -> String {
        self.shared.store().origin().to_ascii()
    }

    /// The MX and address records now.
    pub fn data(&self) -> ZoneData {
        self.shared.store().data()
    }

    /// The SOA serial now (incremented by every change, RFC 2136 3.6).
    pub fn serial(&self) -> u32 {
        self.shared.store().serial()
    }

    /// Every record now, one per line in zone-file form.
    pub fn zone_text(&self) -> String {
        self.shared.store().text()
    }

    /// Stops serving and waits (boundedly) for the tasks to end.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        for task in std::mem::take(&mut self.tasks) {
            let abort = task.abort_handle();
            if timeout(SHUTDOWN_GRACE, task).await.is_err() {
                abort.abort();
            }
        }
    }
}

impl Drop for EmbeddedServer {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Binds UDP and TCP on the same address; with port 0, retries until a port
/// free for both is found.
async fn bind_pair(bind: SocketAddr) -> Result<(UdpSocket, TcpListener), ServerError> {
    let mut last_err = None;
    for _ in 0..BIND_ATTEMPTS {
        let udp = UdpSocket::bind(bind)
            .await
            .map_err(|source| ServerError::Bind {
                addr: bind,
                transport: Transport::Udp,
                source,
            })?;
        let addr = udp.local_addr().map_err(|source| ServerError::Bind {
            addr: bind,
            transport: Transport::Udp,
            source,
        })?;
        match TcpListener::bind(addr).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if bind.port() == 0 && e.kind() == io::ErrorKind::AddrInUse => {
                last_err = Some(e)
            }
            Err(source) => {
                return Err(ServerError::Bind {
                    addr,
                    transport: Transport::Tcp,
                    source,
                })
            }
        }
    }
    Err(ServerError::Bind {
        addr: bind,
        transport: Transport::Tcp,
        source: last_err
            .unwrap_or_else(|| io::Error::new(io::ErrorKind::AddrInUse, "no free port")),
    })
}

async fn udp_loop(socket: UdpSocket, shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut buf = vec![0u8; UDP_RECV_BUFFER];
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            received = socket.recv_from(&mut buf) => match received {
                Ok((n, peer)) => {
                    if let Some(answer) = handle(&shared, &buf[..n], Transport::Udp) {
                        if let Err(e) = socket.send_to(&answer, peer).await {
                            tracing::debug!(%peer, error = %e, "DNS answer not sent");
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "DNS UDP receive failed");
                    tokio::time::sleep(ERROR_BACKOFF).await;
                }
            },
        }
    }
}

use store::peer::network;

struct TcpClient {
    address: IpAddr,
    network: IpAddr,
    /// Waiting for its next message: closing it loses nothing.
    idle: bool,
    since: Instant,
    /// Dropped to close the connection (its receiver wakes).
    _close: oneshot::Sender<()>,
}

/// The TCP connection slots, taken after accept.
#[derive(Default)]
struct TcpClients {
    next: u64,
    conns: HashMap<u64, TcpClient>,
}

impl TcpClients {
    /// The connection to give up among those matching `f`: idle first,
    /// then the oldest.
    fn oldest(&self, f: impl Fn(&TcpClient) -> bool) -> Option<u64> {
        self.conns
            .iter()
            .filter(|(_, c)| f(c))
            .min_by_key(|(id, c)| (!c.idle, c.since, **id))
            .map(|(id, _)| *id)
    }

    fn count(&self, f: impl Fn(&TcpClient) -> bool) -> usize {
        self.conns.values().filter(|c| f(c)).count()
    }

    /// Which connection a newcomer replaces: `Ok(None)` if a slot is free,
    /// `Err(())` if it gets none.
    fn victim(&self, address: IpAddr, network: IpAddr) -> Result<Option<u64>, ()> {
        if self.count(|c| c.address == address) >= MAX_TCP_CLIENTS_PER_ADDRESS {
            return self.oldest(|c| c.address == address).map(Some).ok_or(());
        }
        let mine = self.count(|c| c.network == network);
        if mine >= MAX_TCP_CLIENTS_PER_NETWORK {
            return self.oldest(|c| c.network == network).map(Some).ok_or(());
        }
        if self.conns.len() < MAX_TCP_CLIENTS {
            return Ok(None);
        }
        let mut per_network: HashMap<IpAddr, usize> = HashMap::new();
        for c in self.conns.values() {
            *per_network.entry(c.network).or_default() += 1;
        }
        if let Some((&big, &n)) = per_network.iter().max_by_key(|(_, n)| **n) {
            if n > mine + 1 {
                return self.oldest(|c| c.network == big).map(Some).ok_or(());
            }
        }
        self.oldest(|c| c.idle).map(Some).ok_or(())
    }
}

/// A TCP connection's slot, given back when dropped.
struct TcpSlot {
    id: u64,
    clients: Arc<Mutex<TcpClients>>,
}

fn lock_clients(clients: &Mutex<TcpClients>) -> MutexGuard<'_, TcpClients> {
    // Every change is finished under the lock: a poisoned one is usable.
    clients.lock().unwrap_or_else(|e| e.into_inner())
}

impl TcpSlot {
    /// A slot for a connection from `ip`, closing another if needed, and
    /// what wakes when this one must close; `None`: refused.
    fn admit(
        clients: &Arc<Mutex<TcpClients>>,
        ip: IpAddr,
    ) -> Option<(TcpSlot, oneshot::Receiver<()>)> {
        let address = ip.to_canonical();
        let network = network(address);
        let mut all = lock_clients(clients);
        match all.victim(address, network) {
            Err(()) => return None,
            Ok(Some(id)) => {
                all.conns.remove(&id);
            }
            Ok(None) => {}
        }
        let (tx, rx) = oneshot::channel();
        let id = all.next;
        all.next += 1;
        all.conns.insert(
            id,
            TcpClient {
                address,
                network,
                idle: true,
                since: Instant::now(),
                _close: tx,
            },
        );
        Some((
            TcpSlot {
                id,
                clients: Arc::clone(clients),
            },
            rx,
        ))
    }

    fn set_idle(&self, idle: bool) {
        if let Some(c) = lock_clients(&self.clients).conns.get_mut(&self.id) {
            c.idle = idle;
            c.since = Instant::now();
        }
    }
}

impl Drop for TcpSlot {
    fn drop(&mut self) {
        lock_clients(&self.clients).conns.remove(&self.id);
    }
}

async fn tcp_loop(listener: TcpListener, shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let slots = Arc::new(Mutex::new(TcpClients::default()));
    let mut clients = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            Some(_) = clients.join_next(), if !clients.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let Some((slot, closed)) = TcpSlot::admit(&slots, peer.ip()) else {
                        tracing::debug!(%peer, "too many DNS TCP clients; closing");
                        continue;
                    };
                    let shared = Arc::clone(&shared);
                    clients.spawn(async move {
                        tokio::select! {
                            _ = serve_tcp(stream, &shared, &slot) => {}
                            _ = closed => tracing::debug!(%peer, "DNS TCP connection closed for another client"),
                            _ = tokio::time::sleep(TCP_CONNECTION_LIFETIME) => {}
                        }
                    });
                }
                Err(e) => {
                    tracing::debug!(error = %e, "DNS TCP accept failed");
                    tokio::time::sleep(ERROR_BACKOFF).await;
                }
            },
        }
    }
    clients.abort_all();
}

/// RFC 1035 4.2.2 / RFC 7766 8: two-octet length, then the message; several
/// messages may follow on one connection.
async fn serve_tcp(mut stream: TcpStream, shared: &Shared, slot: &TcpSlot) {
    for _ in 0..MAX_MESSAGES_PER_TCP_CONNECTION {
        slot.set_idle(true);
        let mut first = [0u8; 1];
        match timeout(TCP_IDLE_TIMEOUT, stream.read_exact(&mut first)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        slot.set_idle(false);
        // The rest of the message, once begun, within one deadline.
        let request = timeout(TCP_IDLE_TIMEOUT, async {
            let mut second = [0u8; 1];
            stream.read_exact(&mut second).await?;
            let mut request = vec![0u8; usize::from(u16::from_be_bytes([first[0], second[0]]))];
            stream.read_exact(&mut request).await?;
            Ok::<_, io::Error>(request)
        });
        let request = match request.await {
            Ok(Ok(r)) => r,
            _ => return,
        };
        let Some(answer) = handle(shared, &request, Transport::Tcp) else {
            continue;
        };
        let Ok(n) = u16::try_from(answer.len()) else {
            return;
        };
        let mut framed = Vec::with_capacity(answer.len() + 2);
        framed.extend_from_slice(&n.to_be_bytes());
        framed.extend_from_slice(&answer);
        match timeout(TCP_WRITE_TIMEOUT, stream.write_all(&framed)).await {
            Ok(Ok(())) => {}
            _ => return,
        }
    }
}

/// How a request was authenticated.
enum Auth {
    Unsigned,
    /// Signed with our key; the request MAC, for signing the answer
    /// (RFC 8945 4.3.1).
    Signed(Vec<u8>),
}

/// Answers one request; `None` means send nothing.
fn handle(shared: &Shared, raw: &[u8], transport: Transport) -> Option<Vec<u8>> {
    let header = RawHeader::parse(raw).ok()?;
    // Never answer a response (RFC 1035 4.1.1 QR), which could start a loop.
    if header.is_response() {
        return None;
    }
    let now = tsig::unix_now();
    // RFC 8945 5.2: a TSIG record not last, or several, is FORMERR.
    let stripped = match tsig::strip(raw) {
        Ok(s) => s,
        Err(_) => return Some(formerr(&header)),
    };
    let body = stripped.as_ref().map_or(raw, |s| s.message.as_slice());
    let Ok(request) = Message::from_vec(body) else {
        return Some(formerr(&header));
    };

    let auth = match &stripped {
        None => Auth::Unsigned,
        Some(s) => match tsig::check(&shared.key, None, s, now) {
            Check::Valid => Auth::Signed(s.tsig.mac.clone()),
            // RFC 8945 5.2.1 / 5.3.2: unknown key: NOTAUTH, BADKEY, unsigned.
            Check::BadKey => return unsigned_tsig_error(&request, s, now, code::BADKEY),
            // RFC 8945 5.2.2 / 5.3.2: bad MAC: NOTAUTH, BADSIG, unsigned.
            Check::BadSig => return unsigned_tsig_error(&request, s, now, code::BADSIG),
            // RFC 8945 5.2.2: impossible MAC length: FORMERR.
            Check::FormErr => return Some(formerr(&header)),
            // RFC 8945 5.2.3: time out of window: NOTAUTH, BADTIME, signed,
            // with our time in Other Data and the request's Time Signed so
            // the client can verify it.
            Check::BadTime => {
                let response = base_response(&request, ResponseCode::NotAuth);
                let bytes = response.to_vec().ok()?;
                let signed = tsig::sign(
                    &shared.key,
                    &bytes,
                    Some(&s.tsig.mac),
                    s.tsig.time_signed,
                    code::BADTIME,
                    tsig::badtime_other(now),
                )
                .ok()?;
                return Some(signed.message);
            }
            // RFC 8945 5.2.4: truncated MAC against our policy: BADTRUNC, signed.
            Check::BadTrunc => {
                let response = base_response(&request, ResponseCode::NotAuth);
                let bytes = response.to_vec().ok()?;
                let signed = tsig::sign(
                    &shared.key,
                    &bytes,
                    Some(&s.tsig.mac),
                    now,
                    code::BADTRUNC,
                    Vec::new(),
                )
                .ok()?;
                return Some(signed.message);
            }
        },
    };

    let mut response = match request.op_code() {
        OpCode::Query => answer_query(shared, &request),
        OpCode::Update => {
            let rcode = shared
                .store()
                .update(&request, matches!(auth, Auth::Signed(_)));
            if rcode != ResponseCode::NoError {
                tracing::info!(rcode = %rcode, signed = matches!(auth, Auth::Signed(_)), "DNS UPDATE rejected");
            }
            base_response(&request, rcode)
        }
        // RFC 1035 4.1.1: other opcodes are not implemented.
        _ => base_response(&request, ResponseCode::NotImp),
    };

    // RFC 6891 7: a request with OPT gets an OPT in the answer; an unknown
    // version gets BADVERS (RFC 6891 6.1.3).
    let mut udp_limit = MAX_UDP_MESSAGE;
    if let Some(edns) = request.extensions() {
        let mut ours = Edns::new();
        ours.set_max_payload(EDNS_PAYLOAD).set_version(EDNS_VERSION);
        if edns.version() > EDNS_VERSION {
            response = base_response(&request, ResponseCode::BADVERS);
        } else {
            // RFC 6891 6.2.5: values below 512 are treated as 512.
            udp_limit = usize::from(
                edns.max_payload()
                    .clamp(MAX_UDP_MESSAGE as u16, EDNS_PAYLOAD),
            );
        }
        response.set_edns(ours);
    }

    let tsig_room = match &auth {
        Auth::Signed(_) => tsig_overhead(&shared.key),
        Auth::Unsigned => 0,
    };
    let mut bytes = response.to_vec().ok()?;
    if transport == Transport::Udp && bytes.len() + tsig_room > udp_limit {
        // RFC 1035 4.2.1 / RFC 2181 9: too large for UDP: set TC and send
        // only the header and question; the client retries over TCP.
        let mut short = base_response(&request, response.response_code());
        short
            .set_authoritative(response.authoritative())
            .set_truncated(true);
        if let Some(edns) = response.extensions() {
            short.set_edns(edns.clone());
        }
        bytes = short.to_vec().ok()?;
    }
    match auth {
        Auth::Unsigned => Some(bytes),
        // RFC 8945 5.3: the answer to a signed request is signed, covering
        // the request MAC.
        Auth::Signed(request_mac) => {
            tsig::sign(&shared.key, &bytes, Some(&request_mac), now, 0, Vec::new())
                .ok()
                .map(|s| s.message)
        }
    }
}

/// RFC 8945 4.2: fixed-size RDATA fields of a TSIG record: Time Signed (6),
/// Fudge, MAC Size, Original ID, Error, Other Len (2 each).
const TSIG_FIXED_RDATA_LEN: usize = 16;
/// RFC 1035 3.1: a one-label name takes its length octet and the root octet
/// besides the label itself.
const ONE_LABEL_NAME_OVERHEAD: usize = 2;

/// Room a TSIG record with our key takes (RFC 8945 4.2): owner name, fixed
/// RR fields, algorithm name, fixed RDATA fields, the MAC.
fn tsig_overhead(key: &TsigKey) -> usize {
    let name = key.wire_name().map_or(0, |n| n.len());
    name + RECORD_FIXED_LEN
        + key.algorithm.name().len()
        + ONE_LABEL_NAME_OVERHEAD
        + TSIG_FIXED_RDATA_LEN
        + key.algorithm.mac_len()
}

/// A response echoing the request's ID, opcode, RD and question/zone section.
fn base_response(request: &Message, rcode: ResponseCode) -> Message {
    let mut m = Message::new();
    m.set_id(request.id())
        .set_message_type(MessageType::Response)
        .set_op_code(request.op_code())
        .set_recursion_desired(request.recursion_desired())
        .set_response_code(rcode);
    m.add_queries(request.queries().iter().cloned());
    m
}

/// RFC 1034 4.3.2 for one question.
fn answer_query(shared: &Shared, request: &Message) -> Message {
    // RFC 9619: a query has exactly one question.
    let [question] = request.queries() else {
        return base_response(request, ResponseCode::FormErr);
    };
    let answer = shared.store().lookup(question);
    let mut m = base_response(request, answer.rcode);
    m.set_authoritative(answer.authoritative);
    m.add_answers(answer.answers);
    m.add_name_servers(answer.authority);
    m
}

/// NOTAUTH with an unsigned TSIG record carrying `error` (RFC 8945 5.3.2).
fn unsigned_tsig_error(
    request: &Message,
    stripped: &tsig::Stripped,
    now: u64,
    error: u16,
) -> Option<Vec<u8>> {
    let response = base_response(request, ResponseCode::NotAuth);
    let bytes = response.to_vec().ok()?;
    tsig::append_unsigned_error(&bytes, &stripped.tsig, now, error).ok()
}

/// A bare FORMERR header for a request we could not parse (RFC 1035 4.1.1):
/// same ID and opcode, QR set, no sections.
fn formerr(header: &RawHeader) -> Vec<u8> {
    let flags = FLAG_QR | (header.flags & (FLAG_OPCODE_MASK | FLAG_RD)) | RCODE_FORMERR;
    let mut out = Vec::with_capacity(HEADER_LEN);
    out.extend_from_slice(&header.id.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&[0u8; 8]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::parse_name;
    use crate::tsig::TsigAlgorithm;
    use hickory_proto::op::Query;
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{RData, Record, RecordType};
    use std::collections::BTreeMap;
    use std::net::{IpAddr, Ipv4Addr};

    fn key() -> TsigKey {
        TsigKey::from_base64(
            "k.",
            "hmac-sha256",
            "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        )
        .unwrap()
    }

    fn shared(addresses: usize) -> Shared {
        let mut hosts = BTreeMap::new();
        let list = (0..addresses)
            .map(|i| IpAddr::V4(Ipv4Addr::new(10, 0, (i / 250) as u8, (i % 250) as u8 + 1)))
            .collect();
        hosts.insert("mail.example.test".to_string(), list);
        let data = ZoneData {
            ttl: 60,
            mx: vec![(10, "mx1.example.test".into())],
            hosts,
        };
        let store = ZoneStore::new(&parse_name("example.test", "zone").unwrap(), &data).unwrap();
        Shared {
            key: key(),
            store: Mutex::new(store),
        }
    }

    fn query(name: &str, rtype: RecordType) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(77)
            .set_message_type(MessageType::Query)
            .set_op_code(OpCode::Query);
        m.add_query(Query::query(parse_name(name, "q").unwrap(), rtype));
        m.to_vec().unwrap()
    }

    fn update() -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(78)
            .set_message_type(MessageType::Query)
            .set_op_code(OpCode::Update);
        m.add_query(Query::query(
            parse_name("example.test", "z").unwrap(),
            RecordType::SOA,
        ));
        m.add_name_server(Record::from_rdata(
            parse_name("new.example.test", "n").unwrap(),
            60,
            RData::A(A::new(192, 0, 2, 1)),
        ));
        m.to_vec().unwrap()
    }

    fn parse(raw: &[u8]) -> (Message, Option<tsig::Stripped>) {
        let stripped = tsig::strip(raw).unwrap();
        let body = stripped
            .as_ref()
            .map_or(raw.to_vec(), |s| s.message.clone());
        (Message::from_vec(&body).unwrap(), stripped)
    }

    #[test]
    fn signed_query_gets_a_signed_answer_over_the_request_mac() {
        let s = shared(1);
        let req = tsig::sign(
            &key(),
            &query("example.test", RecordType::MX),
            None,
            tsig::unix_now(),
            0,
            vec![],
        )
        .unwrap();
        let raw = handle(&s, &req.message, Transport::Udp).unwrap();
        let (msg, stripped) = parse(&raw);
        assert_eq!(msg.response_code(), ResponseCode::NoError);
        assert!(msg.authoritative());
        assert_eq!(msg.answers().len(), 1);
        let stripped = stripped.expect("signed");
        assert_eq!(
            tsig::check(&key(), Some(&req.mac), &stripped, tsig::unix_now()),
            Check::Valid
        );
    }

    #[test]
    fn unsigned_query_gets_an_unsigned_answer() {
        let s = shared(1);
        let raw = handle(
            &s,
            &query("nope.example.test", RecordType::A),
            Transport::Udp,
        )
        .unwrap();
        let (msg, stripped) = parse(&raw);
        assert!(stripped.is_none());
        assert_eq!(msg.response_code(), ResponseCode::NXDomain);
        assert_eq!(msg.name_servers()[0].record_type(), RecordType::SOA);
    }

    #[test]
    fn updates_need_the_key() {
        let s = shared(1);
        // Unsigned: REFUSED (RFC 2136 3.3), unsigned answer.
        let (msg, stripped) = parse(&handle(&s, &update(), Transport::Udp).unwrap());
        assert_eq!(msg.response_code(), ResponseCode::Refused);
        assert!(stripped.is_none());
        assert_eq!(s.store().serial(), 1);

        // Unknown key: NOTAUTH + BADKEY, unsigned (RFC 8945 5.2.1).
        let stranger = TsigKey::new("stranger.", TsigAlgorithm::HmacSha256, key().secret).unwrap();
        let req = tsig::sign(&stranger, &update(), None, tsig::unix_now(), 0, vec![]).unwrap();
        let (msg, stripped) = parse(&handle(&s, &req.message, Transport::Udp).unwrap());
        assert_eq!(msg.response_code(), ResponseCode::NotAuth);
        let t = stripped.unwrap().tsig;
        assert_eq!((t.error, t.mac.len()), (code::BADKEY, 0));

        // Wrong secret: NOTAUTH + BADSIG, unsigned (RFC 8945 5.2.2).
        let mut wrong = key();
        wrong.secret = vec![9; 32];
        let req = tsig::sign(&wrong, &update(), None, tsig::unix_now(), 0, vec![]).unwrap();
        let (msg, stripped) = parse(&handle(&s, &req.message, Transport::Udp).unwrap());
        assert_eq!(msg.response_code(), ResponseCode::NotAuth);
        let t = stripped.unwrap().tsig;
        assert_eq!((t.error, t.mac.len()), (code::BADSIG, 0));

        // Old signature: NOTAUTH + BADTIME, signed, with our time (RFC 8945 5.2.3).
        let old = tsig::unix_now() - 3600;
        let req = tsig::sign(&key(), &update(), None, old, 0, vec![]).unwrap();
        let (msg, stripped) = parse(&handle(&s, &req.message, Transport::Udp).unwrap());
        assert_eq!(msg.response_code(), ResponseCode::NotAuth);
        let stripped = stripped.unwrap();
        assert_eq!(stripped.tsig.error, code::BADTIME);
        assert!(stripped.tsig.other_time().unwrap() >= old + 3600);
        assert_eq!(stripped.tsig.time_signed, old);
        assert_eq!(
            tsig::check(&key(), Some(&req.mac), &stripped, old),
            Check::Valid
        );
        assert_eq!(s.store().serial(), 1);

        // Signed with the key: applied, signed answer.
        let req = tsig::sign(&key(), &update(), None, tsig::unix_now(), 0, vec![]).unwrap();
        let (msg, stripped) = parse(&handle(&s, &req.message, Transport::Udp).unwrap());
        assert_eq!(msg.response_code(), ResponseCode::NoError);
        assert_eq!(msg.op_code(), OpCode::Update);
        assert_eq!(
            tsig::check(&key(), Some(&req.mac), &stripped.unwrap(), tsig::unix_now()),
            Check::Valid
        );
        assert_eq!(s.store().serial(), 2);
    }

    #[test]
    fn garbage_responses_and_unknown_opcodes() {
        let s = shared(1);
        assert!(
            handle(&s, &[1, 2, 3], Transport::Udp).is_none(),
            "shorter than a header"
        );
        let mut resp = query("example.test", RecordType::A);
        resp[2] |= 0x80;
        assert!(
            handle(&s, &resp, Transport::Udp).is_none(),
            "responses are not answered"
        );
        let mut bad = query("example.test", RecordType::A);
        bad.truncate(bad.len() - 3);
        let raw = handle(&s, &bad, Transport::Udp).unwrap();
        assert_eq!(raw.len(), HEADER_LEN);
        assert_eq!(RawHeader::parse(&raw).unwrap().rcode(), RCODE_FORMERR);
        assert_eq!(&raw[0..2], &bad[0..2]);

        let mut status = Message::new();
        status.set_id(5).set_op_code(OpCode::Status);
        let (msg, _) = parse(&handle(&s, &status.to_vec().unwrap(), Transport::Udp).unwrap());
        assert_eq!(msg.response_code(), ResponseCode::NotImp);
    }

    #[test]
    fn large_answers_are_truncated_over_udp_only() {
        let s = shared(100);
        let q = query("mail.example.test", RecordType::A);
        let (udp, _) = parse(&handle(&s, &q, Transport::Udp).unwrap());
        assert!(udp.truncated());
        assert!(udp.answers().is_empty());
        let (tcp, _) = parse(&handle(&s, &q, Transport::Tcp).unwrap());
        assert!(!tcp.truncated());
        assert_eq!(tcp.answers().len(), 100);
    }

    /// A TCP connection to `to` from the local address `from`.
    async fn tcp_from(to: SocketAddr, from: &str) -> TcpStream {
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        s.bind(SocketAddr::new(from.parse().unwrap(), 0)).unwrap();
        s.connect(to).await.unwrap()
    }

    /// One query over TCP from `from`; the answer's RCODE.
    async fn tcp_query(to: SocketAddr, from: &str) -> io::Result<ResponseCode> {
        let mut s = tcp_from(to, from).await;
        let q = query("example.test", RecordType::SOA);
        let mut framed = (q.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&q);
        s.write_all(&framed).await?;
        let mut len = [0u8; 2];
        s.read_exact(&mut len).await?;
        let mut answer = vec![0u8; usize::from(u16::from_be_bytes(len))];
        s.read_exact(&mut answer).await?;
        Ok(Message::from_vec(&answer).unwrap().response_code())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_address_cannot_take_the_tcp_slots() {
        let server = EmbeddedServer::start(
            "127.0.0.1:0".parse().unwrap(),
            "example.test",
            key(),
            ZoneData::default(),
        )
        .await
        .unwrap();
        let to = server.local_addr();
        // More silent connections than there are slots, from one address.
        let mut silent = Vec::new();
        for _ in 0..MAX_TCP_CLIENTS + 8 {
            silent.push(tcp_from(to, "127.0.0.1").await);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Another address is answered, and so is that one (its own oldest
        // connection gives way), long before the idle timeout.
        for from in ["127.0.0.2", "127.0.0.1"] {
            let rcode = timeout(Duration::from_secs(5), tcp_query(to, from))
                .await
                .expect("answered in time")
                .expect("not closed");
            assert_eq!(rcode, ResponseCode::NoError, "{from}");
        }
        // Only the address's cap of connections stayed open.
        let mut open = 0;
        for s in &mut silent {
            let mut b = [0u8; 1];
            if timeout(Duration::from_millis(50), s.read(&mut b))
                .await
                .is_err()
            {
                open += 1;
            }
        }
        assert!(
            open <= MAX_TCP_CLIENTS_PER_ADDRESS,
            "{open} connections of one address kept"
        );
        server.shutdown().await;
    }

    #[test]
    fn a_full_table_gives_way_to_another_network() {
        let clients = Arc::new(Mutex::new(TcpClients::default()));
        let mut held = Vec::new();
        for net in 0..MAX_TCP_CLIENTS / MAX_TCP_CLIENTS_PER_NETWORK {
            for host in 0..MAX_TCP_CLIENTS_PER_NETWORK {
                let ip = IpAddr::V4(Ipv4Addr::new(192, 0, net as u8, host as u8 + 1));
                let (slot, rx) = TcpSlot::admit(&clients, ip).unwrap();
                slot.set_idle(false);
                held.push((slot, rx));
            }
        }
        assert_eq!(lock_clients(&clients).conns.len(), MAX_TCP_CLIENTS);
        let newcomer = TcpSlot::admit(&clients, "198.51.100.1".parse().unwrap());
        assert!(newcomer.is_some(), "another network gets a slot");
        let closed = held
            .iter_mut()
            .map(|(_, rx)| !matches!(rx.try_recv(), Err(oneshot::error::TryRecvError::Empty)))
            .filter(|c| *c)
            .count();
        assert_eq!(closed, 1);
        assert_eq!(lock_clients(&clients).conns.len(), MAX_TCP_CLIENTS);
        assert_eq!(
            network("2001:db8:1:2:3::9".parse().unwrap()),
            "2001:db8:1:2::".parse::<IpAddr>().unwrap()
        );
    }

    #[tokio::test]
    async fn start_serve_and_shut_down() {
        let server = EmbeddedServer::start(
            "127.0.0.1:0".parse().unwrap(),
            "example.test",
            key(),
            ZoneData::default(),
        )
        .await
        .unwrap();
        assert_ne!(server.local_addr().port(), 0);
        assert_eq!(server.serial(), 1);
        assert!(server.zone_text().contains("IN NS ns1.example.test."));
        assert!(server.data().mx.is_empty());
        tokio::time::timeout(Duration::from_secs(5), server.shutdown())
            .await
            .unwrap();
    }
}
