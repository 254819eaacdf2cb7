//! The replicated-log encoding of commands: every proposal round-trips (nested txns, all
//! compare targets and range options), decoding is zero-copy, hostile bytes (random,
//! truncated, mutated) never panic and allocate in proportion to their length, and
//! transactions nested beyond the limit are refused with a typed error.

#[path = "common/counting_alloc.rs"]
mod counting_alloc;
#[path = "common/hostile.rs"]
mod hostile;

use bytes::Bytes;
use hostile::{apply, check, serial, Mutation};
use keel_core::auth::{AuthCommand, AuthInfo, PermKind, Permission};
use keel_core::mvcc::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp,
    SortOrder, SortTarget, TxnRequest,
};
use keel_core::node::{decode_command, encode_command, Command, CommandDecodeError, Proposal};
use proptest::prelude::*;

fn i64s() -> impl Strategy<Value = i64> {
    prop_oneof![-3i64..20, Just(i64::MAX), Just(i64::MIN), any::<i64>()]
}

fn bytes() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..12).prop_map(Bytes::from)
}

fn put() -> impl Strategy<Value = PutRequest> {
    (
        bytes(),
        bytes(),
        i64s(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(key, value, lease, prev_kv, ignore_value, ignore_lease)| PutRequest {
                key,
                value,
                lease,
                prev_kv,
                ignore_value,
                ignore_lease,
            },
        )
}

fn delete() -> impl Strategy<Value = DeleteRangeRequest> {
    (bytes(), bytes(), any::<bool>()).prop_map(|(key, range_end, prev_kv)| DeleteRangeRequest {
        key,
        range_end,
        prev_kv,
    })
}

fn range() -> impl Strategy<Value = RangeRequest> {
    let order = prop_oneof![
        Just(SortOrder::None),
        Just(SortOrder::Ascend),
        Just(SortOrder::Descend)
    ];
    let target = prop_oneof![
        Just(SortTarget::Key),
        Just(SortTarget::Version),
        Just(SortTarget::Create),
        Just(SortTarget::Mod),
        Just(SortTarget::Value),
    ];
    (
        (bytes(), bytes(), i64s(), i64s()),
        (order, target, any::<bool>(), any::<bool>()),
        (i64s(), i64s(), i64s(), i64s()),
    )
        .prop_map(
            |(
                (key, range_end, limit, revision),
                (sort_order, sort_target, keys_only, count_only),
                (min_mod_revision, max_mod_revision, min_create_revision, max_create_revision),
            )| RangeRequest {
                key,
                range_end,
                limit,
                revision,
                sort_order,
                sort_target,
                keys_only,
                count_only,
                min_mod_revision,
                max_mod_revision,
                min_create_revision,
                max_create_revision,
            },
        )
}

fn compare() -> impl Strategy<Value = Compare> {
    let result = prop_oneof![
        Just(CompareResult::Equal),
        Just(CompareResult::Greater),
        Just(CompareResult::Less),
        Just(CompareResult::NotEqual),
    ];
    let target = prop_oneof![
        i64s().prop_map(CompareTarget::Version),
        i64s().prop_map(CompareTarget::Create),
        i64s().prop_map(CompareTarget::Mod),
        bytes().prop_map(CompareTarget::Value),
        i64s().prop_map(CompareTarget::Lease),
    ];
    (result, target, bytes(), bytes()).prop_map(|(result, target, key, range_end)| Compare {
        result,
        target,
        key,
        range_end,
    })
}

fn txn_of(op: impl Strategy<Value = RequestOp> + Clone) -> impl Strategy<Value = TxnRequest> {
    (
        prop::collection::vec(compare(), 0..4),
        prop::collection::vec(op.clone(), 0..4),
        prop::collection::vec(op, 0..4),
    )
        .prop_map(|(compare, success, failure)| TxnRequest {
            compare,
            success,
            failure,
        })
}

/// Ops, with transactions nested a few levels deep.
fn op() -> impl Strategy<Value = RequestOp> + Clone {
    let leaf = prop_oneof![
        range().prop_map(RequestOp::Range),
        put().prop_map(RequestOp::Put),
        delete().prop_map(RequestOp::DeleteRange),
    ];
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            1 => inner.clone(),
            2 => txn_of(inner).prop_map(RequestOp::Txn),
        ]
    })
}

fn urls() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec("\\PC{0,16}", 0..4)
}

fn names() -> impl Strategy<Value = String> {
    "\\PC{0,12}"
}

fn auth_command() -> impl Strategy<Value = AuthCommand> {
    let kind = prop_oneof![
        Just(PermKind::Read),
        Just(PermKind::Write),
        Just(PermKind::ReadWrite)
    ];
    prop_oneof![
        Just(AuthCommand::Enable),
        Just(AuthCommand::Disable),
        (names(), names()).prop_map(|(name, token)| AuthCommand::Authenticate { name, token }),
        (names(), names(), any::<bool>()).prop_map(|(name, password_hash, no_password)| {
            AuthCommand::UserAdd {
                name,
                password_hash,
                no_password,
            }
        }),
        names().prop_map(|name| AuthCommand::UserDelete { name }),
        (names(), names()).prop_map(|(name, password_hash)| AuthCommand::UserChangePassword {
            name,
            password_hash
        }),
        (names(), names()).prop_map(|(user, role)| AuthCommand::UserGrantRole { user, role }),
        (names(), names()).prop_map(|(user, role)| AuthCommand::UserRevokeRole { user, role }),
        names().prop_map(|name| AuthCommand::RoleAdd { name }),
        names().prop_map(|name| AuthCommand::RoleDelete { name }),
        (names(), kind, bytes(), bytes()).prop_map(|(name, kind, key, range_end)| {
            AuthCommand::RoleGrantPermission {
                name,
                perm: Permission {
                    kind,
                    key,
                    range_end,
                },
            }
        }),
        (names(), bytes(), bytes()).prop_map(|(name, key, range_end)| {
            AuthCommand::RoleRevokePermission {
                name,
                key,
                range_end,
            }
        }),
    ]
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        1 => put().prop_map(Command::Put),
        1 => delete().prop_map(Command::DeleteRange),
        3 => txn_of(op()).prop_map(Command::Txn),
        1 => (i64s(), any::<bool>())
            .prop_map(|(revision, physical)| Command::Compact { revision, physical }),
        1 => (i64s(), i64s()).prop_map(|(id, ttl)| Command::LeaseGrant { id, ttl }),
        1 => i64s().prop_map(|id| Command::LeaseRevoke { id }),
        1 => prop::collection::vec((i64s(), i64s()), 0..4)
            .prop_map(|checkpoints| Command::LeaseCheckpoint { checkpoints }),
        1 => (any::<i32>(), any::<u64>(), any::<i32>()).prop_map(|(action, member, alarm)| {
            Command::Alarm {
                action,
                member,
                alarm,
            }
        }),
        1 => (any::<u64>(), "\\PC{0,16}", urls()).prop_map(|(id, name, client_urls)| {
            Command::PublishMember {
                id,
                name,
                client_urls,
            }
        }),
        1 => (any::<u64>(), urls()).prop_map(|(id, peer_urls)| Command::UpdateMember { id, peer_urls }),
        1 => (any::<u64>(), urls(), any::<bool>()).prop_map(|(id, peer_urls, learner)| {
            Command::AddMember {
                id,
                peer_urls,
                learner,
            }
        }),
        3 => auth_command().prop_map(Command::Auth),
    ]
}

fn auth_info() -> impl Strategy<Value = Option<AuthInfo>> {
    prop::option::of(
        (names(), any::<u64>()).prop_map(|(user, revision)| AuthInfo { user, revision }),
    )
}

fn proposal() -> impl Strategy<Value = Proposal> {
    (any::<u64>(), any::<u64>(), auth_info(), command()).prop_map(|(origin, seq, auth, cmd)| {
        Proposal {
            origin,
            seq,
            auth,
            cmd,
        }
    })
}

/// The version-2 encoding of a version-1 buffer: the version byte, and an empty auth
/// field after origin and seq. Other buffers are returned as they are.
fn as_version_2(b: &[u8]) -> Vec<u8> {
    match b {
        [1, rest @ ..] if rest.len() >= 16 => {
            let mut v = vec![2u8];
            v.extend_from_slice(&rest[..16]);
            v.push(0);
            v.extend_from_slice(&rest[16..]);
            v
        }
        _ => b.to_vec(),
    }
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let len = prop_oneof![Just(u32::MAX), Just(1 << 28), 0u32..64, any::<u32>()];
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, v)| Mutation::Set(i, v)),
        (any::<usize>(), len).prop_map(|(i, v)| Mutation::Len(i, v)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, v)| Mutation::Insert(i, v)),
        any::<usize>().prop_map(Mutation::Remove),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

/// Decodes hostile `input`: bounded allocation, and whatever is accepted is canonical
/// (re-encodes to exactly the input), so every member reads one meaning from it.
fn check_hostile(input: Vec<u8>) -> Result<(), TestCaseError> {
    let len = input.len();
    let b = Bytes::from(input);
    let (out, peak) = counting_alloc::peak_during(|| decode_command(&b));
    prop_assert!(
        peak <= 16 * len + 1024,
        "decoding {} bytes allocated {} bytes",
        len,
        peak
    );
    if let Ok(p) = out {
        // Version 1 is read as the version-2 proposal without auth.
        prop_assert_eq!(encode_command(&p), as_version_2(&b));
    }
    Ok(())
}

#[test]
fn every_proposal_round_trips() {
    check(file!(), 4000, proposal(), |p| {
        let b = Bytes::from(encode_command(&p));
        prop_assert_eq!(decode_command(&b), Ok(p.clone()));
        prop_assert!(p.cmd.txn_depth() <= 5);
        // Every strict prefix is refused: all variable parts carry their length.
        for cut in 0..b.len() {
            prop_assert!(
                decode_command(&b.slice(..cut)).is_err(),
                "prefix {} decoded",
                cut
            );
        }
        Ok(())
    });
}

#[test]
fn mutated_proposals_never_panic_and_stay_bounded() {
    let cases = (proposal(), prop::collection::vec(mutation(), 1..5));
    check(file!(), 6000, cases, |(p, muts)| {
        check_hostile(apply(encode_command(&p), &muts))
    });
}

#[test]
fn random_bytes_never_panic_and_stay_bounded() {
    let cases = (
        0u8..24,
        prop::collection::vec(any::<u8>(), 0..300),
        any::<bool>(),
        any::<bool>(),
    );
    check(file!(), 6000, cases, |(kind, rest, raw, v1)| {
        // Mostly a valid version, origin and seq (and for version 2 an empty auth
        // field), and a plausible kind, so the body parsers are what gets exercised.
        let input = if raw {
            rest
        } else {
            let mut v = vec![if v1 { 1u8 } else { 2 }];
            v.extend_from_slice(&[0; 16]);
            if !v1 {
                v.push(0);
            }
            v.push(kind);
            v.extend_from_slice(&rest);
            v
        };
        check_hostile(input)
    });
}

/// A txn nested `depth` levels deep (1 = flat), the innermost holding a put.
fn nested(depth: usize) -> TxnRequest {
    let mut t = TxnRequest {
        success: vec![RequestOp::Put(PutRequest {
            key: Bytes::from_static(b"k"),
            ..PutRequest::default()
        })],
        ..TxnRequest::default()
    };
    for _ in 1..depth {
        t = TxnRequest {
            failure: vec![RequestOp::Txn(t)],
            ..TxnRequest::default()
        };
    }
    t
}

fn txn_proposal(t: TxnRequest) -> Proposal {
    Proposal {
        origin: 1,
        seq: 2,
        auth: None,
        cmd: Command::Txn(t),
    }
}

#[test]
fn nesting_up_to_the_limit_decodes_and_beyond_is_refused() {
    let _g = serial();
    let max = Command::MAX_TXN_DEPTH;
    let at_limit = txn_proposal(nested(max));
    assert_eq!(at_limit.cmd.txn_depth(), max);
    let b = Bytes::from(encode_command(&at_limit));
    assert_eq!(decode_command(&b), Ok(at_limit));

    let beyond = txn_proposal(nested(max + 1));
    assert_eq!(beyond.cmd.txn_depth(), max + 1);
    let b = Bytes::from(encode_command(&beyond));
    assert_eq!(decode_command(&b), Err(CommandDecodeError::TooDeep));

    // Depth is measured without walking past the limit.
    assert_eq!(txn_proposal(nested(300)).cmd.txn_depth(), max + 1);
    assert_eq!(Command::LeaseRevoke { id: 1 }.txn_depth(), 0, "not a txn");
}

#[test]
fn a_hand_built_deep_nesting_is_refused_without_exhausting_the_stack() {
    let _g = serial();
    // Version, origin, seq, Txn; then per level: no compares, one success op that is a
    // txn. A hundred thousand levels would overflow the stack of a decoder that followed.
    let mut v = vec![1u8];
    v.extend_from_slice(&[0; 16]);
    v.push(3);
    for _ in 0..100_000 {
        v.extend_from_slice(&0u32.to_le_bytes());
        v.extend_from_slice(&1u32.to_le_bytes());
        v.push(3);
    }
    let b = Bytes::from(v);
    let (out, peak) = counting_alloc::peak_during(|| decode_command(&b));
    assert_eq!(out, Err(CommandDecodeError::TooDeep));
    assert!(peak <= 16 * b.len(), "allocated {peak} bytes");
}

#[test]
fn nested_counts_cannot_each_claim_the_whole_input() {
    let _g = serial();
    // Every level declares as many ops as the rest of the input could hold, so a decoder
    // checking each count against the remaining bytes alone would reserve about the input's
    // worth of ops once per level.
    let levels = 60;
    let body = 400_000;
    let mut v = vec![1u8];
    v.extend_from_slice(&[0; 16]);
    v.push(3);
    for level in 0..levels {
        v.extend_from_slice(&0u32.to_le_bytes());
        // Bytes after this count: this level's op tag, the deeper levels, the body; an op
        // takes at least 10.
        let rest = (1 + (levels - 1 - level) * 9 + body) / 10;
        v.extend_from_slice(&u32::try_from(rest).unwrap_or(u32::MAX).to_le_bytes());
        v.push(3);
    }
    v.resize(v.len() + body, 0);
    let b = Bytes::from(v);
    let (out, peak) = counting_alloc::peak_during(|| decode_command(&b));
    assert!(out.is_err());
    assert!(
        peak <= 16 * b.len(),
        "{} input bytes allocated {peak} bytes",
        b.len()
    );
}

#[test]
fn decoding_is_zero_copy() {
    let _g = serial();
    let value = Bytes::from(vec![9u8; 32 << 10]);
    let p = Proposal {
        origin: 7,
        seq: 8,
        auth: None,
        cmd: Command::Put(PutRequest {
            key: Bytes::from_static(b"key"),
            value: value.clone(),
            ..PutRequest::default()
        }),
    };
    let b = Bytes::from(encode_command(&p));
    let (out, peak) = counting_alloc::peak_during(|| decode_command(&b));
    assert!(peak < 1024, "a 32 KiB value allocated {peak} bytes");
    let Ok(Proposal {
        cmd: Command::Put(r),
        ..
    }) = out
    else {
        panic!("put did not decode");
    };
    assert_eq!(r.value, value);
    let range = b.as_ptr_range();
    assert!(range.contains(&r.value.as_ptr()) && range.contains(&r.key.as_ptr()));
}

#[test]
fn the_layout_starts_with_version_origin_seq_and_kind() {
    let _g = serial();
    let p = Proposal {
        origin: 0x0102,
        seq: 3,
        auth: None,
        cmd: Command::LeaseRevoke { id: -1 },
    };
    let mut want = vec![2u8];
    want.extend_from_slice(&0x0102u64.to_le_bytes());
    want.extend_from_slice(&3u64.to_le_bytes());
    want.push(0);
    want.push(6);
    want.extend_from_slice(&(-1i64).to_le_bytes());
    assert_eq!(encode_command(&p), want);

    // With who asked: flag, user, auth revision.
    let p = Proposal {
        auth: Some(AuthInfo {
            user: "ab".into(),
            revision: 9,
        }),
        ..p
    };
    let mut want = vec![2u8];
    want.extend_from_slice(&0x0102u64.to_le_bytes());
    want.extend_from_slice(&3u64.to_le_bytes());
    want.push(1);
    want.extend_from_slice(&2u32.to_le_bytes());
    want.extend_from_slice(b"ab");
    want.extend_from_slice(&9u64.to_le_bytes());
    want.push(6);
    want.extend_from_slice(&(-1i64).to_le_bytes());
    assert_eq!(encode_command(&p), want);

    // Lease checkpoints: count, then (ID, remaining TTL) pairs.
    let p = Proposal {
        auth: None,
        cmd: Command::LeaseCheckpoint {
            checkpoints: vec![(7, 12), (8, 0)],
        },
        ..p
    };
    let mut want = vec![2u8];
    want.extend_from_slice(&0x0102u64.to_le_bytes());
    want.extend_from_slice(&3u64.to_le_bytes());
    want.push(0);
    want.push(23);
    want.extend_from_slice(&2u32.to_le_bytes());
    for v in [7i64, 12, 8, 0] {
        want.extend_from_slice(&v.to_le_bytes());
    }
    assert_eq!(encode_command(&p), want);
    let mut short = want.clone();
    short.truncate(want.len() - 1);
    assert!(decode_command(&Bytes::from(short)).is_err(), "a cut pair");
    let mut many = want[..want.len() - 32].to_vec();
    many[19..23].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(
        decode_command(&Bytes::from(many)).is_err(),
        "a count beyond the buffer"
    );

    // A role permission: kind, then key and range end.
    let p = Proposal {
        auth: None,
        cmd: Command::Auth(AuthCommand::RoleGrantPermission {
            name: "r".into(),
            perm: Permission {
                kind: PermKind::ReadWrite,
                key: Bytes::from_static(b"k"),
                range_end: Bytes::from_static(b"\0"),
            },
        }),
        ..p
    };
    let mut want = vec![2u8];
    want.extend_from_slice(&0x0102u64.to_le_bytes());
    want.extend_from_slice(&3u64.to_le_bytes());
    want.push(0);
    want.push(21);
    want.extend_from_slice(&1u32.to_le_bytes());
    want.extend_from_slice(b"r");
    want.push(2);
    want.extend_from_slice(&1u32.to_le_bytes());
    want.extend_from_slice(b"k");
    want.extend_from_slice(&1u32.to_le_bytes());
    want.push(0);
    assert_eq!(encode_command(&p), want);
}

#[test]
fn version_1_proposals_still_decode_without_auth() {
    let _g = serial();
    let mut v = vec![1u8];
    v.extend_from_slice(&5u64.to_le_bytes());
    v.extend_from_slice(&6u64.to_le_bytes());
    v.push(6);
    v.extend_from_slice(&7i64.to_le_bytes());
    assert_eq!(
        decode_command(&Bytes::from(v)),
        Ok(Proposal {
            origin: 5,
            seq: 6,
            auth: None,
            cmd: Command::LeaseRevoke { id: 7 },
        })
    );
    // Auth kinds exist in version 1 buffers too (the kind table is shared).
    let mut v = vec![1u8];
    v.extend_from_slice(&[0; 16]);
    v.push(11);
    assert_eq!(
        decode_command(&Bytes::from(v)).map(|p| p.cmd),
        Ok(Command::Auth(AuthCommand::Enable))
    );
}

#[test]
fn typed_errors() {
    let _g = serial();
    let dec = |v: Vec<u8>| decode_command(&Bytes::from(v));
    let put = encode_command(&Proposal {
        origin: 1,
        seq: 1,
        auth: None,
        cmd: Command::Put(PutRequest::default()),
    });

    assert_eq!(dec(vec![]), Err(CommandDecodeError::Truncated));
    let mut v = put.clone();
    v[0] = 3;
    assert_eq!(dec(v), Err(CommandDecodeError::Version(3)));
    let mut v = put.clone();
    v[17] = 2;
    assert_eq!(
        dec(v),
        Err(CommandDecodeError::Invalid {
            what: "auth flag",
            value: 2
        })
    );
    let mut v = put.clone();
    v[18] = 200;
    assert_eq!(dec(v), Err(CommandDecodeError::UnknownCommand(200)));
    let mut v = put.clone();
    v.push(0);
    assert_eq!(dec(v), Err(CommandDecodeError::TrailingBytes(1)));
    // Put flags: only three bits are defined.
    let mut v = put.clone();
    let last = v.len() - 1;
    v[last] = 8;
    assert_eq!(
        dec(v),
        Err(CommandDecodeError::Invalid {
            what: "put flags",
            value: 8
        })
    );

    let publish = encode_command(&Proposal {
        origin: 1,
        seq: 1,
        auth: None,
        cmd: Command::PublishMember {
            id: 5,
            name: "a".into(),
            client_urls: vec![],
        },
    });
    // Name bytes sit after the kind, the ID and the name's length.
    let mut v = publish.clone();
    v[19 + 8 + 4] = 0xFF;
    assert_eq!(dec(v), Err(CommandDecodeError::NotUtf8));
    // A URL count far beyond the bytes present is refused before reserving.
    let mut v = publish.clone();
    let n = v.len() - 4;
    v[n..].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(dec(v), Err(CommandDecodeError::Count(u32::MAX)));

    // Permission kinds are 0..=2.
    let grant = encode_command(&Proposal {
        origin: 1,
        seq: 1,
        auth: None,
        cmd: Command::Auth(AuthCommand::RoleGrantPermission {
            name: String::new(),
            perm: Permission {
                kind: PermKind::Read,
                key: Bytes::new(),
                range_end: Bytes::new(),
            },
        }),
    });
    let mut v = grant.clone();
    v[19 + 4] = 3;
    assert_eq!(
        dec(v),
        Err(CommandDecodeError::Invalid {
            what: "permission kind",
            value: 3
        })
    );
}
