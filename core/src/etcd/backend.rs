//! etcd 3.4's backend: which buckets its bbolt database holds and how each row is
//! encoded, written from a keel state ([`write_backend`]) and read back into one
//! ([`read_backend`]). The anchors are etcd 3.4's `mvcc/kvstore.go` (the `key` and `meta`
//! buckets), `lease/lessor.go`, `auth/store.go`, `etcdserver/api/membership/store.go` and
//! `etcdserver/api/v3alarm`.
//!
//! - `key`: one row per change, keyed by its revision (8-byte big-endian main revision,
//!   `_`, 8-byte big-endian sub revision, and a trailing `t` for a delete), the value an
//!   `mvccpb.KeyValue` (only the key for a delete).
//! - `meta`: `consistent_index` (8 bytes big-endian), `scheduledCompactRev` and
//!   `finishedCompactRev` (revision keys as above).
//! - `lease`: 8-byte big-endian ID to `leasepb.Lease`.
//! - `auth`: `authEnabled` (one byte), `authRevision` (8 bytes big-endian); `authUsers`
//!   and `authRoles`: name to `authpb.User` / `authpb.Role`.
//! - `members`: hex member ID to the member as JSON; `members_removed` (empty here);
//!   `cluster`: `clusterVersion`; `alarm`: `etcdserverpb.AlarmMember` keys.

use bytes::Bytes;
use prost::Message;

use super::bolt::{BoltDb, BoltError, BoltWriteError, BoltWriter, PageSink};
use super::pb;
use crate::auth::{AuthStore, PermKind, Permission, Role, User};
use crate::mvcc::{KeyValue, KvStore, LeaseId, Revision, Row, RowError, RowImport};
use crate::node::MemberInfo;

/// The cluster version etcd 3.4 records (`cluster` bucket), as keel reports it.
pub const CLUSTER_VERSION: &str = "3.4.0";

/// What an etcd backend holds, in keel's types: a consistent copy of a member's state
/// (taken on the member task by `StateMachine::backend_view`, written out away from it
/// by [`write_backend`]) or what [`read_backend`] found in a file.
#[derive(Clone, Debug)]
pub struct Backend {
    /// The keyspace with its compaction and lease attachments (a member's copy shares
    /// its values with the member's index).
    pub store: KvStore,
    /// (ID, granted TTL) of every lease.
    pub leases: Vec<(LeaseId, i64)>,
    /// Users, roles, enabled flag and revision.
    pub auth: AuthStore,
    /// The member table (a restore replaces it).
    pub members: Vec<MemberInfo>,
    /// Raised alarms: (member, type).
    pub alarms: Vec<(u64, i32)>,
    /// The last raft index applied to it (etcd's consistent index).
    pub consistent_index: u64,
}

/// Why a database cannot be read as an etcd backend: one line naming the bucket and row.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The bbolt file itself is damaged.
    #[error(transparent)]
    Bolt(#[from] BoltError),
    /// A bucket etcd always creates is missing.
    #[error("not an etcd backend: bucket {0:?} is missing")]
    MissingBucket(&'static str),
    /// A row does not decode.
    #[error("bucket {bucket:?}, row {key}: {what}")]
    Row {
        /// The bucket.
        bucket: &'static str,
        /// The row's key, hex.
        key: String,
        /// What is wrong.
        what: String,
    },
}

fn row_error(bucket: &'static str, key: &[u8], what: impl ToString) -> BackendError {
    BackendError::Row {
        bucket,
        key: hex(key),
        what: what.to_string(),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// etcd's revision key: main and sub big-endian around `_`, `t` appended for a delete.
pub fn revision_key(rev: Revision, tombstone: bool) -> Vec<u8> {
    let mut k = Vec::with_capacity(18);
    k.extend_from_slice(&(rev.main as u64).to_be_bytes());
    k.push(b'_');
    k.extend_from_slice(&(rev.sub as u64).to_be_bytes());
    if tombstone {
        k.push(b't');
    }
    k
}

/// Parses a revision key: (revision, tombstone).
pub fn parse_revision_key(k: &[u8]) -> Option<(Revision, bool)> {
    let tombstone = match k.len() {
        17 => false,
        18 if k[17] == b't' => true,
        _ => return None,
    };
    if k[8] != b'_' {
        return None;
    }
    let main = i64::from_be_bytes(k[..8].try_into().ok()?);
    let sub = i64::from_be_bytes(k[9..17].try_into().ok()?);
    Some((Revision { main, sub }, tombstone))
}

/// Writes `view` as etcd 3.4's backend; returns the sink and the database's size. The
/// keyspace is walked in revision order from the view's own copy, so nothing but the
/// page being filled and that order is held beside it.
pub fn write_backend<S: PageSink>(
    mut view: Backend,
    mut w: BoltWriter<S>,
) -> Result<(S, u64), BoltWriteError<S::Error>> {
    // History a compaction has not yet freed is not part of etcd's backend.
    while !view.store.run_compaction(usize::MAX) {}
    w.bucket(b"alarm")?;
    let mut alarms: Vec<Vec<u8>> = view
        .alarms
        .iter()
        .map(|(member_id, alarm)| {
            pb::AlarmMember {
                member_id: *member_id,
                alarm: *alarm,
            }
            .encode_to_vec()
        })
        .collect();
    alarms.sort();
    alarms.dedup();
    for a in &alarms {
        w.put(a, b"")?;
    }
    w.bucket(b"auth")?;
    w.put(b"authEnabled", &[u8::from(view.auth.enabled())])?;
    w.put(b"authRevision", &view.auth.revision().to_be_bytes())?;
    w.bucket(b"authRoles")?;
    for r in view.auth.roles() {
        w.put(r.name.as_bytes(), &encode_role(r))?;
    }
    w.bucket(b"authUsers")?;
    for u in view.auth.users() {
        w.put(u.name.as_bytes(), &encode_user(u))?;
    }
    w.bucket(b"cluster")?;
    w.put(b"clusterVersion", CLUSTER_VERSION.as_bytes())?;
    w.bucket(b"key")?;
    let mut buf = Vec::new();
    for row in view.store.rows() {
        buf.clear();
        encode_row(&row).encode(&mut buf).ok();
        w.put(&revision_key(row.rev, row.tombstone), &buf)?;
    }
    w.bucket(b"lease")?;
    for (id, ttl) in &view.leases {
        let lease = pb::Lease {
            id: id.0,
            ttl: *ttl,
            remaining_ttl: 0,
        };
        w.put(&(id.0 as u64).to_be_bytes(), &lease.encode_to_vec())?;
    }
    w.bucket(b"members")?;
    // Keys are hex IDs without padding (Go's `types.ID.String()`): sort as strings.
    let mut members: Vec<(String, String)> = view
        .members
        .iter()
        .map(|m| (format!("{:x}", m.id), member_json(m)))
        .collect();
    members.sort();
    for (k, v) in &members {
        w.put(k.as_bytes(), v.as_bytes())?;
    }
    w.bucket(b"members_removed")?;
    w.bucket(b"meta")?;
    w.put(b"consistent_index", &view.consistent_index.to_be_bytes())?;
    let compacted = view.store.compacted_revision();
    if compacted > 0 {
        let rev = revision_key(
            Revision {
                main: compacted,
                sub: 0,
            },
            false,
        );
        w.put(b"finishedCompactRev", &rev)?;
        w.put(b"scheduledCompactRev", &rev)?;
    }
    w.finish()
}

fn encode_row(row: &Row) -> pb::KeyValue {
    if row.tombstone {
        // etcd stores only the key for a delete.
        return pb::KeyValue {
            key: row.kv.key.clone(),
            ..pb::KeyValue::default()
        };
    }
    let kv = &row.kv;
    pb::KeyValue {
        key: kv.key.clone(),
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: kv.value.clone(),
        lease: kv.lease,
    }
}

fn encode_user(u: &User) -> Vec<u8> {
    pb::User {
        name: u.name.as_bytes().to_vec(),
        password: u.password_hash.as_bytes().to_vec(),
        roles: u.roles.clone(),
        options: u
            .no_password
            .then_some(pb::UserAddOptions { no_password: true }),
    }
    .encode_to_vec()
}

fn encode_role(r: &Role) -> Vec<u8> {
    pb::Role {
        name: r.name.as_bytes().to_vec(),
        key_permission: r
            .perms
            .iter()
            .map(|p| pb::Permission {
                perm_type: p.kind as i32,
                key: p.key.to_vec(),
                range_end: p.range_end.to_vec(),
            })
            .collect(),
    }
    .encode_to_vec()
}

/// A member as etcd's membership store writes it (`json.Marshal` of its `Member`).
fn member_json(m: &MemberInfo) -> String {
    let mut o = serde_json::Map::new();
    o.insert("id".into(), m.id.into());
    o.insert("peerURLs".into(), m.peer_urls.clone().into());
    if m.learner {
        o.insert("isLearner".into(), true.into());
    }
    if !m.name.is_empty() {
        o.insert("name".into(), m.name.clone().into());
    }
    if !m.client_urls.is_empty() {
        o.insert("clientURLs".into(), m.client_urls.clone().into());
    }
    serde_json::Value::Object(o).to_string()
}

/// Reads an etcd backend (3.4's buckets; 3.5's extra rows are ignored). Never panics on
/// a damaged or hostile file: every problem is an error naming the bucket and row.
pub fn read_backend(db: &BoltDb<'_>) -> Result<Backend, BackendError> {
    let bucket = |name: &'static str| db.bucket(name.as_bytes());
    let meta = bucket("meta")?.ok_or(BackendError::MissingBucket("meta"))?;
    let consistent_index = match meta.get(b"consistent_index")? {
        Some(v) => u64::from_be_bytes(
            v.try_into()
                .map_err(|_| row_error("meta", b"consistent_index", "not 8 bytes"))?,
        ),
        None => 0,
    };
    let compact_rev = |name: &'static str| -> Result<i64, BackendError> {
        match meta.get(name.as_bytes())? {
            None => Ok(-1),
            Some(v) => match parse_revision_key(v) {
                Some((rev, false)) if rev.main >= 0 => Ok(rev.main),
                _ => Err(row_error("meta", name.as_bytes(), "not a revision")),
            },
        }
    };
    let finished = compact_rev("finishedCompactRev")?;
    // A compaction etcd scheduled but had not finished is finished on restore, as etcd's
    // own restart does.
    let compacted = finished.max(compact_rev("scheduledCompactRev")?);

    let keys = bucket("key")?.ok_or(BackendError::MissingBucket("key"))?;
    let mut import = RowImport::new();
    keys.for_each(|k, v| -> Result<(), BackendError> {
        let (rev, tombstone) =
            parse_revision_key(k).ok_or_else(|| row_error("key", k, "not a revision key"))?;
        let kv = pb::KeyValue::decode(v).map_err(|e| row_error("key", k, e))?;
        let row = Row {
            rev,
            tombstone,
            kv: KeyValue {
                key: kv.key,
                create_revision: kv.create_revision,
                mod_revision: kv.mod_revision,
                version: kv.version,
                value: kv.value,
                lease: kv.lease,
            },
        };
        import
            .push(row)
            .map_err(|e: RowError| row_error("key", k, e))
    })?;

    let mut leases = Vec::new();
    if let Some(b) = bucket("lease")? {
        b.for_each(|k, v| -> Result<(), BackendError> {
            let l = pb::Lease::decode(v).map_err(|e| row_error("lease", k, e))?;
            if l.id <= 0 {
                return Err(row_error("lease", k, "lease ID is not positive"));
            }
            leases.push((LeaseId(l.id), l.ttl.max(1)));
            Ok(())
        })?;
    }
    // Leases by ID (bbolt's byte order of big-endian IDs), as the lessor keeps them.
    leases.sort_unstable_by_key(|l| l.0 .0);

    let auth = read_auth(db)?;
    let mut members = Vec::new();
    if let Some(b) = bucket("members")? {
        b.for_each(|k, v| -> Result<(), BackendError> {
            members.push(parse_member(v).ok_or_else(|| row_error("members", k, "bad JSON"))?);
            Ok(())
        })?;
    }
    let mut alarms = Vec::new();
    if let Some(b) = bucket("alarm")? {
        b.for_each(|k, _| -> Result<(), BackendError> {
            let a = pb::AlarmMember::decode(k).map_err(|e| row_error("alarm", k, e))?;
            alarms.push((a.member_id, a.alarm));
            Ok(())
        })?;
    }
    Ok(Backend {
        store: import.finish(compacted, &leases),
        leases,
        auth,
        members,
        alarms,
        consistent_index,
    })
}

fn read_auth(db: &BoltDb<'_>) -> Result<AuthStore, BackendError> {
    let mut enabled = false;
    let mut revision = 1;
    if let Some(b) = db.bucket(b"auth")? {
        enabled = b.get(b"authEnabled")? == Some(&[1][..]);
        if let Some(v) = b.get(b"authRevision")? {
            revision = u64::from_be_bytes(
                v.try_into()
                    .map_err(|_| row_error("auth", b"authRevision", "not 8 bytes"))?,
            );
        }
    }
    let mut users = Vec::new();
    if let Some(b) = db.bucket(b"authUsers")? {
        b.for_each(|k, v| -> Result<(), BackendError> {
            let u = pb::User::decode(v).map_err(|e| row_error("authUsers", k, e))?;
            let name = String::from_utf8(u.name)
                .map_err(|_| row_error("authUsers", k, "name is not UTF-8"))?;
            let password_hash = String::from_utf8(u.password)
                .map_err(|_| row_error("authUsers", k, "password hash is not UTF-8"))?;
            users.push(User {
                name,
                password_hash,
                roles: u.roles,
                no_password: u.options.is_some_and(|o| o.no_password),
            });
            Ok(())
        })?;
    }
    let mut roles = Vec::new();
    if let Some(b) = db.bucket(b"authRoles")? {
        b.for_each(|k, v| -> Result<(), BackendError> {
            let r = pb::Role::decode(v).map_err(|e| row_error("authRoles", k, e))?;
            let name = String::from_utf8(r.name)
                .map_err(|_| row_error("authRoles", k, "name is not UTF-8"))?;
            let mut perms = Vec::new();
            for p in r.key_permission {
                let kind = PermKind::from_i32(p.perm_type)
                    .ok_or_else(|| row_error("authRoles", k, "unknown permission type"))?;
                perms.push(Permission {
                    kind,
                    key: Bytes::from(p.key),
                    range_end: Bytes::from(p.range_end),
                });
            }
            roles.push(Role { name, perms });
            Ok(())
        })?;
    }
    Ok(AuthStore::from_parts(enabled, revision, users, roles))
}

fn parse_member(v: &[u8]) -> Option<MemberInfo> {
    let j: serde_json::Value = serde_json::from_slice(v).ok()?;
    let strings = |f: &str| -> Vec<String> {
        j.get(f)
            .and_then(|a| a.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    Some(MemberInfo {
        id: j.get("id")?.as_u64()?,
        name: j
            .get("name")
            .and_then(|n| n.as_str())
            .unwrap_or_default()
            .to_string(),
        peer_urls: strings("peerURLs"),
        client_urls: strings("clientURLs"),
        learner: j
            .get("isLearner")
            .and_then(|l| l.as_bool())
            .unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::AuthCommand;
    use crate::mvcc::{DeleteRangeRequest, PutRequest};

    fn view() -> Backend {
        let mut store = KvStore::new();
        store.grant_lease(0x1234);
        for i in 0..200 {
            store
                .put(&PutRequest {
                    key: Bytes::from(format!("key{}", i % 37)),
                    value: Bytes::from(vec![b'v'; i % 90]),
                    lease: if i % 11 == 0 { 0x1234 } else { 0 },
                    ..PutRequest::default()
                })
                .expect("put");
            if i % 13 == 0 {
                store
                    .delete_range(&DeleteRangeRequest {
                        key: Bytes::from(format!("key{}", i % 5)),
                        ..DeleteRangeRequest::default()
                    })
                    .expect("delete");
            }
        }
        store.compact(150).expect("compact");
        let mut auth = AuthStore::new();
        for c in [
            AuthCommand::UserAdd {
                name: "root".into(),
                password_hash: "$2a$10$hash".into(),
                no_password: false,
            },
            AuthCommand::RoleAdd {
                name: "reader".into(),
            },
            AuthCommand::RoleGrantPermission {
                name: "reader".into(),
                perm: Permission {
                    kind: PermKind::Read,
                    key: Bytes::from_static(b"/pub/"),
                    range_end: Bytes::from_static(b"/pub0"),
                },
            },
            AuthCommand::UserGrantRole {
                user: "root".into(),
                role: "reader".into(),
            },
        ] {
            auth.apply(&c).expect("auth");
        }
        Backend {
            store,
            leases: vec![(LeaseId(0x1234), 60)],
            auth,
            members: vec![MemberInfo {
                id: 0x8e9e05c52164694d,
                name: "default".into(),
                peer_urls: vec!["http://localhost:2380".into()],
                client_urls: vec!["http://localhost:2379".into()],
                learner: false,
            }],
            alarms: vec![(0x8e9e05c52164694d, 1)],
            consistent_index: 42,
        }
    }

    #[test]
    fn a_written_backend_reads_back_as_the_same_state() {
        let v = view();
        let (bytes, size) = write_backend(v.clone(), BoltWriter::new(Vec::new())).expect("write");
        assert_eq!(bytes.len() as u64, size);
        let db = BoltDb::open(&bytes).expect("open");
        assert!(db.check().is_empty(), "{:?}", db.check());
        let names: Vec<&[u8]> = db.bucket_names().expect("names");
        assert_eq!(names.len(), 10);
        let b = read_backend(&db).expect("read");
        assert_eq!(b.consistent_index, 42);
        assert_eq!(b.store.compacted_revision(), 150);
        assert_eq!(b.store.revision(), v.store.revision());
        for rev in 150..=v.store.revision() {
            assert_eq!(
                b.store.all_at(rev),
                v.store.all_at(rev),
                "at revision {rev}"
            );
        }
        assert_eq!(b.store.lease_keys(0x1234), v.store.lease_keys(0x1234));
        assert_eq!(b.leases, v.leases);
        assert_eq!(b.auth, v.auth);
        assert_eq!(b.members, v.members);
        assert_eq!(b.alarms, v.alarms);
    }

    #[test]
    fn revision_keys_are_etcds() {
        let k = revision_key(Revision { main: 5, sub: 1 }, true);
        assert_eq!(k, b"\0\0\0\0\0\0\0\x05_\0\0\0\0\0\0\0\x01t");
        assert_eq!(
            parse_revision_key(&k),
            Some((Revision { main: 5, sub: 1 }, true))
        );
        assert_eq!(parse_revision_key(&k[..16]), None);
    }

    #[test]
    fn a_row_that_does_not_decode_is_named() {
        let mut w = BoltWriter::new(Vec::new());
        w.bucket(b"key").expect("bucket");
        w.put(
            &revision_key(Revision { main: 2, sub: 0 }, false),
            b"\xff\xff",
        )
        .expect("put");
        w.bucket(b"meta").expect("bucket");
        let (bytes, _) = w.finish().expect("finish");
        let db = BoltDb::open(&bytes).expect("open");
        let e = read_backend(&db).expect_err("bad row").to_string();
        assert!(e.starts_with("bucket \"key\", row 0000000000000002"), "{e}");
    }
}
