//! What every simulated member reports as it runs, checked as it happens: at most one
//! leader per term (election safety), and every member applying the same entry at each
//! index (state machine safety). A hash of every reported event is the run's trace: the
//! same seed must give the same hash.

use std::collections::hash_map::DefaultHasher;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Debug)]
struct State {
    leaders: BTreeMap<u64, u64>,
    applied: BTreeMap<u64, (u64, u64, u64)>,
    violations: Vec<String>,
    trace: DefaultHasher,
    events: u64,
    notes: Vec<String>,
}

/// Shared event sink of one simulated run.
#[derive(Clone, Debug)]
pub struct Observer(Arc<Mutex<State>>);

impl Default for Observer {
    fn default() -> Self {
        Observer(Arc::new(Mutex::new(State {
            leaders: BTreeMap::new(),
            applied: BTreeMap::new(),
            violations: Vec::new(),
            // Fixed keys: the trace hash must not depend on the process.
            trace: DefaultHasher::new(),
            events: 0,
            notes: Vec::new(),
        })))
    }
}

impl Observer {
    fn state(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds an event to the trace hash.
    pub fn trace(&self, event: impl Hash) {
        let mut s = self.state();
        event.hash(&mut s.trace);
        s.events += 1;
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

    /// The leader of the highest term that had one (0 if none yet).
    pub fn latest_leader(&self) -> u64 {
        self.state()
            .leaders
            .values()
            .next_back()
            .copied()
            .unwrap_or(0)
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
}
