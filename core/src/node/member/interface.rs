//! What goes into a [`super::Member`] and what comes out: the driver's side of it.

use crate::auth::{AuthInfo, TokenKeeper};
use crate::mvcc::Event;
use crate::node::{AutoCompaction, Command, Outcome};
use crate::raft::{Entry, LogIndex, Message, PersistBatch, Snapshot, Time};

use super::{CorruptCheck, HashRequest, MemberChange, MemberError};
use crate::node::corruption::PeriodicVerdict;

/// A driver's name for one waiting caller; the member hands it back with the answer.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Token(pub u64);

/// The header every response carries.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Header {
    /// Keyspace revision when the request was served.
    pub revision: i64,
    /// Raft term.
    pub raft_term: u64,
}

/// What a member is and the policies it follows.
#[derive(Clone, Debug)]
pub struct MemberConfig {
    /// This member's ID.
    pub id: u64,
    /// `--name`, published to the cluster.
    pub name: String,
    /// `--advertise-client-urls`, published to the cluster.
    pub client_urls: Vec<String>,
    /// `--election-timeout` in ms (leases are extended by it on a new leader).
    pub election_ms: u64,
    /// `--heartbeat-interval` in ms (a heartbeat later than twice it is reported).
    pub heartbeat_ms: u64,
    /// `--max-request-bytes`: a larger encoded proposal is refused.
    pub max_request_bytes: usize,
    /// `--strict-reconfig-check`.
    pub strict_reconfig: bool,
    /// `--snapshot-count`: applied entries between this member's own snapshots.
    pub snapshot_count: u64,
    /// `--auto-compaction-mode` and `--auto-compaction-retention`.
    pub auto_compaction: AutoCompaction,
    /// Wall-clock ms at start: seeds request numbers (so a restarted member never takes
    /// a replayed entry of its previous life for a new request) and lease IDs.
    pub start_ms: u64,
    /// Period of housekeeping (lease expiry, compaction slices, publishing), in ms.
    pub housekeeping_ms: u64,
    /// Report every applied entry in [`Output::applied`] (the simulator's observer).
    pub record_applied: bool,
    /// `--experimental-lease-checkpoint-interval` in ms while lease checkpoints are
    /// enabled (`--experimental-enable-lease-checkpoint`); None: disabled.
    pub lease_checkpoint_ms: Option<u64>,
    /// `--experimental-corrupt-check-time`: the leader's periodic corruption check;
    /// None: off.
    pub corrupt_check: Option<CorruptCheck>,
}

/// How a caller waits.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Call {
    /// Handed back with the answer.
    pub token: Token,
    /// Past this time the caller is answered "request timed out" if still waiting.
    pub deadline: Time,
    /// clientv3's require-leader: fail at once with "no leader" rather than wait.
    pub require_leader: bool,
}

/// What a caller asks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Propose a command on behalf of `auth` (checked when applied); answered with
    /// [`Response::Applied`].
    Propose {
        /// The command.
        cmd: Command,
        /// Whose permissions apply (None: no auth check).
        auth: Option<AuthInfo>,
    },
    /// Change the cluster's membership; answered with [`Response::Applied`].
    Change(MemberChange),
    /// A linearizable read: answered [`Response::Read`] once the leader confirmed its
    /// commit index and this member applied it; serve it from the state then.
    Read,
    /// Answered [`Response::Reached`] once this member applied `index`.
    WaitApplied {
        /// The log index.
        index: u64,
    },
}

/// A successful answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// The proposal or membership change was applied.
    Applied {
        /// What applying it did.
        outcome: Outcome,
        /// The header as of its application.
        header: Header,
    },
    /// The state may be read now for a linearizable read.
    Read,
    /// The index waited for is applied.
    Reached,
}

/// What a member shows of itself.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Status {
    /// Current leader (0: none).
    pub leader: u64,
    /// Current term.
    pub term: u64,
    /// Whether this member leads.
    pub is_leader: bool,
    /// This member's name and client URLs are in the replicated member table (etcd
    /// serves clients only from then on).
    pub published: bool,
}

/// Something worth a log line or a metric.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Note {
    /// This member became leader.
    BecameLeader {
        /// Its term.
        term: u64,
    },
    /// Another member was elected.
    LeaderElected {
        /// The leader.
        leader: u64,
        /// Its term.
        term: u64,
    },
    /// The leader was lost.
    NoLeader {
        /// The term.
        term: u64,
    },
    /// A membership change was proposed.
    ChangeProposed {
        /// The change.
        change: MemberChange,
        /// Its log index.
        index: LogIndex,
    },
    /// A raft configuration change was applied.
    ConfChangeApplied {
        /// "added member", "added learner", "promoted learner" or "removed member".
        what: &'static str,
        /// The member.
        member: u64,
        /// Its log index.
        index: LogIndex,
    },
    /// A snapshot from the leader was installed.
    SnapshotInstalled {
        /// Its index.
        index: LogIndex,
    },
    /// The compactor proposed a compaction.
    AutoCompaction {
        /// To this revision.
        revision: i64,
    },
    /// A proposal of the member's own (lease revocation, compaction, publishing) was
    /// refused by raft.
    ProposalFailed,
    /// This member was removed from the cluster.
    Removed,
    /// The CORRUPT alarm was raised (it was not before): etcd warns "alarm raised" on
    /// every member as it applies it.
    CorruptAlarmRaised {
        /// The member it was raised against (0 from the corruption checks).
        from: u64,
    },
    /// A heartbeat to `to` left more than two heartbeat intervals after the previous
    /// one (etcd's `etcd_server_heartbeat_send_failures_total` and its warning).
    HeartbeatLate {
        /// The peer.
        to: u64,
        /// By how much it exceeded the two intervals, in ms.
        exceeded_ms: u64,
    },
    /// A ReadIndex request failed: the leader changed before it was confirmed (etcd's
    /// `etcd_server_read_indexes_failed_total`).
    ReadIndexFailed,
    /// A lease this member's lessor found expired was revoked through raft (etcd's
    /// `etcd_debugging_server_lease_expired_total`).
    LeaseExpired,
    /// A periodic corruption check ended: what it found (etcd's warnings) and how many
    /// peers' hashes it compared.
    CorruptionChecked(PeriodicVerdict),
    /// A periodic corruption check could not finish (its read failed: etcd's "failed
    /// to check hash KV").
    CorruptionCheckFailed(String),
    /// Streams opened with require-leader must end now with "etcdserver: no leader"
    /// (the leader has been gone too long: see [`super::NO_LEADER_PERIODS`]).
    EndLeaderlessStreams,
}

/// What the auth token keeper must do (every member keeps simple tokens in step with
/// the auth store, as etcd's simple token keeper does).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthNote {
    /// An Authenticate entry issued this simple token.
    Issued {
        /// The user.
        name: String,
        /// The token.
        token: String,
        /// The auth revision it was issued at.
        revision: u64,
    },
    /// The user was deleted or changed password: their tokens go.
    UserInvalidated(String),
    /// Auth is disabled: every token goes.
    AllInvalidated,
}

impl AuthNote {
    /// Applies the note to a token table; an error says why a token could not be issued.
    pub fn apply(self, keeper: &mut impl TokenKeeper, now: Time) -> Result<(), String> {
        match self {
            AuthNote::Issued {
                name,
                token,
                revision,
            } => keeper
                .issue(&name, &token, revision, now)
                .map_err(|e| format!("could not issue an auth token to {name}: {e}")),
            AuthNote::UserInvalidated(name) => {
                keeper.invalidate_user(&name);
                Ok(())
            }
            AuthNote::AllInvalidated => {
                keeper.invalidate_all();
                Ok(())
            }
        }
    }
}

/// One applied entry, for an observer ([`MemberConfig::record_applied`]).
#[derive(Clone, Debug)]
pub struct AppliedRecord {
    /// The entry.
    pub entry: Entry,
    /// The keyspace events it caused.
    pub events: Vec<Event>,
    /// The lease it revoked, if it was a revocation that took effect.
    pub revoked: Option<i64>,
    /// The voters after it, if it changed the configuration.
    pub voters: Option<Vec<u64>>,
}

/// What the driver must do now.
#[derive(Debug, Default)]
pub struct Output {
    /// Send to peers.
    pub messages: Vec<Message>,
    /// Write (and sync if `must_sync`), then call [`super::Member::persisted`].
    pub persist: Option<PersistBatch>,
    /// Write this snapshot file (off the loop is fine), then call
    /// [`super::Member::snapshot_saved`].
    pub snapshot: Option<Snapshot>,
    /// WAL segments whose entries all lie at or below this index may be released (a
    /// durable snapshot covers them, and a newer one exists in case it proves corrupt).
    pub release_wal: Option<LogIndex>,
    /// Answers for waiting callers.
    pub replies: Vec<(Token, Result<Response, MemberError>)>,
    /// Peers' HashKV to ask for the corruption check; answers go to
    /// [`super::Member::peer_hash`].
    pub hash_requests: Vec<HashRequest>,
    /// The member's status, when it changed.
    pub status: Option<Status>,
    /// The member table changed (the peer transport's addresses may have).
    pub members_changed: bool,
    /// Log lines and metrics.
    pub notes: Vec<Note>,
    /// For the auth token keeper.
    pub auth: Vec<AuthNote>,
    /// Applied entries ([`MemberConfig::record_applied`] only).
    pub applied: Vec<AppliedRecord>,
    /// Entries applied in this output.
    pub applied_count: u64,
    /// The member must stop (storage failure, removed from the cluster).
    pub fatal: Option<MemberError>,
    /// Call [`super::Member::tick`] at this time.
    pub wake_at: Time,
    /// Nothing more is ready: the driver may wait for the next input.
    pub idle: bool,
}
