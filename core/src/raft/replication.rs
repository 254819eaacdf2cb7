//! Log replication: the leader's side (pipelined appends, flow control, commit) and the
//! follower's side (consistency check, conflict hints).

use super::log::AppendOutcome;
use super::message::{Message, MessageBody, RejectHint};
use super::node::{RaftNode, Role};
use super::progress::{Progress, ReplState};
use super::types::{Entry, EntryPayload, LogIndex, MemberId, Term};

impl RaftNode {
    pub(crate) fn become_leader(&mut self) {
        self.role = Role::Leader;
        self.leader = self.id;
        self.votes.clear();
        self.transferee = None;
        self.timeout_now_sent = false;
        self.uncommitted_bytes = 0;
        let next = self.log.last_index().next();
        self.progress.clear();
        self.departing.clear();
        let members: Vec<MemberId> = self.conf.members().filter(|id| *id != self.id).collect();
        for id in members {
            self.progress.insert(id, Progress::new(next));
        }
        // Commit everything from earlier terms by committing an entry of our own.
        let index = next;
        self.log.append_own(Entry {
            term: self.term,
            index,
            payload: EntryPayload::Empty,
        });
        // Safety rule for membership: no configuration change until this leader has
        // applied an entry of its own term (which implies every earlier one is applied).
        self.pending_conf_index = index;
        self.heartbeat_deadline = self.now.plus(self.cfg.heartbeat_interval_ms);
        self.election_deadline = self.now.plus(self.cfg.election_timeout_ms);
        self.reads.on_new_term();
        self.maybe_commit();
    }

    pub(crate) fn step_leader(&mut self, m: Message) {
        let from = m.from;
        match m.body {
            MessageBody::AppendResponse { index, reject } => {
                self.handle_append_response(from, index, reject);
            }
            MessageBody::HeartbeatResponse { round } => {
                let Some(pr) = self.progress.get_mut(&from) else {
                    return;
                };
                pr.recent_active = true;
                if let ReplState::Probe { paused } = &mut pr.state {
                    *paused = false;
                }
                let behind = pr.matched < self.log.last_index();
                let replicating = pr.state == ReplState::Replicate;
                self.resend_stalled_snapshot(from);
                if behind && replicating {
                    // Appends in flight may have been lost: an empty append at `next`
                    // makes the follower reject if it has a gap, which resets us to probe.
                    self.send_append_inner(from, false);
                }
                if round > 0 {
                    self.ack_round(from, round);
                }
            }
            MessageBody::SnapshotAck {
                index,
                received,
                resend,
            } => {
                self.handle_snapshot_ack(from, index, received, resend);
            }
            MessageBody::Propose { payloads } => {
                if !self.conf.contains(from) {
                    return;
                }
                // Only application data may be forwarded: a membership change must pass
                // `propose_conf_change`'s one-at-a-time checks on the leader itself.
                for p in payloads
                    .into_iter()
                    .filter(|p| matches!(p, EntryPayload::Normal(_)))
                {
                    // Forwarded proposals are best effort: a full leader drops them and
                    // the client's request times out, as in etcd.
                    if self.propose_payload(p).is_err() {
                        break;
                    }
                }
            }
            MessageBody::ReadIndex { ctx } if self.conf.contains(from) => {
                self.leader_read(ctx, from);
            }
            MessageBody::TransferLeader { target } => {
                let _ = self.begin_transfer(target);
            }
            _ => {}
        }
    }

    fn handle_append_response(
        &mut self,
        from: MemberId,
        index: LogIndex,
        reject: Option<RejectHint>,
    ) {
        let last = self.log.last_index();
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        pr.recent_active = true;
        if let Some(hint) = reject {
            // Skip every entry of the follower's conflicting term at once.
            let probe = if hint.term.0 > 0 {
                self.log.find_conflict_by_term(hint.index, hint.term).0
            } else {
                hint.index
            };
            let Some(pr) = self.progress.get_mut(&from) else {
                return;
            };
            if pr.maybe_decrease_to(index, probe) && pr.state == ReplState::Replicate {
                pr.become_probe();
            }
            return;
        }
        if index > last {
            return; // Acknowledges entries we never sent: ignore.
        }
        let prev_matched = pr.matched;
        if !pr.maybe_update(index) {
            if let ReplState::Replicate = pr.state {
                pr.inflights.free_to(index);
            }
            return;
        }
        match pr.state {
            ReplState::Probe { .. } => pr.become_replicate(),
            ReplState::Snapshot { index: snap, .. } if pr.matched >= snap => {
                pr.become_probe();
                pr.become_replicate();
            }
            ReplState::Replicate => pr.inflights.free_to(index),
            ReplState::Snapshot { .. } => {}
        }
        let matched = pr.matched;
        if matched > prev_matched {
            self.maybe_commit();
            self.release_departed(from);
        }
        if let Some((target, _)) = self.transferee {
            if target == from && matched == self.log.last_index() {
                self.send_timeout_now(target);
            }
        }
    }

    /// Advances the commit index to the highest current-term index held by a quorum.
    pub(crate) fn maybe_commit(&mut self) {
        let Some(q) = self.quorum_value(self.log.stable, LogIndex(0), |p| p.matched) else {
            return;
        };
        #[cfg(feature = "planted-bugs")]
        let q = match self.cfg.planted_bug {
            Some(super::config::PlantedBug::CommitWithoutQuorum) => self.log.stable,
            _ => q,
        };
        let first_in_term = !self.reads.committed_in_term;
        if self.log.maybe_commit(q, self.term) {
            self.commit_dirty = true;
            if first_in_term {
                self.on_first_commit_in_term();
            }
        }
    }

    /// Sends whatever each follower is ready for: new entries within its flow-control
    /// window, a probe, snapshot chunks, or an empty append carrying a new commit index.
    pub(crate) fn broadcast_append(&mut self) {
        let commit_dirty = std::mem::take(&mut self.commit_dirty);
        let ids: Vec<MemberId> = self.progress.keys().copied().collect();
        for id in ids {
            let mut sent = false;
            while let Some(pr) = self.progress.get(&id) {
                let wants_more = pr.next <= self.log.last_index();
                let can = pr.can_send(self.cfg.max_inflight_msgs, self.cfg.max_inflight_bytes);
                if let ReplState::Snapshot { .. } = pr.state {
                    self.send_snapshot_chunks(id);
                    break;
                }
                if !can || (!wants_more && (sent || !commit_dirty)) {
                    break;
                }
                let before = (pr.next, pr.state);
                self.send_append(id);
                sent = true;
                if self.progress.get(&id).map(|p| (p.next, p.state)) == Some(before) {
                    break; // Nothing advanced (e.g. waiting for a snapshot image).
                }
                if !matches!(
                    self.progress.get(&id).map(|p| p.state),
                    Some(ReplState::Replicate)
                ) {
                    break;
                }
            }
        }
    }

    /// Sends one append (or starts a snapshot) to `to`.
    pub(crate) fn send_append(&mut self, to: MemberId) {
        self.send_append_inner(to, true);
    }

    fn send_append_inner(&mut self, to: MemberId, with_entries: bool) {
        let Some(pr) = self.progress.get(&to) else {
            return;
        };
        let next = pr.next;
        let prev = next.prev();
        let Some(prev_term) = self.log.term(prev) else {
            self.start_snapshot(to);
            return;
        };
        if next < self.log.first_index() {
            self.start_snapshot(to);
            return;
        }
        let max_count = match pr.state {
            // A probe carries one entry at most: it is likely to be rejected.
            ReplState::Probe { .. } => 1,
            _ => usize::MAX,
        };
        let entries = if with_entries {
            self.log
                .entries_from(next, self.cfg.max_append_bytes, max_count)
        } else {
            Vec::new()
        };
        let bytes: u64 = entries.iter().map(Entry::size).sum();
        let last = entries.last().map_or(prev, |e| e.index);
        let had_entries = !entries.is_empty();
        let msg = self.message(
            to,
            MessageBody::Append {
                prev_index: prev,
                prev_term,
                entries,
                commit: self.log.committed,
            },
        );
        self.send(msg);
        if let Some(pr) = self.progress.get_mut(&to) {
            pr.sent_append(last, bytes, had_entries);
        }
    }

    /// Whether some follower could be sent entries right now.
    pub(crate) fn can_send_more(&self) -> bool {
        let last = self.log.last_index();
        self.progress.values().any(|p| {
            p.next <= last && p.can_send(self.cfg.max_inflight_msgs, self.cfg.max_inflight_bytes)
        })
    }

    pub(crate) fn broadcast_heartbeat(&mut self) {
        let round = self.reads.start_round(self.now);
        let ids: Vec<(MemberId, LogIndex)> = self
            .progress
            .iter()
            .map(|(id, p)| (*id, p.matched))
            .collect();
        for (id, matched) in ids {
            let msg = self.message(
                id,
                MessageBody::Heartbeat {
                    commit: matched.min(self.log.committed),
                    round,
                },
            );
            self.send(msg);
        }
        // Reads waiting on this round with no peers to confirm them are done now.
        self.try_confirm_reads();
    }

    /// Follower: the consistency check and append.
    pub(crate) fn handle_append(
        &mut self,
        leader: MemberId,
        term: Term,
        prev_index: LogIndex,
        prev_term: Term,
        entries: Vec<Entry>,
        commit: LogIndex,
    ) {
        if !well_formed(prev_index, prev_term, term, &entries) {
            return; // A malformed append says nothing trustworthy: drop it.
        }
        if prev_index < self.log.committed {
            // Everything up to our commit index matches; tell the leader where to resume.
            let reply = self.message(
                leader,
                MessageBody::AppendResponse {
                    index: self.log.committed,
                    reject: None,
                },
            );
            self.send_durable(reply);
            return;
        }
        match self.log.try_append(prev_index, prev_term, &entries) {
            AppendOutcome::Matched {
                last_new,
                truncated_at,
            } => {
                if let Some(at) = truncated_at {
                    self.clamp_inflight_batches(at.prev());
                }
                self.log.commit_to(commit.min(last_new));
                let reply = self.message(
                    leader,
                    MessageBody::AppendResponse {
                        index: last_new,
                        reject: None,
                    },
                );
                self.send_durable(reply);
            }
            AppendOutcome::Mismatch => {
                let (index, term) = self.log.find_conflict_by_term(prev_index, prev_term);
                let reply = self.message(
                    leader,
                    MessageBody::AppendResponse {
                        index: prev_index,
                        reject: Some(RejectHint { index, term }),
                    },
                );
                self.send(reply);
            }
            AppendOutcome::ConflictsWithCommitted => {
                // Only a leader violating raft could ask this; refuse to lose committed
                // entries and say nothing.
            }
        }
    }
}

/// Entries must follow `prev` contiguously with non-decreasing terms no newer than the
/// message's term.
fn well_formed(prev_index: LogIndex, prev_term: Term, term: Term, entries: &[Entry]) -> bool {
    // Indices near u64::MAX can only come from a hostile peer; refusing them keeps every
    // later `+ 1` from overflowing.
    if prev_term > term || prev_index.0 > u64::MAX / 2 {
        return false;
    }
    let mut expect = prev_index.next();
    let mut last_term = prev_term;
    for e in entries {
        if e.index != expect || e.term < last_term || e.term > term {
            return false;
        }
        expect = expect.next();
        last_term = e.term;
    }
    true
}
