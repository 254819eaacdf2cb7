//! The client listener's connections: plaintext, TLS, or both on one socket (etcd's
//! `http://` and `https://` on the same host:port, told apart as etcd's cmux does, by
//! the first bytes: a TLS handshake record starts with 0x16, HTTP/1 and the HTTP/2
//! preface with a letter). Handshakes run off the accept loop, so a slow or hostile
//! client cannot hold others up; connections ready to serve go to the gRPC/HTTP server.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, watch};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::listen::{Conn, SocketListener};
use crate::ping_policy::PingPoliced;

/// How long a client may take to send its first byte and complete its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

/// A client connection ready to serve: plaintext, or TLS whose handshake completed.
pub enum ClientConn {
    /// Plaintext.
    Plain(Conn),
    /// TLS, with the verified client certificate's common name when it names the user.
    Tls(Box<TlsStream<Conn>>, Option<String>),
}

/// What a request knows of its client's connection (a request extension).
#[derive(Clone, Debug)]
pub struct ClientConnInfo {
    /// The TCP connection (no addresses on a unix socket).
    pub tcp: TcpConnectInfo,
    /// The common name of the client certificate the handshake verified, if any: with
    /// auth enabled it names the user, as in etcd.
    pub common_name: Option<String>,
    /// The connection is TLS (a shared http/https socket carries both kinds).
    pub tls: bool,
}

impl Connected for ClientConn {
    type ConnectInfo = ClientConnInfo;

    fn connect_info(&self) -> ClientConnInfo {
        match self {
            ClientConn::Plain(c) => ClientConnInfo {
                tcp: c.tcp_info(),
                common_name: None,
                tls: false,
            },
            ClientConn::Tls(t, cn) => ClientConnInfo {
                tcp: t.get_ref().0.tcp_info(),
                common_name: cn.clone(),
                tls: true,
            },
        }
    }
}

/// The first common name in the subject of the client's leaf certificate. Only
/// certificates the verifier accepted get here (rustls fails the handshake otherwise).
fn client_common_name(tls: &TlsStream<Conn>) -> Option<String> {
    let leaf = tls.get_ref().1.peer_certificates()?.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}

macro_rules! each {
    ($self:expr, $m:ident($($a:expr),*)) => {
        match $self.get_mut() {
            ClientConn::Plain(s) => Pin::new(s).$m($($a),*),
            ClientConn::Tls(s, _) => Pin::new(&mut **s).$m($($a),*),
        }
    };
}

impl AsyncRead for ClientConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        each!(self, poll_read(cx, buf))
    }
}

impl AsyncWrite for ClientConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        each!(self, poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        each!(self, poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            ClientConn::Plain(s) => s.is_write_vectored(),
            ClientConn::Tls(s, _) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        each!(self, poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        each!(self, poll_shutdown(cx))
    }
}

/// What a client listener serves.
#[derive(Clone)]
pub struct ClientSchemes {
    /// Plaintext (an `http://` or `unix://` URL on this socket).
    pub plain: bool,
    /// TLS (an `https://` or `unixs://` URL on this socket).
    pub tls: Option<Arc<ServerConfig>>,
    /// A verified client certificate's common name is the user (`--client-cert-auth`).
    pub names_users: bool,
    /// `--grpc-keepalive-min-time`, enforced on plaintext connections (None: not at
    /// all). etcd 3.4 serves TLS connections through Go's HTTP/2 server, which does not
    /// police pings, so neither does keel.
    pub ping_min_time: Option<Duration>,
}

/// Accepts on `listener` until `stop` turns true, yielding connections ready to serve;
/// failed handshakes are logged as etcd does ("rejected connection").
pub fn client_incoming(
    listener: SocketListener,
    schemes: ClientSchemes,
    mut stop: watch::Receiver<bool>,
) -> ReceiverStream<std::io::Result<PingPoliced<ClientConn>>> {
    let (tx, rx) = mpsc::channel(64);
    let acceptor = schemes.tls.clone().map(TlsAcceptor::from);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = stop.wait_for(|s| *s) => return,
                _ = tx.closed() => return,
            };
            let (conn, remote) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: pause rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let (tx, acceptor) = (tx.clone(), acceptor.clone());
            let (plain, names_users) = (schemes.plain, schemes.names_users);
            let ping_min_time = schemes.ping_min_time;
            tokio::spawn(async move {
                let ready = tokio::time::timeout(
                    HANDSHAKE_TIMEOUT,
                    classify(conn, plain, acceptor, names_users),
                )
                .await;
                match ready {
                    Ok(Ok(Some(c))) => {
                        let min_time = match c {
                            ClientConn::Plain(_) => ping_min_time,
                            ClientConn::Tls(..) => None,
                        };
                        let _ = tx.send(Ok(PingPoliced::new(c, min_time))).await;
                    }
                    Ok(Ok(None)) => {}
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

/// Plaintext or TLS for one connection; None when it closed before saying anything.
async fn classify(
    mut conn: Conn,
    plain: bool,
    acceptor: Option<TlsAcceptor>,
    names_users: bool,
) -> std::io::Result<Option<ClientConn>> {
    let acceptor = match acceptor {
        None => return Ok(Some(ClientConn::Plain(conn))),
        Some(a) if plain => match conn.peek_first().await? {
            None => return Ok(None),
            Some(TLS_HANDSHAKE) => a,
            Some(_) => return Ok(Some(ClientConn::Plain(conn))),
        },
        Some(a) => a,
    };
    let inner = acceptor.accept(conn).await?;
    let common_name = names_users.then(|| client_common_name(&inner)).flatten();
    Ok(Some(ClientConn::Tls(Box::new(inner), common_name)))
}
