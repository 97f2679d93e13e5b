//! Who is calling: `Authorization: Bearer <token>`, verified against the
//! store on every request (no cache), then the role checked against the
//! operation of the route.
//!
//! A handler names its operation in its extractor's type,
//! `Authorized<op::Set>`; the extractor is the handler's first argument, so
//! a request is authenticated (401) and authorised (403) before its path,
//! query or body is looked at. A missing, malformed, unknown, expired or
//! revoked token gets the very same 401; which one it was goes to no one.
//!
//! On the Vault-compatible routes ([`super::vault_api`]) the token may also
//! come in `X-Vault-Token` (Vault's header): one of the two headers, or
//! both holding the same token. A bad token of any kind is answered there
//! as Vault does, 403 `permission denied` (every Vault client expects that
//! and no client of Vault knows a 401), again the same for every kind; a
//! token without the role is a 403 too, with `permission denied` first.
//!
//! With `--rate-limit`, a verified token's request is counted against its
//! bucket before the role check (429 when empty; see [`super::ratelimit`]).

use std::marker::PhantomData;

use axum::extract::FromRequestParts;
use axum::http::{HeaderMap, StatusCode, header, request::Parts};

use super::App;
use super::errors::ApiError;
use super::request::{Caller, RequestContext};
use crate::tenant::Scope;
use crate::tokens::{Grant, Operation, Token, TokenError};

/// An operation a route performs, as a type.
pub trait Permission: Send + Sync + 'static {
    /// The operation.
    const OPERATION: Operation;
}

/// The operations as types, for [`Authorized`].
pub mod op {
    use super::{Operation, Permission};

    macro_rules! ops {
        ($($name:ident),*) => {$(
            #[doc = concat!("The `", stringify!($name), "` operation.")]
            #[derive(Debug)]
            pub struct $name;
            impl Permission for $name {
                const OPERATION: Operation = Operation::$name;
            }
        )*};
    }
    ops!(Metadata, Value, List, Env, Mounts, Set, Delete, Rotate, DeleteVersions, Undelete, Destroy, Rollback, Instances, LookupSelf);
}

/// The token from an `Authorization: Bearer` header, checked for its form.
/// `None` for anything else: no header, two headers, another scheme, a
/// string that is not a token.
fn bearer(headers: &HeaderMap) -> Option<Token> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let (scheme, token) = value.to_str().ok()?.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    Token::parse(token.trim_matches(' ')).ok()
}

/// The header Vault clients send their token in.
pub const VAULT_TOKEN_HEADER: &str = "x-vault-token";

/// The token of a request to the Vault-compatible routes: `X-Vault-Token`
/// (exactly one), `Authorization: Bearer`, or both with the same token.
/// `None` for anything else.
fn vault_token(headers: &HeaderMap) -> Option<Token> {
    let mut values = headers.get_all(VAULT_TOKEN_HEADER).iter();
    let Some(value) = values.next() else { return bearer(headers) };
    if values.next().is_some() {
        return None;
    }
    let token = Token::parse(value.to_str().ok()?.trim_matches(' ')).ok()?;
    if headers.contains_key(header::AUTHORIZATION) {
        let other = bearer(headers)?;
        // Not secret-dependent timing worth guarding: both were presented
        // by the same caller.
        if other.expose() != token.expose() {
            return None;
        }
    }
    Some(token)
}

/// An authenticated caller whose role allows `P`.
#[derive(Debug)]
pub struct Authorized<P: Permission> {
    /// The verified token's id, tenant and role.
    pub grant: Grant,
    /// The request's context (for the audit and the calls).
    pub ctx: RequestContext,
    _operation: PhantomData<P>,
}

impl<P: Permission> Authorized<P> {
    /// The tenant every call of the request acts for.
    pub fn scope(&self) -> &Scope {
        &self.grant.scope
    }
}

impl<P: Permission> FromRequestParts<App> for Authorized<P> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, ApiError> {
        let ctx = parts
            .extensions
            .get::<RequestContext>()
            .cloned()
            .ok_or_else(|| ApiError::internal("a route without the request middleware"))?;
        ctx.set_operation(P::OPERATION);
        let vault = ctx.is_vault();
        let unauthorized = move || if vault { vault_permission_denied() } else { ApiError::unauthorized() };
        let token = if vault { vault_token(&parts.headers) } else { bearer(&parts.headers) }.ok_or_else(unauthorized)?;
        let grant = app
            .check("verify-token", move |inner| inner.tokens.verify(&token))
            .await?
            .map_err(|e| match e {
                TokenError::Malformed | TokenError::Unknown | TokenError::Expired => unauthorized(),
                e => ApiError::from(e),
            })?;
        ctx.set_caller(Caller { token_id: grant.token_id.clone(), tenant: grant.scope.name().to_owned() });
        if let Some(limiter) = &app.inner.limiter
            && let Err(retry_after) = limiter.check(&grant.token_id)
        {
            return Err(ApiError::rate_limited(retry_after));
        }
        if !grant.role.allows(P::OPERATION) {
            let mut e = ApiError::forbidden(grant.role, P::OPERATION);
            if vault {
                e.errors.insert(0, "permission denied".into());
            }
            return Err(e);
        }
        Ok(Authorized { grant, ctx, _operation: PhantomData })
    }
}

/// A bad token on the Vault-compatible routes: Vault's answer, the same
/// for every kind of bad token (audited as `unauthorized`).
fn vault_permission_denied() -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "unauthorized", "permission denied")
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn bearer_header_forms() {
        let token = format!("sec_{}", "ab".repeat(32));
        let with = |values: &[&str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
            }
            bearer(&h).map(|t| t.expose().to_owned())
        };
        assert_eq!(with(&[&format!("Bearer {token}")]), Some(token.clone()));
        assert_eq!(with(&[&format!("bearer  {token}")]), Some(token.clone()));
        assert_eq!(with(&[]), None);
        assert_eq!(with(&[&format!("Basic {token}")]), None);
        assert_eq!(with(&[&token]), None);
        assert_eq!(with(&[&format!("Bearer {token}x")]), None);
        assert_eq!(with(&[&format!("Bearer {token}"), &format!("Bearer {token}")]), None);
    }

    #[test]
    fn vault_token_header_forms() {
        let token = format!("sec_{}", "ab".repeat(32));
        let other = format!("sec_{}", "cd".repeat(32));
        let with = |vault: &[&str], auth: &[&str]| {
            let mut h = HeaderMap::new();
            for v in vault {
                h.append(VAULT_TOKEN_HEADER, HeaderValue::from_str(v).unwrap());
            }
            for v in auth {
                h.append(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
            }
            vault_token(&h).map(|t| t.expose().to_owned())
        };
        assert_eq!(with(&[&token], &[]), Some(token.clone()));
        assert_eq!(with(&[], &[&format!("Bearer {token}")]), Some(token.clone()));
        assert_eq!(with(&[&token], &[&format!("Bearer {token}")]), Some(token.clone()));
        assert_eq!(with(&[&token], &[&format!("Bearer {other}")]), None);
        assert_eq!(with(&[&token], &[&format!("Basic {token}")]), None);
        assert_eq!(with(&[&token, &token], &[]), None);
        assert_eq!(with(&[&format!("{token}x")], &[]), None);
        assert_eq!(with(&[], &[]), None);
    }
}
