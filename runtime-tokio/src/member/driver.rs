//! The member task: owns the core values, turns inputs into core calls and executes what
//! the core hands back (persist, send, apply, answer).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use keel_core::mvcc::WatchHub;
use keel_core::node::{encode_command, Command, Compactor, Outcome, Proposal, StateMachine};
use keel_core::raft::{
    ConfState, Config, LogIndex, MemberId, ProposeError, RaftNode, ReadCtx, ReadError, Role,
};
use tokio::sync::{mpsc, oneshot, watch};

use super::leaderless::{Leaderless, WaitingProposal};
use super::WatchSink;
use super::{Header, Input, MemberConfig, MemberHandle, ReadFn, ServerError, Status};
use crate::auth::{Passwords, Tokens};
use crate::metrics::Metrics;
use crate::peer::PeerNet;
use crate::storage::{Storage, StoragePolicy};
use crate::MonotonicClock;
use keel_core::auth::AuthInfo;

/// Events a watcher may hold in the hub before falling back to history.
const WATCH_QUEUE: usize = 4096;

pub(super) type Reply = oneshot::Sender<Result<(Outcome, Header), ServerError>>;

/// The values the member task owns; reads run against them.
pub struct Core {
    /// Raft.
    pub raft: RaftNode,
    /// The replicated state.
    pub sm: StateMachine,
    /// Watchers of every stream.
    pub hub: WatchHub,
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
    /// The WAL and snapshot files.
    pub storage: Storage,
    pub(super) cfg: MemberConfig,
    pub(super) net: PeerNet,
    pub(super) metrics: Arc<Metrics>,
    pub(super) status: watch::Sender<Status>,
    pub(super) pending: HashMap<u64, Reply>,
    pub(super) next_seq: u64,
    pub(super) next_read: u64,
    /// Linearizable reads waiting for their ReadIndex, by context.
    pub(super) reads_by_ctx: HashMap<u64, Vec<ReadFn>>,
    /// Reads of this round, not yet sent to raft.
    pub(super) reads_new: Vec<ReadFn>,
    /// Proposals and reads waiting for a leader to be known.
    pub(super) leaderless: Leaderless,
    /// Confirmed reads waiting for the state to reach their index.
    pub(super) reads_by_index: Vec<(LogIndex, ReadFn)>,
    /// Callers waiting for this member to apply an index (simple tokens name the
    /// index of their Authenticate entry).
    pub(super) index_waits: Vec<(u64, oneshot::Sender<()>)>,
    pub(super) revoking: HashSet<i64>,
    pub(super) published: bool,
    pub(super) last_leader: u64,
    /// etcd's ID generator state: 16 bits of member ID, then a counter seeded with
    /// 40 bits of the start time in ms shifted past an 8-bit sequence.
    pub(super) next_lease_id: u64,
    pub(super) wake: Instant,
    pub(super) compactor: Compactor,
    /// Membership changes waiting to be applied at their log index.
    pub(super) conf_waiting: Vec<(LogIndex, keel_core::raft::ConfChange, Reply)>,
    /// When each peer was last heard from (etcd's transport activity, for the
    /// strict reconfiguration checks).
    pub(super) heard: HashMap<u64, Instant>,
    /// When this member learned it was removed from the cluster.
    pub(super) removed_at: Option<Instant>,
    /// Auth tokens: every member records the simple tokens Authenticate entries issue.
    pub(super) tokens: Arc<Tokens>,
    /// The member's own inbox, for work finished off its task (weak: the task must
    /// still end when every handle is dropped).
    pub(super) inbox: mpsc::WeakSender<Input>,
    /// A snapshot file is being written.
    pub(super) snapshot_writing: bool,
    /// A storage failure reported from off the task; fatal at the next round.
    pub(super) failure: Option<String>,
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
}

/// Opens the data dir, builds the core and spawns the member task. Returns the handle,
/// the peer transport (to accept connections with) and a channel that reports a fatal
/// condition (storage failure, cluster ID mismatch) after which the process must stop.
pub fn start(
    cfg: MemberConfig,
) -> Result<(MemberHandle, PeerNet, mpsc::UnboundedReceiver<String>), StartError> {
    start_with_dialer(cfg, crate::tls::PeerDialer::plain())
}

/// As [`start`], the peer transport dialing with `dialer` (TLS for https peer URLs).
pub fn start_with_dialer(
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
    let (storage, rec) = Storage::open(&cfg.data_dir, cfg.cluster_id, cfg.id, policy)?;
    for w in &rec.warnings {
        tracing::warn!("{w}");
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
    let mut sm = StateMachine::new(
        cfg.quota_bytes,
        min_ttl,
        cfg.initial_members.iter().cloned(),
    );
    sm.kv.kv.set_max_txn_ops(cfg.max_txn_ops);
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
    let net = PeerNet::with_dialer(cfg.id, cfg.cluster_id, fatal_tx.clone(), dialer);
    let metrics = Arc::new(Metrics::default());
    let (status_tx, status_rx) = watch::channel(Status::default());
    let (tx, rx) = mpsc::channel(65536);
    let inbox = tx.downgrade();
    let handle = MemberHandle {
        tx,
        id: cfg.id,
        cluster_id: cfg.cluster_id,
        status: status_rx,
        metrics: metrics.clone(),
        max_request_bytes: cfg.max_request_bytes,
        election_ms: cfg.election_ms,
        watch_progress_interval: cfg.watch_progress_interval,
        tokens: tokens.clone(),
        passwords: Arc::new(Passwords::new(cfg.bcrypt_cost)),
        peers: net.clone(),
    };
    let seq0 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_millis() as u64)
        << 16;
    let mut core = Core {
        raft,
        sm,
        hub: WatchHub::new(WATCH_QUEUE, 1 << 20),
        sinks: HashMap::new(),
        clock,
        id: cfg.id,
        cluster_id: cfg.cluster_id,
        name: cfg.name.clone(),
        storage,
        net: net.clone(),
        metrics,
        status: status_tx,
        pending: HashMap::new(),
        // Request numbers start from the wall clock so a restarted member never mistakes
        // a replayed entry of its previous life for one of its new requests.
        next_seq: seq0,
        next_read: 1,
        reads_by_ctx: HashMap::new(),
        reads_new: Vec::new(),
        leaderless: Leaderless::default(),
        reads_by_index: Vec::new(),
        index_waits: Vec::new(),
        revoking: HashSet::new(),
        published: false,
        last_leader: 0,
        next_lease_id: ((seq0 >> 16) & ((1 << 40) - 1)) << 8,
        wake: Instant::now(),
        compactor: Compactor::new(cfg.auto_compaction),
        conf_waiting: Vec::new(),
        heard: HashMap::new(),
        removed_at: None,
        tokens,
        inbox,
        snapshot_writing: false,
        failure: None,
        cfg,
    };
    core.refresh_peers();
    tokio::spawn(run(core, rx, fatal_tx));
    Ok((handle, net, fatal_rx))
}

async fn run(mut core: Core, mut rx: mpsc::Receiver<Input>, fatal: mpsc::UnboundedSender<String>) {
    let mut lease_check = tokio::time::interval(Duration::from_millis(500));
    lease_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut wake = Instant::now();
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
            _ = tokio::time::sleep_until(wake.into()) => {
                let now = core.clock.now();
                core.raft.tick(now);
            }
            _ = lease_check.tick() => core.housekeeping(),
        }
        core.flush_reads();
        let mut driven = core.drive();
        if driven.is_ok() && core.resume_leaderless() {
            driven = core.drive();
        }
        if let Err(e) = driven {
            let _ = fatal.send(e.to_string());
            break;
        }
        // A removed member lingers a moment so its last messages (the leader's hand-over
        // among them) leave, then stops for good.
        if core.raft.is_removed() {
            let at = *core.removed_at.get_or_insert_with(|| {
                tracing::warn!("{}", crate::peer::REMOVED_TEXT);
                Instant::now()
            });
            if at.elapsed() > Duration::from_secs(1) {
                let _ = fatal.send(crate::peer::REMOVED_TEXT.to_string());
                break;
            }
        }
        wake = core.wake;
    }
    // Closing the receiver first makes every later request fail at once.
    rx.close();
    core.net.close();
}

impl Core {
    fn handle(&mut self, input: Input) {
        let now = self.clock.now();
        match input {
            Input::Peer(m) => {
                self.heard_from(m.from.0, Instant::now());
                self.raft.step(now, m)
            }
            Input::Change { change, reply } => self.change_members(change, reply),
            Input::Propose { cmd, auth, reply } => self.propose_as(cmd, auth, Some(reply)),
            Input::Stop => {}
            Input::SnapshotSaved {
                term,
                index,
                result,
            } => self.snapshot_saved(term, index, result),
            Input::Read { linearizable, f } => {
                if linearizable {
                    self.reads_new.push(f);
                } else {
                    f(Ok(self));
                }
            }
            Input::WaitApplied { index, reply } => {
                self.index_waits.push((index, reply));
                self.serve_index_waits();
            }
        }
    }

    /// The header for a response served now.
    pub fn header(&self) -> Header {
        Header {
            revision: self.sm.kv.kv.revision(),
            raft_term: self.raft.term().0,
        }
    }

    /// A fresh lease ID (etcd generates them on the member that receives the grant).
    pub fn new_lease_id(&mut self) -> i64 {
        // The layout of etcd's idutil generator, so IDs look alike (16 hex digits).
        self.next_lease_id = (self.next_lease_id + 1) & ((1 << 48) - 1);
        let id = ((self.id & 0xffff) << 48 | self.next_lease_id) & (i64::MAX as u64);
        (id as i64).max(1)
    }

    pub(super) fn propose(&mut self, cmd: Command, reply: Option<Reply>) {
        self.propose_as(cmd, None, reply);
    }

    fn propose_as(&mut self, cmd: Command, auth: Option<AuthInfo>, reply: Option<Reply>) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let data = encode_command(&Proposal {
            origin: self.id,
            seq,
            auth,
            cmd,
        });
        if data.len() > self.cfg.max_request_bytes {
            if let Some(r) = reply {
                let _ = r.send(Err(ServerError::TooLarge));
            }
            return;
        }
        let data = Bytes::from(data);
        match reply {
            Some(reply) => self.submit(Instant::now(), seq, data, reply),
            None => {
                if self.raft.propose(self.clock.now(), data).is_err() {
                    self.metrics.proposals_failed.fetch_add(1, Relaxed);
                }
            }
        }
    }

    /// Proposes a client's request; without a known leader it waits for one.
    fn submit(&mut self, since: Instant, seq: u64, data: Bytes, reply: Reply) {
        // Raft's timers run first, at the instant of the proposal: a due election timeout
        // ends the leader's term here, so the proposal waits, rather than in `propose`,
        // which would refuse it with "no leader".
        let now = self.clock.now();
        self.raft.tick(now);
        if !self.raft.leader().is_some() && !self.raft.is_removed() {
            let waiting = WaitingProposal {
                since,
                seq,
                data,
                reply,
            };
            if let Err(p) = self.leaderless.wait_propose(waiting) {
                self.metrics.proposals_failed.fetch_add(1, Relaxed);
                let _ = p.reply.send(Err(ServerError::NoLeader));
            }
            return;
        }
        match self.raft.propose(now, data) {
            Ok(_) => {
                self.metrics.proposals_pending.fetch_add(1, Relaxed);
                self.pending.insert(seq, reply);
            }
            Err(e) => {
                self.metrics.proposals_failed.fetch_add(1, Relaxed);
                let _ = reply.send(Err(propose_error(e)));
            }
        }
    }

    /// Once a leader is known, submits what waited for one; true if anything did.
    fn resume_leaderless(&mut self) -> bool {
        if self.leaderless.is_empty() || !self.raft.leader().is_some() {
            return false;
        }
        let (proposals, reads) = self.leaderless.take();
        for p in proposals {
            self.submit(p.since, p.seq, p.data, p.reply);
        }
        if !reads.is_empty() {
            let (since, reads): (Vec<Instant>, Vec<ReadFn>) = reads.into_iter().unzip();
            if let Err(reads) = self.read_index(reads) {
                // No leader again: they wait on, each from its own arrival.
                self.reads_wait_for_leader(since.into_iter().zip(reads));
            }
        }
        true
    }

    /// Sends this round's linearizable reads to raft under one context.
    fn flush_reads(&mut self) {
        if self.reads_new.is_empty() {
            return;
        }
        let reads = std::mem::take(&mut self.reads_new);
        if let Err(reads) = self.read_index(reads) {
            let now = Instant::now();
            self.reads_wait_for_leader(reads.into_iter().map(|f| (now, f)));
        }
    }

    /// Asks raft to confirm `reads` under one context; hands them back if no leader is
    /// known (a removed member fails them).
    fn read_index(&mut self, reads: Vec<ReadFn>) -> Result<(), Vec<ReadFn>> {
        let ctx = self.next_read;
        self.next_read += 1;
        match self.raft.read_index(self.clock.now(), ReadCtx(ctx)) {
            Ok(()) => {
                self.reads_by_ctx.insert(ctx, reads);
            }
            Err(ReadError::NoLeader) => return Err(reads),
            Err(ReadError::Removed) => {
                for f in reads {
                    f(Err(ServerError::Removed));
                }
            }
        }
        Ok(())
    }

    /// Keeps reads until a leader is known; past the limit they fail with "no leader".
    fn reads_wait_for_leader(&mut self, reads: impl IntoIterator<Item = (Instant, ReadFn)>) {
        for f in self.leaderless.wait_reads(reads) {
            f(Err(ServerError::NoLeader));
        }
    }

    /// Periodic work: expire leases (leader), publish this member's attributes.
    fn housekeeping(&mut self) {
        let now = self.clock.now();
        self.leaderless.expire(Instant::now());
        self.forget_revoked();
        if self.raft.role() == Role::Leader {
            for id in self.sm.kv.lessor.expired(now, 64) {
                if self.revoking.insert(id) {
                    // As etcd's lessor revokes WithRoot: the member's own authority,
                    // never a client's, so auth never keeps an expired lease alive.
                    self.propose_as(Command::LeaseRevoke { id }, Some(AuthInfo::member()), None);
                }
            }
            let kv = &self.sm.kv.kv;
            if let Some(revision) = self
                .compactor
                .tick(now, kv.revision(), kv.compacted_revision())
            {
                tracing::info!(revision, "auto compaction");
                self.propose(
                    Command::Compact {
                        revision,
                        physical: false,
                    },
                    None,
                );
            }
        } else {
            self.compactor.reset();
        }
        if self.raft.leader().is_some() {
            self.publish();
        }
        self.metrics.db_size.store(self.sm.kv.size_bytes(), Relaxed);
        self.metrics
            .keys
            .store(self.sm.kv.kv.keys_held() as u64, Relaxed);
        // Compaction runs in slices so it never stalls writes.
        self.sm.kv.kv.run_compaction(10_000);
    }

    /// Proposes this member's name and client URLs until the member table has them.
    pub(super) fn publish(&mut self) {
        if self.published {
            return;
        }
        let name = self.name.clone();
        let urls = self.cfg.client_urls.clone();
        let mine = self.sm.members.get(&self.id);
        if mine.is_some_and(|m| m.name == name && m.client_urls == urls) {
            self.published = true;
            self.status.send_modify(|s| s.published = true);
            return;
        }
        self.propose(
            Command::PublishMember {
                id: self.id,
                name,
                client_urls: urls,
            },
            None,
        );
    }

    pub(super) fn refresh_peers(&mut self) {
        self.net
            .set_members(self.sm.members.values().cloned().collect());
    }

    /// Executes everything raft has ready until it has nothing more.
    fn drive(&mut self) -> Result<(), ServerError> {
        if let Some(e) = self.failure.take() {
            return Err(ServerError::Storage(e));
        }
        loop {
            let rd = self.raft.ready();
            if let Some(t) = rd.wake_at {
                self.wake = self.clock.instant(t);
            }
            let empty = rd.is_empty();
            self.execute(rd)?;
            if empty && !self.raft.has_ready() {
                return Ok(());
            }
        }
    }
}

pub(super) fn propose_error(e: ProposeError) -> ServerError {
    match e {
        ProposeError::NoLeader | ProposeError::NotLeader { .. } => ServerError::NoLeader,
        ProposeError::TransferInProgress => ServerError::LeaderChanged,
        ProposeError::TooLarge { .. } => ServerError::TooLarge,
        ProposeError::UncommittedLimit => ServerError::TooManyRequests,
        _ => ServerError::Removed,
    }
}
