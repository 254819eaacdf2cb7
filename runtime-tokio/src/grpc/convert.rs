//! Conversions between etcd's protobuf messages and the core's request and response
//! values. Requests are checked here for what etcd rejects before proposing.

use keel_core::mvcc::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, DeleteRangeResponse, Event,
    EventKind, KeyValue, PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp,
    ResponseOp, SortOrder, SortTarget, TxnRequest, TxnResponse,
};
use tonic::Status;

use crate::pb::etcdserverpb as pb;
use crate::pb::mvccpb;

/// A key-value for the wire.
pub fn kv_out(kv: KeyValue) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: kv.key,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: kv.value,
        lease: kv.lease,
    }
}

/// A watch event for the wire.
pub fn event_out(e: Event) -> mvccpb::Event {
    mvccpb::Event {
        r#type: match e.kind {
            EventKind::Put => mvccpb::event::EventType::Put as i32,
            EventKind::Delete => mvccpb::event::EventType::Delete as i32,
        },
        kv: Some(kv_out(e.kv)),
        prev_kv: e.prev_kv.map(kv_out),
    }
}

/// etcd's "key is not provided".
fn empty_key() -> Status {
    Status::invalid_argument("etcdserver: key is not provided")
}

/// A range request from the wire.
pub fn range_in(r: pb::RangeRequest) -> Result<RangeRequest, Status> {
    if r.key.is_empty() {
        return Err(empty_key());
    }
    let sort_order = match r.sort_order {
        0 => SortOrder::None,
        1 => SortOrder::Ascend,
        2 => SortOrder::Descend,
        _ => return Err(Status::invalid_argument("etcdserver: invalid sort option")),
    };
    let sort_target = match r.sort_target {
        0 => SortTarget::Key,
        1 => SortTarget::Version,
        2 => SortTarget::Create,
        3 => SortTarget::Mod,
        4 => SortTarget::Value,
        _ => return Err(Status::invalid_argument("etcdserver: invalid sort option")),
    };
    Ok(RangeRequest {
        key: r.key,
        range_end: r.range_end,
        limit: r.limit,
        revision: r.revision,
        sort_order,
        sort_target,
        keys_only: r.keys_only,
        count_only: r.count_only,
        min_mod_revision: r.min_mod_revision,
        max_mod_revision: r.max_mod_revision,
        min_create_revision: r.min_create_revision,
        max_create_revision: r.max_create_revision,
    })
}

/// A range response for the wire.
pub fn range_out(r: RangeResponse, header: Option<pb::ResponseHeader>) -> pb::RangeResponse {
    pb::RangeResponse {
        header,
        kvs: r.kvs.into_iter().map(kv_out).collect(),
        more: r.more,
        count: r.count,
    }
}

/// A put request from the wire.
pub fn put_in(r: pb::PutRequest) -> Result<PutRequest, Status> {
    if r.key.is_empty() {
        return Err(empty_key());
    }
    if r.ignore_value && !r.value.is_empty() {
        return Err(Status::invalid_argument("etcdserver: value is provided"));
    }
    if r.ignore_lease && r.lease != 0 {
        return Err(Status::invalid_argument("etcdserver: lease is provided"));
    }
    Ok(PutRequest {
        key: r.key,
        value: r.value,
        lease: r.lease,
        prev_kv: r.prev_kv,
        ignore_value: r.ignore_value,
        ignore_lease: r.ignore_lease,
    })
}

/// A put response for the wire.
pub fn put_out(r: PutResponse, header: Option<pb::ResponseHeader>) -> pb::PutResponse {
    pb::PutResponse {
        header,
        prev_kv: r.prev_kv.map(kv_out),
    }
}

/// A delete request from the wire.
pub fn delete_in(r: pb::DeleteRangeRequest) -> Result<DeleteRangeRequest, Status> {
    if r.key.is_empty() {
        return Err(empty_key());
    }
    Ok(DeleteRangeRequest {
        key: r.key,
        range_end: r.range_end,
        prev_kv: r.prev_kv,
    })
}

/// A delete response for the wire.
pub fn delete_out(
    r: DeleteRangeResponse,
    header: Option<pb::ResponseHeader>,
) -> pb::DeleteRangeResponse {
    pb::DeleteRangeResponse {
        header,
        deleted: r.deleted,
        prev_kvs: r.prev_kvs.into_iter().map(kv_out).collect(),
    }
}

fn compare_in(c: pb::Compare) -> Result<Compare, Status> {
    use pb::compare::TargetUnion as U;
    let result = match c.result {
        0 => CompareResult::Equal,
        1 => CompareResult::Greater,
        2 => CompareResult::Less,
        3 => CompareResult::NotEqual,
        _ => {
            return Err(Status::invalid_argument(
                "etcdserver: invalid compare result",
            ))
        }
    };
    // etcd reads the operand from the union by `target`; a missing operand compares
    // against the zero value.
    let target = match (c.target, c.target_union) {
        (0, Some(U::Version(v))) => CompareTarget::Version(v),
        (0, _) => CompareTarget::Version(0),
        (1, Some(U::CreateRevision(v))) => CompareTarget::Create(v),
        (1, _) => CompareTarget::Create(0),
        (2, Some(U::ModRevision(v))) => CompareTarget::Mod(v),
        (2, _) => CompareTarget::Mod(0),
        (3, Some(U::Value(v))) => CompareTarget::Value(v),
        (3, _) => CompareTarget::Value(Default::default()),
        (4, Some(U::Lease(v))) => CompareTarget::Lease(v),
        (4, _) => CompareTarget::Lease(0),
        _ => {
            return Err(Status::invalid_argument(
                "etcdserver: invalid compare target",
            ))
        }
    };
    if c.key.is_empty() {
        return Err(empty_key());
    }
    Ok(Compare {
        result,
        target,
        key: c.key,
        range_end: c.range_end,
    })
}

fn op_in(op: pb::RequestOp, depth: usize) -> Result<RequestOp, Status> {
    use pb::request_op::Request as R;
    match op.request {
        Some(R::RequestRange(r)) => Ok(RequestOp::Range(range_in(r)?)),
        Some(R::RequestPut(r)) => Ok(RequestOp::Put(put_in(r)?)),
        Some(R::RequestDeleteRange(r)) => Ok(RequestOp::DeleteRange(delete_in(r)?)),
        Some(R::RequestTxn(t)) => Ok(RequestOp::Txn(txn_in_depth(t, depth + 1)?)),
        None => Err(Status::invalid_argument(
            "etcdserver: request is empty in txn",
        )),
    }
}

/// A txn request from the wire.
pub fn txn_in(t: pb::TxnRequest) -> Result<TxnRequest, Status> {
    txn_in_depth(t, 0)
}

fn txn_in_depth(t: pb::TxnRequest, depth: usize) -> Result<TxnRequest, Status> {
    if depth > 32 {
        return Err(Status::invalid_argument(
            "etcdserver: too many operations in txn request",
        ));
    }
    Ok(TxnRequest {
        compare: t
            .compare
            .into_iter()
            .map(compare_in)
            .collect::<Result<_, _>>()?,
        success: t
            .success
            .into_iter()
            .map(|o| op_in(o, depth))
            .collect::<Result<_, _>>()?,
        failure: t
            .failure
            .into_iter()
            .map(|o| op_in(o, depth))
            .collect::<Result<_, _>>()?,
    })
}

/// Whether a txn only reads (etcd serves those without raft).
pub fn txn_read_only(t: &TxnRequest) -> bool {
    let ro = |ops: &[RequestOp]| {
        ops.iter().all(|o| match o {
            RequestOp::Range(_) => true,
            RequestOp::Txn(t) => txn_read_only(t),
            _ => false,
        })
    };
    ro(&t.success) && ro(&t.failure)
}

/// A txn response for the wire.
pub fn txn_out(r: TxnResponse, header: Option<pb::ResponseHeader>) -> pb::TxnResponse {
    use pb::response_op::Response as R;
    // etcd's responses inside a txn carry only the revision in their header.
    let inner = header.map(|h| pb::ResponseHeader {
        revision: h.revision,
        ..Default::default()
    });
    let responses = r
        .responses
        .into_iter()
        .map(|op| pb::ResponseOp {
            response: Some(match op {
                ResponseOp::Range(r) => R::ResponseRange(range_out(r, inner)),
                ResponseOp::Put(r) => R::ResponsePut(put_out(r, inner)),
                ResponseOp::DeleteRange(r) => R::ResponseDeleteRange(delete_out(r, inner)),
                ResponseOp::Txn(r) => R::ResponseTxn(txn_out(r, inner)),
            }),
        })
        .collect();
    pb::TxnResponse {
        header,
        succeeded: r.succeeded,
        responses,
    }
}
