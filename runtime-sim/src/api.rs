//! What simulated clients ask members and what they are told: the KV subset the chaos
//! workload uses, carried as plain values over madsim's network (the gRPC layer is the
//! tokio runtime's; the simulation checks the core's behaviour behind it).

use bytes::Bytes;

/// Endpoint tag of raft messages between members.
pub const PEER_TAG: u64 = 0;
/// Endpoint tag of client requests; a reply is sent back with the request's ID as tag.
pub const CLIENT_TAG: u64 = 1;
/// The port every member listens on.
pub const MEMBER_PORT: u16 = 2380;

/// A client's request.
#[derive(Clone, Debug)]
pub struct Request {
    /// Unique per client endpoint; the reply carries it as its tag.
    pub id: u64,
    /// What to do.
    pub op: ClientOp,
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
pub enum Reply {
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
    /// The request definitely had no effect (no leader, leadership lost before a read
    /// was confirmed, a proposal refused).
    Refused(String),
}
