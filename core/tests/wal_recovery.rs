//! WAL recovery under crashes, torn writes, bit rot and arbitrary bytes.

#[path = "common/counting_alloc.rs"]
mod counting_alloc;

use bytes::Bytes;
use keel_core::raft::{Entry, EntryPayload, HardState, LogIndex, MemberId, Term};
use keel_core::wal::{
    recover, MemStore, Record, SegmentHeader, SegmentName, SegmentStore, Wal, WalError,
    SEGMENT_HEADER,
};
use proptest::prelude::*;

const SEGMENT: u64 = 1024;

fn entry(index: u64, data: &[u8]) -> Record {
    Record::Entry(Entry {
        term: Term(1),
        index: LogIndex(index),
        payload: EntryPayload::Normal(Bytes::copy_from_slice(data)),
    })
}

#[derive(Clone, Debug)]
enum Op {
    /// Append entries with these payload sizes, then a hard state.
    Append(Vec<u8>),
    /// Sync (entries become acknowledged).
    Sync,
    /// Crash, tearing the oldest unsynced write after this many bytes (if any), and reopen.
    Crash(Option<u16>),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => prop::collection::vec(0u8..200, 1..6).prop_map(Op::Append),
        3 => Just(Op::Sync),
        2 => prop::option::of(any::<u16>()).prop_map(Op::Crash),
    ]
}

fn open(store: MemStore) -> (Wal<MemStore>, Vec<Entry>) {
    let (wal, rec) = Wal::open(store, 7, 9, SEGMENT).expect("recovery succeeds after a crash");
    (wal, rec.entries)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    /// After every crash and reopen the log is exactly a prefix of what was appended, and
    /// that prefix holds every entry that was synced before the crash.
    #[test]
    fn recovery_keeps_a_prefix_holding_every_synced_entry(ops in prop::collection::vec(op(), 1..60)) {
        let (mut wal, _) = open(MemStore::new());
        let mut appended: Vec<Entry> = Vec::new();
        let mut synced = 0usize;
        for op in ops {
            match op {
                Op::Append(sizes) => {
                    let mut recs = Vec::new();
                    for s in sizes {
                        let index = appended.len() as u64 + 1;
                        let data = vec![(index % 251) as u8 + 1; usize::from(s)];
                        if let Record::Entry(e) = entry(index, &data) {
                            appended.push(e.clone());
                            recs.push(Record::Entry(e));
                        }
                    }
                    recs.push(Record::HardState(HardState {
                        term: Term(1),
                        vote: MemberId(1),
                        commit: LogIndex(synced as u64),
                    }));
                    wal.append(&recs).expect("append");
                }
                Op::Sync => {
                    wal.sync().expect("sync");
                    synced = appended.len();
                }
                Op::Crash(tear) => {
                    let mut store = wal.into_store();
                    store.crash(tear.map(usize::from));
                    let (w, entries) = open(store);
                    wal = w;
                    prop_assert!(entries.len() >= synced, "lost synced entries: {} < {synced}", entries.len());
                    prop_assert_eq!(&entries[..], &appended[..entries.len()]);
                    appended.truncate(entries.len());
                    synced = entries.len();
                }
            }
        }
    }

    /// Arbitrary bytes as segments: recovery never panics and allocates at most a small
    /// multiple of its input.
    #[test]
    fn arbitrary_segments_never_panic(
        bodies in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..600), 1..4),
        with_header in any::<bool>(),
    ) {
        let files: Vec<(SegmentName, Vec<u8>)> = bodies
            .into_iter()
            .enumerate()
            .map(|(i, mut b)| {
                let name = SegmentName { seq: i as u64, first_index: 1 };
                if with_header {
                    let h = SegmentHeader { cluster_id: 7, member_id: 9, seq: i as u64, first_index: 1, prev_crc: 0 };
                    let mut v = h.encode().to_vec();
                    v.append(&mut b);
                    b = v;
                }
                (name, b)
            })
            .collect();
        check_bounded(&files);
    }

    /// A real log with random bytes overwritten: never a panic, never altered data.
    #[test]
    fn mutated_segments_never_panic_or_lie(
        n in 5usize..40,
        muts in prop::collection::vec((any::<u16>(), any::<u8>()), 1..8),
    ) {
        let (files, written) = sample_log(n);
        let mut files = files;
        for (pos, byte) in muts {
            let total: usize = files.iter().map(|(_, b)| b.len()).sum();
            let mut p = usize::from(pos) % total;
            for (_, b) in files.iter_mut() {
                if p < b.len() {
                    b[p] = byte;
                    break;
                }
                p -= b.len();
            }
        }
        check_bounded(&files);
        let views: Vec<(SegmentName, &[u8])> = files.iter().map(|(n, b)| (*n, &b[..])).collect();
        if let Ok(rec) = recover(&views, Some((7, 9))) {
            // Whatever is accepted is exactly a prefix of what was written.
            prop_assert_eq!(&rec.entries[..], &written[..rec.entries.len()]);
        }
    }
}

fn check_bounded(files: &[(SegmentName, Vec<u8>)]) {
    let views: Vec<(SegmentName, &[u8])> = files.iter().map(|(n, b)| (*n, &b[..])).collect();
    let input: usize = files.iter().map(|(_, b)| b.len()).sum();
    let (out, peak) = counting_alloc::peak_during(|| recover(&views, None));
    drop(out);
    assert!(
        peak <= 4 * input + 64 * 1024,
        "recovery of {input} bytes allocated {peak} bytes"
    );
}

/// A synced log of `n` entries spread over several small segments.
fn sample_log(n: usize) -> (Vec<(SegmentName, Vec<u8>)>, Vec<Entry>) {
    let (mut wal, _) = open(MemStore::new());
    let mut written = Vec::new();
    for i in 1..=n as u64 {
        let data = format!("entry-{i}-{}", "x".repeat((i % 7) as usize));
        let r = entry(i, data.as_bytes());
        if let Record::Entry(e) = &r {
            written.push(e.clone());
        }
        wal.append(&[r]).expect("append");
    }
    wal.sync().expect("sync");
    let mut store = wal.into_store();
    let names = store.list().expect("list");
    let files = names
        .into_iter()
        .map(|n| (n, store.read(n).expect("read")))
        .collect();
    (files, written)
}

/// Every single-bit flip inside the written part of a real log is detected: recovery
/// fails naming the file and offset, or (only for the very last record, which cannot be
/// told from a torn write) cuts it and reports the cut. Never is altered data accepted.
#[test]
fn every_single_bit_flip_is_detected() {
    let (files, written) = sample_log(45);
    assert!(files.len() >= 3, "spread over several segments");
    let views_of = |fs: &[(SegmentName, Vec<u8>)]| -> Vec<(SegmentName, Vec<u8>)> { fs.to_vec() };
    let clean: Vec<(SegmentName, &[u8])> = files.iter().map(|(n, b)| (*n, &b[..])).collect();
    let base = recover(&clean, Some((7, 9))).expect("clean log recovers");
    assert_eq!(base.entries, written);
    let end = base.end.expect("end");
    let mut fatal = 0;
    let mut cut = 0;
    for (fi, (name, bytes)) in files.iter().enumerate() {
        let written_len = if *name == end.segment {
            end.offset
        } else {
            // Older segments: the header plus every frame up to the zeroed remainder.
            bytes.len() - bytes.iter().rev().take_while(|b| **b == 0).count()
        };
        for bit in 0..written_len * 8 {
            let mut fs = views_of(&files);
            fs[fi].1[bit / 8] ^= 1 << (bit % 8);
            let views: Vec<(SegmentName, &[u8])> = fs.iter().map(|(n, b)| (*n, &b[..])).collect();
            match recover(&views, Some((7, 9))) {
                Err(e) => {
                    fatal += 1;
                    let msg = e.to_string();
                    assert!(
                        msg.contains(&name.to_string())
                            || matches!(e, WalError::CommittedLost { .. }),
                        "error names the file: {msg}"
                    );
                }
                Ok(rec) => {
                    let torn = rec.torn.unwrap_or_else(|| {
                        panic!("bit {bit} of {name} flipped and nothing was detected")
                    });
                    assert_eq!(
                        torn.segment, end.segment,
                        "only the newest segment has a tail"
                    );
                    assert!(
                        rec.entries.len() == written.len() - 1,
                        "only the last record is cut"
                    );
                    assert_eq!(&rec.entries[..], &written[..rec.entries.len()]);
                    cut += 1;
                }
            }
        }
    }
    assert!(fatal > 0 && cut > 0, "fatal {fatal}, cut {cut}");
}

#[test]
fn torn_tail_is_cut_and_reported_then_appends_continue() {
    let (mut wal, _) = open(MemStore::new());
    wal.append(&[entry(1, b"one"), entry(2, b"two")])
        .expect("append");
    wal.sync().expect("sync");
    wal.append(&[entry(3, b"three, never synced")])
        .expect("append");
    let mut store = wal.into_store();
    store.crash(Some(20)); // Header and part of entry 3's payload reach the disk.
    let (mut wal, rec) = Wal::open(store, 7, 9, SEGMENT).expect("recovers");
    let torn = rec.torn.expect("the torn record is reported");
    // Each of the first two frames: 16-byte header + 20-byte payload padded to 24.
    assert_eq!(torn.offset, SEGMENT_HEADER + 2 * 40);
    assert!(
        torn.to_string()
            .contains("torn tail cut at byte offset 144"),
        "{torn}"
    );
    assert_eq!(rec.entries.len(), 2);
    wal.append(&[entry(3, b"three again")]).expect("append");
    wal.sync().expect("sync");
    let (_, rec) = Wal::open(wal.into_store(), 7, 9, SEGMENT).expect("recovers");
    assert_eq!(rec.torn, None);
    assert_eq!(rec.entries.len(), 3);
}

#[test]
fn fatal_errors_name_the_file() {
    let (files, _) = sample_log(45);
    assert!(files.len() >= 3);
    let views: Vec<(SegmentName, &[u8])> = files.iter().map(|(n, b)| (*n, &b[..])).collect();
    // Another member's log.
    let e = recover(&views, Some((7, 10))).expect_err("foreign");
    assert_eq!(
        e.to_string(),
        format!(
            "wal: {}: belongs to member 9 of cluster 7, expected member a of cluster 7",
            files[0].0
        )
    );
    // A missing middle segment.
    let gap: Vec<(SegmentName, &[u8])> = views
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 1)
        .map(|(_, v)| *v)
        .collect();
    let e = recover(&gap, None).expect_err("gap");
    assert!(matches!(e, WalError::SequenceGap { .. }), "{e}");
    // A corrupt record in an older segment.
    let mut fs = files.clone();
    fs[0].1[SEGMENT_HEADER + 20] ^= 0xff;
    let v: Vec<(SegmentName, &[u8])> = fs.iter().map(|(n, b)| (*n, &b[..])).collect();
    assert_eq!(
        recover(&v, None).expect_err("corrupt").to_string(),
        format!(
            "wal: {}: corrupt record at byte offset {}",
            files[0].0, SEGMENT_HEADER
        )
    );
}

#[test]
fn raft_truncation_replaces_the_suffix_but_never_below_commit() {
    let (mut wal, _) = open(MemStore::new());
    wal.append(&[entry(1, b"a"), entry(2, b"b"), entry(3, b"c")])
        .expect("append");
    wal.append(&[Record::HardState(HardState {
        term: Term(2),
        vote: MemberId(1),
        commit: LogIndex(1),
    })])
    .expect("append");
    wal.append(&[entry(2, b"B")]).expect("append");
    wal.sync().expect("sync");
    let (mut wal, rec) = Wal::open(wal.into_store(), 7, 9, SEGMENT).expect("recovers");
    let data: Vec<_> = rec
        .entries
        .iter()
        .map(|e| match &e.payload {
            EntryPayload::Normal(d) => d.clone(),
            _ => Bytes::new(),
        })
        .collect();
    assert_eq!(
        data,
        vec![Bytes::from_static(b"a"), Bytes::from_static(b"B")]
    );
    wal.append(&[entry(1, b"overwrite committed")])
        .expect("append");
    wal.sync().expect("sync");
    let err = Wal::open(wal.into_store(), 7, 9, SEGMENT).expect_err("refused");
    assert!(
        err.to_string().contains("overwrites committed entry"),
        "{err}"
    );
}

/// Writes real segments as seeds for the `wal_decode` fuzz target when
/// `KEEL_FUZZ_SEEDS=<dir>` is set (otherwise checks that seed generation works).
#[test]
fn fuzz_seed_corpus() {
    let (files, _) = sample_log(45);
    let mut seeds = Vec::new();
    for (i, (_, bytes)) in files.iter().enumerate() {
        // The target's first byte: one part, headers prepended by the target itself.
        let mut seed = vec![4u8];
        seed.extend_from_slice(&bytes[SEGMENT_HEADER..]);
        let trimmed = seed.len() - seed.iter().rev().take_while(|b| **b == 0).count();
        seed.truncate(trimmed.max(1) + 16);
        seeds.push((format!("segment-{i}"), seed));
    }
    assert!(seeds.iter().all(|(_, s)| s.len() > 17));
    if let Some(dir) = std::env::var_os("KEEL_FUZZ_SEEDS") {
        let dir = std::path::PathBuf::from(dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        for (name, seed) in seeds {
            std::fs::write(dir.join(name), seed).expect("write seed");
        }
    }
}

/// Review finding: a roll caused by a raft truncation must not let `release` remove a
/// segment from the middle of the chain.
#[test]
fn release_removes_only_a_prefix_even_after_truncation() {
    let (mut wal, _) = open(MemStore::new());
    for i in 1..=30 {
        wal.append(&[entry(i, b"0123456789abcdef0123456789")])
            .expect("append");
    }
    // A new leader overwrites from index 5; keep writing so segments roll.
    for i in 5..=40 {
        wal.append(&[entry(i, b"new-leader-entry-data-xxxxx")])
            .expect("append");
    }
    wal.sync().expect("sync");
    wal.release(LogIndex(6), 0).expect("release");
    let (_, rec) = Wal::open(wal.into_store(), 7, 9, SEGMENT).expect("still recoverable");
    assert_eq!(rec.entries.last().map(|e| e.index), Some(LogIndex(40)));
}

/// Review finding: releasing old segments must not lose the last hard state.
#[test]
fn release_keeps_the_hard_state() {
    let (mut wal, _) = open(MemStore::new());
    let hs = HardState {
        term: Term(5),
        vote: MemberId(3),
        commit: LogIndex(0),
    };
    wal.append(&[Record::HardState(hs)]).expect("append");
    for i in 1..=60 {
        wal.append(&[entry(i, b"0123456789abcdef0123456789")])
            .expect("append");
    }
    wal.sync().expect("sync");
    let gone = wal.release(LogIndex(50), 0).expect("release");
    assert!(!gone.is_empty(), "something was released");
    let (_, rec) = Wal::open(wal.into_store(), 7, 9, SEGMENT).expect("recovers");
    assert_eq!(
        (rec.hard_state.term, rec.hard_state.vote),
        (Term(5), MemberId(3))
    );
}

/// Review finding: a crash between creating a segment file and syncing its header is a
/// torn roll, not a fatal error; the file is removed and recreated at the next roll.
#[test]
fn a_segment_whose_header_never_reached_the_disk_is_a_torn_roll() {
    let (files, written) = sample_log(45);
    let mut files = files;
    let last = files.last().expect("segments").0;
    let zeroed = (
        SegmentName {
            seq: last.seq + 1,
            first_index: 46,
        },
        vec![0u8; SEGMENT as usize],
    );
    files.push(zeroed.clone());
    let views: Vec<(SegmentName, &[u8])> = files.iter().map(|(n, b)| (*n, &b[..])).collect();
    let rec = recover(&views, Some((7, 9))).expect("recovers");
    assert_eq!(rec.entries, written);
    assert_eq!(rec.torn.map(|t| (t.segment, t.offset)), Some((zeroed.0, 0)));
}

/// Review finding: reopening with a different segment size keeps writing within the
/// current file's real size.
#[test]
fn segment_size_change_between_restarts_is_safe() {
    let (mut wal, _) = open(MemStore::new());
    for i in 1..=10 {
        wal.append(&[entry(i, b"abc")]).expect("append");
    }
    wal.sync().expect("sync");
    let (mut wal, _) = Wal::open(wal.into_store(), 7, 9, 64 * 1024).expect("reopen bigger");
    for i in 11..=60 {
        wal.append(&[entry(i, b"0123456789abcdef0123456789")])
            .expect("append");
    }
    wal.sync().expect("sync");
    let (_, rec) = Wal::open(wal.into_store(), 7, 9, 64 * 1024).expect("recovers");
    assert_eq!(rec.entries.len(), 60);
}
