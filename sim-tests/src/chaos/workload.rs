//! Simulated clients: each runs on its own node, sends random get/put/delete/
//! compare-and-set requests on a few keys to random members, waits a bounded time, and
//! records the call and its outcome for the checkers. A write that times out has an
//! unknown outcome; a read that times out had no effect, so it leaves the history.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use keel_runtime_sim::api::{ClientOp, ClientReply, Request, CLIENT_TAG};
use keel_runtime_sim::cluster::member_addr;
use madsim::net::Endpoint;
use madsim::rand::{thread_rng, Rng};
use madsim::time::Instant;

use crate::linearizability::models::etcd_kv::{Compare, KeyValue, KvInput, KvOutput, WriteOp};
use crate::linearizability::{History, Recorder};
use crate::lock;

/// Keys are small numbers (`k0`, `k1`, ... on the wire).
pub type Key = u8;
/// Values are unique numbers: client ID in the high bits, a counter below.
pub type Value = u64;
/// The history a run records.
pub type KvHistory = History<KvInput<Key, Value>, KvOutput<Value>>;

pub(crate) type SharedRecorder = Arc<Mutex<Recorder<KvInput<Key, Value>, KvOutput<Value>>>>;

/// How long a client waits for an answer.
const REQUEST_TIMEOUT: Duration = Duration::from_millis(1500);

/// What one client does.
#[derive(Clone)]
pub(crate) struct ClientPlan {
    pub client: u64,
    pub members: usize,
    pub keys: u8,
    pub until: Instant,
    pub epoch: Instant,
    pub recorder: SharedRecorder,
}

/// A client's endpoint for one request at a time, each under a tag of its own.
pub(crate) struct Caller {
    ep: Endpoint,
    next_id: u64,
}

impl Caller {
    /// Binds the client's endpoint (None if it cannot).
    pub(crate) async fn bind() -> Option<Caller> {
        let ep = Endpoint::bind(SocketAddr::from(([0, 0, 0, 0], 0)))
            .await
            .ok()?;
        // Tags 0 and 1 are the members' own.
        Some(Caller { ep, next_id: 1 })
    }

    /// Sends `op` to `member` and waits for the answer (None: no answer in time).
    pub(crate) async fn call(&mut self, member: usize, op: ClientOp) -> Option<ClientReply> {
        self.call_as(member, op, None).await
    }

    /// Sends `op` to `member` without waiting: the ID its answers (a stream's too) carry.
    pub(crate) async fn send(
        &mut self,
        member: usize,
        op: ClientOp,
        require_leader: bool,
    ) -> Option<u64> {
        let req = |id| Request {
            id,
            op,
            require_leader,
            token: None,
        };
        self.send_request(member, req).await
    }

    async fn send_request(
        &mut self,
        member: usize,
        req: impl FnOnce(u64) -> Request,
    ) -> Option<u64> {
        self.next_id += 1;
        let id = self.next_id;
        let to = member_addr(member);
        self.ep
            .send_to_raw(to, CLIENT_TAG, Box::new(req(id)))
            .await
            .ok()?;
        Some(id)
    }

    /// The next answer under `id`, waiting at most `limit`.
    pub(crate) async fn recv(&mut self, id: u64, limit: Duration) -> Option<ClientReply> {
        match madsim::time::timeout(limit, self.ep.recv_from_raw(id)).await {
            Ok(Ok((payload, _))) => payload.downcast::<ClientReply>().ok().map(|r| *r),
            _ => None,
        }
    }

    /// [`Caller::call`] with a simple auth token.
    pub(crate) async fn call_as(
        &mut self,
        member: usize,
        op: ClientOp,
        token: Option<String>,
    ) -> Option<ClientReply> {
        let req = |id| Request {
            id,
            op,
            require_leader: false,
            token,
        };
        let id = self.send_request(member, req).await?;
        self.recv(id, REQUEST_TIMEOUT).await
    }
}

/// The address client `c` runs at.
pub(crate) fn client_ip(c: u64) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 1, c as u8 + 1))
}

fn key_bytes(k: Key) -> Bytes {
    Bytes::from(format!("k{k}"))
}

fn value_bytes(v: Value) -> Bytes {
    Bytes::from(v.to_string())
}

/// One client's request loop until `until`.
pub(crate) async fn client_loop(plan: ClientPlan) {
    let Ok(ep) = Endpoint::bind(SocketAddr::from(([0, 0, 0, 0], 0))).await else {
        return;
    };
    let mut counter = 0u64;
    while Instant::now() < plan.until {
        counter += 1;
        let value = plan.client << 32 | counter;
        let (input, member) = {
            let mut rng = thread_rng();
            let key = rng.gen_range(0..plan.keys);
            let input = match rng.gen_range(0..10) {
                0..=3 => KvInput::Get { key },
                4..=6 => KvInput::Put { key, value },
                7 => KvInput::Delete { key },
                _ => KvInput::Txn {
                    key,
                    // Compare against a value another client may well have written.
                    compare: Compare::Value(
                        (rng.gen_range(1..=4u64) << 32) | rng.gen_range(1..=counter.max(1)),
                    ),
                    on_success: WriteOp::Put(value),
                },
            };
            (input, rng.gen_range(0..plan.members))
        };
        call(&ep, &plan, member, input, counter).await;
        let think = thread_rng().gen_range(0..20);
        madsim::time::sleep(Duration::from_millis(think)).await;
    }
}

fn now_ns(epoch: Instant) -> u64 {
    Instant::now().duration_since(epoch).as_nanos() as u64
}

/// Sends one request to member `member`, waits, and records the outcome. Returns
/// whether it got an answer.
pub(crate) async fn call(
    ep: &Endpoint,
    plan: &ClientPlan,
    member: usize,
    input: KvInput<Key, Value>,
    seq: u64,
) -> bool {
    let op = match &input {
        KvInput::Get { key } => ClientOp::Get {
            key: key_bytes(*key),
        },
        KvInput::Put { key, value } => ClientOp::Put {
            key: key_bytes(*key),
            value: value_bytes(*value),
            lease: 0,
        },
        KvInput::Delete { key } => ClientOp::Delete {
            key: key_bytes(*key),
        },
        KvInput::Txn {
            key,
            compare: Compare::Value(expect),
            on_success: WriteOp::Put(value),
        } => ClientOp::Cas {
            key: key_bytes(*key),
            expect: value_bytes(*expect),
            value: value_bytes(*value),
        },
        KvInput::Txn { .. } => return false,
    };
    let is_read = matches!(input, KvInput::Get { .. });
    // Tags 0 and 1 are the members' own.
    let id = 2 + seq;
    let call = lock(&plan.recorder).invoke(plan.client, input, now_ns(plan.epoch));
    // Every fourth request asks for clientv3's require-leader: it fails at once where
    // the others wait for a leader.
    let req = Request {
        id,
        op,
        require_leader: seq.is_multiple_of(4),
        token: None,
    };
    let sent = ep
        .send_to_raw(member_addr(member), CLIENT_TAG, Box::new(req))
        .await;
    let answer = match sent {
        Ok(()) => madsim::time::timeout(REQUEST_TIMEOUT, ep.recv_from_raw(id)).await,
        Err(e) => Ok(Err(e)),
    };
    let reply = match answer {
        Ok(Ok((payload, _))) => payload.downcast::<ClientReply>().ok().map(|r| *r),
        _ => None,
    };
    let at = now_ns(plan.epoch);
    let mut rec = lock(&plan.recorder);
    let output = match reply {
        Some(ClientReply::Get { kv, revision }) => KvOutput::Get {
            kv: kv.map(|f| KeyValue {
                value: std::str::from_utf8(&f.value)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(u64::MAX),
                mod_revision: f.mod_revision,
                version: f.version,
            }),
            revision,
        },
        Some(ClientReply::Put { revision }) => KvOutput::Put { revision },
        Some(ClientReply::Delete { deleted, revision }) => KvOutput::Delete { deleted, revision },
        Some(ClientReply::Cas {
            succeeded,
            revision,
        }) => KvOutput::Txn {
            succeeded,
            revision,
        },
        Some(ClientReply::Refused(_)) => {
            let _ = rec.fail(call);
            return false;
        }
        Some(
            ClientReply::LeaseGrant { .. }
            | ClientReply::LeaseKeepAlive { .. }
            | ClientReply::Compact { .. }
            | ClientReply::WatchCreated { .. }
            | ClientReply::Watch { .. }
            | ClientReply::StreamEnded { .. }
            | ClientReply::Token(_)
            | ClientReply::AuthChanged,
        ) => {
            // Not an answer to a key-value request: its effect is unknown.
            let _ = rec.info(call);
            return false;
        }
        None if is_read => {
            let _ = rec.fail(call);
            return false;
        }
        None => {
            let _ = rec.info(call);
            return false;
        }
    };
    let _ = rec.ok(call, output, at);
    true
}
