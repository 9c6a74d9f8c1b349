//! Where a message to be checked lies, and reading it in bounded pieces:
//! the header section once, up to [`MAX_HEADER_SECTION`], then the body in
//! chunks of [`BODY_CHUNK`] through every body hash the signatures ask for.
//! Memory per check does not grow with the message.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::PathBuf;

use mail_auth::common::crypto::{HashAlgorithm, HashContext, HashImpl, HashOutput, Sha1, Sha256};
use mail_auth::common::headers::Writer;
use mail_auth::dkim::canonicalize::BodyHasher;
use mail_auth::dkim::Canonicalization;

/// The largest header section read for the checks. Postfix refuses
/// headers over 100 KiB by default (header_size_limit); a DKIM signature
/// and a long Received chain fit many times over. A larger header section
/// is looked at up to this size and its signatures are not verified.
pub const MAX_HEADER_SECTION: usize = 256 * 1024;
/// The body is read and hashed in pieces of this size.
pub const BODY_CHUNK: usize = 64 * 1024;
/// The header section is looked for in steps of this size.
const HEAD_STEP: usize = 16 * 1024;

/// A message to check, as the client sent it: bytes `start..end` of a spool
/// file, followed by `tail` (what has not been written to the file yet).
#[derive(Debug, Clone)]
pub struct MessageSource<'a> {
    spool: Option<(PathBuf, u64, u64)>,
    tail: &'a [u8],
    smtputf8: bool,
}

impl<'a> MessageSource<'a> {
    /// A message wholly in memory.
    pub fn memory(message: &'a [u8]) -> MessageSource<'a> {
        MessageSource { spool: None, tail: message, smtputf8: false }
    }

    /// Bytes `start..end` of the file at `path`, then `tail`.
    pub fn spooled(path: PathBuf, start: u64, end: u64, tail: &'a [u8]) -> MessageSource<'a> {
        MessageSource { spool: Some((path, start, end.max(start))), tail, smtputf8: false }
    }

    /// The message came with SMTPUTF8 (RFC 6531): the results may name
    /// its addresses in UTF-8 (RFC 8616 3).
    pub fn smtputf8(mut self, on: bool) -> MessageSource<'a> {
        self.smtputf8 = on;
        self
    }

    pub(crate) fn is_smtputf8(&self) -> bool {
        self.smtputf8
    }

    /// The message's size in bytes.
    pub fn len(&self) -> u64 {
        self.file_len() + self.tail.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn file_len(&self) -> u64 {
        self.spool.as_ref().map_or(0, |(_, s, e)| e - s)
    }

    /// The header section, read once and at most [`MAX_HEADER_SECTION`]
    /// bytes of it.
    pub(crate) async fn read_head(&self) -> io::Result<Head> {
        let mut buf = Vec::new();
        if let Some((path, start, end)) = self.spool.clone() {
            let want = (end - start).min(MAX_HEADER_SECTION as u64 + 1) as usize;
            buf = blocking(move || {
                let mut f = File::open(&path)?;
                f.seek(SeekFrom::Start(start))?;
                let mut buf = Vec::with_capacity(HEAD_STEP.min(want));
                while buf.len() < want {
                    let n = (want - buf.len()).min(HEAD_STEP);
                    let at = buf.len();
                    buf.resize(at + n, 0);
                    let got = f.read(&mut buf[at..])?;
                    buf.truncate(at + got);
                    if got == 0 {
                        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "spool file shorter than written"));
                    }
                    if head_end(&buf[at.saturating_sub(3)..]).is_some() {
                        break;
                    }
                }
                Ok(buf)
            })
            .await?;
        }
        if head_end(&buf).is_none() && buf.len() <= MAX_HEADER_SECTION {
            let room = MAX_HEADER_SECTION + 1 - buf.len();
            buf.extend_from_slice(&self.tail[..self.tail.len().min(room)]);
        }
        Ok(Head::from_prefix(buf, self.len()))
    }

    /// Feeds the body (everything from byte `from` on) through `hashers`,
    /// [`BODY_CHUNK`] bytes at a time; the file is read on the blocking
    /// pool.
    pub(crate) async fn hash_body(&self, from: u64, mut hashers: BodyHashers) -> io::Result<BodyHashers> {
        if hashers.is_empty() {
            return Ok(hashers);
        }
        let file_len = self.file_len();
        if let Some((path, start, end)) = self.spool.clone() {
            if from < file_len {
                hashers = blocking(move || {
                    let mut f = File::open(&path)?;
                    f.seek(SeekFrom::Start(start + from))?;
                    let mut left = end - start - from;
                    let mut buf = vec![0u8; BODY_CHUNK];
                    while left > 0 {
                        let n = f.read(&mut buf[..(left.min(BODY_CHUNK as u64) as usize)])?;
                        if n == 0 {
                            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "spool file shorter than written"));
                        }
                        hashers.write(&buf[..n]);
                        left -= n as u64;
                    }
                    Ok(hashers)
                })
                .await?;
            }
        }
        let skip = from.saturating_sub(file_len).min(self.tail.len() as u64) as usize;
        for chunk in self.tail[skip..].chunks(BODY_CHUNK) {
            hashers.write(chunk);
            // A large message in memory does not hold the runtime thread.
            tokio::task::yield_now().await;
        }
        Ok(hashers)
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> io::Result<T> + Send + 'static) -> io::Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(io::Error::other)?
}

/// Where the header section in `buf` ends: after the empty line that ends
/// it (RFC 5322 2.1).
fn head_end(buf: &[u8]) -> Option<usize> {
    if buf.starts_with(b"\r\n") {
        return Some(2);
    }
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

/// The header section of a message in memory, with the empty line that
/// ends it; the whole message when it has no body.
pub(crate) fn header_section(message: &[u8]) -> &[u8] {
    &message[..head_end(message).unwrap_or(message.len())]
}

/// The header section of a message as read for the checks.
#[derive(Debug)]
pub(crate) struct Head {
    /// The header section with the empty line that ends it; when it is
    /// over [`MAX_HEADER_SECTION`], its first whole lines up to that size.
    pub bytes: Vec<u8>,
    /// The whole header section was read: the body starts at
    /// `bytes.len()`.
    pub complete: bool,
}

impl Head {
    /// The header section found at the start of `prefix`, the first bytes
    /// of a message of `total` bytes.
    pub fn from_prefix(mut prefix: Vec<u8>, total: u64) -> Head {
        if let Some(end) = head_end(&prefix) {
            prefix.truncate(end);
            return Head { bytes: prefix, complete: true };
        }
        if prefix.len() as u64 >= total && prefix.len() <= MAX_HEADER_SECTION {
            // RFC 5322 2.1: a message may have no body (and no empty line).
            return Head { bytes: prefix, complete: true };
        }
        // Too large: whole lines only.
        let keep = prefix[..prefix.len().min(MAX_HEADER_SECTION)].iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
        prefix.truncate(keep);
        Head { bytes: prefix, complete: false }
    }
}

/// A hash context that takes at most `limit` canonicalised octets (RFC
/// 6376 3.5 l=: the count is of the body after canonicalisation; 0: all).
pub(crate) struct Limited<H> {
    inner: H,
    left: Option<u64>,
}

impl<H: Writer> Writer for Limited<H> {
    fn write(&mut self, buf: &[u8]) {
        match self.left.as_mut() {
            None => self.inner.write(buf),
            Some(left) => {
                let n = (*left).min(buf.len() as u64) as usize;
                self.inner.write(&buf[..n]);
                *left -= n as u64;
            }
        }
    }
}

impl<H: HashContext> HashContext for Limited<H> {
    fn complete(self) -> HashOutput {
        self.inner.complete()
    }
}

type Ctx = <Sha256 as HashImpl>::Context;

/// The body hashes one message needs: one per distinct (body
/// canonicalisation, hash, l=) that its signatures name (RFC 6376 3.7),
/// each fed the body once.
pub(crate) struct BodyHashers {
    hashers: Vec<((Canonicalization, HashAlgorithm, u64), BodyHasher<Limited<Ctx>>)>,
}

impl BodyHashers {
    pub fn new(wanted: impl IntoIterator<Item = (Canonicalization, HashAlgorithm, u64)>) -> BodyHashers {
        let mut hashers: Vec<((Canonicalization, HashAlgorithm, u64), BodyHasher<Limited<Ctx>>)> = Vec::new();
        for key in wanted {
            if hashers.iter().any(|(k, _)| *k == key) {
                continue;
            }
            let (cb, ha, l) = key;
            // RFC 6376 3.3: rsa-sha1 is for verifying old signatures only;
            // this crate never signs with it.
            let ctx = match ha {
                HashAlgorithm::Sha1 => <Sha1 as HashImpl>::hasher(),
                HashAlgorithm::Sha256 => <Sha256 as HashImpl>::hasher(),
            };
            let limited = Limited { inner: ctx, left: (l > 0).then_some(l) };
            hashers.push((key, BodyHasher::new(limited, cb, 0)));
        }
        BodyHashers { hashers }
    }

    pub fn is_empty(&self) -> bool {
        self.hashers.is_empty()
    }

    fn write(&mut self, chunk: &[u8]) {
        for (_, h) in &mut self.hashers {
            h.write(chunk);
        }
    }

    /// The finished hashes, by (canonicalisation, hash, l=).
    pub fn finish(self) -> Vec<((Canonicalization, HashAlgorithm, u64), Vec<u8>)> {
        self.hashers.into_iter().map(|(k, h)| (k, h.finish().0.complete().as_ref().to_vec())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The body hash as mail-auth computes it over a whole body in memory.
    fn hash_of(cb: Canonicalization, ha: HashAlgorithm, body: &[u8]) -> Vec<u8> {
        ha.hash(cb.canonical_body(body, 0)).as_ref().to_vec()
    }

    #[test]
    fn chunked_hashes_match_whole_body_hashes() {
        let body = b"Hello  \r\n\tworld \r\n\r\n \r\nlast line   \r\n\r\n\r\n".repeat(3000);
        for cb in [Canonicalization::Simple, Canonicalization::Relaxed] {
            for ha in [HashAlgorithm::Sha256, HashAlgorithm::Sha1] {
                let whole = hash_of(cb, ha, &body);
                for size in [1, 2, 3, 7, 100, BODY_CHUNK] {
                    let mut h = BodyHashers::new([(cb, ha, 0)]);
                    for c in body.chunks(size) {
                        h.write(c);
                    }
                    let got = h.finish();
                    assert_eq!(got.len(), 1);
                    assert_eq!(got[0].1, whole, "{cb:?} {ha:?} chunks of {size}");
                }
            }
        }
    }

    #[test]
    fn l_counts_canonical_octets() {
        // RFC 6376 3.5: l= counts octets after canonicalisation. Relaxed
        // turns "a  b \r\n" into "a b\r\n" (5 octets).
        let body = b"a  b \r\nmore\r\n";
        let mut h = BodyHashers::new([(Canonicalization::Relaxed, HashAlgorithm::Sha256, 5)]);
        h.write(body);
        let got = h.finish();
        let want = HashAlgorithm::Sha256.hash(Canonicalization::Relaxed.canonical_body(b"a b\r\n", 0)).as_ref().to_vec();
        assert_eq!(got[0].1, want);
    }

    #[test]
    fn one_hasher_per_distinct_combination() {
        let h = BodyHashers::new([
            (Canonicalization::Relaxed, HashAlgorithm::Sha256, 0),
            (Canonicalization::Relaxed, HashAlgorithm::Sha256, 0),
            (Canonicalization::Simple, HashAlgorithm::Sha256, 0),
        ]);
        assert_eq!(h.hashers.len(), 2);
    }

    #[test]
    fn header_section_ends_at_the_blank_line() {
        assert_eq!(header_section(b"A: b\r\n\r\nbody\r\n\r\nmore"), b"A: b\r\n\r\n");
        assert_eq!(header_section(b"\r\nbody"), b"\r\n");
        assert_eq!(header_section(b"A: b\r\n"), b"A: b\r\n");
        assert_eq!(header_section(b""), b"");
    }

    #[test]
    fn head_from_prefix() {
        let h = Head::from_prefix(b"A: b\r\n\r\nbody".to_vec(), 12);
        assert!(h.complete && h.bytes == b"A: b\r\n\r\n");
        let h = Head::from_prefix(b"A: b\r\n".to_vec(), 6);
        assert!(h.complete && h.bytes == b"A: b\r\n");
        let h = Head::from_prefix(b"\r\nbody".to_vec(), 6);
        assert!(h.complete && h.bytes == b"\r\n");
        let mut big = b"X: ".to_vec();
        big.extend(std::iter::repeat_n(b'y', 100));
        big.extend_from_slice(b"\r\n");
        let big = big.repeat(MAX_HEADER_SECTION / 100 + 10);
        let h = Head::from_prefix(big[..MAX_HEADER_SECTION + 1].to_vec(), big.len() as u64 + 10);
        assert!(!h.complete && h.bytes.len() <= MAX_HEADER_SECTION && h.bytes.ends_with(b"\r\n"));
    }

    #[tokio::test]
    async fn a_spooled_message_reads_like_the_same_message_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool");
        let trace = b"Received: by us\r\n";
        let head = b"From: a@b.test\r\nSubject: x\r\n\r\n";
        let body = b"line  one\r\n\r\nline two \r\n\r\n".repeat(20_000);
        let mut msg = head.to_vec();
        msg.extend_from_slice(&body);
        // The header section ends inside the file, the body runs on into
        // the tail, and the split falls in the middle of a line.
        let split = head.len() + 70_001;
        let mut file = trace.to_vec();
        file.extend_from_slice(&msg[..split]);
        std::fs::write(&path, &file).unwrap();
        let spooled = MessageSource::spooled(path.clone(), trace.len() as u64, file.len() as u64, &msg[split..]);
        let memory = MessageSource::memory(&msg);
        assert_eq!(spooled.len(), memory.len());
        let want = [(Canonicalization::Relaxed, HashAlgorithm::Sha256, 0), (Canonicalization::Simple, HashAlgorithm::Sha1, 0)];
        let mut results = Vec::new();
        for src in [&spooled, &memory] {
            let h = src.read_head().await.unwrap();
            assert!(h.complete && h.bytes == head, "{:?}", String::from_utf8_lossy(&h.bytes));
            let hashed = src.hash_body(h.bytes.len() as u64, BodyHashers::new(want)).await.unwrap().finish();
            results.push(hashed);
        }
        assert_eq!(results[0], results[1]);
        assert_eq!(results[0][0].1, hash_of(Canonicalization::Relaxed, HashAlgorithm::Sha256, &body));
        // Header section split between the file and the tail.
        let spooled = MessageSource::spooled(path.clone(), trace.len() as u64, (trace.len() + 5) as u64, &msg[5..]);
        let h = spooled.read_head().await.unwrap();
        assert!(h.complete && h.bytes == head);
        // A file shorter than it should be is an error, not a wrong hash.
        let short = MessageSource::spooled(path, 0, file.len() as u64 + 10, b"");
        assert!(short.hash_body(0, BodyHashers::new(want)).await.is_err());
    }
}
