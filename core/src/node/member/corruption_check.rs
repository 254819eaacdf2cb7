//! etcd's periodic corruption check (`--experimental-corrupt-check-time`: its
//! `monitorKVHash` and `checkHashKV`) as the member runs it. Every interval, while this
//! member leads: its own HashKV; every peer's at that revision, asked through the driver
//! ([`Output::hash_requests`], answered with [`Member::peer_hash`]; the only I/O); a
//! linearizable read; its own HashKV again; then the verdict of
//! [`periodic_check`], reported as [`Note::CorruptionChecked`], and the CORRUPT alarm
//! proposed when it says so. Both runtimes drive this same sequence: the simulator's
//! checks are production's.
//!
//! A peer that has not answered by the round's deadline counts as unreachable (no hash
//! compared), as etcd's request timeout makes it.

use std::collections::BTreeMap;

use crate::node::corruption::{corrupt_alarm, periodic_check, KvHash, PeerHash, PeerHashError};
use crate::raft::Time;

use super::{Member, MemberError, Note, Token};

/// The token of the check's own linearizable read (drivers number their callers from
/// 1 up; this one is never reached).
pub(super) const CHECK_READ: Token = Token(u64::MAX - 1);

/// How often, and how long a round may wait for its answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CorruptCheck {
    /// `--experimental-corrupt-check-time`, in ms.
    pub interval_ms: u64,
    /// How long peers' answers and the read are waited for (etcd's request timeout).
    pub timeout_ms: u64,
}

/// One peer's HashKV the driver must ask for (over the peer port in production), then
/// hand the answer to [`Member::peer_hash`] under `round`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HashRequest {
    /// The check round the answer belongs to.
    pub round: u64,
    /// The peer.
    pub peer: u64,
    /// Its peer URLs, tried in turn.
    pub urls: Vec<String>,
    /// The revision to hash at.
    pub revision: i64,
}

/// The check's schedule and the round under way.
#[derive(Debug)]
pub(super) struct CorruptionCheck {
    cfg: CorruptCheck,
    due: Time,
    next_round: u64,
    round: Option<Round>,
    /// The outcome of the round's read, once answered.
    read: Option<Result<(), MemberError>>,
}

#[derive(Debug)]
struct Round {
    id: u64,
    first: KvHash,
    /// Peers not answered yet, with their URLs (for the answers' record).
    waiting: BTreeMap<u64, Vec<String>>,
    answers: Vec<PeerHash>,
    deadline: Time,
    reading: bool,
}

impl CorruptionCheck {
    /// The first check one interval after `now`, as etcd's monitor waits first.
    pub(super) fn new(cfg: CorruptCheck, now: Time) -> CorruptionCheck {
        CorruptionCheck {
            cfg,
            due: now.plus(cfg.interval_ms),
            next_round: 1,
            round: None,
            read: None,
        }
    }

    /// When the check wants to be woken.
    pub(super) fn wake_at(&self) -> Time {
        match &self.round {
            Some(r) => r.deadline,
            None => self.due,
        }
    }
}

impl Member {
    /// Starts a round when one is due on the leader; gives up waiting for peers past
    /// the round's deadline.
    pub(super) fn run_corruption_check(&mut self, now: Time) {
        let Some(check) = self.corruption.as_mut() else {
            return;
        };
        if let Some(r) = check.round.as_mut() {
            if !r.reading && now >= r.deadline {
                for (id, endpoints) in std::mem::take(&mut r.waiting) {
                    r.answers.push(PeerHash {
                        id,
                        endpoints,
                        result: Err(PeerHashError::Other("request timed out".into())),
                    });
                }
                self.read_for_check(now);
            }
            return;
        }
        if now < check.due {
            return;
        }
        check.due = now.plus(check.cfg.interval_ms);
        if !self.status.is_leader {
            return;
        }
        // A hash at the current revision never fails.
        let Ok(first) = KvHash::of(&self.sm.kv.store, 0) else {
            return;
        };
        let id = check.next_round;
        check.next_round += 1;
        let waiting: BTreeMap<u64, Vec<String>> = self
            .sm
            .members
            .values()
            .filter(|m| m.id != self.cfg.id && !m.peer_urls.is_empty())
            .map(|m| (m.id, m.peer_urls.clone()))
            .collect();
        for (peer, urls) in &waiting {
            self.out.hash_requests.push(super::HashRequest {
                round: id,
                peer: *peer,
                urls: urls.clone(),
                revision: first.revision,
            });
        }
        let none_to_ask = waiting.is_empty();
        check.round = Some(Round {
            id,
            first,
            waiting,
            answers: Vec::new(),
            deadline: now.plus(check.cfg.timeout_ms),
            reading: false,
        });
        if none_to_ask {
            self.read_for_check(now);
        }
    }

    /// A peer's answer to a [`HashRequest`] of round `round` (a late one, of a round
    /// already over, is dropped).
    pub fn peer_hash(&mut self, now: Time, round: u64, answer: PeerHash) {
        let Some(r) = self
            .corruption
            .as_mut()
            .and_then(|c| c.round.as_mut())
            .filter(|r| r.id == round && !r.reading)
        else {
            return;
        };
        if r.waiting.remove(&answer.id).is_none() {
            return;
        }
        r.answers.push(answer);
        if r.waiting.is_empty() {
            self.read_for_check(now);
        }
    }

    /// After every peer answered (or the deadline passed), the check's linearizable read:
    /// once it is served this member has applied all any follower had when it hashed.
    fn read_for_check(&mut self, now: Time) {
        let Some(r) = self.corruption.as_mut().and_then(|c| c.round.as_mut()) else {
            return;
        };
        r.reading = true;
        let deadline = now.plus(self.corruption.as_ref().map_or(0, |c| c.cfg.timeout_ms));
        self.reads_new.push((deadline, CHECK_READ));
    }

    /// The answer to the check's read (from [`Member::reply`]).
    pub(super) fn check_read_answered(&mut self, r: Result<(), MemberError>) {
        if let Some(c) = self.corruption.as_mut() {
            c.read = Some(r);
        }
    }

    /// Ends the round whose read was answered: the second look, the verdict, and the
    /// alarm when it is due.
    pub(super) fn conclude_corruption_check(&mut self, now: Time) {
        let Some(c) = self.corruption.as_mut() else {
            return;
        };
        let Some(read) = c.read.take() else {
            return;
        };
        let Some(round) = c.round.take() else {
            return;
        };
        if let Err(e) = read {
            self.out
                .notes
                .push(Note::CorruptionCheckFailed(e.to_string()));
            return;
        }
        let Ok(second) = KvHash::of(&self.sm.kv.store, 0) else {
            return;
        };
        let verdict = periodic_check(round.first, second, &round.answers);
        let corrupt = verdict.corrupt;
        self.out.notes.push(Note::CorruptionChecked(verdict));
        if corrupt {
            self.propose(now, corrupt_alarm(), None, None);
        }
    }
}
