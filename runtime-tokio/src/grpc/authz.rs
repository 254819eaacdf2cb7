//! Who is asking: the auth token a client sends (metadata `token`, as etcd's clients do;
//! `authorization` as etcd's gRPC gateway does) or, without one, the common name of the
//! client certificate the TLS listener verified (etcd's `AuthInfoFromTLS`). The answers
//! to "may they" come from the replicated auth store: reads check it on the member task
//! before reading, writes when their entry is applied.

use super::Grpc;
use std::future::Future;

use keel_core::auth::{AuthError, AuthInfo, AuthQuery};
use tonic::{Code, Request, Status};

use super::recipes::prefix_end;
use crate::member::{MemberHandle, REQUEST_TIMEOUT};
use crate::tls::ClientConnInfo;

/// "The auth store's revision now": a certificate's user and a simple token's user are
/// checked against the store as it is when their request is served or applied, never
/// as stale (etcd resolves both at the current revision; simple tokens are dropped
/// instead when their user is deleted or changes password). Only a JWT carries the
/// revision it was issued at.
pub const CURRENT_REVISION: u64 = u64::MAX;

/// The caller of `req`: None when it sent no token and no verified certificate. A known
/// token or a certificate resolves at once; only a simple token this member does not know
/// yet waits (see [`resolve_late`]), so the returned future never borrows `req`.
pub fn caller<'m, T>(
    m: &'m MemberHandle,
    req: &Request<T>,
) -> impl Future<Output = Result<Option<AuthInfo>, Status>> + Send + 'm {
    let now = resolve_now(m, req);
    async move {
        match now {
            Ok(who) => who,
            Err(late) => resolve_late(m, late).await.map(Some),
        }
    }
}

/// A simple token this member has not recorded, with the index its Authenticate entry
/// has in the log.
struct Late {
    token: String,
    index: u64,
}

/// The caller as this member can tell right now: `Err` for a well-formed simple token it
/// does not know yet.
fn resolve_now<T>(
    m: &MemberHandle,
    req: &Request<T>,
) -> Result<Result<Option<AuthInfo>, Status>, Late> {
    let md = req.metadata();
    let token = md.get("token").or_else(|| md.get("authorization"));
    if let Some(token) = token {
        let token = token.to_str().unwrap_or_default();
        if let Some(info) = m.tokens.info_at_revision(token, CURRENT_REVISION) {
            return Ok(Ok(Some(info)));
        }
        return match m.tokens.simple_token_index(token) {
            Some(index) => Err(Late {
                token: token.to_owned(),
                index,
            }),
            None => Ok(Err(auth_status(AuthError::InvalidAuthToken))),
        };
    }
    let cn = req
        .extensions()
        .get::<ClientConnInfo>()
        .and_then(|c| c.common_name.clone());
    Ok(Ok(cn.map(|user| AuthInfo {
        user,
        revision: CURRENT_REVISION,
    })))
}

/// etcd's `isValidSimpleToken`: a member asked with a simple token before it applied the
/// token's Authenticate entry (a follower a little behind the leader that answered the
/// login) waits to apply it, then looks again. The wait ends with the request (tonic
/// drops the future at the client's deadline) or after [`REQUEST_TIMEOUT`]; then, or if
/// the token is still unknown, it is invalid.
async fn resolve_late(m: &MemberHandle, late: Late) -> Result<AuthInfo, Status> {
    if m.wait_applied(late.index, REQUEST_TIMEOUT).await {
        if let Some(info) = m.tokens.info_at_revision(&late.token, CURRENT_REVISION) {
            return Ok(info);
        }
    }
    Err(auth_status(AuthError::InvalidAuthToken))
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

/// Asks `q` of the member's auth store as the caller of `req`: the outer error is the
/// request's own (a bad token, a stopped member), the inner one the refusal.
pub async fn check<T>(
    m: &MemberHandle,
    req: &Request<T>,
    q: AuthQuery,
) -> Result<Result<(), AuthError>, Status> {
    let who = caller(m, req).await?;
    check_as(m, who, q).await
}

/// [`check`] for a caller already resolved.
async fn check_as(
    m: &MemberHandle,
    who: Option<AuthInfo>,
    q: AuthQuery,
) -> Result<Result<(), AuthError>, Status> {
    m.auth_query(false, who, q)
        .await
        .map(|(r, _)| r.map(|_| ()))
        .grpc()
}

/// The lock and election recipes read and write keys under `dir`: their caller must be
/// allowed both on that whole prefix, as etcd's recipes run with the caller's token.
/// Returns the caller, on whose behalf the recipe then proposes its writes (the state
/// machine checks them again when it applies them).
pub async fn check_recipe<T>(
    m: &MemberHandle,
    req: &Request<T>,
    dir: Vec<u8>,
) -> Result<Option<AuthInfo>, Status> {
    let who = caller(m, req).await?;
    let range_end = prefix_end(&dir).to_vec();
    let q = AuthQuery::ReadWrite {
        key: dir,
        range_end,
    };
    check_as(m, who.clone(), q).await?.map_err(auth_status)?;
    Ok(who)
}
