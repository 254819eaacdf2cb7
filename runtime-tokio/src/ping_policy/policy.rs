//! grpc-go's keepalive enforcement (`internal/transport/http2_server.go`, `handlePing`,
//! v1.26 as etcd 3.4 builds it), fed with the frames of one connection:
//!
//! - a client PING (not an ACK) is a strike when it comes sooner than `min_time` after
//!   the previous one while a stream is open, or sooner than two hours while none is
//!   (`PermitWithoutStream: false`, as etcd sets it); the first PING never is;
//! - any DATA, or trailers, the server sends forgive: the next PING is not checked and
//!   clears the strikes. grpc-go forgives on any HEADERS too, but it sends a response's
//!   headers only with its first message, while tonic sends a streaming call's headers
//!   as soon as the handler returns: counting those would forgive an idle Watch stream's
//!   pings that etcd does not;
//! - the third strike ends the connection: PING ACK, GOAWAY ENHANCE_YOUR_CALM
//!   "too_many_pings" naming the last stream the client opened, then close.
//!
//! A stream counts as open from the client's HEADERS that start it until the server
//! ends it (END_STREAM on its HEADERS or DATA) or either side resets it, which is when
//! grpc-go removes it from `activeStreams`.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::frames::{Frame, Kind, ACK};

/// grpc-go's `maxPingStrikes`: a connection may exceed the policy this often.
const MAX_PING_STRIKES: u8 = 2;

/// grpc-go's `defaultPingTimeout`: how far apart PINGs must be with no stream open.
const NO_STREAM_MIN_TIME: Duration = Duration::from_secs(2 * 60 * 60);

/// grpc-go's `defaultKeepalivePolicyMinTime`, which applies when etcd is given
/// `--grpc-keepalive-min-time=0` (etcd then sets no policy and grpc-go's stays).
pub const GRPC_DEFAULT_MIN_TIME: Duration = Duration::from_secs(5 * 60);

/// The GOAWAY debug data grpc-go sends.
pub const TOO_MANY_PINGS: &[u8] = b"too_many_pings";

/// The client broke the policy once too often.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooManyPings {
    /// The data of the PING that was one too many, to acknowledge before the GOAWAY.
    pub ping_data: [u8; 8],
    /// The highest stream the client opened (GOAWAY's last stream ID).
    pub last_stream: u32,
}

/// The enforcement state of one connection.
#[derive(Debug)]
pub struct PingPolicy {
    min_time: Duration,
    last_ping: Option<Instant>,
    strikes: u8,
    forgiven: bool,
    open_streams: BTreeSet<u32>,
    last_stream: u32,
}

impl PingPolicy {
    /// A connection's policy; `min_time` is `--grpc-keepalive-min-time` (zero: grpc-go's
    /// default of five minutes, as in etcd).
    pub fn new(min_time: Duration) -> PingPolicy {
        PingPolicy {
            min_time: if min_time.is_zero() {
                GRPC_DEFAULT_MIN_TIME
            } else {
                min_time
            },
            last_ping: None,
            strikes: 0,
            forgiven: false,
            open_streams: BTreeSet::new(),
            last_stream: 0,
        }
    }

    /// A frame from the client, received at `now`.
    pub fn from_client(&mut self, f: &Frame, now: Instant) -> Option<TooManyPings> {
        match f.kind {
            // Client streams have odd IDs that only grow; HEADERS on a known stream are
            // trailers, not a new stream.
            Kind::Headers if f.stream > self.last_stream && f.stream % 2 == 1 => {
                self.last_stream = f.stream;
                self.open_streams.insert(f.stream);
                None
            }
            Kind::RstStream => {
                self.open_streams.remove(&f.stream);
                None
            }
            Kind::Ping if f.flags & ACK == 0 => self.ping(f.ping_data, now),
            _ => None,
        }
    }

    /// A frame the server sends.
    pub fn from_server(&mut self, f: &Frame) {
        match f.kind {
            Kind::Data => {
                self.forgiven = true;
                if f.ends_stream() {
                    self.open_streams.remove(&f.stream);
                }
            }
            Kind::Headers if f.ends_stream() => {
                self.forgiven = true;
                self.open_streams.remove(&f.stream);
            }
            Kind::RstStream => {
                self.open_streams.remove(&f.stream);
            }
            _ => {}
        }
    }

    fn ping(&mut self, ping_data: [u8; 8], now: Instant) -> Option<TooManyPings> {
        let last = self.last_ping.replace(now);
        if std::mem::take(&mut self.forgiven) {
            self.strikes = 0;
            return None;
        }
        let min_gap = if self.open_streams.is_empty() {
            NO_STREAM_MIN_TIME
        } else {
            self.min_time
        };
        if last.is_some_and(|last| now.saturating_duration_since(last) < min_gap) {
            self.strikes += 1;
        }
        (self.strikes > MAX_PING_STRIKES).then_some(TooManyPings {
            ping_data,
            last_stream: self.last_stream,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_millis(500);

    fn frame(kind: Kind, flags: u8, stream: u32) -> Frame {
        Frame {
            kind,
            flags,
            stream,
            ping_data: [0; 8],
        }
    }

    fn ping(n: u8) -> Frame {
        Frame {
            ping_data: [n; 8],
            ..frame(Kind::Ping, 0, 0)
        }
    }

    /// Sends `count` PINGs `gap` apart from `start`; the number of the first one
    /// answered with GOAWAY, if any.
    fn pings(p: &mut PingPolicy, start: Instant, gap: Duration, count: u8) -> Option<u8> {
        (1..=count).find(|&n| {
            let at = start + gap * u32::from(n);
            let verdict = p.from_client(&ping(n), at);
            if let Some(v) = verdict {
                assert_eq!(v.ping_data, [n; 8]);
            }
            verdict.is_some()
        })
    }

    fn with_stream(min: Duration) -> PingPolicy {
        let mut p = PingPolicy::new(min);
        p.from_client(&frame(Kind::Headers, 0x4, 1), Instant::now());
        p
    }

    #[test]
    fn the_fourth_ping_too_soon_ends_the_connection() {
        let now = Instant::now();
        let mut p = with_stream(MIN);
        assert_eq!(pings(&mut p, now, MIN / 5, 10), Some(4));
        // With no stream, even pings that respect min_time are too soon.
        let mut p = PingPolicy::new(MIN);
        assert_eq!(pings(&mut p, now, MIN * 2, 10), Some(4));
        assert_eq!(
            PingPolicy::new(MIN).from_client(&ping(1), now),
            None,
            "a first ping is never a strike"
        );
    }

    #[test]
    fn pings_min_time_apart_with_a_stream_open_are_fine() {
        let now = Instant::now();
        let mut p = with_stream(MIN);
        assert_eq!(pings(&mut p, now, MIN, 50), None);
        // Two hours apart with no stream open are fine too.
        let mut p = PingPolicy::new(MIN);
        assert_eq!(pings(&mut p, now, NO_STREAM_MIN_TIME, 5), None);
    }

    #[test]
    fn zero_min_time_is_grpc_gos_five_minutes() {
        let now = Instant::now();
        let mut p = with_stream(Duration::ZERO);
        assert_eq!(pings(&mut p, now, Duration::from_secs(299), 10), Some(4));
        let mut p = with_stream(Duration::ZERO);
        assert_eq!(pings(&mut p, now, Duration::from_secs(300), 10), None);
    }

    #[test]
    fn server_headers_or_data_forgive_the_next_ping() {
        let t = Instant::now();
        let gap = Duration::from_millis(10);
        for sent in [frame(Kind::Data, 0, 1), frame(Kind::Headers, 0x5, 3)] {
            let mut p = with_stream(MIN);
            for n in 0..20u32 {
                // Strike, strike, then the server answers: the next ping clears them.
                let at = t + gap * n;
                assert_eq!(p.from_client(&ping(1), at), None, "ping {n}");
                if n % 3 == 2 {
                    p.from_server(&sent);
                }
            }
        }
        // Other server frames (WINDOW_UPDATE, PING ACK, response headers without a
        // message) do not.
        for sent in [
            frame(Kind::Other(0x8), 0, 0),
            frame(Kind::Ping, ACK, 0),
            frame(Kind::Headers, 0x4, 1),
        ] {
            let mut p = with_stream(MIN);
            for n in 1..=3u32 {
                assert_eq!(p.from_client(&ping(1), t + gap * n), None);
                p.from_server(&sent);
            }
            assert!(p.from_client(&ping(1), t + gap * 4).is_some(), "{sent:?}");
        }
    }

    #[test]
    fn a_stream_is_open_until_the_server_ends_it_or_either_side_resets_it() {
        let t = Instant::now();
        let open = |p: &PingPolicy| !p.open_streams.is_empty();
        let mut p = with_stream(MIN);
        // The client's END_STREAM (a unary request) leaves it open for the server.
        p.from_client(&frame(Kind::Data, 0x1, 1), t);
        assert!(open(&p));
        p.from_server(&frame(Kind::Headers, 0x4, 1));
        assert!(open(&p));
        p.from_server(&frame(Kind::Headers, 0x5, 1));
        assert!(!open(&p));
        // Trailers-looking HEADERS on an old stream do not reopen it.
        p.from_client(&frame(Kind::Headers, 0x5, 1), t);
        assert!(!open(&p));
        p.from_client(&frame(Kind::Headers, 0x4, 3), t);
        p.from_client(&frame(Kind::RstStream, 0, 3), t);
        assert!(!open(&p));
        p.from_client(&frame(Kind::Headers, 0x4, 5), t);
        p.from_server(&frame(Kind::RstStream, 0, 5));
        assert!(!open(&p));
        p.from_client(&frame(Kind::Headers, 0x4, 7), t);
        p.from_server(&frame(Kind::Data, 0x1, 7));
        assert!(!open(&p));
        // The GOAWAY names the highest stream the client opened.
        assert_eq!(pings(&mut p, t, MIN, 4).map(|_| p.last_stream), Some(7));
    }

    #[test]
    fn ping_acks_from_the_client_are_not_pings() {
        let t = Instant::now();
        let mut p = with_stream(MIN);
        for n in 0..10u32 {
            assert_eq!(
                p.from_client(
                    &frame(Kind::Ping, ACK, 0),
                    t + Duration::from_millis(n.into())
                ),
                None
            );
        }
    }
}
