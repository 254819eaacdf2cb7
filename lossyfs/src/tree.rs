//! The filesystem's model: every inode keeps a volatile copy (what readers see) and a
//! durable copy (what survives a power loss).
//!
//! - A file's bytes and size become durable at `fsync`/`fdatasync` of that file.
//! - A directory's entries (creations, renames, unlinks, mkdir, rmdir) become durable
//!   only at `fsync` of that directory: a file created, synced and never followed by a
//!   directory sync is gone after a power loss, as POSIX allows and ext4 can do.
//! - [`Tree::power_loss`] replaces every volatile copy with the durable one (optionally
//!   applying a torn prefix of the last unsynced write first) and drops every inode the
//!   durable namespace no longer reaches.
//!
//! Attributes other than size (mode, owner, times) are kept but never lost.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::time::SystemTime;

use crate::content::{Content, PAGE};

/// Inode number.
pub type Ino = u64;
/// The root directory's inode.
pub const ROOT: Ino = 1;
/// An errno.
pub type Errno = i32;

/// A regular file.
#[derive(Debug, Default)]
pub struct FileNode {
    /// What readers see.
    pub vol: Content,
    /// What survives a power loss.
    pub dur: Content,
    /// Pages written since the last sync.
    dirty: BTreeSet<u64>,
}

/// A directory: name → inode, volatile and durable.
#[derive(Debug, Default)]
pub struct DirNode {
    /// What lookups see.
    pub vol: BTreeMap<OsString, Ino>,
    /// What survives a power loss.
    pub dur: BTreeMap<OsString, Ino>,
}

/// File or directory.
#[derive(Debug)]
pub enum Kind {
    /// Regular file.
    File(FileNode),
    /// Directory.
    Dir(DirNode),
}

/// One inode.
#[derive(Debug)]
pub struct Node {
    /// Its content.
    pub kind: Kind,
    /// Permission bits.
    pub perm: u16,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Last modification.
    pub mtime: SystemTime,
    /// Last access.
    pub atime: SystemTime,
    /// Last status change.
    pub ctime: SystemTime,
    /// Volatile directory entries naming it.
    pub vlinks: u32,
    /// Durable directory entries naming it.
    dlinks: u32,
    /// Open handles.
    opens: u32,
}

/// The last write not yet covered by a sync of its file (for a torn power loss).
#[derive(Debug, Clone)]
struct LastWrite {
    ino: Ino,
    off: u64,
    data: Vec<u8>,
}

/// Counters, for tests and reports.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Successful file syncs.
    pub file_syncs: u64,
    /// Successful directory syncs.
    pub dir_syncs: u64,
    /// Syncs refused with EIO.
    pub failed_syncs: u64,
    /// Power losses.
    pub power_losses: u64,
    /// Unsynced file pages dropped by power losses.
    pub pages_lost: u64,
    /// Directory entries whose unsynced change was dropped by power losses.
    pub entries_lost: u64,
}

/// The whole filesystem.
#[derive(Debug)]
pub struct Tree {
    nodes: HashMap<Ino, Node>,
    next: Ino,
    last_write: Option<LastWrite>,
    /// Counters.
    pub stats: Stats,
}

fn node(kind: Kind, perm: u16, uid: u32, gid: u32) -> Node {
    let now = SystemTime::now();
    Node {
        kind,
        perm,
        uid,
        gid,
        mtime: now,
        atime: now,
        ctime: now,
        vlinks: 0,
        dlinks: 0,
        opens: 0,
    }
}

impl Default for Tree {
    fn default() -> Self {
        Tree::new()
    }
}

impl Tree {
    /// An empty filesystem (its root directory is durable).
    pub fn new() -> Tree {
        let mut root = node(Kind::Dir(DirNode::default()), 0o755, 0, 0);
        // The root is always there: it counts as linked both ways.
        root.vlinks = 1;
        root.dlinks = 1;
        Tree {
            nodes: HashMap::from([(ROOT, root)]),
            next: ROOT + 1,
            last_write: None,
            stats: Stats::default(),
        }
    }

    /// An inode.
    pub fn get(&self, ino: Ino) -> Result<&Node, Errno> {
        self.nodes.get(&ino).ok_or(libc::ENOENT)
    }

    fn get_mut(&mut self, ino: Ino) -> Result<&mut Node, Errno> {
        self.nodes.get_mut(&ino).ok_or(libc::ENOENT)
    }

    fn dir(&self, ino: Ino) -> Result<&DirNode, Errno> {
        match &self.get(ino)?.kind {
            Kind::Dir(d) => Ok(d),
            Kind::File(_) => Err(libc::ENOTDIR),
        }
    }

    fn dir_mut(&mut self, ino: Ino) -> Result<&mut DirNode, Errno> {
        match &mut self.get_mut(ino)?.kind {
            Kind::Dir(d) => Ok(d),
            Kind::File(_) => Err(libc::ENOTDIR),
        }
    }

    fn file_mut(&mut self, ino: Ino) -> Result<&mut FileNode, Errno> {
        match &mut self.get_mut(ino)?.kind {
            Kind::File(f) => Ok(f),
            Kind::Dir(_) => Err(libc::EISDIR),
        }
    }

    /// The inode `name` names in directory `parent`.
    pub fn lookup(&self, parent: Ino, name: &OsStr) -> Result<Ino, Errno> {
        self.dir(parent)?.vol.get(name).copied().ok_or(libc::ENOENT)
    }

    /// Volatile entries of a directory.
    pub fn entries(&self, ino: Ino) -> Result<Vec<(OsString, Ino, bool)>, Errno> {
        let d = self.dir(ino)?;
        Ok(d.vol
            .iter()
            .map(|(n, i)| {
                let is_dir = matches!(self.nodes.get(i).map(|n| &n.kind), Some(Kind::Dir(_)));
                (n.clone(), *i, is_dir)
            })
            .collect())
    }

    /// Creates a file (`dir` false) or directory in `parent`.
    pub fn create(
        &mut self,
        parent: Ino,
        name: &OsStr,
        dir: bool,
        perm: u16,
        uid: u32,
        gid: u32,
    ) -> Result<Ino, Errno> {
        if self.dir(parent)?.vol.contains_key(name) {
            return Err(libc::EEXIST);
        }
        let kind = if dir {
            Kind::Dir(DirNode::default())
        } else {
            Kind::File(FileNode::default())
        };
        let ino = self.next;
        self.next += 1;
        self.nodes.insert(ino, node(kind, perm, uid, gid));
        self.link(parent, name, ino)?;
        Ok(ino)
    }

    /// Points the volatile entry `name` of `parent` at `ino` (dropping what it named).
    fn link(&mut self, parent: Ino, name: &OsStr, ino: Ino) -> Result<(), Errno> {
        let old = self.dir_mut(parent)?.vol.insert(name.to_owned(), ino);
        self.get_mut(ino)?.vlinks += 1;
        if let Some(old) = old {
            self.unref_vol(old);
        }
        self.touch(parent);
        Ok(())
    }

    fn unref_vol(&mut self, ino: Ino) {
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.vlinks = n.vlinks.saturating_sub(1);
        }
        self.maybe_free(ino);
    }

    fn touch(&mut self, ino: Ino) {
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.mtime = SystemTime::now();
            n.ctime = n.mtime;
        }
    }

    /// Frees an inode nothing names or holds open any more.
    fn maybe_free(&mut self, ino: Ino) {
        let free = matches!(self.nodes.get(&ino), Some(n) if ino != ROOT && n.vlinks == 0 && n.dlinks == 0 && n.opens == 0);
        if !free {
            return;
        }
        if let Some(Node {
            kind: Kind::Dir(d), ..
        }) = self.nodes.remove(&ino)
        {
            for child in d.dur.values() {
                if let Some(n) = self.nodes.get_mut(child) {
                    n.dlinks = n.dlinks.saturating_sub(1);
                }
                self.maybe_free(*child);
            }
            for child in d.vol.values() {
                self.unref_vol(*child);
            }
        }
    }

    /// Removes a file's entry (`dir` false) or an empty directory's.
    pub fn remove(&mut self, parent: Ino, name: &OsStr, dir: bool) -> Result<(), Errno> {
        let ino = self.lookup(parent, name)?;
        match (&self.get(ino)?.kind, dir) {
            (Kind::File(_), true) => return Err(libc::ENOTDIR),
            (Kind::Dir(_), false) => return Err(libc::EISDIR),
            (Kind::Dir(d), true) if !d.vol.is_empty() => return Err(libc::ENOTEMPTY),
            _ => {}
        }
        self.dir_mut(parent)?.vol.remove(name);
        self.touch(parent);
        self.unref_vol(ino);
        Ok(())
    }

    /// `rename(2)` (with RENAME_NOREPLACE when `noreplace`).
    pub fn rename(
        &mut self,
        parent: Ino,
        name: &OsStr,
        new_parent: Ino,
        new_name: &OsStr,
        noreplace: bool,
    ) -> Result<(), Errno> {
        let ino = self.lookup(parent, name)?;
        self.dir(new_parent)?;
        if let Ok(target) = self.lookup(new_parent, new_name) {
            if target == ino {
                return Ok(());
            }
            if noreplace {
                return Err(libc::EEXIST);
            }
            match (&self.get(ino)?.kind, &self.get(target)?.kind) {
                (Kind::File(_), Kind::Dir(_)) => return Err(libc::EISDIR),
                (Kind::Dir(_), Kind::File(_)) => return Err(libc::ENOTDIR),
                (Kind::Dir(_), Kind::Dir(t)) if !t.vol.is_empty() => return Err(libc::ENOTEMPTY),
                _ => {}
            }
        }
        if matches!(self.get(ino)?.kind, Kind::Dir(_)) && self.is_ancestor(ino, new_parent) {
            return Err(libc::EINVAL);
        }
        // Link first so the inode never drops to zero links in between.
        self.link(new_parent, new_name, ino)?;
        self.dir_mut(parent)?.vol.remove(name);
        self.touch(parent);
        self.unref_vol(ino);
        Ok(())
    }

    /// Whether `a` is `b` or one of its volatile ancestors.
    fn is_ancestor(&self, a: Ino, b: Ino) -> bool {
        let mut seen = BTreeSet::new();
        let mut frontier = vec![a];
        while let Some(d) = frontier.pop() {
            if d == b {
                return true;
            }
            if let Ok(dir) = self.dir(d) {
                frontier.extend(dir.vol.values().filter(|i| seen.insert(**i)));
            }
        }
        false
    }

    /// Reads file bytes.
    pub fn read(&mut self, ino: Ino, off: u64, len: u64) -> Result<Vec<u8>, Errno> {
        let n = self.get_mut(ino)?;
        n.atime = SystemTime::now();
        match &n.kind {
            Kind::File(f) => Ok(f.vol.read(off, len)),
            Kind::Dir(_) => Err(libc::EISDIR),
        }
    }

    /// Writes file bytes (volatile until the file is synced).
    pub fn write(&mut self, ino: Ino, off: u64, data: &[u8]) -> Result<(), Errno> {
        let f = self.file_mut(ino)?;
        let touched = f.vol.write(off, data);
        f.dirty.extend(touched);
        self.touch(ino);
        self.last_write = Some(LastWrite {
            ino,
            off,
            data: data.to_vec(),
        });
        Ok(())
    }

    /// Sets a file's size (`truncate`, `ftruncate`, `O_TRUNC`, `fallocate`).
    pub fn set_size(&mut self, ino: Ino, size: u64) -> Result<(), Errno> {
        let f = self.file_mut(ino)?;
        let changed = f.vol.truncate(size);
        f.dirty.extend(changed);
        // Pages the durable copy still holds past the new end must go at the next sync.
        let stale: Vec<u64> = f.dur.pages_from(size.div_ceil(PAGE)).collect();
        f.dirty.extend(stale);
        self.touch(ino);
        Ok(())
    }

    /// Sets attributes other than size.
    pub fn set_meta(
        &mut self,
        ino: Ino,
        perm: Option<u16>,
        uid: Option<u32>,
        gid: Option<u32>,
        mtime: Option<SystemTime>,
        atime: Option<SystemTime>,
    ) -> Result<(), Errno> {
        let n = self.get_mut(ino)?;
        n.perm = perm.unwrap_or(n.perm);
        n.uid = uid.unwrap_or(n.uid);
        n.gid = gid.unwrap_or(n.gid);
        n.mtime = mtime.unwrap_or(n.mtime);
        n.atime = atime.unwrap_or(n.atime);
        n.ctime = SystemTime::now();
        Ok(())
    }

    /// Counts an open handle (an unlinked file stays readable while open).
    pub fn open(&mut self, ino: Ino) -> Result<(), Errno> {
        self.get_mut(ino)?.opens += 1;
        Ok(())
    }

    /// Releases an open handle.
    pub fn release(&mut self, ino: Ino) {
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.opens = n.opens.saturating_sub(1);
        }
        self.maybe_free(ino);
    }

    /// `fsync`/`fdatasync`: a file's bytes and size, or a directory's entries, become
    /// durable.
    pub fn sync(&mut self, ino: Ino) -> Result<(), Errno> {
        match &mut self.get_mut(ino)?.kind {
            Kind::File(f) => {
                let size = f.vol.size;
                for p in std::mem::take(&mut f.dirty) {
                    let FileNode { vol, dur, .. } = f;
                    dur.copy_page(vol, p);
                }
                f.dur.size = size;
                if self.last_write.as_ref().is_some_and(|w| w.ino == ino) {
                    self.last_write = None;
                }
                self.stats.file_syncs += 1;
            }
            Kind::Dir(d) => {
                let old = std::mem::replace(&mut d.dur, d.vol.clone());
                let new: Vec<Ino> = d.dur.values().copied().collect();
                for i in new {
                    if let Some(n) = self.nodes.get_mut(&i) {
                        n.dlinks += 1;
                    }
                }
                for i in old.into_values() {
                    if let Some(n) = self.nodes.get_mut(&i) {
                        n.dlinks = n.dlinks.saturating_sub(1);
                    }
                    self.maybe_free(i);
                }
                self.stats.dir_syncs += 1;
            }
        }
        Ok(())
    }

    /// Every file and directory synced (a clean shutdown).
    pub fn sync_all(&mut self) {
        let inos: Vec<Ino> = self.nodes.keys().copied().collect();
        for i in inos {
            let _ = self.sync(i);
        }
    }

    /// A power loss: everything unsynced is dropped. With `tear`, the first half of the
    /// last unsynced write reaches the disk first (a write torn by the power cut).
    pub fn power_loss(&mut self, tear: bool) {
        if let Some(w) = self.last_write.take().filter(|_| tear) {
            if let Ok(f) = self.file_mut(w.ino) {
                f.dur.write(w.off, &w.data[..w.data.len() / 2]);
            }
        }
        for n in self.nodes.values_mut() {
            match &mut n.kind {
                Kind::File(f) => {
                    self.stats.pages_lost += f.dirty.len() as u64;
                    f.vol = f.dur.clone();
                    f.dirty.clear();
                }
                Kind::Dir(d) => {
                    let differ = d
                        .vol
                        .iter()
                        .filter(|(k, v)| d.dur.get(*k) != Some(v))
                        .count()
                        + d.dur.keys().filter(|k| !d.vol.contains_key(*k)).count();
                    self.stats.entries_lost += differ as u64;
                    d.vol = d.dur.clone();
                }
            }
            n.opens = 0;
            n.vlinks = 0;
            n.dlinks = 0;
        }
        // Keep what the durable namespace reaches from the root; recount links.
        let mut reached = BTreeSet::from([ROOT]);
        let mut frontier = vec![ROOT];
        let mut links: HashMap<Ino, u32> = HashMap::from([(ROOT, 1)]);
        while let Some(d) = frontier.pop() {
            if let Some(Node {
                kind: Kind::Dir(dir),
                ..
            }) = self.nodes.get(&d)
            {
                for i in dir.dur.values() {
                    *links.entry(*i).or_default() += 1;
                    if reached.insert(*i) {
                        frontier.push(*i);
                    }
                }
            }
        }
        self.nodes.retain(|i, _| reached.contains(i));
        for (i, n) in self.nodes.iter_mut() {
            let l = links.get(i).copied().unwrap_or(0);
            n.vlinks = l;
            n.dlinks = l;
        }
        self.stats.power_losses += 1;
    }

    /// Inodes in memory (for tests: freed inodes do not accumulate).
    pub fn inode_count(&self) -> usize {
        self.nodes.len()
    }

    /// Inserts a durable file or directory while loading a backing directory.
    pub fn load(
        &mut self,
        parent: Ino,
        name: &OsStr,
        content: Option<&[u8]>,
        perm: u16,
    ) -> Result<Ino, Errno> {
        let ino = self.create(parent, name, content.is_none(), perm, 0, 0)?;
        if let Some(bytes) = content {
            self.write(ino, 0, bytes)?;
            self.sync(ino)?;
        }
        self.sync(parent)?;
        self.last_write = None;
        Ok(ino)
    }

    /// The durable namespace under `ino`: (name, inode, durable bytes or None for a
    /// directory).
    pub fn durable_entries(&self, ino: Ino) -> Vec<(OsString, Ino, Option<Vec<u8>>)> {
        let Ok(d) = self.dir(ino) else {
            return Vec::new();
        };
        d.dur
            .iter()
            .filter_map(|(name, i)| {
                let bytes = match &self.nodes.get(i)?.kind {
                    Kind::File(f) => Some(f.dur.read(0, f.dur.size)),
                    Kind::Dir(_) => None,
                };
                Some((name.clone(), *i, bytes))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> &OsStr {
        OsStr::new(s)
    }

    #[test]
    fn synced_data_survives_and_unsynced_data_does_not() {
        let mut t = Tree::new();
        let f = t.create(ROOT, name("f"), false, 0o644, 0, 0).unwrap();
        t.sync(ROOT).unwrap();
        t.write(f, 0, b"durable").unwrap();
        t.sync(f).unwrap();
        t.write(f, 7, b" volatile").unwrap();
        let g = t.create(ROOT, name("g"), false, 0o644, 0, 0).unwrap();
        t.write(g, 0, b"synced but never named").unwrap();
        t.sync(g).unwrap();
        t.power_loss(false);
        assert_eq!(t.read(f, 0, 100).unwrap(), b"durable");
        assert_eq!(t.lookup(ROOT, name("g")), Err(libc::ENOENT));
        assert_eq!(t.inode_count(), 2);
    }

    #[test]
    fn a_torn_write_keeps_half_of_the_last_write() {
        let mut t = Tree::new();
        let f = t.create(ROOT, name("f"), false, 0o644, 0, 0).unwrap();
        t.sync(ROOT).unwrap();
        t.write(f, 0, b"abcdefgh").unwrap();
        t.power_loss(true);
        assert_eq!(t.read(f, 0, 100).unwrap(), b"abcd");
    }

    #[test]
    fn removed_and_overwritten_inodes_are_freed() {
        let mut t = Tree::new();
        for i in 0..100 {
            let f = t.create(ROOT, name("tmp"), false, 0o644, 0, 0).unwrap();
            t.write(f, 0, &[i; 10]).unwrap();
            t.rename(ROOT, name("tmp"), ROOT, name("f"), false).unwrap();
            t.sync(ROOT).unwrap();
        }
        assert_eq!(t.inode_count(), 2);
    }
}
