//! The etcd version keel answers as, in one place: `Status.version`, `/version`,
//! `keel --version` and the start-up milestone "enabled capabilities for version".
//!
//! Keel reports etcd 3.4.23 because that is the release whose behaviour it is checked
//! against, side by side, by every conformance script (Debian's etcd-server 3.4.23):
//! headers, error texts, `/health`'s shape and the compaction boundary follow 3.4.
//! Clients branch on this string (kube-apiserver turns features on by the etcd version it
//! sees; etcdctl prints it), so claiming a later release would promise behaviour keel has
//! not been checked for.

/// The server version (`Status.version`, `/version`'s `etcdserver`).
pub const ETCD_SERVER_VERSION: &str = "3.4.23";
/// The cluster version (`/version`'s `etcdcluster`): major.minor.0, as etcd reports it.
pub const ETCD_CLUSTER_VERSION: &str = "3.4.0";
/// The capability level a member announces once it serves (major.minor).
pub const ETCD_CAPABILITY_VERSION: &str = "3.4";
