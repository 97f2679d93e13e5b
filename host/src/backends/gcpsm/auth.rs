//! Credentials of the GCP backend: an access token from
//! `GOOGLE_OAUTH_ACCESS_TOKEN`, a service-account key file named by
//! `GOOGLE_APPLICATION_CREDENTIALS` (a signed JWT exchanged for an access
//! token at the key's `token_uri`), the metadata server of a GCE / GKE /
//! Cloud Run host, or nothing at all when `endpoint=` points at an
//! emulator. Tokens are cached until a minute before they expire. No token,
//! key or assertion is ever part of a message or of `Debug`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::backends::{VaultError, rejected};

/// The variable holding a ready access token (as the Terraform provider names it).
pub const ACCESS_TOKEN_ENV: &str = "GOOGLE_OAUTH_ACCESS_TOKEN";
/// The variable naming a service-account key file.
pub const CREDENTIALS_ENV: &str = "GOOGLE_APPLICATION_CREDENTIALS";
const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
const METADATA_TOKEN: &str = "/computeMetadata/v1/instance/service-accounts/default/token";

/// Where the backend's credentials come from.
#[derive(Clone)]
pub enum Credentials {
    /// The standard order: `GOOGLE_OAUTH_ACCESS_TOKEN`, then
    /// `GOOGLE_APPLICATION_CREDENTIALS`, then (only with `endpoint=`) none,
    /// else the metadata server.
    Default,
    /// This access token.
    AccessToken(SecretString),
    /// This service-account key file.
    KeyFile(PathBuf),
    /// No credentials: for an emulator.
    Anonymous,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Default => write!(f, "Default"),
            Credentials::AccessToken(_) => write!(f, "AccessToken(<hidden>)"),
            Credentials::KeyFile(p) => write!(f, "KeyFile({})", p.display()),
            Credentials::Anonymous => write!(f, "Anonymous"),
        }
    }
}

#[derive(Deserialize)]
struct KeyFile {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    client_email: String,
    #[serde(default)]
    private_key: String,
    #[serde(default)]
    private_key_id: String,
    #[serde(default)]
    token_uri: String,
}

#[derive(Deserialize)]
struct TokenReply {
    access_token: String,
    #[serde(default)]
    expires_in: u64,
}

enum Source {
    Anonymous,
    Fixed(SecretString),
    ServiceAccount { email: String, key_id: String, key: jsonwebtoken::EncodingKey, token_uri: String },
    Metadata { host: String },
}

/// Resolved credentials: what to send as `Authorization`.
pub(crate) struct Auth {
    source: Source,
    what: String,
    cached: Mutex<Option<(SecretString, Instant)>>,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Auth({})", self.what)
    }
}

impl Auth {
    pub(crate) fn resolve(credentials: &Credentials, emulator: bool) -> Result<Auth, VaultError> {
        let env = |name: &str| std::env::var(name).ok().map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let source = match credentials {
            Credentials::Anonymous => Source::Anonymous,
            Credentials::AccessToken(t) => Source::Fixed(t.clone()),
            Credentials::KeyFile(path) => service_account(path)?,
            Credentials::Default => {
                if let Some(token) = env(ACCESS_TOKEN_ENV) {
                    Source::Fixed(SecretString::from(token))
                } else if let Some(path) = env(CREDENTIALS_ENV) {
                    service_account(Path::new(&path))?
                } else if emulator {
                    Source::Anonymous
                } else {
                    let host = env("GCE_METADATA_HOST").unwrap_or_else(|| "metadata.google.internal".to_owned());
                    Source::Metadata { host }
                }
            }
        };
        let what = match &source {
            Source::Anonymous => "no credentials (emulator)".to_owned(),
            Source::Fixed(_) => "an access token".to_owned(),
            Source::ServiceAccount { email, .. } => format!("service account {email}"),
            Source::Metadata { host } => format!("the metadata server at {host}"),
        };
        Ok(Auth { source, what, cached: Mutex::new(None) })
    }

    /// What the credentials are, for messages (never a secret).
    pub(crate) fn describe(&self) -> &str {
        &self.what
    }

    /// The bearer token to send, fetching a fresh one when the cached one
    /// is about to expire; `None` for an emulator.
    pub(crate) fn bearer(&self, agent: &ureq::Agent) -> Result<Option<SecretString>, VaultError> {
        let fetch = match &self.source {
            Source::Anonymous => return Ok(None),
            Source::Fixed(t) => return Ok(Some(t.clone())),
            _ => true,
        };
        let mut cached = self.cached.lock();
        if let Some((token, until)) = cached.as_ref()
            && Instant::now() < *until
        {
            return Ok(Some(token.clone()));
        }
        debug_assert!(fetch);
        let (token, lifetime) = match &self.source {
            Source::ServiceAccount { email, key_id, key, token_uri } => {
                exchange_jwt(agent, email, key_id, key, token_uri)?
            }
            Source::Metadata { host } => metadata_token(agent, host)?,
            Source::Anonymous | Source::Fixed(_) => unreachable!("returned above"),
        };
        let until = Instant::now() + lifetime.saturating_sub(Duration::from_secs(60)).max(Duration::from_secs(1));
        *cached = Some((token.clone(), until));
        Ok(Some(token))
    }

    /// Forgets the cached token (after the server refused it).
    pub(crate) fn forget(&self) {
        *self.cached.lock() = None;
    }
}

fn service_account(path: &Path) -> Result<Source, VaultError> {
    let text = Zeroizing::new(std::fs::read(path).map_err(|e| {
        rejected(format!("cannot read the GCP credentials file {} ({CREDENTIALS_ENV}): {}", path.display(), e.kind()))
    })?);
    let file: KeyFile = serde_json::from_slice(&text)
        .map_err(|_| rejected(format!("the GCP credentials file {} is not a JSON key file", path.display())))?;
    let file = scopeguard_zeroize(file);
    if file.kind != "service_account" {
        return Err(rejected(format!(
            "the GCP credentials file {} is of type {:?}; only service_account key files are supported (or set {ACCESS_TOKEN_ENV})",
            path.display(),
            file.kind
        )));
    }
    if file.client_email.is_empty() || file.private_key.is_empty() {
        return Err(rejected(format!("the GCP credentials file {} lacks client_email or private_key", path.display())));
    }
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(file.private_key.as_bytes())
        .map_err(|_| rejected(format!("the private_key of the GCP credentials file {} is not an RSA PEM key", path.display())))?;
    let token_uri =
        if file.token_uri.is_empty() { "https://oauth2.googleapis.com/token".to_owned() } else { file.token_uri.clone() };
    Ok(Source::ServiceAccount { email: file.client_email.clone(), key_id: file.private_key_id.clone(), key, token_uri })
}

/// The key file's private key is zeroized when the parsed file is dropped.
fn scopeguard_zeroize(file: KeyFile) -> ZeroizingKeyFile {
    ZeroizingKeyFile(file)
}

struct ZeroizingKeyFile(KeyFile);

impl std::ops::Deref for ZeroizingKeyFile {
    type Target = KeyFile;
    fn deref(&self) -> &KeyFile {
        &self.0
    }
}

impl Drop for ZeroizingKeyFile {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0.private_key);
    }
}

#[derive(serde::Serialize)]
struct Claims<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
}

fn exchange_jwt(
    agent: &ureq::Agent,
    email: &str,
    key_id: &str,
    key: &jsonwebtoken::EncodingKey,
    token_uri: &str,
) -> Result<(SecretString, Duration), VaultError> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    if !key_id.is_empty() {
        header.kid = Some(key_id.to_owned());
    }
    let claims = Claims { iss: email, scope: SCOPE, aud: token_uri, iat: now, exp: now + 3600 };
    let assertion = Zeroizing::new(
        jsonwebtoken::encode(&header, &claims, key)
            .map_err(|e| VaultError::Other(format!("cannot sign the service-account assertion: {e}")))?,
    );
    let body = Zeroizing::new(format!(
        "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={}",
        assertion.as_str()
    ));
    let reply = agent
        .post(token_uri)
        .content_type("application/x-www-form-urlencoded")
        .send(body.as_bytes())
        .map_err(|e| VaultError::Unavailable(format!("cannot reach the token endpoint {token_uri}: {e}")))?;
    token_reply(reply, &format!("the token endpoint {token_uri} (service account {email})"))
}

fn metadata_token(agent: &ureq::Agent, host: &str) -> Result<(SecretString, Duration), VaultError> {
    let url = format!("http://{host}{METADATA_TOKEN}");
    let reply = agent.get(&url).header("Metadata-Flavor", "Google").call().map_err(|e| {
        VaultError::Unavailable(format!(
            "no GCP credentials: {ACCESS_TOKEN_ENV} and {CREDENTIALS_ENV} are unset and the metadata server at {host} did not answer ({e})"
        ))
    })?;
    token_reply(reply, &format!("the metadata server at {host}"))
}

fn token_reply(mut reply: ureq::http::Response<ureq::Body>, what: &str) -> Result<(SecretString, Duration), VaultError> {
    let status = reply.status().as_u16();
    let body = Zeroizing::new(
        reply
            .body_mut()
            .with_config()
            .limit(1 << 20)
            .read_to_vec()
            .map_err(|e| VaultError::Unavailable(format!("{what} did not answer in full: {e}")))?,
    );
    match status {
        200 => {}
        429 | 500..=599 => return Err(VaultError::Unavailable(format!("{what} could not issue a token (HTTP {status})"))),
        // The body may quote the assertion: not shown.
        _ => return Err(VaultError::Rejected(format!("{what} refused to issue a token (HTTP {status})"))),
    }
    let parsed: TokenReply = serde_json::from_slice(&body)
        .map_err(|_| VaultError::Other(format!("{what} answered without an access_token")))?;
    let lifetime = Duration::from_secs(if parsed.expires_in == 0 { 300 } else { parsed.expires_in });
    Ok((SecretString::from(parsed.access_token), lifetime))
}

/// The header value for a bearer token.
pub(crate) fn authorization(token: &SecretString) -> Zeroizing<String> {
    Zeroizing::new(format!("Bearer {}", token.expose_secret()))
}
