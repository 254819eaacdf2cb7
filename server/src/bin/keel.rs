//! keel: a Keel member, started with etcd's flags and `ETCD_*` environment.
//!
//! With no flags it starts a single member on localhost:2379/2380 with its data dir
//! (`default.keel`) in the current directory, as `etcd` does.

use std::process::ExitCode;

use keel_server::launch;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    if keel_core::PLANTED_BUGS {
        // A build that unified the simulator's features into this binary: never serve.
        eprintln!("keel: this binary was built with keel-core's planted-bugs feature (a simulation build); rebuild it with `cargo build --release --bin keel`");
        return ExitCode::FAILURE;
    }
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // `keel gateway ...` as `etcd gateway ...`: etcd's L4 proxy subcommand.
    if args.get(1).is_some_and(|a| a == "gateway") {
        let rest: Vec<String> = args[2..]
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        return keel_server::gateway::main(&rest);
    }
    match launch::main(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keel: {e}");
            ExitCode::FAILURE
        }
    }
}
