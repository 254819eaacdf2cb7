//! The member task: owns the core [`Member`], turns inputs into its calls and executes
//! what it hands back (persist, send, write snapshots, answer callers, feed watch
//! streams). Every decision is the member's; this file is I/O.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keel_core::node::corruption::KvHash;
use keel_core::node::{
    AuthNote, Call, CorruptCheck, HashRequest, Member, MemberConfig as CoreConfig, Note, Output,
    Request, Response, StateMachine, Token,
};
use keel_core::raft::{
    force_new_cluster, ConfState, Config, LogIndex, MemberId, RaftNode, RecoveredState, Time,
};
use tokio::sync::{mpsc, oneshot, watch};

use super::disk::{Disk, DiskJob};
use super::WatchSink;
use super::{
    AnswerTx, Input, MemberConfig, MemberHandle, ReadFn, ServerError, Status, REQUEST_TIMEOUT,
};
use crate::auth::{Passwords, Tokens};
use crate::metrics::{Metrics, SLOW_APPLY};
use crate::peer::PeerNet;
use crate::storage::{SnapshotWriter, Storage, StoragePolicy};
use crate::MonotonicClock;
use keel_core::mvcc::{ProgressFor, WatchResponse, STREAM_PROGRESS_ID};

/// Period of the member's housekeeping (lease expiry, compaction slices, publishing).
const HOUSEKEEPING_MS: u64 = 500;

/// A caller waiting for the member's answer.
enum Waiter {
    /// A proposal or membership change.
    Answer(AnswerTx),
    /// A linearizable read, run on the member's state once it may be served.
    Read(ReadFn),
    /// Waiting for an applied index.
    Reached(oneshot::Sender<()>),
}

/// The member task's values; reads run against them.
pub struct MemberTask {
    /// The member's decisions: raft, the state machine, watches, waiting callers.
    pub member: Member,
    /// Where each watcher's responses go.
    pub sinks: HashMap<i64, WatchSink>,
    /// The core's clock.
    pub clock: MonotonicClock,
    /// This member.
    pub id: u64,
    /// Its cluster.
    pub cluster_id: u64,
    /// `--name`.
    pub name: String,
    /// The WAL and snapshot files, written on their own thread.
    disk: Disk,
    /// Writes this member's own snapshot files (on a blocking thread).
    snapshots: SnapshotWriter,
    net: PeerNet,
    metrics: Arc<Metrics>,
    status: watch::Sender<Status>,
    /// Bumped each time required-leader streams are to end (see `grpc::interceptor`).
    leader_lost: watch::Sender<u64>,
    waiters: HashMap<Token, Waiter>,
    next_token: u64,
    wake: Instant,
    /// Auth tokens: every member records the simple tokens Authenticate entries issue.
    tokens: Arc<Tokens>,
    /// The member's own inbox, for work finished off its task (weak: the task must
    /// still end when every handle is dropped).
    inbox: mpsc::WeakSender<Input>,
    /// A storage failure reported from off the task; fatal at the next round.
    failure: Option<String>,
    /// `--heartbeat-interval` in ms (for the late-heartbeat warning).
    heartbeat_ms: u64,
}

/// A member that could not start (one clear line for the operator).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Storage could not be opened or recovered.
    #[error("{0}")]
    Storage(#[from] crate::storage::StorageError),
    /// The data dir's state does not fit.
    #[error("{0}")]
    Recover(String),
    /// `--auth-token` cannot be used.
    #[error("{0}")]
    AuthToken(String),
    /// The initial corruption check found this member's data differs from a peer's.
    #[error("{0}")]
    Inconsistent(String),
}

/// Opens the data dir, builds the core and spawns the member task. Returns the handle,
/// the peer transport (to accept connections with) and a channel that reports a fatal
/// condition (storage failure, cluster ID mismatch) after which the process must stop.
/// With `initial_corrupt_check`, a member restarting from its data dir first compares
/// its recovered state's hash with its peers' (see [`crate::corruption`]).
pub async fn start(
    cfg: MemberConfig,
) -> Result<(MemberHandle, PeerNet, mpsc::UnboundedReceiver<String>), StartError> {
    start_with_dialer(cfg, crate::tls::PeerDialer::plain()).await
}

/// As [`start`], the peer transport dialing with `dialer` (TLS for https peer URLs).
pub async fn start_with_dialer(
    cfg: MemberConfig,
    dialer: crate::tls::PeerDialer,
) -> Result<(MemberHandle, PeerNet, mpsc::UnboundedReceiver<String>), StartError> {
    let policy = StoragePolicy {
        snapshot_count: cfg.snapshot_count.max(1),
        max_snapshots: cfg.max_snapshots.max(1),
        max_wals: cfg.max_wals.max(1),
        ..StoragePolicy::default()
    };
    let tokens = Arc::new(
        Tokens::from_spec(&cfg.auth_token, cfg.auth_token_ttl).map_err(StartError::AuthToken)?,
    );
    let (mut storage, mut rec) = Storage::open(&cfg.dirs(), cfg.cluster_id, cfg.id, policy)?;
    for w in &rec.warnings {
        tracing::warn!("{w}");
    }
    // etcd ignores `--force-new-cluster` when there is no WAL to restart from.
    let mut forced_out = Vec::new();
    if cfg.force_new_cluster {
        if let Some(state) = rec.state.take() {
            let (state, removed) = force_standalone(&mut storage, state, &cfg)?;
            rec.state = Some(state);
            forced_out = removed;
        }
    }
    let clock = MonotonicClock::start();
    let now = clock.now();
    let min_ttl = (cfg.election_ms * 3 / 2).div_ceil(1000) as i64;
    let mut rcfg = Config::new(MemberId(cfg.id));
    rcfg.heartbeat_interval_ms = cfg.heartbeat_ms;
    rcfg.election_timeout_ms = cfg.election_ms;
    rcfg.pre_vote = cfg.pre_vote;
    rcfg.compaction_tail = cfg.log_tail;
    rcfg.seed = cfg.id ^ std::process::id() as u64;
    rcfg.max_proposal_bytes = (cfg.max_request_bytes as u64).max(1 << 20) * 2;
    // keel refuses to start with an unknown name, so an error here cannot happen.
    #[cfg(feature = "robustness-bugs")]
    if let Ok(Some(bug)) = crate::planted::PlantedBug::from_env() {
        tracing::warn!(?bug, "planted bug active");
        if bug.plant(&mut rcfg) {
            storage.plant_ack_before_fsync();
        }
    }
    let mut sm = StateMachine::new(
        cfg.quota_bytes,
        min_ttl,
        cfg.initial_members.iter().cloned(),
    );
    sm.kv.store.set_max_txn_ops(cfg.max_txn_ops);
    // etcd checks only a member that restarts from its data dir, before raft runs.
    let restarting = rec.state.is_some();
    let raft = match rec.state {
        Some(state) => {
            // Without a snapshot the log replays from index 1 onto the founding table.
            if let Some(snap) = &rec.snapshot {
                sm.install(&snap.data)
                    .map_err(|e| StartError::Recover(format!("snapshot: {e}")))?;
            }
            RaftNode::restart(rcfg, state, now).map_err(|e| StartError::Recover(e.to_string()))?
        }
        None => {
            let conf = if cfg.new_cluster {
                ConfState::with_voters(cfg.initial_members.iter().map(|m| MemberId(m.id)))
            } else {
                ConfState::default()
            };
            RaftNode::new(rcfg, conf, now).map_err(|e| StartError::Recover(e.to_string()))?
        }
    };
    let (fatal_tx, fatal_rx) = mpsc::unbounded_channel();
    let metrics = Arc::new(Metrics::new(cfg.id, cfg.quota_bytes));
    let net = PeerNet::with_dialer(
        cfg.id,
        cfg.cluster_id,
        fatal_tx.clone(),
        dialer,
        metrics.peer.clone(),
    );
    if cfg.initial_corrupt_check && restarting {
        // The state recovered from the snapshot file, as etcd hashes its backend before
        // raft replays the WAL's tail.
        let members: Vec<_> = sm.members.values().cloned().collect();
        let local = KvHash::of(&sm.kv.store, 0).map_err(|e| StartError::Recover(e.to_string()))?;
        crate::corruption::check_at_start(&net, &members, local)
            .await
            .map_err(StartError::Inconsistent)?;
    }
    // The removes are applied before the peer table is first filled, so it never sees
    // these members leave: refuse them from the start, as etcd refuses removed members.
    net.mark_removed(forced_out.iter().map(|id| id.0));
    let (status_tx, status_rx) = watch::channel(Status::default());
    let (leader_lost_tx, leader_lost_rx) = watch::channel(0);
    let (tx, rx) = mpsc::channel(65536);
    let inbox = tx.downgrade();
    let handle = MemberHandle {
        tx,
        id: cfg.id,
        cluster_id: cfg.cluster_id,
        status: status_rx,
        leader_lost: leader_lost_rx,
        metrics: metrics.clone(),
        max_request_bytes: cfg.max_request_bytes,
        watch_progress_interval: cfg.watch_progress_interval,
        tokens: tokens.clone(),
        passwords: Arc::new(Passwords::new(cfg.bcrypt_cost)),
        peers: net.clone(),
        snap_dir: cfg.dirs().snap(),
    };
    let start_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_millis() as u64);
    let member_cfg = CoreConfig {
        id: cfg.id,
        name: cfg.name.clone(),
        client_urls: cfg.client_urls.clone(),
        election_ms: cfg.election_ms,
        heartbeat_ms: cfg.heartbeat_ms,
        max_request_bytes: cfg.max_request_bytes,
        strict_reconfig: cfg.strict_reconfig,
        snapshot_count: cfg.snapshot_count.max(1),
        auto_compaction: cfg.auto_compaction,
        start_ms,
        housekeeping_ms: HOUSEKEEPING_MS,
        record_applied: false,
        lease_checkpoint_ms: cfg
            .lease_checkpoint_interval
            .map(|d| (d.as_millis() as u64).max(1)),
        corrupt_check: (!cfg.corrupt_check_time.is_zero()).then(|| CorruptCheck {
            interval_ms: (cfg.corrupt_check_time.as_millis() as u64).max(1),
            timeout_ms: REQUEST_TIMEOUT.as_millis() as u64,
        }),
    };
    let snapshots = storage.snapshot_writer();
    let disk = Disk::spawn(storage, inbox.clone(), metrics.clone());
    let core = MemberTask {
        member: Member::new(member_cfg, raft, sm, now),
        sinks: HashMap::new(),
        clock,
        id: cfg.id,
        cluster_id: cfg.cluster_id,
        name: cfg.name.clone(),
        disk,
        snapshots,
        net: net.clone(),
        metrics,
        status: status_tx,
        leader_lost: leader_lost_tx,
        waiters: HashMap::new(),
        next_token: 1,
        wake: Instant::now(),
        tokens,
        inbox,
        failure: None,
        heartbeat_ms: cfg.heartbeat_ms,
    };
    tokio::spawn(run(core, rx, fatal_tx));
    Ok((handle, net, fatal_rx))
}

/// `--force-new-cluster` on a data dir with a WAL: rewrites the recovered state as a
/// one-member cluster of this member ([`force_new_cluster`]) and makes that durable
/// before raft restarts from it, so a later restart without the flag finds the same
/// cluster. Returns the state and the members removed.
fn force_standalone(
    storage: &mut Storage,
    state: RecoveredState,
    cfg: &MemberConfig,
) -> Result<(RecoveredState, Vec<MemberId>), StartError> {
    let forced = force_new_cluster(state, MemberId(cfg.id))
        .map_err(|e| StartError::Recover(format!("--force-new-cluster: {e}")))?;
    if forced.adopted > 0 {
        // etcd discards these; one of them may be a write the leader acknowledged.
        tracing::warn!(
            commit_index_from_wal = forced.commit.0,
            number_of_kept_entries = forced.adopted,
            "committing the WAL entries past the durable commit index"
        );
    }
    if let Some(batch) = &forced.persist {
        storage.persist(batch)?;
    }
    let removed: Vec<String> = forced.removed.iter().map(|id| id.to_string()).collect();
    tracing::warn!(
        cluster_id = %format!("{:x}", cfg.cluster_id),
        local_member_id = %format!("{:x}", cfg.id),
        commit_index = forced.state.hard_state.commit.0,
        removed_members = %removed.join(","),
        added_self = forced.added_self,
        "forcing restart member"
    );
    Ok((forced.state, forced.removed))
}

async fn run(
    mut core: MemberTask,
    mut rx: mpsc::Receiver<Input>,
    fatal: mpsc::UnboundedSender<String>,
) {
    let mut gauges = tokio::time::interval(Duration::from_millis(HOUSEKEEPING_MS));
    gauges.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stopping = false;
    while !stopping {
        tokio::select! {
            input = rx.recv() => {
                let Some(input) = input else { break };
                if matches!(input, Input::Stop) {
                    break;
                }
                core.handle(input);
                // Drain what else is waiting: one round, one WAL sync.
                for _ in 0..4096 {
                    match rx.try_recv() {
                        Ok(Input::Stop) => {
                            stopping = true;
                            break;
                        }
                        Ok(i) => core.handle(i),
                        Err(_) => break,
                    }
                }
            }
            _ = tokio::time::sleep_until(core.wake.into()) => {
                let now = core.clock.now();
                core.member.tick(now);
            }
            _ = gauges.tick() => core.update_gauges(),
        }
        if let Err(e) = core.drive() {
            let text = match e {
                ServerError::Removed => crate::peer::REMOVED_TEXT.to_string(),
                e => e.to_string(),
            };
            let _ = fatal.send(text);
            break;
        }
    }
    // Closing the receiver first makes every later request fail at once.
    rx.close();
    core.net.close();
    core.disk.finish().await;
}

impl MemberTask {
    fn handle(&mut self, input: Input) {
        let now = self.clock.now();
        let deadline = now.plus(REQUEST_TIMEOUT.as_millis() as u64);
        match input {
            Input::Peer(m) => self.member.step(now, m),
            Input::Propose { cmd, auth, reply } => {
                let req = Request::Propose { cmd, auth };
                self.request(now, deadline, req, Waiter::Answer(reply));
            }
            Input::Change { change, reply } => {
                self.request(
                    now,
                    deadline,
                    Request::Change(change),
                    Waiter::Answer(reply),
                );
            }
            Input::Stop => {}
            Input::SnapshotSaved {
                term,
                index,
                result,
            } => self.disk.send(DiskJob::SnapshotSaved {
                term,
                index,
                result,
            }),
            Input::SnapshotRecorded { index, result } => {
                if result.is_ok() {
                    tracing::info!(index, "snapshot taken");
                }
                self.member.snapshot_saved(LogIndex(index), result);
            }
            Input::Persisted { seq } => {
                // Committed entries wait for this acknowledgement: applying them
                // happens here.
                let t = Instant::now();
                self.member.persisted(now, seq);
                if t.elapsed() > SLOW_APPLY {
                    self.metrics.slow_apply.inc();
                }
            }
            Input::DiskFailed(e) => self.failure = Some(e),
            Input::Read { linearizable, f } => {
                if linearizable {
                    self.request(now, deadline, Request::Read, Waiter::Read(f));
                } else {
                    f(Ok(self));
                    self.count_ops();
                }
            }
            Input::PeerHash { round, answer } => self.member.peer_hash(now, round, answer),
            Input::WaitApplied {
                index,
                limit,
                reply,
            } => {
                let deadline = now.plus(limit.as_millis() as u64);
                let req = Request::WaitApplied { index };
                self.request(now, deadline, req, Waiter::Reached(reply));
            }
        }
    }

    fn request(&mut self, now: Time, deadline: Time, req: Request, waiter: Waiter) {
        let token = Token(self.next_token);
        self.next_token += 1;
        self.waiters.insert(token, waiter);
        let call = Call {
            token,
            deadline,
            require_leader: false,
        };
        self.member.request(now, call, req);
    }

    /// Executes everything the member has ready until it has nothing more.
    fn drive(&mut self) -> Result<(), ServerError> {
        if let Some(e) = self.failure.take() {
            return Err(ServerError::Storage(e));
        }
        self.forget_gone_callers();
        loop {
            let out = self.member.advance(self.clock.now());
            let idle = out.idle;
            self.execute(out)?;
            if idle {
                self.flush_watches();
                return Ok(());
            }
        }
    }

    /// Tells the member which callers waiting for a leader have gone away (their
    /// client's deadline passed and the call was dropped): their proposals must not
    /// be applied after the client was told they failed. Run before each round, so a
    /// leader elected in it never sees them.
    fn forget_gone_callers(&mut self) {
        let waiters = &self.waiters;
        let gone: Vec<Token> = self
            .member
            .waiting_for_leader()
            .filter(|t| matches!(waiters.get(t), Some(Waiter::Answer(tx)) if tx.is_closed()))
            .collect();
        for t in gone {
            self.waiters.remove(&t);
            self.member.forget(t);
        }
    }

    fn execute(&mut self, out: Output) -> Result<(), ServerError> {
        self.wake = self.clock.instant(out.wake_at);
        if let Some(st) = out.status {
            self.metrics.has_leader.set(i64::from(st.leader != 0));
            self.metrics.is_leader.set(i64::from(st.is_leader));
            self.status.send_replace(st);
        }
        for n in out.notes {
            self.note(n);
        }
        for m in out.messages {
            self.net.send(m);
        }
        for r in out.hash_requests {
            self.ask_hash(r);
        }
        if let Some(batch) = out.persist {
            // Written beside the round (see `disk`): acknowledged by Input::Persisted.
            self.disk.send(DiskJob::Persist(batch));
        }
        if let Some(snap) = out.snapshot {
            self.write_snapshot(snap);
        }
        if let Some(index) = out.release_wal {
            self.disk.send(DiskJob::ReleaseWal(index));
        }
        for a in out.auth {
            self.note_auth(a);
        }
        if out.members_changed {
            self.net
                .set_members(self.member.sm.members.values().cloned().collect());
        }
        // As etcd sets them: raft's commit index and the applied index.
        let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.metrics
            .proposals_committed
            .set(gauge(self.member.raft.committed().0));
        self.metrics
            .proposals_applied
            .set(gauge(self.member.sm.applied()));
        if out.applied_count > 0 {
            // etcd computes the keyspace gauges at scrape time: keep them as fresh.
            self.update_gauges();
        }
        for (token, r) in out.replies {
            self.answer(token, r);
        }
        self.metrics
            .proposals_pending
            .set(gauge(self.member.pending() as u64));
        match out.fatal {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn answer(&mut self, token: Token, r: Result<Response, ServerError>) {
        let Some(w) = self.waiters.remove(&token) else {
            return;
        };
        match (w, r) {
            (Waiter::Answer(tx), Ok(Response::Applied { outcome, header })) => {
                let _ = tx.send(Ok((outcome, header)));
            }
            (Waiter::Answer(tx), Err(e)) => {
                self.metrics.proposals_failed.inc();
                let _ = tx.send(Err(e));
            }
            (Waiter::Read(f), Ok(Response::Read)) => {
                f(Ok(self));
                self.count_ops();
            }
            (Waiter::Read(f), Err(e)) => f(Err(e)),
            (Waiter::Reached(tx), Ok(Response::Reached)) => {
                let _ = tx.send(());
            }
            // Dropped: the caller sees "stopped" or its own timeout.
            (_, _) => {}
        }
    }

    fn note(&mut self, n: Note) {
        match n {
            Note::BecameLeader { term } => {
                self.metrics.leader_changes.inc();
                tracing::info!(term, "became leader");
            }
            Note::LeaderElected { leader, term } => {
                self.metrics.leader_changes.inc();
                tracing::info!(leader = %format!("{leader:x}"), term, "leader elected");
            }
            Note::NoLeader { term } => tracing::warn!(term, "no leader"),
            Note::ChangeProposed { change, index } => {
                tracing::info!(change = ?change, index = index.0, "proposed membership change")
            }
            Note::ConfChangeApplied {
                what,
                member,
                index,
            } => tracing::info!(member = %format!("{member:x}"), index = index.0, "{what}"),
            Note::SnapshotInstalled { index } => {
                tracing::info!(index = index.0, "installed snapshot from the leader")
            }
            Note::AutoCompaction { revision } => tracing::info!(revision, "auto compaction"),
            Note::ProposalFailed => {
                self.metrics.proposals_failed.inc();
            }
            Note::Removed => tracing::warn!("{}", crate::peer::REMOVED_TEXT),
            Note::CorruptAlarmRaised { from } => {
                tracing::warn!(alarm = "CORRUPT", from = %format!("{from:x}"), "alarm raised")
            }
            Note::EndLeaderlessStreams => self.leader_lost.send_modify(|n| *n += 1),
            Note::CorruptionChecked(verdict) => {
                for f in &verdict.findings {
                    crate::corruption::log_periodic(f);
                }
                tracing::info!(
                    number_of_peers_checked = verdict.checked,
                    "finished peer corruption check"
                );
            }
            Note::ReadIndexFailed => self.metrics.read_indexes_failed.inc(),
            Note::HeartbeatLate { to, exceeded_ms } => {
                self.metrics.heartbeat_send_failures.inc();
                tracing::warn!(
                    to = %format!("{to:x}"),
                    heartbeat_interval = ?Duration::from_millis(self.heartbeat_ms),
                    expected_duration = ?Duration::from_millis(2 * self.heartbeat_ms),
                    exceeded_duration = ?Duration::from_millis(exceeded_ms),
                    "leader failed to send out heartbeat on time; took too long, leader is overloaded likely from slow disk"
                );
            }
            Note::LeaseExpired => self.metrics.lease_expired.inc(),
            Note::CorruptionCheckFailed(e) => {
                tracing::warn!(error = %e, "failed to check hash KV")
            }
        }
    }

    /// Keeps the token table in step with the auth store (see [`AuthNote`]).
    fn note_auth(&mut self, a: AuthNote) {
        let now = self.clock.now();
        if let Err(e) = a.apply(&mut &*self.tokens, now) {
            tracing::warn!("{e}");
        }
    }

    /// Asks a peer for its HashKV over the peer port, off the member task; the answer
    /// comes back as an input.
    fn ask_hash(&self, r: HashRequest) {
        let net = self.net.clone();
        let inbox = self.inbox.clone();
        tokio::spawn(async move {
            let answer = crate::corruption::peer_hash(&net, r.peer, &r.urls, r.revision).await;
            if let Some(tx) = inbox.upgrade() {
                let round = r.round;
                let _ = tx.send(Input::PeerHash { round, answer }).await;
            }
        });
    }

    /// Writes the member's snapshot on a blocking thread (a large image takes seconds
    /// to write and sync, which would cost heartbeats); the WAL behind it is released
    /// once that is done.
    fn write_snapshot(&mut self, snap: keel_core::raft::Snapshot) {
        let writer = self.snapshots.clone();
        let inbox = self.inbox.clone();
        let metrics = self.metrics.clone();
        tokio::task::spawn_blocking(move || {
            let t = Instant::now();
            let result = writer.write(&snap).map_err(|e| e.to_string());
            if result.is_ok() {
                let took = t.elapsed().as_secs_f64();
                metrics.backend_commit.observe(took);
                metrics.snap_save.observe(took);
            }
            if let Some(tx) = inbox.upgrade() {
                let _ = tx.blocking_send(Input::SnapshotSaved {
                    term: snap.meta.term.0,
                    index: snap.meta.index.0,
                    result,
                });
            }
        });
    }

    /// The store's operation counts into the metrics, before any answer that a client
    /// could follow with a scrape goes out.
    fn count_ops(&self) {
        self.metrics.mvcc_ops(self.member.sm.kv.store.op_counts());
    }

    fn update_gauges(&mut self) {
        self.count_ops();
        let sm = &self.member.sm;
        self.metrics.keyspace(
            sm.kv.size_bytes(),
            sm.kv.store.keys_held() as u64,
            sm.kv.store.revision(),
            sm.kv.store.compacted_revision(),
        );
        self.metrics.watchers.set(self.sinks.len() as i64);
        self.metrics
            .auth_revision
            .set(i64::try_from(sm.auth.revision()).unwrap_or(i64::MAX));
        self.metrics.is_learner.set(i64::from(
            sm.members.get(&self.id).is_some_and(|m| m.learner),
        ));
        self.metrics
            .wal_write_bytes
            .set(i64::try_from(self.disk.wal_bytes_written()).unwrap_or(i64::MAX));
    }

    /// Hands queued watch events to streams that keep up; the rest stay in the member's
    /// hub (falling back to history when they pile up).
    pub fn flush_watches(&mut self) {
        if self.sinks.is_empty() {
            return;
        }
        let sinks = &self.sinks;
        let out = self
            .member
            .watch_responses(|id| sinks.get(&id).is_some_and(|s| s.ready()));
        self.hand_out(out, None);
    }

    /// Hands what is due to streams that keep up, then the progress notifications `of`
    /// asks for, down the same sinks: a notification follows every event it covers
    /// (`stream`: where the answer to a stream's RequestProgress goes).
    pub fn watch_progress(&mut self, of: ProgressFor<'_>, stream: &WatchSink) {
        let sinks = &self.sinks;
        let out = self
            .member
            .watch_progress(of, |id| sinks.get(&id).is_some_and(|s| s.ready()));
        self.hand_out(out, Some(stream));
    }

    fn hand_out(&mut self, out: Vec<WatchResponse>, stream: Option<&WatchSink>) {
        for r in out {
            if r.watch_id == STREAM_PROGRESS_ID {
                if let Some(s) = stream {
                    s.send(r);
                }
                continue;
            }
            self.metrics.watch_events.inc_by(r.events.len() as u64);
            let id = r.watch_id;
            let canceled = r.canceled;
            let gone = match self.sinks.get(&id) {
                Some(s) => !s.send(r),
                None => true,
            };
            if canceled || gone {
                self.sinks.remove(&id);
                if gone {
                    self.member.watch_cancel(id);
                }
            }
        }
    }

    /// Creates a watcher whose responses go to `sink`; its ID.
    pub fn watch(&mut self, req: keel_core::mvcc::WatchRequest, sink: WatchSink) -> i64 {
        let id = self.member.watch_create(req);
        self.sinks.insert(id, sink);
        self.flush_watches();
        id
    }

    /// Cancels a watcher and forgets its sink.
    pub fn cancel_watch(&mut self, id: i64) {
        self.member.watch_cancel(id);
        self.sinks.remove(&id);
    }

    /// The header for a response served now.
    pub fn header(&self) -> super::Header {
        self.member.header()
    }
}
