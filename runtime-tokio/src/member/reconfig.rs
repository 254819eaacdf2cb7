//! Runtime membership changes on the member task: etcd's MemberAdd, MemberRemove,
//! MemberPromote (raft configuration changes, proposed by the leader) and MemberUpdate
//! (a replicated command any member may propose), with etcd's checks and errors.
//!
//! A MemberAdd is two consecutive entries: the raft change (which makes raft replicate
//! to the new member) and an `AddMember` command carrying its peer URLs (raft changes
//! carry only IDs). Both are appended in one step, so they persist and replicate
//! together; the client is answered when the second is applied.

use std::time::{Duration, Instant};

use keel_core::node::{Command, MemberInfo, Outcome};
use keel_core::raft::{
    ConfChange, ConfChangeError, EntryPayload, LogIndex, MemberId, Proposed, Role,
};

use super::driver::{propose_error, Core, Reply};
use super::ServerError;

/// etcd's `HealthInterval`: a peer heard from within it counts as connected.
const HEALTH_INTERVAL: Duration = Duration::from_secs(5);

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

impl Core {
    pub(super) fn change_members(&mut self, change: MemberChange, reply: Reply) {
        if let Err(e) = self.try_change(change, reply) {
            // `try_change` hands the reply back only on refusal.
            let (e, reply) = *e;
            let _ = reply.send(Err(e));
        }
    }

    #[allow(clippy::type_complexity)]
    fn try_change(
        &mut self,
        change: MemberChange,
        reply: Reply,
    ) -> Result<(), Box<(ServerError, Reply)>> {
        let refuse = |e: ServerError, reply: Reply| Err(Box::new((e, reply)));
        if let MemberChange::Update { id, peer_urls } = change {
            // A replicated command: any member may propose it.
            if !self.sm.members.contains_key(&id) {
                return refuse(ServerError::MemberNotFound, reply);
            }
            if self.url_taken(&peer_urls, id) {
                return refuse(ServerError::PeerUrlExists, reply);
            }
            self.propose(Command::UpdateMember { id, peer_urls }, Some(reply));
            return Ok(());
        }
        if self.raft.role() != Role::Leader {
            // The gRPC layer forwards to the leader.
            return refuse(
                if self.raft.leader().is_some() {
                    ServerError::NotLeader
                } else {
                    ServerError::NoLeader
                },
                reply,
            );
        }
        let strict = self.cfg.strict_reconfig;
        let cc = match &change {
            MemberChange::Add {
                id,
                peer_urls,
                learner,
            } => {
                if self.sm.members.contains_key(id) {
                    return refuse(ServerError::MemberExists, reply);
                }
                if self.url_taken(peer_urls, *id) {
                    return refuse(ServerError::PeerUrlExists, reply);
                }
                if *learner && self.sm.members.values().filter(|m| m.learner).count() >= 1 {
                    return refuse(ServerError::TooManyLearners, reply);
                }
                if strict && !*learner {
                    if !ready_for_voter(self.voters(), 1, 0) {
                        return refuse(ServerError::NotEnoughStarted, reply);
                    }
                    if !self.connected_to_all_voters() {
                        return refuse(ServerError::Unhealthy, reply);
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
                    return refuse(ServerError::MemberNotFound, reply);
                };
                if strict && !m.learner {
                    let others: Vec<&MemberInfo> =
                        self.voters().into_iter().filter(|v| v.id != *id).collect();
                    if !ready_for_voter(others, 0, 0) {
                        return refuse(ServerError::NotEnoughStarted, reply);
                    }
                    // A member this leader does not hear from is safe to remove; otherwise
                    // the members still connected after the removal must form a quorum.
                    if *id == self.id || self.heard_recently(*id) {
                        let voters = self.voters();
                        let active = voters
                            .iter()
                            .filter(|v| v.id == self.id || self.heard_recently(v.id))
                            .count();
                        if active - 1 < 1 + (voters.len() - 1) / 2 {
                            return refuse(ServerError::Unhealthy, reply);
                        }
                    }
                }
                ConfChange::Remove(MemberId(*id))
            }
            MemberChange::Promote { id } => {
                let Some(m) = self.sm.members.get(id) else {
                    return refuse(ServerError::MemberNotFound, reply);
                };
                if !m.learner {
                    return refuse(ServerError::MemberNotLearner, reply);
                }
                // The learner counts as started and as a future voter.
                if strict && !ready_for_voter(self.voters(), 1, 1) {
                    return refuse(ServerError::NotEnoughStarted, reply);
                }
                ConfChange::AddVoter(MemberId(*id))
            }
            MemberChange::Update { .. } => return Ok(()),
        };
        let index = match self.raft.propose_conf_change(self.clock.now(), cc) {
            Ok(Proposed::Appended { index, .. }) => index,
            Ok(Proposed::Forwarded) => return refuse(ServerError::NotLeader, reply),
            Err(e) => return refuse(conf_change_error(e), reply),
        };
        tracing::info!(change = ?change, index = index.0, "proposed membership change");
        match change {
            MemberChange::Add {
                id,
                peer_urls,
                learner,
            } => self.propose(
                Command::AddMember {
                    id,
                    peer_urls,
                    learner,
                },
                Some(reply),
            ),
            _ => self.conf_waiting.push((index, cc, reply)),
        }
        Ok(())
    }

    /// A configuration change was applied at `index`: answer whoever asked for it.
    pub(super) fn conf_change_applied(&mut self, index: LogIndex, payload: &EntryPayload) {
        let header = self.header();
        let mut i = 0;
        while i < self.conf_waiting.len() {
            if self.conf_waiting[i].0 == index {
                let (_, cc, reply) = self.conf_waiting.swap_remove(i);
                let r = match payload {
                    EntryPayload::ConfChange(applied) if *applied == cc => {
                        Ok((Outcome::Member, header))
                    }
                    // Another leader's entry took the index: ours was never committed.
                    _ => Err(ServerError::LeaderChanged),
                };
                let _ = reply.send(r);
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

    fn heard_recently(&self, id: u64) -> bool {
        self.heard
            .get(&id)
            .is_some_and(|t| t.elapsed() < HEALTH_INTERVAL)
    }

    /// etcd's `isConnectedFullySince`: this leader heard from every other voter lately.
    fn connected_to_all_voters(&self) -> bool {
        self.voters()
            .iter()
            .all(|v| v.id == self.id || self.heard_recently(v.id))
    }

    /// Notes that `from` was heard from now.
    pub(super) fn heard_from(&mut self, from: u64, at: Instant) {
        self.heard.insert(from, at);
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

fn conf_change_error(e: ConfChangeError) -> ServerError {
    match e {
        ConfChangeError::Propose(p) => propose_error(p),
        ConfChangeError::Pending => ServerError::ChangeInProgress,
        ConfChangeError::AlreadyMember(_) => ServerError::MemberExists,
        ConfChangeError::NotMember(_) => ServerError::MemberNotFound,
        ConfChangeError::LastVoter => ServerError::NotEnoughStarted,
        ConfChangeError::LearnerNotReady => ServerError::LearnerNotReady,
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
