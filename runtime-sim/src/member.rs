//! One simulated member process: raft, the replicated state machine and the WAL on a
//! simulated disk, driven as `runtime-tokio` drives them: persist what raft hands over
//! (syncing when it says so) before acknowledging it, send, apply committed entries and
//! answer their proposers, serve confirmed linearizable reads, feed watchers from what
//! was applied. Leases work as there too: only the leader's lessor tracks expiry (it is
//! promoted, extending every lease by an election timeout, when the member becomes
//! leader, and demoted when it stops being leader); keepalives are served by it alone;
//! a housekeeping pass every 500 ms proposes the revocation of expired leases through
//! raft and sends watch progress notifications.
//!
//! A process ends on a storage error (as etcd panics on a failed fsync) and is brought
//! back by the scenario, which crashes its disk first.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use keel_core::mvcc::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, LeaseError, PutRequest,
    RangeRequest, RequestOp, TxnRequest, WatchHub, WatchRequest, WatchResponse,
};
use keel_core::node::{
    decode_command, encode_command, Applied, Command, MemberInfo, Outcome, Proposal, StateMachine,
};
use keel_core::raft::{
    decode_message, encode_message, ConfChange, ConfState, Config, EntryPayload, LogIndex,
    MemberId, PersistBatch, PlantedBug, RaftNode, ReadCtx, ReadMode, Ready, Role, Snapshot, Time,
};
use keel_core::wal::{add_missing_snapshot_marker, batch_records, resume_state, Wal};
use madsim::net::Endpoint;
use madsim::time::Instant;
use tokio::sync::mpsc;

use crate::api::{ClientOp, Found, Reply, Request, CLIENT_TAG, MEMBER_PORT, PEER_TAG};
use crate::clock::SkewedClock;
use crate::disk::SimDisk;
use crate::net::{self, NetFaults};
use crate::observer::Observer;

/// WAL segment size in the simulation: small, so segments roll often.
const SEGMENT_SIZE: u64 = 256 << 10;

/// Entries kept behind a snapshot (raft's `compaction_tail`) when the member snapshots
/// on its own: short, so that lagging or restarted followers need a snapshot.
const COMPACTION_TAIL: u64 = 20;

/// Period of the housekeeping pass (lease expiry, watch progress), as `runtime-tokio`'s.
const HOUSEKEEPING: Duration = Duration::from_millis(500);

/// Events a watcher may hold in the hub before falling back to history (as
/// `runtime-tokio`).
const WATCH_QUEUE: usize = 4096;

/// A deliberately broken safety rule, so a test can show the checks catch it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bug {
    /// The member acknowledges writes (and votes) without syncing the WAL.
    AckBeforeFsync,
    /// The leader commits without a quorum.
    CommitWithoutQuorum,
    /// Lease reads are served long past the lease's bound.
    LeaseReadPastBound,
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
}

struct PendingRead {
    to: SocketAddr,
    id: u64,
    key: Bytes,
}

/// Where a watcher's responses go: the client and its watch request's ID (the tag).
struct Sink {
    to: SocketAddr,
    tag: u64,
    next_seq: u64,
}

struct Member {
    spec: MemberSpec,
    env: MemberEnv,
    raft: RaftNode,
    sm: StateMachine,
    wal: Wal<SimDisk>,
    ep: Arc<Endpoint>,
    /// Proposals waiting to be applied, by request number: who to answer.
    pending: BTreeMap<u64, (SocketAddr, u64)>,
    next_seq: u64,
    next_read: u64,
    reads_new: Vec<PendingRead>,
    reads_by_ctx: BTreeMap<u64, Vec<PendingRead>>,
    reads_by_index: Vec<(LogIndex, PendingRead)>,
    wake: Option<Time>,
    hub: WatchHub,
    sinks: BTreeMap<i64, Sink>,
    watch_by_tag: BTreeMap<(SocketAddr, u64), i64>,
    /// Leases whose revocation this member proposed (as `runtime-tokio`'s driver).
    revoking: BTreeSet<i64>,
    next_lease_id: u64,
    housekeeping_at: Instant,
    /// Entries applied since the last snapshot this member took or installed.
    applied_since_snapshot: u64,
}

/// Runs one member process until it stops (storage error, removal) or is killed.
pub async fn run(spec: MemberSpec, env: MemberEnv) {
    let id = spec.id;
    let ep = match Endpoint::bind(SocketAddr::from(([0, 0, 0, 0], MEMBER_PORT))).await {
        Ok(ep) => Arc::new(ep),
        Err(e) => return env.obs.note(format!("member {id:x}: bind: {e}")),
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    spawn_receivers(&ep, tx);
    let disk_errors = env.disk.errors();
    let mut m = match Member::open(spec, env.clone(), ep) {
        Ok(m) => m,
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
        let sleep = m.sleep_duration().min(
            m.housekeeping_at
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1)),
        );
        tokio::select! {
            biased;
            input = rx.recv() => {
                let Some(input) = input else { return };
                m.handle(input);
                while let Ok(input) = rx.try_recv() {
                    m.handle(input);
                }
            }
            _ = madsim::time::sleep(sleep) => {
                let now = m.now();
                m.raft.tick(now);
                if Instant::now() >= m.housekeeping_at {
                    m.housekeeping_at = Instant::now() + HOUSEKEEPING;
                    m.housekeeping();
                }
            }
        }
        m.take_control();
        m.flush_reads();
        if let Err(e) = m.drive().await {
            return env.obs.note(format!("member {id:x} stopped: {e}"));
        }
        if m.raft.is_removed() {
            return env.obs.note(format!("member {id:x} removed"));
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

/// The lease whose revocation `applied` was, if it was one that took effect.
fn revoked_lease(e: &keel_core::raft::Entry, applied: &Option<Applied>) -> Option<i64> {
    let Some(Applied {
        outcome: Outcome::LeaseRevoke(Ok(())),
        ..
    }) = applied
    else {
        return None;
    };
    let EntryPayload::Normal(data) = &e.payload else {
        return None;
    };
    match decode_command(data).ok()?.cmd {
        Command::LeaseRevoke { id } => Some(id),
        _ => None,
    }
}

impl Member {
    /// Recovers the member from its disk, as `runtime-tokio`'s storage does.
    fn open(spec: MemberSpec, env: MemberEnv, ep: Arc<Endpoint>) -> Result<Member, String> {
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
        cfg.planted_bug = match spec.bug {
            Some(Bug::CommitWithoutQuorum) => Some(PlantedBug::CommitWithoutQuorum),
            Some(Bug::LeaseReadPastBound) => Some(PlantedBug::LeaseReadPastBound),
            _ => None,
        };
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
        Ok(Member {
            // Request numbers of a new incarnation never repeat an earlier one's, so a
            // replayed entry is never taken for a new request.
            next_seq: (global + 1) << 24,
            spec,
            env,
            raft,
            sm,
            wal,
            ep,
            pending: BTreeMap::new(),
            next_read: 1,
            reads_new: Vec::new(),
            reads_by_ctx: BTreeMap::new(),
            reads_by_index: Vec::new(),
            wake: None,
            hub: WatchHub::new(WATCH_QUEUE, 1 << 20),
            sinks: BTreeMap::new(),
            watch_by_tag: BTreeMap::new(),
            revoking: BTreeSet::new(),
            // As etcd's ID generator: a counter from the start time in ms, shifted.
            next_lease_id: (global & ((1 << 40) - 1)) << 8,
            housekeeping_at: Instant::now() + HOUSEKEEPING,
            applied_since_snapshot: 0,
        })
    }

    /// Proposes the membership changes an operator asked for (the leader only; the
    /// operator retries elsewhere otherwise).
    fn take_control(&mut self) {
        let changes: Vec<ConfChange> =
            std::mem::take(&mut *self.env.control.lock().unwrap_or_else(|p| p.into_inner()));
        for cc in changes {
            let r = self.raft.propose_conf_change(self.now(), cc);
            self.env
                .obs
                .trace((10u8, self.spec.id, format!("{cc:?}"), r.is_ok()));
        }
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
        let local = self.wake.map_or(100, |w| w.since(self.now()));
        let clock = self.env.clock.lock().unwrap_or_else(|p| p.into_inner());
        Duration::from_millis(clock.global_delay(local).clamp(1, 1000))
    }

    fn handle(&mut self, input: Inbox) {
        let now = self.now();
        match input {
            Inbox::Peer(bytes) => match decode_message(&bytes) {
                Ok(msg) => self.raft.step(now, msg),
                Err(e) => self.env.obs.violation(format!(
                    "member {:x}: undecodable peer message: {e}",
                    self.spec.id
                )),
            },
            Inbox::Client(from, req) => self.client(from, req),
        }
    }

    fn client(&mut self, from: SocketAddr, req: Request) {
        let cmd = match req.op {
            ClientOp::Get { key } => {
                return self.reads_new.push(PendingRead {
                    to: from,
                    id: req.id,
                    key,
                })
            }
            ClientOp::Put { key, value, lease } => Command::Put(PutRequest {
                key,
                value,
                lease,
                ..Default::default()
            }),
            ClientOp::Delete { key } => Command::DeleteRange(DeleteRangeRequest {
                key,
                ..Default::default()
            }),
            ClientOp::Cas { key, expect, value } => Command::Txn(TxnRequest {
                compare: vec![Compare {
                    result: CompareResult::Equal,
                    target: CompareTarget::Value(expect),
                    key: key.clone(),
                    range_end: Bytes::new(),
                }],
                success: vec![RequestOp::Put(PutRequest {
                    key,
                    value,
                    ..Default::default()
                })],
                failure: vec![],
            }),
            ClientOp::Compact { revision } => Command::Compact {
                revision,
                physical: false,
            },
            ClientOp::LeaseGrant { ttl } => {
                let id = self.new_lease_id();
                Command::LeaseGrant { id, ttl }
            }
            ClientOp::LeaseKeepAlive { id } => {
                // As runtime-tokio's keepalive: the local lessor renews if it is the
                // leader's (a follower there forwards to the leader; here the client
                // tries another member).
                let reply = match self.sm.kv.lessor.renew(id, self.now()) {
                    Ok(ttl) => Reply::LeaseKeepAlive { ttl },
                    Err(LeaseError::NotFound) => Reply::LeaseKeepAlive { ttl: 0 },
                    Err(e) => Reply::Refused(e.to_string()),
                };
                return self.reply(from, req.id, reply);
            }
            ClientOp::Watch {
                key,
                range_end,
                start_revision,
                prev_kv,
            } => {
                let wreq = WatchRequest {
                    key,
                    range_end,
                    start_revision,
                    prev_kv,
                    ..Default::default()
                };
                let wid = self.hub.create(wreq, &self.sm.kv.kv);
                self.sinks.insert(
                    wid,
                    Sink {
                        to: from,
                        tag: req.id,
                        next_seq: 1,
                    },
                );
                self.watch_by_tag.insert((from, req.id), wid);
                let revision = self.header_revision();
                return self.reply(from, req.id, Reply::WatchCreated { revision });
            }
            ClientOp::CancelWatch { id } => {
                if let Some(wid) = self.watch_by_tag.remove(&(from, id)) {
                    self.sinks.remove(&wid);
                    self.hub.cancel(wid);
                }
                return;
            }
        };
        self.propose(cmd, Some((from, req.id)));
    }

    /// Proposes a command; its answer goes to `reply_to` once applied.
    fn propose(&mut self, cmd: Command, reply_to: Option<(SocketAddr, u64)>) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let data = encode_command(&Proposal {
            origin: self.spec.id,
            seq,
            auth: None,
            cmd,
        });
        match self.raft.propose(self.now(), data.into()) {
            Ok(_) => {
                if let Some(to) = reply_to {
                    self.pending.insert(seq, to);
                }
            }
            Err(e) => {
                if let Some((to, id)) = reply_to {
                    self.reply(to, id, Reply::Refused(e.to_string()));
                }
            }
        }
    }

    /// A fresh lease ID, laid out as etcd's (and `runtime-tokio`'s) generator does.
    fn new_lease_id(&mut self) -> i64 {
        self.next_lease_id = (self.next_lease_id + 1) & ((1 << 48) - 1);
        let id = ((self.spec.id & 0xffff) << 48 | self.next_lease_id) & (i64::MAX as u64);
        (id as i64).max(1)
    }

    /// Periodic work, as `runtime-tokio`'s housekeeping: the leader proposes the
    /// revocation of expired leases; every watcher that is up to date hears how far the
    /// store is (a progress notification); a compaction frees history in slices.
    fn housekeeping(&mut self) {
        self.sm.kv.kv.run_compaction(10_000);
        let now = self.now();
        let lessor = &self.sm.kv.lessor;
        self.revoking.retain(|id| lessor.contains(*id));
        if self.raft.role() == Role::Leader {
            for id in self.sm.kv.lessor.expired(now, 64) {
                if self.revoking.insert(id) {
                    self.propose(Command::LeaseRevoke { id }, None);
                }
            }
        }
        if !self.sinks.is_empty() {
            let rev = self.sm.kv.kv.revision();
            for r in self.hub.progress(rev) {
                self.send_watch(r);
            }
        }
    }

    /// Hands queued watch events to their clients (the simulated streams always keep
    /// up), as `runtime-tokio`'s `flush_watches`.
    fn flush_watches(&mut self) {
        if self.sinks.is_empty() {
            return;
        }
        self.hub.catch_up(&self.sm.kv.kv);
        let rev = self.sm.kv.kv.revision();
        for r in self.hub.take_responses(rev) {
            let (id, canceled) = (r.watch_id, r.canceled);
            self.send_watch(r);
            if canceled {
                if let Some(s) = self.sinks.remove(&id) {
                    self.watch_by_tag.remove(&(s.to, s.tag));
                }
            }
        }
    }

    fn send_watch(&mut self, resp: WatchResponse) {
        let Some(sink) = self.sinks.get_mut(&resp.watch_id) else {
            return;
        };
        let seq = sink.next_seq;
        sink.next_seq += 1;
        let (to, tag) = (sink.to, sink.tag);
        self.reply(to, tag, Reply::Watch { seq, resp });
    }

    fn reply(&self, to: SocketAddr, id: u64, reply: Reply) {
        let ep = self.ep.clone();
        madsim::task::spawn(async move {
            let _ = ep.send_to_raw(to, id, Box::new(reply)).await;
        });
    }

    fn flush_reads(&mut self) {
        if self.reads_new.is_empty() {
            return;
        }
        let ctx = self.next_read;
        self.next_read += 1;
        let reads = std::mem::take(&mut self.reads_new);
        match self.raft.read_index(self.now(), ReadCtx(ctx)) {
            Ok(()) => {
                self.reads_by_ctx.insert(ctx, reads);
            }
            Err(e) => {
                for r in reads {
                    self.reply(r.to, r.id, Reply::Refused(e.to_string()));
                }
            }
        }
    }

    async fn drive(&mut self) -> Result<(), String> {
        loop {
            let rd = self.raft.ready();
            if let Some(t) = rd.wake_at {
                self.wake = Some(t);
            }
            let empty = rd.is_empty();
            self.execute(rd).await?;
            if empty && !self.raft.has_ready() {
                return Ok(());
            }
        }
    }

    async fn execute(&mut self, rd: Ready) -> Result<(), String> {
        let now = self.now();
        let id = self.spec.id;
        if let Some(ss) = rd.soft_state {
            let is_leader = ss.role == Role::Leader;
            if is_leader {
                self.env.obs.leader(id, ss.term.0);
            }
        }
        for m in rd.messages {
            let Some(to) = self.spec.members.get(&m.to.0).copied() else {
                continue;
            };
            let mut buf = Vec::new();
            encode_message(&m, &mut buf);
            net::send(&self.ep, to, buf.into(), &self.env.faults).await;
        }
        if let Some(batch) = rd.persist {
            self.persist(&batch)?;
            self.raft.persisted(self.now(), batch.seq);
        }
        if let Some(snap) = rd.apply_snapshot {
            self.sm.install(&snap.data).map_err(|e| e.to_string())?;
            self.hub.on_restore();
            self.applied_since_snapshot = 0;
        }
        self.applied_since_snapshot += rd.committed.len() as u64;
        for e in &rd.committed {
            if matches!(e.payload, EntryPayload::ConfChange(_)) {
                let voters = self.raft.conf().voters.iter().map(|v| v.0).collect();
                self.env.obs.configuration(e.index.0, voters);
            }
            let digest = entry_digest(&e.payload);
            self.env.obs.applied(id, e.index.0, e.term.0, digest);
            let applied = self.sm.apply(e, now);
            let events = self.sm.kv.kv.take_events();
            if !events.is_empty() {
                let revoked = revoked_lease(e, &applied);
                let at = global_ns(self.env.epoch);
                self.env.obs.write(id, &events, revoked, at);
                self.hub.on_events(&events);
            }
            let Some(a) = applied else {
                continue;
            };
            if a.origin != id {
                continue;
            }
            if let Some((to, req)) = self.pending.remove(&a.seq) {
                let reply = self.outcome_reply(a.outcome);
                self.reply(to, req, reply);
            }
        }
        // Only the leader's lessor tracks expiry and renews, from when it has applied an
        // entry of its own term (see `StateMachine::track_leadership`).
        let leading = (self.raft.role() == Role::Leader).then(|| self.raft.term().0);
        self.sm
            .track_leadership(leading, now, self.spec.election_ms);
        for rs in rd.read_states {
            if let Some(reads) = self.reads_by_ctx.remove(&rs.ctx.0) {
                self.reads_by_index
                    .extend(reads.into_iter().map(|r| (rs.index, r)));
            }
        }
        for ctx in rd.dropped_reads {
            for r in self.reads_by_ctx.remove(&ctx.0).unwrap_or_default() {
                self.reply(r.to, r.id, Reply::Refused("leader changed".into()));
            }
        }
        if rd.want_snapshot {
            let data = self.sm.snapshot();
            self.raft.compact(now, data);
        } else if self
            .spec
            .snapshot_every
            .is_some_and(|n| self.applied_since_snapshot >= n)
        {
            self.take_snapshot(now);
        }
        self.serve_reads();
        self.flush_watches();
        Ok(())
    }

    /// As `runtime-tokio`'s snapshot: raft's log is compacted behind the applied state
    /// and the image stored durably. The WAL is kept whole (a restart replays it from
    /// the snapshot on), so the sim's disk only grows; runs are short.
    fn take_snapshot(&mut self, now: Time) {
        self.applied_since_snapshot = 0;
        let data = self.sm.snapshot();
        let meta = self.raft.compact(now, data.clone());
        self.env.disk.save_snapshot(Snapshot { meta, data });
    }

    fn persist(&mut self, batch: &PersistBatch) -> Result<(), String> {
        if let Some(s) = batch.snapshot.as_ref().filter(|s| s.meta.index.0 > 0) {
            // The image must be durable before the WAL says the log restarts after it.
            self.env.disk.save_snapshot(s.clone());
        }
        self.wal
            .append(&batch_records(batch))
            .map_err(|e| e.to_string())?;
        if batch.must_sync && self.spec.bug != Some(Bug::AckBeforeFsync) {
            self.wal.sync().map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    fn header_revision(&self) -> u64 {
        self.sm.kv.kv.revision().max(0) as u64
    }

    fn outcome_reply(&self, outcome: Outcome) -> Reply {
        let revision = self.header_revision();
        match outcome {
            Outcome::Put(Ok(_)) => Reply::Put { revision },
            Outcome::DeleteRange(Ok(r)) => Reply::Delete {
                deleted: r.deleted > 0,
                revision,
            },
            Outcome::Txn(Ok(r)) => Reply::Cas {
                succeeded: r.succeeded,
                revision,
            },
            Outcome::LeaseGrant(Ok((id, ttl))) => Reply::LeaseGrant { id, ttl, revision },
            Outcome::LeaseGrant(Err(e)) => Reply::Refused(e.to_string()),
            Outcome::Compact(Ok(())) => Reply::Compact { revision },
            Outcome::Compact(Err(e)) => Reply::Refused(e.to_string()),
            Outcome::Put(Err(e)) | Outcome::DeleteRange(Err(e)) | Outcome::Txn(Err(e)) => {
                Reply::Refused(e.to_string())
            }
            other => Reply::Refused(format!("unexpected outcome {other:?}")),
        }
    }

    fn serve_reads(&mut self) {
        if self.reads_by_index.is_empty() {
            return;
        }
        let applied = self.sm.applied();
        let waiting = std::mem::take(&mut self.reads_by_index);
        let (ready, rest): (Vec<_>, Vec<_>) =
            waiting.into_iter().partition(|(i, _)| i.0 <= applied);
        self.reads_by_index = rest;
        for (_, r) in ready {
            let req = RangeRequest {
                key: r.key.clone(),
                ..Default::default()
            };
            let reply = match self.sm.kv.kv.range(&req) {
                Ok(resp) => Reply::Get {
                    kv: resp.kvs.first().map(|kv| Found {
                        value: kv.value.clone(),
                        mod_revision: kv.mod_revision.max(0) as u64,
                        version: kv.version.max(0) as u64,
                    }),
                    revision: self.header_revision(),
                },
                Err(e) => Reply::Refused(e.to_string()),
            };
            self.reply(r.to, r.id, reply);
        }
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
