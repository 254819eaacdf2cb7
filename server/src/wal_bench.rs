//! `keelctl bench wal`: WAL append throughput next to the disk's own limits, measured in
//! the same run by plain file loops (sequential write bandwidth, fdatasync rate).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use bytes::Bytes;
use keel_core::raft::{Entry, EntryPayload, LogIndex, Term};
use keel_core::wal::{frame_len, Record, Wal};
use keel_runtime_tokio::wal_files::write_filled;
use keel_runtime_tokio::{FileStore, WriteMode};

/// What to run.
#[derive(Clone, Debug)]
pub struct WalBench {
    /// Scratch directory (created and removed).
    pub dir: PathBuf,
    /// Entry payload bytes.
    pub payload: usize,
    /// Records per run.
    pub records: u64,
    /// Flush (sync) after this many records, one run each.
    pub flush_every: Vec<u64>,
    /// Segment size in bytes.
    pub segment_size: u64,
    /// fdatasync calls for the raw sync-rate baseline.
    pub raw_syncs: u64,
    /// Write path.
    pub mode: WriteMode,
}

/// One measured run.
#[derive(Clone, Debug)]
pub struct WalRun {
    /// Records per flush.
    pub flush_every: u64,
    /// Records appended per second.
    pub records_per_sec: f64,
    /// Bytes (framed) written per second, in MB/s.
    pub mb_per_sec: f64,
    /// Flushes per second.
    pub syncs_per_sec: f64,
}

/// The disk's limits measured with plain file loops.
#[derive(Clone, Debug)]
pub struct RawDisk {
    /// Sequential write bandwidth (1 MiB writes, one fdatasync at the end), MB/s.
    pub seq_mb_per_sec: f64,
    /// Small write + fdatasync pairs per second.
    pub syncs_per_sec: f64,
}

fn scratch(dir: &Path, name: &str) -> std::io::Result<PathBuf> {
    let p = dir.join(name);
    let _ = fs::remove_dir_all(&p);
    fs::create_dir_all(&p)?;
    Ok(p)
}

/// Measures the raw disk.
pub fn raw_disk(spec: &WalBench) -> std::io::Result<RawDisk> {
    let dir = scratch(&spec.dir, "raw")?;
    // Sequential bandwidth over the same volume of bytes the WAL runs write.
    let bytes = spec.records * frame_len(spec.payload + 17) as u64;
    let path = dir.join("seq");
    let mut f = File::create(&path)?;
    let start = Instant::now();
    write_filled(&mut f, bytes, 0x5a)?;
    f.sync_data()?;
    let seq = bytes as f64 / start.elapsed().as_secs_f64() / 1e6;
    // fdatasync rate: one small overwrite in a preallocated file per sync, as a WAL does.
    let path = dir.join("sync");
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)?;
    f.write_all(&vec![0u8; 64 << 20])?;
    f.sync_all()?;
    drop(f);
    let mut f = OpenOptions::new().write(true).open(&path)?;
    let rec = vec![0x5au8; frame_len(spec.payload + 17)];
    let start = Instant::now();
    for _ in 0..spec.raw_syncs {
        f.write_all(&rec)?;
        f.sync_data()?;
    }
    let syncs = spec.raw_syncs as f64 / start.elapsed().as_secs_f64();
    fs::remove_dir_all(&dir)?;
    Ok(RawDisk {
        seq_mb_per_sec: seq,
        syncs_per_sec: syncs,
    })
}

/// Runs the WAL for one flush interval.
pub fn wal_run(spec: &WalBench, flush_every: u64) -> Result<WalRun, String> {
    let dir = scratch(&spec.dir, "wal").map_err(|e| e.to_string())?;
    let store = FileStore::open_with(&dir, spec.mode).map_err(|e| e.to_string())?;
    let (mut wal, _) = Wal::open(store, 1, 1, spec.segment_size).map_err(|e| e.to_string())?;
    // Measure appends, not the one-off background preallocation of the next segment.
    wal.store_mut().wait_for_spare();
    let payload = Bytes::from(vec![0x6bu8; spec.payload]);
    // Keep the run's records in memory up front so the loop measures the WAL only.
    // Flushing often is slow: run `flush_every * raw_syncs` records at most, so every
    // interval does about as many flushes as the raw baseline.
    let count = spec.records.min(flush_every.max(1) * spec.raw_syncs);
    let records: Vec<Record> = (1..=count)
        .map(|i| {
            Record::Entry(Entry {
                term: Term(1),
                index: LogIndex(i),
                payload: EntryPayload::Normal(payload.clone()),
            })
        })
        .collect();
    let flush_every = flush_every.max(1) as usize;
    let start = Instant::now();
    let mut syncs = 0u64;
    for batch in records.chunks(flush_every) {
        wal.append(batch).map_err(|e| e.to_string())?;
        wal.sync().map_err(|e| e.to_string())?;
        syncs += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    drop(wal);
    fs::remove_dir_all(&dir).map_err(|e| e.to_string())?;
    let bytes = count as f64 * frame_len(spec.payload + 17) as f64;
    Ok(WalRun {
        flush_every: flush_every as u64,
        records_per_sec: count as f64 / secs,
        mb_per_sec: bytes / secs / 1e6,
        syncs_per_sec: syncs as f64 / secs,
    })
}
