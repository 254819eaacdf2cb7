//! The peer transport's message encoding: every message round-trips, decoding is
//! zero-copy, and hostile bytes (random, or mutations of valid messages) are refused or
//! accepted without panicking and with allocation bounded by the input's length.

#[path = "common/counting_alloc.rs"]
mod counting_alloc;
#[path = "common/hostile.rs"]
mod hostile;

use std::collections::BTreeSet;

use bytes::Bytes;
use hostile::{apply, check, serial, Mutation};
use keel_core::raft::{
    decode_message, encode_message, ConfChange, ConfState, Entry, EntryPayload, LogIndex, MemberId,
    Message, MessageBody, ReadCtx, RejectHint, SnapshotMeta, Term, WireError,
};
use proptest::prelude::*;

fn u64s() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..20, Just(u64::MAX), any::<u64>()]
}

fn member() -> impl Strategy<Value = MemberId> {
    u64s().prop_map(MemberId)
}

fn index() -> impl Strategy<Value = LogIndex> {
    u64s().prop_map(LogIndex)
}

fn term() -> impl Strategy<Value = Term> {
    u64s().prop_map(Term)
}

fn data() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..48).prop_map(Bytes::from)
}

fn payload() -> impl Strategy<Value = EntryPayload> {
    prop_oneof![
        Just(EntryPayload::Empty),
        data().prop_map(EntryPayload::Normal),
        member().prop_map(|m| EntryPayload::ConfChange(ConfChange::AddVoter(m))),
        member().prop_map(|m| EntryPayload::ConfChange(ConfChange::AddLearner(m))),
        member().prop_map(|m| EntryPayload::ConfChange(ConfChange::Remove(m))),
    ]
}

fn entry() -> impl Strategy<Value = Entry> {
    (term(), index(), payload()).prop_map(|(term, index, payload)| Entry {
        term,
        index,
        payload,
    })
}

fn meta() -> impl Strategy<Value = SnapshotMeta> {
    let ids = || prop::collection::btree_set(member(), 0..6);
    (index(), term(), ids(), ids()).prop_map(|(index, term, voters, learners)| SnapshotMeta {
        index,
        term,
        conf: ConfState { voters, learners },
    })
}

fn body() -> impl Strategy<Value = MessageBody> {
    prop_oneof![
        (
            index(),
            term(),
            prop::collection::vec(entry(), 0..8),
            index()
        )
            .prop_map(
                |(prev_index, prev_term, entries, commit)| MessageBody::Append {
                    prev_index,
                    prev_term,
                    entries,
                    commit,
                }
            ),
        (index(), prop::option::of((index(), term()))).prop_map(|(index, hint)| {
            MessageBody::AppendResponse {
                index,
                reject: hint.map(|(index, term)| RejectHint { index, term }),
            }
        }),
        (index(), u64s()).prop_map(|(commit, round)| MessageBody::Heartbeat { commit, round }),
        u64s().prop_map(|round| MessageBody::HeartbeatResponse { round }),
        (any::<bool>(), index(), term(), any::<bool>()).prop_map(
            |(pre_vote, last_index, last_term, transfer)| MessageBody::RequestVote {
                pre_vote,
                last_index,
                last_term,
                transfer,
            }
        ),
        (any::<bool>(), any::<bool>())
            .prop_map(|(pre_vote, granted)| MessageBody::VoteResponse { pre_vote, granted }),
        (meta(), u64s(), u64s(), data()).prop_map(|(meta, total, offset, data)| {
            MessageBody::SnapshotChunk {
                meta,
                total,
                offset,
                data,
            }
        }),
        (index(), u64s(), any::<bool>()).prop_map(|(index, received, resend)| {
            MessageBody::SnapshotAck {
                index,
                received,
                resend,
            }
        }),
        Just(MessageBody::TimeoutNow),
        prop::collection::vec(payload(), 0..8)
            .prop_map(|payloads| MessageBody::Propose { payloads }),
        u64s().prop_map(|c| MessageBody::ReadIndex { ctx: ReadCtx(c) }),
        (u64s(), index()).prop_map(|(c, index)| MessageBody::ReadIndexResponse {
            ctx: ReadCtx(c),
            index
        }),
        member().prop_map(|target| MessageBody::TransferLeader { target }),
    ]
}

fn message() -> impl Strategy<Value = Message> {
    (member(), member(), term(), body()).prop_map(|(from, to, term, body)| Message {
        from,
        to,
        term,
        body,
    })
}

fn encode(m: &Message) -> Vec<u8> {
    let mut out = Vec::new();
    encode_message(m, &mut out);
    out
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let len = prop_oneof![
        Just(u32::MAX),
        Just(1 << 20),
        Just(1 << 28),
        0u32..64,
        any::<u32>()
    ];
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, v)| Mutation::Set(i, v)),
        (any::<usize>(), len).prop_map(|(i, v)| Mutation::Len(i, v)),
        (any::<usize>(), any::<u64>()).prop_map(|(i, v)| Mutation::Word(i, v)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, v)| Mutation::Insert(i, v)),
        any::<usize>().prop_map(Mutation::Remove),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

/// Decodes hostile `input`, checking the allocation bound and that whatever is accepted
/// means exactly one thing.
fn check_hostile(input: Vec<u8>) -> Result<(), TestCaseError> {
    let len = input.len();
    let b = Bytes::from(input);
    let (out, peak) = counting_alloc::peak_during(|| decode_message(&b));
    prop_assert!(
        peak <= 8 * len + 1024,
        "decoding {} bytes allocated {} bytes",
        len,
        peak
    );
    if let Ok(m) = out {
        let again = encode(&m);
        // Member sets in snapshot metadata are sets: duplicates or disorder in the input
        // collapse. Everything else is canonical.
        if !matches!(m.body, MessageBody::SnapshotChunk { .. }) {
            prop_assert_eq!(&again[..], &b[..]);
        }
        prop_assert_eq!(decode_message(&Bytes::from(again)), Ok(m));
    }
    Ok(())
}

#[test]
fn every_message_round_trips() {
    check(file!(), 3000, message(), |m| {
        let buf = encode(&m);
        let b = Bytes::from(buf);
        prop_assert_eq!(decode_message(&b), Ok(m.clone()));
        // The transport may hand over a slice of a larger read buffer.
        let mut framed = vec![0xAA; 5];
        encode_message(&m, &mut framed);
        framed.extend_from_slice(&[0xBB; 3]);
        let framed = Bytes::from(framed);
        prop_assert_eq!(
            decode_message(&framed.slice(5..framed.len() - 3)),
            Ok(m.clone())
        );
        // A strict prefix never decodes, but for a snapshot chunk, whose data runs to the
        // end of the message.
        if !matches!(m.body, MessageBody::SnapshotChunk { .. }) {
            for cut in 0..b.len() {
                prop_assert!(
                    decode_message(&b.slice(..cut)).is_err(),
                    "prefix {} decoded",
                    cut
                );
            }
        }
        Ok(())
    });
}

#[test]
fn mutated_messages_never_panic_and_stay_bounded() {
    let cases = (message(), prop::collection::vec(mutation(), 1..5));
    check(file!(), 5000, cases, |(m, muts)| {
        check_hostile(apply(encode(&m), &muts))
    });
}

#[test]
fn random_bytes_never_panic_and_stay_bounded() {
    let cases = (
        0u8..16,
        prop::collection::vec(any::<u8>(), 0..256),
        any::<bool>(),
    );
    check(file!(), 5000, cases, |(kind, rest, raw)| {
        // Mostly past the version and kind bytes, or the decoder would refuse at once.
        let input = if raw {
            rest
        } else {
            [&[1, kind][..], &rest[..]].concat()
        };
        check_hostile(input)
    });
}

fn append(entries: Vec<Entry>) -> Message {
    Message {
        from: MemberId(1),
        to: MemberId(2),
        term: Term(3),
        body: MessageBody::Append {
            prev_index: LogIndex(4),
            prev_term: Term(2),
            entries,
            commit: LogIndex(4),
        },
    }
}

#[test]
fn decoding_is_zero_copy() {
    let _g = serial();
    let m = Message {
        body: MessageBody::SnapshotChunk {
            meta: SnapshotMeta {
                index: LogIndex(9),
                term: Term(2),
                conf: ConfState::with_voters([MemberId(1), MemberId(2)]),
            },
            total: 100,
            offset: 0,
            data: Bytes::from(vec![7u8; 100]),
        },
        ..append(vec![])
    };
    let b = Bytes::from(encode(&m));
    let range = b.as_ptr_range();
    let Ok(Message {
        body: MessageBody::SnapshotChunk { data, .. },
        ..
    }) = decode_message(&b)
    else {
        panic!("snapshot chunk did not decode");
    };
    assert!(range.contains(&data.as_ptr()), "chunk data was copied");

    let big = Bytes::from(vec![1u8; 64 << 10]);
    let b = Bytes::from(encode(&append(vec![Entry {
        term: Term(3),
        index: LogIndex(5),
        payload: EntryPayload::Normal(big.clone()),
    }])));
    let (out, peak) = counting_alloc::peak_during(|| decode_message(&b));
    assert!(peak < 1024, "a 64 KiB entry allocated {peak} bytes");
    let Ok(Message {
        body: MessageBody::Append { entries, .. },
        ..
    }) = out
    else {
        panic!("append did not decode");
    };
    assert_eq!(entries[0].payload, EntryPayload::Normal(big));
    let EntryPayload::Normal(d) = &entries[0].payload else {
        unreachable!()
    };
    assert!(
        b.as_ptr_range().contains(&d.as_ptr()),
        "entry data was copied"
    );
}

#[test]
fn the_layout_is_as_documented() {
    let _g = serial();
    let m = Message {
        from: MemberId(1),
        to: MemberId(2),
        term: Term(3),
        body: MessageBody::Heartbeat {
            commit: LogIndex(4),
            round: 5,
        },
    };
    let mut want = vec![1u8, 3];
    for v in [1u64, 2, 3, 4, 5] {
        want.extend_from_slice(&v.to_le_bytes());
    }
    assert_eq!(encode(&m), want);
}

#[test]
fn typed_errors() {
    let _g = serial();
    let ok = encode(&append(vec![Entry {
        term: Term(3),
        index: LogIndex(5),
        payload: EntryPayload::Empty,
    }]));
    let dec = |v: Vec<u8>| decode_message(&Bytes::from(v));

    let mut v = ok.clone();
    v[0] = 2;
    assert_eq!(dec(v), Err(WireError::Version(2)));

    let mut v = ok.clone();
    v[1] = 99;
    assert_eq!(dec(v), Err(WireError::UnknownKind(99)));

    let heartbeat = encode(&Message {
        body: MessageBody::Heartbeat {
            commit: LogIndex(1),
            round: 2,
        },
        ..append(vec![])
    });
    assert_eq!(
        dec(heartbeat[..heartbeat.len() - 1].to_vec()),
        Err(WireError::Truncated)
    );
    // Too short for the entries it declares.
    assert_eq!(dec(ok[..ok.len() - 1].to_vec()), Err(WireError::Count(1)));
    assert_eq!(dec(vec![]), Err(WireError::Truncated));

    let mut v = ok.clone();
    v.push(0);
    // Entries are length-prefixed, so the extra byte trails the whole message.
    assert_eq!(dec(v), Err(WireError::TrailingBytes(1)));

    // A count of u32::MAX entries in a short message is refused before reserving.
    let mut v = ok.clone();
    let count_at = 2 + 24 + 24;
    v[count_at..count_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    let b = Bytes::from(v);
    let (out, peak) = counting_alloc::peak_during(|| decode_message(&b));
    assert_eq!(out, Err(WireError::Count(u32::MAX)));
    assert!(peak < 1024, "allocated {peak} bytes");

    // Payload kind after the entry's length, term and index.
    let mut v = ok.clone();
    v[count_at + 4 + 4 + 16] = 9;
    assert_eq!(
        dec(v),
        Err(WireError::Invalid {
            what: "payload kind",
            value: 9
        })
    );

    let vote = encode(&Message {
        body: MessageBody::VoteResponse {
            pre_vote: true,
            granted: false,
        },
        ..append(vec![])
    });
    let mut v = vote.clone();
    v[26] = 4;
    assert!(matches!(dec(v), Err(WireError::Invalid { value: 4, .. })));

    let chunk = encode(&Message {
        body: MessageBody::SnapshotChunk {
            meta: SnapshotMeta::default(),
            total: 0,
            offset: 0,
            data: Bytes::new(),
        },
        ..append(vec![])
    });
    // Claim one voter in a meta too short to hold it (voter count follows index and term).
    let mut v = chunk.clone();
    v[26 + 4 + 16] = 1;
    assert_eq!(dec(v), Err(WireError::SnapshotMeta));
}

#[test]
fn decoded_member_sets_match_btreeset_semantics() {
    let _g = serial();
    // Duplicate voters in a hostile meta collapse rather than fail; re-encoding is then
    // canonical.
    let m = Message {
        body: MessageBody::SnapshotChunk {
            meta: SnapshotMeta {
                index: LogIndex(1),
                term: Term(1),
                conf: ConfState {
                    voters: BTreeSet::from([MemberId(5), MemberId(6)]),
                    learners: BTreeSet::new(),
                },
            },
            total: 0,
            offset: 0,
            data: Bytes::new(),
        },
        ..append(vec![])
    };
    let mut v = encode(&m);
    // Second voter ID becomes the first's.
    let first = 26 + 4 + 16 + 4;
    let id5 = v[first..first + 8].to_vec();
    v[first + 8..first + 16].copy_from_slice(&id5);
    let Ok(got) = decode_message(&Bytes::from(v)) else {
        panic!("duplicate voters refused");
    };
    let MessageBody::SnapshotChunk { meta, .. } = &got.body else {
        unreachable!()
    };
    assert_eq!(meta.conf.voters, BTreeSet::from([MemberId(5)]));
}
