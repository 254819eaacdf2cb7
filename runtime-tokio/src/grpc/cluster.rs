//! `etcdserverpb.Cluster`: the member list and runtime reconfiguration.
//!
//! Add, remove and promote are raft configuration changes only the leader proposes; a
//! follower checks its caller and sends them on to the leader over the peer port (see
//! [`super::forward`]). Update is a replicated command any member proposes.

use super::authz::{auth_status, check};
use super::{server_status, Grpc};
use keel_core::auth::AuthQuery;
use keel_core::discovery::{check_url, member_id};
use tonic::{Request, Response, Status};

use super::forward;
use super::header;
use super::mismatched;
use crate::leader_call::{Answer, Call};
use crate::member::{Header, MemberChange, MemberHandle, ServerError, REQUEST_TIMEOUT};
use crate::pb::etcdserverpb as pb;

/// The Cluster service.
pub struct ClusterService {
    m: MemberHandle,
}

impl ClusterService {
    /// Cluster over member `m`.
    pub fn new(m: MemberHandle) -> Self {
        ClusterService { m }
    }

    /// Makes `change` (here, or through the leader) and answers with the member list
    /// that holds it.
    async fn change(
        &self,
        change: MemberChange,
    ) -> Result<(Vec<pb::Member>, Option<pb::ResponseHeader>), Status> {
        match self.m.change(change.clone()).await {
            Ok(h) => self.members_after(h).await,
            Err(ServerError::NotLeader) => {
                let Answer::Changed { header, applied } =
                    forward::to_leader(&self.m, Call::Change(change)).await?
                else {
                    return Err(mismatched());
                };
                // Answer from this member's list once it holds the change. Waiting for
                // the leader's applied index, not a linearizable read, keeps this
                // answer when the change moves the leadership (a removed leader hands
                // over at once, and a ReadIndex in flight would be dropped).
                if !self.m.wait_applied(applied, REQUEST_TIMEOUT).await {
                    return Err(server_status(ServerError::Timeout));
                }
                self.members_after(header).await
            }
            Err(e) => Err(server_status(e)),
        }
    }

    /// The member list once the change is visible here, with the header to answer with.
    async fn members_after(
        &self,
        h: Header,
    ) -> Result<(Vec<pb::Member>, Option<pb::ResponseHeader>), Status> {
        let (members, _) = member_list(&self.m, false).await?;
        Ok((members, cluster_header(&self.m, h)))
    }
}

/// The member table as etcd lists it.
pub async fn member_list(
    m: &MemberHandle,
    linearizable: bool,
) -> Result<(Vec<pb::Member>, Option<pb::ResponseHeader>), Status> {
    let (members, h) = m.members(linearizable).await.grpc()?;
    let members = members
        .into_iter()
        .map(|x| pb::Member {
            id: x.id,
            name: x.name,
            peer_ur_ls: x.peer_urls,
            client_ur_ls: x.client_urls,
            is_learner: x.learner,
        })
        .collect();
    Ok((members, cluster_header(m, h)))
}

/// etcd 3.4's Cluster service header: cluster, member and raft term, no revision.
fn cluster_header(m: &MemberHandle, h: Header) -> Option<pb::ResponseHeader> {
    header(m, Header { revision: 0, ..h })
}

/// Checks peer URLs as etcd's MemberAdd/MemberUpdate do.
fn peer_urls(urls: Vec<String>) -> Result<Vec<String>, Status> {
    if urls.is_empty() || urls.iter().any(|u| check_url(u).is_err()) {
        return Err(server_status(ServerError::BadMemberUrls));
    }
    Ok(urls)
}

#[tonic::async_trait]
impl pb::cluster_server::Cluster for ClusterService {
    async fn member_add(
        &self,
        req: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        check(&self.m, &req, AuthQuery::Admin)
            .await?
            .map_err(auth_status)?;
        let r = req.into_inner();
        let urls = peer_urls(r.peer_ur_ls.clone())?;
        // etcd: the peer URLs, no cluster token, and the current Unix time.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let id = member_id(&urls, "", Some(now));
        let change = MemberChange::Add {
            id,
            peer_urls: urls.clone(),
            learner: r.is_learner,
        };
        let (members, header) = self.change(change).await?;
        Ok(Response::new(pb::MemberAddResponse {
            header,
            member: Some(pb::Member {
                id,
                name: String::new(),
                peer_ur_ls: urls,
                client_ur_ls: Vec::new(),
                is_learner: r.is_learner,
            }),
            members,
        }))
    }

    async fn member_remove(
        &self,
        req: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        check(&self.m, &req, AuthQuery::Admin)
            .await?
            .map_err(auth_status)?;
        let r = req.into_inner();
        let (members, header) = self.change(MemberChange::Remove { id: r.id }).await?;
        Ok(Response::new(pb::MemberRemoveResponse { header, members }))
    }

    async fn member_update(
        &self,
        req: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        check(&self.m, &req, AuthQuery::Admin)
            .await?
            .map_err(auth_status)?;
        let r = req.into_inner();
        let change = MemberChange::Update {
            id: r.id,
            peer_urls: peer_urls(r.peer_ur_ls)?,
        };
        let h = self.m.change(change).await.grpc()?;
        let (members, header) = self.members_after(h).await?;
        Ok(Response::new(pb::MemberUpdateResponse { header, members }))
    }

    async fn member_list(
        &self,
        req: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        let (members, header) = member_list(&self.m, req.into_inner().linearizable).await?;
        Ok(Response::new(pb::MemberListResponse { header, members }))
    }

    async fn member_promote(
        &self,
        req: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        check(&self.m, &req, AuthQuery::Admin)
            .await?
            .map_err(auth_status)?;
        let r = req.into_inner();
        let (members, header) = self.change(MemberChange::Promote { id: r.id }).await?;
        Ok(Response::new(pb::MemberPromoteResponse { header, members }))
    }
}
