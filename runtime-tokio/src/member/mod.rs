//! One member on tokio: a single task owns the core [`keel_core::node::Member`] (raft,
//! the state machine, the watch hub, every waiting caller's bookkeeping) and the storage,
//! fed through a channel by the gRPC services and the peer transport. The member decides;
//! the task does the I/O it asks for.
//!
//! - Writes become [`Command`]s the member proposes; the answer comes back when the
//!   entry is applied here (forwarded proposals are applied here too, so the origin
//!   answers).
//! - Reads run as closures on the member task: serializable ones at once, linearizable
//!   ones when the member says the state may be read (after a ReadIndex round confirmed
//!   leadership and the state caught up).
//! - Requests that arrive while the task is busy (fsync) are drained together, so one
//!   WAL sync covers many client writes.

mod disk;
mod driver;
mod queries;
mod watch_sink;

use crate::peer::PeerNet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use keel_core::node::{AutoCompaction, Command, MemberInfo, Outcome};
use tokio::sync::{mpsc, oneshot, watch};

pub use driver::{start, start_with_dialer, MemberTask, StartError};
pub use keel_core::node::{Header, MemberChange, MemberError as ServerError, Status};
pub use queries::{LeaseView, Progress, ReadRefused, StatusView, WatchStart};
pub use watch_sink::{watch_channel, WatchOutlet, WatchSink};

use crate::auth::{Passwords, Tokens};
use crate::metrics::Metrics;
use keel_core::auth::AuthInfo;

/// How long a client request may wait for raft before "request timed out" (etcd: 5 s
/// plus two election timeouts for writes; one value is enough here).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(7);

/// Everything a member needs to start.
#[derive(Clone, Debug)]
pub struct MemberConfig {
    /// This member's ID.
    pub id: u64,
    /// The cluster's ID.
    pub cluster_id: u64,
    /// `--name`.
    pub name: String,
    /// `--data-dir`.
    pub data_dir: PathBuf,
    /// `--wal-dir`: a dedicated WAL directory instead of `<data-dir>/member/wal`.
    pub wal_dir: Option<PathBuf>,
    /// The founding members (used only when the data dir is empty and the cluster new).
    pub initial_members: Vec<MemberInfo>,
    /// `--initial-cluster-state new` (bootstrap) or `existing` (join).
    pub new_cluster: bool,
    /// `--force-new-cluster`: restart from the data dir's WAL as a one-member cluster,
    /// every other member removed (see [`keel_core::raft::force_new_cluster`]); ignored
    /// when the data dir holds no WAL, as etcd ignores it.
    pub force_new_cluster: bool,
    /// `--heartbeat-interval` in ms.
    pub heartbeat_ms: u64,
    /// `--election-timeout` in ms.
    pub election_ms: u64,
    /// `--snapshot-count`.
    pub snapshot_count: u64,
    /// `--max-snapshots`.
    pub max_snapshots: usize,
    /// `--max-wals`.
    pub max_wals: usize,
    /// `--quota-backend-bytes` (resolved: never 0).
    pub quota_bytes: u64,
    /// `--max-txn-ops`.
    pub max_txn_ops: usize,
    /// `--max-request-bytes`.
    pub max_request_bytes: usize,
    /// `--advertise-client-urls`, published to the cluster once serving.
    pub client_urls: Vec<String>,
    /// `--pre-vote`.
    pub pre_vote: bool,
    /// Period of progress notifications to watchers created with `progress_notify`.
    pub watch_progress_interval: Duration,
    /// Period of lease checkpoints (`--experimental-enable-lease-checkpoint` and
    /// `--experimental-lease-checkpoint-interval`); None: no checkpoints.
    pub lease_checkpoint_interval: Option<Duration>,
    /// Entries kept in memory behind a snapshot for slow followers (etcd: 5000); one
    /// further behind gets the snapshot.
    pub log_tail: u64,
    /// `--auto-compaction-mode` and `--auto-compaction-retention`.
    pub auto_compaction: AutoCompaction,
    /// `--enable-v2`: serve the etcd v2 keys API subset discovery uses on the client port.
    pub enable_v2: bool,
    /// `--strict-reconfig-check`: refuse membership changes that could lose quorum.
    pub strict_reconfig: bool,
    /// `--auth-token` as given (`simple`, or `jwt,...`); see [`crate::auth::Tokens::from_spec`].
    pub auth_token: String,
    /// `--auth-token-ttl`: the simple-token TTL (0: etcd's 300 s).
    pub auth_token_ttl: Duration,
    /// `--bcrypt-cost`.
    pub bcrypt_cost: u32,
    /// `--experimental-initial-corrupt-check`: a restarting member compares its hash with
    /// its peers' before it serves, and refuses to start on a mismatch.
    pub initial_corrupt_check: bool,
    /// `--experimental-corrupt-check-time` (zero: off): how often the leader compares its
    /// hash with every follower's, raising CORRUPT on a mismatch.
    pub corrupt_check_time: Duration,
}

impl MemberConfig {
    /// Where this member's WAL and snapshots live.
    pub fn dirs(&self) -> crate::storage::DataDirs {
        crate::storage::DataDirs::new(&self.data_dir, self.wal_dir.as_deref())
    }
}

/// Where the answer to a proposal or membership change goes (one caller's channel).
pub(crate) type AnswerTx = oneshot::Sender<Result<(Outcome, Header), ServerError>>;

/// What the member task is asked to do.
pub(crate) enum Input {
    /// A message from a peer.
    Peer(keel_core::raft::Message),
    /// Propose a command on behalf of `auth` (checked when applied) and answer when
    /// applied.
    Propose {
        cmd: Command,
        auth: Option<AuthInfo>,
        reply: AnswerTx,
    },
    /// Change the cluster's membership and answer when applied.
    Change {
        change: MemberChange,
        reply: AnswerTx,
    },
    /// Stop the member task (shutdown).
    Stop,
    /// Run on the member's state (serializable) or after a ReadIndex (linearizable).
    Read { linearizable: bool, f: ReadFn },
    /// Answer once this member has applied `index`, waiting at most `limit` (dropped
    /// unanswered at stop).
    WaitApplied {
        index: u64,
        limit: Duration,
        reply: oneshot::Sender<()>,
    },
    /// A snapshot file written off the member task (its name), or why it failed.
    SnapshotSaved {
        term: u64,
        index: u64,
        result: Result<String, String>,
    },
    /// The disk thread made the persist batches up to `seq` durable.
    Persisted { seq: keel_core::raft::PersistSeq },
    /// The disk thread recorded the snapshot file at `index` (or why not).
    SnapshotRecorded {
        index: u64,
        result: Result<(), String>,
    },
    /// The disk thread failed to write or sync: fatal.
    DiskFailed(String),
    /// A peer's answer to the corruption check's HashKV request of `round`.
    PeerHash {
        round: u64,
        answer: keel_core::node::corruption::PeerHash,
    },
}

/// A read to run on the member task; the argument is `Err` if it can't be served.
pub(crate) type ReadFn = Box<dyn FnOnce(Result<&mut MemberTask, ServerError>) + Send>;

/// The way services talk to a running member.
#[derive(Clone)]
pub struct MemberHandle {
    pub(crate) tx: mpsc::Sender<Input>,
    /// This member.
    pub id: u64,
    /// Its cluster.
    pub cluster_id: u64,
    /// Latest leader and term.
    pub status: watch::Receiver<Status>,
    /// Changes each time streams opened with require-leader are to end (the member's
    /// leader monitor: too long without a leader).
    pub leader_lost: watch::Receiver<u64>,
    /// Counters and histograms for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// `--max-request-bytes`.
    pub max_request_bytes: usize,
    /// Period of watch progress notifications.
    pub watch_progress_interval: Duration,
    /// Auth tokens (`--auth-token`): issued by Authenticate, resolved for every request.
    pub tokens: Arc<Tokens>,
    /// bcrypt hashing and verification (`--bcrypt-cost`), off the member task.
    pub passwords: Arc<Passwords>,
    /// The peer transport, for calls only the leader answers.
    pub(crate) peers: PeerNet,
    /// `member/snap` of the data dir: where Snapshot RPC databases are written.
    pub snap_dir: std::path::PathBuf,
}

impl MemberHandle {
    /// Proposes a write and waits for its outcome.
    pub async fn propose(&self, cmd: Command) -> Result<(Outcome, Header), ServerError> {
        self.propose_as(cmd, None).await
    }

    /// Proposes a write of the v2 API (keys or v2 auth records). etcd keeps v2 and v3
    /// auth apart; keel stores the v2 tree in the MVCC store, so its writes go on the
    /// member's own authority, never checked against v3 permissions. The v2 handlers
    /// check v2 permissions before they get here.
    pub async fn propose_v2(&self, cmd: Command) -> Result<(Outcome, Header), ServerError> {
        self.propose_as(cmd, Some(AuthInfo::member())).await
    }

    /// Proposes a write on behalf of `auth` and waits for its outcome; with auth enabled
    /// the state machine checks its permissions when applying it (etcd's applierV3Auth).
    pub async fn propose_as(
        &self,
        cmd: Command,
        auth: Option<AuthInfo>,
    ) -> Result<(Outcome, Header), ServerError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Input::Propose { cmd, auth, reply })
            .await
            .map_err(|_| ServerError::Stopped)?;
        match tokio::time::timeout(REQUEST_TIMEOUT, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(ServerError::Stopped),
            Err(_) => Err(ServerError::Timeout),
        }
    }

    /// Changes the cluster's membership; answers once the change is applied here.
    pub async fn change(&self, change: MemberChange) -> Result<Header, ServerError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Input::Change { change, reply })
            .await
            .map_err(|_| ServerError::Stopped)?;
        match tokio::time::timeout(REQUEST_TIMEOUT, rx).await {
            Ok(Ok(r)) => r.map(|(_, h)| h),
            Ok(Err(_)) => Err(ServerError::Stopped),
            Err(_) => Err(ServerError::Timeout),
        }
    }

    /// Runs `f` on the member task's state: at once when `linearizable` is false,
    /// otherwise once the member says a linearizable read may be served. Only the typed
    /// reads of `queries.rs` use it.
    pub(crate) async fn read<R, F>(&self, linearizable: bool, f: F) -> Result<R, ServerError>
    where
        R: Send + 'static,
        F: FnOnce(&mut MemberTask) -> R + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let f: ReadFn = Box::new(move |core| {
            let _ = tx.send(core.map(f));
        });
        self.tx
            .send(Input::Read { linearizable, f })
            .await
            .map_err(|_| ServerError::Stopped)?;
        match tokio::time::timeout(REQUEST_TIMEOUT, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(ServerError::Stopped),
            Err(_) => Err(ServerError::Timeout),
        }
    }

    /// Waits until this member has applied log index `index`, at most `limit`; false if
    /// it did not get there in time (or stopped).
    pub async fn wait_applied(&self, index: u64, limit: Duration) -> bool {
        let (reply, rx) = oneshot::channel();
        if self
            .tx
            .send(Input::WaitApplied {
                index,
                limit,
                reply,
            })
            .await
            .is_err()
        {
            return false;
        }
        matches!(tokio::time::timeout(limit, rx).await, Ok(Ok(())))
    }

    /// Hands a peer's raft message to the member; false once the member has stopped.
    /// Never waits: when the member is overwhelmed the message is dropped, and raft
    /// retransmits.
    pub fn deliver(&self, m: keel_core::raft::Message) -> bool {
        !matches!(
            self.tx.try_send(Input::Peer(m)),
            Err(mpsc::error::TrySendError::Closed(_))
        )
    }

    /// Stops the member task: pending requests fail with "server stopped".
    pub async fn stop(&self) {
        let _ = self.tx.send(Input::Stop).await;
        self.tx.closed().await;
    }

    /// Runs `f` on the member task's state now: for tests and tools (the services use
    /// the typed reads of `queries.rs`).
    pub async fn local<R, F>(&self, f: F) -> Result<R, ServerError>
    where
        R: Send + 'static,
        F: FnOnce(&mut MemberTask) -> R + Send + 'static,
    {
        self.read(false, f).await
    }
}
