//! `--cors` and `--host-whitelist` on the client port's HTTP endpoints (`/health`,
//! `/version`, `/metrics`, the JSON gateway, v2), as etcd 3.4's `accessController`
//! (embed/serve.go): gRPC requests never pass through it.
//!
//! - A plain-http request whose Host (port stripped) is not whitelisted is refused with
//!   421 and etcd's text about DNS rebinding (CVE-2018-5702); TLS requests are not checked.
//! - Every answered request gets CORS headers: `Access-Control-Allow-Origin: *` when the
//!   list allows all, else the request's `Origin` when it is listed.
//! - `OPTIONS` (a CORS preflight) is answered 200 with no body, whatever the path.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::tls::ClientConnInfo;

/// The client port's HTTP access rules. The default allows every origin and host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpAccess {
    cors: Vec<String>,
    host_whitelist: Vec<String>,
}

impl Default for HttpAccess {
    fn default() -> Self {
        HttpAccess::new(vec!["*".into()], vec!["*".into()])
    }
}

impl HttpAccess {
    /// `--cors` origins and `--host-whitelist` names; empty or `*` allows all.
    pub fn new(cors: Vec<String>, host_whitelist: Vec<String>) -> HttpAccess {
        HttpAccess {
            cors,
            host_whitelist,
        }
    }

    fn origin_allowed(&self, origin: &str) -> bool {
        self.cors.is_empty() || self.cors.iter().any(|o| o == "*" || o == origin)
    }

    fn host_allowed(&self, host: &str) -> bool {
        self.host_whitelist.is_empty() || self.host_whitelist.iter().any(|h| h == "*" || h == host)
    }
}

/// The host of a Host header without its port (Go's `net.SplitHostPort`, else as is).
fn hostname(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        if let Some((h, port)) = rest.split_once("]:") {
            if !port.contains(':') {
                return h;
            }
        }
        return host;
    }
    match host.split_once(':') {
        Some((h, port)) if !port.contains(':') => h,
        _ => host,
    }
}

/// etcd's `errCVE20185702`, with the newline Go's `http.Error` adds.
fn rebinding_text(host: &str) -> String {
    format!(
        "\netcd received your request, but the Host header was unrecognized.\n\n\
         To fix this, choose one of the following options:\n\
         - Enable TLS, then any HTTPS request will be allowed.\n\
         - Add the hostname you want to use to the whitelist in settings.\n  \
         - e.g. etcd --host-whitelist {host:?}\n\n\
         This requirement has been added to help prevent \"DNS Rebinding\" attacks (CVE-2018-5702).\n\n"
    )
}

/// A gRPC call (by its content type), as opposed to a plain HTTP request.
pub(crate) fn is_grpc(req: &Request) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"))
}

/// The middleware (`axum::middleware::from_fn_with_state`).
pub async fn control(State(access): State<HttpAccess>, req: Request, next: Next) -> Response {
    if is_grpc(&req) {
        return next.run(req).await;
    }
    let tls = req
        .extensions()
        .get::<ClientConnInfo>()
        .is_some_and(|c| c.tls);
    if !tls {
        // HTTP/1.1 carries Host; HTTP/2 carries :authority, which the URI holds.
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .or_else(|| req.uri().authority().map(|a| a.to_string()))
            .unwrap_or_default();
        let name = hostname(&host);
        if !access.host_allowed(name) {
            tracing::warn!(host = %name, "rejecting HTTP request to prevent DNS rebinding attacks");
            return (
                StatusCode::MISDIRECTED_REQUEST,
                [
                    (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                ],
                rebinding_text(name),
            )
                .into_response();
        }
    }
    let allow = if access.origin_allowed("*") {
        Some(HeaderValue::from_static("*"))
    } else {
        req.headers()
            .get(header::ORIGIN)
            .filter(|o| o.to_str().is_ok_and(|o| access.origin_allowed(o)))
            .cloned()
    };
    let mut resp = if req.method() == Method::OPTIONS {
        StatusCode::OK.into_response()
    } else {
        next.run(req).await
    };
    if let Some(origin) = allow {
        let h = resp.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("POST, GET, OPTIONS, PUT, DELETE"),
        );
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("accept, content-type, authorization"),
        );
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::{hostname, HttpAccess};

    #[test]
    fn host_without_port() {
        assert_eq!(hostname("example.com:2379"), "example.com");
        assert_eq!(hostname("example.com"), "example.com");
        assert_eq!(hostname("[::1]:2379"), "::1");
        assert_eq!(hostname("::1"), "::1");
    }

    #[test]
    fn empty_or_star_allows_all() {
        let any = HttpAccess::new(vec![], vec![]);
        assert!(any.origin_allowed("http://x:1") && any.host_allowed("evil"));
        let listed = HttpAccess::new(vec!["http://a:80".into()], vec!["good".into()]);
        assert!(listed.origin_allowed("http://a:80") && !listed.origin_allowed("http://b:80"));
        assert!(listed.host_allowed("good") && !listed.host_allowed("evil"));
    }
}
