//! `v3lockpb.Lock`: distributed locks held as long as their lease lives.

use super::Grpc;
use keel_core::mvcc::DeleteRangeRequest;
use keel_core::node::{Command, Outcome};
use tonic::{Request, Response, Status};

use super::authz::{caller, check_recipe};
use super::recipes::{acquire, dir};
use super::{header, mismatched, mvcc_status, permitted};
use crate::member::MemberHandle;
use crate::pb::v3lockpb as pb;

/// The Lock service.
pub struct LockService {
    m: MemberHandle,
}

impl LockService {
    /// Lock over member `m`.
    pub fn new(m: MemberHandle) -> Self {
        LockService { m }
    }
}

#[tonic::async_trait]
impl pb::lock_server::Lock for LockService {
    async fn lock(
        &self,
        req: Request<pb::LockRequest>,
    ) -> Result<Response<pb::LockResponse>, Status> {
        let who = check_recipe(&self.m, &req, dir(&req.get_ref().name)).await?;
        let r = req.into_inner();
        let (key, _, h) = acquire(&self.m, who, &dir(&r.name), r.lease, Default::default()).await?;
        Ok(Response::new(pb::LockResponse {
            header: header(&self.m, h),
            key,
        }))
    }

    async fn unlock(
        &self,
        req: Request<pb::UnlockRequest>,
    ) -> Result<Response<pb::UnlockResponse>, Status> {
        let who = caller(&self.m, &req).await?;
        let key = req.into_inner().key;
        let cmd = Command::DeleteRange(DeleteRangeRequest {
            key,
            ..Default::default()
        });
        match permitted(self.m.propose_as(cmd, who).await.grpc()?)? {
            (Outcome::DeleteRange(res), h) => {
                res.map_err(mvcc_status)?;
                Ok(Response::new(pb::UnlockResponse {
                    header: header(&self.m, h),
                }))
            }
            _ => Err(mismatched()),
        }
    }
}
