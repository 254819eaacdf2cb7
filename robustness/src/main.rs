//! `keel-robustness --seeds 1..10 --keel target/release/keel`: runs seeds, prints
//! `seed=N` and a summary for each, keeps the directory of every failing run, and exits
//! non-zero if any failed.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use keel_robustness::cluster::Server;
use keel_robustness::run::{default_data_dirs, run_seed, Options};
use keel_robustness::schedule::Fault;

#[derive(Parser)]
#[command(about = "Robustness runs of real keel (or etcd) processes under faults")]
struct Args {
    /// Seeds to run: `N`, `A..B` (B excluded) or `A..=B`, or a comma list of these.
    #[arg(long, default_value = "1..11")]
    seeds: String,
    /// The keel binary.
    #[arg(long, default_value = "target/release/keel")]
    keel: PathBuf,
    /// Run etcd (this binary) instead of keel, with the same flags and checks.
    #[arg(long)]
    etcd: Option<PathBuf>,
    /// A planted bug for keel (needs a build with the `robustness-bugs` feature):
    /// ack-before-fsync, commit-without-quorum, lease-read-past-bound.
    #[arg(long)]
    planted_bug: Option<String>,
    /// Only this fault kind (isolate-one, isolate-leader, isolate-all, one-way-cut,
    /// bridge, latency, reset-connections, kill, kill-leader, pause).
    #[arg(long)]
    fault: Option<String>,
    /// Members.
    #[arg(long, default_value_t = 3)]
    members: usize,
    /// Seconds of load per run.
    #[arg(long, default_value_t = 4.0)]
    load_secs: f64,
    /// Where run directories go.
    #[arg(long, default_value = "target/robustness")]
    work_dir: PathBuf,
    /// First port of the range the runs use (30 ports per slot).
    #[arg(long, default_value_t = 3100)]
    first_port: u16,
    /// Port slots to rotate through.
    #[arg(long, default_value_t = 29)]
    slots: u16,
    /// Keep the directories of passing runs too.
    #[arg(long)]
    keep: bool,
    /// Stop at the first failing seed.
    #[arg(long)]
    fail_fast: bool,
}

fn parse_seeds(s: &str) -> Result<Vec<u64>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let num = |x: &str| {
            x.trim()
                .parse::<u64>()
                .map_err(|e| format!("seed {x:?}: {e}"))
        };
        if let Some((a, b)) = part.split_once("..=") {
            out.extend(num(a)?..=num(b)?);
        } else if let Some((a, b)) = part.split_once("..") {
            out.extend(num(a)?..num(b)?);
        } else {
            out.push(num(part)?);
        }
    }
    if out.is_empty() {
        return Err("no seeds".into());
    }
    Ok(out)
}

fn main() -> ExitCode {
    let args = Args::parse();
    let seeds = match parse_seeds(&args.seeds) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("keel-robustness: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(f) = &args.fault {
        if !Fault::KINDS.contains(&f.as_str()) {
            eprintln!(
                "keel-robustness: unknown fault {f:?}; one of {:?}",
                Fault::KINDS
            );
            return ExitCode::FAILURE;
        }
    }
    let server = match &args.etcd {
        Some(path) => Server::Etcd { path: path.clone() },
        None => Server::Keel {
            path: args.keel.clone(),
            planted_bug: args.planted_bug.clone(),
        },
    };
    let work_dir = std::path::absolute(&args.work_dir).unwrap_or(args.work_dir.clone());
    let opts = Options {
        server,
        members: args.members,
        work_dir,
        data_dirs: default_data_dirs(),
        first_port: args.first_port,
        slots: args.slots,
        load: Duration::from_secs_f64(args.load_secs),
        only_fault: args.fault.clone(),
        keep: args.keep,
        heartbeat_ms: 50,
        election_ms: 500,
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("keel-robustness: {e}");
            return ExitCode::FAILURE;
        }
    };
    let started = Instant::now();
    let mut failed = Vec::new();
    let (mut ops, mut unknown, mut events, mut leases, mut faults) = (0, 0, 0, 0, 0);
    for &seed in &seeds {
        println!("seed={seed}");
        let t = Instant::now();
        let r = rt.block_on(run_seed(seed, &opts));
        ops += r.ok;
        unknown += r.unknown;
        events += r.watch_events;
        leases += r.leases;
        faults += r.faults.len();
        println!(
            "seed={seed} {} in {:.1} s: {} ops ok, {} unknown, {} serializable reads, {} watch events, {} leases ({} expired), revision {}, {} new terms, peer connections {}+{} (dialer known+unknown), faults {:?}",
            if r.problems.is_empty() { "passed" } else { "FAILED" },
            t.elapsed().as_secs_f64(),
            r.ok,
            r.unknown,
            r.serial,
            r.watch_events,
            r.leases,
            r.expired_leases,
            r.revision,
            r.new_terms,
            r.dialers.0,
            r.dialers.1,
            r.faults
        );
        if !r.problems.is_empty() {
            for p in &r.problems {
                println!("  problem: {p}");
            }
            println!("  data dirs and member logs kept in {}", r.dir.display());
            failed.push(seed);
            if args.fail_fast {
                break;
            }
        }
    }
    println!(
        "{} seeds in {:.1} s: {ops} operations checked ({unknown} unknown), {events} watch events, {leases} leases, {faults} faults; failed seeds: {failed:?}",
        seeds.len(),
        started.elapsed().as_secs_f64()
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_lists() {
        assert_eq!(parse_seeds("1..4"), Ok(vec![1, 2, 3]));
        assert_eq!(parse_seeds("1..=3,7"), Ok(vec![1, 2, 3, 7]));
        assert!(parse_seeds("x").is_err());
        assert!(parse_seeds("").is_err());
    }
}
