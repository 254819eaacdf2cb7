//! What only the leader can do (membership changes, lease keepalives and remaining
//! TTLs), asked of a follower: sent on to the leader over the peer port (see
//! [`crate::leader_call`]), and answered there by [`handler`], which also answers any
//! member's HashKV question (the corruption checks).
//!
//! The follower has checked its caller already (an admin for membership changes), as
//! etcd checks on the member a client reaches before it proposes.

use super::{server_status, Grpc};
use std::sync::Arc;

use keel_core::mvcc::LeaseId;
use keel_core::node::corruption::KvHash;
use tonic::Status;

use super::lease;
use crate::leader_call::{self, Answer, Call, CallHandler};
use crate::member::{MemberHandle, ServerError, REQUEST_TIMEOUT};

/// Asks the leader (waiting for one during an election, as etcd's `waitLeader`).
pub(crate) async fn to_leader(m: &MemberHandle, call: Call) -> Result<Answer, Status> {
    let leader = known_leader(m).await?;
    if leader == m.id {
        // Elected meanwhile: answer here.
        return answer(m.clone(), call).await;
    }
    leader_call::call(&m.peers, leader, &call).await
}

/// The leader; during an election, the one elected, waiting for it up to the request
/// timeout.
async fn known_leader(m: &MemberHandle) -> Result<u64, Status> {
    let mut status = m.status.clone();
    let known = tokio::time::timeout(REQUEST_TIMEOUT, status.wait_for(|s| s.leader != 0))
        .await
        .map(|r| r.map(|s| s.leader));
    match known {
        Ok(Ok(leader)) => Ok(leader),
        Ok(Err(_)) => Err(server_status(ServerError::Stopped)),
        Err(_) => Err(server_status(ServerError::Timeout)),
    }
}

/// Answers the calls that followers send to this member while it leads.
pub fn handler(m: MemberHandle) -> CallHandler {
    Arc::new(move |call| Box::pin(answer(m.clone(), call)))
}

async fn answer(m: MemberHandle, call: Call) -> Result<Answer, Status> {
    let not_leader = || server_status(ServerError::NotLeader);
    match call {
        Call::Change(change) => {
            let header = m.change(change).await.grpc()?;
            let (applied, _) = m.raft_position().await.grpc()?;
            Ok(Answer::Changed { header, applied })
        }
        Call::Renew(id) => match lease::renew_as_leader(&m, LeaseId(id)).await? {
            Some((ttl, h)) => Ok(Answer::Renewed(ttl, h)),
            None => Err(not_leader()),
        },
        Call::TimeToLive { id, keys } => {
            match lease::time_to_live_here(&m, LeaseId(id), keys).await? {
                Some(t) => Ok(Answer::TimeToLive(t)),
                None => Err(not_leader()),
            }
        }
        // Any member answers: etcd's `/members/hashkv` on the peer URL.
        Call::HashKv { revision } => {
            let (hash, compact_revision, h) = m.hash_kv(revision).await.grpc()?;
            Ok(Answer::HashKv(KvHash {
                hash: hash.map_err(super::mvcc_status)?,
                revision: h.revision,
                compact_revision,
            }))
        }
    }
}
