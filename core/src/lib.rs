//! keel-core: the sans-IO state machines of Keel, an etcd-compatible consensus key-value store.
//!
//! Nothing in this crate performs I/O, reads a clock, spawns a thread or draws ambient
//! randomness: drivers (`keel-runtime-tokio`, `keel-runtime-sim`) hand in time, messages,
//! durability acknowledgements and a seed, and execute the outputs.

pub mod auth;
pub mod discovery;
pub mod etcd;
pub mod mvcc;
pub mod node;
pub mod raft;
pub mod wal;

/// Whether this build carries the simulator's deliberately broken safety rules (the
/// `planted-bugs` feature). The `keel` binary refuses to start when it does.
pub const PLANTED_BUGS: bool = cfg!(feature = "planted-bugs");
