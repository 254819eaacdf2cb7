//! The connection wrapper that applies [`PingPolicy`]: it watches the bytes both ways,
//! and once the client has pinged too often it lets the server's frame in progress
//! finish, writes PING ACK and GOAWAY itself in place of anything the server writes
//! next, and closes the connection, as grpc-go's transport does.

use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

use super::frames::{goaway, ping_ack, FrameScanner, Preface, ENHANCE_YOUR_CALM};
use super::policy::{PingPolicy, TooManyPings, TOO_MANY_PINGS};

/// Where the connection stands.
enum State {
    /// Bytes pass (and are watched, for HTTP/2).
    Open,
    /// The client broke the policy; the server's writes pass until its current frame
    /// ends.
    Violated(TooManyPings),
    /// Writing PING ACK and GOAWAY: `bytes[written..]` are left.
    Ending { bytes: Vec<u8>, written: usize },
    /// The GOAWAY went out and the socket is shut: reads end, writes fail.
    Closed,
}

/// A client connection with grpc-go's ping policy applied to its HTTP/2 traffic.
/// Without a policy (TLS connections, which etcd 3.4 serves through Go's HTTP/2 server
/// and does not police) bytes just pass.
pub struct PingPoliced<T> {
    inner: T,
    policy: Option<PingPolicy>,
    preface: Preface,
    from_client: FrameScanner,
    from_server: FrameScanner,
    state: State,
}

impl<T> PingPoliced<T> {
    /// `inner`, policed with `min_time` if given.
    pub fn new(inner: T, min_time: Option<Duration>) -> PingPoliced<T> {
        PingPoliced {
            inner,
            policy: min_time.map(PingPolicy::new),
            preface: Preface::Matching(0),
            from_client: FrameScanner::default(),
            from_server: FrameScanner::default(),
            state: State::Open,
        }
    }

    /// The wrapped connection.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    fn policed(&self) -> bool {
        self.policy.is_some() && self.preface != Preface::Other
    }

    /// Watches bytes the client sent.
    fn client_bytes(&mut self, bytes: &[u8]) {
        let Some(policy) = self.policy.as_mut() else {
            return;
        };
        let preface_len = self.preface.feed(bytes);
        if self.preface != Preface::Http2 {
            return;
        }
        let now = Instant::now();
        let mut verdict = None;
        self.from_client.feed(&bytes[preface_len..], |f| {
            if let Some(v) = policy.from_client(&f, now) {
                verdict.get_or_insert(v);
            }
        });
        if let (Some(v), State::Open) = (verdict, &self.state) {
            tracing::warn!(
                "too many pings from a client; closing its connection (GOAWAY too_many_pings)"
            );
            self.state = State::Violated(v);
        }
    }

    /// Watches bytes the server wrote.
    fn server_bytes(&mut self, bytes: &[u8]) {
        if let Some(policy) = self.policy.as_mut() {
            self.from_server.feed(bytes, |f| policy.from_server(&f));
        }
    }
}

impl<T: AsyncWrite + Unpin> PingPoliced<T> {
    /// Once the server's output is at a frame boundary after a violation, writes the
    /// ending frames and shuts the socket. Ready(Ok) once closed; Ready(Ok) at once
    /// when there is nothing to end (yet).
    fn poll_end(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        loop {
            match &mut self.state {
                State::Open => return Poll::Ready(Ok(())),
                State::Violated(v) => {
                    if !self.from_server.at_boundary() {
                        return Poll::Ready(Ok(()));
                    }
                    let mut bytes = ping_ack(v.ping_data);
                    bytes.extend(goaway(v.last_stream, ENHANCE_YOUR_CALM, TOO_MANY_PINGS));
                    self.state = State::Ending { bytes, written: 0 };
                }
                State::Ending { bytes, written } => {
                    while *written < bytes.len() {
                        let n =
                            ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]))?;
                        if n == 0 {
                            return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
                        }
                        *written += n;
                    }
                    ready!(Pin::new(&mut self.inner).poll_flush(cx))?;
                    ready!(Pin::new(&mut self.inner).poll_shutdown(cx))?;
                    self.state = State::Closed;
                }
                State::Closed => return Poll::Ready(Ok(())),
            }
        }
    }

    fn ending(&self) -> bool {
        matches!(self.state, State::Ending { .. } | State::Closed)
            || matches!(self.state, State::Violated(_)) && self.from_server.at_boundary()
    }
}

fn closed() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::BrokenPipe,
        "connection closed: too many pings",
    )
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for PingPoliced<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        // The server may have nothing more to write: the ending is driven from reads too.
        if this.ending() {
            ready!(this.poll_end(cx))?;
            return Poll::Ready(Ok(())); // end of stream
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        if this.policed() {
            this.client_bytes(&buf.filled()[before..]);
            if this.ending() {
                // Written now if the socket takes it; otherwise the next poll does.
                if let Poll::Ready(Err(e)) = this.poll_end(cx) {
                    return Poll::Ready(Err(e));
                }
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for PingPoliced<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if this.ending() {
            ready!(this.poll_end(cx))?;
            return Poll::Ready(Err(closed()));
        }
        if !this.policed() {
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        }
        // The server writes first only on a connection the client has not shown to be
        // HTTP/2 (HTTP/1 answers come after a request): nothing to police there.
        if let Preface::Matching(_) = this.preface {
            this.preface = Preface::Other;
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        }
        // After a violation only the rest of the current frame goes out.
        let allowed = match this.state {
            State::Violated(_) => this.from_server.len_to_boundary(buf),
            _ => buf.len(),
        };
        let n = ready!(Pin::new(&mut this.inner).poll_write(cx, &buf[..allowed]))?;
        this.server_bytes(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if !matches!(this.state, State::Open) {
            // Rare (a violation): one slice at a time, cut at the frame boundary.
            let first = bufs
                .iter()
                .find(|b| !b.is_empty())
                .map_or(&[][..], |b| &**b);
            return Pin::new(this).poll_write(cx, first);
        }
        if !this.policed() {
            return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        }
        if let Preface::Matching(_) = this.preface {
            this.preface = Preface::Other;
            return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        }
        let n = ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, bufs))?;
        let mut left = n;
        for b in bufs {
            let take = left.min(b.len());
            this.server_bytes(&b[..take]);
            left -= take;
            if left == 0 {
                break;
            }
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.ending() {
            ready!(this.poll_end(cx))?;
            return Poll::Ready(Err(closed()));
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.ending() {
            return this.poll_end(cx);
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

impl<T: Connected> Connected for PingPoliced<T> {
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}
