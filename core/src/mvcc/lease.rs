//! Leases: TTLs, keepalives and expiry, decided by the leader only.
//!
//! Only the primary lessor (the leader's) tracks expiry times; it reports expired leases
//! and the server proposes their revocation through raft, so a follower's clock never
//! deletes anything. On becoming leader, every lease's expiry is reset to a full TTL
//! plus an extension (the election timeout), as etcd's `Promote` does, so a lease never
//! expires because of an election.
//!
//! Lease checkpoints (etcd's `--experimental-enable-lease-checkpoint`): the leader
//! proposes, every checkpoint interval, the remaining TTL of each lease that will outlive
//! the interval, and every member records it; a new leader then restarts a lease from its
//! checkpointed remaining TTL instead of the full TTL, so leader changes do not keep a
//! long lease alive for ever. A renewal of a lease whose checkpoint is set (or in the
//! log) waits until a clearing checkpoint is applied, as etcd's `Renew` does: otherwise
//! a leader change could restart the lease from a checkpoint older than the TTL its
//! client was just promised, and revoke it early.

use std::collections::BTreeMap;

use crate::raft::Time;

/// A lease's ID (etcd's `LeaseID`, an int64 on the wire). A type of its own in the
/// lessor's and the member's interfaces, where it sits beside TTLs and revisions that
/// are i64s too: a TTL passed as an ID must not compile.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct LeaseId(pub i64);

/// etcd's largest lease TTL, in seconds.
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;

/// Lease errors, with etcd's messages.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum LeaseError {
    /// No such lease.
    #[error("etcdserver: requested lease not found")]
    NotFound,
    /// The ID is taken.
    #[error("etcdserver: lease already exists")]
    Exists,
    /// TTL above [`MAX_LEASE_TTL`].
    #[error("etcdserver: too large lease TTL")]
    TtlTooLarge,
    /// A lease ID of zero.
    #[error("etcdserver: lease ID must not be zero")]
    ZeroId,
    /// Keepalives and expiry are the leader's business.
    #[error("etcdserver: not leader")]
    NotPrimary,
    /// The CORRUPT alarm is raised: grants and revokes are refused.
    #[error("etcdserver: corrupt cluster")]
    Corrupt,
    /// A renewal must wait: the lease's checkpoint is being cleared through raft.
    #[error("etcdserver: lease checkpoint pending")]
    CheckpointPending,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Lease {
    /// Granted TTL in seconds.
    ttl: i64,
    /// When it expires (primary only).
    expiry: Option<Time>,
    /// Remaining TTL in seconds at the last applied checkpoint (0: none), on every member.
    remaining: i64,
    /// When its next checkpoint is due (primary only).
    next_checkpoint: Option<Time>,
    /// A checkpoint of it is in the log, not applied yet (primary only).
    checkpointing: bool,
}

impl Lease {
    fn new(ttl: i64, expiry: Option<Time>) -> Lease {
        Lease {
            ttl,
            expiry,
            remaining: 0,
            next_checkpoint: None,
            checkpointing: false,
        }
    }

    /// etcd's `RemainingTTL`: the checkpointed remaining TTL if there is one, else the TTL.
    fn restart_ttl(&self) -> i64 {
        if self.remaining > 0 {
            self.remaining
        } else {
            self.ttl
        }
    }
}

/// The lease table of one member.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Lessor {
    leases: BTreeMap<LeaseId, Lease>,
    primary: bool,
    min_ttl: i64,
}

impl Lessor {
    /// A lessor whose TTLs are at least `min_ttl` seconds (etcd: 1.5 election timeouts,
    /// rounded up).
    pub fn new(min_ttl: i64) -> Lessor {
        Lessor {
            leases: BTreeMap::new(),
            primary: false,
            min_ttl: min_ttl.max(1),
        }
    }

    /// Applies a committed grant. Returns the TTL actually granted.
    pub fn grant(&mut self, id: LeaseId, ttl: i64, now: Time) -> Result<i64, LeaseError> {
        if id.0 == 0 {
            return Err(LeaseError::ZeroId);
        }
        if ttl > MAX_LEASE_TTL {
            return Err(LeaseError::TtlTooLarge);
        }
        if self.leases.contains_key(&id) {
            return Err(LeaseError::Exists);
        }
        let ttl = ttl.max(self.min_ttl);
        let expiry = self.primary.then(|| now.plus(ttl as u64 * 1000));
        self.leases.insert(id, Lease::new(ttl, expiry));
        Ok(ttl)
    }

    /// Applies a committed revoke (the keys are deleted by the keyspace).
    pub fn revoke(&mut self, id: LeaseId) -> Result<(), LeaseError> {
        self.leases
            .remove(&id)
            .map(|_| ())
            .ok_or(LeaseError::NotFound)
    }

    /// A keepalive (leader only): the lease lives a full TTL from now. Returns the TTL.
    /// An expired lease is not renewed: its revocation may already be in the log, and a
    /// client told "another TTL" would lose its keys moments later (found by the
    /// simulator). etcd answers "lease not found" once the revocation is through; this
    /// answers it at once.
    pub fn renew(&mut self, id: LeaseId, now: Time) -> Result<i64, LeaseError> {
        if !self.primary {
            return Err(LeaseError::NotPrimary);
        }
        let l = self.leases.get_mut(&id).ok_or(LeaseError::NotFound)?;
        if l.expiry.is_some_and(|e| e <= now) {
            return Err(LeaseError::NotFound);
        }
        if l.remaining > 0 || l.checkpointing {
            return Err(LeaseError::CheckpointPending);
        }
        l.expiry = Some(now.plus(l.ttl as u64 * 1000));
        Ok(l.ttl)
    }

    /// (granted TTL, remaining seconds rounded up) of a lease.
    pub fn time_to_live(&self, id: LeaseId, now: Time) -> Result<(i64, i64), LeaseError> {
        let l = self.leases.get(&id).ok_or(LeaseError::NotFound)?;
        let remaining = match l.expiry {
            Some(e) => (e.since(now) as i64 + 999) / 1000,
            None => l.restart_ttl(),
        };
        Ok((l.ttl, remaining))
    }

    /// Every lease ID, ascending.
    pub fn ids(&self) -> Vec<LeaseId> {
        self.leases.keys().copied().collect()
    }

    /// How many leases are granted.
    pub fn len(&self) -> usize {
        self.leases.len()
    }

    /// Whether no lease is granted.
    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }

    /// Whether a lease exists.
    pub fn contains(&self, id: LeaseId) -> bool {
        self.leases.contains_key(&id)
    }

    /// Leases whose time is up (leader only), soonest first, at most `max`: the server
    /// proposes their revocation.
    pub fn expired(&self, now: Time, max: usize) -> Vec<LeaseId> {
        let mut due: Vec<(Time, LeaseId)> = self
            .leases
            .iter()
            .filter_map(|(id, l)| l.expiry.filter(|e| *e <= now).map(|e| (e, *id)))
            .collect();
        due.sort();
        due.into_iter().take(max).map(|(_, id)| id).collect()
    }

    /// This member became leader: every lease gets its checkpointed remaining TTL (a
    /// full TTL if it has none) plus `extend_ms` from now, as etcd's `Promote`.
    pub fn promote(&mut self, now: Time, extend_ms: u64) {
        self.primary = true;
        for l in self.leases.values_mut() {
            l.expiry = Some(now.plus(l.restart_ttl() as u64 * 1000 + extend_ms));
            l.next_checkpoint = None;
            l.checkpointing = false;
        }
    }

    /// This member lost leadership: it stops tracking expiry.
    pub fn demote(&mut self) {
        self.primary = false;
        for l in self.leases.values_mut() {
            l.expiry = None;
            l.next_checkpoint = None;
            l.checkpointing = false;
        }
    }

    /// Applies a committed checkpoint (0 clears it); unknown leases are ignored.
    pub fn checkpoint(&mut self, id: LeaseId, remaining: i64) {
        if let Some(l) = self.leases.get_mut(&id) {
            l.remaining = remaining.max(0);
            l.checkpointing = false;
        }
    }

    /// The checkpoints due now (leader only), at most `max`: (lease, remaining TTL in
    /// seconds, rounded up). A lease is checkpointed every `interval_ms` while it
    /// outlives the interval (etcd's `scheduleCheckpointIfNeeded`), and not when it was
    /// renewed so recently that nothing has elapsed (`findDueScheduledCheckpoints`).
    /// Call [`Lessor::checkpoints_proposed`] once they are in the log.
    pub fn due_checkpoints(
        &mut self,
        now: Time,
        interval_ms: u64,
        max: usize,
    ) -> Vec<(LeaseId, i64)> {
        let mut due = Vec::new();
        if !self.primary {
            return due;
        }
        for (id, l) in self.leases.iter_mut() {
            let Some(expiry) = l.expiry else { continue };
            let left_ms = expiry.since(now);
            match l.next_checkpoint {
                None if left_ms > interval_ms => l.next_checkpoint = Some(now.plus(interval_ms)),
                Some(at) if at <= now && !l.checkpointing && due.len() < max => {
                    l.next_checkpoint = None;
                    let remaining = (left_ms as i64 + 999) / 1000;
                    if remaining > 0 && remaining < l.ttl {
                        due.push((*id, remaining));
                    }
                }
                _ => {}
            }
        }
        due
    }

    /// Checkpoints of these leases are in the log: their renewals wait for them.
    pub fn checkpoints_proposed(&mut self, ids: impl IntoIterator<Item = LeaseId>) {
        for id in ids {
            if let Some(l) = self.leases.get_mut(&id) {
                l.checkpointing = true;
            }
        }
    }

    /// Whether a renewal of `id` needs a clearing checkpoint proposed first (it has a
    /// checkpoint and no checkpoint of it is in the log).
    pub fn needs_clearing(&self, id: LeaseId) -> bool {
        self.leases
            .get(&id)
            .is_some_and(|l| l.remaining > 0 && !l.checkpointing)
    }

    /// (ID, granted TTL) of every lease (for snapshots).
    pub fn export(&self) -> Vec<(LeaseId, i64)> {
        self.leases.iter().map(|(id, l)| (*id, l.ttl)).collect()
    }

    /// Restores leases from a snapshot (not primary: expiry starts at promotion).
    pub fn import(&mut self, leases: &[(LeaseId, i64)]) {
        self.primary = false;
        self.leases = leases
            .iter()
            .map(|(id, ttl)| (*id, Lease::new(*ttl, None)))
            .collect();
    }

    /// Whether this is the leader's lessor.
    pub fn is_primary(&self) -> bool {
        self.primary
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_primary_expires_and_promotion_extends() {
        let mut l = Lessor::new(2);
        assert_eq!(
            l.grant(LeaseId(7), 1, Time(0)),
            Ok(2),
            "raised to the minimum TTL"
        );
        assert_eq!(l.grant(LeaseId(7), 5, Time(0)), Err(LeaseError::Exists));
        assert_eq!(l.grant(LeaseId(0), 5, Time(0)), Err(LeaseError::ZeroId));
        assert_eq!(
            l.grant(LeaseId(8), MAX_LEASE_TTL + 1, Time(0)),
            Err(LeaseError::TtlTooLarge)
        );
        assert!(
            l.expired(Time(1_000_000), 10).is_empty(),
            "a follower never expires"
        );
        assert_eq!(l.renew(LeaseId(7), Time(0)), Err(LeaseError::NotPrimary));
        l.promote(Time(10_000), 1_000);
        assert_eq!(l.time_to_live(LeaseId(7), Time(10_000)), Ok((2, 3)));
        assert!(
            l.expired(Time(12_999), 10).is_empty(),
            "extended by the election timeout"
        );
        assert_eq!(l.renew(LeaseId(7), Time(12_999)), Ok(2));
        assert!(l.expired(Time(14_998), 10).is_empty());
        assert_eq!(l.time_to_live(LeaseId(7), Time(14_001)), Ok((2, 1)));
        assert_eq!(l.expired(Time(14_999), 10), vec![LeaseId(7)]);
        assert_eq!(
            l.renew(LeaseId(7), Time(15_000)),
            Err(LeaseError::NotFound),
            "an expired lease (its revocation may be in the log) is not renewed"
        );
        l.demote();
        assert!(l.expired(Time(99_000), 10).is_empty());
        assert_eq!(l.revoke(LeaseId(7)), Ok(()));
        assert_eq!(
            l.revoke(LeaseId(7)).map_err(|e| e.to_string()),
            Err("etcdserver: requested lease not found".into())
        );
    }
}
