//! A simulated cluster: one madsim node per member, each with its own disk and clock,
//! and the controls a scenario uses to hurt it: crash and restart (losing unsynced
//! bytes, tearing the last write), pause and resume (a GC-like stall), one-way and
//! two-way partitions, network loss, duplication and delay, clock steps and drift, fsync
//! failures and a full disk.
//!
//! Must be created inside a madsim runtime.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use keel_core::raft::{ConfChange, ReadMode};
use madsim::net::NetSim;
use madsim::runtime::{Handle, NodeHandle};
use madsim::time::Instant;

use crate::api::MEMBER_PORT;
use crate::clock::SkewedClock;
use crate::disk::SimDisk;
use crate::member::{self, Bug, MemberEnv, MemberSpec};
use crate::net::{NetFaultRates, NetFaults};
use crate::observer::Observer;

/// Shape of a simulated cluster.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// Number of members.
    pub members: usize,
    /// Heartbeat interval.
    pub heartbeat_ms: u64,
    /// Election timeout.
    pub election_ms: u64,
    /// How linearizable reads are confirmed.
    pub read_mode: ReadMode,
    /// A planted bug in every member, if any.
    pub bug: Option<Bug>,
    /// Members started outside the configuration, for membership changes to add.
    pub spares: usize,
    /// Member `i`'s clock starts `clock_offsets_ms[i]` ahead of global time (0 for a
    /// member past the end): real clocks never agree exactly.
    pub clock_offsets_ms: Vec<i64>,
    /// Applied entries between a member's own snapshots (None: never on its own).
    pub snapshot_every: Option<u64>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            members: 3,
            heartbeat_ms: 100,
            election_ms: 1000,
            read_mode: ReadMode::Safe,
            bug: None,
            spares: 0,
            clock_offsets_ms: Vec::new(),
            snapshot_every: None,
        }
    }
}

/// A running simulated cluster.
pub struct Cluster {
    handle: Handle,
    nodes: Vec<NodeHandle>,
    ids: Vec<u64>,
    disks: Vec<SimDisk>,
    clocks: Vec<Arc<Mutex<SkewedClock>>>,
    faults: NetFaults,
    obs: Observer,
    down: Vec<bool>,
    paused: Vec<bool>,
    controls: Vec<Arc<Mutex<Vec<ConfChange>>>>,
    founders: usize,
    /// The global clock's zero for the members (times the observer records count from it).
    epoch: Instant,
}

/// The address of member `i` (0-based).
pub fn member_addr(i: usize) -> SocketAddr {
    SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, i as u8 + 1)),
        MEMBER_PORT,
    )
}

impl Cluster {
    /// Starts every member.
    pub fn start(cfg: &ClusterConfig) -> Cluster {
        let handle = Handle::current();
        let epoch = Instant::now();
        let ids: Vec<u64> = (1..=(cfg.members + cfg.spares) as u64).collect();
        let founders: BTreeSet<u64> = ids.iter().copied().take(cfg.members).collect();
        let members: BTreeMap<u64, SocketAddr> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (*id, member_addr(i)))
            .collect();
        let faults = NetFaults::default();
        let obs = Observer::default();
        let mut cluster = Cluster {
            handle: handle.clone(),
            nodes: Vec::new(),
            ids: ids.clone(),
            disks: Vec::new(),
            clocks: Vec::new(),
            faults: faults.clone(),
            obs: obs.clone(),
            down: vec![false; ids.len()],
            paused: vec![false; ids.len()],
            controls: Vec::new(),
            founders: cfg.members,
            epoch,
        };
        for (i, id) in ids.iter().enumerate() {
            let spec = MemberSpec {
                id: *id,
                cluster_id: 0x6b65656c,
                members: members.clone(),
                heartbeat_ms: cfg.heartbeat_ms,
                election_ms: cfg.election_ms,
                read_mode: cfg.read_mode,
                bug: cfg.bug,
                founders: founders.clone(),
                snapshot_every: cfg.snapshot_every,
            };
            let env = MemberEnv {
                disk: SimDisk::new(),
                clock: Arc::new(Mutex::new(SkewedClock::new(
                    cfg.clock_offsets_ms.get(i).copied().unwrap_or(0),
                    0,
                ))),
                faults: faults.clone(),
                obs: obs.clone(),
                epoch,
                control: Arc::new(Mutex::new(Vec::new())),
            };
            cluster.controls.push(env.control.clone());
            cluster.disks.push(env.disk.clone());
            cluster.clocks.push(env.clock.clone());
            let node = handle
                .create_node()
                .name(format!("m{id}"))
                .ip(member_addr(i).ip())
                .init(move || member::run(spec.clone(), env.clone()))
                .build();
            cluster.nodes.push(node);
        }
        cluster
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the cluster has no members.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The global clock's zero: the observer's times count from it.
    pub fn epoch(&self) -> Instant {
        self.epoch
    }

    /// Member IDs, by index.
    pub fn ids(&self) -> &[u64] {
        &self.ids
    }

    /// The run's observer.
    pub fn observer(&self) -> &Observer {
        &self.obs
    }

    /// Member `i`'s disk.
    pub fn disk(&self, i: usize) -> &SimDisk {
        &self.disks[i]
    }

    /// Whether member `i` is crashed.
    pub fn is_down(&self, i: usize) -> bool {
        self.down[i]
    }

    /// Whether member `i` is paused.
    pub fn is_paused(&self, i: usize) -> bool {
        self.paused[i]
    }

    /// Power loss at member `i`: the process dies, unsynced bytes are lost and the oldest
    /// unsynced write of each file is torn after `tear` bytes.
    pub fn crash(&mut self, i: usize, tear: Option<usize>) {
        if self.down[i] {
            return;
        }
        self.handle.kill(self.nodes[i].id());
        self.disks[i].crash(tear);
        self.down[i] = true;
        self.paused[i] = false;
        self.obs.trace((2u8, i, tear));
    }

    /// Starts member `i` again from what its disk holds.
    pub fn restart(&mut self, i: usize) {
        if !self.down[i] {
            return;
        }
        self.handle.restart(self.nodes[i].id());
        self.down[i] = false;
        self.obs.trace((3u8, i));
    }

    /// Stops scheduling member `i` (a long GC pause or a stalled VM).
    pub fn pause(&mut self, i: usize) {
        if self.down[i] || self.paused[i] {
            return;
        }
        self.handle.pause(self.nodes[i].id());
        self.paused[i] = true;
        self.obs.trace((4u8, i));
    }

    /// Resumes a paused member.
    pub fn resume(&mut self, i: usize) {
        if !self.paused[i] {
            return;
        }
        self.handle.resume(self.nodes[i].id());
        self.paused[i] = false;
        self.obs.trace((5u8, i));
    }

    /// Drops every message from member `from` to member `to` (one way).
    pub fn cut(&self, from: usize, to: usize) {
        NetSim::current().clog_link(self.nodes[from].id(), self.nodes[to].id());
        self.obs.trace((6u8, from, to));
    }

    /// Splits the members into `side` and the rest (both ways).
    pub fn partition(&self, side: &[usize]) {
        for a in 0..self.len() {
            for b in 0..self.len() {
                if side.contains(&a) && !side.contains(&b) {
                    self.cut(a, b);
                    self.cut(b, a);
                }
            }
        }
    }

    /// Cuts member `i` off from every other member (clients still reach it).
    pub fn isolate(&self, i: usize) {
        self.partition(&[i]);
    }

    /// Repairs every link between members.
    pub fn heal(&self) {
        let net = NetSim::current();
        for a in &self.nodes {
            for b in &self.nodes {
                if a.id() != b.id() {
                    net.unclog_link(a.id(), b.id());
                }
            }
        }
        self.obs.trace(7u8);
    }

    /// Sets loss, duplication and delay between members.
    pub fn set_net_faults(&self, rates: NetFaultRates) {
        self.faults.set(rates);
        self.obs
            .trace((8u8, rates.max_extra_delay_ms, rates.loss.to_bits()));
    }

    /// Steps member `i`'s clock by `delta_ms` and sets its drift.
    pub fn skew_clock(&self, i: usize, delta_ms: i64, drift_ppm: i64) {
        let mut c = self.clocks[i].lock().unwrap_or_else(|p| p.into_inner());
        c.step(delta_ms);
        c.set_drift(drift_ppm);
        self.obs.trace((9u8, i, delta_ms, drift_ppm));
    }

    /// Number of founding voters (members `0..founders`); the rest start as spares.
    pub fn founders(&self) -> usize {
        self.founders
    }

    /// Asks member `i` to propose a membership change (only a leader does).
    pub fn reconfigure(&self, i: usize, change: ConfChange) {
        self.controls[i]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(change);
        self.obs.trace((11u8, i, format!("{change:?}")));
    }

    /// The madsim node of member `i` (to spawn tasks on it).
    pub fn node(&self, i: usize) -> &NodeHandle {
        &self.nodes[i]
    }
}
