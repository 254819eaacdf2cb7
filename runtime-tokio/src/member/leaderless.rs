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
//! "request timed out", as the caller's own timer would) and by number (past
//! [`MAX_WAITING`] a request gets "no leader" at once, so a client flood during a long
//! outage cannot grow memory without bound).

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;

use super::driver::Reply;
use super::{ReadFn, ServerError, REQUEST_TIMEOUT};

/// Requests that may wait for a leader at once (proposals and reads together).
pub(super) const MAX_WAITING: usize = 10_000;

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
}

impl Leaderless {
    fn full(&self) -> bool {
        self.proposals.len() + self.reads.len() >= MAX_WAITING
    }

    /// Keeps `p` until a leader is known; hands it back when too many wait already.
    pub(super) fn wait_propose(&mut self, p: WaitingProposal) -> Result<(), WaitingProposal> {
        if self.full() {
            return Err(p);
        }
        self.proposals.push_back(p);
        Ok(())
    }

    /// Keeps the reads until a leader is known; returns those that do not fit.
    pub(super) fn wait_reads(&mut self, since: Instant, reads: Vec<ReadFn>) -> Vec<ReadFn> {
        let mut rest = Vec::new();
        for f in reads {
            if self.full() {
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
        for p in proposals {
            if old(p.since) {
                let _ = p.reply.send(Err(ServerError::Timeout));
            } else if !p.reply.is_closed() {
                self.proposals.push_back(p);
            }
        }
    }

    /// Everything waiting, oldest first, to submit now that a leader is known.
    /// Proposals whose caller is gone are dropped here too.
    pub(super) fn take(&mut self) -> (Vec<WaitingProposal>, Vec<(Instant, ReadFn)>) {
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
        let rest = w.wait_reads(
            t0,
            vec![Box::new(move |r: Result<&mut Core, ServerError>| {
                let _ = read_tx.send(r.err());
            })],
        );
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
        let rest = w.wait_reads(t0, vec![Box::new(read), Box::new(read)]);
        assert_eq!(rest.len(), 1, "one read fits, the other is handed back");
        let (p, _rx) = proposal(t0);
        assert!(w.wait_propose(p).is_err());
    }
}
