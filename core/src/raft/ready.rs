//! What the core hands its driver after each round of inputs.

use super::message::Message;
use super::node::SoftState;
use super::types::{Entry, HardState, LogIndex, PersistSeq, ReadCtx, Snapshot, Time};

/// State to write durably, in order, then acknowledge with
/// [`crate::raft::RaftNode::persisted`] passing `seq`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PersistBatch {
    /// Acknowledge with this sequence number once durable.
    pub seq: PersistSeq,
    /// New hard state, if it changed.
    pub hard_state: Option<HardState>,
    /// A snapshot received from the leader replaces the log before `entries` are appended.
    /// At bootstrap it carries the initial configuration at index 0 with empty data.
    pub snapshot: Option<Snapshot>,
    /// Entries to append. The first entry's index may be at or below the last stored one:
    /// the stored suffix from that index on is replaced.
    pub entries: Vec<Entry>,
    /// Whether the write must be fsynced before acknowledging (entries, term or vote
    /// changed). A commit-index-only change may be written lazily.
    pub must_sync: bool,
}

/// A linearizable read confirmed by the leader: serve it once the state machine has
/// applied `index`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ReadState {
    /// The caller's token.
    pub ctx: ReadCtx,
    /// Commit index at the time leadership was confirmed.
    pub index: LogIndex,
}

/// Outputs accumulated since the last call to [`crate::raft::RaftNode::ready`].
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Ready {
    /// Role, leader or term changed to this.
    pub soft_state: Option<SoftState>,
    /// Write this, then acknowledge it.
    pub persist: Option<PersistBatch>,
    /// Messages that may be sent now (their durability dependencies are already met).
    pub messages: Vec<Message>,
    /// A snapshot from the leader, already durable: restore the state machine from it
    /// before applying `committed`.
    pub apply_snapshot: Option<Snapshot>,
    /// Committed, durable entries to apply in order (configuration changes are already
    /// applied to raft itself).
    pub committed: Vec<Entry>,
    /// Confirmed linearizable reads.
    pub read_states: Vec<ReadState>,
    /// Reads that can no longer be confirmed (leadership lost): the caller should retry.
    pub dropped_reads: Vec<ReadCtx>,
    /// The leader needs a fresh state-machine snapshot to send to a follower: call
    /// [`crate::raft::RaftNode::compact`] with one.
    pub want_snapshot: bool,
    /// Call [`crate::raft::RaftNode::tick`] at this time at the latest.
    pub wake_at: Option<Time>,
}

impl Ready {
    /// Nothing to do but wait for `wake_at`.
    pub fn is_empty(&self) -> bool {
        self.soft_state.is_none()
            && self.persist.is_none()
            && self.messages.is_empty()
            && self.apply_snapshot.is_none()
            && self.committed.is_empty()
            && self.read_states.is_empty()
            && self.dropped_reads.is_empty()
            && !self.want_snapshot
    }
}
