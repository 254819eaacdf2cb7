//! Watchers over the real Watch API, and the applied history every member reports.
//!
//! A watcher opens a watch on a range (the KV keys, or every key, lease keys included)
//! from a random revision (the next write, revision 1, one it has seen, the newest)
//! on a random member, with or without prev_kv, and resumes it on another member from
//! the revision after the last event it received when the stream fails, goes silent,
//! or now and then for no reason. Sessions are recorded as the simulator's
//! [`WatchChain`]s, so its `check_watches` holds them to the applied history: in order,
//! no gap, no duplicate, right prev_kv, resumed exactly where the last session ended.
//!
//! The applied history is read back at the end from every member with a watch from
//! revision 1 (no run compacts); the members must agree on it event for event.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use keel_core::mvcc::{Event, EventKind, KeyValue, Revision};
use keel_runtime_sim::observer::Write;
use keel_runtime_tokio::pb::etcdserverpb::watch_request::RequestUnion;
use keel_runtime_tokio::pb::etcdserverpb::{WatchCreateRequest, WatchRequest, WatchResponse};
use keel_runtime_tokio::pb::mvccpb;
use keel_sim_tests::chaos::{WatchChain, WatchSession};
use rand_chacha::rand_core::RngCore;
use rand_chacha::ChaCha8Rng;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::client::{Clients, REQUEST_TIMEOUT};

/// A stream with nothing for this long is given up and resumed elsewhere.
const SILENCE: Duration = Duration::from_millis(1500);

fn kv_from(p: &mvccpb::KeyValue) -> KeyValue {
    KeyValue {
        key: p.key.clone(),
        create_revision: p.create_revision,
        mod_revision: p.mod_revision,
        version: p.version,
        value: p.value.clone(),
        lease: p.lease,
    }
}

/// Converts a wire event; `sub` is its position among the events of its revision.
fn event_from(p: &mvccpb::Event, sub: i64) -> Event {
    let kv = p.kv.as_ref().map(kv_from).unwrap_or_default();
    Event {
        kind: if p.r#type == mvccpb::event::EventType::Delete as i32 {
            EventKind::Delete
        } else {
            EventKind::Put
        },
        rev: Revision {
            main: kv.mod_revision,
            sub,
        },
        kv,
        prev_kv: p.prev_kv.as_ref().map(kv_from),
    }
}

/// Appends a response's events to `events`, numbering events within each revision.
fn append_events(events: &mut Vec<Event>, resp: &WatchResponse) {
    for e in &resp.events {
        let main = e.kv.as_ref().map_or(0, |kv| kv.mod_revision);
        let sub = match events.last() {
            Some(l) if l.rev.main == main => l.rev.sub + 1,
            _ => 0,
        };
        events.push(event_from(e, sub));
    }
}

/// A watch stream opened on a member: its responses, and the sender that keeps it open.
struct Stream {
    responses: tonic::Streaming<WatchResponse>,
    _requests: mpsc::UnboundedSender<WatchRequest>,
}

async fn open(
    clients: &Clients,
    member: usize,
    key: Bytes,
    range_end: Bytes,
    start_revision: i64,
    prev_kv: bool,
) -> Option<(Stream, WatchResponse)> {
    let (tx, rx) = mpsc::unbounded_channel();
    tx.send(WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key,
            range_end,
            start_revision,
            prev_kv,
            ..Default::default()
        })),
    })
    .ok()?;
    let mut w = clients.watch(member);
    let mut responses =
        tokio::time::timeout(REQUEST_TIMEOUT, w.watch(UnboundedReceiverStream::new(rx)))
            .await
            .ok()?
            .ok()?
            .into_inner();
    let created = tokio::time::timeout(REQUEST_TIMEOUT, responses.message())
        .await
        .ok()?
        .ok()??;
    if !created.created || created.canceled {
        return None;
    }
    Some((
        Stream {
            responses,
            _requests: tx,
        },
        created,
    ))
}

/// One watcher client.
pub struct Watcher {
    /// Its number.
    pub watcher: u64,
    /// Its choices.
    pub rng: ChaCha8Rng,
    /// Connections.
    pub clients: Clients,
    /// The highest revision any client has seen.
    pub seen_revision: Arc<AtomicU64>,
    /// Where its chains go.
    pub log: Arc<Mutex<Vec<WatchChain>>>,
}

impl Watcher {
    /// Watches until `until`.
    pub async fn run(mut self, until: Instant) {
        while Instant::now() < until {
            let (key, range_end) = if self.rng.next_u64().is_multiple_of(2) {
                (Bytes::from_static(b"k"), Bytes::from_static(b"l"))
            } else {
                (Bytes::from_static(b"\0"), Bytes::from_static(b"\0"))
            };
            let prev_kv = self.rng.next_u64().is_multiple_of(2);
            let seen = self.seen_revision.load(Ordering::Relaxed) as i64;
            let requested = match self.rng.next_u64() % 4 {
                0 => 0,
                1 => 1,
                2 => 1 + (self.rng.next_u64() % seen.max(1) as u64) as i64,
                _ => seen + 1,
            };
            let chain_end =
                Instant::now() + Duration::from_millis(1000 + self.rng.next_u64() % 3000);
            let mut chain = WatchChain {
                watcher: self.watcher,
                key: key.clone(),
                range_end: range_end.clone(),
                prev_kv,
                sessions: Vec::new(),
            };
            let mut next_start = requested;
            while Instant::now() < chain_end.min(until) {
                let member = (self.rng.next_u64() % self.clients.len() as u64) as usize;
                let session_for = Duration::from_millis(300 + self.rng.next_u64() % 1500);
                let Some(s) = self
                    .session(member, &key, &range_end, next_start, prev_kv, session_for)
                    .await
                else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                next_start = s.covered_to as i64 + 1;
                chain.sessions.push(s);
            }
            if !chain.sessions.is_empty() {
                self.log
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(chain);
            }
        }
    }

    async fn session(
        &self,
        member: usize,
        key: &Bytes,
        range_end: &Bytes,
        requested: i64,
        prev_kv: bool,
        session_for: Duration,
    ) -> Option<WatchSession> {
        let (mut stream, created) = open(
            &self.clients,
            member,
            key.clone(),
            range_end.clone(),
            requested,
            prev_kv,
        )
        .await?;
        // A watch from 0 starts after the revision the member had when it created it.
        let start = if requested == 0 {
            crate::workload::header_revision(&created.header) + 1
        } else {
            requested as u64
        };
        let mut s = WatchSession {
            member,
            requested,
            start,
            events: Vec::new(),
            covered_to: start - 1,
            canceled: None,
            require_leader: false,
            sent_ns: Vec::new(),
            ended: None,
            progress: Vec::new(),
        };
        let end = Instant::now() + session_for;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match tokio::time::timeout(left.min(SILENCE), stream.responses.message()).await {
                Ok(Ok(Some(r))) => {
                    if r.canceled {
                        s.canceled = Some(r.compact_revision);
                        s.ended = Some(r.cancel_reason.clone());
                        break;
                    }
                    append_events(&mut s.events, &r);
                    if let Some(last) = s.events.last() {
                        s.covered_to = last.rev.main as u64;
                    }
                }
                Ok(Ok(None)) => {
                    s.ended = Some("stream ended".into());
                    break;
                }
                Ok(Err(st)) => {
                    s.ended = Some(st.message().to_string());
                    break;
                }
                Err(_) => break, // silent (or the session's time is up): resume elsewhere
            }
        }
        Some(s)
    }
}

/// Every change up to `revision` as `member` reports it, by revision: a watch from
/// revision 1 of every key, with prev_kv. None if the member cannot deliver it in time.
pub async fn applied_history(
    clients: &Clients,
    member: usize,
    revision: u64,
) -> Option<BTreeMap<u64, Write>> {
    let (mut stream, _) = open(
        clients,
        member,
        Bytes::from_static(b"\0"),
        Bytes::from_static(b"\0"),
        1,
        true,
    )
    .await?;
    let mut events = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while events.last().map_or(0, |e: &Event| e.rev.main as u64) < revision {
        let left = deadline.saturating_duration_since(Instant::now());
        let r = tokio::time::timeout(left, stream.responses.message())
            .await
            .ok()?
            .ok()??;
        if r.canceled {
            return None;
        }
        append_events(&mut events, &r);
    }
    let mut writes: BTreeMap<u64, Write> = BTreeMap::new();
    // Leases may still expire after the members converged: compare up to `revision`.
    for e in events.into_iter().filter(|e| e.rev.main as u64 <= revision) {
        writes
            .entry(e.rev.main as u64)
            .or_insert_with(|| Write {
                events: Vec::new(),
                revoked_lease: None,
                at_ns: 0,
                member: member as u64,
            })
            .events
            .push(e);
    }
    Some(writes)
}
