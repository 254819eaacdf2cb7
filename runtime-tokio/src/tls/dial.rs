//! Opening a stream to a peer URL: plain TCP for `http://`, TLS for `https://` with this
//! member's peer certificate as the client certificate; `unix://` and `unixs://` the
//! same over the unix socket named by the URL's host:port (etcd's unix transport).

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::TlsConnector;

use super::url_host;
use crate::listen::{is_secure_url, is_unix_url};

/// A byte stream to or from a peer, over TCP or TLS.
pub trait PeerIo: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> PeerIo for T {}

/// Dials peer URLs; `Default` dials plain TCP only.
#[derive(Clone, Default)]
pub struct PeerDialer {
    tls: Option<TlsConnector>,
}

impl std::fmt::Debug for PeerDialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerDialer")
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// How long a TCP connect plus TLS handshake to a peer may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(2);

impl PeerDialer {
    /// A dialer for http peer URLs only.
    pub fn plain() -> PeerDialer {
        PeerDialer::default()
    }

    pub(super) fn with_tls(cfg: Arc<ClientConfig>) -> PeerDialer {
        PeerDialer {
            tls: Some(TlsConnector::from(cfg)),
        }
    }

    /// Connects to `url` (TCP_NODELAY set), with TLS for an https URL.
    pub async fn connect(&self, url: &str) -> std::io::Result<Box<dyn PeerIo>> {
        tokio::time::timeout(DIAL_TIMEOUT, self.connect_unbounded(url))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
    }

    async fn connect_unbounded(&self, url: &str) -> std::io::Result<Box<dyn PeerIo>> {
        let invalid = || {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{url}: not a peer URL"),
            )
        };
        let rest = url.split_once("://").map_or(url, |(_, r)| r);
        let host_port = rest
            .split('/')
            .next()
            .filter(|hp| !hp.is_empty())
            .ok_or_else(invalid)?;
        let stream: Box<dyn PeerIo> = if is_unix_url(url) {
            Box::new(UnixStream::connect(host_port).await?)
        } else {
            let tcp = TcpStream::connect(host_port).await?;
            tcp.set_nodelay(true)?;
            Box::new(tcp)
        };
        if !is_secure_url(url) {
            return Ok(stream);
        }
        let Some(tls) = &self.tls else {
            return Err(std::io::Error::other(format!(
                "{url} is an https peer URL, but this member has no peer TLS (--peer-cert-file/--peer-key-file or --peer-auto-tls)"
            )));
        };
        let host = url_host(url).ok_or_else(invalid)?;
        let name = ServerName::try_from(host.to_string()).map_err(|_| invalid())?;
        Ok(Box::new(tls.connect(name, stream).await?))
    }
}
