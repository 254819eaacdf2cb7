//! Who is asking: the auth token a client sends (metadata `token`, as etcd's clients do;
//! `authorization` as etcd's gRPC gateway does) or, without one, the common name of the
//! client certificate the TLS listener verified (etcd's `AuthInfoFromTLS`). The answers
//! to "may they" come from the replicated auth store: reads check it on the member task
//! before reading, writes when their entry is applied.

use keel_core::auth::{AuthError, AuthInfo, AuthStore, PermKind};
use tonic::{Code, Request, Status};

use super::recipes::prefix_end;
use crate::member::{Core, MemberHandle};
use crate::tls::ClientConnInfo;

/// "The auth store's revision now": a certificate's user and a simple token's user are
/// checked against the store as it is when their request is served or applied, never
/// as stale (etcd resolves both at the current revision; simple tokens are dropped
/// instead when their user is deleted or changes password). Only a JWT carries the
/// revision it was issued at.
pub const CURRENT_REVISION: u64 = u64::MAX;

/// The caller of `req`: None when it sent no token and no verified certificate.
pub fn caller<T>(m: &MemberHandle, req: &Request<T>) -> Result<Option<AuthInfo>, Status> {
    let md = req.metadata();
    let token = md.get("token").or_else(|| md.get("authorization"));
    if let Some(token) = token {
        let token = token.to_str().unwrap_or_default();
        return match m.tokens.info_at_revision(token, CURRENT_REVISION) {
            Some(info) => Ok(Some(info)),
            None => Err(auth_status(AuthError::InvalidAuthToken)),
        };
    }
    let cn = req
        .extensions()
        .get::<ClientConnInfo>()
        .and_then(|c| c.common_name.clone());
    Ok(cn.map(|user| AuthInfo {
        user,
        revision: CURRENT_REVISION,
    }))
}

/// An auth error as etcd's gRPC status.
pub fn auth_status(e: AuthError) -> Status {
    Status::new(Code::from_i32(e.grpc_code()), e.to_string())
}

/// The refusal etcd's maintenance server gives to a caller that is not root: the auth
/// package's own error ("auth: ..."), which reaches clients with code Unknown.
pub fn maintenance_denied(e: AuthError) -> Status {
    let text = match e {
        AuthError::UserNotFound => "user not found".to_string(),
        e => e.to_string().trim_start_matches("etcdserver: ").to_string(),
    };
    Status::unknown(format!("auth: {text}"))
}

/// Runs `f` against the member's auth store as the caller of `req`: the outer error is
/// the request's own (a bad token, a stopped member), the inner one the refusal.
pub async fn check<T, F>(
    m: &MemberHandle,
    req: &Request<T>,
    f: F,
) -> Result<Result<(), AuthError>, Status>
where
    F: FnOnce(&AuthStore, Option<&AuthInfo>) -> Result<(), AuthError> + Send + 'static,
{
    let who = caller(m, req)?;
    Ok(m.local(move |c: &mut Core| f(&c.sm.auth, who.as_ref()))
        .await?)
}

/// The lock and election recipes read and write keys under `dir`: their caller must be
/// allowed both on that whole prefix, as etcd's recipes run with the caller's token.
pub async fn check_recipe<T>(
    m: &MemberHandle,
    req: &Request<T>,
    dir: Vec<u8>,
) -> Result<(), Status> {
    check(m, req, move |a, who| {
        let end = prefix_end(&dir);
        a.check(who, &dir, &end, PermKind::Read)?;
        a.check(who, &dir, &end, PermKind::Write)
    })
    .await?
    .map_err(auth_status)
}
