//! keel-sim-tests: chaos scenarios over whole simulated clusters and the history
//! checkers (linearizability per key, watch guarantees, durability of acknowledged
//! writes), run with `cargo test --features sim`. Until the simulation driver lands, the
//! raft-level schedule checks live in keel-core's own property tests.
