//! The history of one key: generations of versions, as etcd's `keyIndex`.
//!
//! A generation runs from a key's creation to its deletion (the tombstone is the last
//! revision of the generation); a new put after a delete starts a new generation. Each
//! revision carries the value written at it, so "key K at revision R" is one search in
//! one key's history.

use std::borrow::Cow;

use bytes::Bytes;
use smallvec::SmallVec;

use super::types::Revision;

/// One version of a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Version {
    pub rev: Revision,
    pub value: Bytes,
    pub lease: i64,
}

/// A key's life from creation to deletion.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Generation {
    /// Versions in revision order. Most keys have one live version between
    /// compactions, so it is stored inline: no allocation per key.
    pub versions: SmallVec<[Version; 1]>,
    /// Number of puts in this generation (the key's version at the last put).
    pub puts: i64,
    /// Revision of the put that created the key (kept when compaction frees it).
    pub created: Revision,
    /// The generation ended with a delete at this revision.
    pub tombstone: Option<Revision>,
}

/// What a key looked like at some revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Visible<'a> {
    pub create: Revision,
    pub modified: Revision,
    pub version: i64,
    pub value: &'a Bytes,
    pub lease: i64,
}

/// Every generation of one key, oldest first, for keys that are not [`Single`]. The
/// last generation is the live one (it may be empty after a delete).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct History {
    pub generations: SmallVec<[Generation; 1]>,
}

/// The most common history by far: a key written once, or compacted down to its one
/// live version. It is stored without the generation and version vectors, with the
/// sub-revisions and the put count narrowed and packed beside each other, so the index
/// entry is one 64-byte cache line, aligned to one: a point read's miss on the entry
/// fetches one line (memory per key and index cache footprint both follow from its
/// size). Histories whose numbers do not fit stay a [`History`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[repr(align(64))]
pub(crate) struct Single {
    created_main: i64,
    modified_main: i64,
    lease: i64,
    value: Bytes,
    created_sub: u16,
    modified_sub: u16,
    puts: u32,
}

impl Single {
    fn created(&self) -> Revision {
        Revision {
            main: self.created_main,
            sub: i64::from(self.created_sub),
        }
    }

    fn modified(&self) -> Revision {
        Revision {
            main: self.modified_main,
            sub: i64::from(self.modified_sub),
        }
    }

    fn visible(&self) -> Visible<'_> {
        Visible {
            create: self.created(),
            modified: self.modified(),
            version: i64::from(self.puts),
            value: &self.value,
            lease: self.lease,
        }
    }

    fn generation(&self) -> Generation {
        Generation {
            versions: smallvec::smallvec![Version {
                rev: self.modified(),
                value: self.value.clone(),
                lease: self.lease,
            }],
            puts: i64::from(self.puts),
            created: self.created(),
            tombstone: None,
        }
    }
}

/// The history of one key in the index. (Two variants only: `Bytes` offers a niche for
/// one more, so the enum is no larger than [`Single`].)
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum KeyIndex {
    /// One live version in one generation.
    Single(Single),
    /// Anything else: several versions or generations, or a tombstone.
    History(Box<History>),
}

impl KeyIndex {
    /// A key's first put.
    pub fn new(rev: Revision, value: Bytes, lease: i64) -> KeyIndex {
        let mut h = History::default();
        h.put(rev, value, lease);
        KeyIndex::from_history(h)
    }

    /// Builds the compact form of a history (as decoded from a snapshot).
    pub fn from_generations(generations: SmallVec<[Generation; 1]>) -> KeyIndex {
        KeyIndex::from_history(History { generations })
    }

    /// The packed form when the history is one live version whose sub-revisions and
    /// put count fit (only a transaction of more than 65535 changes, or a key put more
    /// than four billion times, makes one that does not).
    fn from_history(mut h: History) -> KeyIndex {
        if let [g] = h.generations.as_mut_slice() {
            if let ([v], None) = (g.versions.as_mut_slice(), g.tombstone) {
                if let (Ok(created_sub), Ok(modified_sub), Ok(puts)) = (
                    u16::try_from(g.created.sub),
                    u16::try_from(v.rev.sub),
                    u32::try_from(g.puts),
                ) {
                    return KeyIndex::Single(Single {
                        created_main: g.created.main,
                        modified_main: v.rev.main,
                        created_sub,
                        modified_sub,
                        puts,
                        lease: v.lease,
                        value: std::mem::take(&mut v.value),
                    });
                }
            }
        }
        KeyIndex::History(Box::new(h))
    }

    /// The generations, oldest first (an owned copy for the compact forms; for the
    /// slow paths that walk whole histories: snapshots, hashes, watch catch-up).
    pub fn generations(&self) -> Cow<'_, [Generation]> {
        match self {
            KeyIndex::Single(s) => Cow::Owned(vec![s.generation()]),
            KeyIndex::History(h) => Cow::Borrowed(&h.generations),
        }
    }

    /// Unpacks a [`Single`] before a change it cannot hold.
    fn unpack(&mut self) {
        if let KeyIndex::Single(s) = self {
            let generations = smallvec::smallvec![s.generation()];
            *self = KeyIndex::History(Box::new(History { generations }));
        }
    }

    /// Records a put at `rev`.
    pub fn put(&mut self, rev: Revision, value: Bytes, lease: i64) {
        self.unpack();
        if let KeyIndex::History(h) = self {
            h.put(rev, value, lease);
        }
    }

    /// Records a delete at `rev`; false if the key is not live.
    pub fn tombstone(&mut self, rev: Revision) -> bool {
        self.unpack();
        match self {
            KeyIndex::History(h) => h.tombstone(rev),
            KeyIndex::Single(_) => false,
        }
    }

    /// The key as of revision `at` (main revision: every sub-revision of `at` counts).
    pub fn get(&self, at: i64) -> Option<Visible<'_>> {
        match self {
            KeyIndex::Single(s) => (s.modified_main <= at).then(|| s.visible()),
            KeyIndex::History(h) => h.get(at),
        }
    }

    /// The live version, if the key exists now.
    pub fn latest(&self) -> Option<Visible<'_>> {
        match self {
            KeyIndex::Single(s) => Some(s.visible()),
            KeyIndex::History(h) => h.latest(),
        }
    }

    /// Flips the lowest bit of the newest version's value (an empty value becomes one
    /// byte), beneath every revision: the planted divergence the corruption checks must
    /// find. False if the key has no version.
    #[cfg(feature = "planted-bugs")]
    pub fn flip_newest_value_bit(&mut self) -> bool {
        let value = match self {
            KeyIndex::Single(s) => &mut s.value,
            KeyIndex::History(h) => {
                match h
                    .generations
                    .iter_mut()
                    .rev()
                    .find_map(|g| g.versions.last_mut())
                {
                    Some(v) => &mut v.value,
                    None => return false,
                }
            }
        };
        let mut b = value.to_vec();
        match b.first_mut() {
            Some(first) => *first ^= 1,
            None => b.push(1),
        }
        *value = Bytes::from(b);
        true
    }

    /// Approximate bytes this history holds (for the backend quota).
    pub fn bytes(&self, key_len: usize) -> u64 {
        match self {
            KeyIndex::Single(s) => (key_len + s.value.len() + 32) as u64,
            KeyIndex::History(h) => h.bytes(key_len),
        }
    }

    /// Frees history no read at or above `at` can see; true if nothing is left. A
    /// history left with one live version returns to the compact form.
    pub fn compact(&mut self, at: i64) -> bool {
        let KeyIndex::History(h) = self else {
            return false;
        };
        if h.compact(at) {
            return true;
        }
        let one_live = matches!(h.generations.as_slice(),
            [g] if g.versions.len() == 1 && g.tombstone.is_none());
        if one_live {
            *self = KeyIndex::from_history(std::mem::take(h));
        }
        false
    }
}

impl History {
    /// Records a put at `rev`.
    pub fn put(&mut self, rev: Revision, value: Bytes, lease: i64) {
        if self
            .generations
            .last()
            .is_none_or(|g| g.tombstone.is_some())
        {
            self.generations.push(Generation::default());
        }
        if let Some(g) = self.generations.last_mut() {
            if g.versions.is_empty() {
                g.created = rev;
            }
            g.versions.push(Version { rev, value, lease });
            g.puts += 1;
        }
    }

    /// Records a delete at `rev`; false if the key is not live.
    pub fn tombstone(&mut self, rev: Revision) -> bool {
        match self.generations.last_mut() {
            Some(g) if g.tombstone.is_none() && !g.versions.is_empty() => {
                g.tombstone = Some(rev);
                true
            }
            _ => false,
        }
    }

    /// The key as of revision `at` (main revision: every sub-revision of `at` counts).
    pub fn get(&self, at: i64) -> Option<Visible<'_>> {
        // The generation alive at `at`: created at or before it, not deleted by then.
        let g = self
            .generations
            .iter()
            .rev()
            .find(|g| !g.versions.is_empty() && g.created.main <= at)?;
        if g.tombstone.is_some_and(|t| t.main <= at) {
            return None;
        }
        let n = g.versions.partition_point(|v| v.rev.main <= at);
        let v = g.versions.get(n.checked_sub(1)?)?;
        Some(Visible {
            create: g.created,
            modified: v.rev,
            version: g.puts - (g.versions.len() - n) as i64,
            value: &v.value,
            lease: v.lease,
        })
    }

    /// The live version, if the key exists now.
    pub fn latest(&self) -> Option<Visible<'_>> {
        let g = self.generations.last()?;
        if g.tombstone.is_some() {
            return None;
        }
        let v = g.versions.last()?;
        Some(Visible {
            create: g.created,
            modified: v.rev,
            version: g.puts,
            value: &v.value,
            lease: v.lease,
        })
    }

    /// Approximate bytes this history holds (for the backend quota): key and value bytes
    /// plus a fixed overhead per version and tombstone.
    pub fn bytes(&self, key_len: usize) -> u64 {
        self.generations
            .iter()
            .map(|g| {
                let versions: usize = g
                    .versions
                    .iter()
                    .map(|v| key_len + v.value.len() + 32)
                    .sum();
                (versions + g.tombstone.map_or(0, |_| key_len + 32)) as u64
            })
            .sum()
    }

    /// Frees history at or below `at` that no read at a revision >= `at` can see: in
    /// each generation only the newest version at or below `at` survives, and a
    /// generation whose tombstone is at or below `at` disappears. True if nothing is
    /// left (the key can be dropped from the index).
    pub fn compact(&mut self, at: i64) -> bool {
        // etcd's boundary: compacting at `at` removes history *below* it, so a watch from
        // `at` still sees every event of revision `at`. That needs a delete at exactly
        // `at` (etcd drops it and such a watcher misses it) and the version a change at
        // `at` replaced (its prev_kv); both stay until a later compaction.
        self.generations.retain_mut(|g| {
            if g.tombstone.is_some_and(|t| t.main < at) {
                return false;
            }
            let n = g.versions.partition_point(|v| v.rev.main <= at);
            let changed_at = n > 0 && g.versions[n - 1].rev.main == at;
            let keep = if changed_at { 2 } else { 1 };
            g.versions.drain(..n.saturating_sub(keep));
            !g.versions.is_empty() || g.tombstone.is_some()
        });
        self.generations.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rev(main: i64, sub: i64) -> Revision {
        Revision { main, sub }
    }

    #[test]
    fn an_index_entry_stays_small() {
        // The memory budget per key (key + value + 100 bytes) and the index's cache
        // footprint both rest on this.
        // One cache line, aligned to one.
        assert_eq!(std::mem::size_of::<KeyIndex>(), 64);
        assert_eq!(std::mem::align_of::<KeyIndex>(), 64);
    }

    #[test]
    fn a_single_version_grows_into_a_history_and_compacts_back() {
        let mut ki = KeyIndex::new(rev(2, 1), Bytes::from_static(b"a"), 0);
        assert!(matches!(ki, KeyIndex::Single(_)));
        ki.put(rev(3, 0), Bytes::from_static(b"b"), 7);
        assert!(matches!(ki, KeyIndex::History(_)));
        let at2 = ki.get(2).map(|v| (v.modified, v.version, v.value.clone()));
        assert_eq!(at2, Some((rev(2, 1), 1, Bytes::from_static(b"a"))));
        // Compaction at 3 keeps what revision 3 replaced (a watch from 3 reports it as
        // the previous value); a later compaction frees it.
        assert!(!ki.compact(3));
        assert!(matches!(ki, KeyIndex::History(_)));
        assert_eq!(ki.generations()[0].versions.len(), 2);
        assert!(!ki.compact(4));
        let KeyIndex::Single(s) = &ki else {
            panic!("one live version left: {ki:?}");
        };
        let v = s.visible();
        assert_eq!(
            (v.create, v.modified, v.version, v.lease),
            (rev(2, 1), rev(3, 0), 2, 7)
        );
        assert!(ki.get(2).is_none());
    }

    #[test]
    fn a_deleted_single_is_freed_by_compaction() {
        let mut ki = KeyIndex::new(rev(2, 0), Bytes::from_static(b"a"), 0);
        assert!(ki.tombstone(rev(4, 0)));
        assert!(!ki.tombstone(rev(5, 0)));
        assert!(ki.latest().is_none());
        assert_eq!(ki.get(3).map(|v| v.version), Some(1));
        assert!(!ki.compact(3));
        // The delete at 4 stays through a compaction at 4 (a watch from 4 sees it) and
        // goes with the next one.
        assert!(!ki.compact(4));
        assert!(ki.latest().is_none());
        assert!(ki.compact(5));
    }

    #[test]
    fn sub_revisions_beyond_the_packed_form_keep_a_full_history() {
        for sub in [i64::from(u16::MAX) + 1, i64::from(u32::MAX) + 1] {
            let big = rev(9, sub);
            let ki = KeyIndex::new(big, Bytes::from_static(b"x"), 0);
            assert!(matches!(ki, KeyIndex::History(_)));
            assert_eq!(ki.latest().map(|v| v.modified), Some(big));
            assert_eq!(ki.generations().len(), 1);
        }
        let fits = KeyIndex::new(rev(9, i64::from(u16::MAX)), Bytes::from_static(b"x"), 0);
        assert!(matches!(fits, KeyIndex::Single(_)));
        // A put count beyond the packed form's also keeps the full history.
        let mut g = Generation::default();
        g.versions.push(Version {
            rev: rev(9, 0),
            value: Bytes::from_static(b"x"),
            lease: 3,
        });
        g.created = rev(2, 0);
        g.puts = i64::from(u32::MAX) + 1;
        let ki = KeyIndex::from_generations(smallvec::smallvec![g]);
        assert!(matches!(ki, KeyIndex::History(_)));
        assert_eq!(
            ki.latest().map(|v| v.version),
            Some(i64::from(u32::MAX) + 1)
        );
    }
}
