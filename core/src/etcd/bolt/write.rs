//! Bulk-writing a bbolt file in one pass: top-level buckets in name order, keys in order
//! within each, streamed into pages as they come.
//!
//! Memory is one page per tree level: the leaf being filled, and for each branch level
//! the branch page being filled (first key and page id of each child). A full page is
//! written at once, so a bucket of millions of keys costs a few pages of memory. Each
//! tree is written bottom-up: leaves in key order, a branch page whenever one fills, the
//! partial branch pages and the root when the bucket ends. The root bucket (one element
//! per top-level bucket) is built the same way, its pages interleaved with the data's.
//! Then an empty freelist, and last the two metas: a reader that sees the metas sees a
//! complete file.

use std::convert::Infallible;

use super::error::show;
use super::page::{
    Meta, PageHeader, BRANCH_PAGE, BUCKET_HEADER, BUCKET_LEAF, ELEMENT, FREELIST_PAGE, LEAF_PAGE,
    MAX_KEY, MAX_VALUE, PAGE_HEADER,
};
use super::PAGE_SIZE;

/// Where the writer puts the file: random-access writes of whole pages.
///
/// The writer writes data pages at increasing offsets, then the root bucket's last pages
/// and the freelist, then seeks back to write the two metas at offset 0 last. Every page
/// is written in full, so the sink ends up exactly as long as the file.
pub trait PageSink {
    /// What a failed write reports.
    type Error;
    /// Writes `bytes` at `offset`, extending the sink if needed.
    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> Result<(), Self::Error>;
}

impl PageSink for Vec<u8> {
    type Error = Infallible;

    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> Result<(), Infallible> {
        // The writer's offsets stay below i64::MAX (its own bound), so on 64-bit targets
        // this conversion is exact; where it is not, the resize below fails the way any
        // allocation too big for memory does.
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let end = start.saturating_add(bytes.len());
        if self.len() < end {
            self.resize(end, 0);
        }
        if let Some(dst) = self.get_mut(start..end) {
            dst.copy_from_slice(bytes);
        }
        Ok(())
    }
}

/// Why the writer refused a call or failed. Refusals (order, sizes) leave the writer as
/// it was; after a sink failure every later call fails with `Poisoned`.
#[derive(Debug, thiserror::Error)]
pub enum BoltWriteError<E> {
    /// Top-level buckets must come in strictly ascending name order.
    #[error("bbolt writer: bucket {name} is not after the bucket before it ({prev})")]
    BucketOrder {
        /// The refused name, shown.
        name: String,
        /// The previous bucket's name, shown.
        prev: String,
    },
    /// bbolt refuses empty bucket names (`ErrBucketNameRequired`).
    #[error("bbolt writer: bucket name is empty")]
    EmptyBucketName,
    /// A key or bucket name longer than bbolt's `MaxKeySize` (32768).
    #[error("bbolt writer: key of {0} bytes is longer than 32768")]
    KeyTooLarge(usize),
    /// A value longer than bbolt's `MaxValueSize` (2^31 - 2).
    #[error("bbolt writer: value of {0} bytes is longer than 2147483646")]
    ValueTooLarge(usize),
    /// bbolt refuses empty keys (`ErrKeyRequired`).
    #[error("bbolt writer: key is empty")]
    EmptyKey,
    /// `put` before any `bucket`.
    #[error("bbolt writer: put before any bucket")]
    NoBucket,
    /// Keys in a bucket must come in strictly ascending order.
    #[error("bbolt writer: key {key} is not after the key before it in bucket {bucket}")]
    KeyOrder {
        /// The refused key, shown.
        key: String,
        /// The bucket, shown.
        bucket: String,
    },
    /// The file would outgrow the offsets Go's bbolt can address (int64).
    #[error("bbolt writer: the file would pass {} bytes", i64::MAX)]
    TooLarge,
    /// The sink failed to write a page.
    #[error("bbolt writer: writing a page failed: {0}")]
    Sink(E),
    /// An earlier sink failure left the file incomplete.
    #[error("bbolt writer: an earlier page write failed")]
    Poisoned,
}

/// A tree's root once the tree is written.
enum Built {
    /// A page of the file.
    Page(u64),
    /// A whole leaf page small enough to live inside the bucket's value.
    Inline(Vec<u8>),
}

/// The page writer shared by all trees: page ids are handed out in write order.
struct Out<S: PageSink> {
    sink: S,
    /// Next free page id; 0 and 1 are the metas.
    next: u64,
    /// Reused page buffer.
    buf: Vec<u8>,
    poisoned: bool,
}

/// bbolt can address pages up to int64 offsets; the writer stops well before.
const MAX_PAGES: u64 = i64::MAX as u64 / PAGE_SIZE as u64;

fn pages_for(bytes: usize) -> u64 {
    bytes.div_ceil(PAGE_SIZE) as u64
}

impl<S: PageSink> Out<S> {
    /// Reserves `span` pages and returns the first id.
    fn allocate(&mut self, span: u64) -> Result<(u64, u32), BoltWriteError<S::Error>> {
        let overflow =
            u32::try_from(span.saturating_sub(1)).map_err(|_| BoltWriteError::TooLarge)?;
        let id = self.next;
        let end = id
            .checked_add(span)
            .filter(|&e| e <= MAX_PAGES)
            .ok_or(BoltWriteError::TooLarge)?;
        self.next = end;
        Ok((id, overflow))
    }

    fn write(&mut self, offset: u64, bytes: &[u8]) -> Result<(), BoltWriteError<S::Error>> {
        self.sink.write_at(offset, bytes).map_err(|e| {
            self.poisoned = true;
            BoltWriteError::Sink(e)
        })
    }

    /// Writes the page built in `self.buf` (header included, id and overflow filled in
    /// here), zero-padded to whole pages; returns its id.
    fn flush_buf(&mut self) -> Result<u64, BoltWriteError<S::Error>> {
        let span = pages_for(self.buf.len());
        let (id, overflow) = self.allocate(span)?;
        // Every page buffer starts with the header start_page or Leaf::encode put there.
        let header = PageHeader::decode(&self.buf).map(|h| PageHeader { id, overflow, ..h });
        if let (Some(h), Some(dst)) = (header, self.buf.get_mut(..PAGE_HEADER)) {
            dst.copy_from_slice(&h.encode());
        }
        // span * PAGE_SIZE >= buf.len(), and buf is in memory, so this fits in usize.
        self.buf.resize(span as usize * PAGE_SIZE, 0);
        let buf = std::mem::take(&mut self.buf);
        let result = self.write(id * PAGE_SIZE as u64, &buf);
        self.buf = buf;
        result.map(|()| id)
    }
}

/// Starts `buf` as a page header with `flags` and `count` (id and overflow come later).
fn start_page(buf: &mut Vec<u8>, flags: u16, count: usize) {
    buf.clear();
    // Counts stay below what a page (or a single-element overflow page) holds, far under
    // u16::MAX: a leaf page of 4096 bytes holds at most 255 elements.
    let count = u16::try_from(count).unwrap_or(u16::MAX);
    buf.extend_from_slice(
        &PageHeader {
            id: 0,
            flags,
            count,
            overflow: 0,
        }
        .encode(),
    );
}

/// Position of an element's data relative to the element itself, as bbolt stores it.
fn pos(index: usize, count: usize, data_offset: usize) -> u32 {
    let element = PAGE_HEADER + index * ELEMENT;
    let data = PAGE_HEADER + count * ELEMENT + data_offset;
    // Leaf and branch pages of this writer hold at most one element past a page, whose
    // key is at most 32768 bytes, so positions are far below u32::MAX.
    u32::try_from(data - element).unwrap_or(u32::MAX)
}

/// The leaf page being filled.
#[derive(Default)]
struct Leaf {
    /// (flags, key length, value length) per element.
    elems: Vec<(u32, usize, usize)>,
    /// Keys and values, back to back.
    data: Vec<u8>,
}

impl Leaf {
    fn size(&self) -> usize {
        PAGE_HEADER + self.elems.len() * ELEMENT + self.data.len()
    }

    fn first_key(&self) -> &[u8] {
        let len = self.elems.first().map_or(0, |e| e.1);
        self.data.get(..len).unwrap_or_default()
    }

    /// Encodes the page into `buf` (header with id 0, as bbolt leaves it in an inline
    /// bucket's value).
    fn encode(&self, buf: &mut Vec<u8>) {
        let n = self.elems.len();
        start_page(buf, LEAF_PAGE, n);
        let mut off = 0;
        for (i, &(flags, k, v)) in self.elems.iter().enumerate() {
            buf.extend_from_slice(&flags.to_le_bytes());
            buf.extend_from_slice(&pos(i, n, off).to_le_bytes());
            buf.extend_from_slice(&(k as u32).to_le_bytes());
            buf.extend_from_slice(&(v as u32).to_le_bytes());
            off += k + v;
        }
        buf.extend_from_slice(&self.data);
    }
}

/// A branch page being filled: one element per child page.
#[derive(Default)]
struct Branch {
    /// (key length, child page id) per element.
    elems: Vec<(usize, u64)>,
    keys: Vec<u8>,
    /// Pages of this level already written.
    flushed: u64,
}

impl Branch {
    fn size(&self) -> usize {
        PAGE_HEADER + self.elems.len() * ELEMENT + self.keys.len()
    }
}

/// One b+tree being written bottom-up.
#[derive(Default)]
struct Tree {
    leaf: Leaf,
    /// `levels[0]` holds the leaves' parents, `levels[1]` theirs, and so on.
    levels: Vec<Branch>,
    /// Leaf pages already written.
    leaves: u64,
    /// The last key added, for the order check.
    last: Option<Vec<u8>>,
}

impl Tree {
    /// Whether `key` may come next.
    fn accepts(&self, key: &[u8]) -> bool {
        self.last.as_deref().is_none_or(|last| key > last)
    }

    fn push<S: PageSink>(
        &mut self,
        out: &mut Out<S>,
        flags: u32,
        key: &[u8],
        value: &[u8],
    ) -> Result<(), BoltWriteError<S::Error>> {
        let size = ELEMENT + key.len() + value.len();
        if !self.leaf.elems.is_empty() && self.leaf.size() + size > PAGE_SIZE {
            self.flush_leaf(out)?;
        }
        if self.leaf.elems.is_empty() && PAGE_HEADER + size > PAGE_SIZE {
            // An element bigger than a page gets a page with overflow of its own, written
            // straight from the caller's slices rather than copied into the leaf buffer.
            let id = write_big_leaf(out, flags, key, value)?;
            self.leaves += 1;
            self.add_child(out, 0, key, id)?;
        } else {
            self.leaf.elems.push((flags, key.len(), value.len()));
            self.leaf.data.extend_from_slice(key);
            self.leaf.data.extend_from_slice(value);
        }
        let last = self.last.get_or_insert_with(Vec::new);
        last.clear();
        last.extend_from_slice(key);
        Ok(())
    }

    fn flush_leaf<S: PageSink>(
        &mut self,
        out: &mut Out<S>,
    ) -> Result<(), BoltWriteError<S::Error>> {
        let mut buf = std::mem::take(&mut out.buf);
        self.leaf.encode(&mut buf);
        out.buf = buf;
        let id = out.flush_buf()?;
        self.leaves += 1;
        let first = self.leaf.first_key().to_vec();
        self.leaf.elems.clear();
        self.leaf.data.clear();
        self.add_child(out, 0, &first, id)
    }

    /// Adds child page `id`, whose first key is `key`, to branch level `level`, writing
    /// that level's page first if the child would not fit. A branch page always takes
    /// two children before it is written (bbolt's minKeysPerPage), even if huge keys make
    /// it overflow: with fewer, a level of huge keys would never narrow to a root.
    fn add_child<S: PageSink>(
        &mut self,
        out: &mut Out<S>,
        level: usize,
        key: &[u8],
        id: u64,
    ) -> Result<(), BoltWriteError<S::Error>> {
        if self.levels.len() <= level {
            self.levels.resize_with(level + 1, Branch::default);
        }
        let Some(b) = self.levels.get(level) else {
            return Ok(());
        };
        if b.elems.len() >= 2 && b.size() + ELEMENT + key.len() > PAGE_SIZE {
            let (first, page) = self.flush_branch(out, level)?;
            self.add_child(out, level + 1, &first, page)?;
        }
        if let Some(b) = self.levels.get_mut(level) {
            b.elems.push((key.len(), id));
            b.keys.extend_from_slice(key);
        }
        Ok(())
    }

    /// Writes level `level`'s branch page; returns its first key and page id.
    fn flush_branch<S: PageSink>(
        &mut self,
        out: &mut Out<S>,
        level: usize,
    ) -> Result<(Vec<u8>, u64), BoltWriteError<S::Error>> {
        let Some(b) = self.levels.get_mut(level) else {
            return Ok((Vec::new(), 0));
        };
        let n = b.elems.len();
        start_page(&mut out.buf, BRANCH_PAGE, n);
        let mut off = 0;
        for (i, &(k, child)) in b.elems.iter().enumerate() {
            out.buf.extend_from_slice(&pos(i, n, off).to_le_bytes());
            out.buf.extend_from_slice(&(k as u32).to_le_bytes());
            out.buf.extend_from_slice(&child.to_le_bytes());
            off += k;
        }
        out.buf.extend_from_slice(&b.keys);
        let first_len = b.elems.first().map_or(0, |e| e.0);
        let first = b.keys.get(..first_len).unwrap_or_default().to_vec();
        let id = out.flush_buf()?;
        b.elems.clear();
        b.keys.clear();
        b.flushed += 1;
        Ok((first, id))
    }

    /// Writes what is left and returns the root. With `inline`, a tree that never filled
    /// a page and fits in a quarter page is returned as bytes for the bucket's value, as
    /// bbolt inlines small buckets (`Bucket.inlineable`).
    fn finish<S: PageSink>(
        mut self,
        out: &mut Out<S>,
        inline: bool,
    ) -> Result<Built, BoltWriteError<S::Error>> {
        if self.leaves == 0 {
            if inline && self.leaf.size() <= PAGE_SIZE / 4 {
                let mut bytes = Vec::new();
                self.leaf.encode(&mut bytes);
                return Ok(Built::Inline(bytes));
            }
            let mut buf = std::mem::take(&mut out.buf);
            self.leaf.encode(&mut buf);
            out.buf = buf;
            return out.flush_buf().map(Built::Page);
        }
        if !self.leaf.elems.is_empty() {
            self.flush_leaf(out)?;
        }
        // Each level's pages become the next level's elements; a level with more than one
        // element gets written, and the first level down to a single element holds the
        // root. Non-final pages hold two or more elements, so every level is smaller than
        // the one below and this ends.
        let mut level = 0;
        loop {
            // Level 0 exists once a leaf was written, and each pass below adds the next
            // level; a missing one cannot happen, and is refused rather than unwrapped.
            let Some(b) = self.levels.get(level) else {
                return Err(BoltWriteError::TooLarge);
            };
            if b.flushed == 0 && b.elems.len() == 1 {
                return Ok(Built::Page(b.elems.first().map_or(0, |e| e.1)));
            }
            let (first, id) = self.flush_branch(out, level)?;
            self.add_child(out, level + 1, &first, id)?;
            level += 1;
        }
    }
}

/// Writes a leaf page holding one element bigger than a page: header, element, key,
/// value, zero padding to whole pages.
fn write_big_leaf<S: PageSink>(
    out: &mut Out<S>,
    flags: u32,
    key: &[u8],
    value: &[u8],
) -> Result<u64, BoltWriteError<S::Error>> {
    let size = PAGE_HEADER + ELEMENT + key.len() + value.len();
    let span = pages_for(size);
    let (id, overflow) = out.allocate(span)?;
    let mut head = Vec::with_capacity(PAGE_HEADER + ELEMENT + key.len());
    head.extend_from_slice(
        &PageHeader {
            id,
            flags: LEAF_PAGE,
            count: 1,
            overflow,
        }
        .encode(),
    );
    head.extend_from_slice(&flags.to_le_bytes());
    head.extend_from_slice(&pos(0, 1, 0).to_le_bytes());
    head.extend_from_slice(&(key.len() as u32).to_le_bytes());
    head.extend_from_slice(&(value.len() as u32).to_le_bytes());
    head.extend_from_slice(key);
    let offset = id * PAGE_SIZE as u64;
    out.write(offset, &head)?;
    out.write(offset + head.len() as u64, value)?;
    const ZEROS: [u8; PAGE_SIZE] = [0; PAGE_SIZE];
    let pad = (span as usize * PAGE_SIZE - size) % PAGE_SIZE;
    if pad > 0 {
        out.write(offset + size as u64, &ZEROS[..pad])?;
    }
    Ok(id)
}

/// Writes a bbolt file (page size 4096) in one pass. Call [`bucket`](Self::bucket) for
/// each top-level bucket in name order, [`put`](Self::put) its keys in order, then
/// [`finish`](Self::finish).
pub struct BoltWriter<S: PageSink> {
    out: Out<S>,
    /// The root bucket: one element per finished top-level bucket.
    root: Tree,
    /// The bucket being written, and its name.
    current: Option<(Vec<u8>, Tree)>,
}

impl<S: PageSink> BoltWriter<S> {
    /// A writer that puts the file into `sink`.
    pub fn new(sink: S) -> Self {
        BoltWriter {
            out: Out {
                sink,
                next: 2,
                buf: Vec::with_capacity(PAGE_SIZE),
                poisoned: false,
            },
            root: Tree::default(),
            current: None,
        }
    }

    fn usable(&self) -> Result<(), BoltWriteError<S::Error>> {
        if self.out.poisoned {
            return Err(BoltWriteError::Poisoned);
        }
        Ok(())
    }

    /// Starts the next top-level bucket; names strictly ascending (bytewise), else Err.
    /// An empty bucket is fine: a bucket ends when the next one starts or at `finish`.
    pub fn bucket(&mut self, name: &[u8]) -> Result<(), BoltWriteError<S::Error>> {
        self.usable()?;
        if name.is_empty() {
            return Err(BoltWriteError::EmptyBucketName);
        }
        if name.len() > MAX_KEY {
            return Err(BoltWriteError::KeyTooLarge(name.len()));
        }
        if let Some((prev, _)) = &self.current {
            if name <= prev.as_slice() {
                return Err(BoltWriteError::BucketOrder {
                    name: show(name),
                    prev: show(prev),
                });
            }
        }
        self.end_bucket()?;
        self.current = Some((name.to_vec(), Tree::default()));
        Ok(())
    }

    /// Adds a key/value to the current bucket; keys strictly ascending, else Err; key
    /// non-empty, key <= 32768 bytes, value <= 2^31 - 2 bytes (bbolt's limits).
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), BoltWriteError<S::Error>> {
        self.usable()?;
        let Some((name, tree)) = &mut self.current else {
            return Err(BoltWriteError::NoBucket);
        };
        if key.is_empty() {
            return Err(BoltWriteError::EmptyKey);
        }
        if key.len() > MAX_KEY {
            return Err(BoltWriteError::KeyTooLarge(key.len()));
        }
        if value.len() > MAX_VALUE {
            return Err(BoltWriteError::ValueTooLarge(value.len()));
        }
        if !tree.accepts(key) {
            return Err(BoltWriteError::KeyOrder {
                key: show(key),
                bucket: show(name),
            });
        }
        tree.push(&mut self.out, 0, key, value)
    }

    /// Writes the current bucket's remaining pages and its element in the root bucket.
    fn end_bucket(&mut self) -> Result<(), BoltWriteError<S::Error>> {
        let Some((name, tree)) = self.current.take() else {
            return Ok(());
        };
        let mut value = Vec::with_capacity(BUCKET_HEADER);
        match tree.finish(&mut self.out, true)? {
            Built::Page(id) => {
                value.extend_from_slice(&id.to_le_bytes());
                value.extend_from_slice(&0u64.to_le_bytes());
            }
            Built::Inline(page) => {
                // Root 0 marks an inline bucket; its page follows the header.
                value.extend_from_slice(&[0; BUCKET_HEADER]);
                value.extend_from_slice(&page);
            }
        }
        // The root's keys are the bucket names, whose order bucket() checked.
        self.root.push(&mut self.out, BUCKET_LEAF, &name, &value)
    }

    /// Writes branch levels, the root bucket, an empty freelist and both metas (txid 2 in
    /// page 0 and txid 1 in page 1, each page holding the txid that bbolt would have
    /// written there); returns the sink and the file size in bytes (high-water mark *
    /// 4096), which is exactly how much the sink was written.
    pub fn finish(mut self) -> Result<(S, u64), BoltWriteError<S::Error>> {
        self.usable()?;
        self.end_bucket()?;
        let root_tree = std::mem::take(&mut self.root);
        let root = match root_tree.finish(&mut self.out, false)? {
            Built::Page(id) => id,
            // Never: inline is off for the root bucket.
            Built::Inline(_) => return Err(BoltWriteError::TooLarge),
        };
        start_page(&mut self.out.buf, FREELIST_PAGE, 0);
        let freelist = self.out.flush_buf()?;
        let pgid = self.out.next;
        for (page, txid) in [(0u64, 2u64), (1, 1)] {
            let meta = Meta {
                page_size: PAGE_SIZE as u32,
                flags: 0,
                root,
                sequence: 0,
                freelist,
                pgid,
                txid,
            };
            let mut buf = [0u8; PAGE_SIZE];
            buf[..PAGE_HEADER + super::page::META_LEN].copy_from_slice(&meta.encode(page));
            self.out.write(page * PAGE_SIZE as u64, &buf)?;
        }
        Ok((self.out.sink, pgid * PAGE_SIZE as u64))
    }
}
