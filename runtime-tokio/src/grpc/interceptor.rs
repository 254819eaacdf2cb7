//! What etcd's v3rpc interceptors do around every gRPC call: count it for `/metrics`, and
//! honour the client's "require leader" metadata (`hasleader: true`, set by clientv3's
//! `WithRequireLeader`; etcdctl watch and Kubernetes' watches use it).
//!
//! With that metadata:
//! - a call to a member that knows no leader fails at once with "etcdserver: no leader"
//!   (without it, a call that needs the leader waits for one: see
//!   `keel_core::node::Member`, which also honours require-leader for the callers it
//!   is given it by, as the simulator's clients do);
//! - a stream (Watch, LeaseKeepAlive, Snapshot, Observe, health Watch) already open is
//!   ended with that error when the member's leader monitor says so (etcd's
//!   `monitorLeader`, in core: [`keel_core::node::NO_LEADER_PERIODS`] election timeouts
//!   without a leader), so a watcher stuck on a member cut off from the quorum learns it
//!   and reconnects elsewhere instead of waiting silently forever. The end is delivered
//!   when hyper next polls the body: a stream whose client stopped reading (its
//!   flow-control window full) is not polled, and ends only when the client goes.

use super::call_metrics::{status_code, CountedBody};
use super::server_status;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use http_body::Frame;
use tokio::sync::watch;
use tonic::Status;

use crate::member::{MemberHandle, ServerError};
use crate::metrics::Metrics;

/// The calls that stream their answers: only these are ended on a lasting loss.
const STREAMS: [&str; 5] = [
    "/etcdserverpb.Watch/Watch",
    "/grpc.health.v1.Health/Watch",
    "/etcdserverpb.Lease/LeaseKeepAlive",
    "/etcdserverpb.Maintenance/Snapshot",
    "/v3electionpb.Election/Observe",
];

/// The interceptors' view of one member.
pub struct Interceptor {
    metrics: Arc<Metrics>,
    status: watch::Receiver<crate::member::Status>,
    /// Changes each time required-leader streams are to be ended.
    leader_lost: watch::Receiver<u64>,
}

impl Interceptor {
    /// Interceptors for member `m`.
    pub fn new(m: &MemberHandle) -> Arc<Interceptor> {
        Arc::new(Interceptor {
            metrics: m.metrics.clone(),
            status: m.status.clone(),
            leader_lost: m.leader_lost.clone(),
        })
    }
}

/// The axum middleware: the leader check, then the call, counted by method and code.
pub async fn intercept(State(i): State<Arc<Interceptor>>, req: Request, next: Next) -> Response {
    if !crate::http_access::is_grpc(&req) {
        return next.run(req).await;
    }
    // A Uri clone shares its bytes: no allocation per request.
    let uri = req.uri().clone();
    let started = std::time::Instant::now();
    let call = i.metrics.grpc.call(uri.path());
    let req = match &call {
        Some(c) => {
            c.started();
            let (metrics, c) = (i.metrics.clone(), c.clone());
            req.map(move |b| Body::new(CountedBody::inbound(b, metrics, c)))
        }
        None => req,
    };
    let require_leader = req
        .headers()
        .get("hasleader")
        .is_some_and(|v| v.as_bytes() == b"true");
    let resp = if require_leader && i.status.borrow().leader == 0 {
        no_leader().into_http::<Body>()
    } else if require_leader && STREAMS.contains(&uri.path()) {
        let mut lost = i.leader_lost.clone();
        lost.mark_unchanged();
        next.run(req)
            .await
            .map(|body| Body::new(EndOnLeaderLoss::new(body, lost)))
    } else {
        next.run(req).await
    };
    let Some(call) = call else { return resp };
    // The call is counted as handled when its status goes out: in these headers (an
    // error before any message) or in the trailers at the end of the body.
    let header_code = status_code(resp.headers());
    let metrics = i.metrics.clone();
    resp.map(move |b| {
        Body::new(CountedBody::outbound(
            b,
            metrics,
            call,
            started,
            header_code,
        ))
    })
}

fn no_leader() -> Status {
    server_status(ServerError::NoLeader)
}

/// A stream's response body that ends with "etcdserver: no leader" (in its trailers, as
/// a gRPC status) when the leader monitor says so. Dropping the inner body closes the
/// service's channel, which ends the stream's task and its watchers.
struct EndOnLeaderLoss {
    inner: Body,
    lost: Pin<Box<dyn Future<Output = ()> + Send>>,
    ended: bool,
}

impl EndOnLeaderLoss {
    fn new(inner: Body, mut lost: watch::Receiver<u64>) -> EndOnLeaderLoss {
        let lost = Box::pin(async move {
            if lost.changed().await.is_err() {
                // The monitor is gone with its member: nothing will end this stream.
                std::future::pending::<()>().await;
            }
        });
        EndOnLeaderLoss {
            inner,
            lost,
            ended: false,
        }
    }
}

impl http_body::Body for EndOnLeaderLoss {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(None);
        }
        if this.lost.as_mut().poll(cx).is_ready() {
            this.ended = true;
            this.inner = Body::empty();
            let mut trailers = HeaderMap::new();
            // The status is a fixed text: adding it cannot fail.
            let _ = no_leader().add_header(&mut trailers);
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        let frame = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(None | Some(Err(_))) = &frame {
            this.ended = true;
        }
        frame
    }

    // Forwarded, not just `ended`: an error answered in the headers has an empty body
    // that says so, and hyper then ends the HTTP/2 stream with those headers. Were this
    // wrapper to hide it, hyper would send the headers open and then an empty DATA frame
    // ending the stream, and grpc-go reads a status only from headers that end the
    // stream: clients would see "server closed the stream without sending trailers".
    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        if self.ended {
            http_body::SizeHint::with_exact(0)
        } else {
            self.inner.size_hint()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Body as _;
    use http_body_util::BodyExt;

    #[test]
    fn an_error_answered_in_the_headers_still_ends_the_stream_with_them() {
        // tonic answers a call that fails before its first message with an empty body;
        // hyper ends the HTTP/2 stream with the headers only if the body says it is done.
        let (_tx, rx) = watch::channel(0);
        assert!(EndOnLeaderLoss::new(Body::empty(), rx).is_end_stream());
    }

    #[tokio::test]
    async fn a_lasting_leader_loss_ends_the_stream_with_the_no_leader_status() {
        let (lost, rx) = watch::channel(0u64);
        let (tx, chunks) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
        let inner = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(chunks));
        let mut body = EndOnLeaderLoss::new(inner, rx);
        tx.send(Ok(Bytes::from_static(b"event")))
            .await
            .expect("send");
        let frame = body.frame().await.expect("a frame").expect("ok");
        assert_eq!(frame.into_data().ok(), Some(Bytes::from_static(b"event")));
        assert!(!body.is_end_stream());

        lost.send_modify(|n| *n += 1);
        let frame = body.frame().await.expect("a frame").expect("ok");
        let trailers = frame.into_trailers().expect("trailers");
        let status = Status::from_header_map(&trailers).expect("a gRPC status");
        assert_eq!(
            (status.code(), status.message()),
            (tonic::Code::Unavailable, "etcdserver: no leader")
        );
        assert!(body.is_end_stream());
        assert!(body.frame().await.is_none(), "nothing after the trailers");
        assert!(
            tx.is_closed(),
            "the service's stream is dropped with its body"
        );
    }
}
