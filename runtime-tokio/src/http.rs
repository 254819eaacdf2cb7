//! Plain HTTP on the client port, beside gRPC: `/health` (etcd's JSON), `/version` and
//! `/metrics` (Prometheus text).

use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use keel_core::node::alarm;

use crate::grpc::maintenance_version;
use crate::member::{Core, MemberHandle};

/// The HTTP routes of a member's client port.
pub fn router(m: MemberHandle) -> Router {
    let (h, x) = (m.clone(), m);
    Router::new()
        .route("/health", get(move || health(h.clone())))
        .route("/version", get(version))
        .route("/metrics", get(move || metrics(x.clone())))
}

fn json(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// etcd's health check: a leader is known, no alarm is raised, and a linearizable
/// read completes within a second.
async fn health(m: MemberHandle) -> Response {
    let unhealthy = |reason: &str| {
        json(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{{\"health\":\"false\",\"reason\":\"{reason}\"}}"),
        )
    };
    if m.status.borrow().leader == 0 {
        return unhealthy("RAFT NO LEADER");
    }
    let read = m.read(true, |c: &mut Core| c.sm.alarms(c.id));
    match tokio::time::timeout(Duration::from_secs(1), read).await {
        Ok(Ok(alarms)) if alarms.is_empty() => json(
            StatusCode::OK,
            "{\"health\":\"true\",\"reason\":\"\"}".into(),
        ),
        Ok(Ok(alarms)) => {
            let names: Vec<&str> = alarms.iter().map(|(_, a)| alarm::name(*a)).collect();
            unhealthy(&format!("ALARM {}", names.join(" ")))
        }
        _ => unhealthy("QGET ERROR"),
    }
}

async fn version() -> Response {
    let v = maintenance_version();
    json(
        StatusCode::OK,
        format!("{{\"etcdserver\":\"{v}\",\"etcdcluster\":\"{v}\"}}"),
    )
}

async fn metrics(m: MemberHandle) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        m.metrics.render(),
    )
        .into_response()
}

/// Counts every gRPC call by method and status code for `/metrics`. A status sent in the
/// headers (an error before any message) is read there; otherwise the call counts as OK
/// (a streaming call's final status travels in trailers, after this layer has returned).
pub async fn count_grpc(
    axum::extract::State(m): axum::extract::State<std::sync::Arc<crate::metrics::Metrics>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let is_grpc = req
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    // A Uri clone shares its bytes: no allocation per request.
    let uri = is_grpc.then(|| req.uri().clone());
    let resp = next.run(req).await;
    if let Some(uri) = uri {
        let code = resp
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i32>().ok())
            .unwrap_or(0);
        m.grpc_request(uri.path(), grpc_code_name(code));
    }
    resp
}

/// The code names grpc-go's Prometheus interceptors use.
fn grpc_code_name(code: i32) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "Canceled",
        "Unknown",
        "InvalidArgument",
        "DeadlineExceeded",
        "NotFound",
        "AlreadyExists",
        "PermissionDenied",
        "ResourceExhausted",
        "FailedPrecondition",
        "Aborted",
        "OutOfRange",
        "Unimplemented",
        "Internal",
        "Unavailable",
        "DataLoss",
        "Unauthenticated",
    ];
    usize::try_from(code)
        .ok()
        .and_then(|i| NAMES.get(i))
        .copied()
        .unwrap_or("Unknown")
}
