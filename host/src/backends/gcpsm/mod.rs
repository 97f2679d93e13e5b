//! The GCP Secret Manager backend: one cloud secret per vault entry,
//! reached over Secret Manager's v1 REST API.
//!
//! # Store URL
//!
//! `gcpsm://PROJECT[/PREFIX][?endpoint=URL&lock_ttl=SECS&lock_timeout=SECS&timeout=SECS]`
//!
//! | part | meaning |
//! |---|---|
//! | `PROJECT` | the project id (or number) |
//! | `PREFIX` | starts every secret id of this store (default `cp-secrets`): 1..=100 of `A-Z a-z 0-9 -` |
//! | `endpoint=URL` | another API root, e.g. an emulator's `http://127.0.0.1:PORT`; only then may there be no credentials |
//! | `lock_ttl`, `lock_timeout`, `timeout` | the lock's lease (30 s), the wait for a lock (60 s), one request (30 s) |
//!
//! Credentials ([`Credentials`]): an access token in
//! `GOOGLE_OAUTH_ACCESS_TOKEN`; else the service-account key file named by
//! `GOOGLE_APPLICATION_CREDENTIALS` (an RS256 JWT signed with its key,
//! exchanged at its `token_uri`; other key file types are refused); else,
//! with `endpoint=`, none; else the metadata server
//! (`GCE_METADATA_HOST` or `metadata.google.internal`). Connecting lists
//! one secret of the project, so bad credentials, a missing project or
//! a missing permission fail at once. The identity needs
//! `roles/secretmanager.admin` on the project (it creates and deletes
//! secrets). No credential is ever in a message or in `Debug`.
//!
//! # Layout
//!
//! - A vault key becomes the secret id `PREFIX_e_<encoded key>`: ASCII
//!   letters and digits kept, `/` as `_`, any other byte as `-` and two hex
//!   digits. Injective (decoding is unambiguous) and always a valid id.
//!   When the id would exceed 255 characters it is `PREFIX_e-h<SHA-256 of
//!   the key, hex>` instead (`-h` is never produced by the encoding), and
//!   the full key is kept in the secret's labels `k00`, `k01`, ... (its
//!   hex, 63 characters a label) and checked on every read: a key whose
//!   hex needs more than 62 labels (over 1953 bytes) is refused.
//! - Lock entries live apart: `PREFIX_l_<encoded lock name>` (see
//!   `remote::lock`).
//! - The value is the payload of the secret's newest version. A write adds
//!   a version and destroys the one before it (destroyed versions are not
//!   billed); deleting a key deletes the secret with every version.
//! - Values: at most 64 KiB (65536 bytes), refused by the backend itself
//!   before anything is written (the emulator has no limit). Secret Manager
//!   refuses empty payloads, so the empty value is stored as the one byte
//!   `00` with the label `empty=true`; reading a one-byte `00` payload
//!   reads the labels (one more request). A rewrite from the empty value
//!   to the one-byte value `00` or back is two requests (labels, then the
//!   version): cut between them, the other of the two is read. The secrets
//!   logic never rewrites a value entry, so this never concerns values it
//!   stores.
//!
//! # Transactions
//!
//! As the OpenBao backend's, over `remote::lock` and `remote::txn`:
//! a lock secret per instance created with `secrets.create` (409
//! `ALREADY_EXISTS` when held), buffered writes applied at commit in the
//! logic's order (**not atomic**: a cut commit leaves a prefix applied,
//! which the logic's order keeps readable), a lease measured on each
//! process's monotonic clock, takeover of a stale lock through a claim
//! secret. Secret Manager's etags would give a compare-and-set on a delete,
//! but the emulator ignores them, so nothing here relies on them; what that
//! leaves unprotected is in `remote::lock` and the README.
//!
//! # Requests and cost
//!
//! `get` of a key is 1 request (`versions/latest:access` of the key
//! record, which carries the current value; one more for a value too
//! large for it), `list` 1 (the index), `inject` 1 (the index carries the
//! current values; one more per value it could not carry, read
//! concurrently, 8 at a time). A `set` of an existing
//! key: lock (2: create the secret, add its version), reads of key record
//! and index (2, together), then value (2: create, add a version), key
//! record (2: add a version, destroy the previous one), index (2), release
//! (1): 11. Throttled
//! requests (HTTP 429) are retried with backoff, at most 6 attempts in 10 s
//! (`remote::retry`). An instance with K keys and V versions kept per key
//! holds K×V + K + 1 secrets, each with one active version; a lock secret
//! exists only during a write.

mod auth;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

pub use auth::{ACCESS_TOKEN_ENV, CREDENTIALS_ENV, Credentials};

use super::remote::retry::{self, Attempt};
use super::remote::{LockConfig, RemoteBackend, RemoteStore, Space, endpoint_url};
use crate::backends::{Access, Backend, Transaction, VaultError, http_agent, rejected};

/// Where secret ids start unless the URL says otherwise.
pub const DEFAULT_PREFIX: &str = "cp-secrets";
/// How long a lock entry is valid before others may take it over.
pub const DEFAULT_LOCK_TTL: Duration = Duration::from_secs(30);
/// How long a writer waits for a lock.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(60);
/// The timeout of one HTTP request.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The real API's root.
pub const DEFAULT_ENDPOINT: &str = "https://secretmanager.googleapis.com";
/// The longest secret id Secret Manager accepts.
pub const MAX_SECRET_ID: usize = 255;
/// Labels a secret may have, and the length of a label value.
const MAX_LABELS: usize = 64;
const LABEL_LEN: usize = 63;
const MAX_BODY: u64 = 1 << 20;

/// Where and how to reach Secret Manager. `Debug` never shows a credential.
#[derive(Clone, Debug)]
pub struct GcpSmConfig {
    pub(crate) project: String,
    pub(crate) prefix: String,
    pub(crate) endpoint: Option<String>,
    pub(crate) credentials: Credentials,
    pub(crate) lock_ttl: Duration,
    pub(crate) lock_timeout: Duration,
    pub(crate) request_timeout: Duration,
}

impl GcpSmConfig {
    /// The project `project`, with the defaults.
    pub fn new(project: &str) -> Result<Self, VaultError> {
        let valid = !project.is_empty()
            && project.len() <= 100
            && project.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.' || b == b':');
        if !valid {
            return Err(rejected(format!(
                "the GCP project {project:?} must be a project id or number (lower-case letters, digits, '-')"
            )));
        }
        Ok(GcpSmConfig {
            project: project.to_owned(),
            prefix: DEFAULT_PREFIX.to_owned(),
            endpoint: None,
            credentials: Credentials::Default,
            lock_ttl: DEFAULT_LOCK_TTL,
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        })
    }

    /// Starts every secret id with `prefix` (1..=100 of `A-Z a-z 0-9 -`).
    pub fn with_prefix(mut self, prefix: &str) -> Result<Self, VaultError> {
        if prefix.is_empty() || prefix.len() > 100 || !prefix.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(rejected(format!("the GCP secret prefix {prefix:?} must be 1 to 100 of A-Z a-z 0-9 and '-'")));
        }
        self.prefix = prefix.to_owned();
        Ok(self)
    }

    /// Sends requests to `endpoint` (`http(s)://host[:port]`) instead of
    /// Google's: an emulator.
    pub fn with_endpoint(mut self, endpoint: &str) -> Result<Self, VaultError> {
        self.endpoint = Some(endpoint_url(endpoint)?);
        Ok(self)
    }

    /// Uses these credentials instead of the standard order.
    pub fn with_credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = credentials;
        self
    }

    /// How long a lock entry is valid before others may take it over.
    pub fn with_lock_ttl(mut self, ttl: Duration) -> Self {
        self.lock_ttl = ttl;
        self
    }

    /// How long a writer waits for a lock.
    pub fn with_lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout;
        self
    }

    /// The timeout of one HTTP request.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// The project.
    pub fn project(&self) -> &str {
        &self.project
    }

    /// The secret id prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

/// The byte encoding of a key into secret-id characters (see the module doc).
fn encode(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 8);
    for b in key.bytes() {
        match b {
            b'/' => out.push('_'),
            b if b.is_ascii_alphanumeric() => out.push(b as char),
            b => {
                out.push('-');
                out.push_str(&hex::encode([b]));
            }
        }
    }
    out
}

/// The inverse of [`encode`].
#[cfg(test)]
fn decode(id: &str) -> Option<String> {
    let bytes = id.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'_' => out.push(b'/'),
            b'-' => {
                out.extend(hex::decode(id.get(i + 1..i + 3)?).ok()?);
                i += 2;
            }
            b if b.is_ascii_alphanumeric() => out.push(b),
            _ => return None,
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// A secret id: encoded, or a digest with the key in labels.
struct Name {
    id: String,
    digest: bool,
}

#[derive(Deserialize)]
struct GcpError {
    error: Option<GcpErrorBody>,
}

#[derive(Deserialize)]
struct GcpErrorBody {
    #[serde(default)]
    message: String,
    #[serde(default)]
    status: String,
}

#[derive(Deserialize)]
struct Access_ {
    payload: Option<PayloadData>,
}

#[derive(Deserialize)]
struct PayloadData {
    #[serde(default)]
    data: String,
}

#[derive(Deserialize)]
struct VersionName {
    #[serde(default)]
    name: String,
}

#[derive(Deserialize, Default)]
struct SecretInfo {
    #[serde(default)]
    name: String,
    #[serde(default)]
    labels: Map<String, Value>,
}

#[derive(Deserialize)]
struct SecretList {
    #[serde(default)]
    secrets: Vec<SecretInfo>,
    #[serde(default, rename = "nextPageToken")]
    next: String,
}

struct Reply {
    status: u16,
    body: Zeroizing<Vec<u8>>,
}

impl Reply {
    fn error_status(&self) -> String {
        serde_json::from_slice::<GcpError>(&self.body).ok().and_then(|e| e.error).map(|e| e.status).unwrap_or_default()
    }
}

pub(crate) struct GcpStore {
    config: GcpSmConfig,
    agent: ureq::Agent,
    auth: auth::Auth,
    /// `https://secretmanager.googleapis.com/v1/projects/P/secrets`.
    secrets_url: String,
    requests: AtomicU64,
}

impl GcpStore {
    fn name(&self, space: Space, key: &str) -> Name {
        let tag = match space {
            Space::Entry => "e",
            Space::Lock => "l",
        };
        let id = format!("{}_{tag}_{}", self.config.prefix, encode(key));
        if id.len() <= MAX_SECRET_ID {
            Name { id, digest: false }
        } else {
            Name { id: format!("{}_{tag}-h{}", self.config.prefix, hex::encode(Sha256::digest(key.as_bytes()))), digest: true }
        }
    }

    /// The labels of an entry secret: ours, the key if its id is a digest,
    /// the empty flag.
    fn labels(&self, key: &str, name: &Name, empty: bool) -> Map<String, Value> {
        let mut labels = Map::new();
        labels.insert("secrets-host".into(), "entry".into());
        if name.digest {
            let hex = hex::encode(key.as_bytes());
            for (i, chunk) in hex.as_bytes().chunks(LABEL_LEN).enumerate() {
                labels.insert(format!("k{i:02}"), Value::String(String::from_utf8_lossy(chunk).into_owned()));
            }
        }
        if empty {
            labels.insert("empty".into(), "true".into());
        }
        labels
    }

    fn describe_store(&self) -> String {
        let mut s = format!("gcpsm://{}/{}", self.config.project, self.config.prefix);
        if let Some(e) = &self.config.endpoint {
            s.push_str(&format!("?endpoint={e}"));
        }
        s
    }

    /// One request, throttling retried; `path` is relative to the secrets
    /// collection (`""`, `/ID`, `/ID:addVersion`, ...).
    fn send(&self, method: &str, path: &str, body: Option<&[u8]>) -> Result<Reply, VaultError> {
        let url = format!("{}{path}", self.secrets_url);
        retry::throttled(|_| {
            let token = match self.auth.bearer(&self.agent) {
                Ok(t) => t,
                Err(e) => return Attempt::Done(Err(e)),
            };
            self.requests.fetch_add(1, Ordering::Relaxed);
            let header = token.as_ref().map(auth::authorization);
            let result = match method {
                "GET" => {
                    let r = self.agent.get(&url);
                    match &header { Some(h) => r.header("Authorization", h.as_str()), None => r }.call()
                }
                "DELETE" => {
                    let r = self.agent.delete(&url);
                    match &header { Some(h) => r.header("Authorization", h.as_str()), None => r }.call()
                }
                _ => {
                    let r = if method == "PATCH" { self.agent.patch(&url) } else { self.agent.post(&url) };
                    let r = match &header { Some(h) => r.header("Authorization", h.as_str()), None => r };
                    r.content_type("application/json").send(body.unwrap_or(b"{}"))
                }
            };
            let mut response = match result {
                Ok(r) => r,
                Err(e) => return Attempt::Done(Err(self.transport_error(e))),
            };
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let body = match response.body_mut().with_config().limit(MAX_BODY).read_to_vec() {
                Ok(b) => Zeroizing::new(b),
                Err(e) => return Attempt::Done(Err(self.transport_error(e))),
            };
            let reply = Reply { status, body };
            if status == 429 {
                return Attempt::Throttled { retry_after, error: self.status_error(&reply, "a request") };
            }
            if status == 401 {
                self.auth.forget();
            }
            Attempt::Done(Ok(reply))
        })
    }

    fn transport_error(&self, e: ureq::Error) -> VaultError {
        match e {
            ureq::Error::Timeout(t) => {
                VaultError::Unavailable(format!("Secret Manager at {} did not answer in time ({t})", self.endpoint()))
            }
            other => VaultError::Unavailable(format!("cannot talk to Secret Manager at {}: {other}", self.endpoint())),
        }
    }

    fn endpoint(&self) -> &str {
        self.config.endpoint.as_deref().unwrap_or(DEFAULT_ENDPOINT)
    }

    fn status_error(&self, reply: &Reply, what: &str) -> VaultError {
        let detail = serde_json::from_slice::<GcpError>(&reply.body)
            .ok()
            .and_then(|e| e.error)
            .map(|e| {
                let m: String = e.message.chars().take(200).collect();
                format!(": {} {m}", e.status)
            })
            .unwrap_or_default();
        let at = self.describe_store();
        match reply.status {
            401 | 403 => VaultError::Rejected(format!(
                "Secret Manager refused {what} on {at} with {} (HTTP {}: check the credentials and the role of the identity){detail}",
                self.auth.describe(),
                reply.status
            )),
            429 | 500..=599 => VaultError::Unavailable(format!("Secret Manager could not serve {what} on {at} (HTTP {}){detail}", reply.status)),
            s => VaultError::Rejected(format!("Secret Manager rejected {what} on {at} (HTTP {s}){detail}")),
        }
    }

    fn check(&self) -> Result<(), VaultError> {
        let reply = self.send("GET", "?pageSize=1", None)?;
        match reply.status {
            200 => Ok(()),
            404 => Err(rejected(format!("Secret Manager has no project {:?} (or the API is not enabled there)", self.config.project))),
            _ => Err(self.status_error(&reply, "listing secrets (the connection check)")),
        }
    }

    /// The newest version's payload of secret `id`, raw.
    fn access(&self, id: &str) -> Result<Option<Zeroizing<Vec<u8>>>, VaultError> {
        let reply = self.send("GET", &format!("/{id}/versions/latest:access"), None)?;
        match reply.status {
            200 => {}
            // No secret, or a secret without a version yet (a create cut
            // before its first version).
            404 => return Ok(None),
            _ => return Err(self.status_error(&reply, &format!("the read of secret {id}"))),
        }
        let access: Access_ = serde_json::from_slice(&reply.body)
            .map_err(|_| VaultError::Other(format!("Secret Manager answered the read of {id} with unexpected JSON")))?;
        let mut data = access.payload.map(|p| p.data).unwrap_or_default();
        let value = BASE64.decode(data.as_bytes());
        zeroize::Zeroize::zeroize(&mut data);
        value
            .map(|v| Some(Zeroizing::new(v)))
            .map_err(|_| VaultError::Corrupt(format!("the payload of secret {id} is not base64")))
    }

    fn secret_info(&self, id: &str) -> Result<Option<SecretInfo>, VaultError> {
        let reply = self.send("GET", &format!("/{id}"), None)?;
        match reply.status {
            200 => serde_json::from_slice(&reply.body)
                .map(Some)
                .map_err(|_| VaultError::Other(format!("Secret Manager answered the metadata read of {id} with unexpected JSON"))),
            404 => Ok(None),
            _ => Err(self.status_error(&reply, &format!("the metadata read of secret {id}"))),
        }
    }

    /// Adds a version with `payload`, then destroys the previous one.
    /// `false` if the secret does not exist.
    fn add_version(&self, id: &str, payload: &[u8]) -> Result<bool, VaultError> {
        let body = Zeroizing::new(serde_json::to_vec(&json!({"payload": {"data": BASE64.encode(payload)}})).expect("json"));
        let reply = self.send("POST", &format!("/{id}:addVersion"), Some(&body))?;
        match reply.status {
            200 => {}
            404 => return Ok(false),
            _ => return Err(self.status_error(&reply, &format!("adding a version to secret {id}"))),
        }
        let added: VersionName = serde_json::from_slice(&reply.body).unwrap_or(VersionName { name: String::new() });
        let number = added.name.rsplit('/').next().and_then(|n| n.parse::<u64>().ok());
        if let Some(n) = number
            && n > 1
        {
            let reply = self.send("POST", &format!("/{id}/versions/{}:destroy", n - 1), Some(b"{}"))?;
            // Already destroyed (FAILED_PRECONDITION) or gone: fine. Other
            // failures leave an older version billed, not a wrong value.
            if !(reply.status == 200 || reply.status == 404 || reply.error_status() == "FAILED_PRECONDITION") {
                tracing::warn!(secret = id, error = %self.status_error(&reply, "destroying the previous version"), "an older version was kept");
            }
        }
        Ok(true)
    }

    fn patch_labels(&self, id: &str, labels: Map<String, Value>) -> Result<bool, VaultError> {
        let body = serde_json::to_vec(&json!({"labels": labels})).expect("json");
        let reply = self.send("PATCH", &format!("/{id}?updateMask=labels"), Some(&body))?;
        match reply.status {
            200 => Ok(true),
            404 => Ok(false),
            _ => Err(self.status_error(&reply, &format!("the label update of secret {id}"))),
        }
    }

    /// The stored form of a value: Secret Manager refuses empty payloads.
    fn payload(value: &[u8]) -> &[u8] {
        if value.is_empty() { &[0] } else { value }
    }
}

impl RemoteStore for GcpStore {
    fn describe(&self) -> String {
        self.describe_store()
    }

    fn check_key(&self, space: Space, key: &str) -> Result<(), VaultError> {
        let name = self.name(space, key);
        if name.digest && space == Space::Entry && key.len() * 2 > (MAX_LABELS - 2) * LABEL_LEN {
            return Err(rejected(format!(
                "a vault key of {} bytes is too long for Secret Manager's labels (at most {} bytes)",
                key.len(),
                (MAX_LABELS - 2) * LABEL_LEN / 2
            )));
        }
        Ok(())
    }

    fn get(&self, space: Space, key: &str) -> Result<Option<Zeroizing<Vec<u8>>>, VaultError> {
        let name = self.name(space, key);
        let Some(payload) = self.access(&name.id)? else { return Ok(None) };
        if space == Space::Lock || (!name.digest && payload.as_slice() != [0]) {
            return Ok(Some(payload));
        }
        let Some(info) = self.secret_info(&name.id)? else { return Ok(None) };
        if name.digest {
            let mut stored = String::new();
            for i in 0..MAX_LABELS {
                match info.labels.get(&format!("k{i:02}")).and_then(Value::as_str) {
                    Some(chunk) => stored.push_str(chunk),
                    None => break,
                }
            }
            if stored != hex::encode(key.as_bytes()) {
                return Err(VaultError::Corrupt(format!(
                    "secret {} holds another key than the one whose digest names it",
                    name.id
                )));
            }
        }
        let empty = info.labels.get("empty").and_then(Value::as_str) == Some("true");
        if payload.as_slice() == [0] && empty { Ok(Some(Zeroizing::new(Vec::new()))) } else { Ok(Some(payload)) }
    }

    fn create(&self, space: Space, key: &str, value: &[u8]) -> Result<bool, VaultError> {
        let name = self.name(space, key);
        let labels = self.labels(key, &name, value.is_empty());
        let body = serde_json::to_vec(&json!({"replication": {"automatic": {}}, "labels": labels})).expect("json");
        let reply = self.send("POST", &format!("?secretId={}", name.id), Some(&body))?;
        match reply.status {
            200 => {}
            409 => return Ok(false),
            _ => return Err(self.status_error(&reply, &format!("creating secret {}", name.id))),
        }
        if !self.add_version(&name.id, Self::payload(value))? {
            // Deleted between the two requests (only a writer outside the
            // lock can do that): written and deleted, as if in that order.
            tracing::warn!(secret = name.id, "a secret vanished right after it was created");
        }
        Ok(true)
    }

    fn update(&self, space: Space, key: &str, value: &[u8]) -> Result<bool, VaultError> {
        let name = self.name(space, key);
        // Only the empty value and the one-byte value 00 share a payload;
        // their label is set first (see the module doc).
        if space == Space::Entry
            && (value.is_empty() || value == [0])
            && !self.patch_labels(&name.id, self.labels(key, &name, value.is_empty()))?
        {
            return Ok(false);
        }
        self.add_version(&name.id, Self::payload(value))
    }

    fn remove(&self, space: Space, key: &str) -> Result<(), VaultError> {
        let name = self.name(space, key);
        let reply = self.send("DELETE", &format!("/{}", name.id), None)?;
        match reply.status {
            200 | 404 => Ok(()),
            _ => Err(self.status_error(&reply, &format!("deleting secret {}", name.id))),
        }
    }

    fn rewrite(&self, key: &str) -> Result<bool, VaultError> {
        self.rewrite_name(&self.name(Space::Entry, key).id)
    }

    fn entry_names(&self) -> Result<Vec<String>, VaultError> {
        let start = format!("{}_e", self.config.prefix);
        let mut names = Vec::new();
        let mut token = String::new();
        loop {
            let path = if token.is_empty() { "?pageSize=250".to_owned() } else { format!("?pageSize=250&pageToken={token}") };
            let reply = self.send("GET", &path, None)?;
            if reply.status != 200 {
                return Err(self.status_error(&reply, "listing secrets"));
            }
            let list: SecretList = serde_json::from_slice(&reply.body)
                .map_err(|_| VaultError::Other("Secret Manager answered a list with unexpected JSON".into()))?;
            for s in list.secrets {
                let id = s.name.rsplit('/').next().unwrap_or("");
                if id.strip_prefix(&start).is_some_and(|rest| rest.starts_with('_') || rest.starts_with("-h")) {
                    names.push(id.to_owned());
                }
            }
            if list.next.is_empty() {
                return Ok(names);
            }
            token = list.next;
        }
    }

    /// Adds a version with the same payload (encrypted under the key
    /// material in force now) and destroys the old one.
    fn rewrite_name(&self, id: &str) -> Result<bool, VaultError> {
        let Some(payload) = self.access(id)? else { return Ok(false) };
        self.add_version(id, &payload)
    }
}

/// The GCP Secret Manager backend; clones share the connection pool and
/// the process-local locks.
#[derive(Clone)]
pub struct GcpSmBackend {
    inner: Arc<RemoteBackend<GcpStore>>,
}

impl fmt::Debug for GcpSmBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GcpSmBackend({}, {})", self.describe(), self.inner.store().auth.describe())
    }
}

impl GcpSmBackend {
    /// Resolves the credentials and checks them (one list request).
    pub fn connect(config: GcpSmConfig) -> Result<Self, VaultError> {
        let auth = auth::Auth::resolve(&config.credentials, config.endpoint.is_some())?;
        let agent = http_agent::agent(http_agent::config("secrets-gcpsm-backend", config.request_timeout).build());
        let root = config.endpoint.clone().unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned());
        let store = GcpStore {
            secrets_url: format!("{root}/v1/projects/{}/secrets", config.project),
            agent,
            auth,
            requests: AtomicU64::new(0),
            config: config.clone(),
        };
        store.check()?;
        let lock = LockConfig { ttl: config.lock_ttl, timeout: config.lock_timeout };
        Ok(GcpSmBackend { inner: Arc::new(RemoteBackend::new(store, lock)) })
    }

    /// HTTP requests sent so far (retries included), the connection check too.
    pub fn requests(&self) -> u64 {
        self.inner.store().requests.load(Ordering::Relaxed)
    }

    /// The secret id holding the entry of `key`.
    pub fn secret_id(&self, key: &str) -> String {
        self.inner.store().name(Space::Entry, key).id
    }

    /// The secret id of the lock entry of `lock_scope`.
    pub fn lock_secret_id(&self, lock_scope: &str) -> String {
        self.inner.store().name(Space::Lock, &format!("lock/{lock_scope}")).id
    }

    /// The configuration it was connected with.
    pub fn config(&self) -> &GcpSmConfig {
        &self.inner.store().config
    }
}

impl Backend for GcpSmBackend {
    fn begin(&self, access: Access, lock_scope: &str) -> Result<Box<dyn Transaction>, VaultError> {
        self.inner.begin(access, lock_scope)
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn rotate_all(&self, progress: &mut dyn FnMut(u64, u64)) -> Result<u64, VaultError> {
        self.inner.rotate_all(progress)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_injective_valid_and_reversible() {
        let keys = ["a", "a/b", "a_b", "a-b", "a-2db", "", "/", "t/6162/i/77/k/4b/v/3", "ü", "a b", "A"];
        let mut seen = std::collections::HashSet::new();
        for k in keys {
            let e = encode(k);
            assert!(seen.insert(e.clone()), "collision for {k:?}");
            assert_eq!(decode(&e).as_deref(), Some(k));
            assert!(e.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'), "{e}");
            assert!(!e.contains("-h"), "{e}");
        }
    }
}
