//! Errors of the member itself (not of the keyspace), with etcd's exact messages.

/// Why the member could not serve a request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ServerError {
    /// No leader is known.
    #[error("etcdserver: no leader")]
    NoLeader,
    /// Raft did not answer in time.
    #[error("etcdserver: request timed out")]
    Timeout,
    /// The member is shutting down.
    #[error("etcdserver: server stopped")]
    Stopped,
    /// A read could not be confirmed because leadership changed.
    #[error("etcdserver: leader changed")]
    LeaderChanged,
    /// The encoded request exceeds `--max-request-bytes`.
    #[error("etcdserver: request is too large")]
    TooLarge,
    /// Something only the leader can do.
    #[error("etcdserver: not leader")]
    NotLeader,
    /// Too many proposals are waiting for a slow quorum.
    #[error("etcdserver: too many requests")]
    TooManyRequests,
    /// This member was removed from the cluster.
    #[error("etcdserver: the member has been permanently removed from the cluster")]
    Removed,
    /// A leadership transfer target that is not a voter.
    #[error("etcdserver: bad leader transferee")]
    BadTransferee,
    /// Storage failed: the member stops.
    #[error("etcdserver: storage failure: {0}")]
    Storage(String),
}
