//! etcd's gRPC services over a running member. Each service converts the wire request,
//! asks the member (a proposal or a read) and converts the answer back; errors become
//! gRPC statuses with etcd's codes and exact messages.

mod auth;
pub mod authz;
mod call_metrics;
pub(crate) mod cluster;
pub mod convert;
mod election;
pub mod forward;
mod health;
pub mod interceptor;
mod kv;
mod lease;
mod lock;
mod maintenance;
mod recipes;
mod watch;

use keel_core::mvcc::{LeaseError, MvccError};
use keel_core::node::Outcome;
use tonic::{Code, Status};

use crate::member::{Header, MemberHandle, ServerError};
use crate::pb::etcdserverpb::ResponseHeader;

pub use auth::AuthService;
pub use cluster::ClusterService;
pub use election::ElectionService;
pub use health::HealthService;
pub use kv::KvService;
pub use lease::LeaseService;
pub use lock::LockService;
pub use maintenance::MaintenanceService;
pub use watch::WatchService;

/// The response header etcd puts on every answer.
pub fn header(m: &MemberHandle, h: Header) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        cluster_id: m.cluster_id,
        member_id: m.id,
        revision: h.revision,
        raft_term: h.raft_term,
    })
}

/// A keyspace error as etcd's gRPC status.
pub fn mvcc_status(e: MvccError) -> Status {
    let code = match e {
        MvccError::Compacted | MvccError::FutureRevision => Code::OutOfRange,
        MvccError::LeaseNotFound => Code::NotFound,
        MvccError::NoSpace => Code::ResourceExhausted,
        MvccError::Corrupt => Code::DataLoss,
        MvccError::KeyNotFound
        | MvccError::DuplicateKey
        | MvccError::TooManyOps
        | MvccError::EmptyKey
        | MvccError::ValueProvided
        | MvccError::LeaseProvided => Code::InvalidArgument,
    };
    let msg = e.to_string();
    // etcd prefixes its mvcc errors with "etcdserver: " on the wire.
    let msg = if msg.starts_with("etcdserver: ") {
        msg
    } else {
        format!("etcdserver: {msg}")
    };
    Status::new(code, msg)
}

/// A lease error as etcd's gRPC status.
pub fn lease_status(e: LeaseError) -> Status {
    let code = match e {
        LeaseError::NotFound => Code::NotFound,
        LeaseError::Exists => Code::FailedPrecondition,
        LeaseError::TtlTooLarge => Code::OutOfRange,
        LeaseError::ZeroId => Code::InvalidArgument,
        LeaseError::NotPrimary => Code::FailedPrecondition,
        LeaseError::Corrupt => Code::DataLoss,
        LeaseError::CheckpointPending => Code::Unavailable,
    };
    Status::new(code, e.to_string())
}

/// A member error as etcd's gRPC status.
pub fn server_status(e: ServerError) -> Status {
    let code = match e {
        ServerError::NoLeader
        | ServerError::Timeout
        | ServerError::Stopped
        | ServerError::LeaderChanged => Code::Unavailable,
        ServerError::NotLeader => Code::FailedPrecondition,
        ServerError::TooManyRequests => Code::ResourceExhausted,
        ServerError::TooLarge => Code::InvalidArgument,
        ServerError::Removed => Code::FailedPrecondition,
        ServerError::BadTransferee => Code::FailedPrecondition,
        ServerError::Storage(_) => Code::Internal,
        ServerError::MemberExists
        | ServerError::PeerUrlExists
        | ServerError::MemberNotLearner
        | ServerError::LearnerNotReady
        | ServerError::TooManyLearners
        | ServerError::NotEnoughStarted => Code::FailedPrecondition,
        ServerError::BadMemberUrls => Code::InvalidArgument,
        ServerError::MemberNotFound => Code::NotFound,
        ServerError::Unhealthy | ServerError::ChangeInProgress => Code::Unavailable,
    };
    Status::new(code, e.to_string())
}

/// A refused read as etcd's gRPC status.
pub fn refused_status(e: crate::member::ReadRefused) -> Status {
    match e {
        crate::member::ReadRefused::Denied(e) => authz::auth_status(e),
        crate::member::ReadRefused::Mvcc(e) => mvcc_status(e),
    }
}

/// A member's answer as a gRPC result (the error is core's type, so `?` cannot convert
/// it to a tonic status by itself).
pub(crate) trait Grpc<T> {
    /// The error as its gRPC status.
    fn grpc(self) -> Result<T, Status>;
}

impl<T> Grpc<T> for Result<T, ServerError> {
    fn grpc(self) -> Result<T, Status> {
        self.map_err(server_status)
    }
}

/// A proposal's answer, or etcd's auth error when the state machine refused the caller
/// as it applied the entry.
pub fn permitted(r: (Outcome, Header)) -> Result<(Outcome, Header), Status> {
    match r {
        (Outcome::Denied(e), _) => Err(authz::auth_status(e)),
        r => Ok(r),
    }
}

/// An answer of an unexpected kind: a bug, reported instead of panicking.
pub fn mismatched() -> Status {
    Status::internal("etcdserver: unexpected apply result")
}

/// Every service of the client API over `m`, as one router.
pub fn routes(m: &MemberHandle) -> tonic::service::Routes {
    use crate::pb::etcdserverpb::{
        auth_server::AuthServer, cluster_server::ClusterServer, kv_server::KvServer,
        lease_server::LeaseServer, maintenance_server::MaintenanceServer,
        watch_server::WatchServer,
    };
    use crate::pb::grpc_health_v1::health_server::HealthServer;
    use crate::pb::v3electionpb::election_server::ElectionServer;
    use crate::pb::v3lockpb::lock_server::LockServer;
    let limit = m.max_request_bytes + (512 << 10);
    tonic::service::Routes::new(
        KvServer::new(KvService::new(m.clone())).max_decoding_message_size(limit),
    )
    .add_service(WatchServer::new(WatchService::new(m.clone())).max_decoding_message_size(limit))
    .add_service(LeaseServer::new(LeaseService::new(m.clone())))
    .add_service(ClusterServer::new(ClusterService::new(m.clone())))
    .add_service(
        MaintenanceServer::new(MaintenanceService::new(m.clone()))
            .max_encoding_message_size(usize::MAX),
    )
    .add_service(LockServer::new(LockService::new(m.clone())))
    .add_service(ElectionServer::new(ElectionService::new(m.clone())))
    .add_service(HealthServer::new(HealthService::new(m.clone())))
    .add_service(AuthServer::new(AuthService::new(m.clone())))
}
