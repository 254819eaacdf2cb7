//! `etcdserverpb.KV`: Range, Put, DeleteRange, Txn, Compact.

use keel_core::node::{Command, Outcome};
use tonic::{Request, Response, Status};

use super::convert::{
    delete_in, delete_out, put_in, put_out, range_in, range_out, txn_in, txn_out, txn_read_only,
};
use super::{header, mismatched, mvcc_status};
use crate::member::MemberHandle;
use crate::pb::etcdserverpb as pb;

/// The KV service.
pub struct KvService {
    m: MemberHandle,
}

impl KvService {
    /// KV over member `m`.
    pub fn new(m: MemberHandle) -> Self {
        KvService { m }
    }
}

#[tonic::async_trait]
impl pb::kv_server::Kv for KvService {
    async fn range(
        &self,
        req: Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        let req = req.into_inner();
        let linearizable = !req.serializable;
        let r = range_in(req)?;
        let (res, h) = self
            .m
            .read(linearizable, move |c| (c.sm.kv.kv.range(&r), c.header()))
            .await?;
        let res = res.map_err(mvcc_status)?;
        Ok(Response::new(range_out(res, header(&self.m, h))))
    }

    async fn put(&self, req: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        let r = put_in(req.into_inner())?;
        match self.m.propose(Command::Put(r)).await? {
            (Outcome::Put(res), h) => Ok(Response::new(put_out(
                res.map_err(mvcc_status)?,
                header(&self.m, h),
            ))),
            _ => Err(mismatched()),
        }
    }

    async fn delete_range(
        &self,
        req: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        let r = delete_in(req.into_inner())?;
        match self.m.propose(Command::DeleteRange(r)).await? {
            (Outcome::DeleteRange(res), h) => Ok(Response::new(delete_out(
                res.map_err(mvcc_status)?,
                header(&self.m, h),
            ))),
            _ => Err(mismatched()),
        }
    }

    async fn txn(&self, req: Request<pb::TxnRequest>) -> Result<Response<pb::TxnResponse>, Status> {
        let t = txn_in(req.into_inner())?;
        if txn_read_only(&t) {
            // A txn that only reads is served like a linearizable range (as etcd does).
            let (res, h) = self
                .m
                .read(true, move |c| (c.sm.kv.txn(&t), c.header()))
                .await?;
            return Ok(Response::new(txn_out(
                res.map_err(mvcc_status)?,
                header(&self.m, h),
            )));
        }
        match self.m.propose(Command::Txn(t)).await? {
            (Outcome::Txn(res), h) => Ok(Response::new(txn_out(
                res.map_err(mvcc_status)?,
                header(&self.m, h),
            ))),
            _ => Err(mismatched()),
        }
    }

    async fn compact(
        &self,
        req: Request<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
        let r = req.into_inner();
        let cmd = Command::Compact {
            revision: r.revision,
            physical: r.physical,
        };
        match self.m.propose(cmd).await? {
            (Outcome::Compact(res), h) => {
                res.map_err(mvcc_status)?;
                Ok(Response::new(pb::CompactionResponse {
                    header: header(&self.m, h),
                }))
            }
            _ => Err(mismatched()),
        }
    }
}
