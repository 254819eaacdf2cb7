//! The sequential specification a history is checked against.

use std::fmt::Debug;
use std::hash::Hash;

use smallvec::SmallVec;

/// A sequential specification: a state machine that says which (input, output) pairs
/// are legal in which state, and what state follows.
///
/// Models are pure: `step` must depend only on its arguments, and equal states must
/// behave the same, since the checker memoises on (linearized set, state).
pub trait Model {
    /// The state of one partition (one key, one register).
    type State: Clone + Eq + Hash + Debug;
    /// What a client asks for.
    type Input;
    /// What a client is told.
    type Output;
    /// Names a partition: operations with different keys never interact, so each
    /// partition is checked on its own.
    type Key: Ord + Clone + Debug;

    /// The partition an operation belongs to.
    fn partition(&self, input: &Self::Input) -> Self::Key;

    /// The state of a partition before any operation.
    fn init(&self, key: &Self::Key) -> Self::State;

    /// The states that may follow `state` when `input` takes effect and yields `output`;
    /// none if that is impossible. `output` is `None` when the outcome is unknown: the
    /// operation did take effect (the checker explores "never took effect" itself), with
    /// whatever result it would have had. Several successors express a model's own
    /// uncertainty (an abstract state that stands for several concrete ones).
    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: Option<&Self::Output>,
    ) -> Successors<Self::State>;
}

/// The states a [`Model::step`] allows next; usually zero or one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Successors<S>(SmallVec<[S; 2]>);

impl<S> Successors<S> {
    /// The step is impossible.
    pub fn none() -> Self {
        Self(SmallVec::new())
    }

    /// The step leads to exactly `state`.
    pub fn one(state: S) -> Self {
        let mut states = SmallVec::new();
        states.push(state);
        Self(states)
    }

    /// `Successors::one(state)` if `legal`, else `Successors::none()`.
    pub fn when(legal: bool, state: impl FnOnce() -> S) -> Self {
        if legal {
            Self::one(state())
        } else {
            Self::none()
        }
    }

    /// Adds another possible next state.
    pub fn push(&mut self, state: S) {
        self.0.push(state);
    }

    /// Whether the step is impossible.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Number of possible next states.
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

impl<S> IntoIterator for Successors<S> {
    type Item = S;
    type IntoIter = smallvec::IntoIter<[S; 2]>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}
