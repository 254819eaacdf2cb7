//! A FUSE filesystem that loses what was not synced, for power-loss tests of keel's
//! storage (the `keel` binary's WAL and snapshot files) on a real kernel path.
//!
//! Every write, creation, rename, unlink and truncation lands in a volatile copy; an
//! `fsync`/`fdatasync` of a file makes its bytes durable, an `fsync` of a directory its
//! entries (see [`tree`] for the exact rules). [`Handle::power_loss`] then drops
//! everything else, as a machine that loses power would; the process that used the
//! filesystem must have been killed first (its open files would see inodes vanish).
//!
//! `syncfs(2)` and `sync(2)` do not reach a FUSE daemon (the kernel only forwards
//! `FUSE_SYNCFS` to virtiofs), so they make nothing durable here: software that
//! relied on them alone would be caught, as it should.
//!
//! ```no_run
//! let h = keel_lossyfs::mount("/tmp/disk".as_ref(), "/tmp/mnt".as_ref()).unwrap();
//! // ... run something on /tmp/mnt, kill -9 it ...
//! h.power_loss(false);
//! // ... restart it on /tmp/mnt: it sees only what it synced ...
//! ```

pub mod backing;
pub mod content;
mod fuse;
pub mod tree;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

pub use tree::Stats;
use tree::Tree;

/// State shared by the FUSE session and the controls.
pub(crate) struct Shared {
    tree: Mutex<Tree>,
    sync_delay_us: AtomicU64,
    sync_fail: AtomicBool,
}

impl Shared {
    pub(crate) fn tree(&self) -> MutexGuard<'_, Tree> {
        // A panic while holding the lock leaves a model a test must not trust, but the
        // controls must still be able to report and unmount.
        self.tree.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A mounted lossy filesystem; unmounts (writing the durable state back to the backing
/// directory) when dropped.
pub struct Handle {
    shared: Arc<Shared>,
    session: Option<fuser::BackgroundSession>,
    backing: PathBuf,
    mountpoint: PathBuf,
}

/// Whether this process can mount FUSE filesystems (root and `/dev/fuse`); the reason
/// if not, for tests to print when they skip.
pub fn unavailable() -> Option<String> {
    if !Path::new("/dev/fuse").exists() {
        return Some("/dev/fuse is missing".into());
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    #[allow(unsafe_code)]
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        return Some("not root (the pure-Rust mount needs CAP_SYS_ADMIN)".into());
    }
    None
}

/// Mounts the filesystem at `mountpoint`, starting from the content of `backing` (its
/// files and directories are the disk's durable state).
pub fn mount(backing: &Path, mountpoint: &Path) -> io::Result<Handle> {
    let mut tree = Tree::new();
    backing::load(&mut tree, backing)?;
    let shared = Arc::new(Shared {
        tree: Mutex::new(tree),
        sync_delay_us: AtomicU64::new(0),
        sync_fail: AtomicBool::new(false),
    });
    let mut cfg = fuser::Config::default();
    cfg.mount_options = vec![
        fuser::MountOption::FSName("lossyfs".into()),
        fuser::MountOption::Subtype("lossyfs".into()),
    ];
    let fs = fuse::LossyFuse {
        shared: shared.clone(),
    };
    let session = fuser::spawn_mount(fs, mountpoint, &cfg)?;
    Ok(Handle {
        shared,
        session: Some(session),
        backing: backing.to_path_buf(),
        mountpoint: mountpoint.to_path_buf(),
    })
}

impl Handle {
    /// Where it is mounted.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Drops everything not synced. With `tear_last`, the first half of the last
    /// unsynced write reaches the disk (a write torn by the power cut). Kill the
    /// processes using the filesystem first.
    pub fn power_loss(&self, tear_last: bool) {
        self.shared.tree().power_loss(tear_last);
    }

    /// Every sync takes `delay` before it completes (a slow disk).
    pub fn set_sync_delay(&self, delay: Duration) {
        let us = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        self.shared.sync_delay_us.store(us, Ordering::SeqCst);
    }

    /// Every sync fails with EIO (and makes nothing durable) while `fail` is set.
    pub fn set_sync_fail(&self, fail: bool) {
        self.shared.sync_fail.store(fail, Ordering::SeqCst);
    }

    /// Counters so far.
    pub fn stats(&self) -> Stats {
        self.shared.tree().stats
    }

    /// Writes the durable state to `dir` (replacing its content).
    pub fn save_durable(&self, dir: &Path) -> io::Result<()> {
        backing::store(&self.shared.tree(), dir)
    }

    /// Unmounts, writing the durable state back to the backing directory.
    pub fn unmount(mut self) -> io::Result<()> {
        self.finish()
    }

    fn finish(&mut self) -> io::Result<()> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        let r = session.umount_and_join();
        backing::store(&self.shared.tree(), &self.backing)?;
        r
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        if let Err(e) = self.finish() {
            eprintln!("lossyfs: unmounting {}: {e}", self.mountpoint.display());
        }
    }
}
