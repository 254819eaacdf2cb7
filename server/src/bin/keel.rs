//! keel: a Keel member, started with etcd's flags and `ETCD_*` environment.
//!
//! With no flags it starts a single member on localhost:2379/2380 with its data dir
//! (`default.keel`) in the current directory, as `etcd` does.

use std::process::ExitCode;

use keel_server::launch;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    match launch::main(std::env::args_os().collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keel: {e}");
            ExitCode::FAILURE
        }
    }
}
