//! Domain values shared by every part of the raft core.

use std::collections::BTreeSet;
use std::fmt;

use bytes::Bytes;

macro_rules! newtype_u64 {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(pub u64);

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

newtype_u64!(
    /// A raft term: a period with at most one leader.
    Term
);
newtype_u64!(
    /// A position in the replicated log; the first entry has index 1.
    LogIndex
);
newtype_u64!(
    /// Milliseconds on the driver's monotonic clock (its own epoch).
    Time
);
newtype_u64!(
    /// Sequence number of a [`crate::raft::PersistBatch`], increasing by one per batch.
    PersistSeq
);
newtype_u64!(
    /// Opaque caller token identifying a linearizable read request.
    ReadCtx
);

/// Identity of a cluster member, as etcd's 64-bit member ID. Zero means "none".
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct MemberId(pub u64);

impl MemberId {
    /// The absent member (no leader, no vote).
    pub const NONE: MemberId = MemberId(0);

    /// Whether this is a real member rather than [`MemberId::NONE`].
    pub fn is_some(self) -> bool {
        self.0 != 0
    }
}

impl fmt::Debug for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

impl Term {
    /// The term after this one (saturating: only a hostile peer gets near the end).
    pub fn next(self) -> Term {
        Term(self.0.saturating_add(1))
    }
}

impl LogIndex {
    /// The index after this one (saturating: only a hostile peer gets near the end).
    pub fn next(self) -> LogIndex {
        LogIndex(self.0.saturating_add(1))
    }
    /// The index before this one (saturating at zero).
    pub fn prev(self) -> LogIndex {
        LogIndex(self.0.saturating_sub(1))
    }
}

impl Time {
    /// `self + ms`, saturating.
    pub fn plus(self, ms: u64) -> Time {
        Time(self.0.saturating_add(ms))
    }
    /// Milliseconds elapsed since `earlier` (zero if `earlier` is later).
    pub fn since(self, earlier: Time) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

/// A single-member configuration change. Raft applies them one at a time.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ConfChange {
    /// Add a new voting member, or promote an existing learner to voter.
    AddVoter(MemberId),
    /// Add a non-voting member that receives the log.
    AddLearner(MemberId),
    /// Remove a voter or learner.
    Remove(MemberId),
}

impl ConfChange {
    /// The member this change is about.
    pub fn member(self) -> MemberId {
        match self {
            ConfChange::AddVoter(id) | ConfChange::AddLearner(id) | ConfChange::Remove(id) => id,
        }
    }
}

/// What one log entry carries.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum EntryPayload {
    /// The no-op a new leader appends to commit entries of earlier terms.
    Empty,
    /// Application data, opaque to raft.
    Normal(Bytes),
    /// A membership change, applied by raft itself when committed.
    ConfChange(ConfChange),
}

impl EntryPayload {
    /// Bytes this payload counts for in size limits (message size, in-flight bytes).
    pub fn size(&self) -> u64 {
        match self {
            EntryPayload::Empty => 0,
            EntryPayload::Normal(b) => b.len() as u64,
            EntryPayload::ConfChange(_) => 9,
        }
    }
}

/// One entry of the replicated log.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Entry {
    /// Term of the leader that created the entry.
    pub term: Term,
    /// Position in the log.
    pub index: LogIndex,
    /// What the entry carries.
    pub payload: EntryPayload,
}

impl Entry {
    /// Size used for flow control: payload plus a fixed per-entry overhead.
    pub fn size(&self) -> u64 {
        self.payload.size() + 16
    }
}

/// The voters and learners of a configuration.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct ConfState {
    /// Members whose votes and acknowledgements count.
    pub voters: BTreeSet<MemberId>,
    /// Members that receive the log but neither vote nor count for commit.
    pub learners: BTreeSet<MemberId>,
}

impl ConfState {
    /// A configuration of the given voters and no learners.
    pub fn with_voters(ids: impl IntoIterator<Item = MemberId>) -> Self {
        ConfState {
            voters: ids.into_iter().collect(),
            learners: BTreeSet::new(),
        }
    }

    /// Whether `id` is a voter or a learner.
    pub fn contains(&self, id: MemberId) -> bool {
        self.voters.contains(&id) || self.learners.contains(&id)
    }

    /// Every member, voters first.
    pub fn members(&self) -> impl Iterator<Item = MemberId> + '_ {
        self.voters.iter().chain(self.learners.iter()).copied()
    }

    /// Votes needed for a majority of voters.
    pub fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }
}

/// The state raft must persist before acting on it: term, vote and commit index.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct HardState {
    /// Latest term this member has seen.
    pub term: Term,
    /// Candidate voted for in `term`, or [`MemberId::NONE`].
    pub vote: MemberId,
    /// Highest index known committed (persisting it lazily is safe).
    pub commit: LogIndex,
}

/// Where a snapshot sits in the log, and the configuration at that point.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct SnapshotMeta {
    /// Last log index the snapshot covers.
    pub index: LogIndex,
    /// Term of the entry at `index`.
    pub term: Term,
    /// Membership as of `index`.
    pub conf: ConfState,
}

/// A state-machine snapshot: metadata plus the application's opaque image.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Snapshot {
    /// Position and configuration.
    pub meta: SnapshotMeta,
    /// The application's serialized state at `meta.index`.
    pub data: Bytes,
}

/// Everything a restarting member recovered from its durable storage.
#[derive(Clone, Debug, Default)]
pub struct RecoveredState {
    /// Last durable hard state.
    pub hard_state: HardState,
    /// Newest durable snapshot's metadata (index 0 with the bootstrap configuration if none).
    pub snapshot: SnapshotMeta,
    /// Durable entries following the snapshot, contiguous from `snapshot.index + 1`.
    pub entries: Vec<Entry>,
    /// Index the application's state machine already reflects (at least `snapshot.index`).
    pub applied: LogIndex,
}
