//! Requests only the leader can answer, sent to it by a follower on the peer port:
//! membership changes (add, remove, promote) and lease keepalives and remaining TTLs.
//! The same connection carries the one request every member answers: its HashKV at a
//! revision, which etcd serves as `/members/hashkv` on its peer URLs for the corruption
//! checks (see [`crate::corruption`]).
//!
//! etcd forwards these inside the cluster too (conf changes through raft, lease renewals
//! over the peer URL's `/leases`), so what a client asks of any member works whatever the
//! client listener looks like: TLS with client certificates, auth enabled. The follower
//! has already authorized its caller as the client's gRPC call requires; the leader
//! trusts a member of its own cluster, as it trusts its raft messages, after the same
//! checks a peer stream gets: the cluster ID, its own member ID, and a sender that is a
//! member and not removed. Over https peer URLs the call runs inside the peers' TLS.
//!
//! A connection opens with `KEELCALL`, version, cluster ID, sender and recipient, then
//! carries calls one after the other: a length-prefixed request body, a length-prefixed
//! reply body. Lease calls reuse kept connections (a follower renews often); every length
//! is bounded, so a hostile peer can neither crash the decoder nor make it allocate
//! without limit.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tonic::{Code, Status};

use crate::member::{Header, MemberChange};
use crate::peer::PeerNet;
use crate::tls::PeerIo;
use keel_core::node::corruption::KvHash;

/// The magic opening a leader call on the peer port.
pub(crate) const CALL_MAGIC: &[u8; 8] = b"KEELCALL";
const CALL_VERSION: u8 = 1;
/// Largest request body accepted: a request names at most a member and its peer URLs.
const MAX_REQUEST: usize = 1 << 20;
/// Largest reply body accepted (a TTL reply lists a lease's keys).
const MAX_REPLY: usize = 64 << 20;
/// How long a call may take end to end (etcd's request timeout, plus the dial).
const CALL_TIMEOUT: Duration = Duration::from_secs(7);

/// A request for the leader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    /// A membership change (add, remove, promote).
    Change(MemberChange),
    /// Renew a lease (a keepalive).
    Renew(i64),
    /// A lease's remaining TTL, and its keys when asked.
    TimeToLive {
        /// The lease.
        id: i64,
        /// List the keys attached to it.
        keys: bool,
    },
    /// The answering member's HashKV at `revision` (0: its current one); any member
    /// answers.
    HashKv {
        /// The revision to hash up to.
        revision: i64,
    },
}

/// The leader's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// The change is applied, on the leader up to raft index `applied`.
    Changed {
        /// The leader's header.
        header: Header,
        /// The leader's applied index once the change was applied there.
        applied: u64,
    },
    /// The lease's new TTL (0: not found).
    Renewed(i64, Header),
    /// A lease's remaining time.
    TimeToLive(LeaseTtl),
    /// The member's HashKV.
    HashKv(KvHash),
}

/// A lease's remaining time as the leader knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseTtl {
    /// The TTL it was granted with.
    pub granted: i64,
    /// Seconds left; -1 for a lease that does not exist.
    pub ttl: i64,
    /// Its keys, when asked.
    pub keys: Vec<Bytes>,
    /// The answering member's header.
    pub header: Header,
}

/// What answers calls on the leader.
pub type CallHandler =
    Arc<dyn Fn(Call) -> Pin<Box<dyn Future<Output = Result<Answer, Status>> + Send>> + Send + Sync>;

/// Sends `call` to member `leader` over its peer URL and waits for the answer.
pub(crate) async fn call(net: &PeerNet, leader: u64, call: &Call) -> Result<Answer, Status> {
    let body = encode_call(call);
    // A lease call may be asked again: on a kept connection the leader closed meanwhile
    // it fails before the leader saw it, and is sent once more on a new one. A
    // membership change always takes a new connection, so it is never sent twice.
    let reusable = !matches!(call, Call::Change(_));
    let exchange = async {
        if reusable {
            if let Some(mut s) = net.take_call_stream(leader) {
                if let Ok(reply) = round_trip(&mut s, &body).await {
                    net.keep_call_stream(leader, s);
                    return Ok(reply);
                }
            }
        }
        let url = net
            .addr_of(leader)
            .ok_or_else(|| std::io::Error::other("the leader has no peer URL"))?;
        let mut s = open(net, leader, &url).await?;
        let reply = round_trip(&mut s, &body).await?;
        if reusable {
            net.keep_call_stream(leader, s);
        }
        Ok::<_, std::io::Error>(reply)
    };
    let reply = tokio::time::timeout(CALL_TIMEOUT, exchange)
        .await
        .map_err(|_| Status::unavailable("etcdserver: request timed out"))?
        .map_err(|e| Status::unavailable(format!("etcdserver: leader unreachable: {e}")))?;
    decode_reply(&reply)
        .ok_or_else(|| Status::internal("etcdserver: malformed answer from the leader"))?
}

/// Sends `call` to member `to` at its peer URL `url`, on a connection of its own, and
/// waits at most `limit` for the answer.
pub(crate) async fn call_at(
    net: &PeerNet,
    to: u64,
    url: &str,
    call: &Call,
    limit: Duration,
) -> Result<Answer, Status> {
    let body = encode_call(call);
    let exchange = async {
        let mut s = open(net, to, url).await?;
        round_trip(&mut s, &body).await
    };
    let reply = tokio::time::timeout(limit, exchange)
        .await
        .map_err(|_| Status::unavailable("etcdserver: request timed out"))?
        .map_err(|e| Status::unavailable(e.to_string()))?;
    decode_reply(&reply).ok_or_else(|| Status::internal("keel: malformed answer from the peer"))?
}

/// Dials member `to` at `url` and opens a call connection (the hello naming both ends).
async fn open(net: &PeerNet, to: u64, url: &str) -> std::io::Result<Box<dyn PeerIo>> {
    let mut s = net.dialer().connect(url).await?;
    let mut hello = CALL_MAGIC.to_vec();
    hello.push(CALL_VERSION);
    hello.extend_from_slice(&net.cluster_id().to_le_bytes());
    hello.extend_from_slice(&net.id().to_le_bytes());
    hello.extend_from_slice(&to.to_le_bytes());
    s.write_all(&hello).await?;
    Ok(s)
}

/// One request body out, one reply body back.
async fn round_trip(s: &mut Box<dyn PeerIo>, body: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut req = (body.len() as u32).to_le_bytes().to_vec();
    req.extend_from_slice(body);
    s.write_all(&req).await?;
    s.flush().await?;
    read_body(s, MAX_REPLY).await
}

/// Answers the calls on a connection whose magic was already read from `s`, one after
/// the other until the caller closes it. The sender must be a current member of this
/// cluster, asked at every call: a member removed meanwhile is refused.
pub(crate) async fn answer<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    net: &PeerNet,
    handler: &CallHandler,
) -> std::io::Result<()> {
    let mut head = [0u8; 1 + 8 + 8 + 8];
    s.read_exact(&mut head).await?;
    let word = |i: usize| u64::from_le_bytes(head[i..i + 8].try_into().unwrap_or([0; 8]));
    let (version, cluster, from, to) = (head[0], word(1), word(9), word(17));
    // Whoever opens a connection is checked before anything it sends is read, so a
    // stranger cannot make this member allocate or work for it.
    let refusal = if version != CALL_VERSION {
        Some(Status::unimplemented("keel: unknown leader call version"))
    } else if cluster != net.cluster_id() {
        Some(Status::failed_precondition("cluster ID mismatch"))
    } else if to != net.id() || !net.is_member(from) {
        Some(not_a_member())
    } else {
        None
    };
    if let Some(refused) = refusal {
        return write_reply(s, &Err(refused)).await;
    }
    loop {
        let body = match read_body(s, MAX_REQUEST).await {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        };
        // Asked at every call: a member removed meanwhile is refused from then on.
        let result = if !net.is_member(from) {
            Err(not_a_member())
        } else {
            match decode_call(&body) {
                Some(c) => handler(c).await,
                None => Err(Status::invalid_argument("keel: malformed leader call")),
            }
        };
        write_reply(s, &result).await?;
    }
}

fn not_a_member() -> Status {
    Status::permission_denied("keel: not a member of this cluster")
}

async fn write_reply<S: AsyncWrite + Unpin>(
    s: &mut S,
    result: &Result<Answer, Status>,
) -> std::io::Result<()> {
    let reply = encode_reply(result);
    let mut out = (reply.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(&reply);
    s.write_all(&out).await?;
    s.flush().await
}

async fn read_body<S: AsyncRead + Unpin>(s: &mut S, limit: usize) -> std::io::Result<Vec<u8>> {
    let len = s.read_u32_le().await? as usize;
    if len > limit {
        return Err(std::io::Error::other(format!(
            "body of {len} bytes exceeds the limit"
        )));
    }
    let mut b = vec![0; len];
    s.read_exact(&mut b).await?;
    Ok(b)
}

const ADD: u8 = 1;
const REMOVE: u8 = 2;
const PROMOTE: u8 = 3;
const UPDATE: u8 = 4;
const RENEW: u8 = 5;
const TTL: u8 = 6;
const HASH_KV: u8 = 7;

/// The request body.
pub fn encode_call(c: &Call) -> Vec<u8> {
    let mut o = Vec::new();
    match c {
        Call::Change(MemberChange::Add {
            id,
            peer_urls,
            learner,
        }) => {
            o.push(ADD);
            o.extend_from_slice(&id.to_le_bytes());
            o.push(u8::from(*learner));
            put_list(&mut o, peer_urls.iter().map(|u| u.as_bytes()));
        }
        Call::Change(MemberChange::Remove { id }) => {
            o.push(REMOVE);
            o.extend_from_slice(&id.to_le_bytes());
        }
        Call::Change(MemberChange::Promote { id }) => {
            o.push(PROMOTE);
            o.extend_from_slice(&id.to_le_bytes());
        }
        Call::Change(MemberChange::Update { id, peer_urls }) => {
            o.push(UPDATE);
            o.extend_from_slice(&id.to_le_bytes());
            put_list(&mut o, peer_urls.iter().map(|u| u.as_bytes()));
        }
        Call::Renew(id) => {
            o.push(RENEW);
            o.extend_from_slice(&id.to_le_bytes());
        }
        Call::TimeToLive { id, keys } => {
            o.push(TTL);
            o.extend_from_slice(&id.to_le_bytes());
            o.push(u8::from(*keys));
        }
        Call::HashKv { revision } => {
            o.push(HASH_KV);
            o.extend_from_slice(&revision.to_le_bytes());
        }
    }
    o
}

/// Parses a request body; None if it is malformed.
pub fn decode_call(b: &[u8]) -> Option<Call> {
    let mut r = Reader(b);
    let call = match r.u8()? {
        ADD => {
            let id = r.u64()?;
            let learner = r.bool()?;
            let peer_urls = r.strings()?;
            Call::Change(MemberChange::Add {
                id,
                peer_urls,
                learner,
            })
        }
        REMOVE => Call::Change(MemberChange::Remove { id: r.u64()? }),
        PROMOTE => Call::Change(MemberChange::Promote { id: r.u64()? }),
        UPDATE => {
            let id = r.u64()?;
            let peer_urls = r.strings()?;
            Call::Change(MemberChange::Update { id, peer_urls })
        }
        RENEW => Call::Renew(r.u64()? as i64),
        TTL => {
            let id = r.u64()? as i64;
            Call::TimeToLive {
                id,
                keys: r.bool()?,
            }
        }
        HASH_KV => Call::HashKv {
            revision: r.u64()? as i64,
        },
        _ => return None,
    };
    r.0.is_empty().then_some(call)
}

/// The reply body: an answer, or a gRPC status (code and etcd's message).
pub fn encode_reply(r: &Result<Answer, Status>) -> Vec<u8> {
    let mut o = Vec::new();
    let header = |o: &mut Vec<u8>, h: &Header| {
        o.extend_from_slice(&h.revision.to_le_bytes());
        o.extend_from_slice(&h.raft_term.to_le_bytes());
    };
    match r {
        Ok(Answer::Changed { header: h, applied }) => {
            o.push(1);
            header(&mut o, h);
            o.extend_from_slice(&applied.to_le_bytes());
        }
        Ok(Answer::Renewed(ttl, h)) => {
            o.push(2);
            header(&mut o, h);
            o.extend_from_slice(&ttl.to_le_bytes());
        }
        Ok(Answer::TimeToLive(LeaseTtl {
            granted,
            ttl,
            keys,
            header: h,
        })) => {
            o.push(3);
            header(&mut o, h);
            o.extend_from_slice(&granted.to_le_bytes());
            o.extend_from_slice(&ttl.to_le_bytes());
            put_list(&mut o, keys.iter().map(|k| &k[..]));
        }
        Ok(Answer::HashKv(h)) => {
            o.push(4);
            header(
                &mut o,
                &Header {
                    revision: h.revision,
                    raft_term: 0,
                },
            );
            o.extend_from_slice(&h.hash.to_le_bytes());
            o.extend_from_slice(&h.compact_revision.to_le_bytes());
        }
        Err(s) => {
            o.push(0);
            o.extend_from_slice(&(s.code() as i32).to_le_bytes());
            put_list(&mut o, [s.message().as_bytes()]);
        }
    }
    o
}

/// Parses a reply body; None if it is malformed.
pub fn decode_reply(b: &[u8]) -> Option<Result<Answer, Status>> {
    let mut r = Reader(b);
    let kind = r.u8()?;
    let reply = if kind == 0 {
        let code = Code::from_i32(r.u32()? as i32);
        let mut msg = r.strings()?;
        if msg.len() != 1 {
            return None;
        }
        Err(Status::new(code, msg.pop()?))
    } else {
        let header = Header {
            revision: r.u64()? as i64,
            raft_term: r.u64()?,
        };
        Ok(match kind {
            1 => Answer::Changed {
                header,
                applied: r.u64()?,
            },
            2 => Answer::Renewed(r.u64()? as i64, header),
            3 => Answer::TimeToLive(LeaseTtl {
                granted: r.u64()? as i64,
                ttl: r.u64()? as i64,
                keys: r.list()?.into_iter().map(Bytes::copy_from_slice).collect(),
                header,
            }),
            4 => Answer::HashKv(KvHash {
                hash: r.u32()?,
                compact_revision: r.u64()? as i64,
                revision: header.revision,
            }),
            _ => return None,
        })
    };
    r.0.is_empty().then_some(reply)
}

fn put_list<'a>(o: &mut Vec<u8>, items: impl IntoIterator<Item = &'a [u8]>) {
    let items: Vec<&[u8]> = items.into_iter().collect();
    o.extend_from_slice(&(items.len() as u32).to_le_bytes());
    for i in items {
        o.extend_from_slice(&(i.len() as u32).to_le_bytes());
        o.extend_from_slice(i);
    }
}

/// A cursor over a body; every read checks the bytes are there.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn bool(&mut self) -> Option<bool> {
        match self.u8()? {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn list(&mut self) -> Option<Vec<&'a [u8]>> {
        let n = self.u32()? as usize;
        // Each item needs at least its 4-byte length: a count the body cannot hold is
        // refused before anything is allocated for it.
        if n > self.0.len() / 4 {
            return None;
        }
        let mut items = Vec::with_capacity(n);
        for _ in 0..n {
            let len = self.u32()? as usize;
            items.push(self.take(len)?);
        }
        Some(items)
    }
    fn strings(&mut self) -> Option<Vec<String>> {
        self.list()?
            .into_iter()
            .map(|b| String::from_utf8(b.to_vec()).ok())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn calls() -> Vec<Call> {
        vec![
            Call::Change(MemberChange::Add {
                id: 0x8211f1d0f64f3269,
                peer_urls: vec!["https://127.0.0.1:2380".into(), "http://[::1]:2".into()],
                learner: true,
            }),
            Call::Change(MemberChange::Remove { id: 7 }),
            Call::Change(MemberChange::Promote { id: u64::MAX }),
            Call::Change(MemberChange::Update {
                id: 9,
                peer_urls: vec![],
            }),
            Call::Renew(-1),
            Call::TimeToLive { id: 42, keys: true },
            Call::HashKv { revision: 0 },
            Call::HashKv { revision: -3 },
        ]
    }

    fn replies() -> Vec<Result<Answer, Status>> {
        let h = Header {
            revision: 12,
            raft_term: 3,
        };
        vec![
            Ok(Answer::Changed {
                header: h,
                applied: 98,
            }),
            Ok(Answer::Renewed(30, h)),
            Ok(Answer::TimeToLive(LeaseTtl {
                granted: 60,
                ttl: -1,
                keys: vec![Bytes::from_static(b"a"), Bytes::new()],
                header: h,
            })),
            Ok(Answer::HashKv(KvHash {
                hash: 0xdead_beef,
                revision: 12,
                compact_revision: -1,
            })),
            Err(Status::failed_precondition(
                "etcdserver: re-configuration failed due to not enough started members",
            )),
        ]
    }

    #[test]
    fn calls_and_replies_round_trip_and_truncations_are_refused() {
        for c in calls() {
            let b = encode_call(&c);
            assert_eq!(decode_call(&b), Some(c));
            for cut in 0..b.len() {
                assert_eq!(decode_call(&b[..cut]), None, "truncated at {cut}");
            }
            let mut longer = b.clone();
            longer.push(0);
            assert_eq!(decode_call(&longer), None, "trailing bytes");
        }
        for r in replies() {
            let b = encode_reply(&r);
            let back = decode_reply(&b).expect("decodes");
            match (&back, &r) {
                (Ok(a), Ok(b)) => assert_eq!(a, b),
                (Err(a), Err(b)) => {
                    assert_eq!((a.code(), a.message()), (b.code(), b.message()))
                }
                _ => panic!("{back:?} != {r:?}"),
            }
            for cut in 0..b.len() {
                assert!(decode_reply(&b[..cut]).is_none(), "truncated at {cut}");
            }
        }
    }

    fn hello(cluster: u64, from: u64, to: u64) -> Vec<u8> {
        // What follows the magic, which the peer listener has read already.
        let mut h = vec![CALL_VERSION];
        for w in [cluster, from, to] {
            h.extend_from_slice(&w.to_le_bytes());
        }
        h
    }

    fn framed(body: &[u8]) -> Vec<u8> {
        let mut f = (body.len() as u32).to_le_bytes().to_vec();
        f.extend_from_slice(body);
        f
    }

    /// Runs `answer` for member 1 of cluster 7 (members 1 and 2) over an in-memory stream
    /// fed `input`; the replies it wrote.
    async fn serve(input: Vec<u8>) -> Vec<Result<Answer, Status>> {
        use tokio::io::AsyncReadExt;
        let (fatal, _) = tokio::sync::mpsc::unbounded_channel();
        let net = PeerNet::new(1, 7, fatal);
        net.set_members(
            [1, 2]
                .map(|id| keel_core::node::MemberInfo {
                    id,
                    peer_urls: vec![format!("http://127.0.0.1:{id}")],
                    ..Default::default()
                })
                .to_vec(),
        );
        let handler: CallHandler = Arc::new(|c| {
            Box::pin(async move {
                match c {
                    Call::Renew(id) => Ok(Answer::Renewed(
                        id * 10,
                        Header {
                            revision: 5,
                            raft_term: 2,
                        },
                    )),
                    _ => Err(Status::failed_precondition("etcdserver: not leader")),
                }
            })
        });
        let (mut ours, mut theirs) = tokio::io::duplex(1 << 16);
        ours.write_all(&input).await.expect("write");
        ours.shutdown().await.expect("shutdown");
        answer(&mut theirs, &net, &handler).await.expect("answered");
        drop(theirs);
        let mut out = Vec::new();
        ours.read_to_end(&mut out).await.expect("read");
        let mut replies = Vec::new();
        let mut rest = &out[..];
        while let Some((len, tail)) = rest.split_first_chunk::<4>() {
            let len = u32::from_le_bytes(*len) as usize;
            replies.push(decode_reply(&tail[..len]).expect("a reply"));
            rest = &tail[len..];
        }
        replies
    }

    fn message(r: &Result<Answer, Status>) -> String {
        match r {
            Ok(a) => format!("{a:?}"),
            Err(s) => s.message().to_string(),
        }
    }

    #[tokio::test]
    async fn calls_are_answered_in_turn_for_members_and_refused_to_strangers() {
        let renew = |id| framed(&encode_call(&Call::Renew(id)));
        // A member: two calls on one connection, answered in order.
        let mut input = hello(7, 2, 1);
        input.extend(renew(3));
        input.extend(renew(4));
        let replies = serve(input).await;
        let h = Header {
            revision: 5,
            raft_term: 2,
        };
        assert_eq!(replies.len(), 2);
        assert_eq!(replies[0].as_ref().ok(), Some(&Answer::Renewed(30, h)));
        assert_eq!(replies[1].as_ref().ok(), Some(&Answer::Renewed(40, h)));
        // Another cluster, a stranger, a call meant for another member: refused at once,
        // before the body is read (a body too large to accept is never allocated).
        let huge = (u32::MAX).to_le_bytes().to_vec();
        for (input, why) in [
            (hello(8, 2, 1), "cluster ID mismatch"),
            (hello(7, 9, 1), "keel: not a member of this cluster"),
            (hello(7, 2, 3), "keel: not a member of this cluster"),
        ] {
            let mut input = input;
            input.extend(&huge);
            let replies = serve(input).await;
            assert_eq!(replies.iter().map(message).collect::<Vec<_>>(), vec![why]);
        }
        // A malformed call gets a clear answer and the connection goes on.
        let mut input = hello(7, 2, 1);
        input.extend(framed(&[99]));
        input.extend(renew(1));
        let replies = serve(input).await;
        assert_eq!(message(&replies[0]), "keel: malformed leader call");
        assert!(replies[1].is_ok());
    }

    proptest! {
        #[test]
        fn hostile_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = decode_call(&b);
            let _ = decode_reply(&b);
        }
    }
}
