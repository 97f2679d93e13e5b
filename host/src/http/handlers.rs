//! The routes and their handlers: each checks its input, makes one call of
//! [`Secrets`] on the blocking pool, and shapes the answer. Tenants come
//! from the token, never from the path.
//!
//! Only `/value`, `/env` and `/mounts` answer with values; every other
//! response holds metadata ([`SecretMeta`], which has no value field).
//!
//! Each handler's `#[utoipa::path]` and each body type's `ToSchema` feed
//! the OpenAPI document (`openapi.rs`); the statuses every `/v1/instances`
//! route shares are added there.
//!
//! [`Secrets`]: crate::Secrets

use std::collections::BTreeMap;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, RawQuery, State};
use axum::handler::Handler;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Serialize;
use utoipa::ToSchema;

use super::App;
use super::auth::{Authorized, op};
use super::errors::ApiError;
use super::input::{
    InstancePath, KeyPath, NoQuery, SetBody, none_match, query, rollback_body, set_body, set_precondition, version_number,
    versions_body, wants_raw,
};
use super::{openapi, request};
use crate::types::{SecretMeta, SecretType, SetRequest};

/// One route: its method, its path template and its handler.
pub(crate) type Route = (Method, &'static str, MethodRouter<App>);

/// A route answering `method` only (a `GET` also answers `HEAD`, as with
/// axum's `get`).
fn route<H: Handler<T, App>, T: 'static>(method: Method, path: &'static str, handler: H) -> Route {
    let filter = MethodFilter::try_from(method.clone()).expect("a method axum routes");
    (method, path, on(filter, handler))
}

/// Every route of the API. The router is built from this list alone, and a
/// test holds the OpenAPI document to exactly these pairs of method and
/// path, so a route cannot be added undocumented.
pub(crate) fn routes() -> Vec<Route> {
    vec![
        route(Method::GET, "/healthz", healthz),
        route(Method::GET, "/readyz", readyz),
        route(Method::GET, "/metrics", metrics),
        route(Method::GET, openapi::PATH, openapi_document),
        route(Method::GET, "/v1/instances/{instance}/secrets", list),
        route(Method::PUT, "/v1/instances/{instance}/secrets/{key}", set),
        route(Method::GET, "/v1/instances/{instance}/secrets/{key}", metadata),
        route(Method::DELETE, "/v1/instances/{instance}/secrets/{key}", delete),
        route(Method::GET, "/v1/instances/{instance}/secrets/{key}/value", value),
        route(Method::POST, "/v1/instances/{instance}/secrets/{key}/rotate", rotate),
        route(Method::POST, "/v1/instances/{instance}/secrets/{key}/delete-versions", delete_versions),
        route(Method::POST, "/v1/instances/{instance}/secrets/{key}/undelete", undelete),
        route(Method::POST, "/v1/instances/{instance}/secrets/{key}/destroy", destroy),
        route(Method::POST, "/v1/instances/{instance}/secrets/{key}/rollback", rollback),
        route(Method::GET, "/v1/instances", instances),
        route(Method::GET, "/v1/instances/{instance}/env", env),
        route(Method::GET, "/v1/instances/{instance}/mounts", mounts),
    ]
}

/// The API's routes on `app`, with the request middleware and the body
/// limit.
pub(crate) fn router(app: App) -> Router {
    let body_limit = app.inner.config.body_limit;
    // Routes of one path merge into one method router.
    routes()
        .into_iter()
        .fold(Router::new(), |router, (_, path, handler)| router.route(path, handler))
        .merge(super::vault_api::router())
        .fallback(|| async { ApiError::from_status(StatusCode::NOT_FOUND) })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(app.clone(), request::around))
        .with_state(app)
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response(),
        Err(e) => ApiError::internal(format!("serializing a response: {e}")).into_response(),
    }
}

fn etag(version: u32) -> (header::HeaderName, HeaderValue) {
    (header::ETAG, HeaderValue::from_str(&format!("\"v{version}\"")).expect("ASCII"))
}

fn with_etag(mut response: Response, version: u32) -> Response {
    let (name, value) = etag(version);
    response.headers_mut().insert(name, value);
    response
}

fn secret_not_found(key: &str, instance: &str) -> impl FnOnce() -> String + Send + use<> {
    let message = format!("secret {key:?} not found in instance {instance:?}");
    move || message
}

/// Refuses `If-Match`/`If-None-Match` where they are not supported,
/// rather than ignoring a precondition the client relies on.
fn no_preconditions(headers: &HeaderMap, what: &str) -> Result<(), ApiError> {
    if headers.contains_key(header::IF_MATCH) || headers.contains_key(header::IF_NONE_MATCH) {
        return Err(ApiError::bad_request(format!(
            "If-Match and If-None-Match are not supported on {what}; nothing was changed"
        )));
    }
    Ok(())
}

fn no_secrets(instance: &str) -> ApiError {
    ApiError::not_found(format!("instance {instance:?} has no secrets"))
}

/// The answer of `/healthz` and `/readyz`.
#[derive(Serialize, ToSchema)]
struct StatusBody {
    /// `ok` (`/healthz`) or `ready` (`/readyz`).
    status: &'static str,
}

/// Liveness.
///
/// No token.
#[utoipa::path(get, path = "/healthz", tag = "service", responses((status = 200, description = "The process answers.", body = StatusBody)))]
async fn healthz() -> Response {
    json(StatusCode::OK, &StatusBody { status: "ok" })
}

/// Readiness: a read transaction on the store.
///
/// No token.
#[utoipa::path(get, path = "/readyz", tag = "service", responses(
    (status = 200, description = "The store answers.", body = StatusBody),
    (status = 500, description = "A failure of the server itself."),
    (status = 502, description = "The store answered with an error."),
    (status = 503, description = "The store cannot be reached."),
))]
async fn readyz(State(app): State<App>) -> Result<Response, ApiError> {
    app.check("check-store", |inner| inner.tokens.check_store()).await??;
    Ok(json(StatusCode::OK, &StatusBody { status: "ready" }))
}

/// Metrics, in the Prometheus text format.
///
/// No token. No label holds a tenant, instance, key or token.
#[utoipa::path(get, path = "/metrics", tag = "service", responses(
    (status = 200, description = "Prometheus text format 0.0.4.", body = String, content_type = "text/plain; version=0.0.4; charset=utf-8"),
))]
async fn metrics(State(app): State<App>) -> Response {
    let content_type = HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8");
    ([(header::CONTENT_TYPE, content_type)], app.metrics_text()).into_response()
}

/// The API's OpenAPI document (`openapi.rs`).
///
/// No token, no audit line.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "service", responses(
    (status = 200, description = "The OpenAPI document of this API.", body = Object, content_type = "application/json"),
))]
async fn openapi_document() -> Response {
    json(StatusCode::OK, openapi::document())
}

/// Sets a secret: a new version of its key.
///
/// Role: write. The answer is the new version's metadata, never the value.
/// `If-Match: "vN"` writes only while version N is current, `If-None-Match: *`
/// only while the key does not exist; both are checked inside the write.
#[utoipa::path(
    put,
    path = "/v1/instances/{instance}/secrets/{key}",
    tag = "secrets",
    params(
        KeyPath,
        ("If-Match" = Option<String>, Header, nullable = false, pattern = r#"^"v[1-9][0-9]*"$"#,
            description = "`\"vN\"` (an `ETag` of this API): write only while version N is current."),
        ("If-None-Match" = Option<String>, Header, nullable = false, pattern = r"^\*$",
            description = "`*`: write only while the key does not exist."),
    ),
    request_body(content = SetBody, content_type = "application/json"),
    responses(
        (status = 200, description = "A new version of an existing key.", body = SecretMeta,
            headers(("ETag" = String, description = "`\"vN\"`: the new version."))),
        (status = 201, description = "Version 1 of a new key.", body = SecretMeta,
            headers(("ETag" = String, description = "`\"v1\"`."))),
        (status = 400, description = "A malformed path, query, precondition header or JSON body."),
        (status = 409, description = "The key holds a secret of another type."),
        (status = 412, description = "`If-Match` or `If-None-Match: *` does not hold; nothing was written."),
        (status = 413, description = "The body or the value is over the limit."),
        (status = 415, description = "The body is not `application/json`."),
        (status = 422, description = "The body, a name or the value breaks a rule, or a limit of the instance or key is reached; each message names its field."),
    ),
)]
async fn set(
    caller: Authorized<op::Set>,
    _: NoQuery,
    path: KeyPath,
    State(app): State<App>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    // Check-and-set: the component compares the version in the same
    // transaction as the write, so of concurrent PUTs with one If-Match
    // exactly one wins; the others get 412.
    let if_version = set_precondition(&headers)?;
    if let Some(v) = if_version {
        caller.ctx.set_if_version(v);
    }
    let max = app.inner.secrets.limits().max_value_bytes as usize;
    let body = set_body(&headers, &body, max)?;
    let KeyPath { instance, key } = path;
    let scope = caller.grant.scope;
    let mut req = SetRequest::new(&instance, &key, body.kind, body.value);
    req.if_version = if_version;
    let meta = app.call(Some(&caller.ctx), "set", move |inner| inner.secrets.set(&scope, req)).await??;
    caller.ctx.set_version(meta.version);
    let status = if meta.version == 1 { StatusCode::CREATED } else { StatusCode::OK };
    Ok(with_etag(json(status, &meta), meta.version))
}

/// The current version of every key of an instance, sorted by key.
#[derive(Serialize, ToSchema)]
struct SecretList<'a> {
    secrets: &'a [SecretMeta],
}

/// Lists an instance's secrets: metadata only.
///
/// Roles: read, write.
#[utoipa::path(
    get,
    path = "/v1/instances/{instance}/secrets",
    tag = "secrets",
    params(InstancePath),
    responses(
        (status = 200, description = "The metadata of every key.", body = SecretList),
        (status = 404, description = "The instance has no secrets (or is another tenant's)."),
    ),
)]
async fn list(
    caller: Authorized<op::List>,
    _: NoQuery,
    InstancePath(instance): InstancePath,
    State(app): State<App>,
) -> Result<Response, ApiError> {
    let scope = caller.grant.scope;
    let name = instance.clone();
    let metas = app.call(Some(&caller.ctx), "list", move |inner| inner.secrets.list(&scope, &name)).await??;
    if metas.is_empty() {
        return Err(no_secrets(&instance));
    }
    Ok(json(StatusCode::OK, &SecretList { secrets: &metas }))
}

/// A key's current version, with every retained version.
#[derive(Serialize, ToSchema)]
struct SecretVersions<'a> {
    #[serde(flatten)]
    current: &'a SecretMeta,
    /// Every retained version, oldest first.
    versions: &'a [SecretMeta],
}

/// A secret's metadata: its current version and every retained one.
///
/// Roles: read, write.
#[utoipa::path(
    get,
    path = "/v1/instances/{instance}/secrets/{key}",
    tag = "secrets",
    params(KeyPath),
    responses(
        (status = 200, description = "The current version's metadata, with every retained version.", body = SecretVersions,
            headers(("ETag" = String, description = "`\"vN\"`: the current version."))),
        (status = 404, description = "No such key in the instance (or another tenant's)."),
    ),
)]
async fn metadata(
    caller: Authorized<op::Metadata>,
    _: NoQuery,
    path: KeyPath,
    State(app): State<App>,
) -> Result<Response, ApiError> {
    let scope = caller.grant.scope;
    let KeyPath { instance, key } = path;
    let not_found = secret_not_found(&key, &instance);
    let versions = app
        .call(Some(&caller.ctx), "versions", move |inner| inner.secrets.versions(&scope, &instance, &key))
        .await?
        .map_err(|e| ApiError::from(e).when_not_found(not_found))?;
    let Some(current) = versions.last() else {
        return Err(ApiError::internal("a key without versions"));
    };
    caller.ctx.set_version(current.version);
    Ok(with_etag(json(StatusCode::OK, &SecretVersions { current, versions: &versions }), current.version))
}

/// A value as JSON: exactly one of `value` (UTF-8 text) and `value_base64`
/// (anything else).
#[derive(Serialize, ToSchema)]
struct ValueBody<'a> {
    key: &'a str,
    #[schema(minimum = 1)]
    version: u32,
    #[serde(rename = "type")]
    kind: SecretType,
    /// The value, when it is UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    value: Option<&'a str>,
    /// The value in base64 (standard alphabet, padded), when it is not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    value_base64: Option<String>,
}

/// A secret's value: the current version, or `?version=N`.
///
/// Roles: read, write. JSON, or the raw bytes with
/// `Accept: application/octet-stream`. A matching `If-None-Match` answers
/// 304 without the value.
#[utoipa::path(
    get,
    path = "/v1/instances/{instance}/secrets/{key}/value",
    tag = "secrets",
    params(
        KeyPath,
        ("version" = Option<u32>, Query, minimum = 1, description = "A retained version; the current one when absent or empty."),
        ("If-None-Match" = Option<String>, Header, nullable = false,
            description = "`*` or entity tags `\"vN\"`: 304 when one matches the version read."),
    ),
    responses(
        (status = 200, description = "The value: JSON, or the raw bytes when `Accept` prefers `application/octet-stream` to JSON.",
            content((ValueBody = "application/json"), (String = "application/octet-stream")),
            headers(("ETag" = String, description = "`\"vN\"`: the version read."), ("Vary" = String, description = "`accept`"))),
        (status = 304, description = "`If-None-Match` matched: the client holds this version; no value.",
            headers(("ETag" = String, description = "`\"vN\"`: the version read."))),
        (status = 400, description = "A malformed path, `version` or `If-None-Match`, or an unknown query parameter."),
        (status = 404, description = "No such key or version in the instance (or another tenant's)."),
    ),
)]
async fn value(
    caller: Authorized<op::Value>,
    path: KeyPath,
    State(app): State<App>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let mut version = None;
    for (_, v) in query(raw.as_deref(), &["version"])? {
        // An empty `version=` means the current one.
        if !v.is_empty() {
            let n = version_number(&v).ok_or_else(|| {
                ApiError::bad_request("version: must be a positive integer without sign or leading zeros")
            })?;
            version = Some(n);
        }
    }
    // Checked before the call: a malformed header reads nothing.
    none_match(&headers, 0)?;
    let raw_bytes = wants_raw(&headers);
    if let Some(v) = version {
        caller.ctx.set_version(v);
    }
    let scope = caller.grant.scope;
    let KeyPath { instance, key } = path;
    let not_found = match version {
        Some(v) => {
            let message = format!("version {v} of secret {key:?} not found in instance {instance:?}");
            Box::new(move || message) as Box<dyn FnOnce() -> String + Send>
        }
        None => Box::new(secret_not_found(&key, &instance)),
    };
    let name = if version.is_some() { "get-version" } else { "get" };
    let secret = app
        .call(Some(&caller.ctx), name, move |inner| match version {
            Some(v) => inner.secrets.get_version(&scope, &instance, &key, v),
            None => inner.secrets.get(&scope, &instance, &key),
        })
        .await?
        .map_err(|e| ApiError::from(e).when_not_found(not_found))?;
    caller.ctx.set_version(secret.meta.version);
    // The client holds this version already: no value leaves.
    if none_match(&headers, secret.meta.version)? {
        return Ok(with_etag(StatusCode::NOT_MODIFIED.into_response(), secret.meta.version));
    }
    if raw_bytes {
        let response = (
            [
                (header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream")),
                (header::VARY, HeaderValue::from_static("accept")),
            ],
            secret.value.expose().to_vec(),
        )
            .into_response();
        return Ok(with_etag(response, secret.meta.version));
    }
    let (text, b64) = match secret.value.expose_str() {
        Ok(s) => (Some(s), None),
        Err(_) => (None, Some(BASE64.encode(secret.value.expose()))),
    };
    let body = ValueBody { key: &secret.meta.key, version: secret.meta.version, kind: secret.meta.kind, value: text, value_base64: b64 };
    let mut response = with_etag(json(StatusCode::OK, &body), secret.meta.version);
    response.headers_mut().insert(header::VARY, HeaderValue::from_static("accept"));
    Ok(response)
}

/// Deletes a secret with all its versions.
///
/// Role: write.
#[utoipa::path(
    delete,
    path = "/v1/instances/{instance}/secrets/{key}",
    tag = "secrets",
    params(KeyPath),
    responses(
        (status = 204, description = "Deleted."),
        (status = 400, description = "A malformed path, a query, or `If-Match`/`If-None-Match` (not supported here)."),
        (status = 404, description = "No such key in the instance (or another tenant's)."),
    ),
)]
async fn delete(
    caller: Authorized<op::Delete>,
    _: NoQuery,
    path: KeyPath,
    State(app): State<App>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    no_preconditions(&headers, "DELETE")?;
    let scope = caller.grant.scope;
    let KeyPath { instance, key } = path;
    let not_found = secret_not_found(&key, &instance);
    app.call(Some(&caller.ctx), "delete", move |inner| inner.secrets.delete(&scope, &instance, &key))
        .await?
        .map_err(|e| ApiError::from(e).when_not_found(not_found))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The answer of a rotation.
#[derive(Serialize, ToSchema)]
struct RotateBody {
    /// How many versions were re-protected.
    rotated: u32,
}

/// Re-protects every retained version of a secret under the store's newest
/// key material.
///
/// Role: write.
#[utoipa::path(
    post,
    path = "/v1/instances/{instance}/secrets/{key}/rotate",
    tag = "secrets",
    params(KeyPath),
    responses(
        (status = 200, description = "Rotated.", body = RotateBody),
        (status = 400, description = "A malformed path, a query, or `If-Match`/`If-None-Match` (not supported here)."),
        (status = 404, description = "No such key in the instance (or another tenant's)."),
    ),
)]
async fn rotate(
    caller: Authorized<op::Rotate>,
    _: NoQuery,
    path: KeyPath,
    State(app): State<App>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    no_preconditions(&headers, "POST .../rotate")?;
    let scope = caller.grant.scope;
    let KeyPath { instance, key } = path;
    let not_found = secret_not_found(&key, &instance);
    let rotated = app
        .call(Some(&caller.ctx), "rotate", move |inner| inner.secrets.rotate(&scope, &instance, &key))
        .await?
        .map_err(|e| ApiError::from(e).when_not_found(not_found))?;
    Ok(json(StatusCode::OK, &RotateBody { rotated }))
}

/// The body of `delete-versions`, `undelete` and `destroy`.
#[derive(ToSchema)]
#[allow(dead_code, reason = "a schema: the body is parsed by input::versions_body")]
struct VersionsBody {
    /// 1 to 1000 version numbers of the key.
    #[schema(min_items = 1, max_items = 1000, minimum = 1)]
    versions: Vec<u32>,
}

/// The body of `rollback`.
#[derive(ToSchema)]
#[allow(dead_code, reason = "a schema: the body is parsed by input::rollback_body")]
struct RollbackBody {
    /// The version whose value becomes the next version.
    #[schema(minimum = 1)]
    version: u32,
}

/// Which lifecycle change a versions request makes.
#[derive(Clone, Copy)]
enum Lifecycle {
    DeleteVersions,
    Undelete,
    Destroy,
}

/// `delete-versions`, `undelete` and `destroy`: the body's versions of the
/// path's key, 204 when done.
async fn change_versions(
    ctx: &super::request::RequestContext,
    scope: crate::tenant::Scope,
    path: KeyPath,
    app: &App,
    headers: &HeaderMap,
    body: &[u8],
    change: Lifecycle,
) -> Result<Response, ApiError> {
    let (name, what) = match change {
        Lifecycle::DeleteVersions => ("delete-versions", "POST .../delete-versions"),
        Lifecycle::Undelete => ("undelete", "POST .../undelete"),
        Lifecycle::Destroy => ("destroy", "POST .../destroy"),
    };
    no_preconditions(headers, what)?;
    let versions = versions_body(headers, body)?;
    let KeyPath { instance, key } = path;
    let not_found = {
        let message = format!("a version among those given, or the secret {key:?}, was not found in instance {instance:?}");
        move || message
    };
    app.call(Some(ctx), name, move |inner| match change {
        Lifecycle::DeleteVersions => inner.secrets.delete_versions(&scope, &instance, &key, &versions),
        Lifecycle::Undelete => inner.secrets.undelete(&scope, &instance, &key, &versions),
        Lifecycle::Destroy => inner.secrets.destroy(&scope, &instance, &key, &versions),
    })
    .await?
    .map_err(|e| ApiError::from(e).when_not_found(not_found))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Soft-deletes versions of a secret: their values stay in the store but
/// read as absent (a deleted current version is not injected, and `/value`
/// is 404) until undeleted; metadata shows `deleted_at`.
///
/// Role: write.
#[utoipa::path(
    post,
    path = "/v1/instances/{instance}/secrets/{key}/delete-versions",
    tag = "secrets",
    params(KeyPath),
    request_body(content = VersionsBody, content_type = "application/json"),
    responses(
        (status = 204, description = "Deleted (versions already deleted or destroyed are left as they are)."),
        (status = 404, description = "No such key, or a version is not retained; nothing changed."),
        (status = 415, description = "The body is not `application/json`."),
    ),
)]
async fn delete_versions(
    caller: Authorized<op::DeleteVersions>,
    _: NoQuery,
    path: KeyPath,
    State(app): State<App>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    change_versions(&caller.ctx, caller.grant.scope, path, &app, &headers, &body, Lifecycle::DeleteVersions).await
}

/// Restores soft-deleted versions of a secret.
///
/// Role: write.
#[utoipa::path(
    post,
    path = "/v1/instances/{instance}/secrets/{key}/undelete",
    tag = "secrets",
    params(KeyPath),
    request_body(content = VersionsBody, content_type = "application/json"),
    responses(
        (status = 204, description = "Undeleted (live versions are left as they are)."),
        (status = 404, description = "No such key, or a version is not retained; nothing changed."),
        (status = 409, description = "A version was destroyed and cannot come back; nothing changed."),
        (status = 415, description = "The body is not `application/json`."),
    ),
)]
async fn undelete(
    caller: Authorized<op::Undelete>,
    _: NoQuery,
    path: KeyPath,
    State(app): State<App>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    change_versions(&caller.ctx, caller.grant.scope, path, &app, &headers, &body, Lifecycle::Undelete).await
}

/// Removes the values of versions of a secret from the store for good;
/// their metadata stays, with `destroyed: true`.
///
/// Role: write.
#[utoipa::path(
    post,
    path = "/v1/instances/{instance}/secrets/{key}/destroy",
    tag = "secrets",
    params(KeyPath),
    request_body(content = VersionsBody, content_type = "application/json"),
    responses(
        (status = 204, description = "Destroyed."),
        (status = 404, description = "No such key, or a version is not retained; nothing changed."),
        (status = 415, description = "The body is not `application/json`."),
    ),
)]
async fn destroy(
    caller: Authorized<op::Destroy>,
    _: NoQuery,
    path: KeyPath,
    State(app): State<App>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    change_versions(&caller.ctx, caller.grant.scope, path, &app, &headers, &body, Lifecycle::Destroy).await
}

/// Writes the value of an older version again, as the key's next version.
///
/// Role: write. The answer is the new version's metadata, never the value.
#[utoipa::path(
    post,
    path = "/v1/instances/{instance}/secrets/{key}/rollback",
    tag = "secrets",
    params(KeyPath),
    request_body(content = RollbackBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The new version.", body = SecretMeta,
            headers(("ETag" = String, description = "`\"vN\"`: the new version."))),
        (status = 404, description = "No such key or version."),
        (status = 409, description = "That version is deleted or destroyed."),
        (status = 415, description = "The body is not `application/json`."),
    ),
)]
async fn rollback(
    caller: Authorized<op::Rollback>,
    _: NoQuery,
    path: KeyPath,
    State(app): State<App>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    no_preconditions(&headers, "POST .../rollback")?;
    let version = rollback_body(&headers, &body)?;
    caller.ctx.set_version(version);
    let scope = caller.grant.scope;
    let KeyPath { instance, key } = path;
    let not_found = {
        let message = format!("version {version} of secret {key:?} not found in instance {instance:?}");
        move || message
    };
    let meta = app
        .call(Some(&caller.ctx), "rollback", move |inner| inner.secrets.rollback(&scope, &instance, &key, version))
        .await?
        .map_err(|e| ApiError::from(e).when_not_found(not_found))?;
    Ok(with_etag(json(StatusCode::OK, &meta), meta.version))
}

/// The tenant's instances that hold secrets.
#[derive(Serialize, ToSchema)]
struct InstanceList {
    /// Instance ids, sorted.
    instances: Vec<String>,
}

/// Lists the tenant's instances that hold at least one secret.
///
/// Roles: read, write.
#[utoipa::path(
    get,
    path = "/v1/instances",
    tag = "instances",
    responses(
        (status = 200, description = "The instances, sorted (empty when the tenant has none).", body = InstanceList),
    ),
)]
async fn instances(caller: Authorized<op::Instances>, _: NoQuery, State(app): State<App>) -> Result<Response, ApiError> {
    let scope = caller.grant.scope;
    let instances = app.call(Some(&caller.ctx), "instances", move |inner| inner.secrets.instances(&scope)).await??;
    Ok(json(StatusCode::OK, &InstanceList { instances }))
}

/// The format of `/env`'s answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ToSchema)]
#[schema(rename_all = "lowercase")]
pub(super) enum EnvFormat {
    /// A JSON object.
    Json,
    /// `NAME="value"` lines.
    Dotenv,
}

/// The env secrets of an instance: name to value.
#[derive(Serialize, ToSchema)]
#[serde(transparent)]
struct EnvBody<'a>(BTreeMap<&'a str, &'a str>);

/// The env secrets of an instance, current versions.
///
/// Roles: read, write, inject.
#[utoipa::path(
    get,
    path = "/v1/instances/{instance}/env",
    tag = "instances",
    params(
        InstancePath,
        ("format" = Option<EnvFormat>, Query, description = "`json` (the default) or `dotenv`."),
    ),
    responses(
        (status = 200, description = "The env secrets; an instance with only other kinds of secret answers an empty set.",
            content((EnvBody = "application/json"), (String = "text/plain; charset=utf-8"))),
        (status = 400, description = "A malformed path or `format`, or an unknown query parameter."),
        (status = 404, description = "The instance has no secrets (or is another tenant's)."),
    ),
)]
async fn env(
    caller: Authorized<op::Env>,
    InstancePath(instance): InstancePath,
    State(app): State<App>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let mut format = EnvFormat::Json;
    for (_, v) in query(raw.as_deref(), &["format"])? {
        format = match v.as_str() {
            "json" | "" => EnvFormat::Json,
            "dotenv" => EnvFormat::Dotenv,
            _ => return Err(ApiError::bad_request("format: must be json or dotenv")),
        };
    }
    let env = instance_read(&app, caller, instance, "inject", |s, scope, name| s.inject(scope, name), BTreeMap::is_empty).await?;
    if format == EnvFormat::Dotenv {
        let body = Body::from(crate::env_format::dotenv(&env));
        return Ok(([(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"))], body).into_response());
    }
    let mut map = BTreeMap::new();
    for (k, v) in &env {
        let Ok(text) = v.expose_str() else {
            return Err(ApiError::internal(format!("env secret {k:?} is not UTF-8")));
        };
        map.insert(k.as_str(), text);
    }
    Ok(json(StatusCode::OK, &EnvBody(map)))
}

/// `read` of the caller's instance. An empty answer from an instance
/// without any secret at all (a typo, or another tenant's) is a 404, so a
/// deploy agent does not start a workload without its secrets; an instance
/// that only lacks this kind of secret answers empty.
async fn instance_read<O, T>(
    app: &App,
    caller: Authorized<O>,
    instance: String,
    call: &'static str,
    read: fn(&crate::Secrets, &crate::Scope, &str) -> Result<T, crate::Error>,
    is_empty: fn(&T) -> bool,
) -> Result<T, ApiError>
where
    O: super::auth::Permission,
    T: Send + 'static,
{
    let scope = caller.grant.scope;
    let name = instance.clone();
    app.call(Some(&caller.ctx), call, move |inner| {
        let found = read(&inner.secrets, &scope, &name)?;
        let exists = !is_empty(&found) || !inner.secrets.list(&scope, &name)?.is_empty();
        Ok::<_, crate::Error>(exists.then_some(found))
    })
    .await??
    .ok_or_else(|| no_secrets(&instance))
}

/// The files of an instance's file, tls and registry secrets, sorted by path.
#[derive(Serialize, ToSchema)]
struct MountsBody<'a> {
    mounts: Vec<MountFile<'a>>,
}

/// A file to mount.
#[derive(Serialize, ToSchema)]
struct MountFile<'a> {
    /// Relative to the secrets directory.
    path: &'a str,
    /// Unix permission bits.
    mode: u32,
    /// The file's contents in base64 (standard alphabet, padded).
    contents_base64: String,
}

/// The files an instance mounts, current versions.
///
/// Roles: read, write, inject.
#[utoipa::path(
    get,
    path = "/v1/instances/{instance}/mounts",
    tag = "instances",
    params(InstancePath),
    responses(
        (status = 200, description = "The files; an instance with only env secrets answers an empty list.", body = MountsBody),
        (status = 404, description = "The instance has no secrets (or is another tenant's)."),
    ),
)]
async fn mounts(
    caller: Authorized<op::Mounts>,
    _: NoQuery,
    InstancePath(instance): InstancePath,
    State(app): State<App>,
) -> Result<Response, ApiError> {
    let mounts = instance_read(&app, caller, instance, "mounts", |s, scope, name| s.mounts(scope, name), Vec::is_empty).await?;
    let files: Vec<MountFile> = mounts
        .iter()
        .map(|m| MountFile { path: &m.path, mode: m.mode, contents_base64: BASE64.encode(m.contents.expose()) })
        .collect();
    Ok(json(StatusCode::OK, &MountsBody { mounts: files }))
}
