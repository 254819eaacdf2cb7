//! Plain HTTP on the client port, beside gRPC: `/health` (etcd's JSON), `/version` and
//! `/metrics` (Prometheus text).

use std::time::Duration;

use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use keel_core::node::alarm;

use crate::member::MemberHandle;
use crate::version::{ETCD_CLUSTER_VERSION, ETCD_SERVER_VERSION};

/// The HTTP routes of a member's client port.
pub fn router(m: MemberHandle) -> Router {
    let (h, x) = (m.clone(), m);
    Router::new()
        .route("/health", get(move |uri: Uri| health(h.clone(), uri)))
        .route("/version", get(version))
        .route("/metrics", get(move || metrics(x.clone())))
}

fn json(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// etcd 3.4's health check, in its order: an alarm (unless excluded with
/// `?exclude=NAME`) makes it false, then no known leader, then a linearizable read that
/// does not complete within a second. 3.4 answers `{"health":"true"}` or, with status
/// 503 through Go's `http.Error`, `{"health":"false"}` and a newline; it names no reason
/// (3.5 added one).
async fn health(m: MemberHandle, uri: Uri) -> Response {
    let excluded = excluded_alarms(uri.query().unwrap_or(""));
    let unhealthy = |why: &str| {
        tracing::warn!("/health error; {why} (status code 503)");
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "{\"health\":\"false\"}\n",
        )
            .into_response()
    };
    // Alarms are replicated state: the local copy is what etcd's check reads too.
    let alarms = match m.alarms().await {
        Ok(a) => a,
        Err(e) => return unhealthy(&e.to_string()),
    };
    if let Some((_, a)) = alarms
        .iter()
        .find(|(_, a)| !excluded.contains(&alarm::name(*a)))
    {
        return unhealthy(&format!("alarm {}", alarm::name(*a)));
    }
    if m.status.borrow().leader == 0 {
        return unhealthy("no leader");
    }
    let read = m.read_barrier();
    match tokio::time::timeout(Duration::from_secs(1), read).await {
        Ok(Ok(_)) => json(StatusCode::OK, "{\"health\":\"true\"}".into()),
        Ok(Err(e)) => unhealthy(&e.to_string()),
        Err(_) => unhealthy("read timed out"),
    }
}

/// The alarm names of every `exclude=` parameter.
fn excluded_alarms(query: &str) -> Vec<&str> {
    query
        .split('&')
        .filter_map(|kv| kv.strip_prefix("exclude="))
        .collect()
}

async fn version() -> Response {
    json(
        StatusCode::OK,
        format!(
            "{{\"etcdserver\":\"{ETCD_SERVER_VERSION}\",\"etcdcluster\":\"{ETCD_CLUSTER_VERSION}\"}}"
        ),
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
