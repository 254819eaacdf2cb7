//! `etcdserverpb.Auth`: users, roles, permissions, enabling auth and authenticating.
//!
//! Changes go through raft as [`AuthCommand`]s carrying the caller, and the state machine
//! checks that the caller is root when applying them; queries run on the member's
//! replicated auth store after a ReadIndex. Passwords are hashed with bcrypt here, before
//! proposing, so every member stores the same hash and apply stays cheap.

use super::Grpc;
use keel_core::auth::{
    AuthAnswer, AuthCommand, AuthError, AuthInfo, AuthOutcome, AuthQuery, PermKind, Permission,
};
use keel_core::node::{Command, Outcome};
use tonic::{Request, Response, Status};

use super::authz::{auth_status, caller};
use super::{header, mismatched};
use crate::member::{Header, MemberHandle};
use crate::pb::{authpb, etcdserverpb as pb};

/// The Auth service.
pub struct AuthService {
    m: MemberHandle,
}

impl AuthService {
    /// Auth over member `m`.
    pub fn new(m: MemberHandle) -> Self {
        AuthService { m }
    }

    /// Proposes an auth change on behalf of the caller of `req`.
    async fn change<T>(
        &self,
        req: &Request<T>,
        cmd: AuthCommand,
    ) -> Result<Option<pb::ResponseHeader>, Status> {
        let who = caller(&self.m, req).await?;
        let (_, h) = self.apply(cmd, who).await?;
        Ok(header(&self.m, h))
    }

    async fn apply(
        &self,
        cmd: AuthCommand,
        who: Option<AuthInfo>,
    ) -> Result<(AuthOutcome, Header), Status> {
        match self.m.propose_as(Command::Auth(cmd), who).await.grpc()? {
            (Outcome::Auth(r), h) => r.map(|o| (o, h)).map_err(auth_status),
            (Outcome::Denied(e), _) => Err(auth_status(e)),
            _ => Err(mismatched()),
        }
    }

    /// Asks `q` of the replicated auth store once it is up to date (ReadIndex), as the
    /// caller of `req`.
    async fn query<T>(
        &self,
        req: &Request<T>,
        q: AuthQuery,
    ) -> Result<(AuthAnswer, Header), Status> {
        let who = caller(&self.m, req).await?;
        let (r, h) = self.m.auth_query(true, who, q).await.grpc()?;
        Ok((r.map_err(auth_status)?, h))
    }

    /// The bcrypt hash to store for a new password (or the one the client sent, as
    /// etcd 3.5's `hashedPassword`); empty for a user without a password.
    async fn password_hash(
        &self,
        password: String,
        hashed: String,
        no_password: bool,
    ) -> Result<String, Status> {
        if no_password {
            return Ok(String::new());
        }
        if !hashed.is_empty() {
            return Ok(hashed);
        }
        self.m
            .passwords
            .hash(password)
            .await
            .map_err(|e| Status::internal(format!("etcdserver: {e}")))
    }
}

/// The permission kind of the wire enum.
fn perm_kind(v: i32) -> Result<PermKind, Status> {
    PermKind::from_i32(v)
        .ok_or_else(|| Status::invalid_argument("etcdserver: invalid permission type"))
}

#[tonic::async_trait]
impl pb::auth_server::Auth for AuthService {
    async fn auth_enable(
        &self,
        req: Request<pb::AuthEnableRequest>,
    ) -> Result<Response<pb::AuthEnableResponse>, Status> {
        let header = self.change(&req, AuthCommand::Enable).await?;
        Ok(Response::new(pb::AuthEnableResponse { header }))
    }

    async fn auth_disable(
        &self,
        req: Request<pb::AuthDisableRequest>,
    ) -> Result<Response<pb::AuthDisableResponse>, Status> {
        let header = self.change(&req, AuthCommand::Disable).await?;
        Ok(Response::new(pb::AuthDisableResponse { header }))
    }

    async fn auth_status(
        &self,
        req: Request<pb::AuthStatusRequest>,
    ) -> Result<Response<pb::AuthStatusResponse>, Status> {
        // Root's only, as in etcd 3.5 (the release that added AuthStatus lists it in
        // `needAdminPermission`): with auth on, the caller needs the root role.
        let (
            AuthAnswer::Status {
                enabled,
                revision: auth_revision,
            },
            h,
        ) = self.query(&req, AuthQuery::Status).await?
        else {
            return Err(mismatched());
        };
        Ok(Response::new(pb::AuthStatusResponse {
            header: header(&self.m, h),
            enabled,
            auth_revision,
        }))
    }

    async fn authenticate(
        &self,
        req: Request<pb::AuthenticateRequest>,
    ) -> Result<Response<pb::AuthenticateResponse>, Status> {
        let r = req.into_inner();
        let login = AuthQuery::Login(r.name.clone());
        let (answer, _) = self.m.auth_query(true, None, login).await.grpc()?;
        let Ok(AuthAnswer::Login {
            enabled,
            password_hash: hash,
        }) = answer
        else {
            return Err(mismatched());
        };
        if !enabled {
            return Err(auth_status(AuthError::AuthNotEnabled));
        }
        let hash = hash.map_err(auth_status)?;
        // At most a few verifications run at once: a brute force of wrong passwords
        // queues behind the bcrypt cost instead of starving the member.
        if !self.m.passwords.verify(r.password, hash).await {
            tracing::warn!(user = %r.name, "invalid authentication was requested");
            return Err(auth_status(AuthError::AuthFailed));
        }
        let cmd = AuthCommand::Authenticate {
            name: r.name.clone(),
            token: self.m.tokens.new_simple_token(),
        };
        let (outcome, h) = self.apply(cmd, None).await?;
        let AuthOutcome::Authenticated {
            name,
            token,
            revision,
        } = outcome
        else {
            return Err(mismatched());
        };
        // Simple tokens were recorded on every member as the entry applied; a JWT is
        // signed here, for the revision the entry saw.
        let token = if token.is_empty() {
            self.m
                .tokens
                .assign(&name, "", revision)
                .map_err(|e| Status::internal(format!("etcdserver: {e}")))?
        } else {
            token
        };
        Ok(Response::new(pb::AuthenticateResponse {
            header: header(&self.m, h),
            token,
        }))
    }

    async fn user_add(
        &self,
        req: Request<pb::AuthUserAddRequest>,
    ) -> Result<Response<pb::AuthUserAddResponse>, Status> {
        let who = caller(&self.m, &req).await?;
        let r = req.into_inner();
        let no_password = r.options.is_some_and(|o| o.no_password);
        let password_hash = self
            .password_hash(r.password, r.hashed_password, no_password)
            .await?;
        let cmd = AuthCommand::UserAdd {
            name: r.name,
            password_hash,
            no_password,
        };
        let (_, h) = self.apply(cmd, who).await?;
        Ok(Response::new(pb::AuthUserAddResponse {
            header: header(&self.m, h),
        }))
    }

    async fn user_get(
        &self,
        req: Request<pb::AuthUserGetRequest>,
    ) -> Result<Response<pb::AuthUserGetResponse>, Status> {
        let name = req.get_ref().name.clone();
        let (answer, h) = self.query(&req, AuthQuery::UserRoles(name)).await?;
        let roles = names(answer)?;
        Ok(Response::new(pb::AuthUserGetResponse {
            header: header(&self.m, h),
            roles,
        }))
    }

    async fn user_list(
        &self,
        req: Request<pb::AuthUserListRequest>,
    ) -> Result<Response<pb::AuthUserListResponse>, Status> {
        let (answer, h) = self.query(&req, AuthQuery::UserNames).await?;
        let users = names(answer)?;
        Ok(Response::new(pb::AuthUserListResponse {
            header: header(&self.m, h),
            users,
        }))
    }

    async fn user_delete(
        &self,
        req: Request<pb::AuthUserDeleteRequest>,
    ) -> Result<Response<pb::AuthUserDeleteResponse>, Status> {
        let name = req.get_ref().name.clone();
        let header = self.change(&req, AuthCommand::UserDelete { name }).await?;
        Ok(Response::new(pb::AuthUserDeleteResponse { header }))
    }

    async fn user_change_password(
        &self,
        req: Request<pb::AuthUserChangePasswordRequest>,
    ) -> Result<Response<pb::AuthUserChangePasswordResponse>, Status> {
        let who = caller(&self.m, &req).await?;
        let r = req.into_inner();
        let password_hash = self
            .password_hash(r.password, r.hashed_password, false)
            .await?;
        let cmd = AuthCommand::UserChangePassword {
            name: r.name,
            password_hash,
        };
        let (_, h) = self.apply(cmd, who).await?;
        Ok(Response::new(pb::AuthUserChangePasswordResponse {
            header: header(&self.m, h),
        }))
    }

    async fn user_grant_role(
        &self,
        req: Request<pb::AuthUserGrantRoleRequest>,
    ) -> Result<Response<pb::AuthUserGrantRoleResponse>, Status> {
        let r = req.get_ref();
        let cmd = AuthCommand::UserGrantRole {
            user: r.user.clone(),
            role: r.role.clone(),
        };
        let header = self.change(&req, cmd).await?;
        Ok(Response::new(pb::AuthUserGrantRoleResponse { header }))
    }

    async fn user_revoke_role(
        &self,
        req: Request<pb::AuthUserRevokeRoleRequest>,
    ) -> Result<Response<pb::AuthUserRevokeRoleResponse>, Status> {
        let r = req.get_ref();
        let cmd = AuthCommand::UserRevokeRole {
            user: r.name.clone(),
            role: r.role.clone(),
        };
        let header = self.change(&req, cmd).await?;
        Ok(Response::new(pb::AuthUserRevokeRoleResponse { header }))
    }

    async fn role_add(
        &self,
        req: Request<pb::AuthRoleAddRequest>,
    ) -> Result<Response<pb::AuthRoleAddResponse>, Status> {
        let name = req.get_ref().name.clone();
        let header = self.change(&req, AuthCommand::RoleAdd { name }).await?;
        Ok(Response::new(pb::AuthRoleAddResponse { header }))
    }

    async fn role_get(
        &self,
        req: Request<pb::AuthRoleGetRequest>,
    ) -> Result<Response<pb::AuthRoleGetResponse>, Status> {
        let name = req.get_ref().role.clone();
        let (AuthAnswer::Perms(perms), h) = self.query(&req, AuthQuery::RolePerms(name)).await?
        else {
            return Err(mismatched());
        };
        let perm = perms.iter().map(perm_out).collect();
        Ok(Response::new(pb::AuthRoleGetResponse {
            header: header(&self.m, h),
            perm,
        }))
    }

    async fn role_list(
        &self,
        req: Request<pb::AuthRoleListRequest>,
    ) -> Result<Response<pb::AuthRoleListResponse>, Status> {
        let (answer, h) = self.query(&req, AuthQuery::RoleNames).await?;
        let roles = names(answer)?;
        Ok(Response::new(pb::AuthRoleListResponse {
            header: header(&self.m, h),
            roles,
        }))
    }

    async fn role_delete(
        &self,
        req: Request<pb::AuthRoleDeleteRequest>,
    ) -> Result<Response<pb::AuthRoleDeleteResponse>, Status> {
        let name = req.get_ref().role.clone();
        let header = self.change(&req, AuthCommand::RoleDelete { name }).await?;
        Ok(Response::new(pb::AuthRoleDeleteResponse { header }))
    }

    async fn role_grant_permission(
        &self,
        req: Request<pb::AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<pb::AuthRoleGrantPermissionResponse>, Status> {
        let r = req.get_ref();
        let Some(p) = &r.perm else {
            return Err(Status::invalid_argument("etcdserver: permission not given"));
        };
        let cmd = AuthCommand::RoleGrantPermission {
            name: r.name.clone(),
            perm: Permission {
                kind: perm_kind(p.perm_type)?,
                key: p.key.clone(),
                range_end: p.range_end.clone(),
            },
        };
        let header = self.change(&req, cmd).await?;
        Ok(Response::new(pb::AuthRoleGrantPermissionResponse {
            header,
        }))
    }

    async fn role_revoke_permission(
        &self,
        req: Request<pb::AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<pb::AuthRoleRevokePermissionResponse>, Status> {
        let r = req.get_ref();
        let cmd = AuthCommand::RoleRevokePermission {
            name: r.role.clone(),
            key: r.key.clone(),
            range_end: r.range_end.clone(),
        };
        let header = self.change(&req, cmd).await?;
        Ok(Response::new(pb::AuthRoleRevokePermissionResponse {
            header,
        }))
    }
}

/// The names in a UserRoles, UserNames or RoleNames answer.
fn names(answer: AuthAnswer) -> Result<Vec<String>, Status> {
    match answer {
        AuthAnswer::Names(names) => Ok(names),
        _ => Err(mismatched()),
    }
}

fn perm_out(p: &Permission) -> authpb::Permission {
    authpb::Permission {
        perm_type: p.kind as i32,
        key: p.key.clone(),
        range_end: p.range_end.clone(),
    }
}
