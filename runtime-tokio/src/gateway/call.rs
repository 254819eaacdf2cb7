//! One gRPC call made in process, through the same router (and interceptors) a gRPC
//! client's call goes through: what etcd's gateway does by dialing its own gRPC port,
//! without the socket. Messages cross as gRPC's length-prefixed frames.

use std::convert::Infallible;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Method, Request};
use axum::Router;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use http_body_util::BodyExt;
use tokio_stream::Stream;
use tonic::{Code, Status};
use tower::ServiceExt;

/// A frame's prefix: a compression flag and a big-endian length.
const PREFIX: usize = 5;

/// One message as a gRPC frame.
pub fn frame(msg: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(PREFIX + msg.len());
    b.put_u8(0);
    // Messages reaching here passed the gateway's body limit, far below 4 GiB.
    b.put_u32(u32::try_from(msg.len()).unwrap_or(u32::MAX));
    b.put_slice(msg);
    b.freeze()
}

/// Starts the call `path` with the request `frames` and the caller's metadata; the
/// answer is read with [`Answer::next`].
pub async fn start(
    grpc: Router,
    path: &'static str,
    metadata: HeaderMap,
    extensions: axum::http::Extensions,
    frames: impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static,
) -> Answer {
    let mut req = Request::new(Body::from_stream(frames));
    *req.method_mut() = Method::POST;
    *req.uri_mut() = axum::http::Uri::from_static(path);
    *req.headers_mut() = metadata;
    *req.extensions_mut() = extensions;
    let h = req.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert(header::TE, HeaderValue::from_static("trailers"));
    // The router's error type is Infallible.
    let Ok(resp) = grpc.oneshot(req).await;
    let (parts, body) = resp.into_parts();
    // A call that fails before its first message answers in the headers alone.
    let early = Status::from_header_map(&parts.headers).filter(|s| s.code() != Code::Ok);
    Answer {
        body,
        buf: BytesMut::new(),
        done: early.is_some(),
        early,
    }
}

/// The messages of a call's answer, then its status.
pub struct Answer {
    body: Body,
    buf: BytesMut,
    early: Option<Status>,
    done: bool,
}

impl Answer {
    /// The next message, `Ok(None)` at a clean end, or the call's error.
    pub async fn next(&mut self) -> Result<Option<Bytes>, Status> {
        loop {
            if let Some(msg) = self.take_message()? {
                return Ok(Some(msg));
            }
            if let Some(s) = self.early.take() {
                return Err(s);
            }
            if self.done {
                return Ok(None);
            }
            match self.body.frame().await {
                None => {
                    self.done = true;
                    if !self.buf.is_empty() {
                        return Err(Status::internal("gateway: truncated gRPC message"));
                    }
                }
                Some(Err(e)) => {
                    self.done = true;
                    return Err(Status::unavailable(e.to_string()));
                }
                Some(Ok(f)) => match f.into_data() {
                    Ok(data) => self.buf.extend_from_slice(&data),
                    Err(f) => {
                        self.done = true;
                        if let Some(t) = f.into_trailers().ok().as_ref() {
                            self.early =
                                Status::from_header_map(t).filter(|s| s.code() != Code::Ok);
                        }
                    }
                },
            }
        }
    }

    fn take_message(&mut self) -> Result<Option<Bytes>, Status> {
        if self.buf.len() < PREFIX {
            return Ok(None);
        }
        if self.buf[0] != 0 {
            return Err(Status::internal("gateway: compressed gRPC message"));
        }
        let len = (&self.buf[1..PREFIX]).get_u32() as usize;
        if self.buf.len() < PREFIX + len {
            return Ok(None);
        }
        self.buf.advance(PREFIX);
        Ok(Some(self.buf.split_to(len).freeze()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn messages_split_across_and_within_data_frames_are_found() {
        let a = frame(b"first");
        let b = frame(b"");
        let c = frame(b"third message");
        let mut all = BytesMut::new();
        for f in [&a, &b, &c] {
            all.extend_from_slice(f);
        }
        let all = all.freeze();
        // Cut mid-prefix and mid-message.
        let chunks: Vec<Result<Bytes, Infallible>> = vec![
            Ok(all.slice(..3)),
            Ok(all.slice(3..14)),
            Ok(all.slice(14..)),
        ];
        let mut ans = Answer {
            body: Body::from_stream(tokio_stream::iter(chunks)),
            buf: BytesMut::new(),
            early: None,
            done: false,
        };
        assert_eq!(
            ans.next().await.ok().flatten().as_deref(),
            Some(&b"first"[..])
        );
        assert_eq!(ans.next().await.ok().flatten().as_deref(), Some(&b""[..]));
        assert_eq!(
            ans.next().await.ok().flatten().as_deref(),
            Some(&b"third message"[..])
        );
        assert!(matches!(ans.next().await, Ok(None)));
    }

    #[tokio::test]
    async fn a_cut_message_is_an_error_not_a_hang() {
        let f = frame(b"message");
        let chunks: Vec<Result<Bytes, Infallible>> = vec![Ok(f.slice(..7))];
        let mut ans = Answer {
            body: Body::from_stream(tokio_stream::iter(chunks)),
            buf: BytesMut::new(),
            early: None,
            done: false,
        };
        let err = ans.next().await.expect_err("truncated");
        assert_eq!(err.code(), Code::Internal);
    }
}
