//! An etcd key as a register: get, put, delete and single-key compare-and-set
//! transactions, with etcd's revisions and versions, and outcomes that may be unknown.
//!
//! Partitioned by key. Revisions are global in etcd, but per key the model sees only
//! this key's writes, so it checks what one key can show: every write to the key gets a
//! revision above the key's previous write, reads return the latest write's value,
//! `mod_revision` and `version`, and every response's header revision is at least the
//! key's last write. Ordering across keys (revisions agreeing with real time globally) is
//! a separate check over the whole history.
//!
//! A write whose outcome is unknown leaves a revision the model knows only from below
//! ([`RevisionBound::AtLeast`]); a later read that returns it pins it down. Where a
//! comparison against such a revision could go either way, the model branches. Where a
//! failed comparison would only exclude one value from the bound, the bound is kept as
//! it is: the model may then accept a history it could have refuted, never the reverse.

use std::fmt::Debug;
use std::hash::Hash;
use std::marker::PhantomData;

use crate::linearizability::{Model, Successors};

/// The etcd key-value register model over keys `K` and values `V`.
#[derive(Clone, Copy, Debug)]
pub struct EtcdKv<K, V> {
    _types: PhantomData<fn() -> (K, V)>,
}

impl<K, V> EtcdKv<K, V> {
    /// The model; keys start absent, as in a fresh cluster.
    pub fn new() -> Self {
        Self {
            _types: PhantomData,
        }
    }
}

impl<K, V> Default for EtcdKv<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

/// An operation on one key, as a simulation client issues it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvInput<K, V> {
    /// A linearizable (not serializable) range request for exactly this key.
    Get {
        /// The key.
        key: K,
    },
    /// A put.
    Put {
        /// The key.
        key: K,
        /// The new value.
        value: V,
    },
    /// A delete-range of exactly this key.
    Delete {
        /// The key.
        key: K,
    },
    /// `Txn { compare: [compare], success: [on_success], failure: [] }` on one key:
    /// compare-and-set or compare-and-delete.
    Txn {
        /// The key, both compared and written.
        key: K,
        /// The guard.
        compare: Compare<V>,
        /// The write performed when the guard holds.
        on_success: WriteOp<V>,
    },
}

impl<K, V> KvInput<K, V> {
    /// The key the operation touches.
    pub fn key(&self) -> &K {
        match self {
            KvInput::Get { key }
            | KvInput::Put { key, .. }
            | KvInput::Delete { key }
            | KvInput::Txn { key, .. } => key,
        }
    }
}

/// An equality guard on the key, with etcd's rules for a missing key: a value comparison
/// fails, and `mod_revision` and `version` compare as 0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Compare<V> {
    /// The key exists with this value.
    Value(V),
    /// The key's `mod_revision` is this (0: the key does not exist).
    ModRevision(u64),
    /// The key's `version` is this (0: the key does not exist).
    Version(u64),
}

/// The write of a transaction's success branch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteOp<V> {
    /// Put this value.
    Put(V),
    /// Delete the key.
    Delete,
}

/// A key as a get returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue<V> {
    /// The value.
    pub value: V,
    /// The revision of the last put.
    pub mod_revision: u64,
    /// Puts since the key was (re)created, starting at 1.
    pub version: u64,
}

/// A response; `revision` is always the response header's revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvOutput<V> {
    /// What a get saw.
    Get {
        /// The key, or `None` if absent.
        kv: Option<KeyValue<V>>,
        /// Header revision.
        revision: u64,
    },
    /// A put was applied.
    Put {
        /// Header revision: the put's own revision.
        revision: u64,
    },
    /// A delete returned.
    Delete {
        /// Whether the key existed (etcd's `deleted` count is 1).
        deleted: bool,
        /// Header revision: the deletion's revision if `deleted`.
        revision: u64,
    },
    /// A transaction returned.
    Txn {
        /// Whether the guard held.
        succeeded: bool,
        /// Header revision: the write's revision if it changed the key.
        revision: u64,
    },
}

/// What the model knows about the revision of a key's last write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RevisionBound {
    /// Exactly this revision (0: never written).
    Known(u64),
    /// Some revision at least this large, written by an operation whose outcome is
    /// unknown.
    AtLeast(u64),
}

impl RevisionBound {
    fn lowest(self) -> u64 {
        match self {
            RevisionBound::Known(r) | RevisionBound::AtLeast(r) => r,
        }
    }

    /// Whether a new write at `revision` may follow this one.
    fn may_precede(self, revision: u64) -> bool {
        revision > self.lowest()
    }

    /// Whether a response with header `revision` may be served after this write.
    fn may_be_seen_at(self, revision: u64) -> bool {
        revision >= self.lowest()
    }

    /// The bound refined by a response showing the revision is exactly `revision`.
    fn observe(self, revision: u64) -> Option<RevisionBound> {
        let possible = match self {
            RevisionBound::Known(r) => r == revision,
            RevisionBound::AtLeast(r) => revision >= r,
        };
        possible.then_some(RevisionBound::Known(revision))
    }

    /// The revision of a write after this one, whose revision nobody saw.
    fn successor_unseen(self) -> RevisionBound {
        RevisionBound::AtLeast(self.lowest() + 1)
    }
}

/// One key's state.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KeyState<V> {
    /// The value, if the key exists.
    pub value: Option<V>,
    /// Puts since the key was created; 0 while it does not exist.
    pub version: u64,
    /// The revision of the last put or delete of the key: its `mod_revision` while it
    /// exists.
    pub last_write: RevisionBound,
}

impl<V: Clone> KeyState<V> {
    fn absent() -> Self {
        Self {
            value: None,
            version: 0,
            last_write: RevisionBound::Known(0),
        }
    }

    fn put(&self, value: &V, revision: RevisionBound) -> Self {
        Self {
            value: Some(value.clone()),
            version: self.version + 1,
            last_write: revision,
        }
    }

    fn deleted(&self, revision: RevisionBound) -> Self {
        Self {
            value: None,
            version: 0,
            last_write: revision,
        }
    }

    /// Applies `write` at the unknown revision after the current one.
    fn apply_unseen(&self, write: &WriteOp<V>) -> Self {
        match write {
            WriteOp::Put(value) => self.put(value, self.last_write.successor_unseen()),
            WriteOp::Delete if self.value.is_some() => {
                self.deleted(self.last_write.successor_unseen())
            }
            // Deleting nothing changes nothing, not even the revision.
            WriteOp::Delete => self.clone(),
        }
    }

    /// Applies `write` that answered with header `revision`, if it could have.
    fn apply_seen(&self, write: &WriteOp<V>, revision: u64) -> Option<Self> {
        match write {
            WriteOp::Put(value) => self
                .last_write
                .may_precede(revision)
                .then(|| self.put(value, RevisionBound::Known(revision))),
            WriteOp::Delete if self.value.is_some() => self
                .last_write
                .may_precede(revision)
                .then(|| self.deleted(RevisionBound::Known(revision))),
            WriteOp::Delete => self
                .last_write
                .may_be_seen_at(revision)
                .then(|| self.clone()),
        }
    }
}

impl<V: PartialEq + Clone> KeyState<V> {
    /// The ways `compare` can evaluate here: whether it held, and the state refined by
    /// that knowledge.
    fn evaluate(&self, compare: &Compare<V>) -> Successors<(bool, Self)> {
        let exists = self.value.is_some();
        match compare {
            Compare::Value(expected) => {
                Successors::one((self.value.as_ref() == Some(expected), self.clone()))
            }
            Compare::Version(expected) => {
                Successors::one((self.version == *expected, self.clone()))
            }
            Compare::ModRevision(expected) if !exists => {
                Successors::one((*expected == 0, self.clone()))
            }
            Compare::ModRevision(expected) => match self.last_write.observe(*expected) {
                None => Successors::one((false, self.clone())),
                Some(_) if matches!(self.last_write, RevisionBound::Known(_)) => {
                    Successors::one((true, self.clone()))
                }
                // An unseen revision may or may not be the one compared against.
                Some(pinned) => {
                    let mut ways = Successors::one((false, self.clone()));
                    ways.push((
                        true,
                        Self {
                            last_write: pinned,
                            ..self.clone()
                        },
                    ));
                    ways
                }
            },
        }
    }
}

impl<K, V> Model for EtcdKv<K, V>
where
    K: Ord + Clone + Debug,
    V: Clone + Eq + Hash + Debug,
{
    type State = KeyState<V>;
    type Input = KvInput<K, V>;
    type Output = KvOutput<V>;
    type Key = K;

    fn partition(&self, input: &KvInput<K, V>) -> K {
        input.key().clone()
    }

    fn init(&self, _key: &K) -> KeyState<V> {
        KeyState::absent()
    }

    fn step(
        &self,
        state: &KeyState<V>,
        input: &KvInput<K, V>,
        output: Option<&KvOutput<V>>,
    ) -> Successors<KeyState<V>> {
        match (input, output) {
            (KvInput::Get { .. }, None) => Successors::one(state.clone()),
            (KvInput::Get { .. }, Some(KvOutput::Get { kv, revision })) => {
                if !state.last_write.may_be_seen_at(*revision) {
                    return Successors::none();
                }
                match (kv, &state.value) {
                    (None, None) => Successors::one(state.clone()),
                    (Some(kv), Some(value))
                        if kv.value == *value
                            && kv.version == state.version
                            && kv.mod_revision <= *revision =>
                    {
                        match state.last_write.observe(kv.mod_revision) {
                            Some(pinned) => Successors::one(KeyState {
                                last_write: pinned,
                                ..state.clone()
                            }),
                            None => Successors::none(),
                        }
                    }
                    _ => Successors::none(),
                }
            }
            (KvInput::Put { value, .. }, None) => {
                Successors::one(state.apply_unseen(&WriteOp::Put(value.clone())))
            }
            (KvInput::Put { value, .. }, Some(KvOutput::Put { revision })) => {
                match state.apply_seen(&WriteOp::Put(value.clone()), *revision) {
                    Some(next) => Successors::one(next),
                    None => Successors::none(),
                }
            }
            (KvInput::Delete { .. }, None) => Successors::one(state.apply_unseen(&WriteOp::Delete)),
            (KvInput::Delete { .. }, Some(KvOutput::Delete { deleted, revision })) => {
                if *deleted != state.value.is_some() {
                    return Successors::none();
                }
                match state.apply_seen(&WriteOp::Delete, *revision) {
                    Some(next) => Successors::one(next),
                    None => Successors::none(),
                }
            }
            (
                KvInput::Txn {
                    compare,
                    on_success,
                    ..
                },
                output,
            ) => {
                let mut next = Successors::none();
                for (held, refined) in state.evaluate(compare) {
                    match output {
                        None if held => next.push(refined.apply_unseen(on_success)),
                        None => next.push(refined),
                        Some(KvOutput::Txn {
                            succeeded,
                            revision,
                        }) if *succeeded == held => {
                            if held {
                                if let Some(after) = refined.apply_seen(on_success, *revision) {
                                    next.push(after);
                                }
                            } else if refined.last_write.may_be_seen_at(*revision) {
                                next.push(refined);
                            }
                        }
                        Some(_) => {}
                    }
                }
                next
            }
            (_, Some(_)) => Successors::none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linearizability::{check, History, Verdict};

    type Kv = EtcdKv<&'static str, u32>;
    type KvHistory = History<KvInput<&'static str, u32>, KvOutput<u32>>;

    fn put(key: &'static str, value: u32) -> KvInput<&'static str, u32> {
        KvInput::Put { key, value }
    }
    fn get(key: &'static str) -> KvInput<&'static str, u32> {
        KvInput::Get { key }
    }
    fn saw(value: u32, mod_revision: u64, version: u64, revision: u64) -> KvOutput<u32> {
        KvOutput::Get {
            kv: Some(KeyValue {
                value,
                mod_revision,
                version,
            }),
            revision,
        }
    }
    fn saw_nothing(revision: u64) -> KvOutput<u32> {
        KvOutput::Get { kv: None, revision }
    }
    fn cas(key: &'static str, compare: Compare<u32>, value: u32) -> KvInput<&'static str, u32> {
        KvInput::Txn {
            key,
            compare,
            on_success: WriteOp::Put(value),
        }
    }
    fn txn(succeeded: bool, revision: u64) -> KvOutput<u32> {
        KvOutput::Txn {
            succeeded,
            revision,
        }
    }

    fn verdict(h: &KvHistory) -> Verdict {
        check(&Kv::new(), h).verdict()
    }

    /// Appends a completed operation spanning [at, at + 1].
    fn done(h: &mut KvHistory, at: u64, input: KvInput<&'static str, u32>, output: KvOutput<u32>) {
        h.push_returned(0, input, at, output, at + 1)
            .expect("ordered");
    }

    #[test]
    fn reads_see_value_revision_and_version_of_the_last_put() {
        let mut h = KvHistory::new();
        done(&mut h, 0, put("a", 1), KvOutput::Put { revision: 2 });
        done(&mut h, 2, put("a", 2), KvOutput::Put { revision: 5 });
        done(&mut h, 4, get("a"), saw(2, 5, 2, 7));
        assert_eq!(verdict(&h), Verdict::Linearizable);

        for wrong in [
            saw(2, 2, 2, 7),
            saw(2, 5, 1, 7),
            saw(1, 2, 1, 7),
            saw(2, 5, 2, 4),
        ] {
            let mut bad = h.clone();
            bad.ops_mut()[2].completion = crate::linearizability::Completion::Returned {
                at: 5,
                output: wrong.clone(),
            };
            assert_eq!(verdict(&bad), Verdict::NotLinearizable, "{wrong:?}");
        }
    }

    #[test]
    fn writes_to_a_key_take_increasing_revisions() {
        let mut h = KvHistory::new();
        done(&mut h, 0, put("a", 1), KvOutput::Put { revision: 5 });
        done(&mut h, 2, put("a", 2), KvOutput::Put { revision: 3 });
        assert_eq!(verdict(&h), Verdict::NotLinearizable);
        // Other keys have their own revisions in between; no constraint across keys.
        let mut h = KvHistory::new();
        done(&mut h, 0, put("a", 1), KvOutput::Put { revision: 5 });
        done(&mut h, 2, put("b", 2), KvOutput::Put { revision: 3 });
        assert_eq!(verdict(&h), Verdict::Linearizable);
    }

    #[test]
    fn stale_read_after_put_is_not_linearizable() {
        let mut h = KvHistory::new();
        done(&mut h, 0, put("a", 1), KvOutput::Put { revision: 2 });
        done(&mut h, 2, get("a"), saw_nothing(1));
        assert_eq!(verdict(&h), Verdict::NotLinearizable);
    }

    #[test]
    fn delete_and_recreate_restart_the_version() {
        let mut h = KvHistory::new();
        done(&mut h, 0, put("a", 1), KvOutput::Put { revision: 2 });
        done(&mut h, 2, put("a", 1), KvOutput::Put { revision: 3 });
        let delete = KvInput::Delete { key: "a" };
        done(
            &mut h,
            4,
            delete.clone(),
            KvOutput::Delete {
                deleted: true,
                revision: 4,
            },
        );
        // Deleting a missing key changes no revision.
        done(
            &mut h,
            6,
            delete,
            KvOutput::Delete {
                deleted: false,
                revision: 4,
            },
        );
        done(&mut h, 8, get("a"), saw_nothing(4));
        done(&mut h, 10, put("a", 9), KvOutput::Put { revision: 6 });
        done(&mut h, 12, get("a"), saw(9, 6, 1, 6));
        assert_eq!(verdict(&h), Verdict::Linearizable);
        let mut wrong_version = h.clone();
        done(&mut wrong_version, 14, get("a"), saw(9, 6, 3, 6));
        assert_eq!(verdict(&wrong_version), Verdict::NotLinearizable);
    }

    #[test]
    fn compare_and_set_by_value_and_by_mod_revision() {
        let mut h = KvHistory::new();
        done(&mut h, 0, put("a", 1), KvOutput::Put { revision: 2 });
        done(&mut h, 2, cas("a", Compare::Value(1), 2), txn(true, 3));
        done(&mut h, 4, cas("a", Compare::Value(1), 3), txn(false, 3));
        done(
            &mut h,
            6,
            cas("a", Compare::ModRevision(3), 4),
            txn(true, 8),
        );
        done(
            &mut h,
            8,
            cas("a", Compare::ModRevision(3), 5),
            txn(false, 8),
        );
        done(&mut h, 10, cas("a", Compare::Version(3), 6), txn(true, 9));
        done(&mut h, 12, get("a"), saw(6, 9, 4, 9));
        assert_eq!(verdict(&h), Verdict::Linearizable);

        // A cas on a mod revision the key no longer has cannot succeed.
        let mut h = KvHistory::new();
        done(&mut h, 0, put("a", 1), KvOutput::Put { revision: 2 });
        done(&mut h, 2, put("a", 2), KvOutput::Put { revision: 3 });
        done(
            &mut h,
            4,
            cas("a", Compare::ModRevision(2), 7),
            txn(true, 4),
        );
        assert_eq!(verdict(&h), Verdict::NotLinearizable);

        // Create-if-absent: exactly one of two concurrent creators wins.
        let mut h = KvHistory::new();
        h.push_returned(1, cas("l", Compare::Version(0), 1), 0, txn(true, 2), 5)
            .expect("ordered");
        h.push_returned(2, cas("l", Compare::Version(0), 2), 0, txn(true, 3), 5)
            .expect("ordered");
        assert_eq!(verdict(&h), Verdict::NotLinearizable);
        h.ops_mut()[1].completion = crate::linearizability::Completion::Returned {
            at: 5,
            output: txn(false, 2),
        };
        assert_eq!(verdict(&h), Verdict::Linearizable);
    }

    #[test]
    fn unknown_put_is_pinned_by_a_later_read() {
        let mut h = KvHistory::new();
        done(&mut h, 0, put("a", 1), KvOutput::Put { revision: 2 });
        h.push_unknown(1, put("a", 2), 2);
        done(&mut h, 4, get("a"), saw(2, 7, 2, 7));
        // The read fixed the unseen revision at 7: a cas on 7 may succeed...
        let mut ok = h.clone();
        done(
            &mut ok,
            6,
            cas("a", Compare::ModRevision(7), 3),
            txn(true, 8),
        );
        assert_eq!(verdict(&ok), Verdict::Linearizable);
        // ...and a cas on another revision may not.
        let mut bad = h.clone();
        done(
            &mut bad,
            6,
            cas("a", Compare::ModRevision(6), 3),
            txn(true, 8),
        );
        assert_eq!(verdict(&bad), Verdict::NotLinearizable);
    }

    #[test]
    fn unknown_put_may_be_matched_by_a_cas_on_its_revision() {
        let mut h = KvHistory::new();
        done(&mut h, 0, put("a", 1), KvOutput::Put { revision: 2 });
        h.push_unknown(1, put("a", 2), 2);
        // Only the unseen put can have revision 5 (a cas on the known put's 2 would fail).
        done(
            &mut h,
            10,
            cas("a", Compare::ModRevision(5), 3),
            txn(true, 6),
        );
        done(&mut h, 12, get("a"), saw(3, 6, 3, 6));
        assert_eq!(verdict(&h), Verdict::Linearizable);
        // A revision at or below the known put cannot belong to the unseen one.
        let mut h2 = KvHistory::new();
        done(&mut h2, 0, put("a", 1), KvOutput::Put { revision: 2 });
        h2.push_unknown(1, put("a", 2), 2);
        done(
            &mut h2,
            10,
            cas("a", Compare::ModRevision(1), 3),
            txn(true, 6),
        );
        assert_eq!(verdict(&h2), Verdict::NotLinearizable);
    }

    #[test]
    fn unknown_cas_branches_on_an_unseen_revision() {
        let mut h = KvHistory::new();
        done(&mut h, 0, put("a", 1), KvOutput::Put { revision: 2 });
        h.push_unknown(1, put("a", 2), 2);
        h.push_unknown(2, cas("a", Compare::ModRevision(4), 3), 3);
        // Either the cas matched the unseen put's revision and applied...
        let mut applied = h.clone();
        done(&mut applied, 10, get("a"), saw(3, 9, 3, 9));
        assert_eq!(verdict(&applied), Verdict::Linearizable);
        // ...or it did not, and the unseen put is what remains.
        let mut not_applied = h.clone();
        done(&mut not_applied, 10, get("a"), saw(2, 9, 2, 9));
        assert_eq!(verdict(&not_applied), Verdict::Linearizable);
        // But it cannot have applied over a revision it did not compare against.
        let mut mismatch = h.clone();
        done(&mut mismatch, 10, get("a"), saw(2, 4, 2, 9));
        done(&mut mismatch, 12, get("a"), saw(3, 9, 3, 9));
        assert_eq!(
            verdict(&mismatch),
            Verdict::Linearizable,
            "put at 4, then cas on 4"
        );
        let mut wrong = h.clone();
        done(&mut wrong, 10, get("a"), saw(2, 5, 2, 9));
        done(&mut wrong, 12, get("a"), saw(3, 9, 3, 9));
        assert_eq!(verdict(&wrong), Verdict::NotLinearizable);
    }

    #[test]
    fn responses_of_the_wrong_kind_are_never_explained() {
        let mut h = KvHistory::new();
        done(&mut h, 0, put("a", 1), saw_nothing(1));
        assert_eq!(verdict(&h), Verdict::NotLinearizable);
    }
}
