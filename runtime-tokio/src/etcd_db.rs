//! etcd-format databases on disk: a member's backend view written as etcd 3.4's bbolt
//! database into an anonymous file beside its snapshots (the Snapshot RPC streams it
//! from there), so a large keyspace is never held twice in memory.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use keel_core::etcd::backend::{write_backend, Backend};
use keel_core::etcd::bolt::{BoltWriteError, BoltWriter, PageSink};

/// Pages written straight into a file at their offsets.
struct FileSink(File);

impl PageSink for FileSink {
    type Error = io::Error;
    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        self.0.write_all_at(bytes, offset)
    }
}

/// Writes `view` as an etcd database into an unnamed file in `dir` (gone when closed,
/// even after a crash); returns the file and the database's size in bytes.
pub fn write_backend_file(view: Backend, dir: &Path) -> io::Result<(File, u64)> {
    let file = tempfile::tempfile_in(dir)?;
    let (sink, size) =
        write_backend(view, BoltWriter::new(FileSink(file))).map_err(|e| match e {
            BoltWriteError::Sink(e) => e,
            e => io::Error::other(e.to_string()),
        })?;
    Ok((sink.0, size))
}
