//! An in-memory cluster of raft members for scenario tests, property tests and benchmarks.
//!
//! One thread, no real time: the cluster owns a virtual clock, a network of in-flight
//! messages (deliverable in any order, droppable, duplicable, cut by partitions), a
//! simulated disk per member (writes are volatile until synced; a crash keeps any prefix
//! of the unsynced batches), and a toy state machine (a hash chain over applied entries).
//! After every step it checks raft's safety invariants and panics with a description on
//! the first violation.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;

use bytes::Bytes;

use super::config::Config;
use super::error::{ConfChangeError, ProposeError, TransferError};
use super::message::Message;
use super::node::{Proposed, RaftNode, Role};
use super::ready::{PersistBatch, ReadState, Ready};
use super::types::{
    ConfChange, ConfState, Entry, EntryPayload, HardState, LogIndex, MemberId, ReadCtx,
    RecoveredState, Snapshot, Term, Time,
};

/// A member's durable storage: what survives a crash, plus writes not yet synced.
#[derive(Debug, Default, Clone)]
pub struct Disk {
    /// Durable hard state.
    pub hard_state: HardState,
    /// Durable snapshot (index 0 with the bootstrap configuration at first).
    pub snapshot: Snapshot,
    /// Durable entries after the snapshot.
    pub entries: Vec<Entry>,
    /// Batches written but not synced: lost (or partly kept) on a crash.
    pub pending: VecDeque<PersistBatch>,
    /// The bootstrap batch is durable (otherwise a restart bootstraps afresh, as etcd
    /// does with an empty data dir).
    pub bootstrapped: bool,
}

impl Disk {
    fn apply(&mut self, b: PersistBatch) {
        if let Some(s) = b.snapshot {
            self.bootstrapped = true;
            if s.meta.index > self.snapshot.meta.index || s.meta.index.0 == 0 {
                self.entries.retain(|e| e.index > s.meta.index);
                // A snapshot from the leader replaces a log that disagrees with it.
                if self
                    .entries
                    .first()
                    .is_some_and(|e| e.index != s.meta.index.next())
                {
                    self.entries.clear();
                }
                self.snapshot = s;
            }
        }
        if let Some(first) = b.entries.first() {
            self.entries.retain(|e| e.index < first.index);
            self.entries.extend(b.entries);
        }
        if let Some(hs) = b.hard_state {
            self.hard_state = hs;
        }
    }

    /// Makes every pending batch durable.
    pub fn sync(&mut self) {
        while let Some(b) = self.pending.pop_front() {
            self.apply(b);
        }
    }

    /// A crash: the first `keep` unsynced batches happened to reach the platter, the rest
    /// are lost.
    pub fn crash(&mut self, keep: usize) {
        for _ in 0..keep {
            match self.pending.pop_front() {
                Some(b) => self.apply(b),
                None => break,
            }
        }
        self.pending.clear();
    }

    /// The application took a snapshot: store it and drop the log behind it.
    fn store_snapshot(&mut self, snap: Snapshot) {
        if snap.meta.index > self.snapshot.meta.index {
            self.entries.retain(|e| e.index > snap.meta.index);
            self.snapshot = snap;
        }
    }

    fn recovered(&self) -> RecoveredState {
        RecoveredState {
            hard_state: self.hard_state,
            snapshot: self.snapshot.meta.clone(),
            entries: self.entries.clone(),
            // The toy state machine is in memory: after a crash it is rebuilt from the
            // snapshot, so that is all it reflects.
            applied: self.snapshot.meta.index,
        }
    }
}

/// The toy state machine: a hash chain over every applied entry.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StateMachine {
    /// Last applied index.
    pub applied: LogIndex,
    /// Hash chain over all applied entries.
    pub hash: u64,
    /// Application payloads applied, in order (since the last restore).
    pub payloads: Vec<Bytes>,
}

fn mix(h: u64, v: u64) -> u64 {
    // splitmix64 step: cheap, well-distributed, stable across platforms.
    let mut z = h ^ v.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Stable hash of an entry's payload.
pub fn payload_hash(p: &EntryPayload) -> u64 {
    match p {
        EntryPayload::Empty => 1,
        EntryPayload::Normal(b) => b.iter().fold(2, |h, x| mix(h, u64::from(*x))),
        EntryPayload::ConfChange(cc) => {
            let (k, id) = match cc {
                ConfChange::AddVoter(id) => (3, id.0),
                ConfChange::AddLearner(id) => (4, id.0),
                ConfChange::Remove(id) => (5, id.0),
            };
            mix(k, id)
        }
    }
}

impl StateMachine {
    fn apply(&mut self, e: &Entry) {
        self.applied = e.index;
        self.hash = mix(mix(self.hash, e.index.0), payload_hash(&e.payload));
        if let EntryPayload::Normal(b) = &e.payload {
            self.payloads.push(b.clone());
        }
    }

    fn snapshot_data(&self, padding: usize) -> Bytes {
        let mut v = Vec::with_capacity(16 + padding);
        v.extend_from_slice(&self.applied.0.to_be_bytes());
        v.extend_from_slice(&self.hash.to_be_bytes());
        v.extend((0..padding).map(|i| i as u8));
        Bytes::from(v)
    }

    fn restore(data: &[u8]) -> StateMachine {
        let word = |i: usize| {
            data.get(i..i + 8)
                .and_then(|s| <[u8; 8]>::try_from(s).ok())
                .map_or(0, u64::from_be_bytes)
        };
        StateMachine {
            applied: LogIndex(word(0)),
            hash: word(8),
            payloads: Vec::new(),
        }
    }
}

/// One member of the simulated cluster.
#[derive(Debug)]
pub struct Member {
    /// The raft core; `None` while crashed.
    pub node: Option<RaftNode>,
    /// Its disk.
    pub disk: Disk,
    /// Its state machine (lost on crash, rebuilt from the snapshot).
    pub sm: StateMachine,
    /// Configuration it restarts with.
    pub cfg: Config,
    /// Reads confirmed to it.
    pub reads: Vec<ReadState>,
    /// Reads reported dropped.
    pub dropped_reads: Vec<ReadCtx>,
    /// The configuration it was created with (used again if it crashes before the
    /// bootstrap batch was durable).
    pub initial_conf: ConfState,
}

/// Knobs of the simulated cluster.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Sync every persist batch as soon as it is produced.
    pub auto_sync: bool,
    /// Check invariants after every step.
    pub check: bool,
    /// Bytes of padding in state-machine snapshots (to exercise chunked streaming).
    pub snapshot_padding: usize,
    /// Record every output for determinism comparisons.
    pub trace: bool,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            auto_sync: true,
            check: true,
            snapshot_padding: 64,
            trace: false,
        }
    }
}

/// What the checker knows about committed entries.
#[derive(Debug, Default)]
struct History {
    /// Term → the leader elected in it.
    leaders: BTreeMap<Term, MemberId>,
    /// Index → (term of the first member seen committing it, entry's term, payload hash).
    committed: BTreeMap<LogIndex, (Term, Term, u64)>,
    /// Highest index ever seen committed.
    max_committed: LogIndex,
}

/// A member's log as index → (term, payload hash), for comparisons.
type LogDigest = BTreeMap<LogIndex, (Term, u64)>;

/// An in-memory cluster. Members are numbered 1..=n.
#[derive(Debug)]
pub struct Cluster {
    /// Virtual time.
    pub now: Time,
    /// Members by ID.
    pub members: BTreeMap<MemberId, Member>,
    /// Messages in flight, oldest first.
    pub net: Vec<Message>,
    /// Directed links that drop everything.
    cut: BTreeSet<(MemberId, MemberId)>,
    /// Options.
    pub opts: ClusterOptions,
    history: History,
    /// Every output, when tracing.
    pub trace: Vec<String>,
    next_payload: u64,
    next_read: u64,
}

/// Shorthand for member IDs in scripts.
pub fn id(n: u64) -> MemberId {
    MemberId(n)
}

impl Cluster {
    /// `n` voters with test-friendly timing (heartbeat 10 ms, election 100 ms).
    pub fn new(n: u64) -> Cluster {
        Cluster::with(n, 0, ClusterOptions::default(), |_| {})
    }

    /// `voters` voters and `learners` learners, options, and a config tweak per member.
    pub fn with(
        voters: u64,
        learners: u64,
        opts: ClusterOptions,
        tweak: impl Fn(&mut Config),
    ) -> Cluster {
        let mut conf = ConfState::with_voters((1..=voters).map(MemberId));
        conf.learners = (voters + 1..=voters + learners).map(MemberId).collect();
        let mut members = BTreeMap::new();
        for i in 1..=voters + learners {
            let cfg = Cluster::config(MemberId(i), &tweak);
            let node = RaftNode::new(cfg.clone(), conf.clone(), Time(0))
                .unwrap_or_else(|e| panic!("invalid test config: {e}"));
            members.insert(MemberId(i), Member::fresh(node, cfg, conf.clone()));
        }
        let mut c = Cluster {
            now: Time(0),
            members,
            net: Vec::new(),
            cut: BTreeSet::new(),
            opts,
            history: History::default(),
            trace: Vec::new(),
            next_payload: 0,
            next_read: 0,
        };
        let ids: Vec<MemberId> = c.members.keys().copied().collect();
        for i in ids {
            c.process(i);
        }
        c
    }

    fn config(id: MemberId, tweak: &impl Fn(&mut Config)) -> Config {
        let mut cfg = Config::new(id);
        cfg.heartbeat_interval_ms = 10;
        cfg.election_timeout_ms = 100;
        cfg.compaction_tail = 5;
        cfg.snapshot_chunk_bytes = 32;
        cfg.snapshot_inflight_chunks = 2;
        cfg.max_append_bytes = 4096;
        cfg.max_inflight_msgs = 8;
        tweak(&mut cfg);
        cfg
    }

    /// Adds a member that is not (yet) in the configuration: it knows no peers and waits
    /// for a leader to contact it.
    pub fn add_blank_member(&mut self, mid: MemberId) {
        let cfg = Cluster::config(mid, &|_| {});
        let node = RaftNode::new(cfg.clone(), ConfState::default(), self.now)
            .unwrap_or_else(|e| panic!("invalid test config: {e}"));
        self.members
            .insert(mid, Member::fresh(node, cfg, ConfState::default()));
        self.process(mid);
    }

    // ----- access ------------------------------------------------------------------

    /// The member's raft core; panics if crashed.
    pub fn node(&self, mid: MemberId) -> &RaftNode {
        self.members
            .get(&mid)
            .and_then(|m| m.node.as_ref())
            .unwrap_or_else(|| panic!("member {mid:?} is not running"))
    }

    fn node_mut(&mut self, mid: MemberId) -> &mut RaftNode {
        self.members
            .get_mut(&mid)
            .and_then(|m| m.node.as_mut())
            .unwrap_or_else(|| panic!("member {mid:?} is not running"))
    }

    /// Running member IDs.
    pub fn live(&self) -> Vec<MemberId> {
        self.members
            .iter()
            .filter(|(_, m)| m.node.is_some())
            .map(|(id, _)| *id)
            .collect()
    }

    /// The leader of the highest term among running members, if any.
    pub fn leader(&self) -> Option<MemberId> {
        self.members
            .values()
            .filter_map(|m| m.node.as_ref())
            .filter(|n| n.role() == Role::Leader)
            .max_by_key(|n| n.term())
            .map(|n| n.id())
    }

    /// The state machine of a member.
    pub fn sm(&self, mid: MemberId) -> &StateMachine {
        &self.members[&mid].sm
    }

    /// Reads confirmed to a member so far.
    pub fn reads(&self, mid: MemberId) -> &[ReadState] {
        &self.members[&mid].reads
    }

    /// Highest index the checker saw committed anywhere.
    pub fn max_committed(&self) -> LogIndex {
        self.history.max_committed
    }

    // ----- inputs ------------------------------------------------------------------

    /// Proposes a fresh unique payload at `mid`.
    pub fn propose(&mut self, mid: MemberId) -> Result<Proposed, ProposeError> {
        self.next_payload += 1;
        let data = Bytes::from(format!("p{}", self.next_payload));
        self.propose_data(mid, data)
    }

    /// Proposes `data` at `mid`.
    pub fn propose_data(&mut self, mid: MemberId, data: Bytes) -> Result<Proposed, ProposeError> {
        let now = self.now;
        let r = self.node_mut(mid).propose(now, data);
        self.process(mid);
        r
    }

    /// Proposes a membership change at `mid`.
    pub fn conf_change(
        &mut self,
        mid: MemberId,
        cc: ConfChange,
    ) -> Result<Proposed, ConfChangeError> {
        let now = self.now;
        let r = self.node_mut(mid).propose_conf_change(now, cc);
        self.process(mid);
        r
    }

    /// Asks `mid` for a linearizable read; returns its token.
    pub fn read(&mut self, mid: MemberId) -> Result<ReadCtx, super::error::ReadError> {
        self.next_read += 1;
        let ctx = ReadCtx(self.next_read);
        let now = self.now;
        let r = self.node_mut(mid).read_index(now, ctx);
        self.process(mid);
        r.map(|()| ctx)
    }

    /// Asks `mid` for `n` reads before draining its outputs once, as a driver does with
    /// requests that arrive together.
    pub fn read_many(&mut self, mid: MemberId, n: usize) -> Vec<ReadCtx> {
        let now = self.now;
        let mut ctxs = Vec::new();
        for _ in 0..n {
            self.next_read += 1;
            let ctx = ReadCtx(self.next_read);
            if self.node_mut(mid).read_index(now, ctx).is_ok() {
                ctxs.push(ctx);
            }
        }
        self.process(mid);
        ctxs
    }

    /// Asks `mid` to hand leadership to `target`.
    pub fn transfer(&mut self, mid: MemberId, target: MemberId) -> Result<(), TransferError> {
        let now = self.now;
        let r = self.node_mut(mid).transfer_leader(now, target);
        self.process(mid);
        r
    }

    /// Makes `mid` start an election now.
    pub fn campaign(&mut self, mid: MemberId) {
        let now = self.now;
        self.node_mut(mid).start_election(now);
        self.process(mid);
    }

    /// The application at `mid` snapshots its state and compacts the log.
    pub fn compact(&mut self, mid: MemberId) {
        let now = self.now;
        let padding = self.opts.snapshot_padding;
        let Some(m) = self.members.get_mut(&mid) else {
            return;
        };
        let Some(node) = m.node.as_mut() else { return };
        if m.sm.applied != node.applied() {
            return;
        }
        let data = m.sm.snapshot_data(padding);
        let meta = node.compact(now, data.clone());
        m.disk.store_snapshot(Snapshot { meta, data });
        self.process(mid);
    }

    /// Syncs `mid`'s disk and tells it so.
    pub fn sync(&mut self, mid: MemberId) {
        let now = self.now;
        let Some(m) = self.members.get_mut(&mid) else {
            return;
        };
        let Some(node) = m.node.as_mut() else { return };
        let last = m.disk.pending.back().map(|b| b.seq);
        m.disk.sync();
        if let Some(seq) = last {
            node.persisted(now, seq);
        }
        self.process(mid);
    }

    /// Crashes `mid`: volatile state and all but the first `keep` unsynced batches lost.
    pub fn crash(&mut self, mid: MemberId, keep: usize) {
        if let Some(m) = self.members.get_mut(&mid) {
            if m.node.take().is_some() {
                m.disk.crash(keep);
                m.sm = StateMachine::default();
                m.reads.clear();
            }
        }
        self.net.retain(|msg| msg.to != mid && msg.from != mid);
    }

    /// Restarts a crashed member from its disk.
    pub fn restart(&mut self, mid: MemberId) {
        let now = self.now;
        let Some(m) = self.members.get_mut(&mid) else {
            return;
        };
        if m.node.is_some() {
            return;
        }
        let node = if m.disk.bootstrapped {
            RaftNode::restart(m.cfg.clone(), m.disk.recovered(), now)
                .unwrap_or_else(|e| panic!("member {mid:?} cannot restart from its disk: {e}"))
        } else {
            RaftNode::new(m.cfg.clone(), m.initial_conf.clone(), now)
                .unwrap_or_else(|e| panic!("invalid test config: {e}"))
        };
        m.sm = if m.disk.snapshot.meta.index.0 > 0 {
            StateMachine::restore(&m.disk.snapshot.data)
        } else {
            StateMachine::default()
        };
        m.node = Some(node);
        self.process(mid);
    }

    // ----- network -----------------------------------------------------------------

    /// Cuts every link between `mid` and the others, both ways.
    pub fn isolate(&mut self, mid: MemberId) {
        let all: Vec<MemberId> = self.members.keys().copied().collect();
        self.partition(&[mid], &all);
    }

    /// Cuts links between the two groups, both ways.
    pub fn partition(&mut self, a: &[MemberId], b: &[MemberId]) {
        for x in a {
            for y in b {
                if x != y && !a.contains(y) {
                    self.cut.insert((*x, *y));
                    self.cut.insert((*y, *x));
                }
            }
        }
    }

    /// Cuts the link from `from` to `to` only.
    pub fn cut_one_way(&mut self, from: MemberId, to: MemberId) {
        self.cut.insert((from, to));
    }

    /// Restores every link.
    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// Delivers the in-flight message at position `k` (modulo the count).
    pub fn deliver(&mut self, k: usize) -> bool {
        if self.net.is_empty() {
            return false;
        }
        let m = self.net.remove(k % self.net.len());
        self.deliver_msg(m);
        true
    }

    fn deliver_msg(&mut self, m: Message) {
        if self.cut.contains(&(m.from, m.to)) {
            return;
        }
        let to = m.to;
        let now = self.now;
        let Some(node) = self.members.get_mut(&to).and_then(|x| x.node.as_mut()) else {
            return;
        };
        node.step(now, m);
        self.process(to);
    }

    /// Drops the in-flight message at position `k`.
    pub fn drop_msg(&mut self, k: usize) {
        if !self.net.is_empty() {
            let n = self.net.len();
            self.net.remove(k % n);
        }
    }

    /// Duplicates the in-flight message at position `k`.
    pub fn duplicate(&mut self, k: usize) {
        if !self.net.is_empty() {
            let n = self.net.len();
            let m = self.net[k % n].clone();
            self.net.push(m);
        }
    }

    /// Delivers messages in order until none are in flight (bounded); returns how many
    /// were delivered.
    pub fn stabilize(&mut self) -> usize {
        self.stabilize_at_most(1_000_000)
    }

    /// As [`Cluster::stabilize`], stopping after `max` deliveries (a test that checks
    /// for message storms stops one early instead of delivering a million).
    pub fn stabilize_at_most(&mut self, max: usize) -> usize {
        let mut delivered = 0;
        while !self.net.is_empty() && delivered < max {
            let m = self.net.remove(0);
            self.deliver_msg(m);
            delivered += 1;
        }
        delivered
    }

    /// Advances time by `ms` in steps of one millisecond, ticking every member and
    /// delivering all messages at each step.
    pub fn advance(&mut self, ms: u64) {
        for _ in 0..ms {
            self.tick(1);
            self.stabilize();
        }
    }

    /// Advances time by `ms` at once and ticks every member (no delivery).
    pub fn tick(&mut self, ms: u64) {
        self.now = self.now.plus(ms);
        for mid in self.live() {
            let now = self.now;
            self.node_mut(mid).tick(now);
            self.process(mid);
        }
    }

    /// Advances time until `cond` holds or `max_ms` pass; returns whether it held.
    pub fn run_until(&mut self, max_ms: u64, mut cond: impl FnMut(&Cluster) -> bool) -> bool {
        for _ in 0..max_ms {
            if cond(self) {
                return true;
            }
            self.tick(1);
            self.stabilize();
        }
        cond(self)
    }

    /// Runs until one leader is known to every running member of its configuration
    /// (bounded).
    pub fn elect_any(&mut self) -> MemberId {
        let ok = self.run_until(10_000, |c| {
            c.leader().is_some_and(|l| {
                let t = c.node(l).term();
                let live = c.live();
                c.node(l)
                    .conf()
                    .members()
                    .filter(|m| live.contains(m))
                    .all(|m| {
                        let n = c.node(m);
                        n.leader() == l && n.term() == t
                    })
            })
        });
        assert!(
            ok,
            "no stable leader within 10 s of virtual time: {}",
            self.describe()
        );
        self.leader().unwrap_or_else(|| unreachable!())
    }

    /// Runs until the leader committed its whole log and every running member of its
    /// configuration applied it.
    pub fn converge(&mut self, max_ms: u64) -> bool {
        self.run_until(max_ms, |c| {
            let Some(l) = c.leader() else { return false };
            let target = c.node(l).committed();
            if target < c.node(l).last_index() {
                return false; // Proposals still in flight.
            }
            c.live().iter().all(|m| {
                let n = c.node(*m);
                n.is_removed()
                    || !c.node(l).conf().contains(*m)
                    || (c.sm(*m).applied >= target && n.applied() >= target)
            })
        })
    }

    // ----- the driver loop ---------------------------------------------------------

    /// Drains `mid`'s outputs until it has nothing more to say, executing them.
    pub fn process(&mut self, mid: MemberId) {
        for _ in 0..64 {
            if self.opts.check {
                // Record commits made by the last input before their entries are applied.
                self.check_member(mid);
            }
            let Some(m) = self.members.get_mut(&mid) else {
                return;
            };
            let Some(node) = m.node.as_mut() else { return };
            let rd = node.ready();
            if self.opts.trace && !rd.is_empty() {
                self.trace.push(format!("{mid:?}@{:?} {rd:?}", self.now));
            }
            let more = self.execute(mid, rd);
            if self.opts.check {
                self.check_member(mid);
            }
            if !more {
                let busy = self
                    .members
                    .get(&mid)
                    .and_then(|m| m.node.as_ref())
                    .is_some_and(RaftNode::has_ready);
                if !busy {
                    return;
                }
            }
        }
    }

    fn execute(&mut self, mid: MemberId, rd: Ready) -> bool {
        let now = self.now;
        let padding = self.opts.snapshot_padding;
        let auto_sync = self.opts.auto_sync;
        let Some(m) = self.members.get_mut(&mid) else {
            return false;
        };
        if let Some(snap) = &rd.apply_snapshot {
            m.sm = StateMachine::restore(&snap.data);
        }
        for e in &rd.committed {
            m.sm.apply(e);
        }
        if self.opts.check {
            for e in &rd.committed {
                self.history_apply(mid, e);
            }
        }
        self.net.extend(rd.messages);
        let Some(m) = self.members.get_mut(&mid) else {
            return false;
        };
        let Some(node) = m.node.as_mut() else {
            return false;
        };
        m.reads.extend(rd.read_states);
        m.dropped_reads.extend(rd.dropped_reads);
        let mut more = false;
        if let Some(batch) = rd.persist {
            let seq = batch.seq;
            m.disk.pending.push_back(batch);
            if auto_sync {
                m.disk.sync();
                node.persisted(now, seq);
                more = true;
            }
        }
        if rd.want_snapshot && m.sm.applied == node.applied() {
            let data = m.sm.snapshot_data(padding);
            let meta = node.compact(now, data.clone());
            m.disk.store_snapshot(Snapshot { meta, data });
            more = true;
        }
        more
    }

    // ----- invariants --------------------------------------------------------------

    fn history_apply(&mut self, mid: MemberId, e: &Entry) {
        let h = payload_hash(&e.payload);
        if let Some(&(_, term, hash)) = self.history.committed.get(&e.index) {
            assert!(
                term == e.term && hash == h,
                "state machine safety: member {mid:?} applied index {:?} term {:?}, but the entry committed there has term {term:?} (payload hash differs: {})",
                e.index,
                e.term,
                hash != h
            );
        } else {
            // Applied before anyone was seen committing it: impossible.
            panic!(
                "member {mid:?} applied index {:?} that no member has committed",
                e.index
            );
        }
    }

    fn check_member(&mut self, mid: MemberId) {
        let Some(node) = self.members.get(&mid).and_then(|m| m.node.as_ref()) else {
            return;
        };
        // Election safety: at most one leader per term.
        if node.role() == Role::Leader {
            let prev = *self.history.leaders.entry(node.term()).or_insert(mid);
            assert_eq!(
                prev,
                mid,
                "election safety: {prev:?} and {mid:?} both led term {:?}",
                node.term()
            );
        }
        // Record newly committed indices with the term they were committed in.
        let committed = node.committed();
        let mut i = self.history.max_committed.next();
        while i <= committed {
            // Indices committed by installing a snapshot are behind it: the leader that
            // committed them was seen first.
            if let Some(e) = node.entry(i) {
                self.history
                    .committed
                    .insert(i, (node.term(), e.term, payload_hash(&e.payload)));
            }
            i = i.next();
        }
        if committed > self.history.max_committed {
            self.history.max_committed = committed;
        }
        // Leader completeness: a leader of term T holds every entry committed before T.
        if node.role() == Role::Leader {
            let t = node.term();
            let snap = node.snapshot_index();
            for (idx, (commit_term, term, hash)) in self.history.committed.range(snap.next()..) {
                if *commit_term >= t {
                    continue;
                }
                let held = node.entry(*idx);
                assert!(
                    held.is_some_and(|e| e.term == *term && payload_hash(&e.payload) == *hash),
                    "leader completeness: leader {mid:?} of term {t:?} lacks entry {idx:?} (term {term:?}) committed in term {commit_term:?}"
                );
            }
        }
    }

    /// Log matching across every pair of running members: if two logs hold an entry with
    /// the same index and term, they are identical up to that index.
    pub fn check_log_matching(&self) {
        let logs: Vec<(MemberId, LogDigest)> = self
            .members
            .iter()
            .filter_map(|(id, m)| m.node.as_ref().map(|n| (*id, n)))
            .map(|(id, n)| {
                (
                    id,
                    n.log_entries()
                        .map(|e| (e.index, (e.term, payload_hash(&e.payload))))
                        .collect(),
                )
            })
            .collect();
        for (a, la) in &logs {
            for (b, lb) in &logs {
                if a >= b {
                    continue;
                }
                let top = la
                    .iter()
                    .rev()
                    .find(|(i, (t, _))| lb.get(i).is_some_and(|(tb, _)| tb == t))
                    .map(|(i, _)| *i);
                let Some(top) = top else { continue };
                for (i, ea) in la.range(..=top) {
                    if let Some(eb) = lb.get(i) {
                        assert_eq!(
                            ea, eb,
                            "log matching: members {a:?} and {b:?} agree at {top:?} but differ at {i:?}"
                        );
                    }
                }
            }
        }
    }

    /// Every running member that is still in the configuration applied the same history.
    pub fn check_converged(&self) {
        let conf = self.leader().map(|l| self.node(l).conf().clone());
        let mut seen: Option<(MemberId, LogIndex, u64)> = None;
        for (id, m) in &self.members {
            let Some(n) = &m.node else { continue };
            if n.is_removed() || conf.as_ref().is_some_and(|c| !c.contains(*id)) {
                continue;
            }
            match seen {
                None => seen = Some((*id, m.sm.applied, m.sm.hash)),
                Some((other, applied, hash)) => {
                    assert_eq!(
                        (m.sm.applied, m.sm.hash),
                        (applied, hash),
                        "members {id:?} and {other:?} applied different histories"
                    );
                }
            }
        }
        if let Some((_, applied, _)) = seen {
            assert!(
                applied >= self.history.max_committed,
                "committed entry lost: max committed {:?}, applied {applied:?}",
                self.history.max_committed
            );
        }
    }

    /// A one-line summary of every member, for failure messages.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        for (id, m) in &self.members {
            match &m.node {
                None => {
                    let _ = write!(s, "[{id:?}: down] ");
                }
                Some(n) => {
                    let _ = write!(
                        s,
                        "[{id:?}: {:?} t{:?} lead {:?} last {:?} commit {:?} applied {:?}] ",
                        n.role(),
                        n.term(),
                        n.leader(),
                        n.last_index(),
                        n.committed(),
                        m.sm.applied
                    );
                }
            }
        }
        s
    }
}

impl Member {
    fn fresh(node: RaftNode, cfg: Config, initial_conf: ConfState) -> Member {
        Member {
            initial_conf,
            node: Some(node),
            disk: Disk::default(),
            sm: StateMachine::default(),
            cfg,
            reads: Vec::new(),
            dropped_reads: Vec::new(),
        }
    }
}
