//! What every simulated member reports as it runs, checked as it happens: at most one
//! leader per term (election safety), every member applying the same entry at each
//! index (state machine safety) and the same changes at each revision. A hash of every
//! reported event is the run's trace: the same seed must give the same hash.
//!
//! The changes of every revision, as first applied, are kept: they are the
//! authoritative history the watch and lease checks compare clients' views with.

use std::collections::hash_map::DefaultHasher;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};

use keel_core::mvcc::Event;

/// The changes of one revision, as the first member to apply it reported them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Write {
    /// Every change of the revision (previous key-values included), in order.
    pub events: Vec<Event>,
    /// The lease whose revocation made these changes, if it was a revocation.
    pub revoked_lease: Option<i64>,
    /// Global simulated time when a member first applied it, in ns since the start.
    pub at_ns: u64,
    /// The member that applied it first.
    pub member: u64,
}

#[derive(Debug)]
struct State {
    /// The voters after the newest applied membership change: (log index, voters).
    configuration: Option<(u64, Vec<u64>)>,
    /// Membership changes applied (counted once, by the first member to apply each).
    conf_changes: u64,
    leaders: BTreeMap<u64, u64>,
    applied: BTreeMap<u64, (u64, u64, u64)>,
    violations: Vec<String>,
    trace: DefaultHasher,
    events: u64,
    notes: Vec<String>,
    writes: BTreeMap<u64, Write>,
    counts: BTreeMap<&'static str, u64>,
    /// Per member, when it learned or lost a leader: (global ns, leader known).
    leader_known: BTreeMap<u64, Vec<(u64, bool)>>,
}

/// Shared event sink of one simulated run.
#[derive(Clone, Debug)]
pub struct Observer(Arc<Mutex<State>>);

impl Default for Observer {
    fn default() -> Self {
        Observer(Arc::new(Mutex::new(State {
            configuration: None,
            conf_changes: 0,
            leaders: BTreeMap::new(),
            applied: BTreeMap::new(),
            violations: Vec::new(),
            // Fixed keys: the trace hash must not depend on the process.
            trace: DefaultHasher::new(),
            events: 0,
            notes: Vec::new(),
            writes: BTreeMap::new(),
            counts: BTreeMap::new(),
            leader_known: BTreeMap::new(),
        })))
    }
}

impl Observer {
    fn state(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts `n` occurrences of something a run should exercise (reported, so a test
    /// can require that its seeds reach it).
    pub fn count(&self, what: &'static str, n: u64) {
        let mut s = self.state();
        (13u8, what, n).hash(&mut s.trace);
        *s.counts.entry(what).or_default() += n;
    }

    /// What [`Observer::count`] counted.
    pub fn counts(&self) -> BTreeMap<&'static str, u64> {
        self.state().counts.clone()
    }

    /// Adds an event to the trace hash.
    pub fn trace(&self, event: impl Hash) {
        let mut s = self.state();
        event.hash(&mut s.trace);
        s.events += 1;
    }

    /// `member` learned a leader (`known`) or lost it (a process starts without one) at
    /// global time `at_ns`.
    pub fn leader_known(&self, member: u64, known: bool, at_ns: u64) {
        let mut s = self.state();
        let timeline = s.leader_known.entry(member).or_default();
        if timeline.last().is_none_or(|(_, k)| *k != known) {
            timeline.push((at_ns, known));
        }
    }

    /// What [`Observer::leader_known`] recorded, by member.
    pub fn leader_timelines(&self) -> BTreeMap<u64, Vec<(u64, bool)>> {
        self.state().leader_known.clone()
    }

    /// `member` became leader of `term`.
    pub fn leader(&self, member: u64, term: u64) {
        let mut s = self.state();
        (0u8, member, term).hash(&mut s.trace);
        match s.leaders.get(&term) {
            Some(&other) if other != member => {
                let v = format!(
                    "election safety: members {other:x} and {member:x} both led term {term}"
                );
                s.violations.push(v);
            }
            _ => {
                s.leaders.insert(term, member);
            }
        }
    }

    /// `member` applied the entry at `index` of `term` whose content hashes to `digest`.
    pub fn applied(&self, member: u64, index: u64, term: u64, digest: u64) {
        let mut s = self.state();
        (1u8, member, index, term, digest).hash(&mut s.trace);
        match s.applied.get(&index) {
            Some(&(t, d, first)) if (t, d) != (term, digest) => {
                let v = format!(
                    "state machine safety: member {first:x} applied term {t} at index {index}, \
                     member {member:x} applied a different entry of term {term}"
                );
                s.violations.push(v);
            }
            Some(_) => {}
            None => {
                s.applied.insert(index, (term, digest, member));
            }
        }
    }

    /// `member` applied the changes `events` (one revision, non-empty) at global time
    /// `at_ns`, made by revoking `revoked_lease` if set. Members must agree on them.
    pub fn write(&self, member: u64, events: &[Event], revoked_lease: Option<i64>, at_ns: u64) {
        let Some(revision) = events.first().map(|e| e.rev.main.max(0) as u64) else {
            return;
        };
        let mut s = self.state();
        (10u8, member, revision, events.len()).hash(&mut s.trace);
        match s.writes.get(&revision) {
            Some(w) if w.events != events || w.revoked_lease != revoked_lease => {
                let v = format!(
                    "keyspace divergence: member {:x} applied {:?} (lease {:?}) at revision \
                     {revision}, member {member:x} applied {events:?} (lease {revoked_lease:?})",
                    w.member, w.events, w.revoked_lease
                );
                s.violations.push(v);
            }
            Some(_) => {}
            None => {
                let w = Write {
                    events: events.to_vec(),
                    revoked_lease,
                    at_ns,
                    member,
                };
                s.writes.insert(revision, w);
            }
        }
    }

    /// Every revision's changes reported so far, by revision.
    pub fn writes(&self) -> BTreeMap<u64, Write> {
        self.state().writes.clone()
    }

    /// The highest revision any member applied (1 before the first write).
    pub fn max_revision(&self) -> u64 {
        self.state().writes.keys().next_back().copied().unwrap_or(1)
    }

    /// Something worth printing with a failure (a member stopped on a disk error).
    pub fn note(&self, line: String) {
        let mut s = self.state();
        line.hash(&mut s.trace);
        s.notes.push(line);
    }

    /// A violation found by a check outside the observer.
    pub fn violation(&self, line: String) {
        self.state().violations.push(line);
    }

    /// Invariant violations seen so far.
    pub fn violations(&self) -> Vec<String> {
        self.state().violations.clone()
    }

    /// Notes so far.
    pub fn notes(&self) -> Vec<String> {
        self.state().notes.clone()
    }

    /// The trace hash and the number of events in it.
    pub fn trace_hash(&self) -> (u64, u64) {
        let s = self.state();
        (s.trace.clone().finish(), s.events)
    }

    /// A member applied a membership change at `index`, leaving these voters.
    pub fn configuration(&self, index: u64, voters: Vec<u64>) {
        let mut s = self.state();
        if s.configuration.as_ref().is_none_or(|(i, _)| *i < index) {
            s.configuration = Some((index, voters));
            s.conf_changes += 1;
        }
    }

    /// The voters after the newest applied membership change (None: the founders).
    pub fn voters(&self) -> Option<Vec<u64>> {
        self.state().configuration.as_ref().map(|(_, v)| v.clone())
    }

    /// Membership changes applied so far.
    pub fn conf_changes(&self) -> u64 {
        self.state().conf_changes
    }

    /// The leader of the highest term that had one (0 if none yet).
    pub fn latest_leader(&self) -> u64 {
        self.state()
            .leaders
            .values()
            .next_back()
            .copied()
            .unwrap_or(0)
    }

    /// Terms that had a leader so far.
    pub fn terms_led(&self) -> usize {
        self.state().leaders.len()
    }

    /// The highest index any member applied.
    pub fn max_applied(&self) -> u64 {
        self.state()
            .applied
            .keys()
            .next_back()
            .copied()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_leaders_of_one_term_and_diverging_entries_are_violations() {
        let o = Observer::default();
        o.leader(1, 5);
        o.leader(1, 5);
        o.applied(1, 3, 5, 99);
        o.applied(2, 3, 5, 99);
        assert!(o.violations().is_empty());
        o.leader(2, 5);
        o.applied(3, 3, 5, 98);
        assert_eq!(o.violations().len(), 2, "{:?}", o.violations());
    }

    #[test]
    fn members_applying_different_changes_at_one_revision_is_a_violation() {
        use bytes::Bytes;
        use keel_core::mvcc::{EventKind, KeyValue, Revision};
        let put = |value: &'static str| Event {
            kind: EventKind::Put,
            rev: Revision { main: 2, sub: 0 },
            kv: KeyValue {
                key: Bytes::from_static(b"k"),
                value: Bytes::from_static(value.as_bytes()),
                ..KeyValue::default()
            },
            prev_kv: None,
        };
        let o = Observer::default();
        o.write(1, &[put("a")], None, 10);
        o.write(2, &[put("a")], None, 20);
        assert!(o.violations().is_empty());
        assert_eq!(o.max_revision(), 2);
        assert_eq!(o.writes()[&2].at_ns, 10, "the first application counts");
        o.write(3, &[put("b")], None, 30);
        assert_eq!(o.violations().len(), 1, "{:?}", o.violations());
    }
}
