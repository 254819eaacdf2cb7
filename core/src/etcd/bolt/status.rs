//! `etcdctl snapshot status` (etcd 3.4, `clientv3/snapshot/v3_snapshot.go` `Status`):
//! the integrity check, then a CRC-32C over every bucket's name, keys and values.

use super::error::{show, BoltError};
use super::page::LeafElem;
use super::read::{walk_once, BoltDb};

/// What `etcdctl snapshot status` prints for a bbolt file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DbStatus {
    /// CRC-32C over, for each top-level bucket in order, its name and then each key and
    /// value in key order.
    pub hash: u32,
    /// Main revision of the last key of the `key` bucket (0 if it is empty or missing).
    pub revision: i64,
    /// Keys in all buckets together.
    pub total_key: u64,
    /// The database's size: high-water mark times page size.
    pub total_size: u64,
}

/// Computes the snapshot status exactly as etcdctl 3.4 does: `tx.Check()` first (any
/// problem fails it with etcdctl's message), then one pass over every bucket.
pub fn db_status(db: &BoltDb) -> Result<DbStatus, BoltError> {
    let (problems, count) = db.check_counted();
    if count > 0 {
        return Err(BoltError::Integrity { count, problems });
    }
    let crc = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);
    let mut hash = crc.digest();
    let mut revision = 0i64;
    let mut total_key = 0u64;
    for name in db.bucket_names()? {
        let Some(bucket) = db.bucket(name)? else {
            // bucket_names just listed it; a file that changes under us is not possible
            // (we hold its bytes), so this is a lookup that disagrees with the walk.
            return Err(BoltError::NotABucket { key: show(name) });
        };
        hash.update(name);
        let is_key = name == b"key";
        // Go's ForEach yields a nested bucket's key with a nil value: hash the key alone.
        walk_once(db.pages(), bucket.root(), &mut |e: LeafElem<'_>| {
            hash.update(e.key);
            if !e.is_bucket() {
                hash.update(e.value);
            }
            if is_key {
                // etcd's bytesToRev: the main revision is the first 8 bytes, big-endian.
                let main = e
                    .key
                    .get(..8)
                    .ok_or_else(|| BoltError::ShortRevision { key: show(e.key) })?;
                let mut be = [0u8; 8];
                be.copy_from_slice(main);
                revision = i64::from_be_bytes(be);
            }
            total_key += 1;
            Ok::<_, BoltError>(())
        })?;
    }
    Ok(DbStatus {
        hash: hash.finalize(),
        revision,
        total_key,
        total_size: db.size(),
    })
}

#[cfg(test)]
mod tests {
    use super::super::{BoltError, BoltWriter};
    use super::*;

    /// A snapshot etcd 3.4.23 saved (`etcdctl snapshot save`): 300 keys put in 15 txns, a
    /// seventh of them deleted, 40 overwritten, two 10 KB values (overflow pages), a key
    /// with a lease. etcd writes it without a stored freelist (NoFreelistSync) and
    /// appends the SHA-256 of the database.
    const ETCD_SNAPSHOT: &[u8] = include_bytes!("../../../tests/data/etcd-3.4.23-snapshot.db");

    /// What `etcdctl snapshot status -w json` (3.4.23) printed for it.
    const ETCD_STATUS: DbStatus = DbStatus {
        hash: 916_750_696,
        revision: 102,
        total_key: 391,
        total_size: 86_016,
    };

    #[test]
    fn an_etcd_snapshot_has_the_status_etcdctl_printed() {
        assert_eq!(ETCD_SNAPSHOT.len() % 512, 32, "sha256 suffix");
        let db = BoltDb::open(ETCD_SNAPSHOT).expect("open");
        assert_eq!(db.check(), Vec::<String>::new());
        assert_eq!(db_status(&db).expect("status"), ETCD_STATUS);
        let names: Vec<&[u8]> = db.bucket_names().expect("names");
        let want: [&[u8]; 10] = [
            b"alarm",
            b"auth",
            b"authRoles",
            b"authUsers",
            b"cluster",
            b"key",
            b"lease",
            b"members",
            b"members_removed",
            b"meta",
        ];
        assert_eq!(names, want);
        let meta = db.bucket(b"meta").expect("lookup").expect("meta bucket");
        assert_eq!(
            meta.get(b"consistent_index").expect("get").map(<[u8]>::len),
            Some(8)
        );
        // The two 10 KB values come back whole from their overflow pages.
        let key = db.bucket(b"key").expect("lookup").expect("key bucket");
        let mut big = 0;
        key.for_each(|_, kv| {
            if kv.windows(6).any(|w| w == b"/big/a") {
                assert!(kv.windows(10_240).any(|w| w.iter().all(|&c| c == b'a')));
                big += 1;
            }
            Ok::<_, BoltError>(())
        })
        .expect("walk");
        assert_eq!(big, 1);
    }

    #[test]
    fn rewriting_an_etcd_snapshot_keeps_its_hash() {
        let db = BoltDb::open(ETCD_SNAPSHOT).expect("open");
        let mut w = BoltWriter::new(Vec::new());
        for name in db.bucket_names().expect("names") {
            w.bucket(name).expect("bucket");
            let b = db.bucket(name).expect("lookup").expect("bucket");
            b.for_each(|k, v| {
                w.put(k, v).expect("put");
                Ok::<_, BoltError>(())
            })
            .expect("walk");
        }
        let (bytes, size) = w.finish().expect("finish");
        let again = BoltDb::open(&bytes).expect("reopen");
        assert_eq!(again.check(), Vec::<String>::new());
        let status = db_status(&again).expect("status");
        assert_eq!(
            status,
            DbStatus {
                total_size: size,
                ..ETCD_STATUS
            }
        );
    }

    #[test]
    fn a_status_of_a_key_bucket_with_a_short_key_fails() {
        let mut w = BoltWriter::new(Vec::new());
        w.bucket(b"key").expect("bucket");
        w.put(b"short", b"v").expect("put");
        let (bytes, _) = w.finish().expect("finish");
        let db = BoltDb::open(&bytes).expect("open");
        assert_eq!(
            db_status(&db).expect_err("short revision").to_string(),
            "bbolt: key bucket has key \"short\", shorter than a revision"
        );
    }
}
