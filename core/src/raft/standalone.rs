//! etcd's `--force-new-cluster`: restart a member from its own durable state as the only
//! member of its cluster, to recover after a quorum is lost for good.
//!
//! As etcd's `restartAsStandaloneNode`, with one difference: etcd drops the entries past
//! the member's durable commit index, but a follower writes its commit index lazily, so
//! a write the leader had acknowledged can sit past it (etcd's survivor was seen to drop
//! the last acknowledged put this way). Keel keeps every durable entry instead and
//! commits them all: with every other member gone, no other log can hold a different
//! committed entry at those indices, and committing an entry no client was told about is
//! allowed. The configuration at the end of the log is worked out (snapshot
//! configuration plus every change), and configuration changes are appended at the
//! current term that leave this member the only voter: `AddVoter(self)` first if it is not a voter (so the
//! voter set is never empty), then `Remove` for every other voter and learner. They are
//! committed by fiat: the new hard state's commit is the last of them. The driver
//! persists them (replacing the dropped suffix) before raft restarts, so the removes are
//! applied like any committed change (the member table loses the members) and a later
//! restart without the flag finds the same one-member cluster in the WAL.

use super::error::RecoverError;
use super::membership::apply_to_conf;
use super::ready::PersistBatch;
use super::types::{
    ConfChange, ConfState, Entry, EntryPayload, HardState, LogIndex, MemberId, PersistSeq,
    RecoveredState,
};

/// What [`force_new_cluster`] made of a recovered state.
#[derive(Clone, Debug)]
pub struct ForcedRestart {
    /// The state to hand [`crate::raft::RaftNode::restart`], once `persist` is durable.
    pub state: RecoveredState,
    /// To write (and sync) before raft restarts; `None` when the member already was the
    /// only one (then the new commit index is written lazily, as any commit index).
    /// Never acknowledged to raft: its content is already part of `state`.
    pub persist: Option<PersistBatch>,
    /// The commit index the recovered state had.
    pub commit: LogIndex,
    /// Entries past that commit index, kept and now committed.
    pub adopted: usize,
    /// The configuration at the end of the recovered log, before the forced changes.
    pub conf: ConfState,
    /// The members the appended entries remove.
    pub removed: Vec<MemberId>,
    /// Whether an entry adds this member as a voter (it was not one at `commit`).
    pub added_self: bool,
}

/// Turns `state`, recovered by member `me`, into the state of a one-member cluster of
/// `me`. Fails only when the state is inconsistent (commit index past the log), which
/// [`crate::raft::RaftNode::restart`] would refuse too.
pub fn force_new_cluster(
    state: RecoveredState,
    me: MemberId,
) -> Result<ForcedRestart, RecoverError> {
    let RecoveredState {
        hard_state,
        snapshot,
        mut entries,
        applied,
    } = state;
    let last = entries.last().map_or(snapshot.index, |e| e.index);
    // The same commit index `RaftNode::restart` would adopt: commit-only hard states are
    // written lazily, so the snapshot or the applied index may be ahead of it.
    let commit = hard_state.commit.max(snapshot.index).max(applied.min(last));
    if commit > last {
        return Err(RecoverError::CommitBeyondLog { commit, last });
    }
    let adopted = entries.len() - entries.partition_point(|e| e.index <= commit);

    let mut conf = snapshot.conf.clone();
    for e in &entries {
        if let EntryPayload::ConfChange(cc) = e.payload {
            apply_to_conf(&mut conf, cc, me);
        }
    }
    let mut changes = Vec::new();
    let added_self = !conf.voters.contains(&me);
    if added_self {
        changes.push(ConfChange::AddVoter(me));
    }
    let removed: Vec<MemberId> = conf.members().filter(|id| *id != me).collect();
    changes.extend(removed.iter().map(|id| ConfChange::Remove(*id)));

    // At the current term: never below the last entry's, so the log's terms stay
    // non-decreasing, and never above the hard state's, which `restart` checks.
    let last_term = entries.last().map_or(snapshot.term, |e| e.term);
    let term = hard_state.term.max(last_term);
    let mut next = last.next();
    let appended: Vec<Entry> = changes
        .into_iter()
        .map(|cc| {
            let e = Entry {
                term,
                index: next,
                payload: EntryPayload::ConfChange(cc),
            };
            next = next.next();
            e
        })
        .collect();
    let new_hs = HardState {
        term,
        vote: hard_state.vote,
        commit: appended.last().map_or(last, |e| e.index),
    };
    let persist = (!appended.is_empty()).then(|| PersistBatch {
        seq: PersistSeq(0),
        hard_state: Some(new_hs),
        snapshot: None,
        entries: appended.clone(),
        must_sync: true,
    });
    entries.extend(appended);
    Ok(ForcedRestart {
        state: RecoveredState {
            hard_state: new_hs,
            snapshot,
            entries,
            applied,
        },
        persist,
        commit,
        adopted,
        conf,
        removed,
        added_self,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::{Config, RaftNode, SnapshotMeta, Term, Time};
    use bytes::Bytes;

    const A: MemberId = MemberId(1);
    const B: MemberId = MemberId(2);
    const C: MemberId = MemberId(3);
    const D: MemberId = MemberId(4);

    fn entry(term: u64, index: u64, payload: EntryPayload) -> Entry {
        Entry {
            term: Term(term),
            index: LogIndex(index),
            payload,
        }
    }

    fn cc(term: u64, index: u64, cc: ConfChange) -> Entry {
        entry(term, index, EntryPayload::ConfChange(cc))
    }

    fn put(term: u64, index: u64) -> Entry {
        entry(
            term,
            index,
            EntryPayload::Normal(Bytes::from(format!("put {index}"))),
        )
    }

    /// A founding log of A, B, C (as `RaftNode::new` writes it), then puts at term 2,
    /// committed through `commit`, the log ending at `last`.
    fn three_members(commit: u64, last: u64) -> RecoveredState {
        let mut entries = vec![
            cc(1, 1, ConfChange::AddVoter(A)),
            cc(1, 2, ConfChange::AddVoter(B)),
            cc(1, 3, ConfChange::AddVoter(C)),
            entry(2, 4, EntryPayload::Empty),
        ];
        entries.extend((5..=last).map(|i| put(2, i)));
        RecoveredState {
            hard_state: HardState {
                term: Term(3),
                vote: B,
                commit: LogIndex(commit),
            },
            snapshot: SnapshotMeta::default(),
            entries,
            applied: LogIndex(0),
        }
    }

    /// The configuration after applying every conf change of `state` (snapshot first).
    fn final_conf(state: &RecoveredState, me: MemberId) -> ConfState {
        let mut conf = state.snapshot.conf.clone();
        for e in &state.entries {
            if let EntryPayload::ConfChange(cc) = e.payload {
                apply_to_conf(&mut conf, cc, me);
            }
        }
        conf
    }

    fn restarts(state: RecoveredState, me: MemberId) -> RaftNode {
        RaftNode::restart(Config::new(me), state, Time(0)).expect("raft restarts")
    }

    #[test]
    fn keeps_every_durable_entry_and_removes_the_others() {
        let recovered = three_members(8, 10);
        let f = force_new_cluster(recovered.clone(), A).expect("forced");
        assert_eq!(f.commit, LogIndex(8));
        assert_eq!(f.adopted, 2);
        assert_eq!(f.conf, ConfState::with_voters([A, B, C]));
        assert_eq!(f.removed, vec![B, C]);
        assert!(!f.added_self);
        // Every entry untouched (the two past the commit index too: one may be a write
        // the leader acknowledged), then the removes at the current term.
        assert_eq!(&f.state.entries[..10], &recovered.entries[..]);
        assert_eq!(
            &f.state.entries[10..],
            &[
                cc(3, 11, ConfChange::Remove(B)),
                cc(3, 12, ConfChange::Remove(C))
            ]
        );
        assert_eq!(
            f.state.hard_state,
            HardState {
                term: Term(3),
                vote: B,
                commit: LogIndex(12),
            }
        );
        assert_eq!(final_conf(&f.state, A), ConfState::with_voters([A]));
        // What is persisted follows the stored log and is synced.
        let batch = f.persist.expect("a batch to persist");
        assert_eq!(batch.entries, f.state.entries[10..].to_vec());
        assert_eq!(batch.hard_state, Some(f.state.hard_state));
        assert!(batch.must_sync && batch.snapshot.is_none());
        // Raft accepts it, and hands the removes to the application as committed.
        let node = restarts(f.state, A);
        assert_eq!(node.committed(), LogIndex(12));
        assert_eq!(node.last_index(), LogIndex(12));
    }

    #[test]
    fn the_restarted_member_applies_the_removes_and_elects_itself() {
        let f = force_new_cluster(three_members(8, 10), A).expect("forced");
        let mut node = restarts(f.state, A);
        let rd = node.ready();
        let applied: Vec<LogIndex> = rd.committed.iter().map(|e| e.index).collect();
        assert_eq!(applied, (1..=12).map(LogIndex).collect::<Vec<_>>());
        assert_eq!(node.conf(), &ConfState::with_voters([A]));
        // Alone, it needs no one's vote: it leads once its election timer fires, and
        // commits its own entries without any other member.
        let mut now = Time(0);
        for _ in 0..100 {
            now = now.plus(100);
            node.tick(now);
            let rd = node.ready();
            assert!(rd.messages.is_empty(), "no one left to talk to");
            if let Some(b) = rd.persist {
                node.persisted(now, b.seq);
            }
        }
        assert_eq!(node.role(), crate::raft::Role::Leader);
        let at = node.last_index();
        node.propose(now, Bytes::from_static(b"after"))
            .expect("propose");
        let rd = node.ready();
        let b = rd.persist.expect("the proposal to persist");
        node.persisted(now, b.seq);
        assert!(node.committed() > at);
    }

    #[test]
    fn a_fully_committed_log_loses_nothing() {
        let f = force_new_cluster(three_members(10, 10), C).expect("forced");
        assert_eq!(f.adopted, 0);
        assert_eq!(f.removed, vec![A, B]);
        assert_eq!(f.state.entries.len(), 12);
        assert_eq!(final_conf(&f.state, C), ConfState::with_voters([C]));
    }

    #[test]
    fn every_durable_change_counts() {
        // D joined as a learner (committed), C was removed (committed), and B's removal
        // was still uncommitted when quorum was lost: it is kept and counts.
        let mut s = three_members(6, 6);
        s.entries.push(cc(3, 7, ConfChange::AddLearner(D)));
        s.entries.push(cc(3, 8, ConfChange::Remove(C)));
        s.entries.push(cc(3, 9, ConfChange::Remove(B)));
        s.hard_state.commit = LogIndex(8);
        let f = force_new_cluster(s, A).expect("forced");
        assert_eq!(f.adopted, 1);
        assert_eq!(
            f.conf,
            ConfState {
                voters: [A].into(),
                learners: [D].into()
            }
        );
        assert_eq!(f.removed, vec![D]);
        assert_eq!(final_conf(&f.state, A), ConfState::with_voters([A]));
    }

    #[test]
    fn a_member_that_is_no_voter_adds_itself_first() {
        // A learner forced into a cluster of its own: it must become the voter before
        // anyone is removed, or the voter set would pass through empty.
        let mut s = three_members(5, 5);
        s.entries.push(cc(3, 6, ConfChange::AddLearner(D)));
        s.hard_state.commit = LogIndex(6);
        let f = force_new_cluster(s, D).expect("forced");
        assert!(f.added_self);
        assert_eq!(
            &f.state.entries[6..],
            &[
                cc(3, 7, ConfChange::AddVoter(D)),
                cc(3, 8, ConfChange::Remove(A)),
                cc(3, 9, ConfChange::Remove(B)),
                cc(3, 10, ConfChange::Remove(C)),
            ]
        );
        assert_eq!(final_conf(&f.state, D), ConfState::with_voters([D]));
        restarts(f.state, D);
    }

    #[test]
    fn an_already_standalone_member_gets_nothing_appended() {
        let s = RecoveredState {
            hard_state: HardState {
                term: Term(2),
                vote: A,
                commit: LogIndex(3),
            },
            snapshot: SnapshotMeta::default(),
            entries: vec![
                cc(1, 1, ConfChange::AddVoter(A)),
                entry(2, 2, EntryPayload::Empty),
                put(2, 3),
            ],
            applied: LogIndex(0),
        };
        let f = force_new_cluster(s.clone(), A).expect("forced");
        assert!(f.persist.is_none());
        assert!(f.removed.is_empty() && !f.added_self);
        assert_eq!(f.state.entries, s.entries);
        assert_eq!(f.state.hard_state, s.hard_state);
        // Forcing twice (the flag left on across restarts) changes nothing more.
        let again = force_new_cluster(f.state.clone(), A).expect("forced again");
        assert!(again.persist.is_none());
        assert_eq!(again.state.entries, f.state.entries);
    }

    #[test]
    fn a_second_forced_restart_appends_nothing() {
        let f = force_new_cluster(three_members(8, 10), A).expect("forced");
        let again = force_new_cluster(f.state.clone(), A).expect("forced again");
        assert!(again.persist.is_none());
        assert_eq!(again.adopted, 0);
        assert_eq!(again.state.entries, f.state.entries);
    }

    #[test]
    fn a_state_with_only_a_snapshot_works() {
        let s = RecoveredState {
            hard_state: HardState {
                term: Term(5),
                vote: MemberId::NONE,
                commit: LogIndex(40),
            },
            snapshot: SnapshotMeta {
                index: LogIndex(40),
                term: Term(4),
                conf: ConfState {
                    voters: [A, B, C].into(),
                    learners: [D].into(),
                },
            },
            entries: Vec::new(),
            applied: LogIndex(40),
        };
        let f = force_new_cluster(s, B).expect("forced");
        assert_eq!(f.commit, LogIndex(40));
        assert_eq!(f.adopted, 0);
        assert_eq!(
            f.state.entries,
            vec![
                cc(5, 41, ConfChange::Remove(A)),
                cc(5, 42, ConfChange::Remove(C)),
                cc(5, 43, ConfChange::Remove(D)),
            ]
        );
        assert_eq!(f.state.hard_state.commit, LogIndex(43));
        assert_eq!(final_conf(&f.state, B), ConfState::with_voters([B]));
        let node = restarts(f.state, B);
        assert_eq!(node.committed(), LogIndex(43));
    }

    #[test]
    fn a_stale_commit_index_is_raised_to_the_snapshot() {
        // The commit-only hard state lagged behind a snapshot taken at 6: the commit
        // index is raised to it, and the entries after it are kept and committed.
        let mut s = three_members(5, 8);
        s.snapshot = SnapshotMeta {
            index: LogIndex(6),
            term: Term(2),
            conf: ConfState::with_voters([A, B, C]),
        };
        s.entries.retain(|e| e.index > LogIndex(6));
        s.applied = LogIndex(6);
        let f = force_new_cluster(s, A).expect("forced");
        assert_eq!(f.commit, LogIndex(6));
        assert_eq!(f.adopted, 2);
        assert_eq!(f.state.entries[0].index, LogIndex(7));
        assert_eq!(f.state.entries[2].index, LogIndex(9));
        restarts(f.state, A);
    }

    #[test]
    fn a_commit_index_past_the_log_is_refused() {
        let mut s = three_members(5, 5);
        s.hard_state.commit = LogIndex(9);
        assert_eq!(
            force_new_cluster(s, A).map(|_| ()),
            Err(RecoverError::CommitBeyondLog {
                commit: LogIndex(9),
                last: LogIndex(5)
            })
        );
    }
}
