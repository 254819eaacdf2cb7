//! `etcdserverpb.Watch`: one task per stream maps the client's watch IDs to the member's
//! watchers and forwards their events. While the client does not read, its watchers'
//! events stay in the member's hub and fall back to history (see `member::WatchSink`),
//! so a slow client never holds writes back.

use std::collections::{HashMap, HashSet};

use keel_core::auth::AuthInfo;
use keel_core::mvcc::{WatchRequest, STREAM_PROGRESS_ID};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::authz::{auth_status, caller};
use super::convert::event_out;
use super::header;
use crate::member::{watch_channel, Header, MemberHandle, Progress, WatchSink};
use crate::pb::etcdserverpb as pb;

/// Responses a stream may have queued towards the client.
const OUT_QUEUE: usize = 128;

/// The Watch service.
pub struct WatchService {
    m: MemberHandle,
}

impl WatchService {
    /// Watch over member `m`.
    pub fn new(m: MemberHandle) -> Self {
        WatchService { m }
    }
}

type Out = mpsc::Sender<Result<pb::WatchResponse, Status>>;

#[tonic::async_trait]
impl pb::watch_server::Watch for WatchService {
    type WatchStream = ReceiverStream<Result<pb::WatchResponse, Status>>;

    async fn watch(
        &self,
        req: Request<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        // A token that does not resolve refuses each watcher, not the stream: etcd's
        // isWatchPermitted answers every create request with a canceled response.
        let who = caller(&self.m, &req).await;
        let inbound = req.into_inner();
        let (out_tx, out_rx) = mpsc::channel(OUT_QUEUE);
        tokio::spawn(run_stream(self.m.clone(), who, inbound, out_tx));
        Ok(Response::new(ReceiverStream::new(out_rx)))
    }
}

struct Stream {
    m: MemberHandle,
    /// Who opened the stream: each watcher's range must be readable by them.
    who: Result<Option<AuthInfo>, Status>,
    out: Out,
    events: WatchSink,
    /// Member watcher ID → the client's watch ID.
    ids: HashMap<i64, i64>,
    /// Member watcher IDs created with `progress_notify`.
    progress: HashSet<i64>,
    next_client_id: i64,
}

async fn run_stream(
    m: MemberHandle,
    who: Result<Option<AuthInfo>, Status>,
    mut inbound: Streaming<pb::WatchRequest>,
    out: Out,
) {
    let (ev_tx, mut ev_rx) = watch_channel();
    let mut s = Stream {
        m,
        who,
        out,
        events: ev_tx,
        ids: HashMap::new(),
        progress: HashSet::new(),
        next_client_id: 0,
    };
    let period =
        s.m.watch_progress_interval
            .max(std::time::Duration::from_millis(10));
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    let out = s.out.clone();
    // A client that half-closes (grpc-gateway's CloseSend after the last JSON request
    // of `curl -d '{"create_request":...}' /v3/watch`) keeps its watchers, as in etcd:
    // only the stream's end or its failure ends them.
    let mut sending = true;
    loop {
        tokio::select! {
            // The response was ended without us (the leader monitor, see
            // `grpc::interceptor`): nobody reads this stream any more.
            _ = out.closed() => break,
            _ = ticker.tick(), if !s.progress.is_empty() => {
                if s.notify_progress().await.is_err() {
                    break;
                }
            }
            msg = inbound.message(), if sending => match msg {
                Ok(Some(req)) => {
                    if s.request(req).await.is_err() {
                        break;
                    }
                }
                Ok(None) => sending = false,
                Err(_) => break,
            },
            ev = ev_rx.recv() => {
                let Some(r) = ev else { break };
                if s.deliver(r).await.is_err() {
                    break;
                }
            }
        }
    }
    // The client is gone: its watchers go too.
    let hub_ids: Vec<i64> = s.ids.keys().copied().collect();
    let _ = s.m.cancel_watches(hub_ids).await;
}

impl Stream {
    fn header(&self, h: Header) -> Option<pb::ResponseHeader> {
        header(&self.m, h)
    }

    async fn send(&self, r: pb::WatchResponse) -> Result<(), ()> {
        self.out.send(Ok(r)).await.map_err(|_| ())
    }

    /// etcd's auth refusal of a watcher: created and canceled at once, the reason
    /// naming the gRPC error as grpc-go prints it.
    async fn refuse(&self, h: Header, s: &Status) -> Result<(), ()> {
        self.send(pb::WatchResponse {
            header: self.header(h),
            watch_id: -1,
            created: true,
            canceled: true,
            cancel_reason: format!(
                "rpc error: code = {} desc = {}",
                crate::metrics::GRPC_CODES
                    .get(s.code() as usize)
                    .copied()
                    .unwrap_or("Unknown"),
                s.message()
            ),
            ..Default::default()
        })
        .await
    }

    async fn request(&mut self, req: pb::WatchRequest) -> Result<(), ()> {
        use pb::watch_request::RequestUnion as U;
        match req.request_union {
            Some(U::CreateRequest(c)) => self.create(c).await,
            Some(U::CancelRequest(c)) => {
                let hub = self
                    .ids
                    .iter()
                    .find(|(_, cid)| **cid == c.watch_id)
                    .map(|(h, _)| *h);
                if let Some(hub) = hub {
                    self.ids.remove(&hub);
                    self.progress.remove(&hub);
                    let h = self.m.cancel_watches(vec![hub]).await.map_err(|_| ())?;
                    self.send(pb::WatchResponse {
                        header: self.header(h),
                        watch_id: c.watch_id,
                        canceled: true,
                        ..Default::default()
                    })
                    .await?;
                }
                Ok(())
            }
            Some(U::ProgressRequest(_)) => {
                // Answered down the same path as the events (see `deliver`), and only
                // once every watcher of the stream has nothing undelivered.
                let ids = self.ids.keys().copied().collect();
                let sink = self.events.clone();
                self.m
                    .watch_progress(Progress::Stream(ids), sink)
                    .await
                    .map_err(|_| ())
            }
            None => Ok(()),
        }
    }

    async fn create(&mut self, c: pb::WatchCreateRequest) -> Result<(), ()> {
        let client_id = if c.watch_id != 0 {
            c.watch_id
        } else {
            while self.ids.values().any(|v| *v == self.next_client_id) {
                self.next_client_id += 1;
            }
            self.next_client_id
        };
        let refusal = if self.ids.values().any(|v| *v == client_id) {
            Some((
                client_id,
                "mvcc: duplicate watch ID provided on the WatchStream",
            ))
        } else if !c.range_end.is_empty() && c.range_end[..] != [0] && c.key >= c.range_end {
            Some((-1, "mvcc: watcher range is empty"))
        } else {
            None
        };
        if let Some((watch_id, reason)) = refusal {
            // etcd 3.4's mvcc refusals: created and canceled at once, with a header.
            let h = self.m.header_now().await.map_err(|_| ())?;
            return self
                .send(pb::WatchResponse {
                    header: self.header(h),
                    watch_id,
                    created: true,
                    canceled: true,
                    cancel_reason: reason.into(),
                    ..Default::default()
                })
                .await;
        }
        // etcd 3.4 watches from the smallest key, "\0", when none is given.
        let key = if c.key.is_empty() {
            bytes::Bytes::from_static(&[0])
        } else {
            c.key
        };
        let req = WatchRequest {
            key,
            range_end: c.range_end,
            start_revision: c.start_revision,
            no_put: c.filters.contains(&0),
            no_delete: c.filters.contains(&1),
            prev_kv: c.prev_kv,
            fragment: c.fragment,
        };
        let progress_notify = c.progress_notify;
        let sink = self.events.clone();
        let who = match &self.who {
            Ok(who) => who.clone(),
            Err(s) => {
                let h = self.m.header_now().await.map_err(|_| ())?;
                return self.refuse(h, s).await;
            }
        };
        // Checked, registered and answered in one step on the member task, then the
        // created response goes out before this task reads any event of the new watcher.
        let (hub_id, h) = self.m.watch_as(req, who, sink).await.map_err(|_| ())?;
        let hub_id = match hub_id {
            Ok(id) => id,
            Err(e) => return self.refuse(h, &auth_status(e)).await,
        };
        self.ids.insert(hub_id, client_id);
        if progress_notify {
            self.progress.insert(hub_id);
        }
        self.send(pb::WatchResponse {
            header: self.header(h),
            watch_id: client_id,
            created: true,
            ..Default::default()
        })
        .await?;
        // Replay of history (or a compaction cancel) is due now, not at the next write.
        self.m.flush_watches().await.map_err(|_| ())
    }

    /// etcd's periodic progress notification: an empty response carrying the current
    /// revision, for each `progress_notify` watcher that has nothing undelivered; it
    /// comes back through `deliver`, behind the events it covers.
    async fn notify_progress(&mut self) -> Result<(), ()> {
        let ids = self.progress.iter().copied().collect();
        let sink = self.events.clone();
        self.m
            .watch_progress(Progress::Each(ids), sink)
            .await
            .map_err(|_| ())
    }

    async fn deliver(&mut self, r: keel_core::mvcc::WatchResponse) -> Result<(), ()> {
        let client_id = if r.watch_id == STREAM_PROGRESS_ID {
            // etcd answers a progress request with watch ID -1 (no particular watcher).
            STREAM_PROGRESS_ID
        } else {
            match self.ids.get(&r.watch_id) {
                Some(&id) => id,
                None => return Ok(()),
            }
        };
        if r.canceled {
            self.ids.remove(&r.watch_id);
            self.progress.remove(&r.watch_id);
        }
        let term = self.m.status.borrow().term;
        // etcd's cancellation for compaction carries no revision in its header (the
        // mvcc response it comes from has none).
        let revision = if r.compact_revision != 0 {
            0
        } else {
            r.header_revision
        };
        let resp = pb::WatchResponse {
            header: self.header(Header {
                revision,
                raft_term: term,
            }),
            watch_id: client_id,
            created: false,
            canceled: r.canceled,
            compact_revision: r.compact_revision,
            cancel_reason: String::new(),
            fragment: r.fragment,
            events: r.events.into_iter().map(event_out).collect(),
        };
        self.send(resp).await
    }
}
