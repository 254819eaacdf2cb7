//! Property tests of the checker: histories linearizable by construction must pass with a
//! valid witness, corrupted ones must fail, and on small random histories the checker
//! must agree with exhaustive enumeration.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::models::{
    AppendKv, AppendKvInput, AppendKvOutput, CasRegister, Compare, EtcdKv, KeyValue, KvInput,
    KvOutput, RegisterInput, RegisterOutput, WriteOp,
};
use super::{check, CheckOutcome, Completion, History, Model, OpId, Operation, Time, Verdict};

/// Checks that `witness` really linearizes `history`: each completed operation appears
/// once, in its own partition, in an order that respects real time and that the model
/// accepts step by step.
fn validate_witness<M: Model>(
    model: &M,
    history: &History<M::Input, M::Output>,
    witness: &[(M::Key, Vec<OpId>)],
) -> Result<(), String> {
    let mut placed = vec![false; history.len()];
    for (key, order) in witness {
        let mut states = vec![model.init(key)];
        for (position, &id) in order.iter().enumerate() {
            let op = &history.ops()[id];
            if std::mem::replace(&mut placed[id], true) {
                return Err(format!("op {id} placed twice"));
            }
            if model.partition(&op.input) != *key {
                return Err(format!("op {id} placed in partition {key:?}"));
            }
            for &later in &order[position + 1..] {
                if let Some(returned) = history.ops()[later].returned_at() {
                    if returned < op.call {
                        return Err(format!("op {later} returned before op {id} was called"));
                    }
                }
            }
            let mut next = Vec::new();
            for state in &states {
                for successor in model.step(state, &op.input, op.output()) {
                    if !next.contains(&successor) {
                        next.push(successor);
                    }
                }
            }
            if next.is_empty() {
                return Err(format!("model rejects op {id} at position {position}"));
            }
            states = next;
        }
    }
    for (id, op) in history.ops().iter().enumerate() {
        if op.returned_at().is_some() && !placed[id] {
            return Err(format!("completed op {id} is missing"));
        }
    }
    Ok(())
}

/// Linearizability by definition: tries every order of every subset of operations that
/// contains all completed ones. Only for a handful of operations.
fn brute_force<M: Model>(model: &M, history: &History<M::Input, M::Output>) -> bool {
    fn search<M: Model>(
        model: &M,
        ops: &[&Operation<M::Input, M::Output>],
        placed: &mut Vec<bool>,
        state: &M::State,
    ) -> bool {
        let unplaced_completed: Vec<usize> = (0..ops.len())
            .filter(|&i| !placed[i] && ops[i].returned_at().is_some())
            .collect();
        if unplaced_completed.is_empty() {
            return true;
        }
        for i in 0..ops.len() {
            if placed[i] {
                continue;
            }
            // Anything placed next must not follow, in real time, an operation still
            // unplaced.
            let blocked = unplaced_completed.iter().any(|&other| {
                ops[other]
                    .returned_at()
                    .is_some_and(|returned| returned < ops[i].call)
            });
            if blocked {
                continue;
            }
            for next in model.step(state, &ops[i].input, ops[i].output()) {
                placed[i] = true;
                let found = search(model, ops, placed, &next);
                placed[i] = false;
                if found {
                    return true;
                }
            }
        }
        false
    }

    type Ops<'h, M> = Vec<&'h Operation<<M as Model>::Input, <M as Model>::Output>>;
    let mut partitions: BTreeMap<M::Key, Ops<'_, M>> = BTreeMap::new();
    for op in history.ops() {
        partitions
            .entry(model.partition(&op.input))
            .or_default()
            .push(op);
    }
    partitions.iter().all(|(key, ops)| {
        let mut placed = vec![false; ops.len()];
        search(model, ops, &mut placed, &model.init(key))
    })
}

/// How a generated operation ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    Returned,
    /// Took effect at its point, but the client never learnt the outcome.
    UnknownApplied,
    /// Never took effect, and the client never learnt that.
    UnknownLost,
}

fn fate() -> impl Strategy<Value = Fate> {
    prop_oneof![
        8 => Just(Fate::Returned),
        1 => Just(Fate::UnknownApplied),
        1 => Just(Fate::UnknownLost),
    ]
}

/// One operation of a sequential run: what it does, how far its interval reaches before
/// and after its linearization point, and its fate.
#[derive(Clone, Debug)]
struct Spec<I> {
    input: I,
    before: Time,
    after: Time,
    fate: Fate,
}

fn spec<I: std::fmt::Debug>(input: impl Strategy<Value = I>) -> impl Strategy<Value = Spec<I>> {
    // Points are 10 apart and intervals reach up to 35 either side: up to ~7 operations
    // overlap, which is where orders get ambiguous.
    (input, 0..36u64, 0..36u64, fate()).prop_map(|(input, before, after, fate)| Spec {
        input,
        before,
        after,
        fate,
    })
}

/// Builds a history from a sequential run: operation i takes effect at time 100 + 10i,
/// inside its interval. `apply` executes an input on the reference state and returns the
/// output; lost operations are never applied.
fn from_sequential_run<I: Clone, O>(
    specs: &[Spec<I>],
    mut apply: impl FnMut(&I) -> O,
) -> History<I, O> {
    let mut history = History::new();
    for (i, spec) in specs.iter().enumerate() {
        let point = 100 + 10 * i as Time;
        let call = point - spec.before;
        match spec.fate {
            Fate::Returned => {
                let output = apply(&spec.input);
                history
                    .push_returned(
                        i as u64,
                        spec.input.clone(),
                        call,
                        output,
                        point + spec.after,
                    )
                    .unwrap_or_else(|e| panic!("generated interval: {e}"));
            }
            Fate::UnknownApplied => {
                apply(&spec.input);
                history.push_unknown(i as u64, spec.input.clone(), call);
            }
            Fate::UnknownLost => {
                history.push_unknown(i as u64, spec.input.clone(), call);
            }
        }
    }
    history
}

/// Replaces the output of the last operation (a completed read) and checks the verdict.
fn assert_corrupted_read_is_caught<M: Model>(
    model: &M,
    mut history: History<M::Input, M::Output>,
    impossible: M::Output,
) -> Result<(), TestCaseError>
where
    M::Input: std::fmt::Debug,
    M::Output: std::fmt::Debug,
{
    let last = history.len() - 1;
    let Completion::Returned { output, .. } = &mut history.ops_mut()[last].completion else {
        return Err(TestCaseError::fail("the final read must be completed"));
    };
    *output = impossible;
    let outcome = check(model, &history);
    // Some generated histories (a dozen or more overlapping operations of unknown fate
    // on one key, for append-kv) have more orders than the search budget covers; the
    // checker then says Unknown, which is no verdict to compare, so the case is set
    // aside (seen once in many CI runs of 256 cases). Any other verdict must be
    // NotLinearizable: a corrupted read judged Linearizable still fails.
    prop_assume!(outcome.verdict() != Verdict::Unknown);
    prop_assert_eq!(
        outcome.verdict(),
        Verdict::NotLinearizable,
        "{}",
        outcome.explain(&history)
    );
    Ok(())
}

fn assert_linearizable_with_valid_witness<M: Model>(
    model: &M,
    history: &History<M::Input, M::Output>,
) -> Result<(), TestCaseError>
where
    M::Input: std::fmt::Debug,
    M::Output: std::fmt::Debug,
{
    let outcome = check(model, history);
    let CheckOutcome::Linearizable { witness } = &outcome else {
        return Err(TestCaseError::fail(outcome.explain(history)));
    };
    validate_witness(model, history, witness).map_err(TestCaseError::fail)
}

/// A final read spanning the end of the run, so every history has one to corrupt.
fn final_read<I>(input: I) -> Spec<I> {
    Spec {
        input,
        before: 5,
        after: 5,
        fate: Fate::Returned,
    }
}

// --- the Jepsen register ---

fn register_input() -> impl Strategy<Value = RegisterInput> {
    prop_oneof![
        Just(RegisterInput::Read),
        (0..4i64).prop_map(RegisterInput::Write),
        (0..4i64, 0..4i64).prop_map(|(expect, new)| RegisterInput::Cas { expect, new }),
    ]
}

fn register_run(specs: &[Spec<RegisterInput>]) -> History<RegisterInput, RegisterOutput> {
    let mut value: Option<i64> = None;
    from_sequential_run(specs, |input| match *input {
        RegisterInput::Read => RegisterOutput::Read(value),
        RegisterInput::Write(v) => {
            value = Some(v);
            RegisterOutput::Written
        }
        RegisterInput::Cas { expect, new } => {
            let succeeded = value == Some(expect);
            if succeeded {
                value = Some(new);
            }
            RegisterOutput::Cas { succeeded }
        }
    })
}

// --- the append store ---

fn append_kv_input() -> impl Strategy<Value = AppendKvInput> {
    let key = (0..3u8).prop_map(|k| format!("k{k}"));
    prop_oneof![
        key.clone().prop_map(|key| AppendKvInput::Get { key }),
        (key.clone(), 0..100u32).prop_map(|(key, v)| AppendKvInput::Put {
            key,
            value: format!("p{v};"),
        }),
        (key, 0..100u32).prop_map(|(key, v)| AppendKvInput::Append {
            key,
            value: format!("a{v};"),
        }),
    ]
}

fn append_kv_run(specs: &[Spec<AppendKvInput>]) -> History<AppendKvInput, AppendKvOutput> {
    let mut store: BTreeMap<String, String> = BTreeMap::new();
    from_sequential_run(specs, |input| match input {
        AppendKvInput::Get { key } => {
            AppendKvOutput::Value(store.get(key).cloned().unwrap_or_default())
        }
        AppendKvInput::Put { key, value } => {
            store.insert(key.clone(), value.clone());
            AppendKvOutput::Done
        }
        AppendKvInput::Append { key, value } => {
            store.entry(key.clone()).or_default().push_str(value);
            AppendKvOutput::Done
        }
    })
}

// --- the etcd register, against a reference store with global revisions ---

type EtcdInput = KvInput<u8, u32>;
type EtcdOutput = KvOutput<u32>;

fn etcd_input() -> impl Strategy<Value = EtcdInput> {
    let key = 0..3u8;
    let compare = prop_oneof![
        (0..4u32).prop_map(Compare::Value),
        (0..12u64).prop_map(Compare::ModRevision),
        (0..4u64).prop_map(Compare::Version),
    ];
    let write = prop_oneof![(0..4u32).prop_map(WriteOp::Put), Just(WriteOp::Delete)];
    prop_oneof![
        key.clone().prop_map(|key| KvInput::Get { key }),
        (key.clone(), 0..4u32).prop_map(|(key, value)| KvInput::Put { key, value }),
        key.clone().prop_map(|key| KvInput::Delete { key }),
        (key, compare, write).prop_map(|(key, compare, on_success)| KvInput::Txn {
            key,
            compare,
            on_success,
        }),
    ]
}

/// etcd's store, reduced to what the operations touch: one global revision, and per key
/// the value, mod revision and version.
#[derive(Default)]
struct ReferenceStore {
    revision: u64,
    keys: BTreeMap<u8, KeyValue<u32>>,
}

impl ReferenceStore {
    fn new() -> Self {
        // etcd starts at revision 1; the first write is revision 2.
        Self {
            revision: 1,
            keys: BTreeMap::new(),
        }
    }

    fn put(&mut self, key: u8, value: u32) -> u64 {
        self.revision += 1;
        let version = self.keys.get(&key).map_or(0, |kv| kv.version) + 1;
        self.keys.insert(
            key,
            KeyValue {
                value,
                mod_revision: self.revision,
                version,
            },
        );
        self.revision
    }

    fn delete(&mut self, key: u8) -> bool {
        let existed = self.keys.remove(&key).is_some();
        if existed {
            self.revision += 1;
        }
        existed
    }

    fn apply(&mut self, input: &EtcdInput) -> EtcdOutput {
        match *input {
            KvInput::Get { key } => KvOutput::Get {
                kv: self.keys.get(&key).cloned(),
                revision: self.revision,
            },
            KvInput::Put { key, value } => KvOutput::Put {
                revision: self.put(key, value),
            },
            KvInput::Delete { key } => {
                let deleted = self.delete(key);
                KvOutput::Delete {
                    deleted,
                    revision: self.revision,
                }
            }
            KvInput::Txn {
                key,
                ref compare,
                ref on_success,
            } => {
                let kv = self.keys.get(&key);
                let succeeded = match *compare {
                    Compare::Value(v) => kv.is_some_and(|kv| kv.value == v),
                    Compare::ModRevision(r) => kv.map_or(0, |kv| kv.mod_revision) == r,
                    Compare::Version(n) => kv.map_or(0, |kv| kv.version) == n,
                };
                if succeeded {
                    match *on_success {
                        WriteOp::Put(value) => {
                            self.put(key, value);
                        }
                        WriteOp::Delete => {
                            self.delete(key);
                        }
                    }
                }
                KvOutput::Txn {
                    succeeded,
                    revision: self.revision,
                }
            }
        }
    }
}

fn etcd_run(specs: &[Spec<EtcdInput>]) -> History<EtcdInput, EtcdOutput> {
    let mut store = ReferenceStore::new();
    from_sequential_run(specs, |input| store.apply(input))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn register_runs_are_linearizable(specs in prop::collection::vec(spec(register_input()), 1..40)) {
        assert_linearizable_with_valid_witness(&CasRegister, &register_run(&specs))?;
    }

    #[test]
    fn register_read_of_unwritten_value_is_caught(
        mut specs in prop::collection::vec(spec(register_input()), 0..40),
    ) {
        specs.push(final_read(RegisterInput::Read));
        let history = register_run(&specs);
        assert_corrupted_read_is_caught(&CasRegister, history, RegisterOutput::Read(Some(99)))?;
    }

    #[test]
    fn append_kv_runs_are_linearizable(specs in prop::collection::vec(spec(append_kv_input()), 1..60)) {
        assert_linearizable_with_valid_witness(&AppendKv, &append_kv_run(&specs))?;
    }

    #[test]
    fn append_kv_read_of_unwritten_value_is_caught(
        mut specs in prop::collection::vec(spec(append_kv_input()), 0..60),
        key in 0..3u8,
    ) {
        specs.push(final_read(AppendKvInput::Get { key: format!("k{key}") }));
        let history = append_kv_run(&specs);
        assert_corrupted_read_is_caught(&AppendKv, history, AppendKvOutput::Value("never;".into()))?;
    }

    #[test]
    fn etcd_runs_are_linearizable(specs in prop::collection::vec(spec(etcd_input()), 1..60)) {
        assert_linearizable_with_valid_witness(&EtcdKv::new(), &etcd_run(&specs))?;
    }

    #[test]
    fn etcd_read_of_unwritten_value_is_caught(
        mut specs in prop::collection::vec(spec(etcd_input()), 0..60),
        key in 0..3u8,
    ) {
        specs.push(final_read(KvInput::Get { key }));
        let history = etcd_run(&specs);
        let revision = 10 * history.len() as u64;
        let never = KvOutput::Get {
            kv: Some(KeyValue { value: 99, mod_revision: 2, version: 1 }),
            revision,
        };
        assert_corrupted_read_is_caught(&EtcdKv::new(), history, never)?;
    }

    /// Arbitrary small register histories, not linearizable by construction: the checker
    /// must agree with enumeration both ways.
    #[test]
    fn register_agrees_with_brute_force(
        ops in prop::collection::vec(
            (
                register_input(),
                prop_oneof![
                    (0..4i64).prop_map(|v| RegisterOutput::Read(Some(v))),
                    Just(RegisterOutput::Read(None)),
                    Just(RegisterOutput::Written),
                    any::<bool>().prop_map(|succeeded| RegisterOutput::Cas { succeeded }),
                ],
                0..12u64,
                0..8u64,
                prop::bool::weighted(0.2),
            ),
            1..7,
        ),
    ) {
        let mut history = History::new();
        for (client, (input, output, call, length, unknown)) in ops.into_iter().enumerate() {
            // Give most operations an output of the right kind, so that linearizable
            // histories are common enough to exercise both answers.
            let output = match (input, output) {
                (RegisterInput::Read, RegisterOutput::Read(v)) => RegisterOutput::Read(v),
                (RegisterInput::Read, _) => RegisterOutput::Read(None),
                (RegisterInput::Write(_), _) => RegisterOutput::Written,
                (RegisterInput::Cas { .. }, RegisterOutput::Cas { succeeded }) => {
                    RegisterOutput::Cas { succeeded }
                }
                (RegisterInput::Cas { .. }, _) => RegisterOutput::Cas { succeeded: true },
            };
            if unknown {
                history.push_unknown(client as u64, input, call);
            } else {
                history
                    .push_returned(client as u64, input, call, output, call + length)
                    .unwrap_or_else(|e| panic!("generated interval: {e}"));
            }
        }
        let expected = brute_force(&CasRegister, &history);
        let outcome = check(&CasRegister, &history);
        prop_assert_eq!(outcome.is_linearizable(), expected, "{}", outcome.explain(&history));
        prop_assert_ne!(outcome.verdict(), Verdict::Unknown);
        if let CheckOutcome::Linearizable { witness } = &outcome {
            validate_witness(&CasRegister, &history, witness).map_err(TestCaseError::fail)?;
        }
    }

    /// The same cross-check for the etcd model, whose unseen revisions make the checker
    /// explore branching successors.
    #[test]
    fn etcd_agrees_with_brute_force(
        specs in prop::collection::vec(spec(etcd_input()), 1..7),
        corrupt in prop::option::of((0..7usize, 0..4u32, 0..6u64)),
    ) {
        let mut history = etcd_run(&specs);
        // Half the time, corrupt one completed response, which may or may not remain
        // explainable.
        if let Some((index, value, delta)) = corrupt {
            let index = index % history.len();
            if let Completion::Returned { output, .. } = &mut history.ops_mut()[index].completion {
                match output {
                    KvOutput::Get { kv: Some(kv), .. } => kv.value = value,
                    KvOutput::Get { kv: None, revision }
                    | KvOutput::Put { revision }
                    | KvOutput::Delete { revision, .. } => *revision = revision.saturating_sub(delta),
                    KvOutput::Txn { succeeded, .. } => *succeeded = !*succeeded,
                }
            }
        }
        let model = EtcdKv::new();
        let expected = brute_force(&model, &history);
        let outcome = check(&model, &history);
        prop_assert_eq!(outcome.is_linearizable(), expected, "{}", outcome.explain(&history));
        if let CheckOutcome::Linearizable { witness } = &outcome {
            validate_witness(&model, &history, witness).map_err(TestCaseError::fail)?;
        }
    }
}

#[test]
fn brute_force_and_witness_validation_can_fail() {
    // The oracles above are only worth something if they can say no.
    let mut history = History::new();
    history
        .push_returned(0, RegisterInput::Write(1), 0, RegisterOutput::Written, 1)
        .expect("ordered");
    history
        .push_returned(1, RegisterInput::Read, 2, RegisterOutput::Read(None), 3)
        .expect("ordered");
    assert!(!brute_force(&CasRegister, &history));
    let backwards = [((), vec![1, 0])];
    assert!(validate_witness(&CasRegister, &history, &backwards).is_err());
    let missing = [((), vec![0])];
    assert!(validate_witness(&CasRegister, &history, &missing).is_err());
    history.ops_mut()[1].completion = Completion::Returned {
        at: 3,
        output: RegisterOutput::Read(Some(1)),
    };
    assert!(brute_force(&CasRegister, &history));
    assert!(validate_witness(&CasRegister, &history, &[((), vec![0, 1])]).is_ok());
}
