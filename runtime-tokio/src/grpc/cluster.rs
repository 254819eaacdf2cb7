//! `etcdserverpb.Cluster`: the member list. Runtime reconfiguration (add, remove,
//! update, promote) arrives with the discovery and reconfiguration work; until then
//! those calls say so.

use tonic::{Request, Response, Status};

use super::header;
use crate::member::{Core, MemberHandle};
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
}

fn not_yet(what: &str) -> Status {
    Status::unimplemented(format!(
        "keel: {what} is not supported yet (runtime reconfiguration is not implemented)"
    ))
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

#[tonic::async_trait]
impl pb::cluster_server::Cluster for ClusterService {
    async fn member_add(
        &self,
        _req: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        Err(not_yet("MemberAdd"))
    }

    async fn member_remove(
        &self,
        _req: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        Err(not_yet("MemberRemove"))
    }

    async fn member_update(
        &self,
        _req: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        Err(not_yet("MemberUpdate"))
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
        _req: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        Err(not_yet("MemberPromote"))
    }
}
