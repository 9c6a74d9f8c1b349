//! PLACEHOLDER for compiling; replaced by the real module.
use proto::imap::{SearchKey, SequenceSet, SeqNum};
pub struct Meta<'a> {
    pub seq: u32, pub uid: u32,
    pub seen: bool, pub answered: bool, pub flagged: bool, pub deleted: bool, pub draft: bool, pub recent: bool,
    pub keywords: &'a [String], pub internal_date: i64, pub size: u64, pub modseq: u64,
}
pub struct Bounds { pub last_seq: u32, pub last_uid: u32 }
pub fn needs_message(_key: &SearchKey) -> bool { false }
pub fn matches(key: &SearchKey, meta: &Meta<'_>, _msg: Option<&crate::imap::message::Parsed<'_>>, b: &Bounds) -> bool {
    match key { SearchKey::All => true, SearchKey::Seen => meta.seen, SearchKey::Unseen => !meta.seen, SearchKey::Uid(s) => set_contains(s, meta.uid, b.last_uid), _ => true }
}
pub fn check_charset(c: Option<&str>) -> Result<(), ()> { match c { None => Ok(()), Some(c) if c.eq_ignore_ascii_case("UTF-8") || c.eq_ignore_ascii_case("US-ASCII") => Ok(()), _ => Err(()) } }
pub fn set_contains(set: &SequenceSet, n: u32, last: u32) -> bool {
    set.0.iter().any(|&(a, b)| { let v = |s: SeqNum| match s { SeqNum::Number(x) => x, SeqNum::Last => last }; v(a).min(v(b)) <= n && n <= v(a).max(v(b)) })
}
