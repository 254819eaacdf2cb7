//! Typed errors for everything a caller of the raft core can get wrong.

use thiserror::Error;

use super::types::{LogIndex, MemberId};

/// Invalid [`crate::raft::Config`].
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The member ID is zero, which raft reserves for "none".
    #[error("member id must not be zero")]
    ZeroId,
    /// Heartbeats every 0 ms.
    #[error("heartbeat interval must be positive")]
    ZeroHeartbeat,
    /// Elections would fire between heartbeats.
    #[error("election timeout ({election_ms} ms) must be greater than the heartbeat interval ({heartbeat_ms} ms)")]
    ElectionNotAboveHeartbeat {
        /// Configured election timeout.
        election_ms: u64,
        /// Configured heartbeat interval.
        heartbeat_ms: u64,
    },
    /// A flow-control limit of zero would stall replication.
    #[error("flow-control limits (inflight messages/bytes, append bytes, snapshot chunks, apply batch) must be positive")]
    ZeroFlowLimit,
    /// Lease reads rely on followers refusing votes while in a leader's lease.
    #[error("lease-based reads require check-quorum")]
    LeaseWithoutCheckQuorum,
    /// A drift bound of 100% or more leaves no lease.
    #[error("clock drift bound of {0} ppm leaves no lease")]
    DriftTooLarge(u32),
}

/// A proposal that was not accepted into the log.
#[derive(Debug, Error, PartialEq, Eq, Clone)]
pub enum ProposeError {
    /// This member is not the leader and forwarding is disabled.
    #[error("proposal dropped: not leader (leader is {leader:?})")]
    NotLeader {
        /// The leader this member knows of, if any.
        leader: Option<MemberId>,
    },
    /// No leader is known, so there is nowhere to put the proposal.
    #[error("proposal dropped: no leader")]
    NoLeader,
    /// The leader is handing leadership over and accepts no new entries.
    #[error("proposal dropped: leadership transfer in progress")]
    TransferInProgress,
    /// The payload exceeds `max_proposal_bytes`.
    #[error("proposal dropped: {size} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// Size of the rejected payload.
        size: u64,
        /// Configured limit.
        limit: u64,
    },
    /// Too many uncommitted bytes are buffered (a slow quorum); retry later.
    #[error("proposal dropped: too many uncommitted entries")]
    UncommittedLimit,
    /// This member was removed from the cluster.
    #[error("proposal dropped: member removed from the cluster")]
    Removed,
}

/// A membership change the leader refused.
#[derive(Debug, Error, PartialEq, Eq, Clone)]
pub enum ConfChangeError {
    /// The change could not be proposed at all.
    #[error(transparent)]
    Propose(#[from] ProposeError),
    /// An earlier change is not yet applied, or this leader has not yet applied an entry
    /// of its own term; one change at a time is the safety rule.
    #[error("a configuration change is already pending")]
    Pending,
    /// The member is already in the requested role.
    #[error("member {0} is already in that role")]
    AlreadyMember(MemberId),
    /// The member to remove or promote is not in the configuration.
    #[error("member {0} not found")]
    NotMember(MemberId),
    /// Removing the only voter would leave no one to commit.
    #[error("cannot remove the last voter")]
    LastVoter,
    /// A learner must be in sync before it can vote (etcd's rule: its match index is at
    /// least 90% of the leader's).
    #[error("can only promote a learner member which is in sync with leader")]
    LearnerNotReady,
}

/// A read request that could not be queued.
#[derive(Debug, Error, PartialEq, Eq, Clone)]
pub enum ReadError {
    /// No leader is known to confirm the read.
    #[error("read dropped: no leader")]
    NoLeader,
    /// This member was removed from the cluster.
    #[error("read dropped: member removed from the cluster")]
    Removed,
}

/// A leadership transfer that cannot start.
#[derive(Debug, Error, PartialEq, Eq, Clone)]
pub enum TransferError {
    /// No leader is known to forward the request to.
    #[error("leadership transfer: no leader")]
    NoLeader,
    /// The target is not a voter of the current configuration.
    #[error("leadership transfer: {0} is not a voter")]
    NotVoter(MemberId),
}

/// Recovered storage that cannot be resumed from.
#[derive(Debug, Error, PartialEq, Eq, Clone)]
pub enum RecoverError {
    /// Entries do not follow the snapshot contiguously.
    #[error("recovered entries are not contiguous after index {after}")]
    Gap {
        /// The last good index.
        after: LogIndex,
    },
    /// The commit index points past the recovered log.
    #[error("recovered commit index {commit} is beyond the last entry {last}")]
    CommitBeyondLog {
        /// Recovered commit.
        commit: LogIndex,
        /// Last recovered entry.
        last: LogIndex,
    },
    /// The applied index is outside `[snapshot, commit]`.
    #[error("recovered applied index {applied} is outside [{snapshot}, {commit}]")]
    AppliedOutOfRange {
        /// Application's applied index.
        applied: LogIndex,
        /// Snapshot index.
        snapshot: LogIndex,
        /// Commit index.
        commit: LogIndex,
    },
    /// Entry terms decrease, or exceed the hard state's term.
    #[error("recovered entry {index} has an impossible term")]
    BadTerm {
        /// Offending entry.
        index: LogIndex,
    },
}
