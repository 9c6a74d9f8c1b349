use super::*;
use proptest::prelude::*;

fn who() -> Claimant<'static> {
    Claimant { node: "n1", instance: "i1" }
}

fn setup() -> (tempfile::TempDir, Store, Address) {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::init(&dir.path().join("s"), "example.test", None).unwrap();
    let a = Address::parse("alice@example.test").unwrap();
    s.imap_prepare(&a).unwrap();
    (dir, s, a)
}

fn deliver(s: &Store, a: &Address, body: &str) -> String {
    let mut sp = s.spool("n1").unwrap();
    sp.write_all(body.as_bytes()).unwrap();
    let name = sp.name().to_string();
    sp.commit(s, std::slice::from_ref(a), None).unwrap();
    name
}

fn inbox(a: &Address) -> FolderRef<'_> {
    FolderRef { addr: a, name: "INBOX" }
}

fn sync(s: &Store, f: FolderRef<'_>) -> View {
    s.imap_sync(f, who(), SyncMode::default(), None).unwrap().unwrap()
}

#[test]
fn flag_letters_round_trip_in_maildir_order() {
    let f = Flags::SEEN.union(Flags::DRAFT).union(Flags::keyword(0)).union(Flags::keyword(25)).union(Flags::FORWARDED);
    assert_eq!(f.letters(), "DPSaz");
    assert_eq!(Flags::from_info(&format!("2,{}", f.letters())), f);
    assert_eq!(Flags::from_info("2,FRT"), Flags::FLAGGED.union(Flags::ANSWERED).union(Flags::DELETED));
    // Unknown letters and other info versions are ignored.
    assert_eq!(Flags::from_info("2,SX"), Flags::SEEN);
    assert_eq!(Flags::from_info("1,S"), Flags::default());
}

#[test]
fn folder_names_map_to_one_directory_and_back() {
    let root = Path::new("/m");
    assert_eq!(folder_dir(root, "inbox").unwrap(), root);
    assert_eq!(folder_dir(root, "Sent").unwrap(), root.join(".Sent"));
    assert_eq!(folder_dir(root, "Work/2026").unwrap(), root.join(".Work.2026"));
    assert_eq!(folder_dir(root, "v1.2%/x").unwrap(), root.join(".v1%2E2%25.x"));
    assert_eq!(folder_dir(root, "InBox/sub").unwrap(), root.join(".INBOX.sub"));
    for name in ["Sent", "Work/2026", "v1.2%/x", "&AOQ-rger", "a b/c", "Caf&AOk-", "R&-D"] {
        let d = folder_dir(root, name).unwrap();
        assert_eq!(name_of_dir(d.file_name().unwrap().to_str().unwrap()).as_deref(), Some(name));
    }
    for bad in ["", "a//b", "/a", "a/", "x\ny", &"a/".repeat(20), "Caf\u{e9}", "bad&name", "&AOk", "&A-"] {
        assert!(folder_dir(root, bad).is_err(), "{bad:?}");
    }
    for not_folder in [".", "..", ".a..b", ".x%2", ".x%41", ".mailfort-uids.tmp.1.2", "cur"] {
        assert_eq!(name_of_dir(not_folder), None, "{not_folder}");
    }
}

#[test]
fn record_round_trips_and_refuses_damage() {
    let mut r = Record::new(1234);
    r.uidnext = 9;
    r.highestmodseq = 20;
    r.keywords = vec!["$Junk".into(), "Work".into()];
    r.note_vanished(15, vec![3, 4, 6]);
    r.msgs.push(Msg { uid: 2, modseq: 5, size: 100, date: 1_700_000_000, file: "cur/1.2_3.n1:2,S".into() });
    r.msgs.push(Msg { uid: 8, modseq: 19, size: 7, date: -5, file: "new/9.9_9.n2".into() });
    let text = String::from_utf8(r.encode()).unwrap();
    assert_eq!(Record::decode(&text).unwrap(), r);
    assert_eq!(r.vanished, vec![(15, 3, 4), (15, 6, 6)]);
    // A UID at or past UIDNEXT, out of order, a torn line, another version.
    for bad in [text.replace("N 9", "N 8"), text.replace("\n2 5", "\n9 5"), text[..text.len() - 10].to_string() + "\n1 x", text.replace("mailfort-uids 1", "mailfort-uids 2"), String::new()] {
        assert!(Record::decode(&bad).is_err(), "{bad}");
    }
}

#[test]
fn vanished_history_is_bounded_with_a_floor() {
    let mut r = Record::new(1);
    for i in 0..(MAX_VANISHED_RANGES as u32 + 10) {
        let ms = r.bump();
        r.note_vanished(ms, vec![i * 2 + 1]);
    }
    assert_eq!(r.vanished.len(), MAX_VANISHED_RANGES);
    assert_eq!(r.vanished_floor, 11);
    assert!(!r.vanished_since(5).1 && r.vanished_since(11).1);
}

#[test]
fn a_name_created_again_gets_a_new_uidvalidity() {
    let (_d, s, a) = setup();
    let f = FolderRef { addr: &a, name: "Reborn" };
    let mut seen = Vec::new();
    for _ in 0..3 {
        s.imap_create(&a, "Reborn", None).unwrap();
        let v = sync(&s, f);
        assert!(!seen.contains(&v.uidvalidity), "UIDVALIDITY {} again", v.uidvalidity);
        seen.push(v.uidvalidity);
        s.imap_delete(&a, "Reborn").unwrap();
    }
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
}

#[test]
fn defaults_exist_with_special_use_and_subscriptions() {
    let (_d, s, a) = setup();
    let names: Vec<(String, Option<String>)> = s.imap_folders(&a).unwrap().into_iter().map(|f| (f.name, f.special_use)).collect();
    assert_eq!(names[0], ("INBOX".into(), None));
    for (n, u) in DEFAULT_FOLDERS {
        assert!(names.contains(&(n.to_string(), Some(u.to_string()))), "{n}");
    }
    assert_eq!(s.imap_subscriptions(&a).unwrap(), vec!["INBOX", "Sent", "Drafts", "Trash", "Junk", "Archive"]);
    // Idempotent, and keeps a user's unsubscription.
    s.imap_subscribe(&a, "Junk", false).unwrap();
    s.imap_prepare(&a).unwrap();
    assert!(!s.imap_subscriptions(&a).unwrap().contains(&"Junk".to_string()));
}

#[test]
fn uids_follow_delivery_order_and_survive_flag_changes() {
    let (_d, s, a) = setup();
    let n1 = deliver(&s, &a, "Subject: 1\r\n\r\none\r\n");
    let n2 = deliver(&s, &a, "Subject: 2\r\n\r\ntwo\r\n");
    let v = s.imap_sync(inbox(&a), who(), SyncMode { claim_new: true }, None).unwrap().unwrap();
    assert_eq!(v.msgs.iter().map(|m| (m.uid, m.base().to_string())).collect::<Vec<_>>(), vec![(1, n1.clone()), (2, n2.clone())]);
    assert_eq!(v.claimed, vec![1, 2]);
    assert_eq!((v.uidnext, v.msgs[0].size), (3, 19));
    // Unchanged: nothing to do (the stamp may still be fresh, then a read).
    if let Some(again) = s.imap_sync(inbox(&a), who(), SyncMode { claim_new: true }, Some(&v)).unwrap() {
        assert!(again.claimed.is_empty());
        assert_eq!(again.msgs, v.msgs);
    }
    let out = s.imap_store(inbox(&a), who(), &[2], FlagMode::Add, Flags::SEEN.union(Flags::FLAGGED), &["Work".into()], None).unwrap();
    assert_eq!(out.changed, vec![2]);
    let m = out.view.by_uid(2).unwrap();
    assert_eq!(m.file, format!("cur/{n2}:2,FSa"));
    assert!(m.modseq > v.msgs[1].modseq);
    assert_eq!(out.view.keyword_names(m.flags()).collect::<Vec<_>>(), vec!["Work"]);
    // POP3 still sees both, under the same unique names.
    let pop: Vec<String> = s.list_messages(&a).unwrap().into_iter().map(|m| m.uid).collect();
    assert_eq!(pop, vec![n1, n2]);
    // UNCHANGEDSINCE refuses a message changed since.
    let out2 = s.imap_store(inbox(&a), who(), &[1, 2], FlagMode::Remove, Flags::SEEN, &[], Some(v.msgs[1].modseq)).unwrap();
    assert_eq!(out2.failed, vec![2]);
    assert_eq!(out2.changed, Vec::<u32>::new());
}

#[test]
fn expunge_never_reuses_a_uid_and_pop3_deletes_are_seen() {
    let (_d, s, a) = setup();
    for i in 0..3 {
        deliver(&s, &a, &format!("Subject: {i}\r\n\r\nx\r\n"));
    }
    let v = sync(&s, inbox(&a));
    s.imap_store(inbox(&a), who(), &[3], FlagMode::Add, Flags::DELETED, &[], None).unwrap();
    let (after, gone) = s.imap_expunge(inbox(&a), who(), None).unwrap();
    assert_eq!(gone, vec![3]);
    assert_eq!(after.msgs.len(), 2);
    let (list, complete) = s.imap_vanished(inbox(&a), v.highestmodseq).unwrap();
    assert!(complete && list == vec![(3, 3)]);
    deliver(&s, &a, "Subject: 4\r\n\r\nx\r\n");
    let v2 = sync(&s, inbox(&a));
    assert_eq!(v2.msgs.iter().map(|m| m.uid).collect::<Vec<_>>(), vec![1, 2, 4]);
    // POP3 removes message 1 behind IMAP's back.
    let entries = s.list_messages(&a).unwrap();
    s.delete_messages(&[entries[0].path.as_path()]).unwrap();
    let v3 = sync(&s, inbox(&a));
    assert_eq!(v3.msgs.iter().map(|m| m.uid).collect::<Vec<_>>(), vec![2, 4]);
    assert!(s.imap_vanished(inbox(&a), v2.highestmodseq).unwrap().0.contains(&(1, 1)));
    assert_eq!(v3.uidvalidity, v.uidvalidity);
}

#[test]
fn append_and_copy_answer_uidplus_pairs() {
    let (_d, s, a) = setup();
    let mut sp = s.spool("n1").unwrap();
    sp.write_all(b"Subject: draft\r\n\r\nbody\r\n").unwrap();
    let path = s.spool_dir("n1").join(sp.name());
    let sent = FolderRef { addr: &a, name: "Sent" };
    let (uv, uid) = s.imap_append(sent, who(), &path, Flags::SEEN, &["$Label1".into()], Some(1_000_000_000)).unwrap();
    drop(sp);
    assert_eq!(uid, 1);
    let v = sync(&s, sent);
    assert_eq!((v.uidvalidity, v.msgs.len(), v.msgs[0].date, v.msgs[0].size), (uv, 1, 1_000_000_000, 24));
    assert_eq!(v.keyword_names(v.msgs[0].flags()).collect::<Vec<_>>(), vec!["$Label1"]);
    let arch = FolderRef { addr: &a, name: "Archive" };
    let (auv, pairs) = s.imap_copy(sent, &v, &[1, 99], arch, who()).unwrap();
    assert_eq!(pairs, vec![(1, 1)]);
    let av = sync(&s, arch);
    assert_eq!(av.uidvalidity, auv);
    assert_eq!(av.msgs[0].flags(), Flags::SEEN.union(Flags::keyword(0)));
    assert_eq!(av.msgs[0].date, 1_000_000_000);
    assert_ne!(av.msgs[0].base(), v.msgs[0].base());
    // The copy is a link: one file on disk.
    use std::os::unix::fs::MetadataExt;
    let ino = |f: FolderRef<'_>, m: &Msg| fs::metadata(s.imap_message_path(f, m).unwrap()).unwrap().ino();
    assert_eq!(ino(sent, &v.msgs[0]), ino(arch, &av.msgs[0]));
    let (_, gone) = s.imap_remove(sent, who(), &[1]).unwrap();
    assert_eq!(gone, vec![1]);
    assert!(sync(&s, sent).msgs.is_empty());
}

#[test]
fn an_unreadable_record_is_unavailable_and_never_renumbered() {
    let (_d, s, a) = setup();
    deliver(&s, &a, "Subject: 1\r\n\r\nx\r\n");
    let v = sync(&s, inbox(&a));
    let rec = s.maildir_path(&a).join(RECORD);
    let good = fs::read(&rec).unwrap();
    fs::write(&rec, b"garbage").unwrap();
    deliver(&s, &a, "Subject: 2\r\n\r\nx\r\n");
    assert!(matches!(s.imap_sync(inbox(&a), who(), SyncMode::default(), None), Err(ImapError::Unavailable(_))));
    assert!(matches!(s.imap_store(inbox(&a), who(), &[1], FlagMode::Add, Flags::SEEN, &[], None), Err(ImapError::Unavailable(_))));
    assert_eq!(fs::read(&rec).unwrap(), b"garbage");
    fs::write(&rec, good).unwrap();
    let v2 = sync(&s, inbox(&a));
    assert_eq!((v2.uidvalidity, v2.msgs.len(), v2.msgs[1].uid), (v.uidvalidity, 2, 2));
}

#[test]
fn two_nodes_on_one_store_see_each_others_changes() {
    let (d, s1, a) = setup();
    let s2 = Store::open(&d.path().join("s")).unwrap();
    let w2 = Claimant { node: "n2", instance: "i2" };
    deliver(&s1, &a, "Subject: 1\r\n\r\nx\r\n");
    let v1 = sync(&s1, inbox(&a));
    let v2 = s2.imap_sync(inbox(&a), w2, SyncMode::default(), None).unwrap().unwrap();
    assert_eq!(v1.msgs, v2.msgs);
    s2.imap_store(inbox(&a), w2, &[1], FlagMode::Add, Flags::FLAGGED, &[], None).unwrap();
    let v1b = s1.imap_sync(inbox(&a), who(), SyncMode::default(), Some(&v1)).unwrap().expect("a change is seen");
    assert!(v1b.msgs[0].flags().contains(Flags::FLAGGED));
}

#[test]
fn folders_create_rename_delete() {
    let (_d, s, a) = setup();
    s.imap_create(&a, "Work/2026/Q1", None).unwrap();
    assert!(matches!(s.imap_create(&a, "work/2026", None), Ok(())), "names are case-sensitive below INBOX");
    assert!(matches!(s.imap_create(&a, "Work/2026", None), Err(ImapError::Exists)));
    assert!(matches!(s.imap_create(&a, "inbox", None), Err(ImapError::Exists)));
    assert!(matches!(s.imap_create(&a, "X", Some("\\Bogus")), Err(ImapError::BadName(_))));
    s.imap_create(&a, "Flagged", Some("\\Flagged")).unwrap();
    let names = |s: &Store| s.imap_folders(&a).unwrap().into_iter().map(|f| f.name).collect::<Vec<_>>();
    assert!(names(&s).contains(&"Work".to_string()) && names(&s).contains(&"Work/2026/Q1".to_string()));
    let w = FolderRef { addr: &a, name: "Work/2026" };
    let mut sp = s.spool("n1").unwrap();
    sp.write_all(b"Subject: w\r\n\r\nx\r\n").unwrap();
    s.imap_append(w, who(), &s.spool_dir("n1").join(sp.name()), Flags::default(), &[], None).unwrap();
    drop(sp);
    let before = sync(&s, w);
    s.imap_subscribe(&a, "Work/2026", true).unwrap();
    s.imap_rename(&a, "Work", "Projects/Old", who()).unwrap();
    let n = names(&s);
    assert!(n.contains(&"Projects/Old/2026/Q1".to_string()) && !n.iter().any(|x| x.starts_with("Work")), "{n:?}");
    let after = sync(&s, FolderRef { addr: &a, name: "Projects/Old/2026" });
    assert_eq!((after.uidvalidity, after.msgs.len()), (before.uidvalidity, 1));
    assert!(s.imap_subscriptions(&a).unwrap().contains(&"Projects/Old/2026".to_string()));
    assert!(matches!(s.imap_delete(&a, "Projects/Old"), Err(ImapError::HasChildren)));
    s.imap_delete(&a, "Projects/Old/2026/Q1").unwrap();
    s.imap_delete(&a, "Projects/Old/2026").unwrap();
    assert!(matches!(s.imap_delete(&a, "INBOX"), Err(ImapError::Protected(_))));
    assert!(matches!(s.imap_delete(&a, "Nope"), Err(ImapError::NoFolder)));
    assert!(!names(&s).contains(&"Projects/Old/2026".to_string()));
    // Renaming INBOX moves its messages and leaves it empty.
    deliver(&s, &a, "Subject: 1\r\n\r\nx\r\n");
    s.imap_rename(&a, "INBOX", "Old mail", who()).unwrap();
    assert!(sync(&s, inbox(&a)).msgs.is_empty());
    assert_eq!(sync(&s, FolderRef { addr: &a, name: "Old mail" }).msgs.len(), 1);
}

#[test]
fn a_file_linked_before_a_crash_gets_the_next_uid() {
    // A crash between APPEND's link and its record write leaves a file in
    // cur/ that the record does not know: the next sync numbers it.
    let (_d, s, a) = setup();
    deliver(&s, &a, "Subject: 1\r\n\r\nx\r\n");
    let v = sync(&s, inbox(&a));
    let md = s.maildir_path(&a);
    fs::write(md.join("cur").join("1.000001_1.n9:2,S"), b"Subject: orphan\r\n\r\n").unwrap();
    // And a temporary record a crash left behind is not taken for anything.
    fs::write(md.join(format!(".{RECORD}{}1.2", fsutil::TEMP_MARK)), b"junk").unwrap();
    let v2 = sync(&s, inbox(&a));
    assert_eq!(v2.msgs.iter().map(|m| m.uid).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(v2.msgs[1].flags(), Flags::SEEN);
    assert!(v2.uidnext > v.uidnext);
}

/// One step of a random history on one folder, with crashes.
#[derive(Debug, Clone)]
enum Op {
    Deliver,
    Sync,
    Flag(u8),
    Delete(u8),
    Expunge,
    /// A crash after a new file was linked in and before the record was
    /// written (APPEND, COPY).
    CrashAfterLink,
    /// A crash after files were removed and before the record was
    /// written (EXPUNGE).
    CrashAfterUnlink(u8),
    /// A crash before the rename of a new record: the old record stays.
    CrashBeforeRecord,
    PopDelete(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        Just(Op::Deliver),
        Just(Op::Sync),
        any::<u8>().prop_map(Op::Flag),
        any::<u8>().prop_map(Op::Delete),
        Just(Op::Expunge),
        Just(Op::CrashAfterLink),
        any::<u8>().prop_map(Op::CrashAfterUnlink),
        Just(Op::CrashBeforeRecord),
        any::<u8>().prop_map(Op::PopDelete),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    /// Whatever happens, a UID once shown names one message for good: it is
    /// never given to another, UIDVALIDITY never changes, and UIDs only grow.
    #[test]
    fn random_crash_points_never_reuse_a_uid(ops in proptest::collection::vec(op(), 1..40)) {
        let (_d, s, a) = setup();
        let md = s.maildir_path(&a);
        let mut seen: HashMap<u32, String> = HashMap::new();
        let mut uidvalidity = None;
        let mut n = 0u32;
        for op in ops {
            let v = sync(&s, inbox(&a));
            let pick = |i: u8| v.msgs.get(i as usize % v.msgs.len().max(1)).map(|m| m.uid);
            match op {
                Op::Deliver => { deliver(&s, &a, "Subject: x\r\n\r\nx\r\n"); }
                Op::Sync => {}
                Op::Flag(i) => if let Some(u) = pick(i) { s.imap_store(inbox(&a), who(), &[u], FlagMode::Add, Flags::SEEN, &[], None).unwrap(); },
                Op::Delete(i) => if let Some(u) = pick(i) { s.imap_store(inbox(&a), who(), &[u], FlagMode::Add, Flags::DELETED, &[], None).unwrap(); },
                Op::Expunge => { s.imap_expunge(inbox(&a), who(), None).unwrap(); }
                Op::CrashAfterLink => {
                    n += 1;
                    fs::write(md.join("cur").join(format!("2000000000.{n:06}_1.crash:2,")), b"x").unwrap();
                }
                Op::CrashAfterUnlink(i) => if let Some(u) = pick(i) {
                    fs::remove_file(md.join(&v.by_uid(u).unwrap().file)).unwrap();
                },
                Op::CrashBeforeRecord => {
                    fs::write(md.join(format!(".{RECORD}{}9.9", fsutil::TEMP_MARK)), b"partial").unwrap();
                }
                Op::PopDelete(i) => if let Some(u) = pick(i) {
                    s.delete_messages(&[md.join(&v.by_uid(u).unwrap().file).as_path()]).unwrap();
                },
            }
            let v = sync(&s, inbox(&a));
            prop_assert_eq!(*uidvalidity.get_or_insert(v.uidvalidity), v.uidvalidity);
            let mut last = 0;
            for m in &v.msgs {
                prop_assert!(m.uid > last && m.uid < v.uidnext);
                last = m.uid;
                let base = m.base().to_string();
                let prev = seen.entry(m.uid).or_insert_with(|| base.clone());
                prop_assert_eq!(&*prev, &base, "UID {} was reused", m.uid);
            }
            // A name never has two UIDs at once, and every file has one.
            let files = scan(&md, false).unwrap();
            prop_assert_eq!(files.len(), v.msgs.len());
        }
    }
}

#[test]
fn a_version_1_store_is_upgraded_without_renumbering() {
    let (d, s, a) = setup();
    let root = d.path().join("s");
    let n1 = deliver(&s, &a, "Subject: 1\r\n\r\nx\r\n");
    let n2 = deliver(&s, &a, "Subject: 2\r\n\r\nx\r\n");
    let pop_before: Vec<String> = s.list_messages(&a).unwrap().into_iter().map(|m| m.uid).collect();
    drop(s);
    // What a version 1 node left: FORMAT 1 and no UID records.
    fs::write(root.join("FORMAT"), "mailfort-store 1\n").unwrap();
    let s = Store::open(&root).unwrap();
    assert_eq!(fs::read_to_string(root.join("FORMAT")).unwrap().trim(), crate::FORMAT_VERSION);
    s.probe().unwrap();
    let v = sync(&s, inbox(&a));
    assert_eq!(v.msgs.iter().map(|m| (m.uid, m.base().to_string())).collect::<Vec<_>>(), vec![(1, n1), (2, n2)]);
    assert_eq!(s.list_messages(&a).unwrap().into_iter().map(|m| m.uid).collect::<Vec<_>>(), pop_before);
    // A version this code does not know is refused, and left as it is.
    fs::write(root.join("FORMAT"), "mailfort-store 3\n").unwrap();
    assert!(matches!(Store::open(&root), Err(StoreError::UnknownFormat { .. })));
    assert_eq!(fs::read_to_string(root.join("FORMAT")).unwrap(), "mailfort-store 3\n");
}

#[test]
fn pop3_follows_a_message_renamed_by_imap() {
    let (_d, s, a) = setup();
    deliver(&s, &a, "Subject: 1\r\n\r\nx\r\n");
    let listed = s.list_messages(&a).unwrap();
    // IMAP sets a flag while a POP3 session holds the listing.
    sync(&s, inbox(&a));
    s.imap_store(inbox(&a), who(), &[1], FlagMode::Add, Flags::SEEN, &[], None).unwrap();
    assert!(!listed[0].path.exists());
    let now = s.current_path(&listed[0]).expect("found under its new name");
    assert_eq!(fs::read(&now).unwrap(), b"Subject: 1\r\n\r\nx\r\n");
    s.delete_messages(&[listed[0].path.as_path()]).unwrap();
    assert!(s.list_messages(&a).unwrap().is_empty());
    assert_eq!(s.current_path(&listed[0]), None);
}

#[test]
fn a_quiet_folder_is_read_without_readdir_until_it_changes() {
    let (_d, s, a) = setup();
    deliver(&s, &a, "Subject: 1\r\n\r\nx\r\n");
    sync(&s, inbox(&a));
    let md = s.maildir_path(&a);
    let rec = || fs::read_to_string(md.join(RECORD)).unwrap();
    assert!(!rec().lines().any(|l| l.starts_with("S ")), "not settled while fresh");
    // The directories have been quiet for an hour.
    let hour_ago = SystemTime::now() - Duration::from_secs(3600);
    for sub in ["new", "cur"] {
        fs::File::open(md.join(sub)).unwrap().set_times(fs::FileTimes::new().set_modified(hour_ago)).unwrap();
    }
    sync(&s, inbox(&a));
    assert!(rec().lines().any(|l| l.starts_with("S ")), "settled after a quiet readdir:\n{}", rec());
    let v = sync(&s, inbox(&a));
    assert_eq!(v.msgs.len(), 1);
    // A delivery changes new/: the next reader looks, and finds it.
    deliver(&s, &a, "Subject: 2\r\n\r\nx\r\n");
    let v = sync(&s, inbox(&a));
    assert_eq!(v.msgs.iter().map(|m| m.uid).collect::<Vec<_>>(), vec![1, 2]);
    assert!(!rec().lines().any(|l| l.starts_with("S ")), "a write clears the settled stamps");
    // So does a POP3 delete behind the record's back.
    for sub in ["new", "cur"] {
        fs::File::open(md.join(sub)).unwrap().set_times(fs::FileTimes::new().set_modified(hour_ago)).unwrap();
    }
    sync(&s, inbox(&a));
    assert!(rec().lines().any(|l| l.starts_with("S ")));
    let entries = s.list_messages(&a).unwrap();
    s.delete_messages(&[entries[0].path.as_path()]).unwrap();
    assert_eq!(sync(&s, inbox(&a)).msgs.iter().map(|m| m.uid).collect::<Vec<_>>(), vec![2]);
}
