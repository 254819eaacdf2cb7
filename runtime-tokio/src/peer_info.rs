//! The member-list query on the peer port: what etcd serves as `GET /members` on its peer
//! URLs. A member joining with `--initial-cluster-state existing` learns the cluster ID
//! and its own ID from it, and the discovery proxy learns the members' client URLs.
//!
//! Request: `KEELINFO`, version. Reply: cluster ID, then the member table; every length
//! is bounded so a hostile peer cannot make the asker allocate without limit.

use std::time::Duration;

use keel_core::node::MemberInfo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::peer::url_host_port;

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
/// answer wins. Each attempt is bounded by `timeout`.
pub async fn fetch_members(
    peer_urls: &[String],
    timeout: Duration,
) -> Result<RemoteCluster, String> {
    let mut errors = Vec::new();
    for url in peer_urls {
        match tokio::time::timeout(timeout, ask(url)).await {
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

async fn ask(url: &str) -> Result<RemoteCluster, String> {
    let hp = url_host_port(url).ok_or("not a URL")?;
    let mut s = TcpStream::connect(hp).await.map_err(|e| e.to_string())?;
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
pub(crate) async fn answer(
    s: &mut TcpStream,
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

fn put_str(o: &mut Vec<u8>, s: &str) {
    o.extend_from_slice(&(s.len() as u32).to_le_bytes());
    o.extend_from_slice(s.as_bytes());
}

fn put_strs(o: &mut Vec<u8>, v: &[String]) {
    o.extend_from_slice(&(v.len() as u32).to_le_bytes());
    for s in v {
        put_str(o, s);
    }
}

/// The reply body.
pub fn encode(c: &RemoteCluster) -> Vec<u8> {
    let mut o = Vec::new();
    o.extend_from_slice(&c.cluster_id.to_le_bytes());
    o.extend_from_slice(&(c.members.len() as u32).to_le_bytes());
    for m in &c.members {
        o.extend_from_slice(&m.id.to_le_bytes());
        o.push(u8::from(m.learner));
        put_str(&mut o, &m.name);
        put_strs(&mut o, &m.peer_urls);
        put_strs(&mut o, &m.client_urls);
    }
    o
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u32(&mut self) -> Option<usize> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?) as usize)
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn str(&mut self) -> Option<String> {
        let n = self.u32()?;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
    fn strs(&mut self) -> Option<Vec<String>> {
        let n = self.u32()?;
        // Each string needs at least its 4-byte length: bounds the allocation.
        if n > self.0.len() / 4 {
            return None;
        }
        (0..n).map(|_| self.str()).collect()
    }
}

/// Parses a reply body; None if it is malformed.
pub fn decode(b: &[u8]) -> Option<RemoteCluster> {
    let mut r = Reader(b);
    let cluster_id = r.u64()?;
    let n = r.u32()?;
    if n > b.len() / 9 {
        return None;
    }
    let mut members = Vec::with_capacity(n);
    for _ in 0..n {
        let id = r.u64()?;
        let learner = match r.take(1)?[0] {
            0 => false,
            1 => true,
            _ => return None,
        };
        members.push(MemberInfo {
            id,
            learner,
            name: r.str()?,
            peer_urls: r.strs()?,
            client_urls: r.strs()?,
        });
    }
    r.0.is_empty().then_some(RemoteCluster {
        cluster_id,
        members,
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
