//! keel: the Keel member binary, started with etcd's flags.
//!
//! This build contains Keel's consensus core only; it does not serve etcd's API yet, and
//! says so instead of pretending to start.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--version" || a == "-version") {
        println!("keel {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    eprintln!(
        "keel {}: this build has the raft core but no etcd API server yet; nothing was started",
        env!("CARGO_PKG_VERSION")
    );
    ExitCode::from(2)
}
