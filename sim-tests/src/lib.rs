//! keel-sim-tests: chaos scenarios over whole simulated clusters and the history
//! checkers (linearizability per key, watch guarantees, durability of acknowledged
//! writes). Until the simulation driver lands, the raft-level schedule checks live in
//! keel-core's own property tests.
//!
//! [`linearizability`] is the first checker: a Wing–Gong–Lowe search (the algorithm of
//! Porcupine) over histories of concurrent operations against a sequential model,
//! validated against Porcupine's published corpus in `tests/linearizability_corpus.rs`.

pub mod linearizability;
