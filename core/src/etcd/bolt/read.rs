//! Reading a bbolt file held in memory: meta selection as bbolt does it, bucket lookup,
//! and ordered walks that stay bounded on any input (every page is read at most once per
//! walk, trees are at most `MAX_DEPTH` deep, slices are checked against their page).

use super::error::{show, BoltError, Loc};
use super::page::{
    le_u64, LeafElem, Meta, PageHeader, PageView, BUCKET_HEADER, NO_FREELIST, PAGE_HEADER,
};
use super::PAGE_SIZE;

/// No bbolt tree is this deep: with at least two keys per branch page it would need 2^64
/// leaves. The bound keeps a hostile chain of one-element branch pages from costing more
/// than this many steps per descent.
pub(crate) const MAX_DEPTH: usize = 64;
/// Nested buckets are followed this deep (etcd uses none; bbolt allows any depth).
pub(crate) const MAX_NESTING: usize = 16;

/// The file's pages: bytes, page size and high-water mark, all validated by `open`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pages<'a> {
    data: &'a [u8],
    page_size: usize,
    /// High-water mark; `count * page_size <= data.len()` holds.
    count: u64,
}

impl<'a> Pages<'a> {
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The bytes of page `id` and its overflow pages, without looking at its type.
    pub fn span(&self, id: u64) -> Result<(PageHeader, &'a [u8]), BoltError> {
        let pages = self.count;
        if id >= pages {
            return Err(BoltError::PageOutOfRange { id, pages });
        }
        // id < count and count * page_size <= data.len(), so neither overflows.
        let ps = self.page_size as u64;
        let start = id * ps;
        let first = self
            .slice(start, ps)
            .ok_or(BoltError::PageOutOfRange { id, pages })?;
        let h = PageHeader::decode(first).ok_or(BoltError::PageTruncated { loc: Loc::Page(id) })?;
        if h.id != id {
            return Err(BoltError::PageIdMismatch { id, found: h.id });
        }
        let span = u64::from(h.overflow) + 1;
        let overflow = BoltError::OverflowOutOfRange {
            id,
            overflow: h.overflow,
            pages,
        };
        if id.checked_add(span).is_none_or(|end| end > pages) {
            return Err(overflow);
        }
        let bytes = self.slice(start, span * ps).ok_or(overflow)?;
        Ok((h, bytes))
    }

    fn slice(&self, start: u64, len: u64) -> Option<&'a [u8]> {
        let start = usize::try_from(start).ok()?;
        let end = start.checked_add(usize::try_from(len).ok()?)?;
        self.data.get(start..end)
    }

    /// Page `id` as a branch or leaf page.
    pub fn node(&self, id: u64) -> Result<PageView<'a>, BoltError> {
        let (_, bytes) = self.span(id)?;
        let view = PageView::new(Loc::Page(id), bytes)?;
        if !view.is_branch() && !view.is_leaf() {
            return Err(BoltError::PageType {
                loc: view.loc,
                flags: view.flags,
            });
        }
        Ok(view)
    }
}

/// A b+tree's root: a page of the file, or an inline bucket's page inside its value.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Root<'a> {
    Page(u64),
    Inline(PageView<'a>),
}

/// Parses a bucket value: the header {root, sequence}, then for an inline bucket (root 0)
/// its page, which bbolt always writes as a leaf.
pub(crate) fn bucket_root<'a>(name: &[u8], value: &'a [u8]) -> Result<Root<'a>, BoltError> {
    let bad = || BoltError::BadBucket { key: show(name) };
    let root = le_u64(value, 0).ok_or_else(bad)?;
    if root != 0 {
        return Ok(Root::Page(root));
    }
    let page = value.get(BUCKET_HEADER..).ok_or_else(bad)?;
    if page.len() < PAGE_HEADER {
        return Err(bad());
    }
    let view = PageView::new(Loc::Inline, page)?;
    if !view.is_leaf() {
        return Err(BoltError::PageType {
            loc: Loc::Inline,
            flags: view.flags,
        });
    }
    Ok(Root::Inline(view))
}

/// One bit per page below the high-water mark (bounded by the file's size).
pub(crate) struct PageSet {
    bits: Vec<u64>,
}

impl PageSet {
    pub fn new(pages: u64) -> PageSet {
        let words = usize::try_from(pages.div_ceil(64)).unwrap_or(0);
        PageSet {
            bits: vec![0; words],
        }
    }

    pub fn contains(&self, id: u64) -> bool {
        let Ok(word) = usize::try_from(id / 64) else {
            return false;
        };
        self.bits
            .get(word)
            .is_some_and(|w| w & (1 << (id % 64)) != 0)
    }

    /// Adds `id`; false if it was there already (or lies past the set).
    pub fn insert(&mut self, id: u64) -> bool {
        let Ok(word) = usize::try_from(id / 64) else {
            return false;
        };
        let Some(w) = self.bits.get_mut(word) else {
            return false;
        };
        let bit = 1 << (id % 64);
        let fresh = *w & bit == 0;
        *w |= bit;
        fresh
    }
}

/// What a walk's page callback is told about each page reference: the page's header,
/// or why the reference is bad (out of range, torn header).
pub(crate) type PageVisit<'v, E> =
    dyn FnMut(u64, Result<&PageHeader, BoltError>) -> Result<bool, E> + 'v;

/// Walks a tree in key order. `on_page` sees every page of the file referenced (not
/// inline pages) before it is read and says whether to descend into it; `on_elem` sees
/// every leaf element. Keys must be strictly ascending across the walk.
pub(crate) fn walk<'a, E: From<BoltError>>(
    pages: Pages<'a>,
    root: Root<'a>,
    on_page: &mut PageVisit<'_, E>,
    on_elem: &mut dyn FnMut(LeafElem<'a>) -> Result<(), E>,
) -> Result<(), E> {
    let root_loc = match root {
        Root::Page(id) => Loc::Page(id),
        Root::Inline(_) => Loc::Inline,
    };
    let visit = |id: u64, on_page: &mut PageVisit<'_, E>| {
        let span = pages.span(id);
        if !on_page(id, span.as_ref().map(|(h, _)| h).map_err(Clone::clone))? {
            return Ok(None);
        }
        Ok::<_, E>(Some(pages.node(id)?))
    };
    // (page, next branch element to follow)
    let mut stack: Vec<(PageView<'a>, usize)> = Vec::new();
    match root {
        Root::Inline(view) => stack.push((view, 0)),
        Root::Page(id) => {
            if let Some(view) = visit(id, on_page)? {
                stack.push((view, 0));
            }
        }
    }
    let mut prev: Option<&'a [u8]> = None;
    while let Some((view, next)) = stack.last_mut() {
        if view.is_leaf() {
            let view = *view;
            stack.pop();
            for index in 0..view.count {
                let elem = view.leaf(index)?;
                if prev.is_some_and(|p| elem.key <= p) {
                    return Err(BoltError::KeyOrder {
                        loc: view.loc,
                        index,
                        key: show(elem.key),
                    }
                    .into());
                }
                prev = Some(elem.key);
                on_elem(elem)?;
            }
            continue;
        }
        if view.count == 0 {
            return Err(BoltError::EmptyBranch { loc: view.loc }.into());
        }
        if *next >= view.count {
            stack.pop();
            continue;
        }
        let (_, child) = view.branch(*next)?;
        *next += 1;
        if let Some(child_view) = visit(child, on_page)? {
            if stack.len() >= MAX_DEPTH {
                return Err(BoltError::TooDeep {
                    loc: root_loc,
                    max: MAX_DEPTH,
                }
                .into());
            }
            stack.push((child_view, 0));
        }
    }
    Ok(())
}

/// Walks a tree, refusing any page reached twice (bbolt never shares pages; a shared
/// subtree or a cycle would otherwise repeat work without bound).
pub(crate) fn walk_once<'a, E: From<BoltError>>(
    pages: Pages<'a>,
    root: Root<'a>,
    on_elem: &mut dyn FnMut(LeafElem<'a>) -> Result<(), E>,
) -> Result<(), E> {
    let mut seen = PageSet::new(pages.count());
    let mut on_page = |id: u64, h: Result<&PageHeader, BoltError>| -> Result<bool, E> {
        let h = h?;
        // span() already checked id + overflow stays below the high-water mark.
        for p in id..=id.saturating_add(u64::from(h.overflow)) {
            if !seen.insert(p) {
                return Err(BoltError::ReferencedTwice { id: p }.into());
            }
        }
        Ok(true)
    };
    walk(pages, root, &mut on_page, on_elem)
}

/// bbolt's cursor seek: in a branch page follow the last element whose key is <= `key`
/// (the first one if none is), in the leaf look for `key` exactly.
pub(crate) fn lookup<'a>(
    pages: Pages<'a>,
    root: Root<'a>,
    key: &[u8],
) -> Result<Option<LeafElem<'a>>, BoltError> {
    let (root_loc, mut view) = match root {
        Root::Page(id) => (Loc::Page(id), pages.node(id)?),
        Root::Inline(view) => (Loc::Inline, view),
    };
    for _ in 0..MAX_DEPTH {
        if view.is_leaf() {
            let (mut lo, mut hi) = (0, view.count);
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                if view.leaf(mid)?.key < key {
                    lo = mid + 1;
                } else {
                    hi = mid;
                }
            }
            if lo < view.count {
                let elem = view.leaf(lo)?;
                if elem.key == key {
                    return Ok(Some(elem));
                }
            }
            return Ok(None);
        }
        if view.count == 0 {
            return Err(BoltError::EmptyBranch { loc: view.loc });
        }
        let (mut lo, mut hi) = (0, view.count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if view.branch(mid)?.0 < key {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let exact = lo < view.count && view.branch(lo)?.0 == key;
        let index = if exact { lo } else { lo.saturating_sub(1) };
        let (_, child) = view.branch(index)?;
        view = pages.node(child)?;
    }
    Err(BoltError::TooDeep {
        loc: root_loc,
        max: MAX_DEPTH,
    })
}

/// A validated view over a whole bbolt file in memory (a snapshot or a `member/snap/db`).
///
/// Opening checks the metas and the high-water mark only; pages are checked as they are
/// read, so every other method can still fail on a corrupt file. Nothing here panics or
/// loops on any input.
#[derive(Clone, Copy, Debug)]
pub struct BoltDb<'a> {
    pages: Pages<'a>,
    meta: Meta,
}

impl<'a> BoltDb<'a> {
    /// Opens the file held in `data` (extra bytes past the high-water mark, like the
    /// SHA-256 etcd appends to a snapshot, are ignored).
    ///
    /// The page size is meta 0's if meta 0 is valid, else 4096 (bbolt falls back to the
    /// OS page size); of the two metas the valid one with the higher txid wins, meta 0 on
    /// a tie, as in bbolt's `db.meta()`.
    pub fn open(data: &'a [u8]) -> Result<BoltDb<'a>, BoltError> {
        let len = data.len() as u64;
        let page_size = match Meta::decode(data) {
            Some(m) if supported_page_size(m.page_size) => m.page_size as usize,
            _ => PAGE_SIZE,
        };
        let Some(meta1_page) = data.get(page_size..) else {
            return Err(BoltError::TooShort { len });
        };
        if data.len() < 2 * page_size {
            return Err(BoltError::TooShort { len });
        }
        let meta = match (Meta::decode(data), Meta::decode(meta1_page)) {
            (Some(m0), Some(m1)) => {
                if m1.txid > m0.txid {
                    m1
                } else {
                    m0
                }
            }
            (Some(m), None) | (None, Some(m)) => m,
            (None, None) => return Err(BoltError::InvalidMeta),
        };
        let pages = meta.pgid;
        let fits = pages
            .checked_mul(page_size as u64)
            .is_some_and(|need| need <= len);
        if !fits {
            return Err(BoltError::ShortFile {
                len,
                pages,
                page_size,
            });
        }
        // Pages 0 and 1 are the metas; a root or freelist there (or past the end) could
        // never have been written by bbolt.
        if meta.root < 2 || meta.root >= pages {
            return Err(BoltError::MetaOutOfRange {
                field: "root",
                id: meta.root,
                pages,
            });
        }
        if meta.freelist != NO_FREELIST && (meta.freelist < 2 || meta.freelist >= pages) {
            return Err(BoltError::MetaOutOfRange {
                field: "freelist",
                id: meta.freelist,
                pages,
            });
        }
        Ok(BoltDb {
            pages: Pages {
                data,
                page_size,
                count: pages,
            },
            meta,
        })
    }

    /// The database's size: high-water mark times page size (Go's `tx.Size()`).
    pub fn size(&self) -> u64 {
        self.pages.count * self.pages.page_size as u64
    }

    /// The page size the file was written with.
    pub fn page_size(&self) -> usize {
        self.pages.page_size
    }

    pub(crate) fn pages(&self) -> Pages<'a> {
        self.pages
    }

    pub(crate) fn meta(&self) -> &Meta {
        &self.meta
    }

    fn root(&self) -> Root<'a> {
        Root::Page(self.meta.root)
    }

    /// Names of the top-level buckets, in key order. A top-level key that is not a
    /// bucket is an error (etcdctl fails on it too: "cannot get hash of bucket").
    pub fn bucket_names(&self) -> Result<Vec<&'a [u8]>, BoltError> {
        let mut names = Vec::new();
        walk_once(self.pages, self.root(), &mut |e: LeafElem<'a>| {
            if !e.is_bucket() {
                return Err(BoltError::NotABucket { key: show(e.key) });
            }
            names.push(e.key);
            Ok(())
        })?;
        Ok(names)
    }

    /// The top-level bucket `name`, if there is one.
    pub fn bucket(&self, name: &[u8]) -> Result<Option<Bucket<'a>>, BoltError> {
        let Some(e) = lookup(self.pages, self.root(), name)? else {
            return Ok(None);
        };
        if !e.is_bucket() {
            return Err(BoltError::NotABucket { key: show(e.key) });
        }
        Ok(Some(Bucket {
            pages: self.pages,
            root: bucket_root(e.key, e.value)?,
        }))
    }
}

/// Page sizes a reader accepts: powers of two from 512 bytes (room for the meta) to
/// 1 MiB, which covers every OS page size bbolt defaults to.
fn supported_page_size(ps: u32) -> bool {
    ps.is_power_of_two() && (512..=1 << 20).contains(&ps)
}

/// A top-level bucket of a [`BoltDb`]; its keys and values borrow the file's bytes.
#[derive(Clone, Copy, Debug)]
pub struct Bucket<'a> {
    pages: Pages<'a>,
    root: Root<'a>,
}

impl<'a> Bucket<'a> {
    pub(crate) fn root(&self) -> Root<'a> {
        self.root
    }

    /// Every key/value in key order; a nested bucket is an error (etcd has none). Stops
    /// at the first error, from the file or from `f`.
    pub fn for_each<E: From<BoltError>>(
        &self,
        mut f: impl FnMut(&'a [u8], &'a [u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        walk_once(self.pages, self.root, &mut |e: LeafElem<'a>| {
            if e.is_bucket() {
                return Err(BoltError::NestedBucket { key: show(e.key) }.into());
            }
            f(e.key, e.value)
        })
    }

    /// The value of `key`, found by descending the tree as bbolt's cursor does.
    pub fn get(&self, key: &[u8]) -> Result<Option<&'a [u8]>, BoltError> {
        match lookup(self.pages, self.root, key)? {
            Some(e) if e.is_bucket() => Err(BoltError::NestedBucket { key: show(e.key) }),
            Some(e) => Ok(Some(e.value)),
            None => Ok(None),
        }
    }

    /// Number of keys (a full walk).
    pub fn len(&self) -> Result<usize, BoltError> {
        let mut n = 0usize;
        self.for_each(|_, _| {
            n += 1;
            Ok::<_, BoltError>(())
        })?;
        Ok(n)
    }

    /// Whether the bucket has no keys (stops at the first one).
    pub fn is_empty(&self) -> Result<bool, BoltError> {
        /// Ends the walk early: a key was found, or the file is bad.
        enum Stop {
            Found,
            Bad(BoltError),
        }
        impl From<BoltError> for Stop {
            fn from(e: BoltError) -> Stop {
                Stop::Bad(e)
            }
        }
        match self.for_each(|_, _| Err(Stop::Found)) {
            Ok(()) => Ok(true),
            Err(Stop::Found) => Ok(false),
            Err(Stop::Bad(e)) => Err(e),
        }
    }
}
