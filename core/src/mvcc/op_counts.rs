//! etcd's counts of keyspace operations (`etcd_mvcc_{range,put,delete,txn}_total` and
//! `etcd_debugging_mvcc_total_put_size_in_bytes`), counted as etcd 3.4's
//! `mvcc/metrics_txn.go` counts them: every range, put and delete-range made through one
//! of the store's read or write transactions, and the transaction itself when it made
//! more than one of those. So a put with `prev_kv` (a range, then the put) is a txn of
//! its own; a Txn counts its evaluated compares as ranges, and, when it writes, as two
//! transactions (the compares are read in one, the chosen branch runs in another).
//!
//! Writes are counted on every member as it applies them; ranges and read-only Txns
//! where they are served. Requests refused before they reach the store (bad requests,
//! NOSPACE, auth, the CORRUPT alarm, a lease not found for a put) count nothing.
//!
//! The counts are this member's own: not replicated, not hashed, not in snapshots.

/// Totals since the member started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpCounts {
    /// `etcd_mvcc_range_total`.
    pub ranges: u64,
    /// `etcd_mvcc_put_total`.
    pub puts: u64,
    /// `etcd_mvcc_delete_total`.
    pub deletes: u64,
    /// `etcd_mvcc_txn_total`.
    pub txns: u64,
    /// `etcd_debugging_mvcc_total_put_size_in_bytes`: key and value bytes of every put.
    pub put_bytes: u64,
}

/// What one store transaction did (etcd's `metricsTxnWrite`), added to the totals when
/// it ends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    pub ranges: u64,
    pub puts: u64,
    pub deletes: u64,
    pub put_bytes: u64,
}

impl OpCounts {
    /// Ends one transaction: its operations join the totals, and it counts as a txn
    /// when it made more than one.
    pub(crate) fn end(&mut self, t: Tally) {
        if t.ranges + t.puts + t.deletes > 1 {
            self.txns += 1;
        }
        self.ranges += t.ranges;
        self.puts += t.puts;
        self.deletes += t.deletes;
        self.put_bytes += t.put_bytes;
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use crate::mvcc::{
        Compare, CompareResult, CompareTarget, DeleteRangeRequest, KvStore, MvccError, PutRequest,
        RangeRequest, RequestOp, TxnRequest,
    };

    fn put(k: &str, v: &str) -> PutRequest {
        PutRequest {
            key: Bytes::from(k.to_string()),
            value: Bytes::from(v.to_string()),
            ..PutRequest::default()
        }
    }

    fn get(k: &str) -> RangeRequest {
        RangeRequest {
            key: Bytes::from(k.to_string()),
            ..RangeRequest::default()
        }
    }

    fn value_is(k: &str, v: &str) -> Compare {
        Compare {
            result: CompareResult::Equal,
            target: CompareTarget::Value(Bytes::from(v.to_string())),
            key: Bytes::from(k.to_string()),
            range_end: Bytes::new(),
        }
    }

    fn txn(compare: Vec<Compare>, success: Vec<RequestOp>, failure: Vec<RequestOp>) -> TxnRequest {
        TxnRequest {
            compare,
            success,
            failure,
        }
    }

    /// (ranges, puts, deletes, txns, put bytes) so far.
    fn counts(s: &KvStore) -> (u64, u64, u64, u64, u64) {
        let c = s.op_counts();
        (c.ranges, c.puts, c.deletes, c.txns, c.put_bytes)
    }

    /// The figures etcd 3.4.23 shows after the same requests from etcdctl (checked by
    /// hand against /usr/bin/etcd, one request at a time).
    #[test]
    fn counts_as_etcd_3_4_counts() {
        let mut s = KvStore::new();
        for (k, v) in [("a", "1"), ("b", "2"), ("c", "3")] {
            s.put(&put(k, v)).expect("put");
        }
        assert_eq!(counts(&s), (0, 3, 0, 0, 6));
        // A txn of two puts: one transaction of two operations.
        let two = vec![RequestOp::Put(put("x", "1")), RequestOp::Put(put("y", "2"))];
        s.txn(&txn(vec![], two, vec![])).expect("txn");
        assert_eq!(counts(&s), (0, 5, 0, 1, 10));
        let del = DeleteRangeRequest {
            key: Bytes::from_static(b"a"),
            ..DeleteRangeRequest::default()
        };
        s.delete_range(&del).expect("delete");
        s.serve_range(&get("b")).expect("get");
        s.serve_range(&get("c")).expect("get");
        assert_eq!(counts(&s), (2, 5, 1, 1, 10));
        // A put with prev_kv reads first: a transaction of its own.
        let mut b = put("b", "5");
        b.prev_kv = true;
        s.put(&b).expect("put");
        assert_eq!(counts(&s), (3, 6, 1, 2, 12));
        // One compare, one put: one op in the read transaction, one in the write one.
        let z = vec![RequestOp::Put(put("z", "1"))];
        s.txn(&txn(vec![value_is("b", "5")], z.clone(), vec![]))
            .expect("txn");
        assert_eq!(counts(&s), (4, 7, 1, 2, 14));
        // Two compares read (the second fails), an empty failure branch written.
        let both = vec![value_is("b", "5"), value_is("a", "3")];
        s.txn(&txn(both.clone(), z, vec![])).expect("txn");
        assert_eq!(counts(&s), (6, 7, 1, 3, 14));
        // A txn that only reads is one transaction: the first compare fails and ends the
        // compares; the failure branch is empty.
        let first_fails = vec![value_is("b", "9"), value_is("a", "3")];
        let read = |k: &str| RequestOp::Range(get(k));
        s.txn(&txn(first_fails, vec![read("z")], vec![]))
            .expect("txn");
        assert_eq!(counts(&s), (7, 7, 1, 3, 14));
        s.txn(&txn(both, vec![read("z")], vec![read("b"), read("x")]))
            .expect("txn");
        assert_eq!(counts(&s), (11, 7, 1, 4, 14));
        // A delete with prev_kv reads first too.
        let mut c = DeleteRangeRequest {
            key: Bytes::from_static(b"c"),
            ..DeleteRangeRequest::default()
        };
        c.prev_kv = true;
        s.delete_range(&c).expect("delete");
        assert_eq!(counts(&s), (12, 7, 2, 5, 14));
        // ignore_value on a missing key: the read happened, the put did not.
        let mut missing = PutRequest {
            key: Bytes::from_static(b"nokey"),
            ignore_value: true,
            ..PutRequest::default()
        };
        assert_eq!(s.put(&missing), Err(MvccError::KeyNotFound));
        assert_eq!(counts(&s), (13, 7, 2, 5, 14));
        // A lease not found is refused before etcd's write transaction opens.
        missing.lease = 77;
        missing.ignore_value = false;
        assert_eq!(s.put(&missing), Err(MvccError::LeaseNotFound));
        assert_eq!(counts(&s), (13, 7, 2, 5, 14));
    }

    #[test]
    fn a_revoked_lease_deletes_its_keys_in_one_transaction() {
        let mut s = KvStore::new();
        s.grant_lease(5);
        for k in ["p", "q"] {
            let mut p = put(k, "v");
            p.lease = 5;
            s.put(&p).expect("put");
        }
        s.revoke_lease(5).expect("revoke");
        assert_eq!(counts(&s), (0, 2, 2, 1, 4));
    }
}
