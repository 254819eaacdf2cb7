//! keel: a Keel member, started with etcd's flags and `ETCD_*` environment.
//!
//! With no flags it starts a single member on localhost:2379/2380 with its data dir
//! (`default.keel`) in the current directory, as `etcd` does.

use std::process::ExitCode;

use keel_server::launch;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    if keel_runtime_tokio::ROBUSTNESS_BUGS {
        if let Err(e) = robustness_bugs() {
            eprintln!("keel: {e}");
            return ExitCode::FAILURE;
        }
    } else if keel_core::PLANTED_BUGS {
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

/// A build with the robustness runs' planted bugs: says so on every start, and which bug
/// `KEEL_PLANTED_BUG` selects; refuses a name it does not know.
#[cfg(feature = "robustness-bugs")]
fn robustness_bugs() -> Result<(), String> {
    use keel_runtime_tokio::planted::{PlantedBug, ENV};
    let bug = PlantedBug::from_env()?;
    eprintln!(
        "keel: WARNING: THIS BINARY HAS PLANTED BUGS (robustness-bugs feature) AND MUST NEVER SERVE REAL DATA; \
         {ENV}={bug:?} (one of {:?})",
        PlantedBug::NAMES
    );
    Ok(())
}

#[cfg(not(feature = "robustness-bugs"))]
fn robustness_bugs() -> Result<(), String> {
    Ok(())
}
