//! A file's bytes as sparse 4 KiB pages shared between the volatile and the durable
//! copy: a sync copies page pointers, not data, and a 64 MB zero-filled WAL segment
//! costs no memory until something other than zeros is written to it.

use std::collections::BTreeMap;
use std::sync::Arc;

/// Page size of the model.
pub const PAGE: u64 = 4096;

/// A file's content: its size and its non-zero pages (a missing page reads as zeros).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Content {
    /// Size in bytes.
    pub size: u64,
    pages: BTreeMap<u64, Arc<Vec<u8>>>,
}

impl Content {
    /// Reads up to `len` bytes at `off` (short at the end of the file).
    pub fn read(&self, off: u64, len: u64) -> Vec<u8> {
        let end = off.saturating_add(len).min(self.size);
        if off >= end {
            return Vec::new();
        }
        let mut out = vec![0u8; (end - off) as usize];
        for (&p, page) in self.pages.range(off / PAGE..=(end - 1) / PAGE) {
            let (start, stop) = ((p * PAGE).max(off), ((p + 1) * PAGE).min(end));
            out[(start - off) as usize..(stop - off) as usize]
                .copy_from_slice(&page[(start - p * PAGE) as usize..(stop - p * PAGE) as usize]);
        }
        out
    }

    /// Writes `data` at `off`, growing the file; returns the pages touched.
    pub fn write(&mut self, off: u64, data: &[u8]) -> std::ops::Range<u64> {
        let end = off + data.len() as u64;
        let mut at = off;
        while at < end {
            let p = at / PAGE;
            let stop = ((p + 1) * PAGE).min(end);
            let chunk = &data[(at - off) as usize..(stop - off) as usize];
            let in_page = (at - p * PAGE) as usize;
            match self.pages.get_mut(&p) {
                Some(page) => {
                    Arc::make_mut(page)[in_page..in_page + chunk.len()].copy_from_slice(chunk)
                }
                // Zeros over a missing page change nothing: preallocation stays free.
                None if chunk.iter().all(|b| *b == 0) => {}
                None => {
                    let mut page = vec![0u8; PAGE as usize];
                    page[in_page..in_page + chunk.len()].copy_from_slice(chunk);
                    self.pages.insert(p, Arc::new(page));
                }
            }
            at = stop;
        }
        self.size = self.size.max(end);
        off / PAGE..end.div_ceil(PAGE)
    }

    /// Sets the size; bytes past a shrink are gone (a later grow reads zeros). Returns
    /// the pages whose content changed.
    pub fn truncate(&mut self, size: u64) -> Vec<u64> {
        let mut changed = Vec::new();
        if size < self.size {
            let keep = size.div_ceil(PAGE);
            changed.extend(self.pages.split_off(&keep).into_keys());
            if !size.is_multiple_of(PAGE) {
                if let Some(page) = self.pages.get_mut(&(size / PAGE)) {
                    Arc::make_mut(page)[(size % PAGE) as usize..].fill(0);
                    changed.push(size / PAGE);
                }
            }
        }
        self.size = size;
        changed
    }

    /// Page `p` of `from` replaces this content's page `p` (a sync of that page).
    pub fn copy_page(&mut self, from: &Content, p: u64) {
        match from.pages.get(&p) {
            Some(page) => {
                self.pages.insert(p, page.clone());
            }
            None => {
                self.pages.remove(&p);
            }
        }
    }

    /// Pages holding data at or past page `p` (for a shrink of the other copy).
    pub fn pages_from(&self, p: u64) -> impl Iterator<Item = u64> + '_ {
        self.pages.range(p..).map(|(k, _)| *k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_was_written_across_pages_and_holes() {
        let mut c = Content::default();
        c.write(5000, &[7u8; 10000]);
        assert_eq!(c.size, 15000);
        assert_eq!(c.read(0, 5000), vec![0u8; 5000]);
        assert_eq!(c.read(4999, 3), vec![0, 7, 7]);
        assert_eq!(c.read(14998, 100), vec![7, 7]);
        c.truncate(6000);
        c.truncate(20000);
        assert_eq!(c.read(5990, 20), [vec![7u8; 10], vec![0u8; 10]].concat());
    }

    #[test]
    fn zeros_take_no_pages() {
        let mut c = Content::default();
        c.write(0, &vec![0u8; 1 << 20]);
        assert_eq!(c.size, 1 << 20);
        assert_eq!(c.pages.len(), 0);
    }
}
