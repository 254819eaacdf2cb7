//! Tunables of one raft member, validated once at construction.

use super::error::ConfigError;
use super::types::MemberId;

/// How linearizable reads are confirmed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ReadMode {
    /// ReadIndex: every batch of reads is confirmed by a heartbeat round acknowledged by a
    /// quorum. Safe under any clock behaviour.
    Safe,
    /// Lease reads: the leader answers from its commit index without a round trip while it
    /// holds a lease, which starts when a quorum acknowledged a heartbeat round and lasts
    /// `election_timeout * (1 - max_clock_drift)`. Followers refuse votes for a full
    /// election timeout after hearing from the leader (check-quorum), so no other leader can
    /// exist before the lease ends **provided** no member's clock runs slower or faster than
    /// another's by more than `max_clock_drift` (a fraction, e.g. 0.1 for 10%) over one
    /// election timeout, and no member pauses longer than that margin. Outside that bound
    /// a lease read can be stale; use [`ReadMode::Safe`] where the bound is not guaranteed.
    Lease {
        /// Largest relative clock-rate difference between members, in parts per million.
        max_clock_drift_ppm: u32,
    },
}

/// Configuration of a [`crate::raft::RaftNode`].
#[derive(Clone, Debug)]
pub struct Config {
    /// This member's ID (non-zero).
    pub id: MemberId,
    /// Interval between leader heartbeats, in milliseconds (etcd `--heartbeat-interval`).
    pub heartbeat_interval_ms: u64,
    /// Base election timeout in milliseconds (etcd `--election-timeout`); each wait is drawn
    /// uniformly from `[election_timeout, 2 * election_timeout)`.
    pub election_timeout_ms: u64,
    /// Seed of the RNG that randomizes election timeouts.
    pub seed: u64,
    /// Run a pre-vote round before incrementing the term, so a partitioned member
    /// rejoining cannot disrupt a healthy leader.
    pub pre_vote: bool,
    /// A leader steps down when it has not heard from a quorum within an election timeout;
    /// followers that heard from a leader recently refuse to vote.
    pub check_quorum: bool,
    /// Most bytes of entries in one append message (at least one entry is always sent).
    pub max_append_bytes: u64,
    /// Most append messages in flight to one follower in the replicate state.
    pub max_inflight_msgs: usize,
    /// Most entry bytes in flight to one follower.
    pub max_inflight_bytes: u64,
    /// Most bytes of uncommitted entries the leader accepts before dropping proposals.
    pub max_uncommitted_bytes: u64,
    /// Largest single proposal payload accepted.
    pub max_proposal_bytes: u64,
    /// Snapshot bytes per chunk message.
    pub snapshot_chunk_bytes: u64,
    /// Snapshot chunks in flight to one follower.
    pub snapshot_inflight_chunks: u64,
    /// Largest snapshot a follower accepts from a leader (a hostile peer must not make it
    /// allocate without bound).
    pub max_snapshot_bytes: u64,
    /// Entries kept in memory behind a snapshot so slow followers catch up from the log.
    pub compaction_tail: u64,
    /// Most committed entries handed to the application in one [`crate::raft::Ready`].
    pub max_apply_batch: usize,
    /// Followers forward proposals to the leader; when false they return `NotLeader`.
    pub forward_proposals: bool,
    /// How linearizable reads are confirmed.
    pub read_mode: ReadMode,
    /// A deliberately broken safety rule (simulation tests only).
    #[cfg(feature = "planted-bugs")]
    pub planted_bug: Option<PlantedBug>,
}

/// A safety rule the simulator's checks must catch when broken (`planted-bugs` feature).
#[cfg(feature = "planted-bugs")]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PlantedBug {
    /// The leader commits what it holds itself, without waiting for a quorum.
    CommitWithoutQuorum,
    /// A lease lasts ten election timeouts and survives the loss of leadership: a deposed
    /// leader serves reads long after another leader may have been elected.
    LeaseReadPastBound,
}

impl Config {
    /// etcd's defaults for member `id`.
    pub fn new(id: MemberId) -> Config {
        Config {
            id,
            heartbeat_interval_ms: 100,
            election_timeout_ms: 1000,
            seed: id.0,
            pre_vote: true,
            check_quorum: true,
            max_append_bytes: 1024 * 1024,
            max_inflight_msgs: 256,
            max_inflight_bytes: 32 * 1024 * 1024,
            max_uncommitted_bytes: 1 << 30,
            max_proposal_bytes: 10 * 1024 * 1024,
            snapshot_chunk_bytes: 1024 * 1024,
            snapshot_inflight_chunks: 4,
            max_snapshot_bytes: 8 << 30,
            compaction_tail: 5000,
            max_apply_batch: 4096,
            forward_proposals: true,
            read_mode: ReadMode::Safe,
            #[cfg(feature = "planted-bugs")]
            planted_bug: None,
        }
    }

    /// Checks the relations between settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.id.is_some() {
            return Err(ConfigError::ZeroId);
        }
        if self.heartbeat_interval_ms == 0 {
            return Err(ConfigError::ZeroHeartbeat);
        }
        if self.election_timeout_ms <= self.heartbeat_interval_ms {
            return Err(ConfigError::ElectionNotAboveHeartbeat {
                election_ms: self.election_timeout_ms,
                heartbeat_ms: self.heartbeat_interval_ms,
            });
        }
        if self.max_inflight_msgs == 0 || self.max_inflight_bytes == 0 || self.max_append_bytes == 0
        {
            return Err(ConfigError::ZeroFlowLimit);
        }
        if self.snapshot_chunk_bytes == 0 || self.snapshot_inflight_chunks == 0 {
            return Err(ConfigError::ZeroFlowLimit);
        }
        if self.max_apply_batch == 0 {
            return Err(ConfigError::ZeroFlowLimit);
        }
        if let ReadMode::Lease {
            max_clock_drift_ppm,
        } = self.read_mode
        {
            if !self.check_quorum {
                return Err(ConfigError::LeaseWithoutCheckQuorum);
            }
            if max_clock_drift_ppm >= 1_000_000 {
                return Err(ConfigError::DriftTooLarge(max_clock_drift_ppm));
            }
        }
        Ok(())
    }

    /// Milliseconds a lease lasts after the heartbeat round that granted it was sent.
    pub(crate) fn lease_ms(&self) -> Option<u64> {
        match self.read_mode {
            ReadMode::Safe => None,
            ReadMode::Lease {
                max_clock_drift_ppm,
            } => {
                let margin = self
                    .election_timeout_ms
                    .saturating_mul(u64::from(max_clock_drift_ppm))
                    / 1_000_000
                    + 1;
                #[cfg(feature = "planted-bugs")]
                if self.planted_bug == Some(PlantedBug::LeaseReadPastBound) {
                    return Some(self.election_timeout_ms * 10);
                }
                Some(self.election_timeout_ms.saturating_sub(margin))
            }
        }
    }
}
