//! The Wing–Gong–Lowe search, per partition.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::{self, Debug, Write as _};
use std::hash::{BuildHasher, Hash, Hasher};

use smallvec::{smallvec, SmallVec};

use super::history::{Completion, History, OpId, Time};
use super::model::Model;

/// The default search budget: model steps tried across all partitions before giving
/// up with [`Verdict::Unknown`]. The validation corpus needs under a million for its
/// hardest history; the cap bounds a pathological one to seconds and about a gigabyte of
/// memo (roughly 100 bytes per step) instead of hours and the machine's memory.
pub const DEFAULT_MAX_STEPS: u64 = 10_000_000;

/// Limits on the search.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckOptions {
    /// Model steps tried, over all partitions, before the undecided ones are Unknown.
    pub max_steps: u64,
}

impl Default for CheckOptions {
    fn default() -> Self {
        Self {
            max_steps: DEFAULT_MAX_STEPS,
        }
    }
}

/// The answer alone, without evidence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Some linearization exists.
    Linearizable,
    /// No linearization exists.
    NotLinearizable,
    /// The search ran out of budget before deciding: not a verdict.
    Unknown,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Linearizable => "linearizable",
            Verdict::NotLinearizable => "not-linearizable",
            Verdict::Unknown => "unknown",
        })
    }
}

/// The answer with its evidence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckOutcome<K, S> {
    /// Every partition has a linearization; here is one per partition, in key order.
    /// Operations with unknown outcome appear only where the witness has them take effect.
    Linearizable {
        /// Per partition, the operations in linearization order.
        witness: Vec<(K, Vec<OpId>)>,
    },
    /// Some partition has no linearization.
    NotLinearizable(Box<Violation<K, S>>),
    /// No partition is known to be violated, but at least one could not be decided.
    Unknown(Exhausted<K>),
}

/// Why a partition is not linearizable, as far as a search can tell: the deepest point it
/// reached and the operation it could not get past.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation<K, S> {
    /// The partition that failed.
    pub key: K,
    /// Operations in that partition.
    pub partition_len: usize,
    /// The longest linearizable prefix the search found, in order.
    pub longest_prefix: Vec<OpId>,
    /// The model state after that prefix.
    pub state_after_prefix: S,
    /// The completed operation with the earliest return among those left: none of the
    /// remaining candidates could be placed next, so it could not be placed before its
    /// return.
    pub stuck: OpId,
    /// Operations called before `stuck` returned that were not in the prefix: each was
    /// either rejected by the model next or led only to dead ends.
    pub candidates: Vec<OpId>,
}

/// A partition the search could not decide within its budget.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exhausted<K> {
    /// The first undecided partition.
    pub key: K,
    /// Operations in it.
    pub partition_len: usize,
    /// Steps spent on it before the budget ran out.
    pub steps: u64,
    /// How many partitions were undecided in all.
    pub undecided_partitions: usize,
}

impl<K, S> CheckOutcome<K, S> {
    /// The verdict alone.
    pub fn verdict(&self) -> Verdict {
        match self {
            CheckOutcome::Linearizable { .. } => Verdict::Linearizable,
            CheckOutcome::NotLinearizable(_) => Verdict::NotLinearizable,
            CheckOutcome::Unknown(_) => Verdict::Unknown,
        }
    }

    /// Whether the history was shown linearizable.
    pub fn is_linearizable(&self) -> bool {
        self.verdict() == Verdict::Linearizable
    }
}

impl<K: Debug, S: Debug> CheckOutcome<K, S> {
    /// A multi-line account for a test failure message, naming operations of `history`.
    pub fn explain<I: Debug, O: Debug>(&self, history: &History<I, O>) -> String {
        // Long prefixes are mostly noise; the end is where the trouble is.
        const PREFIX_TAIL: usize = 12;
        let mut out = String::new();
        match self {
            CheckOutcome::Linearizable { witness } => {
                let ops: usize = witness.iter().map(|(_, order)| order.len()).sum();
                let _ = write!(
                    out,
                    "linearizable: {} partitions, {ops} operations placed",
                    witness.len()
                );
            }
            CheckOutcome::Unknown(exhausted) => {
                let _ = write!(
                    out,
                    "unknown: partition {:?} ({} operations) undecided after {} steps; \
                     {} partition(s) undecided in all",
                    exhausted.key,
                    exhausted.partition_len,
                    exhausted.steps,
                    exhausted.undecided_partitions
                );
            }
            CheckOutcome::NotLinearizable(v) => {
                let _ = writeln!(
                    out,
                    "not linearizable: partition {:?} ({} operations); the longest \
                     linearizable prefix has {} operations and ends in state {:?}",
                    v.key,
                    v.partition_len,
                    v.longest_prefix.len(),
                    v.state_after_prefix
                );
                let _ = writeln!(
                    out,
                    "  no order of the pending operations places this one before it returned:"
                );
                let _ = writeln!(out, "    {}", describe(history, v.stuck));
                let _ = writeln!(out, "  pending candidates that could not go next:");
                for &id in &v.candidates {
                    let _ = writeln!(out, "    {}", describe(history, id));
                }
                let skipped = v.longest_prefix.len().saturating_sub(PREFIX_TAIL);
                let _ = writeln!(
                    out,
                    "  end of the longest prefix ({skipped} earlier operations omitted):"
                );
                for &id in &v.longest_prefix[skipped..] {
                    let _ = writeln!(out, "    {}", describe(history, id));
                }
            }
        }
        out
    }
}

fn describe<I: Debug, O: Debug>(history: &History<I, O>, id: OpId) -> String {
    let Some(op) = history.ops().get(id) else {
        return format!("#{id} (not in this history)");
    };
    match &op.completion {
        Completion::Returned { at, output } => format!(
            "#{id} client {}: {:?} -> {output:?} [{}, {at}]",
            op.client, op.input, op.call
        ),
        Completion::Unknown => format!(
            "#{id} client {}: {:?} -> unknown outcome [{}, inf)",
            op.client, op.input, op.call
        ),
    }
}

/// Checks `history` against `model` with the default budget.
pub fn check<M: Model>(
    model: &M,
    history: &History<M::Input, M::Output>,
) -> CheckOutcome<M::Key, M::State> {
    check_with(model, history, &CheckOptions::default())
}

/// Steps each undecided partition gets in the first round of [`check_with`]; doubled
/// every round.
const FIRST_SLICE: u64 = 4_096;

/// Checks `history` against `model`.
///
/// Partitions are searched in rounds, each undecided one resuming where it stopped with
/// twice the steps of the previous round, and the check stops at the first partition
/// shown not linearizable. One hard but linearizable key therefore cannot hide a
/// violation in another key behind its whole budget (Porcupine gets the same effect by
/// racing partitions on goroutines); rounds keep the result deterministic.
pub fn check_with<M: Model>(
    model: &M,
    history: &History<M::Input, M::Output>,
    options: &CheckOptions,
) -> CheckOutcome<M::Key, M::State> {
    let mut partitions: BTreeMap<M::Key, Vec<OpId>> = BTreeMap::new();
    for (id, op) in history.ops().iter().enumerate() {
        partitions
            .entry(model.partition(&op.input))
            .or_default()
            .push(id);
    }
    let mut searches: Vec<Search<'_, M>> = partitions
        .into_iter()
        .map(|(key, ops)| Search::new(model, key, history, ops))
        .collect();
    let mut orders: Vec<Option<Vec<OpId>>> = vec![None; searches.len()];
    let mut budget = options.max_steps;
    let mut slice = FIRST_SLICE;
    loop {
        let mut paused = false;
        for (search, order) in searches.iter_mut().zip(&mut orders) {
            if order.is_some() {
                continue;
            }
            let grant = slice.min(budget);
            let before = search.steps;
            let result = search.run(before + grant);
            budget -= search.steps - before;
            match result {
                PartitionResult::Linearizable(found) => {
                    *order = Some(found);
                    search.release();
                }
                PartitionResult::Paused => paused = true,
                PartitionResult::Violation(evidence) => {
                    return CheckOutcome::NotLinearizable(Box::new(Violation {
                        key: search.key.clone(),
                        partition_len: search.ops.len(),
                        longest_prefix: evidence.prefix,
                        state_after_prefix: evidence.state,
                        stuck: evidence.stuck,
                        candidates: evidence.candidates,
                    }));
                }
            }
        }
        if !paused || budget == 0 {
            break;
        }
        slice = slice.saturating_mul(2);
    }

    let undecided_partitions = orders.iter().filter(|order| order.is_none()).count();
    let mut witness = Vec::with_capacity(searches.len());
    for (search, order) in searches.into_iter().zip(orders) {
        match order {
            Some(order) => witness.push((search.key, order)),
            None => {
                return CheckOutcome::Unknown(Exhausted {
                    key: search.key,
                    partition_len: search.ops.len(),
                    steps: search.steps,
                    undecided_partitions,
                })
            }
        }
    }
    CheckOutcome::Linearizable { witness }
}

enum PartitionResult<S> {
    Linearizable(Vec<OpId>),
    Violation(Evidence<S>),
    /// The step limit was reached first; the search can resume.
    Paused,
}

struct Evidence<S> {
    prefix: Vec<OpId>,
    state: S,
    stuck: OpId,
    candidates: Vec<OpId>,
}

/// End of the entry list.
const NIL: usize = usize::MAX;
/// The sentinel node in front of the list, so that every entry has a predecessor.
const HEAD: usize = 0;

// Node numbering: HEAD is 0; the call of local operation j is 1 + 2j and its return,
// when it has one, 2 + 2j. Parity tells calls from returns without a lookup.
fn call_node(j: usize) -> usize {
    1 + 2 * j
}
fn return_node(j: usize) -> usize {
    2 + 2 * j
}
fn is_call(node: usize) -> bool {
    node % 2 == 1
}
fn op_of(node: usize) -> usize {
    (node - 1) / 2
}

/// A bit set over local operation indices; the memo key.
struct Bits(Vec<u64>);

impl Bits {
    fn new(len: usize) -> Self {
        Self(vec![0; len.div_ceil(64)])
    }
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }
}

/// A model state stored once in [`StateTable`]; the search handles only these.
type StateId = usize;

/// Every distinct state the search has met, each stored once. The memo holds many
/// (linearized set, state) pairs per state, and states can be large (the append store's
/// are whole strings), so pairs name states by id instead of holding copies.
struct StateTable<S> {
    states: Vec<S>,
    by_hash: HashMap<u64, SmallVec<[StateId; 1]>, FastHash>,
}

impl<S: Eq + Hash> StateTable<S> {
    fn new() -> Self {
        Self {
            states: Vec::new(),
            by_hash: HashMap::default(),
        }
    }

    fn intern(&mut self, state: S) -> StateId {
        let hash = FastHash.hash_one(&state);
        let bucket = self.by_hash.entry(hash).or_default();
        if let Some(&id) = bucket.iter().find(|&&id| self.states[id] == state) {
            return id;
        }
        let id = self.states.len();
        self.states.push(state);
        bucket.push(id);
        id
    }

    fn get(&self, id: StateId) -> &S {
        &self.states[id]
    }
}

/// (linearized set, state) pairs already explored.
#[derive(Default)]
struct Memo {
    seen: HashMap<Box<[u64]>, SeenStates, FastHash>,
}

/// The states explored with one linearized set. Usually a handful, but when concurrent
/// writes commute into distinct states (appends) one set can carry thousands, and a
/// linear scan per step would make the search quadratic.
enum SeenStates {
    Few(SmallVec<[StateId; 4]>),
    Many(HashSet<StateId, FastHash>),
}

impl SeenStates {
    // As many as fit inline.
    const FEW: usize = 4;

    /// Adds `state`; false if it was there.
    fn insert(&mut self, state: StateId) -> bool {
        match self {
            SeenStates::Few(states) if states.contains(&state) => false,
            SeenStates::Few(states) if states.len() < Self::FEW => {
                states.push(state);
                true
            }
            SeenStates::Few(states) => {
                let mut many: HashSet<StateId, FastHash> = states.iter().copied().collect();
                many.insert(state);
                *self = SeenStates::Many(many);
                true
            }
            SeenStates::Many(states) => states.insert(state),
        }
    }
}

impl Memo {
    /// Records the pair; false if it was already there.
    fn insert(&mut self, linearized: &Bits, state: StateId) -> bool {
        match self.seen.get_mut(linearized.0.as_slice()) {
            Some(states) => states.insert(state),
            None => {
                self.seen.insert(
                    linearized.0.clone().into_boxed_slice(),
                    SeenStates::Few(smallvec![state]),
                );
                true
            }
        }
    }

    /// Pops successors until one whose pair with `linearized` is new, and records it.
    fn take_unexplored(
        &mut self,
        linearized: &Bits,
        successors: &mut SmallVec<[StateId; 2]>,
    ) -> Option<StateId> {
        while let Some(state) = successors.pop() {
            if self.insert(linearized, state) {
                return Some(state);
            }
        }
        None
    }
}

/// FxHash's multiply-rotate word hash: the memo hashes bit sets and states millions of
/// times, and SipHash's resistance to chosen keys buys nothing against our own histories.
#[derive(Clone, Copy, Default)]
struct FastHash;

impl BuildHasher for FastHash {
    type Hasher = FastHasher;
    fn build_hasher(&self) -> FastHasher {
        FastHasher(0)
    }
}

struct FastHasher(u64);

impl FastHasher {
    const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(Self::SEED);
    }
}

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    fn finish(&self) -> u64 {
        // The multiply only carries entropy upwards, while the table indexes by the low
        // bits: bit sets differing in high bits would share buckets. Murmur3's finaliser
        // spreads every input bit over the whole word.
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

/// One linearized operation on the search stack: what to restore on backtrack, and the
/// model's other successors not tried yet.
struct Frame {
    op: usize,
    prev_state: StateId,
    untried: SmallVec<[StateId; 2]>,
}

/// The search over one partition, resumable: [`Search::run`] stops at a step limit and
/// continues from the same point when called again.
struct Search<'a, M: Model> {
    model: &'a M,
    history: &'a History<M::Input, M::Output>,
    key: M::Key,
    /// Local index -> operation in the history.
    ops: Vec<OpId>,
    /// The entry list: successor and predecessor of each node.
    next: Vec<usize>,
    prev: Vec<usize>,
    /// Per local operation, whether it has a return entry.
    completed: Vec<bool>,
    states: StateTable<M::State>,
    linearized: Bits,
    memo: Memo,
    stack: Vec<Frame>,
    state: StateId,
    completed_left: usize,
    cursor: usize,
    steps: u64,
    best: Option<Evidence<M::State>>,
}

impl<'a, M: Model> Search<'a, M> {
    fn new(
        model: &'a M,
        key: M::Key,
        history: &'a History<M::Input, M::Output>,
        ops: Vec<OpId>,
    ) -> Self {
        // Calls sort before returns at equal times, so operations whose intervals touch
        // count as concurrent: with a coarse clock, equal stamps prove no order.
        let mut entries: Vec<(Time, u8, usize)> = Vec::with_capacity(2 * ops.len());
        let mut completed = Vec::with_capacity(ops.len());
        for (j, &id) in ops.iter().enumerate() {
            let op = &history.ops()[id];
            entries.push((op.call, 0, call_node(j)));
            if let Some(at) = op.returned_at() {
                entries.push((at, 1, return_node(j)));
            }
            completed.push(op.returned_at().is_some());
        }
        entries.sort_by_key(|&(time, kind, _)| (time, kind));

        let nodes = 1 + 2 * ops.len();
        let mut next = vec![NIL; nodes];
        let mut prev = vec![NIL; nodes];
        let mut last = HEAD;
        for &(_, _, node) in &entries {
            next[last] = node;
            prev[node] = last;
            last = node;
        }
        let mut states = StateTable::new();
        let state = states.intern(model.init(&key));
        let completed_left = completed.iter().filter(|&&c| c).count();
        let cursor = next[HEAD];
        Self {
            model,
            history,
            linearized: Bits::new(ops.len()),
            key,
            ops,
            next,
            prev,
            completed,
            states,
            memo: Memo::default(),
            stack: Vec::new(),
            state,
            completed_left,
            cursor,
            steps: 0,
            best: None,
        }
    }

    fn unlink(&mut self, node: usize) {
        let (p, n) = (self.prev[node], self.next[node]);
        self.next[p] = n;
        if n != NIL {
            self.prev[n] = p;
        }
    }

    // Dancing links: the node still holds its old neighbours, which are correct again
    // because relinks happen in the reverse order of unlinks.
    fn relink(&mut self, node: usize) {
        let (p, n) = (self.prev[node], self.next[node]);
        self.next[p] = node;
        if n != NIL {
            self.prev[n] = node;
        }
    }

    fn lift(&mut self, j: usize) {
        self.unlink(call_node(j));
        if self.completed[j] {
            self.unlink(return_node(j));
        }
    }

    fn unlift(&mut self, j: usize) {
        if self.completed[j] {
            self.relink(return_node(j));
        }
        self.relink(call_node(j));
    }

    /// The states the model allows after `j` from `state`, as ids.
    fn successors(&mut self, state: StateId, j: usize) -> SmallVec<[StateId; 2]> {
        let op = &self.history.ops()[self.ops[j]];
        let next = self
            .model
            .step(self.states.get(state), &op.input, op.output());
        let mut ids: SmallVec<[StateId; 2]> =
            next.into_iter().map(|s| self.states.intern(s)).collect();
        if !self.completed[j] {
            // An unknown-outcome operation that leaves the state as it was is the same
            // as one that never happened, which the search covers anyway; placing it
            // would only multiply equivalent orders.
            ids.retain(|id| *id != state);
        }
        ids
    }

    /// Searches until decided or until `steps` reaches `limit`.
    fn run(&mut self, limit: u64) -> PartitionResult<M::State> {
        loop {
            // Unknown-outcome operations need not take effect, so the search is done
            // once every completed operation is placed.
            if self.completed_left == 0 || self.cursor == NIL {
                // Only calls precede the cursor, so running off the end means no return
                // entries are left, i.e. nothing completed is left either.
                debug_assert_eq!(self.completed_left, 0);
                let order = self.stack.iter().map(|frame| self.ops[frame.op]).collect();
                return PartitionResult::Linearizable(order);
            }

            if is_call(self.cursor) {
                if self.steps >= limit {
                    return PartitionResult::Paused;
                }
                self.steps += 1;
                let j = op_of(self.cursor);
                let mut successors = self.successors(self.state, j);
                self.linearized.set(j);
                match self.memo.take_unexplored(&self.linearized, &mut successors) {
                    Some(next_state) => {
                        self.stack.push(Frame {
                            op: j,
                            prev_state: self.state,
                            untried: successors,
                        });
                        self.state = next_state;
                        self.lift(j);
                        if self.completed[j] {
                            self.completed_left -= 1;
                        }
                        self.cursor = self.next[HEAD];
                    }
                    None => {
                        self.linearized.clear(j);
                        self.cursor = self.next[self.cursor];
                    }
                }
                continue;
            }

            // A return whose call is not linearized yet: nothing placed so far can be
            // extended past it. Remember the deepest such point, then backtrack.
            let deepest = self
                .best
                .as_ref()
                .is_none_or(|evidence| self.stack.len() > evidence.prefix.len());
            if deepest {
                self.best = Some(self.evidence());
            }
            let Some(mut frame) = self.stack.pop() else {
                // Nothing left to undo: every order has been tried.
                let evidence = match self.best.take() {
                    Some(evidence) => evidence,
                    None => self.evidence(),
                };
                return PartitionResult::Violation(evidence);
            };
            // Same position in the order, another successor state for the same operation.
            if let Some(next_state) = self
                .memo
                .take_unexplored(&self.linearized, &mut frame.untried)
            {
                self.state = next_state;
                self.stack.push(frame);
                self.cursor = self.next[HEAD];
                continue;
            }
            self.state = frame.prev_state;
            self.linearized.clear(frame.op);
            self.unlift(frame.op);
            if self.completed[frame.op] {
                self.completed_left += 1;
            }
            self.cursor = self.next[call_node(frame.op)];
        }
    }

    /// Frees the memo and state table of a decided search.
    fn release(&mut self) {
        self.memo = Memo::default();
        self.states = StateTable::new();
    }

    /// The current dead end, with the cursor on the return entry that blocks it.
    fn evidence(&self) -> Evidence<M::State> {
        let blocking_return = self.cursor;
        let stuck = op_of(blocking_return);
        let mut candidates = Vec::new();
        let mut node = self.next[HEAD];
        while node != blocking_return && node != NIL {
            if op_of(node) != stuck {
                candidates.push(self.ops[op_of(node)]);
            }
            node = self.next[node];
        }
        Evidence {
            prefix: self.stack.iter().map(|frame| self.ops[frame.op]).collect(),
            state: self.states.get(self.state).clone(),
            stuck: self.ops[stuck],
            candidates,
        }
    }
}
