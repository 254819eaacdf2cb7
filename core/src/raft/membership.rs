//! Membership changes and leadership transfer.
//!
//! Keel changes membership one member at a time, and a change takes effect when its entry
//! is applied (as etcd does with single-step changes). Any two configurations that differ
//! by one voter have overlapping majorities, so two leaders elected under adjacent
//! configurations always share a voter. The safety rule that makes this sufficient:
//!
//! 1. At most one change is in flight: a leader refuses a new one until the previous one
//!    is applied (`pending_conf_index`), so configurations in use differ by at most one.
//! 2. A new leader refuses changes until it has applied the no-op of its own term. This is
//!    the fix to the single-server-change bug described by Ongaro (raft-dev, 2015): a
//!    leader that has not committed in its term may hold a stale configuration, and a
//!    change appended on top of it could produce a configuration two steps away from one
//!    a previous leader was still using.
//!
//! Joint consensus would allow arbitrary changes in one step, but etcd's API only ever
//! adds, removes or promotes one member, so the simpler rule covers every etcd operation.

use super::error::{ConfChangeError, ProposeError, TransferError};
use super::message::MessageBody;
use super::node::{Proposed, RaftNode, Role};
use super::progress::Progress;
use super::types::{ConfChange, ConfState, EntryPayload, LogIndex, MemberId, Time};

/// Applies `cc` to `conf`; returns whether `me` was removed.
pub(crate) fn apply_to_conf(conf: &mut ConfState, cc: ConfChange, me: MemberId) -> bool {
    match cc {
        ConfChange::AddVoter(id) => {
            conf.learners.remove(&id);
            conf.voters.insert(id);
            false
        }
        ConfChange::AddLearner(id) => {
            // Demoting a voter to learner is not an etcd operation; only new members.
            if !conf.voters.contains(&id) {
                conf.learners.insert(id);
            }
            false
        }
        ConfChange::Remove(id) => {
            conf.voters.remove(&id);
            conf.learners.remove(&id);
            id == me
        }
    }
}

impl RaftNode {
    /// Leader: proposes a membership change, subject to the one-at-a-time rule.
    pub fn propose_conf_change(
        &mut self,
        now: Time,
        cc: ConfChange,
    ) -> Result<Proposed, ConfChangeError> {
        self.advance(now);
        if self.removed {
            return Err(ProposeError::Removed.into());
        }
        if self.role != Role::Leader {
            return Err(if self.leader.is_some() {
                ProposeError::NotLeader {
                    leader: Some(self.leader),
                }
            } else {
                ProposeError::NoLeader
            }
            .into());
        }
        if self.transferee.is_some() {
            return Err(ProposeError::TransferInProgress.into());
        }
        if self.pending_conf_index > self.log.applied {
            return Err(ConfChangeError::Pending);
        }
        match cc {
            ConfChange::AddVoter(id) => {
                if self.conf.voters.contains(&id) {
                    return Err(ConfChangeError::AlreadyMember(id));
                }
                if self.conf.learners.contains(&id) {
                    // etcd's promotion rule: the learner's match is at least 90% of ours.
                    let ours = self.log.last_index().0;
                    let theirs = self.progress.get(&id).map_or(0, |p| p.matched.0);
                    if theirs.saturating_mul(10) < ours.saturating_mul(9) {
                        return Err(ConfChangeError::LearnerNotReady);
                    }
                }
            }
            ConfChange::AddLearner(id) => {
                if self.conf.contains(id) {
                    return Err(ConfChangeError::AlreadyMember(id));
                }
            }
            ConfChange::Remove(id) => {
                if !self.conf.contains(id) {
                    return Err(ConfChangeError::NotMember(id));
                }
                if self.conf.voters.len() == 1 && self.conf.voters.contains(&id) {
                    return Err(ConfChangeError::LastVoter);
                }
            }
        }
        if !cc.member().is_some() {
            return Err(ConfChangeError::NotMember(cc.member()));
        }
        let proposed = self.propose_payload(EntryPayload::ConfChange(cc))?;
        if let Proposed::Appended { index, .. } = proposed {
            self.pending_conf_index = index;
        }
        Ok(proposed)
    }

    /// A committed change reached the application: raft adopts it now.
    pub(crate) fn apply_conf_change(&mut self, cc: ConfChange, index: LogIndex) {
        let removed_me = apply_to_conf(&mut self.conf, cc, self.id);
        if self.removed && !removed_me && self.conf.contains(self.id) {
            // Removed and added back by the next change before it could leave: it is a
            // member again and must take part in elections, or a cluster that counts on
            // it can never elect a leader (found by raft_properties, pinned in
            // replay_regressions).
            self.removed = false;
        }
        if self.role == Role::Leader {
            let next = self.log.last_index().next();
            let id = cc.member();
            match cc {
                ConfChange::AddVoter(_) | ConfChange::AddLearner(_) if id != self.id => {
                    self.departing.remove(&id);
                    self.progress
                        .entry(id)
                        .or_insert_with(|| Progress::new(next));
                }
                ConfChange::Remove(_) => {
                    // Keep replicating to the departing member (it no longer counts for
                    // any quorum) until it holds its removal, so it learns it was removed
                    // instead of waiting for a leader that stopped talking to it.
                    if self.progress.contains_key(&id) {
                        self.departing.insert(id, index);
                        self.release_departed(id);
                    }
                    if self.transferee.is_some_and(|(t, _)| t == id) {
                        self.transferee = None;
                    }
                }
                _ => {}
            }
        }
        if removed_me {
            self.removed = true;
            if self.role == Role::Leader {
                // Hand over to the most up-to-date voter instead of leaving the cluster to
                // wait out an election timeout.
                let best = self
                    .progress
                    .iter()
                    .filter(|(id, _)| self.conf.voters.contains(id))
                    .max_by_key(|(id, p)| (p.matched, std::cmp::Reverse(**id)))
                    .map(|(id, _)| *id);
                if let Some(target) = best {
                    self.send_timeout_now(target);
                }
            }
            if self.role != Role::Follower || self.leader == self.id {
                let term = self.term;
                self.become_follower(term, MemberId::NONE);
            }
        } else if self.role == Role::Leader {
            // A smaller quorum may commit more; a larger one changes nothing committed.
            self.maybe_commit();
        }
    }

    /// Stops replicating to a removed member once it holds its removal entry, after one
    /// last heartbeat that carries the commit index past it.
    pub(crate) fn release_departed(&mut self, id: MemberId) {
        let Some(&index) = self.departing.get(&id) else {
            return;
        };
        let Some(p) = self.progress.get(&id) else {
            self.departing.remove(&id);
            return;
        };
        if p.matched < index {
            return;
        }
        let commit = p.matched.min(self.log.committed);
        let m = self.message(id, MessageBody::Heartbeat { commit, round: 0 });
        self.send(m);
        self.progress.remove(&id);
        self.departing.remove(&id);
    }

    /// Leader: starts handing leadership to `target`.
    pub(crate) fn begin_transfer(&mut self, target: MemberId) -> Result<(), TransferError> {
        if target == self.id {
            return Ok(());
        }
        if !self.conf.voters.contains(&target) {
            return Err(TransferError::NotVoter(target));
        }
        if self.transferee.is_some_and(|(t, _)| t == target) {
            return Ok(());
        }
        let deadline = self.now.plus(self.cfg.election_timeout_ms);
        self.transferee = Some((target, deadline));
        let caught_up = self
            .progress
            .get(&target)
            .is_some_and(|p| p.matched == self.log.last_index());
        if caught_up {
            self.send_timeout_now(target);
        }
        // Otherwise the next broadcast catches it up and the acknowledgement triggers it.
        Ok(())
    }

    pub(crate) fn send_timeout_now(&mut self, to: MemberId) {
        self.timeout_now_sent = true;
        let m = self.message(to, MessageBody::TimeoutNow);
        self.send(m);
    }
}
