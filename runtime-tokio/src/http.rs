//! Plain HTTP beside gRPC: `/health` (etcd's JSON), `/livez` and `/readyz` (etcd 3.5's
//! probes, which kubeadm uses), `/version` and `/metrics` (Prometheus text). The client
//! port serves them all; the `--listen-metrics-urls` listeners serve [`metrics_router`].

use std::time::Duration;

use axum::http::{header, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;

use keel_core::node::alarm;

use crate::member::MemberHandle;
use crate::version::{ETCD_CLUSTER_VERSION, ETCD_SERVER_VERSION};

/// The HTTP routes of a member's client port.
pub fn router(m: MemberHandle) -> Router {
    metrics_and_probes(m).route("/version", get(version))
}

/// The routes of a `--listen-metrics-urls` listener: what etcd serves there
/// (`/metrics`, `/health`, and from 3.5 `/livez` and `/readyz`); anything else is Go's
/// 404.
pub fn metrics_router(m: MemberHandle) -> Router {
    metrics_and_probes(m)
        .fallback(|| async { go_error(StatusCode::NOT_FOUND, "404 page not found") })
}

fn metrics_and_probes(m: MemberHandle) -> Router {
    let (h, x) = (m.clone(), m.clone());
    let mut r = Router::new()
        .route(
            "/health",
            any(move |method: Method, uri: Uri| health(h.clone(), method, uri)),
        )
        .route("/metrics", get(move || metrics(x.clone())));
    for probe in [Probe::Livez, Probe::Readyz] {
        let root = probe.path();
        let m2 = m.clone();
        r = r.route(
            root,
            any(move |method: Method, uri: Uri| {
                let m2 = m2.clone();
                async move {
                    let excluded = query_values(uri.query().unwrap_or(""), "exclude");
                    let checks: Vec<Check> = probe
                        .checks()
                        .iter()
                        .copied()
                        .filter(|c| !excluded.contains(&c.name()))
                        .collect();
                    let unknown: Vec<&str> = excluded
                        .iter()
                        .filter(|e| !probe.checks().iter().any(|c| c.name() == **e))
                        .copied()
                        .collect();
                    if !unknown.is_empty() {
                        let quoted: Vec<String> =
                            unknown.iter().map(|u| format!("{u:?}")).collect();
                        tracing::warn!(
                            missing_health_checks = %quoted.join(","),
                            "some health checks cannot be excluded"
                        );
                    }
                    run_probe(&m2, root, method, &uri, &checks).await
                }
            }),
        );
        for check in probe.checks() {
            let path = format!("{root}/{}", check.name());
            let m3 = m.clone();
            let check = *check;
            r = r.route(
                &path,
                any(move |method: Method, uri: Uri| {
                    let m3 = m3.clone();
                    async move { run_probe(&m3, root, method, &uri, &[check]).await }
                }),
            );
        }
    }
    r
}

fn json(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Go's `http.Error`: the text and a newline, as plain text, not sniffed.
pub(crate) fn go_error(status: StatusCode, text: &str) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        format!("{text}\n"),
    )
        .into_response()
}

fn method_not_allowed() -> Response {
    let mut r = go_error(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
    r.headers_mut()
        .insert(header::ALLOW, header::HeaderValue::from_static("GET"));
    r
}

/// etcd 3.4's health check, in its order: an alarm (unless excluded with
/// `?exclude=NAME`) makes it false, then no known leader, then a linearizable read that
/// does not complete within a second. 3.4 answers `{"health":"true"}` or, with status
/// 503 through Go's `http.Error`, `{"health":"false"}` and a newline; it names no reason
/// (3.5 added one).
///
/// `?serializable=true` (etcd 3.5, which kubeadm's liveness probe sends) checks local
/// state only, as 3.5 does: no leader needed, and a serializable read instead of a
/// linearizable one, so a member cut off from its quorum is still alive.
async fn health(m: MemberHandle, method: Method, uri: Uri) -> Response {
    if method != Method::GET {
        tracing::warn!("/health error (status code 405)");
        return method_not_allowed();
    }
    let query = uri.query().unwrap_or("");
    let excluded = query_values(query, "exclude");
    let serializable = query_values(query, "serializable").first() == Some(&"true");
    let result = check_health(&m, &excluded, serializable).await;
    match result {
        Ok(()) => {
            m.metrics.health_success.inc();
            // Go sniffs the JSON as text.
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                "{\"health\":\"true\"}",
            )
                .into_response()
        }
        Err(why) => {
            m.metrics.health_failures.inc();
            tracing::warn!("/health error; {why} (status code 503)");
            go_error(StatusCode::SERVICE_UNAVAILABLE, "{\"health\":\"false\"}")
        }
    }
}

async fn check_health(
    m: &MemberHandle,
    excluded: &[&str],
    serializable: bool,
) -> Result<(), String> {
    // Alarms are replicated state: the local copy is what etcd's check reads too.
    let alarms = m.alarms().await.map_err(|e| e.to_string())?;
    if let Some((_, a)) = alarms
        .iter()
        .find(|(_, a)| !excluded.contains(&alarm::name(*a)))
    {
        return Err(format!("alarm {}", alarm::name(*a)));
    }
    if !serializable && m.status.borrow().leader == 0 {
        return Err("no leader".into());
    }
    let read = Check::read(m, serializable);
    match tokio::time::timeout(Duration::from_secs(1), read).await {
        Ok(r) => r,
        Err(_) => Err("read timed out".into()),
    }
}

/// etcd 3.5's probes.
#[derive(Clone, Copy)]
enum Probe {
    /// Alive: the member answers from its own state.
    Livez,
    /// Ready: no corruption alarm, and reads are served, linearizable ones included.
    Readyz,
}

impl Probe {
    fn path(self) -> &'static str {
        match self {
            Probe::Livez => "/livez",
            Probe::Readyz => "/readyz",
        }
    }

    /// The checks, in the order keel runs and prints them (etcd registers them in this
    /// order; Go's map iteration then shuffles them).
    fn checks(self) -> &'static [Check] {
        match self {
            Probe::Livez => &[Check::SerializableRead],
            Probe::Readyz => &[
                Check::DataCorruption,
                Check::SerializableRead,
                Check::LinearizableRead,
            ],
        }
    }
}

/// One named check of a probe.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Check {
    DataCorruption,
    SerializableRead,
    LinearizableRead,
}

impl Check {
    fn name(self) -> &'static str {
        match self {
            Check::DataCorruption => "data_corruption",
            Check::SerializableRead => "serializable_read",
            Check::LinearizableRead => "linearizable_read",
        }
    }

    async fn run(self, m: &MemberHandle) -> Result<(), String> {
        match self {
            Check::DataCorruption => {
                let alarms = m.alarms().await.map_err(|e| e.to_string())?;
                match alarms.iter().any(|(_, a)| *a == alarm::CORRUPT) {
                    true => Err("alarm activated: CORRUPT".into()),
                    false => Ok(()),
                }
            }
            Check::SerializableRead => Check::read(m, true).await,
            Check::LinearizableRead => Check::read(m, false).await,
        }
    }

    /// A read as etcd's checks make one (a one-key range, as root): served from local
    /// state when `serializable`, otherwise after a ReadIndex round.
    async fn read(m: &MemberHandle, serializable: bool) -> Result<(), String> {
        let r = match serializable {
            true => m.read(false, |_| ()).await,
            false => m.read_barrier().await,
        };
        r.map_err(|e| e.to_string())
    }
}

/// Runs `checks` and answers as etcd 3.5's probe handlers: `ok` (after each check's
/// line with `?verbose`), or 503 with each check's line.
async fn run_probe(
    m: &MemberHandle,
    path: &str,
    method: Method,
    uri: &Uri,
    checks: &[Check],
) -> Response {
    if method != Method::GET {
        tracing::warn!(path, status_code = 405, "Health request error");
        return method_not_allowed();
    }
    let mut report = String::new();
    let mut failed = false;
    for c in checks {
        match c.run(m).await {
            Ok(()) => report.push_str(&format!("[+]{} ok\n", c.name())),
            Err(e) => {
                failed = true;
                report.push_str(&format!("[-]{} failed: {e}\n", c.name()));
            }
        }
    }
    if failed {
        tracing::error!(path, reason = %report, status_code = 503, "Health check error");
        return go_error(StatusCode::SERVICE_UNAVAILABLE, &report);
    }
    let verbose = uri
        .query()
        .unwrap_or("")
        .split('&')
        .any(|kv| kv.split('=').next() == Some("verbose"));
    let body = if verbose {
        report + "ok\n"
    } else {
        "ok\n".into()
    };
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// The non-empty values of every `key=` parameter, in order.
fn query_values<'a>(query: &'a str, key: &str) -> Vec<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, v)| *k == key && !v.is_empty())
        .map(|(_, v)| v)
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
        // What Go's promhttp answers a scraper that asks for text.
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        m.metrics.render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::query_values;

    #[test]
    fn query_values_keep_every_non_empty_value_of_the_key() {
        assert_eq!(
            query_values("exclude=NOSPACE&x=1&exclude=&exclude=CORRUPT", "exclude"),
            ["NOSPACE", "CORRUPT"]
        );
        assert_eq!(query_values("serializable=true", "serializable"), ["true"]);
        assert!(query_values("verbose", "exclude").is_empty());
    }
}
