//! One simulated member process: the core [`Member`] — the same value `runtime-tokio`
//! runs in production — over a WAL on a simulated disk, madsim's network and a skewed
//! clock. This file is the sim's I/O: it persists what the member hands over (syncing
//! when told) before acknowledging it, sends its messages, writes its snapshots and
//! releases WAL segments behind them, answers simulated clients, and reports what was
//! applied to the run's observer.
//!
//! A process ends on a storage error (as etcd panics on a failed fsync) or when removed
//! from the cluster, and is brought back by the scenario, which crashes its disk first.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use keel_core::auth::{AuthCommand, AuthInfo, AuthOutcome, SimpleTokens, TokenCheck};
use keel_core::mvcc::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, LeaseError, LeaseId, ProgressFor,
    PutRequest, RangeRequest, RequestOp, TxnRequest, WatchRequest, WatchResponse,
    STREAM_PROGRESS_ID,
};
use keel_core::node::corruption::{KvHash, PeerHash, PeerHashError};
use keel_core::node::disk_queue::DiskJob;
#[cfg(feature = "planted-bugs")]
use keel_core::node::MemberBug;
use keel_core::node::{
    Call, Command, CorruptCheck, Member, MemberChange, MemberConfig, MemberError, MemberInfo, Note,
    Outcome, Output, Request as MemberRequest, Response, StateMachine, Token,
};
#[cfg(feature = "planted-bugs")]
use keel_core::raft::PlantedBug;
use keel_core::raft::{
    decode_message, encode_message, ConfChange, ConfState, Config, EntryPayload, LogIndex,
    MemberId, PersistSeq, RaftNode, ReadMode, Time,
};
use keel_core::wal::{add_missing_snapshot_marker, resume_state, Wal};
use madsim::net::Endpoint;
use madsim::time::Instant;
use tokio::sync::mpsc;

use crate::api::{
    ClientOp, ClientReply, Found, HashMessage, Request, CLIENT_TAG, HASH_TAG, MEMBER_PORT, PEER_TAG,
};
use crate::clock::SkewedClock;
use crate::disk::SimDisk;
use crate::net::{self, NetFaults};
use crate::observer::Observer;

mod clients;
mod disk_task;

use clients::{Sink, Waiting};

/// WAL segment size in the simulation: small, so segments roll (and are released behind
/// snapshots) in every run that snapshots.
const SEGMENT_SIZE: u64 = 4 << 10;

/// Entries kept behind a snapshot (raft's `compaction_tail`) when the member snapshots
/// on its own: short, so that lagging or restarted followers need a snapshot.
const COMPACTION_TAIL: u64 = 20;

/// WAL segments kept behind a snapshot at least (`--max-wals`): few, so that releases
/// happen in every snapshot run.
const MAX_WALS: usize = 1;

/// Period of housekeeping and of watch progress notifications.
const HOUSEKEEPING_MS: u64 = 500;

/// Lease checkpoint period: below the simulated leases' TTLs (1-4 s), so leader changes
/// restart leases from checkpoints and renewals race checkpoints in every run.
const LEASE_CHECKPOINT_MS: u64 = 1_000;

/// Period of the leader's corruption check (`--experimental-corrupt-check-time`): short,
/// so every run checks often, under every fault.
const CORRUPT_CHECK_MS: u64 = 1_000;

/// Simple auth tokens live this long after their last use (etcd's default).
const SIMPLE_TOKEN_TTL_MS: u64 = 300_000;

/// How long a client request may wait in the member (as the simulated clients' own
/// timeout): past it a request waiting for a leader is answered "request timed out".
const REQUEST_TIMEOUT_MS: u64 = 1_500;

/// A deliberately broken safety rule, so a test can show the checks catch it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bug {
    /// The member acknowledges writes (and votes) without syncing the WAL.
    AckBeforeFsync,
    /// The leader commits without a quorum.
    CommitWithoutQuorum,
    /// Lease reads are served long past the lease's bound.
    LeaseReadPastBound,
    /// Requests refused for want of a leader are proposed all the same.
    RefuseButPropose,
    /// WAL segments are released behind every applied entry, not behind snapshots.
    ReleaseWalAhead,
    /// A simple token unknown here is refused at once, without waiting for the member to
    /// apply the Authenticate entry it names.
    TokenWithoutWait,
    /// Watch streams opened with require-leader are never ended, however long the
    /// member has had no leader.
    StreamsOutliveLeader,
    /// Progress notifications go out before the events they cover that are still queued
    /// or being caught up from history (etcd's bug fixed in 3.4.31/3.5.13).
    ProgressBeforeEvents,
    /// One member's keyspace diverges from its peers': a bit of a stored value flips
    /// beneath raft (a bad disk or memory), so the corruption check must raise CORRUPT.
    DivergentStore,
}

/// What a member is.
#[derive(Clone, Debug)]
pub struct MemberSpec {
    /// Member ID.
    pub id: u64,
    /// Cluster ID.
    pub cluster_id: u64,
    /// Every member's ID and address.
    pub members: BTreeMap<u64, SocketAddr>,
    /// Heartbeat interval.
    pub heartbeat_ms: u64,
    /// Election timeout.
    pub election_ms: u64,
    /// How linearizable reads are confirmed.
    pub read_mode: ReadMode,
    /// A planted bug, if any.
    pub bug: Option<Bug>,
    /// The founding voters; the other members start outside the configuration and join
    /// when a membership change adds them.
    pub founders: BTreeSet<u64>,
    /// Applied entries between the member's own snapshots (a small `--snapshot-count`),
    /// which compact its log so that followers are caught up by snapshot transfer and
    /// install; None: never on its own (a snapshot is made only when a follower asks).
    pub snapshot_every: Option<u64>,
}

/// What a member process shares with the scenario: its disk, its clock, the network's
/// faults and the run's observer.
#[derive(Clone, Debug)]
pub struct MemberEnv {
    /// The member's disk (outlives the process).
    pub disk: SimDisk,
    /// The member's clock.
    pub clock: Arc<Mutex<SkewedClock>>,
    /// Network faults in force.
    pub faults: NetFaults,
    /// Where the member reports.
    pub obs: Observer,
    /// Global time zero of the run.
    pub epoch: Instant,
    /// Membership changes an operator asked this member to propose (as `etcdctl member
    /// add/remove/promote` reach the leader).
    pub control: Arc<Mutex<Vec<ConfChange>>>,
}

enum Inbox {
    Peer(Bytes),
    Client(SocketAddr, Request),
    Hash(SocketAddr, HashMessage),
    /// The disk task made the batches up to this one durable.
    Persisted(PersistSeq),
    /// The disk task recorded the member's snapshot at this index.
    SnapshotRecorded {
        index: LogIndex,
        result: Result<(), String>,
    },
    /// The disk task failed: the process stops.
    DiskFailed(String),
}

struct Process {
    spec: MemberSpec,
    env: MemberEnv,
    member: Member,
    /// The disk task's queue (the WAL is written there, beside the round).
    disk: mpsc::UnboundedSender<disk_task::Job>,
    disk_task: madsim::task::JoinHandle<()>,
    /// Why the disk task failed, fatal at the end of the round.
    disk_failed: Option<String>,
    ep: Arc<Endpoint>,
    waiting: BTreeMap<Token, Waiting>,
    next_token: u64,
    wake: Time,
    sinks: BTreeMap<i64, Sink>,
    watch_by_tag: BTreeMap<(SocketAddr, u64), i64>,
    progress_at: Instant,
    /// Rounds driven (slow streams take responses on some rounds only).
    rounds: u64,
    /// The simple auth tokens this member knows (core's keeper, as production's).
    tokens: SimpleTokens,
    /// The planted divergence was made (once per process).
    #[cfg(feature = "planted-bugs")]
    diverged: bool,
}

/// Runs one member process until it stops (storage error, removal) or is killed.
pub async fn run(spec: MemberSpec, env: MemberEnv) {
    let id = spec.id;
    let ep = match Endpoint::bind(SocketAddr::from(([0, 0, 0, 0], MEMBER_PORT))).await {
        Ok(ep) => Arc::new(ep),
        Err(e) => return env.obs.note(format!("member {id:x}: bind: {e}")),
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let tx_self = tx.clone();
    spawn_receivers(&ep, tx);
    let disk_errors = env.disk.errors();
    let mut p = match Process::open(spec, env.clone(), ep, tx_self) {
        Ok(p) => p,
        // A disk still failing (a crash came while a disk fault was held) stops the
        // member at its start as it would stop it running: etcd exits on the error too.
        Err(e) if env.disk.errors() > disk_errors => {
            return env
                .obs
                .note(format!("member {id:x} could not start: disk error: {e}"));
        }
        // Whatever a crash left on a healthy disk, a member must come back from it: torn
        // tails are cut, and everything it acknowledged was synced.
        Err(e) => {
            return env.obs.violation(format!(
                "member {id:x} could not restart from its disk: {e}"
            ))
        }
    };
    loop {
        tokio::select! {
            biased;
            input = rx.recv() => {
                let Some(input) = input else { return };
                p.handle(input);
                while let Ok(input) = rx.try_recv() {
                    p.handle(input);
                }
            }
            _ = madsim::time::sleep(p.sleep_duration()) => {
                let now = p.now();
                p.member.tick(now);
            }
        }
        p.take_control();
        if let Err(e) = p.drive().await {
            return env.obs.note(format!("member {id:x} stopped: {e}"));
        }
        // After the round, which ends the streams the leader monitor says must end.
        if Instant::now() >= p.progress_at {
            p.progress_at = Instant::now() + Duration::from_millis(HOUSEKEEPING_MS);
            let ids: Vec<i64> = p.sinks.keys().copied().collect();
            let ready = p.ready_sinks();
            let out = p
                .member
                .watch_progress(ProgressFor::Each(&ids), |id| ready.contains(&id));
            p.send_watches(out, None);
        }
    }
}

fn spawn_receivers(ep: &Arc<Endpoint>, tx: mpsc::UnboundedSender<Inbox>) {
    let (peer_ep, peer_tx) = (ep.clone(), tx.clone());
    madsim::task::spawn(async move {
        while let Ok((payload, _)) = peer_ep.recv_from_raw(PEER_TAG).await {
            if let Ok(b) = payload.downcast::<Bytes>() {
                if peer_tx.send(Inbox::Peer(*b)).is_err() {
                    return;
                }
            }
        }
    });
    let (hash_ep, hash_tx) = (ep.clone(), tx.clone());
    madsim::task::spawn(async move {
        while let Ok((payload, from)) = hash_ep.recv_from_raw(HASH_TAG).await {
            if let Ok(m) = payload.downcast::<HashMessage>() {
                if hash_tx.send(Inbox::Hash(from, *m)).is_err() {
                    return;
                }
            }
        }
    });
    let client_ep = ep.clone();
    madsim::task::spawn(async move {
        while let Ok((payload, from)) = client_ep.recv_from_raw(CLIENT_TAG).await {
            if let Ok(r) = payload.downcast::<Request>() {
                if tx.send(Inbox::Client(from, *r)).is_err() {
                    return;
                }
            }
        }
    });
}

fn global_ms(epoch: Instant) -> u64 {
    Instant::now().duration_since(epoch).as_millis() as u64
}

fn global_ns(epoch: Instant) -> u64 {
    Instant::now().duration_since(epoch).as_nanos() as u64
}

impl Process {
    /// Recovers the member from its disk, as `runtime-tokio`'s storage does.
    fn open(
        spec: MemberSpec,
        env: MemberEnv,
        ep: Arc<Endpoint>,
        inbox: mpsc::UnboundedSender<Inbox>,
    ) -> Result<Process, String> {
        let (mut wal, rec) = Wal::open(env.disk.clone(), spec.cluster_id, spec.id, SEGMENT_SIZE)
            .map_err(|e| e.to_string())?;
        let snapshot = env.disk.snapshot();
        // As `runtime-tokio`'s storage: an image whose WAL marker a crash cut off.
        if let Some(m) =
            add_missing_snapshot_marker(&mut wal, &rec, snapshot.as_ref().map(|s| &s.meta))
                .map_err(|e| e.to_string())?
        {
            env.obs.note(format!("member {:x}: {m}", spec.id));
        }
        let mut cfg = Config::new(MemberId(spec.id));
        cfg.heartbeat_interval_ms = spec.heartbeat_ms;
        cfg.election_timeout_ms = spec.election_ms;
        cfg.read_mode = spec.read_mode;
        if spec.snapshot_every.is_some() {
            cfg.compaction_tail = COMPACTION_TAIL;
        }
        cfg.seed = madsim::rand::random();
        #[cfg(feature = "planted-bugs")]
        {
            cfg.planted_bug = match spec.bug {
                Some(Bug::CommitWithoutQuorum) => Some(PlantedBug::CommitWithoutQuorum),
                Some(Bug::LeaseReadPastBound) => Some(PlantedBug::LeaseReadPastBound),
                _ => None,
            };
        }
        #[cfg(not(feature = "planted-bugs"))]
        if spec.bug.is_some_and(|b| b != Bug::AckBeforeFsync) {
            return Err("planted bugs need runtime-sim's planted-bugs feature".into());
        }
        let founders = spec
            .members
            .iter()
            .filter(|(id, _)| spec.founders.contains(id))
            .map(|(id, addr)| MemberInfo {
                id: *id,
                name: format!("m{id}"),
                peer_urls: vec![format!("http://{addr}")],
                client_urls: vec![format!("http://{addr}")],
                learner: false,
            });
        let mut sm = StateMachine::new(u64::MAX, 2, founders);
        let global = global_ms(env.epoch);
        let now = env
            .clock
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .read(global);
        // The same decision as production storage's (keel_core::wal::resume_state).
        let state =
            resume_state(rec, snapshot.as_ref().map(|s| &s.meta)).map_err(|e| e.to_string())?;
        let raft = match state {
            None => {
                let conf = ConfState::with_voters(spec.founders.iter().map(|id| MemberId(*id)));
                RaftNode::new(cfg, conf, now).map_err(|e| e.to_string())?
            }
            Some(state) => {
                if let Some(s) = &snapshot {
                    sm.install(&s.data).map_err(|e| e.to_string())?;
                }
                RaftNode::restart(cfg, state, now).map_err(|e| e.to_string())?
            }
        };
        let addr = spec.members.get(&spec.id).copied();
        let url = addr.map(|a| format!("http://{a}")).into_iter().collect();
        let member_cfg = MemberConfig {
            id: spec.id,
            name: format!("m{}", spec.id),
            client_urls: url,
            election_ms: spec.election_ms,
            heartbeat_ms: spec.heartbeat_ms,
            max_request_bytes: 1_572_864,
            strict_reconfig: true,
            snapshot_count: spec.snapshot_every.unwrap_or(u64::MAX),
            auto_compaction: Default::default(),
            start_ms: global,
            housekeeping_ms: HOUSEKEEPING_MS,
            record_applied: true,
            lease_checkpoint_ms: Some(LEASE_CHECKPOINT_MS),
            corrupt_check: Some(CorruptCheck {
                interval_ms: CORRUPT_CHECK_MS,
                timeout_ms: REQUEST_TIMEOUT_MS,
            }),
        };
        #[allow(unused_mut)]
        let mut member = Member::new(member_cfg, raft, sm, now);
        #[cfg(feature = "planted-bugs")]
        match spec.bug {
            Some(Bug::RefuseButPropose) => member.plant(MemberBug::RefuseButPropose),
            Some(Bug::ReleaseWalAhead) => member.plant(MemberBug::ReleaseWalAhead),
            Some(Bug::StreamsOutliveLeader) => member.plant(MemberBug::StreamsOutliveLeader),
            Some(Bug::ProgressBeforeEvents) => member.plant(MemberBug::ProgressBeforeEvents),
            _ => {}
        }
        // A process starts knowing no leader (its monitor counts from here).
        env.obs.leader_known(spec.id, false, global_ns(env.epoch));
        let (disk, disk_task) =
            disk_task::spawn(wal, env.disk.clone(), env.obs.clone(), spec.bug, inbox);
        Ok(Process {
            member,
            spec,
            env,
            disk,
            disk_task,
            disk_failed: None,
            ep,
            waiting: BTreeMap::new(),
            next_token: 1,
            wake: now,
            sinks: BTreeMap::new(),
            watch_by_tag: BTreeMap::new(),
            rounds: 0,
            progress_at: Instant::now() + Duration::from_millis(HOUSEKEEPING_MS),
            tokens: SimpleTokens::new(SIMPLE_TOKEN_TTL_MS),
            #[cfg(feature = "planted-bugs")]
            diverged: false,
        })
    }

    fn now(&self) -> Time {
        let global = global_ms(self.env.epoch);
        self.env
            .clock
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .read(global)
    }

    fn sleep_duration(&self) -> Duration {
        let local = self.wake.since(self.now());
        let clock = self.env.clock.lock().unwrap_or_else(|p| p.into_inner());
        let until_progress = self
            .progress_at
            .saturating_duration_since(Instant::now())
            .as_millis() as u64;
        Duration::from_millis(clock.global_delay(local).min(until_progress).clamp(1, 1000))
    }

    fn handle(&mut self, input: Inbox) {
        let now = self.now();
        match input {
            Inbox::Peer(bytes) => match decode_message(&bytes) {
                Ok(msg) => self.member.step(now, msg),
                Err(e) => self.env.obs.violation(format!(
                    "member {:x}: undecodable peer message: {e}",
                    self.spec.id
                )),
            },
            Inbox::Client(from, req) => self.client(now, from, req),
            Inbox::Persisted(seq) => self.member.persisted(now, seq),
            Inbox::SnapshotRecorded { index, result } => self.member.snapshot_saved(index, result),
            Inbox::DiskFailed(e) => self.disk_failed = Some(e),
            Inbox::Hash(from, HashMessage::Ask { round, revision }) => {
                // As production's peer port answers HashKv: the same core hash.
                let result =
                    KvHash::of(&self.member.sm.kv.store, revision).map_err(PeerHashError::from);
                let answer = HashMessage::Answer {
                    round,
                    from: self.spec.id,
                    result,
                };
                let (ep, faults) = (self.ep.clone(), self.env.faults.clone());
                madsim::task::spawn(async move {
                    net::send_tagged(&ep, from, HASH_TAG, answer, &faults).await;
                });
            }
            Inbox::Hash(
                _,
                HashMessage::Answer {
                    round,
                    from,
                    result,
                },
            ) => {
                let endpoints = self
                    .spec
                    .members
                    .get(&from)
                    .map(|a| format!("http://{a}"))
                    .into_iter()
                    .collect();
                let answer = PeerHash {
                    id: from,
                    endpoints,
                    result,
                };
                self.member.peer_hash(now, round, answer);
            }
        }
    }

    /// The planted divergence: once the keyspace holds a value, the first founder flips
    /// a bit of one, beneath raft and every log.
    #[cfg(feature = "planted-bugs")]
    fn diverge(&mut self) {
        let first = self.spec.founders.iter().next().copied();
        if self.diverged
            || self.spec.bug != Some(Bug::DivergentStore)
            || first != Some(self.spec.id)
        {
            return;
        }
        if self.member.sm.kv.store.flip_a_value_bit() {
            self.diverged = true;
            self.env.obs.note(format!(
                "member {:x}: a stored value's bit flipped",
                self.spec.id
            ));
        }
    }

    /// Hands the membership changes an operator asked for to the member, as `etcdctl
    /// member add/remove/promote` reach it: through etcd's checks (strict
    /// reconfiguration included), not as bare raft changes.
    fn take_control(&mut self) {
        let changes: Vec<ConfChange> =
            std::mem::take(&mut *self.env.control.lock().unwrap_or_else(|p| p.into_inner()));
        let now = self.now();
        for cc in changes {
            let change = match cc {
                ConfChange::AddVoter(id)
                    if self.member.sm.members.get(&id.0).is_some_and(|m| m.learner) =>
                {
                    MemberChange::Promote { id: id.0 }
                }
                ConfChange::AddVoter(id) | ConfChange::AddLearner(id) => MemberChange::Add {
                    id: id.0,
                    peer_urls: self
                        .spec
                        .members
                        .get(&id.0)
                        .map(|a| format!("http://{a}"))
                        .into_iter()
                        .collect(),
                    learner: matches!(cc, ConfChange::AddLearner(_)),
                },
                ConfChange::Remove(id) => MemberChange::Remove { id: id.0 },
            };
            self.env
                .obs
                .trace((10u8, self.spec.id, format!("{change:?}")));
            let call = self.call(now, Waiting::Change(cc), false);
            self.member
                .request(now, call, MemberRequest::Change(change));
        }
    }

    async fn drive(&mut self) -> Result<(), String> {
        if let Some(e) = self.disk_failed.take() {
            return Err(e);
        }
        #[cfg(feature = "planted-bugs")]
        self.diverge();
        loop {
            let out = self.member.advance(self.now());
            let idle = out.idle;
            self.execute(out).await?;
            if idle {
                break;
            }
        }
        self.rounds += 1;
        let ready = self.ready_sinks();
        let out = self.member.watch_responses(|id| ready.contains(&id));
        self.send_watches(out, None);
        Ok(())
    }

    async fn execute(&mut self, out: Output) -> Result<(), String> {
        let id = self.spec.id;
        self.wake = out.wake_at;
        if let Some(st) = out.status {
            let at = global_ns(self.env.epoch);
            self.env.obs.leader_known(id, st.leader != 0, at);
            if st.is_leader {
                self.env.obs.leader(id, st.term);
            }
        }
        for n in &out.notes {
            match n {
                Note::EndLeaderlessStreams => self.end_leaderless_streams(),
                Note::CorruptionChecked(v) => {
                    self.env.obs.count("corruption checks", 1);
                    self.env.obs.count(
                        "peer hashes compared by the corruption check",
                        v.checked as u64,
                    );
                }
                // A healthy cluster never raises it, whatever the faults: an alarm here is
                // a false positive of the checks (or a real divergence, which is worse).
                Note::CorruptAlarmRaised { .. } if self.spec.bug == Some(Bug::DivergentStore) => {
                    self.env.obs.count("CORRUPT alarms raised", 1);
                }
                Note::CorruptAlarmRaised { from } => self.env.obs.violation(format!(
                    "member {id:x}: CORRUPT alarm raised (against {from:x}) on a healthy cluster"
                )),
                _ => {}
            }
        }
        for m in out.messages {
            let Some(to) = self.spec.members.get(&m.to.0).copied() else {
                continue;
            };
            let mut buf = Vec::new();
            encode_message(&m, &mut buf);
            net::send(&self.ep, to, buf.into(), &self.env.faults).await;
        }
        for r in out.hash_requests {
            let Some(to) = self.spec.members.get(&r.peer).copied() else {
                continue;
            };
            let ask = HashMessage::Ask {
                round: r.round,
                revision: r.revision,
            };
            net::send_tagged(&self.ep, to, HASH_TAG, ask, &self.env.faults).await;
        }
        // The disk task writes beside the round, in this order (see `disk_task`).
        if let Some(batch) = out.persist {
            let _ = self.disk.send(DiskJob::Persist(batch));
        }
        if let Some(snap) = out.snapshot {
            let (term, index) = (snap.meta.term.0, snap.meta.index.0);
            // Written whole at once, as production's blocking thread writes the file;
            // recorded in order behind the appends issued before it.
            self.env.disk.save_snapshot(snap);
            let _ = self.disk.send(DiskJob::SnapshotSaved {
                term,
                index,
                result: Ok(()),
            });
        }
        if let Some(index) = out.release_wal {
            let _ = self.disk.send(DiskJob::ReleaseWal(index));
        }
        for a in out.applied {
            let e = &a.entry;
            if let Some(voters) = a.voters {
                self.env.obs.configuration(e.index.0, voters);
            }
            self.env
                .obs
                .applied(id, e.index.0, e.term.0, entry_digest(&e.payload));
            if !a.events.is_empty() {
                let at = global_ns(self.env.epoch);
                self.env.obs.write(id, &a.events, a.revoked, at);
            }
        }
        let now = self.now();
        for a in out.auth {
            if let Err(e) = a.apply(&mut self.tokens, now) {
                self.env.obs.violation(format!("member {id:x}: {e}"));
            }
        }
        for (token, r) in out.replies {
            self.answer(token, r);
        }
        match out.fatal {
            Some(e) => Err(e.to_string()),
            None => Ok(()),
        }
    }
}

impl Drop for Process {
    /// The disk task goes with its process: a restarted member must be the only writer
    /// of its WAL.
    fn drop(&mut self) {
        self.disk_task.abort();
    }
}

fn entry_digest(payload: &EntryPayload) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    match payload {
        EntryPayload::Empty => 0u8.hash(&mut h),
        EntryPayload::Normal(b) => (1u8, &b[..]).hash(&mut h),
        EntryPayload::ConfChange(cc) => (2u8, format!("{cc:?}")).hash(&mut h),
    }
    h.finish()
}
