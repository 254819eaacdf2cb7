//! The generated etcd API is wire-compatible with etcd 3.5: messages encode to the exact
//! bytes etcd's protobuf definitions prescribe (expected bytes below are worked out by
//! hand from etcd's field numbers and wire types, not from our encoder), and the
//! services answer on etcd's gRPC method paths.

use bytes::Bytes;
use keel_runtime_tokio::pb::etcdserverpb::{
    compare, range_request, request_op, watch_create_request, watch_request, AlarmMember,
    AlarmType, Compare, HashKvResponse, LeaseTimeToLiveResponse, PutRequest, RangeRequest,
    RequestOp, ResponseHeader, StatusResponse, TxnRequest, WatchCancelRequest, WatchCreateRequest,
    WatchProgressRequest, WatchRequest,
};
use keel_runtime_tokio::pb::mvccpb::{event, Event, KeyValue};
use prost::Message;

/// Encodes `msg`, checks the bytes, and checks they decode back to `msg`.
fn assert_wire<M: Message + Default + PartialEq + std::fmt::Debug>(msg: &M, expected: &[u8]) {
    let got = msg.encode_to_vec();
    assert_eq!(got, expected, "encoding of {msg:?}");
    assert_eq!(msg.encoded_len(), expected.len());
    let back = M::decode(expected).expect("decodes");
    assert_eq!(&back, msg);
}

#[test]
fn put_request() {
    let msg = PutRequest {
        key: Bytes::from_static(b"foo"),
        value: Bytes::from_static(b"bar"),
        lease: 7,
        prev_kv: true,
        ..Default::default()
    };
    #[rustfmt::skip]
    let expected = [
        0x0a, 3, b'f', b'o', b'o', // 1: key (LEN)
        0x12, 3, b'b', b'a', b'r', // 2: value (LEN)
        0x18, 7,                   // 3: lease (VARINT)
        0x20, 1,                   // 4: prev_kv
    ];
    assert_wire(&msg, &expected);

    // ignore_value = 5, ignore_lease = 6.
    let msg = PutRequest {
        key: Bytes::from_static(b"k"),
        ignore_value: true,
        ignore_lease: true,
        ..Default::default()
    };
    assert_wire(&msg, &[0x0a, 1, b'k', 0x28, 1, 0x30, 1]);
}

#[test]
fn range_request_every_field() {
    let msg = RangeRequest {
        key: Bytes::from_static(b"a"),
        range_end: Bytes::from_static(b"b"),
        limit: 10,
        revision: 300,
        sort_order: range_request::SortOrder::Descend as i32,
        sort_target: range_request::SortTarget::Mod as i32,
        serializable: true,
        keys_only: true,
        count_only: true,
        min_mod_revision: 5,
        max_mod_revision: 6,
        min_create_revision: 7,
        max_create_revision: 200,
    };
    #[rustfmt::skip]
    let expected = [
        0x0a, 1, b'a',   // 1: key
        0x12, 1, b'b',   // 2: range_end
        0x18, 10,        // 3: limit
        0x20, 0xac, 0x02, // 4: revision = 300
        0x28, 2,         // 5: sort_order = DESCEND
        0x30, 3,         // 6: sort_target = MOD
        0x38, 1,         // 7: serializable
        0x40, 1,         // 8: keys_only
        0x48, 1,         // 9: count_only
        0x50, 5,         // 10: min_mod_revision
        0x58, 6,         // 11: max_mod_revision
        0x60, 7,         // 12: min_create_revision
        0x68, 0xc8, 0x01, // 13: max_create_revision = 200
    ];
    assert_wire(&msg, &expected);
}

#[test]
fn compare_target_union() {
    let msg = Compare {
        result: compare::CompareResult::NotEqual as i32,
        target: compare::CompareTarget::Mod as i32,
        key: Bytes::from_static(b"k"),
        target_union: Some(compare::TargetUnion::ModRevision(42)),
        range_end: Bytes::from_static(b"\0"),
    };
    #[rustfmt::skip]
    let expected = [
        0x08, 3,             // 1: result = NOT_EQUAL
        0x10, 2,             // 2: target = MOD
        0x1a, 1, b'k',       // 3: key
        0x30, 42,            // 6: mod_revision (oneof target_union)
        0x82, 0x04, 1, 0x00, // 64: range_end; tag (64 << 3 | 2) = 514 = varint 82 04
    ];
    assert_wire(&msg, &expected);

    // A set oneof member is encoded even at its default value (etcd relies on
    // `version = 0` meaning "key does not exist"), and EQUAL/VERSION (0) are omitted.
    let msg = Compare {
        key: Bytes::from_static(b"k"),
        target_union: Some(compare::TargetUnion::Version(0)),
        ..Default::default()
    };
    assert_wire(&msg, &[0x1a, 1, b'k', 0x20, 0]);

    // value = 7 (bytes), lease = 8, create_revision = 5.
    let msg = Compare {
        target: compare::CompareTarget::Value as i32,
        target_union: Some(compare::TargetUnion::Value(Bytes::from_static(b"v"))),
        ..Default::default()
    };
    assert_wire(&msg, &[0x10, 3, 0x3a, 1, b'v']);
    let msg = Compare {
        target: compare::CompareTarget::Lease as i32,
        target_union: Some(compare::TargetUnion::Lease(9)),
        ..Default::default()
    };
    assert_wire(&msg, &[0x10, 4, 0x40, 9]);
    let msg = Compare {
        target: compare::CompareTarget::Create as i32,
        target_union: Some(compare::TargetUnion::CreateRevision(1)),
        ..Default::default()
    };
    assert_wire(&msg, &[0x10, 1, 0x28, 1]);
}

#[test]
fn txn_request_nests_ops() {
    let msg = TxnRequest {
        compare: vec![Compare {
            key: Bytes::from_static(b"k"),
            target_union: Some(compare::TargetUnion::Version(0)),
            ..Default::default()
        }],
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key: Bytes::from_static(b"k"),
                value: Bytes::from_static(b"v"),
                ..Default::default()
            })),
        }],
        failure: vec![RequestOp {
            request: Some(request_op::Request::RequestRange(RangeRequest {
                key: Bytes::from_static(b"k"),
                ..Default::default()
            })),
        }],
    };
    #[rustfmt::skip]
    let expected = [
        0x0a, 5, 0x1a, 1, b'k', 0x20, 0,                            // 1: compare
        0x12, 8, 0x12, 6, 0x0a, 1, b'k', 0x12, 1, b'v',             // 2: success[RequestOp{2: request_put}]
        0x1a, 5, 0x0a, 3, 0x0a, 1, b'k',                            // 3: failure[RequestOp{1: request_range}]
    ];
    assert_wire(&msg, &expected);

    // request_delete_range = 3, request_txn = 4 (empty nested txn still present).
    let msg = RequestOp {
        request: Some(request_op::Request::RequestTxn(TxnRequest::default())),
    };
    assert_wire(&msg, &[0x22, 0]);
}

#[test]
fn watch_request_variants() {
    let msg = WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(
            WatchCreateRequest {
                key: Bytes::from_static(b"a"),
                range_end: Bytes::from_static(b"b"),
                start_revision: 5,
                progress_notify: true,
                filters: vec![
                    watch_create_request::FilterType::Noput as i32,
                    watch_create_request::FilterType::Nodelete as i32,
                ],
                prev_kv: true,
                watch_id: 9,
                fragment: true,
            },
        )),
    };
    #[rustfmt::skip]
    let expected = [
        0x0a, 20,           // 1: create_request, 20 bytes
        0x0a, 1, b'a',      //   1: key
        0x12, 1, b'b',      //   2: range_end
        0x18, 5,            //   3: start_revision
        0x20, 1,            //   4: progress_notify
        0x2a, 2, 0, 1,      //   5: filters, packed (proto3 repeated enum)
        0x30, 1,            //   6: prev_kv
        0x38, 9,            //   7: watch_id
        0x40, 1,            //   8: fragment
    ];
    assert_wire(&msg, &expected);

    let cancel = WatchRequest {
        request_union: Some(watch_request::RequestUnion::CancelRequest(
            WatchCancelRequest { watch_id: 0 },
        )),
    };
    assert_wire(&cancel, &[0x12, 0]);
    let progress = WatchRequest {
        request_union: Some(watch_request::RequestUnion::ProgressRequest(
            WatchProgressRequest {},
        )),
    };
    assert_wire(&progress, &[0x1a, 0]);
}

#[test]
fn response_header() {
    let msg = ResponseHeader {
        cluster_id: 4660,
        member_id: u64::MAX,
        revision: 300,
        raft_term: 2,
    };
    #[rustfmt::skip]
    let expected = [
        0x08, 0xb4, 0x24,                                                 // 1: cluster_id = 0x1234
        0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, // 2: member_id = 2^64-1
        0x18, 0xac, 0x02,                                                 // 3: revision = 300
        0x20, 2,                                                          // 4: raft_term
    ];
    assert_wire(&msg, &expected);
}

#[test]
fn negative_int64_and_repeated_bytes() {
    // etcd reports TTL -1 for an expired lease: int64 negatives are 10-byte varints.
    let msg = LeaseTimeToLiveResponse {
        header: None,
        id: 7,
        ttl: -1,
        granted_ttl: 60,
        keys: vec![Bytes::from_static(b"a"), Bytes::from_static(b"bc")],
    };
    #[rustfmt::skip]
    let expected = [
        0x10, 7,                                                          // 2: ID
        0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, // 3: TTL = -1
        0x20, 60,                                                         // 4: grantedTTL
        0x2a, 1, b'a', 0x2a, 2, b'b', b'c',                               // 5: keys, unpacked
    ];
    assert_wire(&msg, &expected);
}

#[test]
fn mvcc_event() {
    let msg = Event {
        r#type: event::EventType::Delete as i32,
        kv: Some(KeyValue {
            key: Bytes::from_static(b"k"),
            mod_revision: 3,
            ..Default::default()
        }),
        prev_kv: Some(KeyValue {
            key: Bytes::from_static(b"k"),
            create_revision: 1,
            mod_revision: 2,
            version: 1,
            value: Bytes::from_static(b"v"),
            lease: 5,
        }),
    };
    #[rustfmt::skip]
    let expected = [
        0x08, 1,                                 // 1: type = DELETE
        0x12, 5, 0x0a, 1, b'k', 0x18, 3,         // 2: kv
        0x1a, 14, 0x0a, 1, b'k', 0x10, 1, 0x18, 2, 0x20, 1, 0x2a, 1, b'v', 0x30, 5, // 3: prev_kv
    ];
    assert_wire(&msg, &expected);
}

#[test]
fn maintenance_fields_through_3_5() {
    let msg = StatusResponse {
        header: None,
        version: "3.5.0".into(),
        db_size: 1,
        leader: 2,
        raft_index: 3,
        raft_term: 4,
        raft_applied_index: 5,
        errors: vec!["x".into()],
        db_size_in_use: 6,
        is_learner: true,
    };
    #[rustfmt::skip]
    let expected = [
        0x12, 5, b'3', b'.', b'5', b'.', b'0', // 2: version
        0x18, 1,  // 3: dbSize
        0x20, 2,  // 4: leader
        0x28, 3,  // 5: raftIndex
        0x30, 4,  // 6: raftTerm
        0x38, 5,  // 7: raftAppliedIndex
        0x42, 1, b'x', // 8: errors
        0x48, 6,  // 9: dbSizeInUse
        0x50, 1,  // 10: isLearner
    ];
    assert_wire(&msg, &expected);

    let msg = HashKvResponse {
        header: Some(ResponseHeader {
            revision: 1,
            ..Default::default()
        }),
        hash: 0xffff_ffff,
        compact_revision: 2,
    };
    #[rustfmt::skip]
    let expected = [
        0x0a, 2, 0x18, 1,                     // 1: header{revision}
        0x10, 0xff, 0xff, 0xff, 0xff, 0x0f,   // 2: hash (uint32)
        0x18, 2,                              // 3: compact_revision
    ];
    assert_wire(&msg, &expected);

    let msg = AlarmMember {
        member_id: 1,
        alarm: AlarmType::Nospace as i32,
    };
    assert_wire(&msg, &[0x08, 1, 0x10, 1]);
}

/// The generated code, as text, to check the gRPC method paths it routes on.
const ETCDSERVERPB: &str = include_str!(concat!(env!("OUT_DIR"), "/etcdserverpb.rs"));
const V3LOCKPB: &str = include_str!(concat!(env!("OUT_DIR"), "/v3lockpb.rs"));
const V3ELECTIONPB: &str = include_str!(concat!(env!("OUT_DIR"), "/v3electionpb.rs"));
const HEALTH: &str = include_str!(concat!(env!("OUT_DIR"), "/grpc.health.v1.rs"));

#[test]
fn service_names() {
    use keel_runtime_tokio::pb::{etcdserverpb, grpc_health_v1, v3electionpb, v3lockpb};
    assert_eq!(etcdserverpb::kv_server::SERVICE_NAME, "etcdserverpb.KV");
    assert_eq!(
        etcdserverpb::watch_server::SERVICE_NAME,
        "etcdserverpb.Watch"
    );
    assert_eq!(
        etcdserverpb::lease_server::SERVICE_NAME,
        "etcdserverpb.Lease"
    );
    assert_eq!(
        etcdserverpb::cluster_server::SERVICE_NAME,
        "etcdserverpb.Cluster"
    );
    assert_eq!(
        etcdserverpb::maintenance_server::SERVICE_NAME,
        "etcdserverpb.Maintenance"
    );
    assert_eq!(etcdserverpb::auth_server::SERVICE_NAME, "etcdserverpb.Auth");
    assert_eq!(v3lockpb::lock_server::SERVICE_NAME, "v3lockpb.Lock");
    assert_eq!(
        v3electionpb::election_server::SERVICE_NAME,
        "v3electionpb.Election"
    );
    assert_eq!(
        grpc_health_v1::health_server::SERVICE_NAME,
        "grpc.health.v1.Health"
    );
}

#[test]
fn method_paths() {
    let cases: &[(&str, &str)] = &[
        (ETCDSERVERPB, "/etcdserverpb.KV/Range"),
        (ETCDSERVERPB, "/etcdserverpb.KV/Put"),
        (ETCDSERVERPB, "/etcdserverpb.KV/DeleteRange"),
        (ETCDSERVERPB, "/etcdserverpb.KV/Txn"),
        (ETCDSERVERPB, "/etcdserverpb.KV/Compact"),
        (ETCDSERVERPB, "/etcdserverpb.Watch/Watch"),
        (ETCDSERVERPB, "/etcdserverpb.Lease/LeaseGrant"),
        (ETCDSERVERPB, "/etcdserverpb.Lease/LeaseKeepAlive"),
        (ETCDSERVERPB, "/etcdserverpb.Cluster/MemberList"),
        (ETCDSERVERPB, "/etcdserverpb.Maintenance/Status"),
        (ETCDSERVERPB, "/etcdserverpb.Maintenance/HashKV"),
        (ETCDSERVERPB, "/etcdserverpb.Maintenance/Snapshot"),
        (ETCDSERVERPB, "/etcdserverpb.Maintenance/Downgrade"),
        (ETCDSERVERPB, "/etcdserverpb.Auth/Authenticate"),
        (ETCDSERVERPB, "/etcdserverpb.Auth/RoleRevokePermission"),
        (V3LOCKPB, "/v3lockpb.Lock/Lock"),
        (V3LOCKPB, "/v3lockpb.Lock/Unlock"),
        (V3ELECTIONPB, "/v3electionpb.Election/Campaign"),
        (V3ELECTIONPB, "/v3electionpb.Election/Observe"),
        (HEALTH, "/grpc.health.v1.Health/Check"),
        (HEALTH, "/grpc.health.v1.Health/Watch"),
    ];
    for (code, path) in cases {
        // Quoted, so "/etcdserverpb.KV/Range" cannot match a longer path by prefix.
        let quoted = format!("\"{path}\"");
        // Once in the client (request path), once in the server (route match).
        assert!(
            code.matches(&quoted).count() >= 2,
            "{path} missing from generated client or server"
        );
    }
}

mod health_end_to_end {
    //! The generated server and client interoperate over real HTTP/2 (tonic's transport).
    use keel_runtime_tokio::pb::grpc_health_v1::{
        health_check_response::ServingStatus,
        health_client::HealthClient,
        health_server::{Health, HealthServer},
        HealthCheckRequest, HealthCheckResponse,
    };
    use tonic::{Request, Response, Status};

    struct AlwaysServing;

    #[tonic::async_trait]
    impl Health for AlwaysServing {
        async fn check(
            &self,
            request: Request<HealthCheckRequest>,
        ) -> Result<Response<HealthCheckResponse>, Status> {
            if request.get_ref().service.is_empty() {
                Ok(Response::new(HealthCheckResponse {
                    status: ServingStatus::Serving as i32,
                }))
            } else {
                Err(Status::not_found("unknown service"))
            }
        }

        type WatchStream = tokio_stream::Once<Result<HealthCheckResponse, Status>>;

        async fn watch(
            &self,
            _request: Request<HealthCheckRequest>,
        ) -> Result<Response<Self::WatchStream>, Status> {
            Ok(Response::new(tokio_stream::once(Ok(HealthCheckResponse {
                status: ServingStatus::Serving as i32,
            }))))
        }
    }

    #[tokio::test]
    async fn check_and_watch_over_tcp() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(HealthServer::new(AlwaysServing))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );

        let mut client = HealthClient::connect(format!("http://{addr}"))
            .await
            .expect("connect");
        let reply = client
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .expect("check");
        assert_eq!(reply.get_ref().status(), ServingStatus::Serving);
        let err = client
            .check(HealthCheckRequest {
                service: "nope".into(),
            })
            .await
            .expect_err("unknown service");
        assert_eq!(err.code(), tonic::Code::NotFound);

        let mut stream = client
            .watch(HealthCheckRequest::default())
            .await
            .expect("watch")
            .into_inner();
        let first = stream.message().await.expect("message").expect("one");
        assert_eq!(first.status(), ServingStatus::Serving);
        assert!(stream.message().await.expect("end").is_none());
        server.abort();
    }
}
