//! etcd's corruption checks (`etcdserver/corrupt.go`, 3.4.23 with 3.5.13's fixes) as
//! decisions over hashes: which answers count, what a mismatch is, when the CORRUPT
//! alarm is due. The drivers fetch the hashes (the member's own, its peers' over the peer
//! port) and act on the verdict; none of the rules below lives in a driver.
//!
//! - The initial check (`--experimental-initial-corrupt-check`) compares this member's
//!   HashKV at its current revision with each peer's at that revision. Only a different
//!   hash under the same compacted revision is a mismatch: a peer compacted elsewhere,
//!   behind this member (future revision) or ahead of it past the revision (compacted)
//!   proves nothing, and is only logged.
//! - The periodic check (`--experimental-corrupt-check-time`, on the leader) hashes
//!   twice around a linearizable read: a follower may not be ahead of the leader's second
//!   look in revision or compaction, and one at the leader's first compacted revision
//!   must have the leader's first hash; the leader's own hash may not change while its
//!   revision and compaction did not. Any of these raises CORRUPT (once per check),
//!   against member 0 as etcd does, since which member is wrong is unknown.

use super::state_machine::alarm;
use super::Command;
use crate::mvcc::{KvStore, MvccError};

/// A member's HashKV answer: the keyspace hash at the asked revision, with the member's
/// current and compacted revisions when it hashed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvHash {
    /// etcd's HashKV hash.
    pub hash: u32,
    /// The member's current revision (the answer's header revision).
    pub revision: i64,
    /// Its compacted revision (-1 before the first compaction).
    pub compact_revision: i64,
}

impl KvHash {
    /// `store`'s HashKV answer at `revision` (0: current), as a member gives it to a
    /// peer's check and to its own.
    pub fn of(store: &KvStore, revision: i64) -> Result<KvHash, MvccError> {
        Ok(KvHash {
            hash: store.hash_kv(revision)?,
            revision: store.revision(),
            compact_revision: store.compacted_revision(),
        })
    }
}

/// Why a peer gave no hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerHashError {
    /// The revision is beyond the peer's (it is behind).
    FutureRevision,
    /// The peer compacted past the revision (this member is behind).
    Compacted,
    /// Unreachable, another cluster, or another error (its text).
    Other(String),
}

impl From<MvccError> for PeerHashError {
    fn from(e: MvccError) -> PeerHashError {
        match e {
            MvccError::Compacted => PeerHashError::Compacted,
            MvccError::FutureRevision => PeerHashError::FutureRevision,
            e => PeerHashError::Other(e.to_string()),
        }
    }
}

/// One peer's answer to "your HashKV at revision R".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerHash {
    /// The peer's member ID.
    pub id: u64,
    /// Its peer URLs (for the log).
    pub endpoints: Vec<String>,
    /// Its hash, or why there is none.
    pub result: Result<KvHash, PeerHashError>,
}

/// Something a check found; each is one of etcd's warnings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Finding {
    /// Initial check: same compacted revision, different hash (a mismatch).
    HashDiffers {
        /// The peer.
        peer: u64,
        /// Its answer.
        remote: KvHash,
    },
    /// Initial check: different hash, but the peer compacted elsewhere (not compared).
    CompactRevisionDiffers {
        /// The peer.
        peer: u64,
        /// Its answer.
        remote: KvHash,
    },
    /// Initial check: the peer is behind this member's revision.
    PeerBehind {
        /// The peer.
        peer: u64,
    },
    /// Initial check: the peer compacted past this member's revision.
    LocalBehind {
        /// The peer.
        peer: u64,
    },
    /// Periodic check: the leader's own hash changed at the same revision.
    LocalHashChanged {
        /// The first look.
        first: KvHash,
        /// The second look.
        second: KvHash,
    },
    /// Periodic check: a follower is ahead of the leader's revision.
    FollowerRevisionAhead {
        /// The follower.
        peer: u64,
        /// The leader's revision (second look).
        leader: i64,
        /// The follower's.
        follower: i64,
    },
    /// Periodic check: a follower compacted past the leader.
    FollowerCompactAhead {
        /// The follower.
        peer: u64,
        /// The leader's compacted revision (second look).
        leader: i64,
        /// The follower's.
        follower: i64,
    },
    /// Periodic check: same compacted revision as the leader's first look, another hash.
    FollowerHashDiffers {
        /// The follower.
        peer: u64,
        /// The leader's first hash.
        leader_hash: u32,
        /// The follower's answer.
        remote: KvHash,
    },
}

impl Finding {
    /// etcd's log message for it.
    pub fn message(&self) -> &'static str {
        match self {
            Finding::HashDiffers { .. } => "found different hash values from remote peer",
            Finding::CompactRevisionDiffers { .. } => {
                "found different compact revision values from remote peer"
            }
            Finding::PeerBehind { .. } => "cannot fetch hash from slow remote peer",
            Finding::LocalBehind { .. } => {
                "cannot fetch hash from remote peer; local member is behind"
            }
            Finding::LocalHashChanged { .. } => "found hash mismatch",
            Finding::FollowerRevisionAhead { .. } => {
                "revision from follower must be less than or equal to leader's"
            }
            Finding::FollowerCompactAhead { .. } => {
                "compact revision from follower must be less than or equal to leader's"
            }
            Finding::FollowerHashDiffers { .. } => "same compact revision then hashes must match",
        }
    }
}

/// The initial check's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitialVerdict {
    /// What to log, in order.
    pub findings: Vec<Finding>,
    /// Peers whose hash differs under the same compacted revision.
    pub mismatches: usize,
}

impl InitialVerdict {
    /// The error that stops member `local_id` from starting, if any (etcd's text).
    pub fn refusal(&self, local_id: u64) -> Option<String> {
        (self.mismatches > 0).then(|| format!("{local_id:x} found data inconsistency with peers"))
    }
}

/// etcd's `CheckInitialHashKV`: `local` is this member's hash at its current revision,
/// `peers` their answers at that revision.
pub fn initial_check(local: KvHash, peers: &[PeerHash]) -> InitialVerdict {
    let mut v = InitialVerdict {
        findings: Vec::new(),
        mismatches: 0,
    };
    for p in peers {
        match &p.result {
            Ok(remote) if remote.hash != local.hash => {
                if remote.compact_revision == local.compact_revision {
                    v.mismatches += 1;
                    v.findings.push(Finding::HashDiffers {
                        peer: p.id,
                        remote: *remote,
                    });
                } else {
                    v.findings.push(Finding::CompactRevisionDiffers {
                        peer: p.id,
                        remote: *remote,
                    });
                }
            }
            Ok(_) => {}
            Err(PeerHashError::FutureRevision) => {
                v.findings.push(Finding::PeerBehind { peer: p.id })
            }
            Err(PeerHashError::Compacted) => v.findings.push(Finding::LocalBehind { peer: p.id }),
            // Already logged when the request failed, as etcd does.
            Err(PeerHashError::Other(_)) => {}
        }
    }
    v
}

/// The periodic check's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeriodicVerdict {
    /// What to log, in order.
    pub findings: Vec<Finding>,
    /// Raise the CORRUPT alarm (see [`corrupt_alarm`]).
    pub corrupt: bool,
    /// Peers that answered with a hash (etcd's `number-of-peers-checked`).
    pub checked: usize,
}

/// etcd's `checkHashKV` on the leader: `first` is its hash before asking the peers (who
/// hashed at `first.revision`), `second` its hash after a linearizable read.
pub fn periodic_check(first: KvHash, second: KvHash, peers: &[PeerHash]) -> PeriodicVerdict {
    let mut v = PeriodicVerdict {
        findings: Vec::new(),
        corrupt: false,
        checked: 0,
    };
    if second.hash != first.hash
        && second.revision == first.revision
        && second.compact_revision == first.compact_revision
    {
        v.findings.push(Finding::LocalHashChanged { first, second });
    }
    for p in peers {
        let Ok(remote) = &p.result else { continue };
        v.checked += 1;
        if remote.revision > second.revision {
            v.findings.push(Finding::FollowerRevisionAhead {
                peer: p.id,
                leader: second.revision,
                follower: remote.revision,
            });
        }
        if remote.compact_revision > second.compact_revision {
            v.findings.push(Finding::FollowerCompactAhead {
                peer: p.id,
                leader: second.compact_revision,
                follower: remote.compact_revision,
            });
        }
        if remote.compact_revision == first.compact_revision && remote.hash != first.hash {
            v.findings.push(Finding::FollowerHashDiffers {
                peer: p.id,
                leader_hash: first.hash,
                remote: *remote,
            });
        }
    }
    v.corrupt = !v.findings.is_empty();
    v
}

/// The proposal that raises CORRUPT: against member 0, as etcd 3.4.23 and 3.5 do, since
/// the check cannot tell which member's data is wrong.
pub fn corrupt_alarm() -> Command {
    Command::Alarm {
        action: 1,
        member: 0,
        alarm: alarm::CORRUPT,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(hash: u32, revision: i64, compact_revision: i64) -> KvHash {
        KvHash {
            hash,
            revision,
            compact_revision,
        }
    }

    fn peer(id: u64, result: Result<KvHash, PeerHashError>) -> PeerHash {
        PeerHash {
            id,
            endpoints: vec![format!("http://127.0.0.1:{id}")],
            result,
        }
    }

    #[test]
    fn initial_check_refuses_only_a_different_hash_under_the_same_compaction() {
        let local = h(7, 10, 4);
        // Equal hash; different hash but compacted elsewhere; behind; ahead and compacted;
        // unreachable: none of these is a mismatch.
        let calm = [
            peer(2, Ok(h(7, 12, 4))),
            peer(3, Ok(h(9, 12, 6))),
            peer(4, Err(PeerHashError::FutureRevision)),
            peer(5, Err(PeerHashError::Compacted)),
            peer(6, Err(PeerHashError::Other("connection refused".into()))),
        ];
        let v = initial_check(local, &calm);
        assert_eq!(v.mismatches, 0);
        assert_eq!(v.refusal(0x8e9e05c52164694d), None);
        assert_eq!(
            v.findings.iter().map(Finding::message).collect::<Vec<_>>(),
            vec![
                "found different compact revision values from remote peer",
                "cannot fetch hash from slow remote peer",
                "cannot fetch hash from remote peer; local member is behind",
            ]
        );
        let mut bad = calm.to_vec();
        bad.push(peer(7, Ok(h(8, 10, 4))));
        let v = initial_check(local, &bad);
        assert_eq!(v.mismatches, 1);
        assert_eq!(
            v.findings.last(),
            Some(&Finding::HashDiffers {
                peer: 7,
                remote: h(8, 10, 4)
            })
        );
        assert_eq!(
            v.refusal(0x8e9e05c52164694d).as_deref(),
            Some("8e9e05c52164694d found data inconsistency with peers")
        );
    }

    #[test]
    fn periodic_check_raises_corrupt_on_each_of_etcds_conditions() {
        let first = h(7, 10, 4);
        let second = h(9, 11, 4); // writes applied meanwhile: a new hash is expected
                                  // Followers behind, at the leader's revision, or answering with errors; one whose
                                  // compaction is older than the leader's (its hash covers other history).
        let calm = [
            peer(2, Ok(h(7, 10, 4))),
            peer(3, Ok(h(5, 11, 2))),
            peer(4, Err(PeerHashError::FutureRevision)),
            peer(5, Err(PeerHashError::Compacted)),
            peer(6, Err(PeerHashError::Other("timed out".into()))),
        ];
        let v = periodic_check(first, second, &calm);
        assert_eq!((v.corrupt, v.checked), (false, 2), "{:?}", v.findings);
        assert!(v.findings.is_empty());

        let corrupt = |peers: &[PeerHash], first: KvHash, second: KvHash| {
            let v = periodic_check(first, second, peers);
            assert!(v.corrupt, "{peers:?}");
            v.findings.iter().map(Finding::message).collect::<Vec<_>>()
        };
        assert_eq!(
            corrupt(&[peer(2, Ok(h(8, 10, 4)))], first, second),
            vec!["same compact revision then hashes must match"]
        );
        assert_eq!(
            corrupt(&[peer(2, Ok(h(7, 12, 4)))], first, second),
            vec!["revision from follower must be less than or equal to leader's"]
        );
        assert_eq!(
            corrupt(&[peer(2, Ok(h(3, 11, 5)))], first, second),
            vec!["compact revision from follower must be less than or equal to leader's"]
        );
        assert_eq!(
            corrupt(&[], first, h(8, 10, 4)),
            vec!["found hash mismatch"]
        );
        // The leader's hash may change with its revision or compaction.
        assert!(!periodic_check(first, h(8, 10, 5), &[]).corrupt);
    }

    #[test]
    fn the_alarm_names_member_zero() {
        assert_eq!(
            corrupt_alarm(),
            Command::Alarm {
                action: 1,
                member: 0,
                alarm: alarm::CORRUPT
            }
        );
    }
}
