//! The applied state machine of one member: keyspace, leases, the index of the last
//! applied entry, and the backend quota with its NOSPACE alarm; plus its snapshot
//! encoding (what a follower far behind receives, and what snapshot files hold).

use bytes::Bytes;

use super::key_index::{Generation, KeyIndex, Version};
use super::lease::{LeaseId, Lessor};
use super::store::KvStore;
use super::types::{
    MvccError, PutRequest, PutResponse, RequestOp, Revision, TxnRequest, TxnResponse,
};
use super::value_slab::ValueSlab;

const MAGIC: &[u8; 8] = b"KEELSM01";

/// A snapshot image that cannot be restored.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum StateDecodeError {
    /// Not a Keel state-machine image.
    #[error("state snapshot: bad magic")]
    BadMagic,
    /// The checksum does not match.
    #[error("state snapshot: checksum mismatch")]
    Checksum,
    /// The content does not parse.
    #[error("state snapshot: malformed at byte {0}")]
    Malformed(usize),
}

/// Keyspace, leases, applied index and quota of one member.
#[derive(Clone, Debug)]
pub struct KvState {
    /// The keyspace.
    pub store: KvStore,
    /// The leases.
    pub lessor: Lessor,
    /// Index of the last raft entry applied (etcd's consistent index).
    pub applied: u64,
    quota_bytes: u64,
    nospace: bool,
}

impl KvState {
    /// An empty state with `--quota-backend-bytes` and the minimum lease TTL.
    pub fn new(quota_bytes: u64, min_lease_ttl: i64) -> KvState {
        KvState {
            store: KvStore::new(),
            lessor: Lessor::new(min_lease_ttl),
            applied: 0,
            quota_bytes,
            nospace: false,
        }
    }

    /// A state holding `store` and `leases` at applied index `applied` (a keyspace
    /// rebuilt from elsewhere, such as an etcd backend).
    pub fn from_store(
        store: KvStore,
        leases: &[(LeaseId, i64)],
        applied: u64,
        quota_bytes: u64,
        min_lease_ttl: i64,
    ) -> KvState {
        let mut lessor = Lessor::new(min_lease_ttl);
        lessor.import(leases);
        KvState {
            store,
            lessor,
            applied,
            quota_bytes,
            nospace: false,
        }
    }

    /// Whether the NOSPACE alarm is raised.
    pub fn nospace_alarm(&self) -> bool {
        self.nospace
    }

    /// Disarms NOSPACE (etcd's `alarm disarm`); the next write that does not fit raises
    /// it again.
    pub fn disarm_nospace(&mut self) {
        self.nospace = false;
    }

    /// The size of this state, as etcd's backend size: what `--quota-backend-bytes`
    /// limits and what Status reports as `dbSize` and `dbSizeInUse` (keel frees what
    /// compaction releases at once, so the two are equal). Its fixed part is the image
    /// header (magic, applied index, revisions, key count, checksum); each lease adds its
    /// ID and TTLs.
    pub fn size_bytes(&self) -> u64 {
        const IMAGE_HEADER: u64 = 8 + 8 + 8 + 8 + 8 + 8 + 4;
        const PER_LEASE: u64 = 8 + 8 + 8;
        IMAGE_HEADER + self.store.size_bytes() + PER_LEASE * self.lessor.len() as u64
    }

    fn check_quota(&mut self, adding: u64) -> Result<(), MvccError> {
        if self.nospace || self.size_bytes() + adding > self.quota_bytes {
            self.nospace = true;
            return Err(MvccError::NoSpace);
        }
        Ok(())
    }

    /// A put, refused with etcd's NOSPACE error once the quota is exceeded.
    pub fn put(&mut self, r: &PutRequest) -> Result<PutResponse, MvccError> {
        self.check_quota((r.key.len() + r.value.len() + 32) as u64)?;
        self.store.put(r)
    }

    /// A txn; one that may write is refused like a put under NOSPACE.
    pub fn txn(&mut self, t: &TxnRequest) -> Result<TxnResponse, MvccError> {
        let adding = puts_bytes(&t.success).max(puts_bytes(&t.failure));
        if adding > 0 {
            self.check_quota(adding)?;
        }
        self.store.txn(t)
    }

    /// The whole state as bytes (checksummed).
    pub fn snapshot(&self) -> Vec<u8> {
        let mut w = Vec::new();
        w.extend_from_slice(MAGIC);
        put_u64(&mut w, self.applied);
        self.encode_replicated(&mut w);
        let crc = crc32fast::hash(&w);
        w.extend_from_slice(&crc.to_le_bytes());
        w
    }

    /// etcd's Maintenance Hash: a hash of everything the backend holds except the
    /// consistent index (etcd ignores it too), so members that applied the same entries
    /// and freed history to the same point agree. Unlike [`KvStore::hash_kv`] it
    /// changes while a compaction is still freeing history, as etcd's does.
    pub fn hash(&self) -> u32 {
        let mut h = crc32fast::Hasher::new();
        self.encode_replicated(&mut h);
        h.finalize()
    }

    /// The snapshot body that raft replicates identically to every member: revisions,
    /// every key's retained history, leases.
    fn encode_replicated(&self, w: &mut impl Sink) {
        put_i64(w, self.store.revision());
        put_i64(w, self.store.compacted_revision());
        put_u64(w, self.store.keys_held() as u64);
        for (key, ki) in self.store.export() {
            put_bytes(w, &key);
            let generations = ki.generations();
            put_u64(w, generations.len() as u64);
            for g in generations.iter() {
                put_i64(w, g.puts);
                put_rev(w, g.created);
                match g.tombstone {
                    Some(t) => {
                        w.put(&[1]);
                        put_rev(w, t);
                    }
                    None => w.put(&[0]),
                }
                put_u64(w, g.versions.len() as u64);
                for v in &g.versions {
                    put_rev(w, v.rev);
                    put_i64(w, v.lease);
                    put_bytes(w, &v.value);
                }
            }
        }
        let leases = self.lessor.export();
        put_u64(w, leases.len() as u64);
        for (id, ttl) in leases {
            put_i64(w, id.0);
            put_i64(w, ttl);
        }
    }

    /// Rebuilds a state from [`KvState::snapshot`] bytes; never panics on bad input.
    pub fn restore(
        bytes: &[u8],
        quota_bytes: u64,
        min_lease_ttl: i64,
    ) -> Result<KvState, StateDecodeError> {
        if bytes.len() < MAGIC.len() + 4 || &bytes[..8] != MAGIC {
            return Err(StateDecodeError::BadMagic);
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        if crc32fast::hash(body).to_le_bytes() != crc {
            return Err(StateDecodeError::Checksum);
        }
        let mut r = Reader { b: body, at: 8 };
        let applied = r.u64()?;
        let current = r.i64()?;
        let compacted = r.i64()?;
        // Revisions beyond these bounds only come from crafted input; refusing them keeps
        // every later revision computation from overflowing.
        let rev_ok = |rev: Revision| (1..=current).contains(&rev.main) && rev.sub >= 0;
        if !(1..i64::MAX / 2).contains(&current) || !(-1..=current).contains(&compacted) {
            return Err(StateDecodeError::Malformed(8));
        }
        let nkeys = r.count(16)?;
        let mut keys = Vec::with_capacity(nkeys);
        let mut values = ValueSlab::default();
        for _ in 0..nkeys {
            let key = r.bytes()?;
            let ngen = r.count(33)?;
            let mut generations = smallvec::SmallVec::new();
            for _ in 0..ngen {
                let puts = r.i64()?;
                let created = r.rev()?;
                let tombstone = match r.u8()? {
                    0 => None,
                    1 => Some(r.rev()?),
                    _ => return Err(StateDecodeError::Malformed(r.at)),
                };
                if !rev_ok(created) || tombstone.is_some_and(|t| !rev_ok(t)) {
                    return Err(StateDecodeError::Malformed(r.at));
                }
                let nv = r.count(32)?;
                let mut versions = smallvec::SmallVec::with_capacity(nv);
                for _ in 0..nv {
                    let rev = r.rev()?;
                    let lease = r.i64()?;
                    let value = values.store(r.slice()?);
                    if !rev_ok(rev) {
                        return Err(StateDecodeError::Malformed(r.at));
                    }
                    versions.push(Version { rev, value, lease });
                }
                if puts < versions.len() as i64 || puts > i64::MAX / 2 {
                    return Err(StateDecodeError::Malformed(r.at));
                }
                generations.push(Generation {
                    versions,
                    puts,
                    created,
                    tombstone,
                });
            }
            keys.push((key, KeyIndex::from_generations(generations)));
        }
        let nleases = r.count(16)?;
        let mut leases = Vec::with_capacity(nleases);
        for _ in 0..nleases {
            leases.push((LeaseId(r.i64()?), r.i64()?));
        }
        if r.at != body.len() {
            return Err(StateDecodeError::Malformed(r.at));
        }
        Ok(KvState::from_store(
            KvStore::import(keys, current, compacted, &leases),
            &leases,
            applied,
            quota_bytes,
            min_lease_ttl,
        ))
    }
}

fn puts_bytes(ops: &[RequestOp]) -> u64 {
    ops.iter()
        .map(|op| match op {
            RequestOp::Put(p) => (p.key.len() + p.value.len() + 32) as u64,
            RequestOp::Txn(t) => puts_bytes(&t.success).max(puts_bytes(&t.failure)),
            _ => 0,
        })
        .sum()
}

/// Where encoded state goes: a snapshot buffer, or straight into a hash.
trait Sink {
    fn put(&mut self, b: &[u8]);
}
impl Sink for Vec<u8> {
    fn put(&mut self, b: &[u8]) {
        self.extend_from_slice(b);
    }
}
impl Sink for crc32fast::Hasher {
    fn put(&mut self, b: &[u8]) {
        self.update(b);
    }
}

fn put_u64(w: &mut impl Sink, v: u64) {
    w.put(&v.to_le_bytes());
}
fn put_i64(w: &mut impl Sink, v: i64) {
    w.put(&v.to_le_bytes());
}
fn put_rev(w: &mut impl Sink, r: Revision) {
    put_i64(w, r.main);
    put_i64(w, r.sub);
}
fn put_bytes(w: &mut impl Sink, b: &[u8]) {
    put_u64(w, b.len() as u64);
    w.put(b);
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], StateDecodeError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|e| *e <= self.b.len())
            .ok_or(StateDecodeError::Malformed(self.at))?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, StateDecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u64(&mut self) -> Result<u64, StateDecodeError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
    fn i64(&mut self) -> Result<i64, StateDecodeError> {
        Ok(self.u64()? as i64)
    }
    fn rev(&mut self) -> Result<Revision, StateDecodeError> {
        Ok(Revision {
            main: self.i64()?,
            sub: self.i64()?,
        })
    }
    /// A count of items each taking at least `min` bytes: a count the rest of the input
    /// cannot hold is corrupt, never an allocation request.
    fn count(&mut self, min: usize) -> Result<usize, StateDecodeError> {
        let at = self.at;
        let n = self.u64()?;
        let left = (self.b.len() - self.at) as u64;
        if n > left / min as u64 {
            return Err(StateDecodeError::Malformed(at));
        }
        Ok(n as usize)
    }
    fn bytes(&mut self) -> Result<Bytes, StateDecodeError> {
        Ok(Bytes::copy_from_slice(self.slice()?))
    }
    fn slice(&mut self) -> Result<&[u8], StateDecodeError> {
        let n = self.count(1)?;
        self.take(n)
    }
}
