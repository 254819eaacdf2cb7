//! Values of the keyspace API, shaped like etcd's `etcdserverpb` messages.

use bytes::Bytes;

/// A revision: one main revision per write transaction, a sub-revision per change in it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct Revision {
    /// Transaction revision.
    pub main: i64,
    /// Position of the change within the transaction.
    pub sub: i64,
}

/// A key and its metadata, as etcd's `mvccpb.KeyValue`.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct KeyValue {
    /// The key.
    pub key: Bytes,
    /// Revision of the put that created the key (in its current generation).
    pub create_revision: i64,
    /// Revision of the last change.
    pub mod_revision: i64,
    /// Puts since creation (1 at creation).
    pub version: i64,
    /// The value (empty with `keys_only`).
    pub value: Bytes,
    /// Attached lease, or 0.
    pub lease: i64,
}

/// Sort direction of a range.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum SortOrder {
    /// Key order, unsorted otherwise.
    #[default]
    None,
    /// Ascending.
    Ascend,
    /// Descending.
    Descend,
}

/// What a range is sorted by.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum SortTarget {
    /// The key.
    #[default]
    Key,
    /// The version.
    Version,
    /// The create revision.
    Create,
    /// The mod revision.
    Mod,
    /// The value.
    Value,
}

/// etcd's `RangeRequest`.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct RangeRequest {
    /// First key.
    pub key: Bytes,
    /// End of the range (exclusive); empty for one key; `"\0"` for every key >= `key`.
    pub range_end: Bytes,
    /// Most keys returned (0: no limit).
    pub limit: i64,
    /// Read at this revision (0 or less: the current one).
    pub revision: i64,
    /// Sort direction.
    pub sort_order: SortOrder,
    /// Sort key.
    pub sort_target: SortTarget,
    /// Return keys without values.
    pub keys_only: bool,
    /// Return only the count.
    pub count_only: bool,
    /// Filters (0: none).
    pub min_mod_revision: i64,
    /// Filter.
    pub max_mod_revision: i64,
    /// Filter.
    pub min_create_revision: i64,
    /// Filter.
    pub max_create_revision: i64,
}

/// etcd's `RangeResponse` (without the header).
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct RangeResponse {
    /// Matching keys.
    pub kvs: Vec<KeyValue>,
    /// More keys matched than `limit` allowed.
    pub more: bool,
    /// Keys in the range at the read revision (before filters and limit).
    pub count: i64,
}

/// etcd's `PutRequest`.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct PutRequest {
    /// Key.
    pub key: Bytes,
    /// Value.
    pub value: Bytes,
    /// Lease to attach (0: none).
    pub lease: i64,
    /// Return the previous key-value.
    pub prev_kv: bool,
    /// Keep the current value.
    pub ignore_value: bool,
    /// Keep the current lease.
    pub ignore_lease: bool,
}

/// etcd's `PutResponse` (without the header).
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct PutResponse {
    /// The previous key-value, if asked for and present.
    pub prev_kv: Option<KeyValue>,
}

/// etcd's `DeleteRangeRequest`.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct DeleteRangeRequest {
    /// First key.
    pub key: Bytes,
    /// End of the range, as in [`RangeRequest`].
    pub range_end: Bytes,
    /// Return the deleted key-values.
    pub prev_kv: bool,
}

/// etcd's `DeleteRangeResponse` (without the header).
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct DeleteRangeResponse {
    /// Keys deleted.
    pub deleted: i64,
    /// The deleted key-values, if asked for.
    pub prev_kvs: Vec<KeyValue>,
}

/// What a compare looks at.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum CompareTarget {
    /// The key's version.
    Version(i64),
    /// The key's create revision.
    Create(i64),
    /// The key's mod revision.
    Mod(i64),
    /// The key's value.
    Value(Bytes),
    /// The key's lease.
    Lease(i64),
}

/// How a compare relates the key's field to the operand.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum CompareResult {
    /// Equal.
    Equal,
    /// Greater.
    Greater,
    /// Less.
    Less,
    /// Not equal.
    NotEqual,
}

/// etcd's `Compare`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Compare {
    /// Relation.
    pub result: CompareResult,
    /// Field and operand.
    pub target: CompareTarget,
    /// Key.
    pub key: Bytes,
    /// End of a key range (every key in it must satisfy the compare).
    pub range_end: Bytes,
}

/// One operation of a transaction branch.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum RequestOp {
    /// A range.
    Range(RangeRequest),
    /// A put.
    Put(PutRequest),
    /// A delete.
    DeleteRange(DeleteRangeRequest),
    /// A nested transaction.
    Txn(TxnRequest),
}

/// The result of one operation.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum ResponseOp {
    /// A range's result.
    Range(RangeResponse),
    /// A put's result.
    Put(PutResponse),
    /// A delete's result.
    DeleteRange(DeleteRangeResponse),
    /// A nested transaction's result.
    Txn(TxnResponse),
}

/// etcd's `TxnRequest`.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct TxnRequest {
    /// All must hold for `success` to run.
    pub compare: Vec<Compare>,
    /// Run if every compare holds.
    pub success: Vec<RequestOp>,
    /// Run otherwise.
    pub failure: Vec<RequestOp>,
}

/// etcd's `TxnResponse` (without the header).
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct TxnResponse {
    /// Whether the compares held.
    pub succeeded: bool,
    /// One response per executed operation.
    pub responses: Vec<ResponseOp>,
}

/// Errors with etcd's exact messages (clients match on them).
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum MvccError {
    /// Reading or compacting at or below the compacted revision.
    #[error("mvcc: required revision has been compacted")]
    Compacted,
    /// Reading or compacting beyond the current revision.
    #[error("mvcc: required revision is a future revision")]
    FutureRevision,
    /// `ignore_value` / `ignore_lease` on a key that does not exist.
    #[error("etcdserver: key not found")]
    KeyNotFound,
    /// A key written twice in one transaction.
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    /// More operations than `--max-txn-ops`.
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    /// A lease that was not granted.
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    /// An empty key.
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    /// Both `ignore_value` and a value, or `ignore_lease` and a lease.
    #[error("etcdserver: value is provided")]
    ValueProvided,
    /// Both `ignore_lease` and a lease.
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    /// The backend quota is exceeded (the NOSPACE alarm is raised).
    #[error("etcdserver: mvcc: database space exceeded")]
    NoSpace,
    /// The CORRUPT alarm is raised: writes are refused (etcd's `applierV3Corrupt`).
    #[error("etcdserver: corrupt cluster")]
    Corrupt,
}

/// What happened to a key.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum EventKind {
    /// Created or updated.
    Put,
    /// Deleted.
    Delete,
}

/// One change, as etcd's `mvccpb.Event`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Event {
    /// Put or delete.
    pub kind: EventKind,
    /// Revision of the change (main and sub).
    pub rev: Revision,
    /// The key after a put; for a delete only the key and its mod revision.
    pub kv: KeyValue,
    /// The key before the change, if it existed.
    pub prev_kv: Option<KeyValue>,
}
