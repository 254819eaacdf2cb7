//! The revisioned keyspace committed raft entries are applied to, with etcd's semantics.
//!
//! One main revision per write transaction, a sub-revision per change in it; each key
//! keeps generations of versions (creation to deletion) so "key K at revision R" is one
//! search in K's history; deletes leave tombstones; compaction frees history at or below
//! a revision incrementally while every key's latest value stays. Errors carry etcd's
//! exact messages.
//!
//! Leases ([`Lessor`]) expire on the leader only and are revoked through raft.
//!
//! Watchers ([`WatchHub`]) get ordered events from any start revision; slow ones fall
//! back to catching up from history instead of holding memory or blocking writes.
//!
//! [`KvState`] composes keyspace, leases and applied index with the backend quota
//! (NOSPACE alarm) and snapshots/restores the whole; auth tables and membership join it
//! when those exist.

mod key_index;
pub mod keytree;
mod lease;
mod op_counts;
mod rows;
mod state;
mod store;
mod types;
mod value_slab;
mod watch;

pub use lease::{LeaseError, LeaseId, Lessor, MAX_LEASE_TTL};
pub use op_counts::OpCounts;
pub use rows::{Row, RowError, RowImport};
pub use state::{KvState, StateDecodeError};
pub use store::{KvStore, DEFAULT_MAX_TXN_OPS};
pub use types::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, DeleteRangeResponse, Event,
    EventKind, KeyValue, MvccError, PutRequest, PutResponse, RangeRequest, RangeResponse,
    RequestOp, ResponseOp, Revision, SortOrder, SortTarget, TxnRequest, TxnResponse,
};
pub use watch::{ProgressFor, WatchHub, WatchRequest, WatchResponse, STREAM_PROGRESS_ID};
