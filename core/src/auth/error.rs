//! etcd's auth errors, with its exact messages and gRPC status codes.

/// Why an auth operation or a permission check failed (etcd's `auth.Err*`).
///
/// The messages are etcd's (`api/v3rpc/rpctypes/error.go`), so clients that match on the
/// text behave the same against Keel.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum AuthError {
    /// Enabling auth without a root user.
    #[error("etcdserver: root user does not exist")]
    RootUserNotExist,
    /// Enabling auth while the root user lacks the root role.
    #[error("etcdserver: root user does not have root role")]
    RootRoleNotExist,
    /// Adding a user that exists.
    #[error("etcdserver: user name already exists")]
    UserAlreadyExist,
    /// An empty user name, or a request without a user while auth is enabled.
    #[error("etcdserver: user name is empty")]
    UserEmpty,
    /// No such user.
    #[error("etcdserver: user name not found")]
    UserNotFound,
    /// Adding a role that exists.
    #[error("etcdserver: role name already exists")]
    RoleAlreadyExist,
    /// No such role.
    #[error("etcdserver: role name not found")]
    RoleNotFound,
    /// An empty role name.
    #[error("etcdserver: role name is empty")]
    RoleEmpty,
    /// Wrong user name or password.
    #[error("etcdserver: authentication failed, invalid user ID or password")]
    AuthFailed,
    /// The user's roles do not permit the request.
    #[error("etcdserver: permission denied")]
    PermissionDenied,
    /// Revoking a role the user does not have.
    #[error("etcdserver: role is not granted to the user")]
    RoleNotGranted,
    /// Revoking a permission the role does not have.
    #[error("etcdserver: permission is not granted to the role")]
    PermissionNotGranted,
    /// Authenticating while auth is disabled.
    #[error("etcdserver: authentication is not enabled")]
    AuthNotEnabled,
    /// A token that is unknown or expired.
    #[error("etcdserver: invalid auth token")]
    InvalidAuthToken,
    /// A change that would lock the administrator out (deleting root while enabled, ...).
    #[error("etcdserver: invalid auth management")]
    InvalidAuthMgmt,
    /// The token was issued before the latest change to users, roles or permissions.
    #[error("etcdserver: revision of auth store is old")]
    AuthOldRevision,
}

impl AuthError {
    /// The gRPC status code etcd answers this error with (`codes.Code` numbers).
    pub fn grpc_code(self) -> i32 {
        const INVALID_ARGUMENT: i32 = 3;
        const PERMISSION_DENIED: i32 = 7;
        const FAILED_PRECONDITION: i32 = 9;
        const UNAUTHENTICATED: i32 = 16;
        match self {
            AuthError::RootUserNotExist
            | AuthError::RootRoleNotExist
            | AuthError::UserAlreadyExist
            | AuthError::UserNotFound
            | AuthError::RoleAlreadyExist
            | AuthError::RoleNotFound
            | AuthError::RoleNotGranted
            | AuthError::PermissionNotGranted
            | AuthError::AuthNotEnabled => FAILED_PRECONDITION,
            AuthError::UserEmpty
            | AuthError::RoleEmpty
            | AuthError::AuthFailed
            | AuthError::InvalidAuthMgmt
            | AuthError::AuthOldRevision => INVALID_ARGUMENT,
            AuthError::PermissionDenied => PERMISSION_DENIED,
            AuthError::InvalidAuthToken => UNAUTHENTICATED,
        }
    }
}
