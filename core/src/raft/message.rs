//! Messages exchanged between raft members.

use bytes::Bytes;

use super::types::{Entry, EntryPayload, LogIndex, MemberId, ReadCtx, SnapshotMeta, Term};

/// A message between two members. `term` is the sender's term when it was created.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Message {
    /// Sender.
    pub from: MemberId,
    /// Recipient.
    pub to: MemberId,
    /// Sender's term.
    pub term: Term,
    /// What the message says.
    pub body: MessageBody,
}

/// Where a follower's log diverges, so the leader can skip a whole term at once.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct RejectHint {
    /// Largest index at which the follower's term is at most `term`.
    pub index: LogIndex,
    /// The follower's term at `index`.
    pub term: Term,
}

/// The kinds of raft messages.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum MessageBody {
    /// Leader → follower: entries following `(prev_index, prev_term)`.
    Append {
        /// Index of the entry before `entries`.
        prev_index: LogIndex,
        /// Term of that entry.
        prev_term: Term,
        /// Entries to append (may be empty: a probe).
        entries: Vec<Entry>,
        /// Leader's commit index.
        commit: LogIndex,
    },
    /// Follower → leader: the outcome of an `Append` or a snapshot install.
    AppendResponse {
        /// Accepted: the last index now known to match. Rejected: the `prev_index` refused.
        index: LogIndex,
        /// Present when rejected.
        reject: Option<RejectHint>,
    },
    /// Leader → follower: liveness and a read-confirmation round.
    Heartbeat {
        /// `min(commit, follower's match)`: never beyond what the follower holds.
        commit: LogIndex,
        /// Heartbeat round, echoed back to confirm leadership for reads.
        round: u64,
    },
    /// Follower → leader: acknowledgement of a heartbeat round.
    HeartbeatResponse {
        /// The round acknowledged.
        round: u64,
    },
    /// Candidate → voter: a request for a (pre-)vote. `term` is the term campaigned for.
    RequestVote {
        /// A pre-vote does not change anyone's term or vote.
        pre_vote: bool,
        /// Candidate's last log index.
        last_index: LogIndex,
        /// Candidate's last log term.
        last_term: Term,
        /// Sent on a leader's behalf (leadership transfer): bypasses the leader lease.
        transfer: bool,
    },
    /// Voter → candidate.
    VoteResponse {
        /// Answer to a pre-vote.
        pre_vote: bool,
        /// Whether the vote was granted.
        granted: bool,
    },
    /// Leader → follower: one chunk of a snapshot.
    SnapshotChunk {
        /// Which snapshot.
        meta: SnapshotMeta,
        /// Total size of the snapshot data.
        total: u64,
        /// Byte offset of `data`.
        offset: u64,
        /// The chunk.
        data: Bytes,
    },
    /// Follower → leader: bytes of a snapshot received so far.
    SnapshotAck {
        /// Which snapshot (by index).
        index: LogIndex,
        /// Contiguous bytes received.
        received: u64,
        /// A chunk arrived past a gap: the leader should resend from `received`.
        resend: bool,
    },
    /// Leader → transfer target: campaign now, bypassing pre-vote and leases.
    TimeoutNow,
    /// Follower → leader: forwarded proposals.
    Propose {
        /// Payloads to append.
        payloads: Vec<EntryPayload>,
    },
    /// Follower → leader: confirm a read.
    ReadIndex {
        /// The follower's token.
        ctx: ReadCtx,
    },
    /// Leader → follower: the read is confirmed at `index`.
    ReadIndexResponse {
        /// The follower's token.
        ctx: ReadCtx,
        /// Commit index the read must wait for.
        index: LogIndex,
    },
    /// Follower → leader: forwarded leadership-transfer request.
    TransferLeader {
        /// Proposed new leader.
        target: MemberId,
    },
}

impl MessageBody {
    /// Messages a follower may address to a leader of any term: they carry no claim about
    /// terms and are never answered with a term change.
    pub(crate) fn is_term_free(&self) -> bool {
        matches!(
            self,
            MessageBody::Propose { .. }
                | MessageBody::ReadIndex { .. }
                | MessageBody::ReadIndexResponse { .. }
                | MessageBody::TransferLeader { .. }
        )
    }

    /// Messages only a leader of the message's term sends.
    pub(crate) fn is_from_leader(&self) -> bool {
        matches!(
            self,
            MessageBody::Append { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::SnapshotChunk { .. }
                | MessageBody::TimeoutNow
        )
    }
}
