//! The segment policy: where each record goes, when to roll to a new segment, what must
//! be synced before what, and which segments may be released. File operations go through
//! [`SegmentStore`]: an mmap implementation in production, [`super::MemStore`] in tests
//! and simulation.

use std::fmt::Debug;

use crate::raft::{HardState, LogIndex};

use super::record::Record;
use super::recovery::{recover, Recovered, WalError};
use super::segment::{SegmentHeader, SegmentName, SEGMENT_HEADER};

/// The files a WAL needs. Writes become durable only after `sync`; a created or removed
/// file's name only after `sync_dir`.
pub trait SegmentStore {
    /// I/O error type.
    type Error: std::error::Error + Send + Sync + 'static;
    /// Names of the segment files present.
    fn list(&mut self) -> Result<Vec<SegmentName>, Self::Error>;
    /// The whole content of a segment.
    fn read(&mut self, name: SegmentName) -> Result<Vec<u8>, Self::Error>;
    /// Creates a zero-filled segment of `size` bytes.
    fn create(&mut self, name: SegmentName, size: u64) -> Result<(), Self::Error>;
    /// Writes `data` at `offset` (within the segment's size).
    fn write(&mut self, name: SegmentName, offset: u64, data: &[u8]) -> Result<(), Self::Error>;
    /// Makes every write to `name` durable.
    fn sync(&mut self, name: SegmentName) -> Result<(), Self::Error>;
    /// Makes file creations and removals durable.
    fn sync_dir(&mut self) -> Result<(), Self::Error>;
    /// Removes a segment.
    fn remove(&mut self, name: SegmentName) -> Result<(), Self::Error>;
}

/// A WAL operation failed.
#[derive(Debug, thiserror::Error)]
pub enum WalOpenError<E: std::error::Error + 'static> {
    /// The files say something fatal.
    #[error(transparent)]
    Corrupt(#[from] WalError),
    /// The store failed.
    #[error("wal: i/o: {0}")]
    Io(E),
    /// A record larger than a whole segment.
    #[error("wal: record of {0} bytes does not fit in a segment")]
    RecordTooLarge(usize),
}

/// An open write-ahead log.
#[derive(Debug)]
pub struct Wal<S: SegmentStore> {
    store: S,
    cluster_id: u64,
    member_id: u64,
    segment_size: u64,
    /// Current segment and append offset.
    segment: SegmentName,
    offset: u64,
    crc: u32,
    /// Last entry index appended (for naming the next segment).
    last_index: LogIndex,
    /// Segments in order, with the highest entry index written to each.
    segments: Vec<(SegmentName, LogIndex)>,
    /// Size of the current segment's file (may differ from `segment_size` if the
    /// setting changed since it was created).
    current_size: u64,
    /// The last hard state appended: carried into every new segment so releasing old
    /// segments can never lose the term and vote.
    last_hard_state: Option<HardState>,
    buf: Vec<u8>,
    /// Bytes appended to the current segment since the last sync.
    dirty: bool,
}

impl<S: SegmentStore> Wal<S> {
    /// Opens the log in `store`, recovering what is there (cutting a torn tail) or creating
    /// the first segment. Returns the log and what was recovered.
    pub fn open(
        mut store: S,
        cluster_id: u64,
        member_id: u64,
        segment_size: u64,
    ) -> Result<(Wal<S>, Recovered), WalOpenError<S::Error>> {
        let names = store.list().map_err(WalOpenError::Io)?;
        let mut files = Vec::new();
        for n in &names {
            files.push((*n, store.read(*n).map_err(WalOpenError::Io)?));
        }
        let views: Vec<(SegmentName, &[u8])> = files.iter().map(|(n, b)| (*n, &b[..])).collect();
        let rec = recover(&views, Some((cluster_id, member_id)))?;
        let mut wal = Wal {
            store,
            cluster_id,
            member_id,
            segment_size: segment_size.max((SEGMENT_HEADER * 2) as u64),
            segment: SegmentName {
                seq: 0,
                first_index: 1,
            },
            offset: SEGMENT_HEADER as u64,
            crc: 0,
            last_index: LogIndex(0),
            segments: Vec::new(),
            current_size: 0,
            last_hard_state: None,
            buf: Vec::new(),
            dirty: false,
        };
        wal.current_size = wal.segment_size;
        if rec.hard_state != HardState::default() {
            wal.last_hard_state = Some(rec.hard_state);
        }
        match rec.end {
            None => {}
            Some(end) => {
                wal.segments = rec.segments.clone();
                wal.current_size = files_len(&files, end.segment) as u64;
                wal.segment = end.segment;
                wal.offset = end.offset as u64;
                wal.crc = end.crc;
                wal.last_index = rec
                    .entries
                    .last()
                    .map(|e| e.index)
                    .or(rec.snapshot.as_ref().map(|s| s.index))
                    .unwrap_or(LogIndex(end.segment.first_index).prev());
                if let Some(t) = rec.torn.as_ref().filter(|t| t.offset > 0) {
                    // Zero the torn bytes so later appends never sit next to garbage.
                    let len = wal.current_size.saturating_sub(t.offset as u64) as usize;
                    let zeros = vec![0u8; len.min(files_len(&files, t.segment) - t.offset)];
                    wal.store
                        .write(t.segment, t.offset as u64, &zeros)
                        .map_err(WalOpenError::Io)?;
                    wal.store.sync(t.segment).map_err(WalOpenError::Io)?;
                }
            }
        }
        if let Some(t) = rec.torn.as_ref().filter(|t| t.offset == 0) {
            // A segment whose header never reached the disk: remove it; it is created
            // again at the next roll.
            wal.store.remove(t.segment).map_err(WalOpenError::Io)?;
            wal.store.sync_dir().map_err(WalOpenError::Io)?;
        }
        if rec.end.is_none() {
            wal.create_segment(0, LogIndex(1), 0)?;
        }
        Ok((wal, rec))
    }

    fn create_segment(
        &mut self,
        seq: u64,
        first_index: LogIndex,
        prev_crc: u32,
    ) -> Result<(), WalOpenError<S::Error>> {
        let name = SegmentName {
            seq,
            first_index: first_index.0,
        };
        let header = SegmentHeader {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            seq,
            first_index: first_index.0,
            prev_crc,
        };
        let io = WalOpenError::Io;
        self.store.create(name, self.segment_size).map_err(io)?;
        self.store.write(name, 0, &header.encode()).map_err(io)?;
        self.store.sync(name).map_err(io)?;
        self.store.sync_dir().map_err(io)?;
        self.segments.push((name, LogIndex(0)));
        self.current_size = self.segment_size;
        self.segment = name;
        self.offset = SEGMENT_HEADER as u64;
        self.crc = prev_crc;
        self.dirty = false;
        Ok(())
    }

    /// Appends records (not yet durable: call [`Wal::sync`]). Rolls to a new segment when
    /// the next record does not fit, syncing the full one first so the chain into the new
    /// segment never rests on unsynced bytes.
    pub fn append(&mut self, records: &[Record]) -> Result<(), WalOpenError<S::Error>> {
        let cap = self.segment_size - SEGMENT_HEADER as u64 - 64;
        self.buf.clear();
        let mut start_offset = self.offset;
        for r in records {
            let at = self.buf.len();
            let crc = r.encode(self.crc, &mut self.buf);
            let len = (self.buf.len() - at) as u64;
            if len > cap {
                self.buf.truncate(at);
                return Err(WalOpenError::RecordTooLarge(len as usize));
            }
            if start_offset + self.buf.len() as u64 > self.current_size {
                // Flush what fits, then roll and re-encode this record in the new segment.
                self.buf.truncate(at);
                self.write_buf(start_offset)?;
                self.sync()?;
                let next = match r {
                    Record::Entry(e) => e.index,
                    _ => self.last_index.next(),
                };
                let (seq, crc_before) = (self.segment.seq + 1, self.crc);
                self.create_segment(seq, next, crc_before)?;
                start_offset = self.offset;
                self.buf.clear();
                if let Some(hs) = self.last_hard_state {
                    self.crc = Record::HardState(hs).encode(self.crc, &mut self.buf);
                }
                let crc = r.encode(self.crc, &mut self.buf);
                self.crc = crc;
            } else {
                self.crc = crc;
            }
            match r {
                Record::Entry(e) => {
                    self.last_index = e.index;
                    if let Some(seg) = self.segments.last_mut() {
                        seg.1 = seg.1.max(e.index);
                    }
                }
                Record::HardState(hs) => self.last_hard_state = Some(*hs),
                _ => {}
            }
        }
        self.write_buf(start_offset)
    }

    fn write_buf(&mut self, at: u64) -> Result<(), WalOpenError<S::Error>> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.store
            .write(self.segment, at, &self.buf)
            .map_err(WalOpenError::Io)?;
        self.offset = at + self.buf.len() as u64;
        self.buf.clear();
        self.dirty = true;
        Ok(())
    }

    /// Makes everything appended so far durable (one flush for any number of appends:
    /// group commit).
    pub fn sync(&mut self) -> Result<(), WalOpenError<S::Error>> {
        if self.dirty {
            self.store.sync(self.segment).map_err(WalOpenError::Io)?;
            self.dirty = false;
        }
        Ok(())
    }

    /// Removes segments whose entries all lie at or below `index` (covered by a durable
    /// snapshot), keeping the newest `keep` such segments and always the current one.
    /// Returns the names removed.
    pub fn release(
        &mut self,
        index: LogIndex,
        keep: usize,
    ) -> Result<Vec<SegmentName>, WalOpenError<S::Error>> {
        let current = self.segment;
        // Only a prefix of the oldest segments may go: the chain must stay contiguous.
        let releasable: Vec<SegmentName> = self
            .segments
            .iter()
            .take_while(|(n, hi)| *n != current && *hi <= index)
            .map(|(n, _)| *n)
            .collect();
        let n = releasable.len().saturating_sub(keep);
        let gone: Vec<SegmentName> = releasable.into_iter().take(n).collect();
        for name in &gone {
            self.store.remove(*name).map_err(WalOpenError::Io)?;
        }
        if !gone.is_empty() {
            self.store.sync_dir().map_err(WalOpenError::Io)?;
            self.segments.retain(|(n, _)| !gone.contains(n));
        }
        Ok(gone)
    }

    /// The segment being appended to and the offset after its last record.
    pub fn position(&self) -> (SegmentName, u64) {
        (self.segment, self.offset)
    }

    /// The store (for tests and tools).
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// Consumes the log, returning its store (e.g. to simulate a crash and reopen).
    pub fn into_store(self) -> S {
        self.store
    }
}

fn files_len(files: &[(SegmentName, Vec<u8>)], name: SegmentName) -> usize {
    files
        .iter()
        .find(|(n, _)| *n == name)
        .map_or(0, |(_, b)| b.len())
}
