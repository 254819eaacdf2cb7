//! Requests that arrive while this member knows no leader (an election is running, or it
//! is cut off from the quorum) wait for one instead of failing at once, as in etcd: its
//! raft node takes no proposals without a leader, so a put blocks until one is elected
//! or its request's deadline passes, and a linearizable read waits for a ReadIndex the
//! same way. A client that talks to a follower during an election therefore sees a
//! slower answer, not an error (etcd's clients do not retry a failed put themselves).
//! Clients that want the error at once ask for it (clientv3's require-leader, see
//! [`super::Call::require_leader`]).
//!
//! Waiting requests are bounded twice: by time (at its deadline a request is answered
//! "request timed out", as the caller's own timer would) and by size (past
//! [`MAX_WAITING`] requests or [`MAX_WAITING_BYTES`] of proposals a request gets "no
//! leader" at once, so a client flood during a long outage cannot grow memory without
//! bound).

use std::collections::VecDeque;

use bytes::Bytes;

use super::Token;
use crate::raft::Time;

/// Requests that may wait for a leader at once (proposals and reads together).
pub const MAX_WAITING: usize = 10_000;
/// Bytes of proposals that may wait at once (a proposal may be `--max-request-bytes`,
/// 1.5 MiB by default, so the count alone would allow 15 GB).
pub const MAX_WAITING_BYTES: usize = 64 << 20;

/// A proposal encoded and numbered, waiting for a leader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct WaitingProposal {
    pub(super) deadline: Time,
    pub(super) seq: u64,
    pub(super) data: Bytes,
    pub(super) token: Token,
}

/// The requests waiting for a leader, oldest first.
#[derive(Default, Debug)]
pub(super) struct Leaderless {
    proposals: VecDeque<WaitingProposal>,
    /// Linearizable reads: (deadline, token).
    reads: VecDeque<(Time, Token)>,
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

    /// Keeps the reads (each with its deadline) until a leader is known; returns the
    /// tokens of those that do not fit.
    pub(super) fn wait_reads(
        &mut self,
        reads: impl IntoIterator<Item = (Time, Token)>,
    ) -> Vec<Token> {
        let mut rest = Vec::new();
        for (deadline, t) in reads {
            if self.full(0) {
                rest.push(t);
            } else {
                self.reads.push_back((deadline, t));
            }
        }
        rest
    }

    /// Whether anything waits.
    pub(super) fn is_empty(&self) -> bool {
        self.proposals.is_empty() && self.reads.is_empty()
    }

    /// Takes out whatever is past its deadline (to be answered "request timed out"):
    /// such a proposal is never proposed later.
    pub(super) fn expire(&mut self, now: Time) -> Vec<Token> {
        let mut gone = Vec::new();
        self.reads.retain(|(deadline, t)| {
            let keep = now < *deadline;
            if !keep {
                gone.push(*t);
            }
            keep
        });
        let mut bytes = 0;
        self.proposals.retain(|p| {
            let keep = now < p.deadline;
            if keep {
                bytes += p.data.len();
            } else {
                gone.push(p.token);
            }
            keep
        });
        self.bytes = bytes;
        gone
    }

    /// The callers waiting, oldest proposals first, then the reads.
    pub(super) fn tokens(&self) -> impl Iterator<Item = Token> + '_ {
        let proposals = self.proposals.iter().map(|p| p.token);
        proposals.chain(self.reads.iter().map(|(_, t)| *t))
    }

    /// Drops `token`'s request, whose caller is gone: it is never proposed. Whether it
    /// was waiting here.
    pub(super) fn forget(&mut self, token: Token) -> bool {
        if let Some(i) = self.proposals.iter().position(|p| p.token == token) {
            if let Some(p) = self.proposals.remove(i) {
                self.bytes -= p.data.len();
            }
            return true;
        }
        let before = self.reads.len();
        self.reads.retain(|(_, t)| *t != token);
        self.reads.len() != before
    }

    /// Everything waiting, oldest first, to submit now that a leader is known.
    pub(super) fn take(&mut self) -> (Vec<WaitingProposal>, Vec<(Time, Token)>) {
        self.bytes = 0;
        (
            self.proposals.drain(..).collect(),
            self.reads.drain(..).collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proposal(deadline: u64, token: u64, len: usize) -> WaitingProposal {
        WaitingProposal {
            deadline: Time(deadline),
            seq: token,
            data: Bytes::from(vec![0u8; len]),
            token: Token(token),
        }
    }

    #[test]
    fn expiry_takes_out_what_is_due_and_keeps_the_rest() {
        let mut w = Leaderless::default();
        assert!(w.wait_propose(proposal(100, 1, 1)).is_ok());
        assert!(w.wait_propose(proposal(300, 2, 1)).is_ok());
        assert!(w.wait_reads([(Time(100), Token(3))]).is_empty());
        let mut gone = w.expire(Time(100));
        gone.sort();
        assert_eq!(gone, vec![Token(1), Token(3)]);
        let (proposals, reads) = w.take();
        assert_eq!(
            proposals.iter().map(|p| p.token).collect::<Vec<_>>(),
            vec![Token(2)]
        );
        assert!(reads.is_empty());
        assert!(w.is_empty());
    }

    #[test]
    fn a_forgotten_request_is_never_handed_out() {
        let mut w = Leaderless::default();
        assert!(w.wait_propose(proposal(100, 1, 5)).is_ok());
        assert!(w.wait_propose(proposal(100, 2, 7)).is_ok());
        assert!(w.wait_reads([(Time(100), Token(3))]).is_empty());
        assert_eq!(
            w.tokens().collect::<Vec<_>>(),
            [Token(1), Token(2), Token(3)]
        );
        assert!(w.forget(Token(1)));
        assert!(w.forget(Token(3)));
        assert!(!w.forget(Token(3)), "forgotten once");
        assert_eq!(w.bytes, 7, "the forgotten proposal's bytes are freed");
        let (proposals, reads) = w.take();
        assert_eq!(
            proposals.iter().map(|p| p.token).collect::<Vec<_>>(),
            [Token(2)]
        );
        assert!(reads.is_empty());
    }

    #[test]
    fn past_the_limit_requests_are_handed_back() {
        let mut w = Leaderless::default();
        for i in 0..MAX_WAITING as u64 - 1 {
            assert!(w.wait_propose(proposal(100, i, 0)).is_ok());
        }
        let rest = w.wait_reads([(Time(100), Token(1)), (Time(100), Token(2))]);
        assert_eq!(
            rest,
            vec![Token(2)],
            "one read fits, the other is handed back"
        );
        assert!(w.wait_propose(proposal(100, 9, 0)).is_err());
    }

    #[test]
    fn proposals_are_bounded_by_bytes_too() {
        let mut w = Leaderless::default();
        for i in 0..4 {
            assert!(w
                .wait_propose(proposal(100, i, MAX_WAITING_BYTES / 4))
                .is_ok());
        }
        assert!(w.wait_propose(proposal(100, 5, 1)).is_err());
        // Expiry frees the bytes.
        w.expire(Time(100));
        assert!(w.wait_propose(proposal(200, 6, 1)).is_ok());
    }
}
