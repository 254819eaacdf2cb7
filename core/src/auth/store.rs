//! The auth store and etcd's semantics for changing and checking it.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::{
    covers, AuthCommand, AuthError, AuthInfo, AuthOutcome, PermKind, Permission, Role, User, ROOT,
};

/// Users, roles, the enabled flag and the auth revision (etcd's `authStore`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthStore {
    pub(super) enabled: bool,
    pub(super) revision: u64,
    pub(super) users: BTreeMap<String, User>,
    pub(super) roles: BTreeMap<String, Role>,
}

impl Default for AuthStore {
    fn default() -> AuthStore {
        AuthStore::new()
    }
}

impl AuthStore {
    /// Disabled, at revision 1 (where etcd starts), without users or roles.
    pub fn new() -> AuthStore {
        AuthStore {
            enabled: false,
            revision: 1,
            users: BTreeMap::new(),
            roles: BTreeMap::new(),
        }
    }

    /// A store with these users and roles (as read from elsewhere, such as an etcd
    /// backend); role lists and permissions are put in the order the store keeps.
    pub fn from_parts(
        enabled: bool,
        revision: u64,
        users: impl IntoIterator<Item = User>,
        roles: impl IntoIterator<Item = Role>,
    ) -> AuthStore {
        AuthStore {
            enabled,
            revision,
            users: users
                .into_iter()
                .map(|mut u| {
                    u.roles.sort();
                    u.roles.dedup();
                    (u.name.clone(), u)
                })
                .collect(),
            roles: roles
                .into_iter()
                .map(|mut r| {
                    r.perms
                        .sort_by(|a, b| (&a.key, &a.range_end).cmp(&(&b.key, &b.range_end)));
                    r.perms
                        .dedup_by(|a, b| (&a.key, &a.range_end) == (&b.key, &b.range_end));
                    (r.name.clone(), r)
                })
                .collect(),
        }
    }

    /// Every user, by name.
    pub fn users(&self) -> impl Iterator<Item = &User> {
        self.users.values()
    }

    /// Every role, by name.
    pub fn roles(&self) -> impl Iterator<Item = &Role> {
        self.roles.values()
    }

    /// Whether auth is enabled.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The auth revision: bumped by every change, so tokens issued before it are stale.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// A user.
    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.get(name)
    }

    /// All user names, sorted.
    pub fn user_names(&self) -> Vec<String> {
        self.users.keys().cloned().collect()
    }

    /// A role as etcd 3.4's RoleGet answers it.
    pub fn role(&self, name: &str) -> Option<Role> {
        // etcd 3.4 lists the root role with the permissions granted to it (none unless
        // granted): its power comes from the name, not from a permission.
        self.roles.get(name).cloned()
    }

    /// All role names, sorted.
    pub fn role_names(&self) -> Vec<String> {
        self.roles.keys().cloned().collect()
    }

    /// The stored hash of a password user, to check a password against before proposing
    /// Authenticate (etcd's `CheckPassword`): AuthNotEnabled while auth is disabled,
    /// AuthFailed for an unknown user or one without password.
    pub fn password_hash(&self, name: &str) -> Result<&str, AuthError> {
        if !self.enabled {
            return Err(AuthError::AuthNotEnabled);
        }
        match self.users.get(name) {
            Some(u) if !u.no_password => Ok(&u.password_hash),
            _ => Err(AuthError::AuthFailed),
        }
    }

    fn has_root_role(u: &User) -> bool {
        u.roles.iter().any(|r| r == ROOT)
    }

    /// etcd's `isOpPermitted`: may `who` do `need` on `[key, range_end)`?
    pub fn check(
        &self,
        who: Option<&AuthInfo>,
        key: &[u8],
        range_end: &[u8],
        need: PermKind,
    ) -> Result<(), AuthError> {
        if !self.enabled {
            return Ok(());
        }
        let who = match who {
            Some(w) if w.revision != 0 => w,
            _ => return Err(AuthError::UserEmpty),
        };
        if who.revision < self.revision {
            return Err(AuthError::AuthOldRevision);
        }
        let user = self
            .users
            .get(&who.user)
            .ok_or(AuthError::PermissionDenied)?;
        if Self::has_root_role(user) {
            return Ok(());
        }
        let perms: Vec<Permission> = user
            .roles
            .iter()
            .filter_map(|r| self.roles.get(r))
            .flat_map(|r| r.perms.iter().cloned())
            .collect();
        if covers(&perms, key, range_end, need) {
            Ok(())
        } else {
            Err(AuthError::PermissionDenied)
        }
    }

    /// etcd's `IsAdminPermitted`: does `who` hold the root role? Like etcd, the token's
    /// revision is not checked here.
    pub fn check_admin(&self, who: Option<&AuthInfo>) -> Result<(), AuthError> {
        if !self.enabled {
            return Ok(());
        }
        let who = match who {
            Some(w) if !w.user.is_empty() => w,
            _ => return Err(AuthError::UserEmpty),
        };
        let user = self.users.get(&who.user).ok_or(AuthError::UserNotFound)?;
        if Self::has_root_role(user) {
            Ok(())
        } else {
            Err(AuthError::PermissionDenied)
        }
    }

    /// Applies one command with etcd's semantics. Every change bumps the revision; a
    /// refused command, Authenticate and a no-op (enabling twice, granting a role twice)
    /// leave it alone.
    pub fn apply(&mut self, cmd: &AuthCommand) -> Result<AuthOutcome, AuthError> {
        let changed = self.apply_inner(cmd)?;
        match changed {
            Change::Made => {
                self.revision += 1;
                Ok(AuthOutcome::Done)
            }
            Change::None => Ok(AuthOutcome::Done),
            Change::Authenticated(o) => Ok(o),
        }
    }

    fn apply_inner(&mut self, cmd: &AuthCommand) -> Result<Change, AuthError> {
        use AuthCommand as C;
        match cmd {
            C::Enable => {
                if self.enabled {
                    return Ok(Change::None);
                }
                let root = self.users.get(ROOT).ok_or(AuthError::RootUserNotExist)?;
                if !Self::has_root_role(root) {
                    return Err(AuthError::RootRoleNotExist);
                }
                self.enabled = true;
            }
            C::Disable => {
                if !self.enabled {
                    return Ok(Change::None);
                }
                self.enabled = false;
            }
            C::Authenticate { name, token } => {
                if !self.enabled {
                    return Err(AuthError::AuthNotEnabled);
                }
                match self.users.get(name) {
                    Some(u) if !u.no_password => {}
                    _ => return Err(AuthError::AuthFailed),
                }
                return Ok(Change::Authenticated(AuthOutcome::Authenticated {
                    name: name.clone(),
                    token: token.clone(),
                    revision: self.revision,
                }));
            }
            C::UserAdd {
                name,
                password_hash,
                no_password,
            } => {
                if name.is_empty() {
                    return Err(AuthError::UserEmpty);
                }
                if self.users.contains_key(name) {
                    return Err(AuthError::UserAlreadyExist);
                }
                self.users.insert(
                    name.clone(),
                    User {
                        name: name.clone(),
                        password_hash: if *no_password {
                            String::new()
                        } else {
                            password_hash.clone()
                        },
                        roles: Vec::new(),
                        no_password: *no_password,
                    },
                );
            }
            C::UserDelete { name } => {
                if self.enabled && name == ROOT {
                    return Err(AuthError::InvalidAuthMgmt);
                }
                self.users.remove(name).ok_or(AuthError::UserNotFound)?;
            }
            C::UserChangePassword {
                name,
                password_hash,
            } => {
                let u = self.users.get_mut(name).ok_or(AuthError::UserNotFound)?;
                u.password_hash = password_hash.clone();
            }
            C::UserGrantRole { user, role } => {
                if !self.users.contains_key(user) {
                    return Err(AuthError::UserNotFound);
                }
                if role != ROOT && !self.roles.contains_key(role) {
                    return Err(AuthError::RoleNotFound);
                }
                let u = self.users.get_mut(user).ok_or(AuthError::UserNotFound)?;
                match u.roles.binary_search(role) {
                    Ok(_) => return Ok(Change::None),
                    Err(i) => u.roles.insert(i, role.clone()),
                }
            }
            C::UserRevokeRole { user, role } => {
                if self.enabled && user == ROOT && role == ROOT {
                    return Err(AuthError::InvalidAuthMgmt);
                }
                let u = self.users.get_mut(user).ok_or(AuthError::UserNotFound)?;
                let i = u
                    .roles
                    .binary_search(role)
                    .map_err(|_| AuthError::RoleNotGranted)?;
                u.roles.remove(i);
            }
            C::RoleAdd { name } => {
                if name.is_empty() {
                    return Err(AuthError::RoleEmpty);
                }
                if self.roles.contains_key(name) {
                    return Err(AuthError::RoleAlreadyExist);
                }
                self.roles.insert(
                    name.clone(),
                    Role {
                        name: name.clone(),
                        perms: Vec::new(),
                    },
                );
            }
            C::RoleDelete { name } => {
                if self.enabled && name == ROOT {
                    return Err(AuthError::InvalidAuthMgmt);
                }
                self.roles.remove(name).ok_or(AuthError::RoleNotFound)?;
                for u in self.users.values_mut() {
                    if let Ok(i) = u.roles.binary_search(name) {
                        u.roles.remove(i);
                    }
                }
            }
            C::RoleGrantPermission { name, perm } => {
                let r = self.roles.get_mut(name).ok_or(AuthError::RoleNotFound)?;
                let pos = r.perms.binary_search_by(|p| {
                    (&p.key, &p.range_end).cmp(&(&perm.key, &perm.range_end))
                });
                match pos {
                    Ok(i) => r.perms[i].kind = perm.kind,
                    // Copies: the command's bytes may share a whole entry's buffer.
                    Err(i) => r.perms.insert(
                        i,
                        Permission {
                            kind: perm.kind,
                            key: Bytes::copy_from_slice(&perm.key),
                            range_end: Bytes::copy_from_slice(&perm.range_end),
                        },
                    ),
                }
            }
            C::RoleRevokePermission {
                name,
                key,
                range_end,
            } => {
                let r = self.roles.get_mut(name).ok_or(AuthError::RoleNotFound)?;
                let i = r
                    .perms
                    .binary_search_by(|p| (&p.key, &p.range_end).cmp(&(key, range_end)))
                    .map_err(|_| AuthError::PermissionNotGranted)?;
                r.perms.remove(i);
            }
        }
        Ok(Change::Made)
    }
}

/// What applying a command did.
enum Change {
    /// The store changed: bump the revision.
    Made,
    /// Nothing to change.
    None,
    /// Authenticate's answer.
    Authenticated(AuthOutcome),
}
