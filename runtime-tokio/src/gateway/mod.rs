//! etcd's gRPC-gateway: JSON over HTTP on the client port (`POST /v3/kv/range`, ...),
//! as etcd 3.4 serves it beside gRPC (Patroni, APISIX, etcd3gw and curl use it).
//!
//! Each call is decoded from grpc-gateway's JSON mapping (serde impls generated from
//! the .proto descriptors, see build.rs), made in process through the same gRPC router
//! and interceptors a gRPC client's call takes ([`call`]), and answered as grpc-gateway
//! v1 answers: the response message as JSON, or `{"error","message","code"}` with the
//! HTTP status of the gRPC code; streams as one `{"result": ...}` line per message and
//! a final `{"error": {...}}` chunk on failure. `/v3beta/` is answered like `/v3/` (etcd
//! 3.4 still serves it; `/v3alpha/` it no longer does). The `Authorization` header
//! carries the auth token, as grpc-gateway forwards it to etcd's gRPC as metadata.

mod call;
mod methods;

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use axum::Router;
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status};

use crate::http::go_error;
use call::{frame, Answer};
use methods::{Method, Shape, METHODS};

/// The version prefixes etcd 3.4 serves the gateway under.
const PREFIXES: [&str; 2] = ["/v3/", "/v3beta/"];

/// What every gateway call needs.
struct Gateway {
    /// The gRPC router, interceptors included.
    grpc: Router,
    /// The largest JSON text one request may take (base64 inflates the largest
    /// protobuf request the member accepts by 4/3).
    max_json: usize,
}

/// The gateway's routes, calling through `grpc` (the client port's gRPC router with its
/// interceptors). `max_request_bytes` is the member's `--max-request-bytes`.
pub fn router(grpc: Router, max_request_bytes: usize) -> Router {
    let g = Arc::new(Gateway {
        grpc,
        max_json: max_request_bytes.saturating_mul(2).saturating_add(64 << 10),
    });
    let mut r = Router::new();
    for prefix in PREFIXES {
        for m in METHODS {
            let path = format!("{prefix}{}", m.path);
            // A path served twice (maintenance/hash): the first registration answers.
            if !methods::find(m.path).is_some_and(|first| std::ptr::eq(first, m)) {
                continue;
            }
            r = r.route(
                &path,
                post(move |State(g): State<Arc<Gateway>>, req: Request| serve(g, m, req))
                    .fallback(|req: Request| refuse(req, StatusCode::METHOD_NOT_ALLOWED)),
            );
        }
        r = r.route(
            &format!("{prefix}{{*rest}}"),
            any(|req: Request| refuse(req, StatusCode::NOT_FOUND)),
        );
    }
    r.with_state(g)
}

/// What the client port answers on a path nobody serves: gRPC's Unimplemented to a
/// gRPC call (as tonic's router would), Go's `http.NotFound` to anything else.
pub async fn fallback(req: Request) -> Response {
    if crate::http_access::is_grpc(&req) {
        return Status::unimplemented("").into_http();
    }
    drain(req).await;
    go_error(StatusCode::NOT_FOUND, "404 page not found")
}

/// Reads a request's body (up to 1 MiB) before it is refused. Over HTTP/2 an unread
/// body makes hyper reset the stream, and curl then reports the answer as lost.
async fn drain(req: Request) {
    let _ = http_body_util::Limited::new(req.into_body(), 1 << 20)
        .collect()
        .await;
}

/// Go's `http.Error(w, http.StatusText(code), code)`, once the request is read.
async fn refuse(req: Request, status: StatusCode) -> Response {
    drain(req).await;
    go_error(status, status.canonical_reason().unwrap_or(""))
}

async fn serve(g: Arc<Gateway>, m: &'static Method, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let metadata = metadata(&parts.headers);
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(16);
    match m.shape {
        Shape::Unary | Shape::ServerStream => {
            let msg = match read_one(body, g.max_json, m).await {
                Ok(msg) => msg,
                Err(s) => return unary_error(&s),
            };
            // The channel has room: this cannot wait.
            let _ = tx.send(Ok(frame(&msg))).await;
            drop(tx);
        }
        Shape::Bidi => {
            tokio::spawn(pump_requests(body, g.max_json, m, tx));
        }
    }
    let answer = call::start(
        g.grpc.clone(),
        m.grpc,
        metadata,
        parts.extensions,
        ReceiverStream::new(rx),
    )
    .await;
    match m.shape {
        Shape::Unary => unary(answer, m).await,
        Shape::ServerStream | Shape::Bidi => streamed(answer, m).await,
    }
}

/// The gRPC metadata grpc-gateway forwards: `Authorization`, and every
/// `Grpc-Metadata-Foo` header as `foo`.
fn metadata(headers: &HeaderMap) -> HeaderMap {
    let mut md = HeaderMap::new();
    for (name, value) in headers {
        if name == header::AUTHORIZATION {
            md.append(header::AUTHORIZATION, value.clone());
        } else if let Some(key) = name.as_str().strip_prefix("grpc-metadata-") {
            if let Ok(key) = HeaderName::from_bytes(key.as_bytes()) {
                md.append(key, value.clone());
            }
        }
    }
    md
}

/// A request body holding one JSON request (an empty body is the empty request, as
/// grpc-gateway tolerates EOF), as protobuf.
async fn read_one(body: Body, limit: usize, m: &Method) -> Result<Bytes, Status> {
    let bytes = http_body_util::Limited::new(body, limit)
        .collect()
        .await
        .map_err(|e| Status::invalid_argument(e.to_string()))?
        .to_bytes();
    one_request(m, &bytes).map_err(|e| bad_json(&bytes, &e))
}

fn one_request(m: &Method, bytes: &[u8]) -> Result<Bytes, serde_json::Error> {
    let mut values = serde_json::Deserializer::from_slice(bytes).into_iter::<serde_json::Value>();
    let json = match values.next() {
        None => serde_json::Value::Object(Default::default()),
        Some(v) => v?,
    };
    (m.request)(json)
}

/// The gateway paths (after the version prefix, `kv/range`), in registration order.
pub fn paths() -> impl Iterator<Item = &'static str> {
    methods::METHODS.iter().map(|m| m.path)
}

/// A unary request body for `path` as the protobuf the gateway hands its gRPC method
/// (what a POST to `/v3/<path>` decodes to); None for an unknown path. Bad JSON is an
/// error, never a panic (fuzzed: `fuzz/fuzz_targets/gateway_json.rs`).
pub fn decode_request(path: &str, body: &[u8]) -> Option<Result<Bytes, serde_json::Error>> {
    methods::find(path).map(|m| one_request(m, body))
}

/// The inverse of [`decode_request`]: a protobuf request for `path` as the gateway's
/// JSON; None for an unknown path.
pub fn request_json(path: &str, pb: &[u8]) -> Option<Result<String, String>> {
    methods::find(path).map(|m| (m.request_json)(pb))
}

/// Feeds a streaming call: each JSON value of the HTTP body, as it arrives, becomes a
/// request message; the body's end half-closes the call, as grpc-gateway's `CloseSend`.
async fn pump_requests(
    mut body: Body,
    limit: usize,
    m: &'static Method,
    tx: mpsc::Sender<Result<Bytes, Infallible>>,
) {
    let mut buf = BytesMut::new();
    loop {
        let mut consumed = 0;
        {
            let mut values =
                serde_json::Deserializer::from_slice(&buf).into_iter::<serde_json::Value>();
            for v in values.by_ref() {
                let msg = match v.map(m.request) {
                    Ok(Ok(msg)) => msg,
                    Ok(Err(e)) | Err(e) if !e.is_eof() => {
                        tracing::debug!(error = %e, "gateway: undecodable streamed request");
                        return;
                    }
                    _ => break,
                };
                if tx.send(Ok(frame(&msg))).await.is_err() {
                    return;
                }
            }
            consumed += values.byte_offset();
        }
        let _ = buf.split_to(consumed);
        if buf.len() > limit {
            tracing::debug!("gateway: streamed request over the size limit");
            return;
        }
        match body.frame().await {
            Some(Ok(f)) => {
                if let Ok(data) = f.into_data() {
                    buf.extend_from_slice(&data);
                }
            }
            // The client is done sending (or gone): half-close the call.
            Some(Err(_)) | None => return,
        }
    }
}

/// A request the JSON decoder refused: grpc-gateway answers InvalidArgument with the
/// decoder's text. For the commonest mistake (not JSON at all) the text is Go's.
fn bad_json(body: &[u8], e: &serde_json::Error) -> Status {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    match first {
        Some(&c) if !b"{[\"-0123456789tfn".contains(&c) => Status::invalid_argument(format!(
            "invalid character {} looking for beginning of value",
            go_quote_char(c)
        )),
        _ => Status::invalid_argument(e.to_string()),
    }
}

/// A byte as Go's `quoteChar` shows it in JSON syntax errors.
fn go_quote_char(c: u8) -> String {
    match c {
        b'\'' => "'\\''".into(),
        b'"' => "'\"'".into(),
        0x20..=0x7e => format!("'{}'", c as char),
        _ => format!("'\\x{c:02x}'"),
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: &'a str,
    code: i32,
}

#[derive(Serialize)]
struct StreamError<'a> {
    error: StreamErrorChunk<'a>,
}

#[derive(Serialize)]
struct StreamErrorChunk<'a> {
    grpc_code: i32,
    http_code: u16,
    message: &'a str,
    http_status: &'a str,
}

/// grpc-gateway v1's `HTTPStatusFromCode`.
fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::REQUEST_TIMEOUT,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::FailedPrecondition => StatusCode::PRECONDITION_FAILED,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
    }
}

fn json_response(status: StatusCode, body: String, grpc_answered: bool) -> Response {
    let mut r = (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
    if grpc_answered {
        // grpc-gateway passes the gRPC response headers on as Grpc-Metadata-*.
        r.headers_mut().insert(
            HeaderName::from_static("grpc-metadata-content-type"),
            HeaderValue::from_static("application/grpc"),
        );
    }
    r
}

fn unary_error(s: &Status) -> Response {
    let body = ErrorBody {
        error: s.message(),
        message: s.message(),
        code: s.code() as i32,
    };
    let text = serde_json::to_string(&body).unwrap_or_default();
    json_response(http_status(s.code()), text, false)
}

async fn unary(mut answer: Answer, m: &Method) -> Response {
    match answer.next().await {
        Ok(Some(msg)) => match (m.response)(&msg) {
            Ok(json) => json_response(StatusCode::OK, json, true),
            Err(e) => unary_error(&Status::internal(e)),
        },
        Ok(None) => unary_error(&Status::internal("gateway: no response message")),
        Err(s) => unary_error(&s),
    }
}

fn stream_error_chunk(s: &Status) -> Bytes {
    let status = http_status(s.code());
    let chunk = StreamError {
        error: StreamErrorChunk {
            grpc_code: s.code() as i32,
            http_code: status.as_u16(),
            message: s.message(),
            http_status: status.canonical_reason().unwrap_or(""),
        },
    };
    serde_json::to_vec(&chunk).unwrap_or_default().into()
}

fn result_line(m: &Method, msg: &[u8]) -> Result<Bytes, Status> {
    let json = (m.response)(msg).map_err(Status::internal)?;
    Ok(format!("{{\"result\":{json}}}\n").into())
}

/// A streamed answer: the status is 200 once a first message arrived, or the error's
/// status if the call failed before any; then one line per message.
async fn streamed(mut answer: Answer, m: &'static Method) -> Response {
    let first = match answer.next().await {
        Err(s) => {
            let status = http_status(s.code());
            return (
                status,
                [(header::CONTENT_TYPE, "application/json")],
                Body::from(stream_error_chunk(&s)),
            )
                .into_response();
        }
        Ok(first) => first,
    };
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(16);
    tokio::spawn(async move {
        let mut next = first;
        loop {
            let chunk = match next {
                None => return,
                Some(msg) => match result_line(m, &msg) {
                    Ok(line) => line,
                    Err(s) => stream_error_chunk(&s),
                },
            };
            if tx.send(Ok(chunk)).await.is_err() {
                // The HTTP client left: dropping the answer ends the gRPC call.
                return;
            }
            next = match answer.next().await {
                Ok(n) => n,
                Err(s) => {
                    let _ = tx.send(Ok(stream_error_chunk(&s))).await;
                    return;
                }
            };
        }
    });
    json_response(StatusCode::OK, String::new(), true)
        .map(|_| Body::from_stream(ReceiverStream::new(rx)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_text_for_a_body_that_is_not_json() {
        let e = serde_json::from_slice::<serde_json::Value>(b"garbage").expect_err("not json");
        assert_eq!(
            bad_json(b"garbage", &e).message(),
            "invalid character 'g' looking for beginning of value"
        );
    }

    #[test]
    fn errors_keep_grpc_gateway_field_order() {
        let s = Status::not_found("etcdserver: requested lease not found");
        assert_eq!(
            String::from_utf8(stream_error_chunk(&s).to_vec()).expect("utf-8"),
            r#"{"error":{"grpc_code":5,"http_code":404,"message":"etcdserver: requested lease not found","http_status":"Not Found"}}"#
        );
        assert_eq!(
            http_status(Code::FailedPrecondition),
            StatusCode::PRECONDITION_FAILED
        );
    }

    #[test]
    fn a_request_body_decodes_and_round_trips_through_its_json() {
        use prost::Message;
        let pb = decode_request("kv/put", br#"{"key":"Zm9v","value":"YmFy","lease":"7"}"#)
            .expect("known path")
            .expect("valid body");
        let req = crate::pb::etcdserverpb::PutRequest::decode(pb.clone()).expect("protobuf");
        assert_eq!(
            (&req.key[..], &req.value[..], req.lease),
            (&b"foo"[..], &b"bar"[..], 7)
        );
        let json = request_json("kv/put", &pb)
            .expect("known path")
            .expect("json");
        let again = decode_request("kv/put", json.as_bytes()).expect("known path");
        assert_eq!(again.expect("its own JSON"), pb);
        // An empty body is the empty request; bad JSON is an error; unknown paths None.
        assert!(matches!(decode_request("kv/range", b""), Some(Ok(_))));
        assert!(matches!(
            decode_request("kv/range", b"{\"key\":1"),
            Some(Err(_))
        ));
        assert!(decode_request("kv/nothing", b"{}").is_none());
        assert_eq!(paths().next(), Some("kv/range"));
    }
}
