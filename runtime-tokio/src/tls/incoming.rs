//! The client listener over TLS: connections are accepted and their handshakes run off
//! the accept loop (a slow or hostile client cannot hold others up), and those that
//! complete are handed to the gRPC/HTTP server.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// How long a client may take to complete its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A client connection whose TLS handshake completed.
pub struct TlsConn {
    inner: TlsStream<TcpStream>,
    common_name: Option<String>,
}

/// What a request on a TLS connection knows of its client (a request extension).
#[derive(Clone, Debug)]
pub struct ClientConnInfo {
    /// The TCP connection.
    pub tcp: TcpConnectInfo,
    /// The common name of the client certificate the handshake verified, if any: with
    /// auth enabled it names the user, as in etcd.
    pub common_name: Option<String>,
}

impl Connected for TlsConn {
    type ConnectInfo = ClientConnInfo;

    fn connect_info(&self) -> ClientConnInfo {
        ClientConnInfo {
            tcp: self.inner.get_ref().0.connect_info(),
            common_name: self.common_name.clone(),
        }
    }
}

/// The first common name in the subject of the client's leaf certificate. Only
/// certificates the verifier accepted get here (rustls fails the handshake otherwise).
fn client_common_name(tls: &TlsStream<TcpStream>) -> Option<String> {
    let leaf = tls.get_ref().1.peer_certificates()?.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}

impl AsyncRead for TlsConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Accepts on `listener` until `stop` turns true, yielding the connections whose TLS
/// handshake succeeds; failed handshakes are logged as etcd does ("rejected connection").
/// With `names_users` a client certificate's common name is handed on as its user.
pub fn tls_incoming(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    names_users: bool,
    mut stop: watch::Receiver<bool>,
) -> ReceiverStream<std::io::Result<TlsConn>> {
    let (tx, rx) = mpsc::channel(64);
    let acceptor = TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = stop.wait_for(|s| *s) => return,
                _ = tx.closed() => return,
            };
            let (tcp, remote) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: pause rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // Without TCP_NODELAY small responses wait for delayed ACKs (~40 ms).
            let _ = tcp.set_nodelay(true);
            let (tx, acceptor) = (tx.clone(), acceptor.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(inner)) => {
                        let common_name = names_users.then(|| client_common_name(&inner)).flatten();
                        let _ = tx.send(Ok(TlsConn { inner, common_name })).await;
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(remote_addr = %remote, error = %e, "rejected connection")
                    }
                    Err(_) => {
                        tracing::warn!(remote_addr = %remote, error = "TLS handshake timed out", "rejected connection")
                    }
                }
            });
        }
    });
    ReceiverStream::new(rx)
}
