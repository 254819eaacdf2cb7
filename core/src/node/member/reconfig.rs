//! Runtime membership changes: etcd's MemberAdd, MemberRemove, MemberPromote (raft
//! configuration changes, proposed by the leader) and MemberUpdate (a replicated command
//! any member may propose), with etcd's checks and errors (`--strict-reconfig-check`
//! included).
//!
//! A MemberAdd is two consecutive entries: the raft change (which makes raft replicate
//! to the new member) and an `AddMember` command carrying its peer URLs (raft changes
//! carry only IDs). Both are appended in one step, so they persist and replicate
//! together; the caller is answered when the second is applied.

use crate::node::{Command, MemberInfo, Outcome};
use crate::raft::{
    ConfChange, ConfChangeError, EntryPayload, LogIndex, MemberId, Proposed, Role, Time,
};

use super::{propose_error, Call, Member, MemberError, Note, Response};

/// etcd's `HealthInterval` (5 s): a peer heard from within it counts as connected.
const HEALTH_INTERVAL_MS: u64 = 5_000;

/// A membership change asked for by a client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberChange {
    /// Add a member (its ID derived by the caller as etcd does).
    Add {
        /// The new member's ID.
        id: u64,
        /// Its peer URLs.
        peer_urls: Vec<String>,
        /// Add as a non-voting learner.
        learner: bool,
    },
    /// Remove a member.
    Remove {
        /// The member.
        id: u64,
    },
    /// Make a learner a voter.
    Promote {
        /// The learner.
        id: u64,
    },
    /// Change a member's peer URLs.
    Update {
        /// The member.
        id: u64,
        /// Its new peer URLs.
        peer_urls: Vec<String>,
    },
}

impl Member {
    /// Starts `change` for `call`, or says why it is refused.
    pub(super) fn change_members(
        &mut self,
        now: Time,
        change: MemberChange,
        call: Call,
    ) -> Result<(), MemberError> {
        if let MemberChange::Update { id, peer_urls } = change {
            // A replicated command: any member may propose it.
            if !self.sm.members.contains_key(&id) {
                return Err(MemberError::MemberNotFound);
            }
            if self.url_taken(&peer_urls, id) {
                return Err(MemberError::PeerUrlExists);
            }
            self.propose(
                now,
                Command::UpdateMember { id, peer_urls },
                None,
                Some(call),
            );
            return Ok(());
        }
        if self.raft.role() != Role::Leader {
            // The gRPC layer forwards to the leader.
            return Err(if self.raft.leader().is_some() {
                MemberError::NotLeader
            } else {
                MemberError::NoLeader
            });
        }
        let strict = self.cfg.strict_reconfig;
        let (me, now_ms) = (self.cfg.id, now);
        let cc = match &change {
            MemberChange::Add {
                id,
                peer_urls,
                learner,
            } => {
                if self.sm.members.contains_key(id) {
                    return Err(MemberError::MemberExists);
                }
                if self.url_taken(peer_urls, *id) {
                    return Err(MemberError::PeerUrlExists);
                }
                if *learner && self.sm.members.values().filter(|m| m.learner).count() >= 1 {
                    return Err(MemberError::TooManyLearners);
                }
                if strict && !*learner {
                    if !ready_for_voter(self.voters(), 1, 0) {
                        return Err(MemberError::NotEnoughStarted);
                    }
                    if !self.connected_to_all_voters(now_ms) {
                        return Err(MemberError::Unhealthy);
                    }
                }
                let id = MemberId(*id);
                if *learner {
                    ConfChange::AddLearner(id)
                } else {
                    ConfChange::AddVoter(id)
                }
            }
            MemberChange::Remove { id } => {
                let Some(m) = self.sm.members.get(id) else {
                    return Err(MemberError::MemberNotFound);
                };
                if strict && !m.learner {
                    let others: Vec<&MemberInfo> =
                        self.voters().into_iter().filter(|v| v.id != *id).collect();
                    if !ready_for_voter(others, 0, 0) {
                        return Err(MemberError::NotEnoughStarted);
                    }
                    // A member this leader does not hear from is safe to remove; otherwise
                    // the members still connected after the removal must form a quorum.
                    if *id == me || self.heard_recently(*id, now_ms) {
                        let voters = self.voters();
                        let active = voters
                            .iter()
                            .filter(|v| v.id == me || self.heard_recently(v.id, now_ms))
                            .count();
                        if active - 1 < 1 + (voters.len() - 1) / 2 {
                            return Err(MemberError::Unhealthy);
                        }
                    }
                }
                ConfChange::Remove(MemberId(*id))
            }
            MemberChange::Promote { id } => {
                let Some(m) = self.sm.members.get(id) else {
                    return Err(MemberError::MemberNotFound);
                };
                if !m.learner {
                    return Err(MemberError::MemberNotLearner);
                }
                // The learner counts as started and as a future voter.
                if strict && !ready_for_voter(self.voters(), 1, 1) {
                    return Err(MemberError::NotEnoughStarted);
                }
                ConfChange::AddVoter(MemberId(*id))
            }
            MemberChange::Update { .. } => return Ok(()),
        };
        let index = match self.raft.propose_conf_change(now, cc) {
            Ok(Proposed::Appended { index, .. }) => index,
            Ok(Proposed::Forwarded) => return Err(MemberError::NotLeader),
            Err(e) => return Err(conf_change_error(e)),
        };
        self.out.notes.push(Note::ChangeProposed {
            change: change.clone(),
            index,
        });
        match change {
            MemberChange::Add {
                id,
                peer_urls,
                learner,
            } => self.propose(
                now,
                Command::AddMember {
                    id,
                    peer_urls,
                    learner,
                },
                None,
                Some(call),
            ),
            _ => self.conf_waiting.push((index, cc, call.token)),
        }
        Ok(())
    }

    /// A configuration change was applied at `index`: answer whoever asked for it.
    pub(super) fn conf_change_applied(&mut self, index: LogIndex, payload: &EntryPayload) {
        let header = self.header();
        let mut i = 0;
        while i < self.conf_waiting.len() {
            if self.conf_waiting[i].0 == index {
                let (_, cc, token) = self.conf_waiting.swap_remove(i);
                let r = match payload {
                    EntryPayload::ConfChange(applied) if *applied == cc => Ok(Response::Applied {
                        outcome: Outcome::Member,
                        header,
                    }),
                    // Another leader's entry took the index: ours was never committed.
                    _ => Err(MemberError::LeaderChanged),
                };
                self.out.replies.push((token, r));
            } else {
                i += 1;
            }
        }
    }

    fn voters(&self) -> Vec<&MemberInfo> {
        self.sm.members.values().filter(|m| !m.learner).collect()
    }

    fn url_taken(&self, urls: &[String], except: u64) -> bool {
        self.sm
            .members
            .values()
            .filter(|m| m.id != except)
            .any(|m| m.peer_urls.iter().any(|u| urls.contains(u)))
    }

    fn heard_recently(&self, id: u64, now: Time) -> bool {
        self.heard
            .get(&id)
            .is_some_and(|t| now.since(*t) < HEALTH_INTERVAL_MS)
    }

    /// etcd's `isConnectedFullySince`: this leader heard from every other voter lately.
    fn connected_to_all_voters(&self, now: Time) -> bool {
        self.voters()
            .iter()
            .all(|v| v.id == self.cfg.id || self.heard_recently(v.id, now))
    }
}

/// etcd's `IsReadyToAddVotingMember` family: the voters that have started (published
/// their name), plus `extra_started`, must form a quorum of the voters plus
/// `extra_members`. Adding a second member to a one-member cluster is always allowed.
fn ready_for_voter(voters: Vec<&MemberInfo>, extra_members: usize, extra_started: usize) -> bool {
    let nmembers = voters.len() + extra_members;
    let nstarted = voters.iter().filter(|m| !m.name.is_empty()).count() + extra_started;
    if extra_members == 1 && extra_started == 0 && nstarted == 1 && nmembers == 2 {
        return true;
    }
    // A quorum: more than half.
    nstarted > nmembers / 2
}

fn conf_change_error(e: ConfChangeError) -> MemberError {
    match e {
        ConfChangeError::Propose(p) => propose_error(p),
        ConfChangeError::Pending => MemberError::ChangeInProgress,
        ConfChangeError::AlreadyMember(_) => MemberError::MemberExists,
        ConfChangeError::NotMember(_) => MemberError::MemberNotFound,
        ConfChangeError::LastVoter => MemberError::NotEnoughStarted,
        ConfChangeError::LearnerNotReady => MemberError::LearnerNotReady,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn voters(started: usize, unstarted: usize) -> Vec<MemberInfo> {
        (0..started + unstarted)
            .map(|i| MemberInfo {
                id: i as u64 + 1,
                name: if i < started {
                    format!("m{i}")
                } else {
                    String::new()
                },
                ..MemberInfo::default()
            })
            .collect()
    }

    #[test]
    fn strict_reconfig_matches_etcd() {
        let check = |s, u, em, es| ready_for_voter(voters(s, u).iter().collect(), em, es);
        // Add: 1 started of 1 → 2 members is the restore special case.
        assert!(check(1, 0, 1, 0));
        // Add: 3 started → 4 members needs 3 started.
        assert!(check(3, 0, 1, 0));
        // Add: 2 started, 1 unstarted → 4 members, quorum 3: refused.
        assert!(!check(2, 1, 1, 0));
        // Add to a cluster with one started and one unstarted member: 3 members, quorum 2.
        assert!(!check(1, 1, 1, 0));
        // Remove from 3 started (others: 2 started of 2).
        assert!(check(2, 0, 0, 0));
        // Remove where the others are 1 started + 1 unstarted: quorum of 2 is 2.
        assert!(!check(1, 1, 0, 0));
        // Promote: the learner counts as started.
        assert!(check(1, 1, 1, 1));
        assert!(!check(1, 2, 1, 1));
    }
}
