//! Bootstrap: member and cluster IDs exactly as etcd derives them, and the static
//! `--initial-cluster` configuration.
