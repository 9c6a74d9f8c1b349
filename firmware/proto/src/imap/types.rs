//! The IMAP command tree (RFC 3501 9, with the extensions mailfort
//! implements). The parser (`super::parse`) builds it; the daemon acts on
//! it. Strings are owned bytes: a command can carry literals, which arrive
//! in separate reads.

use alloc::string::String;
use alloc::vec::Vec;

/// A command with its tag (RFC 3501 2.2.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tagged {
    pub tag: String,
    pub command: Command,
}

/// One number of a sequence set: a number or `*` (RFC 3501 9 seq-number).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqNum {
    Number(u32),
    /// `*`: the largest number in use (RFC 3501 9).
    Last,
}

/// A sequence set (RFC 3501 9 sequence-set): ranges as written, either end
/// first; `$` (RFC 5182 SEARCHRES) is not supported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SequenceSet(pub Vec<(SeqNum, SeqNum)>);

/// A mailbox name as sent: UTF-7 modified (RFC 3501 5.1.3) or UTF-8 once
/// enabled; `INBOX` in any case means the inbox (RFC 3501 5.1).
pub type MailboxName = Vec<u8>;

/// A flag in STORE, APPEND and SEARCH KEYWORD (RFC 3501 2.3.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flag {
    Seen,
    Answered,
    Flagged,
    Deleted,
    Draft,
    /// A keyword (atom), kept as written.
    Keyword(String),
    /// A `\Something` not defined by RFC 3501 (refused by STORE).
    Extension(String),
}

/// Where a section's text starts and how long it is (RFC 3501 6.4.5
/// `<origin.size>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partial {
    pub origin: u32,
    pub length: u32,
}

/// The text part of a section specifier (RFC 3501 6.4.5, 9 section-text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SectionText {
    /// No text part: the whole (sub)part.
    Full,
    Header,
    /// HEADER.FIELDS (names, as written).
    HeaderFields(Vec<String>),
    HeaderFieldsNot(Vec<String>),
    Text,
    /// MIME: the part's own MIME header (only after a part number).
    Mime,
}

/// A section: part numbers (empty for the whole message) and the text part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub part: Vec<u32>,
    pub text: SectionText,
}

/// A FETCH data item (RFC 3501 6.4.5; BINARY RFC 3516 4.2; MODSEQ RFC 7162
/// 3.1.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchAttr {
    Envelope,
    Flags,
    InternalDate,
    Rfc822,
    Rfc822Header,
    Rfc822Size,
    Rfc822Text,
    Body,
    BodyStructure,
    Uid,
    /// BODY[section]<partial> (peek: BODY.PEEK, which does not set \Seen).
    BodySection { section: Section, partial: Option<Partial>, peek: bool },
    /// BINARY[part]<partial> and BINARY.PEEK (RFC 3516 4.2).
    Binary { part: Vec<u32>, partial: Option<Partial>, peek: bool },
    /// BINARY.SIZE[part] (RFC 3516 4.2).
    BinarySize { part: Vec<u32> },
    ModSeq,
}

/// FETCH modifiers (RFC 7162 3.1.4.1 CHANGEDSINCE, 3.2.6 VANISHED).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchModifiers {
    pub changed_since: Option<u64>,
    pub vanished: bool,
}

/// How STORE changes flags (RFC 3501 6.4.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreMode {
    Replace,
    Add,
    Remove,
}

/// A date as in SEARCH (RFC 3501 9 date: day, month 1-12, year).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Date {
    pub year: u16,
    pub month: u8,
    pub day: u8,
}

/// A date-time as in APPEND and INTERNALDATE (RFC 3501 9 date-time):
/// seconds since the epoch in UTC and the zone as written, in minutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateTime {
    pub unix: i64,
    pub zone_minutes: i16,
}

/// A SEARCH key (RFC 3501 6.4.4; MODSEQ RFC 7162 3.1.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SearchKey {
    All,
    Answered,
    Bcc(Vec<u8>),
    Before(Date),
    Body(Vec<u8>),
    Cc(Vec<u8>),
    Deleted,
    Draft,
    Flagged,
    From(Vec<u8>),
    /// HEADER field-name string.
    Header(String, Vec<u8>),
    Keyword(String),
    Larger(u32),
    New,
    Not(alloc::boxed::Box<SearchKey>),
    Old,
    On(Date),
    Or(alloc::boxed::Box<SearchKey>, alloc::boxed::Box<SearchKey>),
    Recent,
    Seen,
    SentBefore(Date),
    SentOn(Date),
    SentSince(Date),
    Since(Date),
    Smaller(u32),
    Subject(Vec<u8>),
    Text(Vec<u8>),
    To(Vec<u8>),
    Uid(SequenceSet),
    Unanswered,
    Undeleted,
    Undraft,
    Unflagged,
    Unkeyword(String),
    Unseen,
    /// A bare sequence set (RFC 3501 6.4.4).
    Sequence(SequenceSet),
    /// A parenthesized list: all must match.
    And(Vec<SearchKey>),
    /// MODSEQ (RFC 7162 3.1.5; the entry name and type are parsed and
    /// ignored, as they may be).
    ModSeq(u64),
}

/// What STATUS asks for (RFC 3501 6.3.10; HIGHESTMODSEQ RFC 7162 3.1.7;
/// SIZE RFC 8438 is not offered).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusItem {
    Messages,
    Recent,
    UidNext,
    UidValidity,
    Unseen,
    HighestModSeq,
}

/// LIST selection options (RFC 5258 3.1, RFC 6154 5.1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListSelect {
    pub subscribed: bool,
    pub remote: bool,
    pub recursive_match: bool,
    pub special_use: bool,
}

/// LIST return options (RFC 5258 3.2, RFC 5819 LIST-STATUS, RFC 6154 5.1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListReturn {
    pub subscribed: bool,
    pub children: bool,
    pub special_use: bool,
    /// RETURN (STATUS (...)) (RFC 5819 2).
    pub status: Option<Vec<StatusItem>>,
}

/// SELECT/EXAMINE parameters (RFC 7162 3.1.8 CONDSTORE, 3.2.5 QRESYNC).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SelectParams {
    pub condstore: bool,
    pub qresync: Option<Qresync>,
}

/// QRESYNC (uidvalidity modseq [known-uids [seq-match-data]]) (RFC 7162
/// 3.2.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qresync {
    pub uid_validity: u32,
    pub mod_seq: u64,
    pub known_uids: Option<SequenceSet>,
    pub seq_match: Option<(SequenceSet, SequenceSet)>,
}

/// An APPEND message (RFC 3501 6.3.11): flags, internal date, and the
/// length of the literal that follows. The message bytes are not part of
/// the command: the daemon streams them to the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendHead {
    pub flags: Vec<Flag>,
    pub date: Option<DateTime>,
    pub length: u32,
    /// A LITERAL+ non-synchronizing literal (RFC 7888): no continuation.
    pub non_sync: bool,
    /// `~{n}` BINARY literal (RFC 3516 4.4).
    pub binary: bool,
}

/// A command (RFC 3501 6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    // Any state (RFC 3501 6.1).
    Capability,
    Noop,
    Logout,
    /// ID (RFC 2971 3.1): field/value pairs, or NIL.
    Id(Option<Vec<(Vec<u8>, Option<Vec<u8>>)>>),
    // Not authenticated (RFC 3501 6.2).
    StartTls,
    /// AUTHENTICATE mechanism [initial-response] (RFC 4959 SASL-IR).
    Authenticate { mechanism: String, initial: Option<Vec<u8>> },
    Login { user: Vec<u8>, password: Vec<u8> },
    // Authenticated (RFC 3501 6.3).
    Enable(Vec<String>),
    Select { mailbox: MailboxName, params: SelectParams },
    Examine { mailbox: MailboxName, params: SelectParams },
    Create { mailbox: MailboxName, special_use: Vec<String> },
    Delete(MailboxName),
    Rename { from: MailboxName, to: MailboxName },
    Subscribe(MailboxName),
    Unsubscribe(MailboxName),
    /// LIST, extended (RFC 5258): one or more patterns.
    List { select: ListSelect, reference: MailboxName, patterns: Vec<MailboxName>, ret: ListReturn },
    Lsub { reference: MailboxName, pattern: MailboxName },
    Namespace,
    Status { mailbox: MailboxName, items: Vec<StatusItem> },
    /// APPEND mailbox: the first message's head; the bytes follow as a
    /// literal (see `AppendHead`). MULTIAPPEND is not offered.
    Append { mailbox: MailboxName, head: AppendHead },
    Idle,
    // Selected (RFC 3501 6.4).
    Check,
    Close,
    Unselect,
    Expunge,
    /// UID EXPUNGE (RFC 4315 2.1).
    UidExpunge(SequenceSet),
    Search { uid: bool, charset: Option<String>, key: SearchKey, ret: Option<Vec<String>> },
    Fetch { uid: bool, set: SequenceSet, attrs: Vec<FetchAttr>, modifiers: FetchModifiers },
    Store { uid: bool, set: SequenceSet, mode: StoreMode, silent: bool, flags: Vec<Flag>, unchanged_since: Option<u64> },
    Copy { uid: bool, set: SequenceSet, mailbox: MailboxName },
    Move { uid: bool, set: SequenceSet, mailbox: MailboxName },
}
