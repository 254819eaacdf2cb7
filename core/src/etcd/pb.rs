//! The protobuf messages etcd 3.4 keeps in its backend's buckets (`mvccpb.KeyValue`,
//! `leasepb.Lease`, `authpb.User`/`Role`/`Permission`, `etcdserverpb.AlarmMember`), with
//! etcd's field numbers.

/// `mvccpb.KeyValue`: a row of the `key` bucket.
#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValue {
    /// The key.
    #[prost(bytes = "bytes", tag = "1")]
    pub key: bytes::Bytes,
    /// Revision of the put that created the key.
    #[prost(int64, tag = "2")]
    pub create_revision: i64,
    /// Revision of this change.
    #[prost(int64, tag = "3")]
    pub mod_revision: i64,
    /// Puts since creation.
    #[prost(int64, tag = "4")]
    pub version: i64,
    /// The value.
    #[prost(bytes = "bytes", tag = "5")]
    pub value: bytes::Bytes,
    /// Attached lease, or 0.
    #[prost(int64, tag = "6")]
    pub lease: i64,
}

/// `leasepb.Lease`: a row of the `lease` bucket.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Lease {
    /// Lease ID.
    #[prost(int64, tag = "1")]
    pub id: i64,
    /// Granted TTL in seconds.
    #[prost(int64, tag = "2")]
    pub ttl: i64,
    /// TTL left at the last checkpoint (0: none taken).
    #[prost(int64, tag = "3")]
    pub remaining_ttl: i64,
}

/// `authpb.UserAddOptions`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct UserAddOptions {
    /// The user cannot authenticate with a password.
    #[prost(bool, tag = "1")]
    pub no_password: bool,
}

/// `authpb.User`: a row of `authUsers`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct User {
    /// Name.
    #[prost(bytes = "vec", tag = "1")]
    pub name: Vec<u8>,
    /// bcrypt hash of the password.
    #[prost(bytes = "vec", tag = "2")]
    pub password: Vec<u8>,
    /// Granted roles.
    #[prost(string, repeated, tag = "3")]
    pub roles: Vec<String>,
    /// Options (etcd 3.4+).
    #[prost(message, optional, tag = "4")]
    pub options: Option<UserAddOptions>,
}

/// `authpb.Permission`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Permission {
    /// READ = 0, WRITE = 1, READWRITE = 2.
    #[prost(int32, tag = "1")]
    pub perm_type: i32,
    /// Start of the range.
    #[prost(bytes = "vec", tag = "2")]
    pub key: Vec<u8>,
    /// End of the range.
    #[prost(bytes = "vec", tag = "3")]
    pub range_end: Vec<u8>,
}

/// `authpb.Role`: a row of `authRoles`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Role {
    /// Name.
    #[prost(bytes = "vec", tag = "1")]
    pub name: Vec<u8>,
    /// Key permissions.
    #[prost(message, repeated, tag = "2")]
    pub key_permission: Vec<Permission>,
}

/// `etcdserverpb.AlarmMember`: a key of the `alarm` bucket (its value is empty).
#[derive(Clone, PartialEq, prost::Message)]
pub struct AlarmMember {
    /// Member that raised it.
    #[prost(uint64, tag = "1")]
    pub member_id: u64,
    /// NOSPACE = 1, CORRUPT = 2.
    #[prost(int32, tag = "2")]
    pub alarm: i32,
}
