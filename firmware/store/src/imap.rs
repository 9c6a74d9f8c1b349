//! IMAP folders on the Maildir store: the folders of an account, and the
//! one UID record per folder that every node agrees on.
//!
//! ```text
//! <maildir>/                     INBOX: {tmp,new,cur}
//! <maildir>/.Sent/               a folder (Maildir++): its own {tmp,new,cur}
//! <maildir>/.Work.2026/          folder `Work/2026` (IMAP delimiter `/`)
//! <folder>/mailfort-uids         the UID record (below)
//! <folder>/mailfort-special-use  the folder's SPECIAL-USE attribute (RFC 6154)
//! <maildir>/mailfort-subscriptions  subscribed folder names, one a line
//! ```
//!
//! Flags live where every Maildir tool keeps them, in the info suffix of
//! the file name (`<base>:2,FS`); keywords are the letters `a`-`z`, named
//! by the record. The record holds what a file name cannot: UIDVALIDITY,
//! UIDNEXT, HIGHESTMODSEQ, the keyword names, a bounded history of
//! expunged UIDs (RFC 7162 3.2.5.2 VANISHED) and one line per message:
//! `uid modseq size internal-date file`, `file` being the message's
//! current name under the folder (`cur/<base>:2,S`, `new/<base>`).
//!
//! The rules that make several nodes safe on one folder:
//! - The record changes only under the folder's lease (`lock::names`),
//!   which a dead node's session does not keep (it is broken as the POP3
//!   lock is); it is re-read after locking and replaced by
//!   [`fsutil::write_atomic`] (temporary file, fsync, rename).
//! - Every rename of a message file (a flag change, new/ to cur/) happens
//!   under the lease and is written to the record before the lease goes.
//!   Delivery only links new files into `new/` and POP3 only removes: so
//!   an unlocked reader that misses a file (readdir() during a rename) or
//!   finds one the record does not know looks again under the lease
//!   before it concludes anything.
//! - UIDNEXT is in the record before a UID is shown to anyone, and the
//!   record is never rebuilt from the messages while it exists: a record
//!   that cannot be read is an error ([`ImapError::Unavailable`]), not a
//!   new UIDVALIDITY. So a UID is never reused.
//! - A change is seen by other nodes through the record's and the
//!   directories' stamps ([`Stamp`]): a session or an IDLE watcher
//!   compares three stat() results instead of reading the folder.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::address::Address;
use crate::fsutil;
use crate::lock::{Claimant, Lease, LockError};
use crate::maildir::{sort_key, unique_name};
use crate::store::{Store, StoreError};

/// The UID record's file name inside a folder.
pub const RECORD: &str = "mailfort-uids";
/// The first line of a record this code reads.
pub const RECORD_MAGIC: &str = "mailfort-uids 1";
/// A folder's SPECIAL-USE attribute (RFC 6154 2), one line.
pub const SPECIAL_USE: &str = "mailfort-special-use";
/// Subscribed folders (RFC 3501 6.3.6), one name a line, in the Maildir.
pub const SUBSCRIPTIONS: &str = "mailfort-subscriptions";
/// The last UIDVALIDITY the account gave a folder, in the Maildir.
pub const LAST_UIDVALIDITY: &str = "mailfort-uidvalidity";
/// The IMAP hierarchy delimiter (RFC 3501 5.1.1).
pub const DELIMITER: char = '/';
/// The folders every account has, with their SPECIAL-USE attribute
/// (RFC 6154 2).
pub const DEFAULT_FOLDERS: &[(&str, &str)] = &[("Sent", "\\Sent"), ("Drafts", "\\Drafts"), ("Trash", "\\Trash"), ("Junk", "\\Junk"), ("Archive", "\\Archive")];
/// The SPECIAL-USE attributes a folder may be given (RFC 6154 2).
pub const SPECIAL_USES: &[&str] = &["\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash"];
/// Keywords per folder: one Maildir letter each, `a` to `z`.
pub const MAX_KEYWORDS: usize = 26;
/// Longest keyword (an IMAP atom; Dovecot allows 255 too).
pub const MAX_KEYWORD_LEN: usize = 255;
/// Folders per account.
pub const MAX_FOLDERS: usize = 1000;
/// Longest folder name, in bytes as sent.
pub const MAX_FOLDER_NAME: usize = 512;
/// Levels of a folder name (`a/b/c` is three).
pub const MAX_FOLDER_DEPTH: usize = 16;
/// Expunge history kept for QRESYNC (RFC 7162 3.2.5.2): ranges of UIDs.
/// Older history is summarised by a floor modseq, below which a client is
/// told every UID it names that is gone.
pub const MAX_VANISHED_RANGES: usize = 4096;
/// A folder lease unrefreshed this long by the store's clock is stale. Its
/// holder keeps it for milliseconds; a node that died holding it is found
/// dead by its heartbeat sooner.
pub const FOLDER_LEASE_TTL: Duration = Duration::from_secs(30);
/// How long an operation waits for a folder lease held by someone else.
pub const FOLDER_LEASE_WAIT: Duration = Duration::from_secs(20);
/// A directory or record changed this recently may change again within
/// the same timestamp tick: a reader does not trust an equal stamp then.
pub const STAMP_SETTLE: Duration = Duration::from_secs(2);

/// Why an IMAP folder operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ImapError {
    #[error("no such folder")]
    NoFolder,
    #[error("the folder already exists")]
    Exists,
    #[error("{0}")]
    BadName(&'static str),
    #[error("the folder is a special folder and cannot be {0}")]
    Protected(&'static str),
    #[error("the folder has subfolders")]
    HasChildren,
    #[error("too many folders")]
    TooManyFolders,
    #[error("too many keywords in this folder")]
    TooManyKeywords,
    #[error("the folder's UID record cannot be read: {0}")]
    Unavailable(String),
    #[error("the folder is busy on another node, try again")]
    Busy,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<LockError> for ImapError {
    fn from(e: LockError) -> ImapError {
        match e {
            LockError::InUse { .. } => ImapError::Busy,
            LockError::Store(s) => ImapError::Store(s),
        }
    }
}

fn io_fail(path: &Path) -> impl FnOnce(io::Error) -> ImapError + '_ {
    move |source| ImapError::Store(StoreError::Io { path: path.to_path_buf(), source })
}

// ---------------------------------------------------------------------------
// Flags

/// A message's flags: the system flags (RFC 3501 2.3.2), `$Forwarded`
/// (Maildir `P`) and up to [`MAX_KEYWORDS`] keywords by their letter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Flags(pub u32);

impl Flags {
    pub const SEEN: Flags = Flags(1);
    pub const ANSWERED: Flags = Flags(2);
    pub const FLAGGED: Flags = Flags(4);
    pub const DELETED: Flags = Flags(8);
    pub const DRAFT: Flags = Flags(16);
    /// `$Forwarded` (RFC 5788 registry), Maildir `P` (passed).
    pub const FORWARDED: Flags = Flags(32);
    const KEYWORD_SHIFT: u32 = 6;

    pub fn contains(self, f: Flags) -> bool {
        self.0 & f.0 == f.0
    }
    pub fn union(self, f: Flags) -> Flags {
        Flags(self.0 | f.0)
    }
    pub fn minus(self, f: Flags) -> Flags {
        Flags(self.0 & !f.0)
    }
    /// Keyword number `i` (its letter is `a` + i).
    pub fn keyword(i: usize) -> Flags {
        debug_assert!(i < MAX_KEYWORDS);
        Flags(1 << (Self::KEYWORD_SHIFT + i as u32))
    }
    pub fn has_keyword(self, i: usize) -> bool {
        i < MAX_KEYWORDS && self.contains(Flags::keyword(i))
    }

    /// The flags of a Maildir info suffix (`2,FS`), ignoring letters this
    /// code does not know (Maildir: "D" draft, "F" flagged, "P" passed,
    /// "R" replied, "S" seen, "T" trashed; lowercase: keywords).
    pub fn from_info(info: &str) -> Flags {
        let mut f = Flags::default();
        let Some(letters) = info.strip_prefix("2,") else { return f };
        for c in letters.chars() {
            f = f.union(match c {
                'D' => Flags::DRAFT,
                'F' => Flags::FLAGGED,
                'P' => Flags::FORWARDED,
                'R' => Flags::ANSWERED,
                'S' => Flags::SEEN,
                'T' => Flags::DELETED,
                'a'..='z' => Flags::keyword(c as usize - 'a' as usize),
                _ => Flags::default(),
            });
        }
        f
    }

    /// The letters of a Maildir info suffix, in ASCII order as Maildir
    /// requires.
    pub fn letters(self) -> String {
        let mut s = String::new();
        for (f, c) in [(Flags::DRAFT, 'D'), (Flags::FLAGGED, 'F'), (Flags::FORWARDED, 'P'), (Flags::ANSWERED, 'R'), (Flags::SEEN, 'S'), (Flags::DELETED, 'T')] {
            if self.contains(f) {
                s.push(c);
            }
        }
        for i in 0..MAX_KEYWORDS {
            if self.has_keyword(i) {
                s.push((b'a' + i as u8) as char);
            }
        }
        s
    }
}

/// How a flag change applies (RFC 3501 6.4.6 FLAGS, +FLAGS, -FLAGS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagMode {
    Replace,
    Add,
    Remove,
}

// ---------------------------------------------------------------------------
// Folder names

/// The directory of folder `name` under the Maildir `root`. `INBOX` (any
/// case) is the Maildir itself; `a/b` is `.a.b`, with `%` and `.` inside a
/// level written `%25` and `%2E` so that every name maps to one directory
/// and back.
pub fn folder_dir(root: &Path, name: &str) -> Result<PathBuf, ImapError> {
    let name = normalize_name(name)?;
    if name == "INBOX" {
        return Ok(root.to_path_buf());
    }
    let mut dir = String::new();
    for level in name.split(DELIMITER) {
        dir.push('.');
        for c in level.chars() {
            match c {
                '%' => dir.push_str("%25"),
                '.' => dir.push_str("%2E"),
                c => dir.push(c),
            }
        }
    }
    Ok(root.join(dir))
}

/// The folder name of a Maildir++ directory name (`.a.b`), if it is one.
fn name_of_dir(dir: &str) -> Option<String> {
    let rest = dir.strip_prefix('.')?;
    if rest.is_empty() || rest.starts_with('.') || dir.contains(fsutil::TEMP_MARK) {
        return None;
    }
    let mut out = String::new();
    for (i, level) in rest.split('.').enumerate() {
        if level.is_empty() {
            return None;
        }
        if i > 0 {
            out.push(DELIMITER);
        }
        let b = level.as_bytes();
        let mut j = 0;
        while j < b.len() {
            if b[j] == b'%' && j + 3 <= b.len() {
                match &level[j..j + 3] {
                    "%25" => out.push('%'),
                    "%2E" => out.push('.'),
                    _ => return None,
                }
                j += 3;
            } else if b[j] == b'%' {
                return None;
            } else {
                let c = level[j..].chars().next()?;
                out.push(c);
                j += c.len_utf8();
            }
        }
    }
    Some(out)
}

/// Checks a folder name and writes `INBOX` (RFC 3501 5.1: case-insensitive)
/// in its one spelling, also as the first level of a longer name.
pub fn normalize_name(name: &str) -> Result<String, ImapError> {
    if name.is_empty() {
        return Err(ImapError::BadName("empty folder name"));
    }
    if name.len() > MAX_FOLDER_NAME {
        return Err(ImapError::BadName("folder name too long"));
    }
    if name.chars().any(|c| c.is_control()) {
        return Err(ImapError::BadName("control character in a folder name"));
    }
    if !name.is_ascii() || !modified_utf7_ok(name) {
        // RFC 3501 5.1.3: international names travel in modified UTF-7
        // (UTF8=ACCEPT, RFC 6855, is not offered).
        return Err(ImapError::BadName("mailbox names must be modified UTF-7 (RFC 3501 5.1.3)"));
    }
    let levels: Vec<&str> = name.split(DELIMITER).collect();
    if levels.len() > MAX_FOLDER_DEPTH {
        return Err(ImapError::BadName("folder name too deep"));
    }
    if levels.iter().any(|l| l.is_empty()) {
        return Err(ImapError::BadName("empty level in a folder name"));
    }
    let mut out = String::with_capacity(name.len());
    for (i, l) in levels.iter().enumerate() {
        if i > 0 {
            out.push(DELIMITER);
        }
        if i == 0 && l.eq_ignore_ascii_case("INBOX") {
            out.push_str("INBOX");
        } else {
            out.push_str(l);
        }
    }
    Ok(out)
}

/// RFC 3501 5.1.3: `&` starts a shift to modified BASE64 (`+` and `,`
/// for the last two digits, no padding) that `-` ends; `&-` is `&`.
fn modified_utf7_ok(name: &str) -> bool {
    let b = name.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'&' {
            let start = i + 1;
            let mut j = start;
            while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'+' || b[j] == b',') {
                j += 1;
            }
            if j >= b.len() || b[j] != b'-' {
                return false;
            }
            // A shifted run encodes UTF-16: whole 16-bit units, so its
            // length in digits is never 1, 4 or 7 mod 8 (RFC 2152 leftovers).
            if matches!((j - start) % 8, 1 | 4 | 7) {
                return false;
            }
            i = j + 1;
        } else {
            i += 1;
        }
    }
    true
}

/// One folder of an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderInfo {
    pub name: String,
    /// Its SPECIAL-USE attribute (RFC 6154 2), if any.
    pub special_use: Option<String>,
}

// ---------------------------------------------------------------------------
// The record

/// One message in a folder's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    pub uid: u32,
    /// The modseq of its last change (RFC 7162 3.1.1).
    pub modseq: u64,
    /// RFC822.SIZE: its size in octets as stored.
    pub size: u64,
    /// INTERNALDATE: unix seconds (the file's mtime when it was recorded).
    pub date: i64,
    /// Its file under the folder: `cur/<base>:2,<letters>` or `new/<base>`.
    pub file: String,
}

impl Msg {
    /// The Maildir base name (the part before the info suffix), which
    /// POP3 shows as the UIDL.
    pub fn base(&self) -> &str {
        let name = self.file.split_once('/').map_or(self.file.as_str(), |(_, n)| n);
        name.split(':').next().unwrap_or(name)
    }

    pub fn flags(&self) -> Flags {
        flags_of_file(&self.file)
    }

    /// Whether the file is still in `new/` (no client has claimed it).
    pub fn in_new(&self) -> bool {
        self.file.starts_with("new/")
    }
}

fn flags_of_file(file: &str) -> Flags {
    match file.split_once(':') {
        Some((_, info)) => Flags::from_info(info),
        None => Flags::default(),
    }
}

fn cur_name(base: &str, flags: Flags) -> String {
    format!("cur/{base}:2,{}", flags.letters())
}

/// A folder's record as read or written.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    uidvalidity: u32,
    uidnext: u32,
    highestmodseq: u64,
    keywords: Vec<String>,
    /// (modseq of the expunge, first uid, last uid), oldest first.
    vanished: Vec<(u64, u32, u32)>,
    /// Expunges at or below this modseq are no longer listed.
    vanished_floor: u64,
    /// By UID, ascending.
    msgs: Vec<Msg>,
    /// The stamps `new/` and `cur/` had when the record was found to list
    /// them exactly and they had not changed for [`STAMP_SETTLE`] by the
    /// store's clock: while both still match, a reader needs no readdir().
    /// Cleared by every other write.
    settled: Option<(fsutil::FileStamp, fsutil::FileStamp)>,
}

impl Record {
    fn new(uidvalidity: u32) -> Record {
        Record { uidvalidity, uidnext: 1, highestmodseq: 1, keywords: Vec::new(), vanished: Vec::new(), vanished_floor: 0, msgs: Vec::new(), settled: None }
    }

    fn encode(&self) -> Vec<u8> {
        let mut s = String::with_capacity(64 + self.msgs.len() * 64);
        let _ = writeln!(s, "{RECORD_MAGIC}");
        let _ = writeln!(s, "V {} N {} M {} F {}", self.uidvalidity, self.uidnext, self.highestmodseq, self.vanished_floor);
        if let Some((n, c)) = &self.settled {
            let _ = writeln!(s, "S {} {}", n.encode(), c.encode());
        }
        for k in &self.keywords {
            let _ = writeln!(s, "K {k}");
        }
        for (m, a, b) in &self.vanished {
            let _ = writeln!(s, "X {m} {a} {b}");
        }
        for m in &self.msgs {
            let _ = writeln!(s, "{} {} {} {} {}", m.uid, m.modseq, m.size, m.date, m.file);
        }
        s.into_bytes()
    }

    fn decode(text: &str) -> Result<Record, String> {
        let mut lines = text.lines();
        if lines.next() != Some(RECORD_MAGIC) {
            return Err("not a UID record of this version".into());
        }
        let head = lines.next().ok_or("no header line")?;
        let f: Vec<&str> = head.split(' ').collect();
        if f.len() != 8 || f[0] != "V" || f[2] != "N" || f[4] != "M" || f[6] != "F" {
            return Err("bad header line".into());
        }
        let num = |s: &str| s.parse::<u64>().map_err(|_| format!("bad number {s:?}"));
        let mut r = Record::new(u32::try_from(num(f[1])?).map_err(|_| "bad UIDVALIDITY")?);
        r.uidnext = u32::try_from(num(f[3])?).map_err(|_| "bad UIDNEXT")?;
        r.highestmodseq = num(f[5])?;
        r.vanished_floor = num(f[7])?;
        let mut last_uid = 0;
        for line in lines {
            if let Some(k) = line.strip_prefix("K ") {
                r.keywords.push(k.to_string());
            } else if let Some(x) = line.strip_prefix("S ") {
                let (n, c) = x.split_once(' ').ok_or("bad stamp line")?;
                r.settled = Some((fsutil::FileStamp::decode(n).ok_or("bad stamp")?, fsutil::FileStamp::decode(c).ok_or("bad stamp")?));
            } else if let Some(x) = line.strip_prefix("X ") {
                let v: Vec<&str> = x.split(' ').collect();
                if v.len() != 3 {
                    return Err("bad expunge line".into());
                }
                r.vanished.push((num(v[0])?, num(v[1])? as u32, num(v[2])? as u32));
            } else {
                let v: Vec<&str> = line.splitn(5, ' ').collect();
                if v.len() != 5 || !(v[4].starts_with("cur/") || v[4].starts_with("new/")) {
                    return Err(format!("bad message line {line:?}"));
                }
                let uid = u32::try_from(num(v[0])?).map_err(|_| "bad UID")?;
                if uid <= last_uid || uid >= r.uidnext {
                    return Err(format!("UID {uid} out of order"));
                }
                last_uid = uid;
                let date = v[3].parse::<i64>().map_err(|_| "bad date")?;
                r.msgs.push(Msg { uid, modseq: num(v[1])?, size: num(v[2])?, date, file: v[4].to_string() });
            }
        }
        if r.keywords.len() > MAX_KEYWORDS {
            return Err("too many keywords".into());
        }
        Ok(r)
    }

    /// UIDs expunged after `modseq` (RFC 7162 3.2.5.2), and whether the
    /// history reaches back that far (if not, the caller must assume any
    /// UID not in the folder may be among them).
    fn vanished_since(&self, modseq: u64) -> (Vec<(u32, u32)>, bool) {
        let complete = modseq >= self.vanished_floor;
        (self.vanished.iter().filter(|(m, _, _)| *m > modseq).map(|&(_, a, b)| (a, b)).collect(), complete)
    }

    fn bump(&mut self) -> u64 {
        self.highestmodseq += 1;
        self.highestmodseq
    }

    fn note_vanished(&mut self, modseq: u64, mut uids: Vec<u32>) {
        uids.sort_unstable();
        for uid in uids {
            match self.vanished.last_mut() {
                Some((m, _, b)) if *m == modseq && *b + 1 == uid => *b = uid,
                _ => self.vanished.push((modseq, uid, uid)),
            }
        }
        if self.vanished.len() > MAX_VANISHED_RANGES {
            let drop = self.vanished.len() - MAX_VANISHED_RANGES;
            self.vanished_floor = self.vanished.drain(..drop).map(|(m, _, _)| m).max().unwrap_or(self.vanished_floor).max(self.vanished_floor);
        }
    }

    fn keyword_index(&mut self, name: &str, add: bool) -> Result<Option<usize>, ImapError> {
        if let Some(i) = self.keywords.iter().position(|k| k.eq_ignore_ascii_case(name)) {
            return Ok(Some(i));
        }
        if !add {
            return Ok(None);
        }
        if self.keywords.len() >= MAX_KEYWORDS {
            return Err(ImapError::TooManyKeywords);
        }
        self.keywords.push(name.to_string());
        Ok(Some(self.keywords.len() - 1))
    }
}

// ---------------------------------------------------------------------------
// Stamps and views

/// What identifies one state of a folder without reading it: the record's
/// and both message directories' stat() results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    record: Option<fsutil::FileStamp>,
    new: Option<fsutil::FileStamp>,
    cur: Option<fsutil::FileStamp>,
    /// Changed within [`STAMP_SETTLE`] of when it was taken.
    fresh: bool,
}

impl Stamp {
    /// The folder's stamp now.
    pub fn of(dir: &Path) -> Stamp {
        let now = SystemTime::now();
        let mut fresh = false;
        let mut st = |p: PathBuf| {
            let m = fs::metadata(p).ok()?;
            if let Ok(t) = m.modified() {
                if now.duration_since(t).map_or(true, |d| d < STAMP_SETTLE) {
                    fresh = true;
                }
            }
            Some(fsutil::FileStamp::of(&m))
        };
        let record = st(dir.join(RECORD));
        let new = st(dir.join("new"));
        let cur = st(dir.join("cur"));
        Stamp { record, new, cur, fresh }
    }

    /// Whether a folder with stamp `now` may differ from one that had this
    /// stamp.
    pub fn changed(&self, now: &Stamp) -> bool {
        self.fresh || self != now
    }
}

/// A folder as one sync saw it. Sessions keep the last one and compare.
#[derive(Debug, Clone)]
pub struct View {
    pub uidvalidity: u32,
    pub uidnext: u32,
    pub highestmodseq: u64,
    /// Keyword names by number (letter `a` + number).
    pub keywords: Vec<String>,
    /// Whether another keyword can be added (RFC 3501 7.1 PERMANENTFLAGS `\*`).
    pub keywords_full: bool,
    pub msgs: Vec<Msg>,
    /// UIDs this sync moved out of `new/` for the caller: its `\Recent`
    /// messages (RFC 3501 2.3.2).
    pub claimed: Vec<u32>,
    /// The stamp taken before the scan this view came from; `None` when the
    /// view came from the record alone (the next sync must look).
    pub stamp: Option<Stamp>,
}

impl View {
    fn of(r: &Record, claimed: Vec<u32>, stamp: Option<Stamp>) -> View {
        View {
            uidvalidity: r.uidvalidity,
            uidnext: r.uidnext,
            highestmodseq: r.highestmodseq,
            keywords: r.keywords.clone(),
            keywords_full: r.keywords.len() >= MAX_KEYWORDS,
            msgs: r.msgs.clone(),
            claimed,
            stamp,
        }
    }

    /// The message with `uid`, if the view has it.
    pub fn by_uid(&self, uid: u32) -> Option<&Msg> {
        self.msgs.binary_search_by_key(&uid, |m| m.uid).ok().map(|i| &self.msgs[i])
    }

    /// The keyword names of `flags`.
    pub fn keyword_names(&self, flags: Flags) -> impl Iterator<Item = &str> {
        self.keywords.iter().enumerate().filter(move |(i, _)| flags.has_keyword(*i)).map(|(_, k)| k.as_str())
    }

}

/// What a sync should do beside reading.
#[derive(Debug, Clone, Copy, Default)]
pub struct SyncMode {
    /// Move new messages to `cur/` and report them as claimed (a
    /// read-write SELECT; EXAMINE and STATUS leave them).
    pub claim_new: bool,
}

/// The messages of a folder on disk, by base name: (file under the folder,
/// size, mtime).
type Scan = HashMap<String, (String, Option<(u64, i64)>)>;

fn scan(dir: &Path, with_meta: bool) -> Result<Scan, ImapError> {
    let mut out = Scan::new();
    for sub in ["new", "cur"] {
        let d = dir.join(sub);
        let rd = match fs::read_dir(&d) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_fail(&d)(e)),
        };
        for e in rd {
            let e = e.map_err(io_fail(&d))?;
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with('.') {
                continue;
            }
            let base = name.split(':').next().unwrap_or(name).to_string();
            let file = format!("{sub}/{name}");
            let meta = if with_meta {
                match e.metadata() {
                    Ok(m) if m.is_file() => Some((m.len(), mtime_secs(&m))),
                    Ok(_) => continue,
                    Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
                    Err(err) => return Err(io_fail(&e.path())(err)),
                }
            } else {
                None
            };
            // Seen twice (a rename during readdir): the cur/ name wins, and
            // the locked pass looks again anyway.
            out.insert(base, (file, meta));
        }
    }
    Ok(out)
}

fn mtime_secs(m: &fs::Metadata) -> i64 {
    use std::os::unix::fs::MetadataExt;
    m.mtime()
}

/// Whether the record and the scan agree (nothing to write).
fn agrees(r: &Record, s: &Scan, mode: SyncMode) -> bool {
    if r.msgs.len() != s.len() {
        return false;
    }
    r.msgs.iter().all(|m| match s.get(m.base()) {
        Some((file, _)) => *file == m.file && !(mode.claim_new && m.in_new()),
        None => false,
    })
}

/// Brings the record in line with the scan: new files get UIDs (in
/// delivery order), missing ones are expunged, renamed ones (flags changed
/// by another tool) get a new modseq; with `claim_new`, files in `new/`
/// move to `cur/`. Returns the UIDs claimed. Under the folder lease only.
fn reconcile(dir: &Path, r: &mut Record, mut s: Scan, mode: SyncMode) -> Result<Vec<u32>, ImapError> {
    let mut gone = Vec::new();
    let mut kept = Vec::with_capacity(r.msgs.len());
    let old = std::mem::take(&mut r.msgs);
    let mut changes = Vec::new();
    for mut m in old {
        match s.remove(m.base()) {
            None => gone.push(m.uid),
            Some((file, _)) => {
                if file != m.file {
                    if flags_of_file(&file) != m.flags() {
                        changes.push(kept.len());
                    }
                    m.file = file;
                }
                kept.push(m);
            }
        }
    }
    if !gone.is_empty() {
        let ms = r.bump();
        r.note_vanished(ms, gone);
    }
    for i in changes {
        kept[i].modseq = r.bump();
    }
    let mut fresh: Vec<(String, String, Option<(u64, i64)>)> = s.into_iter().map(|(b, (f, m))| (b, f, m)).collect();
    fresh.sort_by(|a, b| sort_key(&a.0).cmp(&sort_key(&b.0)));
    for (_, file, meta) in fresh {
        let (size, date) = match meta {
            Some(m) => m,
            None => match fs::metadata(dir.join(&file)) {
                Ok(m) => (m.len(), mtime_secs(&m)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_fail(&dir.join(&file))(e)),
            },
        };
        if r.uidnext == u32::MAX {
            // RFC 3501 2.3.1.1: UIDs are 32-bit; a folder that used them
            // all needs a new UIDVALIDITY, which this code never makes.
            return Err(ImapError::Unavailable("the folder has used every UID".into()));
        }
        let uid = r.uidnext;
        r.uidnext += 1;
        let modseq = r.bump();
        kept.push(Msg { uid, modseq, size, date, file });
    }
    r.msgs = kept;
    let mut claimed = Vec::new();
    if mode.claim_new {
        for m in r.msgs.iter_mut().filter(|m| m.in_new()) {
            let to = cur_name(m.base(), Flags::default());
            match fs::rename(dir.join(&m.file), dir.join(&to)) {
                Ok(()) => {
                    m.file = to;
                    claimed.push(m.uid);
                }
                // Removed meanwhile (POP3): the next sync records it.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_fail(&dir.join(&m.file))(e)),
            }
        }
        // Not fsynced: after a crash a claimed file may be back in new/,
        // which the next sync finds and records again; no UID changes.
    }
    Ok(claimed)
}

fn sorted(uids: &[u32]) -> Vec<u32> {
    let mut v = uids.to_vec();
    v.sort_unstable();
    v
}

fn sync_dirs(dir: &Path) -> Result<(), ImapError> {
    for sub in ["new", "cur"] {
        let d = dir.join(sub);
        fsutil::sync_dir(&d).map_err(io_fail(&d))?;
    }
    Ok(())
}

/// A record's lease and its content, re-read after locking.
struct Locked {
    lease: Option<Lease>,
    record: Record,
    dir: PathBuf,
    /// This process's turn on the folder (released after the lease).
    _turn: LocalTurn,
}

/// Sessions of one process take a folder's lease in turn, waiting on a
/// condition variable instead of polling the lease file: the lease then
/// serves only to keep other nodes out.
struct LocalTurn {
    slot: Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
}

impl LocalTurn {
    fn take(key: &str, within: Duration) -> Option<LocalTurn> {
        static SLOTS: std::sync::OnceLock<std::sync::Mutex<HashMap<String, Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>>>> = std::sync::OnceLock::new();
        let slot = {
            let mut map = SLOTS.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
            // Forget folders no one waits for (bounds the map).
            if map.len() > 4096 {
                map.retain(|_, v| Arc::strong_count(v) > 1);
            }
            map.entry(key.to_string()).or_default().clone()
        };
        let (m, cv) = &*slot;
        let mut busy = m.lock().unwrap_or_else(|e| e.into_inner());
        let deadline = Instant::now() + within;
        while *busy {
            let left = deadline.checked_duration_since(Instant::now())?;
            busy = cv.wait_timeout(busy, left).unwrap_or_else(|e| e.into_inner()).0;
        }
        *busy = true;
        drop(busy);
        Some(LocalTurn { slot })
    }
}

impl Drop for LocalTurn {
    fn drop(&mut self) {
        let (m, cv) = &*self.slot;
        *m.lock().unwrap_or_else(|e| e.into_inner()) = false;
        cv.notify_one();
    }
}

impl Locked {
    /// Writes the record durably and releases the lease: for every change
    /// that gives out UIDs or removes messages.
    fn commit(self) -> Result<Record, ImapError> {
        self.commit_with(true)
    }

    /// Writes the record and releases the lease; `durable` false for flag
    /// changes only (as Dovecot, which does not fsync its index): a crash
    /// of the storage host may then bring back the older record, whose
    /// flags the next sync finds different from the file names and takes
    /// with new modseqs; UIDNEXT is never part of what can be lost, as
    /// every change that moves it is durable.
    fn commit_with(mut self, durable: bool) -> Result<Record, ImapError> {
        let path = self.dir.join(RECORD);
        if let Some(l) = &self.lease {
            if !l.still_held() {
                return Err(ImapError::Busy);
            }
        }
        // Written because something changed: the directories' settled
        // stamps no longer describe it (see `Store::settle`).
        self.record.settled = None;
        let data = self.record.encode();
        if durable {
            fsutil::write_atomic_at(&path, &data, "imap:record-before-rename").map_err(io_fail(&path))?;
        } else {
            fsutil::write_atomic_nosync(&path, &data).map_err(io_fail(&path))?;
        }
        if let Some(l) = self.lease.take() {
            let _ = l.release();
        }
        Ok(std::mem::replace(&mut self.record, Record::new(0)))
    }
}

impl Drop for Locked {
    fn drop(&mut self) {
        if let Some(l) = self.lease.take() {
            let _ = l.release();
        }
    }
}

fn read_record(dir: &Path) -> Result<Option<Record>, ImapError> {
    let path = dir.join(RECORD);
    match fs::read_to_string(&path) {
        Ok(t) => Record::decode(&t).map(Some).map_err(ImapError::Unavailable),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::InvalidData => Err(ImapError::Unavailable("not UTF-8".into())),
        Err(e) => Err(io_fail(&path)(e)),
    }
}

/// The sizes a folder's record gives its files (`cur/<name>` -> octets),
/// empty when there is no readable record. Files are never rewritten, so
/// a size recorded under a file's current name is its size.
pub(crate) fn recorded_sizes(dir: &Path) -> HashMap<String, u64> {
    match read_record(dir) {
        Ok(Some(r)) => r.msgs.into_iter().map(|m| (m.file, m.size)).collect(),
        _ => HashMap::new(),
    }
}

/// The lease name of a folder: readable where it fits, hashed where the
/// name would be too long for a file name (two folders that share a hash
/// only share a lock).
fn lease_name(addr: &Address, name: &str) -> String {
    let plain = format!("imap.{addr}.{}", name.replace(DELIMITER, "."));
    if plain.len() <= 200 && plain.chars().all(|c| c.is_ascii_graphic()) {
        return plain;
    }
    // FNV-1a 64.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in addr.to_string().bytes().chain([0]).chain(name.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("imap.{h:016x}")
}

/// A folder of an account, for the calls below.
#[derive(Debug, Clone, Copy)]
pub struct FolderRef<'a> {
    pub addr: &'a Address,
    /// The folder's name (checked and normalised by the call).
    pub name: &'a str,
}

impl Store {
    fn folder_path(&self, f: FolderRef<'_>) -> Result<(String, PathBuf), ImapError> {
        let name = normalize_name(f.name)?;
        let dir = folder_dir(&self.maildir_path(f.addr), &name)?;
        Ok((name, dir))
    }

    /// Takes a folder's lease (waiting up to [`FOLDER_LEASE_WAIT`]) and
    /// re-reads its record, creating it if the folder has none yet.
    fn lock_folder(&self, addr: &Address, name: &str, dir: &Path, who: Claimant<'_>) -> Result<Locked, ImapError> {
        if !dir.join("cur").is_dir() {
            return Err(ImapError::NoFolder);
        }
        let lease_name = lease_name(addr, name);
        let start = Instant::now();
        let turn = LocalTurn::take(&self.locks_dir().join(&lease_name).to_string_lossy(), FOLDER_LEASE_WAIT).ok_or(ImapError::Busy)?;
        // Another node holds it: poll, briefly (it holds it for milliseconds).
        let mut pause = Duration::from_millis(1);
        let lease = loop {
            match self.take_lease(&lease_name, who, FOLDER_LEASE_TTL) {
                Ok(l) => break l,
                Err(LockError::InUse { .. }) if start.elapsed() < FOLDER_LEASE_WAIT => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(10));
                }
                Err(e) => return Err(e.into()),
            }
        };
        let record = match read_record(dir)? {
            Some(r) => r,
            None => Record::new(self.new_uidvalidity(addr)?),
        };
        Ok(Locked { lease: Some(lease), record, dir: dir.to_path_buf(), _turn: turn })
    }

    /// RFC 3501 2.3.1.1: a name deleted and created again must get a new
    /// UIDVALIDITY. A 32-bit timestamp, but always past
    /// the last one the account gave ([`LAST_UIDVALIDITY`]), so that a
    /// DELETE and CREATE within a second differ too. Written durably before
    /// it is used.
    fn new_uidvalidity(&self, addr: &Address) -> Result<u32, ImapError> {
        let root = self.maildir_path(addr);
        let path = root.join(LAST_UIDVALIDITY);
        let last = fs::read_to_string(&path).ok().and_then(|t| t.trim().parse::<u32>().ok()).unwrap_or(0);
        // A node's clock is enough: the value only has to grow.
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(1, |d| d.as_secs());
        let v = u32::try_from(now).unwrap_or(u32::MAX).max(last.saturating_add(1)).max(1);
        fsutil::write_atomic(&path, format!("{v}\n").as_bytes()).map_err(io_fail(&path))?;
        Ok(v)
    }

    /// Reads a folder: its record and its messages, reconciled under the
    /// folder's lease when they disagree (new deliveries get their UIDs
    /// here). With `prev` and an unchanged [`Stamp`], returns `None`: the
    /// folder is as `prev` saw it.
    pub fn imap_sync(&self, f: FolderRef<'_>, who: Claimant<'_>, mode: SyncMode, prev: Option<&View>) -> Result<Option<View>, ImapError> {
        let (name, dir) = self.folder_path(f)?;
        let stamp = Stamp::of(&dir);
        if stamp.cur.is_none() {
            return Err(ImapError::NoFolder);
        }
        if let Some(prev) = prev {
            if let Some(ps) = &prev.stamp {
                if !ps.changed(&stamp) && !(mode.claim_new && prev.msgs.iter().any(|m| m.in_new())) {
                    return Ok(None);
                }
            }
        }
        if let Some(r) = read_record(&dir)? {
            // The directories are as they were when the record was last
            // found exact and settled: nothing to look at.
            let wants_claim = mode.claim_new && r.msgs.iter().any(|m| m.in_new());
            if !wants_claim && r.settled.is_some() && r.settled == stamp.new.zip(stamp.cur) {
                return Ok(Some(View::of(&r, Vec::new(), Some(stamp))));
            }
            let s = scan(&dir, false)?;
            if agrees(&r, &s, mode) {
                self.settle(f.addr, &name, &dir, who, &r, &stamp);
                return Ok(Some(View::of(&r, Vec::new(), Some(stamp))));
            }
        }
        let mut locked = self.lock_folder(f.addr, &name, &dir, who)?;
        sweep_temporaries(&dir);
        let stamp = Stamp::of(&dir);
        let s = scan(&dir, true)?;
        let (next, count, known) = (locked.record.uidnext, locked.record.msgs.len(), dir.join(RECORD).exists());
        let claimed = reconcile(&dir, &mut locked.record, s, mode)?;
        // UIDs given out or messages gone: durable; only flags or claims: not.
        let durable = !known || locked.record.uidnext != next || locked.record.msgs.len() != count;
        let r = locked.commit_with(durable)?;
        Ok(Some(View::of(&r, claimed, Some(stamp))))
    }

    /// UIDs expunged from a folder after `modseq` (RFC 7162 3.2.5.2 QRESYNC,
    /// 3.2.6 VANISHED) as ranges, and whether the history reaches back that
    /// far. Read from the record: views do not carry the history, which
    /// would cost every session its size.
    pub fn imap_vanished(&self, f: FolderRef<'_>, modseq: u64) -> Result<(Vec<(u32, u32)>, bool), ImapError> {
        let (_, dir) = self.folder_path(f)?;
        match read_record(&dir)? {
            Some(r) => Ok(r.vanished_since(modseq)),
            None => Ok((Vec::new(), modseq == 0)),
        }
    }

    /// After a readdir() found the record exact: if the directories had
    /// not changed for [`STAMP_SETTLE`] by the store's clock before their
    /// stamps were taken, remember the stamps in the record, so that the
    /// next readers skip the readdir() while they hold. Any later change
    /// of a directory happens after that quiet time and so changes its
    /// stamp. Best effort: a busy folder or a failure only means the next
    /// reader looks again.
    fn settle(&self, addr: &Address, name: &str, dir: &Path, who: Claimant<'_>, seen: &Record, stamp: &Stamp) {
        let (Some(n), Some(c)) = (stamp.new, stamp.cur) else { return };
        let Ok(now) = self.now(who.node) else { return };
        let quiet = |st: &fsutil::FileStamp| {
            let (secs, nanos) = st.mtime();
            let t = UNIX_EPOCH + Duration::new(secs.max(0) as u64, nanos.clamp(0, 999_999_999) as u32);
            now.duration_since(t).is_ok_and(|age| age > STAMP_SETTLE)
        };
        if !quiet(&n) || !quiet(&c) {
            return;
        }
        // Only if no one else holds the folder now: never wait for this.
        let Some(turn) = LocalTurn::take(&self.locks_dir().join(lease_name(addr, name)).to_string_lossy(), Duration::ZERO) else { return };
        let Ok(lease) = self.take_lease(&lease_name(addr, name), who, FOLDER_LEASE_TTL) else { return };
        let mut locked = Locked { lease: Some(lease), record: match read_record(dir) {
            Ok(Some(r)) => r,
            _ => return,
        }, dir: dir.to_path_buf(), _turn: turn };
        let again = Stamp::of(dir);
        if again.new != Some(n) || again.cur != Some(c) || locked.record.msgs != seen.msgs || locked.record.uidnext != seen.uidnext {
            return;
        }
        let path = dir.join(RECORD);
        if let Some(l) = &locked.lease {
            if !l.still_held() {
                return;
            }
        }
        locked.record.settled = Some((n, c));
        // Not fsynced: losing it only costs the next reader a readdir().
        let _ = fsutil::write_atomic_nosync(&path, &locked.record.encode());
    }

    /// The stamp of a folder now (for IDLE watchers).
    pub fn imap_stamp(&self, f: FolderRef<'_>) -> Result<Stamp, ImapError> {
        let (_, dir) = self.folder_path(f)?;
        Ok(Stamp::of(&dir))
    }

    /// The absolute path of a message of a folder as a view names it.
    pub fn imap_message_path(&self, f: FolderRef<'_>, m: &Msg) -> Result<PathBuf, ImapError> {
        let (_, dir) = self.folder_path(f)?;
        Ok(dir.join(&m.file))
    }

    /// Opens a message, following a rename made since the view was taken
    /// (a flag change elsewhere). `None` when it is gone.
    pub fn imap_open(&self, f: FolderRef<'_>, m: &Msg) -> Result<Option<fs::File>, ImapError> {
        let (_, dir) = self.folder_path(f)?;
        let path = dir.join(&m.file);
        match fs::File::open(&path) {
            Ok(file) => return Ok(Some(file)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_fail(&path)(e)),
        }
        let base = m.base();
        for sub in ["cur", "new"] {
            let d = dir.join(sub);
            let rd = match fs::read_dir(&d) {
                Ok(rd) => rd,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_fail(&d)(e)),
            };
            for e in rd.flatten() {
                let n = e.file_name();
                let Some(n) = n.to_str() else { continue };
                if n.split(':').next() == Some(base) {
                    match fs::File::open(e.path()) {
                        Ok(file) => return Ok(Some(file)),
                        Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
                        Err(err) => return Err(io_fail(&e.path())(err)),
                    }
                }
            }
        }
        Ok(None)
    }

    /// Changes the flags of messages (RFC 3501 6.4.6) under the folder's
    /// lease, from their current flags (so that two sessions' +FLAGS both
    /// stay). With `unchanged_since` (RFC 7162 3.1.3), a message changed
    /// after it is left alone and listed in the outcome's `failed`.
    /// Returns the folder as it is afterwards and the UIDs changed.
    #[allow(clippy::too_many_arguments)]
    pub fn imap_store(&self, f: FolderRef<'_>, who: Claimant<'_>, uids: &[u32], mode: FlagMode, flags: Flags, keywords: &[String], unchanged_since: Option<u64>) -> Result<StoreOutcome, ImapError> {
        let (name, dir) = self.folder_path(f)?;
        let mut locked = self.lock_folder(f.addr, &name, &dir, who)?;
        let r = &mut locked.record;
        let mut set = flags;
        for k in keywords {
            // Removing a keyword the folder never had is a no-op.
            if let Some(i) = r.keyword_index(k, mode != FlagMode::Remove)? {
                set = set.union(Flags::keyword(i));
            }
        }
        let mut changed = Vec::new();
        let mut failed = Vec::new();
        for &uid in uids {
            let Ok(i) = r.msgs.binary_search_by_key(&uid, |m| m.uid) else { continue };
            if let Some(since) = unchanged_since {
                if r.msgs[i].modseq > since {
                    failed.push(uid);
                    continue;
                }
            }
            let old = r.msgs[i].flags();
            let new = match mode {
                FlagMode::Replace => set,
                FlagMode::Add => old.union(set),
                FlagMode::Remove => old.minus(set),
            };
            if new == old && !(r.msgs[i].in_new() && new != Flags::default()) {
                continue;
            }
            let to = cur_name(r.msgs[i].base(), new);
            let mut from = dir.join(&r.msgs[i].file);
            if let Err(e) = fs::rename(&from, dir.join(&to)) {
                if e.kind() != io::ErrorKind::NotFound {
                    return Err(io_fail(&from)(e));
                }
                // Renamed by another tool, or removed by POP3: look.
                let s = scan(&dir, false)?;
                match s.get(r.msgs[i].base()) {
                    Some((file, _)) => {
                        from = dir.join(file);
                        fs::rename(&from, dir.join(&to)).map_err(io_fail(&from))?;
                    }
                    None => continue,
                }
            }
            let ms = r.bump();
            let m = &mut r.msgs[i];
            m.file = to;
            m.modseq = ms;
            changed.push(uid);
        }
        // Flag changes are not fsynced (see `Locked::commit_with`).
        let r = if changed.is_empty() && keywords.is_empty() { locked.record.clone() } else { locked.commit_with(false)? };
        Ok(StoreOutcome { view: View::of(&r, Vec::new(), None), changed, failed })
    }

    /// Removes the messages flagged `\Deleted` (RFC 3501 6.4.3), only those
    /// among `only` when given (RFC 4315 2.1 UID EXPUNGE). Returns the
    /// folder afterwards and the UIDs removed.
    pub fn imap_expunge(&self, f: FolderRef<'_>, who: Claimant<'_>, only: Option<&[u32]>) -> Result<(View, Vec<u32>), ImapError> {
        let only = only.map(sorted);
        self.remove_where(f, who, |m| m.flags().contains(Flags::DELETED) && only.as_ref().map_or(true, |o| o.binary_search(&m.uid).is_ok()))
    }

    /// Removes the messages `doomed` picks, under the folder's lease: the
    /// files first (a crash then leaves files gone that the next sync
    /// records as expunged), then the record, durably.
    fn remove_where(&self, f: FolderRef<'_>, who: Claimant<'_>, doomed: impl Fn(&Msg) -> bool) -> Result<(View, Vec<u32>), ImapError> {
        let (name, dir) = self.folder_path(f)?;
        let mut locked = self.lock_folder(f.addr, &name, &dir, who)?;
        let doomed: Vec<u32> = locked.record.msgs.iter().filter(|m| doomed(m)).map(|m| m.uid).collect();
        if doomed.is_empty() {
            return Ok((View::of(&locked.record, Vec::new(), None), doomed));
        }
        for m in locked.record.msgs.iter().filter(|m| doomed.binary_search(&m.uid).is_ok()) {
            let p = dir.join(&m.file);
            match fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_fail(&p)(e)),
            }
            fsutil::crash_point("imap:expunge-after-unlink");
        }
        sync_dirs(&dir)?;
        let r = &mut locked.record;
        r.msgs.retain(|m| doomed.binary_search(&m.uid).is_err());
        let ms = r.bump();
        r.note_vanished(ms, doomed.clone());
        let r = locked.commit()?;
        Ok((View::of(&r, Vec::new(), None), doomed))
    }

    /// Adds a message to a folder (RFC 3501 6.3.11 APPEND) from a file
    /// already written and fsynced (`source`, in the node's spool): it is
    /// linked into `cur/` with `flags`, its mtime set to `date` (the
    /// internal date), and given the next UID. Returns (UIDVALIDITY, UID)
    /// for RFC 4315 APPENDUID.
    #[allow(clippy::too_many_arguments)]
    pub fn imap_append(&self, f: FolderRef<'_>, who: Claimant<'_>, source: &Path, flags: Flags, keywords: &[String], date: Option<i64>) -> Result<(u32, u32), ImapError> {
        let (name, dir) = self.folder_path(f)?;
        if !dir.join("cur").is_dir() {
            return Err(ImapError::NoFolder);
        }
        if let Some(d) = date {
            set_mtime(source, d).map_err(io_fail(source))?;
        }
        let meta = fs::metadata(source).map_err(io_fail(source))?;
        // Linked and made durable before the folder is locked, so that the
        // folder's other sessions do not wait behind these fsyncs. Only the
        // system flags are in the name yet: keyword letters are the
        // record's to give. A reader that finds the file first numbers it;
        // then it keeps that UID (a crash before the lock leaves a file the
        // next sync numbers, never a lost or a doubly numbered one).
        let base = unique_name(who.node);
        let system = Flags(flags.0 & ((1 << Flags::KEYWORD_SHIFT) - 1));
        let linked = cur_name(&base, system);
        let target = dir.join(&linked);
        fs::hard_link(source, &target).map_err(io_fail(&target))?;
        let cur = dir.join("cur");
        fsutil::sync_dir(&cur).map_err(io_fail(&cur))?;
        fsutil::crash_point("imap:append-after-link");
        let mut locked = self.lock_folder(f.addr, &name, &dir, who)?;
        let r = &mut locked.record;
        let mut all = system;
        for k in keywords {
            if let Some(i) = r.keyword_index(k, true)? {
                all = all.union(Flags::keyword(i));
            }
        }
        let file = cur_name(&base, all);
        if file != linked {
            fs::rename(&target, dir.join(&file)).map_err(io_fail(&target))?;
        }
        let modseq = r.bump();
        let uid = match r.msgs.iter_mut().find(|m| m.base() == base) {
            Some(m) => {
                m.file = file;
                m.modseq = modseq;
                m.uid
            }
            None => {
                let uid = r.uidnext;
                r.uidnext += 1;
                r.msgs.push(Msg { uid, modseq, size: meta.len(), date: mtime_secs(&meta), file });
                uid
            }
        };
        let r = locked.commit()?;
        Ok((r.uidvalidity, uid))
    }

    /// Copies messages of one folder into another (RFC 3501 6.4.7), with
    /// their flags (and keywords by name) and internal dates: each file is
    /// hard-linked under a new base name. Returns the target's UIDVALIDITY
    /// and (source UID, new UID) pairs for RFC 4315 COPYUID.
    pub fn imap_copy(&self, from: FolderRef<'_>, src: &View, uids: &[u32], to: FolderRef<'_>, who: Claimant<'_>) -> Result<(u32, Vec<(u32, u32)>), ImapError> {
        let (_, from_dir) = self.folder_path(from)?;
        let (to_name, to_dir) = self.folder_path(to)?;
        let mut locked = self.lock_folder(to.addr, &to_name, &to_dir, who)?;
        let mut pairs = Vec::new();
        let mut new_msgs = Vec::new();
        for &uid in uids {
            let Some(m) = src.by_uid(uid) else { continue };
            let old = m.flags();
            let mut flags = Flags(old.0 & ((1 << Flags::KEYWORD_SHIFT) - 1));
            for (i, k) in src.keywords.iter().enumerate() {
                if old.has_keyword(i) {
                    if let Some(j) = locked.record.keyword_index(k, true)? {
                        flags = flags.union(Flags::keyword(j));
                    }
                }
            }
            let base = unique_name(who.node);
            let file = cur_name(&base, flags);
            let target = to_dir.join(&file);
            let mut source = from_dir.join(&m.file);
            if let Err(e) = fs::hard_link(&source, &target) {
                if e.kind() != io::ErrorKind::NotFound {
                    return Err(io_fail(&target)(e));
                }
                // Renamed since the view: find it by its base name.
                let s = scan(&from_dir, false)?;
                let Some((f, _)) = s.get(m.base()) else { continue };
                source = from_dir.join(f);
                match fs::hard_link(&source, &target) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io_fail(&target)(e)),
                }
            }
            new_msgs.push((uid, Msg { uid: 0, modseq: 0, size: m.size, date: m.date, file }));
        }
        if new_msgs.is_empty() {
            return Ok((locked.record.uidvalidity, pairs));
        }
        let cur = to_dir.join("cur");
        fsutil::sync_dir(&cur).map_err(io_fail(&cur))?;
        fsutil::crash_point("imap:copy-after-link");
        let r = &mut locked.record;
        for (src_uid, mut m) in new_msgs {
            m.uid = r.uidnext;
            r.uidnext += 1;
            m.modseq = r.bump();
            pairs.push((src_uid, m.uid));
            r.msgs.push(m);
        }
        let r = locked.commit()?;
        Ok((r.uidvalidity, pairs))
    }

    /// Removes messages from a folder whatever their flags: the second half
    /// of MOVE (RFC 6851 3.3), after the copy. Returns the folder afterwards
    /// and the UIDs removed.
    pub fn imap_remove(&self, f: FolderRef<'_>, who: Claimant<'_>, uids: &[u32]) -> Result<(View, Vec<u32>), ImapError> {
        let uids = sorted(uids);
        self.remove_where(f, who, |m| uids.binary_search(&m.uid).is_ok())
    }

    // -----------------------------------------------------------------------
    // Folders

    /// Makes sure an account has its Maildir and the default folders
    /// ([`DEFAULT_FOLDERS`]), subscribed. Cheap when they exist.
    pub fn imap_prepare(&self, addr: &Address) -> Result<(), ImapError> {
        let root = self.ensure_maildir(addr)?;
        // A DELETE that a crash interrupted: finish it.
        if let Ok(rd) = fs::read_dir(&root) {
            for e in rd.flatten() {
                if e.file_name().to_str().is_some_and(|n| n.starts_with(DELETING_PREFIX)) {
                    let _ = fs::remove_dir_all(e.path());
                }
            }
        }
        let mut made = false;
        for (name, use_) in DEFAULT_FOLDERS {
            let dir = folder_dir(&root, name)?;
            if dir.join("cur").is_dir() {
                continue;
            }
            make_folder(&dir, Some(use_))?;
            made = true;
        }
        if made {
            fsutil::sync_dir(&root).map_err(io_fail(&root))?;
            let mut subs = self.imap_subscriptions(addr)?;
            for (name, _) in DEFAULT_FOLDERS {
                if !subs.iter().any(|s| s == name) {
                    subs.push(name.to_string());
                }
            }
            if !subs.iter().any(|s| s == "INBOX") {
                subs.insert(0, "INBOX".into());
            }
            self.write_subscriptions(addr, &subs)?;
        }
        Ok(())
    }

    /// The folders of an account, INBOX first, then by name.
    pub fn imap_folders(&self, addr: &Address) -> Result<Vec<FolderInfo>, ImapError> {
        let root = self.maildir_path(addr);
        let mut out = vec![FolderInfo { name: "INBOX".into(), special_use: None }];
        let rd = match fs::read_dir(&root) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(io_fail(&root)(e)),
        };
        let mut rest = Vec::new();
        for e in rd.flatten() {
            let n = e.file_name();
            let Some(n) = n.to_str() else { continue };
            let Some(name) = name_of_dir(n) else { continue };
            if !e.path().join("cur").is_dir() {
                continue;
            }
            let special_use = fs::read_to_string(e.path().join(SPECIAL_USE)).ok().map(|s| s.trim().to_string()).filter(|s| SPECIAL_USES.contains(&s.as_str()));
            rest.push(FolderInfo { name, special_use });
        }
        rest.sort_by(|a, b| a.name.cmp(&b.name));
        out.extend(rest);
        Ok(out)
    }

    /// Creates a folder (RFC 3501 6.3.3), and the levels above it that do
    /// not exist yet; with a SPECIAL-USE attribute (RFC 6154 3).
    pub fn imap_create(&self, addr: &Address, name: &str, special_use: Option<&str>) -> Result<(), ImapError> {
        let name = normalize_name(name)?;
        if name == "INBOX" {
            return Err(ImapError::Exists);
        }
        if let Some(u) = special_use {
            if !SPECIAL_USES.contains(&u) {
                return Err(ImapError::BadName("unknown special-use attribute"));
            }
        }
        let root = self.ensure_maildir(addr)?;
        let folders = self.imap_folders(addr)?;
        if folders.iter().any(|f| f.name == name) {
            return Err(ImapError::Exists);
        }
        let mut parents = Vec::new();
        let mut acc = String::new();
        let levels: Vec<&str> = name.split(DELIMITER).collect();
        for l in &levels[..levels.len() - 1] {
            if !acc.is_empty() {
                acc.push(DELIMITER);
            }
            acc.push_str(l);
            if acc != "INBOX" && !folders.iter().any(|f| f.name == acc) {
                parents.push(acc.clone());
            }
        }
        if folders.len() + parents.len() + 1 > MAX_FOLDERS {
            return Err(ImapError::TooManyFolders);
        }
        for p in &parents {
            make_folder(&folder_dir(&root, p)?, None)?;
        }
        make_folder(&folder_dir(&root, &name)?, special_use)?;
        fsutil::sync_dir(&root).map_err(io_fail(&root))?;
        Ok(())
    }

    /// Deletes a folder and its messages (RFC 3501 6.3.4). INBOX cannot be
    /// deleted; a folder with subfolders is refused (RFC 3501 6.3.4 allows
    /// keeping it as \Noselect; refusing is simpler and loses nothing).
    pub fn imap_delete(&self, addr: &Address, name: &str) -> Result<(), ImapError> {
        let name = normalize_name(name)?;
        if name == "INBOX" {
            return Err(ImapError::Protected("deleted"));
        }
        let root = self.maildir_path(addr);
        let folders = self.imap_folders(addr)?;
        if !folders.iter().any(|f| f.name == name) {
            return Err(ImapError::NoFolder);
        }
        let prefix = format!("{name}{DELIMITER}");
        if folders.iter().any(|f| f.name.starts_with(&prefix)) {
            return Err(ImapError::HasChildren);
        }
        let dir = folder_dir(&root, &name)?;
        // Renamed aside first (no longer a folder: no leading dot), then
        // removed; a crash in between leaves a directory the sweep removes.
        let aside = root.join(format!("{DELETING_PREFIX}{:016x}", rand::random::<u64>()));
        fs::rename(&dir, &aside).map_err(io_fail(&dir))?;
        fsutil::sync_dir(&root).map_err(io_fail(&root))?;
        let _ = fs::remove_dir_all(&aside);
        let mut subs = self.imap_subscriptions(addr)?;
        let before = subs.len();
        subs.retain(|s| *s != name);
        if subs.len() != before {
            self.write_subscriptions(addr, &subs)?;
        }
        Ok(())
    }

    /// Renames a folder and its subfolders (RFC 3501 6.3.5), keeping their
    /// UIDVALIDITY and UIDs. Renaming INBOX moves its messages into a new
    /// folder and leaves INBOX empty (RFC 3501 6.3.5).
    pub fn imap_rename(&self, addr: &Address, from: &str, to: &str, who: Claimant<'_>) -> Result<(), ImapError> {
        let from = normalize_name(from)?;
        let to = normalize_name(to)?;
        if to == "INBOX" {
            return Err(ImapError::Exists);
        }
        let root = self.ensure_maildir(addr)?;
        let folders = self.imap_folders(addr)?;
        if !folders.iter().any(|f| f.name == from) {
            return Err(ImapError::NoFolder);
        }
        if folders.iter().any(|f| f.name == to) {
            return Err(ImapError::Exists);
        }
        if to.starts_with(&format!("{from}{DELIMITER}")) {
            return Err(ImapError::BadName("a folder cannot be moved into itself"));
        }
        if from == "INBOX" {
            self.imap_create(addr, &to, None)?;
            let inbox = FolderRef { addr, name: "INBOX" };
            let view = self.imap_sync(inbox, who, SyncMode::default(), None)?.ok_or(ImapError::NoFolder)?;
            let uids: Vec<u32> = view.msgs.iter().map(|m| m.uid).collect();
            self.imap_copy(inbox, &view, &uids, FolderRef { addr, name: &to }, who)?;
            self.imap_remove(inbox, who, &uids)?;
            return Ok(());
        }
        // Parents of the new name that do not exist yet.
        let levels: Vec<&str> = to.split(DELIMITER).collect();
        let mut acc = String::new();
        for l in &levels[..levels.len() - 1] {
            if !acc.is_empty() {
                acc.push(DELIMITER);
            }
            acc.push_str(l);
            if acc != "INBOX" && !folders.iter().any(|f| f.name == acc) {
                make_folder(&folder_dir(&root, &acc)?, None)?;
            }
        }
        let prefix = format!("{from}{DELIMITER}");
        let mut moves: Vec<(String, String)> = vec![(from.clone(), to.clone())];
        for f in folders.iter().filter(|f| f.name.starts_with(&prefix)) {
            moves.push((f.name.clone(), format!("{to}{DELIMITER}{}", &f.name[prefix.len()..])));
        }
        for (a, b) in &moves {
            let (da, db) = (folder_dir(&root, a)?, folder_dir(&root, b)?);
            fs::rename(&da, &db).map_err(io_fail(&da))?;
        }
        fsutil::sync_dir(&root).map_err(io_fail(&root))?;
        let mut subs = self.imap_subscriptions(addr)?;
        let mut changed = false;
        for s in subs.iter_mut() {
            if let Some((_, b)) = moves.iter().find(|(a, _)| a == s) {
                *s = b.clone();
                changed = true;
            }
        }
        if changed {
            self.write_subscriptions(addr, &subs)?;
        }
        Ok(())
    }

    /// The subscribed folder names (RFC 3501 6.3.6).
    pub fn imap_subscriptions(&self, addr: &Address) -> Result<Vec<String>, ImapError> {
        let path = self.maildir_path(addr).join(SUBSCRIPTIONS);
        match fs::read_to_string(&path) {
            Ok(t) => Ok(t.lines().filter(|l| !l.is_empty()).map(str::to_string).collect()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(io_fail(&path)(e)),
        }
    }

    /// SUBSCRIBE and UNSUBSCRIBE (RFC 3501 6.3.6, 6.3.7). A name need not
    /// exist to be subscribed (RFC 3501 6.3.6 allows either; clients
    /// subscribe before they create).
    pub fn imap_subscribe(&self, addr: &Address, name: &str, on: bool) -> Result<(), ImapError> {
        let name = normalize_name(name)?;
        self.ensure_maildir(addr)?;
        let mut subs = self.imap_subscriptions(addr)?;
        let has = subs.iter().any(|s| *s == name);
        if on && !has {
            if subs.len() >= MAX_FOLDERS {
                return Err(ImapError::TooManyFolders);
            }
            subs.push(name);
        } else if !on && has {
            subs.retain(|s| *s != name);
        } else {
            return Ok(());
        }
        self.write_subscriptions(addr, &subs)
    }

    fn write_subscriptions(&self, addr: &Address, subs: &[String]) -> Result<(), ImapError> {
        let path = self.maildir_path(addr).join(SUBSCRIPTIONS);
        let mut text = String::new();
        for s in subs {
            text.push_str(s);
            text.push('\n');
        }
        fsutil::write_atomic(&path, text.as_bytes()).map_err(io_fail(&path))
    }
}

/// Removes what a crash left in a folder's directory: temporary records
/// of [`fsutil::write_atomic`] older than [`crate::sweep::TEMP_MIN_AGE`]
/// (the whole-store sweep does not walk Maildirs). Under the lease.
fn sweep_temporaries(dir: &Path) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    let prefix = format!(".{RECORD}{}", fsutil::TEMP_MARK);
    for e in rd.flatten() {
        let n = e.file_name();
        if !n.to_str().is_some_and(|n| n.starts_with(&prefix)) {
            continue;
        }
        let old = e.metadata().ok().and_then(|m| m.modified().ok()).and_then(|t| SystemTime::now().duration_since(t).ok()).is_some_and(|age| age > crate::sweep::TEMP_MIN_AGE);
        if old {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// The prefix of a folder directory being deleted.
pub const DELETING_PREFIX: &str = "deleting.";

/// Makes a folder's directory under an existing Maildir, with its
/// SPECIAL-USE attribute. `cur/` comes last: a directory is a folder once
/// it has one (`imap_folders`), so a crash leaves a folder whole or a
/// directory no one lists. One fsync of the file and of the folder's
/// directory; the caller fsyncs the Maildir once for all it made (on NFS
/// each fsync is a round trip to the storage host).
fn make_folder(dir: &Path, special_use: Option<&str>) -> Result<(), ImapError> {
    match fsutil::create_private_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_fail(dir)(e)),
    }
    if let Some(u) = special_use {
        let path = dir.join(SPECIAL_USE);
        let write = || -> io::Result<()> {
            use std::io::Write as _;
            use std::os::unix::fs::OpenOptionsExt as _;
            let mut f = fs::OpenOptions::new().write(true).create(true).truncate(true).mode(fsutil::FILE_MODE).open(&path)?;
            f.write_all(format!("{u}\n").as_bytes())?;
            f.sync_all()
        };
        write().map_err(io_fail(&path))?;
    }
    for sub in ["tmp", "new", "cur"] {
        let d = dir.join(sub);
        match fsutil::create_private_dir(&d) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_fail(&d)(e)),
        }
    }
    fsutil::sync_dir(dir).map_err(io_fail(dir))
}

fn set_mtime(path: &Path, unix: i64) -> io::Result<()> {
    let t = if unix >= 0 { UNIX_EPOCH + Duration::from_secs(unix as u64) } else { UNIX_EPOCH };
    let f = fs::OpenOptions::new().write(true).open(path)?;
    f.set_times(fs::FileTimes::new().set_modified(t).set_accessed(t))
}

/// What [`Store::imap_store`] did.
#[derive(Debug, Clone)]
pub struct StoreOutcome {
    pub view: View,
    /// UIDs whose flags changed.
    pub changed: Vec<u32>,
    /// UIDs left alone by UNCHANGEDSINCE (RFC 7162 3.1.3 MODIFIED).
    pub failed: Vec<u32>,
}

/// A shared, immutable view (sessions on one node may share one).
pub type SharedView = Arc<View>;

#[cfg(test)]
mod tests;
