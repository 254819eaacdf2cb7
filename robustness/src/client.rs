//! gRPC connections to members, with etcd's generated client types as keelctl uses
//! them. Channels connect lazily and redial by themselves, so a client keeps working
//! across a member's restart; every call is bounded by [`REQUEST_TIMEOUT`].

use std::net::SocketAddr;
use std::time::Duration;

use keel_runtime_tokio::pb::etcdserverpb::cluster_client::ClusterClient;
use keel_runtime_tokio::pb::etcdserverpb::kv_client::KvClient;
use keel_runtime_tokio::pb::etcdserverpb::lease_client::LeaseClient;
use keel_runtime_tokio::pb::etcdserverpb::maintenance_client::MaintenanceClient;
use keel_runtime_tokio::pb::etcdserverpb::watch_client::WatchClient;
use keel_runtime_tokio::pb::etcdserverpb::{StatusRequest, StatusResponse};
use tonic::transport::{Channel, Endpoint};

/// How long one request may take before its outcome is unknown.
pub const REQUEST_TIMEOUT: Duration = Duration::from_millis(1000);

/// One lazily connected channel per member.
#[derive(Clone)]
pub struct Clients {
    channels: Vec<Channel>,
    /// Channels without a request timeout, for watch and keepalive streams.
    streams: Vec<Channel>,
}

impl Clients {
    /// Channels to each member's client address.
    pub fn new(addrs: &[SocketAddr]) -> Clients {
        let endpoint = |a: &SocketAddr| {
            Endpoint::from_shared(format!("http://{a}"))
                .expect("a socket address is a valid URI")
                .connect_timeout(REQUEST_TIMEOUT)
        };
        let channels = addrs
            .iter()
            .map(|a| endpoint(a).timeout(REQUEST_TIMEOUT).connect_lazy())
            .collect();
        let streams = addrs.iter().map(|a| endpoint(a).connect_lazy()).collect();
        Clients { channels, streams }
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.channels.len()
    }

    /// Whether there are no members.
    pub fn is_empty(&self) -> bool {
        self.channels.is_empty()
    }

    /// The KV service of member `m`.
    pub fn kv(&self, m: usize) -> KvClient<Channel> {
        KvClient::new(self.channels[m].clone())
    }

    /// The Watch service of member `m` (the channel's timeout would end streams, so
    /// watch streams use a channel without one).
    pub fn watch(&self, m: usize) -> WatchClient<Channel> {
        WatchClient::new(self.streams[m].clone())
    }

    /// The Lease service of member `m` (keepalives are streams: no channel timeout;
    /// callers bound each call themselves).
    pub fn lease(&self, m: usize) -> LeaseClient<Channel> {
        LeaseClient::new(self.streams[m].clone())
    }

    /// The Maintenance service of member `m`.
    pub fn maintenance(&self, m: usize) -> MaintenanceClient<Channel> {
        MaintenanceClient::new(self.channels[m].clone())
    }

    /// The Cluster service of member `m`.
    pub fn cluster(&self, m: usize) -> ClusterClient<Channel> {
        ClusterClient::new(self.channels[m].clone())
    }

    /// Member `m`'s status, if it answers in time.
    pub async fn status(&self, m: usize) -> Option<StatusResponse> {
        let mut c = self.maintenance(m);
        match tokio::time::timeout(REQUEST_TIMEOUT, c.status(StatusRequest {})).await {
            Ok(Ok(r)) => Some(r.into_inner()),
            _ => None,
        }
    }
}
