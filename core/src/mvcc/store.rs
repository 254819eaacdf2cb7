//! The revisioned keyspace: range, put, delete-range, txn and compaction with etcd's
//! semantics (etcd's `mvcc` and `etcdserver/apply.go` are the anchors).

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use bytes::Bytes;

use super::key_index::{KeyIndex, Visible};
use super::keytree::{Key, KeyTree};
use super::lease::LeaseId;
use super::op_counts::{OpCounts, Tally};
use super::types::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, DeleteRangeResponse, Event,
    EventKind, KeyValue, MvccError, PutRequest, PutResponse, RangeRequest, RangeResponse,
    RequestOp, ResponseOp, Revision, SortOrder, SortTarget, TxnRequest, TxnResponse,
};
use super::value_slab::ValueSlab;

/// etcd's default `--max-txn-ops`.
pub const DEFAULT_MAX_TXN_OPS: usize = 128;

/// The keyspace of one member.
#[derive(Clone, Debug)]
pub struct KvStore {
    index: KeyTree<KeyIndex>,
    /// Current main revision (etcd starts at 1).
    current: i64,
    /// The compacted revision (-1: never): revisions below it are gone; reads and
    /// watches at it are served, as etcd serves them.
    compacted: i64,
    /// Keys whose history below `compacted` is still to be freed, from this key on.
    compact_cursor: Option<Key>,
    /// Granted leases and the keys attached to each.
    leases: BTreeMap<i64, BTreeSet<Bytes>>,
    max_txn_ops: usize,
    /// Events of writes since the last [`KvStore::take_events`], in revision order.
    events: Vec<Event>,
    /// Approximate bytes of all history held (for `--quota-backend-bytes`).
    size: u64,
    /// Where written values are kept.
    values: ValueSlab,
    /// etcd's operation counts (this member's own: not replicated, not in images).
    ops: OpCounts,
}

impl Default for KvStore {
    fn default() -> Self {
        KvStore::new()
    }
}

/// The `[key, end)` a request names: `end` empty is the single key; `"\0"` is unbounded.
/// An inverted interval (`end <= key`) needs no check first: the index yields nothing
/// for it.
pub(crate) fn bounds<'a>(key: &'a [u8], range_end: &'a [u8]) -> (Bound<&'a [u8]>, Bound<&'a [u8]>) {
    if range_end.is_empty() {
        (Bound::Included(key), Bound::Included(key))
    } else if range_end == [0] {
        (Bound::Included(key), Bound::Unbounded)
    } else {
        (Bound::Included(key), Bound::Excluded(range_end))
    }
}

pub(crate) fn empty_range(key: &Bytes, range_end: &Bytes) -> bool {
    !range_end.is_empty() && range_end.as_ref() != [0] && range_end <= key
}

fn to_kv(key: Bytes, v: &Visible<'_>) -> KeyValue {
    let mut kv = to_kv_keys_only(key, v);
    kv.value = v.value.clone();
    kv
}

/// [`to_kv`] without the value: skips the value's reference count (an atomic on a
/// chunk header that is often a cache miss).
fn to_kv_keys_only(key: Bytes, v: &Visible<'_>) -> KeyValue {
    KeyValue {
        key,
        create_revision: v.create.main,
        mod_revision: v.modified.main,
        version: v.version,
        value: Bytes::new(),
        lease: v.lease,
    }
}

impl KvStore {
    /// An empty keyspace at revision 1.
    pub fn new() -> KvStore {
        KvStore {
            index: KeyTree::new(),
            current: 1,
            compacted: -1,
            compact_cursor: None,
            leases: BTreeMap::new(),
            max_txn_ops: DEFAULT_MAX_TXN_OPS,
            events: Vec::new(),
            size: 0,
            values: ValueSlab::default(),
            ops: OpCounts::default(),
        }
    }

    /// The operations counted so far (see [`OpCounts`]).
    pub fn op_counts(&self) -> OpCounts {
        self.ops
    }

    /// Carries counts over to a store that replaces this one (a snapshot installed):
    /// they are the member's, not the keyspace's.
    pub fn keep_op_counts(&mut self, ops: OpCounts) {
        self.ops = ops;
    }

    /// Events of the writes since the last call, in revision order (for watchers).
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// Every change to keys in `[key, range_end)` at revisions `from..=to`, in revision
    /// order, from the key histories (for watchers catching up). `from` must not be
    /// below the compacted revision.
    ///
    /// An event's previous key-value is what a range at the revision before it reads, as
    /// etcd looks it up: none when that revision is compacted, even while the version
    /// awaits its physical removal (compaction runs in batches).
    pub fn history(&self, key: &Bytes, range_end: &Bytes, from: i64, to: i64) -> Vec<Event> {
        let mut out = Vec::new();
        let readable =
            |rev: i64, prev: &Option<KeyValue>| prev.clone().filter(|_| rev > self.compacted);
        let (lo, hi) = bounds(key, range_end);
        for (k, ki) in self.index.range(lo, hi) {
            let k = Bytes::copy_from_slice(&k);
            for g in ki.generations().iter() {
                let mut prev: Option<KeyValue> = None;
                let skipped = g.versions.len() as i64;
                for (i, v) in g.versions.iter().enumerate() {
                    let kv = KeyValue {
                        key: k.clone(),
                        create_revision: g.created.main,
                        mod_revision: v.rev.main,
                        version: g.puts - skipped + i as i64 + 1,
                        value: v.value.clone(),
                        lease: v.lease,
                    };
                    if (from..=to).contains(&v.rev.main) {
                        out.push(Event {
                            kind: EventKind::Put,
                            rev: v.rev,
                            kv: kv.clone(),
                            prev_kv: readable(v.rev.main, &prev),
                        });
                    }
                    prev = Some(kv);
                }
                if let Some(t) = g.tombstone.filter(|t| (from..=to).contains(&t.main)) {
                    out.push(Event {
                        kind: EventKind::Delete,
                        rev: t,
                        kv: KeyValue {
                            key: k.clone(),
                            mod_revision: t.main,
                            ..KeyValue::default()
                        },
                        prev_kv: readable(t.main, &prev),
                    });
                }
            }
        }
        out.sort_by_key(|e| e.rev);
        out
    }

    /// Every key's history, in key order (for snapshots).
    pub(crate) fn export(&self) -> impl Iterator<Item = (Key, &KeyIndex)> {
        self.index.iter()
    }

    /// Rebuilds a store from exported histories; lease attachments follow from each
    /// key's live version.
    pub(crate) fn import(
        keys: Vec<(Bytes, KeyIndex)>,
        current: i64,
        compacted: i64,
        leases: &[(LeaseId, i64)],
    ) -> KvStore {
        let mut s = KvStore::new();
        s.current = current;
        s.compacted = compacted;
        for (id, _) in leases {
            s.leases.entry(id.0).or_default();
        }
        for (k, ki) in keys {
            s.size += ki.bytes(k.len());
            if let Some(v) = ki.latest() {
                if v.lease != 0 {
                    s.leases.entry(v.lease).or_default().insert(k.clone());
                }
            }
            s.index.insert(&k, ki);
        }
        s
    }

    /// Sets `--max-txn-ops`.
    pub fn set_max_txn_ops(&mut self, n: usize) {
        self.max_txn_ops = n;
    }

    /// The `--max-txn-ops` limit in force.
    pub fn max_txn_ops(&self) -> usize {
        self.max_txn_ops
    }

    /// The current revision.
    pub fn revision(&self) -> i64 {
        self.current
    }

    /// The compacted revision (-1 if never compacted).
    pub fn compacted_revision(&self) -> i64 {
        self.compacted
    }

    /// Approximate bytes of history held (what the backend quota limits).
    pub fn size_bytes(&self) -> u64 {
        self.size
    }

    /// Keys with any history held.
    pub fn keys_held(&self) -> usize {
        self.index.len()
    }

    /// Makes a lease known (grant); keys may then be attached to it.
    pub fn grant_lease(&mut self, id: i64) {
        self.leases.entry(id).or_default();
    }

    /// Whether a lease was granted and not revoked.
    pub fn lease_exists(&self, id: i64) -> bool {
        self.leases.contains_key(&id)
    }

    /// Keys attached to a lease.
    pub fn lease_keys(&self, id: i64) -> Vec<Bytes> {
        self.leases
            .get(&id)
            .map(|k| k.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Revokes a lease: deletes its keys in one revision. Returns the deleted count.
    pub fn revoke_lease(&mut self, id: i64) -> Result<i64, MvccError> {
        let keys = self.leases.remove(&id).ok_or(MvccError::LeaseNotFound)?;
        let mut w = self.write();
        let mut n = 0;
        for k in keys {
            n += w.delete(&k, &Bytes::new(), false).deleted;
        }
        w.finish();
        Ok(n)
    }

    /// A read at `revision` (0 or less: current).
    pub fn range(&self, r: &RangeRequest) -> Result<RangeResponse, MvccError> {
        self.range_at(r, self.current)
    }

    /// A client's range, as [`KvStore::range`], counted as etcd counts the ranges it
    /// serves (a refused revision included: etcd counts the attempt).
    pub fn serve_range(&mut self, r: &RangeRequest) -> Result<RangeResponse, MvccError> {
        self.ops.end(Tally {
            ranges: 1,
            ..Tally::default()
        });
        self.range(r)
    }

    fn check_read_rev(&self, rev: i64, current: i64) -> Result<i64, MvccError> {
        if rev <= 0 {
            return Ok(current);
        }
        if rev > current {
            return Err(MvccError::FutureRevision);
        }
        if rev < self.compacted {
            return Err(MvccError::Compacted);
        }
        Ok(rev)
    }

    /// Range with `current` as the newest visible revision (a txn sees its own writes).
    fn range_at(&self, r: &RangeRequest, current: i64) -> Result<RangeResponse, MvccError> {
        let at = self.check_read_rev(r.revision, current)?;
        let mut kvs = Vec::new();
        let mut count = 0i64;
        let filtered = r.sort_order != SortOrder::None
            || r.min_mod_revision != 0
            || r.max_mod_revision != 0
            || r.min_create_revision != 0
            || r.max_create_revision != 0;
        // keys_only answers leave values out from the start, unless they are the sort
        // key (etcd sorts first, then drops them).
        let values_for_sort = r.keys_only && r.sort_target == SortTarget::Value;
        let kv = if r.keys_only && !values_for_sort {
            to_kv_keys_only
        } else {
            to_kv
        };
        // Without sorting or filters only `limit + 1` are needed (the extra one sets
        // `more`); the count still covers the whole range.
        let fetch = if filtered || r.limit <= 0 {
            usize::MAX
        } else {
            r.limit as usize + 1
        };
        if r.range_end.is_empty() {
            // A point read: one lookup, no range iteration.
            if let Some(v) = self.index.get(r.key.as_ref()).and_then(|ki| ki.get(at)) {
                count = 1;
                if !r.count_only {
                    // A copy, not a shared slice of the request: an 8-byte allocation
                    // costs less than the atomic reference count, which on x86 also
                    // fences the cache misses of the lookups around it. It also keeps
                    // the response from pinning the request's whole receive buffer.
                    kvs.push(kv(Bytes::copy_from_slice(&r.key), &v));
                }
            }
        } else {
            let (lo, hi) = bounds(&r.key, &r.range_end);
            for (key, ki) in self.index.range(lo, hi) {
                if let Some(v) = ki.get(at) {
                    count += 1;
                    if !r.count_only && kvs.len() < fetch {
                        kvs.push(kv(Bytes::copy_from_slice(&key), &v));
                    }
                }
            }
        }
        if r.count_only {
            return Ok(RangeResponse {
                kvs: Vec::new(),
                more: false,
                count,
            });
        }
        kvs.retain(|kv| {
            (r.min_mod_revision == 0 || kv.mod_revision >= r.min_mod_revision)
                && (r.max_mod_revision == 0 || kv.mod_revision <= r.max_mod_revision)
                && (r.min_create_revision == 0 || kv.create_revision >= r.min_create_revision)
                && (r.max_create_revision == 0 || kv.create_revision <= r.max_create_revision)
        });
        let order = match (r.sort_order, r.sort_target) {
            // Results come in key order already; other targets default to ascending.
            (SortOrder::None, SortTarget::Key) => SortOrder::None,
            (SortOrder::None, _) => SortOrder::Ascend,
            (o, _) => o,
        };
        if order != SortOrder::None {
            let target = r.sort_target;
            kvs.sort_by(|a, b| {
                let o = match target {
                    SortTarget::Key => a.key.cmp(&b.key),
                    SortTarget::Version => a.version.cmp(&b.version),
                    SortTarget::Create => a.create_revision.cmp(&b.create_revision),
                    SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
                    SortTarget::Value => a.value.cmp(&b.value),
                };
                if order == SortOrder::Descend {
                    o.reverse()
                } else {
                    o
                }
            });
        }
        let mut more = false;
        if r.limit > 0 && kvs.len() > r.limit as usize {
            kvs.truncate(r.limit as usize);
            more = true;
        }
        if values_for_sort {
            for kv in &mut kvs {
                kv.value = Bytes::new();
            }
        }
        Ok(RangeResponse { kvs, more, count })
    }

    /// A put in its own revision.
    pub fn put(&mut self, r: &PutRequest) -> Result<PutResponse, MvccError> {
        if let Err(e) = self.check_put(r) {
            // etcd checks the lease before it opens its write transaction, and reads the
            // previous version in it before finding it missing.
            let lease_ok = r.lease == 0 || self.leases.contains_key(&r.lease);
            if e == MvccError::KeyNotFound && lease_ok {
                self.ops.end(Tally {
                    ranges: 1,
                    ..Tally::default()
                });
            }
            return Err(e);
        }
        let mut w = self.write();
        let resp = w.put(r);
        w.finish();
        Ok(resp)
    }

    /// A delete-range; the revision advances only if a key was deleted.
    pub fn delete_range(
        &mut self,
        r: &DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, MvccError> {
        if r.key.is_empty() {
            return Err(MvccError::EmptyKey);
        }
        let mut w = self.write();
        let resp = w.delete(&r.key, &r.range_end, r.prev_kv);
        w.finish();
        Ok(resp)
    }

    fn check_put(&self, r: &PutRequest) -> Result<(), MvccError> {
        if r.key.is_empty() {
            return Err(MvccError::EmptyKey);
        }
        if r.ignore_value && !r.value.is_empty() {
            return Err(MvccError::ValueProvided);
        }
        if r.ignore_lease && r.lease != 0 {
            return Err(MvccError::LeaseProvided);
        }
        if (r.ignore_value || r.ignore_lease)
            && self
                .index
                .get(r.key.as_ref())
                .and_then(KeyIndex::latest)
                .is_none()
        {
            return Err(MvccError::KeyNotFound);
        }
        if r.lease != 0 && !self.leases.contains_key(&r.lease) {
            return Err(MvccError::LeaseNotFound);
        }
        Ok(())
    }

    /// A transaction: compares, then one branch, all at one revision.
    pub fn txn(&mut self, t: &TxnRequest) -> Result<TxnResponse, MvccError> {
        self.check_txn(t)?;
        // As etcd: every compare, nested ones included, is evaluated against the state
        // before the txn, and the whole chosen path is validated before anything is
        // applied, so a txn either applies completely or not at all.
        let mut path = Vec::new();
        // etcd reads the compares (and the previous versions its put checks need) in a
        // read transaction, which a txn that writes ends before the write one.
        let mut read = Tally::default();
        self.compare_path(t, &mut path, &mut read.ranges);
        let writes = !txn_only_ranges(t);
        if writes {
            self.check_put_ranges(t, &path, &mut 0, &mut read.ranges);
        }
        if let Err(e) = self.check_path(t, &path, &mut 0) {
            self.ops.end(read);
            return Err(e);
        }
        if writes {
            self.ops.end(std::mem::take(&mut read));
        }
        let mut w = self.write();
        w.tally = read;
        let resp = w.txn(t, &path, &mut 0);
        w.finish();
        Ok(resp)
    }

    /// The compare results along the chosen path; `read` counts the compares
    /// evaluated (each is a range; the first that fails ends its txn's).
    fn compare_path(&self, t: &TxnRequest, path: &mut Vec<bool>, read: &mut u64) {
        let ok = t.compare.iter().all(|c| {
            *read += 1;
            self.compare_holds(c)
        });
        path.push(ok);
        for op in if ok { &t.success } else { &t.failure } {
            if let RequestOp::Txn(n) = op {
                self.compare_path(n, path, read);
            }
        }
    }

    /// Counts in `read` the ranges etcd's put checks (`checkPut`) make along the chosen
    /// path: one per put that needs its previous version (ignore_value, ignore_lease),
    /// up to the first put refused. False once one is refused.
    fn check_put_ranges(
        &self,
        t: &TxnRequest,
        path: &[bool],
        at: &mut usize,
        read: &mut u64,
    ) -> bool {
        let ok = path.get(*at).copied().unwrap_or(false);
        *at += 1;
        for op in if ok { &t.success } else { &t.failure } {
            match op {
                RequestOp::Txn(n) => {
                    if !self.check_put_ranges(n, path, at, read) {
                        return false;
                    }
                }
                RequestOp::Put(p) => {
                    if p.ignore_value || p.ignore_lease {
                        *read += 1;
                    }
                    if self.check_put(p).is_err() {
                        return false;
                    }
                }
                RequestOp::Range(_) | RequestOp::DeleteRange(_) => {}
            }
        }
        true
    }

    fn check_path(&self, t: &TxnRequest, path: &[bool], at: &mut usize) -> Result<(), MvccError> {
        let ok = path.get(*at).copied().unwrap_or(false);
        *at += 1;
        for op in if ok { &t.success } else { &t.failure } {
            match op {
                RequestOp::Put(p) => self.check_put(p)?,
                RequestOp::Range(r) => {
                    self.check_read_rev(r.revision, self.current)?;
                }
                RequestOp::DeleteRange(d) if d.key.is_empty() => return Err(MvccError::EmptyKey),
                RequestOp::DeleteRange(_) => {}
                RequestOp::Txn(n) => self.check_path(n, path, at)?,
            }
        }
        Ok(())
    }

    fn compare_holds(&self, c: &Compare) -> bool {
        let r = RangeRequest {
            key: c.key.clone(),
            range_end: c.range_end.clone(),
            ..RangeRequest::default()
        };
        let kvs = match self.range_at(&r, self.current) {
            Ok(resp) => resp.kvs,
            Err(_) => return false,
        };
        if kvs.is_empty() {
            // A missing key has version, revisions and lease 0, and no value to compare.
            if matches!(c.target, CompareTarget::Value(_)) {
                return false;
            }
            return compare_kv(c, &KeyValue::default());
        }
        kvs.iter().all(|kv| compare_kv(c, kv))
    }

    fn check_txn(&self, t: &TxnRequest) -> Result<(), MvccError> {
        let max = self.max_txn_ops;
        if t.compare.len() > max || t.success.len() > max || t.failure.len() > max {
            return Err(MvccError::TooManyOps);
        }
        check_intervals(&t.success)?;
        check_intervals(&t.failure)?;
        Ok(())
    }

    /// Compacts history at or below `rev`. Reads below it fail from now on; the memory is
    /// freed incrementally by [`KvStore::run_compaction`].
    pub fn compact(&mut self, rev: i64) -> Result<(), MvccError> {
        if rev <= self.compacted {
            return Err(MvccError::Compacted);
        }
        if rev > self.current {
            return Err(MvccError::FutureRevision);
        }
        self.compacted = rev;
        self.compact_cursor = Some(Key::default());
        Ok(())
    }

    /// Frees compacted history of at most `max_keys` keys; true when done. Drivers call
    /// it between writes so compaction never stalls them.
    pub fn run_compaction(&mut self, max_keys: usize) -> bool {
        let Some(from) = self.compact_cursor.take() else {
            return true;
        };
        let keys: Vec<Key> = self
            .index
            .range(Bound::Included(&from), Bound::Unbounded)
            .take(max_keys.saturating_add(1))
            .map(|(k, _)| k)
            .collect();
        let at = self.compacted;
        for k in keys.iter().take(max_keys) {
            let Some(ki) = self.index.get_mut(k) else {
                continue;
            };
            let before = ki.bytes(k.len());
            let empty = ki.compact(at);
            self.size -= before - ki.bytes(k.len());
            if empty {
                self.index.remove(k);
            }
        }
        if keys.len() > max_keys {
            self.compact_cursor = keys.last().cloned();
            false
        } else {
            true
        }
    }

    fn write(&mut self) -> WriteTxn<'_> {
        let main = self.current + 1;
        WriteTxn {
            store: self,
            main,
            sub: 0,
            tally: Tally::default(),
        }
    }

    /// Flips a bit of the first key's newest value, beneath raft and every revision:
    /// one member's keyspace then differs from its peers' (the simulator's planted
    /// divergence). False if the keyspace holds no value.
    #[cfg(feature = "planted-bugs")]
    pub fn flip_a_value_bit(&mut self) -> bool {
        let Some(key) = self.index.iter().next().map(|(k, _)| k) else {
            return false;
        };
        self.index
            .get_mut(&key)
            .is_some_and(KeyIndex::flip_newest_value_bit)
    }

    /// A hash of the keyspace history at or below `rev` that survives compaction at the
    /// current compacted revision: equal on members that applied the same writes,
    /// whatever their compaction progress (etcd's HashKV meaning).
    pub fn hash_kv(&self, rev: i64) -> Result<u32, MvccError> {
        let rev = self.check_read_rev(rev, self.current)?;
        let mut h = crc32fast::Hasher::new();
        // etcd starts with its bucket's name, so even an empty keyspace hashes to a
        // non-zero value (a zero would vanish from `endpoint hashkv -w json`).
        h.update(b"key");
        for (key, ki) in &self.index {
            for g in ki.generations().iter() {
                if g.tombstone.is_some_and(|t| t.main <= self.compacted) {
                    continue;
                }
                let kept = g.versions.partition_point(|v| v.rev.main <= self.compacted);
                for (i, v) in g.versions.iter().enumerate() {
                    if v.rev.main > rev || (i + 1 < kept) {
                        continue;
                    }
                    h.update(&key);
                    h.update(&v.rev.main.to_be_bytes());
                    h.update(&v.rev.sub.to_be_bytes());
                    h.update(&v.value);
                    h.update(&v.lease.to_be_bytes());
                }
                if let Some(t) = g.tombstone.filter(|t| t.main <= rev) {
                    h.update(&key);
                    h.update(&t.main.to_be_bytes());
                    h.update(&t.sub.to_be_bytes());
                }
            }
        }
        Ok(h.finalize())
    }
}

/// Changes made in one write transaction, all at main revision `main`.
struct WriteTxn<'a> {
    store: &'a mut KvStore,
    main: i64,
    sub: i64,
    /// Its operations, as etcd counts them.
    tally: Tally,
}

impl WriteTxn<'_> {
    fn next_rev(&mut self) -> Revision {
        let r = Revision {
            main: self.main,
            sub: self.sub,
        };
        self.sub += 1;
        r
    }

    /// The newest revision this transaction can see (its own writes included).
    fn read_rev(&self) -> i64 {
        if self.sub > 0 {
            self.main
        } else {
            self.store.current
        }
    }

    fn put(&mut self, r: &PutRequest) -> PutResponse {
        // etcd's apply reads the previous version first when the request needs it.
        if r.ignore_value || r.ignore_lease || r.prev_kv {
            self.tally.ranges += 1;
        }
        self.tally.puts += 1;
        let rev = self.next_rev();
        // One index lookup: the entry is created or found, read for the previous
        // version, and written, before the lease and size bookkeeping.
        let store = &mut *self.store;
        let mut created = None;
        let ki = store.index.get_or_insert_with(&r.key, || {
            // A request's value is usually a slice of a larger buffer (a gRPC frame, a
            // raft append carrying many entries): stored as is, it would keep that whole
            // buffer alive. The store keeps its own copy.
            let value = store.values.store(&r.value);
            created = Some(value.clone());
            KeyIndex::new(rev, value, r.lease)
        });
        let (prev, value, lease) = match created {
            Some(value) => (None, value, r.lease),
            None => {
                let prev = ki.latest().map(|v| to_kv(r.key.clone(), &v));
                let value = match (&prev, r.ignore_value) {
                    (Some(p), true) => p.value.clone(),
                    _ => store.values.store(&r.value),
                };
                let lease = match (&prev, r.ignore_lease) {
                    (Some(p), true) => p.lease,
                    _ => r.lease,
                };
                ki.put(rev, value.clone(), lease);
                (prev, value, lease)
            }
        };
        if let Some(p) = &prev {
            if p.lease != 0 && p.lease != lease {
                if let Some(keys) = self.store.leases.get_mut(&p.lease) {
                    keys.remove(&r.key);
                }
            }
        }
        if lease != 0 {
            self.store
                .leases
                .entry(lease)
                .or_default()
                .insert(Bytes::copy_from_slice(&r.key));
        }
        self.store.size += (r.key.len() + value.len() + 32) as u64;
        self.tally.put_bytes += (r.key.len() + value.len()) as u64;
        let kv = KeyValue {
            key: r.key.clone(),
            create_revision: prev.as_ref().map_or(rev.main, |p| p.create_revision),
            mod_revision: rev.main,
            version: prev.as_ref().map_or(1, |p| p.version + 1),
            value,
            lease,
        };
        self.store.events.push(Event {
            kind: EventKind::Put,
            rev,
            kv,
            prev_kv: prev.clone(),
        });
        PutResponse {
            prev_kv: if r.prev_kv { prev } else { None },
        }
    }

    fn delete(&mut self, key: &Bytes, range_end: &Bytes, prev_kv: bool) -> DeleteRangeResponse {
        if prev_kv {
            self.tally.ranges += 1;
        }
        self.tally.deletes += 1;
        let mut resp = DeleteRangeResponse::default();
        let (lo, hi) = bounds(key, range_end);
        let live: Vec<KeyValue> = self
            .store
            .index
            .range(lo, hi)
            .filter_map(|(k, ki)| ki.latest().map(|v| to_kv(Bytes::copy_from_slice(&k), &v)))
            .collect();
        for kv in live {
            let rev = self.next_rev();
            if let Some(ki) = self.store.index.get_mut(kv.key.as_ref()) {
                ki.tombstone(rev);
                self.store.size += (kv.key.len() + 32) as u64;
            }
            if kv.lease != 0 {
                if let Some(keys) = self.store.leases.get_mut(&kv.lease) {
                    keys.remove(&kv.key);
                }
            }
            resp.deleted += 1;
            self.store.events.push(Event {
                kind: EventKind::Delete,
                rev,
                kv: KeyValue {
                    key: kv.key.clone(),
                    mod_revision: rev.main,
                    ..KeyValue::default()
                },
                prev_kv: Some(kv.clone()),
            });
            if prev_kv {
                resp.prev_kvs.push(kv);
            }
        }
        resp
    }

    /// Executes a validated txn along its precomputed compare path.
    fn txn(&mut self, t: &TxnRequest, path: &[bool], at: &mut usize) -> TxnResponse {
        let succeeded = path.get(*at).copied().unwrap_or(false);
        *at += 1;
        let ops = if succeeded { &t.success } else { &t.failure };
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            responses.push(match op {
                // Validated: the revision is neither compacted nor in the future.
                RequestOp::Range(r) => {
                    self.tally.ranges += 1;
                    ResponseOp::Range(self.store.range_at(r, self.read_rev()).unwrap_or_default())
                }
                RequestOp::Put(p) => ResponseOp::Put(self.put(p)),
                RequestOp::DeleteRange(d) => {
                    ResponseOp::DeleteRange(self.delete(&d.key, &d.range_end, d.prev_kv))
                }
                RequestOp::Txn(n) => ResponseOp::Txn(self.txn(n, path, at)),
            });
        }
        TxnResponse {
            succeeded,
            responses,
        }
    }

    fn finish(self) {
        if self.sub > 0 {
            self.store.current = self.main;
        }
        self.store.ops.end(self.tally);
    }
}

/// etcd's `isTxnReadonly`: every op of both branches is a range (a nested txn is not).
fn txn_only_ranges(t: &TxnRequest) -> bool {
    t.success
        .iter()
        .chain(&t.failure)
        .all(|op| matches!(op, RequestOp::Range(_)))
}

fn compare_kv(c: &Compare, kv: &KeyValue) -> bool {
    let ord = match &c.target {
        CompareTarget::Version(v) => kv.version.cmp(v),
        CompareTarget::Create(v) => kv.create_revision.cmp(v),
        CompareTarget::Mod(v) => kv.mod_revision.cmp(v),
        CompareTarget::Lease(v) => kv.lease.cmp(v),
        CompareTarget::Value(v) => kv.value.as_ref().cmp(v.as_ref()),
    };
    match c.result {
        CompareResult::Equal => ord.is_eq(),
        CompareResult::NotEqual => ord.is_ne(),
        CompareResult::Greater => ord.is_gt(),
        CompareResult::Less => ord.is_lt(),
    }
}

/// A delete's key interval: `[key, end)`, a single key, or unbounded.
#[derive(Clone, Debug)]
struct Interval {
    key: Bytes,
    end: Option<Bytes>,
    point: bool,
}

impl Interval {
    fn contains(&self, k: &Bytes) -> bool {
        if self.point {
            return *k == self.key;
        }
        *k >= self.key && self.end.as_ref().is_none_or(|e| k < e)
    }
}

/// etcd's `checkIntervals`: no key put twice, and no key both put and deleted, in one
/// branch including nested transactions (the two branches of a nested txn exclude each
/// other, so a key put in both is fine).
fn check_intervals(ops: &[RequestOp]) -> Result<(BTreeSet<Bytes>, Vec<Interval>), MvccError> {
    let mut dels: Vec<Interval> = ops
        .iter()
        .filter_map(|op| match op {
            RequestOp::DeleteRange(d) => Some(if d.range_end.is_empty() {
                Interval {
                    key: d.key.clone(),
                    end: None,
                    point: true,
                }
            } else {
                Interval {
                    key: d.key.clone(),
                    end: (d.range_end.as_ref() != [0]).then(|| d.range_end.clone()),
                    point: false,
                }
            }),
            _ => None,
        })
        .collect();
    let mut puts = BTreeSet::new();
    let deleted = |dels: &[Interval], k: &Bytes| dels.iter().any(|i| i.contains(k));
    for op in ops {
        let RequestOp::Txn(t) = op else { continue };
        let (then_puts, then_dels) = check_intervals(&t.success)?;
        let (else_puts, else_dels) = check_intervals(&t.failure)?;
        for k in &then_puts {
            if puts.contains(k) || deleted(&dels, k) {
                return Err(MvccError::DuplicateKey);
            }
            puts.insert(k.clone());
        }
        for k in &else_puts {
            if (puts.contains(k) && !then_puts.contains(k)) || deleted(&dels, k) {
                return Err(MvccError::DuplicateKey);
            }
            puts.insert(k.clone());
        }
        dels.extend(then_dels);
        dels.extend(else_dels);
    }
    for op in ops {
        let RequestOp::Put(p) = op else { continue };
        if puts.contains(&p.key) || deleted(&dels, &p.key) {
            return Err(MvccError::DuplicateKey);
        }
        puts.insert(p.key.clone());
    }
    Ok((puts, dels))
}
