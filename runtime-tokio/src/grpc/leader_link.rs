//! Forwarding to the leader: what only the leader can do (lease keepalives and TTLs,
//! membership changes) a follower sends on to the leader's client URL over gRPC.

use std::sync::{Arc, Mutex};

use tonic::transport::Channel;
use tonic::Status;

use crate::member::{Core, MemberHandle, ServerError, REQUEST_TIMEOUT};

/// A follower's connection to the leader's client URL, for requests only the leader can
/// answer; kept while the leader stays the same, so forwarded keepalives share it.
#[derive(Clone, Default)]
pub(crate) struct LeaderLink {
    cached: Arc<Mutex<Option<(u64, Channel)>>>,
}

impl LeaderLink {
    pub(crate) async fn channel(&self, m: &MemberHandle) -> Result<Channel, Status> {
        let leader = known_leader(m).await?;
        if let Ok(c) = self.cached.lock() {
            if let Some((_, ch)) = c.as_ref().filter(|(id, _)| *id == leader) {
                return Ok(ch.clone());
            }
        }
        let ch = leader_channel(m, leader).await?;
        if let Ok(mut c) = self.cached.lock() {
            *c = Some((leader, ch.clone()));
        }
        Ok(ch)
    }
}

/// The leader; during an election, the one elected, waiting for it up to the request
/// timeout as etcd's `waitLeader` does.
async fn known_leader(m: &MemberHandle) -> Result<u64, Status> {
    let mut status = m.status.clone();
    let known = tokio::time::timeout(REQUEST_TIMEOUT, status.wait_for(|s| s.leader != 0))
        .await
        .map(|r| r.map(|s| s.leader));
    match known {
        Ok(Ok(leader)) => Ok(leader),
        Ok(Err(_)) => Err(ServerError::Stopped.into()),
        Err(_) => Err(ServerError::Timeout.into()),
    }
}

/// A channel to `leader`'s client URL (`leader` is a known one, never 0).
async fn leader_channel(m: &MemberHandle, leader: u64) -> Result<Channel, Status> {
    let urls = m
        .local(move |c: &mut Core| c.sm.members.get(&leader).map(|x| x.client_urls.clone()))
        .await?
        .unwrap_or_default();
    let url = urls
        .into_iter()
        .find(|u| u.starts_with("http://"))
        .ok_or_else(|| Status::unavailable("etcdserver: leader has no reachable client URL"))?;
    let ch = Channel::from_shared(url)
        .map_err(|e| Status::internal(e.to_string()))?
        .connect_timeout(std::time::Duration::from_secs(2))
        .connect_lazy();
    Ok(ch)
}
