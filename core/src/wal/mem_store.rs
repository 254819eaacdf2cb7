//! An in-memory [`SegmentStore`] that models a disk under crashes: writes are volatile
//! until synced, file creations and removals until the directory is synced, and a crash
//! may tear the last unsynced write at any byte.

use std::collections::BTreeMap;
use std::convert::Infallible;

use super::segment::SegmentName;
use super::writer::SegmentStore;

#[derive(Clone, Debug, Default)]
struct MemFile {
    /// Content as the process sees it.
    live: Vec<u8>,
    /// Content that survives a crash.
    durable: Vec<u8>,
    /// Writes since the last sync, in order.
    unsynced: Vec<(usize, Vec<u8>)>,
}

/// In-memory segment files with crash semantics.
#[derive(Clone, Debug, Default)]
pub struct MemStore {
    files: BTreeMap<SegmentName, MemFile>,
    /// Names whose existence (or removal) is durable.
    durable_names: BTreeMap<SegmentName, bool>,
    /// Files removed since the last directory sync: a crash brings them back.
    removed: BTreeMap<SegmentName, MemFile>,
}

impl MemStore {
    /// An empty store.
    pub fn new() -> MemStore {
        MemStore::default()
    }

    /// A crash: every file reverts to its durable content, files whose creation was not
    /// made durable vanish (and removals not made durable are undone). If `tear` is
    /// `Some(n)`, the first `n` bytes of each file's oldest unsynced write did reach the
    /// disk (a torn write), clamped to that write's length.
    pub fn crash(&mut self, tear: Option<usize>) {
        let mut files = BTreeMap::new();
        for (name, durable) in &self.durable_names {
            if !durable {
                continue;
            }
            let Some(f) = self.files.get(name).or_else(|| self.removed.get(name)) else {
                continue;
            };
            let mut content = f.durable.clone();
            if let (Some(n), Some((off, data))) = (tear, f.unsynced.first()) {
                let n = n.min(data.len());
                let end = (off + n).min(content.len());
                if *off < end {
                    content[*off..end].copy_from_slice(&data[..end - off]);
                }
            }
            files.insert(
                *name,
                MemFile {
                    live: content.clone(),
                    durable: content,
                    unsynced: Vec::new(),
                },
            );
        }
        self.durable_names = files.keys().map(|n| (*n, true)).collect();
        self.files = files;
        self.removed.clear();
    }

    /// Flips one bit of a file's durable and live content (bit rot).
    pub fn flip_bit(&mut self, name: SegmentName, bit: usize) {
        if let Some(f) = self.files.get_mut(&name) {
            let (byte, mask) = (bit / 8, 1u8 << (bit % 8));
            if let Some(b) = f.live.get_mut(byte) {
                *b ^= mask;
            }
            if let Some(b) = f.durable.get_mut(byte) {
                *b ^= mask;
            }
        }
    }
}

impl SegmentStore for MemStore {
    type Error = Infallible;

    fn list(&mut self) -> Result<Vec<SegmentName>, Infallible> {
        Ok(self.files.keys().copied().collect())
    }

    fn read(&mut self, name: SegmentName) -> Result<Vec<u8>, Infallible> {
        Ok(self
            .files
            .get(&name)
            .map(|f| f.live.clone())
            .unwrap_or_default())
    }

    fn create(&mut self, name: SegmentName, size: u64) -> Result<(), Infallible> {
        let zeros = vec![0; size as usize];
        self.files.insert(
            name,
            MemFile {
                live: zeros.clone(),
                durable: zeros,
                unsynced: Vec::new(),
            },
        );
        self.durable_names.entry(name).or_insert(false);
        Ok(())
    }

    fn write(&mut self, name: SegmentName, offset: u64, data: &[u8]) -> Result<(), Infallible> {
        if let Some(f) = self.files.get_mut(&name) {
            let off = offset as usize;
            let end = (off + data.len()).min(f.live.len());
            if off < end {
                f.live[off..end].copy_from_slice(&data[..end - off]);
                f.unsynced.push((off, data[..end - off].to_vec()));
            }
        }
        Ok(())
    }

    fn sync(&mut self, name: SegmentName) -> Result<(), Infallible> {
        if let Some(f) = self.files.get_mut(&name) {
            f.durable = f.live.clone();
            f.unsynced.clear();
        }
        Ok(())
    }

    fn sync_dir(&mut self) -> Result<(), Infallible> {
        self.removed.clear();
        let names: Vec<SegmentName> = self.durable_names.keys().copied().collect();
        for n in names {
            if self.files.contains_key(&n) {
                self.durable_names.insert(n, true);
            } else {
                self.durable_names.remove(&n);
            }
        }
        Ok(())
    }

    fn remove(&mut self, name: SegmentName) -> Result<(), Infallible> {
        if let Some(f) = self.files.remove(&name) {
            // Removed for the process now; on disk only once the directory is synced.
            let mut f = f;
            f.unsynced.clear();
            f.live = f.durable.clone();
            self.removed.insert(name, f);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crashes_undo_what_was_not_made_durable() {
        let n = SegmentName {
            seq: 0,
            first_index: 1,
        };
        let mut s = MemStore::new();
        s.create(n, 8).ok();
        s.crash(None);
        assert!(
            s.list().ok().is_some_and(|l| l.is_empty()),
            "creation not dir-synced"
        );
        s.create(n, 8).ok();
        s.sync_dir().ok();
        s.write(n, 0, b"abcd").ok();
        s.sync(n).ok();
        s.write(n, 4, b"efgh").ok();
        s.crash(Some(2));
        assert_eq!(
            s.read(n).ok(),
            Some(b"abcdef\0\0".to_vec()),
            "torn unsynced write"
        );
        s.remove(n).ok();
        s.crash(None);
        assert_eq!(
            s.list().ok(),
            Some(vec![n]),
            "removal not dir-synced is undone"
        );
        s.remove(n).ok();
        s.sync_dir().ok();
        s.crash(None);
        assert_eq!(s.list().ok(), Some(vec![]));
    }
}
