//! One raft member: state, public API, the hand-off of outputs and durability tracking.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

use super::config::Config;
use super::error::{ConfigError, ProposeError, ReadError, RecoverError, TransferError};
use super::log::RaftLog;
use super::message::{Message, MessageBody};
use super::progress::Progress;
use super::read_index::ReadIndexState;
use super::ready::{PersistBatch, Ready};
use super::snapshot::IncomingSnapshot;
use super::types::{
    ConfChange, ConfState, Entry, EntryPayload, HardState, LogIndex, MemberId, PersistSeq, ReadCtx,
    RecoveredState, Snapshot, SnapshotMeta, Term, Time,
};

/// A member's role in its current term.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Role {
    /// Follows a leader (or waits for one).
    Follower,
    /// Asking for pre-votes before starting an election.
    PreCandidate,
    /// Asking for votes in a new term.
    Candidate,
    /// Replicates the log and answers reads.
    Leader,
}

/// The volatile state a driver may want to observe.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct SoftState {
    /// Current role.
    pub role: Role,
    /// Known leader, or [`MemberId::NONE`].
    pub leader: MemberId,
    /// Current term.
    pub term: Term,
}

/// Where a proposal went.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Proposed {
    /// Appended to this leader's log at `index` in `term`.
    Appended {
        /// Assigned index.
        index: LogIndex,
        /// Leader's term.
        term: Term,
    },
    /// Forwarded to the leader; it shows up in the log when committed.
    Forwarded,
}

/// One raft member as a sans-IO state machine. See the module documentation.
#[derive(Debug)]
pub struct RaftNode {
    pub(crate) cfg: Config,
    pub(crate) id: MemberId,
    pub(crate) rng: ChaCha8Rng,
    pub(crate) now: Time,

    pub(crate) term: Term,
    pub(crate) vote: MemberId,
    pub(crate) log: RaftLog,
    /// Configuration as of the applied index.
    pub(crate) conf: ConfState,

    pub(crate) role: Role,
    pub(crate) leader: MemberId,
    pub(crate) removed: bool,

    /// Follower/candidate: when to campaign. Leader: when to check the quorum.
    pub(crate) election_deadline: Time,
    pub(crate) heartbeat_deadline: Time,
    /// Last time the current leader was heard from (leader lease for vote refusal).
    pub(crate) leader_contact: Time,
    /// Votes are refused until then (after a restart, see `restart`).
    pub(crate) vote_fence_until: Time,

    pub(crate) votes: BTreeMap<MemberId, bool>,

    pub(crate) progress: BTreeMap<MemberId, Progress>,
    /// Removed members still being told about their removal, with the removal's index.
    pub(crate) departing: BTreeMap<MemberId, LogIndex>,
    /// A configuration change is pending until applied past this index.
    pub(crate) pending_conf_index: LogIndex,
    pub(crate) uncommitted_bytes: u64,
    pub(crate) transferee: Option<(MemberId, Time)>,
    /// A TimeoutNow left this term: someone may campaign bypassing leases.
    pub(crate) timeout_now_sent: bool,
    /// Commit index changed; followers with nothing new to receive get an empty append.
    pub(crate) commit_dirty: bool,
    pub(crate) forward_buf: Vec<EntryPayload>,
    pub(crate) reads: ReadIndexState,

    /// Latest state-machine image held for followers that need it.
    pub(crate) snapshot: Option<Snapshot>,
    pub(crate) want_snapshot: bool,
    pub(crate) incoming: Option<IncomingSnapshot>,
    /// Installed from the leader, to be handed to the driver for persistence.
    pub(crate) snapshot_to_persist: Option<Snapshot>,
    /// Installed and being persisted: handed to the application once durable.
    pub(crate) snapshot_to_apply: Option<(PersistSeq, Snapshot)>,
    pub(crate) ready_snapshot: Option<Snapshot>,

    /// Hard state as last handed to the driver.
    pub(crate) issued_hs: HardState,
    pub(crate) durable_term: Term,
    pub(crate) issued_seq: PersistSeq,
    pub(crate) durable_seq: PersistSeq,
    /// Batches handed out and not yet durable: (seq, last log index written, term).
    pub(crate) inflight_batches: VecDeque<(PersistSeq, LogIndex, Term)>,
    /// Messages waiting for a batch to become durable.
    pub(crate) held: VecDeque<(PersistSeq, Message)>,

    pub(crate) msgs: Vec<Message>,
    pub(crate) reported_soft: Option<SoftState>,
}

impl RaftNode {
    /// A brand-new member of a cluster whose initial configuration is `conf` (the same on
    /// every founding member). A member joining an existing cluster passes an empty `conf`:
    /// it learns the configuration from the leader.
    pub fn new(cfg: Config, conf: ConfState, now: Time) -> Result<RaftNode, ConfigError> {
        cfg.validate()?;
        let empty = SnapshotMeta::default();
        let mut log = RaftLog::new(&empty, Vec::new());
        // Founders write the initial configuration into the log as committed entries
        // 1..=n of term 1, identical on every founder (as etcd does). A member that joins
        // later learns it by replication like any other change, so it can never believe
        // it is alone in the cluster.
        let changes = conf
            .voters
            .iter()
            .map(|id| ConfChange::AddVoter(*id))
            .chain(conf.learners.iter().map(|id| ConfChange::AddLearner(*id)));
        for (i, cc) in changes.enumerate() {
            log.append_own(Entry {
                term: Term(1),
                index: LogIndex(i as u64 + 1),
                payload: EntryPayload::ConfChange(cc),
            });
        }
        log.committed = log.last_index();
        let founder = log.last_index().0 > 0;
        let mut node = RaftNode::with_log(cfg, log, ConfState::default(), now);
        if founder {
            node.term = Term(1);
        }
        // An empty snapshot at index 0 marks the storage as initialized: a restart then
        // recovers through the same path as after any later snapshot.
        node.snapshot_to_persist = Some(Snapshot {
            meta: empty,
            data: Bytes::new(),
        });
        Ok(node)
    }

    /// A member resuming from durable storage.
    pub fn restart(
        cfg: Config,
        state: RecoveredState,
        now: Time,
    ) -> Result<RaftNode, RestartError> {
        cfg.validate()?;
        let RecoveredState {
            hard_state: hs,
            snapshot,
            entries,
            applied,
        } = state;
        let mut expect = snapshot.index.next();
        let mut prev_term = snapshot.term;
        for e in &entries {
            if e.index != expect {
                return Err(RecoverError::Gap {
                    after: expect.prev(),
                }
                .into());
            }
            if e.term < prev_term || e.term > hs.term {
                return Err(RecoverError::BadTerm { index: e.index }.into());
            }
            prev_term = e.term;
            expect = expect.next();
        }
        let last = expect.prev();
        // A commit index behind the snapshot or the application is stale but harmless:
        // commit-only hard states are written lazily, and both are committed.
        let commit = hs.commit.max(snapshot.index).max(applied.min(last));
        if commit > last {
            return Err(RecoverError::CommitBeyondLog { commit, last }.into());
        }
        if applied < snapshot.index || applied > commit {
            return Err(RecoverError::AppliedOutOfRange {
                applied,
                snapshot: snapshot.index,
                commit,
            }
            .into());
        }
        let mut log = RaftLog::new(&snapshot, entries);
        log.committed = commit;
        // Configuration changes the application already reflects must be re-applied to
        // raft's view; later ones come out again as committed entries.
        let mut conf = snapshot.conf.clone();
        let mut removed = false;
        for e in log.entries() {
            if e.index > applied {
                break;
            }
            if let EntryPayload::ConfChange(cc) = e.payload {
                removed |= super::membership::apply_to_conf(&mut conf, cc, cfg.id);
            }
        }
        log.applied = applied;
        let mut node = RaftNode::with_log(cfg, log, conf, now);
        node.term = hs.term;
        node.vote = hs.vote;
        node.removed = removed;
        node.issued_hs = HardState {
            term: hs.term,
            vote: hs.vote,
            commit,
        };
        node.durable_term = hs.term;
        // We may have acknowledged a leader just before crashing: refuse to help elect
        // another for a full election timeout, as if still in that leader's lease.
        node.vote_fence_until = now.plus(node.cfg.election_timeout_ms);
        Ok(node)
    }

    fn with_log(cfg: Config, log: RaftLog, conf: ConfState, now: Time) -> RaftNode {
        let id = cfg.id;
        let rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ id.0.rotate_left(17));
        let mut node = RaftNode {
            id,
            rng,
            now,
            term: Term(0),
            vote: MemberId::NONE,
            log,
            conf,
            role: Role::Follower,
            leader: MemberId::NONE,
            removed: false,
            election_deadline: now,
            heartbeat_deadline: now,
            leader_contact: now,
            vote_fence_until: now,
            votes: BTreeMap::new(),
            progress: BTreeMap::new(),
            departing: BTreeMap::new(),
            pending_conf_index: LogIndex(0),
            uncommitted_bytes: 0,
            transferee: None,
            timeout_now_sent: false,
            commit_dirty: false,
            forward_buf: Vec::new(),
            reads: ReadIndexState::default(),
            snapshot: None,
            want_snapshot: false,
            incoming: None,
            snapshot_to_persist: None,
            snapshot_to_apply: None,
            ready_snapshot: None,
            issued_hs: HardState::default(),
            durable_term: Term(0),
            issued_seq: PersistSeq(0),
            durable_seq: PersistSeq(0),
            inflight_batches: VecDeque::new(),
            held: VecDeque::new(),
            msgs: Vec::new(),
            reported_soft: None,
            cfg,
        };
        node.reset_election_deadline();
        node
    }

    // ----- observation -------------------------------------------------------------

    /// This member's ID.
    pub fn id(&self) -> MemberId {
        self.id
    }
    /// Current term.
    pub fn term(&self) -> Term {
        self.term
    }
    /// Current role.
    pub fn role(&self) -> Role {
        self.role
    }
    /// Known leader, or [`MemberId::NONE`].
    pub fn leader(&self) -> MemberId {
        self.leader
    }
    /// Vote cast in the current term.
    pub fn vote(&self) -> MemberId {
        self.vote
    }
    /// Commit index.
    pub fn committed(&self) -> LogIndex {
        self.log.committed
    }
    /// Index of the last entry handed to the application.
    pub fn applied(&self) -> LogIndex {
        self.log.applied
    }
    /// Index of the last entry in the log.
    pub fn last_index(&self) -> LogIndex {
        self.log.last_index()
    }
    /// Entries up to here are durable on this member.
    pub fn stable_index(&self) -> LogIndex {
        self.log.stable
    }
    /// The log begins after this index (snapshot boundary).
    pub fn snapshot_index(&self) -> LogIndex {
        self.log.snapshot_index()
    }
    /// Term of the entry at `index`, if held.
    pub fn term_at(&self, index: LogIndex) -> Option<Term> {
        self.log.term(index)
    }
    /// The entry at `index`, if held in memory.
    pub fn entry(&self, index: LogIndex) -> Option<&Entry> {
        self.log.get(index)
    }
    /// Entries held in memory after the snapshot boundary.
    pub fn log_entries(&self) -> impl Iterator<Item = &Entry> {
        self.log.entries()
    }
    /// Bytes of entries held in memory.
    pub fn log_bytes(&self) -> u64 {
        self.log.bytes()
    }
    /// Configuration as of the applied index.
    pub fn conf(&self) -> &ConfState {
        &self.conf
    }
    /// Whether this member applied its own removal.
    pub fn is_removed(&self) -> bool {
        self.removed
    }
    /// Leader only: a member's match index.
    pub fn match_index(&self, id: MemberId) -> Option<LogIndex> {
        if id == self.id {
            return Some(self.log.stable);
        }
        self.progress.get(&id).map(|p| p.matched)
    }
    /// The member a leadership transfer is handing over to.
    pub fn transferee(&self) -> Option<MemberId> {
        self.transferee.map(|(id, _)| id)
    }
    /// Role, leader and term.
    pub fn soft_state(&self) -> SoftState {
        SoftState {
            role: self.role,
            leader: self.leader,
            term: self.term,
        }
    }

    /// The value a quorum of voters has reached: the quorum-th largest of each voter's
    /// value (`own` for this member, `of` its progress for the others, `none` if unknown).
    pub(crate) fn quorum_value<T: Ord + Copy>(
        &self,
        own: T,
        none: T,
        of: impl Fn(&Progress) -> T,
    ) -> Option<T> {
        let mut values: Vec<T> = self
            .conf
            .voters
            .iter()
            .map(|id| {
                if *id == self.id {
                    own
                } else {
                    self.progress.get(id).map_or(none, &of)
                }
            })
            .collect();
        values.sort_unstable_by(|a, b| b.cmp(a));
        values.get(self.conf.quorum() - 1).copied()
    }

    /// May this member start an election?
    pub(crate) fn promotable(&self) -> bool {
        !self.removed && self.conf.voters.contains(&self.id)
    }

    // ----- inputs ------------------------------------------------------------------

    /// Time passed: fire whatever timers are due.
    pub fn tick(&mut self, now: Time) {
        self.advance(now);
    }

    /// A message from a peer. Malformed or stale messages are dropped, never panicked on.
    pub fn step(&mut self, now: Time, msg: Message) {
        self.advance(now);
        self.handle_message(msg);
    }

    /// Proposes application data.
    pub fn propose(&mut self, now: Time, data: Bytes) -> Result<Proposed, ProposeError> {
        self.advance(now);
        self.propose_payload(EntryPayload::Normal(data))
    }

    /// Starts an election now (etcd's `Campaign`), if this member may campaign: with
    /// pre-vote when configured.
    pub fn start_election(&mut self, now: Time) {
        self.advance(now);
        if self.role != Role::Leader && self.promotable() {
            if self.cfg.pre_vote {
                self.campaign_pre_vote();
            } else {
                self.campaign(false);
            }
        }
    }

    /// Asks for a linearizable read; a [`crate::raft::ReadState`] with `ctx` follows.
    pub fn read_index(&mut self, now: Time, ctx: ReadCtx) -> Result<(), ReadError> {
        self.advance(now);
        self.request_read(ctx)
    }

    /// Asks the leader to hand leadership to `target`.
    pub fn transfer_leader(&mut self, now: Time, target: MemberId) -> Result<(), TransferError> {
        self.advance(now);
        self.start_transfer(target)
    }

    /// The driver made batch `seq` (and every earlier one) durable.
    pub fn persisted(&mut self, now: Time, seq: PersistSeq) {
        self.advance(now);
        if seq <= self.durable_seq || seq > self.issued_seq {
            return; // Stale or bogus acknowledgement.
        }
        self.durable_seq = seq;
        while let Some(&(s, last, term)) = self.inflight_batches.front() {
            if s > seq {
                break;
            }
            self.inflight_batches.pop_front();
            self.log.stable = self.log.stable.max(last);
            self.durable_term = self.durable_term.max(term);
        }
        while let Some((s, _)) = self.held.front() {
            if *s > seq {
                break;
            }
            if let Some((_, m)) = self.held.pop_front() {
                self.msgs.push(m);
            }
        }
        if let Some((s, _)) = &self.snapshot_to_apply {
            if *s <= seq {
                self.ready_snapshot = self.snapshot_to_apply.take().map(|(_, snap)| snap);
            }
        }
        if self.role == Role::Leader {
            self.maybe_commit();
        }
    }

    /// The application took a snapshot of its state at the applied index: compact the log
    /// behind it (keeping `compaction_tail` entries) and keep the image if a follower
    /// needs it. Returns the snapshot's metadata for the driver to store with the image.
    pub fn compact(&mut self, now: Time, data: Bytes) -> SnapshotMeta {
        self.advance(now);
        let index = self.log.applied;
        let meta = SnapshotMeta {
            index,
            term: self.log.term(index).unwrap_or(Term(0)),
            conf: self.conf.clone(),
        };
        self.log
            .compact_to(LogIndex(index.0.saturating_sub(self.cfg.compaction_tail)));
        if self.want_snapshot || self.any_follower_needs_snapshot() {
            self.snapshot = Some(Snapshot {
                meta: meta.clone(),
                data,
            });
            self.want_snapshot = false;
        }
        meta
    }

    /// Drains every output produced since the last call.
    pub fn ready(&mut self) -> Ready {
        let mut rd = Ready {
            apply_snapshot: self.ready_snapshot.take(),
            ..Ready::default()
        };
        rd.committed = self.take_committed();
        if self.role == Role::Leader {
            self.flush_reads();
            self.broadcast_append();
            self.release_unneeded_snapshot();
        } else {
            self.flush_forwarded();
        }
        rd.persist = self.take_persist_batch();
        rd.messages = std::mem::take(&mut self.msgs);
        rd.read_states = std::mem::take(&mut self.reads.ready);
        rd.dropped_reads = std::mem::take(&mut self.reads.dropped);
        rd.want_snapshot = self.want_snapshot;
        let soft = self.soft_state();
        if self.reported_soft != Some(soft) {
            self.reported_soft = Some(soft);
            rd.soft_state = Some(soft);
        }
        rd.wake_at = Some(self.next_wake());
        rd
    }

    /// What may go out while the driver is still writing the last [`Ready`]'s persist
    /// batch: messages (held ones stay held until their batch is durable), a role
    /// change and the next wake-up. Entries to apply, the next batch, snapshots and
    /// confirmed reads stay for the next [`RaftNode::ready`], after the batch.
    pub fn ready_messages(&mut self) -> Ready {
        if self.role == Role::Leader {
            self.flush_reads();
            self.broadcast_append();
        } else {
            self.flush_forwarded();
        }
        let mut rd = Ready {
            messages: std::mem::take(&mut self.msgs),
            ..Ready::default()
        };
        let soft = self.soft_state();
        if self.reported_soft != Some(soft) {
            self.reported_soft = Some(soft);
            rd.soft_state = Some(soft);
        }
        rd.wake_at = Some(self.next_wake());
        rd
    }

    /// Whether [`RaftNode::ready`] would return anything besides a wake-up time.
    pub fn has_ready(&self) -> bool {
        !self.msgs.is_empty()
            || self.ready_snapshot.is_some()
            || self.log.committed.min(self.log.stable) > self.log.applied
            || self.log.unpersisted_from <= self.log.last_index()
            || self.snapshot_to_persist.is_some()
            || self.hard_state() != self.issued_hs
            || !self.reads.ready.is_empty()
            || !self.reads.dropped.is_empty()
            || !self.forward_buf.is_empty()
            || self.reported_soft != Some(self.soft_state())
            || (self.role == Role::Leader
                && (self.commit_dirty || self.reads.has_unbatched() || self.can_send_more()))
    }

    // ----- time --------------------------------------------------------------------

    /// Brings the clock forward (never backward) and fires due timers.
    pub(crate) fn advance(&mut self, now: Time) {
        if now > self.now {
            self.now = now;
        }
        self.fire_timers();
    }

    pub(crate) fn reset_election_deadline(&mut self) {
        let base = self.cfg.election_timeout_ms;
        let jitter = self.rng.next_u64() % base;
        self.election_deadline = self.now.plus(base + jitter);
    }

    fn next_wake(&self) -> Time {
        let mut t = self.election_deadline;
        if self.role == Role::Leader {
            t = t.min(self.heartbeat_deadline);
            if let Some((_, deadline)) = self.transferee {
                t = t.min(deadline);
            }
        }
        t
    }

    // ----- durability --------------------------------------------------------------

    pub(crate) fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.log.committed,
        }
    }

    /// State changed since the last batch that dependent messages must wait for.
    fn has_unissued_durable_state(&self) -> bool {
        let hs = self.hard_state();
        hs.term != self.issued_hs.term
            || hs.vote != self.issued_hs.vote
            || self.log.unpersisted_from <= self.log.last_index()
            || self.snapshot_to_persist.is_some()
    }

    /// Sends `msg` once everything this member has decided so far is durable: votes,
    /// acknowledgements of entries or snapshots, and any message from a term not yet
    /// durable.
    pub(crate) fn send_durable(&mut self, msg: Message) {
        let needed = if self.has_unissued_durable_state() {
            PersistSeq(self.issued_seq.0 + 1)
        } else {
            self.issued_seq
        };
        if needed <= self.durable_seq {
            self.msgs.push(msg);
        } else {
            self.held.push_back((needed, msg));
        }
    }

    /// Sends `msg`, holding it only if it carries a term that is not durable yet.
    pub(crate) fn send(&mut self, msg: Message) {
        if msg.term > self.durable_term {
            self.send_durable(msg);
        } else {
            self.msgs.push(msg);
        }
    }

    pub(crate) fn message(&self, to: MemberId, body: MessageBody) -> Message {
        Message {
            from: self.id,
            to,
            term: self.term,
            body,
        }
    }

    fn take_persist_batch(&mut self) -> Option<PersistBatch> {
        let hs = self.hard_state();
        let hs_changed = hs != self.issued_hs;
        let sync_hs = hs.term != self.issued_hs.term || hs.vote != self.issued_hs.vote;
        let snapshot = self.snapshot_to_persist.take();
        let entries = self.log.take_unpersisted();
        if !hs_changed && snapshot.is_none() && entries.is_empty() {
            return None;
        }
        let seq = PersistSeq(self.issued_seq.0 + 1);
        self.issued_seq = seq;
        self.issued_hs = hs;
        let must_sync = sync_hs || snapshot.is_some() || !entries.is_empty();
        if let Some(s) = &snapshot {
            if s.meta.index.0 > 0 {
                self.snapshot_to_apply = Some((seq, s.clone()));
            }
        }
        self.inflight_batches
            .push_back((seq, self.log.last_index(), hs.term));
        Some(PersistBatch {
            seq,
            hard_state: hs_changed.then_some(hs),
            snapshot,
            entries,
            must_sync,
        })
    }

    /// After a truncation or snapshot at `index`, batches still in flight can vouch for
    /// nothing beyond it.
    pub(crate) fn clamp_inflight_batches(&mut self, index: LogIndex) {
        for b in self.inflight_batches.iter_mut() {
            b.1 = b.1.min(index);
        }
    }

    // ----- applying ----------------------------------------------------------------

    fn take_committed(&mut self) -> Vec<Entry> {
        if self.snapshot_to_apply.is_some() {
            // The state machine restores the snapshot (once durable) before anything after.
            return Vec::new();
        }
        let entries = self.log.take_committed(self.cfg.max_apply_batch);
        for e in &entries {
            match e.payload {
                EntryPayload::ConfChange(cc) => self.apply_conf_change(cc, e.index),
                EntryPayload::Normal(ref d) if self.role == Role::Leader => {
                    self.uncommitted_bytes = self.uncommitted_bytes.saturating_sub(d.len() as u64);
                }
                _ => {}
            }
        }
        entries
    }

    // ----- role changes ------------------------------------------------------------

    pub(crate) fn become_follower(&mut self, term: Term, leader: MemberId) {
        if term > self.term {
            self.term = term;
            self.vote = MemberId::NONE;
        }
        if self.role == Role::Leader {
            self.progress.clear();
            self.departing.clear();
            self.transferee = None;
            self.timeout_now_sent = false;
            self.uncommitted_bytes = 0;
            self.snapshot = None;
        }
        if self.leader != leader {
            self.drop_forwarded_reads();
        }
        self.drop_leader_reads();
        self.role = Role::Follower;
        self.leader = leader;
        self.leader_contact = self.now;
        self.votes.clear();
        self.reset_election_deadline();
    }

    /// Proposal entry point shared by local and forwarded proposals.
    pub(crate) fn propose_payload(
        &mut self,
        payload: EntryPayload,
    ) -> Result<Proposed, ProposeError> {
        if self.removed {
            return Err(ProposeError::Removed);
        }
        let size = payload.size();
        if size > self.cfg.max_proposal_bytes {
            return Err(ProposeError::TooLarge {
                size,
                limit: self.cfg.max_proposal_bytes,
            });
        }
        if self.role != Role::Leader {
            if !self.leader.is_some() {
                return Err(ProposeError::NoLeader);
            }
            if !self.cfg.forward_proposals {
                return Err(ProposeError::NotLeader {
                    leader: Some(self.leader),
                });
            }
            self.forward_buf.push(payload);
            return Ok(Proposed::Forwarded);
        }
        if self.transferee.is_some() {
            return Err(ProposeError::TransferInProgress);
        }
        if self.uncommitted_bytes > 0
            && self.uncommitted_bytes + size > self.cfg.max_uncommitted_bytes
        {
            return Err(ProposeError::UncommittedLimit);
        }
        self.uncommitted_bytes += size;
        let index = self.log.last_index().next();
        self.log.append_own(Entry {
            term: self.term,
            index,
            payload,
        });
        Ok(Proposed::Appended {
            index,
            term: self.term,
        })
    }

    fn flush_forwarded(&mut self) {
        if self.forward_buf.is_empty() {
            return;
        }
        let payloads = std::mem::take(&mut self.forward_buf);
        if self.leader.is_some() && self.leader != self.id {
            let m = self.message(self.leader, MessageBody::Propose { payloads });
            self.msgs.push(m);
        }
    }

    fn start_transfer(&mut self, target: MemberId) -> Result<(), TransferError> {
        if self.role != Role::Leader {
            if !self.leader.is_some() {
                return Err(TransferError::NoLeader);
            }
            let m = self.message(self.leader, MessageBody::TransferLeader { target });
            self.msgs.push(m);
            return Ok(());
        }
        self.begin_transfer(target)
    }
}

/// Why a member could not resume from recovered state.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RestartError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The recovered state is inconsistent.
    #[error(transparent)]
    Recover(#[from] RecoverError),
}
