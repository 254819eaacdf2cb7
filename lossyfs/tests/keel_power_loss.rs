//! Power losses under the real `keel` binary: a member's data dir on the lossy
//! filesystem, concurrent clients recording every acknowledged put, kill -9 while puts
//! are in flight, a power loss (every other one tearing the last write), a restart on
//! what is left. Every acknowledged put must be there (a key may hold a later value whose
//! acknowledgement was cut off, never an earlier one), and the member must start.
//!
//! Scenarios cover keel's write paths: the WAL tail (pwrite + fdatasync, group commit),
//! snapshot saves (temp file, fsync, rename, directory fsync), WAL segment rolls (64 MB
//! segments: preallocated spare renamed into place, directory fsync) and segment release
//! behind snapshots. Each asserts that the path it covers was really taken.
//!
//! Needs root, /dev/fuse and target/release/keel (or KEEL_BIN); skips with the reason
//! otherwise, unless LOSSYFS_REQUIRE=1 (CI).

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{get_prefix, http, put, Member};

/// Scenarios run one at a time: they are disk- and CPU-heavy on a 2-core machine.
static SERIAL: Mutex<()> = Mutex::new(());

struct Scenario {
    name: &'static str,
    /// Client port; the peer port is the next one (2500-2999 are this crate's).
    port: u16,
    flags: &'static [&'static str],
    value_len: usize,
    /// Keys written round-robin by all writers (each writer owns its own keys).
    keys_per_writer: usize,
    writers: usize,
    rounds: usize,
    acks_per_round: usize,
    /// Compact the history up to the latest revision every this many acks per writer.
    compact_every: Option<usize>,
}

/// What the data dir looked like along the run.
#[derive(Default, Debug)]
struct Seen {
    max_segment_seq: u64,
    first_segment_released: bool,
    max_snapshots: usize,
}

fn look(data: &Path, seen: &mut Seen) {
    if let Ok(rd) = std::fs::read_dir(data.join("member/wal")) {
        let names: Vec<String> = rd
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".wal"))
            .collect();
        for n in &names {
            if let Some(seq) = n
                .split('-')
                .next()
                .and_then(|s| u64::from_str_radix(s, 16).ok())
            {
                seen.max_segment_seq = seen.max_segment_seq.max(seq);
            }
        }
        if !names.is_empty() && !names.iter().any(|n| n.starts_with("0000000000000000-")) {
            seen.first_segment_released = true;
        }
    }
    if let Ok(rd) = std::fs::read_dir(data.join("member/snap")) {
        let n = rd
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".snap"))
            .count();
        seen.max_snapshots = seen.max_snapshots.max(n);
    }
}

fn value(key: &str, seq: u64, len: usize) -> Vec<u8> {
    let mut v = format!("{key}#{seq:010}#").into_bytes();
    v.resize(len.max(v.len()), b'x');
    v
}

fn seq_of(v: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(v).ok()?;
    s.split('#').nth(1)?.parse().ok()
}

/// key → highest acknowledged sequence number.
type Acked = Arc<Mutex<HashMap<String, u64>>>;

fn run(sc: &Scenario) -> Seen {
    let Some(bin) = support::prerequisites() else {
        return Seen::default();
    };
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let started = Instant::now();
    let dir = tempfile::Builder::new()
        .prefix(&format!("lossyfs-{}-", sc.name))
        .tempdir()
        .expect("tempdir")
        // Kept if the run fails (its path is in the failure): the durable state is
        // written to disk/ at unmount, the member's log is m1.log.
        .keep();
    let (disk, mnt) = (dir.join("disk"), dir.join("mnt"));
    std::fs::create_dir(&disk).expect("disk");
    std::fs::create_dir(&mnt).expect("mnt");
    let fs = keel_lossyfs::mount(&disk, &mnt).expect("mount");
    let data = mnt.join("m1");
    let peer = sc.port + 1;
    let mut m = Member {
        bin,
        name: "m1".into(),
        data_dir: data.clone(),
        client_port: sc.port,
        peer_port: peer,
        initial_cluster: format!("m1=http://127.0.0.1:{peer}"),
        extra: sc.flags.iter().map(|s| s.to_string()).collect(),
        log: dir.join("m1.log"),
        child: None,
    };
    let acked: Acked = Arc::default();
    let mut next_seq = vec![0u64; sc.writers];
    let mut seen = Seen::default();
    let mut total_acks = 0;
    m.start();
    m.wait_ready(Duration::from_secs(30));
    for round in 0..sc.rounds {
        // Writers put until the member dies under them.
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(Mutex::new(0usize));
        let handles: Vec<_> = (0..sc.writers)
            .map(|w| {
                let (acked, stop, count) = (acked.clone(), stop.clone(), count.clone());
                let (port, len, keys, compact) =
                    (sc.port, sc.value_len, sc.keys_per_writer, sc.compact_every);
                let mut seq = next_seq[w];
                std::thread::spawn(move || {
                    let mut mine = 0;
                    while !stop.load(Ordering::SeqCst) {
                        seq += 1;
                        let key = format!("w{w}-k{}", seq as usize % keys);
                        match put(port, &key, &value(&key, seq, len)) {
                            Ok(rev) => {
                                acked.lock().expect("acked").insert(key, seq);
                                *count.lock().expect("count") += 1;
                                mine += 1;
                                if compact.is_some_and(|c| mine % c == 0) {
                                    let body = format!(r#"{{"revision":"{rev}"}}"#);
                                    let _ = http(port, "/v3/kv/compaction", &body);
                                }
                            }
                            Err(_) => break,
                        }
                    }
                    seq
                })
            })
            .collect();
        let t = Instant::now();
        while *count.lock().expect("count") < sc.acks_per_round {
            assert!(
                t.elapsed() < Duration::from_secs(60) && !m.exited(),
                "{}: round {round}: stuck at {} acks:\n{}",
                sc.name,
                count.lock().expect("count"),
                m.log_tail()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        look(&data, &mut seen);
        // kill -9 with puts in flight, then the power goes.
        m.kill();
        stop.store(true, Ordering::SeqCst);
        for (w, h) in handles.into_iter().enumerate() {
            next_seq[w] = h.join().expect("writer");
        }
        total_acks += *count.lock().expect("count");
        fs.power_loss(round % 2 == 1);
        look(&data, &mut seen);
        m.start();
        m.wait_ready(Duration::from_secs(30));
        let acked = acked.lock().expect("acked").clone();
        for (key, seq) in &acked {
            let got = get_prefix(sc.port, key, 32)
                .unwrap_or_else(|e| panic!("{}: reading {key}: {e}", sc.name));
            let got_seq = got.as_deref().and_then(seq_of);
            assert!(
                got_seq.is_some_and(|g| g >= *seq),
                "{}: round {round}: {key} acknowledged at #{seq} reads {:?} after the power loss (kept: {})",
                sc.name,
                got.map(|g| String::from_utf8_lossy(&g).into_owned()),
                dir.display()
            );
        }
    }
    let stats = fs.stats();
    eprintln!(
        "{}: {} rounds, {total_acks} acknowledged puts checked, {:?}; {stats:?}; {:.1}s",
        sc.name,
        sc.rounds,
        seen,
        started.elapsed().as_secs_f64()
    );
    assert!(
        stats.pages_lost > 0 || stats.entries_lost > 0,
        "{}: the power losses lost nothing: {stats:?}",
        sc.name
    );
    m.kill();
    drop(fs);
    let _ = std::fs::remove_dir_all(&dir);
    seen
}

#[test]
fn wal_tail_power_loss_keeps_every_acknowledged_put() {
    run(&Scenario {
        name: "wal-tail",
        port: 2500,
        flags: &[],
        value_len: 100,
        keys_per_writer: 1_000_000,
        writers: 4,
        rounds: 4,
        acks_per_round: 300,
        compact_every: None,
    });
}

#[test]
fn snapshot_saves_survive_power_loss() {
    let seen = run(&Scenario {
        name: "snapshots",
        port: 2510,
        flags: &["--snapshot-count", "100", "--max-snapshots", "2"],
        value_len: 200,
        keys_per_writer: 1_000_000,
        writers: 4,
        rounds: 3,
        acks_per_round: 450,
        compact_every: None,
    });
    if support::prerequisites().is_some() {
        assert!(seen.max_snapshots >= 1, "no snapshot was saved: {seen:?}");
    }
}

#[test]
fn segment_rolls_and_releases_survive_power_loss() {
    // 1 MB values over 64 MB segments: a few rolls per round; snapshots every 40
    // entries with history compacted, so segments behind them are released.
    let seen = run(&Scenario {
        name: "segments",
        port: 2520,
        flags: &[
            "--snapshot-count",
            "40",
            "--max-snapshots",
            "2",
            "--max-wals",
            "1",
        ],
        value_len: 1 << 20,
        keys_per_writer: 4,
        writers: 2,
        rounds: 2,
        acks_per_round: 110,
        compact_every: Some(8),
    });
    if support::prerequisites().is_some() {
        assert!(seen.max_segment_seq >= 2, "no segment roll: {seen:?}");
        assert!(seen.first_segment_released, "no segment released: {seen:?}");
        assert!(seen.max_snapshots >= 1, "no snapshot: {seen:?}");
    }
}

/// Three members on one lossy disk. m3 is down while the others write past the raft
/// log they keep (5000 entries after a snapshot), so its restart installs a snapshot
/// from the leader (image file first, then its WAL marker). The power goes right after
/// the install: m3 must start on what is left (alone first: it must not exit), then the
/// whole cluster must hold every acknowledged put, read through m3.
#[test]
fn a_snapshot_installed_from_the_leader_survives_power_loss() {
    let Some(bin) = support::prerequisites() else {
        return;
    };
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let started = Instant::now();
    let dir = tempfile::Builder::new()
        .prefix("lossyfs-install-")
        .tempdir()
        .expect("tempdir")
        .keep();
    let (disk, mnt) = (dir.join("disk"), dir.join("mnt"));
    std::fs::create_dir(&disk).expect("disk");
    std::fs::create_dir(&mnt).expect("mnt");
    let fs = keel_lossyfs::mount(&disk, &mnt).expect("mount");
    let port = |i: u16| 2530 + 2 * i;
    let cluster = (0..3)
        .map(|i| format!("m{}=http://127.0.0.1:{}", i + 1, port(i) + 1))
        .collect::<Vec<_>>()
        .join(",");
    let mut ms: Vec<Member> = (0..3)
        .map(|i| Member {
            bin: bin.clone(),
            name: format!("m{}", i + 1),
            data_dir: mnt.join(format!("m{}", i + 1)),
            client_port: port(i),
            peer_port: port(i) + 1,
            initial_cluster: cluster.clone(),
            extra: [
                "--snapshot-count",
                "500",
                "--heartbeat-interval",
                "50",
                "--election-timeout",
                "500",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            log: dir.join(format!("m{}.log", i + 1)),
            child: None,
        })
        .collect();
    for m in &mut ms {
        m.start();
    }
    for m in &mut ms {
        m.wait_ready(Duration::from_secs(30));
    }
    let mut acked: HashMap<String, u64> = HashMap::new();
    let mut put_some = |n: usize, tag: &str, ports: &[u16]| {
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let (tag, ports) = (tag.to_string(), ports.to_vec());
                std::thread::spawn(move || {
                    let mut mine = Vec::new();
                    for i in 0..n / 4 {
                        let key = format!("{tag}-w{w}-{i}");
                        let p = ports[i % ports.len()];
                        if put(p, &key, &value(&key, 1, 64)).is_ok() {
                            mine.push(key);
                        }
                    }
                    mine
                })
            })
            .collect();
        for h in writers {
            for k in h.join().expect("writer") {
                acked.insert(k, 1);
            }
        }
    };
    put_some(200, "all-up", &[port(0), port(1), port(2)]);
    ms[2].kill();
    // Far past the 5000 entries the leader keeps behind its snapshot.
    put_some(7000, "m3-down", &[port(0), port(1)]);
    let snaps = |d: &Path| {
        std::fs::read_dir(d.join("member/snap"))
            .map(|rd| {
                rd.filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .filter(|n| n.ends_with(".snap"))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    let before = snaps(&ms[2].data_dir);
    ms[2].start();
    let t = Instant::now();
    let installed = loop {
        let now = snaps(&ms[2].data_dir);
        if let Some(n) = now.iter().find(|n| !before.contains(n)) {
            break n.clone();
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "m3 installed no snapshot (before: {before:?}, kept: {}):\n{}",
            dir.display(),
            ms[2].log_tail()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    // Let it persist what follows the image, then cut everything.
    std::thread::sleep(Duration::from_millis(300));
    for m in &mut ms {
        m.kill();
    }
    fs.power_loss(true);
    // m3 first and alone: it cannot serve without a quorum (it waits to publish itself,
    // as etcd does), but it must not refuse to start on what the power loss left.
    ms[2].start();
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !ms[2].exited(),
        "m3 refused to start after the power loss (kept: {}):\n{}",
        dir.display(),
        ms[2].log_tail()
    );
    ms[0].start();
    ms[1].start();
    for m in &mut ms {
        m.wait_ready(Duration::from_secs(30));
    }
    for (key, seq) in &acked {
        // Through m3: a linearizable read there waits until it has caught up.
        let got = get_prefix(port(2), key, 32).unwrap_or_else(|e| panic!("{key}: {e}"));
        assert_eq!(
            got.as_deref().and_then(seq_of),
            Some(*seq),
            "{key} acknowledged but lost (kept: {})",
            dir.display()
        );
    }
    eprintln!(
        "install: m3 installed {installed}; {} acknowledged puts checked after the power loss; {:?}; {:.1}s",
        acked.len(),
        fs.stats(),
        started.elapsed().as_secs_f64()
    );
    for m in &mut ms {
        m.kill();
    }
    drop(fs);
    let _ = std::fs::remove_dir_all(&dir);
}
