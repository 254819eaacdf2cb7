//! State snapshots from a hostile or broken peer: whatever the bytes, restore returns
//! an error or a usable state, never panics, and allocates in proportion to its input.
//! Mutations keep the checksum valid so the parser behind it is what gets attacked.

#[path = "common/counting_alloc.rs"]
mod counting_alloc;

use bytes::Bytes;
use keel_core::mvcc::{KvState, LeaseId, PutRequest, RangeRequest};
use keel_core::raft::Time;
use proptest::prelude::*;

fn sample() -> Vec<u8> {
    let mut st = KvState::new(u64::MAX, 1);
    st.lessor.grant(LeaseId(9), 30, Time(0)).expect("grant");
    st.store.grant_lease(9);
    for i in 0..12u8 {
        st.put(&PutRequest {
            key: Bytes::from(vec![b'k', i % 5]),
            value: Bytes::from(vec![i; usize::from(i)]),
            lease: if i % 4 == 0 { 9 } else { 0 },
            ..PutRequest::default()
        })
        .expect("put");
    }
    st.store.compact(6).expect("compact");
    st.applied = 40;
    st.snapshot()
}

/// Recomputes the trailing CRC32 over everything before it.
fn reseal(mut b: Vec<u8>) -> Vec<u8> {
    if b.len() >= 4 {
        let n = b.len() - 4;
        let crc = crc32fast::hash(&b[..n]);
        b[n..].copy_from_slice(&crc.to_le_bytes());
    }
    b
}

#[derive(Clone, Debug)]
enum Mutation {
    Set(usize, u8),
    /// Overwrite 8 bytes with a little-endian integer (a count, length or revision).
    Word(usize, u64),
    Insert(usize, u8),
    Remove(usize),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let word = prop_oneof![
        Just(u64::MAX),
        Just(i64::MAX as u64),
        Just(1 << 40),
        0u64..64,
        any::<u64>()
    ];
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, v)| Mutation::Set(i, v)),
        (any::<usize>(), word).prop_map(|(i, v)| Mutation::Word(i, v)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, v)| Mutation::Insert(i, v)),
        any::<usize>().prop_map(Mutation::Remove),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn apply(mut b: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
    // The body sits between the 8-byte magic and the 4-byte checksum.
    for m in muts {
        let body = b.len().saturating_sub(12).max(1);
        let at = |i: usize| 8 + i % body;
        match *m {
            Mutation::Set(i, v) => {
                let i = at(i).min(b.len().saturating_sub(1));
                if let Some(x) = b.get_mut(i) {
                    *x = v;
                }
            }
            Mutation::Word(i, v) => {
                let i = at(i);
                if i + 8 <= b.len() {
                    b[i..i + 8].copy_from_slice(&v.to_le_bytes());
                }
            }
            Mutation::Insert(i, v) => b.insert(at(i).min(b.len()), v),
            Mutation::Remove(i) => {
                if at(i) < b.len() {
                    b.remove(at(i));
                }
            }
            Mutation::Truncate(i) => b.truncate(at(i).min(b.len())),
        }
    }
    reseal(b)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn restore_survives_hostile_bytes(muts in prop::collection::vec(mutation(), 1..6)) {
        let bytes = apply(sample(), &muts);
        let (out, peak) = counting_alloc::peak_during(|| KvState::restore(&bytes, u64::MAX, 1));
        prop_assert!(
            peak <= 16 * bytes.len() + 64 * 1024,
            "restoring {} bytes allocated {} bytes", bytes.len(), peak
        );
        if let Ok(st) = out {
            // What was accepted is a working state: it answers reads, and its own
            // snapshot restores to the same backend hash.
            let all = RangeRequest {
                key: Bytes::from_static(b"\0"),
                range_end: Bytes::from_static(b"\0"),
                ..RangeRequest::default()
            };
            let _ = st.store.range(&all);
            let again = KvState::restore(&st.snapshot(), u64::MAX, 1);
            prop_assert!(again.is_ok(), "re-snapshot of an accepted state restores");
            if let Ok(again) = again {
                prop_assert_eq!(again.hash(), st.hash());
            }
        }
    }
}

#[test]
fn the_unmutated_sample_restores() {
    let st = KvState::restore(&sample(), u64::MAX, 1).expect("restores");
    assert_eq!(st.applied, 40);
}
