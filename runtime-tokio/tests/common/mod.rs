//! In-process clusters on loopback for the runtime's integration tests.
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use keel_core::node::MemberInfo;
use keel_runtime_tokio::member::{MemberConfig, MemberHandle};
use keel_runtime_tokio::pb::etcdserverpb::kv_client::KvClient;
use keel_runtime_tokio::pb::etcdserverpb::maintenance_client::MaintenanceClient;
use keel_runtime_tokio::pb::etcdserverpb::StatusRequest;
use keel_runtime_tokio::pb::etcdserverpb::{PutRequest, RangeRequest};
use keel_runtime_tokio::serve;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

/// A member running in this process.
pub struct Running {
    pub id: u64,
    pub client_url: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), String>>>,
}

impl Running {
    /// Stops the member (as SIGTERM would) and waits for it.
    pub async fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
    }

    /// Kills the member abruptly (its task is aborted mid-flight).
    pub fn kill(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
        self.stop = None;
    }

    /// Waits up to `secs` for the member to end by itself; its result.
    pub async fn ended(&mut self, secs: u64) -> Option<Result<(), String>> {
        let t = self.task.as_mut()?;
        match tokio::time::timeout(Duration::from_secs(secs), t).await {
            Ok(r) => {
                self.task = None;
                Some(r.unwrap_or_else(|e| Err(e.to_string())))
            }
            Err(_) => None,
        }
    }

    pub async fn kv(&self) -> KvClient<Channel> {
        KvClient::new(channel(&self.client_url).await)
    }
}

pub async fn channel(url: &str) -> Channel {
    Channel::from_shared(url.to_string())
        .expect("url")
        .connect_timeout(Duration::from_secs(2))
        .connect_lazy()
}

/// Listeners and URLs for `n` members on loopback.
pub struct Plan {
    pub members: Vec<MemberInfo>,
    client: Vec<Option<TcpListener>>,
    peer: Vec<Option<TcpListener>>,
}

pub async fn plan(n: usize) -> Plan {
    let mut members = Vec::new();
    let mut client = Vec::new();
    let mut peer = Vec::new();
    for i in 0..n {
        let c = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let p = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        members.push(MemberInfo {
            id: 0x100 + i as u64,
            name: format!("m{i}"),
            peer_urls: vec![format!("http://{}", p.local_addr().expect("addr"))],
            client_urls: vec![format!("http://{}", c.local_addr().expect("addr"))],
            learner: false,
        });
        client.push(Some(c));
        peer.push(Some(p));
    }
    Plan {
        members,
        client,
        peer,
    }
}

pub fn config(plan: &Plan, i: usize, dir: &Path) -> MemberConfig {
    let m = &plan.members[i];
    MemberConfig {
        id: m.id,
        cluster_id: 0xc1,
        name: m.name.clone(),
        data_dir: dir.join(&m.name),
        wal_dir: None,
        initial_members: plan
            .members
            .iter()
            .map(|m| MemberInfo {
                client_urls: vec![],
                ..m.clone()
            })
            .collect(),
        new_cluster: true,
        force_new_cluster: false,
        enable_v2: false,
        strict_reconfig: true,
        heartbeat_ms: 50,
        election_ms: 500,
        snapshot_count: 100_000,
        max_snapshots: 5,
        max_wals: 5,
        quota_bytes: 2 << 30,
        max_txn_ops: 128,
        max_request_bytes: 1536 * 1024,
        client_urls: m.client_urls.clone(),
        pre_vote: true,
        auto_compaction: Default::default(),
        log_tail: 5000,
        watch_progress_interval: Duration::from_millis(300),
        lease_checkpoint_interval: None,
        auth_token: "simple".into(),
        auth_token_ttl: Duration::from_secs(300),
        bcrypt_cost: 4,
        initial_corrupt_check: false,
        corrupt_check_time: Duration::ZERO,
    }
}

impl Plan {
    /// Starts member `i` on its planned listeners (rebinding its ports after a stop).
    pub async fn start(&mut self, i: usize, dir: &Path) -> Running {
        self.start_with(i, dir, |_| {}).await
    }

    /// Starts member `i` with its configuration edited by `edit`.
    pub async fn start_with(
        &mut self,
        i: usize,
        dir: &Path,
        edit: impl FnOnce(&mut MemberConfig),
    ) -> Running {
        self.start_with_ready(i, dir, edit, |_| {}).await
    }

    /// Starts member `i` with its configuration edited by `edit`; `on_ready` gets the
    /// member's handle once it serves (for tests that look inside the member).
    pub async fn start_with_ready(
        &mut self,
        i: usize,
        dir: &Path,
        edit: impl FnOnce(&mut MemberConfig),
        on_ready: impl FnOnce(&MemberHandle) + Send + 'static,
    ) -> Running {
        let mut cfg = config(self, i, dir);
        edit(&mut cfg);
        let (client, peer) = self.take_listeners(i).await;
        let m = &self.members[i];
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(serve::run(
            cfg,
            vec![client],
            vec![peer],
            async move {
                let _ = rx.await;
            },
            on_ready,
        ));
        Running {
            id: m.id,
            client_url: m.client_urls[0].clone(),
            stop: Some(tx),
            task: Some(task),
        }
    }
}

impl Plan {
    /// Starts member `i` like [`Plan::start`] and returns it with its handle, once it
    /// serves (for tests that look inside the member).
    pub async fn start_with_handle(
        &mut self,
        i: usize,
        dir: &Path,
        edit: impl FnOnce(&mut MemberConfig),
    ) -> (Running, MemberHandle) {
        let (tx, rx) = oneshot::channel::<MemberHandle>();
        let m = self
            .start_with_ready(i, dir, edit, move |h| {
                let _ = tx.send(h.clone());
            })
            .await;
        let handle = tokio::time::timeout(Duration::from_secs(15), rx)
            .await
            .expect("member serves")
            .expect("handle");
        (m, handle)
    }

    /// Starts every planned member, each with its configuration edited by `edit`;
    /// returns them and their client URLs.
    pub async fn start_all(
        &mut self,
        dir: &Path,
        edit: impl Fn(&mut MemberConfig),
    ) -> (Vec<Running>, Vec<String>) {
        let mut ms = Vec::new();
        for i in 0..self.members.len() {
            ms.push(self.start_with(i, dir, &edit).await);
        }
        let urls = ms.iter().map(|m| m.client_url.clone()).collect();
        (ms, urls)
    }

    /// Member `i`'s planned listeners (rebound after a stop), for tests that start
    /// members themselves.
    pub async fn take_listeners(&mut self, i: usize) -> (TcpListener, TcpListener) {
        let m = &self.members[i];
        let client = match self.client[i].take() {
            Some(l) => l,
            None => rebind(&m.client_urls[0]).await,
        };
        let peer = match self.peer[i].take() {
            Some(l) => l,
            None => rebind(&m.peer_urls[0]).await,
        };
        (client, peer)
    }
}

async fn rebind(url: &str) -> TcpListener {
    let addr = url.split_once("://").map_or(url, |(_, a)| a);
    for _ in 0..100 {
        if let Ok(l) = TcpListener::bind(addr).await {
            return l;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("could not rebind {addr}");
}

/// Waits until every listed member reports the same leader; returns its ID.
/// Waiting for all of them, not the first, keeps a request sent next to any
/// one of them from meeting "no leader" while it still waits for a heartbeat.
pub async fn wait_leader(urls: &[String]) -> u64 {
    let mut channels = Vec::with_capacity(urls.len());
    for u in urls {
        channels.push(channel(u).await);
    }
    wait_leader_on(&channels).await
}

/// [`wait_leader`] over channels already made (for TLS or a custom connector).
pub async fn wait_leader_on(channels: &[Channel]) -> u64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        // The leader every member asked so far names; None once one names none or
        // another.
        let mut agreed = None;
        for c in channels {
            let leader = match MaintenanceClient::new(c.clone())
                .status(StatusRequest {})
                .await
            {
                Ok(r) => r.into_inner().leader,
                Err(_) => 0,
            };
            if leader == 0 || agreed.is_some_and(|l| l != leader) {
                agreed = None;
                break;
            }
            agreed = Some(leader);
        }
        if let Some(leader) = agreed {
            return leader;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no leader agreed on within 15 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A put of `k` = `v`.
pub fn put(k: &str, v: &str) -> PutRequest {
    PutRequest {
        key: Bytes::copy_from_slice(k.as_bytes()),
        value: Bytes::copy_from_slice(v.as_bytes()),
        ..Default::default()
    }
}

/// A linearizable get of `k`.
pub fn get(k: &str) -> RangeRequest {
    RangeRequest {
        key: Bytes::copy_from_slice(k.as_bytes()),
        ..Default::default()
    }
}

/// Retries `f` while it fails with a transient error (an election, a configuration
/// change in progress), up to 20 s.
pub async fn retry<T, F, Fut>(mut f: F) -> Result<T, tonic::Status>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match f().await {
            Err(e)
                if e.code() == tonic::Code::Unavailable
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            r => return r,
        }
    }
}

/// An HTTP/1.1 request on a fresh connection, as curl sends one: its status, headers,
/// body stream, and the connection task (aborting it closes the connection).
pub async fn http1(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, hyper::HeaderMap, hyper::body::Incoming, JoinHandle<()>) {
    let addr = base.trim_start_matches("http://");
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut tx, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    let conn = tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(http_body_util::Full::new(Bytes::from(body.to_string())))
        .expect("request");
    let resp = tokio::time::timeout(Duration::from_secs(10), tx.send_request(req))
        .await
        .expect("answer in time")
        .expect("answer");
    let (parts, body) = resp.into_parts();
    (parts.status.as_u16(), parts.headers, body, conn)
}
