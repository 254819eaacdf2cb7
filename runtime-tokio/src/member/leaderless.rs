//! Requests that arrive while this member knows no leader (an election is running, or it
//! is cut off from the quorum) wait for one instead of failing at once, as in etcd: its
//! raft node takes no proposals without a leader, so a put blocks until one is elected
//! or its request times out, and a linearizable read waits for a ReadIndex the same way.
//! A client that talks to a follower during an election therefore sees a slower answer,
//! not an error (etcd's clients do not retry a failed put themselves). Clients that want
//! the error at once ask for it with etcd's `hasleader` metadata (see
//! `grpc::interceptor`).
//!
//! Waiting requests are bounded twice: by time (at [`REQUEST_TIMEOUT`] they are answered
//! "request timed out", as the caller's own timer would) and by size (past
//! [`MAX_WAITING`] requests or [`MAX_WAITING_BYTES`] of proposals a request gets "no
//! leader" at once, so a client flood during a long outage cannot grow memory without
//! bound).

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;

use super::driver::Reply;
use super::{ReadFn, ServerError, REQUEST_TIMEOUT};

/// Requests that may wait for a leader at once (proposals and reads together).
pub(super) const MAX_WAITING: usize = 10_000;
/// Bytes of proposals that may wait at once (a proposal may be `--max-request-bytes`,
/// 1.5 MiB by default, so the count alone would allow 15 GB).
pub(super) const MAX_WAITING_BYTES: usize = 64 << 20;

/// A proposal encoded and numbered, waiting for a leader.
pub(super) struct WaitingProposal {
    pub(super) since: Instant,
    pub(super) seq: u64,
    pub(super) data: Bytes,
    pub(super) reply: Reply,
}

/// The requests waiting for a leader, oldest first.
#[derive(Default)]
pub(super) struct Leaderless {
    proposals: VecDeque<WaitingProposal>,
    reads: VecDeque<(Instant, ReadFn)>,
    /// Bytes of the waiting proposals.
    bytes: usize,
}

impl Leaderless {
    fn full(&self, more_bytes: usize) -> bool {
        self.proposals.len() + self.reads.len() >= MAX_WAITING
            || self.bytes + more_bytes > MAX_WAITING_BYTES
    }

    /// Keeps `p` until a leader is known; hands it back when too much waits already.
    pub(super) fn wait_propose(&mut self, p: WaitingProposal) -> Result<(), WaitingProposal> {
        if self.full(p.data.len()) {
            return Err(p);
        }
        self.bytes += p.data.len();
        self.proposals.push_back(p);
        Ok(())
    }

    /// Keeps the reads (each with its arrival) until a leader is known; returns those
    /// that do not fit.
    pub(super) fn wait_reads(
        &mut self,
        reads: impl IntoIterator<Item = (Instant, ReadFn)>,
    ) -> Vec<ReadFn> {
        let mut rest = Vec::new();
        for (since, f) in reads {
            if self.full(0) {
                rest.push(f);
            } else {
                self.reads.push_back((since, f));
            }
        }
        rest
    }

    /// Whether anything waits.
    pub(super) fn is_empty(&self) -> bool {
        self.proposals.is_empty() && self.reads.is_empty()
    }

    /// Answers "request timed out" to whatever has waited [`REQUEST_TIMEOUT`], and drops
    /// proposals whose caller is gone (they must not be proposed later).
    pub(super) fn expire(&mut self, now: Instant) {
        let old = |since: Instant| now.saturating_duration_since(since) >= REQUEST_TIMEOUT;
        while self.reads.front().is_some_and(|(since, _)| old(*since)) {
            if let Some((_, f)) = self.reads.pop_front() {
                f(Err(ServerError::Timeout));
            }
        }
        let proposals = std::mem::take(&mut self.proposals);
        self.bytes = 0;
        for p in proposals {
            if old(p.since) {
                let _ = p.reply.send(Err(ServerError::Timeout));
            } else if !p.reply.is_closed() {
                self.bytes += p.data.len();
                self.proposals.push_back(p);
            }
        }
    }

    /// Everything waiting, oldest first, to submit now that a leader is known.
    /// Proposals whose caller is gone are dropped here too.
    pub(super) fn take(&mut self) -> (Vec<WaitingProposal>, Vec<(Instant, ReadFn)>) {
        self.bytes = 0;
        let proposals = self
            .proposals
            .drain(..)
            .filter(|p| !p.reply.is_closed())
            .collect();
        (proposals, self.reads.drain(..).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::member::{Core, Header};
    use keel_core::node::Outcome;
    use std::time::Duration;
    use tokio::sync::oneshot;

    type ReplyRx = oneshot::Receiver<Result<(Outcome, Header), ServerError>>;

    fn proposal(since: Instant) -> (WaitingProposal, ReplyRx) {
        let (reply, rx) = oneshot::channel();
        let p = WaitingProposal {
            since,
            seq: 1,
            data: Bytes::from_static(b"x"),
            reply,
        };
        (p, rx)
    }

    #[test]
    fn expiry_answers_request_timed_out_and_forgets_abandoned_proposals() {
        let t0 = Instant::now();
        let mut w = Leaderless::default();
        let (old, mut old_rx) = proposal(t0);
        let (abandoned, abandoned_rx) = proposal(t0 + Duration::from_secs(1));
        let (fresh, mut fresh_rx) = proposal(t0 + Duration::from_secs(2));
        for p in [old, abandoned, fresh] {
            assert!(w.wait_propose(p).is_ok());
        }
        drop(abandoned_rx);
        let (read_tx, mut read_rx) = oneshot::channel();
        let read: ReadFn = Box::new(move |r: Result<&mut Core, ServerError>| {
            let _ = read_tx.send(r.err());
        });
        let rest = w.wait_reads([(t0, read)]);
        assert!(rest.is_empty());

        w.expire(t0 + REQUEST_TIMEOUT);
        assert!(matches!(old_rx.try_recv(), Ok(Err(ServerError::Timeout))));
        assert!(matches!(read_rx.try_recv(), Ok(Some(ServerError::Timeout))));
        assert!(
            fresh_rx.try_recv().is_err(),
            "a younger request keeps waiting"
        );
        let (proposals, reads) = w.take();
        assert_eq!(proposals.len(), 1, "only the fresh proposal is left");
        assert!(reads.is_empty());
        assert!(w.is_empty());
    }

    #[test]
    fn past_the_limit_requests_are_handed_back() {
        let t0 = Instant::now();
        let mut w = Leaderless::default();
        let mut keep = Vec::new();
        for _ in 0..MAX_WAITING - 1 {
            let (p, rx) = proposal(t0);
            keep.push(rx);
            assert!(w.wait_propose(p).is_ok());
        }
        let read = |_: Result<&mut Core, ServerError>| {};
        let reads: [(Instant, ReadFn); 2] = [(t0, Box::new(read)), (t0, Box::new(read))];
        let rest = w.wait_reads(reads);
        assert_eq!(rest.len(), 1, "one read fits, the other is handed back");
        let (p, _rx) = proposal(t0);
        assert!(w.wait_propose(p).is_err());
    }

    #[test]
    fn proposals_are_bounded_by_bytes_too() {
        let t0 = Instant::now();
        let mut w = Leaderless::default();
        let big = |rxs: &mut Vec<ReplyRx>| {
            let (mut p, rx) = proposal(t0);
            p.data = Bytes::from(vec![0u8; MAX_WAITING_BYTES / 4]);
            rxs.push(rx);
            p
        };
        let mut rxs = Vec::new();
        for _ in 0..4 {
            assert!(w.wait_propose(big(&mut rxs)).is_ok());
        }
        assert!(w.wait_propose(big(&mut rxs)).is_err(), "the fifth quarter");
        let read = |_: Result<&mut Core, ServerError>| {};
        let reads: [(Instant, ReadFn); 1] = [(t0, Box::new(read))];
        assert!(
            w.wait_reads(reads).is_empty(),
            "reads are not held back by bytes"
        );
        // Once they are taken (a leader is known), the room is back.
        assert_eq!(w.take().0.len(), 4);
        assert!(w.wait_propose(big(&mut rxs)).is_ok());
    }
}
