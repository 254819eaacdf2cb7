//! Plays a schedule's faults against the cluster: each starts at its time, is held for
//! its while, and is undone on its own (faults may overlap). Leader faults find the
//! leader when they start.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::client::Clients;
use crate::cluster::Cluster;
use crate::proxy::Network;
use crate::schedule::{Fault, Held};

/// What faults act on.
pub struct Nemesis {
    /// The proxies.
    pub net: Arc<Network>,
    /// The processes.
    pub cluster: Arc<Mutex<Cluster>>,
    /// For finding the leader.
    pub clients: Clients,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What undoing a fault takes.
enum Undo {
    Cuts(Vec<(usize, usize)>),
    Delay(usize),
    Restart(Vec<usize>),
    Resume(usize),
    Nothing,
}

impl Nemesis {
    /// Plays `faults` (sorted by start); returns a description of each one injected.
    pub async fn play(&self, faults: &[Held]) -> Vec<String> {
        let start = Instant::now();
        let mut handles = Vec::new();
        for h in faults {
            tokio::time::sleep_until(start + h.at).await;
            let (desc, undo) = self.inject(&h.fault).await;
            let end = Instant::now() + h.hold;
            let net = self.net.clone();
            let cluster = self.cluster.clone();
            let reset = match h.fault {
                Fault::ResetConnections(m) => Some(m),
                _ => None,
            };
            handles.push(tokio::spawn(async move {
                // Resets repeat while held: each one closes whatever was redialed.
                while let Some(m) = reset.filter(|_| Instant::now() < end) {
                    tokio::time::sleep(Duration::from_millis(150)).await;
                    net.reset(m);
                }
                tokio::time::sleep_until(end).await;
                match undo {
                    Undo::Cuts(c) => net.restore(&c),
                    Undo::Delay(m) => net.undelay(m),
                    Undo::Restart(ms) => {
                        let mut c = lock(&cluster);
                        for m in ms {
                            let _ = c.start(m);
                        }
                    }
                    Undo::Resume(m) => lock(&cluster).resume(m),
                    Undo::Nothing => {}
                }
            }));
            println!(
                "  +{:>5} ms {desc} for {} ms",
                h.at.as_millis(),
                h.hold.as_millis()
            );
        }
        let mut injected = Vec::new();
        for h in faults {
            injected.push(h.fault.kind().to_string());
        }
        for h in handles {
            let _ = h.await;
        }
        injected
    }

    /// The leader's index, as the members that answer report it.
    async fn leader(&self) -> Option<usize> {
        let mut ids: HashMap<u64, usize> = HashMap::new();
        let mut leader = None;
        for i in 0..self.clients.len() {
            if let Some(s) = self.clients.status(i).await {
                if let Some(h) = s.header {
                    ids.insert(h.member_id, i);
                }
                if s.leader != 0 {
                    leader = Some(s.leader);
                }
            }
        }
        leader.and_then(|l| ids.get(&l).copied())
    }

    fn others(&self, m: usize) -> Vec<usize> {
        (0..self.clients.len()).filter(|&o| o != m).collect()
    }

    fn isolate(&self, m: usize) -> Undo {
        let others = self.others(m);
        self.net.partition(&[m], &others);
        Undo::Cuts(others.iter().flat_map(|&o| [(m, o), (o, m)]).collect())
    }

    async fn inject(&self, fault: &Fault) -> (String, Undo) {
        match fault {
            Fault::IsolateOne(m) => (format!("isolate m{m}"), self.isolate(*m)),
            Fault::IsolateLeader => match self.leader().await {
                Some(l) => (format!("isolate the leader m{l}"), self.isolate(l)),
                None => ("isolate the leader: none".into(), Undo::Nothing),
            },
            Fault::IsolateAll => {
                let n = self.clients.len();
                let mut cuts = Vec::new();
                for a in 0..n {
                    for b in 0..n {
                        if a != b {
                            self.net.cut(a, b);
                            cuts.push((a, b));
                        }
                    }
                }
                ("isolate every member".into(), Undo::Cuts(cuts))
            }
            Fault::OneWayCut { from, to } => {
                self.net.cut(*from, *to);
                (
                    format!("cut m{from} -> m{to}"),
                    Undo::Cuts(vec![(*from, *to)]),
                )
            }
            Fault::Bridge { a, b } => {
                self.net.partition(&[*a], &[*b]);
                (
                    format!("cut m{a} <-> m{b} (bridged by the rest)"),
                    Undo::Cuts(vec![(*a, *b), (*b, *a)]),
                )
            }
            Fault::Latency {
                member,
                delay_ms,
                jitter_ms,
            } => {
                self.net.delay(
                    *member,
                    Duration::from_millis(*delay_ms),
                    Duration::from_millis(*jitter_ms),
                );
                (
                    format!("delay m{member} by {delay_ms} ms + up to {jitter_ms} ms"),
                    Undo::Delay(*member),
                )
            }
            Fault::ResetConnections(m) => {
                self.net.reset(*m);
                (format!("reset m{m}'s peer connections"), Undo::Nothing)
            }
            Fault::Kill(ms) => {
                let mut c = lock(&self.cluster);
                for &m in ms {
                    c.kill(m);
                }
                (format!("kill -9 {ms:?}"), Undo::Restart(ms.clone()))
            }
            Fault::KillLeader => match self.leader().await {
                Some(l) => {
                    lock(&self.cluster).kill(l);
                    (format!("kill -9 the leader m{l}"), Undo::Restart(vec![l]))
                }
                None => ("kill the leader: none".into(), Undo::Nothing),
            },
            Fault::Pause(m) => {
                lock(&self.cluster).pause(*m);
                (format!("SIGSTOP m{m}"), Undo::Resume(*m))
            }
        }
    }
}
