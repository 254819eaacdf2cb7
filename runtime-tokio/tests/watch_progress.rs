//! Watch progress notifications against a real member over gRPC: a notification at
//! revision R (a RequestProgress answered with watch ID -1, or the periodic one of a
//! `progress_notify` watcher) never reaches the client before an event at or below R
//! that the stream has not delivered yet. Kubernetes serves consistent reads from its
//! watch cache on exactly this promise (etcd fixed it in 3.4.31/3.5.13).

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{plan, wait_leader};
use keel_runtime_tokio::pb::etcdserverpb as pb;
use pb::watch_request::RequestUnion as U;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;

/// Keys written before each watch opens from revision 1 (one catch-up from history).
const KEYS: usize = 1000;
/// Watch streams opened, each racing a progress request against its history.
const ROUNDS: usize = 12;

fn progress_request() -> pb::WatchRequest {
    pb::WatchRequest {
        request_union: Some(U::ProgressRequest(pb::WatchProgressRequest {})),
    }
}

async fn put_many(kv: &mut pb::kv_client::KvClient<tonic::transport::Channel>, from: usize) {
    for chunk in (from..from + KEYS).collect::<Vec<_>>().chunks(100) {
        let success = chunk
            .iter()
            .map(|i| pb::RequestOp {
                request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                    key: Bytes::from(format!("p/{i:05}")),
                    value: Bytes::from_static(b"v"),
                    ..Default::default()
                })),
            })
            .collect();
        kv.txn(pb::TxnRequest {
            success,
            ..Default::default()
        })
        .await
        .expect("txn");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_progress_notification_overtakes_an_undelivered_event() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut p = plan(1).await;
    let (_ms, urls) = p.start_all(dir.path(), |_| {}).await;
    wait_leader(&urls).await;
    let ch = common::channel(&urls[0]).await;
    let mut kv = pb::kv_client::KvClient::new(ch.clone());
    let mut w = pb::watch_client::WatchClient::new(ch);
    put_many(&mut kv, 0).await;
    let (mut answered, mut periodic) = (0, 0);
    for round in 0..ROUNDS {
        let (tx, rx) = mpsc::channel(16);
        // The watch from revision 1 and a progress request right behind it: the member
        // is still handing the watcher its history when the request arrives.
        tx.send(pb::WatchRequest {
            request_union: Some(U::CreateRequest(pb::WatchCreateRequest {
                key: Bytes::from_static(b"p/"),
                range_end: Bytes::from_static(b"p0"),
                start_revision: 1,
                progress_notify: round % 2 == 1,
                ..Default::default()
            })),
        })
        .await
        .expect("send");
        tx.send(progress_request()).await.expect("send");
        let mut stream = w
            .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .expect("watch")
            .into_inner();
        // More writes while the stream runs, so live events race the notifications too.
        let mut writer = kv.clone();
        let more = tokio::spawn(async move { put_many(&mut writer, KEYS * (round + 1)).await });
        let total = KEYS * (round + 2);
        let (mut last_event, mut told, mut events) = (0i64, 0i64, 0usize);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        // Until every event arrived and a RequestProgress was answered after them.
        while events < total || told < last_event || told == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "round {round}: stalled at {events} events, told {told}"
            );
            let next = tokio::time::timeout(Duration::from_millis(100), stream.next()).await;
            let Ok(r) = next else {
                // etcd 3.5.13 answers nothing while a watcher is catching up: ask again.
                tx.send(progress_request()).await.expect("send");
                continue;
            };
            let r = r.expect("open").expect("ok");
            if r.created {
                continue;
            }
            let rev = r.header.as_ref().map_or(0, |h| h.revision);
            if r.events.is_empty() {
                assert!(r.watch_id == -1 || r.watch_id == 0, "{r:?}");
                assert!(rev >= told, "progress went back from {told} to {rev}");
                if r.watch_id == -1 {
                    answered += 1;
                } else {
                    periodic += 1;
                }
                told = rev;
                continue;
            }
            for e in &r.events {
                let at = e.kv.as_ref().map_or(0, |kv| kv.mod_revision);
                assert!(
                    at > told,
                    "round {round}: event at revision {at} after a progress notification at {told}"
                );
                assert!(at >= last_event, "events in order");
                last_event = at;
            }
            events += r.events.len();
        }
        more.await.expect("writer");
    }
    assert!(answered > 0, "no RequestProgress was ever answered");
    println!("{answered} RequestProgress answers, {periodic} periodic notifications checked");
}
