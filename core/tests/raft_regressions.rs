//! Regression tests for bugs found in review of the raft core, one per bug, each written
//! to fail on the code before its fix.

use bytes::Bytes;
use keel_core::raft::testkit::{id, Cluster, ClusterOptions};
use keel_core::raft::{
    ConfChange, ConfState, Config, EntryPayload, LogIndex, MemberId, Message, MessageBody,
    RaftNode, ReadMode, RejectHint, Role, Term, Time,
};

/// A member added to a young cluster (log never compacted) learns the founders from the
/// log, so it never believes it is the only voter and can never lead alone.
#[test]
fn joiner_learns_the_founding_configuration() {
    let mut c = Cluster::new(3);
    let l = c.elect_any();
    for _ in 0..3 {
        c.propose(l).expect("propose");
    }
    c.add_blank_member(id(4));
    c.conf_change(l, ConfChange::AddVoter(id(4))).expect("add");
    assert!(c.converge(2_000));
    assert_eq!(
        c.node(id(4)).conf().voters.len(),
        4,
        "{:?}",
        c.node(id(4)).conf()
    );
    c.isolate(id(4));
    c.advance(1_000);
    assert_ne!(
        c.node(id(4)).role(),
        Role::Leader,
        "an isolated joiner cannot win alone"
    );
    c.heal();
    let l = c.elect_any();
    c.propose(l).expect("propose");
    assert!(c.converge(2_000));
    c.check_converged();
}

fn cfg(i: u64) -> Config {
    let mut c = Config::new(MemberId(i));
    c.compaction_tail = 0;
    c
}

fn msg(n: &RaftNode, from: u64, body: MessageBody) -> Message {
    Message {
        from: MemberId(from),
        to: n.id(),
        term: n.term(),
        body,
    }
}

/// Steps `n` with a message from member `from` at `n`'s term.
fn step_from(n: &mut RaftNode, t: Time, from: u64, body: MessageBody) {
    let m = msg(n, from, body);
    n.step(t, m);
}

fn drain(n: &mut RaftNode, t: Time) -> Vec<Message> {
    let mut out = vec![];
    for _ in 0..10 {
        let rd = n.ready();
        out.extend(rd.messages);
        match rd.persist {
            Some(p) => n.persisted(t, p.seq),
            None => break,
        }
    }
    out
}

fn make_leader() -> (RaftNode, Time) {
    let t = Time(0);
    let voters = ConfState::with_voters([MemberId(1), MemberId(2), MemberId(3)]);
    let mut n = RaftNode::new(cfg(1), voters, t).expect("node");
    drain(&mut n, t);
    n.start_election(t);
    drain(&mut n, t);
    let mut pre = msg(
        &n,
        2,
        MessageBody::VoteResponse {
            pre_vote: true,
            granted: true,
        },
    );
    pre.term = Term(n.term().0 + 1);
    n.step(t, pre);
    drain(&mut n, t);
    step_from(
        &mut n,
        t,
        2,
        MessageBody::VoteResponse {
            pre_vote: false,
            granted: true,
        },
    );
    drain(&mut n, t);
    assert_eq!(n.role(), Role::Leader);
    (n, t)
}

/// A member may forward application data only: a forwarded membership change would skip
/// the one-change-at-a-time rule.
#[test]
fn forwarded_conf_changes_are_refused() {
    let (mut n, t) = make_leader();
    let before = n.last_index();
    step_from(
        &mut n,
        t,
        2,
        MessageBody::Propose {
            payloads: vec![
                EntryPayload::ConfChange(ConfChange::AddVoter(MemberId(9))),
                EntryPayload::ConfChange(ConfChange::Remove(MemberId(3))),
                EntryPayload::Normal(Bytes::from_static(b"data")),
            ],
        },
    );
    assert_eq!(
        n.last_index(),
        LogIndex(before.0 + 1),
        "only the data entry"
    );
}

/// A follower back in the replicate state below the compacted log, with no snapshot image
/// yet, must not make `ready()` loop forever.
#[test]
fn ready_returns_while_waiting_for_a_snapshot_image() {
    let (mut n, t) = make_leader();
    let index = n.last_index();
    step_from(
        &mut n,
        t,
        3,
        MessageBody::AppendResponse {
            index,
            reject: None,
        },
    );
    for _ in 0..30 {
        n.propose(t, Bytes::from_static(b"x")).expect("propose");
    }
    drain(&mut n, t);
    let last = n.last_index();
    step_from(
        &mut n,
        t,
        2,
        MessageBody::AppendResponse {
            index: last,
            reject: None,
        },
    );
    drain(&mut n, t);
    n.compact(t, Bytes::from_static(b"image"));
    drain(&mut n, t);
    // Member 3 rejects (it lost its log), then a late acknowledgement of an old append
    // puts it back into replicate below the compacted log.
    step_from(
        &mut n,
        t,
        3,
        MessageBody::AppendResponse {
            index: last,
            reject: Some(RejectHint {
                index: LogIndex(1),
                term: Term(1),
            }),
        },
    );
    let rd = n.ready();
    assert!(rd.want_snapshot);
    step_from(
        &mut n,
        t,
        3,
        MessageBody::AppendResponse {
            index: LogIndex(10),
            reject: None,
        },
    );
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rd = n.ready();
        let _ = tx.send(rd.want_snapshot);
    });
    let r = rx.recv_timeout(std::time::Duration::from_secs(10));
    assert_eq!(r, Ok(true), "ready() returned and still asks for an image");
}

fn half_streamed_snapshot() -> (Cluster, MemberId, MemberId) {
    let opts = ClusterOptions {
        snapshot_padding: 2_000,
        ..ClusterOptions::default()
    };
    let mut c = Cluster::with(3, 0, opts, |_| {});
    let l = c.elect_any();
    let slow = c.live().into_iter().find(|m| *m != l).expect("follower");
    c.crash(slow, 0);
    for _ in 0..40 {
        c.propose(l).expect("propose");
    }
    assert!(c.converge(1_000));
    for m in c.live() {
        c.compact(m);
    }
    c.restart(slow);
    let mut chunks = 0;
    'outer: for _ in 0..50 {
        c.tick(1);
        while !c.net.is_empty() {
            if matches!(c.net[0].body, MessageBody::SnapshotChunk { .. }) {
                chunks += 1;
            }
            c.deliver(0);
            if chunks >= 6 {
                break 'outer;
            }
        }
    }
    assert!(chunks >= 6, "the stream started");
    (c, l, slow)
}

/// Periodic compaction replacing the image while a follower receives it restarts the
/// stream with the new image.
#[test]
fn snapshot_replaced_mid_stream_restarts_the_stream() {
    let (mut c, l, slow) = half_streamed_snapshot();
    c.isolate(slow);
    for _ in 0..5 {
        c.propose(l).expect("propose");
    }
    c.stabilize();
    c.compact(l);
    c.heal();
    let ok = c.run_until(5_000, |c| c.sm(slow).applied >= c.node(l).committed());
    assert!(ok, "{}", c.describe());
}

/// A follower that restarts mid-stream (losing its partial buffer) gets the stream again
/// from the start.
#[test]
fn follower_restarting_mid_stream_gets_the_snapshot_again() {
    let (mut c, l, slow) = half_streamed_snapshot();
    c.crash(slow, 0);
    c.restart(slow);
    let ok = c.run_until(5_000, |c| c.sm(slow).applied >= c.node(l).committed());
    assert!(ok, "{}", c.describe());
}

/// A restarted voter refuses votes for an election timeout, so a leader serving lease
/// reads through it cannot be deposed (and read stale) inside its lease.
#[test]
fn restarted_voter_does_not_break_a_lease() {
    let mut c = Cluster::with(3, 0, ClusterOptions::default(), |cfg| {
        cfg.read_mode = ReadMode::Lease {
            max_clock_drift_ppm: 100_000,
        };
    });
    let l = c.elect_any();
    let others: Vec<_> = c.live().into_iter().filter(|m| *m != l).collect();
    let (a, b) = (others[0], others[1]);
    c.propose(l).expect("propose");
    assert!(c.converge(1_000));
    c.partition(&[l], &[b]);
    c.advance(30);
    c.crash(a, 0);
    c.restart(a);
    c.cut_one_way(l, a);
    c.campaign(b);
    c.stabilize();
    let _ = c.propose(b);
    c.stabilize();
    let committed_elsewhere = c.node(b).committed();
    let ctx = c.read(l).expect("read");
    if let Some(r) = c.reads(l).iter().find(|r| r.ctx == ctx) {
        assert!(
            r.index >= committed_elsewhere,
            "stale lease read at {:?} while {:?} is committed",
            r.index,
            committed_elsewhere
        );
    }
    assert_ne!(
        c.node(b).role(),
        Role::Leader,
        "the restarted voter refused its vote"
    );
}
