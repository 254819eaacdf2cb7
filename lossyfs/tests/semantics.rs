//! The filesystem's promises on a real mount: what was synced survives a power loss,
//! exactly, and nothing else does; names need their directory synced; a torn write
//! keeps a prefix; failing and slow syncs behave as configured.
//!
//! Mounting needs root and /dev/fuse: elsewhere each test prints why it skips.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use keel_lossyfs::Handle;

struct Mounted {
    handle: Option<Handle>,
    dir: tempfile::TempDir,
}

impl Mounted {
    fn mnt(&self) -> std::path::PathBuf {
        self.dir.path().join("mnt")
    }
    fn h(&self) -> &Handle {
        self.handle.as_ref().expect("mounted")
    }
}

fn mount() -> Option<Mounted> {
    if let Some(why) = keel_lossyfs::unavailable() {
        eprintln!("skipped: {why}");
        return None;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    fs::create_dir(dir.path().join("disk")).expect("disk");
    fs::create_dir(dir.path().join("mnt")).expect("mnt");
    let handle =
        keel_lossyfs::mount(&dir.path().join("disk"), &dir.path().join("mnt")).expect("mount");
    Some(Mounted {
        handle: Some(handle),
        dir,
    })
}

fn sync_dir(p: &Path) {
    File::open(p).and_then(|d| d.sync_all()).expect("dir fsync");
}

fn read(p: &Path) -> Option<Vec<u8>> {
    fs::read(p).ok()
}

#[test]
fn only_synced_data_survives_a_power_loss() {
    let Some(m) = mount() else { return };
    let mnt = m.mnt();
    // A writer thread: a.log synced after its first write only, b.log never synced,
    // c.log fdatasynced after everything.
    let writer = {
        let mnt = mnt.clone();
        std::thread::spawn(move || {
            let open = |n: &str| {
                OpenOptions::new()
                    .create(true)
                    .truncate(true)
                    .read(true)
                    .write(true)
                    .open(mnt.join(n))
                    .expect("create")
            };
            let (mut a, mut b, mut c) = (open("a.log"), open("b.log"), open("c.log"));
            sync_dir(&mnt);
            a.write_all(&[1u8; 10_000]).expect("write");
            a.sync_all().expect("fsync");
            a.write_all(&[2u8; 5_000]).expect("write");
            a.write_all_at(&[3u8; 100], 0).expect("overwrite");
            b.write_all(b"never synced").expect("write");
            c.write_all(&[4u8; 70_000]).expect("write");
            c.set_len(50_000).expect("truncate");
            c.sync_data().expect("fdatasync");
        })
    };
    writer.join().expect("writer");
    assert_eq!(read(&mnt.join("a.log")).map(|v| v.len()), Some(15_000));
    m.h().power_loss(false);
    assert_eq!(read(&mnt.join("a.log")), Some(vec![1u8; 10_000]));
    assert_eq!(read(&mnt.join("b.log")), Some(Vec::new()));
    assert_eq!(read(&mnt.join("c.log")), Some(vec![4u8; 50_000]));
    let s = m.h().stats();
    assert_eq!(s.power_losses, 1);
    assert!(s.pages_lost > 0, "{s:?}");
}

#[test]
fn names_need_their_directory_synced() {
    let Some(m) = mount() else { return };
    let mnt = m.mnt();
    fs::create_dir(mnt.join("d")).expect("mkdir");
    sync_dir(&mnt);
    // Snapshot-style: write a temp file, fsync it, rename it into place.
    let write_synced = |p: &Path, bytes: &[u8]| {
        let mut f = File::create(p).expect("create");
        f.write_all(bytes).expect("write");
        f.sync_all().expect("fsync");
    };
    write_synced(&mnt.join("d/kept.tmp"), b"kept");
    fs::rename(mnt.join("d/kept.tmp"), mnt.join("d/kept")).expect("rename");
    sync_dir(&mnt.join("d"));
    write_synced(&mnt.join("d/lost.tmp"), b"lost");
    fs::rename(mnt.join("d/lost.tmp"), mnt.join("d/lost")).expect("rename");
    // An unlink without a directory sync is undone too.
    fs::remove_file(mnt.join("d/kept")).expect("unlink");
    // A directory created but not synced into its parent is gone with its content.
    fs::create_dir(mnt.join("e")).expect("mkdir");
    write_synced(&mnt.join("e/f"), b"f");
    sync_dir(&mnt.join("e"));
    m.h().power_loss(false);
    assert_eq!(read(&mnt.join("d/kept")), Some(b"kept".to_vec()));
    assert_eq!(read(&mnt.join("d/lost")), None);
    assert_eq!(read(&mnt.join("d/lost.tmp")), None);
    assert!(!mnt.join("e").exists());
    let mut names: Vec<String> = fs::read_dir(mnt.join("d"))
        .expect("readdir")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf8"))
        .collect();
    names.sort();
    assert_eq!(names, ["kept"]);
}

#[test]
fn a_torn_power_loss_keeps_a_prefix_of_the_last_write() {
    let Some(m) = mount() else { return };
    let mnt = m.mnt();
    let mut f = File::create(mnt.join("wal")).expect("create");
    sync_dir(&mnt);
    f.write_all(b"synced|").expect("write");
    f.sync_data().expect("fdatasync");
    f.write_all(b"lost-entirely|").expect("write");
    f.write_all(b"0123456789").expect("write");
    drop(f);
    m.h().power_loss(true);
    // The earlier unsynced write is lost (a hole of zeros) while half of the last one
    // landed: the disk does not keep the order of unsynced writes.
    let expect = [&b"synced|"[..], &[0u8; 14], b"01234"].concat();
    assert_eq!(read(&mnt.join("wal")), Some(expect));
}

#[test]
fn failing_syncs_return_eio_and_make_nothing_durable() {
    let Some(m) = mount() else { return };
    let mnt = m.mnt();
    let mut f = File::create(mnt.join("x")).expect("create");
    sync_dir(&mnt);
    f.write_all(b"abc").expect("write");
    m.h().set_sync_fail(true);
    let e = f.sync_data().expect_err("EIO");
    assert_eq!(e.raw_os_error(), Some(libc::EIO));
    assert!(File::open(&mnt).and_then(|d| d.sync_all()).is_err());
    m.h().set_sync_fail(false);
    assert_eq!(m.h().stats().failed_syncs, 2);
    drop(f);
    m.h().power_loss(false);
    assert_eq!(read(&mnt.join("x")), Some(Vec::new()));
}

#[test]
fn slow_syncs_take_the_configured_delay() {
    let Some(m) = mount() else { return };
    let mnt = m.mnt();
    let mut f = File::create(mnt.join("x")).expect("create");
    f.write_all(b"abc").expect("write");
    m.h().set_sync_delay(Duration::from_millis(300));
    let t = Instant::now();
    f.sync_data().expect("fdatasync");
    let slow = t.elapsed();
    // Other requests are served meanwhile: a read during a slow sync is not held up.
    let reader = {
        let p = mnt.join("x");
        std::thread::spawn(move || {
            let t = Instant::now();
            let mut s = String::new();
            File::open(p)
                .and_then(|mut f| f.read_to_string(&mut s))
                .expect("read");
            (s, t.elapsed())
        })
    };
    f.sync_data().expect("fdatasync");
    let (s, read_took) = reader.join().expect("reader");
    m.h().set_sync_delay(Duration::ZERO);
    let t = Instant::now();
    f.sync_data().expect("fdatasync");
    let fast = t.elapsed();
    assert!(slow >= Duration::from_millis(300), "{slow:?}");
    assert!(fast < Duration::from_millis(100), "{fast:?}");
    assert_eq!(s, "abc");
    assert!(read_took < Duration::from_millis(250), "{read_took:?}");
}

#[test]
fn the_backing_directory_holds_the_durable_state_across_mounts() {
    let Some(mut m) = mount() else { return };
    let mnt = m.mnt();
    fs::create_dir(mnt.join("d")).expect("mkdir");
    let mut f = File::create(mnt.join("d/f")).expect("create");
    f.write_all(b"durable").expect("write");
    f.sync_all().expect("fsync");
    f.write_all(b" and not").expect("write");
    drop(f);
    sync_dir(&mnt.join("d"));
    sync_dir(&mnt);
    fs::write(mnt.join("unsynced"), b"x").expect("write");
    m.handle
        .take()
        .expect("mounted")
        .unmount()
        .expect("unmount");
    let disk = m.dir.path().join("disk");
    assert_eq!(read(&disk.join("d/f")), Some(b"durable".to_vec()));
    assert!(!disk.join("unsynced").exists());
    let h = keel_lossyfs::mount(&disk, &mnt).expect("mount again");
    assert_eq!(read(&mnt.join("d/f")), Some(b"durable".to_vec()));
    h.power_loss(false);
    assert_eq!(read(&mnt.join("d/f")), Some(b"durable".to_vec()));
}
