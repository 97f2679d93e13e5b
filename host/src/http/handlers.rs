//! The routes and their handlers: each checks its input, makes one call of
//! [`Secrets`] on the blocking pool, and shapes the answer. Tenants come
//! from the token, never from the path.
//!
//! Only `/value`, `/env` and `/mounts` answer with values; every other
//! response holds metadata ([`SecretMeta`], which has no value field).
//!
//! [`Secrets`]: crate::Secrets

use std::collections::BTreeMap;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Serialize;

use super::App;
use super::auth::{Authorized, op};
use super::errors::ApiError;
use super::input::{
    InstancePath, KeyPath, NoQuery, none_match, query, set_body, set_precondition, version_number, wants_raw,
};
use super::request;
use crate::types::{SecretMeta, SecretType, SetRequest};

/// The API's routes on `app`, with the request middleware and the body
/// limit.
pub(crate) fn router(app: App) -> Router {
    let body_limit = app.inner.config.body_limit;
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/instances/{instance}/secrets", get(list))
        .route("/v1/instances/{instance}/secrets/{key}", put(set).get(metadata).delete(delete))
        .route("/v1/instances/{instance}/secrets/{key}/value", get(value))
        .route("/v1/instances/{instance}/secrets/{key}/rotate", axum::routing::post(rotate))
        .route("/v1/instances/{instance}/env", get(env))
        .route("/v1/instances/{instance}/mounts", get(mounts))
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

async fn healthz() -> Response {
    json(StatusCode::OK, &serde_json::json!({ "status": "ok" }))
}

async fn readyz(State(app): State<App>) -> Result<Response, ApiError> {
    app.check("check-store", |inner| inner.tokens.check_store()).await??;
    Ok(json(StatusCode::OK, &serde_json::json!({ "status": "ready" })))
}

async fn metrics(State(app): State<App>) -> Response {
    let content_type = HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8");
    ([(header::CONTENT_TYPE, content_type)], app.metrics_text()).into_response()
}

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
    #[derive(Serialize)]
    struct Body<'a> {
        secrets: &'a [SecretMeta],
    }
    Ok(json(StatusCode::OK, &Body { secrets: &metas }))
}

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
    #[derive(Serialize)]
    struct Body<'a> {
        #[serde(flatten)]
        current: &'a SecretMeta,
        versions: &'a [SecretMeta],
    }
    Ok(with_etag(json(StatusCode::OK, &Body { current, versions: &versions }), current.version))
}

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
    #[derive(Serialize)]
    struct Body<'a> {
        key: &'a str,
        version: u32,
        #[serde(rename = "type")]
        kind: SecretType,
        #[serde(skip_serializing_if = "Option::is_none")]
        value: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        value_base64: Option<String>,
    }
    let (text, b64) = match secret.value.expose_str() {
        Ok(s) => (Some(s), None),
        Err(_) => (None, Some(BASE64.encode(secret.value.expose()))),
    };
    let body = Body { key: &secret.meta.key, version: secret.meta.version, kind: secret.meta.kind, value: text, value_base64: b64 };
    let mut response = with_etag(json(StatusCode::OK, &body), secret.meta.version);
    response.headers_mut().insert(header::VARY, HeaderValue::from_static("accept"));
    Ok(response)
}

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
    Ok(json(StatusCode::OK, &serde_json::json!({ "rotated": rotated })))
}


async fn env(
    caller: Authorized<op::Env>,
    InstancePath(instance): InstancePath,
    State(app): State<App>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let mut dotenv_format = false;
    for (_, v) in query(raw.as_deref(), &["format"])? {
        dotenv_format = match v.as_str() {
            "json" | "" => false,
            "dotenv" => true,
            _ => return Err(ApiError::bad_request("format: must be json or dotenv")),
        };
    }
    let env = instance_read(&app, caller, instance, "inject", |s, scope, name| s.inject(scope, name), BTreeMap::is_empty).await?;
    if dotenv_format {
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
    Ok(json(StatusCode::OK, &map))
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

async fn mounts(
    caller: Authorized<op::Mounts>,
    _: NoQuery,
    InstancePath(instance): InstancePath,
    State(app): State<App>,
) -> Result<Response, ApiError> {
    let mounts = instance_read(&app, caller, instance, "mounts", |s, scope, name| s.mounts(scope, name), Vec::is_empty).await?;
    #[derive(Serialize)]
    struct File<'a> {
        path: &'a str,
        mode: u32,
        contents_base64: String,
    }
    let files: Vec<File> = mounts
        .iter()
        .map(|m| File { path: &m.path, mode: m.mode, contents_base64: BASE64.encode(m.contents.expose()) })
        .collect();
    Ok(json(StatusCode::OK, &serde_json::json!({ "mounts": files })))
}
