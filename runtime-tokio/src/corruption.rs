//! The corruption checks' I/O (etcd's `etcdserver/corrupt.go`): fetching peers' HashKV
//! and logging what the checks found. The rules are [`keel_core::node::corruption`]'s;
//! the periodic check's schedule and sequence are the core member's, which asks for
//! peers' hashes in its output (the simulator drives the same member).
//!
//! Peers are asked over the peer port (a [`Call::HashKv`]), as etcd asks
//! `/members/hashkv` on its peers' peer URLs: the question reaches a member whatever its
//! client listener demands (client certificates, auth), and only members of this
//! cluster are answered (etcd 3.5 added that check).

use keel_core::node::corruption::{initial_check, Finding, KvHash, PeerHash, PeerHashError};
use keel_core::node::MemberInfo;

use crate::leader_call::{call_at, Answer, Call};
use crate::member::REQUEST_TIMEOUT;
use crate::peer::PeerNet;

/// etcd's `getPeerHashKVs`: every other member with a peer URL is asked for its HashKV
/// at `revision`.
pub(crate) async fn peer_hashes(
    net: &PeerNet,
    members: &[MemberInfo],
    revision: i64,
) -> Vec<PeerHash> {
    let mut out = Vec::new();
    for m in members
        .iter()
        .filter(|m| m.id != net.id() && !m.peer_urls.is_empty())
    {
        out.push(peer_hash(net, m.id, &m.peer_urls, revision).await);
    }
    out
}

/// Member `id`'s HashKV at `revision`, asked at its peer URLs in turn until one answers.
pub(crate) async fn peer_hash(net: &PeerNet, id: u64, urls: &[String], revision: i64) -> PeerHash {
    let mut result = Err(PeerHashError::Other(String::new()));
    for url in urls {
        let call = Call::HashKv { revision };
        result = match call_at(net, id, url, &call, REQUEST_TIMEOUT).await {
            Ok(Answer::HashKv(h)) => Ok(h),
            Ok(other) => Err(PeerHashError::Other(format!("unexpected answer {other:?}"))),
            Err(status) => Err(peer_error(status.message())),
        };
        match &result {
            Ok(_) => break,
            Err(e) => tracing::warn!(
                local_member_id = %format!("{:x}", net.id()),
                requested_revision = revision,
                remote_peer_endpoint = %url,
                error = %error_text(e),
                "failed hash kv request"
            ),
        }
    }
    PeerHash {
        id,
        endpoints: urls.to_vec(),
        result,
    }
}

/// etcd tells the two revision errors apart by their text, as here.
fn peer_error(message: &str) -> PeerHashError {
    if message.contains("required revision has been compacted") {
        PeerHashError::Compacted
    } else if message.contains("required revision is a future revision") {
        PeerHashError::FutureRevision
    } else {
        PeerHashError::Other(message.to_string())
    }
}

fn error_text(e: &PeerHashError) -> String {
    match e {
        PeerHashError::Compacted => "etcdserver: mvcc: required revision has been compacted".into(),
        PeerHashError::FutureRevision => {
            "etcdserver: mvcc: required revision is a future revision".into()
        }
        PeerHashError::Other(m) => m.clone(),
    }
}

/// `--experimental-initial-corrupt-check`, before this member serves anyone: its hash
/// (`local`, of the state recovered from disk) against its peers' at the same revision.
/// Err is etcd's refusal, `<member ID> found data inconsistency with peers`.
pub(crate) async fn check_at_start(
    net: &PeerNet,
    members: &[MemberInfo],
    local: KvHash,
) -> Result<(), String> {
    let id = format!("{:x}", net.id());
    tracing::info!(
        local_member_id = %id,
        timeout = ?REQUEST_TIMEOUT,
        "starting initial corruption check"
    );
    let peers = peer_hashes(net, members, local.revision).await;
    let verdict = initial_check(local, &peers);
    for f in &verdict.findings {
        log_initial(&id, local, &peers, f);
    }
    if let Some(refusal) = verdict.refusal(net.id()) {
        return Err(refusal);
    }
    tracing::info!(
        local_member_id = %id,
        "initial corruption checking passed; no corruption"
    );
    Ok(())
}

fn log_initial(id: &str, local: KvHash, peers: &[PeerHash], f: &Finding) {
    let (peer, remote) = match f {
        Finding::HashDiffers { peer, remote }
        | Finding::CompactRevisionDiffers { peer, remote } => (*peer, Some(*remote)),
        Finding::PeerBehind { peer } | Finding::LocalBehind { peer } => (*peer, None),
        _ => return,
    };
    let endpoints = peers
        .iter()
        .find(|p| p.id == peer)
        .map(|p| p.endpoints.join(","))
        .unwrap_or_default();
    match remote {
        Some(r) => tracing::warn!(
            local_member_id = %id,
            local_member_revision = local.revision,
            local_member_compact_revision = local.compact_revision,
            local_member_hash = local.hash,
            remote_peer_id = %format!("{peer:x}"),
            remote_peer_endpoints = %endpoints,
            remote_peer_revision = r.revision,
            remote_peer_compact_revision = r.compact_revision,
            remote_peer_hash = r.hash,
            "{}",
            f.message()
        ),
        None => tracing::warn!(
            local_member_id = %id,
            local_member_revision = local.revision,
            local_member_compact_revision = local.compact_revision,
            local_member_hash = local.hash,
            remote_peer_id = %format!("{peer:x}"),
            remote_peer_endpoints = %endpoints,
            "{}",
            f.message()
        ),
    }
}

/// Logs one finding of the periodic check as etcd words it.
pub(crate) fn log_periodic(f: &Finding) {
    let id = |p: &u64| format!("{p:x}");
    match f {
        Finding::LocalHashChanged { first, second } => tracing::warn!(
            revision_1 = first.revision,
            compact_revision_1 = first.compact_revision,
            hash_1 = first.hash,
            revision_2 = second.revision,
            compact_revision_2 = second.compact_revision,
            hash_2 = second.hash,
            "{}",
            f.message()
        ),
        Finding::FollowerRevisionAhead {
            peer,
            leader,
            follower,
        } => tracing::warn!(
            leader_revision = leader,
            follower_revision = follower,
            follower_peer_id = %id(peer),
            "{}",
            f.message()
        ),
        Finding::FollowerCompactAhead {
            peer,
            leader,
            follower,
        } => tracing::warn!(
            leader_compact_revision = leader,
            follower_compact_revision = follower,
            follower_peer_id = %id(peer),
            "{}",
            f.message()
        ),
        Finding::FollowerHashDiffers {
            peer,
            leader_hash,
            remote,
        } => tracing::warn!(
            leader_compact_revision = remote.compact_revision,
            leader_hash = leader_hash,
            follower_compact_revision = remote.compact_revision,
            follower_hash = remote.hash,
            follower_peer_id = %id(peer),
            "{}",
            f.message()
        ),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revision_errors_are_told_apart_by_their_text() {
        assert_eq!(
            peer_error("etcdserver: mvcc: required revision has been compacted"),
            PeerHashError::Compacted
        );
        assert_eq!(
            peer_error("etcdserver: mvcc: required revision is a future revision"),
            PeerHashError::FutureRevision
        );
        assert_eq!(
            peer_error("cluster ID mismatch"),
            PeerHashError::Other("cluster ID mismatch".into())
        );
    }
}
