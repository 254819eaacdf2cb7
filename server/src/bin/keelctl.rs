//! keelctl: Keel's operator tool. `keelctl bench raft|wal|mvcc` measure the core's parts;
//! `keelctl bench put|range|txn-put|watch` load a running cluster (Keel or etcd) through
//! etcd's gRPC API; `keelctl discovery new` makes a v2 discovery URL; `keelctl snapshot
//! status|restore` and `keelctl migrate` read etcd's backup files and data dirs (see README,
//! "Backup and restore").

#![allow(unsafe_code)] // Only for the heap-counting allocator below.

use std::alloc::{GlobalAlloc, Layout};

use mimalloc::MiMalloc;
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};

use clap::{Args, Parser, Subcommand};
use keel_runtime_tokio::WriteMode;
use keel_server::backup;
use keel_server::client_bench::{self, Target, Workload};
use keel_server::raft_bench::{self, RaftBench};
use keel_server::wal_bench::{self, WalBench};

/// Counts live heap bytes so `bench mvcc` can report what the keyspace itself holds,
/// apart from allocator slack and pages the allocator keeps. Underneath is mimalloc,
/// the allocator the `keel` server is to run on: glibc's malloc spent over a quarter of
/// the put benchmark consolidating and unlinking free chunks.
///
/// Counting is off unless a measurement is running: one shared counter updated by every
/// allocation of every thread would bounce its cache line between the cores for the
/// whole of `bench put` at 1000 clients, taking CPU from the servers under test.
struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static LIVE: AtomicIsize = AtomicIsize::new(0);

fn count(delta: isize) {
    if COUNTING.load(Ordering::Relaxed) {
        LIVE.fetch_add(delta, Ordering::Relaxed);
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        // SAFETY: forwarding the caller's layout to the underlying allocator.
        unsafe { MiMalloc.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as isize));
        // SAFETY: `ptr` was allocated by `MiMalloc` with this layout.
        unsafe { MiMalloc.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract for `realloc`, forwarded unchanged.
        let p = unsafe { MiMalloc.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            count(new_size as isize - layout.size() as isize);
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Starts counting live heap bytes from zero.
fn start_counting() {
    LIVE.store(0, Ordering::Relaxed);
    COUNTING.store(true, Ordering::Relaxed);
}

/// Stops counting; the bytes allocated since [`start_counting`] and still live (frees of
/// older memory can make the raw count dip, never below zero here).
fn stop_counting() -> usize {
    COUNTING.store(false, Ordering::Relaxed);
    LIVE.load(Ordering::Relaxed).max(0) as usize
}

#[derive(Parser)]
#[command(
    name = "keelctl",
    version,
    about = "Keel's benchmarks and operator tools"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Benchmarks.
    #[command(subcommand)]
    Bench(Bench),
    /// v2 discovery tokens.
    #[command(subcommand)]
    Discovery(Discovery),
    /// etcd snapshot files (from `etcdctl snapshot save` against etcd or keel).
    #[command(subcommand)]
    Snapshot(SnapshotCmd),
    /// Turns a stopped etcd member's data dir into a keel data dir (no running etcd needed).
    Migrate(MigrateArgs),
}

#[derive(Subcommand)]
enum SnapshotCmd {
    /// Hash, revision, total keys and size, as `etcdctl snapshot status` prints them.
    Status(SnapshotStatusArgs),
    /// Writes a keel data dir from a snapshot, as `etcdctl snapshot restore` writes etcd's.
    Restore(SnapshotRestoreArgs),
}

#[derive(Args)]
struct SnapshotStatusArgs {
    /// The snapshot file.
    file: std::path::PathBuf,
    /// Output format: simple, table, json or fields (etcdctl's -w).
    #[arg(short = 'w', long = "write-out", default_value = "simple")]
    write_out: String,
}

/// etcdctl's restore flags.
#[derive(Args)]
struct RestoreFlags {
    /// Path to the data directory to write (default: <name>.etcd).
    #[arg(long)]
    data_dir: Option<std::path::PathBuf>,
    /// Path to the WAL directory to use (default: <data-dir>/member/wal).
    #[arg(long)]
    wal_dir: Option<std::path::PathBuf>,
    /// Human-readable name for this member.
    #[arg(long, default_value = "default")]
    name: String,
    /// Initial cluster configuration for restore bootstrap.
    #[arg(long, default_value = "default=http://localhost:2380")]
    initial_cluster: String,
    /// Initial cluster token for the cluster during restore bootstrap.
    #[arg(long, default_value = "etcd-cluster")]
    initial_cluster_token: String,
    /// List of this member's peer URLs to advertise to the rest of the cluster.
    #[arg(long, default_value = "http://localhost:2380", value_delimiter = ',')]
    initial_advertise_peer_urls: Vec<String>,
}

#[derive(Args)]
struct SnapshotRestoreArgs {
    /// The snapshot file.
    file: std::path::PathBuf,
    #[command(flatten)]
    flags: RestoreFlags,
    /// Ignore snapshot integrity hash value (required if copied from a data directory).
    #[arg(long)]
    skip_hash_check: bool,
}

#[derive(Args)]
struct MigrateArgs {
    /// The stopped etcd member's --data-dir (its member/snap/db is read).
    #[arg(long)]
    from_etcd_data_dir: std::path::PathBuf,
    #[command(flatten)]
    flags: RestoreFlags,
}

#[derive(Subcommand)]
enum Discovery {
    /// Prints a fresh discovery URL (for --discovery) for a cluster of --size members.
    New(DiscoveryNewArgs),
}

#[derive(Args)]
struct DiscoveryNewArgs {
    /// Members of the cluster to bootstrap.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    size: u32,
    /// Client URL of a server of the v2 keys API (Keel or etcd, with --enable-v2).
    #[arg(long, default_value = "http://127.0.0.1:2379")]
    endpoint: String,
    /// Directory holding discovery tokens.
    #[arg(long, default_value = "/discovery")]
    prefix: String,
}

#[derive(Subcommand)]
enum Bench {
    /// Committed proposals/s through an in-memory cluster of raft cores on one thread.
    Raft(RaftArgs),
    /// WAL append throughput next to the raw disk's limits, in one run.
    Wal(WalArgs),
    /// Single-threaded keyspace puts, point reads, 100-key ranges and memory per key.
    Mvcc(MvccArgs),
    /// Puts through etcd's gRPC API (against Keel or etcd).
    Put(PutArgs),
    /// Range reads of one key or interval through etcd's gRPC API.
    Range(RangeArgs),
    /// Transactions of puts through etcd's gRPC API.
    TxnPut(TxnPutArgs),
    /// Watch event delivery: watchers on a prefix, then puts under it.
    Watch(WatchArgs),
    /// Kubernetes-shaped load: optimistic-update writers, a LIST loop, prefix watchers.
    K8s(K8sArgs),
}

/// Connection flags shared by the client benchmarks (etcd's `benchmark` names).
#[derive(Args)]
struct ConnArgs {
    /// Client endpoints, comma-separated (`host:port` or `http://host:port`).
    #[arg(long, default_value = "127.0.0.1:2379", value_delimiter = ',')]
    endpoints: Vec<String>,
    /// gRPC connections, round-robin over the endpoints.
    #[arg(long, default_value_t = 1)]
    conns: usize,
    /// Concurrent clients (one request in flight each), sharing the connections.
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// Find the leader (Status, then MemberList's client URLs) and send everything to it.
    #[arg(long)]
    target_leader: bool,
}

impl ConnArgs {
    fn target(&self) -> Target {
        Target {
            endpoints: self.endpoints.clone(),
            conns: self.conns,
            clients: self.clients,
            target_leader: self.target_leader,
        }
    }
}

#[derive(Args)]
struct PutArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Puts to send.
    #[arg(long, default_value_t = 10_000)]
    total: u64,
    /// Key bytes (the key number, varint-encoded, then zeros).
    #[arg(long, default_value_t = 8)]
    key_size: usize,
    /// Value bytes.
    #[arg(long, default_value_t = 8)]
    val_size: usize,
    /// Distinct keys.
    #[arg(long, default_value_t = 1)]
    key_space_size: u64,
    /// Key numbers in order (request number mod key space) instead of random.
    #[arg(long)]
    sequential_keys: bool,
}

#[derive(Args)]
struct RangeArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Key to read, or start of the interval.
    key: String,
    /// End of the interval (exclusive); a single key without it.
    end: Option<String>,
    /// Ranges to send.
    #[arg(long, default_value_t = 10_000)]
    total: u64,
    /// l: linearizable (through the leader's read index), s: serializable (local).
    #[arg(long, default_value = "l", value_parser = ["l", "s"])]
    consistency: String,
}

#[derive(Args)]
struct TxnPutArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Transactions to send.
    #[arg(long, default_value_t = 10_000)]
    total: u64,
    /// Key bytes.
    #[arg(long, default_value_t = 8)]
    key_size: usize,
    /// Value bytes.
    #[arg(long, default_value_t = 8)]
    val_size: usize,
    /// Distinct keys (at least --txn-ops: a txn may not put one key twice).
    #[arg(long, default_value_t = 1)]
    key_space_size: u64,
    /// Puts per transaction.
    #[arg(long, default_value_t = 1)]
    txn_ops: usize,
}

#[derive(Args)]
struct WatchArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Watch streams (gRPC streams), round-robin over the connections.
    #[arg(long, default_value_t = 10)]
    streams: usize,
    /// Watchers per stream, all on the run's prefix.
    #[arg(long, default_value_t = 10)]
    watchers_per_stream: usize,
    /// Puts under the prefix once every watcher is created.
    #[arg(long, default_value_t = 1_000)]
    put_total: u64,
    /// Digits of the key suffix after the run's prefix.
    #[arg(long, default_value_t = 8)]
    key_size: usize,
    /// Value bytes.
    #[arg(long, default_value_t = 8)]
    val_size: usize,
}

#[derive(Args)]
struct K8sArgs {
    /// Client endpoints, comma-separated (`host:port` or `http://host:port`).
    #[arg(long, default_value = "127.0.0.1:2379", value_delimiter = ',')]
    endpoints: Vec<String>,
    /// Objects under /registry/pods/ (created first when missing).
    #[arg(long, default_value_t = 20_000)]
    objects: u64,
    /// Bytes per object.
    #[arg(long, default_value_t = 1024)]
    value_size: usize,
    /// Writers doing compare-mod_revision updates.
    #[arg(long, default_value_t = 32)]
    writers: usize,
    /// Clients LISTing the whole prefix, unpaginated, in a loop.
    #[arg(long, default_value_t = 1)]
    listers: usize,
    /// Prefix watchers (one stream each).
    #[arg(long, default_value_t = 4)]
    watchers: usize,
    /// Seconds of writing.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
}

#[derive(Args)]
struct MvccArgs {
    /// Keys to load.
    #[arg(long, default_value_t = 1_000_000)]
    keys: u64,
    /// Value bytes.
    #[arg(long, default_value_t = 256)]
    val_size: usize,
    /// Point reads to time.
    #[arg(long, default_value_t = 2_000_000)]
    reads: u64,
}

#[derive(Args)]
struct WalArgs {
    /// Scratch directory (subdirectories are created and removed).
    #[arg(long, default_value = "keel-bench-wal")]
    dir: std::path::PathBuf,
    /// Entry payload bytes.
    #[arg(long, default_value_t = 256)]
    payload: usize,
    /// Records per run (at most flush-every × raw-syncs).
    #[arg(long, default_value_t = 200_000)]
    records: u64,
    /// Records per flush, one run each.
    #[arg(long, default_value = "1,64,1024", value_delimiter = ',')]
    flush_every: Vec<u64>,
    /// fdatasync calls in the raw baseline.
    #[arg(long, default_value_t = 2_000)]
    raw_syncs: u64,
    /// Segment size in bytes.
    #[arg(long, default_value_t = 64 << 20)]
    segment_size: u64,
    /// Write paths to measure: pwrite, mmap.
    #[arg(long, default_value = "pwrite,mmap", value_delimiter = ',')]
    mode: Vec<String>,
}

#[derive(Args)]
struct RaftArgs {
    /// Cluster size.
    #[arg(long, default_value_t = 3)]
    members: u64,
    /// Proposals per batch (comma-separated for several runs).
    #[arg(long, default_value = "1,64", value_delimiter = ',')]
    batch: Vec<usize>,
    /// Payload bytes per proposal.
    #[arg(long, default_value_t = 256)]
    payload: usize,
    /// Proposals to commit per run.
    #[arg(long, default_value_t = 1_000_000)]
    proposals: u64,
}

fn main() {
    let cli = Cli::parse();
    match cli.command {
        Command::Snapshot(SnapshotCmd::Status(a)) => {
            match backup::status(&a.file).and_then(|st| backup::render_status(&st, &a.write_out)) {
                Ok(text) => print!("{text}"),
                Err(e) => {
                    eprintln!("Error: {e}");
                    std::process::exit(1);
                }
            }
        }
        Command::Snapshot(SnapshotCmd::Restore(a)) => restore(a.file, a.flags, a.skip_hash_check),
        Command::Migrate(a) => restore(
            a.from_etcd_data_dir.join("member").join("snap").join("db"),
            a.flags,
            true,
        ),
        Command::Discovery(Discovery::New(a)) => {
            match keel_server::discovery_new::run(&a.endpoint, &a.prefix, a.size) {
                Ok(url) => println!("{url}"),
                Err(e) => {
                    eprintln!("keelctl: discovery new: {e}");
                    std::process::exit(1);
                }
            }
        }
        Command::Bench(Bench::Wal(a)) => bench_wal(a),
        Command::Bench(Bench::Put(a)) => bench_client(
            &a.conn,
            Workload::Put {
                total: a.total,
                key_size: a.key_size,
                val_size: a.val_size,
                key_space_size: a.key_space_size,
                sequential_keys: a.sequential_keys,
            },
        ),
        Command::Bench(Bench::Range(a)) => bench_client(
            &a.conn,
            Workload::Range {
                key: a.key.into_bytes().into(),
                end: a.end.unwrap_or_default().into_bytes().into(),
                total: a.total,
                serializable: a.consistency == "s",
            },
        ),
        Command::Bench(Bench::TxnPut(a)) => bench_client(
            &a.conn,
            Workload::TxnPut {
                total: a.total,
                key_size: a.key_size,
                val_size: a.val_size,
                key_space_size: a.key_space_size,
                txn_ops: a.txn_ops,
            },
        ),
        Command::Bench(Bench::Watch(a)) => bench_client(
            &a.conn,
            Workload::Watch {
                streams: a.streams,
                watchers_per_stream: a.watchers_per_stream,
                put_total: a.put_total,
                key_size: a.key_size,
                val_size: a.val_size,
            },
        ),
        Command::Bench(Bench::K8s(a)) => {
            let load = keel_server::k8s_bench::K8sLoad {
                endpoints: a.endpoints,
                objects: a.objects,
                value_size: a.value_size,
                writers: a.writers,
                listers: a.listers,
                watchers: a.watchers,
                duration: std::time::Duration::from_secs(a.seconds),
            };
            match keel_server::k8s_bench::run(&load) {
                Ok(r) => print!("{}", r.render(load.listers)),
                Err(e) => {
                    eprintln!("keelctl: bench k8s: {e}");
                    std::process::exit(1);
                }
            }
        }
        Command::Bench(Bench::Mvcc(a)) => {
            let r = keel_server::mvcc_bench::run(
                a.keys,
                a.val_size,
                a.reads,
                keel_server::mvcc_bench::HeapCounter {
                    start: start_counting,
                    stop: stop_counting,
                },
            );
            println!(
                "mvcc: {} keys, 8-byte keys, {}-byte values, one thread",
                a.keys, a.val_size
            );
            println!("  puts/s            {:>12.0}", r.puts_per_sec);
            println!("  point reads/s     {:>12.0}", r.reads_per_sec);
            println!(
                "  ranges/s          {:>12.0} ({:.0} keys each on average)",
                r.ranges_per_sec, r.keys_per_range
            );
            println!(
                "  heap per key      {:>12.0} bytes (key+value {:.0}, overhead {:.0})",
                r.heap_per_key,
                r.data_per_key,
                r.heap_per_key - r.data_per_key
            );
            println!(
                "  RSS per key       {:>12.0} bytes (overhead {:.0}, allocator slack included)",
                r.rss_per_key,
                r.rss_per_key - r.data_per_key
            );
        }
        Command::Bench(Bench::Raft(a)) => {
            println!(
                "raft core: {} members, {} B payloads, {} proposals per run, one thread",
                a.members, a.payload, a.proposals
            );
            println!(
                "{:>8} {:>16} {:>10} {:>14}",
                "batch", "proposals/s", "seconds", "msgs/proposal"
            );
            for batch in a.batch {
                let spec = RaftBench {
                    members: a.members,
                    batch,
                    payload: a.payload,
                    proposals: a.proposals,
                };
                match raft_bench::run(spec) {
                    Ok(r) => println!(
                        "{:>8} {:>16.0} {:>10.3} {:>14.2}",
                        batch,
                        r.per_second(),
                        r.seconds,
                        r.messages as f64 / r.committed as f64
                    ),
                    Err(e) => {
                        eprintln!("keelctl: bench raft: {e}");
                        std::process::exit(1);
                    }
                }
            }
        }
    }
}

fn restore(file: std::path::PathBuf, f: RestoreFlags, skip_hash_check: bool) {
    let args = backup::RestoreArgs {
        file: file.clone(),
        data_dir: f.data_dir,
        wal_dir: f.wal_dir,
        name: f.name,
        initial_cluster: f.initial_cluster,
        initial_cluster_token: f.initial_cluster_token,
        initial_advertise_peer_urls: f.initial_advertise_peer_urls,
        skip_hash_check,
    };
    match backup::restore(&args) {
        Ok(r) => println!(
            "restored snapshot {} into {} (member {:x} of cluster {:x}): {} keys at revision {}",
            file.display(),
            r.data_dir.display(),
            r.member_id,
            r.cluster_id,
            r.keys,
            r.revision
        ),
        Err(e) => {
            eprintln!("Error: {e}");
            std::process::exit(1);
        }
    }
}

fn bench_client(conn: &ConnArgs, workload: Workload) {
    match client_bench::run(&conn.target(), &workload) {
        Ok(report) => print!("{}", report.render()),
        Err(e) => {
            eprintln!("keelctl: bench {}: {e}", workload.op());
            std::process::exit(1);
        }
    }
}

fn bench_wal(a: WalArgs) {
    let mut spec = WalBench {
        dir: a.dir.clone(),
        payload: a.payload,
        records: a.records,
        flush_every: a.flush_every.clone(),
        segment_size: a.segment_size,
        raw_syncs: a.raw_syncs,
        mode: WriteMode::Pwrite,
    };
    let fail = |e: String| -> ! {
        eprintln!("keelctl: bench wal: {e}");
        std::process::exit(1);
    };
    let raw = wal_bench::raw_disk(&spec).unwrap_or_else(|e| fail(e.to_string()));
    println!(
        "disk (plain file loops): sequential write {:.1} MB/s, fdatasync {:.0}/s",
        raw.seq_mb_per_sec, raw.syncs_per_sec
    );
    println!(
        "{:>7} {:>12} {:>12} {:>10} {:>10} {:>14} {:>12}",
        "write", "flush every", "records/s", "MB/s", "syncs/s", "vs fdatasync", "vs seq MB/s"
    );
    for mode in &a.mode {
        spec.mode = match mode.as_str() {
            "pwrite" => WriteMode::Pwrite,
            "mmap" => WriteMode::Mmap,
            other => fail(format!("unknown write mode {other:?} (pwrite, mmap)")),
        };
        for k in &spec.flush_every {
            let r = wal_bench::wal_run(&spec, *k).unwrap_or_else(|e| fail(e));
            println!(
                "{:>7} {:>12} {:>12.0} {:>10.1} {:>10.0} {:>13.0}% {:>11.0}%",
                mode,
                r.flush_every,
                r.records_per_sec,
                r.mb_per_sec,
                r.syncs_per_sec,
                100.0 * r.syncs_per_sec / raw.syncs_per_sec,
                100.0 * r.mb_per_sec / raw.seq_mb_per_sec
            );
        }
    }
    let _ = std::fs::remove_dir_all(&a.dir);
}
