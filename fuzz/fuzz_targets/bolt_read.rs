//! Fuzzes the bbolt reader: arbitrary bytes opened as a database must never panic, loop
//! or allocate without bound, whatever the walk, the check or the status meets. A file
//! that reads cleanly must survive a round trip: its buckets written back out with
//! BoltWriter read back the same, pass the check, and hash the same. The etcd bucket
//! decoding a restore runs on top (`read_backend`) must never panic either.

#![no_main]

use keel_core::etcd::bolt::{db_status, BoltDb, BoltError, BoltWriteError, BoltWriter};
use libfuzzer_sys::fuzz_target;

type Content<'a> = Vec<(&'a [u8], Vec<(&'a [u8], &'a [u8])>)>;

/// Every bucket's keys and values, or None if any walk fails.
fn read_content<'a>(db: &BoltDb<'a>) -> Option<Content<'a>> {
    let mut out = Vec::new();
    for name in db.bucket_names().ok()? {
        let bucket = db.bucket(name).ok()??;
        let mut kvs = Vec::new();
        bucket
            .for_each(|k, v| {
                kvs.push((k, v));
                Ok::<_, BoltError>(())
            })
            .ok()?;
        // A bucket that walks must also count and answer lookups without failing.
        assert_eq!(bucket.len().ok()?, kvs.len());
        for (k, _) in kvs.iter().take(8) {
            let _ = bucket.get(k);
        }
        out.push((name, kvs));
    }
    Some(out)
}

fuzz_target!(|data: &[u8]| {
    let Ok(db) = BoltDb::open(data) else { return };
    let _ = (db.size(), db.page_size());
    let problems = db.check();
    let status = db_status(&db);
    // etcd's buckets decoded into keel's state (what a restore builds) never panic.
    let _ = keel_core::etcd::backend::read_backend(&db);
    // etcdctl refuses the status of a file that fails the check.
    if !problems.is_empty() {
        assert!(matches!(status, Err(BoltError::Integrity { .. })));
    }
    let Some(content) = read_content(&db) else {
        return;
    };

    // Write it back. The reader enforces strictly ascending keys, so the writer may only
    // refuse what bbolt's Put would: empty or oversized keys and values.
    let mut w = BoltWriter::new(Vec::new());
    for (name, kvs) in &content {
        match w.bucket(name) {
            Ok(()) => {}
            Err(BoltWriteError::EmptyBucketName | BoltWriteError::KeyTooLarge(_)) => return,
            Err(e) => panic!("writer refused a bucket the reader accepted: {e}"),
        }
        for (k, v) in kvs {
            match w.put(k, v) {
                Ok(()) => {}
                Err(
                    BoltWriteError::EmptyKey
                    | BoltWriteError::KeyTooLarge(_)
                    | BoltWriteError::ValueTooLarge(_),
                ) => return,
                Err(e) => panic!("writer refused a key the reader accepted: {e}"),
            }
        }
    }
    let (bytes, size) = w.finish().expect("a Vec sink never fails");
    assert_eq!(bytes.len() as u64, size);
    let again = BoltDb::open(&bytes).expect("written file opens");
    assert_eq!(again.check(), Vec::<String>::new());
    assert_eq!(read_content(&again).as_ref(), Some(&content));
    if let Ok(s) = status {
        let s2 = db_status(&again).expect("written file has a status");
        assert_eq!(
            (s.hash, s.revision, s.total_key),
            (s2.hash, s2.revision, s2.total_key)
        );
    }
});
