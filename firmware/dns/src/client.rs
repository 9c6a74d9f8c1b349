//! The announcer's DNS client: read back MX and address records, and bring
//! them to a desired state with one TSIG-signed RFC 2136 UPDATE.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::{A, AAAA, MX};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

use super::error::{DnsError, TsigError};
use super::transport::{self, TransportError};
use super::tsig::{self, Check, TsigKey};
use super::wire::RawHeader;

/// How long one exchange may take per transport when the caller has no
/// opinion.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// RFC 2181 8: a TTL is at most 2^31 - 1 seconds.
pub const MAX_TTL: u32 = 0x7FFF_FFFF;

/// Where and how to send updates: the zone's primary server, the zone, the
/// TSIG key it accepts updates with, and how long to wait for answers.
#[derive(Clone, Debug)]
pub struct DnsTarget {
    /// Address of the zone's primary server.
    pub server: SocketAddr,
    /// The zone, e.g. "example.test".
    pub zone: String,
    /// The key the server accepts updates with.
    pub key: TsigKey,
    /// Upper bound of each exchange, per transport.
    pub timeout: Duration,
}

impl DnsTarget {
    /// A target with [`DEFAULT_TIMEOUT`].
    pub fn new(server: SocketAddr, zone: impl Into<String>, key: TsigKey) -> Self {
        Self {
            server,
            zone: zone.into(),
            key,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// The records the zone should have.
///
/// The MX RRset at the zone apex becomes exactly `mx`; for each name in
/// `hosts` the A and AAAA RRsets become exactly its addresses (an empty list
/// removes them). Names not in `hosts` are left alone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DesiredRecords {
    /// TTL of every record written.
    pub ttl: u32,
    /// (preference, exchange name) pairs of the zone's MX RRset.
    pub mx: Vec<(u16, String)>,
    /// Host name (inside the zone) to its IPv4 and IPv6 addresses.
    pub hosts: BTreeMap<String, Vec<IpAddr>>,
}

/// One MX record as the server has it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct MxRecord {
    /// Preference (lower is preferred, RFC 1035 3.3.9).
    pub preference: u16,
    /// Exchange name, lowercase with a trailing dot.
    pub exchange: String,
    /// TTL.
    pub ttl: u32,
}

/// One A or AAAA record as the server has it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct AddressRecord {
    /// The address.
    pub address: IpAddr,
    /// TTL.
    pub ttl: u32,
}

/// What the server has now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CurrentRecords {
    /// The zone, lowercase with a trailing dot.
    pub zone: String,
    /// The MX RRset at the apex, sorted.
    pub mx: Vec<MxRecord>,
    /// Each name asked for (lowercase, trailing dot) to its A and AAAA
    /// records, sorted; a name without addresses maps to an empty list.
    pub hosts: BTreeMap<String, Vec<AddressRecord>>,
}

impl CurrentRecords {
    /// The MX RRset as (preference, exchange) pairs, sorted.
    pub fn mx_pairs(&self) -> Vec<(u16, String)> {
        self.mx
            .iter()
            .map(|m| (m.preference, m.exchange.clone()))
            .collect()
    }

    /// The addresses of `name` (any case, with or without trailing dot),
    /// sorted; empty when the name was not asked for or has none.
    pub fn addresses(&self, name: &str) -> Vec<IpAddr> {
        let key = normalize_text(name);
        self.hosts
            .get(&key)
            .map(|v| v.iter().map(|a| a.address).collect())
            .unwrap_or_default()
    }
}

/// What [`reconcile`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReconcileOutcome {
    /// Whether an UPDATE was sent and accepted.
    pub changed: bool,
    /// Records added, in zone-file form.
    pub added: Vec<String>,
    /// Records removed, in zone-file form.
    pub removed: Vec<String>,
}

/// What changed, without saying that DNS was updated: the log line or the
/// message that shows it says that (`"DNS updated: {outcome}"`).
impl fmt::Display for ReconcileOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.changed {
            return f.write_str("no change");
        }
        write!(
            f,
            "{} added, {} removed",
            self.added.len(),
            self.removed.len()
        )?;
        for r in &self.removed {
            write!(f, "; -{r}")?;
        }
        for a in &self.added {
            write!(f, "; +{a}")?;
        }
        Ok(())
    }
}

/// Reads what the server has: the MX RRset at the zone apex, and the A and
/// AAAA RRsets of each of `names`. Queries are TSIG-signed and answers must
/// be signed with the same key and authoritative.
pub async fn query_current<I, S>(target: &DnsTarget, names: I) -> Result<CurrentRecords, DnsError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let zone = parse_name(&target.zone, "zone")?;
    let names = names
        .into_iter()
        .map(|n| host_name(&zone, n.as_ref()))
        .collect::<Result<BTreeSet<Name>, DnsError>>()?;
    let snapshot = read_snapshot(target, &zone, &names).await?;
    Ok(snapshot.to_public(&zone))
}

/// Brings the zone to `desired`: reads what the server has and, when it
/// differs, sends one UPDATE (RFC 2136) that removes the stale records and
/// adds the missing ones. Returns what changed.
///
/// Makes 1 + 2 x `desired.hosts.len()` queries and at most one UPDATE, one
/// after the other; each exchange waits at most `target.timeout` per
/// transport (UDP, then TCP if the answer was truncated). The UPDATE has no
/// prerequisites: the last writer wins.
pub async fn reconcile(
    target: &DnsTarget,
    desired: &DesiredRecords,
) -> Result<ReconcileOutcome, DnsError> {
    let zone = parse_name(&target.zone, "zone")?;
    let wanted = Wanted::new(&zone, desired)?;
    let names: BTreeSet<Name> = wanted.hosts.keys().cloned().collect();
    let current = read_snapshot(target, &zone, &names).await?;
    let plan = plan_update(&zone, &current, &wanted);
    if plan.is_empty() {
        return Ok(ReconcileOutcome::default());
    }
    let message = update_message(&zone, &plan);
    exchange(target, &zone, message, "UPDATE", false).await?;
    tracing::info!(
        zone = %zone,
        server = %target.server,
        added = plan.added.len(),
        removed = plan.removed.len(),
        "DNS UPDATE accepted"
    );
    Ok(ReconcileOutcome {
        changed: true,
        added: plan.added,
        removed: plan.removed,
    })
}

/// Lowercase, absolute form of a user-supplied name.
pub(crate) fn parse_name(text: &str, what: &str) -> Result<Name, DnsError> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(DnsError::Config(format!("{what} name is empty")));
    }
    let mut name = Name::from_ascii(trimmed)
        .map_err(|e| DnsError::Config(format!("{what} name {trimmed:?} is invalid: {e}")))?;
    name.set_fqdn(true);
    Ok(name.to_lowercase())
}

/// A host name that must lie inside `zone` (RFC 2136 3.4.1.3: updates
/// outside the zone are NOTZONE).
fn host_name(zone: &Name, text: &str) -> Result<Name, DnsError> {
    let name = parse_name(text, "host")?;
    if !zone.zone_of(&name) {
        return Err(DnsError::Config(format!(
            "host {name} is not inside zone {zone}"
        )));
    }
    Ok(name)
}

fn normalize_text(text: &str) -> String {
    match parse_name(text, "host") {
        Ok(n) => n.to_ascii(),
        Err(_) => text.to_ascii_lowercase(),
    }
}

/// The desired state, validated and normalized.
#[derive(Clone, Debug)]
pub(crate) struct Wanted {
    ttl: u32,
    mx: Vec<RData>,
    hosts: BTreeMap<Name, (Vec<RData>, Vec<RData>)>,
}

impl Wanted {
    pub(crate) fn new(zone: &Name, desired: &DesiredRecords) -> Result<Self, DnsError> {
        if desired.ttl > MAX_TTL {
            return Err(DnsError::Config(format!(
                "TTL {} is above the maximum {MAX_TTL} (RFC 2181 8)",
                desired.ttl
            )));
        }
        let mut mx = Vec::new();
        for (preference, exchange) in &desired.mx {
            let rdata = RData::MX(MX::new(*preference, parse_name(exchange, "MX exchange")?));
            push_unique(&mut mx, rdata);
        }
        let mut hosts = BTreeMap::new();
        for (name, addresses) in &desired.hosts {
            let name = host_name(zone, name)?;
            let (mut v4, mut v6) = (Vec::new(), Vec::new());
            for address in addresses {
                match address {
                    IpAddr::V4(a) => push_unique(&mut v4, RData::A(A(*a))),
                    IpAddr::V6(a) => push_unique(&mut v6, RData::AAAA(AAAA(*a))),
                }
            }
            let entry: &mut (Vec<RData>, Vec<RData>) = hosts.entry(name).or_default();
            for r in v4 {
                push_unique(&mut entry.0, r);
            }
            for r in v6 {
                push_unique(&mut entry.1, r);
            }
        }
        Ok(Self {
            ttl: desired.ttl,
            mx,
            hosts,
        })
    }
}

fn push_unique(list: &mut Vec<RData>, item: RData) {
    if !list.contains(&item) {
        list.push(item);
    }
}

/// The records read back from the server.
#[derive(Clone, Debug, Default)]
pub(crate) struct Snapshot {
    pub mx: Vec<Record>,
    pub hosts: BTreeMap<Name, (Vec<Record>, Vec<Record>)>,
}

impl Snapshot {
    fn to_public(&self, zone: &Name) -> CurrentRecords {
        let mut mx: Vec<MxRecord> = self
            .mx
            .iter()
            .filter_map(|r| match r.data() {
                RData::MX(m) => Some(MxRecord {
                    preference: m.preference(),
                    exchange: m.exchange().to_lowercase().to_ascii(),
                    ttl: r.ttl(),
                }),
                _ => None,
            })
            .collect();
        mx.sort();
        let hosts = self
            .hosts
            .iter()
            .map(|(name, (a, aaaa))| {
                let mut list: Vec<AddressRecord> = a
                    .iter()
                    .chain(aaaa)
                    .filter_map(|r| {
                        let address = match r.data() {
                            RData::A(a) => IpAddr::V4(a.0),
                            RData::AAAA(a) => IpAddr::V6(a.0),
                            _ => return None,
                        };
                        Some(AddressRecord {
                            address,
                            ttl: r.ttl(),
                        })
                    })
                    .collect();
                list.sort();
                (name.to_ascii(), list)
            })
            .collect();
        CurrentRecords {
            zone: zone.to_ascii(),
            mx,
            hosts,
        }
    }
}

async fn read_snapshot(
    target: &DnsTarget,
    zone: &Name,
    names: &BTreeSet<Name>,
) -> Result<Snapshot, DnsError> {
    let mut snapshot = Snapshot {
        mx: query_rrset(target, zone, zone, RecordType::MX).await?,
        ..Snapshot::default()
    };
    for name in names {
        let a = query_rrset(target, zone, name, RecordType::A).await?;
        let aaaa = query_rrset(target, zone, name, RecordType::AAAA).await?;
        snapshot.hosts.insert(name.clone(), (a, aaaa));
    }
    Ok(snapshot)
}

/// Asks for one RRset and returns its records (empty for NXDOMAIN or
/// NODATA).
async fn query_rrset(
    target: &DnsTarget,
    zone: &Name,
    name: &Name,
    rtype: RecordType,
) -> Result<Vec<Record>, DnsError> {
    let mut message = Message::new();
    message
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        // RFC 1035 4.1.1: we want the authoritative data, no recursion.
        .set_recursion_desired(false);
    message.add_query(Query::query(name.clone(), rtype));
    let operation = format!("{rtype} query for {name}");
    let response = exchange(target, zone, message, &operation, true).await?;
    // RFC 1035 4.1.1: AA marks an answer from an authority for the name.
    if !response.authoritative() {
        return Err(DnsError::NotAuthoritative {
            server: target.server,
            zone: zone.to_ascii(),
            operation,
        });
    }
    Ok(response
        .answers()
        .iter()
        .filter(|r| r.name() == name && r.record_type() == rtype && r.dns_class() == DNSClass::IN)
        .cloned()
        .collect())
}

/// The update section of the UPDATE: deletions first, then additions, as
/// RFC 2136 3.4.2 applies them in order.
#[derive(Clone, Debug, Default)]
pub(crate) struct UpdatePlan {
    pub deletes: Vec<Record>,
    pub adds: Vec<Record>,
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

impl UpdatePlan {
    pub(crate) fn is_empty(&self) -> bool {
        self.deletes.is_empty() && self.adds.is_empty()
    }
}

/// Compares what the server has with what is wanted, RRset by RRset.
pub(crate) fn plan_update(zone: &Name, current: &Snapshot, wanted: &Wanted) -> UpdatePlan {
    let mut plan = UpdatePlan::default();
    plan_rrset(
        &mut plan,
        zone,
        RecordType::MX,
        &current.mx,
        &wanted.mx,
        wanted.ttl,
    );
    let empty = (Vec::new(), Vec::new());
    for (name, (v4, v6)) in &wanted.hosts {
        let (cur_a, cur_aaaa) = current.hosts.get(name).unwrap_or(&empty);
        plan_rrset(&mut plan, name, RecordType::A, cur_a, v4, wanted.ttl);
        plan_rrset(&mut plan, name, RecordType::AAAA, cur_aaaa, v6, wanted.ttl);
    }
    plan
}

fn plan_rrset(
    plan: &mut UpdatePlan,
    owner: &Name,
    rtype: RecordType,
    current: &[Record],
    desired: &[RData],
    ttl: u32,
) {
    let has = |d: &RData| current.iter().any(|r| r.data() == d);
    let same_data = desired.iter().all(has) && current.iter().all(|r| desired.contains(r.data()));
    // RFC 2181 5.2: all records of an RRset share one TTL, so a TTL change
    // rewrites the whole RRset.
    let ttl_ok = current.iter().all(|r| r.ttl() == ttl);
    if same_data && ttl_ok {
        return;
    }
    let text = |r: &Record| {
        format!(
            "{} {} IN {} {}",
            r.name(),
            r.ttl(),
            r.record_type(),
            r.data()
        )
    };
    if desired.is_empty() || !ttl_ok {
        if !current.is_empty() {
            // RFC 2136 2.5.2: delete an RRset: CLASS ANY, TTL 0, RDLENGTH 0.
            let mut del = Record::update0(owner.clone(), 0, rtype);
            del.set_dns_class(DNSClass::ANY);
            plan.deletes.push(del);
            plan.removed.extend(current.iter().map(text));
        }
        for d in desired {
            add_rr(plan, owner, ttl, d);
        }
        return;
    }
    for r in current.iter().filter(|r| !desired.contains(r.data())) {
        // RFC 2136 2.5.4: delete an RR from an RRset: CLASS NONE, TTL 0.
        let mut del = Record::from_rdata(owner.clone(), 0, r.data().clone());
        del.set_dns_class(DNSClass::NONE);
        plan.deletes.push(del);
        plan.removed.push(text(r));
    }
    for d in desired.iter().filter(|d| !has(d)) {
        add_rr(plan, owner, ttl, d);
    }
}

fn add_rr(plan: &mut UpdatePlan, owner: &Name, ttl: u32, data: &RData) {
    // RFC 2136 2.5.1: add to an RRset: CLASS is the zone's class, real TTL.
    let rec = Record::from_rdata(owner.clone(), ttl, data.clone());
    plan.added.push(format!(
        "{} {} IN {} {}",
        owner,
        ttl,
        rec.record_type(),
        data
    ));
    plan.adds.push(rec);
}

/// Builds the UPDATE message: zone section with the zone's SOA (RFC 2136
/// 2.3), no prerequisites (RFC 2136 2.4), the plan as update section
/// (RFC 2136 2.5).
pub(crate) fn update_message(zone: &Name, plan: &UpdatePlan) -> Message {
    let mut message = Message::new();
    message
        .set_message_type(MessageType::Query)
        // RFC 2136 2.2: OPCODE is UPDATE (5).
        .set_op_code(OpCode::Update)
        .set_recursion_desired(false);
    // RFC 2136 2.3: ZNAME is the zone, ZTYPE SOA, ZCLASS the zone's class.
    let mut zone_query = Query::query(zone.clone(), RecordType::SOA);
    zone_query.set_query_class(DNSClass::IN);
    message.add_query(zone_query);
    // RFC 2136 2.5: the update section travels in the authority section.
    for r in plan.deletes.iter().chain(&plan.adds) {
        message.add_name_server(r.clone());
    }
    message
}

/// Standard mnemonic of an RCODE (RFC 1035 4.1.1, RFC 2136 2.2).
pub(crate) fn rcode_name(code: u16) -> String {
    match code {
        0 => "NOERROR".into(),
        1 => "FORMERR".into(),
        2 => "SERVFAIL".into(),
        3 => "NXDOMAIN".into(),
        4 => "NOTIMP".into(),
        5 => "REFUSED".into(),
        6 => "YXDOMAIN".into(),
        7 => "YXRRSET".into(),
        8 => "NXRRSET".into(),
        9 => "NOTAUTH".into(),
        10 => "NOTZONE".into(),
        other => format!("RCODE {other}"),
    }
}

/// RFC 1035 4.1.1 RCODE values used below.
const RCODE_NOERROR: u16 = 0;
const RCODE_NXDOMAIN: u16 = 3;
const RCODE_REFUSED: u16 = 5;
const RCODE_NOTAUTH: u16 = 9;

/// Signs `message`, sends it, authenticates and checks the answer, and maps
/// error RCODEs to [`DnsError`]. NXDOMAIN is an answer, not an error, when
/// `nxdomain_ok`.
async fn exchange(
    target: &DnsTarget,
    zone: &Name,
    mut message: Message,
    operation: &str,
    nxdomain_ok: bool,
) -> Result<Message, DnsError> {
    let ctx = Ctx {
        server: target.server,
        zone: zone.to_ascii(),
        operation: operation.to_owned(),
    };
    let id: u16 = rand::random();
    message.set_id(id);
    let unsigned = message
        .to_vec()
        .map_err(|e| DnsError::Config(format!("cannot encode the {operation}: {e}")))?;
    let signed_at = tsig::unix_now();
    // RFC 8945 5.1: the request is signed with the key.
    let signed = tsig::sign(&target.key, &unsigned, None, signed_at, 0, Vec::new())
        .map_err(|e| DnsError::Config(format!("cannot sign the {operation}: {e}")))?;
    let raw = transport::exchange(target.server, &signed.message, id, target.timeout)
        .await
        .map_err(|e| match e {
            TransportError::Timeout(transport) => DnsError::Timeout {
                server: ctx.server,
                zone: ctx.zone.clone(),
                operation: ctx.operation.clone(),
                transport,
                timeout: target.timeout,
            },
            TransportError::Io(transport, source) => DnsError::Network {
                server: ctx.server,
                zone: ctx.zone.clone(),
                operation: ctx.operation.clone(),
                transport,
                source,
            },
        })?;
    let body = authenticate(&ctx, &target.key, &raw, &signed.mac, signed_at)?;
    let response =
        Message::from_vec(&body).map_err(|e| ctx.malformed(format!("cannot parse: {e}")))?;

    if response.message_type() != MessageType::Response || response.op_code() != message.op_code() {
        return Err(ctx.malformed("the answer is not a response to our opcode".into()));
    }
    if !response.queries().is_empty() && response.queries() != message.queries() {
        return Err(ctx.malformed("the answer's question section differs from ours".into()));
    }
    let rcode = u16::from(response.response_code());
    match rcode {
        RCODE_NOERROR => Ok(response),
        RCODE_NXDOMAIN if nxdomain_ok => Ok(response),
        _ => Err(ctx.rcode_error(rcode, None, false)),
    }
}

/// The context of one exchange, for error messages.
struct Ctx {
    server: SocketAddr,
    zone: String,
    operation: String,
}

impl Ctx {
    fn malformed(&self, reason: String) -> DnsError {
        DnsError::Malformed {
            server: self.server,
            zone: self.zone.clone(),
            operation: self.operation.clone(),
            reason,
        }
    }

    fn unauthenticated(&self, reason: String) -> DnsError {
        DnsError::Unauthenticated {
            server: self.server,
            zone: self.zone.clone(),
            operation: self.operation.clone(),
            reason,
        }
    }

    fn rcode_error(&self, rcode: u16, tsig: Option<TsigError>, unsigned: bool) -> DnsError {
        let (server, zone, operation) = (self.server, self.zone.clone(), self.operation.clone());
        match rcode {
            RCODE_REFUSED => DnsError::Refused {
                server,
                zone,
                operation,
            },
            RCODE_NOTAUTH => DnsError::NotAuthorized {
                server,
                zone,
                operation,
                tsig,
            },
            _ if tsig.is_some() => DnsError::NotAuthorized {
                server,
                zone,
                operation,
                tsig,
            },
            other => DnsError::Rejected {
                server,
                zone,
                operation,
                rcode: rcode_name(other),
                unsigned,
            },
        }
    }
}

/// Checks the TSIG of an answer (RFC 8945 5.4) and returns the answer
/// without it.
fn authenticate(
    ctx: &Ctx,
    key: &TsigKey,
    raw: &[u8],
    request_mac: &[u8],
    signed_at: u64,
) -> Result<Vec<u8>, DnsError> {
    let header = RawHeader::parse(raw).map_err(|e| ctx.malformed(e.to_string()))?;
    let stripped = tsig::strip(raw).map_err(|e| ctx.malformed(e.to_string()))?;
    let Some(stripped) = stripped else {
        // RFC 8945 5.4: an answer to a signed request must carry a TSIG
        // record. An unsigned error answer is reported as what it says
        // (it can only make us fail, which dropping packets could too);
        // an unsigned success is not trusted.
        let rcode = header.rcode();
        if rcode == RCODE_NOERROR || rcode == RCODE_NXDOMAIN {
            return Err(ctx.unauthenticated("the answer carries no TSIG record".into()));
        }
        return Err(ctx.rcode_error(rcode, None, true));
    };
    if stripped.tsig.error != 0 {
        // RFC 8945 5.3.2: BADKEY and BADSIG answers are unsigned; BADTIME
        // answers are signed and carry the server's time (RFC 8945 5.2.3).
        // Either way the request failed, so the error is reported as is.
        let tsig_error =
            TsigError::from_code(stripped.tsig.error, stripped.tsig.other_time(), signed_at);
        return Err(ctx.rcode_error(header.rcode(), Some(tsig_error), false));
    }
    match tsig::check(key, Some(request_mac), &stripped, tsig::unix_now()) {
        Check::Valid => Ok(stripped.message),
        Check::BadKey => Err(ctx.unauthenticated(format!(
            "the answer is signed with key {} / {}, not ours",
            super::wire::name_to_text(&stripped.tsig.key_name),
            super::wire::name_to_text(&stripped.tsig.algorithm)
        ))),
        Check::BadSig => Err(ctx.unauthenticated(
            "the answer's TSIG MAC does not verify (wrong secret, or the answer was altered)"
                .into(),
        )),
        Check::BadTime => Err(ctx.unauthenticated(
            "the answer's TSIG time is outside the fudge window (clocks differ?)".into(),
        )),
        Check::BadTrunc | Check::FormErr => {
            Err(ctx.unauthenticated("the answer's TSIG MAC has an unacceptable length".into()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::ResponseCode;
    use hickory_proto::rr::RecordData;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn name(s: &str) -> Name {
        parse_name(s, "test").unwrap()
    }

    fn rec(owner: &str, ttl: u32, data: RData) -> Record {
        Record::from_rdata(name(owner), ttl, data)
    }

    fn mx(pref: u16, ex: &str) -> RData {
        RData::MX(MX::new(pref, name(ex)))
    }

    fn a(s: &str) -> RData {
        RData::A(A(s.parse::<Ipv4Addr>().unwrap()))
    }

    fn desired(ttl: u32, mxs: &[(u16, &str)], hosts: &[(&str, &[&str])]) -> DesiredRecords {
        DesiredRecords {
            ttl,
            mx: mxs.iter().map(|(p, e)| (*p, e.to_string())).collect(),
            hosts: hosts
                .iter()
                .map(|(n, addrs)| {
                    (
                        n.to_string(),
                        addrs.iter().map(|a| a.parse().unwrap()).collect(),
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn names_are_normalized_and_checked_against_the_zone() {
        let zone = name("Example.Test");
        assert_eq!(zone.to_ascii(), "example.test.");
        assert!(host_name(&zone, "MAIL.example.test").is_ok());
        assert!(host_name(&zone, "example.test.").is_ok());
        assert!(host_name(&zone, "mail.example.org").is_err());
        assert!(parse_name("  ", "zone").is_err());
        assert!(Wanted::new(&zone, &desired(MAX_TTL + 1, &[], &[])).is_err());
    }

    #[test]
    fn nothing_to_do_when_equal() {
        let zone = name("example.test");
        let wanted = Wanted::new(
            &zone,
            &desired(
                60,
                &[(10, "mx1.example.test")],
                &[("mail.example.test", &["192.0.2.1"])],
            ),
        )
        .unwrap();
        let mut current = Snapshot {
            mx: vec![rec("example.test", 60, mx(10, "MX1.example.test."))],
            ..Default::default()
        };
        current.hosts.insert(
            name("mail.example.test"),
            (vec![rec("mail.example.test", 60, a("192.0.2.1"))], vec![]),
        );
        assert!(plan_update(&zone, &current, &wanted).is_empty());
    }

    #[test]
    fn stale_records_are_deleted_one_by_one_and_missing_added() {
        let zone = name("example.test");
        let wanted = Wanted::new(
            &zone,
            &desired(
                60,
                &[(10, "mx1.example.test"), (20, "mx3.example.test")],
                &[("mail.example.test", &["192.0.2.1", "2001:db8::1"])],
            ),
        )
        .unwrap();
        let mut current = Snapshot {
            mx: vec![
                rec("example.test", 60, mx(10, "mx1.example.test")),
                rec("example.test", 60, mx(20, "mx2.example.test")),
            ],
            ..Default::default()
        };
        current.hosts.insert(
            name("mail.example.test"),
            (
                vec![
                    rec("mail.example.test", 60, a("192.0.2.1")),
                    rec("mail.example.test", 60, a("192.0.2.2")),
                ],
                vec![],
            ),
        );
        let plan = plan_update(&zone, &current, &wanted);
        assert_eq!(plan.deletes.len(), 2);
        for d in &plan.deletes {
            assert_eq!(d.dns_class(), DNSClass::NONE);
            assert_eq!(d.ttl(), 0);
        }
        assert_eq!(plan.deletes[0].data(), &mx(20, "mx2.example.test"));
        assert_eq!(plan.deletes[1].data(), &a("192.0.2.2"));
        assert_eq!(plan.adds.len(), 2);
        assert_eq!(plan.adds[0].data(), &mx(20, "mx3.example.test"));
        assert_eq!(
            plan.adds[1].data(),
            &RData::AAAA(AAAA("2001:db8::1".parse::<Ipv6Addr>().unwrap()))
        );
        for r in &plan.adds {
            assert_eq!(r.dns_class(), DNSClass::IN);
            assert_eq!(r.ttl(), 60);
        }
        assert_eq!(
            plan.removed,
            vec![
                "example.test. 60 IN MX 20 mx2.example.test.".to_string(),
                "mail.example.test. 60 IN A 192.0.2.2".to_string(),
            ]
        );
    }

    #[test]
    fn empty_mx_and_ttl_change_delete_whole_rrsets() {
        let zone = name("example.test");
        let wanted = Wanted::new(
            &zone,
            &desired(300, &[], &[("mail.example.test", &["192.0.2.1"])]),
        )
        .unwrap();
        let mut current = Snapshot {
            mx: vec![rec("example.test", 60, mx(10, "mx1.example.test"))],
            ..Default::default()
        };
        current.hosts.insert(
            name("mail.example.test"),
            (vec![rec("mail.example.test", 60, a("192.0.2.1"))], vec![]),
        );
        let plan = plan_update(&zone, &current, &wanted);
        assert_eq!(plan.deletes.len(), 2);
        for d in &plan.deletes {
            // RFC 2136 2.5.2
            assert_eq!(d.dns_class(), DNSClass::ANY);
            assert_eq!(d.ttl(), 0);
            assert!(d.data().is_update());
        }
        assert_eq!(plan.deletes[0].record_type(), RecordType::MX);
        assert_eq!(plan.deletes[1].record_type(), RecordType::A);
        assert_eq!(plan.adds.len(), 1);
        assert_eq!(plan.adds[0].ttl(), 300);
    }

    #[test]
    fn update_message_layout_survives_the_wire() {
        let zone = name("example.test");
        let wanted = Wanted::new(
            &zone,
            &desired(
                60,
                &[(10, "mx1.example.test")],
                &[("mail.example.test", &[])],
            ),
        )
        .unwrap();
        let mut current = Snapshot {
            mx: vec![rec("example.test", 60, mx(5, "old.example.test"))],
            ..Default::default()
        };
        current.hosts.insert(
            name("mail.example.test"),
            (vec![rec("mail.example.test", 60, a("192.0.2.9"))], vec![]),
        );
        let plan = plan_update(&zone, &current, &wanted);
        let mut msg = update_message(&zone, &plan);
        msg.set_id(77);
        let bytes = msg.to_vec().unwrap();
        // RFC 2136 2.2: opcode 5 in the header.
        assert_eq!((bytes[2] >> 3) & 0x0F, 5);
        let back = Message::from_vec(&bytes).unwrap();
        assert_eq!(back.op_code(), OpCode::Update);
        assert_eq!(back.queries().len(), 1);
        assert_eq!(back.queries()[0].query_type(), RecordType::SOA);
        assert_eq!(back.queries()[0].query_class(), DNSClass::IN);
        assert_eq!(back.queries()[0].name(), &zone);
        assert!(back.answers().is_empty(), "no prerequisites");
        let ups = back.name_servers();
        assert_eq!(ups.len(), 3);
        // MX 5 old deleted (RR), A RRset deleted (ANY), MX 10 added.
        assert_eq!(
            (ups[0].dns_class(), ups[0].record_type()),
            (DNSClass::NONE, RecordType::MX)
        );
        assert_eq!(
            (ups[1].dns_class(), ups[1].record_type()),
            (DNSClass::ANY, RecordType::A)
        );
        assert!(ups[1].data().is_update());
        assert_eq!(
            (ups[2].dns_class(), ups[2].record_type(), ups[2].ttl()),
            (DNSClass::IN, RecordType::MX, 60)
        );
        // And it can be signed.
        let key = TsigKey::generate("k.", tsig::TsigAlgorithm::HmacSha256).unwrap();
        let signed = tsig::sign(&key, &bytes, None, 1, 0, Vec::new()).unwrap();
        assert!(tsig::strip(&signed.message).unwrap().is_some());
    }

    #[test]
    fn outcome_display_lists_changes() {
        let o = ReconcileOutcome {
            changed: true,
            added: vec!["x".into()],
            removed: vec!["y".into()],
        };
        assert_eq!(o.to_string(), "1 added, 1 removed; -y; +x");
        assert_eq!(
            ReconcileOutcome::default().to_string(),
            "no change"
        );
    }

    #[test]
    fn current_records_lookup_normalizes() {
        let mut c = CurrentRecords::default();
        c.hosts.insert(
            "mail.example.test.".into(),
            vec![AddressRecord {
                address: "192.0.2.1".parse().unwrap(),
                ttl: 1,
            }],
        );
        assert_eq!(
            c.addresses("MAIL.example.test"),
            vec!["192.0.2.1".parse::<IpAddr>().unwrap()]
        );
        assert!(c.addresses("other.example.test").is_empty());
    }

    fn ctx() -> Ctx {
        Ctx {
            server: "127.0.0.1:53".parse().unwrap(),
            zone: "example.test.".into(),
            operation: "UPDATE".into(),
        }
    }

    fn test_key() -> TsigKey {
        TsigKey::from_base64(
            "k.",
            "hmac-sha256",
            "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        )
        .unwrap()
    }

    /// A response header with the given RCODE plus one question.
    fn response(id: u16, rcode: u16) -> Vec<u8> {
        let mut m = id.to_be_bytes().to_vec();
        m.extend_from_slice(&(0x8400u16 | rcode).to_be_bytes());
        m.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
        m.extend_from_slice(b"\x07example\x04test\x00\x00\x06\x00\x01");
        m
    }

    #[test]
    fn authenticate_accepts_only_answers_signed_over_our_request() {
        let key = test_key();
        let now = tsig::unix_now();
        let request = tsig::sign(&key, &response(9, 0), None, now, 0, Vec::new()).unwrap();
        let good = tsig::sign(
            &key,
            &response(9, 0),
            Some(&request.mac),
            now,
            0,
            Vec::new(),
        )
        .unwrap();
        assert_eq!(
            authenticate(&ctx(), &key, &good.message, &request.mac, now).unwrap(),
            response(9, 0)
        );

        // Unsigned success: not trusted (RFC 8945 5.4).
        let err = authenticate(&ctx(), &key, &response(9, 0), &request.mac, now).unwrap_err();
        assert!(matches!(err, DnsError::Unauthenticated { .. }), "{err}");

        // Unsigned REFUSED: reported as REFUSED.
        let err = authenticate(&ctx(), &key, &response(9, 5), &request.mac, now).unwrap_err();
        assert!(matches!(err, DnsError::Refused { .. }), "{err}");

        // Signed by someone else.
        let other = TsigKey::from_base64(
            "other.",
            "hmac-sha256",
            "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        )
        .unwrap();
        let forged = tsig::sign(
            &other,
            &response(9, 0),
            Some(&request.mac),
            now,
            0,
            Vec::new(),
        )
        .unwrap();
        let err = authenticate(&ctx(), &key, &forged.message, &request.mac, now).unwrap_err();
        assert!(err.to_string().contains("not ours"), "{err}");

        // Right key, but not over our request MAC.
        let replayed =
            tsig::sign(&key, &response(9, 0), Some(&[1u8; 32]), now, 0, Vec::new()).unwrap();
        let err = authenticate(&ctx(), &key, &replayed.message, &request.mac, now).unwrap_err();
        assert!(err.to_string().contains("does not verify"), "{err}");
    }

    #[test]
    fn authenticate_reports_tsig_errors() {
        let key = test_key();
        let now = tsig::unix_now();
        let request = tsig::sign(&key, &response(9, 0), None, now, 0, Vec::new()).unwrap();
        let req = tsig::strip(&request.message).unwrap().unwrap();

        for (code, want) in [
            (tsig::code::BADKEY, TsigError::BadKey),
            (tsig::code::BADSIG, TsigError::BadSig),
        ] {
            let raw = tsig::append_unsigned_error(&response(9, 9), &req.tsig, now, code).unwrap();
            let err = authenticate(&ctx(), &key, &raw, &request.mac, now).unwrap_err();
            match err {
                DnsError::NotAuthorized {
                    tsig: Some(ref t), ..
                } => assert_eq!(t, &want),
                ref other => panic!("unexpected {other}"),
            }
            assert!(err.to_string().contains("NOTAUTH"), "{err}");
        }

        let skewed = now + 1000;
        let raw = tsig::sign(
            &key,
            &response(9, 9),
            Some(&request.mac),
            now,
            tsig::code::BADTIME,
            tsig::badtime_other(skewed),
        )
        .unwrap()
        .message;
        let err = authenticate(&ctx(), &key, &raw, &request.mac, now).unwrap_err();
        assert!(
            matches!(err, DnsError::NotAuthorized { tsig: Some(TsigError::BadTime { server_time: Some(t), .. }), .. } if t == skewed),
            "{err}"
        );
        assert!(err.to_string().contains("clocks differ by 1000 s"), "{err}");
        assert!(err.is_transient());
    }

    #[test]
    fn rcode_constants_match_hickory() {
        assert_eq!(u16::from(ResponseCode::NoError), RCODE_NOERROR);
        assert_eq!(u16::from(ResponseCode::NXDomain), RCODE_NXDOMAIN);
        assert_eq!(u16::from(ResponseCode::Refused), RCODE_REFUSED);
        assert_eq!(u16::from(ResponseCode::NotAuth), RCODE_NOTAUTH);
    }

    #[test]
    fn rcode_names() {
        assert_eq!(rcode_name(5), "REFUSED");
        assert_eq!(rcode_name(9), "NOTAUTH");
        assert_eq!(rcode_name(42), "RCODE 42");
    }
}
