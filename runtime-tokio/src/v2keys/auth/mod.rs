//! etcd 3.4's v2 auth API (`--enable-v2`), behind etcdctl v2's `user`, `role` and `auth`
//! commands: `/v2/auth/enable`, `/v2/auth/users[/<name>]`, `/v2/auth/roles[/<name>]`,
//! answered with etcd's JSON, status codes and messages (`v2http/client_auth.go` over
//! `v2auth/auth.go`), and the permission checks the keys and members APIs make
//! ([`access`]).
//!
//! - Users have bcrypt passwords and roles; roles have read and write path globs
//!   (`/pub/*` is a prefix, anything else one exact key). The root role may do
//!   everything and is built in; the root user always has it. Enabling auth needs a
//!   root user, and creates a `guest` role with full access if there is none: requests
//!   without credentials get the guest role's access.
//! - With auth enabled, every auth endpoint but `GET /v2/auth/enable`, and every
//!   member change, needs a user with the root role; keys requests need a role whose
//!   globs cover the key (recursive reads and deletes a glob covering everything
//!   below). Credentials are HTTP Basic, checked against the bcrypt hash on every
//!   request as etcd does.
//! - The records are etcd's, in the replicated keyspace ([`stored`]).

pub(crate) mod access;
mod go_json;
pub(crate) mod model;
pub(crate) mod stored;

use std::sync::Arc;

use axum::body::to_bytes;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use keel_core::node::{Command, Outcome};

use super::form::{self, Form};
use super::{keys, Ctx, MAX_ATTEMPTS, MAX_FORM_BYTES};
use crate::http::go_error;
use crate::tls::ClientConnInfo;
use access::Credentials;
use model::{auth_err, default_guest_role, AuthError, Permissions, Role, User, GUEST, ROOT};
use stored::{Edit, Image};

/// etcd's `authPrefix`.
const AUTH_PREFIX: &str = "/v2/auth";

/// Why a request failed: etcd's v2 auth error, or anything else (which etcd answers as
/// a 500 "Internal Server Error").
#[derive(Debug)]
enum Failure {
    Auth(AuthError),
    Internal(String),
}

impl From<AuthError> for Failure {
    fn from(e: AuthError) -> Failure {
        Failure::Auth(e)
    }
}

fn internal(e: impl std::fmt::Display) -> Failure {
    Failure::Internal(e.to_string())
}

impl Failure {
    /// etcd's `writeError`, after the handler set the cluster ID.
    fn respond(self, ctx: &Ctx) -> Response {
        match self {
            Failure::Auth(e) => {
                let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
                message(status, &e.message, Some(&ctx.cluster_id))
            }
            Failure::Internal(cause) => {
                tracing::warn!(internal_server_error = %cause, "unexpected v2 response error");
                message(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Internal Server Error",
                    Some(&ctx.cluster_id),
                )
            }
        }
    }
}

/// `httptypes.HTTPError.WriteTo`: `{"message":...}` from `json.Marshal` (no newline).
fn message(status: StatusCode, text: &str, cluster_id: Option<&HeaderValue>) -> Response {
    let mut body = String::from("{\"message\":");
    super::json::push_str(&mut body, text.as_bytes());
    body.push('}');
    let mut h = HeaderMap::new();
    if let Some(id) = cluster_id {
        h.insert("x-etcd-cluster-id", id.clone());
    }
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    (status, h, body).into_response()
}

/// etcd's `writeNoAuth`: 401, before any header of the handler's was set.
pub(super) fn no_auth() -> Response {
    message(StatusCode::UNAUTHORIZED, "Insufficient credentials", None)
}

/// A success: the cluster ID, JSON, and `body` (empty, or an encoded value and its
/// newline).
fn answer(ctx: &Ctx, status: StatusCode, body: String) -> Response {
    let mut h = HeaderMap::new();
    h.insert("x-etcd-cluster-id", ctx.cluster_id.clone());
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    (status, h, body).into_response()
}

/// etcd's `allowMethod` refusal.
fn method_not_allowed(allow: &'static str) -> Response {
    let mut r = go_error(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

/// The credentials a request presents (the certificate's common name is there only
/// when `--client-cert-auth` makes it the user).
pub(super) fn credentials(req: &Request) -> Credentials {
    let cn = req
        .extensions()
        .get::<ClientConnInfo>()
        .and_then(|c| c.common_name.as_deref());
    Credentials::of(req.headers(), cn)
}

/// `hasRootAccess`.
async fn root_access(ctx: &Ctx, who: &Credentials) -> Result<bool, Failure> {
    let view = ctx
        .m
        .v2_auth_access(who.user_name().map(str::to_owned))
        .await
        .map_err(internal)?;
    Ok(access::has_root_access(who, &view, &ctx.m.passwords).await)
}

/// `hasWriteRootAccess` for the members API: reads pass, changes need root. Some(the
/// refusal) when refused.
pub(super) async fn members_refusal(
    ctx: &Ctx,
    method: &Method,
    who: &Credentials,
) -> Option<Response> {
    if method == Method::GET || method == Method::HEAD {
        return None;
    }
    match root_access(ctx, who).await {
        Ok(true) => None,
        Ok(false) => Some(no_auth()),
        Err(f) => Some(f.respond(ctx)),
    }
}

/// `hasKeyPrefixAccess` for a keys request on `key` (the raw decoded path after
/// `/v2/keys`). Err when the member cannot answer.
pub(super) async fn key_access(
    ctx: &Ctx,
    who: &Credentials,
    key: &str,
    write: bool,
    recursive: bool,
) -> Result<bool, String> {
    let view = ctx
        .m
        .v2_auth_access(who.user_name().map(str::to_owned))
        .await
        .map_err(|e| e.to_string())?;
    Ok(access::has_key_access(who, &view, &ctx.m.passwords, key, write, recursive).await)
}

/// The request path decoded, as Go's `r.URL.Path`.
fn decoded_path(req: &Request) -> String {
    let raw = req.uri().path();
    match form::unescape(raw.as_bytes(), false) {
        Ok(p) => String::from_utf8_lossy(&p).into_owned(),
        Err(_) => raw.to_string(),
    }
}

/// The name in `/v2/auth/<kind>/<name>`, as etcd splits `path.Clean` of the path:
/// Ok(None) for the collection itself, Err for a deeper path.
fn name_in(req: &Request) -> Result<Option<String>, ()> {
    let path = decoded_path(req);
    let sub = keys::clean(path.get(AUTH_PREFIX.len()..).unwrap_or(""));
    let pieces: Vec<&str> = sub.split('/').collect();
    match pieces.as_slice() {
        [_, _] => Ok(None),
        [_, _, name] => Ok(Some((*name).to_string())),
        _ => Err(()),
    }
}

/// Runs a change decided by `decide` against the store as read now, again if the store
/// changed in between, until it applies; `decide`'s refusal ends it.
async fn change<T>(
    ctx: &Ctx,
    mut decide: impl FnMut(&mut Edit) -> Result<T, Failure>,
) -> Result<T, Failure> {
    for _ in 0..MAX_ATTEMPTS {
        let img = ctx.m.v2_auth_image(true).await.map_err(internal)?;
        let mut edit = Edit::new(&img);
        let out = decide(&mut edit)?;
        let (outcome, _) = ctx
            .m
            .propose_v2(Command::Txn(edit.into_txn()))
            .await
            .map_err(internal)?;
        match outcome {
            Outcome::Txn(Ok(t)) if t.succeeded => return Ok(out),
            Outcome::Txn(Ok(_)) => continue,
            Outcome::Txn(Err(e)) => return Err(internal(e)),
            _ => return Err(internal("etcdserver: unexpected apply result")),
        }
    }
    Err(internal("etcdserver: too many conflicting writes"))
}

/// Answers a refused or failed root check; None when the caller may go on.
async fn require_root(ctx: &Ctx, who: &Credentials) -> Option<Response> {
    match root_access(ctx, who).await {
        Ok(true) => None,
        Ok(false) => Some(no_auth()),
        // etcd's check cannot fail; a member that cannot read answers as its store would.
        Err(f) => Some(f.respond(ctx)),
    }
}

/// `r.ParseForm()` of a GET: only a malformed query fails it (a 500 in etcd).
fn query_error(req: &Request) -> Option<String> {
    Form::parse(req.uri().query(), None).1
}

/// `/v2/auth/enable`.
pub(super) async fn enable(State(ctx): State<Arc<Ctx>>, req: Request) -> Response {
    let method = req.method().clone();
    if ![Method::GET, Method::PUT, Method::DELETE].contains(&method) {
        return method_not_allowed("GET,PUT,DELETE");
    }
    let who = credentials(&req);
    if method != Method::GET {
        if let Some(r) = require_root(&ctx, &who).await {
            return r;
        }
    }
    let done = if method == Method::GET {
        match ctx.m.v2_auth_access(None).await {
            Ok(v) => {
                return answer(
                    &ctx,
                    StatusCode::OK,
                    format!("{{\"enabled\":{}}}\n", v.enabled),
                )
            }
            Err(e) => Err(internal(e)),
        }
    } else if method == Method::PUT {
        change(&ctx, enable_auth).await
    } else {
        change(&ctx, disable_auth).await
    };
    match done {
        Ok(()) => answer(&ctx, StatusCode::OK, String::new()),
        Err(f) => f.respond(&ctx),
    }
}

/// `EnableAuth`: needs a root user; makes the guest role if there is none.
fn enable_auth(e: &mut Edit) -> Result<(), Failure> {
    if e.enabled() {
        return Err(auth_err(409, "already enabled").into());
    }
    if e.user(ROOT).is_none() {
        return Err(auth_err(409, "No root user available, please create one").into());
    }
    if e.role(GUEST).is_none() {
        tracing::info!(
            role_name = GUEST,
            "no guest role access found; creating default"
        );
        e.put_role(&default_guest_role());
    }
    e.set_enabled(true);
    Ok(())
}

/// `DisableAuth`.
fn disable_auth(e: &mut Edit) -> Result<(), Failure> {
    if !e.enabled() {
        return Err(auth_err(409, "already disabled").into());
    }
    e.set_enabled(false);
    Ok(())
}

/// `/v2/auth/users`, `/v2/auth/users/` and `/v2/auth/users/<name>`.
pub(super) async fn users(State(ctx): State<Arc<Ctx>>, req: Request) -> Response {
    match name_in(&req) {
        Ok(None) => all_users(&ctx, req).await,
        Ok(Some(name)) => one_user(&ctx, req, name).await,
        Err(()) => message(StatusCode::BAD_REQUEST, "Invalid path", None),
    }
}

/// `/v2/auth/roles`, `/v2/auth/roles/` and `/v2/auth/roles/<name>`.
pub(super) async fn roles(State(ctx): State<Arc<Ctx>>, req: Request) -> Response {
    match name_in(&req) {
        Ok(None) => all_roles(&ctx, req).await,
        Ok(Some(name)) => one_role(&ctx, req, name).await,
        Err(()) => message(StatusCode::BAD_REQUEST, "Invalid path", None),
    }
}

/// etcd's `userWithRoles`: the user and those of its roles that exist (omitted if none).
fn user_with_roles(user: &User, roles: &[Role]) -> String {
    let mut out = String::from("{\"user\":");
    super::json::push_str(&mut out, user.user.as_bytes());
    if !roles.is_empty() {
        out.push_str(",\"roles\":[");
        let all: Vec<String> = roles.iter().map(Role::to_json).collect();
        out.push_str(&all.join(","));
        out.push(']');
    }
    out.push('}');
    out
}

/// What both listings check, in etcd's order: GET only, root only, the records read,
/// and only then a malformed query string (etcd's handlers parse it late).
async fn listing_image(ctx: &Ctx, req: Request) -> Result<Image, Response> {
    if req.method() != Method::GET {
        return Err(method_not_allowed("GET"));
    }
    let (who, bad_query) = (credentials(&req), query_error(&req));
    drop(req);
    if let Some(r) = require_root(ctx, &who).await {
        return Err(r);
    }
    let img = ctx
        .m
        .v2_auth_image(false)
        .await
        .map_err(|e| internal(e).respond(ctx))?;
    match bad_query {
        Some(e) => Err(internal(e).respond(ctx)),
        None => Ok(img),
    }
}

/// `baseUsers`: every user with their existing roles.
async fn all_users(ctx: &Ctx, req: Request) -> Response {
    let img = match listing_image(ctx, req).await {
        Ok(i) => i,
        Err(r) => return r,
    };
    let mut listed = Vec::new();
    for name in img.user_names() {
        let Some(u) = img.user(&name) else { continue };
        let roles: Vec<Role> = u.role_names().filter_map(|r| img.role(r)).collect();
        listed.push(user_with_roles(&u, &roles));
    }
    let users = if listed.is_empty() {
        "null".to_string()
    } else {
        format!("[{}]", listed.join(","))
    };
    answer(ctx, StatusCode::OK, format!("{{\"users\":{users}}}\n"))
}

/// `forUser`.
async fn one_user(ctx: &Ctx, req: Request, name: String) -> Response {
    let method = req.method().clone();
    if ![Method::GET, Method::PUT, Method::DELETE].contains(&method) {
        return method_not_allowed("GET,PUT,DELETE");
    }
    let who = credentials(&req);
    if let Some(r) = require_root(ctx, &who).await {
        return r;
    }
    let done = if method == Method::GET {
        let bad_query = query_error(&req);
        drop(req);
        get_user(ctx, bad_query, &name).await
    } else if method == Method::PUT {
        put_user(ctx, req, &name).await
    } else {
        change(ctx, |e| delete_user(e, &name))
            .await
            .map(|()| (StatusCode::OK, String::new()))
    };
    match done {
        Ok((status, body)) => answer(ctx, status, body),
        Err(f) => f.respond(ctx),
    }
}

async fn get_user(
    ctx: &Ctx,
    bad_query: Option<String>,
    name: &str,
) -> Result<(StatusCode, String), Failure> {
    let img = ctx.m.v2_auth_image(false).await.map_err(internal)?;
    let u = img
        .user(name)
        .ok_or_else(|| auth_err(404, &format!("User {name} does not exist.")))?;
    if let Some(e) = bad_query {
        return Err(internal(e));
    }
    let mut roles = Vec::new();
    for r in u.role_names() {
        let role = img
            .role(r)
            .ok_or_else(|| auth_err(404, &format!("Role {r} does not exist.")))?;
        roles.push(role);
    }
    Ok((StatusCode::OK, format!("{}\n", user_with_roles(&u, &roles))))
}

/// A 400 whose message is etcd's text as is (no "auth: " prefix, unlike `auth_err`).
fn bad_request(message: &str) -> Failure {
    Failure::Auth(AuthError {
        status: 400,
        message: message.to_string(),
    })
}

async fn read_body(req: Request) -> Option<bytes::Bytes> {
    to_bytes(req.into_body(), MAX_FORM_BYTES).await.ok()
}

/// A user PUT: create (with roles, or a password for a new user), password change,
/// or role grants and revokes, as etcd's `forUser` tells them apart.
async fn put_user(ctx: &Ctx, req: Request, name: &str) -> Result<(StatusCode, String), Failure> {
    let body = read_body(req).await.unwrap_or_default();
    let u = go_json::user(&body).map_err(|_| bad_request("Invalid JSON in request body."))?;
    if u.user != name {
        return Err(bad_request(
            "User JSON name does not match the name in the URL",
        ));
    }
    // Hashed once, before deciding: a retried change reuses it.
    let hash = if u.password.is_empty() {
        Err("no password".to_string())
    } else {
        ctx.m.passwords.hash_v2(u.password.clone()).await
    };
    let hashed = || hash.clone().map_err(internal);
    let no_grants =
        u.grant.as_ref().is_none_or(Vec::is_empty) && u.revoke.as_ref().is_none_or(Vec::is_empty);
    let has_roles = u.roles.as_ref().is_some_and(|r| !r.is_empty());
    let (mut out, created) = if no_grants {
        if has_roles {
            // etcd answers this create 200, not 201: only its create-or-update says 201.
            let out = change(ctx, |e| create_user(e, &u, &hashed)).await?;
            (out, false)
        } else {
            change(ctx, |e| {
                if e.user(&u.user).is_some() {
                    update_user(e, &u, &hashed).map(|out| (out, false))
                } else {
                    create_user(e, &u, &hashed).map(|out| (out, true))
                }
            })
            .await?
        }
    } else {
        if has_roles {
            return Err(bad_request(
                "User JSON contains both roles and grant/revoke",
            ));
        }
        let out = change(ctx, |e| update_user(e, &u, &hashed)).await?;
        (out, false)
    };
    out.password.clear();
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, format!("{}\n", out.to_json())))
}

/// `CreateUser`.
fn create_user(
    e: &mut Edit,
    u: &User,
    hashed: &impl Fn() -> Result<String, Failure>,
) -> Result<User, Failure> {
    let mut user = u.clone().with_root_role();
    if user.password.is_empty() {
        let text = format!("Cannot create user {} with an empty password", user.user);
        return Err(auth_err(400, &text).into());
    }
    user.password = hashed()?;
    if e.user(&user.user).is_some() {
        return Err(auth_err(409, &format!("User {} already exists.", user.user)).into());
    }
    e.put_user(&user);
    Ok(user)
}

/// `UpdateUser`.
fn update_user(
    e: &mut Edit,
    u: &User,
    hashed: &impl Fn() -> Result<String, Failure>,
) -> Result<User, Failure> {
    let old = e
        .user(&u.user)
        // etcd's getUser answers for a missing user before UpdateUser's own text could.
        .ok_or_else(|| auth_err(404, &format!("User {} does not exist.", u.user)))?;
    let new = old.merge(u, hashed)?;
    if new == old {
        let text = "User not updated. Use grant/revoke/password to update the user.";
        return Err(auth_err(400, text).into());
    }
    e.put_user(&new);
    Ok(new)
}

/// `DeleteUser`.
fn delete_user(e: &mut Edit, name: &str) -> Result<(), Failure> {
    if name == ROOT && e.enabled() {
        return Err(auth_err(403, "Cannot delete root user while auth is enabled.").into());
    }
    if e.user(name).is_none() {
        return Err(auth_err(404, &format!("User {name} does not exist")).into());
    }
    e.delete_user(name);
    Ok(())
}

/// `baseRoles`: every role, root first among them in name order.
async fn all_roles(ctx: &Ctx, req: Request) -> Response {
    let img = match listing_image(ctx, req).await {
        Ok(i) => i,
        Err(r) => return r,
    };
    let all: Vec<String> = img
        .role_names()
        .iter()
        .filter_map(|n| img.role(n))
        .map(|r| r.to_json())
        .collect();
    answer(
        ctx,
        StatusCode::OK,
        format!("{{\"roles\":[{}]}}\n", all.join(",")),
    )
}

/// `forRole`.
async fn one_role(ctx: &Ctx, req: Request, name: String) -> Response {
    let method = req.method().clone();
    if ![Method::GET, Method::PUT, Method::DELETE].contains(&method) {
        return method_not_allowed("GET,PUT,DELETE");
    }
    let who = credentials(&req);
    if let Some(r) = require_root(ctx, &who).await {
        return r;
    }
    let done = if method == Method::GET {
        drop(req);
        match ctx.m.v2_auth_image(false).await {
            Ok(img) => img
                .role(&name)
                .map(|r| (StatusCode::OK, format!("{}\n", r.to_json())))
                .ok_or_else(|| auth_err(404, &format!("Role {name} does not exist.")).into()),
            Err(e) => Err(internal(e)),
        }
    } else if method == Method::PUT {
        put_role(ctx, req, &name).await
    } else {
        change(ctx, |e| delete_role(e, &name))
            .await
            .map(|()| (StatusCode::OK, String::new()))
    };
    match done {
        Ok((status, body)) => answer(ctx, status, body),
        Err(f) => f.respond(ctx),
    }
}

/// A role PUT: a create (no grant or revoke), else a change of its permissions.
async fn put_role(ctx: &Ctx, req: Request, name: &str) -> Result<(StatusCode, String), Failure> {
    let body = read_body(req).await.unwrap_or_default();
    let r = go_json::role(&body).map_err(|_| bad_request("Invalid JSON in request body."))?;
    if r.role != name {
        return Err(bad_request(
            "Role JSON name does not match the name in the URL",
        ));
    }
    if Permissions::is_empty(r.grant.as_ref()) && Permissions::is_empty(r.revoke.as_ref()) {
        change(ctx, |e| create_role(e, &r)).await?;
        // etcd answers with the role as it was sent.
        return Ok((StatusCode::CREATED, format!("{}\n", r.to_json())));
    }
    if !Permissions::is_empty(Some(&r.permissions)) {
        return Err(bad_request(
            "Role JSON contains both permissions and grant/revoke",
        ));
    }
    let out = change(ctx, |e| update_role(e, &r)).await?;
    Ok((StatusCode::OK, format!("{}\n", out.to_json())))
}

fn root_is_fixed(name: &str) -> Result<(), Failure> {
    if name == ROOT {
        let text = format!("Cannot modify role {name}: is root role.");
        return Err(auth_err(403, &text).into());
    }
    Ok(())
}

/// `CreateRole`: stored as given.
fn create_role(e: &mut Edit, r: &Role) -> Result<(), Failure> {
    root_is_fixed(&r.role)?;
    if e.role(&r.role).is_some() {
        return Err(auth_err(409, &format!("Role {} already exists.", r.role)).into());
    }
    e.put_role(r);
    Ok(())
}

/// `UpdateRole`.
fn update_role(e: &mut Edit, r: &Role) -> Result<Role, Failure> {
    root_is_fixed(&r.role)?;
    let old = e
        .role(&r.role)
        // etcd's getRole answers for a missing role before UpdateRole's own text could.
        .ok_or_else(|| auth_err(404, &format!("Role {} does not exist.", r.role)))?;
    let new = old.merge(r)?;
    if new == old {
        let text = "Role not updated. Use grant/revoke to update the role.";
        return Err(auth_err(400, text).into());
    }
    e.put_role(&new);
    Ok(new)
}

/// `DeleteRole` (users keep the name; a role that does not exist grants nothing).
fn delete_role(e: &mut Edit, name: &str) -> Result<(), Failure> {
    root_is_fixed(name)?;
    if e.role(name).is_none() {
        return Err(auth_err(404, &format!("Role {name} doesn't exist.")).into());
    }
    e.delete_role(name);
    Ok(())
}
