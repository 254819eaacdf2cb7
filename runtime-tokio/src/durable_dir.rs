//! Directories whose existence survives a power loss: a new directory's name lives in
//! its parent, and only an fsync of the parent makes it durable (POSIX; ext4 happens to
//! commit it with the next journal transaction, other filesystems need not). Without
//! it a member's whole `member/` tree, WAL included, can vanish at a power cut after
//! writes were acknowledged, and the member restarts as a new, empty cluster.

use std::fs::{self, File};
use std::io;
use std::path::Path;

/// fsync of a directory: its entries (creations, renames, removals) become durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// `create_dir_all`, then an fsync of the parent of every directory it created.
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir_all(parent)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => {}
        // Created meanwhile by someone else: whoever created it syncs its parent.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => return Ok(()),
        Err(e) => return Err(e),
    }
    match dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) => sync_dir(parent),
        None => sync_dir(Path::new(".")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_every_missing_level_and_accepts_existing_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let deep = dir.path().join("a/b/c");
        create_dir_all(&deep).expect("create");
        assert!(deep.is_dir());
        create_dir_all(&deep).expect("again");
        std::fs::write(dir.path().join("f"), b"").expect("file");
        assert!(create_dir_all(&dir.path().join("f/g")).is_err());
    }
}
