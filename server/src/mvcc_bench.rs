//! `keelctl bench mvcc`: single-threaded, in-memory keyspace throughput and memory per
//! key (8-byte keys, 256-byte values by default).

use std::time::Instant;

use bytes::Bytes;
use keel_core::mvcc::{KvStore, PutRequest, RangeRequest};

/// Measured figures.
#[derive(Clone, Debug)]
pub struct MvccResult {
    /// Puts per second while loading the keys.
    pub puts_per_sec: f64,
    /// Point reads per second.
    pub reads_per_sec: f64,
    /// Ranges of about 100 keys per second.
    pub ranges_per_sec: f64,
    /// Keys returned per range, on average.
    pub keys_per_range: f64,
    /// Live heap growth per key while loading (allocator statistics), in bytes.
    pub heap_per_key: f64,
    /// Resident-memory growth per key while loading, in bytes.
    pub rss_per_key: f64,
    /// Key + value bytes per key.
    pub data_per_key: f64,
}

fn rss_bytes() -> u64 {
    // Second field of /proc/self/statm: resident pages.
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// Requests' keys, as the server sees them: slices of one received buffer (a gRPC frame
/// decodes into `Bytes` slices of itself), not an allocation each.
struct Keys(Bytes);

/// Key number `i`: 8-byte keys spread over the key space, as etcd's benchmark makes them.
fn name(i: u64) -> [u8; 8] {
    i.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes()
}

/// Keys are taken from received buffers this many requests long.
const FRAME: u64 = 512;

impl Keys {
    fn new(n: u64) -> Keys {
        Keys((0..n).flat_map(name).collect::<Vec<u8>>().into())
    }

    /// The keys of requests `from..from + FRAME` of a read run, in a buffer of their own:
    /// as a server reads them, just received (hot in cache), not at a random spot of
    /// one large array (a cache miss per read that no server pays).
    fn frame(from: u64, keys: u64) -> Keys {
        let all: Vec<u8> = (from..from + FRAME)
            .flat_map(|i| name(i.wrapping_mul(7919) % keys.max(1)))
            .collect();
        Keys(all.into())
    }

    fn key(&self, i: u64) -> Bytes {
        let at = i as usize * 8;
        self.0.slice(at..at + 8)
    }
}

/// A count of live heap bytes, kept by the binary's global allocator.
pub struct HeapCounter {
    /// Starts counting from zero.
    pub start: fn(),
    /// Stops counting; returns the bytes allocated since `start` that are still live.
    pub stop: fn() -> usize,
}

/// Loads `keys` keys, then measures reads and ranges. The heap is counted only while
/// the keys load, so reads run on the bare allocator, as in the server.
pub fn run(keys: u64, value_size: usize, reads: u64, heap_counter: HeapCounter) -> MvccResult {
    let mut store = KvStore::new();
    let names = Keys::new(keys);
    let value = Bytes::from(vec![0x76u8; value_size]);
    let rss0 = rss_bytes();
    (heap_counter.start)();
    let start = Instant::now();
    for i in 0..keys {
        let r = PutRequest {
            key: names.key(i),
            value: value.clone(),
            ..PutRequest::default()
        };
        let _ = store.put(&r);
        if i % 1024 == 0 {
            drop(store.take_events());
        }
    }
    drop(store.take_events());
    let puts = keys as f64 / start.elapsed().as_secs_f64();
    let rss = rss_bytes().saturating_sub(rss0) as f64 / keys.max(1) as f64;
    let heap = (heap_counter.stop)() as f64 / keys.max(1) as f64;
    let start = Instant::now();
    let mut found = 0u64;
    let mut frame = Keys(Bytes::new());
    for i in 0..reads {
        if i % FRAME == 0 {
            frame = Keys::frame(i, keys);
        }
        let r = RangeRequest {
            key: frame.key(i % FRAME),
            ..RangeRequest::default()
        };
        found += store.range(&r).map_or(0, |r| r.kvs.len() as u64);
    }
    let reads_per_sec = reads as f64 / start.elapsed().as_secs_f64();
    assert_eq!(found, reads, "every point read finds its key");
    let ranges = (reads / 100).max(1);
    let start = Instant::now();
    // A key interval holding about 100 keys: keys are spread evenly over u64.
    let span = u64::MAX / keys.max(1) * 100;
    let mut got = 0u64;
    for i in 0..ranges {
        let lo = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) % (u64::MAX - span);
        let r = RangeRequest {
            key: Bytes::copy_from_slice(&lo.to_be_bytes()),
            range_end: Bytes::copy_from_slice(&(lo + span).to_be_bytes()),
            ..RangeRequest::default()
        };
        got += store.range(&r).map_or(0, |r| r.kvs.len() as u64);
    }
    let avg_range = got as f64 / ranges as f64;
    MvccResult {
        puts_per_sec: puts,
        reads_per_sec,
        ranges_per_sec: ranges as f64 / start.elapsed().as_secs_f64(),
        keys_per_range: avg_range,
        heap_per_key: heap,
        rss_per_key: rss,
        data_per_key: (8 + value_size) as f64,
    }
}
