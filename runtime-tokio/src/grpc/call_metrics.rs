//! go-grpc-prometheus' server metrics and etcd's client byte counters, measured on the
//! HTTP/2 bodies of a gRPC call: messages are counted from gRPC's length-prefixed framing
//! (one 5-byte prefix per message), bytes are the messages' payloads (what etcd adds
//! up with `proto.Size`), and the call is "handled" when its status goes out: in the
//! trailers, in the headers of an error answered at once, or, for a call whose client
//! went away first, as `Canceled`.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use bytes::Bytes;
use http_body::{Body as _, Frame};

use crate::metrics::{GrpcCall, Metrics};

/// Splits a byte stream into gRPC messages: counts the messages begun and the payload
/// bytes seen.
#[derive(Default)]
pub struct MessageCounter {
    prefix: [u8; 5],
    prefix_len: usize,
    /// Payload bytes of the current message still to come.
    remaining: u64,
}

impl MessageCounter {
    /// Feeds the next bytes; returns (messages begun, payload bytes).
    pub fn feed(&mut self, mut data: &[u8]) -> (u64, u64) {
        let (mut messages, mut payload) = (0, 0);
        while !data.is_empty() {
            if self.remaining > 0 {
                let k = usize::try_from(self.remaining).map_or(data.len(), |r| r.min(data.len()));
                data = &data[k..];
                self.remaining -= k as u64;
                payload += k as u64;
                continue;
            }
            let k = (5 - self.prefix_len).min(data.len());
            self.prefix[self.prefix_len..self.prefix_len + k].copy_from_slice(&data[..k]);
            self.prefix_len += k;
            data = &data[k..];
            if self.prefix_len == 5 {
                messages += 1;
                let len = [
                    self.prefix[1],
                    self.prefix[2],
                    self.prefix[3],
                    self.prefix[4],
                ];
                self.remaining = u64::from(u32::from_be_bytes(len));
                self.prefix_len = 0;
            }
        }
        (messages, payload)
    }
}

/// Which way a counted body flows.
enum Direction {
    /// The request: messages received.
    Inbound,
    /// The response: messages sent, and the call's end.
    Outbound {
        started: Instant,
        /// The status answered in the headers, if any.
        header_code: Option<i32>,
        handled: bool,
    },
}

/// A call's request or response body, counted as it streams.
pub struct CountedBody {
    inner: Body,
    metrics: Arc<Metrics>,
    call: GrpcCall,
    counter: MessageCounter,
    direction: Direction,
}

impl CountedBody {
    /// The request body of `call`.
    pub fn inbound(inner: Body, metrics: Arc<Metrics>, call: GrpcCall) -> CountedBody {
        CountedBody {
            inner,
            metrics,
            call,
            counter: MessageCounter::default(),
            direction: Direction::Inbound,
        }
    }

    /// The response body of `call`, begun at `started`; `header_code` is the status if
    /// the response headers carry one (an error answered before any message).
    pub fn outbound(
        inner: Body,
        metrics: Arc<Metrics>,
        call: GrpcCall,
        started: Instant,
        header_code: Option<i32>,
    ) -> CountedBody {
        CountedBody {
            inner,
            metrics,
            call,
            counter: MessageCounter::default(),
            direction: Direction::Outbound {
                started,
                header_code,
                handled: false,
            },
        }
    }

    fn data(&mut self, data: &Bytes) {
        let (messages, bytes) = self.counter.feed(data);
        match self.direction {
            Direction::Inbound => {
                self.metrics.grpc_received_bytes.inc_by(bytes);
                if messages > 0 {
                    self.call.received(messages);
                }
            }
            Direction::Outbound { .. } => {
                self.metrics.grpc_sent_bytes.inc_by(bytes);
                if messages > 0 {
                    self.call.sent(messages);
                }
            }
        }
    }

    /// Counts the call as handled with `code` (once).
    fn handled(&mut self, code: Option<i32>) {
        if let Direction::Outbound {
            started,
            header_code,
            handled,
        } = &mut self.direction
        {
            if !*handled {
                *handled = true;
                let code = code.or(*header_code).unwrap_or(0);
                self.call.handled(code, started.elapsed());
            }
        }
    }
}

/// The status code a header map carries, if any.
pub fn status_code(headers: &axum::http::HeaderMap) -> Option<i32> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
}

impl http_body::Body for CountedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        let frame = Pin::new(&mut this.inner).poll_frame(cx);
        match &frame {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    this.data(d);
                } else if let Some(t) = f.trailers_ref() {
                    let code = status_code(t);
                    this.handled(code);
                }
            }
            // The body ended without trailers: the status was in the headers.
            Poll::Ready(None) => this.handled(None),
            Poll::Ready(Some(Err(_))) | Poll::Pending => {}
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for CountedBody {
    fn drop(&mut self) {
        // hyper may drop a body whose end it saw through `is_end_stream` without polling
        // it to the end: the headers then carried the status. Otherwise the client went
        // away mid-call, which grpc-go reports as Canceled.
        let code = match &self.direction {
            Direction::Outbound {
                header_code: Some(c),
                ..
            } => *c,
            _ if self.inner.is_end_stream() => 0,
            _ => 1,
        };
        self.handled(Some(code));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(payload: &[u8]) -> Vec<u8> {
        let mut m = vec![0];
        m.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        m.extend_from_slice(payload);
        m
    }

    #[test]
    fn messages_are_counted_however_the_stream_is_cut() {
        let mut stream = message(b"hello");
        stream.extend(message(b""));
        stream.extend(message(&[7; 300]));
        for cut in 1..stream.len() {
            let mut c = MessageCounter::default();
            let (m1, b1) = c.feed(&stream[..cut]);
            let (m2, b2) = c.feed(&stream[cut..]);
            assert_eq!((m1 + m2, b1 + b2), (3, 305), "cut at {cut}");
        }
    }
}
