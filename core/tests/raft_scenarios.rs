//! Scenario tests: scripted runs of 1, 3 and 5 members on the in-memory network.
//! Each reads as a script: set up, act, then assert what an operator would observe.

use bytes::Bytes;
use keel_core::raft::testkit::{id, Cluster, ClusterOptions};
use keel_core::raft::{
    ConfChange, ConfChangeError, LogIndex, MessageBody, ProposeError, Proposed, ReadError,
    ReadMode, Role, TransferError,
};

fn cluster(n: u64) -> Cluster {
    Cluster::new(n)
}

fn propose_n(c: &mut Cluster, at: keel_core::raft::MemberId, n: usize) {
    for _ in 0..n {
        c.propose(at).expect("leader accepts proposals");
    }
}

#[test]
fn first_election_in_1_3_and_5_member_clusters() {
    for n in [1, 3, 5] {
        let mut c = cluster(n);
        let l = c.elect_any();
        assert_eq!(c.node(l).role(), Role::Leader);
        let term = c.node(l).term();
        for m in c.live() {
            assert_eq!(
                c.node(m).leader(),
                l,
                "{n} members: {m:?} follows the leader"
            );
            assert_eq!(c.node(m).term(), term);
        }
        // The founders' configuration entries (1..=n) and the leader's no-op commit
        // everywhere.
        assert!(c.converge(1_000));
        assert_eq!(c.sm(l).applied, LogIndex(n + 1));
        c.check_converged();
    }
}

#[test]
fn campaign_on_demand_wins_with_prevote() {
    let mut c = cluster(3);
    c.campaign(id(2));
    c.stabilize();
    assert_eq!(c.leader(), Some(id(2)));
    // Founders start in term 1; one election (its pre-vote burns no term) makes it 2.
    assert_eq!(c.node(id(2)).term().0, 2, "pre-vote does not burn a term");
}

#[test]
fn proposals_commit_on_every_member_in_order() {
    let mut c = cluster(5);
    let l = c.elect_any();
    propose_n(&mut c, l, 50);
    assert!(c.converge(1_000));
    c.check_converged();
    let expected: Vec<Bytes> = (1..=50).map(|i| Bytes::from(format!("p{i}"))).collect();
    for m in c.live() {
        assert_eq!(c.sm(m).payloads, expected, "member {m:?} applied in order");
    }
}

#[test]
fn followers_forward_proposals_to_the_leader() {
    let mut c = cluster(3);
    let l = c.elect_any();
    let f = c.live().into_iter().find(|m| *m != l).expect("a follower");
    assert_eq!(c.propose(f), Ok(Proposed::Forwarded));
    assert!(c.converge(1_000));
    assert_eq!(c.sm(l).payloads, vec![Bytes::from("p1")]);
}

#[test]
fn proposal_errors_are_typed() {
    let mut c = Cluster::with(3, 0, ClusterOptions::default(), |cfg| {
        cfg.forward_proposals = false;
        cfg.max_proposal_bytes = 8;
    });
    // Before any election nobody leads.
    assert_eq!(c.propose(id(1)), Err(ProposeError::NoLeader));
    assert_eq!(c.read(id(1)), Err(ReadError::NoLeader));
    let l = c.elect_any();
    let f = c.live().into_iter().find(|m| *m != l).expect("a follower");
    assert_eq!(
        c.propose(f),
        Err(ProposeError::NotLeader { leader: Some(l) })
    );
    assert_eq!(
        c.propose_data(l, Bytes::from_static(b"123456789")),
        Err(ProposeError::TooLarge { size: 9, limit: 8 })
    );
}

#[test]
fn isolated_leader_is_replaced_and_steps_down_by_check_quorum() {
    let mut c = cluster(3);
    let old = c.elect_any();
    propose_n(&mut c, old, 3);
    assert!(c.converge(1_000));
    c.isolate(old);
    // The majority elects a new leader after an election timeout.
    let ok = c.run_until(2_000, |c| {
        c.live()
            .iter()
            .any(|m| *m != old && c.node(*m).role() == Role::Leader)
    });
    assert!(ok, "{}", c.describe());
    // The isolated leader notices it lost the quorum and steps down.
    let ok = c.run_until(2_000, |c| c.node(old).role() != Role::Leader);
    assert!(ok, "check-quorum: {}", c.describe());
    // Its proposals no longer go anywhere; the new leader's commit.
    let new = c.leader().expect("new leader");
    assert_ne!(new, old);
    propose_n(&mut c, new, 2);
    c.heal();
    assert!(c.converge(2_000));
    c.check_converged();
    assert_eq!(c.sm(old).payloads.len(), 5);
}

#[test]
fn rejoining_member_with_prevote_does_not_disrupt_the_leader() {
    let mut c = cluster(3);
    let l = c.elect_any();
    let term = c.node(l).term();
    let f = c.live().into_iter().find(|m| *m != l).expect("a follower");
    c.isolate(f);
    c.advance(1_000); // The isolated follower keeps trying pre-votes, never a real election.
    assert_eq!(c.node(f).term(), term, "pre-vote keeps the term");
    c.heal();
    c.advance(500);
    assert_eq!(c.leader(), Some(l));
    assert_eq!(c.node(l).term(), term, "no disruption after healing");
}

#[test]
fn divergent_follower_logs_are_repaired() {
    let mut c = cluster(5);
    let l1 = c.elect_any();
    propose_n(&mut c, l1, 3);
    assert!(c.converge(1_000));
    // The leader, cut off with one follower, appends entries that never commit.
    let buddy = c.live().into_iter().find(|m| *m != l1).expect("a follower");
    let others: Vec<_> = c
        .live()
        .into_iter()
        .filter(|m| *m != l1 && *m != buddy)
        .collect();
    c.partition(&[l1, buddy], &others);
    propose_n(&mut c, l1, 10);
    c.advance(50);
    assert!(c.node(buddy).last_index() > c.node(others[0]).last_index());
    // The majority side elects its own leader and commits different entries.
    let ok = c.run_until(3_000, |c| {
        others.iter().any(|m| c.node(*m).role() == Role::Leader)
    });
    assert!(ok);
    let l2 = others
        .iter()
        .copied()
        .find(|m| c.node(*m).role() == Role::Leader)
        .expect("majority leader");
    propose_n(&mut c, l2, 4);
    c.advance(50);
    // After healing the minority's uncommitted suffix is overwritten.
    c.heal();
    assert!(c.converge(3_000), "{}", c.describe());
    c.check_log_matching();
    c.check_converged();
    let applied = &c.sm(buddy).payloads;
    assert_eq!(
        applied.len(),
        7,
        "3 old + 4 from the new leader; the 10 are gone"
    );
}

#[test]
fn partitions_that_heal_converge_with_fast_backtracking() {
    let mut c = Cluster::with(3, 0, ClusterOptions::default(), |cfg| {
        cfg.compaction_tail = 10_000;
    });
    let l = c.elect_any();
    let f = c.live().into_iter().find(|m| *m != l).expect("a follower");
    c.isolate(f);
    propose_n(&mut c, l, 200);
    c.advance(20);
    c.heal();
    assert!(c.converge(2_000));
    c.check_converged();
    assert_eq!(c.sm(f).payloads.len(), 200);
}

#[test]
fn conflicting_follower_rejects_and_the_hint_skips_whole_terms() {
    let mut c = Cluster::with(3, 0, ClusterOptions::default(), |cfg| {
        cfg.compaction_tail = 10_000;
    });
    let l1 = c.elect_any();
    let rest: Vec<_> = c.live().into_iter().filter(|m| *m != l1).collect();
    // The old leader appends 30 entries no one else sees.
    c.isolate(l1);
    propose_n(&mut c, l1, 30);
    c.advance(10);
    let ok = c.run_until(3_000, |c| {
        rest.iter().any(|m| c.node(*m).role() == Role::Leader)
    });
    assert!(ok);
    let l2 = c.leader().expect("leader");
    propose_n(&mut c, l2, 5);
    c.advance(30);
    // Count the rejections the new leader receives while repairing the old leader.
    c.heal();
    let mut rejections = 0;
    for _ in 0..2_000 {
        c.tick(1);
        while !c.net.is_empty() {
            let m = &c.net[0];
            if m.to == l2 {
                if let MessageBody::AppendResponse {
                    reject: Some(_), ..
                } = m.body
                {
                    rejections += 1;
                }
            }
            c.deliver(0);
        }
        if c.node(l1).applied() >= c.node(l2).committed() && c.node(l1).leader() == l2 {
            break;
        }
    }
    c.check_converged();
    assert!(
        rejections <= 2,
        "30 conflicting entries of one term are skipped in one step, got {rejections} rejections"
    );
}

#[test]
fn leadership_transfer_hands_over_and_blocks_proposals_meanwhile() {
    let mut c = cluster(3);
    let l = c.elect_any();
    let target = c.live().into_iter().find(|m| *m != l).expect("a follower");
    propose_n(&mut c, l, 5);
    assert!(c.converge(1_000));
    c.transfer(l, target).expect("transfer starts");
    // While the transfer is in flight the old leader refuses proposals.
    if c.node(l).role() == Role::Leader && c.node(l).transferee().is_some() {
        assert_eq!(c.propose(l), Err(ProposeError::TransferInProgress));
    }
    c.stabilize();
    assert_eq!(c.leader(), Some(target));
    assert_eq!(c.node(l).leader(), target);
    assert_eq!(
        c.transfer(target, id(99)),
        Err(TransferError::NotVoter(id(99)))
    );
    // A lagging target is caught up first.
    let other = c
        .live()
        .into_iter()
        .find(|m| *m != target && *m != l)
        .expect("third");
    c.isolate(other);
    propose_n(&mut c, target, 20);
    c.advance(20);
    c.heal();
    c.transfer(target, other).expect("transfer starts");
    let ok = c.run_until(1_000, |c| c.leader() == Some(other));
    assert!(ok, "{}", c.describe());
    assert!(c.converge(1_000));
    c.check_converged();
}

#[test]
fn learner_receives_the_log_without_voting_and_is_promoted() {
    let mut c = Cluster::with(3, 1, ClusterOptions::default(), |_| {});
    let learner = id(4);
    let l = c.elect_any();
    assert_ne!(l, learner);
    propose_n(&mut c, l, 10);
    assert!(c.converge(1_000));
    assert_eq!(c.sm(learner).payloads.len(), 10, "learners get the log");
    // A learner never campaigns, even when the leader disappears.
    c.isolate(learner);
    c.advance(2_000);
    assert_eq!(c.node(learner).role(), Role::Follower);
    assert_eq!(c.node(learner).term(), c.node(l).term());
    c.heal();
    // Promotion is refused while the learner lags far behind.
    c.isolate(learner);
    propose_n(&mut c, l, 100);
    c.advance(20);
    assert_eq!(
        c.conf_change(l, ConfChange::AddVoter(learner)),
        Err(ConfChangeError::LearnerNotReady)
    );
    c.heal();
    assert!(c.converge(2_000));
    c.conf_change(l, ConfChange::AddVoter(learner))
        .expect("an in-sync learner can be promoted");
    assert!(c.converge(1_000));
    assert!(c.node(l).conf().voters.contains(&learner));
    assert!(c.node(learner).conf().voters.contains(&learner));
    // Now it counts: with two of the original voters gone, the other two still commit.
    let gone: Vec<_> = c
        .live()
        .into_iter()
        .filter(|m| *m != l && *m != learner)
        .take(1)
        .collect();
    c.crash(gone[0], 0);
    propose_n(&mut c, l, 1);
    assert!(c.converge(1_000));
}

#[test]
fn membership_grows_3_to_5_and_shrinks_back_to_3() {
    let mut c = cluster(3);
    let l = c.elect_any();
    propose_n(&mut c, l, 5);
    for new in [id(4), id(5)] {
        c.add_blank_member(new);
        c.conf_change(l, ConfChange::AddVoter(new)).expect("add");
        // Only one change at a time.
        assert_eq!(
            c.conf_change(l, ConfChange::AddVoter(id(6))),
            Err(ConfChangeError::Pending)
        );
        assert!(c.converge(2_000), "{}", c.describe());
        propose_n(&mut c, l, 3);
    }
    assert_eq!(c.node(l).conf().voters.len(), 5);
    assert!(c.converge(2_000));
    assert_eq!(c.sm(id(5)).payloads.len(), 11, "new member caught up");
    for gone in [id(4), id(5)] {
        let l = c.leader().expect("leader");
        c.conf_change(l, ConfChange::Remove(gone)).expect("remove");
        assert!(c.converge(2_000));
        assert!(c.node(gone).is_removed(), "{gone:?} learned of its removal");
    }
    let l = c.leader().expect("leader");
    assert_eq!(c.node(l).conf().voters.len(), 3);
    // A removed member never campaigns.
    let term = c.node(l).term();
    c.isolate(id(4));
    c.advance(2_000);
    assert_eq!(c.node(id(4)).role(), Role::Follower);
    c.heal();
    c.advance(200);
    assert_eq!(c.node(l).term(), term);
    assert_eq!(
        c.conf_change(l, ConfChange::Remove(id(4))),
        Err(ConfChangeError::NotMember(id(4)))
    );
}

#[test]
fn removing_the_leader_hands_leadership_over() {
    let mut c = cluster(3);
    let l = c.elect_any();
    propose_n(&mut c, l, 3);
    c.conf_change(l, ConfChange::Remove(l))
        .expect("remove self");
    let ok = c.run_until(1_000, |c| c.leader().is_some_and(|x| x != l));
    assert!(ok, "{}", c.describe());
    assert!(c.node(l).is_removed());
    let new = c.leader().expect("leader");
    assert_eq!(c.node(new).conf().voters.len(), 2);
    propose_n(&mut c, new, 2);
    assert!(c.converge(1_000));
    assert_eq!(c.sm(new).payloads.len(), 5);
}

#[test]
fn new_leader_refuses_conf_changes_until_it_applied_its_own_entry() {
    let mut c = cluster(3);
    let l = c.elect_any();
    c.isolate(l);
    let ok = c.run_until(3_000, |c| c.leader().is_some_and(|x| x != l));
    assert!(ok);
    let new = c.leader().expect("leader");
    // Cut the new leader off before its no-op commits: it must refuse changes.
    let others: Vec<_> = c.live().into_iter().filter(|m| *m != new).collect();
    c.heal();
    c.campaign(new); // already leader: no-op
    c.partition(&[new], &others);
    c.tick(1);
    if c.node(new).role() == Role::Leader && c.node(new).applied() < c.node(new).last_index() {
        assert_eq!(
            c.conf_change(new, ConfChange::AddVoter(id(7))),
            Err(ConfChangeError::Pending)
        );
    }
    c.heal();
    assert!(c.converge(2_000));
}

#[test]
fn lagging_follower_is_caught_up_by_a_chunked_snapshot() {
    let opts = ClusterOptions {
        snapshot_padding: 1_000, // ~32 chunks of 32 bytes
        ..ClusterOptions::default()
    };
    let mut c = Cluster::with(3, 0, opts, |_| {});
    let l = c.elect_any();
    let slow = c.live().into_iter().find(|m| *m != l).expect("a follower");
    c.crash(slow, 0);
    propose_n(&mut c, l, 40);
    assert!(c.converge(1_000));
    for m in c.live() {
        c.compact(m);
    }
    assert!(c.node(l).snapshot_index() > LogIndex(1), "log compacted");
    propose_n(&mut c, l, 5);
    c.restart(slow);
    // Count snapshot chunks on the wire.
    let mut chunks = 0;
    for _ in 0..2_000 {
        c.tick(1);
        while !c.net.is_empty() {
            if matches!(c.net[0].body, MessageBody::SnapshotChunk { .. }) {
                chunks += 1;
            }
            c.deliver(0);
        }
        if c.sm(slow).applied >= c.node(l).committed() {
            break;
        }
    }
    assert!(chunks >= 30, "snapshot streamed in chunks, saw {chunks}");
    c.check_converged();
    assert_eq!(c.sm(slow).applied, c.sm(l).applied);
    // After the snapshot, plain replication continues.
    propose_n(&mut c, l, 3);
    assert!(c.converge(1_000));
    c.check_converged();
}

#[test]
fn snapshot_stream_survives_lost_chunks() {
    let opts = ClusterOptions {
        snapshot_padding: 500,
        ..ClusterOptions::default()
    };
    let mut c = Cluster::with(3, 0, opts, |_| {});
    let l = c.elect_any();
    let slow = c.live().into_iter().find(|m| *m != l).expect("a follower");
    c.crash(slow, 0);
    propose_n(&mut c, l, 30);
    assert!(c.converge(1_000));
    c.compact(l);
    c.restart(slow);
    // Drop every third snapshot chunk.
    let mut seen = 0;
    for _ in 0..5_000 {
        c.tick(1);
        let mut budget = 10_000;
        while !c.net.is_empty() && budget > 0 {
            budget -= 1;
            if matches!(c.net[0].body, MessageBody::SnapshotChunk { .. }) {
                seen += 1;
                if seen % 3 == 0 {
                    c.drop_msg(0);
                    continue;
                }
            }
            c.deliver(0);
        }
        if c.sm(slow).applied >= c.node(l).committed() {
            break;
        }
    }
    c.check_converged();
    assert_eq!(c.sm(slow).applied, c.node(l).committed());
}

#[test]
fn read_index_is_batched_and_confirmed_by_a_quorum() {
    let mut c = cluster(3);
    let l = c.elect_any();
    propose_n(&mut c, l, 3);
    assert!(c.converge(1_000));
    // Ten reads before any delivery share one heartbeat round.
    let ctxs = c.read_many(l, 10);
    assert_eq!(ctxs.len(), 10);
    let heartbeats = c
        .net
        .iter()
        .filter(|m| matches!(m.body, MessageBody::Heartbeat { .. }))
        .count();
    assert_eq!(heartbeats, 2, "one round to two followers for ten reads");
    assert!(
        c.reads(l).is_empty(),
        "not confirmed before the quorum answers"
    );
    c.stabilize();
    let got: Vec<_> = c.reads(l).iter().map(|r| r.ctx).collect();
    assert_eq!(got, ctxs);
    assert!(c.reads(l).iter().all(|r| r.index == c.node(l).committed()));
    // A follower's read is confirmed through the leader.
    let f = c.live().into_iter().find(|m| *m != l).expect("a follower");
    let ctx = c.read(f).expect("read");
    c.stabilize();
    assert_eq!(c.reads(f).last().map(|r| r.ctx), Some(ctx));
}

#[test]
fn read_index_is_not_confirmed_by_a_minority() {
    let mut c = cluster(3);
    let l = c.elect_any();
    assert!(c.converge(1_000));
    c.isolate(l);
    c.read(l).expect("queued");
    c.advance(50);
    assert!(
        c.reads(l).is_empty(),
        "an isolated leader cannot confirm a read"
    );
    // When it steps down the read is reported dropped.
    let ok = c.run_until(2_000, |c| c.node(l).role() != Role::Leader);
    assert!(ok);
    assert_eq!(c.members[&l].dropped_reads.len(), 1);
}

#[test]
fn lease_reads_skip_the_round_trip_while_the_lease_holds() {
    let mut c = Cluster::with(3, 0, ClusterOptions::default(), |cfg| {
        cfg.read_mode = ReadMode::Lease {
            max_clock_drift_ppm: 100_000,
        };
    });
    let l = c.elect_any();
    c.advance(30); // A few heartbeat rounds establish the lease.
    c.read(l).expect("read");
    assert_eq!(c.reads(l).len(), 1, "served locally under the lease");
    // Isolated past the lease, reads wait for a quorum again.
    c.isolate(l);
    c.advance(95);
    c.read(l).expect("read");
    assert_eq!(c.reads(l).len(), 1, "lease expired: no local answer");
}

#[test]
fn crash_of_every_member_keeps_every_committed_entry() {
    let mut c = cluster(3);
    let l = c.elect_any();
    propose_n(&mut c, l, 20);
    assert!(c.converge(1_000));
    let committed = c.node(l).committed();
    for m in c.live() {
        c.crash(m, 0);
    }
    for m in [id(1), id(2), id(3)] {
        c.restart(m);
    }
    let l = c.elect_any();
    assert!(c.converge(2_000));
    assert!(c.node(l).committed() > committed);
    assert_eq!(c.sm(l).payloads.len(), 20);
    c.check_converged();
}

#[test]
fn hostile_messages_are_dropped_without_panicking() {
    use keel_core::raft::{Entry, EntryPayload, Message, Term};
    let mut c = cluster(3);
    let l = c.elect_any();
    propose_n(&mut c, l, 3);
    assert!(c.converge(1_000));
    let f = c.live().into_iter().find(|m| *m != l).expect("a follower");
    let term = c.node(l).term();
    let junk = vec![
        // Entries not contiguous with prev.
        MessageBody::Append {
            prev_index: LogIndex(2),
            prev_term: term,
            entries: vec![Entry {
                term,
                index: LogIndex(9),
                payload: EntryPayload::Empty,
            }],
            commit: LogIndex(u64::MAX),
        },
        // Index at the end of the number space.
        MessageBody::Append {
            prev_index: LogIndex(u64::MAX),
            prev_term: term,
            entries: vec![],
            commit: LogIndex(u64::MAX),
        },
        MessageBody::AppendResponse {
            index: LogIndex(u64::MAX),
            reject: None,
        },
        MessageBody::Heartbeat {
            commit: LogIndex(u64::MAX),
            round: u64::MAX,
        },
        MessageBody::HeartbeatResponse { round: u64::MAX },
        MessageBody::SnapshotAck {
            index: LogIndex(1),
            received: u64::MAX,
            resend: true,
        },
        MessageBody::SnapshotChunk {
            meta: Default::default(),
            total: u64::MAX,
            offset: u64::MAX,
            data: Bytes::from_static(b"x"),
        },
    ];
    for body in junk {
        for to in [l, f] {
            let msg = Message {
                from: if to == l { f } else { l },
                to,
                term: Term(term.0),
                body: body.clone(),
            };
            c.net.push(msg);
            c.stabilize();
        }
    }
    // Still one healthy cluster holding every committed entry.
    let l = c.leader().expect("leader");
    propose_n(&mut c, l, 1);
    assert!(c.converge(2_000));
    c.check_converged();
    assert_eq!(c.sm(f).payloads.len(), 4);
}

#[test]
fn same_seed_same_outputs_byte_for_byte() {
    fn run() -> Vec<String> {
        let opts = ClusterOptions {
            trace: true,
            ..ClusterOptions::default()
        };
        let mut c = Cluster::with(5, 0, opts, |_| {});
        let l = c.elect_any();
        propose_n(&mut c, l, 10);
        let f = c.live().into_iter().find(|m| *m != l).expect("a follower");
        c.isolate(l);
        c.advance(500);
        c.heal();
        c.read(f).ok();
        c.advance(300);
        assert!(c.converge(2_000));
        std::mem::take(&mut c.trace)
    }
    let a = run();
    let b = run();
    assert!(a.len() > 100, "the trace records outputs");
    assert_eq!(a, b);
    // A different seed changes the election timing, so the trace differs.
    let mut other = Cluster::with(
        5,
        0,
        ClusterOptions {
            trace: true,
            ..ClusterOptions::default()
        },
        |cfg| {
            cfg.seed = 12345;
        },
    );
    other.elect_any();
    assert_ne!(
        &a[..other.trace.len().min(a.len())],
        &other.trace[..other.trace.len().min(a.len())]
    );
}

#[test]
fn forwarded_requests_reaching_a_follower_are_dropped_not_bounced() {
    use keel_core::raft::{Message, ReadCtx};
    let mut c = cluster(3);
    let l = c.elect_any();
    let f: Vec<_> = c.live().into_iter().filter(|m| *m != l).collect();
    let term = c.node(l).term();
    // Two followers each believing the other leads would forward these forever.
    for body in [
        MessageBody::TransferLeader { target: f[0] },
        MessageBody::Propose { payloads: vec![] },
        MessageBody::ReadIndex { ctx: ReadCtx(7) },
    ] {
        c.net.push(Message {
            from: f[0],
            to: f[1],
            term,
            body,
        });
        assert_eq!(c.stabilize(), 1, "delivered once, answered by nothing");
    }
    assert_eq!(c.leader(), Some(l));
}
