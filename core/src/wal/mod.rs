//! Keel's write-ahead log format, recovery and segment policy, over byte slices.
//!
//! Everything an acknowledged write depends on lives here: raft entries, hard state and
//! snapshot markers, framed with a length, a type and a CRC chained from record to record
//! and across segments. [`recover`] decides what a set of segment files means (the log,
//! a torn tail to cut, or a fatal error naming the file and byte offset); [`Wal`] decides
//! where records go and what must be synced before what, through a [`SegmentStore`]
//! (mmap files in production, [`MemStore`] in tests and simulation).

mod mem_store;
mod record;
mod recovery;
mod resume;
mod segment;
mod snapshot_file;
mod writer;

pub use mem_store::MemStore;
pub use record::{
    align8, batch_records, decode_frame, frame_len, Frame, Record, FRAME_HEADER, MAX_PAYLOAD,
};
pub use recovery::{recover, Recovered, TornTail, WalEnd, WalError};
pub use resume::{add_missing_snapshot_marker, resume_state, MissingMarker, ResumeGap};
pub use segment::{HeaderError, SegmentHeader, SegmentName, MAGIC, SEGMENT_HEADER, VERSION};
pub use snapshot_file::{
    decode_snapshot_file, encode_snapshot_file, parse_snapshot_file_name, snapshot_file_name,
    SnapshotFileError, SNAP_MAGIC,
};
pub use writer::{SegmentStore, Wal, WalOpenError};
