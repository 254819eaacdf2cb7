//! keelctl: Keel's operator tool. `keelctl bench raft` measures the consensus core.

use clap::{Args, Parser, Subcommand};
use keel_server::raft_bench::{self, RaftBench};

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
}

#[derive(Subcommand)]
enum Bench {
    /// Committed proposals/s through an in-memory cluster of raft cores on one thread.
    Raft(RaftArgs),
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
