//! Exact etcd-visible results and error texts of the keyspace.

use bytes::Bytes;
use keel_core::mvcc::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, KvStore, LeaseId, MvccError,
    PutRequest, RangeRequest, RequestOp, ResponseOp, TxnRequest,
};

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn put(s: &mut KvStore, k: &str, v: &str) {
    s.put(&PutRequest {
        key: b(k),
        value: b(v),
        ..Default::default()
    })
    .expect("put");
}

/// (key, value, create revision, mod revision, version)
type Row = (String, String, i64, i64, i64);

fn get(s: &KvStore, k: &str, rev: i64) -> Result<Vec<Row>, MvccError> {
    let r = s.range(&RangeRequest {
        key: b(k),
        revision: rev,
        ..Default::default()
    })?;
    Ok(r.kvs
        .into_iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(&kv.key).into_owned(),
                String::from_utf8_lossy(&kv.value).into_owned(),
                kv.create_revision,
                kv.mod_revision,
                kv.version,
            )
        })
        .collect())
}

#[test]
fn revisions_versions_and_generations_follow_etcd() {
    let mut s = KvStore::new();
    assert_eq!(s.revision(), 1, "a fresh store is at revision 1");
    put(&mut s, "foo", "a"); // rev 2
    put(&mut s, "foo", "b"); // rev 3
    assert_eq!(
        get(&s, "foo", 0),
        Ok(vec![("foo".into(), "b".into(), 2, 3, 2)])
    );
    assert_eq!(
        get(&s, "foo", 2),
        Ok(vec![("foo".into(), "a".into(), 2, 2, 1)])
    );
    let d = s
        .delete_range(&DeleteRangeRequest {
            key: b("foo"),
            prev_kv: true,
            ..Default::default()
        })
        .expect("delete");
    assert_eq!((d.deleted, d.prev_kvs.len(), s.revision()), (1, 1, 4));
    // Deleting nothing does not create a revision.
    let d = s
        .delete_range(&DeleteRangeRequest {
            key: b("foo"),
            ..Default::default()
        })
        .expect("delete");
    assert_eq!((d.deleted, s.revision()), (0, 4));
    put(&mut s, "foo", "c"); // rev 5: a new generation
    assert_eq!(
        get(&s, "foo", 0),
        Ok(vec![("foo".into(), "c".into(), 5, 5, 1)])
    );
    assert_eq!(get(&s, "foo", 4), Ok(vec![]));
    assert_eq!(get(&s, "foo", 6), Err(MvccError::FutureRevision));
}

#[test]
fn compaction_errors_carry_etcds_messages() {
    let mut s = KvStore::new();
    for i in 0..5 {
        put(&mut s, "k", &i.to_string());
    }
    s.compact(4).expect("compact");
    while !s.run_compaction(1) {}
    assert_eq!(
        get(&s, "k", 3).map_err(|e| e.to_string()),
        Err("mvcc: required revision has been compacted".into())
    );
    assert_eq!(get(&s, "k", 4), Ok(vec![("k".into(), "2".into(), 2, 4, 3)]));
    assert_eq!(s.compact(4), Err(MvccError::Compacted));
    assert_eq!(
        s.compact(99).map_err(|e| e.to_string()),
        Err("mvcc: required revision is a future revision".into())
    );
}

#[test]
fn put_options_and_their_errors() {
    let mut s = KvStore::new();
    let r = s.put(&PutRequest {
        key: b("x"),
        value: b("1"),
        prev_kv: true,
        ..Default::default()
    });
    assert_eq!(r.map(|p| p.prev_kv), Ok(None));
    let r = s
        .put(&PutRequest {
            key: b("x"),
            ignore_value: true,
            prev_kv: true,
            ..Default::default()
        })
        .expect("ignore_value on an existing key");
    assert_eq!(r.prev_kv.map(|kv| kv.value), Some(b("1")));
    assert_eq!(get(&s, "x", 0).expect("get")[0].1, "1", "value kept");
    let err = |r: Result<_, MvccError>| r.map(|_| ()).map_err(|e| e.to_string());
    assert_eq!(
        err(s.put(&PutRequest {
            key: b("missing"),
            ignore_value: true,
            ..Default::default()
        })),
        Err("etcdserver: key not found".into())
    );
    assert_eq!(
        err(s.put(&PutRequest {
            key: b("x"),
            lease: 42,
            ..Default::default()
        })),
        Err("etcdserver: requested lease not found".into())
    );
    s.grant_lease(42);
    err(s.put(&PutRequest {
        key: b("x"),
        lease: 42,
        ..Default::default()
    }))
    .expect("lease granted");
    assert_eq!(s.lease_keys(42), vec![b("x")]);
    assert_eq!(s.revoke_lease(42), Ok(1));
    assert_eq!(
        get(&s, "x", 0),
        Ok(vec![]),
        "revoke deleted the attached key"
    );
    assert_eq!(
        err(s.put(&PutRequest::default())),
        Err("etcdserver: key is not provided".into())
    );
}

fn tput(k: &str) -> RequestOp {
    RequestOp::Put(PutRequest {
        key: b(k),
        value: b("v"),
        ..Default::default()
    })
}

#[test]
fn txn_is_one_revision_and_sees_its_own_writes() {
    let mut s = KvStore::new();
    put(&mut s, "a", "1"); // rev 2
    let t = TxnRequest {
        compare: vec![Compare {
            result: CompareResult::Equal,
            target: CompareTarget::Value(b("1")),
            key: b("a"),
            range_end: Bytes::new(),
        }],
        success: vec![
            tput("b"),
            tput("c"),
            RequestOp::Range(RangeRequest {
                key: b("b"),
                ..Default::default()
            }),
        ],
        failure: vec![],
    };
    let r = s.txn(&t).expect("txn");
    assert!(r.succeeded);
    assert_eq!(s.revision(), 3, "one revision for the whole txn");
    match &r.responses[2] {
        ResponseOp::Range(rr) => {
            assert_eq!(rr.kvs.len(), 1, "the txn's range sees its own put");
            assert_eq!(rr.kvs[0].mod_revision, 3);
        }
        other => panic!("unexpected {other:?}"),
    }
    // A compare on a missing key's value fails; its version compares as 0.
    let t = TxnRequest {
        compare: vec![Compare {
            result: CompareResult::Equal,
            target: CompareTarget::Version(0),
            key: b("nope"),
            range_end: Bytes::new(),
        }],
        success: vec![],
        failure: vec![tput("z")],
    };
    assert!(s.txn(&t).expect("txn").succeeded);
}

#[test]
fn txn_rejects_duplicate_keys_and_too_many_ops_as_etcd() {
    let mut s = KvStore::new();
    let dup = |ops: Vec<RequestOp>| TxnRequest {
        compare: vec![],
        success: ops,
        failure: vec![],
    };
    let err = |s: &mut KvStore, t: TxnRequest| s.txn(&t).map(|_| ()).map_err(|e| e.to_string());
    let msg = Err("etcdserver: duplicate key given in txn request".to_string());
    assert_eq!(err(&mut s, dup(vec![tput("a"), tput("a")])), msg);
    assert_eq!(
        err(
            &mut s,
            dup(vec![
                tput("a"),
                RequestOp::DeleteRange(DeleteRangeRequest {
                    key: b("a"),
                    range_end: b("b"),
                    ..Default::default()
                })
            ])
        ),
        msg
    );
    // The two branches of a nested txn exclude each other: the same key is fine there.
    let nested = RequestOp::Txn(TxnRequest {
        compare: vec![],
        success: vec![tput("n")],
        failure: vec![tput("n")],
    });
    assert_eq!(err(&mut s, dup(vec![nested.clone()])), Ok(()));
    assert_eq!(err(&mut s, dup(vec![nested, tput("n")])), msg);
    s.set_max_txn_ops(2);
    assert_eq!(
        err(&mut s, dup(vec![tput("1"), tput("2"), tput("3")])),
        Err("etcdserver: too many operations in txn request".into())
    );
    assert_eq!(s.revision(), 2, "rejected txns change nothing");
}

#[test]
fn range_limit_count_and_prefix() {
    let mut s = KvStore::new();
    for k in ["a", "b", "c", "d"] {
        put(&mut s, k, k);
    }
    let r = s
        .range(&RangeRequest {
            key: b("a"),
            range_end: b("d"),
            limit: 2,
            ..Default::default()
        })
        .expect("range");
    assert_eq!((r.kvs.len(), r.more, r.count), (2, true, 3));
    let all = s
        .range(&RangeRequest {
            key: b("\0"),
            range_end: b("\0"),
            count_only: true,
            ..Default::default()
        })
        .expect("range");
    assert_eq!((all.kvs.len(), all.count), (0, 4));
    assert_ne!(
        s.hash_kv(0),
        s.hash_kv(3),
        "hash covers history up to a revision"
    );
    let mut t = s.clone();
    t.compact(3).expect("compact");
    let mut u = s.clone();
    u.compact(3).expect("compact");
    while !u.run_compaction(1) {}
    assert_eq!(
        t.hash_kv(0),
        u.hash_kv(0),
        "equal whatever the compaction progress"
    );
}

#[test]
fn quota_raises_nospace_and_compaction_makes_room() {
    use keel_core::mvcc::KvState;
    // Each put takes 1 + 100 + 32 bytes, above what an empty state already counts.
    let empty = KvState::new(u64::MAX, 1).size_bytes();
    assert!(
        empty > 0,
        "an empty state has a size, as etcd's empty backend does"
    );
    let mut st = KvState::new(empty + 300, 1);
    let big = PutRequest {
        key: b("k"),
        value: Bytes::from(vec![b'x'; 100]),
        ..Default::default()
    };
    st.put(&big).expect("fits");
    st.put(&big).expect("fits");
    let err = st.put(&big).map(|_| ()).map_err(|e| e.to_string());
    assert_eq!(err, Err("etcdserver: mvcc: database space exceeded".into()));
    assert!(st.nospace_alarm());
    st.disarm_nospace();
    assert!(st.put(&big).is_err(), "still over quota: raised again");
    assert!(st.nospace_alarm());
    // Deletes and compaction are still allowed and free space.
    st.store
        .delete_range(&DeleteRangeRequest {
            key: b("k"),
            ..Default::default()
        })
        .expect("delete");
    let rev = st.store.revision();
    st.store.compact(rev).expect("compact");
    while !st.store.run_compaction(10) {}
    st.disarm_nospace();
    st.put(&big)
        .expect("writes resume after compaction and disarm");
}

#[test]
fn state_snapshots_round_trip_and_reject_corruption() {
    use keel_core::mvcc::KvState;
    let mut st = KvState::new(u64::MAX, 1);
    st.store.grant_lease(5);
    st.lessor
        .grant(LeaseId(5), 10, keel_core::raft::Time(0))
        .expect("grant");
    st.put(&PutRequest {
        key: b("a"),
        value: b("1"),
        lease: 5,
        ..Default::default()
    })
    .expect("put");
    put(&mut st.store, "b", "2");
    st.applied = 77;
    let snap = st.snapshot();
    let back = KvState::restore(&snap, u64::MAX, 1).expect("restores");
    assert_eq!(back.applied, 77);
    assert_eq!(back.store.hash_kv(0), st.store.hash_kv(0));
    assert_eq!(back.store.lease_keys(5), vec![b("a")]);
    assert_eq!(back.lessor.ids(), vec![LeaseId(5)]);
    for i in 0..snap.len() {
        let mut bad = snap.clone();
        bad[i] ^= 0x10;
        assert!(KvState::restore(&bad, u64::MAX, 1).is_err(), "byte {i}");
        assert!(
            KvState::restore(&snap[..i], u64::MAX, 1).is_err(),
            "cut at {i}"
        );
    }
}

/// Review finding: a txn that fails validation anywhere on its chosen path (a range at a
/// future revision, a nested put on a missing lease) applies nothing at all.
#[test]
fn a_failing_txn_applies_nothing() {
    let mut s = KvStore::new();
    put(&mut s, "a", "1");
    let rev = s.revision();
    let t = TxnRequest {
        compare: vec![],
        success: vec![
            tput("x"),
            RequestOp::Range(RangeRequest {
                key: b("x"),
                revision: rev + 100,
                ..Default::default()
            }),
        ],
        failure: vec![],
    };
    assert_eq!(s.txn(&t).map(|_| ()), Err(MvccError::FutureRevision));
    let nested = TxnRequest {
        compare: vec![],
        success: vec![
            tput("y"),
            RequestOp::Txn(TxnRequest {
                compare: vec![],
                success: vec![RequestOp::Put(PutRequest {
                    key: b("z"),
                    lease: 999,
                    ..Default::default()
                })],
                failure: vec![],
            }),
        ],
        failure: vec![],
    };
    assert_eq!(s.txn(&nested).map(|_| ()), Err(MvccError::LeaseNotFound));
    assert_eq!(s.revision(), rev, "no revision was used");
    assert_eq!(get(&s, "x", 0), Ok(vec![]));
    assert_eq!(get(&s, "y", 0), Ok(vec![]));
    assert!(
        s.take_events().len() == 1,
        "only the first put produced an event"
    );
}

#[test]
fn hash_covers_the_whole_backend_but_the_consistent_index() {
    use keel_core::mvcc::KvState;
    let build = || {
        let mut st = KvState::new(u64::MAX, 1);
        put(&mut st.store, "a", "1");
        put(&mut st.store, "a", "2");
        put(&mut st.store, "b", "3");
        st
    };
    let (mut x, mut y) = (build(), build());
    x.applied = 10;
    y.applied = 99;
    assert_eq!(x.hash(), y.hash(), "the consistent index is not hashed");
    let back = KvState::restore(&x.snapshot(), u64::MAX, 1).expect("restores");
    assert_eq!(back.hash(), x.hash(), "a restored member agrees");

    let before = x.hash();
    x.lessor
        .grant(LeaseId(7), 10, keel_core::raft::Time(0))
        .expect("grant");
    assert_ne!(x.hash(), before, "leases are hashed");
    y.lessor
        .grant(LeaseId(7), 10, keel_core::raft::Time(0))
        .expect("grant");
    assert_eq!(x.hash(), y.hash());

    // Unlike HashKV, Hash sees history that compaction has not freed yet (compaction at
    // 4 frees "a"'s first version: only revisions below 4 go).
    x.store.compact(4).expect("compact");
    y.store.compact(4).expect("compact");
    while !x.store.run_compaction(1) {}
    assert_eq!(x.store.hash_kv(0), y.store.hash_kv(0));
    assert_ne!(x.hash(), y.hash(), "freed history changes the backend hash");
    while !y.store.run_compaction(1) {}
    assert_eq!(x.hash(), y.hash(), "equal once both have freed it");

    put(&mut y.store, "c", "4");
    assert_ne!(x.hash(), y.hash(), "writes are hashed");
}
