//! The sockets behind etcd's listen URLs: TCP for `http(s)://host:port`, a unix socket
//! for `unix(s)://host:port`, whose path is the URL's `host:port` taken literally
//! (relative to the working directory), as etcd's `net.Listen("unix", u.Host)`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tonic::transport::server::TcpConnectInfo;

/// Where a listen URL binds.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum BindAddr {
    /// A TCP address (`http://` and `https://`).
    Tcp(SocketAddr),
    /// A unix socket path (`unix://` and `unixs://`).
    Unix(PathBuf),
}

impl std::fmt::Display for BindAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BindAddr::Tcp(a) => write!(f, "tcp {a}"),
            BindAddr::Unix(p) => write!(f, "unix {}", p.display()),
        }
    }
}

/// Whether a URL's scheme puts it on a unix socket.
pub fn is_unix_url(url: &str) -> bool {
    url.starts_with("unix://") || url.starts_with("unixs://")
}

/// Whether a URL's scheme asks for TLS (`https://` or `unixs://`).
pub fn is_secure_url(url: &str) -> bool {
    url.starts_with("https://") || url.starts_with("unixs://")
}

/// The unix socket path of a `unix(s)://host:port` URL: `host:port` itself.
pub fn unix_path(url: &str) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("unix://")
        .or_else(|| url.strip_prefix("unixs://"))?;
    (!rest.is_empty()).then(|| PathBuf::from(rest))
}

/// A bound listen socket. A unix socket's file is removed when the listener is dropped,
/// as Go removes it when etcd closes its listener.
#[derive(Debug)]
pub enum SocketListener {
    /// TCP.
    Tcp(TcpListener),
    /// A unix socket and the path it was bound at.
    Unix(UnixListener, PathBuf),
}

impl From<TcpListener> for SocketListener {
    fn from(l: TcpListener) -> SocketListener {
        SocketListener::Tcp(l)
    }
}

impl SocketListener {
    /// Binds `addr`. For a unix socket, `replace_stale` first removes a file left at the
    /// path (etcd does so for peer sockets; its client sockets fail with "address
    /// already in use" instead).
    pub async fn bind(addr: &BindAddr, replace_stale: bool) -> std::io::Result<SocketListener> {
        match addr {
            BindAddr::Tcp(a) => Ok(SocketListener::Tcp(TcpListener::bind(a).await?)),
            BindAddr::Unix(p) => {
                if replace_stale {
                    match std::fs::remove_file(p) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                        _ => {}
                    }
                }
                Ok(SocketListener::Unix(UnixListener::bind(p)?, p.clone()))
            }
        }
    }

    /// The next connection and a printable remote address.
    pub async fn accept(&self) -> std::io::Result<(Conn, String)> {
        match self {
            SocketListener::Tcp(l) => {
                let (s, from) = l.accept().await?;
                // Without TCP_NODELAY small responses wait for delayed ACKs (~40 ms).
                let _ = s.set_nodelay(true);
                Ok((Conn::new(Stream::Tcp(s)), from.to_string()))
            }
            SocketListener::Unix(l, p) => {
                let (s, _) = l.accept().await?;
                Ok((Conn::new(Stream::Unix(s)), p.display().to_string()))
            }
        }
    }

    /// The bound TCP address (None for a unix socket).
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        match self {
            SocketListener::Tcp(l) => l.local_addr().ok(),
            SocketListener::Unix(..) => None,
        }
    }
}

impl Drop for SocketListener {
    fn drop(&mut self) {
        if let SocketListener::Unix(_, p) = self {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[derive(Debug)]
enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// An accepted connection, TCP or unix, with bytes already read from it (to tell TLS
/// from plaintext) handed back first.
#[derive(Debug)]
pub struct Conn {
    stream: Stream,
    replay: Vec<u8>,
}

impl Conn {
    fn new(stream: Stream) -> Conn {
        Conn {
            stream,
            replay: Vec::new(),
        }
    }

    /// Reads the first byte, which later reads return again; None at end of stream.
    pub async fn peek_first(&mut self) -> std::io::Result<Option<u8>> {
        use tokio::io::AsyncReadExt;
        if let Some(b) = self.replay.first() {
            return Ok(Some(*b));
        }
        let mut b = [0u8; 1];
        let n = match &mut self.stream {
            Stream::Tcp(s) => s.read(&mut b).await?,
            Stream::Unix(s) => s.read(&mut b).await?,
        };
        if n == 0 {
            return Ok(None);
        }
        self.replay.push(b[0]);
        Ok(Some(b[0]))
    }

    /// The TCP addresses (none for a unix socket).
    pub fn tcp_info(&self) -> TcpConnectInfo {
        match &self.stream {
            Stream::Tcp(s) => TcpConnectInfo {
                local_addr: s.local_addr().ok(),
                remote_addr: s.peer_addr().ok(),
            },
            Stream::Unix(_) => TcpConnectInfo {
                local_addr: None,
                remote_addr: None,
            },
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if !this.replay.is_empty() {
            let n = this.replay.len().min(buf.remaining());
            buf.put_slice(&this.replay[..n]);
            this.replay.drain(..n);
            return Poll::Ready(Ok(()));
        }
        match &mut this.stream {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match &mut self.get_mut().stream {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match &mut self.get_mut().stream {
            Stream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.stream {
            Stream::Tcp(s) => s.is_write_vectored(),
            Stream::Unix(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn unix_urls_name_their_host_port_as_a_path() {
        assert_eq!(
            unix_path("unix://localhost:12345"),
            Some(PathBuf::from("localhost:12345"))
        );
        assert_eq!(unix_path("unixs://a:1"), Some(PathBuf::from("a:1")));
        assert_eq!(unix_path("http://a:1"), None);
        assert!(is_secure_url("unixs://a:1") && is_secure_url("https://a:1"));
        assert!(!is_secure_url("unix://a:1") && !is_secure_url("http://a:1"));
    }

    #[tokio::test]
    async fn a_peeked_byte_is_read_again_and_the_socket_file_goes_with_the_listener() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("localhost:1");
        std::fs::write(&path, b"stale").unwrap();
        let addr = BindAddr::Unix(path.clone());
        // A client socket does not replace a file in its way; a peer socket does.
        assert!(SocketListener::bind(&addr, false).await.is_err());
        let l = SocketListener::bind(&addr, true).await.unwrap();
        let mut c = UnixStream::connect(&path).await.unwrap();
        c.write_all(b"\x16hello").await.unwrap();
        let (mut s, _) = l.accept().await.unwrap();
        assert_eq!(s.peek_first().await.unwrap(), Some(0x16));
        assert_eq!(s.peek_first().await.unwrap(), Some(0x16));
        let mut got = [0u8; 6];
        s.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"\x16hello");
        drop(l);
        assert!(!path.exists());
    }
}
