//! `v3electionpb.Election`: leader election over leases (campaign, proclaim, observe,
//! resign), with etcd's recipe.

use super::authz::check_recipe;
use super::Grpc;
use bytes::Bytes;
use keel_core::mvcc::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, PutRequest, RequestOp, TxnRequest,
};
use keel_core::node::{Command, Outcome};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::convert::kv_out;
use super::recipes::{acquire, dir, neighbour, wait_written};
use super::{header, mismatched, mvcc_status, permitted};
use crate::member::{Header, MemberHandle};
use crate::pb::etcdserverpb::ResponseHeader;
use crate::pb::v3electionpb as pb;
use keel_core::auth::AuthInfo;

/// The Election service.
pub struct ElectionService {
    m: MemberHandle,
}

impl ElectionService {
    /// Election over member `m`.
    pub fn new(m: MemberHandle) -> Self {
        ElectionService { m }
    }
}

fn not_leader() -> Status {
    Status::failed_precondition("election: not leader")
}

/// Runs `op` (as `who`) if the leader key still has the create revision it was won with.
async fn if_leader(
    m: &MemberHandle,
    who: Option<AuthInfo>,
    leader: Option<pb::LeaderKey>,
    op: RequestOp,
) -> Result<Option<ResponseHeader>, Status> {
    let l = leader.ok_or_else(not_leader)?;
    let txn = TxnRequest {
        compare: vec![Compare {
            result: CompareResult::Equal,
            target: CompareTarget::Create(l.rev),
            key: l.key,
            range_end: Bytes::new(),
        }],
        success: vec![op],
        failure: vec![],
    };
    match permitted(m.propose_as(Command::Txn(txn), who).await.grpc()?)? {
        (Outcome::Txn(res), h) => {
            if !res.map_err(mvcc_status)?.succeeded {
                return Err(not_leader());
            }
            Ok(header(m, h))
        }
        _ => Err(mismatched()),
    }
}

async fn leader_of(
    m: &MemberHandle,
    name: &[u8],
) -> Result<(Option<keel_core::mvcc::KeyValue>, Header), Status> {
    neighbour(m, &dir(name), 0).await
}

#[tonic::async_trait]
impl pb::election_server::Election for ElectionService {
    async fn campaign(
        &self,
        req: Request<pb::CampaignRequest>,
    ) -> Result<Response<pb::CampaignResponse>, Status> {
        let who = check_recipe(&self.m, &req, dir(&req.get_ref().name)).await?;
        let r = req.into_inner();
        let (key, rev, h) = acquire(&self.m, who, &dir(&r.name), r.lease, r.value).await?;
        Ok(Response::new(pb::CampaignResponse {
            header: header(&self.m, h),
            leader: Some(pb::LeaderKey {
                name: r.name,
                key,
                rev,
                lease: r.lease,
            }),
        }))
    }

    async fn proclaim(
        &self,
        req: Request<pb::ProclaimRequest>,
    ) -> Result<Response<pb::ProclaimResponse>, Status> {
        let name = req.get_ref().leader.as_ref().map(|l| dir(&l.name));
        let who = check_recipe(&self.m, &req, name.unwrap_or_default()).await?;
        let r = req.into_inner();
        let (key, lease) = r
            .leader
            .as_ref()
            .map(|l| (l.key.clone(), l.lease))
            .ok_or_else(not_leader)?;
        let put = RequestOp::Put(PutRequest {
            key,
            value: r.value,
            lease,
            ..Default::default()
        });
        let header = if_leader(&self.m, who, r.leader, put).await?;
        Ok(Response::new(pb::ProclaimResponse { header }))
    }

    async fn leader(
        &self,
        req: Request<pb::LeaderRequest>,
    ) -> Result<Response<pb::LeaderResponse>, Status> {
        check_recipe(&self.m, &req, dir(&req.get_ref().name)).await?;
        let (kv, h) = leader_of(&self.m, &req.into_inner().name).await?;
        // etcd returns concurrency's plain ErrElectionNoLeader: gRPC code Unknown.
        let kv = kv.ok_or_else(|| Status::unknown("election: no leader"))?;
        Ok(Response::new(pb::LeaderResponse {
            header: header(&self.m, h),
            kv: Some(kv_out(kv)),
        }))
    }

    type ObserveStream = ReceiverStream<Result<pb::LeaderResponse, Status>>;

    async fn observe(
        &self,
        req: Request<pb::LeaderRequest>,
    ) -> Result<Response<Self::ObserveStream>, Status> {
        check_recipe(&self.m, &req, dir(&req.get_ref().name)).await?;
        let name = req.into_inner().name;
        let (tx, rx) = mpsc::channel(16);
        let m = self.m.clone();
        tokio::spawn(async move {
            let mut last: Option<(Bytes, i64)> = None;
            loop {
                let (kv, h) = match leader_of(&m, &name).await {
                    Ok(v) => v,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
                if let Some(kv) = &kv {
                    let now = Some((kv.key.clone(), kv.mod_revision));
                    if now != last {
                        last = now;
                        let resp = pb::LeaderResponse {
                            header: header(&m, h),
                            kv: Some(kv_out(kv.clone())),
                        };
                        if tx.send(Ok(resp)).await.is_err() {
                            return;
                        }
                    }
                }
                // Wake on any change under the election's prefix.
                if wait_change(&m, &name, h.revision, &tx).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn resign(
        &self,
        req: Request<pb::ResignRequest>,
    ) -> Result<Response<pb::ResignResponse>, Status> {
        let name = req.get_ref().leader.as_ref().map(|l| dir(&l.name));
        let who = check_recipe(&self.m, &req, name.unwrap_or_default()).await?;
        let r = req.into_inner();
        let key = r
            .leader
            .as_ref()
            .map(|l| l.key.clone())
            .ok_or_else(not_leader)?;
        let del = RequestOp::DeleteRange(DeleteRangeRequest {
            key,
            ..Default::default()
        });
        let header = if_leader(&self.m, who, r.leader, del).await?;
        Ok(Response::new(pb::ResignResponse { header }))
    }
}

/// Waits for a write under the election prefix after `after`, or the observer leaving.
async fn wait_change(
    m: &MemberHandle,
    name: &[u8],
    after: i64,
    observer: &mpsc::Sender<Result<pb::LeaderResponse, Status>>,
) -> Result<(), ()> {
    let prefix = dir(name);
    tokio::select! {
        r = wait_written(m, &prefix, after) => r.map_err(|_| ()),
        _ = observer.closed() => Err(()),
    }
}
