//! `keelctl bench raft`: committed proposals per second through an in-memory cluster of
//! raft cores on one thread, with durability acknowledged instantly. It measures the
//! core alone, so the figure bounds what the server can ever get out of consensus.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;
use keel_core::raft::{ConfState, Config, MemberId, Message, RaftNode, Role, Time};

/// What to run.
#[derive(Clone, Copy, Debug)]
pub struct RaftBench {
    /// Cluster size.
    pub members: u64,
    /// Proposals handed to the leader before each drain of outputs.
    pub batch: usize,
    /// Payload bytes per proposal.
    pub payload: usize,
    /// Proposals to commit in total.
    pub proposals: u64,
}

/// What it measured.
#[derive(Clone, Copy, Debug)]
pub struct RaftBenchResult {
    /// Proposals committed (and applied on the leader).
    pub committed: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Messages exchanged between members.
    pub messages: u64,
}

impl RaftBenchResult {
    /// Committed proposals per second.
    pub fn per_second(&self) -> f64 {
        self.committed as f64 / self.seconds
    }
}

struct Bench {
    nodes: Vec<RaftNode>,
    queue: VecDeque<Message>,
    messages: u64,
    applied_on_leader: u64,
    since_compact: u64,
}

impl Bench {
    fn new(members: u64) -> Result<Bench, String> {
        let conf = ConfState::with_voters((1..=members).map(MemberId));
        let nodes = (1..=members)
            .map(|i| {
                let mut cfg = Config::new(MemberId(i));
                cfg.max_inflight_msgs = 4096;
                cfg.compaction_tail = 1_000;
                RaftNode::new(cfg, conf.clone(), Time(0)).map_err(|e| e.to_string())
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Bench {
            nodes,
            queue: VecDeque::new(),
            messages: 0,
            applied_on_leader: 0,
            since_compact: 0,
        })
    }

    /// Runs every member's outputs to quiescence: persist (acknowledged at once), send,
    /// apply. Time stands still, so no timer fires during the run.
    fn drain(&mut self) {
        loop {
            let mut idle = true;
            for i in 0..self.nodes.len() {
                let node = &mut self.nodes[i];
                if !node.has_ready() {
                    continue;
                }
                idle = false;
                let rd = node.ready();
                if let Some(b) = rd.persist {
                    node.persisted(Time(0), b.seq);
                }
                if i == 0 {
                    self.applied_on_leader += rd
                        .committed
                        .iter()
                        .filter(|e| matches!(e.payload, keel_core::raft::EntryPayload::Normal(_)))
                        .count() as u64;
                }
                self.since_compact += rd.committed.len() as u64;
                self.queue.extend(rd.messages);
            }
            // Keep memory flat on long runs, as a real member's snapshots would.
            if self.since_compact > 300_000 {
                self.since_compact = 0;
                for n in &mut self.nodes {
                    n.compact(Time(0), Bytes::new());
                }
            }
            while let Some(m) = self.queue.pop_front() {
                self.messages += 1;
                let to = (m.to.0 - 1) as usize;
                if let Some(n) = self.nodes.get_mut(to) {
                    n.step(Time(0), m);
                }
                idle = false;
            }
            if idle {
                return;
            }
        }
    }
}

/// Runs the benchmark.
pub fn run(spec: RaftBench) -> Result<RaftBenchResult, String> {
    if spec.members == 0 || spec.batch == 0 {
        return Err("members and batch must be positive".into());
    }
    let mut b = Bench::new(spec.members)?;
    // Founders learn their configuration by applying the bootstrap entries first.
    b.drain();
    b.nodes[0].start_election(Time(0));
    b.drain();
    if b.nodes[0].role() != Role::Leader {
        return Err("member 1 did not win the election".into());
    }
    b.applied_on_leader = 0;
    let payload = Bytes::from(vec![0x6b; spec.payload]);
    let start = Instant::now();
    let messages_before = b.messages;
    let mut proposed = 0u64;
    while b.applied_on_leader < spec.proposals {
        let n = (spec.batch as u64).min(spec.proposals - proposed.min(spec.proposals));
        for _ in 0..n.max(1) {
            b.nodes[0]
                .propose(Time(0), payload.clone())
                .map_err(|e| e.to_string())?;
            proposed += 1;
        }
        b.drain();
    }
    Ok(RaftBenchResult {
        committed: b.applied_on_leader,
        seconds: start.elapsed().as_secs_f64(),
        messages: b.messages - messages_before,
    })
}
