//! The part of etcd's v2 keys API that v2 discovery uses, on the client port behind
//! `--enable-v2`, so one Keel cluster can bootstrap another with no etcd anywhere.
//!
//! Served: `GET`/`HEAD`, `PUT` and `DELETE` on `/v2/keys/<path>` with `value`, `dir`,
//! `prevExist=false`, `recursive`, `sorted`, `wait`/`waitIndex`/`stream`,
//! `noValueOnSuccess` and `quorum` (reads are always linearizable), answered in etcd's
//! exact JSON, status codes and `X-Etcd-Index`/`X-Etcd-Cluster-Id`/`X-Raft-*` headers.
//! Not served: TTLs, compare-and-swap (`prevValue`, `prevIndex`, `prevExist=true`),
//! in-order keys (`POST`); they get an error naming the unsupported field.
//!
//! Also served, for etcdctl v2's `member` and `cluster-health` commands: `/v2/members`
//! and `/v2/machines` (see [`members`]); for its `user`, `role` and `auth` commands, the
//! v2 auth API (`/v2/auth/...`, see [`auth`]), whose permissions every keys request and
//! member change is checked against once it is enabled.
//!
//! Storage: the v2 tree lives in the replicated MVCC keyspace under the reserved
//! prefix `"\0keel/v2"` (see [`keys`] for the layout), so it survives leader changes
//! and restarts like any key. A node's createdIndex and modifiedIndex are MVCC
//! revisions and `X-Etcd-Index` is the keyspace revision. Writes are transactions
//! proposed through raft, reads are linearizable, and `wait` is a watcher on the
//! member's watch hub from `waitIndex` (history included, until compacted).

pub(crate) mod auth;
mod form;
pub(crate) mod json;
pub mod keys;
mod members;
pub(crate) mod store;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use bytes::Bytes;
use keel_core::mvcc::{Event as KvEvent, WatchRequest};
use keel_core::node::{Command, Outcome};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use crate::member::{watch_channel, MemberHandle, WatchStart};
use form::Form;
use json::Event;
use store::{V2Error, Write};

/// Largest form body read, as Go's `ParseForm` (10 MiB).
const MAX_FORM_BYTES: usize = 10 << 20;

/// A write replanned this many times (each time because another write touched the
/// same nodes in between) gives up with "Raft Internal Error".
const MAX_ATTEMPTS: usize = 64;

struct Ctx {
    m: MemberHandle,
    /// Becomes true when the member shuts down: long polls end then.
    stop: watch::Receiver<bool>,
    cluster_id: HeaderValue,
}

/// The v2 keys routes over member `m`; long polls end when `stop` turns true.
pub fn router(m: MemberHandle, stop: watch::Receiver<bool>) -> Router {
    let cluster_id = HeaderValue::from_str(&format!("{:x}", m.cluster_id))
        .unwrap_or_else(|_| HeaderValue::from_static("0"));
    let ctx = Arc::new(Ctx {
        m,
        stop,
        cluster_id,
    });
    Router::new()
        .route("/v2/keys", any(serve))
        .route("/v2/keys/", any(serve))
        .route("/v2/keys/{*rest}", any(serve))
        .route("/v2/members", any(members::members))
        .route("/v2/members/{*rest}", any(members::members))
        .route("/v2/machines", any(members::machines))
        .route("/v2/auth/enable", any(auth::enable))
        .route("/v2/auth/users", any(auth::users))
        .route("/v2/auth/users/", any(auth::users))
        .route("/v2/auth/users/{*rest}", any(auth::users))
        .route("/v2/auth/roles", any(auth::roles))
        .route("/v2/auth/roles/", any(auth::roles))
        .route("/v2/auth/roles/{*rest}", any(auth::roles))
        .with_state(ctx)
}

/// The header etcd's keys handler puts on every answer (the CORS headers are the
/// client port's `--cors` layer's, `http_access`).
fn base_headers(h: &mut HeaderMap, cluster_id: &HeaderValue) {
    h.insert("x-etcd-cluster-id", cluster_id.clone());
}

fn num(n: impl std::fmt::Display) -> HeaderValue {
    HeaderValue::from_str(&n.to_string()).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

fn json_headers(ctx: &Ctx, etcd_index: i64) -> HeaderMap {
    let mut h = HeaderMap::new();
    base_headers(&mut h, &ctx.cluster_id);
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert("x-etcd-index", num(etcd_index));
    h
}

fn error_response(ctx: &Ctx, e: &V2Error) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
    let body = json::error_json(e.code, e.message(), &e.cause, e.index);
    (status, json_headers(ctx, e.index), body).into_response()
}

/// A member that cannot serve: etcd reports such errors as "Raft Internal Error".
fn internal(cause: impl std::fmt::Display) -> V2Error {
    V2Error::new(300, cause.to_string(), 0)
}

fn event_response(
    ctx: &Ctx,
    ev: &Event,
    created: bool,
    etcd_index: i64,
    raft: (u64, u64),
) -> Response {
    let mut h = json_headers(ctx, etcd_index);
    h.insert("x-raft-index", num(raft.0));
    h.insert("x-raft-term", num(raft.1));
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    (status, h, ev.to_json()).into_response()
}

/// etcd's `writeKeyNoAuth`: error 110, with the keys handler's cluster ID.
fn no_key_access(ctx: &Ctx) -> Response {
    error_response(ctx, &V2Error::new(110, "Insufficient credentials", 0))
}

/// Go's plain `http.Error` answer, as etcd's `allowMethod` gives it.
fn method_not_allowed() -> Response {
    let mut r = crate::http::go_error(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
    r.headers_mut().insert(
        header::ALLOW,
        HeaderValue::from_static("HEAD,GET,PUT,DELETE"),
    );
    r
}

/// A parsed keys request.
struct KeyRequest {
    /// The clean v2 path.
    path: String,
    /// The decoded request path after `/v2/keys`, not cleaned: what etcd checks
    /// permissions on.
    access_key: String,
    /// A field keel's subset refuses, named (after the permission check, as etcd
    /// would check permissions before the store refused anything).
    unsupported: Option<&'static str>,
    value: Bytes,
    recursive: bool,
    sorted: bool,
    wait: bool,
    wait_index: u64,
    dir: bool,
    stream: bool,
    no_value_on_success: bool,
    prev_exist: Option<bool>,
}

async fn serve(State(ctx): State<Arc<Ctx>>, req: Request) -> Response {
    let method = req.method().clone();
    if method == Method::OPTIONS {
        // etcd's CORS wrapper answers preflight requests itself.
        let mut h = HeaderMap::new();
        base_headers(&mut h, &ctx.cluster_id);
        h.remove("x-etcd-cluster-id");
        return (StatusCode::OK, h).into_response();
    }
    if ![Method::GET, Method::HEAD, Method::PUT, Method::DELETE].contains(&method) {
        return method_not_allowed();
    }
    let who = auth::credentials(&req);
    let r = match parse(req).await {
        Ok(r) => r,
        Err(e) => return error_response(&ctx, &e),
    };
    let writes = method != Method::GET && method != Method::HEAD;
    match auth::key_access(&ctx, &who, &r.access_key, writes, r.recursive).await {
        Ok(true) => {}
        Ok(false) => return no_key_access(&ctx),
        Err(e) => return error_response(&ctx, &internal(e)),
    }
    if let Some(what) = r.unsupported {
        let cause = format!("keel's v2 keys API does not support \"{what}\"");
        return error_response(&ctx, &V2Error::new(209, cause, 0));
    }
    let out = if method == Method::PUT {
        let w = Write::Set {
            value: r.value.clone(),
            dir: r.dir,
            create: r.prev_exist == Some(false),
        };
        write(&ctx, &r, w).await
    } else if method == Method::DELETE {
        let w = Write::Delete {
            dir: r.dir,
            recursive: r.recursive,
        };
        write(&ctx, &r, w).await
    } else if r.wait {
        wait(&ctx, &r).await
    } else {
        get(&ctx, &r).await
    };
    out.unwrap_or_else(|e| error_response(&ctx, &e))
}

/// Reads the request the way etcd's `parseKeyRequest` does, with its checks in its
/// order, then refuses what this API does not serve.
async fn parse(req: Request) -> Result<KeyRequest, V2Error> {
    let (parts, body) = req.into_parts();
    let bad = |code: u32, cause: &str| V2Error::new(code, cause, 0);
    let raw = parts.uri.path();
    let rest = raw.strip_prefix("/v2/keys").unwrap_or(raw);
    let decoded = form::unescape(rest.as_bytes(), false).map_err(|e| bad(210, &e))?;
    let decoded = String::from_utf8(decoded).map_err(|_| bad(210, "key is not valid UTF-8"))?;
    let path = keys::clean(&decoded);
    let is_form = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| {
            t.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    // Go reads a form body for PUT and POST only.
    let body = if parts.method == Method::PUT && is_form {
        Some(
            axum::body::to_bytes(body, MAX_FORM_BYTES)
                .await
                .map_err(|_| bad(210, "http: POST too large"))?,
        )
    } else {
        None
    };
    let (f, err) = Form::parse(parts.uri.query(), body.as_deref());
    if let Some(e) = err {
        return Err(bad(210, &e));
    }
    let prev_index = f
        .uint("prevIndex")
        .map_err(|_| bad(203, "invalid value for \"prevIndex\""))?;
    let wait_index = f
        .uint("waitIndex")
        .map_err(|_| bad(203, "invalid value for \"waitIndex\""))?;
    let flag = |name: &str| {
        f.bool(name)
            .map_err(|_| bad(209, &format!("invalid value for \"{name}\"")))
    };
    let recursive = flag("recursive")?;
    let sorted = flag("sorted")?;
    let wait = flag("wait")?;
    let dir = flag("dir")?;
    flag("quorum")?;
    let stream = flag("stream")?;
    if wait && parts.method != Method::GET {
        return Err(bad(209, "\"wait\" can only be used with GET requests"));
    }
    let prev_value = f.first("prevValue");
    if prev_value.is_some_and(|v| v.is_empty()) {
        return Err(bad(201, "\"prevValue\" cannot be empty"));
    }
    let no_value_on_success = flag("noValueOnSuccess")?;
    let ttl = f.first("ttl").filter(|v| !v.is_empty());
    if ttl.is_some() {
        f.uint("ttl")
            .map_err(|_| bad(202, "invalid value for \"ttl\""))?;
    }
    let prev_exist = if f.has("prevExist") {
        Some(
            f.bool("prevExist")
                .map_err(|_| bad(209, "invalid value for prevExist"))?,
        )
    } else {
        None
    };
    let refresh = if f.has("refresh") {
        f.bool("refresh")
            .map_err(|_| bad(209, "invalid value for refresh"))?
    } else {
        false
    };
    if refresh {
        if f.first("value").is_some_and(|v| !v.is_empty()) {
            return Err(bad(211, "A value was provided on a refresh"));
        }
        if ttl.is_none() {
            return Err(bad(212, "No TTL value set"));
        }
    }
    let writes = parts.method == Method::PUT || parts.method == Method::DELETE;
    let unsupported = if !writes {
        None
    } else if ttl.is_some() {
        Some("ttl")
    } else if refresh {
        Some("refresh")
    } else if prev_value.is_some() {
        Some("prevValue")
    } else if prev_index != 0 {
        Some("prevIndex")
    } else if prev_exist == Some(true) && parts.method == Method::PUT {
        Some("prevExist=true")
    } else {
        None
    };
    Ok(KeyRequest {
        value: Bytes::copy_from_slice(f.first("value").unwrap_or_default()),
        path,
        access_key: decoded,
        unsupported,
        recursive,
        sorted,
        wait,
        wait_index,
        dir,
        stream,
        no_value_on_success,
        prev_exist,
    })
}

async fn get(ctx: &Ctx, r: &KeyRequest) -> Result<Response, V2Error> {
    let (path, recursive, sorted) = (r.path.clone(), r.recursive, r.sorted);
    let (res, rev, raft) = ctx
        .m
        .v2_get(path, recursive, sorted)
        .await
        .map_err(internal)?;
    Ok(event_response(ctx, &res?, false, rev, raft))
}

async fn write(ctx: &Ctx, r: &KeyRequest, w: Write) -> Result<Response, V2Error> {
    for _ in 0..MAX_ATTEMPTS {
        let (path, w2) = (r.path.clone(), w.clone());
        let plan = ctx.m.v2_plan(path, w2).await.map_err(internal)?;
        let plan = plan?;
        let (outcome, h) = ctx
            .m
            .propose_v2(Command::Txn(plan.txn))
            .await
            .map_err(internal)?;
        match outcome {
            Outcome::Txn(Ok(t)) if t.succeeded => {
                let raft = ctx.m.raft_position().await.unwrap_or((0, h.raft_term));
                let mut ev = plan.done.event(h.revision);
                let created = ev.is_created();
                if r.no_value_on_success && ev.action != "delete" {
                    ev.node = None;
                    ev.prev = None;
                }
                return Ok(event_response(ctx, &ev, created, h.revision, raft));
            }
            // Something this write depends on changed since it was planned.
            Outcome::Txn(Ok(_)) => continue,
            Outcome::Txn(Err(e)) => return Err(internal(e)),
            _ => return Err(internal("etcdserver: unexpected apply result")),
        }
    }
    Err(internal("etcdserver: too many conflicting writes"))
}

/// A long poll: headers at once (as etcd flushes them), then the first change of the
/// node (or, `recursive`, of anything below it) at or after `waitIndex` — every such
/// change with `stream=true`. It ends when the client goes, on shutdown, or if the
/// member stops.
async fn wait(ctx: &Ctx, r: &KeyRequest) -> Result<Response, V2Error> {
    let since = i64::try_from(r.wait_index).unwrap_or(i64::MAX);
    let (sink, mut outlet) = watch_channel();
    let (key, range_end) = keys::subtree("/");
    // One watcher over the whole v2 keyspace: telling which v2 event a revision is
    // (and whom etcd would notify of it) needs all of that revision's v2 changes.
    let req = WatchRequest {
        key,
        range_end,
        start_revision: since,
        prev_kv: true,
        ..WatchRequest::default()
    };
    let (id, start_index, raft) = match ctx
        .m
        .watch_since(req, since, sink)
        .await
        .map_err(internal)?
    {
        WatchStart::Created {
            id,
            revision,
            applied,
            term,
        } => (id, revision, (applied, term)),
        WatchStart::Compacted {
            compacted,
            revision,
        } => {
            let cause = format!(
                "the requested history has been cleared [{}/{}]",
                compacted + 1,
                since
            );
            return Err(V2Error::new(401, cause, revision));
        }
    };
    let m = ctx.m.clone();
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::convert::Infallible>>(4);
    let mut stop = ctx.stop.clone();
    let (path, recursive, stream) = (r.path.clone(), r.recursive, r.stream);
    // From here the task owns the watcher and removes it however the poll ends (even
    // if this handler is dropped before answering: then `rx` is gone at once).
    tokio::spawn(async move {
        // Changes already in history are due now, not at the next write.
        let _ = m.flush_watches().await;
        'poll: loop {
            tokio::select! {
                _ = tx.closed() => break,
                _ = stopped(&mut stop) => break,
                resp = outlet.recv() => {
                    let Some(resp) = resp else { break };
                    for group in resp.events.chunk_by(|a: &KvEvent, b: &KvEvent| a.rev.main == b.rev.main) {
                        let Some(rev) = group.first().map(|e| e.rev.main) else { continue };
                        let Some(change) = store::change_of(group) else { continue };
                        if !change.concerns(&path, recursive, rev, start_index) {
                            continue;
                        }
                        let body = Bytes::from(change.event.to_json());
                        if tx.send(Ok(body)).await.is_err() || !stream {
                            break 'poll;
                        }
                    }
                    if resp.canceled {
                        break;
                    }
                }
            }
        }
        let _ = m.cancel_watches(vec![id]).await;
    });
    let mut h = json_headers(ctx, start_index);
    h.insert("x-raft-index", num(raft.0));
    h.insert("x-raft-term", num(raft.1));
    Ok((
        StatusCode::OK,
        h,
        Body::from_stream(ReceiverStream::new(rx)),
    )
        .into_response())
}

/// Resolves once the member shuts down (or its stop signal is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
