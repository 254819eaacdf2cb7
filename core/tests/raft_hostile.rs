//! A hostile peer: arbitrary messages (forged senders, absurd indices and terms, malformed
//! entries, bogus snapshot chunks) injected into a live cluster must never panic a
//! member, and a member's own positions stay consistent. Raft does not tolerate Byzantine
//! peers, so safety across members is not asserted here — only that bad input is refused
//! or absorbed without crashing.

use bytes::Bytes;
use keel_core::raft::testkit::{Cluster, ClusterOptions};
use keel_core::raft::{
    ConfState, Entry, EntryPayload, LogIndex, MemberId, Message, MessageBody, ReadCtx, RejectHint,
    SnapshotMeta, Term,
};
use proptest::prelude::*;

fn index() -> impl Strategy<Value = LogIndex> {
    prop_oneof![
        (0u64..20).prop_map(LogIndex),
        Just(LogIndex(u64::MAX)),
        Just(LogIndex(u64::MAX - 1)),
        any::<u64>().prop_map(LogIndex),
    ]
}

fn term() -> impl Strategy<Value = Term> {
    prop_oneof![
        (0u64..6).prop_map(Term),
        Just(Term(u64::MAX)),
        any::<u64>().prop_map(Term),
    ]
}

fn member() -> impl Strategy<Value = MemberId> {
    prop_oneof![
        (0u64..6).prop_map(MemberId),
        any::<u64>().prop_map(MemberId)
    ]
}

fn entries() -> impl Strategy<Value = Vec<Entry>> {
    prop::collection::vec(
        (
            term(),
            index(),
            prop::option::of(prop::collection::vec(any::<u8>(), 0..8)),
        )
            .prop_map(|(term, index, data)| Entry {
                term,
                index,
                payload: data.map_or(EntryPayload::Empty, |d| {
                    EntryPayload::Normal(Bytes::from(d))
                }),
            }),
        0..5,
    )
}

fn body() -> impl Strategy<Value = MessageBody> {
    prop_oneof![
        (index(), term(), entries(), index()).prop_map(
            |(prev_index, prev_term, entries, commit)| {
                MessageBody::Append {
                    prev_index,
                    prev_term,
                    entries,
                    commit,
                }
            }
        ),
        (index(), prop::option::of((index(), term()))).prop_map(|(index, r)| {
            MessageBody::AppendResponse {
                index,
                reject: r.map(|(index, term)| RejectHint { index, term }),
            }
        }),
        (index(), any::<u64>())
            .prop_map(|(commit, round)| MessageBody::Heartbeat { commit, round }),
        any::<u64>().prop_map(|round| MessageBody::HeartbeatResponse { round }),
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
        (
            index(),
            term(),
            any::<u64>(),
            any::<u64>(),
            prop::collection::vec(any::<u8>(), 0..40)
        )
            .prop_map(
                |(index, term, total, offset, data)| MessageBody::SnapshotChunk {
                    meta: SnapshotMeta {
                        index,
                        term,
                        conf: ConfState::with_voters([MemberId(1), MemberId(2)]),
                    },
                    total: total % 64,
                    offset: offset % 64,
                    data: Bytes::from(data),
                }
            ),
        (index(), any::<u64>(), any::<bool>()).prop_map(|(index, received, resend)| {
            MessageBody::SnapshotAck {
                index,
                received,
                resend,
            }
        }),
        Just(MessageBody::TimeoutNow),
        prop::collection::vec(any::<u8>(), 0..16).prop_map(|d| MessageBody::Propose {
            payloads: vec![EntryPayload::Normal(Bytes::from(d))],
        }),
        any::<u64>().prop_map(|c| MessageBody::ReadIndex { ctx: ReadCtx(c) }),
        (any::<u64>(), index()).prop_map(|(c, index)| MessageBody::ReadIndexResponse {
            ctx: ReadCtx(c),
            index
        }),
        member().prop_map(|target| MessageBody::TransferLeader { target }),
    ]
}

fn message() -> impl Strategy<Value = Message> {
    (member(), 1u64..4, term(), body()).prop_map(|(from, to, term, body)| Message {
        from,
        to: MemberId(to),
        term,
        body,
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, .. ProptestConfig::default() })]

    #[test]
    fn hostile_peers_never_panic(msgs in prop::collection::vec((message(), 0u8..40), 1..60)) {
        let opts = ClusterOptions { check: false, ..ClusterOptions::default() };
        let mut c = Cluster::with(3, 0, opts, |_| {});
        let l = c.elect_any();
        for _ in 0..5 {
            let _ = c.propose(l);
        }
        c.advance(20);
        for (m, ms) in msgs {
            c.net.push(m);
            // A forged message must not start an endless exchange (e.g. two members
            // forwarding a request to each other forever).
            let delivered = c.stabilize_at_most(1_000);
            prop_assert!(delivered < 1_000, "message storm: {delivered} deliveries");
            if let Some(l) = c.leader() {
                let _ = c.propose(l);
            }
            // Time passing must not start one either (checked per step, as `advance`
            // would deliver up to a million messages per millisecond).
            for _ in 0..ms {
                c.tick(1);
                let delivered = c.stabilize_at_most(1_000);
                prop_assert!(delivered < 1_000, "message storm: {delivered} deliveries");
            }
        }
        for id in c.live() {
            let n = c.node(id);
            prop_assert!(n.applied() <= n.committed());
            prop_assert!(n.committed() <= n.last_index());
            prop_assert!(n.snapshot_index() <= n.applied());
        }
    }
}

/// Found by `hostile_peers_never_panic` (1 run in about 50): forged heartbeats of a
/// later term made member 2 commit an entry the next leader does not have; the leader's
/// probe of it was refused, re-sent at once unchanged, refused again, forever.
#[test]
fn a_refused_probe_that_cannot_back_off_is_not_resent_at_once() {
    let opts = ClusterOptions {
        check: false,
        ..ClusterOptions::default()
    };
    let mut c = Cluster::with(3, 0, opts, |_| {});
    let l = c.elect_any();
    for _ in 0..5 {
        let _ = c.propose(l);
    }
    c.advance(20);
    let msg = |from, to, body| Message {
        from: MemberId(from),
        to: MemberId(to),
        term: Term(3),
        body,
    };
    let heartbeat = |commit| MessageBody::Heartbeat {
        commit: LogIndex(commit),
        round: 0,
    };
    let forged = [
        (msg(1, 3, heartbeat(0)), 0),
        (msg(3, 2, heartbeat(10)), 0),
        (msg(2, 1, MessageBody::TimeoutNow), 1),
    ];
    for (m, ms) in forged {
        c.net.push(m);
        assert!(c.stabilize_at_most(1_000) < 1_000);
        if let Some(l) = c.leader() {
            let _ = c.propose(l);
        }
        for _ in 0..ms {
            c.tick(1);
            let delivered = c.stabilize_at_most(1_000);
            assert!(delivered < 1_000, "message storm: {delivered} deliveries");
        }
    }
    // Time goes on: retries are paced by heartbeats, never a storm.
    for _ in 0..500 {
        c.tick(1);
        assert!(c.stabilize_at_most(1_000) < 1_000);
    }
}
