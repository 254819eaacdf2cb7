//! etcd's on-disk formats that keel reads and writes, over byte slices: the bbolt
//! database etcd keeps its backend in (and streams as a snapshot), and etcd 3.4's buckets
//! inside it.

pub mod backend;
pub mod bolt;
pub mod pb;
