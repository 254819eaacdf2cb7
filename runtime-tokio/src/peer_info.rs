//! The member-list query on the peer port: what etcd serves as `GET /members` on its peer
//! URLs. A member joining with `--initial-cluster-state existing` learns the cluster ID
//! and its own ID from it, and the discovery proxy learns the members' client URLs.
//!
//! Request: `KEELINFO`, version. Reply: cluster ID, then the member table; every length
//! is bounded so a hostile peer cannot make the asker allocate without limit.

use std::time::Duration;

use keel_core::node::{decode_members, write_members, MemberInfo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::tls::PeerDialer;

/// The magic opening a member-list query.
pub(crate) const INFO_MAGIC: &[u8; 8] = b"KEELINFO";
const INFO_VERSION: u8 = 1;
/// Largest reply accepted: far above any real member table.
const MAX_REPLY: usize = 4 << 20;

/// A running cluster as one of its members describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteCluster {
    /// The cluster's ID.
    pub cluster_id: u64,
    /// Its members, with their names, peer and client URLs.
    pub members: Vec<MemberInfo>,
}

/// Asks the members at `peer_urls`, in turn, for the cluster's member list; the first
/// answer wins. Each attempt is bounded by `timeout`. Plain TCP (http peer URLs) only.
pub async fn fetch_members(
    peer_urls: &[String],
    timeout: Duration,
) -> Result<RemoteCluster, String> {
    fetch_members_with(peer_urls, timeout, &PeerDialer::plain()).await
}

/// As [`fetch_members`], dialing with `dialer` (TLS for https peer URLs).
pub async fn fetch_members_with(
    peer_urls: &[String],
    timeout: Duration,
    dialer: &PeerDialer,
) -> Result<RemoteCluster, String> {
    let mut errors = Vec::new();
    for url in peer_urls {
        match tokio::time::timeout(timeout, ask(url, dialer)).await {
            Ok(Ok(c)) => return Ok(c),
            Ok(Err(e)) => errors.push(format!("{url}: {e}")),
            Err(_) => errors.push(format!("{url}: timed out")),
        }
    }
    Err(format!(
        "could not retrieve the cluster's members from its peers ({})",
        errors.join("; ")
    ))
}

async fn ask(url: &str, dialer: &PeerDialer) -> Result<RemoteCluster, String> {
    let mut s = dialer.connect(url).await.map_err(|e| e.to_string())?;
    let mut req = INFO_MAGIC.to_vec();
    req.push(INFO_VERSION);
    s.write_all(&req).await.map_err(|e| e.to_string())?;
    let len = s.read_u32_le().await.map_err(|e| e.to_string())? as usize;
    if len > MAX_REPLY {
        return Err(format!("reply of {len} bytes exceeds the limit"));
    }
    let mut buf = vec![0; len];
    s.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
    decode(&buf).ok_or_else(|| "malformed member list".to_string())
}

/// Answers a query whose magic was already read from `s`.
pub(crate) async fn answer<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    cluster_id: u64,
    members: Vec<MemberInfo>,
) -> std::io::Result<()> {
    let version = s.read_u8().await?;
    if version != INFO_VERSION {
        return Err(std::io::Error::other("unknown member-list query version"));
    }
    let body = encode(&RemoteCluster {
        cluster_id,
        members,
    });
    let mut out = (body.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(&body);
    s.write_all(&out).await
}

/// The reply body: the cluster ID, then the member table in the state machine's layout.
pub fn encode(c: &RemoteCluster) -> Vec<u8> {
    let mut o = c.cluster_id.to_le_bytes().to_vec();
    write_members(&mut o, c.members.iter());
    o
}

/// Parses a reply body; None if it is malformed.
pub fn decode(b: &[u8]) -> Option<RemoteCluster> {
    let (id, rest) = b.split_first_chunk::<8>()?;
    Some(RemoteCluster {
        cluster_id: u64::from_le_bytes(*id),
        members: decode_members(rest).ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip() {
        let c = RemoteCluster {
            cluster_id: 0xcdf818194e3a8c32,
            members: vec![
                MemberInfo {
                    id: 1,
                    name: "a".into(),
                    peer_urls: vec!["http://127.0.0.1:2380".into()],
                    client_urls: vec!["http://127.0.0.1:2379".into(), "http://x:1".into()],
                    learner: false,
                },
                MemberInfo {
                    id: 2,
                    learner: true,
                    ..MemberInfo::default()
                },
            ],
        };
        assert_eq!(decode(&encode(&c)), Some(c.clone()));
        let b = encode(&c);
        for cut in 0..b.len() {
            assert_eq!(decode(&b[..cut]), None, "truncated at {cut}");
        }
    }

    proptest! {
        #[test]
        fn hostile_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&b);
        }
    }
}
