//! TSIG (RFC 8945) on raw message bytes: signing requests and responses,
//! verifying them, and reading the TSIG error of a response.
//!
//! hickory-proto 0.25 has a TSIG signer, but it does not expose the Error
//! and Other Data fields of a received TSIG record (needed to report BADKEY,
//! BADSIG and BADTIME), nor the unsigned and BADTIME error responses a server
//! must send, so the HMAC part is done here with `ring`.

use std::fmt;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use ring::hmac;

use super::error::DnsError;
use super::wire::{self, RawHeader, WireError, RECORD_FIXED_LEN};

/// RFC 8945 4.2: TSIG is RR type 250.
pub(crate) const TSIG_TYPE: u16 = 250;
/// RFC 8945 4.2: the CLASS of a TSIG record is ANY (255).
pub(crate) const CLASS_ANY: u16 = 255;
/// RFC 8945 10: a fudge of 300 seconds is recommended.
pub const TSIG_FUDGE_SECS: u16 = 300;
/// RFC 8945 5.2.2: a MAC shorter than max(10 octets, half the hash output)
/// is a format error.
const MIN_MAC_FLOOR: usize = 10;
/// RFC 8945 4.2: Time Signed is a 48-bit number of seconds.
const MAX_TIME_SIGNED: u64 = (1 << 48) - 1;
/// RFC 8945 4.2: length of Other Data in a BADTIME response (48-bit time).
const BADTIME_OTHER_LEN: usize = 6;

/// TSIG error codes (RFC 8945 4.2 Error field; values from the IANA DNS
/// RCODE registry).
pub(crate) mod code {
    /// RFC 8945 5.2.2: the MAC did not verify.
    pub const BADSIG: u16 = 16;
    /// RFC 8945 5.2.1: the key or algorithm is not known.
    pub const BADKEY: u16 = 17;
    /// RFC 8945 5.2.3: the time is outside the fudge window.
    pub const BADTIME: u16 = 18;
    /// RFC 8945 5.2.4: the MAC was truncated below local policy.
    pub const BADTRUNC: u16 = 22;
}

/// MAC algorithms a key can use (RFC 8945 6). hmac-sha256 is the one
/// RFC 8945 6 recommends; the longer SHA-2 variants cost nothing extra.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TsigAlgorithm {
    /// "hmac-sha256" (RFC 8945 6: MUST implement, RECOMMENDED to use).
    HmacSha256,
    /// "hmac-sha384" (RFC 8945 6: MAY).
    HmacSha384,
    /// "hmac-sha512" (RFC 8945 6: MAY).
    HmacSha512,
}

impl TsigAlgorithm {
    /// The algorithm's name as it appears in the TSIG record and in BIND's
    /// `key` statements (RFC 8945 6).
    pub fn name(self) -> &'static str {
        match self {
            Self::HmacSha256 => "hmac-sha256",
            Self::HmacSha384 => "hmac-sha384",
            Self::HmacSha512 => "hmac-sha512",
        }
    }

    /// Length of the untruncated MAC in octets.
    pub fn mac_len(self) -> usize {
        self.ring().digest_algorithm().output_len()
    }

    fn ring(self) -> hmac::Algorithm {
        match self {
            Self::HmacSha256 => hmac::HMAC_SHA256,
            Self::HmacSha384 => hmac::HMAC_SHA384,
            Self::HmacSha512 => hmac::HMAC_SHA512,
        }
    }

    fn wire_name(self) -> Vec<u8> {
        // The names are constant and valid.
        let mut out = Vec::with_capacity(16);
        let name = self.name();
        out.push(name.len() as u8);
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out
    }
}

impl fmt::Display for TsigAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for TsigAlgorithm {
    type Err = DnsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().trim_end_matches('.').to_ascii_lowercase();
        match lower.as_str() {
            "hmac-sha256" => Ok(Self::HmacSha256),
            "hmac-sha384" => Ok(Self::HmacSha384),
            "hmac-sha512" => Ok(Self::HmacSha512),
            _ => Err(DnsError::Config(format!(
                "unsupported TSIG algorithm {s:?} (use hmac-sha256)"
            ))),
        }
    }
}

/// A shared TSIG key: its name (which must be the same on client and
/// server), its algorithm and its secret.
#[derive(Clone, PartialEq, Eq)]
pub struct TsigKey {
    /// Key name, e.g. "mailfort-announcer." (a domain name).
    pub name: String,
    /// MAC algorithm.
    pub algorithm: TsigAlgorithm,
    /// The raw shared secret.
    pub secret: Vec<u8>,
}

impl fmt::Debug for TsigKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TsigKey")
            .field("name", &self.name)
            .field("algorithm", &self.algorithm)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl TsigKey {
    /// A key from its parts; checks that the name is a valid domain name and
    /// the secret is not empty.
    pub fn new(name: &str, algorithm: TsigAlgorithm, secret: Vec<u8>) -> Result<Self, DnsError> {
        let name = name.trim();
        wire::canonical_name(name)
            .map_err(|e| DnsError::Config(format!("invalid TSIG key name: {e}")))?;
        if name.is_empty() || name == "." {
            return Err(DnsError::Config("TSIG key name is empty".into()));
        }
        if secret.is_empty() {
            return Err(DnsError::Config(format!(
                "TSIG key {name}: the secret is empty"
            )));
        }
        Ok(Self {
            name: name.to_owned(),
            algorithm,
            secret,
        })
    }

    /// A key as written in a BIND `key` statement: name, algorithm name
    /// ("hmac-sha256") and base64 secret.
    pub fn from_base64(name: &str, algorithm: &str, secret_base64: &str) -> Result<Self, DnsError> {
        let algorithm = algorithm.parse::<TsigAlgorithm>()?;
        let secret = base64::engine::general_purpose::STANDARD
            .decode(secret_base64.trim())
            .map_err(|e| DnsError::Config(format!("TSIG key {name}: secret is not base64: {e}")))?;
        Self::new(name, algorithm, secret)
    }

    /// A fresh random key whose secret is as long as the MAC, the length
    /// RFC 8945 8 recommends at least.
    pub fn generate(name: &str, algorithm: TsigAlgorithm) -> Result<Self, DnsError> {
        let mut secret = vec![0u8; algorithm.mac_len()];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut secret);
        Self::new(name, algorithm, secret)
    }

    /// The secret in base64, as a BIND `key` statement wants it.
    pub fn secret_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(&self.secret)
    }

    pub(crate) fn wire_name(&self) -> Result<Vec<u8>, WireError> {
        wire::canonical_name(&self.name)
    }

    fn mac(&self, input: &[u8]) -> Vec<u8> {
        let key = hmac::Key::new(self.algorithm.ring(), &self.secret);
        hmac::sign(&key, input).as_ref().to_vec()
    }
}

/// The fields of a TSIG record (RFC 8945 4.2), names in canonical wire form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TsigRecord {
    pub key_name: Vec<u8>,
    pub algorithm: Vec<u8>,
    pub time_signed: u64,
    pub fudge: u16,
    pub mac: Vec<u8>,
    pub original_id: u16,
    pub error: u16,
    pub other: Vec<u8>,
}

impl TsigRecord {
    fn parse(buf: &[u8], start: usize, end: usize) -> Result<Self, WireError> {
        let (key_name, after_name) = wire::read_name(buf, start)?;
        // TYPE was checked by the caller; CLASS and TTL: RFC 8945 4.2.
        let class = wire::u16_at(buf, after_name + 2)?;
        let ttl = wire::u32_at(buf, after_name + 4)?;
        if class != CLASS_ANY {
            return Err(WireError::BadTsig("CLASS is not ANY"));
        }
        if ttl != 0 {
            return Err(WireError::BadTsig("TTL is not 0"));
        }
        let rdata_start = after_name + RECORD_FIXED_LEN;
        let (algorithm, mut pos) = wire::read_name(buf, rdata_start)?;
        let time_signed = wire::u48_at(buf, pos)?;
        let fudge = wire::u16_at(buf, pos + 6)?;
        let mac_len = usize::from(wire::u16_at(buf, pos + 8)?);
        pos += 10;
        let mac = buf
            .get(pos..pos + mac_len)
            .ok_or(WireError::BadTsig("MAC overruns the record"))?;
        pos += mac_len;
        let original_id = wire::u16_at(buf, pos)?;
        let error = wire::u16_at(buf, pos + 2)?;
        let other_len = usize::from(wire::u16_at(buf, pos + 4)?);
        pos += 6;
        let other = buf
            .get(pos..pos + other_len)
            .ok_or(WireError::BadTsig("Other Data overruns the record"))?;
        pos += other_len;
        if pos != end {
            return Err(WireError::BadTsig("RDLENGTH does not match the fields"));
        }
        Ok(Self {
            key_name,
            algorithm,
            time_signed,
            fudge,
            mac: mac.to_vec(),
            original_id,
            error,
            other: other.to_vec(),
        })
    }

    /// RFC 8945 4.3.3: the TSIG variables that enter the MAC.
    fn variables(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.key_name.len() + self.algorithm.len() + 24);
        out.extend_from_slice(&self.key_name);
        out.extend_from_slice(&CLASS_ANY.to_be_bytes());
        out.extend_from_slice(&0u32.to_be_bytes());
        out.extend_from_slice(&self.algorithm);
        out.extend_from_slice(&time48(self.time_signed));
        out.extend_from_slice(&self.fudge.to_be_bytes());
        out.extend_from_slice(&self.error.to_be_bytes());
        out.extend_from_slice(&(self.other.len() as u16).to_be_bytes());
        out.extend_from_slice(&self.other);
        out
    }

    /// The whole record as it is appended to a message (RFC 8945 4.2).
    fn encode(&self) -> Result<Vec<u8>, WireError> {
        let mut rdata =
            Vec::with_capacity(self.algorithm.len() + 16 + self.mac.len() + self.other.len());
        rdata.extend_from_slice(&self.algorithm);
        rdata.extend_from_slice(&time48(self.time_signed));
        rdata.extend_from_slice(&self.fudge.to_be_bytes());
        let mac_len =
            u16::try_from(self.mac.len()).map_err(|_| WireError::BadTsig("MAC too long"))?;
        rdata.extend_from_slice(&mac_len.to_be_bytes());
        rdata.extend_from_slice(&self.mac);
        rdata.extend_from_slice(&self.original_id.to_be_bytes());
        rdata.extend_from_slice(&self.error.to_be_bytes());
        let other_len = u16::try_from(self.other.len())
            .map_err(|_| WireError::BadTsig("Other Data too long"))?;
        rdata.extend_from_slice(&other_len.to_be_bytes());
        rdata.extend_from_slice(&self.other);
        let rdlength =
            u16::try_from(rdata.len()).map_err(|_| WireError::BadTsig("record too long"))?;

        let mut out = Vec::with_capacity(self.key_name.len() + RECORD_FIXED_LEN + rdata.len());
        out.extend_from_slice(&self.key_name);
        out.extend_from_slice(&TSIG_TYPE.to_be_bytes());
        out.extend_from_slice(&CLASS_ANY.to_be_bytes());
        out.extend_from_slice(&0u32.to_be_bytes());
        out.extend_from_slice(&rdlength.to_be_bytes());
        out.extend_from_slice(&rdata);
        Ok(out)
    }

    /// The server's clock from a BADTIME response (RFC 8945 5.2.3).
    pub(crate) fn other_time(&self) -> Option<u64> {
        if self.other.len() == BADTIME_OTHER_LEN {
            wire::u48_at(&self.other, 0).ok()
        } else {
            None
        }
    }
}

fn time48(t: u64) -> [u8; 6] {
    let b = t.min(MAX_TIME_SIGNED).to_be_bytes();
    [b[2], b[3], b[4], b[5], b[6], b[7]]
}

/// Seconds since the epoch, for Time Signed (RFC 8945 4.2).
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A message with its TSIG record taken off.
#[derive(Clone, Debug)]
pub(crate) struct Stripped {
    /// The message without the TSIG record, ARCOUNT decremented: what
    /// RFC 8945 4.3.2 calls the DNS Message (except for the ID, see
    /// [`mac_input`]).
    pub message: Vec<u8>,
    pub tsig: TsigRecord,
}

/// Takes the TSIG record off a message. `Ok(None)` when the message has no
/// TSIG record. A TSIG record anywhere but last, or more than one, is an
/// error (RFC 8945 5.2: FORMERR).
pub(crate) fn strip(buf: &[u8]) -> Result<Option<Stripped>, WireError> {
    let (header, spans) = wire::record_spans(buf)?;
    let Some((last, earlier)) = spans.split_last() else {
        return Ok(None);
    };
    let (start, end) = (last.start, last.end);
    // RFC 8945 5.2: the TSIG record MUST be the last record of the additional section.
    if earlier.iter().any(|span| span.rtype == TSIG_TYPE) {
        return Err(WireError::TsigNotLast);
    }
    if last.rtype != TSIG_TYPE {
        return Ok(None);
    }
    if header.arcount == 0 {
        return Err(WireError::TsigNotLast);
    }
    if end != buf.len() {
        return Err(WireError::BadTsig("octets after the TSIG record"));
    }
    let tsig = TsigRecord::parse(buf, start, end)?;
    let mut message = buf[..start].to_vec();
    wire::adjust_arcount(&mut message, -1)?;
    Ok(Some(Stripped { message, tsig }))
}

/// The octets a MAC is computed over: RFC 8945 4.3.1 (the request MAC, for
/// a response), 4.3.2 (the message without TSIG, with the original ID) and
/// 4.3.3 (the TSIG variables).
fn mac_input(request_mac: Option<&[u8]>, message: &[u8], tsig: &TsigRecord) -> Vec<u8> {
    let vars = tsig.variables();
    let mut out =
        Vec::with_capacity(2 + request_mac.map_or(0, <[u8]>::len) + message.len() + vars.len());
    if let Some(mac) = request_mac {
        // RFC 8945 4.3.1: MAC Size then MAC of the request.
        out.extend_from_slice(&(mac.len() as u16).to_be_bytes());
        out.extend_from_slice(mac);
    }
    // RFC 8945 4.3.2: if the ID differs from the original ID, the original
    // ID is substituted.
    out.extend_from_slice(&tsig.original_id.to_be_bytes());
    out.extend_from_slice(message.get(2..).unwrap_or(&[]));
    out.extend_from_slice(&vars);
    out
}

/// What a TSIG-signed message looks like once signed.
pub(crate) struct Signed {
    pub message: Vec<u8>,
    pub mac: Vec<u8>,
}

/// Signs `message` (which has no TSIG record yet): RFC 8945 5.1 for a
/// request (`request_mac` None), RFC 8945 5.3 for a response.
pub(crate) fn sign(
    key: &TsigKey,
    message: &[u8],
    request_mac: Option<&[u8]>,
    time_signed: u64,
    error: u16,
    other: Vec<u8>,
) -> Result<Signed, WireError> {
    let header = RawHeader::parse(message)?;
    let mut tsig = TsigRecord {
        key_name: key.wire_name()?,
        algorithm: key.algorithm.wire_name(),
        time_signed,
        fudge: TSIG_FUDGE_SECS,
        mac: Vec::new(),
        // RFC 8945 4.2: Original ID is the message ID when it is signed.
        original_id: header.id,
        error,
        other,
    };
    tsig.mac = key.mac(&mac_input(request_mac, message, &tsig));
    let mut out = message.to_vec();
    wire::adjust_arcount(&mut out, 1)?;
    out.extend_from_slice(&tsig.encode()?);
    Ok(Signed {
        message: out,
        mac: tsig.mac,
    })
}

/// Appends an unsigned TSIG record carrying `error` (RFC 8945 5.3.2: an
/// error about the key or the MAC is answered with MAC Size 0), echoing the
/// request's key and algorithm names.
pub(crate) fn append_unsigned_error(
    message: &[u8],
    request: &TsigRecord,
    time_signed: u64,
    error: u16,
) -> Result<Vec<u8>, WireError> {
    let tsig = TsigRecord {
        key_name: request.key_name.clone(),
        algorithm: request.algorithm.clone(),
        time_signed,
        fudge: request.fudge,
        mac: Vec::new(),
        original_id: request.original_id,
        error,
        other: Vec::new(),
    };
    let mut out = message.to_vec();
    wire::adjust_arcount(&mut out, 1)?;
    out.extend_from_slice(&tsig.encode()?);
    Ok(out)
}

/// The outcome of checking a TSIG record against our key (RFC 8945 5.2 for
/// a request, 5.4 for a response).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Check {
    Valid,
    /// RFC 8945 5.2.1: unknown key name or algorithm.
    BadKey,
    /// RFC 8945 5.2.2: the MAC does not verify.
    BadSig,
    /// RFC 8945 5.2.2: a MAC length no policy could accept.
    FormErr,
    /// RFC 8945 5.2.3: outside the time window; the MAC did verify.
    BadTime,
    /// RFC 8945 5.2.4: a valid but truncated MAC, which we do not accept.
    BadTrunc,
}

/// Checks the TSIG of `stripped` with `key`, in the order RFC 8945 5.2
/// gives: key, MAC, time, truncation.
pub(crate) fn check(
    key: &TsigKey,
    request_mac: Option<&[u8]>,
    stripped: &Stripped,
    now: u64,
) -> Check {
    let tsig = &stripped.tsig;
    // RFC 8945 5.2.1: the key name and algorithm must be known.
    let Ok(our_name) = key.wire_name() else {
        return Check::BadKey;
    };
    if tsig.key_name != our_name || tsig.algorithm != key.algorithm.wire_name() {
        return Check::BadKey;
    }
    // RFC 8945 5.2.2: a MAC longer than the hash output, or shorter than
    // max(10, half the output), is a format error.
    let full = key.algorithm.mac_len();
    let min = MIN_MAC_FLOOR.max(full / 2);
    if tsig.mac.len() > full || tsig.mac.len() < min {
        return Check::FormErr;
    }
    let computed = key.mac(&mac_input(request_mac, &stripped.message, tsig));
    if !constant_time_eq(&computed[..tsig.mac.len()], &tsig.mac) {
        return Check::BadSig;
    }
    // RFC 8945 5.2.3: now must lie within Time Signed +/- Fudge.
    let low = tsig.time_signed.saturating_sub(u64::from(tsig.fudge));
    let high = tsig.time_signed.saturating_add(u64::from(tsig.fudge));
    if now < low || now > high {
        return Check::BadTime;
    }
    // RFC 8945 5.2.4: our local policy accepts only untruncated MACs.
    if tsig.mac.len() < full {
        return Check::BadTrunc;
    }
    Check::Valid
}

/// Compares two equal-length slices without an early exit.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The Other Data of a BADTIME response: the server's current time
/// (RFC 8945 5.2.3).
pub(crate) fn badtime_other(now: u64) -> Vec<u8> {
    time48(now).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> TsigKey {
        TsigKey::from_base64(
            "Test-Key.",
            "hmac-sha256",
            "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTEyMw==",
        )
        .unwrap()
    }

    /// A query for "example.test. SOA IN" with the given id.
    fn query(id: u16) -> Vec<u8> {
        let mut m = id.to_be_bytes().to_vec();
        m.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
        m.extend_from_slice(b"\x07example\x04test\x00\x00\x06\x00\x01");
        m
    }

    #[test]
    fn algorithm_names_parse() {
        assert_eq!(
            "hmac-sha256".parse::<TsigAlgorithm>().unwrap(),
            TsigAlgorithm::HmacSha256
        );
        assert_eq!(
            "HMAC-SHA256.".parse::<TsigAlgorithm>().unwrap(),
            TsigAlgorithm::HmacSha256
        );
        assert!("hmac-md5".parse::<TsigAlgorithm>().is_err());
        assert_eq!(TsigAlgorithm::HmacSha256.mac_len(), 32);
    }

    #[test]
    fn key_from_base64_rejects_garbage() {
        assert!(TsigKey::from_base64("k.", "hmac-sha256", "not base64!").is_err());
        assert!(TsigKey::from_base64("k.", "hmac-sha256", "").is_err());
        assert!(TsigKey::from_base64("", "hmac-sha256", "AAAA").is_err());
        let k = key();
        assert!(!format!("{k:?}").contains("secret-secret"));
        assert_eq!(
            TsigKey::from_base64("Test-Key.", "hmac-sha256", &k.secret_base64()).unwrap(),
            k
        );
    }

    #[test]
    fn sign_then_strip_then_check() {
        let k = key();
        let now = 1_700_000_000;
        let signed = sign(&k, &query(0x1234), None, now, 0, Vec::new()).unwrap();
        let header = RawHeader::parse(&signed.message).unwrap();
        assert_eq!(header.arcount, 1);
        let stripped = strip(&signed.message).unwrap().unwrap();
        assert_eq!(stripped.message, query(0x1234));
        assert_eq!(stripped.tsig.key_name, b"\x08test-key\x00".to_vec());
        assert_eq!(stripped.tsig.algorithm, b"\x0bhmac-sha256\x00".to_vec());
        assert_eq!(stripped.tsig.mac, signed.mac);
        assert_eq!(stripped.tsig.original_id, 0x1234);
        assert_eq!(stripped.tsig.fudge, TSIG_FUDGE_SECS);
        assert_eq!(check(&k, None, &stripped, now), Check::Valid);
        assert_eq!(check(&k, None, &stripped, now + 301), Check::BadTime);
        assert_eq!(check(&k, None, &stripped, now - 301), Check::BadTime);
    }

    #[test]
    fn mac_covers_original_id_not_wire_id() {
        // RFC 8945 4.3.2: a forwarder may change the ID; the MAC still
        // verifies because the original ID is substituted.
        let k = key();
        let signed = sign(&k, &query(7), None, 100, 0, Vec::new()).unwrap();
        let mut changed = signed.message.clone();
        changed[0..2].copy_from_slice(&99u16.to_be_bytes());
        let stripped = strip(&changed).unwrap().unwrap();
        assert_eq!(check(&k, None, &stripped, 100), Check::Valid);
    }

    #[test]
    fn wrong_secret_or_name_or_tampering_fail() {
        let k = key();
        let signed = sign(&k, &query(1), None, 100, 0, Vec::new()).unwrap();
        let stripped = strip(&signed.message).unwrap().unwrap();

        let mut other_secret = k.clone();
        other_secret.secret = b"another secret".to_vec();
        assert_eq!(check(&other_secret, None, &stripped, 100), Check::BadSig);

        let other_name =
            TsigKey::new("other.", TsigAlgorithm::HmacSha256, k.secret.clone()).unwrap();
        assert_eq!(check(&other_name, None, &stripped, 100), Check::BadKey);

        let other_alg =
            TsigKey::new("test-key.", TsigAlgorithm::HmacSha512, k.secret.clone()).unwrap();
        assert_eq!(check(&other_alg, None, &stripped, 100), Check::BadKey);

        let mut tampered = signed.message.clone();
        tampered[14] ^= 0x01; // a letter of the question name
        let stripped = strip(&tampered).unwrap().unwrap();
        assert_eq!(check(&k, None, &stripped, 100), Check::BadSig);
    }

    #[test]
    fn response_mac_chains_request_mac() {
        // RFC 8945 4.3.1: the response MAC covers the request MAC.
        let k = key();
        let request = sign(&k, &query(5), None, 100, 0, Vec::new()).unwrap();
        let mut response = query(5);
        response[2] = 0x84; // QR, AA
        let signed = sign(&k, &response, Some(&request.mac), 101, 0, Vec::new()).unwrap();
        let stripped = strip(&signed.message).unwrap().unwrap();
        assert_eq!(check(&k, Some(&request.mac), &stripped, 101), Check::Valid);
        assert_eq!(check(&k, None, &stripped, 101), Check::BadSig);
        assert_eq!(check(&k, Some(&[0u8; 32]), &stripped, 101), Check::BadSig);
    }

    #[test]
    fn truncated_and_oversized_macs() {
        let k = key();
        let signed = sign(&k, &query(1), None, 100, 0, Vec::new()).unwrap();
        let mut stripped = strip(&signed.message).unwrap().unwrap();
        stripped.tsig.mac.truncate(16);
        assert_eq!(check(&k, None, &stripped, 100), Check::BadTrunc);
        stripped.tsig.mac.truncate(8);
        assert_eq!(check(&k, None, &stripped, 100), Check::FormErr);
        stripped.tsig.mac = vec![0; 40];
        assert_eq!(check(&k, None, &stripped, 100), Check::FormErr);
    }

    #[test]
    fn unsigned_error_and_badtime_fields_round_trip() {
        let k = key();
        let request = sign(&k, &query(3), None, 100, 0, Vec::new()).unwrap();
        let req = strip(&request.message).unwrap().unwrap();
        let out = append_unsigned_error(&query(3), &req.tsig, 200, code::BADKEY).unwrap();
        let got = strip(&out).unwrap().unwrap();
        assert_eq!(got.tsig.error, code::BADKEY);
        assert!(got.tsig.mac.is_empty());
        assert_eq!(got.tsig.key_name, req.tsig.key_name);

        let bt = sign(
            &k,
            &query(3),
            Some(&request.mac),
            100,
            code::BADTIME,
            badtime_other(5000),
        )
        .unwrap();
        let got = strip(&bt.message).unwrap().unwrap();
        assert_eq!(got.tsig.error, code::BADTIME);
        assert_eq!(got.tsig.other_time(), Some(5000));
    }

    #[test]
    fn strip_finds_no_tsig_and_rejects_misplaced_tsig() {
        assert!(strip(&query(1)).unwrap().is_none());
        let k = key();
        let signed = sign(&k, &query(1), None, 100, 0, Vec::new()).unwrap();
        // Sign twice: the first TSIG is then not last.
        let twice = sign(&k, &signed.message, None, 100, 0, Vec::new()).unwrap();
        assert_eq!(strip(&twice.message).unwrap_err(), WireError::TsigNotLast);
        // Garbage after the message.
        let mut trailing = signed.message.clone();
        trailing.push(0);
        assert!(strip(&trailing).is_err());
    }

    /// A known answer computed independently (Python's hmac module) over the
    /// RFC 8945 4.3 input for the query above signed at time 1700000000.
    #[test]
    fn known_answer_mac() {
        let k = key();
        let signed = sign(&k, &query(0x1234), None, 1_700_000_000, 0, Vec::new()).unwrap();
        let hex: String = signed.mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, KNOWN_MAC);
    }

    const KNOWN_MAC: &str = "f47e82e4b151cf48dda2e4263d8c2682ad1b96857e35aab6b4c9f29f4d47e4ad";
}
