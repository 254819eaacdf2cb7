//! bbolt's `tx.Check()` (v1.3.6), which `etcdctl snapshot status` runs before hashing:
//! every page below the high-water mark is a meta, the freelist, reachable exactly once
//! from a bucket, or free exactly once. Problems are worded as Go words them, so a
//! status error reads as etcdctl's does.

use super::error::BoltError;
use super::page::{
    le_u64, page_type_name, PageHeader, BRANCH_PAGE, FREELIST_COUNT_OVERFLOW, FREELIST_PAGE,
    LEAF_PAGE, NO_FREELIST, PAGE_HEADER,
};
use super::read::{bucket_root, walk, BoltDb, PageSet, Pages, Root, MAX_NESTING};

/// Problems kept word for word; the rest are only counted (a file of garbage would
/// otherwise produce one line per page).
const MAX_PROBLEMS: usize = 1000;

struct Checker<'a> {
    pages: Pages<'a>,
    reachable: PageSet,
    freed: PageSet,
    problems: Vec<String>,
    total: usize,
}

impl Checker<'_> {
    fn report(&mut self, problem: String) {
        self.total += 1;
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(problem);
        }
    }

    /// Go's `freelist.read` plus the "already freed" pass of `tx.check`.
    fn read_freelist(&mut self, id: u64) {
        let (h, bytes) = match self.pages.span(id) {
            Ok(span) => span,
            Err(e) => return self.report(e.to_string()),
        };
        // Go marks the freelist page and its overflow reachable before anything else.
        for p in id..=id.saturating_add(u64::from(h.overflow)) {
            self.reachable.insert(p);
        }
        if h.flags & FREELIST_PAGE == 0 {
            let typ = page_type_name(h.flags);
            return self.report(format!(
                "page {id}: invalid freelist page, page type is {typ}"
            ));
        }
        let (count, start) = if h.count == FREELIST_COUNT_OVERFLOW {
            match le_u64(bytes, PAGE_HEADER) {
                Some(c) => (c, PAGE_HEADER + 8),
                None => {
                    return self.report(format!("page {id}: freelist page too short for its count"))
                }
            }
        } else {
            (u64::from(h.count), PAGE_HEADER)
        };
        let room = (bytes.len().saturating_sub(start) / 8) as u64;
        if count > room {
            return self.report(format!(
                "page {id}: freelist claims {count} ids, room for {room}"
            ));
        }
        for i in 0..count {
            // count <= room, so every read is inside the page.
            let Some(free) = usize::try_from(i)
                .ok()
                .and_then(|i| le_u64(bytes, start + 8 * i))
            else {
                break;
            };
            // Ids at or past the high-water mark have no page; Go's check ignores them too
            // (its unreachable pass stops at the mark).
            if free < self.pages.count() && !self.freed.insert(free) {
                self.report(format!("page {free}: already freed"));
            }
        }
    }

    /// Go's `checkBucket`: the bucket's pages, then its child buckets in key order. An
    /// inline bucket has no pages of its own (and bbolt never nests buckets inside one).
    fn check_bucket(&mut self, root: Root<'_>, nesting: usize) {
        let Root::Page(_) = root else { return };
        if nesting > MAX_NESTING {
            return self.report(BoltError::NestedTooDeep { max: MAX_NESTING }.to_string());
        }
        let pages = self.pages;
        let mut children = Vec::new();
        let mut on_page = |id: u64, h: Result<&PageHeader, BoltError>| -> Result<bool, BoltError> {
            let h = match h {
                Ok(h) => h,
                Err(BoltError::PageOutOfRange { id, pages }) => {
                    self.report(format!("page {id}: out of bounds: {pages}"));
                    return Ok(false);
                }
                Err(e) => {
                    self.report(e.to_string());
                    return Ok(false);
                }
            };
            let mut first_visit = true;
            for p in id..=id.saturating_add(u64::from(h.overflow)) {
                if !self.reachable.insert(p) {
                    self.report(format!("page {p}: multiple references"));
                    first_visit = false;
                }
            }
            let node = h.flags == BRANCH_PAGE || h.flags == LEAF_PAGE;
            if self.freed.contains(id) {
                self.report(format!("page {id}: reachable freed"));
            } else if h.flags & (BRANCH_PAGE | LEAF_PAGE) == 0 {
                self.report(format!(
                    "page {id}: invalid type: {}",
                    page_type_name(h.flags)
                ));
            } else if !node {
                self.report(
                    BoltError::PageType {
                        loc: super::Loc::Page(id),
                        flags: h.flags,
                    }
                    .to_string(),
                );
            }
            // A page seen before is not walked again: Go would, but a hostile file of
            // pages that all point at each other would make that exponential.
            Ok(first_visit && node)
        };
        let walked = walk(pages, root, &mut on_page, &mut |e| {
            if e.is_bucket() {
                children.push(bucket_root(e.key, e.value)?);
            }
            Ok(())
        });
        if let Err(e) = walked {
            self.report(e.to_string());
        }
        for child in children {
            self.check_bucket(child, nesting + 1);
        }
    }
}

impl BoltDb<'_> {
    /// Go's `tx.Check()`: the problems found, empty if the file is sound. At most 1000
    /// are listed word for word; if there were more, a last line says how many.
    pub fn check(&self) -> Vec<String> {
        let (mut problems, total) = self.check_counted();
        if total > problems.len() {
            problems.push(format!("... and {} more problems", total - problems.len()));
        }
        problems
    }

    /// The listed problems and how many there were in all.
    pub(crate) fn check_counted(&self) -> (Vec<String>, usize) {
        let pages = self.pages();
        let meta = *self.meta();
        let mut c = Checker {
            pages,
            reachable: PageSet::new(pages.count()),
            freed: PageSet::new(pages.count()),
            problems: Vec::new(),
            total: 0,
        };
        c.reachable.insert(0);
        c.reachable.insert(1);
        let synced = meta.freelist != NO_FREELIST;
        if synced {
            c.read_freelist(meta.freelist);
        }
        c.check_bucket(Root::Page(meta.root), 0);
        // Without a stored freelist (etcd's NoFreelistSync), bbolt rebuilds it as every
        // page no bucket reaches, so no page can be unreachable and unfreed.
        if synced {
            for id in 0..pages.count() {
                if !c.reachable.contains(id) && !c.freed.contains(id) {
                    c.report(format!("page {id}: unreachable unfreed"));
                }
            }
        }
        (c.problems, c.total)
    }
}
