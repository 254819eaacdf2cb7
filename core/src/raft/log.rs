//! The in-memory raft log: entries after the last snapshot, with commit, apply and
//! durability positions.

use std::collections::VecDeque;

use super::types::{Entry, LogIndex, SnapshotMeta, Term};

/// What a follower's append attempt found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum AppendOutcome {
    /// `prev` matched; the log now matches the leader's through `last_new`.
    Matched {
        /// Last index covered by the message.
        last_new: LogIndex,
        /// A conflicting suffix starting here was replaced.
        truncated_at: Option<LogIndex>,
    },
    /// No entry `(prev_index, prev_term)` here: the leader must back up.
    Mismatch,
    /// The message would overwrite a committed entry: never done.
    ConflictsWithCommitted,
}

/// The log between the snapshot and the last entry.
///
/// Positions, always `snapshot.index <= applied <= committed` and `stable <= last_index()`:
/// - `stable`: entries up to here are durable on this member.
/// - `unpersisted_from`: entries from here on were not yet handed to the driver.
#[derive(Debug)]
pub(crate) struct RaftLog {
    snapshot_index: LogIndex,
    snapshot_term: Term,
    entries: VecDeque<Entry>,
    pub committed: LogIndex,
    pub applied: LogIndex,
    pub stable: LogIndex,
    pub unpersisted_from: LogIndex,
    /// Bytes of `entries`, for memory accounting.
    bytes: u64,
}

impl RaftLog {
    /// A log starting right after `snapshot`, holding `entries` (already durable).
    pub fn new(snapshot: &SnapshotMeta, entries: Vec<Entry>) -> RaftLog {
        let bytes = entries.iter().map(Entry::size).sum();
        let last = entries.last().map_or(snapshot.index, |e| e.index);
        RaftLog {
            snapshot_index: snapshot.index,
            snapshot_term: snapshot.term,
            entries: entries.into(),
            committed: snapshot.index,
            applied: snapshot.index,
            stable: last,
            unpersisted_from: last.next(),
            bytes,
        }
    }

    pub fn first_index(&self) -> LogIndex {
        self.snapshot_index.next()
    }

    pub fn snapshot_index(&self) -> LogIndex {
        self.snapshot_index
    }

    pub fn last_index(&self) -> LogIndex {
        LogIndex(self.snapshot_index.0 + self.entries.len() as u64)
    }

    pub fn last_term(&self) -> Term {
        self.entries.back().map_or(self.snapshot_term, |e| e.term)
    }

    /// Bytes of entries held in memory.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Term at `index`; `None` if compacted away or beyond the end.
    pub fn term(&self, index: LogIndex) -> Option<Term> {
        if index == self.snapshot_index {
            return Some(self.snapshot_term);
        }
        self.get(index).map(|e| e.term)
    }

    pub fn get(&self, index: LogIndex) -> Option<&Entry> {
        if index <= self.snapshot_index {
            return None;
        }
        self.entries
            .get((index.0 - self.snapshot_index.0 - 1) as usize)
    }

    pub fn match_term(&self, index: LogIndex, term: Term) -> bool {
        self.term(index) == Some(term)
    }

    /// Raft's up-to-date rule: is a log ending at `(index, term)` at least as complete?
    pub fn is_up_to_date(&self, index: LogIndex, term: Term) -> bool {
        term > self.last_term() || (term == self.last_term() && index >= self.last_index())
    }

    /// Leader path: append entries it created (indices already assigned).
    pub fn append_own(&mut self, entry: Entry) {
        debug_assert_eq!(entry.index, self.last_index().next());
        self.bytes += entry.size();
        self.entries.push_back(entry);
    }

    /// Follower path: entries that follow `(prev_index, prev_term)`. Entries that already
    /// match are skipped; the first conflicting one truncates the log from there.
    pub fn try_append(
        &mut self,
        prev_index: LogIndex,
        prev_term: Term,
        entries: &[Entry],
    ) -> AppendOutcome {
        if !self.match_term(prev_index, prev_term) {
            return AppendOutcome::Mismatch;
        }
        let last_new = LogIndex(prev_index.0 + entries.len() as u64);
        let mut start = None;
        for (k, e) in entries.iter().enumerate() {
            if e.index <= self.snapshot_index {
                continue; // Covered by our snapshot: committed, so identical.
            }
            match self.term(e.index) {
                Some(t) if t == e.term => continue,
                _ => {
                    start = Some(k);
                    break;
                }
            }
        }
        let mut truncated_at = None;
        if let Some(k) = start {
            let at = entries[k].index;
            if at <= self.committed {
                return AppendOutcome::ConflictsWithCommitted;
            }
            if at <= self.last_index() {
                self.truncate_from(at);
                truncated_at = Some(at);
            }
            for e in &entries[k..] {
                self.bytes += e.size();
                self.entries.push_back(e.clone());
            }
        }
        AppendOutcome::Matched {
            last_new,
            truncated_at,
        }
    }

    /// Drops entries at `index` and after (a conflicting suffix).
    fn truncate_from(&mut self, index: LogIndex) {
        let keep = (index.0 - self.snapshot_index.0 - 1) as usize;
        for e in self.entries.drain(keep..) {
            self.bytes -= e.size();
        }
        self.stable = self.stable.min(index.prev());
        self.unpersisted_from = self.unpersisted_from.min(index);
    }

    /// The follower's answer to a rejected append: the largest index `<= index` whose term
    /// is `<= term`, so the leader can skip every entry of a conflicting term at once.
    pub fn find_conflict_by_term(&self, index: LogIndex, term: Term) -> (LogIndex, Term) {
        let mut i = index.min(self.last_index());
        loop {
            match self.term(i) {
                Some(t) if t > term => i = i.prev(),
                Some(t) => return (i, t),
                None => return (i, Term(0)),
            }
        }
    }

    /// Entries in `[lo, last]`, at most `max_bytes` (always at least one if any).
    pub fn entries_from(&self, lo: LogIndex, max_bytes: u64, max_count: usize) -> Vec<Entry> {
        if lo > self.last_index() || lo <= self.snapshot_index {
            return Vec::new();
        }
        let start = (lo.0 - self.snapshot_index.0 - 1) as usize;
        let mut out = Vec::new();
        let mut size = 0u64;
        for e in self.entries.range(start..) {
            if !out.is_empty() && (size + e.size() > max_bytes || out.len() >= max_count) {
                break;
            }
            size += e.size();
            out.push(e.clone());
        }
        out
    }

    /// Entries not yet handed to the driver for persistence; marks them handed.
    pub fn take_unpersisted(&mut self) -> Vec<Entry> {
        let from = self.unpersisted_from.max(self.first_index());
        let out = self.entries_from(from, u64::MAX, usize::MAX);
        self.unpersisted_from = self.last_index().next();
        out
    }

    /// Advances commit to `index` if `index` holds an entry of `term` (leader rule: only
    /// current-term entries are committed by counting).
    pub fn maybe_commit(&mut self, index: LogIndex, term: Term) -> bool {
        if index > self.committed && self.term(index) == Some(term) {
            self.committed = index;
            return true;
        }
        false
    }

    /// Follower rule: commit what the leader says, bounded by what we know matches.
    pub fn commit_to(&mut self, index: LogIndex) {
        let index = index.min(self.last_index());
        if index > self.committed {
            self.committed = index;
        }
    }

    /// Committed, durable, not yet applied entries, at most `max`; marks them applied.
    pub fn take_committed(&mut self, max: usize) -> Vec<Entry> {
        let hi = self.committed.min(self.stable);
        if hi <= self.applied {
            return Vec::new();
        }
        let count = ((hi.0 - self.applied.0) as usize).min(max);
        let out = self.entries_from(self.applied.next(), u64::MAX, count);
        if let Some(last) = out.last() {
            self.applied = last.index;
        }
        out
    }

    /// Replaces the log with a snapshot installed from the leader.
    pub fn restore(&mut self, index: LogIndex, term: Term) {
        self.entries.clear();
        self.bytes = 0;
        self.snapshot_index = index;
        self.snapshot_term = term;
        self.committed = index;
        self.applied = index;
        self.stable = index;
        self.unpersisted_from = index.next();
    }

    /// Drops entries up to `index` (which must be applied), keeping the snapshot boundary
    /// there.
    pub fn compact_to(&mut self, index: LogIndex) {
        if index <= self.snapshot_index || index > self.applied {
            return;
        }
        let Some(term) = self.term(index) else { return };
        let n = (index.0 - self.snapshot_index.0) as usize;
        for e in self.entries.drain(..n) {
            self.bytes -= e.size();
        }
        self.snapshot_index = index;
        self.snapshot_term = term;
    }

    /// All entries after the snapshot (for tests and invariant checks).
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::types::EntryPayload;

    fn log_of(terms: &[u64]) -> RaftLog {
        let entries = terms
            .iter()
            .enumerate()
            .map(|(i, t)| Entry {
                term: Term(*t),
                index: LogIndex(i as u64 + 1),
                payload: EntryPayload::Empty,
            })
            .collect();
        RaftLog::new(&SnapshotMeta::default(), entries)
    }

    fn ents(from: u64, terms: &[u64]) -> Vec<Entry> {
        terms
            .iter()
            .enumerate()
            .map(|(i, t)| Entry {
                term: Term(*t),
                index: LogIndex(from + i as u64),
                payload: EntryPayload::Empty,
            })
            .collect()
    }

    #[test]
    fn conflict_hint_skips_the_whole_conflicting_term() {
        // Follower log terms: 1 1 2 2 2 2 (indices 1..6); the leader probes at (6, term 3).
        let log = log_of(&[1, 1, 2, 2, 2, 2]);
        assert_eq!(
            log.find_conflict_by_term(LogIndex(6), Term(3)),
            (LogIndex(6), Term(2))
        );
        // The leader's log has term 1 up to 2: every term-2 entry is skipped at once.
        assert_eq!(
            log.find_conflict_by_term(LogIndex(6), Term(1)),
            (LogIndex(2), Term(1))
        );
        // Beyond the end the search starts at the last entry.
        assert_eq!(
            log.find_conflict_by_term(LogIndex(60), Term(2)),
            (LogIndex(6), Term(2))
        );
        assert_eq!(
            log.find_conflict_by_term(LogIndex(6), Term(0)),
            (LogIndex(0), Term(0))
        );
    }

    #[test]
    fn append_skips_matching_entries_and_truncates_at_the_first_conflict() {
        let mut log = log_of(&[1, 1, 2, 2]);
        log.stable = LogIndex(4);
        log.unpersisted_from = LogIndex(5);
        // Entries 2..3 match; 4 conflicts (term 3 vs 2) and replaces the suffix.
        let out = log.try_append(LogIndex(1), Term(1), &ents(2, &[1, 2, 3, 3]));
        assert_eq!(
            out,
            AppendOutcome::Matched {
                last_new: LogIndex(5),
                truncated_at: Some(LogIndex(4))
            }
        );
        assert_eq!(log.last_index(), LogIndex(5));
        assert_eq!(log.term(LogIndex(4)), Some(Term(3)));
        assert_eq!(
            log.stable,
            LogIndex(3),
            "the replaced entry is no longer durable"
        );
        assert_eq!(log.take_unpersisted(), ents(4, &[3, 3]));
        // A stale duplicate of an older append changes nothing.
        let out = log.try_append(LogIndex(1), Term(1), &ents(2, &[1]));
        assert_eq!(
            out,
            AppendOutcome::Matched {
                last_new: LogIndex(2),
                truncated_at: None
            }
        );
        assert_eq!(log.last_index(), LogIndex(5));
        assert_eq!(
            log.try_append(LogIndex(5), Term(9), &[]),
            AppendOutcome::Mismatch
        );
    }

    #[test]
    fn committed_entries_are_never_overwritten() {
        let mut log = log_of(&[1, 1, 2]);
        log.committed = LogIndex(3);
        assert_eq!(
            log.try_append(LogIndex(1), Term(1), &ents(2, &[3])),
            AppendOutcome::ConflictsWithCommitted
        );
        assert_eq!(log.term(LogIndex(2)), Some(Term(1)));
    }

    #[test]
    fn apply_waits_for_durability_and_compaction_keeps_the_boundary_term() {
        let mut log = log_of(&[1, 1, 2, 2]);
        log.committed = LogIndex(4);
        log.stable = LogIndex(2);
        assert_eq!(
            log.take_committed(10).len(),
            2,
            "only durable entries apply"
        );
        log.stable = LogIndex(4);
        assert_eq!(log.take_committed(1).len(), 1, "bounded batches");
        assert_eq!(log.take_committed(10).len(), 1);
        log.compact_to(LogIndex(3));
        assert_eq!(log.first_index(), LogIndex(4));
        assert_eq!(log.term(LogIndex(3)), Some(Term(2)));
        assert_eq!(log.term(LogIndex(2)), None);
        assert!(log.entries_from(LogIndex(2), u64::MAX, 10).is_empty());
    }
}
