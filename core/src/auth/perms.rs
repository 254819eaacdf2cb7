//! Whether a request's key range lies inside the union of a user's permitted ranges
//! (etcd's `range_perm_cache.go`: `checkKeyPoint`, `checkKeyInterval` over an interval
//! tree whose `Contains` merges overlapping and adjacent intervals).
//!
//! Ranges follow etcd's conventions, for permissions and requests alike:
//! - an empty `range_end` is the single key `key`;
//! - `range_end == "\0"` is every key at or after `key`;
//! - otherwise the half-open interval `[key, range_end)`.
//!
//! A permission whose interval is empty (`key >= range_end`) covers nothing. A request
//! whose interval is empty is treated as its start key alone (what etcd's interval tree
//! answers for it: an interval holding the key).

use super::{PermKind, Permission};

/// The upper end of an interval.
#[derive(Clone, PartialEq, Eq, Debug)]
enum End {
    /// Exclusive bound.
    Before(Vec<u8>),
    /// Open-ended: every key from the start on.
    Unbounded,
}

impl End {
    /// `key < self`.
    fn above(&self, key: &[u8]) -> bool {
        match self {
            End::Before(e) => key < &e[..],
            End::Unbounded => true,
        }
    }

    /// `self >= other`.
    fn reaches(&self, other: &End) -> bool {
        match (self, other) {
            (End::Unbounded, _) => true,
            (End::Before(_), End::Unbounded) => false,
            (End::Before(a), End::Before(b)) => a >= b,
        }
    }
}

/// Whether `perm` grants `need` (READWRITE grants both).
fn grants(perm: PermKind, need: PermKind) -> bool {
    perm == need || perm == PermKind::ReadWrite
}

/// A permission's interval `[begin, end)`, a single key `k` being `[k, k "\0")`.
fn interval(p: &Permission) -> (&[u8], End) {
    let end = if p.range_end.is_empty() {
        let mut e = p.key.to_vec();
        e.push(0);
        End::Before(e)
    } else if p.range_end[..] == [0] {
        End::Unbounded
    } else {
        End::Before(p.range_end.to_vec())
    };
    (&p.key, end)
}

/// True if `perms` (a user's permissions, from all of its roles) permit `need` on the
/// request range `[key, range_end)` in etcd's conventions. `need` is Read or Write;
/// ReadWrite requires both.
pub fn covers(perms: &[Permission], key: &[u8], range_end: &[u8], need: PermKind) -> bool {
    if need == PermKind::ReadWrite {
        return covers(perms, key, range_end, PermKind::Read)
            && covers(perms, key, range_end, PermKind::Write);
    }
    let mut intervals: Vec<(&[u8], End)> = perms
        .iter()
        .filter(|p| grants(p.kind, need))
        .map(interval)
        .filter(|(b, e)| e.above(b))
        .collect();

    let req_end = if range_end.is_empty() {
        None
    } else if range_end == [0] {
        Some(End::Unbounded)
    } else if key < range_end {
        Some(End::Before(range_end.to_vec()))
    } else {
        None
    };
    let Some(req_end) = req_end else {
        // A single key: some interval must hold it.
        return intervals.iter().any(|(b, e)| *b <= key && e.above(key));
    };

    // Sweep the intervals by start, extending the covered prefix [key, reached).
    intervals.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let mut reached = End::Before(key.to_vec());
    for (b, e) in intervals {
        // A start beyond `reached` leaves a gap at `reached` (later starts are larger).
        if let End::Before(r) = &reached {
            if b > &r[..] {
                break;
            }
        }
        if !reached.reaches(&e) {
            reached = e;
        }
        if reached.reaches(&req_end) {
            return true;
        }
    }
    false
}
