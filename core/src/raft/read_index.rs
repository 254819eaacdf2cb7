//! Linearizable reads: ReadIndex confirmed by heartbeat rounds (batched: every read that
//! arrives before a round starts rides on it), and opt-in lease reads.

use std::collections::{BTreeSet, VecDeque};

use super::message::MessageBody;
use super::node::{RaftNode, Role};
use super::ready::ReadState;
use super::types::{LogIndex, MemberId, ReadCtx, Time};

/// Send times of this many recent rounds are kept for lease computation.
const ROUND_HISTORY: usize = 256;

#[derive(Debug)]
struct PendingRead {
    ctx: ReadCtx,
    from: MemberId,
    index: LogIndex,
    round: u64,
}

/// Read bookkeeping of one member (leader side and follower side).
#[derive(Debug, Default)]
pub(crate) struct ReadIndexState {
    /// The leader has committed an entry of its current term (reads before that could
    /// miss entries committed by an earlier leader).
    pub committed_in_term: bool,
    round: u64,
    round_times: VecDeque<(u64, Time)>,
    waiting_commit: Vec<(ReadCtx, MemberId)>,
    unbatched: Vec<(ReadCtx, MemberId)>,
    pending: VecDeque<PendingRead>,
    lease_until: Option<Time>,
    /// The planted lease bug's lease: never cleared when leadership ends.
    #[cfg(feature = "planted-bugs")]
    planted_lease_until: Option<Time>,
    forwarded: BTreeSet<ReadCtx>,
    pub ready: Vec<ReadState>,
    pub dropped: Vec<ReadCtx>,
}

impl ReadIndexState {
    pub fn start_round(&mut self, now: Time) -> u64 {
        self.round += 1;
        self.round_times.push_back((self.round, now));
        if self.round_times.len() > ROUND_HISTORY {
            self.round_times.pop_front();
        }
        self.round
    }

    pub fn has_unbatched(&self) -> bool {
        !self.unbatched.is_empty()
    }

    pub fn on_new_term(&mut self) {
        self.committed_in_term = false;
        self.round_times.clear();
        self.lease_until = None;
    }

    /// Leadership lost: no commit in term, no lease.
    fn reset_leadership(&mut self) {
        self.committed_in_term = false;
        self.lease_until = None;
    }
}

impl RaftNode {
    /// Entry point for a local read request.
    pub(crate) fn request_read(&mut self, ctx: ReadCtx) -> Result<(), super::error::ReadError> {
        if self.removed {
            return Err(super::error::ReadError::Removed);
        }
        #[cfg(feature = "planted-bugs")]
        if self.cfg.planted_bug == Some(super::config::PlantedBug::LeaseReadPastBound)
            && self.role != Role::Leader
            && self.reads.planted_lease_until.is_some_and(|t| self.now < t)
        {
            // A deposed leader still trusting its lease.
            let index = self.log.committed;
            self.complete_read(ctx, self.id, index);
            return Ok(());
        }
        if self.role == Role::Leader {
            self.leader_read(ctx, self.id);
            return Ok(());
        }
        if !self.leader.is_some() {
            return Err(super::error::ReadError::NoLeader);
        }
        self.reads.forwarded.insert(ctx);
        let m = self.message(self.leader, MessageBody::ReadIndex { ctx });
        self.msgs.push(m);
        Ok(())
    }

    /// Leader: a read from `from` (ourselves or a follower).
    pub(crate) fn leader_read(&mut self, ctx: ReadCtx, from: MemberId) {
        if !self.reads.committed_in_term {
            self.reads.waiting_commit.push((ctx, from));
            return;
        }
        let only_voter = self.conf.voters.len() == 1 && self.conf.voters.contains(&self.id);
        if only_voter || self.lease_valid() {
            let index = self.log.committed;
            self.complete_read(ctx, from, index);
            return;
        }
        self.reads.unbatched.push((ctx, from));
    }

    fn lease_valid(&self) -> bool {
        !self.timeout_now_sent
            && self.transferee.is_none()
            && self.reads.lease_until.is_some_and(|t| self.now < t)
    }

    fn complete_read(&mut self, ctx: ReadCtx, from: MemberId, index: LogIndex) {
        if from == self.id {
            self.reads.ready.push(ReadState { ctx, index });
        } else {
            let m = self.message(from, MessageBody::ReadIndexResponse { ctx, index });
            self.send(m);
        }
    }

    /// Starts one heartbeat round for every read that arrived since the last one.
    pub(crate) fn flush_reads(&mut self) {
        if self.reads.unbatched.is_empty() {
            return;
        }
        let round = self.reads.round + 1;
        let index = self.log.committed;
        for (ctx, from) in std::mem::take(&mut self.reads.unbatched) {
            self.reads.pending.push_back(PendingRead {
                ctx,
                from,
                index,
                round,
            });
        }
        self.broadcast_heartbeat();
    }

    pub(crate) fn ack_round(&mut self, from: MemberId, round: u64) {
        if round > self.reads.round || !self.conf.voters.contains(&from) {
            return;
        }
        if let Some(p) = self.progress.get_mut(&from) {
            p.acked_round = p.acked_round.max(round);
        }
        self.try_confirm_reads();
    }

    /// Releases every read whose round a quorum of voters acknowledged.
    pub(crate) fn try_confirm_reads(&mut self) {
        let Some(confirmed) = self.quorum_value(self.reads.round, 0, |p| p.acked_round) else {
            return;
        };
        if let Some(lease_ms) = self.cfg.lease_ms() {
            // The lease runs from when the confirmed round was *sent*: followers started
            // their own election timers no earlier than that.
            if let Some(&(_, sent)) = self.reads.round_times.iter().find(|(r, _)| *r == confirmed) {
                let until = sent.plus(lease_ms);
                #[cfg(feature = "planted-bugs")]
                {
                    self.reads.planted_lease_until = Some(until);
                }
                if self.reads.lease_until.is_none_or(|t| t < until) {
                    self.reads.lease_until = Some(until);
                }
            }
        }
        while let Some(r) = self.reads.pending.front() {
            if r.round > confirmed {
                break;
            }
            if let Some(r) = self.reads.pending.pop_front() {
                self.complete_read(r.ctx, r.from, r.index);
            }
        }
    }

    /// The first entry of this term committed: reads held back until now may proceed.
    pub(crate) fn on_first_commit_in_term(&mut self) {
        self.reads.committed_in_term = true;
        for (ctx, from) in std::mem::take(&mut self.reads.waiting_commit) {
            self.leader_read(ctx, from);
        }
    }

    /// Follower: the leader confirmed a forwarded read.
    pub(crate) fn complete_forwarded_read(&mut self, ctx: ReadCtx, index: LogIndex) {
        if self.reads.forwarded.remove(&ctx) {
            self.reads.ready.push(ReadState { ctx, index });
        }
    }

    /// The leader changed: reads forwarded to the old one will not be answered.
    pub(crate) fn drop_forwarded_reads(&mut self) {
        let dropped = std::mem::take(&mut self.reads.forwarded);
        self.reads.dropped.extend(dropped);
    }

    /// Leadership lost: reads this member asked for are reported dropped; reads it was
    /// confirming for followers are forgotten (they time out there).
    pub(crate) fn drop_leader_reads(&mut self) {
        let me = self.id;
        let mut dropped = Vec::new();
        for (ctx, from) in self
            .reads
            .waiting_commit
            .drain(..)
            .chain(self.reads.unbatched.drain(..))
        {
            if from == me {
                dropped.push(ctx);
            }
        }
        for r in self.reads.pending.drain(..) {
            if r.from == me {
                dropped.push(r.ctx);
            }
        }
        self.reads.dropped.extend(dropped);
        self.reads.reset_leadership();
    }
}
