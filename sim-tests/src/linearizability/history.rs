//! Histories: what each client called, when, and how the call ended.

use thiserror::Error;

/// A point in a history's time. Any monotonic clock works (simulated nanoseconds, or
/// the index of the event in a log); only the order of calls and returns matters.
pub type Time = u64;

/// The index of an operation in its [`History`].
pub type OpId = usize;

/// How an operation ended, as far as the client knows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Completion<O> {
    /// The call returned `output` at time `at`.
    Returned {
        /// When the client saw the response.
        at: Time,
        /// What the response said.
        output: O,
    },
    /// The client never learnt the outcome (Jepsen `info`, a timeout, a dropped
    /// connection): the operation may take effect at any point after its call, or never.
    /// It is treated as returning at +infinity with an unconstrained output.
    Unknown,
}

/// One operation of one client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation<I, O> {
    /// Who issued it; only used to describe operations in failure reports.
    pub client: u64,
    /// What was asked.
    pub input: I,
    /// When the request was issued.
    pub call: Time,
    /// How it ended.
    pub completion: Completion<O>,
}

impl<I, O> Operation<I, O> {
    /// The response, if the outcome is known.
    pub fn output(&self) -> Option<&O> {
        match &self.completion {
            Completion::Returned { output, .. } => Some(output),
            Completion::Unknown => None,
        }
    }

    /// When the response arrived, if it did.
    pub fn returned_at(&self) -> Option<Time> {
        match self.completion {
            Completion::Returned { at, .. } => Some(at),
            Completion::Unknown => None,
        }
    }
}

/// Why an operation or event could not be added to a history.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum HistoryError {
    /// A return was recorded before its call, which no clock allows.
    #[error("operation returned at {returned} before its call at {called}")]
    ReturnBeforeCall {
        /// When the call was recorded.
        called: Time,
        /// When the return was recorded.
        returned: Time,
    },
    /// A completion named a call that is unknown or already completed.
    #[error("call {0:?} is not pending")]
    NotPending(CallId),
}

/// A set of operations to check, in no particular order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct History<I, O> {
    ops: Vec<Operation<I, O>>,
}

impl<I, O> Default for History<I, O> {
    fn default() -> Self {
        Self { ops: Vec::new() }
    }
}

impl<I, O> History<I, O> {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a whole operation; refuses one that returns before it was called.
    pub fn push(&mut self, op: Operation<I, O>) -> Result<OpId, HistoryError> {
        if let Some(returned) = op.returned_at() {
            if returned < op.call {
                return Err(HistoryError::ReturnBeforeCall {
                    called: op.call,
                    returned,
                });
            }
        }
        self.ops.push(op);
        Ok(self.ops.len() - 1)
    }

    /// Adds a completed operation.
    pub fn push_returned(
        &mut self,
        client: u64,
        input: I,
        call: Time,
        output: O,
        returned: Time,
    ) -> Result<OpId, HistoryError> {
        self.push(Operation {
            client,
            input,
            call,
            completion: Completion::Returned {
                at: returned,
                output,
            },
        })
    }

    /// Adds an operation whose outcome is unknown.
    pub fn push_unknown(&mut self, client: u64, input: I, call: Time) -> OpId {
        self.ops.push(Operation {
            client,
            input,
            call,
            completion: Completion::Unknown,
        });
        self.ops.len() - 1
    }

    /// All operations, indexed by [`OpId`].
    pub fn ops(&self) -> &[Operation<I, O>] {
        &self.ops
    }

    /// Mutable access, for tests that corrupt a history on purpose.
    pub fn ops_mut(&mut self) -> &mut [Operation<I, O>] {
        &mut self.ops
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether there are no operations.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// A call recorded by [`Recorder::invoke`] and not yet completed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CallId(usize);

enum Slot<I, O> {
    Pending { client: u64, input: I, call: Time },
    Done(Operation<I, O>),
    Failed,
    // Only transiently, while a slot is being completed.
    Taken,
}

/// Builds a [`History`] from events as a client driver sees them: invoke, then ok, fail
/// (definitely had no effect) or info (outcome unknown). Calls still pending when the
/// history is finished count as unknown, like a client that crashed mid-request.
pub struct Recorder<I, O> {
    slots: Vec<Slot<I, O>>,
}

impl<I, O> Default for Recorder<I, O> {
    fn default() -> Self {
        Self { slots: Vec::new() }
    }
}

impl<I, O> Recorder<I, O> {
    /// An empty recorder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `client` issued `input` at `at`.
    pub fn invoke(&mut self, client: u64, input: I, at: Time) -> CallId {
        self.slots.push(Slot::Pending {
            client,
            input,
            call: at,
        });
        CallId(self.slots.len() - 1)
    }

    /// Records that `call` returned `output` at `at`.
    pub fn ok(&mut self, call: CallId, output: O, at: Time) -> Result<(), HistoryError> {
        let (client, input, called) = self.take_pending(call)?;
        if at < called {
            // Keep the call pending so a caller that recovers from the error can retry.
            self.slots[call.0] = Slot::Pending {
                client,
                input,
                call: called,
            };
            return Err(HistoryError::ReturnBeforeCall {
                called,
                returned: at,
            });
        }
        self.slots[call.0] = Slot::Done(Operation {
            client,
            input,
            call: called,
            completion: Completion::Returned { at, output },
        });
        Ok(())
    }

    /// Records that `call` definitely did not take effect: it leaves the history.
    pub fn fail(&mut self, call: CallId) -> Result<(), HistoryError> {
        self.take_pending(call)?;
        self.slots[call.0] = Slot::Failed;
        Ok(())
    }

    /// Records that the outcome of `call` is unknown.
    pub fn info(&mut self, call: CallId) -> Result<(), HistoryError> {
        let (client, input, called) = self.take_pending(call)?;
        self.slots[call.0] = Slot::Done(Operation {
            client,
            input,
            call: called,
            completion: Completion::Unknown,
        });
        Ok(())
    }

    /// The history so far, in invocation order; pending calls become unknown.
    pub fn finish(self) -> History<I, O> {
        let ops = self
            .slots
            .into_iter()
            .filter_map(|slot| match slot {
                Slot::Pending {
                    client,
                    input,
                    call,
                } => Some(Operation {
                    client,
                    input,
                    call,
                    completion: Completion::Unknown,
                }),
                Slot::Done(op) => Some(op),
                Slot::Failed | Slot::Taken => None,
            })
            .collect();
        History { ops }
    }

    fn take_pending(&mut self, call: CallId) -> Result<(u64, I, Time), HistoryError> {
        let slot = self
            .slots
            .get_mut(call.0)
            .ok_or(HistoryError::NotPending(call))?;
        if !matches!(slot, Slot::Pending { .. }) {
            return Err(HistoryError::NotPending(call));
        }
        match std::mem::replace(slot, Slot::Taken) {
            Slot::Pending {
                client,
                input,
                call,
            } => Ok((client, input, call)),
            // Checked just above; the slot is untouched in between.
            _ => Err(HistoryError::NotPending(call)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorder_drops_failed_calls_and_leaves_pending_ones_unknown() {
        let mut rec: Recorder<&str, u32> = Recorder::new();
        let a = rec.invoke(1, "a", 0);
        let b = rec.invoke(2, "b", 1);
        let c = rec.invoke(3, "c", 2);
        let _never_completed = rec.invoke(4, "d", 3);
        rec.ok(a, 7, 5).expect("a is pending");
        rec.fail(b).expect("b is pending");
        rec.info(c).expect("c is pending");
        let history = rec.finish();
        let inputs: Vec<_> = history.ops().iter().map(|op| op.input).collect();
        assert_eq!(inputs, ["a", "c", "d"]);
        assert_eq!(history.ops()[0].output(), Some(&7));
        assert_eq!(history.ops()[0].returned_at(), Some(5));
        assert_eq!(history.ops()[1].completion, Completion::Unknown);
        assert_eq!(history.ops()[2].completion, Completion::Unknown);
    }

    #[test]
    fn recorder_refuses_double_completion_and_time_travel() {
        let mut rec: Recorder<(), ()> = Recorder::new();
        let a = rec.invoke(1, (), 10);
        assert_eq!(
            rec.ok(a, (), 9),
            Err(HistoryError::ReturnBeforeCall {
                called: 10,
                returned: 9
            })
        );
        rec.ok(a, (), 10)
            .expect("still pending after the refused return");
        assert_eq!(rec.fail(a), Err(HistoryError::NotPending(a)));
        assert_eq!(rec.info(a), Err(HistoryError::NotPending(a)));
    }

    #[test]
    fn history_refuses_return_before_call() {
        let mut history: History<(), ()> = History::new();
        assert!(history.push_returned(0, (), 5, (), 4).is_err());
        assert_eq!(history.push_returned(0, (), 5, (), 5), Ok(0));
        assert_eq!(history.push_unknown(0, (), 6), 1);
        assert_eq!(history.len(), 2);
    }
}
