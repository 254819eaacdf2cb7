//! One member as a plain value: raft, the replicated state machine, the watch hub, the
//! lessor's duties, the compactor, and the bookkeeping of every caller waiting for an
//! answer, keyed by [`Token`]s the driver chooses. Both runtimes drive this same value
//! (`runtime-tokio` in production, `runtime-sim` under madsim), so the simulator checks
//! the member that ships.
//!
//! The driver's loop:
//! - hand in inputs, each with the current time: [`Member::step`] (a peer message),
//!   [`Member::request`] (a client's call), [`Member::forget`] (a caller went away),
//!   [`Member::tick`] (when [`Output::wake_at`] is due), [`Member::persisted`] (a
//!   persist batch is durable), [`Member::snapshot_saved`] (a snapshot file is durable);
//! - then call [`Member::advance`] until it reports [`Output::idle`], executing each
//!   [`Output`]: send its messages, write (and sync when told) its persist batch and
//!   call `persisted`, write its snapshot off the loop, deliver its replies, and obey
//!   its status and fatal condition.
//!
//! What stays in a driver is I/O: sockets, files, timers, and a token → reply-channel
//! table. Everything that decides — waiting for a leader, ReadIndex batching, serving
//! reads once applied, membership checks, publishing this member, request numbers and
//! lease IDs, lease expiry, auto compaction, snapshot cadence, when require-leader
//! streams end ([`Note::EndLeaderlessStreams`]) — is here.

mod apply;
mod corruption_check;
mod error;
mod interface;
mod leader_monitor;
mod reconfig;
#[cfg(test)]
mod tests;
mod waiting;

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;

use crate::auth::AuthInfo;
use crate::mvcc::{LeaseError, LeaseId, ProgressFor, WatchHub, WatchRequest, WatchResponse};
use crate::node::{encode_command, Command, Compactor, Proposal, StateMachine};
use crate::raft::{
    LogIndex, Message, MessageBody, PersistSeq, ProposeError, RaftNode, ReadCtx, ReadError, Ready,
    Role, Time,
};

pub use corruption_check::{CorruptCheck, HashRequest};
use corruption_check::{CorruptionCheck, CHECK_READ};
pub use error::MemberError;
pub use interface::{
    AppliedRecord, AuthNote, Call, Header, MemberConfig, Note, Output, Request, Response, Status,
    Token,
};
use leader_monitor::LeaderMonitor;
pub use leader_monitor::NO_LEADER_PERIODS;
pub use reconfig::MemberChange;
use waiting::{Leaderless, WaitingProposal};
pub use waiting::{MAX_WAITING, MAX_WAITING_BYTES};

/// Events a watcher may hold in the hub before falling back to history.
const WATCH_QUEUE: usize = 4096;
/// Bytes of events per watch response before it is split into fragments.
const WATCH_FRAGMENT_BYTES: usize = 1 << 20;
/// Lease checkpoints one housekeeping pass proposes at most (etcd's
/// `maxLeaseCheckpointBatchSize`); the rest are due at the next pass.
const CHECKPOINT_BATCH: usize = 1000;
/// Expired leases whose revocation one housekeeping pass proposes at most.
const REVOKE_BATCH: usize = 64;
/// Keys one compaction slice frees, so compaction never stalls writes.
const COMPACTION_SLICE: usize = 10_000;
/// How long a removed member lingers so its last messages (the leader's hand-over among
/// them) leave before it stops.
const REMOVED_LINGER_MS: u64 = 1_000;

/// One member's decisions; see the module docs for how a driver runs it.
pub struct Member {
    /// Raft (read it; drive it only through the member).
    pub raft: RaftNode,
    /// The replicated state (read it; change it only through the member).
    pub sm: StateMachine,
    hub: WatchHub,
    cfg: MemberConfig,
    out: Output,
    /// The rest of a raft `Ready` whose persist batch the driver is writing. Drivers
    /// write beside the member's round (see [`crate::node::disk_queue`]), so rounds go
    /// on meanwhile, sending what raft may send before the batch is durable
    /// ([`RaftNode::ready_messages`]); everything else waits for the batch.
    after_persist: Option<Ready>,
    /// Proposals waiting to be applied, by request number: the caller and its deadline.
    pending: HashMap<u64, (Token, Time)>,
    next_seq: u64,
    next_read: u64,
    /// etcd's ID generator state (40 bits of start time in ms past an 8-bit sequence).
    next_lease_id: u64,
    /// Linearizable reads of this round, not yet sent to raft: (deadline, token).
    reads_new: Vec<(Time, Token)>,
    /// Reads waiting for their ReadIndex, by context.
    reads_by_ctx: HashMap<u64, Vec<Token>>,
    /// Confirmed reads waiting for the state to reach their index.
    reads_by_index: Vec<(LogIndex, Token)>,
    /// Requests waiting for a leader to be known.
    leaderless: Leaderless,
    /// Callers waiting for an applied index: (index, deadline, token).
    index_waits: Vec<(u64, Time, Token)>,
    /// Membership changes waiting to be applied at their log index.
    conf_waiting: Vec<(LogIndex, crate::raft::ConfChange, Token)>,
    /// When each peer was last heard from (for the strict reconfiguration checks).
    heard: HashMap<u64, Time>,
    /// Leases whose revocation this member proposed (expired), with the request number
    /// of the proposal: its successful apply counts as an expired lease.
    revoking: BTreeMap<LeaseId, u64>,
    compactor: Compactor,
    status: Status,
    housekeeping_at: Time,
    leader_monitor: LeaderMonitor,
    /// When raft wants its next tick.
    raft_wake: Option<Time>,
    applied_since_snapshot: u64,
    snapshot_writing: bool,
    /// Indexes of the durable snapshots of this life, oldest first (at most two).
    snapshots: Vec<LogIndex>,
    removed_at: Option<Time>,
    /// The periodic corruption check, when enabled.
    corruption: Option<CorruptionCheck>,
    /// When this leader last sent each peer a heartbeat (etcd's timeout detector).
    heartbeats: HashMap<u64, Time>,
    #[cfg(feature = "planted-bugs")]
    bug: Option<MemberBug>,
}

/// A safety rule of the member's own broken on purpose (`planted-bugs` feature), so the
/// simulator's checks can be shown to catch it.
#[cfg(feature = "planted-bugs")]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum MemberBug {
    /// A request refused for want of a leader (require-leader, or waiting past its
    /// deadline) is still proposed later: the caller was told it failed.
    RefuseButPropose,
    /// WAL segments are released behind every applied entry, whether or not a durable
    /// snapshot covers them.
    ReleaseWalAhead,
    /// Required-leader streams are never ended, however long the member has no leader.
    StreamsOutliveLeader,
    /// Progress notifications are made from the current revision before the queued
    /// events go out and whether or not a watcher is still catching up (etcd before
    /// 3.4.31/3.5.13, and keel's gRPC stream before it routed them through the hub).
    ProgressBeforeEvents,
}

impl Member {
    /// A member over a started (or restarted) raft node and the state recovered for it.
    pub fn new(cfg: MemberConfig, raft: RaftNode, sm: StateMachine, now: Time) -> Member {
        let mut m = Member {
            raft,
            sm,
            hub: WatchHub::new(WATCH_QUEUE, WATCH_FRAGMENT_BYTES),
            out: Output::default(),
            after_persist: None,
            pending: HashMap::new(),
            next_seq: (cfg.start_ms + 1) << 16,
            next_read: 1,
            next_lease_id: (cfg.start_ms & ((1 << 40) - 1)) << 8,
            reads_new: Vec::new(),
            reads_by_ctx: HashMap::new(),
            reads_by_index: Vec::new(),
            leaderless: Leaderless::default(),
            index_waits: Vec::new(),
            conf_waiting: Vec::new(),
            heard: HashMap::new(),
            revoking: BTreeMap::new(),
            compactor: Compactor::new(cfg.auto_compaction),
            status: Status::default(),
            housekeeping_at: now.plus(cfg.housekeeping_ms),
            leader_monitor: LeaderMonitor::new(cfg.election_ms, now),
            raft_wake: None,
            applied_since_snapshot: 0,
            snapshot_writing: false,
            snapshots: Vec::new(),
            removed_at: None,
            corruption: cfg.corrupt_check.map(|c| CorruptionCheck::new(c, now)),
            heartbeats: HashMap::new(),
            #[cfg(feature = "planted-bugs")]
            bug: None,
            cfg,
        };
        m.out.members_changed = true;
        m
    }

    /// This member's ID.
    pub fn id(&self) -> u64 {
        self.cfg.id
    }

    /// The header for a response served now.
    pub fn header(&self) -> Header {
        Header {
            revision: self.sm.kv.store.revision(),
            raft_term: self.raft.term().0,
        }
    }

    /// Proposals waiting to be applied.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// The callers whose requests wait for a leader (proposals first, oldest first).
    /// A driver that can tell a caller went away (its client's deadline passed, its
    /// stream was reset) checks these before each [`Member::advance`] and calls
    /// [`Member::forget`] for the gone: etcd drops such a proposal with its context,
    /// so a put the client gave up on is never applied later behind its back.
    pub fn waiting_for_leader(&self) -> impl Iterator<Item = Token> + '_ {
        self.leaderless.tokens()
    }

    /// `token`'s caller is gone: if its request still waits for a leader it is dropped
    /// unanswered and never proposed. (Once proposed, its outcome stands.)
    pub fn forget(&mut self, token: Token) {
        self.leaderless.forget(token);
    }

    /// A peer's raft message.
    pub fn step(&mut self, now: Time, m: Message) {
        self.heard.insert(m.from.0, now);
        self.raft.step(now, m);
    }

    /// A caller's request; the answer comes in a later [`Output`] under `call.token`.
    pub fn request(&mut self, now: Time, call: Call, req: Request) {
        if call.require_leader && !self.raft.leader().is_some() {
            self.reply(call.token, Err(MemberError::NoLeader));
            #[cfg(feature = "planted-bugs")]
            if self.planted(MemberBug::RefuseButPropose) {
                if let Request::Propose { cmd, auth } = req {
                    // Waits for a leader as any request does; its answer goes nowhere.
                    let ghost = Call {
                        token: Token(u64::MAX),
                        require_leader: false,
                        ..call
                    };
                    self.propose(now, cmd, auth, Some(ghost));
                }
            }
            return;
        }
        match req {
            Request::Propose { cmd, auth } => self.propose(now, cmd, auth, Some(call)),
            Request::Change(change) => {
                if let Err(e) = self.change_members(now, change, call) {
                    self.reply(call.token, Err(e));
                }
            }
            Request::Read => self.reads_new.push((call.deadline, call.token)),
            Request::WaitApplied { index } => {
                self.index_waits.push((index, call.deadline, call.token));
                self.serve_index_waits(now);
            }
        }
    }

    /// Timers: raft's, and housekeeping when due (the leader monitor's at every advance).
    pub fn tick(&mut self, now: Time) {
        self.raft.tick(now);
        if now >= self.housekeeping_at {
            self.housekeeping_at = now.plus(self.cfg.housekeeping_ms);
            self.housekeeping(now);
        }
        self.run_corruption_check(now);
    }

    /// A fresh lease ID (etcd generates them on the member that receives the grant),
    /// laid out as etcd's idutil generator lays them out (16 hex digits).
    pub fn new_lease_id(&mut self) -> LeaseId {
        self.next_lease_id = (self.next_lease_id + 1) & ((1 << 48) - 1);
        let id = ((self.cfg.id & 0xffff) << 48 | self.next_lease_id) & (i64::MAX as u64);
        LeaseId((id as i64).max(1))
    }

    /// Starts handing leadership to `target` (etcd's MoveLeader): this member must lead
    /// and `target` must be a voter.
    pub fn move_leader(&mut self, now: Time, target: u64) -> Result<(), MemberError> {
        if self.raft.role() != Role::Leader {
            return Err(MemberError::NotLeader);
        }
        if !self
            .raft
            .conf()
            .voters
            .contains(&crate::raft::MemberId(target))
        {
            return Err(MemberError::BadTransferee);
        }
        self.raft
            .transfer_leader(now, crate::raft::MemberId(target))
            .map_err(|_| MemberError::BadTransferee)
    }

    /// Renews a lease (the leader's lessor alone tracks expiry; a follower's answers
    /// "not primary"): its granted TTL. A lease with a checkpoint is renewed only once a
    /// clearing checkpoint is applied (proposed here): until then the answer is
    /// [`LeaseError::CheckpointPending`], and the caller asks again, as etcd's `Renew`
    /// waits for it.
    pub fn renew_lease(&mut self, now: Time, id: LeaseId) -> Result<i64, LeaseError> {
        let r = self.sm.kv.lessor.renew(id, now);
        if r == Err(LeaseError::CheckpointPending) && self.sm.kv.lessor.needs_clearing(id) {
            self.propose_checkpoints(now, vec![(id, 0)]);
        }
        r
    }

    /// Proposes lease checkpoints with the member's own authority; renewals of those
    /// leases wait until they are applied.
    fn propose_checkpoints(&mut self, now: Time, checkpoints: Vec<(LeaseId, i64)>) {
        let ids: Vec<LeaseId> = checkpoints.iter().map(|(id, _)| *id).collect();
        let cmd = Command::LeaseCheckpoint {
            checkpoints: checkpoints.into_iter().map(|(id, r)| (id.0, r)).collect(),
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        let data = encode_command(&Proposal {
            origin: self.cfg.id,
            seq,
            auth: Some(AuthInfo::member()),
            cmd,
        });
        if self.propose_own(now, data) {
            self.sm.kv.lessor.checkpoints_proposed(ids);
        }
    }

    /// Creates a watcher (catching up from history if it starts in the past); its
    /// responses come from [`Member::watch_responses`].
    pub fn watch_create(&mut self, req: WatchRequest) -> i64 {
        self.hub.create(req, &self.sm.kv.store)
    }

    /// Cancels a watcher.
    pub fn watch_cancel(&mut self, id: i64) {
        self.hub.cancel(id);
    }

    /// Responses ready for watchers whose stream can take them (`ready`); the others
    /// stay queued (falling back to history when they pile up).
    pub fn watch_responses(&mut self, ready: impl Fn(i64) -> bool) -> Vec<WatchResponse> {
        self.hub.catch_up(&self.sm.kv.store);
        let rev = self.sm.kv.store.revision();
        self.hub.take_responses_if(rev, ready)
    }

    /// Responses ready for watchers whose stream can take them, as
    /// [`Member::watch_responses`], followed by the progress notifications `of` asks for
    /// (see [`WatchHub::take_responses_with_progress`]): a driver that hands them to each
    /// stream in this order never lets a notification overtake an event it covers.
    pub fn watch_progress(
        &mut self,
        of: ProgressFor<'_>,
        ready: impl Fn(i64) -> bool,
    ) -> Vec<WatchResponse> {
        self.hub.catch_up(&self.sm.kv.store);
        let rev = self.sm.kv.store.revision();
        #[cfg(feature = "planted-bugs")]
        if self.planted(MemberBug::ProgressBeforeEvents) {
            let ids: Vec<i64> = match of {
                ProgressFor::Each(ids) => ids.to_vec(),
                ProgressFor::Stream(_) => vec![crate::mvcc::STREAM_PROGRESS_ID],
            };
            let mut out: Vec<WatchResponse> = ids
                .into_iter()
                .map(|watch_id| WatchResponse {
                    watch_id,
                    header_revision: rev,
                    ..WatchResponse::default()
                })
                .collect();
            out.extend(self.hub.take_responses_if(rev, ready));
            return out;
        }
        self.hub.take_responses_with_progress(rev, ready, of)
    }

    /// The persist batch numbered `seq` is durable.
    pub fn persisted(&mut self, now: Time, seq: PersistSeq) {
        self.raft.persisted(now, seq);
        if let Some(rd) = self.after_persist.take() {
            self.finish_ready(now, rd);
        }
    }

    /// Plants `bug` (simulation builds only).
    #[cfg(feature = "planted-bugs")]
    pub fn plant(&mut self, bug: MemberBug) {
        self.bug = Some(bug);
    }

    #[cfg(feature = "planted-bugs")]
    pub(super) fn planted(&self, bug: MemberBug) -> bool {
        self.bug == Some(bug)
    }

    /// The snapshot file handed out in [`Output::snapshot`] (at `index`) is durable, or
    /// could not be written (then the member stops: etcd panics on a failed snapshot
    /// save). The WAL behind the snapshot before it may then go.
    pub fn snapshot_saved(&mut self, index: LogIndex, result: Result<(), String>) {
        self.snapshot_writing = false;
        if let Err(e) = result {
            self.out.fatal = Some(MemberError::Storage(e));
            return;
        }
        if self.snapshots.last().is_some_and(|last| *last > index) {
            // Overtaken while it was written (a newer image came from the leader).
            return;
        }
        self.note_snapshot(index);
        if self.snapshots.len() >= 2 {
            self.out.release_wal = Some(self.snapshots[0]);
        }
    }

    /// Notes a durable snapshot (own or installed from the leader).
    fn note_snapshot(&mut self, index: LogIndex) {
        self.snapshots.retain(|i| *i < index);
        self.snapshots.push(index);
        if self.snapshots.len() > 2 {
            self.snapshots.remove(0);
        }
    }

    /// Runs what is ready and returns what the driver must do; call again until
    /// [`Output::idle`].
    pub fn advance(&mut self, now: Time) -> Output {
        self.monitor_leader(now);
        self.flush_reads(now);
        self.resume_leaderless(now);
        let mut persisting = false;
        // Whether raft had nothing to send while a batch is on its way to the disk:
        // what it holds waits for that batch, so the round is over until the driver
        // reports it durable.
        let mut waiting_for_disk = false;
        if self.after_persist.is_none() {
            let mut rd = self.raft.ready();
            self.take_soft_parts(now, &mut rd);
            if let Some(batch) = rd.persist.take() {
                self.out.persist = Some(batch);
                self.after_persist = Some(rd);
                persisting = true;
            } else {
                self.finish_ready(now, rd);
            }
        } else {
            // Heartbeats, their answers, appends to followers, ReadIndex rounds: raft
            // hands out only messages whose durability needs are met.
            let mut rd = self.raft.ready_messages();
            waiting_for_disk = rd.messages.is_empty() && rd.soft_state.is_none();
            self.take_soft_parts(now, &mut rd);
        }
        if let Some(at) = self.removed_at {
            if now.since(at) >= REMOVED_LINGER_MS {
                self.out.fatal.get_or_insert(MemberError::Removed);
            }
        } else if self.raft.is_removed() {
            self.removed_at = Some(now);
            self.out.notes.push(Note::Removed);
        }
        self.conclude_corruption_check(now);
        let mut out = std::mem::take(&mut self.out);
        let resumable = !self.leaderless.is_empty() && self.raft.leader().is_some();
        out.idle = !persisting
            && (waiting_for_disk || !self.raft.has_ready())
            && self.reads_new.is_empty()
            && !resumable;
        out.wake_at = self.wake_at(now);
        out
    }

    /// The parts of a `Ready` that never wait for the disk: the next wake-up, a role
    /// change, and the messages (into the output).
    fn take_soft_parts(&mut self, now: Time, rd: &mut Ready) {
        if let Some(t) = rd.wake_at {
            self.raft_wake = Some(t);
        }
        if let Some(ss) = rd.soft_state.take() {
            self.on_soft_state(now, ss.leader.0, ss.term.0, ss.role == Role::Leader);
        }
        self.observe_heartbeats(now, &rd.messages);
        self.out.messages.append(&mut rd.messages);
    }

    /// Ends required-leader streams when the leader has been gone too long. Checked
    /// first thing in a round, so nothing more is sent on them after a long pause.
    fn monitor_leader(&mut self, now: Time) {
        if self.leader_monitor.check(now) {
            #[cfg(feature = "planted-bugs")]
            if self.planted(MemberBug::StreamsOutliveLeader) {
                return;
            }
            self.out.notes.push(Note::EndLeaderlessStreams);
        }
    }

    /// etcd's heartbeat timeout detector: a leader's heartbeat to a peer more than two
    /// heartbeat intervals after its previous one was late (the leader is overloaded,
    /// likely by a slow disk): [`Note::HeartbeatLate`].
    fn observe_heartbeats(&mut self, now: Time, messages: &[Message]) {
        for m in messages {
            if !matches!(m.body, MessageBody::Heartbeat { .. }) {
                continue;
            }
            if let Some(prev) = self.heartbeats.insert(m.to.0, now) {
                let exceeded_ms = now.since(prev).saturating_sub(2 * self.cfg.heartbeat_ms);
                if exceeded_ms > 0 {
                    self.out.notes.push(Note::HeartbeatLate {
                        to: m.to.0,
                        exceeded_ms,
                    });
                }
            }
        }
    }

    fn wake_at(&self, now: Time) -> Time {
        let raft = self.raft_wake.unwrap_or(now.plus(self.cfg.housekeeping_ms));
        let mut at = raft
            .min(self.housekeeping_at)
            .min(self.leader_monitor.due());
        if self.removed_at.is_some() {
            at = at.min(now.plus(100));
        }
        if let Some(c) = &self.corruption {
            at = at.min(c.wake_at());
        }
        at
    }

    fn reply(&mut self, token: Token, r: Result<Response, MemberError>) {
        if token == CHECK_READ {
            return self.check_read_answered(r.map(|_| ()));
        }
        self.out.replies.push((token, r));
    }

    /// Proposes `cmd`; with a caller it is answered when applied, and waits for a leader
    /// if none is known.
    fn propose(&mut self, now: Time, cmd: Command, auth: Option<AuthInfo>, call: Option<Call>) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let data = encode_command(&Proposal {
            origin: self.cfg.id,
            seq,
            auth,
            cmd,
        });
        let Some(call) = call else {
            self.propose_own(now, data);
            return;
        };
        if data.len() > self.cfg.max_request_bytes {
            return self.reply(call.token, Err(MemberError::TooLarge));
        }
        self.submit(now, seq, Bytes::from(data), call.deadline, call.token);
    }

    /// Proposes an entry of the member's own (no caller waits): whether raft took it
    /// into its log.
    fn propose_own(&mut self, now: Time, data: Vec<u8>) -> bool {
        let taken = self.raft.propose(now, Bytes::from(data)).is_ok();
        if !taken {
            self.out.notes.push(Note::ProposalFailed);
        }
        taken
    }

    /// Proposes a caller's request; without a known leader it waits for one.
    fn submit(&mut self, now: Time, seq: u64, data: Bytes, deadline: Time, token: Token) {
        // Raft's timers run first, at the instant of the proposal: a due election timeout
        // ends the leader's term here, so the proposal waits, rather than in `propose`,
        // which would refuse it with "no leader".
        self.raft.tick(now);
        if !self.raft.leader().is_some() && !self.raft.is_removed() {
            let waiting = WaitingProposal {
                deadline,
                seq,
                data,
                token,
            };
            if let Err(p) = self.leaderless.wait_propose(waiting) {
                self.reply(p.token, Err(MemberError::NoLeader));
            }
            return;
        }
        match self.raft.propose(now, data) {
            Ok(_) => {
                self.pending.insert(seq, (token, deadline));
            }
            Err(e) => self.reply(token, Err(propose_error(e))),
        }
    }

    /// Once a leader is known, submits what waited for one.
    fn resume_leaderless(&mut self, now: Time) {
        if self.leaderless.is_empty() || !self.raft.leader().is_some() {
            return;
        }
        // What passed its deadline since the last housekeeping is answered now, never
        // proposed: its caller's own timer has told it the request failed.
        for t in self.leaderless.expire(now) {
            self.reply(t, Err(MemberError::Timeout));
        }
        let (proposals, reads) = self.leaderless.take();
        for p in proposals {
            self.submit(now, p.seq, p.data, p.deadline, p.token);
        }
        if !reads.is_empty() {
            self.read_index(now, reads);
        }
    }

    /// Sends this round's linearizable reads to raft under one context.
    fn flush_reads(&mut self, now: Time) {
        if !self.reads_new.is_empty() {
            let reads = std::mem::take(&mut self.reads_new);
            self.read_index(now, reads);
        }
    }

    /// Asks raft to confirm `reads` under one context; without a leader they wait for
    /// one (a removed member fails them).
    fn read_index(&mut self, now: Time, reads: Vec<(Time, Token)>) {
        let ctx = self.next_read;
        self.next_read += 1;
        match self.raft.read_index(now, ReadCtx(ctx)) {
            Ok(()) => {
                self.reads_by_ctx
                    .insert(ctx, reads.into_iter().map(|(_, t)| t).collect());
            }
            Err(ReadError::NoLeader) => {
                for t in self.leaderless.wait_reads(reads) {
                    self.reply(t, Err(MemberError::NoLeader));
                }
            }
            Err(ReadError::Removed) => {
                for (_, t) in reads {
                    self.reply(t, Err(MemberError::Removed));
                }
            }
        }
    }

    /// Periodic work: expire what waited too long, revoke expired leases and compact
    /// (leader), publish this member's attributes, free compacted history in a slice.
    fn housekeeping(&mut self, now: Time) {
        for t in self.leaderless.expire(now) {
            self.reply(t, Err(MemberError::Timeout));
        }
        // A proposal raft lost (a leader that dropped it) would wait forever: past its
        // deadline its caller hears "request timed out" (its outcome is unknown: the
        // entry may yet be applied, as with etcd's timeout).
        let mut late: Vec<(u64, Token)> = self
            .pending
            .iter()
            .filter(|(_, (_, deadline))| now >= *deadline)
            .map(|(seq, (t, _))| (*seq, *t))
            .collect();
        late.sort();
        for (seq, t) in late {
            self.pending.remove(&seq);
            self.reply(t, Err(MemberError::Timeout));
        }
        self.serve_index_waits(now);
        let lessor = &self.sm.kv.lessor;
        self.revoking.retain(|id, _| lessor.contains(*id));
        if self.raft.role() == Role::Leader {
            for id in self.sm.kv.lessor.expired(now, REVOKE_BATCH) {
                if let std::collections::btree_map::Entry::Vacant(e) = self.revoking.entry(id) {
                    e.insert(self.next_seq);
                    // As etcd's lessor revokes WithRoot: the member's own authority,
                    // never a client's, so auth never keeps an expired lease alive.
                    let cmd = Command::LeaseRevoke { id: id.0 };
                    self.propose(now, cmd, Some(AuthInfo::member()), None);
                }
            }
            if let Some(interval) = self.cfg.lease_checkpoint_ms {
                let due = self
                    .sm
                    .kv
                    .lessor
                    .due_checkpoints(now, interval, CHECKPOINT_BATCH);
                if !due.is_empty() {
                    self.propose_checkpoints(now, due);
                }
            }
            let kv = &self.sm.kv.store;
            if let Some(revision) = self
                .compactor
                .tick(now, kv.revision(), kv.compacted_revision())
            {
                self.out.notes.push(Note::AutoCompaction { revision });
                let cmd = Command::Compact {
                    revision,
                    physical: false,
                };
                self.propose(now, cmd, None, None);
            }
        } else {
            self.compactor.reset();
        }
        if self.raft.leader().is_some() {
            self.publish(now);
        }
        self.sm.kv.store.run_compaction(COMPACTION_SLICE);
    }

    /// Proposes this member's name and client URLs until the member table has them.
    fn publish(&mut self, now: Time) {
        if self.status.published {
            return;
        }
        let (name, urls) = (self.cfg.name.clone(), self.cfg.client_urls.clone());
        let mine = self.sm.members.get(&self.cfg.id);
        if mine.is_some_and(|m| m.name == name && m.client_urls == urls) {
            self.status.published = true;
            self.out.status = Some(self.status);
            return;
        }
        let cmd = Command::PublishMember {
            id: self.cfg.id,
            name,
            client_urls: urls,
        };
        self.propose(now, cmd, None, None);
    }

    fn on_soft_state(&mut self, now: Time, leader: u64, term: u64, is_leader: bool) {
        if leader != self.status.leader {
            self.out.notes.push(if is_leader {
                Note::BecameLeader { term }
            } else if leader != 0 {
                Note::LeaderElected { leader, term }
            } else {
                Note::NoLeader { term }
            });
        }
        self.leader_monitor.observe(now, leader != 0);
        if is_leader {
            // As etcd resets its detector on each leadership: no gap from a past term.
            self.heartbeats.clear();
        }
        self.status.leader = leader;
        self.status.term = term;
        self.status.is_leader = is_leader;
        self.out.status = Some(self.status);
        if leader != 0 {
            self.publish(now);
        }
    }

    /// Answers the callers waiting for an index this member has now applied, and those
    /// past their deadline (a forged token can name an index far ahead: its waiter must
    /// not outlive the request).
    fn serve_index_waits(&mut self, now: Time) {
        if self.index_waits.is_empty() {
            return;
        }
        let applied = self.sm.applied();
        for (index, deadline, t) in std::mem::take(&mut self.index_waits) {
            if index <= applied {
                self.reply(t, Ok(Response::Reached));
            } else if now >= deadline {
                self.reply(t, Err(MemberError::Timeout));
            } else {
                self.index_waits.push((index, deadline, t));
            }
        }
    }
}

/// The member error a refused proposal means to a client.
pub(crate) fn propose_error(e: ProposeError) -> MemberError {
    match e {
        ProposeError::NoLeader | ProposeError::NotLeader { .. } => MemberError::NoLeader,
        ProposeError::TransferInProgress => MemberError::LeaderChanged,
        ProposeError::TooLarge { .. } => MemberError::TooLarge,
        ProposeError::UncommittedLimit => MemberError::TooManyRequests,
        _ => MemberError::Removed,
    }
}

/// The voters of the configuration, as plain IDs.
fn voters(raft: &RaftNode) -> Vec<u64> {
    raft.conf().voters.iter().map(|v| v.0).collect()
}
