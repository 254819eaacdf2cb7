//! Member processes: the shipped `keel` binary, or `etcd` with the same flags, each on
//! loopback with its client port, its real peer port (which only its proxy dials) and
//! its advertised peer port (the proxy's), logging to a file in the run directory.
//!
//! A member's data dir is whatever directory the caller gives (a temporary dir, or a
//! mount of a filesystem that loses unsynced writes). Every process is killed when the
//! cluster is dropped.

use std::fs::{File, OpenOptions};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// Which server to run.
#[derive(Clone, Debug)]
pub enum Server {
    /// keel; `planted_bug` is passed as `KEEL_PLANTED_BUG` (only a build with the
    /// `robustness-bugs` feature reads it).
    Keel {
        /// The binary.
        path: PathBuf,
        /// A planted bug's name, if any.
        planted_bug: Option<String>,
    },
    /// etcd 3.4's binary, to show the runner passes a correct implementation.
    Etcd {
        /// The binary.
        path: PathBuf,
    },
}

/// One member's addresses and files.
#[derive(Clone, Debug)]
pub struct MemberSpec {
    /// `m0`, `m1`, ...
    pub name: String,
    /// Client URL's address.
    pub client: SocketAddr,
    /// The port the member listens on for peers.
    pub peer: SocketAddr,
    /// The port it advertises: its proxy's.
    pub proxy: SocketAddr,
    /// Its data dir.
    pub data_dir: PathBuf,
    /// Its log file (stdout and stderr, appended across restarts).
    pub log: PathBuf,
}

/// A member's process state.
enum Proc {
    Down,
    Running(Child),
    Paused(Child),
}

/// The cluster's processes.
pub struct Cluster {
    server: Server,
    /// The members.
    pub members: Vec<MemberSpec>,
    token: String,
    heartbeat_ms: u64,
    election_ms: u64,
    procs: Vec<Proc>,
}

impl Cluster {
    /// A cluster of `members`, none started yet.
    pub fn new(
        server: Server,
        members: Vec<MemberSpec>,
        token: String,
        heartbeat_ms: u64,
        election_ms: u64,
    ) -> Cluster {
        let procs = members.iter().map(|_| Proc::Down).collect();
        Cluster {
            server,
            members,
            token,
            heartbeat_ms,
            election_ms,
            procs,
        }
    }

    fn command(&self, i: usize) -> Command {
        let m = &self.members[i];
        let initial: Vec<String> = self
            .members
            .iter()
            .map(|o| format!("{}=http://{}", o.name, o.proxy))
            .collect();
        let (path, bug) = match &self.server {
            Server::Keel { path, planted_bug } => (path, planted_bug.clone()),
            Server::Etcd { path } => (path, None),
        };
        let mut c = Command::new(path);
        c.arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(&m.data_dir)
            .arg("--listen-client-urls")
            .arg(format!("http://{}", m.client))
            .arg("--advertise-client-urls")
            .arg(format!("http://{}", m.client))
            .arg("--listen-peer-urls")
            .arg(format!("http://{}", m.peer))
            .arg("--initial-advertise-peer-urls")
            .arg(format!("http://{}", m.proxy))
            .arg("--initial-cluster")
            .arg(initial.join(","))
            .arg("--initial-cluster-state")
            .arg("new")
            .arg("--initial-cluster-token")
            .arg(&self.token)
            .arg("--heartbeat-interval")
            .arg(self.heartbeat_ms.to_string())
            .arg("--election-timeout")
            .arg(self.election_ms.to_string());
        if let Some(b) = bug {
            c.env("KEEL_PLANTED_BUG", b);
        }
        c
    }

    fn log_file(&self, i: usize) -> std::io::Result<File> {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.members[i].log)
    }

    /// Starts member `i` (again) on its data dir, if it is not running.
    pub fn start(&mut self, i: usize) -> std::io::Result<()> {
        if !matches!(self.procs[i], Proc::Down) {
            return Ok(());
        }
        std::fs::create_dir_all(&self.members[i].data_dir)?;
        let out = self.log_file(i)?;
        let err = out.try_clone()?;
        let child = self
            .command(i)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()?;
        self.procs[i] = Proc::Running(child);
        Ok(())
    }

    /// kill -9 of member `i` (paused or not), and waits for it.
    pub fn kill(&mut self, i: usize) {
        if let Proc::Running(mut c) | Proc::Paused(mut c) =
            std::mem::replace(&mut self.procs[i], Proc::Down)
        {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGSTOP of member `i`.
    pub fn pause(&mut self, i: usize) {
        match std::mem::replace(&mut self.procs[i], Proc::Down) {
            Proc::Running(c) => {
                signal(&c, "STOP");
                self.procs[i] = Proc::Paused(c);
            }
            other => self.procs[i] = other,
        }
    }

    /// SIGCONT of member `i` if paused.
    pub fn resume(&mut self, i: usize) {
        match std::mem::replace(&mut self.procs[i], Proc::Down) {
            Proc::Paused(c) => {
                signal(&c, "CONT");
                self.procs[i] = Proc::Running(c);
            }
            other => self.procs[i] = other,
        }
    }

    /// Whether member `i`'s process has exited on its own (a crash, a refusal to
    /// start), with its status.
    pub fn exited(&mut self, i: usize) -> Option<std::process::ExitStatus> {
        match &mut self.procs[i] {
            Proc::Running(c) | Proc::Paused(c) => c.try_wait().ok().flatten(),
            Proc::Down => None,
        }
    }

    /// Whether member `i` is meant to be running (started, not killed).
    pub fn is_up(&self, i: usize) -> bool {
        !matches!(self.procs[i], Proc::Down)
    }

    /// Resumes every paused member and starts every killed one.
    pub fn heal(&mut self) -> std::io::Result<()> {
        for i in 0..self.members.len() {
            self.resume(i);
            self.start(i)?;
        }
        Ok(())
    }
}

/// Sends a signal with `kill(1)`: the crate forbids unsafe code, and libc's kill is.
fn signal(c: &Child, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(c.id().to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

impl Cluster {
    /// Kills every member.
    pub fn stop_all(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop_all();
    }
}
