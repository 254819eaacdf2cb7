//! Deterministic scenarios over members on a lossless in-memory network with instant
//! disks: what the member decides, with no runtime at all.

use std::collections::BTreeSet;

use bytes::Bytes;

use super::*;
use crate::mvcc::PutRequest;
use crate::node::{AutoCompaction, MemberInfo, Outcome};
use crate::raft::{ConfState, Config, MemberId};

struct Harness {
    members: Vec<Member>,
    now: Time,
    /// Members cut off from everyone (messages to and from them are lost).
    cut: BTreeSet<u64>,
    replies: Vec<(u64, Token, Result<Response, MemberError>)>,
    snapshots: Vec<(u64, LogIndex)>,
    released: Vec<(u64, LogIndex)>,
    /// Every member's notes, in order.
    notes: Vec<(u64, Note)>,
    next_token: u64,
}

fn info(id: u64, started: bool) -> MemberInfo {
    MemberInfo {
        id,
        name: if started {
            format!("m{id}")
        } else {
            String::new()
        },
        peer_urls: vec![format!("http://127.0.0.1:{}", 2380 + id)],
        client_urls: vec![format!("http://127.0.0.1:{}", 2379 + id)],
        learner: false,
    }
}

impl Harness {
    fn new(n: u64, snapshot_count: u64) -> Harness {
        Harness::with_unstarted(n, snapshot_count, &[])
    }

    /// `n` founders; those in `unstarted` have not published their name yet.
    fn with_unstarted(n: u64, snapshot_count: u64, unstarted: &[u64]) -> Harness {
        let now = Time(0);
        let members = (1..=n)
            .map(|id| {
                let mut rc = Config::new(MemberId(id));
                rc.compaction_tail = 5;
                let conf = ConfState::with_voters((1..=n).map(MemberId));
                let raft = RaftNode::new(rc, conf, now).expect("raft config");
                let founders = (1..=n).map(|i| info(i, !unstarted.contains(&i)));
                let sm = StateMachine::new(u64::MAX, 2, founders);
                let cfg = MemberConfig {
                    id,
                    name: format!("m{id}"),
                    client_urls: vec![format!("http://127.0.0.1:{}", 2379 + id)],
                    election_ms: 1000,
                    heartbeat_ms: 100,
                    max_request_bytes: 1 << 20,
                    strict_reconfig: true,
                    snapshot_count,
                    auto_compaction: AutoCompaction::Off,
                    start_ms: 1_000 * id,
                    housekeeping_ms: 500,
                    record_applied: false,
                    lease_checkpoint_ms: None,
                    corrupt_check: None,
                };
                Member::new(cfg, raft, sm, now)
            })
            .collect();
        Harness {
            members,
            now,
            cut: BTreeSet::new(),
            replies: Vec::new(),
            snapshots: Vec::new(),
            released: Vec::new(),
            notes: Vec::new(),
            next_token: 1,
        }
    }

    fn m(&mut self, id: u64) -> &mut Member {
        &mut self.members[id as usize - 1]
    }

    /// Lets `ms` milliseconds pass in 10 ms steps, delivering every message.
    fn run(&mut self, ms: u64) {
        let end = self.now.plus(ms);
        while self.now < end {
            self.now = self.now.plus(10);
            let now = self.now;
            for m in &mut self.members {
                m.tick(now);
            }
            self.settle();
        }
    }

    /// Drives every member and delivers messages until nothing moves.
    fn settle(&mut self) {
        let now = self.now;
        loop {
            let mut inflight = Vec::new();
            for m in &mut self.members {
                let id = m.id();
                loop {
                    let out = m.advance(now);
                    inflight.extend(out.messages);
                    if let Some(b) = out.persist {
                        m.persisted(now, b.seq);
                    }
                    if let Some(s) = out.snapshot {
                        self.snapshots.push((id, s.meta.index));
                        m.snapshot_saved(s.meta.index, Ok(()));
                    }
                    if let Some(i) = out.release_wal {
                        self.released.push((id, i));
                    }
                    self.replies
                        .extend(out.replies.into_iter().map(|(t, r)| (id, t, r)));
                    self.notes.extend(out.notes.into_iter().map(|n| (id, n)));
                    if out.idle {
                        break;
                    }
                }
            }
            if inflight.is_empty() {
                return;
            }
            for msg in inflight {
                let (from, to) = (msg.from.0, msg.to.0);
                // Members added by a test never run: what is sent to them is lost.
                let running = (to as usize) <= self.members.len();
                if running && !self.cut.contains(&from) && !self.cut.contains(&to) {
                    self.m(to).step(now, msg);
                }
            }
        }
    }

    fn leader(&self) -> Option<u64> {
        self.members
            .iter()
            .find(|m| m.raft.role() == Role::Leader)
            .map(|m| m.id())
    }

    fn request(&mut self, id: u64, req: Request, require_leader: bool) -> Token {
        let token = Token(self.next_token);
        self.next_token += 1;
        let now = self.now;
        let call = Call {
            token,
            deadline: now.plus(7_000),
            require_leader,
        };
        self.m(id).request(now, call, req);
        token
    }

    fn put(&mut self, id: u64, key: &str, require_leader: bool) -> Token {
        let cmd = put_cmd(key);
        self.request(id, Request::Propose { cmd, auth: None }, require_leader)
    }

    /// Whether the leader's keyspace holds `key`.
    fn has_key(&mut self, key: &str) -> bool {
        let l = self.leader().expect("a leader");
        let r = self.m(l).sm.kv.store.range(&crate::mvcc::RangeRequest {
            key: Bytes::copy_from_slice(key.as_bytes()),
            ..Default::default()
        });
        !r.expect("range").kvs.is_empty()
    }

    fn answer(&self, token: Token) -> Option<&Result<Response, MemberError>> {
        self.replies
            .iter()
            .find(|(_, t, _)| *t == token)
            .map(|(_, _, r)| r)
    }

    fn applied_put(&self, token: Token) -> bool {
        matches!(
            self.answer(token),
            Some(Ok(Response::Applied {
                outcome: Outcome::Put(Ok(_)),
                ..
            }))
        )
    }
}

fn put_cmd(key: &str) -> Command {
    Command::Put(PutRequest {
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Bytes::from_static(b"v"),
        ..Default::default()
    })
}

fn elected(n: u64) -> (Harness, u64) {
    let mut h = Harness::new(n, u64::MAX);
    h.run(3_000);
    let leader = h.leader().expect("a leader within 3 s");
    (h, leader)
}

#[test]
fn a_put_on_a_follower_is_answered_when_applied_with_its_own_revision() {
    let (mut h, leader) = elected(3);
    let follower = (1..=3).find(|i| *i != leader).expect("a follower");
    let a = h.put(follower, "a", false);
    let b = h.put(follower, "b", false);
    h.run(100);
    let rev = |t| match h.answer(t) {
        Some(Ok(Response::Applied { header, .. })) => header.revision,
        other => panic!("unexpected answer {other:?}"),
    };
    assert_eq!(
        (rev(a), rev(b)),
        (2, 3),
        "each answer carries its own revision"
    );
}

#[test]
fn without_a_leader_a_put_waits_and_a_require_leader_put_fails_at_once() {
    let (mut h, leader) = elected(3);
    let follower = (1..=3).find(|i| *i != leader).expect("a follower");
    // Cut the follower off until it gives up on its leader.
    h.cut.insert(follower);
    h.run(3_000);
    assert_eq!(h.m(follower).raft.leader(), MemberId::NONE);
    let waiting = h.put(follower, "w", false);
    let hasty = h.put(follower, "h", true);
    h.run(10);
    assert_eq!(h.answer(hasty), Some(&Err(MemberError::NoLeader)));
    assert_eq!(h.answer(waiting), None, "a plain put waits for a leader");
    h.cut.clear();
    h.run(3_000);
    assert!(h.applied_put(waiting), "{:?}", h.answer(waiting));
}

#[test]
fn a_put_waiting_for_a_leader_times_out_at_its_deadline_and_is_never_proposed() {
    let (mut h, leader) = elected(3);
    let follower = (1..=3).find(|i| *i != leader).expect("a follower");
    h.cut.insert(follower);
    h.run(3_000);
    let t = h.put(follower, "late", false);
    h.run(7_600);
    assert_eq!(h.answer(t), Some(&Err(MemberError::Timeout)));
    h.cut.clear();
    h.run(3_000);
    assert!(
        !h.has_key("late"),
        "a request answered as failed never applies"
    );
}

#[test]
fn a_put_past_its_deadline_when_a_leader_returns_is_not_proposed() {
    let (mut h, leader) = elected(3);
    let follower = (1..=3).find(|i| *i != leader).expect("a follower");
    // No housekeeping on the follower: only the return of a leader can expire it.
    h.m(follower).cfg.housekeeping_ms = 1 << 40;
    h.m(follower).housekeeping_at = Time(1 << 40);
    h.cut.insert(follower);
    h.run(3_000);
    let token = Token(999);
    let (now, cmd) = (h.now, put_cmd("late"));
    let call = Call {
        token,
        deadline: now.plus(500),
        require_leader: false,
    };
    h.m(follower)
        .request(now, call, Request::Propose { cmd, auth: None });
    h.run(1_000);
    assert_eq!(
        h.answer(token),
        None,
        "nothing expires it before the leader"
    );
    h.cut.clear();
    h.run(3_000);
    assert_eq!(h.answer(token), Some(&Err(MemberError::Timeout)));
    assert!(
        !h.has_key("late"),
        "a request past its deadline never applies"
    );
}

#[test]
fn a_put_whose_caller_is_gone_is_never_proposed() {
    let (mut h, leader) = elected(3);
    let follower = (1..=3).find(|i| *i != leader).expect("a follower");
    h.cut.insert(follower);
    h.run(3_000);
    let gone = h.put(follower, "gone", false);
    let stays = h.put(follower, "stays", false);
    h.run(100);
    let waiting: Vec<Token> = h.m(follower).waiting_for_leader().collect();
    assert_eq!(waiting, [gone, stays]);
    h.m(follower).forget(gone);
    h.cut.clear();
    h.run(3_000);
    assert_eq!(h.answer(gone), None, "a gone caller gets no answer");
    assert!(h.applied_put(stays), "{:?}", h.answer(stays));
    assert!(
        !h.has_key("gone"),
        "what its caller gave up on never applies"
    );
}

#[test]
fn membership_changes_meet_etcds_strict_reconfiguration_checks() {
    // Member 3 never started (never published its name): it is cut off from the start.
    let mut h = Harness::with_unstarted(3, u64::MAX, &[3]);
    h.cut.insert(3);
    h.run(3_000);
    let leader = h.leader().expect("1 and 2 elect a leader");
    let add = |id: u64| {
        Request::Change(MemberChange::Add {
            id,
            peer_urls: vec![format!("http://127.0.0.1:{}", 2380 + id)],
            learner: false,
        })
    };
    // 2 started of 4 members is no quorum.
    let t = h.request(leader, add(4), false);
    h.run(10);
    assert_eq!(h.answer(t), Some(&Err(MemberError::NotEnoughStarted)));
    // A learner needs no started quorum.
    let learner = Request::Change(MemberChange::Add {
        id: 5,
        peer_urls: vec!["http://127.0.0.1:2385".into()],
        learner: true,
    });
    let t = h.request(leader, learner, false);
    h.run(200);
    assert!(matches!(h.answer(t), Some(Ok(_))), "{:?}", h.answer(t));
    // Member 3 comes up and publishes itself: now 3 of 4 are started...
    h.cut.clear();
    h.run(2_000);
    assert!(h.m(leader).sm.members[&3].name == "m3");
    let t = h.request(leader, add(4), false);
    h.run(200);
    assert!(matches!(h.answer(t), Some(Ok(_))), "{:?}", h.answer(t));
    // ...but the leader has never heard from member 4: no more voters until it has.
    let t = h.request(leader, add(6), false);
    h.run(10);
    assert_eq!(h.answer(t), Some(&Err(MemberError::Unhealthy)));
    // Known members and URLs are refused as etcd refuses them; a follower sends the
    // caller to the leader.
    let t = h.request(leader, add(4), false);
    h.run(10);
    assert_eq!(h.answer(t), Some(&Err(MemberError::MemberExists)));
    let follower = (1..=3).find(|i| *i != leader).expect("a follower");
    let t = h.request(
        follower,
        Request::Change(MemberChange::Remove { id: 4 }),
        false,
    );
    h.run(10);
    assert_eq!(h.answer(t), Some(&Err(MemberError::NotLeader)));
}

#[test]
fn wal_is_released_behind_the_previous_snapshot_only() {
    let mut h = Harness::new(1, 10);
    h.run(2_000);
    for i in 0..35 {
        h.put(1, &format!("k{i}"), false);
        h.run(20);
    }
    let snaps: Vec<LogIndex> = h.snapshots.iter().map(|(_, i)| *i).collect();
    assert!(snaps.len() >= 3, "snapshots every 10 entries: {snaps:?}");
    let released: Vec<LogIndex> = h.released.iter().map(|(_, i)| *i).collect();
    // Each release names the snapshot before the newest one.
    assert_eq!(released, snaps[..snaps.len() - 1].to_vec());
}

#[test]
fn lease_ids_follow_etcds_layout_and_never_repeat() {
    let (mut h, _) = elected(1);
    let a = h.m(1).new_lease_id();
    let b = h.m(1).new_lease_id();
    assert_ne!(a, b);
    assert_eq!(a.0 as u64 >> 48, 1, "the member ID's low 16 bits lead");
    assert_eq!(b.0 - a.0, 1);
}

#[test]
fn index_waits_are_answered_once_applied_and_time_out_otherwise() {
    let (mut h, _) = elected(1);
    let applied = h.m(1).sm.applied();
    let now = h.now;
    let reached = h.request(1, Request::WaitApplied { index: applied }, false);
    let far = Token(999);
    h.m(1).request(
        now,
        Call {
            token: far,
            deadline: now.plus(600),
            require_leader: false,
        },
        Request::WaitApplied {
            index: applied + 1_000,
        },
    );
    h.run(1_200);
    assert_eq!(h.answer(reached), Some(&Ok(Response::Reached)));
    assert_eq!(h.answer(far), Some(&Err(MemberError::Timeout)));
}

/// Lease checkpoints every 5 s (`None`: off) on every member; a lease with a 30 s TTL
/// granted on the leader. The harness and the leader's ID, at the grant.
fn lease_granted(checkpoint_ms: Option<u64>) -> (Harness, u64) {
    let (mut h, leader) = elected(3);
    for id in 1..=3 {
        h.m(id).cfg.lease_checkpoint_ms = checkpoint_ms;
    }
    let cmd = Command::LeaseGrant { id: 7, ttl: 30 };
    h.request(leader, Request::Propose { cmd, auth: None }, false);
    h.run(100);
    for id in 1..=3 {
        assert!(h.m(id).sm.kv.lessor.contains(LeaseId(7)), "granted on {id}");
    }
    (h, leader)
}

/// Cuts `leader` off and runs until the others have applied the lease's revocation:
/// when that was.
fn revoked_without(h: &mut Harness, leader: u64) -> Time {
    h.cut.insert(leader);
    let other = (1..=3).find(|i| *i != leader).expect("another member");
    let give_up = h.now.plus(120_000);
    while h.m(other).sm.kv.lessor.contains(LeaseId(7)) {
        assert!(h.now < give_up, "the lease is never revoked");
        h.run(100);
    }
    h.now
}

/// A leader change after 2/3 of a lease's TTL: with checkpoints the new leader restarts
/// the lease from its checkpointed remaining TTL, so it ends near its original deadline
/// (within one checkpoint interval and the election); without them (etcd's default) it
/// gets a full TTL again.
fn lease_end_after_leader_change(checkpoint_ms: Option<u64>) -> u64 {
    let (mut h, leader) = lease_granted(checkpoint_ms);
    let granted = h.now;
    h.run(20_000);
    revoked_without(&mut h, leader).since(granted)
}

#[test]
fn a_new_leader_restarts_a_lease_from_its_checkpoint() {
    let ended = lease_end_after_leader_change(Some(5_000));
    assert!(
        (30_000..=30_000 + 5_000 + 3_000).contains(&ended),
        "with checkpoints the lease ends near its deadline (30 s), not at {ended} ms"
    );
    let ended = lease_end_after_leader_change(None);
    assert!(
        ended >= 20_000 + 30_000,
        "without checkpoints a new leader gives the lease a full TTL again: {ended} ms"
    );
}

#[test]
fn a_renewal_waits_for_its_checkpoint_to_be_cleared() {
    let (mut h, leader) = lease_granted(Some(5_000));
    h.run(12_000);
    let follower = (1..=3).find(|i| *i != leader).expect("a follower");
    let now = h.now;
    let (ttl, left) = h
        .m(follower)
        .sm
        .kv
        .lessor
        .time_to_live(LeaseId(7), now)
        .expect("lease");
    assert!(
        ttl == 30 && left < 30,
        "a follower knows the checkpoint: {left} s left"
    );
    // Renewing now and then losing the leader before the checkpoint is cleared would
    // let the next leader end the lease `left` seconds on, though its client was just
    // promised 30: the renewal waits for a clearing checkpoint to be applied.
    assert_eq!(
        h.m(leader).renew_lease(now, LeaseId(7)),
        Err(LeaseError::CheckpointPending)
    );
    h.run(50);
    let now = h.now;
    assert_eq!(h.m(leader).renew_lease(now, LeaseId(7)), Ok(30));
    for id in 1..=3 {
        let ttl = h.m(id).sm.kv.lessor.time_to_live(LeaseId(7), now);
        assert_eq!(ttl, Ok((30, 30)), "checkpoint cleared on {id}");
    }
    let ended = revoked_without(&mut h, leader).since(now);
    assert!(
        ended >= 30_000,
        "the renewed lease lives its TTL: {ended} ms"
    );
}

/// etcd's heartbeat timeout detector: nothing while the leader keeps time; once it
/// stalls (a slow disk) past two heartbeat intervals, its next heartbeat to each peer is
/// reported late, by how much, on the leader alone.
#[test]
fn a_stalled_leader_reports_its_late_heartbeats() {
    let (mut h, leader) = elected(3);
    h.run(1_000);
    let late = |h: &Harness| -> Vec<(u64, u64, u64)> {
        h.notes
            .iter()
            .filter_map(|(id, n)| match n {
                Note::HeartbeatLate { to, exceeded_ms } => Some((*id, *to, *exceeded_ms)),
                _ => None,
            })
            .collect()
    };
    assert_eq!(late(&h), vec![]);
    // 350 ms pass with no round on any member, then time moves on in 10 ms steps.
    h.now = h.now.plus(350);
    h.run(100);
    let found = late(&h);
    let mut peers: Vec<u64> = found.iter().map(|(_, to, _)| *to).collect();
    peers.sort_unstable();
    let followers: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    assert_eq!(peers, followers, "{found:?}");
    for (from, _, exceeded) in found {
        assert_eq!(from, leader);
        // 360 ms to the first round after the stall, plus up to one interval since the
        // previous heartbeat, less the two intervals allowed.
        assert!((160..=260).contains(&exceeded), "exceeded by {exceeded} ms");
    }
}
