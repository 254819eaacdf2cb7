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
