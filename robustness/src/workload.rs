//! KV clients: each sends one request at a time to a random member — linearizable and
//! serializable gets, puts, deletes, and transactions that compare a key's
//! `mod_revision` or value and put — on a few keys, and records every call and its
//! outcome for the checkers.
//!
//! Outcomes: a response is `ok`; a read that fails or times out had no effect, so it
//! leaves the history (`fail`); a write that fails or times out after it was sent may
//! still be applied, so its outcome is unknown (`info`). Serializable gets may be
//! served from a lagging member, which linearizability forbids; they are kept apart and
//! checked against the applied history instead ([`SerialRead`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use keel_runtime_tokio::pb::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use keel_runtime_tokio::pb::etcdserverpb::request_op::Request as OpRequest;
use keel_runtime_tokio::pb::etcdserverpb::{
    Compare as PbCompare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use keel_sim_tests::chaos::{Key, KvHistory, Value};
use keel_sim_tests::linearizability::models::etcd_kv::{
    Compare, KeyValue, KvInput, KvOutput, WriteOp,
};
use keel_sim_tests::linearizability::Recorder;
use rand_chacha::rand_core::RngCore;
use rand_chacha::ChaCha8Rng;
use tokio::time::Instant;

use crate::client::{Clients, REQUEST_TIMEOUT};
use crate::clock::Clock;

/// The recorder the KV clients share.
pub type SharedRecorder = Arc<Mutex<Recorder<KvInput<Key, Value>, KvOutput<Value>>>>;

/// A serializable get's answer, checked against the applied history.
#[derive(Clone, Debug)]
pub struct SerialRead {
    /// The member that answered.
    pub member: usize,
    /// The key.
    pub key: Key,
    /// (value, mod_revision), if the key was present.
    pub kv: Option<(Value, u64)>,
    /// The response header's revision.
    pub revision: u64,
}

/// What the KV clients collected.
#[derive(Default)]
pub struct KvLog {
    /// Serializable reads.
    pub serial: Vec<SerialRead>,
    /// Answers that could not be parsed (a value that is not one this runner wrote).
    pub garbage: Vec<String>,
}

/// The wire name of a key.
pub fn key_bytes(k: Key) -> Bytes {
    Bytes::from(format!("k{k}"))
}

fn value_bytes(v: Value) -> Bytes {
    Bytes::from(v.to_string())
}

/// One KV client.
pub struct KvClient {
    /// The client number (its values are unique: the number in the high bits).
    pub client: u64,
    /// Its operation mix and targets.
    pub rng: ChaCha8Rng,
    /// Number of keys.
    pub keys: u8,
    /// Connections.
    pub clients: Clients,
    /// The shared history.
    pub recorder: SharedRecorder,
    /// Serializable reads and garbage.
    pub log: Arc<Mutex<KvLog>>,
    /// Time base.
    pub clock: Clock,
    /// The highest revision any response showed (watchers start from below it).
    pub seen_revision: Arc<AtomicU64>,
    /// Every (completion time, header revision) of a successful response.
    pub observations: Arc<Mutex<Vec<(u64, u64)>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

enum Answer {
    Ok(KvOutput<Value>),
    /// The connection could not be opened: the request never left the client.
    NotSent,
    /// Failed or timed out after it may have been sent.
    Failed,
}

/// Whether `status` says the connection was never made (so the request was never sent):
/// a refused or failed TCP connect, which tonic reports as Unavailable with the
/// connector's error underneath.
fn never_sent(status: &tonic::Status) -> bool {
    if status.code() != tonic::Code::Unavailable {
        return false;
    }
    let mut text = status.message().to_string();
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        text.push_str(&format!(": {e}"));
        source = e.source();
    }
    text.contains("tcp connect error") || text.contains("Connection refused")
}

impl KvClient {
    /// Sends requests until `until`.
    pub async fn run(mut self, until: Instant) {
        let mut counter = 0u64;
        // What this client last saw of each key, for its compares.
        let mut last: Vec<Option<(Value, u64)>> = vec![None; self.keys as usize];
        while Instant::now() < until {
            let member = (self.rng.next_u64() % self.clients.len() as u64) as usize;
            let key = (self.rng.next_u64() % u64::from(self.keys)) as Key;
            counter += 1;
            let value = (self.client << 32) | counter;
            let dice = self.rng.next_u64() % 100;
            if (25..35).contains(&dice) {
                self.serializable_get(member, key).await;
                continue;
            }
            let input = match dice {
                0..25 => KvInput::Get { key },
                35..65 => KvInput::Put { key, value },
                65..75 => KvInput::Delete { key },
                _ => {
                    let seen = last[key as usize];
                    let compare = match (self.rng.next_u64() % 2, seen) {
                        (0, Some((v, _))) => Compare::Value(v),
                        (_, Some((_, rev))) => Compare::ModRevision(rev),
                        (_, None) => Compare::ModRevision(0),
                    };
                    KvInput::Txn {
                        key,
                        compare,
                        on_success: WriteOp::Put(value),
                    }
                }
            };
            let is_read = matches!(input, KvInput::Get { .. });
            let call = lock(&self.recorder).invoke(self.client, input.clone(), self.clock.now());
            let answer = self.send(member, &input).await;
            let at = self.clock.now();
            let mut r = lock(&self.recorder);
            match answer {
                Answer::Ok(out) => {
                    let revision = match &out {
                        KvOutput::Get { kv, revision } => {
                            last[key as usize] = kv.as_ref().map(|kv| (kv.value, kv.mod_revision));
                            *revision
                        }
                        KvOutput::Put { revision }
                        | KvOutput::Delete { revision, .. }
                        | KvOutput::Txn { revision, .. } => *revision,
                    };
                    self.observe(at, revision);
                    let _ = r.ok(call, out, at);
                }
                Answer::NotSent => {
                    let _ = r.fail(call);
                }
                Answer::Failed if is_read => {
                    let _ = r.fail(call);
                }
                Answer::Failed => {
                    let _ = r.info(call);
                }
            }
        }
    }

    /// One linearizable get of `key` on `member`, recorded (the final reads).
    pub async fn read_once(&self, member: usize, key: Key) {
        let input = KvInput::Get { key };
        let call = lock(&self.recorder).invoke(self.client, input.clone(), self.clock.now());
        let answer = self.send(member, &input).await;
        let at = self.clock.now();
        let mut r = lock(&self.recorder);
        match answer {
            Answer::Ok(out) => {
                let _ = r.ok(call, out, at);
            }
            Answer::Failed | Answer::NotSent => {
                let _ = r.fail(call);
            }
        }
    }

    fn observe(&self, at: u64, revision: u64) {
        self.seen_revision.fetch_max(revision, Ordering::Relaxed);
        lock(&self.observations).push((at, revision));
    }

    fn parse_value(&self, raw: &[u8]) -> Option<Value> {
        let v = std::str::from_utf8(raw).ok().and_then(|s| s.parse().ok());
        if v.is_none() {
            lock(&self.log)
                .garbage
                .push(format!("value {:?}", String::from_utf8_lossy(raw)));
        }
        v
    }

    async fn send(&self, member: usize, input: &KvInput<Key, Value>) -> Answer {
        let mut kv = self.clients.kv(member);
        let fut = async {
            match input {
                KvInput::Get { key } => {
                    let r = kv
                        .range(RangeRequest {
                            key: key_bytes(*key),
                            ..Default::default()
                        })
                        .await?
                        .into_inner();
                    let revision = header_revision(&r.header);
                    let kv = match r.kvs.first() {
                        None => None,
                        Some(k) => match self.parse_value(&k.value) {
                            Some(value) => Some(KeyValue {
                                value,
                                mod_revision: k.mod_revision as u64,
                                version: k.version as u64,
                            }),
                            None => return Ok(Answer::Failed),
                        },
                    };
                    Ok(Answer::Ok(KvOutput::Get { kv, revision }))
                }
                KvInput::Put { key, value } => {
                    let r = kv
                        .put(PutRequest {
                            key: key_bytes(*key),
                            value: value_bytes(*value),
                            ..Default::default()
                        })
                        .await?
                        .into_inner();
                    Ok(Answer::Ok(KvOutput::Put {
                        revision: header_revision(&r.header),
                    }))
                }
                KvInput::Delete { key } => {
                    let r = kv
                        .delete_range(DeleteRangeRequest {
                            key: key_bytes(*key),
                            ..Default::default()
                        })
                        .await?
                        .into_inner();
                    Ok(Answer::Ok(KvOutput::Delete {
                        deleted: r.deleted > 0,
                        revision: header_revision(&r.header),
                    }))
                }
                KvInput::Txn {
                    key,
                    compare,
                    on_success,
                } => {
                    let (target, union) = match compare {
                        Compare::Value(v) => {
                            (CompareTarget::Value, TargetUnion::Value(value_bytes(*v)))
                        }
                        Compare::ModRevision(r) => {
                            (CompareTarget::Mod, TargetUnion::ModRevision(*r as i64))
                        }
                        Compare::Version(v) => {
                            (CompareTarget::Version, TargetUnion::Version(*v as i64))
                        }
                    };
                    let op = match on_success {
                        WriteOp::Put(v) => OpRequest::RequestPut(PutRequest {
                            key: key_bytes(*key),
                            value: value_bytes(*v),
                            ..Default::default()
                        }),
                        WriteOp::Delete => OpRequest::RequestDeleteRange(DeleteRangeRequest {
                            key: key_bytes(*key),
                            ..Default::default()
                        }),
                    };
                    let r = kv
                        .txn(TxnRequest {
                            compare: vec![PbCompare {
                                result: CompareResult::Equal as i32,
                                target: target as i32,
                                key: key_bytes(*key),
                                target_union: Some(union),
                                ..Default::default()
                            }],
                            success: vec![RequestOp { request: Some(op) }],
                            failure: vec![],
                        })
                        .await?
                        .into_inner();
                    Ok::<_, tonic::Status>(Answer::Ok(KvOutput::Txn {
                        succeeded: r.succeeded,
                        revision: header_revision(&r.header),
                    }))
                }
            }
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, fut).await {
            Ok(Ok(a)) => a,
            Ok(Err(e)) if never_sent(&e) => Answer::NotSent,
            _ => Answer::Failed,
        }
    }

    async fn serializable_get(&self, member: usize, key: Key) {
        let mut kv = self.clients.kv(member);
        let req = RangeRequest {
            key: key_bytes(key),
            serializable: true,
            ..Default::default()
        };
        let Ok(Ok(r)) = tokio::time::timeout(REQUEST_TIMEOUT, kv.range(req)).await else {
            return;
        };
        let at = self.clock.now();
        let r = r.into_inner();
        let revision = header_revision(&r.header);
        let kv = match r.kvs.first() {
            None => None,
            Some(k) => match self.parse_value(&k.value) {
                Some(v) => Some((v, k.mod_revision as u64)),
                None => return,
            },
        };
        // A member applied `revision` before it answered: a bound for the lease check.
        self.observe(at, revision);
        lock(&self.log).serial.push(SerialRead {
            member,
            key,
            kv,
            revision,
        });
    }
}

/// A response header's revision (0 if it has none, which no member sends).
pub fn header_revision(h: &Option<keel_runtime_tokio::pb::etcdserverpb::ResponseHeader>) -> u64 {
    h.as_ref().map_or(0, |h| h.revision.max(0) as u64)
}

/// The KV history, as the checkers take it.
pub fn finish(recorder: SharedRecorder) -> KvHistory {
    let r = std::mem::replace(&mut *lock(&recorder), Recorder::new());
    r.finish()
}
