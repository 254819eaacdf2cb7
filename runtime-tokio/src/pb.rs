//! etcd v3.5's gRPC API, generated at build time from `proto/` (see build.rs).
//!
//! The packages mirror etcd's protobuf packages, so every message encodes
//! byte-for-byte as etcd's does and every service answers on etcd's method paths
//! (`/etcdserverpb.KV/Range`, ...). `bytes` fields are `bytes::Bytes`. Each service
//! `Foo` has a server trait `foo_server::Foo` wrapped by `foo_server::FooServer`, and a
//! client `foo_client::FooClient`.
#![allow(missing_docs)]
#![allow(clippy::all, clippy::pedantic, clippy::nursery)]
#![allow(unused_qualifications, rustdoc::all)]

/// etcd's MVCC data model: `KeyValue` and watch `Event`.
pub mod mvccpb {
    tonic::include_proto!("mvccpb");
    include!(concat!(env!("OUT_DIR"), "/mvccpb.serde.rs"));
}

/// etcd's auth data model: users, roles and permissions.
pub mod authpb {
    tonic::include_proto!("authpb");
    include!(concat!(env!("OUT_DIR"), "/authpb.serde.rs"));
}

/// etcd's client API: the KV, Watch, Lease, Cluster, Maintenance and Auth services.
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.serde.rs"));
}

/// etcd's Lock service (distributed locks over leases).
pub mod v3lockpb {
    tonic::include_proto!("v3lockpb");
    include!(concat!(env!("OUT_DIR"), "/v3lockpb.serde.rs"));
}

/// etcd's Election service (leader election over leases).
pub mod v3electionpb {
    tonic::include_proto!("v3electionpb");
    include!(concat!(env!("OUT_DIR"), "/v3electionpb.serde.rs"));
}

/// The standard gRPC health checking service (`grpc.health.v1.Health`).
pub mod grpc_health_v1 {
    tonic::include_proto!("grpc.health.v1");
}
