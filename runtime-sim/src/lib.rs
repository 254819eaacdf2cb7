//! keel-runtime-sim: the simulation driver. It runs the same keel-core members under
//! madsim (its executor, virtual time, network and seeded randomness) so whole clusters
//! can be tested under partitions, crashes, torn writes and clock skew, reproducibly
//! from a seed.
//!
//! - [`disk`]: a simulated disk behind the WAL's segment-store trait, with crashes that
//!   lose unsynced bytes and tear the last write, failing fsyncs and a full disk.
//! - [`clock`]: per-member clocks with offset and drift over madsim's one global clock.
//! - [`net`]: peer messages over madsim endpoints, with loss, duplication and delay on top
//!   of madsim's own partitions (clogged links).
//! - [`member`]: one member process: raft, the state machine and the WAL, driven the way
//!   `runtime-tokio` drives them.
//! - [`cluster`]: a whole cluster and the fault controls a scenario uses.
//! - [`observer`]: what every member reports (leaders per term, applied entries, a hash
//!   of the whole event trace) and the invariants checked on it as it happens.
//!
//! The simulation needs `--cfg madsim`, which the repository's `.cargo/config.toml` sets.

pub mod api;
pub mod clock;
pub mod cluster;
pub mod disk;
pub mod member;
pub mod net;
pub mod observer;

pub use clock::SkewedClock;
pub use cluster::{Cluster, ClusterConfig};
pub use disk::{DiskError, SimDisk};
pub use member::{Bug, MemberSpec};
pub use observer::Observer;
