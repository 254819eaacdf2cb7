//! `etcdserverpb.KV`: Range, Put, DeleteRange, Txn, Compact.

use super::Grpc;
use keel_core::node::{Command, Outcome};
use tonic::{Request, Response, Status};

use super::authz::caller;
use super::convert::{
    delete_in, delete_out, put_in, put_out, range_in, range_out, txn_in, txn_out, txn_read_only,
};
use super::{header, mismatched, mvcc_status, permitted, refused_status};
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
        let who = caller(&self.m, &req).await?;
        let req = req.into_inner();
        let linearizable = !req.serializable;
        let r = range_in(req)?;
        let (res, h) = self.m.range(linearizable, r, who).await.grpc()?;
        let res = res.map_err(refused_status)?;
        Ok(Response::new(range_out(res, header(&self.m, h))))
    }

    async fn put(&self, req: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        let who = caller(&self.m, &req).await?;
        let r = put_in(req.into_inner())?;
        match permitted(self.m.propose_as(Command::Put(r), who).await.grpc()?)? {
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
        let who = caller(&self.m, &req).await?;
        let r = delete_in(req.into_inner())?;
        match permitted(
            self.m
                .propose_as(Command::DeleteRange(r), who)
                .await
                .grpc()?,
        )? {
            (Outcome::DeleteRange(res), h) => Ok(Response::new(delete_out(
                res.map_err(mvcc_status)?,
                header(&self.m, h),
            ))),
            _ => Err(mismatched()),
        }
    }

    async fn txn(&self, req: Request<pb::TxnRequest>) -> Result<Response<pb::TxnResponse>, Status> {
        let who = caller(&self.m, &req).await?;
        let t = txn_in(req.into_inner())?;
        if txn_read_only(&t) {
            // A txn that only reads is served like a linearizable range (as etcd does).
            let (res, h) = self.m.txn_read(t, who).await.grpc()?;
            let res = res.map_err(refused_status)?;
            return Ok(Response::new(txn_out(res, header(&self.m, h))));
        }
        match permitted(self.m.propose_as(Command::Txn(t), who).await.grpc()?)? {
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
        let who = caller(&self.m, &req).await?;
        let r = req.into_inner();
        let cmd = Command::Compact {
            revision: r.revision,
            physical: r.physical,
        };
        match permitted(self.m.propose_as(cmd, who).await.grpc()?)? {
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
