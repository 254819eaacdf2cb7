//! The history of one key: generations of versions, as etcd's `keyIndex`.
//!
//! A generation runs from a key's creation to its deletion (the tombstone is the last
//! revision of the generation); a new put after a delete starts a new generation. Each
//! revision carries the value written at it, so "key K at revision R" is one search in
//! one key's history.

use bytes::Bytes;
use smallvec::SmallVec;

use super::types::Revision;

/// A key as the index stores it: keys up to 24 bytes (most real keys' common case is
/// short) live inside the tree node, so comparisons during a lookup touch no other
/// cache line and the key costs no allocation or reference count.
pub(crate) type IndexKey = SmallVec<[u8; 24]>;

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

/// Every generation of one key, oldest first. The last generation is the live one (it
/// may be empty after a delete).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct KeyIndex {
    /// Inline for the common single-generation key, as `versions` is.
    pub generations: SmallVec<[Generation; 1]>,
}

impl KeyIndex {
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
        self.generations.retain_mut(|g| {
            if g.tombstone.is_some_and(|t| t.main <= at) {
                return false;
            }
            let n = g.versions.partition_point(|v| v.rev.main <= at);
            if n > 1 {
                g.versions.drain(..n - 1);
            }
            !g.versions.is_empty() || g.tombstone.is_some()
        });
        self.generations.is_empty()
    }
}
