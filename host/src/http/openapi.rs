//! The API's OpenAPI document, `GET /v1/openapi.json` (no token, no audit
//! line): the handlers' `#[utoipa::path]`s and their body types' schemas,
//! assembled once.
//!
//! What every `/v1/instances` route shares is added here rather than
//! repeated on each handler: the bearer token, and the statuses that come
//! from the token, the path and query checks, the store and the audit log.
//! Every error status gets the error body, as the request middleware
//! (`request.rs`) writes it for every error.

use std::sync::LazyLock;

use utoipa::openapi::header::Header;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::schema::Type;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Content, ObjectBuilder, Ref, RefOr, Response};
use utoipa::{Modify, OpenApi, ToSchema};

use super::errors::ErrorBody;
use super::handlers;

/// Where the document is served.
pub(crate) const PATH: &str = "/v1/openapi.json";

/// Whether the route at `path` takes a token: `/v1/instances` and below.
fn takes_token(path: &str) -> bool {
    path.strip_prefix("/v1/instances").is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The name of the bearer security scheme.
const BEARER: &str = "bearer";

/// The errors any route that takes a token can answer, whatever it does.
const SHARED_ERRORS: [(&str, &str); 8] = [
    ("400", "A malformed path segment (encoded slash, `..`, control character) or an unknown query parameter."),
    ("401", "A missing, malformed, unknown, expired or revoked token; all alike."),
    ("403", "The token's role does not allow this operation."),
    ("422", "An instance id or key that breaks the naming rules; the message names the field."),
    ("429", "The token's request rate is exceeded (`--rate-limit`)."),
    ("500", "A failure of the server itself, such as a sandbox trap; quote the request id."),
    ("502", "The store answered with an error or a corrupt entry; nothing was changed."),
    ("503", "The store cannot be reached, or the audit log cannot be written; nothing was done."),
];

#[derive(OpenApi)]
#[openapi(
    info(
        title = "secrets",
        description = "The HTTP API of `secrets serve`. Callers of `/v1/instances` present `Authorization: Bearer <token>`; \
            the token fixes the tenant and the role. Values leave only in the bodies of `/value`, `/env` and `/mounts`. \
            Every response carries `X-Request-Id` and `Cache-Control: no-store`."
    ),
    paths(
        handlers::healthz,
        handlers::readyz,
        handlers::metrics,
        handlers::openapi_document,
        handlers::list,
        handlers::set,
        handlers::metadata,
        handlers::delete,
        handlers::value,
        handlers::rotate,
        handlers::delete_versions,
        handlers::undelete,
        handlers::destroy,
        handlers::rollback,
        handlers::instances,
        handlers::env,
        handlers::mounts,
    ),
    // Schemas that only the modifier or a parameter refers to.
    components(schemas(ErrorBody, handlers::EnvFormat)),
    modifiers(&Shared),
    tags(
        (name = "secrets", description = "One instance's secrets, key by key."),
        (name = "instances", description = "What an instance's workload receives."),
        (name = "service", description = "Health, readiness, metrics and this document; no token."),
    )
)]
struct ApiDoc;

/// Adds what the routes share (see the module documentation).
struct Shared;

impl Modify for Shared {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let scheme = Http::builder()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some("A token of `secrets token create`; it fixes the tenant and the role."))
            .build();
        doc.components.get_or_insert_with(Default::default).add_security_scheme(BEARER, SecurityScheme::Http(scheme));
        for (path, item) in &mut doc.paths.paths {
            let takes_token = takes_token(path);
            for operation in operations(item) {
                if takes_token {
                    operation.security = Some(vec![SecurityRequirement::new(BEARER, Vec::<String>::new())]);
                    for (status, description) in SHARED_ERRORS {
                        operation.responses.responses.entry(status.to_owned()).or_insert_with(|| Response::new(description).into());
                    }
                }
                for (status, response) in &mut operation.responses.responses {
                    if let RefOr::T(response) = response
                        && (status.starts_with('4') || status.starts_with('5'))
                    {
                        error_response(status, response);
                    }
                }
            }
        }
    }
}

fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.options, &mut item.head, &mut item.patch, &mut item.trace]
        .into_iter()
        .flatten()
}

/// The error body, and the headers that come with some statuses.
fn error_response(status: &str, response: &mut Response) {
    let body = Content::new(Some(Ref::from_schema_name(ErrorBody::name())));
    response.content.insert("application/json".to_owned(), body);
    let header = |kind: Type, description: &str| {
        let mut header = Header::new(ObjectBuilder::new().schema_type(kind));
        header.description = Some(description.to_owned());
        header
    };
    match status {
        "401" => {
            response.headers.insert("WWW-Authenticate".to_owned(), header(Type::String, "`Bearer`."));
        }
        "429" | "503" => {
            response.headers.insert("Retry-After".to_owned(), header(Type::Integer, "Seconds to wait before trying again."));
        }
        _ => {}
    }
}

/// The document, built on first use.
pub(crate) fn document() -> &'static utoipa::openapi::OpenApi {
    static DOCUMENT: LazyLock<utoipa::openapi::OpenApi> = LazyLock::new(ApiDoc::openapi);
    &DOCUMENT
}
