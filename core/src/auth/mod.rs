//! etcd's auth store: users, roles and key-range permissions, replicated through the log.
//!
//! [`AuthStore`] is part of every member's applied state: [`AuthCommand`]s change it
//! identically everywhere, and the apply loop checks each command against it before
//! running it (etcd's `applierV3Auth`). Passwords are hashed by the runtime (bcrypt, as
//! etcd) before proposing, so the log and the store only ever hold hashes.

mod error;
mod image;
mod perms;
mod query;
mod simple_tokens;
mod store;

use bytes::Bytes;

pub use error::AuthError;
pub use image::AuthDecodeError;
pub use perms::covers;
pub use query::{AuthAnswer, AuthQuery};
pub use simple_tokens::{index_of, SimpleTokens, TokenCheck, TokenKeeper, MAX_TOKENS};
pub use store::AuthStore;

/// Name of the superuser and of the all-powerful role.
pub const ROOT: &str = "root";

/// What a permission allows (`authpb.Permission.Type` numbers).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PermKind {
    /// Range, watch, txn compares.
    Read = 0,
    /// Put, delete.
    Write = 1,
    /// Both.
    ReadWrite = 2,
}

impl PermKind {
    /// The kind with protobuf number `v`.
    pub fn from_i32(v: i32) -> Option<PermKind> {
        match v {
            0 => Some(PermKind::Read),
            1 => Some(PermKind::Write),
            2 => Some(PermKind::ReadWrite),
            _ => None,
        }
    }
}

/// One key-range permission of a role. Ranges follow etcd: an empty `range_end` is the
/// key alone, `range_end == "\0"` every key from `key` on, else `[key, range_end)`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Permission {
    /// What it allows.
    pub kind: PermKind,
    /// Start of the range.
    pub key: Bytes,
    /// End of the range (see above).
    pub range_end: Bytes,
}

/// A user.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct User {
    /// Name.
    pub name: String,
    /// bcrypt hash made by the runtime; empty when `no_password`.
    pub password_hash: String,
    /// Granted roles, sorted and unique.
    pub roles: Vec<String>,
    /// The user cannot authenticate with a password (etcd's `UserAddOptions.NoPassword`).
    pub no_password: bool,
}

/// A role.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Role {
    /// Name.
    pub name: String,
    /// Permissions, sorted by key, then range end.
    pub perms: Vec<Permission>,
}

/// Who sent a request: the user of its token and the auth revision the token was issued
/// at.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct AuthInfo {
    /// User name.
    pub user: String,
    /// Auth store revision when the token was issued.
    pub revision: u64,
}

impl AuthInfo {
    /// The member's own authority, for commands a member proposes on its own behalf
    /// (expired-lease revokes: etcd's `authStore.WithRoot`). The root user exists and
    /// holds the root role whenever auth is enabled, and revision `u64::MAX` is never
    /// stale. Runtimes must never build this from a client's credentials.
    pub fn member() -> AuthInfo {
        AuthInfo {
            user: ROOT.to_owned(),
            revision: u64::MAX,
        }
    }
}

/// A change to the auth store, as carried in the log.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum AuthCommand {
    /// AuthEnable.
    Enable,
    /// AuthDisable.
    Disable,
    /// Authenticate: the password was already checked by the proposer against
    /// [`AuthStore::password_hash`]; the proposer chooses the token's random prefix
    /// (empty for JWT), the state machine appends the entry's index.
    Authenticate {
        /// User name.
        name: String,
        /// Token to hand out.
        token: String,
    },
    /// UserAdd.
    UserAdd {
        /// User name.
        name: String,
        /// bcrypt hash (empty when `no_password`).
        password_hash: String,
        /// A user without password.
        no_password: bool,
    },
    /// UserDelete.
    UserDelete {
        /// User name.
        name: String,
    },
    /// UserChangePassword.
    UserChangePassword {
        /// User name.
        name: String,
        /// New bcrypt hash.
        password_hash: String,
    },
    /// UserGrantRole.
    UserGrantRole {
        /// User name.
        user: String,
        /// Role name.
        role: String,
    },
    /// UserRevokeRole.
    UserRevokeRole {
        /// User name.
        user: String,
        /// Role name.
        role: String,
    },
    /// RoleAdd.
    RoleAdd {
        /// Role name.
        name: String,
    },
    /// RoleDelete.
    RoleDelete {
        /// Role name.
        name: String,
    },
    /// RoleGrantPermission.
    RoleGrantPermission {
        /// Role name.
        name: String,
        /// The permission (replaces the kind of one with the same range).
        perm: Permission,
    },
    /// RoleRevokePermission.
    RoleRevokePermission {
        /// Role name.
        name: String,
        /// Start of the permission's range.
        key: Bytes,
        /// End of the permission's range.
        range_end: Bytes,
    },
}

/// What a successful [`AuthCommand`] answers.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum AuthOutcome {
    /// The change is made (or was already in place).
    Done,
    /// Authenticate succeeded.
    Authenticated {
        /// User name.
        name: String,
        /// The token to hand out: the proposer's simple-token prefix and, after a dot,
        /// the index of the Authenticate entry (etcd's `"%s.%d"`); empty for JWT.
        token: String,
        /// Auth revision the token is valid from.
        revision: u64,
    },
}
