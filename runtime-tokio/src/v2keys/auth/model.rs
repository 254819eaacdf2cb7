//! etcd v2's users, roles and permissions (`etcdserver/api/v2auth/auth.go`): the Go
//! structs with their nil-or-empty lists (which `json.Marshal` tells apart, `null`
//! against `[]`, and which decide whether an update changed anything), the merges that
//! grant and revoke, the path matching, and the JSON etcd stores and answers.

use std::collections::BTreeSet;

use crate::v2keys::json::push_str;

/// The root role's and user's name.
pub const ROOT: &str = "root";
/// The role whose permissions an unauthenticated request has.
pub const GUEST: &str = "guest";

/// A list of paths (or role names) as Go's `[]string`: None is nil (`null`).
pub type List = Option<Vec<String>>;

/// `RWPermission`: path globs readable and writable.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RwPermission {
    /// `read`.
    pub read: List,
    /// `write`.
    pub write: List,
}

/// `Permissions`: only the `kv` part exists.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Permissions {
    /// `kv`.
    pub kv: RwPermission,
}

/// `Role`. `grant`/`revoke` are the request's changes; a stored role may carry them too
/// (etcd stores a created role as it came).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Role {
    /// `role`: the name.
    pub role: String,
    /// `permissions`.
    pub permissions: Permissions,
    /// `grant` (a pointer in Go: None is nil).
    pub grant: Option<Permissions>,
    /// `revoke`.
    pub revoke: Option<Permissions>,
}

/// `User`. `password` is the bcrypt hash once stored; `grant`/`revoke` are a request's.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct User {
    /// `user`: the name.
    pub user: String,
    /// `password` (omitted when empty).
    pub password: String,
    /// `roles`.
    pub roles: List,
    /// `grant` (omitted when empty).
    pub grant: List,
    /// `revoke` (omitted when empty).
    pub revoke: List,
}

/// An error of etcd's v2 auth store (`v2auth.Error`): an HTTP status and a message
/// starting with "auth: ".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthError {
    /// The HTTP status.
    pub status: u16,
    /// The message, "auth: " included.
    pub message: String,
}

/// etcd's `authErr(status, format, args...)` with the text already formatted.
pub fn auth_err(status: u16, text: &str) -> AuthError {
    AuthError {
        status,
        message: format!("auth: {text}"),
    }
}

/// `authErr(status, fmt.Sprintf(...))` with no arguments, as `User.merge` calls it: the
/// formatted text is a format again, so a `%` in a role name shows as Go prints a verb
/// without its argument.
fn auth_err_reformatted(status: u16, text: &str) -> AuthError {
    AuthError {
        status,
        message: go_sprintf_no_args(&format!("auth: {text}")),
    }
}

/// Go's `fmt.Sprintf(format)` with no arguments: `%%` is `%`, a verb is
/// `%!v(MISSING)`, a lone `%` at the end `%!(NOVERB)`.
fn go_sprintf_no_args(format: &str) -> String {
    let mut out = String::with_capacity(format.len());
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        // Flags, width and precision are read and dropped, as fmt does for a missing
        // argument's verb.
        while chars
            .peek()
            .is_some_and(|c| matches!(c, '+' | '-' | '#' | ' ' | '0'..='9' | '.'))
        {
            chars.next();
        }
        match chars.next() {
            None => out.push_str("%!(NOVERB)"),
            Some('%') => out.push('%'),
            Some(v) => {
                out.push_str("%!");
                out.push(v);
                out.push_str("(MISSING)");
            }
        }
    }
    out
}

/// The root role: everything, and always this (it is never stored).
pub fn root_role() -> Role {
    Role {
        role: ROOT.into(),
        permissions: everything(),
        ..Role::default()
    }
}

/// The guest role auth enable creates when there is none: everything.
pub fn default_guest_role() -> Role {
    Role {
        role: GUEST.into(),
        permissions: everything(),
        ..Role::default()
    }
}

fn everything() -> Permissions {
    Permissions {
        kv: RwPermission {
            read: Some(vec!["/*".into()]),
            write: Some(vec!["/*".into()]),
        },
    }
}

/// Go's `types.NewUnsafeSet(list...)` then `Values()` sorted: the distinct entries in
/// byte order, never nil.
fn sorted_set(set: BTreeSet<String>) -> List {
    Some(set.into_iter().collect())
}

fn set_of(list: &List) -> BTreeSet<String> {
    list.iter().flatten().cloned().collect()
}

impl Permissions {
    /// `Permissions.IsEmpty` of a pointer: nil or no paths at all.
    pub fn is_empty(p: Option<&Permissions>) -> bool {
        p.is_none_or(|p| {
            p.kv.read.as_ref().is_none_or(Vec::is_empty)
                && p.kv.write.as_ref().is_none_or(Vec::is_empty)
        })
    }

    /// `Permissions.Grant`: nil grants nothing (and keeps nil lists nil).
    fn grant(&self, n: Option<&Permissions>) -> Result<Permissions, AuthError> {
        let Some(n) = n else {
            return Ok(self.clone());
        };
        let mut read = set_of(&self.kv.read);
        for r in n.kv.read.iter().flatten() {
            if !read.insert(r.clone()) {
                return Err(auth_err(
                    409,
                    &format!("Granting duplicate read permission {r}"),
                ));
            }
        }
        let mut write = set_of(&self.kv.write);
        for w in n.kv.write.iter().flatten() {
            if !write.insert(w.clone()) {
                return Err(auth_err(
                    409,
                    &format!("Granting duplicate write permission {w}"),
                ));
            }
        }
        Ok(Permissions {
            kv: RwPermission {
                read: sorted_set(read),
                write: sorted_set(write),
            },
        })
    }

    /// `Permissions.Revoke`: paths not granted are skipped.
    fn revoke(&self, n: Option<&Permissions>) -> Permissions {
        let Some(n) = n else {
            return self.clone();
        };
        let mut read = set_of(&self.kv.read);
        for r in n.kv.read.iter().flatten() {
            read.remove(r);
        }
        let mut write = set_of(&self.kv.write);
        for w in n.kv.write.iter().flatten() {
            write.remove(w);
        }
        Permissions {
            kv: RwPermission {
                read: sorted_set(read),
                write: sorted_set(write),
            },
        }
    }
}

/// etcd's `simpleMatch`: a pattern ending in `*` is a prefix, any other is the exact
/// key. (etcd indexes the pattern's last byte unchecked, so an empty pattern crashes
/// its handler; here it matches nothing.)
fn simple_match(pattern: &str, key: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => key.starts_with(prefix),
        None => !pattern.is_empty() && key == pattern,
    }
}

/// etcd's `prefixMatch`: only patterns ending in `*` cover a recursive request.
fn prefix_match(pattern: &str, key: &str) -> bool {
    pattern
        .strip_suffix('*')
        .is_some_and(|prefix| key.starts_with(prefix))
}

impl Role {
    fn patterns(&self, write: bool) -> impl Iterator<Item = &String> {
        let kv = &self.permissions.kv;
        if write { &kv.write } else { &kv.read }.iter().flatten()
    }

    /// `HasKeyAccess`: may this role read (or write) `key`?
    pub fn has_key_access(&self, key: &str, write: bool) -> bool {
        self.role == ROOT || self.patterns(write).any(|p| simple_match(p, key))
    }

    /// `HasRecursiveAccess`: may it read (or write) everything under `key`?
    pub fn has_recursive_access(&self, key: &str, write: bool) -> bool {
        self.role == ROOT || self.patterns(write).any(|p| prefix_match(p, key))
    }

    /// `Role.merge`: grants, then revokes, applied to this stored role.
    pub fn merge(&self, n: &Role) -> Result<Role, AuthError> {
        let granted = self.permissions.grant(n.grant.as_ref())?;
        Ok(Role {
            role: self.role.clone(),
            permissions: granted.revoke(n.revoke.as_ref()),
            grant: None,
            revoke: None,
        })
    }

    /// `json.Marshal` of the role (no newline).
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(96);
        out.push_str("{\"role\":");
        push_str(&mut out, self.role.as_bytes());
        out.push_str(",\"permissions\":");
        push_permissions(&mut out, &self.permissions);
        if let Some(g) = &self.grant {
            out.push_str(",\"grant\":");
            push_permissions(&mut out, g);
        }
        if let Some(r) = &self.revoke {
            out.push_str(",\"revoke\":");
            push_permissions(&mut out, r);
        }
        out.push('}');
        out
    }
}

impl User {
    /// etcd's `attachRootRole`: the root user always has the root role.
    pub fn with_root_role(mut self) -> User {
        if self.user == ROOT && !self.roles.iter().flatten().any(|r| r == ROOT) {
            self.roles.get_or_insert_with(Vec::new).push(ROOT.into());
        }
        self
    }

    /// The role names (none for a nil list).
    pub fn role_names(&self) -> impl Iterator<Item = &String> {
        self.roles.iter().flatten()
    }

    /// `User.merge`: the new password's hash (if one was given), then role grants and
    /// revokes. `new_hash` is asked for only when `n` carries a password.
    pub fn merge<E: From<AuthError>>(
        &self,
        n: &User,
        new_hash: impl FnOnce() -> Result<String, E>,
    ) -> Result<User, E> {
        let password = if n.password.is_empty() {
            self.password.clone()
        } else {
            new_hash()?
        };
        let mut roles = set_of(&self.roles);
        for g in n.grant.iter().flatten() {
            if !roles.insert(g.clone()) {
                return Err(auth_err_reformatted(
                    409,
                    &format!("Granting duplicate role {g} for user {}", n.user),
                )
                .into());
            }
        }
        for r in n.revoke.iter().flatten() {
            if !roles.remove(r) {
                return Err(auth_err_reformatted(
                    409,
                    &format!("Revoking ungranted role {r} for user {}", n.user),
                )
                .into());
            }
        }
        Ok(User {
            user: self.user.clone(),
            password,
            roles: sorted_set(roles),
            grant: None,
            revoke: None,
        })
    }

    /// `json.Marshal` of the user (no newline); an empty password is omitted, as are
    /// empty grant and revoke lists.
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(96);
        out.push_str("{\"user\":");
        push_str(&mut out, self.user.as_bytes());
        if !self.password.is_empty() {
            out.push_str(",\"password\":");
            push_str(&mut out, self.password.as_bytes());
        }
        out.push_str(",\"roles\":");
        push_list(&mut out, &self.roles);
        for (name, list) in [("grant", &self.grant), ("revoke", &self.revoke)] {
            if list.as_ref().is_some_and(|l| !l.is_empty()) {
                out.push_str(",\"");
                out.push_str(name);
                out.push_str("\":");
                push_list(&mut out, list);
            }
        }
        out.push('}');
        out
    }
}

fn push_permissions(out: &mut String, p: &Permissions) {
    out.push_str("{\"kv\":{\"read\":");
    push_list(out, &p.kv.read);
    out.push_str(",\"write\":");
    push_list(out, &p.kv.write);
    out.push_str("}}");
}

/// A `[]string`: `null` when nil.
pub fn push_list(out: &mut String, list: &List) {
    match list {
        None => out.push_str("null"),
        Some(items) => {
            out.push('[');
            for (i, s) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_str(out, s.as_bytes());
            }
            out.push(']');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(items: &[&str]) -> List {
        Some(items.iter().map(|s| s.to_string()).collect())
    }

    fn perms(read: List, write: List) -> Permissions {
        Permissions {
            kv: RwPermission { read, write },
        }
    }

    #[test]
    fn json_is_go_marshal() {
        // As etcd 3.4.23 answered and stored them.
        assert_eq!(
            root_role().to_json(),
            r#"{"role":"root","permissions":{"kv":{"read":["/*"],"write":["/*"]}}}"#
        );
        let created = Role {
            role: "r".into(),
            permissions: perms(list(&["/a", "/a"]), None),
            grant: Some(Permissions::default()),
            revoke: None,
        };
        assert_eq!(
            created.to_json(),
            r#"{"role":"r","permissions":{"kv":{"read":["/a","/a"],"write":null}},"grant":{"kv":{"read":null,"write":null}}}"#
        );
        let u = User {
            user: "b<".into(),
            roles: None,
            grant: Some(vec![]),
            ..User::default()
        };
        assert_eq!(u.to_json(), r#"{"user":"b\u003c","roles":null}"#);
        let stored = User {
            user: "a".into(),
            password: "$2a$10$x".into(),
            roles: list(&["x"]),
            ..User::default()
        };
        assert_eq!(
            stored.to_json(),
            r#"{"user":"a","password":"$2a$10$x","roles":["x"]}"#
        );
    }

    #[test]
    fn role_merges_as_etcd() {
        let r = Role {
            role: "r".into(),
            permissions: perms(list(&["/a", "/a"]), None),
            ..Role::default()
        };
        let g = Role {
            role: "r".into(),
            grant: Some(perms(None, list(&["/b%d"]))),
            ..Role::default()
        };
        let merged = r.merge(&g).expect("merge");
        assert_eq!(merged.permissions, perms(list(&["/a"]), list(&["/b%d"])));
        assert_eq!(
            merged.merge(&g),
            Err(AuthError {
                status: 409,
                message: "auth: Granting duplicate write permission /b%d".into()
            })
        );
        // A revoke of something not granted changes nothing, but turns nil lists into
        // empty ones: etcd stores such a role, and refuses the same revoke once more.
        let fresh = Role {
            role: "f".into(),
            ..Role::default()
        };
        let revoke = Role {
            role: "f".into(),
            revoke: Some(perms(None, list(&["/x"]))),
            ..Role::default()
        };
        let once = fresh.merge(&revoke).expect("merge");
        assert_ne!(once, fresh);
        assert_eq!(once.merge(&revoke).expect("merge"), once);
    }

    #[test]
    fn user_merges_as_etcd() {
        let u = User {
            user: "b".into(),
            password: "h".into(),
            roles: list(&["z", "y", "z"]),
            ..User::default()
        };
        let nothing = User {
            user: "b".into(),
            ..User::default()
        };
        let m = u
            .merge::<AuthError>(&nothing, || panic!("no password given"))
            .expect("merge");
        assert_eq!(m.roles, list(&["y", "z"]));
        assert_eq!(m.password, "h");
        let grant = User {
            user: "b".into(),
            grant: list(&["%d%%"]),
            ..User::default()
        };
        let m2 = m
            .merge::<AuthError>(&grant, || unreachable!())
            .expect("merge");
        assert_eq!(m2.roles, list(&["%d%%", "y", "z"]));
        assert_eq!(
            m2.merge::<AuthError>(&grant, || unreachable!()).map(|_| ()),
            Err(AuthError {
                status: 409,
                message: "auth: Granting duplicate role %!d(MISSING)% for user b".into()
            })
        );
        let revoke = User {
            user: "b".into(),
            revoke: list(&["q"]),
            ..User::default()
        };
        assert_eq!(
            m2.merge::<AuthError>(&revoke, || unreachable!())
                .map_err(|e| e.message),
            Err("auth: Revoking ungranted role q for user b".into())
        );
        let pw = User {
            user: "b".into(),
            password: "new".into(),
            ..User::default()
        };
        assert_eq!(
            m2.merge::<AuthError>(&pw, || Ok("H2".into()))
                .expect("merge")
                .password,
            "H2"
        );
    }

    #[test]
    fn paths_match_as_etcd() {
        let r = Role {
            role: "r".into(),
            permissions: perms(list(&["/pub/*", "/exact", ""]), list(&["/w"])),
            ..Role::default()
        };
        assert!(r.has_key_access("/pub/a", false));
        assert!(r.has_key_access("/pub/", false));
        assert!(!r.has_key_access("/pub", false), "the glob needs its slash");
        assert!(r.has_key_access("/exact", false));
        assert!(!r.has_key_access("/exact/x", false));
        assert!(
            !r.has_key_access("", false),
            "an empty pattern matches nothing"
        );
        assert!(!r.has_key_access("/pub/a", true));
        assert!(r.has_key_access("/w", true));
        assert!(r.has_recursive_access("/pub/x", false));
        assert!(
            !r.has_recursive_access("/exact", false),
            "recursive needs a glob"
        );
        assert!(root_role().has_key_access("anything", true));
        let named_root = Role {
            role: ROOT.into(),
            ..Role::default()
        };
        assert!(named_root.has_recursive_access("/x", true));
    }

    #[test]
    fn root_user_always_has_root_role() {
        let u = User {
            user: ROOT.into(),
            ..User::default()
        };
        assert_eq!(u.with_root_role().roles, list(&["root"]));
        let other = User {
            user: "x".into(),
            ..User::default()
        };
        assert_eq!(other.with_root_role().roles, None);
    }

    #[test]
    fn sprintf_without_arguments() {
        assert_eq!(
            go_sprintf_no_args("a %d b %5.2f %% c %"),
            "a %!d(MISSING) b %!f(MISSING) % c %!(NOVERB)"
        );
        assert_eq!(go_sprintf_no_args("plain"), "plain");
    }
}
