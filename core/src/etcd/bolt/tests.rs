//! Round trips through the writer and the reader, the writer's refusals, the reader's
//! errors on damaged files (every byte flip and truncation of a small one), and the
//! check catching planted faults.

use super::page::{Meta, PageHeader, BRANCH_PAGE, LEAF_PAGE, PAGE_HEADER};
use super::read::Root;
use super::*;
use proptest::prelude::*;

/// Buckets in name order, each with its keys in order.
type Content = Vec<(Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>)>;

fn write(content: &Content) -> Vec<u8> {
    let mut w = BoltWriter::new(Vec::new());
    for (name, kvs) in content {
        w.bucket(name).expect("bucket");
        for (k, v) in kvs {
            w.put(k, v).expect("put");
        }
    }
    let (bytes, size) = w.finish().expect("finish");
    assert_eq!(bytes.len() as u64, size, "the sink is exactly the file");
    assert_eq!(size % PAGE_SIZE as u64, 0);
    bytes
}

fn read(bytes: &[u8]) -> Result<Content, BoltError> {
    let db = BoltDb::open(bytes)?;
    let mut out = Vec::new();
    for name in db.bucket_names()? {
        let b = db.bucket(name)?.ok_or(BoltError::InvalidMeta)?;
        let mut kvs = Vec::new();
        b.for_each(|k, v| {
            kvs.push((k.to_vec(), v.to_vec()));
            Ok::<_, BoltError>(())
        })?;
        out.push((name.to_vec(), kvs));
    }
    Ok(out)
}

/// Writes, reads back, and checks everything a reader offers agrees.
fn round_trip(content: &Content) -> Vec<u8> {
    let bytes = write(content);
    let db = BoltDb::open(&bytes).expect("open");
    assert_eq!(db.check(), Vec::<String>::new());
    assert_eq!(db.size(), bytes.len() as u64);
    assert_eq!(db.page_size(), PAGE_SIZE);
    assert_eq!(&read(&bytes).expect("read"), content);
    for (name, kvs) in content {
        let b = db.bucket(name).expect("lookup").expect("bucket exists");
        assert_eq!(b.len().expect("len"), kvs.len());
        assert_eq!(b.is_empty().expect("is_empty"), kvs.is_empty());
        // Every key is found by descent, and keys between them are not.
        let step = (kvs.len() / 500).max(1);
        for (k, v) in kvs.iter().step_by(step) {
            assert_eq!(b.get(k).expect("get"), Some(&v[..]));
            let mut after = k.clone();
            after.push(0);
            if !kvs.iter().any(|(k2, _)| *k2 == after) {
                assert_eq!(b.get(&after).expect("get"), None);
            }
        }
    }
    assert!(db.bucket(b"no such bucket").expect("lookup").is_none());
    let status = db_status(&db).expect("status");
    assert_eq!(
        status.total_key,
        content.iter().map(|(_, kvs)| kvs.len() as u64).sum::<u64>()
    );
    assert_eq!(status.total_size, bytes.len() as u64);
    bytes
}

fn kv(k: impl AsRef<[u8]>, v: impl AsRef<[u8]>) -> (Vec<u8>, Vec<u8>) {
    (k.as_ref().to_vec(), v.as_ref().to_vec())
}

/// Depth of a bucket's tree: 0 for inline, 1 for a lone leaf page.
fn depth(db: &BoltDb, name: &[u8]) -> usize {
    let b = db.bucket(name).expect("lookup").expect("bucket");
    let Root::Page(mut id) = b.root() else {
        return 0;
    };
    let mut depth = 1;
    loop {
        let view = db.pages().node(id).expect("node");
        if view.is_leaf() {
            return depth;
        }
        id = view.branch(0).expect("branch").1;
        depth += 1;
    }
}

fn etcd_buckets() -> Content {
    let names = [
        "alarm",
        "auth",
        "authRoles",
        "authUsers",
        "cluster",
        "key",
        "lease",
        "members",
        "members_removed",
        "meta",
    ];
    names
        .iter()
        .map(|n| (n.as_bytes().to_vec(), Vec::new()))
        .collect()
}

#[test]
fn empty_database() {
    let bytes = round_trip(&Vec::new());
    // Metas, root leaf, freelist.
    assert_eq!(bytes.len(), 4 * PAGE_SIZE);
}

#[test]
fn etcds_empty_buckets_are_inline() {
    let content = etcd_buckets();
    let bytes = round_trip(&content);
    assert_eq!(
        bytes.len(),
        4 * PAGE_SIZE,
        "all ten empty buckets live in the root leaf"
    );
    let db = BoltDb::open(&bytes).expect("open");
    assert_eq!(depth(&db, b"key"), 0);
}

#[test]
fn five_buckets_of_different_shapes() {
    let content: Content = vec![
        (b"a".to_vec(), vec![kv("k", "v")]),
        (b"b".to_vec(), Vec::new()),
        (
            b"c".to_vec(),
            (0..1000u32)
                .map(|i| kv(i.to_be_bytes(), vec![7; 100]))
                .collect(),
        ),
        (
            b"d".to_vec(),
            vec![kv("big", vec![1; 50_000]), kv("small", "x")],
        ),
        (
            b"e".to_vec(),
            (0..40u32).map(|i| kv(i.to_be_bytes(), "v")).collect(),
        ),
    ];
    let bytes = round_trip(&content);
    let db = BoltDb::open(&bytes).expect("open");
    assert_eq!(depth(&db, b"a"), 0);
    assert_eq!(depth(&db, b"c"), 2);
    assert!(depth(&db, b"d") >= 1);
}

#[test]
fn keys_filling_one_to_ten_pages() {
    // 17-byte keys as etcd's revisions and 64-byte values: 42 elements per leaf page.
    for pages in 1..=10usize {
        for extra in [0usize, 1] {
            let n = pages * 42 + extra;
            let kvs = (0..n as u64)
                .map(|i| {
                    kv(
                        [&i.to_be_bytes()[..], b"_", &0u64.to_be_bytes()].concat(),
                        [5; 64],
                    )
                })
                .collect();
            round_trip(&vec![(b"key".to_vec(), kvs)]);
        }
    }
}

#[test]
fn elements_at_and_past_the_page_boundary() {
    // An element exactly filling a page, one byte more (overflow), and neighbours.
    let fill = PAGE_SIZE - PAGE_HEADER - 16 - 3;
    for v in [
        fill - 1,
        fill,
        fill + 1,
        2 * PAGE_SIZE,
        3 * PAGE_SIZE - 35,
        1_000_000,
    ] {
        let kvs = vec![
            kv("aaa", vec![1; 10]),
            kv("bbb", vec![2; v]),
            kv("ccc", vec![3; v]),
            kv("ddd", "x"),
        ];
        round_trip(&vec![(b"b".to_vec(), kvs)]);
    }
}

#[test]
fn ten_kilobyte_values_use_overflow_pages() {
    let kvs: Vec<_> = (0..50u32)
        .map(|i| kv(i.to_be_bytes(), vec![i as u8; 10_240]))
        .collect();
    let bytes = round_trip(&vec![(b"big".to_vec(), kvs)]);
    // Each value needs 3 pages; the file holds them contiguously.
    assert!(bytes.len() >= 50 * 3 * PAGE_SIZE);
}

#[test]
fn two_hundred_thousand_keys_make_a_deep_tree() {
    let kvs: Vec<_> = (0..200_000u64)
        .map(|i| {
            kv(
                [[b'k'; 56].as_slice(), &i.to_be_bytes()].concat(),
                i.to_le_bytes(),
            )
        })
        .collect();
    let content = vec![(b"a".to_vec(), vec![kv("x", "y")]), (b"deep".to_vec(), kvs)];
    let bytes = round_trip(&content);
    let db = BoltDb::open(&bytes).expect("open");
    assert!(depth(&db, b"deep") >= 4, "depth {}", depth(&db, b"deep"));
}

#[test]
fn huge_keys_still_narrow_to_a_root() {
    // Keys of bbolt's maximum size: every branch page overflows, yet holds two children.
    let kvs: Vec<_> = (0..40u8).map(|i| kv(vec![i; 32768], [i])).collect();
    round_trip(&vec![(b"h".to_vec(), kvs)]);
    let names: Content = (0..200u32)
        .map(|i| {
            (
                [vec![b'n'; 30_000], i.to_be_bytes().to_vec()].concat(),
                vec![kv("k", "v")],
            )
        })
        .collect();
    round_trip(&names);
}

#[test]
fn writer_refuses_disorder_and_bad_sizes_and_stays_usable() {
    let mut w = BoltWriter::new(Vec::new());
    assert!(matches!(w.put(b"k", b"v"), Err(BoltWriteError::NoBucket)));
    assert!(matches!(
        w.bucket(b""),
        Err(BoltWriteError::EmptyBucketName)
    ));
    w.bucket(b"b").expect("bucket");
    assert!(matches!(
        w.bucket(b"a"),
        Err(BoltWriteError::BucketOrder { .. })
    ));
    assert!(matches!(
        w.bucket(b"b"),
        Err(BoltWriteError::BucketOrder { .. })
    ));
    w.put(b"k2", b"v").expect("put");
    assert!(matches!(
        w.put(b"k1", b"v"),
        Err(BoltWriteError::KeyOrder { .. })
    ));
    assert!(matches!(
        w.put(b"k2", b"v"),
        Err(BoltWriteError::KeyOrder { .. })
    ));
    assert!(matches!(w.put(b"", b"v"), Err(BoltWriteError::EmptyKey)));
    assert!(matches!(
        w.put(&[b'z'; 32769], b"v"),
        Err(BoltWriteError::KeyTooLarge(32769))
    ));
    w.put(b"k3", b"v").expect("put after refusals");
    w.bucket(b"c").expect("bucket after refusals");
    let (bytes, _) = w.finish().expect("finish");
    let want: Content = vec![
        (b"b".to_vec(), vec![kv("k2", "v"), kv("k3", "v")]),
        (b"c".to_vec(), Vec::new()),
    ];
    assert_eq!(read(&bytes).expect("read"), want);
    let msg = BoltWriteError::<std::convert::Infallible>::KeyOrder {
        key: "\"a\"".into(),
        bucket: "\"b\"".into(),
    };
    assert_eq!(
        msg.to_string(),
        "bbolt writer: key \"a\" is not after the key before it in bucket \"b\""
    );
}

/// A sink that fails after `left` writes.
struct Failing {
    left: usize,
}

impl PageSink for Failing {
    type Error = &'static str;
    fn write_at(&mut self, _: u64, _: &[u8]) -> Result<(), &'static str> {
        if self.left == 0 {
            return Err("disk full");
        }
        self.left -= 1;
        Ok(())
    }
}

#[test]
fn a_failed_sink_poisons_the_writer() {
    let mut w = BoltWriter::new(Failing { left: 1 });
    w.bucket(b"b").expect("bucket");
    let mut failed = None;
    for i in 0..10_000u32 {
        if let Err(e) = w.put(&i.to_be_bytes(), &[0; 100]) {
            failed = Some(e);
            break;
        }
    }
    assert!(matches!(failed, Some(BoltWriteError::Sink("disk full"))));
    assert!(matches!(
        w.put(b"\xff\xff\xff\xff\xff", b""),
        Err(BoltWriteError::Poisoned)
    ));
    assert!(matches!(w.finish(), Err(BoltWriteError::Poisoned)));
}

/// Rewrites both metas (checksums recomputed).
fn edit_metas(bytes: &mut [u8], f: impl Fn(&mut Meta)) {
    for id in 0..2u64 {
        let at = id as usize * PAGE_SIZE;
        let mut m = Meta::decode(&bytes[at..]).expect("meta");
        f(&mut m);
        bytes[at..at + 80].copy_from_slice(&m.encode(id));
    }
}

fn small_db() -> Vec<u8> {
    let content: Content = vec![
        (b"inline".to_vec(), vec![kv("a", "1"), kv("b", "2")]),
        // etcd's revision keys: <main u64 BE>_<sub u64 BE>.
        (
            b"key".to_vec(),
            (1..4u64)
                .map(|i| {
                    kv(
                        [&i.to_be_bytes()[..], b"_", &0u64.to_be_bytes()].concat(),
                        "kv",
                    )
                })
                .collect(),
        ),
        (
            b"keys".to_vec(),
            (0..150u32).map(|i| kv(i.to_be_bytes(), [9; 20])).collect(),
        ),
        (b"overflow".to_vec(), vec![kv("v", vec![4; 5000])]),
    ];
    write(&content)
}

#[test]
fn reader_errors_name_the_problem() {
    let good = small_db();
    let err = |b: &[u8]| read(b).expect_err("must fail").to_string();
    assert_eq!(
        err(&good[..1234]),
        "bbolt: file is 1234 bytes, shorter than two meta pages"
    );
    let mut b = good.clone();
    b[PAGE_HEADER] ^= 1;
    b[PAGE_SIZE + PAGE_HEADER] ^= 1;
    assert_eq!(
        err(&b),
        "bbolt: invalid meta pages (bad magic, version or checksum)"
    );
    assert_eq!(
        err(&good[..good.len() - 1]),
        format!(
            "bbolt: file is {} bytes, shorter than its {} pages of 4096 bytes",
            good.len() - 1,
            good.len() / PAGE_SIZE
        )
    );
    // Turn the root's first page (a branch or leaf) into a freelist page.
    let db = BoltDb::open(&good).expect("open");
    let root = db.meta().root as usize;
    let mut b = good.clone();
    b[root * PAGE_SIZE + 8] = 0x10;
    assert_eq!(
        err(&b),
        format!("bbolt: page {root} has flags 0x10, expected a branch or leaf page")
    );
    // A branch element of the key bucket pointing past the end.
    let key_root = match db.bucket(b"keys").expect("lookup").expect("bucket").root() {
        Root::Page(id) => id as usize,
        Root::Inline(_) => panic!("keys bucket spans pages"),
    };
    assert_eq!(
        PageHeader::decode(&good[key_root * PAGE_SIZE..])
            .expect("header")
            .flags,
        BRANCH_PAGE
    );
    let mut b = good.clone();
    let elem = key_root * PAGE_SIZE + PAGE_HEADER + 16;
    b[elem + 8..elem + 16].copy_from_slice(&9999u64.to_le_bytes());
    let pages = good.len() / PAGE_SIZE;
    assert_eq!(
        err(&b),
        format!("bbolt: page 9999 is out of range (file has {pages} pages)")
    );
    // A leaf element whose key runs past its page.
    let first_leaf = BoltDb::open(&good)
        .expect("open")
        .pages()
        .node(key_root as u64)
        .expect("node")
        .branch(0)
        .expect("elem")
        .1 as usize;
    let mut b = good.clone();
    let elem = first_leaf * PAGE_SIZE + PAGE_HEADER + 3 * 16;
    b[elem + 8..elem + 12].copy_from_slice(&5000u32.to_le_bytes());
    assert_eq!(
        err(&b),
        format!("bbolt: page {first_leaf} element 3 points outside its page")
    );
    // Two keys swapped in order.
    let mut b = good.clone();
    let k3 = first_leaf * PAGE_SIZE + PAGE_HEADER + 3 * 16;
    let pos = u32::from_le_bytes(b[k3 + 4..k3 + 8].try_into().expect("4 bytes")) as usize;
    b[k3 + pos..k3 + pos + 4].copy_from_slice(&0u32.to_be_bytes());
    assert_eq!(err(&b), format!("bbolt: page {first_leaf} element 3 has key \"\\x00\\x00\\x00\\x00\", not after the key before it"));
    // A page claiming more elements than fit.
    let mut b = good.clone();
    b[first_leaf * PAGE_SIZE + 10..first_leaf * PAGE_SIZE + 12]
        .copy_from_slice(&300u16.to_le_bytes());
    assert_eq!(
        err(&b),
        format!("bbolt: page {first_leaf} claims 300 elements, more than fit in it")
    );
    // A branch pointing at its own page: the walk refuses to go round.
    let mut b = good.clone();
    let elem = key_root * PAGE_SIZE + PAGE_HEADER;
    b[elem + 8..elem + 16].copy_from_slice(&(key_root as u64).to_le_bytes());
    assert_eq!(
        err(&b),
        format!("bbolt: page {key_root} is referenced twice")
    );
    // Meta naming a root past the end.
    let mut b = good.clone();
    edit_metas(&mut b, |m| m.root = 500);
    assert_eq!(
        err(&b),
        format!("bbolt: meta root page 500 is out of range (file has {pages} pages)")
    );
    // A top-level plain key.
    let mut b = good.clone();
    let root_elem = root * PAGE_SIZE + PAGE_HEADER;
    b[root_elem] = 0;
    assert_eq!(err(&b), "bbolt: top-level key \"inline\" is not a bucket");
}

#[test]
fn the_newer_valid_meta_wins_and_a_damaged_one_is_skipped() {
    let good = small_db();
    // Meta 0 (txid 2) is current; damage it and meta 1 takes over with the same tree.
    let mut b = good.clone();
    b[PAGE_HEADER + 40] ^= 0xff;
    assert_eq!(read(&b).expect("meta 1"), read(&good).expect("meta 0"));
    assert_eq!(BoltDb::open(&b).expect("open").meta().txid, 1);
    // A meta 1 with a higher txid is preferred.
    let m1 = Meta::decode(&good[PAGE_SIZE..]).expect("meta 1");
    let mut b = good.clone();
    let newer = Meta {
        txid: 3,
        root: 500,
        ..m1
    };
    b[PAGE_SIZE..PAGE_SIZE + 80].copy_from_slice(&newer.encode(1));
    assert!(matches!(
        BoltDb::open(&b),
        Err(BoltError::MetaOutOfRange { id: 500, .. })
    ));
}

/// Runs everything the reader offers; returns whether it all succeeded.
fn exercise(bytes: &[u8]) -> bool {
    let Ok(db) = BoltDb::open(bytes) else {
        return false;
    };
    let mut ok = db.check().is_empty() & db_status(&db).is_ok();
    match db.bucket_names() {
        Ok(names) => {
            for name in names {
                match db.bucket(name) {
                    Ok(Some(b)) => {
                        ok &= b.for_each(|_, _| Ok::<_, BoltError>(())).is_ok();
                        ok &= b.get(b"\x00\x00\x00\x07").is_ok();
                    }
                    _ => ok = false,
                }
            }
        }
        Err(_) => ok = false,
    }
    ok
}

#[test]
fn every_byte_flip_and_truncation_is_handled() {
    let good = small_db();
    assert!(exercise(&good));
    for len in 0..good.len() {
        exercise(&good[..len]);
    }
    let mut b = good.clone();
    for at in 0..good.len() {
        for mask in [0x01u8, 0x80, 0xff] {
            b[at] ^= mask;
            exercise(&b);
            b[at] ^= mask;
        }
    }
}

#[test]
fn check_finds_a_page_referenced_twice_and_one_unreachable() {
    let good = small_db();
    let db = BoltDb::open(&good).expect("open");
    let key_root = match db.bucket(b"keys").expect("lookup").expect("bucket").root() {
        Root::Page(id) => id,
        Root::Inline(_) => panic!("keys bucket spans pages"),
    };
    let branch = db.pages().node(key_root).expect("branch");
    let (first, second) = (
        branch.branch(0).expect("e0").1,
        branch.branch(1).expect("e1").1,
    );
    // Point the second child at the first: the first is referenced twice, the second lost.
    let mut b = good.clone();
    let elem = key_root as usize * PAGE_SIZE + PAGE_HEADER + 16;
    b[elem + 8..elem + 16].copy_from_slice(&first.to_le_bytes());
    let db = BoltDb::open(&b).expect("open");
    assert_eq!(
        db.check(),
        vec![
            format!("page {first}: multiple references"),
            format!("page {second}: unreachable unfreed")
        ]
    );
    let err = db_status(&db).expect_err("integrity").to_string();
    assert_eq!(
        err,
        format!(
            "snapshot file integrity check failed. 2 errors found.\npage {first}: multiple references\npage {second}: unreachable unfreed"
        )
    );
    // Reading refuses the shared page too.
    assert!(matches!(read(&b), Err(BoltError::ReferencedTwice { .. })));
}

#[test]
fn check_finds_an_extra_page_and_a_double_free() {
    let good = small_db();
    let pages = (good.len() / PAGE_SIZE) as u64;
    // One more page past the old high-water mark, referenced by nothing.
    let mut b = good.clone();
    let mut extra = PageHeader {
        id: pages,
        flags: LEAF_PAGE,
        count: 0,
        overflow: 0,
    }
    .encode()
    .to_vec();
    extra.resize(PAGE_SIZE, 0);
    b.extend_from_slice(&extra);
    edit_metas(&mut b, |m| m.pgid = pages + 1);
    let db = BoltDb::open(&b).expect("open");
    assert_eq!(
        db.check(),
        vec![format!("page {pages}: unreachable unfreed")]
    );
    // Now list it twice on the freelist: one "already freed", nothing unreachable.
    let fl = db.meta().freelist as usize * PAGE_SIZE;
    b[fl + 10..fl + 12].copy_from_slice(&2u16.to_le_bytes());
    b[fl + 16..fl + 24].copy_from_slice(&pages.to_le_bytes());
    b[fl + 24..fl + 32].copy_from_slice(&pages.to_le_bytes());
    let db = BoltDb::open(&b).expect("open");
    assert_eq!(db.check(), vec![format!("page {pages}: already freed")]);
    // Freeing a reachable page instead.
    let root = db.meta().root;
    b[fl + 10..fl + 12].copy_from_slice(&1u16.to_le_bytes());
    b[fl + 16..fl + 24].copy_from_slice(&root.to_le_bytes());
    let db = BoltDb::open(&b).expect("open");
    assert_eq!(
        db.check(),
        vec![
            format!("page {root}: reachable freed"),
            format!("page {pages}: unreachable unfreed")
        ]
    );
    // Without a stored freelist (etcd's NoFreelistSync) unreferenced pages are free.
    edit_metas(&mut b, |m| m.freelist = u64::MAX);
    let db = BoltDb::open(&b).expect("open");
    assert_eq!(db.check(), Vec::<String>::new());
}

fn content_strategy() -> impl Strategy<Value = Content> {
    let key = prop::collection::vec(any::<u8>(), 1..40);
    let value = prop_oneof![
        8 => prop::collection::vec(any::<u8>(), 0..200),
        1 => prop::collection::vec(any::<u8>(), 3000..12_000),
    ];
    let bucket = prop::collection::btree_map(key.clone(), value, 0..300);
    prop::collection::btree_map(key, bucket, 0..6).prop_map(|m| {
        m.into_iter()
            .map(|(name, kvs)| (name, kvs.into_iter().collect()))
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn random_contents_round_trip(content in content_strategy()) {
        round_trip(&content);
    }
}
