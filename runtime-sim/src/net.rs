//! Peer messages over madsim's network. madsim delivers with a random latency (so
//! messages reorder) and drops whatever crosses a clogged link (partitions); this layer
//! adds the rest of a bad network: loss, duplication and extra delay, at rates the
//! scenario changes as it runs.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use madsim::net::Endpoint;
use madsim::rand::{thread_rng, Rng};

use crate::api::PEER_TAG;

/// Fault rates of the network between members.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct NetFaultRates {
    /// Probability that a message is lost.
    pub loss: f64,
    /// Probability that a message is delivered twice.
    pub duplicate: f64,
    /// Each copy is held back up to this long (on top of madsim's latency).
    pub max_extra_delay_ms: u64,
}

/// The network faults in force, shared by every member of a run.
#[derive(Clone, Debug, Default)]
pub struct NetFaults(Arc<Mutex<NetFaultRates>>);

impl NetFaults {
    /// The rates now.
    pub fn rates(&self) -> NetFaultRates {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces the rates.
    pub fn set(&self, rates: NetFaultRates) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = rates;
    }
}

/// Sends one encoded raft message, subject to the faults in force.
pub async fn send(ep: &Arc<Endpoint>, to: SocketAddr, msg: Bytes, faults: &NetFaults) {
    send_tagged(ep, to, PEER_TAG, msg, faults).await;
}

/// Sends one message between members under `tag`, subject to the faults in force (the
/// corruption check's HashKV questions travel the peer network as raft's messages do).
pub async fn send_tagged<T: Clone + Send + Sync + 'static>(
    ep: &Arc<Endpoint>,
    to: SocketAddr,
    tag: u64,
    msg: T,
    faults: &NetFaults,
) {
    let rates = faults.rates();
    let (lost, copies, delays) = {
        let mut rng = thread_rng();
        let lost = rates.loss > 0.0 && rng.gen_bool(rates.loss.min(1.0));
        let copies = if rates.duplicate > 0.0 && rng.gen_bool(rates.duplicate.min(1.0)) {
            2
        } else {
            1
        };
        let delays: Vec<u64> = (0..copies)
            .map(|_| {
                if rates.max_extra_delay_ms == 0 {
                    0
                } else {
                    rng.gen_range(0..=rates.max_extra_delay_ms)
                }
            })
            .collect();
        (lost, copies, delays)
    };
    if lost {
        return;
    }
    for delay in delays.into_iter().take(copies) {
        if delay == 0 {
            // A send error means the destination is down: the message is lost, as TCP's
            // would be with the connection.
            let _ = ep.send_to_raw(to, tag, Box::new(msg.clone())).await;
        } else {
            let ep = ep.clone();
            let msg = msg.clone();
            madsim::task::spawn(async move {
                madsim::time::sleep(Duration::from_millis(delay)).await;
                let _ = ep.send_to_raw(to, tag, Box::new(msg)).await;
            });
        }
    }
}
