//! Errors of the member itself (not of the keyspace), with etcd's exact messages.

/// Why the member could not serve a request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MemberError {
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
    /// MemberAdd of an ID already in the cluster.
    #[error("etcdserver: member ID already exist")]
    MemberExists,
    /// MemberAdd/MemberUpdate with a peer URL another member has.
    #[error("etcdserver: Peer URLs already exists")]
    PeerUrlExists,
    /// Peer URLs that are not `http(s)://host:port`.
    #[error("etcdserver: given member URLs are invalid")]
    BadMemberUrls,
    /// No member with that ID.
    #[error("etcdserver: member not found")]
    MemberNotFound,
    /// MemberPromote of a voter.
    #[error("etcdserver: can only promote a learner member")]
    MemberNotLearner,
    /// MemberPromote of a learner that lags the leader.
    #[error("etcdserver: can only promote a learner member which is in sync with leader")]
    LearnerNotReady,
    /// MemberAdd of a second learner (etcd allows one).
    #[error("etcdserver: too many learner members in cluster")]
    TooManyLearners,
    /// A voter change that `--strict-reconfig-check` finds could lose quorum.
    #[error("etcdserver: re-configuration failed due to not enough started members")]
    NotEnoughStarted,
    /// A voter change while this leader is not connected to enough members.
    #[error("etcdserver: unhealthy cluster")]
    Unhealthy,
    /// Another membership change has not been applied yet.
    #[error("etcdserver: a membership change is already in progress; retry once it is applied")]
    ChangeInProgress,
    /// Storage failed: the member stops.
    #[error("etcdserver: storage failure: {0}")]
    Storage(String),
}
