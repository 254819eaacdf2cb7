//! What simulated clients ask members and what they are told: the KV subset the chaos
//! workload uses, leases and watches, carried as plain values over madsim's network
//! (the gRPC layer is the tokio runtime's; the simulation checks the core's behaviour
//! behind it).
//!
//! A watch is a stream: the member answers [`ClientOp::Watch`] with
//! [`ClientReply::WatchCreated`] and then sends [`ClientReply::Watch`] messages, all under the
//! request's ID as tag, numbered from 0 so the client can put them back in order
//! (madsim's network reorders messages; gRPC's stream would not). A watch opened with
//! require-leader is refused on a member that knows no leader, and ended with
//! [`ClientReply::StreamEnded`] once its member has had none for too long.

use bytes::Bytes;
use keel_core::mvcc::WatchResponse;

/// Endpoint tag of raft messages between members.
pub const PEER_TAG: u64 = 0;
/// Endpoint tag of client requests; a reply is sent back with the request's ID as tag.
pub const CLIENT_TAG: u64 = 1;
/// Endpoint tag of the corruption check's HashKV questions and answers between members
/// ([`HashMessage`]).
pub const HASH_TAG: u64 = 2;
/// The port every member listens on.
pub const MEMBER_PORT: u16 = 2380;

/// The corruption check between members, as production asks `HashKv` on the peer port.
#[derive(Clone, Debug)]
pub enum HashMessage {
    /// "Your HashKV at `revision`", for the asker's check round `round`.
    Ask {
        /// The asker's round.
        round: u64,
        /// The revision.
        revision: i64,
    },
    /// The answer.
    Answer {
        /// The asker's round.
        round: u64,
        /// The member answering.
        from: u64,
        /// Its hash, or why none.
        result:
            Result<keel_core::node::corruption::KvHash, keel_core::node::corruption::PeerHashError>,
    },
}

/// A client's request.
#[derive(Clone, Debug)]
pub struct Request {
    /// Unique per client endpoint; the reply carries it as its tag.
    pub id: u64,
    /// What to do.
    pub op: ClientOp,
    /// clientv3's require-leader: fail at once with "no leader" rather than wait for one.
    pub require_leader: bool,
    /// A simple auth token (from [`ClientOp::Authenticate`]) the request is made with.
    pub token: Option<String>,
}

/// A key-value operation on one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientOp {
    /// A linearizable get.
    Get {
        /// The key.
        key: Bytes,
    },
    /// A put.
    Put {
        /// The key.
        key: Bytes,
        /// The value.
        value: Bytes,
        /// Lease to attach the key to (0: none).
        lease: i64,
    },
    /// A delete of exactly this key.
    Delete {
        /// The key.
        key: Bytes,
    },
    /// A transaction: if the key's value equals `expect`, put `value`.
    Cas {
        /// The key.
        key: Bytes,
        /// The value the key must hold.
        expect: Bytes,
        /// The new value.
        value: Bytes,
    },
    /// A lease grant (the member picks the ID, as etcd does for ID 0).
    LeaseGrant {
        /// Requested TTL in seconds.
        ttl: i64,
    },
    /// One keepalive of a lease: only the leader's lessor renews; others refuse.
    LeaseKeepAlive {
        /// The lease.
        id: i64,
    },
    /// Opens a watch stream under this request's ID.
    Watch {
        /// First key.
        key: Bytes,
        /// End of the range, as in a range request (empty: the key only).
        range_end: Bytes,
        /// First revision to deliver (0: the next write).
        start_revision: i64,
        /// Include previous key-values in events.
        prev_kv: bool,
    },
    /// Compacts the keyspace's history at or below `revision` (etcd's Compact).
    Compact {
        /// The revision.
        revision: i64,
    },
    /// Log in as `user` (the password check is the gRPC layer's; here the member
    /// proposes the Authenticate entry at once): answered with [`ClientReply::Token`].
    Authenticate {
        /// The user.
        user: String,
    },
    /// Change the auth store with the member's own authority (test setup): answered
    /// with [`ClientReply::AuthChanged`].
    AuthChange(keel_core::auth::AuthCommand),
    /// etcd's RequestProgress on the watch stream opened by this client's request `id`:
    /// answered on that stream with watch ID -1 and the member's revision once the watch
    /// has nothing undelivered, else not at all (as etcd 3.5.13).
    RequestProgress {
        /// The ID of the [`ClientOp::Watch`] request.
        id: u64,
    },
    /// Cancels the watch opened by this client's request `id`.
    CancelWatch {
        /// The ID of the [`ClientOp::Watch`] request.
        id: u64,
    },
}

/// A key as a get returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// The value.
    pub value: Bytes,
    /// Revision of the last write.
    pub mod_revision: u64,
    /// Writes since creation.
    pub version: u64,
}

/// A member's answer; `revision` is the response header's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientReply {
    /// A get's result.
    Get {
        /// The key, if present.
        kv: Option<Found>,
        /// Header revision.
        revision: u64,
    },
    /// A put was applied.
    Put {
        /// Header revision.
        revision: u64,
    },
    /// A delete was applied.
    Delete {
        /// Whether the key existed.
        deleted: bool,
        /// Header revision.
        revision: u64,
    },
    /// A transaction was applied.
    Cas {
        /// Whether the compare held.
        succeeded: bool,
        /// Header revision.
        revision: u64,
    },
    /// A lease was granted.
    LeaseGrant {
        /// Lease ID.
        id: i64,
        /// Granted TTL in seconds.
        ttl: i64,
        /// Header revision.
        revision: u64,
    },
    /// A keepalive was served by the leader's lessor.
    LeaseKeepAlive {
        /// The TTL the lease lives from now, in seconds; 0 if the lease is not found.
        ttl: i64,
    },
    /// A compaction was applied.
    Compact {
        /// Header revision.
        revision: u64,
    },
    /// The watch exists (message 0 of the stream).
    WatchCreated {
        /// Header revision when it was created: a watch from revision 0 starts after it.
        revision: u64,
    },
    /// One response of a watch stream.
    Watch {
        /// Position in the stream (1, 2, ...).
        seq: u64,
        /// The response: events, a progress notification (no events) or a cancellation.
        resp: WatchResponse,
        /// Global time the member sent it (for checks: a stream opened with
        /// require-leader must carry nothing once its member has long had no leader).
        sent_ns: u64,
    },
    /// The stream ended with an error, as a gRPC stream ends with a status: the last
    /// message of a watch stream (etcd's "etcdserver: no leader" for a require-leader
    /// stream on a member without a leader for too long).
    StreamEnded {
        /// Position in the stream.
        seq: u64,
        /// The status message.
        reason: String,
    },
    /// A simple token to make requests with.
    Token(String),
    /// The auth change was applied.
    AuthChanged,
    /// The request definitely had no effect (no leader, leadership lost before a read
    /// was confirmed, a proposal refused).
    Refused(String),
}
