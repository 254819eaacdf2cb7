//! Where the keyspace keeps values: packed into shared chunks instead of one heap
//! allocation (plus a reference-count block once shared) per value.
//!
//! A value is copied into the current chunk and handed out as a [`Bytes`] slice of it, so
//! storing it costs no allocation and cloning it (for events, responses) only bumps the
//! chunk's reference count. A chunk is freed when the last value in it is dropped, which
//! bounds what a compacted-away version can pin to one chunk; large values get their own
//! allocation so they never pin, or are pinned by, a chunk of small ones.

use bytes::{Bytes, BytesMut};

/// Chunk size: small enough that a few long-lived values cannot pin much memory, large
/// enough that the per-chunk reference block is negligible.
const CHUNK: usize = 16 * 1024;
/// Values above this are allocated on their own.
const LARGE: usize = CHUNK / 8;

/// The chunk being filled.
#[derive(Clone, Debug, Default)]
pub(crate) struct ValueSlab {
    chunk: BytesMut,
}

impl ValueSlab {
    /// A copy of `value` the store can keep, independent of the buffer it came in
    /// (a request's value is usually a slice of a whole gRPC frame or raft batch).
    pub fn store(&mut self, value: &[u8]) -> Bytes {
        if value.is_empty() {
            return Bytes::new();
        }
        if value.len() > LARGE {
            return Bytes::copy_from_slice(value);
        }
        if self.chunk.capacity() - self.chunk.len() < value.len() {
            self.chunk = BytesMut::with_capacity(CHUNK);
        }
        // Within capacity, so no reallocation: the split-off value shares the chunk.
        self.chunk.extend_from_slice(value);
        self.chunk.split().freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_copied_exactly_and_share_chunks() {
        let mut slab = ValueSlab::default();
        let a = slab.store(b"alpha");
        let b = slab.store(b"beta");
        assert_eq!(&a[..], b"alpha");
        assert_eq!(&b[..], b"beta");
        // Adjacent in one chunk.
        assert_eq!(a.as_ptr().wrapping_add(a.len()), b.as_ptr());
        assert!(slab.store(b"").is_empty());
    }

    #[test]
    fn a_full_chunk_starts_a_new_one_and_large_values_stand_alone() {
        let mut slab = ValueSlab::default();
        let v = vec![7u8; LARGE];
        let kept: Vec<Bytes> = (0..(CHUNK / LARGE) * 3).map(|_| slab.store(&v)).collect();
        assert!(kept.iter().all(|b| b[..] == v[..]));
        let big = vec![9u8; LARGE + 1];
        let b = slab.store(&big);
        assert_eq!(&b[..], &big[..]);
        // The earlier values are untouched by later writes.
        assert!(kept.iter().all(|b| b[..] == v[..]));
    }
}
