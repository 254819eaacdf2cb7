//! The backing directory: its content is the disk's at mount, and the durable state is
//! written back to it at unmount (so a failed run's data can be inspected there).

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::tree::{Ino, Tree, ROOT};

/// Loads a directory tree as durable content (regular files and directories only).
pub fn load(tree: &mut Tree, dir: &Path) -> io::Result<()> {
    load_dir(tree, ROOT, dir)
}

fn load_dir(tree: &mut Tree, ino: Ino, dir: &Path) -> io::Result<()> {
    for e in fs::read_dir(dir)? {
        let e = e?;
        let meta = e.metadata()?;
        let perm = (meta.permissions().mode() & 0o7777) as u16;
        let errno = |n: i32| io::Error::from_raw_os_error(n);
        if meta.is_dir() {
            let child = tree.load(ino, &e.file_name(), None, perm).map_err(errno)?;
            load_dir(tree, child, &e.path())?;
        } else if meta.is_file() {
            let bytes = fs::read(e.path())?;
            tree.load(ino, &e.file_name(), Some(&bytes), perm)
                .map_err(errno)?;
        } else {
            return Err(io::Error::other(format!(
                "{}: only files and directories can be loaded",
                e.path().display()
            )));
        }
    }
    Ok(())
}

/// Replaces the content of `dir` with the durable state.
pub fn store(tree: &Tree, dir: &Path) -> io::Result<()> {
    for e in fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            fs::remove_dir_all(e.path())?;
        } else {
            fs::remove_file(e.path())?;
        }
    }
    store_dir(tree, ROOT, dir, 0)
}

fn store_dir(tree: &Tree, ino: Ino, dir: &Path, depth: usize) -> io::Result<()> {
    // Renames of directories that were never synced on both sides can leave the durable
    // namespace with a cycle; stop rather than recurse forever.
    if depth > 64 {
        return Err(io::Error::other(format!(
            "{}: nested too deep",
            dir.display()
        )));
    }
    for (name, child, bytes) in tree.durable_entries(ino) {
        let path = dir.join(&name);
        match bytes {
            Some(b) => fs::write(&path, b)?,
            None => {
                fs::create_dir(&path)?;
                store_dir(tree, child, &path, depth + 1)?;
            }
        }
    }
    Ok(())
}
