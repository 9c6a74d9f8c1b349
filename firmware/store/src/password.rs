//! Password hashes and checks for the whole process: argon2id PHC strings
//! (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`, the argon2 crate's default
//! parameters), computed in a few work buffers that are made once and
//! reused.
//!
//! Each argon2 evaluation needs `m` KiB of working memory (19 MiB with the
//! default parameters). Allocated per check, that memory is freed into the
//! allocator's per-thread heaps, which do not give it back: every check on
//! another blocking thread left 19 MiB resident, and a burst of wrong
//! passwords took a node past what a box has. Here the work buffers are
//! anonymous mappings of our own, at most [`CHECK_WORKERS`] of them (a
//! setting can change the number, [`Verifier::set_workers`]); while a
//! buffer is idle its pages are handed back to the kernel (`madvise
//! MADV_DONTNEED`, which also wipes what the password left in it). So the
//! memory that password checks take is bounded by workers x 19 MiB while
//! checks run, and goes back to nothing after.
//!
//! Checks beyond the workers wait in a bounded queue ([`CHECK_QUEUE`]
//! places, at most [`CHECK_WAIT`] each); beyond that a check fails at once
//! with [`PasswordError::Busy`], which every front end answers as a
//! temporary failure (SMTP 454 4.7.0, RFC 4954 6; POP3 `-ERR [SYS/TEMP]`,
//! RFC 3206 4; the admin page "try again").
//!
//! One [`Verifier`] serves the whole process ([`verifier`]): the mail
//! daemon's SMTP AUTH and POP3, the admin page and console logins, and the
//! hashing of new passwords all share its buffers.

use std::io;
use std::num::NonZeroUsize;
use std::ptr::NonNull;
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use nix::sys::mman::{self, MapFlags, MmapAdvise, ProtFlags};

/// Passwords longer than this are refused: argon2 takes any length, but a
/// bound keeps a hostile client from making us hash megabytes.
pub const MAX_PASSWORD: usize = 1024;
/// Argon2 evaluations at once in a process, by default: each holds a work
/// buffer of [`WORK_BUFFER_KIB`] KiB, and a box has 256 MiB and 2 cores.
pub const CHECK_WORKERS: usize = 2;
/// Checks that may wait for a free work buffer; one more fails at once
/// with [`PasswordError::Busy`] (a flood of logins must not pile up
/// threads or sessions without bound).
pub const CHECK_QUEUE: usize = 16;
/// How long a check waits in the queue before it gives up as
/// [`PasswordError::Busy`].
pub const CHECK_WAIT: Duration = Duration::from_secs(10);
/// The size of one work buffer, in KiB (= argon2 blocks): enough for the
/// default parameters (m = 19456). A stored hash that asks for more memory
/// is refused ([`PasswordError::Unsupported`]) rather than allocated for.
pub const WORK_BUFFER_KIB: u32 = Params::DEFAULT_M_COST;
/// Passes over memory taken at most from a stored hash (the default is 2):
/// a bound on the CPU time one check can cost.
pub const MAX_T_COST: u32 = 16;
/// Lanes taken at most from a stored hash (the default is 1).
pub const MAX_P_COST: u32 = 16;
/// Hash output length taken at most from a stored hash (the default is 32).
pub const MAX_OUTPUT_LEN: usize = 64;
/// A hash of a random password under the default parameters: an unknown
/// user's password is checked against it, so that the answer takes as long
/// as for a known one and does not reveal which accounts exist.
const DUMMY_PHC: &str = "$argon2id$v=19$m=19456,t=2,p=1$bWFpbGZvcnRkdW1teXNhbHQ$uYx7aF8Jf2lIYyq0JwZ4m0Yt9c8iYJ0bq7lC6mP0a3I";

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("too many password checks at once; try again in a moment")]
    Busy,
    #[error("the password is empty")]
    Empty,
    #[error("the password is longer than {MAX_PASSWORD} bytes")]
    TooLong,
    #[error("the password contains a line break or NUL")]
    BadChar,
    #[error("not an argon2 PHC string: {0}")]
    Malformed(String),
    #[error("argon2 parameters beyond this node's limits: {0}")]
    Unsupported(String),
    #[error("cannot map an argon2 work buffer: {0}")]
    Memory(#[source] io::Error),
    #[error("argon2: {0}")]
    Argon2(argon2::Error),
}

/// Checks a new password before it is hashed.
pub fn check_new(password: &str) -> Result<(), PasswordError> {
    if password.is_empty() {
        return Err(PasswordError::Empty);
    }
    if password.len() > MAX_PASSWORD {
        return Err(PasswordError::TooLong);
    }
    if password.contains(['\n', '\r', '\0']) {
        return Err(PasswordError::BadChar);
    }
    Ok(())
}

/// The process's verifier (made on first use with [`CHECK_WORKERS`]).
pub fn verifier() -> &'static Verifier {
    static V: OnceLock<Verifier> = OnceLock::new();
    V.get_or_init(|| Verifier::new(CHECK_WORKERS, CHECK_QUEUE, CHECK_WAIT))
}

/// Hashes a new password with the process's verifier ([`Verifier::hash`]).
pub fn hash(password: &str) -> Result<String, PasswordError> {
    verifier().hash(password)
}

/// Checks a password against a PHC string with the process's verifier
/// ([`Verifier::verify`]).
pub fn verify(phc: &str, password: &str) -> Result<bool, PasswordError> {
    verifier().verify(phc, password)
}

/// One argon2 work buffer: an anonymous private mapping of
/// [`WORK_BUFFER_KIB`] blocks, unmapped when dropped.
struct WorkBuffer {
    ptr: NonNull<Block>,
    blocks: usize,
}

// SAFETY: the mapping is owned by the buffer alone; nothing else points
// into it.
unsafe impl Send for WorkBuffer {}

impl WorkBuffer {
    fn new(blocks: usize) -> io::Result<WorkBuffer> {
        let len = NonZeroUsize::new(blocks * std::mem::size_of::<Block>()).ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: a fresh anonymous mapping at an address the kernel picks;
        // no existing memory is touched.
        let p = unsafe { mman::mmap_anonymous(None, len, ProtFlags::PROT_READ | ProtFlags::PROT_WRITE, MapFlags::MAP_PRIVATE) }?;
        Ok(WorkBuffer { ptr: p.cast::<Block>(), blocks })
    }

    fn len_bytes(&self) -> usize {
        self.blocks * std::mem::size_of::<Block>()
    }

    fn blocks_mut(&mut self) -> &mut [Block] {
        // SAFETY: the mapping is page aligned (more than Block's 64), holds
        // `blocks` Blocks, is zero or was written as Blocks (plain u64s: any
        // bytes are a valid Block), and `&mut self` makes this borrow unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.blocks) }
    }

    /// Gives the pages back to the kernel; the next use reads zeros.
    fn release_pages(&mut self) {
        // SAFETY: the range is exactly our mapping, and no borrow of it is
        // alive (`&mut self`); its pages read as zeros afterwards.
        let _ = unsafe { mman::madvise(self.ptr.cast(), self.len_bytes(), MmapAdvise::MADV_DONTNEED) };
    }
}

impl Drop for WorkBuffer {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in new(); no borrow of it
        // outlives the buffer.
        let _ = unsafe { mman::munmap(self.ptr.cast(), self.len_bytes()) };
    }
}

#[derive(Default)]
struct Pool {
    /// Buffers not in use.
    free: Vec<WorkBuffer>,
    /// Buffers in use.
    busy: usize,
    /// Checks waiting for a buffer.
    waiting: usize,
    /// Checks that may run at once.
    workers: usize,
    /// Buffers ever made (for tests: never more than the workers).
    made: usize,
}

/// Argon2 hashing and checking with a fixed number of reused work buffers.
/// Every call blocks (for the argon2 time, and for up to the queue wait):
/// call it off async threads.
pub struct Verifier {
    pool: Mutex<Pool>,
    freed: Condvar,
    queue: usize,
    wait: Duration,
    blocks: usize,
}

/// A work buffer lent to one check; back to the pool when dropped.
struct Lease<'a> {
    verifier: &'a Verifier,
    buffer: Option<WorkBuffer>,
}

impl Verifier {
    /// A verifier running at most `workers` checks at once, with `queue`
    /// more waiting up to `wait` each.
    pub fn new(workers: usize, queue: usize, wait: Duration) -> Verifier {
        Verifier { pool: Mutex::new(Pool { workers: workers.max(1), ..Pool::default() }), freed: Condvar::new(), queue, wait, blocks: WORK_BUFFER_KIB as usize }
    }

    fn lock(&self) -> MutexGuard<'_, Pool> {
        self.pool.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes how many checks run at once (at least 1). Buffers beyond
    /// the new number are unmapped as they come back.
    pub fn set_workers(&self, workers: usize) {
        let mut p = self.lock();
        p.workers = workers.max(1);
        while p.free.len() + p.busy > p.workers && p.free.pop().is_some() {}
        drop(p);
        self.freed.notify_all();
    }

    /// (checks running, checks waiting, buffers made so far).
    pub fn load(&self) -> (usize, usize, usize) {
        let p = self.lock();
        (p.busy, p.waiting, p.made)
    }

    /// A work buffer: a free one, a new one while fewer than the workers
    /// exist, or one freed within the wait. Busy when the queue is full or
    /// the wait ran out.
    fn acquire(&self) -> Result<Lease<'_>, PasswordError> {
        let mut p = self.lock();
        let give = |p: &mut Pool| -> Option<Result<Option<WorkBuffer>, ()>> {
            if p.busy >= p.workers {
                return None;
            }
            p.busy += 1;
            Some(Ok(p.free.pop()))
        };
        let got = match give(&mut p) {
            Some(g) => g,
            None => {
                if p.waiting >= self.queue {
                    return Err(PasswordError::Busy);
                }
                p.waiting += 1;
                let deadline = Instant::now() + self.wait;
                let got = loop {
                    if let Some(g) = give(&mut p) {
                        break g;
                    }
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break Err(());
                    }
                    p = self.freed.wait_timeout(p, left).unwrap_or_else(|e| e.into_inner()).0;
                };
                p.waiting -= 1;
                got
            }
        };
        let buffer = match got {
            Err(()) => return Err(PasswordError::Busy),
            Ok(Some(b)) => b,
            Ok(None) => {
                // Mapped outside the lock (the kernel call may take a while).
                drop(p);
                match WorkBuffer::new(self.blocks) {
                    Ok(b) => {
                        self.lock().made += 1;
                        b
                    }
                    Err(e) => {
                        self.lock().busy -= 1;
                        self.freed.notify_one();
                        return Err(PasswordError::Memory(e));
                    }
                }
            }
        };
        Ok(Lease { verifier: self, buffer: Some(buffer) })
    }

    /// Checks `password` against the PHC string `phc`. `Ok(false)` for a
    /// wrong password (and one longer than [`MAX_PASSWORD`]); an error for
    /// a hash this verifier cannot check, or Busy.
    pub fn verify(&self, phc: &str, password: &str) -> Result<bool, PasswordError> {
        let hash = PasswordHash::new(phc).map_err(|e| PasswordError::Malformed(e.to_string()))?;
        let algorithm = Algorithm::try_from(hash.algorithm).map_err(|e| PasswordError::Unsupported(e.to_string()))?;
        let version = hash.version.map(Version::try_from).transpose().map_err(PasswordError::Argon2)?.unwrap_or_default();
        let params = Params::try_from(&hash).map_err(|e| PasswordError::Malformed(e.to_string()))?;
        if params.block_count() > self.blocks {
            return Err(PasswordError::Unsupported(format!("m={} KiB (at most {})", params.m_cost(), self.blocks)));
        }
        if params.t_cost() > MAX_T_COST || params.p_cost() > MAX_P_COST {
            return Err(PasswordError::Unsupported(format!("t={} p={} (at most t={MAX_T_COST} p={MAX_P_COST})", params.t_cost(), params.p_cost())));
        }
        let (Some(salt), Some(expected)) = (hash.salt, hash.hash) else {
            return Err(PasswordError::Malformed("no salt or no hash".into()));
        };
        if expected.len() > MAX_OUTPUT_LEN {
            return Err(PasswordError::Unsupported(format!("a {}-byte hash (at most {MAX_OUTPUT_LEN})", expected.len())));
        }
        let mut salt_buf = [0u8; 64];
        let salt = salt.decode_b64(&mut salt_buf).map_err(|e| PasswordError::Malformed(e.to_string()))?;
        if password.len() > MAX_PASSWORD {
            return Ok(false);
        }
        let mut out = [0u8; MAX_OUTPUT_LEN];
        let out = &mut out[..expected.len()];
        let mut lease = self.acquire()?;
        Argon2::new(algorithm, version, params).hash_password_into_with_memory(password.as_bytes(), salt, out, lease.blocks()).map_err(PasswordError::Argon2)?;
        drop(lease);
        // Output's comparison takes the same time wherever they differ.
        let computed = Output::new(out).map_err(|e| PasswordError::Malformed(e.to_string()))?;
        Ok(computed == expected)
    }

    /// Spends the work of a check on a password nobody has (for an unknown
    /// user). Busy like [`Verifier::verify`].
    pub fn verify_nobody(&self, password: &str) -> Result<(), PasswordError> {
        self.verify(DUMMY_PHC, password).map(drop)
    }

    /// Hashes a new password (after [`check_new`]) with argon2id, the
    /// default parameters and a random salt, as a PHC string.
    pub fn hash(&self, password: &str) -> Result<String, PasswordError> {
        check_new(password)?;
        let salt = SaltString::generate(&mut OsRng);
        let mut salt_buf = [0u8; 64];
        let salt_bytes = salt.decode_b64(&mut salt_buf).map_err(|e| PasswordError::Malformed(e.to_string()))?;
        let params = Params::default();
        let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
        let mut lease = self.acquire()?;
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone()).hash_password_into_with_memory(password.as_bytes(), salt_bytes, &mut out, lease.blocks()).map_err(PasswordError::Argon2)?;
        drop(lease);
        let phc = PasswordHash {
            algorithm: Algorithm::Argon2id.ident(),
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(&params).map_err(|e| PasswordError::Malformed(e.to_string()))?,
            salt: Some(salt.as_salt()),
            hash: Some(Output::new(&out).map_err(|e| PasswordError::Malformed(e.to_string()))?),
        };
        Ok(phc.to_string())
    }
}

impl Lease<'_> {
    fn blocks(&mut self) -> &mut [Block] {
        self.buffer.as_mut().expect("a lease holds its buffer until dropped").blocks_mut()
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let Some(mut b) = self.buffer.take() else { return };
        let v = self.verifier;
        let mut p = v.lock();
        if p.waiting == 0 {
            // Nobody waits: the pages go back to the kernel now (outside
            // the lock), not at the next burst.
            drop(p);
            b.release_pages();
            p = v.lock();
        }
        p.busy -= 1;
        if p.free.len() + p.busy < p.workers {
            p.free.push(b);
        }
        drop(p);
        v.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::{PasswordHasher, PasswordVerifier};
    use std::sync::Arc;

    #[test]
    fn hashes_are_compatible_with_the_argon2_crate() {
        let v = Verifier::new(1, 4, CHECK_WAIT);
        // Ours verifies with the crate's own verifier.
        let ours = v.hash("s3cret").unwrap();
        assert!(ours.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{ours}");
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(Argon2::default().verify_password(b"s3cret", &parsed).is_ok());
        assert!(Argon2::default().verify_password(b"other", &parsed).is_err());
        // A hash the crate made (as stored accounts and admin hashes are)
        // verifies with ours.
        let salt = SaltString::generate(&mut OsRng);
        let theirs = Argon2::default().hash_password(b"hunter2", &salt).unwrap().to_string();
        assert!(v.verify(&theirs, "hunter2").unwrap());
        assert!(!v.verify(&theirs, "hunter3").unwrap());
        assert!(!v.verify(&theirs, &"x".repeat(MAX_PASSWORD + 1)).unwrap());
        // Other argon2 variants and smaller parameters are checked too.
        let small = Argon2::new(Algorithm::Argon2i, Version::V0x13, Params::new(64, 3, 1, Some(24)).unwrap());
        let h = small.hash_password(b"pw", &salt).unwrap().to_string();
        assert!(v.verify(&h, "pw").unwrap());
        assert!(!v.verify(&h, "pW").unwrap());
        // Only the one buffer was ever made.
        assert_eq!(v.load(), (0, 0, 1));
    }

    #[test]
    fn bad_hashes_and_passwords_are_errors() {
        let v = Verifier::new(1, 4, CHECK_WAIT);
        assert!(matches!(v.verify("garbage", "pw"), Err(PasswordError::Malformed(_))));
        assert!(matches!(v.verify("$argon2id$v=19$m=1048576,t=2,p=1$bWFpbGZvcnRzYWx0$uYx7aF8Jf2lIYyq0JwZ4m0Yt9c8iYJ0bq7lC6mP0a3I", "pw"), Err(PasswordError::Unsupported(_))));
        assert!(matches!(v.verify("$argon2id$v=19$m=64,t=1000,p=1$bWFpbGZvcnRzYWx0$uYx7aF8Jf2lIYyq0JwZ4m0Yt9c8iYJ0bq7lC6mP0a3I", "pw"), Err(PasswordError::Unsupported(_))));
        assert!(matches!(v.verify("$scrypt$ln=16,r=8,p=1$aM15713r3Xsvxbi31lqr1Q$nFNh2CVHVjNldFVKDHDlm4CbdRSCdEBsjjJxD+iCs5E", "pw"), Err(PasswordError::Unsupported(_))));
        assert!(matches!(v.hash(""), Err(PasswordError::Empty)));
        assert!(matches!(v.hash(&"x".repeat(MAX_PASSWORD + 1)), Err(PasswordError::TooLong)));
        assert!(matches!(v.hash("a\nb"), Err(PasswordError::BadChar)));
        // The dummy hash is a real one under the default parameters.
        let p = PasswordHash::new(DUMMY_PHC).unwrap();
        assert_eq!(Params::try_from(&p).unwrap().m_cost(), Params::DEFAULT_M_COST);
        v.verify_nobody("anything").unwrap();
    }

    /// Waits until the verifier has `n` checks waiting.
    fn wait_for_waiting(v: &Verifier, n: usize) {
        let end = Instant::now() + Duration::from_secs(30);
        while v.load().1 != n {
            assert!(Instant::now() < end, "no check started waiting: {:?}", v.load());
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn concurrency_is_bounded_and_an_overflow_is_busy() {
        let v = Arc::new(Verifier::new(2, 1, Duration::from_secs(60)));
        let a = v.acquire().unwrap();
        let b = v.acquire().unwrap();
        assert_eq!(v.load(), (2, 0, 2));
        // A third check waits in the queue...
        let waiter = {
            let v = v.clone();
            std::thread::spawn(move || {
                let l = v.acquire().map(drop);
                l.is_ok()
            })
        };
        wait_for_waiting(&v, 1);
        // ...and with the queue full a fourth fails at once, as busy, and
        // so does a real check.
        assert!(matches!(v.acquire(), Err(PasswordError::Busy)));
        assert!(matches!(v.verify(DUMMY_PHC, "pw"), Err(PasswordError::Busy)));
        assert!(matches!(v.hash("pw"), Err(PasswordError::Busy)));
        // A buffer coming back goes to the waiter: no third buffer.
        drop(a);
        assert!(waiter.join().unwrap());
        drop(b);
        assert_eq!(v.load(), (0, 0, 2));
        // Many checks later, still two buffers.
        let threads: Vec<_> = (0..6)
            .map(|i| {
                let v = v.clone();
                std::thread::spawn(move || v.verify(DUMMY_PHC, &format!("guess{i}")))
            })
            .collect();
        for t in threads {
            assert!(matches!(t.join().unwrap(), Ok(false) | Err(PasswordError::Busy)));
        }
        assert_eq!(v.load(), (0, 0, 2));
    }

    #[test]
    fn a_waiting_check_gives_up_after_the_wait() {
        let v = Verifier::new(1, 4, Duration::from_millis(50));
        let _held = v.acquire().unwrap();
        assert!(matches!(v.acquire(), Err(PasswordError::Busy)));
        assert_eq!(v.load(), (1, 0, 1));
    }

    #[test]
    fn fewer_workers_unmap_the_spare_buffers() {
        let v = Verifier::new(2, 0, CHECK_WAIT);
        let (a, b) = (v.acquire().unwrap(), v.acquire().unwrap());
        drop((a, b));
        assert_eq!(v.lock().free.len(), 2);
        v.set_workers(1);
        assert_eq!(v.lock().free.len(), 1);
        let _a = v.acquire().unwrap();
        assert!(matches!(v.acquire(), Err(PasswordError::Busy)));
    }
}
