//! etcd's v2 members API (`/v2/members`, `/v2/members/leader`) and `/v2/machines`, which
//! etcdctl v2's `member list/add/remove/update` and `cluster-health` call. Changes go
//! through the same path as the v3 Cluster service (and, with v2 auth enabled, need the
//! root role); answers are etcd 3.4's JSON, status codes and error texts
//! (`v2http/client.go` membersHandler).

use std::sync::Arc;

use axum::body::to_bytes;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use keel_core::discovery::{check_url, UrlError};
use serde_json::json;

use super::{base_headers, Ctx, MAX_FORM_BYTES};
use crate::grpc::cluster::ClusterService;
use crate::http::go_error;
use crate::pb::etcdserverpb as pb;
use crate::pb::etcdserverpb::cluster_server::Cluster;

/// etcd's `httptypes.HTTPError`: `{"message":...}` with its status.
fn http_error(ctx: &Ctx, status: StatusCode, message: &str) -> Response {
    let mut h = HeaderMap::new();
    base_headers(&mut h, &ctx.cluster_id);
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    (status, h, json!({ "message": message }).to_string()).into_response()
}

/// Go's `http.Error` text answer.
fn plain_error(status: StatusCode, text: &str, allow: Option<&'static str>) -> Response {
    let mut r = go_error(status, text);
    if let Some(a) = allow {
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(a));
    }
    r
}

/// etcd's `httptypes.Member`, its fields in Go's declaration order.
fn member_json(id: u64, name: &str, peer_urls: &[String], client_urls: &[String]) -> String {
    format!(
        "{{\"id\":\"{id:x}\",\"name\":{},\"peerURLs\":{},\"clientURLs\":{}}}",
        json!(name),
        json!(peer_urls),
        json!(client_urls)
    )
}

/// A JSON answer as Go's `json.Encoder` writes it (a newline after the value).
fn json_answer(ctx: &Ctx, status: StatusCode, v: &str) -> Response {
    let mut h = HeaderMap::new();
    base_headers(&mut h, &ctx.cluster_id);
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    (status, h, format!("{v}\n")).into_response()
}

/// `GET /v2/machines`: every member's client URLs, comma-separated.
pub(super) async fn machines(State(ctx): State<Arc<Ctx>>, req: Request) -> Response {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return plain_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "Method Not Allowed",
            Some("GET,HEAD"),
        );
    }
    let members = match ctx.m.members(false).await {
        Ok((m, _)) => m,
        Err(e) => return http_error(&ctx, StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let mut urls: Vec<String> = members.into_iter().flat_map(|m| m.client_urls).collect();
    urls.sort();
    let mut h = HeaderMap::new();
    base_headers(&mut h, &ctx.cluster_id);
    h.remove("x-etcd-cluster-id");
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    (StatusCode::OK, h, urls.join(", ")).into_response()
}

/// `/v2/members` and `/v2/members/<id>`.
pub(super) async fn members(State(ctx): State<Arc<Ctx>>, req: Request) -> Response {
    let method = req.method().clone();
    if ![Method::GET, Method::POST, Method::DELETE, Method::PUT].contains(&method) {
        return plain_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "Method Not Allowed",
            Some("GET,POST,DELETE,PUT"),
        );
    }
    // etcd's hasWriteRootAccess: with v2 auth enabled, changes need the root role.
    let who = super::auth::credentials(&req);
    if let Some(refused) = super::auth::members_refusal(&ctx, &method, &who).await {
        return refused;
    }
    let rest = req
        .uri()
        .path()
        .trim_start_matches("/v2/members")
        .trim_start_matches('/')
        .to_string();
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = to_bytes(req.into_body(), MAX_FORM_BYTES)
        .await
        .unwrap_or_default();
    let svc = ClusterService::new(ctx.m.clone());
    match method {
        Method::GET => list(&ctx, &rest).await,
        Method::POST => {
            let urls = match peer_urls(&content_type, &body) {
                Ok(u) => u,
                Err(r) => return r.respond(&ctx),
            };
            let req = pb::MemberAddRequest {
                peer_ur_ls: urls,
                is_learner: false,
            };
            match svc.member_add(tonic::Request::new(req)).await {
                Ok(r) => {
                    let m = r.into_inner().member.unwrap_or_default();
                    let v = member_json(m.id, &m.name, &m.peer_ur_ls, &m.client_ur_ls);
                    json_answer(&ctx, StatusCode::CREATED, &v)
                }
                Err(s) => change_error(&ctx, &s, 0),
            }
        }
        Method::DELETE => {
            let id = match member_id(&rest) {
                Ok(id) => id,
                Err(r) => return r.respond(&ctx),
            };
            let req = pb::MemberRemoveRequest { id };
            match svc.member_remove(tonic::Request::new(req)).await {
                Ok(_) => no_content(&ctx),
                Err(s) => change_error(&ctx, &s, id),
            }
        }
        _ => {
            let id = match member_id(&rest) {
                Ok(id) => id,
                Err(r) => return r.respond(&ctx),
            };
            let urls = match peer_urls(&content_type, &body) {
                Ok(u) => u,
                Err(r) => return r.respond(&ctx),
            };
            let req = pb::MemberUpdateRequest {
                id,
                peer_ur_ls: urls,
            };
            match svc.member_update(tonic::Request::new(req)).await {
                Ok(_) => no_content(&ctx),
                Err(s) => change_error(&ctx, &s, id),
            }
        }
    }
}

async fn list(ctx: &Ctx, rest: &str) -> Response {
    let members = match ctx.m.members(false).await {
        Ok((m, _)) => m,
        Err(e) => return http_error(ctx, StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    match rest {
        "" => {
            let all: Vec<String> = members
                .iter()
                .map(|m| member_json(m.id, &m.name, &m.peer_urls, &m.client_urls))
                .collect();
            json_answer(
                ctx,
                StatusCode::OK,
                &format!("{{\"members\":[{}]}}", all.join(",")),
            )
        }
        "leader" => {
            let leader = ctx.m.status.borrow().leader;
            match members.iter().find(|m| m.id == leader && leader != 0) {
                Some(m) => json_answer(
                    ctx,
                    StatusCode::OK,
                    &member_json(m.id, &m.name, &m.peer_urls, &m.client_urls),
                ),
                None => http_error(ctx, StatusCode::SERVICE_UNAVAILABLE, "During election"),
            }
        }
        _ => http_error(ctx, StatusCode::NOT_FOUND, "Not found"),
    }
}

fn no_content(ctx: &Ctx) -> Response {
    let mut h = HeaderMap::new();
    base_headers(&mut h, &ctx.cluster_id);
    (StatusCode::NO_CONTENT, h).into_response()
}

/// Why a request was refused before reaching the cluster.
enum Refusal {
    /// An `httptypes.HTTPError`.
    Json(StatusCode, String),
    /// Go's plain "Method Not Allowed".
    MethodNotAllowed,
}

impl Refusal {
    fn respond(self, ctx: &Ctx) -> Response {
        match self {
            Refusal::Json(status, message) => http_error(ctx, status, &message),
            Refusal::MethodNotAllowed => {
                plain_error(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed", None)
            }
        }
    }
}

/// The member ID of `/v2/members/<hex id>`, or etcd's refusal.
fn member_id(rest: &str) -> Result<u64, Refusal> {
    if rest.is_empty() {
        return Err(Refusal::MethodNotAllowed);
    }
    u64::from_str_radix(rest, 16)
        .map_err(|_| Refusal::Json(StatusCode::NOT_FOUND, format!("No such member: {rest}")))
}

/// The `peerURLs` of a JSON member request, checked as etcd's `types.NewURLs`.
fn peer_urls(content_type: &str, body: &[u8]) -> Result<Vec<String>, Refusal> {
    let ctype = match content_type.find(';') {
        Some(i) => content_type[..i].trim().to_ascii_lowercase(),
        None => content_type.to_string(),
    };
    if ctype != "application/json" {
        return Err(Refusal::Json(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Bad Content-Type {ctype}, accept application/json"),
        ));
    }
    let bad = |m: String| Refusal::Json(StatusCode::BAD_REQUEST, m);
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| bad(e.to_string()))?;
    // Go's decoder matches field names case-insensitively.
    let given = v
        .as_object()
        .and_then(|o| o.iter().find(|(k, _)| k.eq_ignore_ascii_case("peerURLs")))
        .map(|(_, v)| v.clone())
        .unwrap_or(serde_json::Value::Null);
    let given: Vec<String> = match given {
        serde_json::Value::Null => Vec::new(),
        serde_json::Value::Array(a) => a
            .into_iter()
            .map(|u| match u {
                serde_json::Value::String(s) => Ok(s),
                _ => Err(bad(
                    "json: cannot unmarshal into Go struct field .peerURLs of type string".into(),
                )),
            })
            .collect::<Result<_, _>>()?,
        _ => {
            return Err(bad(
                "json: cannot unmarshal into Go struct field .peerURLs of type []string".into(),
            ))
        }
    };
    if given.is_empty() {
        return Err(bad("no valid URLs given".into()));
    }
    let mut urls = Vec::new();
    for u in given {
        let u = u.trim().to_string();
        check_url(&u).map_err(|e: UrlError| bad(e.to_string()))?;
        urls.push(u);
    }
    urls.sort();
    Ok(urls)
}

/// etcd's answers to a failed member change.
fn change_error(ctx: &Ctx, s: &tonic::Status, id: u64) -> Response {
    match s.message() {
        "etcdserver: member ID already exist" => {
            http_error(ctx, StatusCode::CONFLICT, "membership: ID exists")
        }
        "etcdserver: Peer URLs already exists" => {
            http_error(ctx, StatusCode::CONFLICT, "membership: peerURL exists")
        }
        "etcdserver: member not found" => http_error(
            ctx,
            StatusCode::NOT_FOUND,
            &format!("No such member: {id:x}"),
        ),
        "etcdserver: the member has been permanently removed from the cluster" => http_error(
            ctx,
            StatusCode::GONE,
            &format!("Member permanently removed: {id:x}"),
        ),
        other => {
            tracing::warn!(
                internal_server_error = other,
                "unexpected v2 response error"
            );
            http_error(
                ctx,
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal Server Error",
            )
        }
    }
}
