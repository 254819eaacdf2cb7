//! The keyspace as etcd's backend stores it: one row per change, in revision order (the
//! `key` bucket of etcd's bbolt database: a put's full `KeyValue`, a delete's
//! tombstone). [`KvStore::rows`] writes a keyspace out that way; [`RowImport`] rebuilds
//! key histories from such rows, as etcd's `restoreIntoIndex` does.

use std::collections::BTreeMap;

use bytes::Bytes;
use smallvec::SmallVec;

use super::key_index::{Generation, KeyIndex, Version};
use super::lease::LeaseId;
use super::store::KvStore;
use super::types::{KeyValue, Revision};
use super::value_slab::ValueSlab;

/// One change: a put (its `KeyValue` as of that revision) or a delete (a tombstone; etcd
/// stores only the key for it).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Row {
    /// Revision of the change.
    pub rev: Revision,
    /// A delete.
    pub tombstone: bool,
    /// The key, and for a put its value and metadata.
    pub kv: KeyValue,
}

/// A row that cannot be part of a key's history.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum RowError {
    /// Rows must come in strictly increasing revision order.
    #[error("revision {main}_{sub} is out of order")]
    Order {
        /// Main revision.
        main: i64,
        /// Sub revision.
        sub: i64,
    },
    /// A revision or version no etcd writes (not positive, or past what can be counted).
    #[error("revision {main}_{sub} of key {key:?}: {what}")]
    Invalid {
        /// Main revision.
        main: i64,
        /// Sub revision.
        sub: i64,
        /// The key, lossily as text.
        key: String,
        /// What is wrong.
        what: &'static str,
    },
}

/// Largest revision or version accepted from a file: anything near `i64::MAX` only comes
/// from crafted input, and refusing it keeps later revision arithmetic from overflowing
/// (the same bound as snapshot images).
const MAX_REVISION: i64 = i64::MAX / 2;

impl KvStore {
    /// Every change the keyspace still holds, in revision order. Allocates an ordering of
    /// the changes (a few words each), never a copy of the values.
    pub fn rows(&self) -> impl Iterator<Item = Row> + '_ {
        let keys: Vec<_> = self.export().collect();
        // (revision, key, generation, version; u32::MAX for the generation's tombstone)
        let mut order: Vec<(Revision, u32, u32, u32)> = Vec::new();
        for (k, (_, ki)) in keys.iter().enumerate() {
            for (g, generation) in ki.generations().iter().enumerate() {
                for (v, version) in generation.versions.iter().enumerate() {
                    order.push((version.rev, k as u32, g as u32, v as u32));
                }
                if let Some(t) = generation.tombstone {
                    order.push((t, k as u32, g as u32, u32::MAX));
                }
            }
        }
        order.sort_unstable_by_key(|o| o.0);
        order.into_iter().map(move |(rev, k, g, v)| {
            let (key, ki) = &keys[k as usize];
            let generations = ki.generations();
            let generation = &generations[g as usize];
            let key = Bytes::copy_from_slice(key);
            if v == u32::MAX {
                return Row {
                    rev,
                    tombstone: true,
                    kv: KeyValue {
                        key,
                        ..KeyValue::default()
                    },
                };
            }
            let version = &generation.versions[v as usize];
            Row {
                rev,
                tombstone: false,
                kv: KeyValue {
                    key,
                    create_revision: generation.created.main,
                    mod_revision: rev.main,
                    // The generation's put count is the version of its last put.
                    version: generation.puts - (generation.versions.len() - 1 - v as usize) as i64,
                    value: version.value.clone(),
                    lease: version.lease,
                },
            }
        })
    }
}

/// Rebuilds key histories from rows in revision order.
#[derive(Debug, Default)]
pub struct RowImport {
    keys: BTreeMap<Bytes, SmallVec<[Generation; 1]>>,
    values: ValueSlab,
    last: Option<Revision>,
}

impl RowImport {
    /// No rows yet.
    pub fn new() -> RowImport {
        RowImport::default()
    }

    /// Adds the next row. As etcd's restore: a put continues the key's live generation or
    /// starts one (created at the row itself when its version is 1, else at its
    /// `create_revision`, the creating put having been compacted away); a tombstone ends
    /// the live generation, and one with nothing live to end is skipped.
    pub fn push(&mut self, row: Row) -> Result<(), RowError> {
        let Revision { main, sub } = row.rev;
        let invalid = |what| RowError::Invalid {
            main,
            sub,
            key: String::from_utf8_lossy(&row.kv.key).into_owned(),
            what,
        };
        if !(1..=MAX_REVISION).contains(&main) || !(0..=MAX_REVISION).contains(&sub) {
            return Err(invalid("revision out of range"));
        }
        if self.last.is_some_and(|l| l >= row.rev) {
            return Err(RowError::Order { main, sub });
        }
        if row.kv.key.is_empty() {
            return Err(invalid("empty key"));
        }
        let generations = self.keys.entry(row.kv.key.clone()).or_default();
        let live = generations.last_mut().filter(|g| g.tombstone.is_none());
        if row.tombstone {
            if let Some(g) = live {
                g.tombstone = Some(row.rev);
            }
        } else {
            let kv = &row.kv;
            if !(1..=MAX_REVISION).contains(&kv.version) {
                return Err(invalid("version out of range"));
            }
            if !(1..=main).contains(&kv.create_revision) {
                return Err(invalid("create revision out of range"));
            }
            let version = Version {
                rev: row.rev,
                value: self.values.store(&kv.value),
                lease: kv.lease,
            };
            match live {
                Some(g) => {
                    g.versions.push(version);
                    g.puts = kv.version;
                }
                None => {
                    let created = if kv.version == 1 {
                        row.rev
                    } else {
                        Revision {
                            main: kv.create_revision,
                            sub: 0,
                        }
                    };
                    generations.push(Generation {
                        versions: smallvec::smallvec![version],
                        puts: kv.version,
                        created,
                        tombstone: None,
                    });
                }
            }
            // A version count that went backwards would make earlier versions' numbers
            // negative: only a corrupt file has one.
            if let Some(g) = generations.last() {
                if g.puts < g.versions.len() as i64 {
                    return Err(invalid("version lower than the puts before it"));
                }
            }
        }
        self.last = Some(row.rev);
        Ok(())
    }

    /// The keyspace: at the last row's revision (or `compacted`, if later, as etcd's
    /// restore), compacted at `compacted` (-1: never), with `leases` granted.
    pub fn finish(self, compacted: i64, leases: &[(LeaseId, i64)]) -> KvStore {
        let current = self.last.map_or(1, |r| r.main).max(compacted).max(1);
        let keys = self
            .keys
            .into_iter()
            .filter(|(_, g)| !g.is_empty())
            .map(|(k, g)| (k, KeyIndex::from_generations(g)))
            .collect();
        KvStore::import(keys, current, compacted, leases)
    }
}

#[cfg(test)]
impl KvStore {
    /// Every key as of `rev` (tests comparing a keyspace with its rebuilt copy).
    pub(crate) fn all_at(&self, rev: i64) -> Vec<KeyValue> {
        self.range(&crate::mvcc::RangeRequest {
            key: Bytes::from_static(b"\0"),
            range_end: Bytes::from_static(b"\0"),
            revision: rev,
            ..Default::default()
        })
        .expect("range")
        .kvs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc::{DeleteRangeRequest, PutRequest};

    fn put(s: &mut KvStore, k: &str, v: &str, lease: i64) {
        s.put(&PutRequest {
            key: Bytes::copy_from_slice(k.as_bytes()),
            value: Bytes::copy_from_slice(v.as_bytes()),
            lease,
            ..PutRequest::default()
        })
        .expect("put");
    }

    fn del(s: &mut KvStore, k: &str) {
        s.delete_range(&DeleteRangeRequest {
            key: Bytes::copy_from_slice(k.as_bytes()),
            ..DeleteRangeRequest::default()
        })
        .expect("delete");
    }

    fn sample() -> KvStore {
        let mut s = KvStore::new();
        s.grant_lease(7);
        for i in 0..30 {
            put(&mut s, &format!("k{}", i % 7), &format!("v{i}"), 0);
            if i % 5 == 4 {
                del(&mut s, &format!("k{}", i % 3));
            }
        }
        put(&mut s, "leased", "x", 7);
        s
    }

    fn reimport(s: &KvStore) -> KvStore {
        let mut imp = RowImport::new();
        for r in s.rows() {
            imp.push(r).expect("row");
        }
        imp.finish(s.compacted_revision(), &[(LeaseId(7), 60)])
    }

    #[test]
    fn rows_come_in_revision_order_and_rebuild_the_same_history() {
        let s = sample();
        let rows: Vec<Row> = s.rows().collect();
        assert!(rows.windows(2).all(|w| w[0].rev < w[1].rev));
        assert!(rows.iter().any(|r| r.tombstone));
        let back = reimport(&s);
        assert_eq!(back.revision(), s.revision());
        for rev in 1..=s.revision() {
            assert_eq!(back.all_at(rev), s.all_at(rev), "at revision {rev}");
        }
        assert_eq!(back.lease_keys(7), vec![Bytes::from_static(b"leased")]);
        assert_eq!(back.hash_kv(0), s.hash_kv(0));
    }

    #[test]
    fn a_compacted_store_rebuilds_with_its_compaction() {
        let mut s = sample();
        let at = s.revision() - 5;
        s.compact(at).expect("compact");
        while !s.run_compaction(3) {}
        let back = reimport(&s);
        assert_eq!(back.compacted_revision(), at);
        for rev in at..=s.revision() {
            assert_eq!(back.all_at(rev), s.all_at(rev), "at revision {rev}");
        }
        assert_eq!(back.hash_kv(0), s.hash_kv(0));
    }

    #[test]
    fn rows_out_of_order_or_invalid_are_refused() {
        let row = |main, version| Row {
            rev: Revision { main, sub: 0 },
            tombstone: false,
            kv: KeyValue {
                key: Bytes::from_static(b"a"),
                create_revision: main,
                mod_revision: main,
                version,
                ..KeyValue::default()
            },
        };
        let mut imp = RowImport::new();
        imp.push(row(3, 1)).expect("first");
        assert_eq!(
            imp.push(row(3, 2)),
            Err(RowError::Order { main: 3, sub: 0 })
        );
        assert!(matches!(imp.push(row(4, 0)), Err(RowError::Invalid { .. })));
        assert!(matches!(
            imp.push(row(i64::MAX, 1)),
            Err(RowError::Invalid { .. })
        ));
        // A tombstone with nothing live is skipped, as etcd's restore skips it.
        let mut imp = RowImport::new();
        imp.push(Row {
            tombstone: true,
            ..row(2, 1)
        })
        .expect("lone tombstone");
        assert_eq!(imp.finish(-1, &[]).keys_held(), 0);
    }
}
