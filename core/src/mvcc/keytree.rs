//! [`KeyTree`]: a cache-efficient ordered map from byte-string keys to values, used as
//! the MVCC key index in place of `BTreeMap<SmallVec<[u8; 24]>, V>`.
//!
//! # Shape
//!
//! A B+tree. Nodes live in two arenas (leaves, inner nodes) addressed by `u32`, stored
//! in chunks of `CHUNK` nodes so that reaching a node is arithmetic on a small,
//! always-cached chunk table rather than a pointer load per node; freed slots go on a
//! free list. Values live only in leaves; leaves are doubly linked for range scans in
//! both directions.
//!
//! ## Keys (per node)
//!
//! Every node stores its keys as a `KeyBlock`:
//!
//! * a **common prefix** `cp` shared by all keys of the node, inline in the node when at
//!   most `CP_INLINE` bytes. It only shrinks while the node lives (when a key without
//!   it arrives) and is recomputed as `lcp(first, last)` when a node is built by a
//!   split (or when a shortened prefix makes neighbouring heads tie). This is what keeps
//!   etcd-style keys (`/registry/pods/<ns>/<name>`) fast: their first 8 bytes are the same
//!   for every key, so a plain "first 8 bytes" summary would make every comparison a
//!   full compare.
//! * per entry a `u64` **head** summarising the key after `cp` (its "rest"): the first
//!   7 bytes big-endian, zero padded, and in the low byte `min(rest_len, 8)`. Integer
//!   order of heads is `&[u8]` order except when both rests are at least 8 bytes long
//!   and share their first 7 bytes; equal heads with a low byte below 8 mean *equal
//!   keys*, so the zero-padding ambiguity (`"a"` vs `"a\0"`) costs nothing and keys whose
//!   rest is at most 7 bytes are found without touching any other memory. A key of at
//!   most 7 bytes past the prefix needs no storage beyond its head.
//! * for rests of 8 bytes or more, the remaining bytes `rest[7..]` (the "tail") live in
//!   the node's byte buffer as `varint(len) ++ bytes`, at an offset kept in a `meta`
//!   vector that is only allocated once the node holds such a key. Removed tails are
//!   garbage until the buffer is compacted (when garbage exceeds half of it).
//!
//! Separators pushed into inner nodes are the *shortest* byte strings between the two
//! neighbouring leaves (suffix truncation), so inner nodes mostly hold short keys.
//!
//! ## Search
//!
//! A search first checks the prefix and extracts the head with a few shifts of the
//! query's first 16 bytes (preloaded once per operation), then counts heads below it
//! in two branch-free steps: one probe per cache line of heads (the last of each 8),
//! then a count inside the line that holds the answer (inner nodes of more than 64
//! keys add a first step over runs of 64). The probes touch every line of a cold leaf
//! at once, so a leaf costs one memory latency rather than one per binary-search step.
//! Unused slots hold `EMPTY` (above every real head), so the count runs over the
//! fixed-size array and never branches on the node's length. A leaf's first cache line
//! holds its value vector, links, length and inline prefix, so a point lookup is: inner
//! nodes (cache resident), one leaf miss, one value miss. (The slot byte that leads from
//! the entry to its value, see below, is loaded as soon as the leaf is entered, so its
//! line arrives with the heads instead of after them.)
//!
//! ## Capacities
//!
//! Leaves hold `LEAF_CAP` = 64 entries; inner nodes `INNER_CAP` = 192 children, so a
//! 1M-key tree has two inner levels (~150 nodes, ~0.4 MB, cache resident). Measured
//! with 1M random 8-byte keys and 48-byte values (lookups/s, medians of alternating
//! runs on a busy 2-core VM): leaves of 32 and 48 were 10-25% slower than 64 (more
//! inner nodes to miss on; insert cost grows with leaf size but stayed above std's);
//! inner nodes of 128 children were ~12% slower than 192, 256 the same as 192.
//!
//! Values are kept in a per-leaf `Vec<V>` grown `VAL_GROW` = 16 slots at a time (and
//! shrunk after removals), so spare value slots cost at most a few values per leaf
//! whatever the fill; the fixed per-slot cost of a leaf is 9 bytes (its head and slot
//! byte).
//!
//! ## Values in arrival order
//!
//! A leaf's values are *not* kept in key order: an insert appends its value to the
//! vector and records its index in a per-leaf permutation `slot: [u8; L]` (entry `i` in
//! key order has its value at `vals[slot[i]]`); a removal swap-removes the value and
//! renumbers the one slot that pointed at the moved last value. An insert into the
//! middle of a leaf therefore shifts 8-byte heads and 1-byte slots instead of half the
//! leaf's values (with the 64-byte MVCC `KeyIndex`, ~2 KB of `memmove` per insert, the
//! largest single cost of loading keys in random order). Splits, merges and
//! rebalancing first restore key order (an in-place permutation), so the bulk moves
//! between leaves stay plain vector operations and freshly split leaves iterate in
//! memory order.
//!
//! Measured with `keelctl bench mvcc` (1M random 8-byte keys, 256-byte values, values
//! of 64 bytes; alternating runs, noisy 2-core VM): sorted values with `VAL_GROW` = 8
//! loaded 0.69-0.93M puts/s; the permutation alone 0.85-1.24M; with `VAL_GROW` = 16
//! 1.15-1.33M, for +6 bytes of heap per key (spare value slots). Point reads were
//! unchanged within noise (1.2-1.5M/s): they are bound by serial memory misses on the
//! leaf and the value, which the permutation does not add to.
//!
//! ## Fill and memory
//!
//! * Appending to the end of a full node (ascending inserts) splits *at the insertion
//!   point*: the old node stays full and the new key starts a new one; prepending to
//!   the front (descending inserts) does the mirror image. Sequential loads therefore
//!   produce ~100% full nodes. Other inserts into a full leaf split it in the middle.
//! * Redistributing into a sibling before splitting was tried and dropped: with value
//!   vectors sized to their contents only the 8-byte heads depend on fill, and it raised
//!   1M-key fill from 80% to 85% (0.3 bytes per entry) at a 20% cost in insert rate.
//!   Random-order fill oscillates with the tree size (roughly 56-85% for the keys of the
//!   benchmark); overhead beyond key bytes and `size_of::<V>()` measured 9-16 bytes per
//!   entry at 50k-2M entries (std: 60-68).
//! * Removal: a leaf below a quarter full merges with a sibling when the two fit in three
//!   quarters of a leaf, or else rebalances evenly with it; inner nodes likewise. Empty
//!   leaves are unlinked and freed, single-child roots collapse, and removing the last key
//!   frees everything. Freed nodes release their heap memory at once; the arenas
//!   themselves are rebuilt (compacted, in key order) when fewer than a quarter of their
//!   slots are in use, so a shrinking tree hands memory back.
//!
//! Arbitrary key lengths are supported; a single node's tail bytes must stay below 4 GiB.
//! Long-key lookups read the `meta` vector and the tail buffer after the heads, i.e.
//! up to two more dependent cache misses than short keys.

use smallvec::SmallVec;
use std::borrow::Borrow;
use std::cmp::Ordering;
use std::fmt;
use std::iter::FusedIterator;
use std::ops::{Bound, Deref};

/// Entries per leaf of a [`KeyTree`].
const LEAF_CAP: usize = 64;
/// Children per inner node of a [`KeyTree`] (an inner node holds one separator fewer).
const INNER_CAP: usize = 192;
/// Value vectors grow by this many slots at a time.
const VAL_GROW: usize = 16;
/// The head of an unused slot: greater than every real head (whose low byte is <= 8).
const EMPTY: u64 = u64::MAX;
// Searches work in blocks of 8 heads (one cache line).
const _: () = assert!(
    CP_INLINE >= 8
        && std::mem::offset_of!(KeyBlock<LEAF_CAP>, heads) == 64
        && std::mem::offset_of!(Leaf<(), LEAF_CAP>, keys) == 32
);
/// "No node".
const NIL: u32 = u32::MAX;
/// Nodes per arena chunk.
const CHUNK: usize = 64;
/// Common prefixes up to this long are stored inline in the node.
const CP_INLINE: usize = 24;
/// Head low byte meaning "the rest of the key is at least 8 bytes long".
const LONG: u64 = 8;

type Path = SmallVec<[(u32, u32); 8]>;
type KeyBuf = SmallVec<[u8; 32]>;

// ---------------------------------------------------------------------------------------
// Key

/// A key yielded by iteration. Keys of up to 24 bytes are stored inline (no allocation).
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key(SmallVec<[u8; 24]>);

impl Key {
    /// The key's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Converts into the underlying small vector (no copy).
    pub fn into_inner(self) -> SmallVec<[u8; 24]> {
        self.0
    }
}

impl Deref for Key {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for Key {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Borrow<[u8]> for Key {
    fn borrow(&self) -> &[u8] {
        &self.0
    }
}

impl From<&[u8]> for Key {
    fn from(b: &[u8]) -> Self {
        Key(SmallVec::from_slice(b))
    }
}

impl PartialEq<[u8]> for Key {
    fn eq(&self, other: &[u8]) -> bool {
        self.0.as_slice() == other
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "b\"{}\"", self.0.escape_ascii())
    }
}

// ---------------------------------------------------------------------------------------
// Byte helpers

/// Something key bytes can be appended to.
trait ByteSink {
    fn put(&mut self, b: &[u8]);
}

impl ByteSink for Vec<u8> {
    fn put(&mut self, b: &[u8]) {
        self.extend_from_slice(b);
    }
}

impl<A: smallvec::Array<Item = u8>> ByteSink for SmallVec<A> {
    fn put(&mut self, b: &[u8]) {
        self.extend_from_slice(b);
    }
}

/// Length of the longest common prefix of `a` and `b`.
fn lcp(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    let mut i = 0;
    while i + 8 <= n {
        if a[i..i + 8] != b[i..i + 8] {
            break;
        }
        i += 8;
    }
    while i < n && a[i] == b[i] {
        i += 1;
    }
    i
}

/// `key` without its prefix `cp`, if it has that prefix. Common prefixes are short and
/// checked on every node visit, so this avoids a `memcmp` call.
#[inline]
fn strip_prefix<'k>(key: &'k [u8], cp: &[u8]) -> Option<&'k [u8]> {
    if key.len() < cp.len() {
        return None;
    }
    let (head, rest) = key.split_at(cp.len());
    let mut a = head.chunks_exact(8);
    let mut b = cp.chunks_exact(8);
    for (x, y) in a.by_ref().zip(b.by_ref()) {
        if load8(x) != load8(y) {
            return None;
        }
    }
    let (x, y) = (a.remainder(), b.remainder());
    if x.iter().zip(y).all(|(p, q)| p == q) {
        Some(rest)
    } else {
        None
    }
}

#[inline]
fn load_be8(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    u64::from_be_bytes(a)
}

#[inline]
fn load8(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    u64::from_ne_bytes(a)
}

/// The shortest byte string `s` with `a < s <= b` (requires `a < b`).
fn shortest_sep(a: &[u8], b: &[u8]) -> KeyBuf {
    let l = lcp(a, b);
    KeyBuf::from_slice(&b[..(l + 1).min(b.len())])
}

/// The head of a key rest (the key after a node's common prefix): see the module docs.
#[inline]
fn head_of(rest: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    if rest.len() >= 8 {
        b.copy_from_slice(&rest[..8]);
        b[7] = LONG as u8;
    } else {
        b[..rest.len()].copy_from_slice(rest);
        b[7] = rest.len() as u8;
    }
    u64::from_be_bytes(b)
}

/// Number of heads below `h`, i.e. the first index whose head is `>= h`.
///
/// Two branch-free steps over cache-line blocks of 8 heads: count the blocks whose last
/// head is below `h` (these probes touch every line of the array at once, so a cold
/// node costs one memory latency, not one per binary-search step), then count inside
/// the block that holds the answer. Unused slots hold [`EMPTY`], so `heads` stays sorted.
#[inline]
fn lower_bound<const N: usize>(heads: &[u64; N], h: u64) -> usize {
    if N > 64 {
        // Large (inner) nodes: first pick a run of 64 heads the same way.
        let runs = N / 64;
        let mut r = 0;
        for j in 0..runs {
            r += usize::from(heads[64 * j + 63] < h);
        }
        let base = 64 * r.min(runs - 1);
        base + lower_bound_64(&heads[base..base + 64], h)
    } else {
        lower_bound_64(heads, h)
    }
}

/// [`lower_bound`] for at most 64 heads (a multiple of 8).
#[inline]
fn lower_bound_64(heads: &[u64], h: u64) -> usize {
    let blocks = heads.len() / 8;
    let mut b = 0;
    for j in 0..blocks {
        b += usize::from(heads[8 * j + 7] < h);
    }
    // If every block is below `h`, counting in the last one yields the length.
    let base = 8 * b.min(blocks - 1);
    let block = &heads[base..base + 8];
    base + block.iter().map(|&x| usize::from(x < h)).sum::<usize>()
}

/// A search key with its first 16 bytes (zero padded) preloaded as an integer.
struct Query<'k> {
    key: &'k [u8],
    k16: u128,
}

impl<'k> Query<'k> {
    #[inline]
    fn new(key: &'k [u8]) -> Self {
        let k16 = if key.len() >= 16 {
            let mut b = [0u8; 16];
            b.copy_from_slice(&key[..16]);
            u128::from_be_bytes(b)
        } else if key.len() >= 8 {
            // Two overlapping 8-byte loads instead of a variable-length copy.
            let hi = u128::from(load_be8(&key[..8])) << 64;
            let tail = u128::from(load_be8(&key[key.len() - 8..]));
            // Keep bytes 8.. of the key at the top of the low half, zero padded.
            let lo = (tail << (8 * (16 - key.len()))) as u64;
            hi | u128::from(lo)
        } else {
            let mut b = [0u8; 16];
            b[..key.len()].copy_from_slice(key);
            u128::from_be_bytes(b)
        };
        Query { key, k16 }
    }
}

fn write_varint(buf: &mut Vec<u8>, mut v: usize) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// Reads a varint at `o`; returns (value, offset just past it).
#[inline]
fn read_varint(buf: &[u8], mut o: usize) -> (usize, usize) {
    let mut v = 0usize;
    let mut shift = 0;
    loop {
        let b = buf[o];
        o += 1;
        v |= usize::from(b & 0x7f) << shift;
        if b < 0x80 {
            return (v, o);
        }
        shift += 7;
    }
}

fn varint_len(mut v: usize) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

fn to_u32(v: usize) -> u32 {
    match u32::try_from(v) {
        Ok(v) => v,
        Err(_) => too_big(),
    }
}

#[cold]
#[inline(never)]
fn too_big() -> ! {
    panic!("keytree: key bytes of one node exceed 4 GiB")
}

#[cold]
#[inline(never)]
fn dangling(id: usize) -> ! {
    panic!("keytree: dangling node id {id}")
}

/// A flat list of owned keys, used while rebuilding nodes.
struct KeyList {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl KeyList {
    fn with_capacity(n: usize) -> Self {
        KeyList {
            bytes: Vec::with_capacity(n * 16),
            ends: Vec::with_capacity(n),
        }
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    fn get(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.bytes[start..self.ends[i]]
    }

    fn push(&mut self, k: &[u8]) {
        self.bytes.extend_from_slice(k);
        self.ends.push(self.bytes.len());
    }

    fn push_from<const N: usize>(&mut self, kb: &KeyBlock<N>, i: usize) {
        kb.write_key(i, &mut self.bytes);
        self.ends.push(self.bytes.len());
    }

    fn push_all<const N: usize>(&mut self, kb: &KeyBlock<N>) {
        for i in 0..kb.len() {
            self.push_from(kb, i);
        }
    }

    fn of_range<const N: usize>(kb: &KeyBlock<N>, a: usize, b: usize) -> Self {
        let mut kl = KeyList::with_capacity(b - a);
        for i in a..b {
            kl.push_from(kb, i);
        }
        kl
    }

    fn of<const N: usize>(kb: &KeyBlock<N>) -> Self {
        let mut kl = KeyList::with_capacity(kb.len());
        kl.push_all(kb);
        kl
    }
}

// ---------------------------------------------------------------------------------------
// KeyBlock: the sorted keys of one node

/// The sorted keys of one node, prefix-truncated and summarised (see module docs).
///
/// `repr(C)`: what every search reads first (lengths, inline common prefix) comes
/// first, so that it shares the node's first cache line with the leaf's value vector.
#[derive(Clone)]
#[repr(C)]
struct KeyBlock<const N: usize> {
    len: u32,
    cp_len: u32,
    /// The common prefix when it is at most [`CP_INLINE`] bytes (zero padded).
    cp_inline: [u8; CP_INLINE],
    /// Dead tail bytes in `buf`.
    garbage: u32,
    /// A longer common prefix (if any), followed by tail records.
    buf: Vec<u8>,
    heads: [u64; N],
    /// Empty while no entry is long; otherwise one per entry: for long entries (head
    /// low byte == 8) the offset of the tail record in `buf`. Kept out of line so
    /// nodes of short keys do not pay 4 bytes per slot.
    meta: Vec<u32>,
}

impl<const N: usize> KeyBlock<N> {
    fn new() -> Self {
        KeyBlock {
            len: 0,
            cp_len: 0,
            cp_inline: [0; CP_INLINE],
            garbage: 0,
            buf: Vec::new(),
            heads: [EMPTY; N],
            meta: Vec::new(),
        }
    }

    #[inline]
    fn len(&self) -> usize {
        self.len as usize
    }

    #[inline]
    fn cp(&self) -> &[u8] {
        let n = self.cp_len as usize;
        if n <= CP_INLINE {
            &self.cp_inline[..n]
        } else {
            &self.buf[..n]
        }
    }

    /// Bytes at the front of `buf` taken by a long common prefix.
    fn cp_in_buf(&self) -> usize {
        let n = self.cp_len as usize;
        if n <= CP_INLINE {
            0
        } else {
            n
        }
    }

    /// Sets the common prefix; `buf` must be empty.
    fn set_cp(&mut self, cp: &[u8]) {
        debug_assert!(self.buf.is_empty());
        self.cp_len = to_u32(cp.len());
        self.cp_inline = [0; CP_INLINE];
        if cp.len() <= CP_INLINE {
            self.cp_inline[..cp.len()].copy_from_slice(cp);
        } else {
            self.buf.extend_from_slice(cp);
        }
    }

    /// The tail bytes of long entry `i`.
    #[inline]
    fn tail(&self, i: usize) -> &[u8] {
        let (l, p) = read_varint(&self.buf, self.meta[i] as usize);
        &self.buf[p..p + l]
    }

    /// `Ok(i)` if `key` is entry `i`, else `Err(i)` with `i` the insertion point.
    #[cfg(test)]
    fn search(&self, key: &[u8]) -> Result<usize, usize> {
        self.search_q(&Query::new(key))
    }

    /// Searches for a prepared query: `Ok(i)` if it is entry `i`, else `Err(i)` with `i`
    /// the insertion point.
    ///
    /// Written to avoid branches on data that is still arriving from memory (node
    /// length, prefix length, heads): a mispredicted branch there throws away the
    /// work the CPU does ahead on the next lookup while this node's cache misses are
    /// outstanding.
    #[inline]
    fn search_q(&self, q: &Query<'_>) -> Result<usize, usize> {
        let cpn = self.cp_len as usize;
        let key = q.key;
        let (h, rest) = if cpn <= 8 && key.len() >= cpn {
            // Prefix check and head extraction on the query's first 16 bytes.
            let mut c = [0u8; 8];
            c.copy_from_slice(&self.cp_inline[..8]);
            let c = u128::from(u64::from_be_bytes(c)) << 64;
            let bits = 8 * cpn as u32;
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            if (q.k16 ^ c) & mask != 0 {
                return self.outside(key);
            }
            let r = ((q.k16 << bits) >> 64) as u64;
            let rest_len = key.len() - cpn;
            ((r & !0xff) | rest_len.min(8) as u64, &key[cpn..])
        } else {
            let cp = self.cp();
            let Some(rest) = strip_prefix(key, cp) else {
                return self.outside(key);
            };
            (head_of(rest), rest)
        };
        let mut i = lower_bound(&self.heads, h);
        if h & 0xff != LONG {
            return if i < N && self.heads[i] == h {
                Ok(i)
            } else {
                Err(i)
            };
        }
        let n = self.len();
        let t = &rest[7..];
        while i < n && self.heads[i] == h {
            match self.tail(i).cmp(t) {
                Ordering::Less => i += 1,
                Ordering::Equal => return Ok(i),
                Ordering::Greater => return Err(i),
            }
        }
        Err(i)
    }

    /// Insertion point of a key that does not start with this block's common prefix.
    #[cold]
    fn outside(&self, key: &[u8]) -> Result<usize, usize> {
        // Every entry starts with cp, so all of them compare like cp does.
        Err(if key < self.cp() { 0 } else { self.len() })
    }

    /// Appends the full key of entry `i` to `out`.
    fn write_key<S: ByteSink>(&self, i: usize, out: &mut S) {
        out.put(self.cp());
        let h = self.heads[i];
        let b = h.to_be_bytes();
        let n = (h & 0xff) as usize;
        if n < 8 {
            out.put(&b[..n]);
        } else {
            out.put(&b[..7]);
            out.put(self.tail(i));
        }
    }

    fn key(&self, i: usize) -> Key {
        let h = self.heads[i];
        let n = (h & 0xff) as usize;
        let cpn = self.cp_len as usize;
        if n < 8 && cpn <= 16 {
            // Short key: inline prefix and head bytes, assembled with fixed-size copies.
            let mut b = [0u8; 24];
            b[..16].copy_from_slice(&self.cp_inline[..16]);
            b[cpn..cpn + 8].copy_from_slice(&h.to_be_bytes());
            return Key(SmallVec::from_buf_and_len(b, cpn + n));
        }
        let mut k = SmallVec::new();
        self.write_key(i, &mut k);
        Key(k)
    }

    fn push_tail(&mut self, tail: &[u8]) -> u32 {
        let o = to_u32(self.buf.len());
        write_varint(&mut self.buf, tail.len());
        self.buf.extend_from_slice(tail);
        o
    }

    /// Encodes `key` (which starts with cp) as (head, meta), appending its tail if any.
    fn encode(&mut self, key: &[u8]) -> (u64, u32) {
        let rest = &key[self.cp_len as usize..];
        let h = head_of(rest);
        let m = if rest.len() >= 8 {
            self.push_tail(&rest[7..])
        } else {
            0
        };
        (h, m)
    }

    /// Inserts `key` at position `i` (the caller guarantees order and room).
    fn insert_at(&mut self, i: usize, key: &[u8]) {
        let n = self.len();
        debug_assert!(n < N && i <= n);
        if n == 0 {
            self.buf.clear();
            self.garbage = 0;
            self.set_cp(key);
        } else if !key.starts_with(self.cp()) {
            self.recode(lcp(key, self.cp()));
        }
        let (h, m) = self.encode(key);
        self.heads.copy_within(i..n, i + 1);
        self.heads[i] = h;
        if h & 0xff == LONG && self.meta.is_empty() {
            self.meta = vec![0; n];
        }
        if !self.meta.is_empty() {
            self.meta.insert(i, m);
        }
        self.len += 1;
    }

    /// Inserts the sorted keys `kl[lo..hi]` at position `at` (the caller guarantees
    /// order and room). Only re-encodes existing entries if the common prefix shrinks.
    fn insert_many(&mut self, at: usize, kl: &KeyList, lo: usize, hi: usize) {
        let n = self.len();
        let k = hi - lo;
        debug_assert!(n + k <= N && at <= n);
        if k == 0 {
            return;
        }
        if n == 0 {
            self.assign(kl, lo, hi);
            return;
        }
        // Keys between two that start with cp start with it too.
        let (first, last) = (kl.get(lo), kl.get(hi - 1));
        if !first.starts_with(self.cp()) || !last.starts_with(self.cp()) {
            let l = lcp(first, self.cp()).min(lcp(last, self.cp()));
            self.recode(l);
        }
        self.heads.copy_within(at..n, at + k);
        let mut metas = [0u32; N];
        let mut any_long = false;
        for (j, x) in (lo..hi).enumerate() {
            let (h, m) = self.encode(kl.get(x));
            self.heads[at + j] = h;
            metas[j] = m;
            any_long |= h & 0xff == LONG;
        }
        if any_long && self.meta.is_empty() {
            self.meta = vec![0; n];
        }
        if !self.meta.is_empty() {
            let tail = self.meta.split_off(at);
            self.meta.extend_from_slice(&metas[..k]);
            self.meta.extend_from_slice(&tail);
        }
        self.len += to_u32(k);
    }

    /// Re-encodes every entry with a shorter common prefix of `cp_len` bytes.
    fn recode(&mut self, cp_len: usize) {
        let kl = KeyList::of(self);
        self.assign_cp(&kl, 0, kl.len(), cp_len);
    }

    /// Re-encodes with the longest common prefix if the current one is so short that
    /// neighbouring entries tie on their heads (which makes searches compare tails).
    fn extend_cp_if_ties(&mut self) {
        let n = self.len();
        if (1..n).any(|i| self.heads[i] == self.heads[i - 1]) {
            let kl = KeyList::of(self);
            self.assign(&kl, 0, n);
        }
    }

    /// Removes entry `i`.
    fn remove_at(&mut self, i: usize) {
        self.remove_range(i, i + 1);
    }

    /// Removes entries `[a, b)`.
    fn remove_range(&mut self, a: usize, b: usize) {
        let n = self.len();
        for i in a..b {
            if self.heads[i] & 0xff == LONG {
                let o = self.meta[i] as usize;
                let (l, p) = read_varint(&self.buf, o);
                self.garbage += to_u32(p + l - o);
            }
        }
        self.heads.copy_within(b..n, a);
        if !self.meta.is_empty() {
            self.meta.drain(a..b);
        }
        let k = b - a;
        self.heads[n - k..n].fill(EMPTY);
        self.len -= to_u32(k);
        if self.len == 0 {
            self.buf = Vec::new();
            self.meta = Vec::new();
            self.cp_len = 0;
            self.cp_inline = [0; CP_INLINE];
            self.garbage = 0;
        } else if self.garbage > 64 && self.garbage as usize * 2 > self.buf.len() {
            self.compact();
        }
    }

    /// Replaces entry `i` with `key` (which must keep the order).
    fn replace(&mut self, i: usize, key: &[u8]) {
        self.remove_at(i);
        self.insert_at(i, key);
    }

    /// Drops garbage tail bytes.
    fn compact(&mut self) {
        let live = self.buf.len() - self.garbage as usize;
        let mut nb = Vec::with_capacity(live);
        nb.extend_from_slice(&self.buf[..self.cp_in_buf()]);
        for i in 0..self.len() {
            if self.heads[i] & 0xff == LONG {
                let o = self.meta[i] as usize;
                let (l, p) = read_varint(&self.buf, o);
                self.meta[i] = to_u32(nb.len());
                nb.extend_from_slice(&self.buf[o..p + l]);
            }
        }
        self.buf = nb;
        self.garbage = 0;
    }

    /// Rebuilds this block from `kl[lo..hi]` (sorted), with the longest common prefix.
    fn assign(&mut self, kl: &KeyList, lo: usize, hi: usize) {
        let cp = if hi > lo {
            lcp(kl.get(lo), kl.get(hi - 1))
        } else {
            0
        };
        self.assign_cp(kl, lo, hi, cp);
    }

    /// Rebuilds this block from `kl[lo..hi]` (sorted, all sharing `cp_len` bytes).
    fn assign_cp(&mut self, kl: &KeyList, lo: usize, hi: usize, cp_len: usize) {
        let n = hi - lo;
        debug_assert!(n <= N);
        self.len = 0;
        self.garbage = 0;
        self.heads = [EMPTY; N];
        self.meta = Vec::new();
        if n == 0 {
            self.buf = Vec::new();
            self.cp_len = 0;
            self.cp_inline = [0; CP_INLINE];
            return;
        }
        let mut need = if cp_len > CP_INLINE { cp_len } else { 0 };
        let mut longs = 0;
        for k in lo..hi {
            let l = kl.get(k).len() - cp_len;
            if l >= 8 {
                need += varint_len(l - 7) + l - 7;
                longs += 1;
            }
        }
        if longs > 0 {
            self.meta = Vec::with_capacity(n);
        }
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        if buf.capacity() > need * 2 + 64 {
            buf = Vec::new();
        }
        buf.reserve_exact(need);
        self.buf = buf;
        self.set_cp(&kl.get(lo)[..cp_len]);
        for (j, k) in (lo..hi).enumerate() {
            let (h, m) = self.encode(kl.get(k));
            self.heads[j] = h;
            if longs > 0 {
                self.meta.push(m);
            }
        }
        self.len = to_u32(n);
    }

    /// Heap bytes owned.
    fn heap_bytes(&self) -> usize {
        self.buf.capacity() + self.meta.capacity() * std::mem::size_of::<u32>()
    }
}

// ---------------------------------------------------------------------------------------
// Nodes and arenas

/// A leaf. Its first cache line holds the value vector, the links, the key count and
/// the inline common prefix: everything a lookup needs before reading heads and value.
///
/// Values are stored in arrival order, not key order: entry `i` (in key order) has its
/// value at `vals[slot[i]]`. An insert appends its value and shifts only heads and slot
/// bytes; a removal swap-removes its value and renumbers the one slot that pointed at
/// the moved last value. Splits, merges and rebalancing first put values back in key
/// order ([`Self::sort_vals`]), so the code that moves entries between leaves works on
/// sorted values.
#[derive(Clone)]
#[repr(C, align(64))]
struct Leaf<V, const L: usize> {
    vals: Vec<V>,
    prev: u32,
    next: u32,
    keys: KeyBlock<L>,
    /// `slot[i]`: index in `vals` of the value of entry `i`. Unused bytes are unspecified.
    slot: [u8; L],
}

impl<V, const L: usize> Leaf<V, L> {
    /// `slot` of a leaf whose values are in key order.
    const IDENTITY: [u8; L] = {
        assert!(L <= 256);
        let mut a = [0u8; L];
        let mut i = 0;
        while i < L {
            a[i] = i as u8;
            i += 1;
        }
        a
    };

    fn new() -> Self {
        Leaf {
            keys: KeyBlock::new(),
            vals: Vec::new(),
            prev: NIL,
            next: NIL,
            slot: Self::IDENTITY,
        }
    }

    fn len(&self) -> usize {
        self.keys.len()
    }

    /// Index in `vals` of the value of entry `i`.
    #[inline]
    fn slot(&self, i: usize) -> usize {
        usize::from(self.slot[i])
    }

    /// The value of entry `i`.
    #[inline]
    fn val(&self, i: usize) -> &V {
        &self.vals[self.slot(i)]
    }

    /// The value of entry `i`.
    #[inline]
    fn val_mut(&mut self, i: usize) -> &mut V {
        let s = self.slot(i);
        &mut self.vals[s]
    }

    /// Starts loading the slot bytes (a lookup needs one right after the head search),
    /// so that they arrive together with the heads rather than after them.
    #[inline]
    fn touch_slots(&self) {
        std::hint::black_box(self.slot[L - 1]);
    }

    fn insert(&mut self, pos: usize, key: &[u8], v: V) {
        let n = self.len();
        self.keys.insert_at(pos, key);
        if self.vals.len() == self.vals.capacity() {
            let grow = VAL_GROW.min(L - self.vals.len()).max(1);
            self.vals.reserve_exact(grow);
        }
        self.slot.copy_within(pos..n, pos + 1);
        self.slot[pos] = n as u8;
        self.vals.push(v);
    }

    /// Removes entry `i`, returning its value.
    fn remove(&mut self, i: usize) -> V {
        let n = self.len();
        let s = self.slot(i);
        self.keys.remove_at(i);
        self.slot.copy_within(i + 1..n, i);
        let last = n - 1;
        if s != last {
            // The last value moves into the freed place: renumber its slot.
            if let Some(j) = self.slot[..last]
                .iter()
                .position(|&x| usize::from(x) == last)
            {
                self.slot[j] = s as u8;
            }
        }
        let v = self.vals.swap_remove(s);
        fit_vals(&mut self.vals);
        v
    }

    /// Puts the values in key order (`slot` becomes the identity).
    fn sort_vals(&mut self) {
        let n = self.len();
        // Value for position i is at original index p[i]; originals already moved
        // below i are found by following p (the standard in-place permutation).
        let p = self.slot;
        for i in 0..n {
            let mut k = usize::from(p[i]);
            while k < i {
                k = usize::from(p[k]);
            }
            self.vals.swap(i, k);
        }
        self.slot = Self::IDENTITY;
    }
}

/// The shortest separator between two non-empty neighbouring leaves.
fn leaf_sep<V, const L: usize>(l: &Leaf<V, L>, r: &Leaf<V, L>) -> KeyBuf {
    let mut a = KeyBuf::new();
    let mut b = KeyBuf::new();
    l.keys.write_key(l.len() - 1, &mut a);
    r.keys.write_key(0, &mut b);
    shortest_sep(&a, &b)
}

/// Keeps a value vector's spare capacity bounded.
fn fit_vals<V>(v: &mut Vec<V>) {
    if v.capacity() > v.len() + 2 * VAL_GROW {
        v.shrink_to(v.len() + VAL_GROW);
    }
}

#[derive(Clone)]
#[repr(C, align(64))]
struct Inner<const I: usize> {
    /// At most `I - 1` separators (the last head slot always stays [`EMPTY`]).
    keys: KeyBlock<I>,
    children: [u32; I],
}

impl<const I: usize> Inner<I> {
    fn new() -> Self {
        Inner {
            keys: KeyBlock::new(),
            children: [NIL; I],
        }
    }

    fn nchildren(&self) -> usize {
        self.keys.len() + 1
    }

    /// Index of the child whose range contains `key`.
    #[inline]
    fn child_index(&self, q: &Query<'_>) -> usize {
        match self.keys.search_q(q) {
            Ok(i) => i + 1,
            Err(i) => i,
        }
    }
}

/// A node type with a cheap placeholder value (owning no heap memory) for free slots.
trait Blank {
    fn blank() -> Self;
    /// Heap bytes owned beyond `size_of::<Self>()`.
    fn heap_bytes(&self) -> usize;
}

impl<V, const L: usize> Blank for Leaf<V, L> {
    fn blank() -> Self {
        Leaf::new()
    }
    fn heap_bytes(&self) -> usize {
        self.keys.heap_bytes() + self.vals.capacity() * std::mem::size_of::<V>()
    }
}

impl<const I: usize> Blank for Inner<I> {
    fn blank() -> Self {
        Inner::new()
    }
    fn heap_bytes(&self) -> usize {
        self.keys.heap_bytes()
    }
}

/// Nodes addressed by `u32`, stored in chunks of [`CHUNK`] so that reaching a node is
/// an index computation off a small, always-cached chunk table (no per-node pointer to
/// chase). Freed slots hold a [`Blank`] node and are reused through a free list; the
/// tree compacts its arenas when most slots are free (see `KeyTree::maybe_compact`).
#[derive(Clone)]
struct Arena<T> {
    chunks: Vec<Vec<T>>,
    free: Vec<u32>,
    live: usize,
}

impl<T: Blank> Arena<T> {
    const fn new() -> Self {
        Arena {
            chunks: Vec::new(),
            free: Vec::new(),
            live: 0,
        }
    }

    #[inline]
    fn get(&self, id: u32) -> &T {
        let id = id as usize;
        match self.chunks.get(id / CHUNK).and_then(|c| c.get(id % CHUNK)) {
            Some(t) => t,
            None => dangling(id),
        }
    }

    #[inline]
    fn get_mut(&mut self, id: u32) -> &mut T {
        let i = id as usize;
        match self
            .chunks
            .get_mut(i / CHUNK)
            .and_then(|c| c.get_mut(i % CHUNK))
        {
            Some(t) => t,
            None => dangling(i),
        }
    }

    fn alloc(&mut self, t: T) -> u32 {
        self.live += 1;
        if let Some(id) = self.free.pop() {
            *self.get_mut(id) = t;
            return id;
        }
        let full = self.chunks.last().is_none_or(|c| c.len() == CHUNK);
        if full {
            // Chunks grow by doubling up to CHUNK slots, so small trees stay small.
            self.chunks.push(Vec::new());
        }
        let n = self.chunks.len();
        let mut id = (n - 1) * CHUNK;
        if let Some(c) = self.chunks.last_mut() {
            id += c.len();
            c.push(t);
        }
        if id >= NIL as usize {
            too_big();
        }
        id as u32
    }

    /// Takes a node out temporarily (to borrow it alongside another); see [`Self::put`].
    fn take(&mut self, id: u32) -> T {
        std::mem::replace(self.get_mut(id), T::blank())
    }

    fn put(&mut self, id: u32, t: T) {
        *self.get_mut(id) = t;
    }

    /// Frees a node, returning its contents.
    fn release(&mut self, id: u32) -> T {
        self.free.push(id);
        self.live -= 1;
        self.take(id)
    }

    /// Slots in use or free.
    fn slots(&self) -> usize {
        self.chunks.iter().map(Vec::len).sum()
    }

    fn memory_usage(&self) -> usize {
        let mut total = self.chunks.capacity() * std::mem::size_of::<Vec<T>>()
            + self.free.capacity() * std::mem::size_of::<u32>();
        for c in &self.chunks {
            total += c.capacity() * std::mem::size_of::<T>();
            total += c.iter().map(T::heap_bytes).sum::<usize>();
        }
        total
    }
}

// ---------------------------------------------------------------------------------------
// Tree: the implementation, generic over node capacities (tests use tiny nodes to get
// deep trees from a few thousand keys).

/// A B+tree with leaves of `L` entries and inner nodes of `I` children.
#[derive(Clone)]
struct Tree<V, const L: usize, const I: usize> {
    leaves: Arena<Leaf<V, L>>,
    inners: Arena<Inner<I>>,
    /// Root node: a leaf when `height == 0`, else an inner node; `NIL` when empty.
    root: u32,
    /// Number of inner levels.
    height: u32,
    len: usize,
}

impl<V, const L: usize, const I: usize> Tree<V, L, I> {
    /// A non-root leaf with fewer entries is merged or rebalanced with a sibling.
    const LEAF_MIN: usize = L / 4;
    /// Two sibling leaves are merged (rather than rebalanced) when they fit in this many.
    const LEAF_MERGE_MAX: usize = L * 3 / 4;
    /// A non-root inner node with fewer children is merged or rebalanced with a sibling.
    const INNER_MIN: usize = I / 4;
    /// Two sibling inner nodes are merged when their children fit in this many.
    const INNER_MERGE_MAX: usize = I * 3 / 4;
    /// Searches work on blocks of 8 heads (one cache line) and runs of 64.
    const SHAPE: () = assert!(
        L >= 8
            && L.is_multiple_of(8)
            && (L <= 64 || L.is_multiple_of(64))
            && I >= 8
            && I.is_multiple_of(8)
            && (I <= 64 || I.is_multiple_of(64))
    );

    const fn new() -> Self {
        let () = Self::SHAPE;
        Tree {
            leaves: Arena::new(),
            inners: Arena::new(),
            root: NIL,
            height: 0,
            len: 0,
        }
    }

    /// Number of entries.
    fn len(&self) -> usize {
        self.len
    }

    /// Whether the map has no entries.
    fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Removes every entry and frees all memory.
    fn clear(&mut self) {
        *self = Self::new();
    }

    /// Approximate heap bytes owned by the map's structure: nodes, key bytes and value
    /// slots (`size_of::<V>()` each, including spare capacity), excluding allocator
    /// overhead and any heap memory owned by the values themselves. Walks every node.
    fn memory_usage(&self) -> usize {
        self.leaves.memory_usage() + self.inners.memory_usage()
    }

    /// Rebuilds the arenas when fewer than a quarter of their slots are in use, so
    /// memory is returned as the tree shrinks. Amortised O(1) per removal.
    fn maybe_compact(&mut self) {
        let sparse = |live: usize, slots: usize| slots >= 4 * CHUNK && live * 4 < slots;
        if sparse(self.leaves.live, self.leaves.slots())
            || sparse(self.inners.live, self.inners.slots())
        {
            self.compact();
        }
    }

    /// Moves every node into fresh arenas in key order and relinks the leaves.
    fn compact(&mut self) {
        if self.root == NIL {
            return;
        }
        let mut leaves = Arena::new();
        let mut inners = Arena::new();
        self.root = self.relocate(self.root, self.height, &mut leaves, &mut inners);
        let n = leaves.slots();
        for i in 0..n {
            let l = leaves.get_mut(i as u32);
            l.prev = if i == 0 { NIL } else { i as u32 - 1 };
            l.next = if i + 1 < n { i as u32 + 1 } else { NIL };
        }
        self.leaves = leaves;
        self.inners = inners;
    }

    fn relocate(
        &mut self,
        id: u32,
        level: u32,
        leaves: &mut Arena<Leaf<V, L>>,
        inners: &mut Arena<Inner<I>>,
    ) -> u32 {
        if level == 0 {
            return leaves.alloc(self.leaves.take(id));
        }
        let mut node = self.inners.take(id);
        for c in 0..node.nchildren() {
            node.children[c] = self.relocate(node.children[c], level - 1, leaves, inners);
        }
        inners.alloc(node)
    }

    /// The leaf whose range contains `key` (the tree must be non-empty).
    #[inline]
    fn find_leaf(&self, q: &Query<'_>) -> u32 {
        let mut id = self.root;
        for _ in 0..self.height {
            let n = self.inners.get(id);
            id = n.children[n.child_index(q)];
        }
        id
    }

    /// Like [`Self::find_leaf`], recording (inner node, child index) per level.
    fn find_leaf_path(&self, q: &Query<'_>, path: &mut Path) -> u32 {
        let mut id = self.root;
        for _ in 0..self.height {
            let n = self.inners.get(id);
            let c = n.child_index(q);
            path.push((id, c as u32));
            id = n.children[c];
        }
        id
    }

    /// A reference to the value of `key`.
    fn get(&self, key: &[u8]) -> Option<&V> {
        if self.root == NIL {
            return None;
        }
        let q = Query::new(key);
        let leaf = self.leaves.get(self.find_leaf(&q));
        leaf.touch_slots();
        match leaf.keys.search_q(&q) {
            Ok(i) => Some(leaf.val(i)),
            Err(_) => None,
        }
    }

    /// A mutable reference to the value of `key`.
    fn get_mut(&mut self, key: &[u8]) -> Option<&mut V> {
        if self.root == NIL {
            return None;
        }
        let q = Query::new(key);
        let lid = self.find_leaf(&q);
        let leaf = self.leaves.get_mut(lid);
        leaf.touch_slots();
        match leaf.keys.search_q(&q) {
            Ok(i) => Some(leaf.val_mut(i)),
            Err(_) => None,
        }
    }

    /// Inserts `key -> value`, returning the previous value of `key` if any.
    fn insert(&mut self, key: &[u8], value: V) -> Option<V> {
        if self.root == NIL {
            self.root = self.leaves.alloc(Leaf::new());
        }
        let q = Query::new(key);
        let mut path = Path::new();
        let lid = self.find_leaf_path(&q, &mut path);
        let leaf = self.leaves.get_mut(lid);
        match leaf.keys.search_q(&q) {
            Ok(i) => Some(std::mem::replace(leaf.val_mut(i), value)),
            Err(pos) => {
                self.insert_new(&mut path, lid, pos, key, value);
                None
            }
        }
    }

    /// The value of `key`, inserting `f()` first if absent. Descends the tree once.
    fn get_or_insert_with(&mut self, key: &[u8], f: impl FnOnce() -> V) -> &mut V {
        if self.root == NIL {
            self.root = self.leaves.alloc(Leaf::new());
        }
        let q = Query::new(key);
        let mut path = Path::new();
        let lid = self.find_leaf_path(&q, &mut path);
        let (lid, i) = match self.leaves.get(lid).keys.search_q(&q) {
            Ok(i) => (lid, i),
            Err(pos) => self.insert_new(&mut path, lid, pos, key, f()),
        };
        self.leaves.get_mut(lid).val_mut(i)
    }

    /// Removes `key`, returning its value if it was present.
    fn remove(&mut self, key: &[u8]) -> Option<V> {
        if self.root == NIL {
            return None;
        }
        let q = Query::new(key);
        let mut path = Path::new();
        let lid = self.find_leaf_path(&q, &mut path);
        let leaf = self.leaves.get_mut(lid);
        let i = leaf.keys.search_q(&q).ok()?;
        let v = leaf.remove(i);
        let remaining = leaf.len();
        self.len -= 1;
        if self.len == 0 {
            self.clear();
        } else if remaining < Self::LEAF_MIN {
            self.leaf_underflow(&mut path, lid);
            self.maybe_compact();
        }
        Some(v)
    }

    /// Entries with keys in `(lo, hi)`, ascending (reversible with `.rev()`). An empty or
    /// inverted interval yields nothing.
    fn range<'a>(&'a self, lo: Bound<&[u8]>, hi: Bound<&[u8]>) -> Iter<'a, V, L, I> {
        let end = (NIL, 0);
        if self.root == NIL || bounds_empty(lo, hi) {
            return Iter {
                tree: self,
                front: end,
                back: end,
            };
        }
        let front = match lo {
            Bound::Unbounded => self.first_pos(),
            Bound::Included(k) => self.lower_pos(k, false),
            Bound::Excluded(k) => self.lower_pos(k, true),
        };
        let back = match hi {
            Bound::Unbounded => end,
            Bound::Included(k) => self.lower_pos(k, true),
            Bound::Excluded(k) => self.lower_pos(k, false),
        };
        Iter {
            tree: self,
            front,
            back,
        }
    }

    /// All entries, ascending.
    fn iter(&self) -> Iter<'_, V, L, I> {
        self.range(Bound::Unbounded, Bound::Unbounded)
    }

    /// The smallest key `>= key`.
    fn first_key_at_or_after(&self, key: &[u8]) -> Option<Key> {
        if self.root == NIL {
            return None;
        }
        let (lid, i) = self.lower_pos(key, false);
        (lid != NIL).then(|| self.leaves.get(lid).keys.key(i as usize))
    }

    /// Position of the first entry `>= key` (`> key` if `after_equal`), normalised.
    fn lower_pos(&self, key: &[u8], after_equal: bool) -> (u32, u32) {
        let q = Query::new(key);
        let lid = self.find_leaf(&q);
        let i = match self.leaves.get(lid).keys.search_q(&q) {
            Ok(i) if after_equal => i + 1,
            Ok(i) | Err(i) => i,
        };
        self.normalize(lid, i)
    }

    /// `(leaf, i)` with `i < leaf.len`, or `(NIL, 0)` past the end.
    fn normalize(&self, lid: u32, i: usize) -> (u32, u32) {
        let leaf = self.leaves.get(lid);
        if i < leaf.len() {
            (lid, i as u32)
        } else {
            (leaf.next, 0)
        }
    }

    fn first_pos(&self) -> (u32, u32) {
        let mut id = self.root;
        for _ in 0..self.height {
            id = self.inners.get(id).children[0];
        }
        self.normalize(id, 0)
    }

    fn last_leaf(&self) -> u32 {
        let mut id = self.root;
        for _ in 0..self.height {
            let n = self.inners.get(id);
            id = n.children[n.keys.len()];
        }
        id
    }

    // ---- insertion ------------------------------------------------------------------

    /// Inserts a new key at `pos` of leaf `lid` (reached via `path`); returns where the
    /// entry ended up.
    fn insert_new(
        &mut self,
        path: &mut Path,
        lid: u32,
        pos: usize,
        key: &[u8],
        value: V,
    ) -> (u32, usize) {
        self.len += 1;
        let n = self.leaves.get(lid).len();
        if n < L {
            self.leaves.get_mut(lid).insert(pos, key, value);
            return (lid, pos);
        }
        // Split at the insertion point when appending/prepending, else in the middle.
        let m = if pos == n {
            n
        } else if pos == 0 {
            0
        } else {
            n / 2
        };
        let rid = self.split_leaf(lid, m);
        let (tid, tpos) = if pos <= m && m < n {
            (lid, pos)
        } else {
            (rid, pos - m)
        };
        self.leaves.get_mut(tid).insert(tpos, key, value);
        let sep = leaf_sep(self.leaves.get(lid), self.leaves.get(rid));
        self.insert_into_parent(path, sep, rid);
        (tid, tpos)
    }

    /// Splits leaf `lid`: it keeps entries `[0, m)`, a new right sibling (returned) gets
    /// `[m, n)`. Either side may be left empty for the caller to insert into.
    fn split_leaf(&mut self, lid: u32, m: usize) -> u32 {
        let left = self.leaves.get_mut(lid);
        let n = left.len();
        let mut right = Leaf::new();
        right.prev = lid;
        right.next = left.next;
        if m == 0 {
            std::mem::swap(&mut left.keys, &mut right.keys);
            std::mem::swap(&mut left.vals, &mut right.vals);
            std::mem::swap(&mut left.slot, &mut right.slot);
        } else if m < n {
            left.sort_vals();
            let kl = KeyList::of_range(&left.keys, m, n);
            right.keys.assign(&kl, 0, kl.len());
            left.keys.remove_range(m, n);
            left.keys.extend_cp_if_ties();
            right.vals = left.vals.split_off(m);
            fit_vals(&mut left.vals);
        }
        let next = right.next;
        let rid = self.leaves.alloc(right);
        self.leaves.get_mut(lid).next = rid;
        if next != NIL {
            self.leaves.get_mut(next).prev = rid;
        }
        rid
    }

    /// Inserts separator `sep` and its right child `right` into the parent at the end of
    /// `path`, splitting upwards as needed.
    fn insert_into_parent(&mut self, path: &mut Path, mut sep: KeyBuf, mut right: u32) {
        loop {
            let Some((pid, c)) = path.pop() else {
                let mut root = Inner::new();
                root.keys.insert_at(0, &sep);
                root.children[0] = self.root;
                root.children[1] = right;
                self.root = self.inners.alloc(root);
                self.height += 1;
                return;
            };
            let c = c as usize;
            let p = self.inners.get_mut(pid);
            let nk = p.keys.len();
            if nk < I - 1 {
                p.keys.insert_at(c, &sep);
                p.children.copy_within(c + 1..nk + 1, c + 2);
                p.children[c + 1] = right;
                return;
            }
            (sep, right) = self.split_inner(pid, c, &sep, right);
        }
    }

    /// Inserts (`sep` at key index `c`, `child` at child index `c + 1`) into the full
    /// inner node `pid` by splitting it; returns the promoted key and the new right node.
    fn split_inner(&mut self, pid: u32, c: usize, sep: &[u8], child: u32) -> (KeyBuf, u32) {
        let p = self.inners.get_mut(pid);
        let nk = p.keys.len();
        let mut kl = KeyList::with_capacity(nk + 1);
        for i in 0..c {
            kl.push_from(&p.keys, i);
        }
        kl.push(sep);
        for i in c..nk {
            kl.push_from(&p.keys, i);
        }
        let mut ch = vec![NIL; I + 1];
        ch[..=c].copy_from_slice(&p.children[..=c]);
        ch[c + 1] = child;
        ch[c + 2..].copy_from_slice(&p.children[c + 1..]);
        let t = nk + 1;
        let mid = if c == nk {
            nk
        } else if c == 0 {
            0
        } else {
            t / 2
        };
        p.keys.assign(&kl, 0, mid);
        p.children = [NIL; I];
        p.children[..=mid].copy_from_slice(&ch[..=mid]);
        let mut r = Inner::new();
        r.keys.assign(&kl, mid + 1, t);
        r.children[..t - mid].copy_from_slice(&ch[mid + 1..]);
        let promote = KeyBuf::from_slice(kl.get(mid));
        (promote, self.inners.alloc(r))
    }

    // ---- rebalancing ------------------------------------------------------------------

    /// Moves entries between leaves `children[j]` and `children[j + 1]` of `pid` so the
    /// left one has `t` entries, and updates their separator.
    fn balance_leaves(&mut self, pid: u32, j: usize, t: usize) {
        let p = self.inners.get(pid);
        let (aid, bid) = (p.children[j], p.children[j + 1]);
        let mut b = self.leaves.take(bid);
        let a = self.leaves.get_mut(aid);
        let (na, nb) = (a.len(), b.len());
        debug_assert!(t > 0 && t < na + nb);
        a.sort_vals();
        b.sort_vals();
        if t > na {
            // Move b's first k entries to the end of a.
            let k = t - na;
            let kl = KeyList::of_range(&b.keys, 0, k);
            a.keys.insert_many(na, &kl, 0, k);
            b.keys.remove_range(0, k);
            b.keys.extend_cp_if_ties();
            a.vals.reserve_exact(k);
            a.vals.extend(b.vals.drain(..k));
            fit_vals(&mut b.vals);
        } else if t < na {
            // Move a's last k entries to the front of b.
            let k = na - t;
            let kl = KeyList::of_range(&a.keys, t, na);
            b.keys.insert_many(0, &kl, 0, k);
            a.keys.remove_range(t, na);
            a.keys.extend_cp_if_ties();
            let mut moved = Vec::with_capacity(nb + k);
            moved.extend(a.vals.drain(t..));
            moved.append(&mut b.vals);
            b.vals = moved;
            fit_vals(&mut a.vals);
        }
        let sep = leaf_sep(a, &b);
        self.leaves.put(bid, b);
        self.inners.get_mut(pid).keys.replace(j, &sep);
    }

    /// Merges leaf `children[j + 1]` of `pid` into `children[j]`.
    fn merge_leaves(&mut self, pid: u32, j: usize) {
        let p = self.inners.get(pid);
        let (aid, bid) = (p.children[j], p.children[j + 1]);
        let mut b = self.leaves.release(bid);
        let a = self.leaves.get_mut(aid);
        a.sort_vals();
        b.sort_vals();
        let kl = KeyList::of(&b.keys);
        a.keys.insert_many(a.len(), &kl, 0, kl.len());
        a.vals.reserve_exact(b.vals.len());
        a.vals.append(&mut b.vals);
        a.next = b.next;
        if b.next != NIL {
            self.leaves.get_mut(b.next).prev = aid;
        }
        self.remove_sep_and_right_child(pid, j);
    }

    /// Removes key `j` and child `j + 1` of inner node `pid`.
    fn remove_sep_and_right_child(&mut self, pid: u32, j: usize) {
        let p = self.inners.get_mut(pid);
        let nk = p.keys.len();
        p.keys.remove_at(j);
        p.children.copy_within(j + 2..=nk, j + 1);
        p.children[nk] = NIL;
    }

    fn unlink_leaf(&mut self, lid: u32) {
        let l = self.leaves.get(lid);
        let (prev, next) = (l.prev, l.next);
        if prev != NIL {
            self.leaves.get_mut(prev).next = next;
        }
        if next != NIL {
            self.leaves.get_mut(next).prev = prev;
        }
    }

    /// Leaf `lid` (reached via `path`) dropped below [`Self::LEAF_MIN`] entries.
    fn leaf_underflow(&mut self, path: &mut Path, lid: u32) {
        let Some(&(pid, c)) = path.last() else {
            return; // the root leaf may be arbitrarily small
        };
        let c = c as usize;
        if self.leaves.get(lid).len() == 0 {
            self.unlink_leaf(lid);
            self.leaves.release(lid);
            self.drop_child(path);
            return;
        }
        let p = self.inners.get(pid);
        let nc = p.nchildren();
        if nc == 1 {
            // No sibling to merge with: rebalance the parent so it gets one.
            path.pop();
            self.inner_underflow(path, pid);
            return;
        }
        let j = if c + 1 < nc { c } else { c - 1 };
        let na = self.leaves.get(p.children[j]).len();
        let nb = self.leaves.get(p.children[j + 1]).len();
        if na + nb <= Self::LEAF_MERGE_MAX {
            self.merge_leaves(pid, j);
            path.pop();
            self.inner_underflow(path, pid);
        } else {
            self.balance_leaves(pid, j, (na + nb) / 2);
        }
    }

    /// The child at the end of `path` was freed: remove it from its parent.
    fn drop_child(&mut self, path: &mut Path) {
        loop {
            let Some((pid, c)) = path.pop() else {
                // Only reachable if the whole tree was one chain to an empty leaf.
                debug_assert_eq!(self.len, 0);
                self.clear();
                return;
            };
            let c = c as usize;
            let p = self.inners.get_mut(pid);
            let nk = p.keys.len();
            if nk == 0 {
                // `pid` lost its only child: it goes too.
                self.inners.release(pid);
                continue;
            }
            p.keys.remove_at(c.saturating_sub(1));
            p.children.copy_within(c + 1..=nk, c);
            p.children[nk] = NIL;
            self.inner_underflow(path, pid);
            return;
        }
    }

    /// Inner node `id` (reached via `path`, which excludes it) may have too few children.
    fn inner_underflow(&mut self, path: &mut Path, mut id: u32) {
        loop {
            let Some((gid, c)) = path.pop() else {
                self.collapse_root();
                return;
            };
            if self.inners.get(id).nchildren() >= Self::INNER_MIN {
                return;
            }
            let c = c as usize;
            let g = self.inners.get(gid);
            let gnc = g.nchildren();
            if gnc > 1 {
                let j = if c + 1 < gnc { c } else { c - 1 };
                let na = self.inners.get(g.children[j]).nchildren();
                let nb = self.inners.get(g.children[j + 1]).nchildren();
                if na + nb > Self::INNER_MERGE_MAX {
                    self.balance_inners(gid, j, (na + nb) / 2);
                    return;
                }
                self.merge_inners(gid, j);
            }
            id = gid;
        }
    }

    /// While the root is an inner node with a single child, make that child the root.
    fn collapse_root(&mut self) {
        while self.height > 0 {
            let r = self.inners.get(self.root);
            if r.keys.len() > 0 {
                return;
            }
            let child = r.children[0];
            self.inners.release(self.root);
            self.root = child;
            self.height -= 1;
        }
    }

    /// Collects the keys of inner siblings `a`, `sep`, `b` into one list.
    fn inner_pair_keys(a: &Inner<I>, sep: &[u8], b: &Inner<I>) -> KeyList {
        let mut kl = KeyList::with_capacity(a.keys.len() + b.keys.len() + 1);
        kl.push_all(&a.keys);
        kl.push(sep);
        kl.push_all(&b.keys);
        kl
    }

    /// Merges inner node `children[j + 1]` of `gid` into `children[j]`.
    fn merge_inners(&mut self, gid: u32, j: usize) {
        let g = self.inners.get(gid);
        let (aid, bid) = (g.children[j], g.children[j + 1]);
        let mut sep = KeyBuf::new();
        g.keys.write_key(j, &mut sep);
        let b = self.inners.release(bid);
        let a = self.inners.get_mut(aid);
        let (na, nb) = (a.nchildren(), b.nchildren());
        let kl = Self::inner_pair_keys(a, &sep, &b);
        a.keys.assign(&kl, 0, kl.len());
        a.children[na..na + nb].copy_from_slice(&b.children[..nb]);
        self.remove_sep_and_right_child(gid, j);
    }

    /// Moves children between inner siblings `children[j]`, `children[j + 1]` of `gid`
    /// so the left one has `t` children.
    fn balance_inners(&mut self, gid: u32, j: usize, t: usize) {
        let g = self.inners.get(gid);
        let (aid, bid) = (g.children[j], g.children[j + 1]);
        let mut sep = KeyBuf::new();
        g.keys.write_key(j, &mut sep);
        let mut b = self.inners.take(bid);
        let a = self.inners.get_mut(aid);
        let (na, nb) = (a.nchildren(), b.nchildren());
        let total = na + nb;
        debug_assert!(t > 0 && t < total);
        let kl = Self::inner_pair_keys(a, &sep, &b);
        let mut ch = vec![NIL; 2 * I];
        ch[..na].copy_from_slice(&a.children[..na]);
        ch[na..total].copy_from_slice(&b.children[..nb]);
        a.keys.assign(&kl, 0, t - 1);
        a.children = [NIL; I];
        a.children[..t].copy_from_slice(&ch[..t]);
        b.keys.assign(&kl, t, kl.len());
        b.children = [NIL; I];
        b.children[..total - t].copy_from_slice(&ch[t..total]);
        self.inners.put(bid, b);
        let new_sep = KeyBuf::from_slice(kl.get(t - 1));
        self.inners.get_mut(gid).keys.replace(j, &new_sep);
    }
}

/// Whether `(lo, hi)` is empty or inverted as an interval.
fn bounds_empty(lo: Bound<&[u8]>, hi: Bound<&[u8]>) -> bool {
    match (lo, hi) {
        (Bound::Included(a), Bound::Included(b)) => a > b,
        (Bound::Included(a) | Bound::Excluded(a), Bound::Included(b) | Bound::Excluded(b)) => {
            a >= b
        }
        _ => false,
    }
}

// ---------------------------------------------------------------------------------------
// Iteration

/// Iterator over a [`Tree`] between two positions.
struct Iter<'a, V, const L: usize, const I: usize> {
    tree: &'a Tree<V, L, I>,
    /// Next entry to yield from the front (normalised position).
    front: (u32, u32),
    /// One past the next entry to yield from the back (normalised position).
    back: (u32, u32),
}

impl<V, const L: usize, const I: usize> Clone for Iter<'_, V, L, I> {
    fn clone(&self) -> Self {
        Iter {
            tree: self.tree,
            front: self.front,
            back: self.back,
        }
    }
}

impl<'a, V, const L: usize, const I: usize> Iterator for Iter<'a, V, L, I> {
    type Item = (Key, &'a V);

    fn next(&mut self) -> Option<Self::Item> {
        if self.front == self.back || self.front.0 == NIL {
            return None;
        }
        let (lid, i) = self.front;
        let leaf = self.tree.leaves.get(lid);
        let i = i as usize;
        let item = (leaf.keys.key(i), leaf.val(i));
        self.front = if i + 1 < leaf.len() {
            (lid, i as u32 + 1)
        } else {
            (leaf.next, 0)
        };
        Some(item)
    }
}

impl<V, const L: usize, const I: usize> DoubleEndedIterator for Iter<'_, V, L, I> {
    fn next_back(&mut self) -> Option<Self::Item> {
        if self.front == self.back {
            return None;
        }
        let (lid, i) = self.back;
        let leaves = &self.tree.leaves;
        let (lid, i) = if lid == NIL {
            let l = self.tree.last_leaf();
            (l, leaves.get(l).len())
        } else if i == 0 {
            let p = leaves.get(lid).prev;
            if p == NIL {
                return None;
            }
            (p, leaves.get(p).len())
        } else {
            (lid, i as usize)
        };
        let i = i.checked_sub(1)?;
        self.back = (lid, i as u32);
        let leaf = leaves.get(lid);
        Some((leaf.keys.key(i), leaf.val(i)))
    }
}

// ---------------------------------------------------------------------------------------
// Public API

/// An ordered map from byte-string keys to values, ordered like `&[u8]`: the MVCC key
/// index.
///
/// See the [module documentation](self) for the layout and the measurements behind it.
#[derive(Clone)]
pub struct KeyTree<V>(Tree<V, LEAF_CAP, INNER_CAP>);

impl<V> Default for KeyTree<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V: fmt::Debug> fmt::Debug for KeyTree<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<V> KeyTree<V> {
    /// An empty map (allocates nothing).
    pub const fn new() -> Self {
        KeyTree(Tree::new())
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the map has no entries.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Removes every entry and frees all memory.
    pub fn clear(&mut self) {
        self.0.clear();
    }

    /// Approximate heap bytes owned by the map's structure: nodes, key bytes and value
    /// slots (`size_of::<V>()` each, including spare capacity), excluding allocator
    /// overhead and any heap memory owned by the values themselves. Walks every node.
    pub fn memory_usage(&self) -> usize {
        self.0.memory_usage()
    }

    /// A reference to the value of `key`.
    pub fn get(&self, key: &[u8]) -> Option<&V> {
        self.0.get(key)
    }

    /// Whether `key` is present.
    pub fn contains_key(&self, key: &[u8]) -> bool {
        self.0.get(key).is_some()
    }

    /// A mutable reference to the value of `key`.
    pub fn get_mut(&mut self, key: &[u8]) -> Option<&mut V> {
        self.0.get_mut(key)
    }

    /// Inserts `key -> value`, returning the previous value of `key` if any.
    pub fn insert(&mut self, key: &[u8], value: V) -> Option<V> {
        self.0.insert(key, value)
    }

    /// The value of `key`, inserting `f()` first if absent. Descends the tree once.
    pub fn get_or_insert_with(&mut self, key: &[u8], f: impl FnOnce() -> V) -> &mut V {
        self.0.get_or_insert_with(key, f)
    }

    /// Removes `key`, returning its value if it was present.
    pub fn remove(&mut self, key: &[u8]) -> Option<V> {
        self.0.remove(key)
    }

    /// Entries with keys in `(lo, hi)` (std `Bound` semantics), ascending; `.rev()`
    /// descends. An empty or inverted interval yields nothing (it does not panic).
    pub fn range<'a>(&'a self, lo: Bound<&[u8]>, hi: Bound<&[u8]>) -> Range<'a, V> {
        Range(self.0.range(lo, hi))
    }

    /// All entries, ascending.
    pub fn iter(&self) -> Range<'_, V> {
        Range(self.0.iter())
    }

    /// The smallest key `>= key`.
    pub fn first_key_at_or_after(&self, key: &[u8]) -> Option<Key> {
        self.0.first_key_at_or_after(key)
    }
}

/// An iterator over a key range of a [`KeyTree`], ascending; `.rev()` descends.
pub struct Range<'a, V>(Iter<'a, V, LEAF_CAP, INNER_CAP>);

impl<V> Clone for Range<'_, V> {
    fn clone(&self) -> Self {
        Range(self.0.clone())
    }
}

impl<V> fmt::Debug for Range<'_, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Range")
            .field("front", &self.0.front)
            .field("back", &self.0.back)
            .finish_non_exhaustive()
    }
}

impl<'a, V> Iterator for Range<'a, V> {
    type Item = (Key, &'a V);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        self.0.next()
    }
}

impl<V> DoubleEndedIterator for Range<'_, V> {
    #[inline]
    fn next_back(&mut self) -> Option<Self::Item> {
        self.0.next_back()
    }
}

impl<V> FusedIterator for Range<'_, V> {}

impl<'a, V> IntoIterator for &'a KeyTree<V> {
    type Item = (Key, &'a V);
    type IntoIter = Range<'a, V>;
    fn into_iter(self) -> Range<'a, V> {
        self.iter()
    }
}

// ---------------------------------------------------------------------------------------
// Tests

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// The production shape.
    type Prod<V> = Tree<V, LEAF_CAP, INNER_CAP>;
    /// Tiny nodes: a few thousand keys make a tree four or five levels deep, so inner
    /// splits, merges, rebalancing and root collapses all happen.
    type Tiny<V> = Tree<V, 8, 8>;

    impl<const N: usize> KeyBlock<N> {
        fn check(&self) {
            let n = self.len();
            assert!(n <= N);
            assert!(
                self.heads[n..].iter().all(|&h| h == EMPTY),
                "unused heads not EMPTY"
            );
            assert!(self.heads[..n].iter().all(|&h| h & 0xff <= LONG));
            let longs = self.heads[..n].iter().any(|&h| h & 0xff == LONG);
            assert!(self.meta.len() == n || (self.meta.is_empty() && !longs));
            if self.cp_len as usize <= CP_INLINE {
                assert!(self.cp_inline[self.cp_len as usize..]
                    .iter()
                    .all(|&b| b == 0));
            }
            // Garbage is accounted exactly and compacted once it dominates the buffer.
            let live: usize = (0..n)
                .filter(|&i| self.heads[i] & 0xff == LONG)
                .map(|i| {
                    let o = self.meta[i] as usize;
                    let (l, p) = read_varint(&self.buf, o);
                    p + l - o
                })
                .sum();
            assert_eq!(
                self.buf.len(),
                self.cp_in_buf() + live + self.garbage as usize
            );
            assert!(self.garbage <= 64 || self.garbage as usize * 2 <= self.buf.len());
            let mut k = Vec::new();
            for i in 0..n {
                k.clear();
                self.write_key(i, &mut k);
                assert!(k.starts_with(self.cp()));
                assert_eq!(self.key(i).as_bytes(), k.as_slice());
            }
        }
    }

    impl<V, const L: usize, const I: usize> Tree<V, L, I> {
        /// Checks every structural invariant; returns (leaves, inner nodes).
        fn check(&self) -> (usize, usize) {
            if self.root == NIL {
                assert_eq!(self.len, 0);
                assert_eq!(self.leaves.live, 0);
                assert_eq!(self.inners.live, 0);
                return (0, 0);
            }
            let mut order = Vec::new();
            let mut inners = 0;
            let mut count = 0;
            self.check_node(
                self.root,
                self.height,
                None,
                None,
                &mut order,
                &mut inners,
                &mut count,
            );
            assert_eq!(count, self.len);
            assert_eq!(order.len(), self.leaves.live, "leaked or lost leaves");
            assert_eq!(inners, self.inners.live, "leaked or lost inner nodes");
            assert_eq!(
                self.leaves.free.len() + self.leaves.live,
                self.leaves.slots()
            );
            assert_eq!(
                self.inners.free.len() + self.inners.live,
                self.inners.slots()
            );
            // The leaf chain visits the leaves in key order, both ways.
            let mut prev = NIL;
            for &l in &order {
                assert_eq!(self.leaves.get(l).prev, prev);
                if prev != NIL {
                    assert_eq!(self.leaves.get(prev).next, l);
                }
                prev = l;
            }
            assert_eq!(self.leaves.get(prev).next, NIL);
            (order.len(), inners)
        }

        #[allow(clippy::too_many_arguments)]
        fn check_node(
            &self,
            id: u32,
            level: u32,
            lo: Option<&[u8]>,
            hi: Option<&[u8]>,
            order: &mut Vec<u32>,
            inners: &mut usize,
            count: &mut usize,
        ) {
            let in_fences = |k: &[u8]| lo.is_none_or(|lo| k >= lo) && hi.is_none_or(|hi| k < hi);
            if level == 0 {
                let l = self.leaves.get(id);
                l.keys.check();
                assert_eq!(l.vals.len(), l.len());
                let mut seen = [false; 256];
                for &x in &l.slot[..l.len()] {
                    assert!(
                        usize::from(x) < l.len() && !seen[usize::from(x)],
                        "bad slots"
                    );
                    seen[usize::from(x)] = true;
                }
                assert!(l.len() <= L);
                if self.height > 0 {
                    assert!(l.len() > 0, "empty non-root leaf");
                }
                assert!(l.vals.capacity() <= l.len() + 2 * VAL_GROW + VAL_GROW);
                let mut last: Option<Vec<u8>> = None;
                for i in 0..l.len() {
                    let k = l.keys.key(i).to_vec();
                    assert!(in_fences(&k), "key {k:?} outside fences {lo:?}..{hi:?}");
                    assert_eq!(l.keys.search(&k), Ok(i));
                    if let Some(p) = &last {
                        assert!(*p < k, "leaf keys out of order");
                    }
                    last = Some(k);
                }
                *count += l.len();
                order.push(id);
                return;
            }
            *inners += 1;
            let n = self.inners.get(id);
            n.keys.check();
            let nk = n.keys.len();
            assert!(nk < I);
            let keys: Vec<Vec<u8>> = (0..nk).map(|i| n.keys.key(i).to_vec()).collect();
            for (i, k) in keys.iter().enumerate() {
                assert!(lo.is_none_or(|lo| k.as_slice() > lo));
                assert!(hi.is_none_or(|hi| k.as_slice() < hi));
                assert_eq!(n.keys.search(k), Ok(i));
                if i > 0 {
                    assert!(keys[i - 1] < *k, "separators out of order");
                }
            }
            for c in 0..=nk {
                let clo = if c == 0 {
                    lo
                } else {
                    Some(keys[c - 1].as_slice())
                };
                let chi = if c == nk {
                    hi
                } else {
                    Some(keys[c].as_slice())
                };
                self.check_node(n.children[c], level - 1, clo, chi, order, inners, count);
            }
            for c in nk + 1..I {
                assert_eq!(n.children[c], NIL);
            }
        }

        /// Fraction of leaf slots in use.
        fn fill(&self) -> f64 {
            self.len() as f64 / (self.leaves.live * L) as f64
        }
    }

    fn model_range(
        m: &BTreeMap<Vec<u8>, u32>,
        lo: &Bound<Vec<u8>>,
        hi: &Bound<Vec<u8>>,
    ) -> Vec<(Vec<u8>, u32)> {
        m.iter()
            .filter(|(k, _)| match lo {
                Bound::Included(b) => *k >= b,
                Bound::Excluded(b) => *k > b,
                Bound::Unbounded => true,
            })
            .filter(|(k, _)| match hi {
                Bound::Included(b) => *k <= b,
                Bound::Excluded(b) => *k < b,
                Bound::Unbounded => true,
            })
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    fn as_ref(b: &Bound<Vec<u8>>) -> Bound<&[u8]> {
        match b {
            Bound::Included(k) => Bound::Included(k.as_slice()),
            Bound::Excluded(k) => Bound::Excluded(k.as_slice()),
            Bound::Unbounded => Bound::Unbounded,
        }
    }

    fn collect<'a>(r: impl Iterator<Item = (Key, &'a u32)>) -> Vec<(Vec<u8>, u32)> {
        r.map(|(k, v)| (k.to_vec(), *v)).collect()
    }

    fn assert_same<const L: usize, const I: usize>(
        t: &Tree<u32, L, I>,
        m: &BTreeMap<Vec<u8>, u32>,
    ) {
        assert_eq!(t.len(), m.len());
        let want: Vec<(Vec<u8>, u32)> = m.iter().map(|(k, v)| (k.clone(), *v)).collect();
        assert_eq!(collect(t.iter()), want);
    }

    /// The production-sized and the tiny-node tree both hold their invariants and the
    /// model's entries.
    fn check_both(t: &Prod<u32>, u: &Tiny<u32>, m: &BTreeMap<Vec<u8>, u32>) {
        t.check();
        u.check();
        assert_same(t, m);
        assert_same(u, m);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(Vec<u8>, u32),
        Remove(Vec<u8>),
        Get(Vec<u8>),
        GetOrInsert(Vec<u8>, u32),
        Range(Bound<Vec<u8>>, Bound<Vec<u8>>),
        FirstAtOrAfter(Vec<u8>),
    }

    /// Short keys over {0x00, 0x01, 'a', 0xff}: constant prefix ties, 8-byte
    /// boundaries and zero-padding ambiguities.
    fn small_key(max_len: usize) -> impl Strategy<Value = Vec<u8>> + Clone {
        prop::collection::vec(prop::sample::select(vec![0u8, 1, b'a', 0xff]), 0..=max_len)
    }

    /// Keys sharing long prefixes (etcd style), so common prefixes and tails are used.
    fn prefixed_key() -> impl Strategy<Value = Vec<u8>> + Clone {
        (
            prop::sample::select(vec![
                &b""[..],
                &b"/registry/pods/default/"[..],
                &b"/registry/pods/kube-system/"[..],
                &b"/registry/\0\0\0\0\0\0\0\0"[..],
                &b"/registry/"[..],
            ]),
            small_key(12),
        )
            .prop_map(|(p, s)| [p, s.as_slice()].concat())
    }

    fn bound(k: impl Strategy<Value = Vec<u8>> + Clone) -> impl Strategy<Value = Bound<Vec<u8>>> {
        prop_oneof![
            k.clone().prop_map(Bound::Included),
            k.prop_map(Bound::Excluded),
            Just(Bound::Unbounded),
        ]
    }

    fn op(
        k: impl Strategy<Value = Vec<u8>> + Clone,
        range_weight: u32,
    ) -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (k.clone(), any::<u32>()).prop_map(|(k, v)| Op::Insert(k, v)),
            4 => k.clone().prop_map(Op::Remove),
            2 => k.clone().prop_map(Op::Get),
            2 => (k.clone(), any::<u32>()).prop_map(|(k, v)| Op::GetOrInsert(k, v)),
            range_weight => (bound(k.clone()), bound(k.clone())).prop_map(|(a, b)| Op::Range(a, b)),
            1 => k.prop_map(Op::FirstAtOrAfter),
        ]
    }

    /// Mostly inserts first (so the tree grows), then `churn` as generated.
    fn grow_then(grow: Vec<Op>, churn: Vec<Op>) -> Vec<Op> {
        grow.into_iter()
            .map(|o| match o {
                Op::Remove(k) => Op::Insert(k, 7),
                o => o,
            })
            .chain(churn)
            .collect()
    }

    /// Applies `ops` to a tree and the model, comparing every answer and the length;
    /// every `full_every` ops (and at the end) compares full iteration and checks the
    /// invariants. Finally removes every key (checking along the way). Returns the
    /// greatest height reached.
    fn run<const L: usize, const I: usize>(ops: &[Op], full_every: usize) -> u32 {
        let mut t = Tree::<u32, L, I>::new();
        let mut m = BTreeMap::new();
        let mut height = 0;
        for (n, o) in ops.iter().enumerate() {
            match o {
                Op::Insert(k, v) => assert_eq!(t.insert(k, *v), m.insert(k.clone(), *v)),
                Op::Remove(k) => assert_eq!(t.remove(k), m.remove(k)),
                Op::Get(k) => {
                    assert_eq!(t.get(k), m.get(k));
                    assert_eq!(t.get_mut(k).copied(), m.get(k).copied());
                }
                Op::GetOrInsert(k, v) => {
                    let got = t.get_or_insert_with(k, || *v);
                    let want = m.entry(k.clone()).or_insert(*v);
                    assert_eq!(*got, *want);
                    *got = got.wrapping_add(1);
                    *want = want.wrapping_add(1);
                }
                Op::Range(lo, hi) => {
                    let want = model_range(&m, lo, hi);
                    assert_eq!(collect(t.range(as_ref(lo), as_ref(hi))), want);
                    let mut back = collect(t.range(as_ref(lo), as_ref(hi)).rev());
                    back.reverse();
                    assert_eq!(back, want);
                    // Alternate ends.
                    let mut r = t.range(as_ref(lo), as_ref(hi));
                    let (mut f, mut b) = (Vec::new(), Vec::new());
                    loop {
                        match r.next() {
                            Some((k, v)) => f.push((k.to_vec(), *v)),
                            None => break,
                        }
                        match r.next_back() {
                            Some((k, v)) => b.push((k.to_vec(), *v)),
                            None => break,
                        }
                    }
                    assert!(r.next().is_none() && r.next_back().is_none());
                    b.reverse();
                    f.extend(b);
                    assert_eq!(f, want);
                }
                Op::FirstAtOrAfter(k) => {
                    let want = m.range(k.clone()..).next().map(|(k, _)| k.clone());
                    assert_eq!(t.first_key_at_or_after(k).map(|k| k.to_vec()), want);
                }
            }
            assert_eq!(t.len(), m.len());
            height = height.max(t.height);
            if n % full_every == 0 {
                assert_same(&t, &m);
                t.check();
            }
        }
        assert_same(&t, &m);
        t.check();
        let c = t.clone();
        assert_same(&c, &m);
        c.check();
        let keys: Vec<Vec<u8>> = m.keys().cloned().collect();
        for (n, k) in keys.iter().enumerate() {
            assert_eq!(t.remove(k), m.remove(k));
            if n % full_every == 0 {
                assert_same(&t, &m);
                t.check();
            }
        }
        t.check();
        assert!(t.is_empty());
        height
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(160))]

        #[test]
        fn prop_matches_btreemap_small(ops in prop::collection::vec(op(small_key(12), 2), 0..400)) {
            run::<LEAF_CAP, INNER_CAP>(&ops, 1);
            run::<8, 8>(&ops, 1);
        }

        #[test]
        fn prop_matches_btreemap_prefixed(ops in prop::collection::vec(op(prefixed_key(), 2), 0..400)) {
            run::<LEAF_CAP, INNER_CAP>(&ops, 1);
            run::<8, 8>(&ops, 1);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(12))]

        /// Thousands of keys: nodes split, merge and the tree gets several levels deep.
        #[test]
        fn prop_matches_btreemap_large(
            grow in prop::collection::vec(op(small_key(12), 1), 4000..8000),
            churn in prop::collection::vec(op(small_key(12), 1), 2000..4000),
        ) {
            let ops = grow_then(grow, churn);
            prop_assert!(run::<8, 8>(&ops, 97) >= 3);
            prop_assert!(run::<16, 16>(&ops, 97) >= 2);
            prop_assert!(run::<LEAF_CAP, INNER_CAP>(&ops, 97) >= 1);
        }

        #[test]
        fn prop_matches_btreemap_large_prefixed(
            grow in prop::collection::vec(op(prefixed_key(), 1), 4000..8000),
            churn in prop::collection::vec(op(prefixed_key(), 1), 2000..4000),
        ) {
            let ops = grow_then(grow, churn);
            prop_assert!(run::<8, 8>(&ops, 97) >= 3);
            prop_assert!(run::<LEAF_CAP, INNER_CAP>(&ops, 97) >= 1);
        }
    }

    #[test]
    fn lower_bound_matches_a_linear_count() {
        fn check<const N: usize>(seed: u64) {
            let mut s = seed | 1;
            for n in 0..=N {
                let mut heads = [EMPTY; N];
                for h in heads.iter_mut().take(n) {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    *h = (s % 64) << 8;
                }
                heads[..n].sort_unstable();
                for probe in 0..66u64 {
                    let h = probe << 8 | 3;
                    let want = heads.iter().filter(|&&x| x < h).count();
                    assert_eq!(lower_bound(&heads, h), want, "N={N} n={n} h={h:#x}");
                }
            }
        }
        check::<8>(1);
        check::<16>(2);
        check::<64>(3);
        check::<192>(4);
    }

    #[test]
    fn query_prefix_matches_the_key() {
        let key: Vec<u8> = (1..=20).collect();
        for len in 0..=20 {
            let k = &key[..len];
            let mut b = [0u8; 16];
            b[..len.min(16)].copy_from_slice(&k[..len.min(16)]);
            assert_eq!(Query::new(k).k16, u128::from_be_bytes(b), "len {len}");
        }
    }

    fn k8(i: u64) -> [u8; 8] {
        i.to_be_bytes()
    }

    fn spread(i: u64) -> [u8; 8] {
        i.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes()
    }

    /// Deterministic pseudo-random permutation of 0..n.
    fn shuffled(n: u64, seed: u64) -> Vec<u64> {
        let mut v: Vec<u64> = (0..n).collect();
        let mut s = seed | 1;
        for i in (1..v.len()).rev() {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            v.swap(i, (s % (i as u64 + 1)) as usize);
        }
        v
    }

    /// 100k ascending inserts, then removal in `order` down to empty, checking that
    /// memory is handed back while the tree shrinks and entirely at the end.
    fn ascending_then_remove<const L: usize, const I: usize>(order: &[u64]) {
        let n = order.len() as u64;
        let mut t = Tree::<u64, L, I>::new();
        for i in 0..n {
            assert_eq!(t.insert(&k8(i), i), None);
        }
        let (leaves, _) = t.check();
        assert!(t.fill() > 0.99, "ascending fill {}", t.fill());
        assert!(leaves <= (n as usize).div_ceil(L) + 1);
        let peak = t.memory_usage();
        for (j, &i) in order.iter().enumerate() {
            assert_eq!(t.remove(&k8(i)), Some(i));
            assert_eq!(t.remove(&k8(i)), None);
            if j % 5000 == 0 {
                t.check();
            }
            let left = order.len() - j - 1;
            if left == 1000 {
                // Memory is returned as the tree shrinks, not only when it empties.
                let (leaves, inners) = t.check();
                let min = Tree::<u64, L, I>::LEAF_MIN;
                assert!(leaves <= 1000 / min + 1, "{leaves} leaves for 1000 keys");
                assert!(inners <= leaves + 1);
                let now = t.memory_usage();
                assert!(now * 10 < peak, "{now} bytes for 1000 keys, {peak} at 100k");
            }
        }
        assert!(t.is_empty());
        t.check();
        assert_eq!(t.leaves.slots(), 0);
        assert_eq!(t.memory_usage(), 0);
    }

    #[test]
    fn ascending_inserts_then_ascending_removal() {
        let order: Vec<u64> = (0..100_000).collect();
        ascending_then_remove::<LEAF_CAP, INNER_CAP>(&order);
        ascending_then_remove::<8, 8>(&order);
    }

    #[test]
    fn ascending_inserts_then_descending_removal() {
        let order: Vec<u64> = (0..100_000).rev().collect();
        ascending_then_remove::<LEAF_CAP, INNER_CAP>(&order);
        ascending_then_remove::<8, 8>(&order);
    }

    #[test]
    fn ascending_inserts_then_random_removal() {
        let order = shuffled(100_000, 42);
        ascending_then_remove::<LEAF_CAP, INNER_CAP>(&order);
        ascending_then_remove::<8, 8>(&order);
    }

    #[test]
    fn descending_inserts_fill_nodes() {
        let mut t = Prod::new();
        for i in (0..50_000u64).rev() {
            t.insert(&k8(i), i);
        }
        t.check();
        assert!(t.fill() > 0.99, "descending fill {}", t.fill());
        assert!(t.iter().map(|(_, v)| *v).eq(0..50_000));
        assert!(t.iter().rev().map(|(_, v)| *v).eq((0..50_000).rev()));
    }

    #[test]
    fn random_inserts_fill_and_lookups() {
        let mut t = Prod::new();
        let keys = shuffled(100_000, 7);
        for &i in &keys {
            t.insert(&spread(i), i);
        }
        t.check();
        // Random-order B-tree fill oscillates (roughly 60% to 85%) with the tree size.
        assert!(t.fill() > 0.55, "random-order fill {}", t.fill());
        for i in 0..100_000u64 {
            assert_eq!(t.get(&spread(i)), Some(&i));
        }
        assert_eq!(t.get(&k8(1)), None);
        // Half the keys removed at random, then re-inserted.
        for &i in &keys[..50_000] {
            assert_eq!(t.remove(&spread(i)), Some(i));
        }
        t.check();
        for &i in &keys[..50_000] {
            t.insert(&spread(i), i);
        }
        t.check();
        assert_eq!(t.len(), 100_000);
    }

    #[test]
    fn tiny_nodes_random_churn() {
        let mut t = Tiny::new();
        let mut m = BTreeMap::new();
        let keys = shuffled(20_000, 9);
        for (j, &i) in keys.iter().enumerate() {
            t.insert(&spread(i), i as u32);
            m.insert(spread(i).to_vec(), i as u32);
            if j % 3 == 0 {
                let r = spread(keys[j / 2]);
                assert_eq!(t.remove(&r), m.remove(r.as_slice()));
            }
        }
        t.check();
        assert!(t.height >= 4);
        assert_same(&t, &m);
        for &i in keys.iter().rev() {
            assert_eq!(t.remove(&spread(i)), m.remove(spread(i).as_slice()));
            if i % 1000 == 0 {
                t.check();
            }
        }
        t.check();
        assert!(t.is_empty());
    }

    #[test]
    fn keys_differing_only_after_byte_8() {
        let mut t = Prod::new();
        let mut u = Tiny::new();
        let mut m = BTreeMap::new();
        for i in 0..5_000u32 {
            // 12-byte shared prefix (spanning several heads), then a varying tail.
            let mut k = b"abcdefghijkl".to_vec();
            k.extend_from_slice(&(i.wrapping_mul(2_654_435_761)).to_be_bytes());
            if i % 3 == 0 {
                k.truncate(12 + (i as usize % 4));
            }
            if i % 5 == 0 {
                k.extend_from_slice(&[0; 9]);
            }
            t.insert(&k, i);
            u.insert(&k, i);
            m.insert(k, i);
        }
        check_both(&t, &u, &m);
        for (k, v) in &m {
            assert_eq!(t.get(k), Some(v));
            assert_eq!(u.get(k), Some(v));
        }
        let lo = b"abcdefghijkl\x80".as_slice();
        let want: Vec<_> = m
            .range(lo.to_vec()..)
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        assert_eq!(
            collect(t.range(Bound::Included(lo), Bound::Unbounded)),
            want
        );
        assert_eq!(
            collect(u.range(Bound::Included(lo), Bound::Unbounded)),
            want
        );
    }

    #[test]
    fn long_keys_and_shared_prefixes() {
        let mut t = Prod::new();
        let mut u = Tiny::new();
        let mut m = BTreeMap::new();
        for i in 0..3_000u32 {
            let k = format!(
                "/registry/pods/ns-{}/pod-{:06}-{}",
                i % 7,
                i * 31 % 3000,
                "x".repeat(i as usize % 50)
            )
            .into_bytes();
            t.insert(&k, i);
            u.insert(&k, i);
            m.insert(k, i);
        }
        check_both(&t, &u, &m);
        let keys: Vec<_> = m.keys().cloned().collect();
        for k in keys.iter().step_by(2) {
            assert_eq!(u.remove(k), m.get(k).copied());
            assert_eq!(t.remove(k), m.remove(k));
        }
        check_both(&t, &u, &m);
    }

    #[test]
    fn empty_key_and_zero_padding() {
        let mut t = KeyTree::new();
        assert_eq!(t.get(b""), None);
        assert_eq!(t.insert(b"", 1), None);
        assert_eq!(t.insert(b"\0", 2), None);
        assert_eq!(t.insert(b"\0\0\0\0\0\0\0\0", 3), None);
        assert_eq!(t.insert(b"a", 4), None);
        assert_eq!(t.insert(b"a\0", 5), None);
        assert_eq!(t.insert(b"", 6), Some(1));
        assert_eq!(t.get(b""), Some(&6));
        assert_eq!(t.get(b"\0\0"), None);
        assert!(t.contains_key(b"a\0") && !t.contains_key(b"a\0\0"));
        let keys: Vec<Vec<u8>> = t.iter().map(|(k, _)| k.to_vec()).collect();
        assert_eq!(
            keys,
            vec![
                b"".to_vec(),
                b"\0".to_vec(),
                b"\0\0\0\0\0\0\0\0".to_vec(),
                b"a".to_vec(),
                b"a\0".to_vec()
            ]
        );
        assert_eq!(t.first_key_at_or_after(b"").as_deref(), Some(&b""[..]));
        assert_eq!(
            t.first_key_at_or_after(b"\0\0").as_deref(),
            Some(&b"\0\0\0\0\0\0\0\0"[..])
        );
        assert_eq!(t.first_key_at_or_after(b"b"), None);
        assert_eq!(t.remove(b""), Some(6));
        assert_eq!(t.get(b""), None);
        t.0.check();
    }

    #[test]
    fn empty_and_inverted_ranges() {
        let mut t = KeyTree::new();
        let u: Bound<&[u8]> = Bound::Unbounded;
        assert_eq!(t.range(u, u).count(), 0);
        for i in 0..1000u64 {
            t.insert(&k8(i), i);
        }
        let a = k8(10);
        let b = k8(20);
        fn inc(k: &[u8; 8]) -> Bound<&[u8]> {
            Bound::Included(k.as_slice())
        }
        fn exc(k: &[u8; 8]) -> Bound<&[u8]> {
            Bound::Excluded(k.as_slice())
        }
        assert_eq!(t.range(inc(&b), inc(&a)).count(), 0);
        assert_eq!(t.range(exc(&a), exc(&a)).count(), 0);
        assert_eq!(t.range(inc(&a), exc(&a)).count(), 0);
        assert_eq!(t.range(exc(&a), inc(&a)).count(), 0);
        assert_eq!(t.range(inc(&a), inc(&a)).count(), 1);
        assert_eq!(t.range(exc(&a), exc(&b)).count(), 9);
        assert_eq!(t.range(inc(&a), inc(&b)).rev().count(), 11);
        assert_eq!(t.range(u, u).count(), 1000);
        assert_eq!(t.range(u, u).rev().count(), 1000);
        assert_eq!((&t).into_iter().count(), 1000);
    }

    #[test]
    fn get_or_insert_with_clear_and_debug() {
        let mut t: KeyTree<Vec<u32>> = KeyTree::default();
        for i in 0..200u32 {
            t.get_or_insert_with(&[(i % 10) as u8], Vec::new).push(i);
        }
        assert_eq!(t.len(), 10);
        assert_eq!(t.get(&[3]).map(Vec::len), Some(20));
        assert!(t.memory_usage() > 0);
        t.clear();
        assert!(t.is_empty() && t.get(&[3]).is_none());
        assert_eq!(t.memory_usage(), 0);
        let mut s = KeyTree::new();
        s.insert(b"a\x01", 1u8);
        assert_eq!(format!("{s:?}"), "{b\"a\\x01\": 1}");
    }
}
