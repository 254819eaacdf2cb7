//! Where the v2 auth store lives in the replicated keyspace, and how a change to it is
//! written.
//!
//! etcd keeps it in its v2 store under `/2` (`StorePermsPrefix`): `/2/enabled` (`true`
//! or `false`), `/2/users/<name>` and `/2/roles/<name>`, each value the JSON of etcd's
//! `User` or `Role` (the user's bcrypt hash inside). Keel keeps the same paths and the
//! same JSON as MVCC keys under [`PREFIX`], apart from the v2 keys tree (which stands for
//! etcd's `/1` and which the keys API cannot leave), so they replicate through raft, are
//! in snapshots and survive restarts like any key.
//!
//! A change is a transaction that holds only if every key its decision read is still
//! as read (same mod revision, or still absent); when another change came in between,
//! the caller reads again and decides again. So each change applies exactly as decided,
//! where etcd's read-then-write could lose a concurrent grant.

use std::collections::BTreeMap;

use bytes::{BufMut, Bytes, BytesMut};
use keel_core::mvcc::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, KeyValue, KvStore, PutRequest,
    RangeRequest, RequestOp, TxnRequest,
};

use super::go_json;
use super::model::{root_role, Role, User, ROOT};

/// The MVCC prefix of etcd's v2 store paths for auth. The leading NUL keeps it before
/// every printable key; it lies outside the v2 keys tree (`"\0keel/v2/"` ..).
pub const PREFIX: &[u8] = b"\0keel/v2auth";

const ENABLED: &str = "/2/enabled";
const USERS: &str = "/2/users/";
const ROLES: &str = "/2/roles/";

fn key(path: &str, name: &str) -> Bytes {
    let mut k = BytesMut::with_capacity(PREFIX.len() + path.len() + name.len());
    k.put_slice(PREFIX);
    k.put_slice(path.as_bytes());
    k.put_slice(name.as_bytes());
    k.freeze()
}

fn enabled_key() -> Bytes {
    key(ENABLED, "")
}

fn user_key(name: &str) -> Bytes {
    key(USERS, name)
}

fn role_key(name: &str) -> Bytes {
    key(ROLES, name)
}

/// A name the URL routes can carry: a single path segment. Anything else (a basic
/// auth user name with a slash, say) names nobody.
fn is_name(name: &str) -> bool {
    !name.is_empty() && !name.contains('/')
}

fn get_one(kv: &KvStore, key: Bytes) -> Option<KeyValue> {
    let r = RangeRequest {
        key,
        ..RangeRequest::default()
    };
    kv.range(&r).ok().and_then(|r| r.kvs.into_iter().next())
}

fn decode_user(kv: &KeyValue) -> Option<User> {
    match go_json::user(&kv.value) {
        Ok(u) => Some(u),
        Err(_) => {
            tracing::warn!(key = ?kv.key, "unreadable v2 auth user record; ignored");
            None
        }
    }
}

fn decode_role(kv: &KeyValue) -> Option<Role> {
    match go_json::role(&kv.value) {
        Ok(r) => Some(r),
        Err(_) => {
            tracing::warn!(key = ?kv.key, "unreadable v2 auth role record; ignored");
            None
        }
    }
}

/// `detectAuth`: the stored `enabled` is JSON `true`.
fn decode_enabled(kv: &KeyValue) -> bool {
    kv.value.trim_ascii() == b"true"
}

/// The user as etcd's `getUser` returns it (the root user with the root role).
fn user_of(kv: &KvStore, name: &str) -> Option<User> {
    if !is_name(name) {
        return None;
    }
    get_one(kv, user_key(name))
        .and_then(|kv| decode_user(&kv))
        .map(User::with_root_role)
}

/// The role as etcd's `getRole` returns it (the root role is never stored).
fn role_of(kv: &KvStore, name: &str) -> Option<Role> {
    if name == ROOT {
        return Some(root_role());
    }
    if !is_name(name) {
        return None;
    }
    get_one(kv, role_key(name)).and_then(|kv| decode_role(&kv))
}

/// What a permission check needs to know, read at once on the member.
#[derive(Clone, Debug, Default)]
pub struct AccessView {
    /// Auth is enabled.
    pub enabled: bool,
    /// The named user, if asked for and existing.
    pub user: Option<User>,
    /// The user's roles that exist, in the user's order.
    pub roles: Vec<Role>,
    /// The guest role, if it exists.
    pub guest: Option<Role>,
}

/// Reads what checking a request of user `name` (or of a guest) needs. With auth
/// disabled, only that.
pub fn access_view(kv: &KvStore, name: Option<&str>) -> AccessView {
    let enabled = get_one(kv, enabled_key()).is_some_and(|kv| decode_enabled(&kv));
    if !enabled {
        return AccessView::default();
    }
    let user = name.and_then(|n| user_of(kv, n));
    let roles = user
        .iter()
        .flat_map(User::role_names)
        .filter_map(|r| role_of(kv, r))
        .collect();
    AccessView {
        enabled,
        user,
        roles,
        guest: role_of(kv, super::model::GUEST),
    }
}

/// A stored record and its mod revision.
#[derive(Clone, Debug)]
struct Stored<T> {
    value: T,
    mod_revision: i64,
}

/// The whole v2 auth store as read at one revision.
#[derive(Clone, Debug, Default)]
pub struct Image {
    enabled: Option<Stored<bool>>,
    users: BTreeMap<String, Stored<User>>,
    roles: BTreeMap<String, Stored<Role>>,
}

/// Reads the whole v2 auth store.
pub fn image(kv: &KvStore) -> Image {
    let start = key("/2/", "");
    let mut end = BytesMut::from(&start[..]);
    if let Some(last) = end.last_mut() {
        *last = b'/' + 1;
    }
    let r = RangeRequest {
        key: start,
        range_end: end.freeze(),
        ..RangeRequest::default()
    };
    let mut img = Image::default();
    let Ok(res) = kv.range(&r) else {
        return img;
    };
    for kv in &res.kvs {
        let Some(path) = kv
            .key
            .strip_prefix(PREFIX)
            .and_then(|p| std::str::from_utf8(p).ok())
        else {
            continue;
        };
        let mod_revision = kv.mod_revision;
        if path == ENABLED {
            img.enabled = Some(Stored {
                value: decode_enabled(kv),
                mod_revision,
            });
        } else if let Some(name) = path.strip_prefix(USERS) {
            if let Some(value) = decode_user(kv) {
                let stored = Stored {
                    value,
                    mod_revision,
                };
                img.users.insert(name.to_string(), stored);
            }
        } else if let Some(name) = path.strip_prefix(ROLES) {
            if let Some(value) = decode_role(kv) {
                let stored = Stored {
                    value,
                    mod_revision,
                };
                img.roles.insert(name.to_string(), stored);
            }
        }
    }
    img
}

impl Image {
    /// `AuthEnabled`.
    pub fn enabled(&self) -> bool {
        self.enabled.as_ref().is_some_and(|e| e.value)
    }

    /// `AllUsers`: the names, sorted.
    pub fn user_names(&self) -> Vec<String> {
        self.users.keys().cloned().collect()
    }

    /// `AllRoles`: root and the stored names, sorted.
    pub fn role_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.roles.keys().cloned().collect();
        names.push(ROOT.into());
        names.sort();
        names
    }

    /// `GetUser` (root with the root role).
    pub fn user(&self, name: &str) -> Option<User> {
        self.users
            .get(name)
            .map(|s| s.value.clone().with_root_role())
    }

    /// `GetRole` (root is built in).
    pub fn role(&self, name: &str) -> Option<Role> {
        if name == ROOT {
            return Some(root_role());
        }
        self.roles.get(name).map(|s| s.value.clone())
    }
}

/// A change to the v2 auth store, decided against an [`Image`]: what it read and what
/// it writes.
#[derive(Debug)]
pub struct Edit<'a> {
    img: &'a Image,
    compare: Vec<Compare>,
    ops: Vec<RequestOp>,
}

impl<'a> Edit<'a> {
    /// A change decided against `img`.
    pub fn new(img: &'a Image) -> Edit<'a> {
        Edit {
            img,
            compare: Vec::new(),
            ops: Vec::new(),
        }
    }

    fn depends_on(&mut self, key: Bytes, mod_revision: i64) {
        if self.compare.iter().any(|c| c.key == key) {
            return;
        }
        self.compare.push(Compare {
            result: CompareResult::Equal,
            target: CompareTarget::Mod(mod_revision),
            key,
            range_end: Bytes::new(),
        });
    }

    /// `AuthEnabled`, as a dependency of the change.
    pub fn enabled(&mut self) -> bool {
        let m = self.img.enabled.as_ref().map_or(0, |e| e.mod_revision);
        self.depends_on(enabled_key(), m);
        self.img.enabled()
    }

    /// `getUser`, as a dependency of the change.
    pub fn user(&mut self, name: &str) -> Option<User> {
        let m = self.img.users.get(name).map_or(0, |s| s.mod_revision);
        self.depends_on(user_key(name), m);
        self.img.user(name)
    }

    /// `getRole`, as a dependency of the change.
    pub fn role(&mut self, name: &str) -> Option<Role> {
        if name != ROOT {
            let m = self.img.roles.get(name).map_or(0, |s| s.mod_revision);
            self.depends_on(role_key(name), m);
        }
        self.img.role(name)
    }

    fn put(&mut self, key: Bytes, value: String) {
        self.ops.push(RequestOp::Put(PutRequest {
            key,
            value: Bytes::from(value),
            ..PutRequest::default()
        }));
    }

    fn delete(&mut self, key: Bytes) {
        self.ops.push(RequestOp::DeleteRange(DeleteRangeRequest {
            key,
            ..DeleteRangeRequest::default()
        }));
    }

    /// Writes `enabled`.
    pub fn set_enabled(&mut self, on: bool) {
        self.put(enabled_key(), on.to_string());
    }

    /// Writes user `u` (its password already a hash).
    pub fn put_user(&mut self, u: &User) {
        self.put(user_key(&u.user), u.to_json());
    }

    /// Removes user `name`.
    pub fn delete_user(&mut self, name: &str) {
        self.delete(user_key(name));
    }

    /// Writes role `r`.
    pub fn put_role(&mut self, r: &Role) {
        self.put(role_key(&r.role), r.to_json());
    }

    /// Removes role `name`.
    pub fn delete_role(&mut self, name: &str) {
        self.delete(role_key(name));
    }

    /// The transaction: the writes, if everything read is still as read.
    pub fn into_txn(self) -> TxnRequest {
        TxnRequest {
            compare: self.compare,
            success: self.ops,
            failure: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v2keys::auth::model::default_guest_role;

    fn apply(kv: &mut KvStore, t: &TxnRequest) -> bool {
        kv.txn(t).expect("txn").succeeded
    }

    #[test]
    fn records_are_etcds_paths_and_json() {
        assert_eq!(&user_key("alice")[..], b"\0keel/v2auth/2/users/alice");
        assert_eq!(&role_key("r")[..], b"\0keel/v2auth/2/roles/r");
        assert_eq!(&enabled_key()[..], b"\0keel/v2auth/2/enabled");
        assert!(
            crate::v2keys::keys::decode_key(&user_key("alice")).is_none(),
            "outside the v2 keys tree"
        );
        let (start, end) = crate::v2keys::keys::subtree("/");
        assert!(!(start <= user_key("a") && user_key("a") < end));
    }

    #[test]
    fn edits_apply_only_on_what_they_read() {
        let mut kv = KvStore::new();
        let img = image(&kv);
        let mut e = Edit::new(&img);
        assert!(e.user("root").is_none());
        e.put_user(&User {
            user: "root".into(),
            password: "h".into(),
            roles: Some(vec!["root".into()]),
            ..User::default()
        });
        let create_root = e.into_txn();
        assert!(apply(&mut kv, &create_root));
        assert!(
            !apply(&mut kv, &create_root),
            "root exists now: the create is stale"
        );

        let img = image(&kv);
        assert_eq!(img.user_names(), ["root"]);
        assert_eq!(img.role_names(), ["root"]);
        let mut e = Edit::new(&img);
        assert!(!e.enabled());
        assert!(e.user("root").is_some());
        assert!(e.role("guest").is_none());
        e.put_role(&default_guest_role());
        e.set_enabled(true);
        let enable = e.into_txn();
        // A user written in between that the enable did not read leaves it valid.
        let mut other = Edit::new(&img);
        other.user("x");
        other.put_user(&User {
            user: "x".into(),
            password: "h".into(),
            ..User::default()
        });
        assert!(apply(&mut kv, &other.into_txn()));
        assert!(apply(&mut kv, &enable));
        let view = access_view(&kv, Some("root"));
        assert!(view.enabled);
        assert_eq!(view.roles, [root_role()]);
        assert_eq!(view.guest, Some(default_guest_role()));
        let nobody = access_view(&kv, Some("../roles/guest"));
        assert!(nobody.user.is_none() && nobody.roles.is_empty());
        assert_eq!(image(&kv).role_names(), ["guest", "root"]);
    }
}
