//! The `keel` binary on a disk whose syncs fail (EIO) or are slow. A failed fdatasync
//! must stop the member: nothing written after it may be acknowledged, and the process
//! must not go on serving. A slow disk only slows it down.
//!
//! Needs root, /dev/fuse and target/release/keel (or KEEL_BIN); skips with the reason
//! otherwise, unless LOSSYFS_REQUIRE=1 (CI).

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use support::{get_prefix, put, Member};

struct Setup {
    fs: keel_lossyfs::Handle,
    m: Member,
    dir: PathBuf,
}

fn setup(name: &str, port: u16) -> Option<Setup> {
    let bin = support::prerequisites()?;
    let dir = tempfile::Builder::new()
        .prefix(&format!("lossyfs-{name}-"))
        .tempdir()
        .expect("tempdir")
        .keep();
    let (disk, mnt) = (dir.join("disk"), dir.join("mnt"));
    std::fs::create_dir(&disk).expect("disk");
    std::fs::create_dir(&mnt).expect("mnt");
    let fs = keel_lossyfs::mount(&disk, &mnt).expect("mount");
    let mut m = Member {
        bin,
        name: "m1".into(),
        data_dir: mnt.join("m1"),
        client_port: port,
        peer_port: port + 1,
        initial_cluster: format!("m1=http://127.0.0.1:{}", port + 1),
        extra: Vec::new(),
        log: dir.join("m1.log"),
        child: None,
    };
    m.start();
    m.wait_ready(Duration::from_secs(30));
    Some(Setup { fs, m, dir })
}

impl Setup {
    fn finish(mut self) {
        self.m.kill();
        drop(self.fs);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn a_failed_fdatasync_stops_the_member_and_nothing_after_it_is_acknowledged() {
    let Some(mut s) = setup("eio", 2600) else {
        return;
    };
    for i in 0..50 {
        put(s.m.client_port, &format!("before-{i}"), b"v").expect("put before EIO");
    }
    s.fs.set_sync_fail(true);
    let t = Instant::now();
    let mut acked_after = Vec::new();
    let mut i = 0;
    while t.elapsed() < Duration::from_secs(5) {
        i += 1;
        if put(s.m.client_port, &format!("after-{i}"), b"v").is_ok() {
            acked_after.push(i);
        }
        if s.m.exited() {
            break;
        }
    }
    let exited_after = t.elapsed();
    assert!(
        acked_after.is_empty(),
        "puts acknowledged while every sync failed: {acked_after:?} (kept: {})",
        s.dir.display()
    );
    assert!(
        s.m.exited(),
        "the member kept running 5 s after its syncs failed (kept: {}):\n{}",
        s.dir.display(),
        s.m.log_tail()
    );
    let failed = s.fs.stats().failed_syncs;
    eprintln!("eio: exited {exited_after:?} after syncs started failing; {failed} syncs refused");
    assert!(failed >= 1);
    // The disk comes back after a power cycle: everything acknowledged before is there.
    s.fs.set_sync_fail(false);
    s.fs.power_loss(false);
    s.m.start();
    s.m.wait_ready(Duration::from_secs(30));
    for i in 0..50 {
        let got = get_prefix(s.m.client_port, &format!("before-{i}"), 1).expect("get");
        assert_eq!(got.as_deref(), Some(&b"v"[..]), "before-{i}");
    }
    s.finish();
}

#[test]
fn a_slow_disk_slows_acknowledgements_down() {
    let Some(mut s) = setup("slow", 2610) else {
        return;
    };
    let port = s.m.client_port;
    let time_puts = |n: usize, tag: &str| {
        let t = Instant::now();
        for i in 0..n {
            put(port, &format!("{tag}-{i}"), b"v").expect("put");
        }
        t.elapsed() / n as u32
    };
    let fast = time_puts(20, "fast");
    s.fs.set_sync_delay(Duration::from_millis(100));
    let slow = time_puts(5, "slow");
    s.fs.set_sync_delay(Duration::ZERO);
    eprintln!("slow disk: {fast:?} per put normally, {slow:?} with 100 ms syncs");
    assert!(slow >= Duration::from_millis(100), "{slow:?}");
    assert!(fast < Duration::from_millis(100), "{fast:?}");
    assert!(!s.m.exited());
    s.finish();
}
