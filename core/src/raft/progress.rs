//! The leader's view of each follower: how far it matches and how much is in flight.

use std::collections::VecDeque;

use super::types::{LogIndex, Time};

/// How the leader is currently replicating to a follower.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum ReplState {
    /// Position unknown: one append at a time, waiting for the answer (or a heartbeat
    /// interval) before the next.
    Probe {
        /// An append is outstanding.
        paused: bool,
    },
    /// Steady state: appends pipelined optimistically within the in-flight window.
    Replicate,
    /// The follower needs a snapshot; no appends until it is installed.
    Snapshot {
        /// Snapshot index being sent.
        index: LogIndex,
        /// Bytes sent so far.
        sent: u64,
        /// Bytes acknowledged so far.
        acked: u64,
        /// When the last chunk was acknowledged (to resend on silence).
        last_ack: Time,
    },
}

/// Append messages in flight to one follower, bounded by count and bytes.
#[derive(Debug, Default)]
pub(crate) struct Inflights {
    /// (last index of the message, bytes of its entries), oldest first.
    queue: VecDeque<(LogIndex, u64)>,
    bytes: u64,
}

impl Inflights {
    pub fn add(&mut self, last: LogIndex, bytes: u64) {
        self.queue.push_back((last, bytes));
        self.bytes += bytes;
    }

    /// Frees every message whose entries are acknowledged up to `index`.
    pub fn free_to(&mut self, index: LogIndex) {
        while let Some(&(last, bytes)) = self.queue.front() {
            if last > index {
                break;
            }
            self.queue.pop_front();
            self.bytes -= bytes;
        }
    }

    pub fn is_full(&self, max_msgs: usize, max_bytes: u64) -> bool {
        self.queue.len() >= max_msgs || self.bytes >= max_bytes
    }

    pub fn reset(&mut self) {
        self.queue.clear();
        self.bytes = 0;
    }
}

/// Replication state of one member, kept by the leader.
#[derive(Debug)]
pub(crate) struct Progress {
    /// Highest index known to match the leader's log.
    pub matched: LogIndex,
    /// Next index to send.
    pub next: LogIndex,
    pub state: ReplState,
    pub inflights: Inflights,
    /// Heard from since the last check-quorum pass.
    pub recent_active: bool,
    /// Highest heartbeat round this member acknowledged (for read confirmation).
    pub acked_round: u64,
}

impl Progress {
    pub fn new(next: LogIndex) -> Progress {
        Progress {
            matched: LogIndex(0),
            next,
            state: ReplState::Probe { paused: false },
            inflights: Inflights::default(),
            recent_active: false,
            acked_round: 0,
        }
    }

    pub fn become_probe(&mut self) {
        // After a snapshot, resume right after it; otherwise right after the match.
        if let ReplState::Snapshot { index, .. } = self.state {
            self.next = self.matched.max(index).next();
        } else {
            self.next = self.matched.next();
        }
        self.state = ReplState::Probe { paused: false };
        self.inflights.reset();
    }

    pub fn become_replicate(&mut self) {
        self.next = self.matched.next();
        self.state = ReplState::Replicate;
        self.inflights.reset();
    }

    /// Records an acknowledgement up to `index`; false if it told us nothing new.
    pub fn maybe_update(&mut self, index: LogIndex) -> bool {
        let updated = index > self.matched;
        if updated {
            self.matched = index;
        }
        if index >= self.next {
            self.next = index.next();
        }
        if let ReplState::Probe { paused } = &mut self.state {
            *paused = false;
        }
        updated
    }

    /// A rejection of the append at `rejected`; `hint` is where the leader should try next.
    /// False if the rejection is stale (an answer to an older message).
    pub fn maybe_decrease_to(&mut self, rejected: LogIndex, hint: LogIndex) -> bool {
        match self.state {
            ReplState::Replicate => {
                if rejected <= self.matched {
                    return false; // Stale: we already know this matches.
                }
                self.next = self.matched.next();
                true
            }
            ReplState::Probe { .. } => {
                if self.next.prev() != rejected {
                    return false; // Stale: not the probe we are waiting for.
                }
                // `hint` is the highest index that may match: probe right after it.
                let next = rejected.min(hint.next()).max(self.matched.next());
                if next == self.next {
                    // The follower refuses an index it acknowledged before (only a
                    // member told a forged commit index gets here): probing the same
                    // index again at once would repeat the exchange forever. The probe
                    // stays paused; the next heartbeat's answer retries it.
                    return false;
                }
                self.next = next;
                self.state = ReplState::Probe { paused: false };
                true
            }
            ReplState::Snapshot { .. } => false,
        }
    }

    /// Whether an append may be sent now.
    pub fn can_send(&self, max_msgs: usize, max_bytes: u64) -> bool {
        match self.state {
            ReplState::Probe { paused } => !paused,
            ReplState::Replicate => !self.inflights.is_full(max_msgs, max_bytes),
            ReplState::Snapshot { .. } => false,
        }
    }

    /// Records that an append ending at `last` with `bytes` of entries was sent.
    pub fn sent_append(&mut self, last: LogIndex, bytes: u64, had_entries: bool) {
        match &mut self.state {
            ReplState::Replicate => {
                if had_entries {
                    self.next = last.next();
                    self.inflights.add(last, bytes);
                }
            }
            ReplState::Probe { paused } => *paused = true,
            ReplState::Snapshot { .. } => {}
        }
    }
}
