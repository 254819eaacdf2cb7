//! Which gRPC method each gateway path calls, and how its messages cross between JSON
//! and protobuf. The paths are the `google.api.http` annotations of etcd 3.4's .proto
//! files (`post: "/v3/kv/range", body: "*"`, with the `additional_bindings` some lease
//! calls have); keel's .proto files drop those annotations, so they live here.

use bytes::Bytes;
use prost::Message;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::pb::{etcdserverpb as pb, v3electionpb as el, v3lockpb as lk};

/// How a method's messages flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// One request, one response.
    Unary,
    /// One request, a stream of responses (Snapshot, Observe).
    ServerStream,
    /// Streams both ways (Watch, LeaseKeepAlive): the HTTP body carries a sequence of
    /// JSON requests.
    Bidi,
}

/// One gateway method.
pub struct Method {
    /// The HTTP path after the version prefix (`kv/range`).
    pub path: &'static str,
    /// The gRPC method path (`/etcdserverpb.KV/Range`).
    pub grpc: &'static str,
    /// Unary or streaming.
    pub shape: Shape,
    /// A JSON request as its protobuf encoding.
    pub request: fn(serde_json::Value) -> Result<Bytes, serde_json::Error>,
    /// A protobuf response as its JSON text.
    pub response: fn(&[u8]) -> Result<String, String>,
    /// A protobuf request as its JSON text (the inverse of `request`, for round trips).
    pub request_json: fn(&[u8]) -> Result<String, String>,
}

fn request<T: DeserializeOwned + Message>(
    json: serde_json::Value,
) -> Result<Bytes, serde_json::Error> {
    let req: T = serde_json::from_value(json)?;
    Ok(req.encode_to_vec().into())
}

fn response<T: Serialize + Message + Default>(pb: &[u8]) -> Result<String, String> {
    let resp = T::decode(pb).map_err(|e| e.to_string())?;
    serde_json::to_string(&resp).map_err(|e| e.to_string())
}

macro_rules! methods {
    ($($path:literal => $grpc:literal, $shape:ident, $req:ty, $resp:ty;)*) => {
        /// Every method of etcd 3.4's gateway, in its registration order: where two
        /// share a path (`maintenance/hash`: Hash and HashKV), the first answers, as in
        /// etcd.
        pub static METHODS: &[Method] = &[$(Method {
            path: $path,
            grpc: $grpc,
            shape: Shape::$shape,
            request: request::<$req>,
            response: response::<$resp>,
            request_json: response::<$req>,
        }),*];
    };
}

methods! {
    "kv/range" => "/etcdserverpb.KV/Range", Unary, pb::RangeRequest, pb::RangeResponse;
    "kv/put" => "/etcdserverpb.KV/Put", Unary, pb::PutRequest, pb::PutResponse;
    "kv/deleterange" => "/etcdserverpb.KV/DeleteRange", Unary, pb::DeleteRangeRequest, pb::DeleteRangeResponse;
    "kv/txn" => "/etcdserverpb.KV/Txn", Unary, pb::TxnRequest, pb::TxnResponse;
    "kv/compaction" => "/etcdserverpb.KV/Compact", Unary, pb::CompactionRequest, pb::CompactionResponse;
    "watch" => "/etcdserverpb.Watch/Watch", Bidi, pb::WatchRequest, pb::WatchResponse;
    "lease/grant" => "/etcdserverpb.Lease/LeaseGrant", Unary, pb::LeaseGrantRequest, pb::LeaseGrantResponse;
    "lease/revoke" => "/etcdserverpb.Lease/LeaseRevoke", Unary, pb::LeaseRevokeRequest, pb::LeaseRevokeResponse;
    "kv/lease/revoke" => "/etcdserverpb.Lease/LeaseRevoke", Unary, pb::LeaseRevokeRequest, pb::LeaseRevokeResponse;
    "lease/keepalive" => "/etcdserverpb.Lease/LeaseKeepAlive", Bidi, pb::LeaseKeepAliveRequest, pb::LeaseKeepAliveResponse;
    "lease/timetolive" => "/etcdserverpb.Lease/LeaseTimeToLive", Unary, pb::LeaseTimeToLiveRequest, pb::LeaseTimeToLiveResponse;
    "kv/lease/timetolive" => "/etcdserverpb.Lease/LeaseTimeToLive", Unary, pb::LeaseTimeToLiveRequest, pb::LeaseTimeToLiveResponse;
    "lease/leases" => "/etcdserverpb.Lease/LeaseLeases", Unary, pb::LeaseLeasesRequest, pb::LeaseLeasesResponse;
    "kv/lease/leases" => "/etcdserverpb.Lease/LeaseLeases", Unary, pb::LeaseLeasesRequest, pb::LeaseLeasesResponse;
    "cluster/member/add" => "/etcdserverpb.Cluster/MemberAdd", Unary, pb::MemberAddRequest, pb::MemberAddResponse;
    "cluster/member/remove" => "/etcdserverpb.Cluster/MemberRemove", Unary, pb::MemberRemoveRequest, pb::MemberRemoveResponse;
    "cluster/member/update" => "/etcdserverpb.Cluster/MemberUpdate", Unary, pb::MemberUpdateRequest, pb::MemberUpdateResponse;
    "cluster/member/list" => "/etcdserverpb.Cluster/MemberList", Unary, pb::MemberListRequest, pb::MemberListResponse;
    "cluster/member/promote" => "/etcdserverpb.Cluster/MemberPromote", Unary, pb::MemberPromoteRequest, pb::MemberPromoteResponse;
    "maintenance/alarm" => "/etcdserverpb.Maintenance/Alarm", Unary, pb::AlarmRequest, pb::AlarmResponse;
    "maintenance/status" => "/etcdserverpb.Maintenance/Status", Unary, pb::StatusRequest, pb::StatusResponse;
    "maintenance/defragment" => "/etcdserverpb.Maintenance/Defragment", Unary, pb::DefragmentRequest, pb::DefragmentResponse;
    "maintenance/hash" => "/etcdserverpb.Maintenance/Hash", Unary, pb::HashRequest, pb::HashResponse;
    "maintenance/snapshot" => "/etcdserverpb.Maintenance/Snapshot", ServerStream, pb::SnapshotRequest, pb::SnapshotResponse;
    "maintenance/transfer-leadership" => "/etcdserverpb.Maintenance/MoveLeader", Unary, pb::MoveLeaderRequest, pb::MoveLeaderResponse;
    "auth/enable" => "/etcdserverpb.Auth/AuthEnable", Unary, pb::AuthEnableRequest, pb::AuthEnableResponse;
    "auth/disable" => "/etcdserverpb.Auth/AuthDisable", Unary, pb::AuthDisableRequest, pb::AuthDisableResponse;
    "auth/authenticate" => "/etcdserverpb.Auth/Authenticate", Unary, pb::AuthenticateRequest, pb::AuthenticateResponse;
    "auth/user/add" => "/etcdserverpb.Auth/UserAdd", Unary, pb::AuthUserAddRequest, pb::AuthUserAddResponse;
    "auth/user/get" => "/etcdserverpb.Auth/UserGet", Unary, pb::AuthUserGetRequest, pb::AuthUserGetResponse;
    "auth/user/list" => "/etcdserverpb.Auth/UserList", Unary, pb::AuthUserListRequest, pb::AuthUserListResponse;
    "auth/user/delete" => "/etcdserverpb.Auth/UserDelete", Unary, pb::AuthUserDeleteRequest, pb::AuthUserDeleteResponse;
    "auth/user/changepw" => "/etcdserverpb.Auth/UserChangePassword", Unary, pb::AuthUserChangePasswordRequest, pb::AuthUserChangePasswordResponse;
    "auth/user/grant" => "/etcdserverpb.Auth/UserGrantRole", Unary, pb::AuthUserGrantRoleRequest, pb::AuthUserGrantRoleResponse;
    "auth/user/revoke" => "/etcdserverpb.Auth/UserRevokeRole", Unary, pb::AuthUserRevokeRoleRequest, pb::AuthUserRevokeRoleResponse;
    "auth/role/add" => "/etcdserverpb.Auth/RoleAdd", Unary, pb::AuthRoleAddRequest, pb::AuthRoleAddResponse;
    "auth/role/get" => "/etcdserverpb.Auth/RoleGet", Unary, pb::AuthRoleGetRequest, pb::AuthRoleGetResponse;
    "auth/role/list" => "/etcdserverpb.Auth/RoleList", Unary, pb::AuthRoleListRequest, pb::AuthRoleListResponse;
    "auth/role/delete" => "/etcdserverpb.Auth/RoleDelete", Unary, pb::AuthRoleDeleteRequest, pb::AuthRoleDeleteResponse;
    "auth/role/grant" => "/etcdserverpb.Auth/RoleGrantPermission", Unary, pb::AuthRoleGrantPermissionRequest, pb::AuthRoleGrantPermissionResponse;
    "auth/role/revoke" => "/etcdserverpb.Auth/RoleRevokePermission", Unary, pb::AuthRoleRevokePermissionRequest, pb::AuthRoleRevokePermissionResponse;
    "lock/lock" => "/v3lockpb.Lock/Lock", Unary, lk::LockRequest, lk::LockResponse;
    "lock/unlock" => "/v3lockpb.Lock/Unlock", Unary, lk::UnlockRequest, lk::UnlockResponse;
    "election/campaign" => "/v3electionpb.Election/Campaign", Unary, el::CampaignRequest, el::CampaignResponse;
    "election/proclaim" => "/v3electionpb.Election/Proclaim", Unary, el::ProclaimRequest, el::ProclaimResponse;
    "election/leader" => "/v3electionpb.Election/Leader", Unary, el::LeaderRequest, el::LeaderResponse;
    "election/observe" => "/v3electionpb.Election/Observe", ServerStream, el::LeaderRequest, el::LeaderResponse;
    "election/resign" => "/v3electionpb.Election/Resign", Unary, el::ResignRequest, el::ResignResponse;
}

/// The method a path after the version prefix names.
pub fn find(path: &str) -> Option<&'static Method> {
    METHODS.iter().find(|m| m.path == path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_is_answered_by_the_first_method_registered_for_it() {
        assert_eq!(
            find("maintenance/hash").map(|m| m.grpc),
            Some("/etcdserverpb.Maintenance/Hash")
        );
        assert_eq!(
            find("kv/lease/revoke").map(|m| m.grpc),
            Some("/etcdserverpb.Lease/LeaseRevoke")
        );
        assert!(find("auth/status").is_none(), "3.5's path, not 3.4's");
    }

    #[test]
    fn requests_read_grpc_gateway_json_and_responses_write_it() {
        // Proto field names and lowerCamel names, 64-bit integers as numbers or
        // strings, enums by name or number, bytes as base64, unknown fields ignored.
        let range = find("kv/range").expect("range");
        let a = (range.request)(serde_json::json!({
            "key": "Zm9v", "sort_order": "DESCEND", "keys_only": true, "limit": "5", "bogus": 1
        }))
        .expect("decodes");
        let b = (range.request)(serde_json::json!({
            "key": "Zm9v", "sortOrder": 2, "keysOnly": true, "limit": 5
        }))
        .expect("decodes");
        assert_eq!(a, b);
        let req = pb::RangeRequest::decode(a).expect("protobuf");
        assert_eq!(
            (&req.key[..], req.limit, req.keys_only),
            (&b"foo"[..], 5, true)
        );

        let resp = pb::RangeResponse {
            header: Some(pb::ResponseHeader {
                cluster_id: 10412384214623160244,
                member_id: 2793360864411331477,
                revision: 2,
                raft_term: 2,
            }),
            kvs: vec![crate::pb::mvccpb::KeyValue {
                key: "foo".into(),
                create_revision: 2,
                mod_revision: 2,
                version: 1,
                value: "bar".into(),
                lease: 0,
            }],
            more: false,
            count: 1,
        };
        // Byte for byte what etcd 3.4.23's gateway answered for this range.
        assert_eq!(
            (range.response)(&resp.encode_to_vec()).expect("encodes"),
            r#"{"header":{"cluster_id":"10412384214623160244","member_id":"2793360864411331477","revision":"2","raft_term":"2"},"kvs":[{"key":"Zm9v","create_revision":"2","mod_revision":"2","version":"1","value":"YmFy"}],"count":"1"}"#
        );
    }
}
