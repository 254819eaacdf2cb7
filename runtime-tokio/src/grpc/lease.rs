//! `etcdserverpb.Lease`. Grants and revokes go through raft. Keepalives and remaining
//! TTLs are the leader's business (only its clock decides expiry): a follower sends them
//! on to the leader over the peer port (see [`super::forward`]).

use super::authz::caller;
use super::permitted;
use super::{server_status, Grpc};
use keel_core::mvcc::{LeaseError, LeaseId};
use keel_core::node::{Command, Outcome};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::forward;
use super::{header, lease_status, mismatched};
use crate::leader_call::{Answer, Call, LeaseTtl};
use crate::member::{Header, LeaseView, MemberHandle, ServerError};
use crate::pb::etcdserverpb as pb;

/// The Lease service.
pub struct LeaseService {
    m: MemberHandle,
}

impl LeaseService {
    /// Lease over member `m`.
    pub fn new(m: MemberHandle) -> Self {
        LeaseService { m }
    }
}

/// The outcome of renewing a lease here: Some(ttl) (0: not found), None: not leader.
async fn renew_local(
    m: &MemberHandle,
    id: LeaseId,
) -> Result<Option<(i64, crate::member::Header)>, Status> {
    let r = m.renew_lease(id).await.grpc()?;
    match r {
        (Ok(ttl), h) => Ok(Some((ttl, h))),
        (Err(LeaseError::NotFound), h) => Ok(Some((0, h))),
        // Not primary (yet), or a clearing checkpoint is on its way through raft: the
        // caller asks again shortly, as etcd's Renew waits.
        (Err(LeaseError::NotPrimary | LeaseError::CheckpointPending), _) => Ok(None),
        (Err(e), _) => Err(lease_status(e)),
    }
}

/// Tries (50 ms apart) of a leader whose lessor is not primary yet, or whose renewal
/// waits for a lease checkpoint to be cleared: 5 s, etcd's request timeout.
const LEADER_NOT_READY_RETRIES: u32 = 100;

/// Renews lease `id` if this member leads: its new TTL (0: not found), or None when
/// another member leads.
pub(super) async fn renew_as_leader(
    m: &MemberHandle,
    id: LeaseId,
) -> Result<Option<(i64, Header)>, Status> {
    // A new leader's lessor is not primary until it has applied an entry of its term
    // (`StateMachine::track_leadership`); forwarding would reach this member again, so it
    // retries here for a while, as etcd's leader does.
    for _ in 0..LEADER_NOT_READY_RETRIES {
        if let Some(r) = renew_local(m, id).await? {
            return Ok(Some(r));
        }
        if !m.status.borrow().is_leader {
            return Ok(None);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    if m.status.borrow().is_leader {
        return Err(server_status(ServerError::Timeout));
    }
    Ok(None)
}

async fn keepalive_one(m: &MemberHandle, id: i64) -> Result<pb::LeaseKeepAliveResponse, Status> {
    let (ttl, h) = match renew_as_leader(m, LeaseId(id)).await? {
        Some(r) => r,
        None => match forward::to_leader(m, Call::Renew(id)).await? {
            Answer::Renewed(ttl, h) => (ttl, h),
            _ => return Err(mismatched()),
        },
    };
    Ok(pb::LeaseKeepAliveResponse {
        header: header(m, h),
        id,
        ttl,
    })
}

/// Lease `id`'s remaining time, answered here; None when only the leader knows it.
pub(super) async fn time_to_live_here(
    m: &MemberHandle,
    id: LeaseId,
    keys: bool,
) -> Result<Option<LeaseTtl>, Status> {
    let LeaseView {
        primary,
        ttl: res,
        keys,
        header,
    } = m.lease_view(id, keys).await.grpc()?;
    if !primary && res.is_ok() {
        return Ok(None);
    }
    // etcd answers an unknown lease with TTL -1 rather than an error.
    let (granted, ttl) = match res {
        Ok(v) => v,
        Err(LeaseError::NotFound) => (0, -1),
        Err(e) => return Err(lease_status(e)),
    };
    Ok(Some(LeaseTtl {
        granted,
        ttl,
        keys,
        header,
    }))
}

#[tonic::async_trait]
impl pb::lease_server::Lease for LeaseService {
    async fn lease_grant(
        &self,
        req: Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        let r = req.into_inner();
        let id = if r.id != 0 {
            r.id
        } else {
            self.m.new_lease_id().await.grpc()?.0
        };
        match self
            .m
            .propose(Command::LeaseGrant { id, ttl: r.ttl })
            .await
            .grpc()?
        {
            (Outcome::LeaseGrant(res), h) => {
                let (id, ttl) = res.map_err(lease_status)?;
                Ok(Response::new(pb::LeaseGrantResponse {
                    header: header(&self.m, h),
                    id,
                    ttl,
                    error: String::new(),
                }))
            }
            _ => Err(mismatched()),
        }
    }

    async fn lease_revoke(
        &self,
        req: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        let who = caller(&self.m, &req).await?;
        let id = req.into_inner().id;
        match permitted(
            self.m
                .propose_as(Command::LeaseRevoke { id }, who)
                .await
                .grpc()?,
        )? {
            (Outcome::LeaseRevoke(res), h) => {
                res.map_err(lease_status)?;
                Ok(Response::new(pb::LeaseRevokeResponse {
                    header: header(&self.m, h),
                }))
            }
            _ => Err(mismatched()),
        }
    }

    type LeaseKeepAliveStream = ReceiverStream<Result<pb::LeaseKeepAliveResponse, Status>>;

    async fn lease_keep_alive(
        &self,
        req: Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let m = self.m.clone();
        tokio::spawn(async move {
            loop {
                let r = tokio::select! {
                    // The response was ended without us (see `grpc::interceptor`).
                    _ = tx.closed() => return,
                    r = inbound.message() => match r {
                        Ok(Some(r)) => r,
                        _ => return,
                    },
                };
                let resp = keepalive_one(&m, r.id).await;
                let failed = resp.is_err();
                if tx.send(resp).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn lease_time_to_live(
        &self,
        req: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        let r = req.into_inner();
        let (id, keys) = (r.id, r.keys);
        let t = match time_to_live_here(&self.m, LeaseId(id), keys).await? {
            Some(t) => t,
            None => match forward::to_leader(&self.m, Call::TimeToLive { id, keys }).await? {
                Answer::TimeToLive(t) => t,
                _ => return Err(mismatched()),
            },
        };
        Ok(Response::new(pb::LeaseTimeToLiveResponse {
            header: header(&self.m, t.header),
            id,
            ttl: t.ttl,
            granted_ttl: t.granted,
            keys: t.keys,
        }))
    }

    async fn lease_leases(
        &self,
        _req: Request<pb::LeaseLeasesRequest>,
    ) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
        let (ids, h) = self.m.lease_ids().await.grpc()?;
        Ok(Response::new(pb::LeaseLeasesResponse {
            header: header(&self.m, h),
            leases: ids
                .into_iter()
                .map(|id| pb::LeaseStatus { id: id.0 })
                .collect(),
        }))
    }
}
