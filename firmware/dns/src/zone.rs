//! The data of the embedded server's zone, with query answering
//! (RFC 1034 4.3.2, RFC 2308) and RFC 2136 update processing.

use std::collections::BTreeMap;
use std::net::IpAddr;

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, MX, NS, SOA};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordData, RecordType};

use super::client::{parse_name, DesiredRecords, MAX_TTL};
use super::error::ServerError;

/// RFC 1035 3.3.13 SOA REFRESH of the embedded zone, seconds.
const SOA_REFRESH: i32 = 3600;
/// RFC 1035 3.3.13 SOA RETRY, seconds.
const SOA_RETRY: i32 = 600;
/// RFC 1035 3.3.13 SOA EXPIRE, seconds.
const SOA_EXPIRE: i32 = 604_800;
/// RFC 2308 4: SOA MINIMUM is the negative-caching TTL, seconds.
const SOA_MINIMUM: u32 = 60;
/// TTL of the SOA and NS records at the apex, seconds.
const APEX_TTL: u32 = 300;
/// First SOA serial of a new zone.
const INITIAL_SERIAL: u32 = 1;
/// Label of the zone's name server under the apex (SOA MNAME, NS).
const NS_LABEL: &str = "ns1";
/// Label of the zone's contact mailbox under the apex (SOA RNAME).
const HOSTMASTER_LABEL: &str = "hostmaster";
/// RFC 1982 2: half the serial number space.
const SERIAL_HALF: u32 = 1 << 31;

/// Records of the embedded zone besides its SOA and NS: the MX RRset at the
/// apex and the addresses of host names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ZoneData {
    /// TTL of the records (when read back: the MX RRset's, else the first
    /// address RRset's, else the negative-caching TTL).
    pub ttl: u32,
    /// (preference, exchange) of the apex MX RRset, sorted when read back.
    pub mx: Vec<(u16, String)>,
    /// Host name to addresses, names lowercase with a trailing dot when read back.
    pub hosts: BTreeMap<String, Vec<IpAddr>>,
}

impl From<&DesiredRecords> for ZoneData {
    fn from(d: &DesiredRecords) -> Self {
        Self {
            ttl: d.ttl,
            mx: d.mx.clone(),
            hosts: d.hosts.clone(),
        }
    }
}

/// One RRset: a TTL shared by its records (RFC 2181 5.2) and the record data.
#[derive(Clone, Debug, PartialEq)]
struct RRset {
    ttl: u32,
    data: Vec<RData>,
}

/// Result of a lookup.
#[derive(Debug)]
pub(crate) struct Answer {
    pub rcode: ResponseCode,
    pub authoritative: bool,
    pub answers: Vec<Record>,
    pub authority: Vec<Record>,
}

/// The zone: every name (lowercase) to its RRsets by type.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ZoneStore {
    origin: Name,
    nodes: BTreeMap<Name, BTreeMap<RecordType, RRset>>,
}

impl ZoneStore {
    pub(crate) fn new(origin: &Name, initial: &ZoneData) -> Result<Self, ServerError> {
        if initial.ttl > MAX_TTL {
            return Err(ServerError::Config(format!(
                "TTL {} above {MAX_TTL} (RFC 2181 8)",
                initial.ttl
            )));
        }
        let label = |l: &str| {
            origin
                .prepend_label(l)
                .map_err(|e| ServerError::Config(format!("zone {origin} too long: {e}")))
        };
        let ns = label(NS_LABEL)?;
        let soa = SOA::new(
            ns.clone(),
            label(HOSTMASTER_LABEL)?,
            INITIAL_SERIAL,
            SOA_REFRESH,
            SOA_RETRY,
            SOA_EXPIRE,
            SOA_MINIMUM,
        );
        let mut store = Self {
            origin: origin.clone(),
            nodes: BTreeMap::new(),
        };
        store.put(origin, RecordType::SOA, APEX_TTL, vec![RData::SOA(soa)]);
        store.put(origin, RecordType::NS, APEX_TTL, vec![RData::NS(NS(ns))]);
        let mut mx = Vec::new();
        for (pref, exchange) in &initial.mx {
            mx.push(RData::MX(MX::new(
                *pref,
                parse_name(exchange, "MX exchange")?,
            )));
        }
        mx.dedup();
        if !mx.is_empty() {
            store.put(origin, RecordType::MX, initial.ttl, mx);
        }
        for (host, addresses) in &initial.hosts {
            let name = parse_name(host, "host")?;
            if !origin.zone_of(&name) {
                return Err(ServerError::Config(format!(
                    "host {name} is not inside zone {origin}"
                )));
            }
            let mut v4 = Vec::new();
            let mut v6 = Vec::new();
            for a in addresses {
                match a {
                    IpAddr::V4(a) => v4.push(RData::A(A(*a))),
                    IpAddr::V6(a) => v6.push(RData::AAAA(AAAA(*a))),
                }
            }
            v4.dedup();
            v6.dedup();
            if !v4.is_empty() {
                store.put(&name, RecordType::A, initial.ttl, v4);
            }
            if !v6.is_empty() {
                store.put(&name, RecordType::AAAA, initial.ttl, v6);
            }
        }
        Ok(store)
    }

    fn put(&mut self, name: &Name, rtype: RecordType, ttl: u32, data: Vec<RData>) {
        self.nodes
            .entry(name.to_lowercase())
            .or_default()
            .insert(rtype, RRset { ttl, data });
    }

    pub(crate) fn origin(&self) -> &Name {
        &self.origin
    }

    fn soa(&self) -> Option<(&SOA, u32)> {
        let set = self.nodes.get(&self.origin)?.get(&RecordType::SOA)?;
        match set.data.first() {
            Some(RData::SOA(soa)) => Some((soa, set.ttl)),
            _ => None,
        }
    }

    /// The current SOA serial.
    pub(crate) fn serial(&self) -> u32 {
        self.soa().map_or(0, |(soa, _)| soa.serial())
    }

    /// The SOA record for the authority section of a negative answer; its
    /// TTL is min(SOA TTL, SOA MINIMUM) (RFC 2308 3).
    fn negative_soa(&self) -> Vec<Record> {
        match self.soa() {
            Some((soa, ttl)) => {
                vec![Record::from_rdata(
                    self.origin.clone(),
                    ttl.min(soa.minimum()),
                    RData::SOA(soa.clone()),
                )]
            }
            None => Vec::new(),
        }
    }

    fn records(&self, name: &Name, rtype: RecordType, set: &RRset) -> Vec<Record> {
        set.data
            .iter()
            .map(|d| {
                let mut r = Record::from_rdata(name.clone(), set.ttl, d.clone());
                r.set_dns_class(DNSClass::IN);
                debug_assert_eq!(r.record_type(), rtype);
                r
            })
            .collect()
    }

    /// Answers one question (RFC 1034 4.3.2 for an authoritative server,
    /// without CNAME or wildcard processing).
    pub(crate) fn lookup(&self, query: &Query) -> Answer {
        let refused = Answer {
            rcode: ResponseCode::Refused,
            authoritative: false,
            answers: vec![],
            authority: vec![],
        };
        let qname = query.name().to_lowercase();
        // Not our zone: an authoritative-only server refuses (RFC 1034 4.3.2 step 2 with no referral data).
        if !self.origin.zone_of(&qname) {
            return refused;
        }
        if query.query_class() != DNSClass::IN && query.query_class() != DNSClass::ANY {
            return refused;
        }
        let qtype = query.query_type();
        // RFC 5936 2.2 / RFC 1995: zone transfers are not offered.
        if matches!(qtype, RecordType::AXFR | RecordType::IXFR) {
            return refused;
        }
        let mut answer = Answer {
            rcode: ResponseCode::NoError,
            authoritative: true,
            answers: vec![],
            authority: vec![],
        };
        match self.nodes.get(&qname) {
            Some(sets) => {
                for (t, set) in sets {
                    // RFC 1035 3.2.3: QTYPE ANY (*) matches every type.
                    if qtype == RecordType::ANY || *t == qtype {
                        answer.answers.extend(self.records(&qname, *t, set));
                    }
                }
                if answer.answers.is_empty() {
                    // RFC 2308 2.2: NODATA carries the SOA in the authority section.
                    answer.authority = self.negative_soa();
                }
            }
            None => {
                // RFC 8020: a name with descendants exists (empty non-terminal), NODATA.
                let has_descendants = self.nodes.keys().any(|n| qname.zone_of(n) && *n != qname);
                if !has_descendants {
                    // RFC 2308 2.1: NXDOMAIN with the SOA in the authority section.
                    answer.rcode = ResponseCode::NXDomain;
                }
                answer.authority = self.negative_soa();
            }
        }
        answer
    }

    /// Processes an UPDATE (RFC 2136 3) and returns the RCODE. `authorized`
    /// says whether the request was signed with the zone's key (RFC 2136 3.3).
    /// All or nothing: changes are made on a copy that replaces the zone
    /// only when every step succeeded (RFC 2136 3.4).
    pub(crate) fn update(&mut self, request: &Message, authorized: bool) -> ResponseCode {
        // RFC 2136 3.1.1: exactly one zone, of type SOA.
        let [zone] = request.queries() else {
            return ResponseCode::FormErr;
        };
        if zone.query_type() != RecordType::SOA {
            return ResponseCode::FormErr;
        }
        // RFC 2136 3.1.2: a zone we are not authoritative for is NOTAUTH.
        if zone.name() != &self.origin || zone.query_class() != DNSClass::IN {
            return ResponseCode::NotAuth;
        }
        // RFC 2136 3.3: permission. Checked before the prerequisites so that
        // an unauthorized client learns nothing about the zone's content.
        if !authorized {
            return ResponseCode::Refused;
        }
        if let Err(rcode) = self.check_prerequisites(request.answers()) {
            return rcode;
        }
        if let Err(rcode) = self.prescan(request.name_servers()) {
            return rcode;
        }
        let mut next = self.clone();
        let mut soa_set = false;
        for rr in request.name_servers() {
            soa_set |= next.apply(rr);
        }
        if next != *self {
            // RFC 2136 3.6: if the SOA serial was not set by the update, it is incremented.
            if !soa_set {
                next.bump_serial();
            }
            *self = next;
        }
        ResponseCode::NoError
    }

    fn rrset(&self, name: &Name, rtype: RecordType) -> Option<&RRset> {
        self.nodes.get(name).and_then(|sets| sets.get(&rtype))
    }

    fn name_in_use(&self, name: &Name) -> bool {
        self.nodes.get(name).is_some_and(|sets| !sets.is_empty())
    }

    /// RFC 2136 3.2: the prerequisite section.
    fn check_prerequisites(&self, prereqs: &[Record]) -> Result<(), ResponseCode> {
        let mut value_dependent: BTreeMap<(Name, RecordType), Vec<RData>> = BTreeMap::new();
        for rr in prereqs {
            let name = rr.name().to_lowercase();
            // RFC 2136 3.2.1: TTL must be zero.
            if rr.ttl() != 0 {
                return Err(ResponseCode::FormErr);
            }
            // RFC 2136 3.2.1: names outside the zone are NOTZONE.
            if !self.origin.zone_of(&name) {
                return Err(ResponseCode::NotZone);
            }
            let rtype = rr.record_type();
            match rr.dns_class() {
                DNSClass::ANY => {
                    // RFC 2136 3.2.1: RDLENGTH must be zero.
                    if !rr.data().is_update() {
                        return Err(ResponseCode::FormErr);
                    }
                    if rtype == RecordType::ANY {
                        // RFC 2136 2.4.4: name is in use.
                        if !self.name_in_use(&name) {
                            return Err(ResponseCode::NXDomain);
                        }
                    } else if self.rrset(&name, rtype).is_none() {
                        // RFC 2136 2.4.1: RRset exists (value independent).
                        return Err(ResponseCode::NXRRSet);
                    }
                }
                DNSClass::NONE => {
                    // RFC 2136 3.2.2: RDLENGTH must be zero.
                    if !rr.data().is_update() {
                        return Err(ResponseCode::FormErr);
                    }
                    if rtype == RecordType::ANY {
                        // RFC 2136 2.4.5: name is not in use.
                        if self.name_in_use(&name) {
                            return Err(ResponseCode::YXDomain);
                        }
                    } else if self.rrset(&name, rtype).is_some() {
                        // RFC 2136 2.4.3: RRset does not exist.
                        return Err(ResponseCode::YXRRSet);
                    }
                }
                DNSClass::IN => {
                    // RFC 2136 2.4.2: RRset exists (value dependent), compared below.
                    if rr.data().is_update() || rtype == RecordType::ANY {
                        return Err(ResponseCode::FormErr);
                    }
                    let list = value_dependent.entry((name, rtype)).or_default();
                    if !list.contains(rr.data()) {
                        list.push(rr.data().clone());
                    }
                }
                // RFC 2136 3.2.3: any other class is a format error.
                _ => return Err(ResponseCode::FormErr),
            }
        }
        // RFC 2136 3.2.3: each collected RRset must equal the zone's exactly.
        for ((name, rtype), wanted) in &value_dependent {
            let matches = self.rrset(name, *rtype).is_some_and(|set| {
                set.data.len() == wanted.len() && wanted.iter().all(|d| set.data.contains(d))
            });
            if !matches {
                return Err(ResponseCode::NXRRSet);
            }
        }
        Ok(())
    }

    /// RFC 2136 3.4.1: check every update RR before changing anything.
    fn prescan(&self, updates: &[Record]) -> Result<(), ResponseCode> {
        for rr in updates {
            // RFC 2136 3.4.1.1 / 3.4.1.3: names outside the zone are NOTZONE.
            if !self.origin.zone_of(rr.name()) {
                return Err(ResponseCode::NotZone);
            }
            let rtype = rr.record_type();
            let meta = matches!(
                rtype,
                RecordType::ANY
                    | RecordType::AXFR
                    | RecordType::IXFR
                    | RecordType::OPT
                    | RecordType::TSIG
                    | RecordType::SIG
            ) || u16::from(rtype) == MAILA
                || u16::from(rtype) == MAILB;
            let ok = match rr.dns_class() {
                // RFC 2136 3.4.1.3: additions need real data and a real type.
                DNSClass::IN => !meta && !rr.data().is_update(),
                // RFC 2136 3.4.1.3: deletions of RRsets or names: TTL 0, no data,
                // and not AXFR/MAILA/MAILB.
                DNSClass::ANY => {
                    rr.ttl() == 0 && rr.data().is_update() && (rtype == RecordType::ANY || !meta)
                }
                // RFC 2136 3.4.1.3: deletion of one RR: TTL 0, a real type, data.
                DNSClass::NONE => rr.ttl() == 0 && !meta && !rr.data().is_update(),
                _ => false,
            };
            if !ok {
                return Err(ResponseCode::FormErr);
            }
        }
        Ok(())
    }

    /// RFC 2136 3.4.2: applies one update RR. Returns true when it set the SOA.
    fn apply(&mut self, rr: &Record) -> bool {
        let name = rr.name().to_lowercase();
        let rtype = rr.record_type();
        let at_apex = name == self.origin;
        match rr.dns_class() {
            DNSClass::IN => {
                if rtype == RecordType::SOA {
                    // RFC 2136 3.4.2.2: a SOA replaces the zone's only if at the
                    // apex and its serial is greater (RFC 1982).
                    if let (true, RData::SOA(new)) = (at_apex, rr.data()) {
                        if serial_greater(new.serial(), self.serial()) {
                            self.put(&name, RecordType::SOA, rr.ttl(), vec![rr.data().clone()]);
                            return true;
                        }
                    }
                    return false;
                }
                let sets = self.nodes.entry(name.clone()).or_default();
                let has_cname = sets.contains_key(&RecordType::CNAME);
                let has_other = sets.keys().any(|t| *t != RecordType::CNAME);
                // RFC 2136 3.4.2.2: a CNAME does not go where other data is,
                // and other data does not go where a CNAME is.
                if (rtype == RecordType::CNAME && has_other)
                    || (rtype != RecordType::CNAME && has_cname)
                {
                    if sets.is_empty() {
                        self.nodes.remove(&name);
                    }
                    return false;
                }
                let set = sets.entry(rtype).or_insert_with(|| RRset {
                    ttl: rr.ttl(),
                    data: Vec::new(),
                });
                if rtype == RecordType::CNAME {
                    // RFC 2136 3.4.2.2: a CNAME replaces the existing one.
                    set.data.clear();
                }
                // RFC 2136 3.4.2.2: a duplicate replaces the existing RR (so
                // only its TTL can change); RFC 2181 5.2: one TTL per RRset.
                if !set.data.contains(rr.data()) {
                    set.data.push(rr.data().clone());
                }
                set.ttl = rr.ttl();
            }
            DNSClass::ANY => {
                if rtype == RecordType::ANY {
                    // RFC 2136 3.4.2.3: delete all RRsets of the name, but
                    // never the apex SOA and NS.
                    if at_apex {
                        if let Some(sets) = self.nodes.get_mut(&name) {
                            sets.retain(|t, _| matches!(t, RecordType::SOA | RecordType::NS));
                        }
                    } else {
                        self.nodes.remove(&name);
                    }
                } else if !(at_apex && matches!(rtype, RecordType::SOA | RecordType::NS)) {
                    // RFC 2136 3.4.2.3: delete one RRset (apex SOA/NS excepted).
                    if let Some(sets) = self.nodes.get_mut(&name) {
                        sets.remove(&rtype);
                    }
                }
            }
            DNSClass::NONE => {
                // RFC 2136 3.4.2.4: a SOA is never deleted this way.
                if rtype == RecordType::SOA {
                    return false;
                }
                if let Some(set) = self.nodes.get_mut(&name).and_then(|s| s.get_mut(&rtype)) {
                    // RFC 2136 3.4.2.4: the last NS of the apex stays.
                    let last_apex_ns = at_apex && rtype == RecordType::NS && set.data.len() <= 1;
                    if !last_apex_ns {
                        set.data.retain(|d| d != rr.data());
                    }
                }
            }
            _ => {}
        }
        // Drop emptied RRsets and names.
        if let Some(sets) = self.nodes.get_mut(&name) {
            sets.retain(|_, set| !set.data.is_empty());
            if sets.is_empty() {
                self.nodes.remove(&name);
            }
        }
        false
    }

    /// RFC 2136 3.6 / RFC 1982 3.1: serial + 1 in serial arithmetic.
    fn bump_serial(&mut self) {
        let Some((soa, ttl)) = self.soa() else {
            return;
        };
        let next = SOA::new(
            soa.mname().clone(),
            soa.rname().clone(),
            soa.serial().wrapping_add(1),
            soa.refresh(),
            soa.retry(),
            soa.expire(),
            soa.minimum(),
        );
        let origin = self.origin.clone();
        self.put(&origin, RecordType::SOA, ttl, vec![RData::SOA(next)]);
    }

    /// The MX RRset and the addresses of every name, for display.
    pub(crate) fn data(&self) -> ZoneData {
        let mut out = ZoneData {
            ttl: SOA_MINIMUM,
            ..ZoneData::default()
        };
        let mut ttl = None;
        if let Some(set) = self.rrset(&self.origin, RecordType::MX) {
            ttl = Some(set.ttl);
            for d in &set.data {
                if let RData::MX(mx) = d {
                    out.mx
                        .push((mx.preference(), mx.exchange().to_lowercase().to_ascii()));
                }
            }
            out.mx.sort();
        }
        for (name, sets) in &self.nodes {
            let mut addresses = Vec::new();
            for t in [RecordType::A, RecordType::AAAA] {
                if let Some(set) = sets.get(&t) {
                    ttl.get_or_insert(set.ttl);
                    for d in &set.data {
                        match d {
                            RData::A(a) => addresses.push(IpAddr::V4(a.0)),
                            RData::AAAA(a) => addresses.push(IpAddr::V6(a.0)),
                            _ => {}
                        }
                    }
                }
            }
            if !addresses.is_empty() {
                addresses.sort();
                out.hosts.insert(name.to_ascii(), addresses);
            }
        }
        if let Some(ttl) = ttl {
            out.ttl = ttl;
        }
        out
    }

    /// Every record in zone-file form, one per line, in canonical order.
    pub(crate) fn text(&self) -> String {
        let mut out = String::new();
        for (name, sets) in &self.nodes {
            for (rtype, set) in sets {
                for d in &set.data {
                    out.push_str(&format!("{name} {} IN {rtype} {d}\n", set.ttl));
                }
            }
        }
        out
    }
}

/// RFC 1035 3.2.3: MAILA and MAILB type codes (meta types for queries only).
const MAILA: u16 = 254;
const MAILB: u16 = 253;

/// RFC 1982 3.2: s1 > s2 in serial number arithmetic.
fn serial_greater(s1: u32, s2: u32) -> bool {
    (s1 > s2 && s1 - s2 < SERIAL_HALF) || (s1 < s2 && s2 - s1 > SERIAL_HALF)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{MessageType, OpCode};

    fn name(s: &str) -> Name {
        parse_name(s, "test").unwrap()
    }

    fn store() -> ZoneStore {
        let mut hosts = BTreeMap::new();
        hosts.insert(
            "mail.example.test".to_string(),
            vec!["192.0.2.1".parse().unwrap()],
        );
        let data = ZoneData {
            ttl: 60,
            mx: vec![(10, "mx1.example.test".into())],
            hosts,
        };
        ZoneStore::new(&name("example.test"), &data).unwrap()
    }

    fn update(records: Vec<Record>, prereqs: Vec<Record>) -> Message {
        let mut m = Message::new();
        m.set_message_type(MessageType::Query)
            .set_op_code(OpCode::Update);
        m.add_query(Query::query(name("example.test"), RecordType::SOA));
        m.add_answers(prereqs);
        m.add_name_servers(records);
        m
    }

    fn add(owner: &str, ttl: u32, d: RData) -> Record {
        Record::from_rdata(name(owner), ttl, d)
    }

    fn a(s: &str) -> RData {
        RData::A(A(s.parse().unwrap()))
    }

    fn with_class(mut r: Record, c: DNSClass) -> Record {
        r.set_dns_class(c);
        r
    }

    #[test]
    fn initial_zone_has_soa_ns_and_data() {
        let s = store();
        assert_eq!(s.serial(), INITIAL_SERIAL);
        let text = s.text();
        assert!(
            text.contains("example.test. 300 IN SOA ns1.example.test. hostmaster.example.test. 1"),
            "{text}"
        );
        assert!(
            text.contains("example.test. 300 IN NS ns1.example.test."),
            "{text}"
        );
        assert!(
            text.contains("example.test. 60 IN MX 10 mx1.example.test."),
            "{text}"
        );
        assert!(
            text.contains("mail.example.test. 60 IN A 192.0.2.1"),
            "{text}"
        );
        let data = s.data();
        assert_eq!(data.mx, vec![(10, "mx1.example.test.".to_string())]);
        assert_eq!(data.ttl, 60);
    }

    #[test]
    fn hosts_outside_the_zone_are_rejected() {
        let mut hosts = BTreeMap::new();
        hosts.insert("mail.other.test".to_string(), vec![]);
        let data = ZoneData {
            ttl: 60,
            mx: vec![],
            hosts,
        };
        assert!(ZoneStore::new(&name("example.test"), &data).is_err());
    }

    #[test]
    fn lookups_answer_nodata_nxdomain_and_refuse_other_zones() {
        let s = store();
        let q = |n: &str, t| s.lookup(&Query::query(name(n), t));
        let mx = q("EXAMPLE.test", RecordType::MX);
        assert_eq!(mx.rcode, ResponseCode::NoError);
        assert!(mx.authoritative);
        assert_eq!(mx.answers.len(), 1);

        let nodata = q("mail.example.test", RecordType::AAAA);
        assert_eq!(nodata.rcode, ResponseCode::NoError);
        assert!(nodata.answers.is_empty());
        assert_eq!(nodata.authority.len(), 1);
        assert_eq!(nodata.authority[0].ttl(), SOA_MINIMUM);

        let nx = q("nope.example.test", RecordType::A);
        assert_eq!(nx.rcode, ResponseCode::NXDomain);
        assert_eq!(nx.authority[0].record_type(), RecordType::SOA);

        assert_eq!(q("example.org", RecordType::A).rcode, ResponseCode::Refused);
        assert_eq!(
            q("example.test", RecordType::AXFR).rcode,
            ResponseCode::Refused
        );
        assert_eq!(q("example.test", RecordType::ANY).answers.len(), 3);
    }

    #[test]
    fn update_requires_authorization_and_the_right_zone() {
        let mut s = store();
        let up = update(vec![add("mail.example.test", 60, a("192.0.2.2"))], vec![]);
        assert_eq!(s.update(&up, false), ResponseCode::Refused);
        assert_eq!(s.serial(), 1);

        let mut other = up.clone();
        other.queries_mut()[0] = Query::query(name("example.org"), RecordType::SOA);
        assert_eq!(s.update(&other, true), ResponseCode::NotAuth);

        let mut not_soa = up.clone();
        not_soa.queries_mut()[0] = Query::query(name("example.test"), RecordType::A);
        assert_eq!(s.update(&not_soa, true), ResponseCode::FormErr);

        assert_eq!(s.update(&up, true), ResponseCode::NoError);
        assert_eq!(s.serial(), 2);
        assert_eq!(s.data().hosts["mail.example.test."].len(), 2);
        // Re-adding the same data changes nothing and keeps the serial.
        assert_eq!(s.update(&up, true), ResponseCode::NoError);
        assert_eq!(s.serial(), 2);
    }

    #[test]
    fn deletes_follow_rfc2136_rules() {
        let mut s = store();
        let del_rr = with_class(add("mail.example.test", 0, a("192.0.2.1")), DNSClass::NONE);
        let mut del_mx = Record::update0(name("example.test"), 0, RecordType::MX);
        del_mx.set_dns_class(DNSClass::ANY);
        let mut del_apex_ns = Record::update0(name("example.test"), 0, RecordType::NS);
        del_apex_ns.set_dns_class(DNSClass::ANY);
        let mut del_all_apex = Record::update0(name("example.test"), 0, RecordType::ANY);
        del_all_apex.set_dns_class(DNSClass::ANY);
        let up = update(vec![del_rr, del_mx, del_apex_ns, del_all_apex], vec![]);
        assert_eq!(s.update(&up, true), ResponseCode::NoError);
        let text = s.text();
        assert!(text.contains("IN SOA"), "{text}");
        assert!(text.contains("IN NS"), "{text}");
        assert!(!text.contains("IN MX"), "{text}");
        assert!(!text.contains("mail.example.test."), "{text}");
        assert_eq!(s.serial(), 2);
    }

    #[test]
    fn prescan_failure_changes_nothing() {
        let mut s = store();
        let good = add("mail.example.test", 60, a("192.0.2.7"));
        let outside = add("mail.example.org", 60, a("192.0.2.8"));
        let up = update(vec![good, outside], vec![]);
        let before = s.clone();
        assert_eq!(s.update(&up, true), ResponseCode::NotZone);
        assert_eq!(s, before);

        let bad_ttl = with_class(add("mail.example.test", 5, a("192.0.2.1")), DNSClass::NONE);
        assert_eq!(
            s.update(&update(vec![bad_ttl], vec![]), true),
            ResponseCode::FormErr
        );
        assert_eq!(s, before);
    }

    #[test]
    fn prerequisites() {
        let mut s = store();
        let mut exists = Record::update0(name("mail.example.test"), 0, RecordType::A);
        exists.set_dns_class(DNSClass::ANY);
        let mut absent = Record::update0(name("mail.example.test"), 0, RecordType::AAAA);
        absent.set_dns_class(DNSClass::NONE);
        let mut name_unused = Record::update0(name("new.example.test"), 0, RecordType::ANY);
        name_unused.set_dns_class(DNSClass::NONE);
        let value = add("mail.example.test", 0, a("192.0.2.1"));
        let ok = update(
            vec![add("new.example.test", 60, a("192.0.2.5"))],
            vec![exists, absent, name_unused.clone(), value],
        );
        assert_eq!(s.update(&ok, true), ResponseCode::NoError);
        // Now the name is in use.
        let again = update(vec![], vec![name_unused]);
        assert_eq!(s.update(&again, true), ResponseCode::YXDomain);
        let wrong_value = update(vec![], vec![add("mail.example.test", 0, a("192.0.2.99"))]);
        assert_eq!(s.update(&wrong_value, true), ResponseCode::NXRRSet);
    }

    #[test]
    fn soa_replacement_and_serial_arithmetic() {
        assert!(serial_greater(2, 1));
        assert!(serial_greater(0, u32::MAX));
        assert!(!serial_greater(1, 1));
        assert!(!serial_greater(1, 2));
        let mut s = store();
        let soa = SOA::new(
            name("ns1.example.test"),
            name("hostmaster.example.test"),
            100,
            1,
            1,
            1,
            1,
        );
        let up = update(vec![add("example.test", 300, RData::SOA(soa))], vec![]);
        assert_eq!(s.update(&up, true), ResponseCode::NoError);
        assert_eq!(s.serial(), 100);
    }

    #[test]
    fn ttl_change_applies_to_the_whole_rrset() {
        let mut s = store();
        let up = update(vec![add("mail.example.test", 120, a("192.0.2.2"))], vec![]);
        assert_eq!(s.update(&up, true), ResponseCode::NoError);
        assert!(s.text().contains("mail.example.test. 120 IN A 192.0.2.1"));
    }
}
