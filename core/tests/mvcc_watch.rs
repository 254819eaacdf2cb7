//! Watch property test: for random writes, watchers created at random times from random
//! start revisions, slow consumers and compactions, each watcher's concatenated events
//! equal the store's history filtered to its range, filters and start revision — in
//! order, with no gap and no duplicate, and with correct previous key-values. A watcher
//! whose next revision was compacted is canceled with the compact revision. Watchers
//! may start in the future, and a snapshot restore may send every watcher back to
//! history at any point. Progress notifications (periodic, per watcher, and a stream's
//! RequestProgress) asked for at any point, with some streams not reading, never reach
//! a watcher before an event they cover.

use std::collections::BTreeMap;

use bytes::Bytes;
use keel_core::mvcc::{
    DeleteRangeRequest, Event, EventKind, KvStore, ProgressFor, PutRequest, WatchHub, WatchRequest,
    WatchResponse, STREAM_PROGRESS_ID,
};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Put(u8, u8),
    Delete(u8, u8),
    Watch {
        key: u8,
        end: u8,
        start: u8,
        no_put: bool,
        no_delete: bool,
        prev_kv: bool,
    },
    Take,
    CatchUp,
    /// The store was replaced by a snapshot (here: of itself, as when the image holds
    /// nothing new): every watcher catches up from history.
    Restore,
    Compact(u8),
    /// Drains the watchers whose bit (by ID) is set in the mask, then asks for progress
    /// notifications: a stream's RequestProgress over every watcher, or each watcher's.
    Progress {
        stream: bool,
        ready: u8,
    },
}

fn key(k: u8) -> Bytes {
    Bytes::from(format!("w{}", k % 6))
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (any::<u8>(), any::<u8>()).prop_map(|(k, v)| Op::Put(k, v)),
        2 => (any::<u8>(), any::<u8>()).prop_map(|(k, e)| Op::Delete(k, e)),
        2 => (any::<u8>(), any::<u8>(), any::<u8>(), prop::bool::weighted(0.2), prop::bool::weighted(0.2), any::<bool>())
            .prop_map(|(key, end, start, no_put, no_delete, prev_kv)| Op::Watch { key, end, start, no_put, no_delete, prev_kv }),
        3 => Just(Op::Take),
        3 => Just(Op::CatchUp),
        1 => Just(Op::Restore),
        1 => any::<u8>().prop_map(Op::Compact),
        3 => (any::<bool>(), any::<u8>()).prop_map(|(stream, ready)| Op::Progress { stream, ready }),
    ]
}

struct Expect {
    req: WatchRequest,
    start: i64,
}

fn range_end(k: u8, e: u8) -> Bytes {
    match e % 3 {
        0 => Bytes::new(),
        1 => Bytes::from_static(b"\0"),
        _ => key(k.wrapping_add(1 + e % 3)),
    }
}

fn matches(req: &WatchRequest, e: &Event) -> bool {
    let k = &e.kv.key;
    let in_range = if req.range_end.is_empty() {
        *k == req.key
    } else if req.range_end.as_ref() == [0] {
        *k >= req.key
    } else {
        *k >= req.key && *k < req.range_end
    };
    in_range
        && !(req.no_put && e.kind == EventKind::Put)
        && !(req.no_delete && e.kind == EventKind::Delete)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    #[test]
    fn watchers_see_exactly_the_history(ops in prop::collection::vec(op(), 1..150)) {
        let mut store = KvStore::new();
        let mut hub = WatchHub::new(3, 16);
        let mut log: Vec<Event> = Vec::new();
        let mut expect: BTreeMap<i64, Expect> = BTreeMap::new();
        let mut got: BTreeMap<i64, Vec<Event>> = BTreeMap::new();
        let mut canceled: BTreeMap<i64, i64> = BTreeMap::new();
        // The highest progress revision each watcher was told of.
        let mut told: BTreeMap<i64, i64> = BTreeMap::new();
        let mut overtaken: Option<String> = None;
        let mut receive = |out: Vec<WatchResponse>, stream: &[i64], got: &mut BTreeMap<i64, Vec<Event>>, canceled: &mut BTreeMap<i64, i64>| {
            for r in out {
                if r.watch_id == STREAM_PROGRESS_ID {
                    for id in stream {
                        told.insert(*id, r.header_revision);
                    }
                    continue;
                }
                if r.canceled {
                    canceled.insert(r.watch_id, r.compact_revision);
                } else if r.events.is_empty() {
                    told.insert(r.watch_id, r.header_revision);
                }
                let t = told.get(&r.watch_id).copied().unwrap_or(0);
                if let Some(e) = r.events.iter().find(|e| e.rev.main <= t) {
                    overtaken.get_or_insert(format!("watcher {}: event at {} after progress at {t}", r.watch_id, e.rev.main));
                }
                got.entry(r.watch_id).or_default().extend(r.events);
            }
        };
        let mut drain = |hub: &mut WatchHub, store: &KvStore, expect: &BTreeMap<i64, Expect>, got: &mut BTreeMap<i64, Vec<Event>>, canceled: &mut BTreeMap<i64, i64>, of: Option<(bool, u8)>| {
            let rev = store.revision();
            let Some((stream, mask)) = of else {
                return receive(hub.take_responses(rev), &[], got, canceled);
            };
            let ids: Vec<i64> = expect.keys().copied().filter(|id| !canceled.contains_key(id)).collect();
            let of = if stream { ProgressFor::Stream(&ids) } else { ProgressFor::Each(&ids) };
            let out = hub.take_responses_with_progress(rev, |id| mask & (1 << (id % 8)) != 0, of);
            receive(out, &ids, got, canceled)
        };
        for op in &ops {
            match op {
                Op::Put(k, v) => {
                    store.put(&PutRequest { key: key(*k), value: Bytes::from(vec![*v; 2]), ..Default::default() }).expect("put");
                }
                Op::Delete(k, e) => {
                    store.delete_range(&DeleteRangeRequest { key: key(*k), range_end: range_end(*k, *e), prev_kv: false }).expect("delete");
                }
                Op::Watch { key: k, end, start, no_put, no_delete, prev_kv } => {
                    // Up to a few revisions in the future, as a watch resumed on a
                    // member that lags behind the one it was on.
                    let start_revision = i64::from(*start) % (store.revision() + 5);
                    let req = WatchRequest {
                        key: key(*k),
                        range_end: range_end(*k, *end),
                        start_revision,
                        no_put: *no_put,
                        no_delete: *no_delete,
                        prev_kv: *prev_kv,
                        fragment: true,
                    };
                    let start = if start_revision <= 0 { store.revision() + 1 } else { start_revision };
                    let id = hub.create(req.clone(), &store);
                    expect.insert(id, Expect { req, start });
                }
                Op::Take => drain(&mut hub, &store, &expect, &mut got, &mut canceled, None),
                Op::Progress { stream, ready } => {
                    drain(&mut hub, &store, &expect, &mut got, &mut canceled, Some((*stream, *ready)));
                }
                Op::CatchUp => hub.catch_up(&store),
                Op::Restore => hub.on_restore(),
                Op::Compact(r) => {
                    let rev = i64::from(*r) % (store.revision() + 1);
                    if store.compact(rev).is_ok() {
                        store.run_compaction(usize::MAX);
                    }
                }
            }
            let events = store.take_events();
            hub.on_events(&events);
            log.extend(events);
            prop_assert!(hub.queued() <= 3 * 64, "queues stay bounded");
        }
        // Let every watcher catch up fully.
        for _ in 0..200 {
            hub.catch_up(&store);
            drain(&mut hub, &store, &expect, &mut got, &mut canceled, None);
        }
        // Everything delivered: a stream's progress request is answered, at the store's
        // revision.
        let ids: Vec<i64> = expect.keys().copied().filter(|id| !canceled.contains_key(id)).collect();
        let last = hub.take_responses_with_progress(store.revision(), |_| true, ProgressFor::Stream(&ids));
        prop_assert_eq!(last.len(), 1);
        prop_assert_eq!((last[0].watch_id, last[0].header_revision), (STREAM_PROGRESS_ID, store.revision()));
        prop_assert_eq!(overtaken, None);
        for (id, e) in &expect {
            let want: Vec<Event> = log
                .iter()
                .filter(|ev| ev.rev.main >= e.start && matches(&e.req, ev))
                .cloned()
                .map(|mut ev| {
                    if !e.req.prev_kv {
                        ev.prev_kv = None;
                    }
                    ev
                })
                .collect();
            let seen = got.get(id).cloned().unwrap_or_default();
            // A previous key-value is read at the event's revision minus one when the
            // event is sent, as etcd does: one whose revision was compacted by then is
            // left out. Only an event below the last compaction may lack it.
            let compacted = store.compacted_revision();
            let want: Vec<Event> = want
                .into_iter()
                .zip(seen.iter().map(Some).chain(std::iter::repeat(None)))
                .map(|(mut w, s)| {
                    if s.is_some_and(|s| s.prev_kv.is_none()) && w.rev.main - 1 < compacted {
                        w.prev_kv = None;
                    }
                    w
                })
                .collect();
            if let Some(compact) = canceled.get(id) {
                prop_assert!(*compact > e.start, "canceled only when its start was compacted away (below the compact revision)");
                prop_assert_eq!(&seen[..], &want[..seen.len().min(want.len())], "a prefix before cancel");
            } else {
                prop_assert_eq!(seen, want, "watcher {}", id);
            }
        }
    }
}

#[test]
fn a_snapshot_install_does_not_skip_the_revisions_it_brings() {
    // A follower's store is replaced by the leader's image: writes it never applied one
    // by one produced no events, so synced watchers must catch up from history.
    let put = |s: &mut KvStore, k: &str| {
        let r = PutRequest {
            key: Bytes::from(k.to_string()),
            value: Bytes::from_static(b"v"),
            ..PutRequest::default()
        };
        s.put(&r).map(|_| ()).ok();
        s.take_events();
    };
    let mut follower = keel_core::mvcc::KvState::new(u64::MAX, 1);
    let mut leader = keel_core::mvcc::KvState::new(u64::MAX, 1);
    put(&mut follower.store, "w1");
    put(&mut leader.store, "w1");
    let mut hub = WatchHub::new(64, 1 << 20);
    hub.create(
        WatchRequest {
            key: Bytes::from_static(b"w"),
            range_end: Bytes::from_static(b"x"),
            ..WatchRequest::default()
        },
        &follower.store,
    );
    put(&mut leader.store, "w2");
    put(&mut leader.store, "w3");
    follower = keel_core::mvcc::KvState::restore(&leader.snapshot(), u64::MAX, 1).expect("image");
    hub.on_restore();
    hub.catch_up(&follower.store);
    let keys: Vec<Bytes> = hub
        .take_responses(follower.store.revision())
        .into_iter()
        .flat_map(|r| r.events)
        .map(|e| e.kv.key)
        .collect();
    assert_eq!(
        keys,
        vec![Bytes::from_static(b"w2"), Bytes::from_static(b"w3")]
    );
}

#[test]
fn a_previous_value_below_the_compaction_is_not_sent_even_before_its_removal() {
    // etcd reads an event's prev_kv at revision - 1: compacted there, it has none. Keel
    // removes compacted versions in batches; until then the version is still in the
    // index, and must not leak into a watch from history (found by the JSON gateway's
    // side-by-side check against etcd 3.4.23).
    let mut store = KvStore::new();
    let put = |s: &mut KvStore, v: &'static str| {
        s.put(&PutRequest {
            key: Bytes::from_static(b"foo"),
            value: Bytes::from_static(v.as_bytes()),
            ..Default::default()
        })
        .expect("put");
    };
    put(&mut store, "bar"); // rev 2
    put(&mut store, "baz"); // rev 3
    put(&mut store, "qux"); // rev 4
    store.compact(3).expect("compact");
    let h = store.history(&Bytes::from_static(b"foo"), &Bytes::new(), 3, 4);
    let prev: Vec<Option<i64>> = h
        .iter()
        .map(|e| e.prev_kv.as_ref().map(|p| p.mod_revision))
        .collect();
    assert_eq!(
        prev,
        vec![None, Some(3)],
        "rev 3's previous (rev 2) is compacted; rev 4's (rev 3) is not"
    );
}
