//! `etcdserverpb.Cluster`: the member list and runtime reconfiguration.
//!
//! Add, remove and promote are raft configuration changes only the leader proposes; a
//! follower forwards them to the leader as etcd does. Update is a replicated command any
//! member proposes.

use super::authz::{auth_status, check};
use keel_core::discovery::{check_url, member_id};
use tonic::{Request, Response, Status};

use super::header;
use super::leader_link::LeaderLink;
use crate::member::{Core, Header, MemberChange, MemberHandle, ServerError};
use crate::pb::etcdserverpb as pb;
use crate::pb::etcdserverpb::cluster_client::ClusterClient;

/// The Cluster service.
pub struct ClusterService {
    m: MemberHandle,
    link: LeaderLink,
}

impl ClusterService {
    /// Cluster over member `m`.
    pub fn new(m: MemberHandle) -> Self {
        ClusterService {
            m,
            link: LeaderLink::default(),
        }
    }

    /// Applies `change` here; `None` if this member is not the leader and the request
    /// must go to the leader instead.
    async fn change_here(&self, change: MemberChange) -> Result<Option<Header>, Status> {
        match self.m.change(change).await {
            Ok(h) => Ok(Some(h)),
            Err(ServerError::NotLeader) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn leader(&self) -> Result<ClusterClient<tonic::transport::Channel>, Status> {
        Ok(ClusterClient::new(self.link.channel(&self.m).await?))
    }

    /// The member list once the change is visible here, with the header to answer with.
    async fn members_after(
        &self,
        h: Header,
    ) -> Result<(Vec<pb::Member>, Option<pb::ResponseHeader>), Status> {
        let (members, _) = member_list(&self.m, false).await?;
        Ok((members, header(&self.m, h)))
    }
}

/// The member table as etcd lists it.
pub async fn member_list(
    m: &MemberHandle,
    linearizable: bool,
) -> Result<(Vec<pb::Member>, Option<pb::ResponseHeader>), Status> {
    let (members, h) = m
        .read(linearizable, |c: &mut Core| {
            let members: Vec<pb::Member> =
                c.sm.members
                    .values()
                    .map(|x| pb::Member {
                        id: x.id,
                        name: x.name.clone(),
                        peer_ur_ls: x.peer_urls.clone(),
                        client_ur_ls: x.client_urls.clone(),
                        is_learner: x.learner,
                    })
                    .collect();
            (members, c.header())
        })
        .await?;
    Ok((members, header(m, h)))
}

/// Checks peer URLs as etcd's MemberAdd/MemberUpdate do.
fn peer_urls(urls: Vec<String>) -> Result<Vec<String>, Status> {
    if urls.is_empty() || urls.iter().any(|u| check_url(u).is_err()) {
        return Err(ServerError::BadMemberUrls.into());
    }
    Ok(urls)
}

#[tonic::async_trait]
impl pb::cluster_server::Cluster for ClusterService {
    async fn member_add(
        &self,
        req: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        check(&self.m, &req, |a, who| a.check_admin(who))
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
        let Some(h) = self.change_here(change).await? else {
            return self.leader().await?.member_add(r).await;
        };
        let (members, header) = self.members_after(h).await?;
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
        check(&self.m, &req, |a, who| a.check_admin(who))
            .await?
            .map_err(auth_status)?;
        let r = req.into_inner();
        let Some(h) = self.change_here(MemberChange::Remove { id: r.id }).await? else {
            return self.leader().await?.member_remove(r).await;
        };
        let (members, header) = self.members_after(h).await?;
        Ok(Response::new(pb::MemberRemoveResponse { header, members }))
    }

    async fn member_update(
        &self,
        req: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        check(&self.m, &req, |a, who| a.check_admin(who))
            .await?
            .map_err(auth_status)?;
        let r = req.into_inner();
        let change = MemberChange::Update {
            id: r.id,
            peer_urls: peer_urls(r.peer_ur_ls)?,
        };
        let h = self.m.change(change).await?;
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
        check(&self.m, &req, |a, who| a.check_admin(who))
            .await?
            .map_err(auth_status)?;
        let r = req.into_inner();
        let Some(h) = self.change_here(MemberChange::Promote { id: r.id }).await? else {
            return self.leader().await?.member_promote(r).await;
        };
        let (members, header) = self.members_after(h).await?;
        Ok(Response::new(pb::MemberPromoteResponse { header, members }))
    }
}
