//! The lock and election recipes etcd's v3lock and v3election services run on the
//! server: a key per contender under a prefix, ordered by create revision, each waiting
//! for the deletion of the key just ahead of it.

use super::Grpc;
use bytes::Bytes;
use keel_core::auth::AuthInfo;
use keel_core::mvcc::{
    Compare, CompareResult, CompareTarget, KeyValue, PutRequest, RangeRequest, RequestOp,
    ResponseOp, SortOrder, SortTarget, TxnRequest, WatchRequest,
};
use keel_core::node::{Command, Outcome};
use tonic::Status;

use super::{mismatched, mvcc_status, permitted, refused_status};
use crate::member::{watch_channel, Header, MemberHandle};

/// The end of the range of keys starting with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Bytes {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end.into();
        }
    }
    // Every byte was 0xff: the range runs to the end of the keyspace.
    Bytes::from_static(b"\0")
}

/// `prefix` + "/" as recipes name their directories.
pub fn dir(name: &[u8]) -> Vec<u8> {
    let mut p = name.to_vec();
    p.push(b'/');
    p
}

/// Creates `key` with `value` under `lease` unless it exists; returns its create revision.
pub async fn create_key(
    m: &MemberHandle,
    who: Option<AuthInfo>,
    key: Bytes,
    value: Bytes,
    lease: i64,
) -> Result<(i64, Header), Status> {
    let txn = TxnRequest {
        compare: vec![Compare {
            result: CompareResult::Equal,
            target: CompareTarget::Create(0),
            key: key.clone(),
            range_end: Bytes::new(),
        }],
        success: vec![RequestOp::Put(PutRequest {
            key: key.clone(),
            value,
            lease,
            ..Default::default()
        })],
        failure: vec![RequestOp::Range(RangeRequest {
            key,
            ..Default::default()
        })],
    };
    match permitted(m.propose_as(Command::Txn(txn), who).await.grpc()?)? {
        (Outcome::Txn(res), h) => {
            let res = res.map_err(mvcc_status)?;
            if res.succeeded {
                return Ok((h.revision, h));
            }
            let rev = match res.responses.first() {
                Some(ResponseOp::Range(r)) => r.kvs.first().map_or(0, |kv| kv.create_revision),
                _ => 0,
            };
            Ok((rev, h))
        }
        _ => Err(mismatched()),
    }
}

/// The key of `prefix` with the greatest create revision below `rev` (the one to wait
/// for), or the oldest key when `rev` is 0.
pub async fn neighbour(
    m: &MemberHandle,
    prefix: &[u8],
    rev: i64,
) -> Result<(Option<KeyValue>, Header), Status> {
    let r = RangeRequest {
        key: Bytes::copy_from_slice(prefix),
        range_end: prefix_end(prefix),
        limit: 1,
        sort_order: if rev > 0 {
            SortOrder::Descend
        } else {
            SortOrder::Ascend
        },
        sort_target: SortTarget::Create,
        max_create_revision: (rev - 1).max(0),
        ..Default::default()
    };
    // The recipe's own read, with the member's authority: its caller's permissions
    // were checked on the whole prefix.
    let (res, h) = m.range(true, r, Some(AuthInfo::member())).await.grpc()?;
    Ok((res.map_err(refused_status)?.kvs.into_iter().next(), h))
}

/// Waits until `key` is deleted at a revision after `after`.
pub async fn wait_deleted(m: &MemberHandle, key: Bytes, after: i64) -> Result<(), Status> {
    wait_event(
        m,
        WatchRequest {
            key,
            start_revision: after + 1,
            no_put: true,
            ..Default::default()
        },
    )
    .await
}

/// Waits for any write under `prefix` after revision `after`.
pub async fn wait_written(m: &MemberHandle, prefix: &[u8], after: i64) -> Result<(), Status> {
    wait_event(
        m,
        WatchRequest {
            key: Bytes::copy_from_slice(prefix),
            range_end: prefix_end(prefix),
            start_revision: after + 1,
            ..Default::default()
        },
    )
    .await
}

/// Removes a recipe's watcher however its waiting ends (answered or dropped).
struct WatchGuard {
    m: MemberHandle,
    id: i64,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        let (m, id) = (self.m.clone(), self.id);
        tokio::spawn(async move {
            let _ = m.cancel_watches(vec![id]).await;
        });
    }
}

/// Waits for the first response of a watcher (an event, or a cancel by compaction:
/// either way the caller looks again).
async fn wait_event(m: &MemberHandle, req: WatchRequest) -> Result<(), Status> {
    let (sink, mut outlet) = watch_channel();
    let id = m.watch(req, sink).await.grpc()?;
    let _guard = WatchGuard { m: m.clone(), id };
    let _ = outlet.recv().await;
    Ok(())
}

/// Creates this contender's key (as `who`) and waits until it is the oldest under
/// `prefix`.
pub async fn acquire(
    m: &MemberHandle,
    who: Option<AuthInfo>,
    prefix: &[u8],
    lease: i64,
    value: Bytes,
) -> Result<(Bytes, i64, Header), Status> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(format!("{lease:x}").as_bytes());
    let key = Bytes::from(key);
    let (rev, _) = create_key(m, who, key.clone(), value, lease).await?;
    loop {
        let (ahead, h) = neighbour(m, prefix, rev).await?;
        match ahead {
            None => return Ok((key, rev, h)),
            Some(kv) => wait_deleted(m, kv.key, h.revision).await?,
        }
    }
}
