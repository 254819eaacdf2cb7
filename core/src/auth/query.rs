//! What the auth RPCs and the permission checks ask of the auth store, as typed values:
//! a service sends a query with its caller and gets a typed answer, so it never holds
//! the store (or the member) itself, and a later change may answer from a copy of the
//! store off the member task without touching the services. Each query carries etcd's
//! permission rule for it (who may read a user, a role, the status).

use super::{AuthError, AuthInfo, AuthStore, PermKind, Permission};

/// A question about the auth store, asked on behalf of a caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthQuery {
    /// May the caller do what needs the root role (or is auth off)?
    Admin,
    /// May the caller read and write every key in `[key, range_end)` (the lock and
    /// election recipes run with the caller's permissions on their prefix)?
    ReadWrite {
        /// Start of the range.
        key: Vec<u8>,
        /// End of the range.
        range_end: Vec<u8>,
    },
    /// Whether auth is on and the store's revision (root only, as etcd 3.5).
    Status,
    /// A user's roles (root may read anyone; a user itself).
    UserRoles(String),
    /// Every user's name (root only).
    UserNames,
    /// A role's permissions (root may read any; a user the roles granted to it).
    RolePerms(String),
    /// Every role's name (root only).
    RoleNames,
    /// For Authenticate: whether auth is on, and the user's password hash.
    Login(String),
}

/// The answer to an [`AuthQuery`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthAnswer {
    /// Allowed (Admin, ReadWrite).
    Allowed,
    /// Status.
    Status {
        /// Auth is on.
        enabled: bool,
        /// The store's revision.
        revision: u64,
    },
    /// UserRoles, UserNames, RoleNames.
    Names(Vec<String>),
    /// RolePerms.
    Perms(Vec<Permission>),
    /// Login.
    Login {
        /// Auth is on.
        enabled: bool,
        /// The hash to verify the password against, or why there is none.
        password_hash: Result<String, AuthError>,
    },
}

impl AuthQuery {
    /// Answers the query from `a` for caller `who`; Err is etcd's refusal.
    pub fn answer(self, a: &AuthStore, who: Option<&AuthInfo>) -> Result<AuthAnswer, AuthError> {
        Ok(match self {
            AuthQuery::Admin => {
                a.check_admin(who)?;
                AuthAnswer::Allowed
            }
            AuthQuery::ReadWrite { key, range_end } => {
                a.check(who, &key, &range_end, PermKind::Read)?;
                a.check(who, &key, &range_end, PermKind::Write)?;
                AuthAnswer::Allowed
            }
            AuthQuery::Status => {
                a.check_admin(who)?;
                AuthAnswer::Status {
                    enabled: a.enabled(),
                    revision: a.revision(),
                }
            }
            AuthQuery::UserRoles(name) => {
                let own = who.is_some_and(|w| w.user == name);
                if !own {
                    a.check_admin(who)?;
                }
                let user = a.user(&name).ok_or(AuthError::UserNotFound)?;
                AuthAnswer::Names(user.roles.clone())
            }
            AuthQuery::UserNames => {
                a.check_admin(who)?;
                AuthAnswer::Names(a.user_names())
            }
            AuthQuery::RolePerms(name) => {
                let own = who
                    .and_then(|w| a.user(&w.user))
                    .is_some_and(|u| u.roles.contains(&name));
                if !own {
                    a.check_admin(who)?;
                }
                AuthAnswer::Perms(a.role(&name).ok_or(AuthError::RoleNotFound)?.perms)
            }
            AuthQuery::RoleNames => {
                a.check_admin(who)?;
                AuthAnswer::Names(a.role_names())
            }
            AuthQuery::Login(name) => AuthAnswer::Login {
                enabled: a.enabled(),
                password_hash: a.password_hash(&name).map(str::to_string),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::AuthCommand;

    /// Auth on: root (root role), alice (role r), bob (no role).
    fn store() -> AuthStore {
        let mut a = AuthStore::new();
        let user = |name: &str| AuthCommand::UserAdd {
            name: name.into(),
            password_hash: "h".into(),
            no_password: false,
        };
        let grant = |user: &str, role: &str| AuthCommand::UserGrantRole {
            user: user.into(),
            role: role.into(),
        };
        for cmd in [
            user("root"),
            grant("root", "root"),
            user("alice"),
            user("bob"),
            AuthCommand::RoleAdd { name: "r".into() },
            grant("alice", "r"),
            AuthCommand::Enable,
        ] {
            a.apply(&cmd).expect("setup");
        }
        a
    }

    fn who(user: &str) -> Option<AuthInfo> {
        Some(AuthInfo {
            user: user.into(),
            revision: u64::MAX,
        })
    }

    #[test]
    fn users_and_roles_are_readable_by_root_and_by_their_own() {
        let a = store();
        let ask = |q: AuthQuery, as_: &str| q.answer(&a, who(as_).as_ref());
        let alice = AuthQuery::UserRoles("alice".into());
        assert_eq!(
            ask(alice.clone(), "alice"),
            Ok(AuthAnswer::Names(vec!["r".into()]))
        );
        assert_eq!(
            ask(alice.clone(), "root"),
            Ok(AuthAnswer::Names(vec!["r".into()]))
        );
        assert_eq!(ask(alice, "bob"), Err(AuthError::PermissionDenied));
        let r = AuthQuery::RolePerms("r".into());
        assert_eq!(ask(r.clone(), "alice"), Ok(AuthAnswer::Perms(Vec::new())));
        assert_eq!(ask(r, "bob"), Err(AuthError::PermissionDenied));
        assert_eq!(
            ask(AuthQuery::UserNames, "alice"),
            Err(AuthError::PermissionDenied)
        );
        assert!(matches!(
            ask(AuthQuery::Status, "root"),
            Ok(AuthAnswer::Status { enabled: true, .. })
        ));
        assert_eq!(
            AuthQuery::Admin.answer(&a, None),
            Err(AuthError::UserEmpty),
            "no caller, auth on"
        );
    }
}
