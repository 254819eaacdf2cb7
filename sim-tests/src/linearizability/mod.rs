//! Linearizability checking of concurrent histories against sequential models.
//!
//! A [`History`] records, per operation, when a client called it, what it asked for, and
//! when and with what it returned, or that its outcome is unknown. [`check`] decides
//! whether some total order of the operations (a) respects real time: an operation that
//! returned before another was called comes first, (b) is accepted step by step by a
//! [`Model`], and (c) contains every completed operation, while operations with an
//! unknown outcome may appear anywhere after their call, or not at all.
//!
//! The search is Wing & Gong's, with Lowe's memoisation, as Porcupine implements it:
//! call and return entries in one doubly linked list ordered by time; a depth-first
//! search linearizes any pending call that precedes the earliest remaining return and
//! undoes by relinking; a set of (linearized operations, model state) pairs already
//! explored prunes repeats. Histories are split by [`Model::partition`] first, since the
//! search is exponential in concurrency and independent keys compose (linearizability is
//! local: a history is linearizable iff each per-object subhistory is).
//!
//! Operations that definitely did not happen (Jepsen `fail`) are not part of a history:
//! [`Recorder::fail`] drops them.

mod checker;
pub mod corpus;
mod history;
mod model;
pub mod models;
#[cfg(test)]
mod tests;

pub use checker::{
    check, check_with, CheckOptions, CheckOutcome, Exhausted, Verdict, Violation, DEFAULT_MAX_STEPS,
};
pub use history::{CallId, Completion, History, HistoryError, OpId, Operation, Recorder, Time};
pub use model::{Model, Successors};
