//! Timers, elections (with pre-vote and check-quorum) and message dispatch by term.

use super::message::{Message, MessageBody};
use super::node::{RaftNode, Role};
use super::types::{LogIndex, MemberId, Term};

impl RaftNode {
    /// Fires every timer that is due at `self.now`.
    pub(crate) fn fire_timers(&mut self) {
        let now = self.now;
        if self.role == Role::Leader {
            if now >= self.heartbeat_deadline {
                self.heartbeat_deadline = now.plus(self.cfg.heartbeat_interval_ms);
                self.broadcast_heartbeat();
            }
            if let Some((_, deadline)) = self.transferee {
                if now >= deadline {
                    self.transferee = None; // Abort: the target did not take over in time.
                }
            }
            if now >= self.election_deadline {
                self.election_deadline = now.plus(self.cfg.election_timeout_ms);
                if self.cfg.check_quorum && !self.quorum_recently_active() {
                    let term = self.term;
                    self.become_follower(term, MemberId::NONE);
                }
            }
        } else if now >= self.election_deadline {
            if self.promotable() {
                if self.cfg.pre_vote {
                    self.campaign_pre_vote();
                } else {
                    self.campaign(false);
                }
            } else {
                self.reset_election_deadline();
            }
        }
    }

    /// Check-quorum: did a quorum of voters (counting ourselves) talk to us since the last
    /// check? Resets the activity marks for the next period.
    fn quorum_recently_active(&mut self) -> bool {
        let mut active = 0;
        for id in &self.conf.voters {
            if *id == self.id {
                active += 1;
            } else if let Some(p) = self.progress.get_mut(id) {
                if p.recent_active {
                    active += 1;
                }
            }
        }
        for p in self.progress.values_mut() {
            p.recent_active = false;
        }
        active >= self.conf.quorum()
    }

    /// Whether this member believes a leader is alive (refuses to help depose it).
    fn in_lease(&self) -> bool {
        if self.cfg.check_quorum && self.now < self.vote_fence_until {
            return true;
        }
        if !self.cfg.check_quorum || !self.leader.is_some() {
            return false;
        }
        self.role == Role::Leader
            || self.now.since(self.leader_contact) < self.cfg.election_timeout_ms
    }

    pub(crate) fn campaign_pre_vote(&mut self) {
        self.role = Role::PreCandidate;
        self.leader = MemberId::NONE;
        self.votes.clear();
        self.reset_election_deadline();
        self.request_votes(true, false);
    }

    /// Starts an election in the next term. `transfer` marks a campaign ordered by the
    /// previous leader (TimeoutNow), which voters honour even inside a leader lease.
    pub(crate) fn campaign(&mut self, transfer: bool) {
        if self.term == Term(u64::MAX) {
            // Only a hostile peer can push the term this far; there is no next term to
            // campaign in, and re-campaigning in this one could vote twice.
            return;
        }
        self.drop_forwarded_reads();
        self.term = self.term.next();
        self.vote = self.id;
        self.role = Role::Candidate;
        self.leader = MemberId::NONE;
        self.votes.clear();
        self.reset_election_deadline();
        self.request_votes(false, transfer);
    }

    fn request_votes(&mut self, pre_vote: bool, transfer: bool) {
        self.votes.insert(self.id, true);
        if self.tally() == Some(true) {
            self.won_vote(pre_vote);
            return;
        }
        let term = if pre_vote {
            self.term.next()
        } else {
            self.term
        };
        let last_index = self.log.last_index();
        let last_term = self.log.last_term();
        let voters: Vec<MemberId> = self.conf.voters.iter().copied().collect();
        for to in voters {
            if to == self.id {
                continue;
            }
            let msg = Message {
                from: self.id,
                to,
                term,
                body: MessageBody::RequestVote {
                    pre_vote,
                    last_index,
                    last_term,
                    transfer,
                },
            };
            if pre_vote {
                self.msgs.push(msg); // Changes no state: nothing to wait for.
            } else {
                self.send_durable(msg); // Our own vote must be durable first.
            }
        }
    }

    /// `Some(true)` won, `Some(false)` lost, `None` undecided.
    fn tally(&self) -> Option<bool> {
        let q = self.conf.quorum();
        let (mut yes, mut no) = (0, 0);
        for id in &self.conf.voters {
            match self.votes.get(id) {
                Some(true) => yes += 1,
                Some(false) => no += 1,
                None => {}
            }
        }
        if yes >= q {
            Some(true)
        } else if no > self.conf.voters.len() - q {
            Some(false)
        } else {
            None
        }
    }

    fn won_vote(&mut self, pre_vote: bool) {
        if pre_vote {
            self.campaign(false);
        } else {
            self.become_leader();
        }
    }

    /// Dispatches a peer message after reconciling terms.
    pub(crate) fn handle_message(&mut self, m: Message) {
        if m.to != self.id || m.from == self.id || !m.from.is_some() {
            return; // Misrouted or forged.
        }
        if !m.body.is_term_free() {
            if m.term > self.term {
                if let MessageBody::RequestVote { transfer, .. } = m.body {
                    if !transfer && self.in_lease() {
                        // We heard from a live leader within the election timeout: do not
                        // help depose it (and do not even bump our term).
                        return;
                    }
                }
                match m.body {
                    MessageBody::RequestVote { pre_vote: true, .. } => {}
                    MessageBody::VoteResponse {
                        pre_vote: true,
                        granted: true,
                    } => {}
                    _ => {
                        let leader = if m.body.is_from_leader() {
                            m.from
                        } else {
                            MemberId::NONE
                        };
                        self.become_follower(m.term, leader);
                    }
                }
            } else if m.term < self.term {
                match m.body {
                    MessageBody::Append { .. } | MessageBody::Heartbeat { .. }
                        if self.cfg.check_quorum || self.cfg.pre_vote =>
                    {
                        // A stale leader (e.g. back from a partition) learns our term and
                        // steps down; without this, pre-vote could leave it stuck.
                        let reply = self.message(
                            m.from,
                            MessageBody::AppendResponse {
                                index: LogIndex(0),
                                reject: None,
                            },
                        );
                        self.send(reply);
                    }
                    MessageBody::RequestVote { pre_vote: true, .. } => {
                        let reply = self.message(
                            m.from,
                            MessageBody::VoteResponse {
                                pre_vote: true,
                                granted: false,
                            },
                        );
                        self.send(reply);
                    }
                    _ => {}
                }
                return;
            }
        }

        if let MessageBody::RequestVote {
            pre_vote,
            last_index,
            last_term,
            ..
        } = m.body
        {
            self.handle_vote_request(m.from, m.term, pre_vote, last_index, last_term);
            return;
        }
        match self.role {
            Role::Leader => self.step_leader(m),
            Role::Candidate | Role::PreCandidate => self.step_candidate(m),
            Role::Follower => self.step_follower(m),
        }
    }

    fn handle_vote_request(
        &mut self,
        from: MemberId,
        term: Term,
        pre_vote: bool,
        last_index: LogIndex,
        last_term: Term,
    ) {
        let can_vote = self.vote == from
            || (!self.vote.is_some() && !self.leader.is_some())
            || (pre_vote && term > self.term);
        let grant = can_vote && self.log.is_up_to_date(last_index, last_term);
        if grant && !pre_vote {
            self.vote = from;
            self.reset_election_deadline();
        }
        let reply = Message {
            from: self.id,
            to: from,
            // A granted pre-vote answers in the candidate's future term so it counts.
            term: if grant && pre_vote { term } else { self.term },
            body: MessageBody::VoteResponse {
                pre_vote,
                granted: grant,
            },
        };
        if grant && !pre_vote {
            self.send_durable(reply);
        } else {
            self.send(reply);
        }
    }

    fn step_candidate(&mut self, m: Message) {
        match m.body {
            MessageBody::Append { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::SnapshotChunk { .. } => {
                // A leader exists in our term.
                let term = m.term;
                self.become_follower(term, m.from);
                self.step_follower(m);
            }
            MessageBody::VoteResponse { pre_vote, granted } => {
                let expecting_pre = self.role == Role::PreCandidate;
                if pre_vote != expecting_pre || !self.conf.voters.contains(&m.from) {
                    return;
                }
                self.votes.entry(m.from).or_insert(granted);
                match self.tally() {
                    Some(true) => self.won_vote(pre_vote),
                    Some(false) => {
                        let term = self.term;
                        self.become_follower(term, MemberId::NONE);
                    }
                    None => {}
                }
            }
            _ => {}
        }
    }

    fn step_follower(&mut self, m: Message) {
        match m.body {
            MessageBody::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            } => {
                self.heard_from_leader(m.from);
                self.handle_append(m.from, m.term, prev_index, prev_term, entries, commit);
            }
            MessageBody::Heartbeat { commit, round } => {
                self.heard_from_leader(m.from);
                self.log.commit_to(commit);
                let reply = self.message(m.from, MessageBody::HeartbeatResponse { round });
                self.send(reply);
            }
            MessageBody::SnapshotChunk {
                meta,
                total,
                offset,
                data,
            } => {
                self.heard_from_leader(m.from);
                self.handle_snapshot_chunk(m.from, meta, total, offset, data);
            }
            MessageBody::TimeoutNow if self.promotable() => self.campaign(true),
            MessageBody::ReadIndexResponse { ctx, index } if m.from == self.leader => {
                self.complete_forwarded_read(ctx, index);
            }
            // Proposals, reads and transfer requests reaching a follower were forwarded by
            // someone who thinks we lead: drop them rather than bounce them around (two
            // members with stale views of the leader would forward them forever).
            _ => {}
        }
    }

    fn heard_from_leader(&mut self, from: MemberId) {
        self.leader = from;
        self.leader_contact = self.now;
        self.reset_election_deadline();
    }
}
