//! etcd's backend database format, bbolt (v1.3.6, what etcd 3.4 links): a sans-IO reader
//! over the file's bytes and a streaming writer into a [`PageSink`].
//!
//! A bbolt file is pages of `page_size` bytes. Pages 0 and 1 are metas (the valid one
//! with the higher txid is current); it names the root bucket's b+tree, whose leaf
//! elements are the top-level buckets, each the root of its own b+tree of keys. Keel
//! reads this to take in etcd snapshots and data-dbs, and writes it to stream snapshots
//! that `etcdctl snapshot status` / `restore` accept.
//!
//! - `page`: the on-disk layout (headers, meta, elements).
//! - `read`: [`BoltDb`] and [`Bucket`], bounded walks on any input.
//! - `check`: Go's `tx.Check()`.
//! - `write`: [`BoltWriter`].
//! - `status`: [`db_status`], `etcdctl snapshot status`.

mod check;
mod error;
mod page;
mod read;
mod status;
mod write;

#[cfg(test)]
mod tests;

pub use error::{BoltError, Loc};
pub use read::{BoltDb, Bucket};
pub use status::{db_status, DbStatus};
pub use write::{BoltWriteError, BoltWriter, PageSink};

/// The page size the writer uses (and the reader's fallback when meta 0 is unreadable,
/// as bbolt falls back to the OS page size).
pub const PAGE_SIZE: usize = 4096;
