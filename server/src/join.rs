//! `--initial-cluster-state existing`: joining a running cluster that already added this
//! member (`etcdctl member add`). As etcd, the member asks the peers listed in
//! `--initial-cluster` for the cluster's member table, checks that it matches
//! `--initial-cluster`, and takes its ID and the cluster ID from it.

use std::time::Duration;

use keel_core::discovery::{BootstrapError, InitialCluster};
use keel_core::node::MemberInfo;
use keel_runtime_tokio::peer::{fetch_members_with, RemoteCluster};
use keel_runtime_tokio::tls::PeerDialer;

use crate::config::ServerConfig;

/// How long to keep asking the peers before giving up.
const FETCH_FOR: Duration = Duration::from_secs(10);

/// This member's identity in the cluster it joins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    /// This member's ID (assigned by MemberAdd).
    pub id: u64,
    /// The cluster's ID.
    pub cluster_id: u64,
    /// The cluster's members, this one included.
    pub members: Vec<MemberInfo>,
}

/// Asks the running cluster who this member is, dialing its peers with `dialer`.
pub async fn existing(cfg: &ServerConfig, dialer: &PeerDialer) -> Result<Joined, String> {
    let initial = InitialCluster::parse(&cfg.initial_cluster).map_err(|e| e.to_string())?;
    let others: Vec<String> = initial
        .iter()
        .filter(|(name, _)| *name != cfg.name)
        .flat_map(|(_, urls)| urls.iter().cloned())
        .collect();
    if others.is_empty() {
        return Err(
            "--initial-cluster-state existing needs the running members in --initial-cluster"
                .into(),
        );
    }
    let deadline = tokio::time::Instant::now() + FETCH_FOR;
    let remote = loop {
        match fetch_members_with(&others, Duration::from_secs(2), dialer).await {
            Ok(r) => break r,
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(format!("cannot fetch cluster info from peer urls: {e}"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    };
    let id = assign_id(
        &initial,
        &cfg.name,
        &cfg.initial_advertise_peer_urls,
        &remote,
    )?;
    Ok(Joined {
        id,
        cluster_id: remote.cluster_id,
        members: remote.members,
    })
}

/// etcd's `ValidateClusterAndAssignIDs`: `--initial-cluster` must list exactly the
/// running cluster's members (matched by peer URLs), and this member must be among them.
pub fn assign_id(
    initial: &InitialCluster,
    name: &str,
    advertised: &[String],
    remote: &RemoteCluster,
) -> Result<u64, String> {
    let bad = |why: String| {
        format!(
            "error validating peerURLs {{ClusterID:{:x}}}: {why}",
            remote.cluster_id
        )
    };
    if initial.len() != remote.members.len() {
        return Err(bad(format!(
            "member count is unequal ({} in --initial-cluster, {} in the cluster)",
            initial.len(),
            remote.members.len()
        )));
    }
    let sorted = |v: &[String]| {
        let mut v = v.to_vec();
        v.sort();
        v
    };
    let mut own = None;
    for (n, urls) in initial.iter() {
        let m = remote
            .members
            .iter()
            .find(|m| sorted(&m.peer_urls) == sorted(urls))
            .ok_or_else(|| {
                bad(format!(
                    "unmatched member while checking PeerURLs: {n}={} is not a member of the cluster",
                    urls.join(",")
                ))
            })?;
        if n == name {
            own = Some(m.id);
        }
    }
    let own = own.ok_or_else(|| BootstrapError::NotListed(name.to_string()).to_string())?;
    let mine = initial.peer_urls(name).unwrap_or_default();
    if sorted(mine) != sorted(advertised) {
        return Err(BootstrapError::AdvertiseMismatch(name.to_string()).to_string());
    }
    Ok(own)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote() -> RemoteCluster {
        let m = |id, name: &str, url: &str| MemberInfo {
            id,
            name: name.into(),
            peer_urls: vec![url.into()],
            client_urls: vec![],
            learner: false,
        };
        RemoteCluster {
            cluster_id: 0xc1,
            members: vec![
                m(1, "a", "http://127.0.0.1:1"),
                m(2, "b", "http://127.0.0.1:2"),
                m(9, "", "http://127.0.0.1:3"),
            ],
        }
    }

    fn ic(s: &str) -> InitialCluster {
        InitialCluster::parse(s).expect("parses")
    }

    #[test]
    fn takes_the_id_the_cluster_assigned() {
        let c = ic("a=http://127.0.0.1:1,b=http://127.0.0.1:2,new=http://127.0.0.1:3");
        let adv = vec!["http://127.0.0.1:3".to_string()];
        assert_eq!(assign_id(&c, "new", &adv, &remote()), Ok(9));
    }

    #[test]
    fn refuses_a_cluster_that_differs() {
        let adv = vec!["http://127.0.0.1:3".to_string()];
        let short = ic("a=http://127.0.0.1:1,new=http://127.0.0.1:3");
        assert_eq!(
            assign_id(&short, "new", &adv, &remote()),
            Err("error validating peerURLs {ClusterID:c1}: member count is unequal (2 in --initial-cluster, 3 in the cluster)".into())
        );
        let unknown = ic("a=http://127.0.0.1:1,b=http://127.0.0.1:2,new=http://127.0.0.1:4");
        let adv4 = vec!["http://127.0.0.1:4".to_string()];
        assert_eq!(
            assign_id(&unknown, "new", &adv4, &remote()),
            Err("error validating peerURLs {ClusterID:c1}: unmatched member while checking PeerURLs: new=http://127.0.0.1:4 is not a member of the cluster".into())
        );
        let c = ic("a=http://127.0.0.1:1,b=http://127.0.0.1:2,new=http://127.0.0.1:3");
        assert_eq!(
            assign_id(&c, "other", &adv, &remote()),
            Err("other not listed in the initial cluster config".into())
        );
        let wrong_adv = vec!["http://127.0.0.1:5".to_string()];
        assert_eq!(
            assign_id(&c, "new", &wrong_adv, &remote()),
            Err("error setting up initial cluster: new has different advertised URLs in the cluster and advertised peer URLs list".into())
        );
    }
}
