//! The OpenBao / HashiCorp Vault backend: entries live in a KV version 2
//! secrets engine, reached over its HTTP API.
//!
//! # Store URL
//!
//! `openbao+http://HOST:PORT/MOUNT?token_env=BAO_TOKEN&prefix=cp-secrets`
//! (also `openbao+https://`, `vault+http://`, `vault+https://`).
//!
//! | part | meaning |
//! |---|---|
//! | scheme | `+http` or `+https` (rustls, Mozilla's roots, or `ca_file=`) |
//! | `MOUNT` | the path of a KV **v2** mount, one or more segments (`secret`, `teams/a/kv`) |
//! | `token_env=NAME` | the token is in environment variable `NAME` |
//! | `token_file=PATH` | the token is the content of file `PATH` (trimmed) |
//! | (neither) | the token is in `BAO_TOKEN`, else `VAULT_TOKEN` |
//! | `prefix=PATH` | where this store's entries live inside the mount (default `cp-secrets`) |
//! | `namespace=NS` | sent as `X-Vault-Namespace` |
//! | `ca_file=PATH` | PEM roots to trust instead of Mozilla's (https only) |
//! | `lock_ttl=SECS`, `lock_timeout=SECS`, `timeout=SECS` | see *Transactions*; per-request timeout |
//!
//! A token inside the URL is refused. Connecting checks the token
//! (`auth/token/lookup-self`) and that the mount exists and is KV v2
//! (`sys/internal/ui/mounts/<mount>`), and fails with
//! [`VaultError::Rejected`] (bad token, policy, mount) or
//! [`VaultError::Unavailable`] (server not reachable, sealed). The token
//! never appears in a message, in [`Backend::describe`] or in `Debug`.
//!
//! The token's policy needs `create, read, update, delete, list` on
//! `MOUNT/data/PREFIX/*` and `MOUNT/metadata/PREFIX/*`, and the default
//! policy's `auth/token/lookup-self`.
//!
//! # Layout in KV
//!
//! - A vault key (`t/<hex>/i/<hex>/k/<hex>/v/3`) becomes the KV path
//!   `PREFIX/e/<key>`: each `/`-separated segment made only of ASCII
//!   letters, digits and `-` is kept as it is; any other segment (empty,
//!   `.`, `..`, other characters) becomes `_` followed by its bytes in hex.
//!   Kept segments never start with `_`, so distinct keys always map to
//!   distinct paths, and every path is valid. The keys the secrets logic
//!   builds are hex and ASCII words, so in practice they appear verbatim.
//! - The value is stored as KV data `{"v": "<base64>"}`.
//! - Lock entries live apart, at `PREFIX/lock/<lock scope, encoded the same way>`.
//! - Each entry's metadata is set to `max_versions = 1` when the entry is
//!   created or rotated, so KV keeps no older ciphertext of it. Deleting an
//!   entry deletes its metadata, which removes every version.
//!
//! # Transactions: weaker than SQL
//!
//! OpenBao has no multi-key transactions, so:
//!
//! - A **write** transaction first takes a lock for its lock scope: a mutex
//!   in this process, then a lock entry in KV created with check-and-set
//!   `cas = 0` (it succeeds only if the entry is absent), holding a random
//!   owner id and an expiry time (`lock_ttl`, default 30 s). A lock past its
//!   expiry is taken over with `cas = <its version>`, so exactly one waiter
//!   wins. A writer that cannot get the lock within `lock_timeout` (default
//!   60 s) fails with [`VaultError::Unavailable`] and writes nothing.
//!   Serialisation between processes relies entirely on that lock entry:
//!   anything that writes under the prefix without it (a person with the
//!   `bao` CLI, another program) is not serialised.
//! - Stores, deletes and rotations are **buffered** in memory; reads inside
//!   the transaction see the buffer first, then KV. Dropping the transaction
//!   discards the buffer and releases the lock: nothing was written.
//! - **Commit** first renews the lock with check-and-set on its version,
//!   which fails (writing nothing) if another writer took it over after it
//!   expired; then it applies the writes one by one, **in the order they
//!   were issued**, then releases the lock (deletes the lock entry's
//!   metadata, after checking that it is still ours).
//! - Commit is therefore **not atomic**: a crash, a network failure or an
//!   error half-way through leaves the writes before it applied and those
//!   after it not. The secrets logic issues its writes so that no prefix of
//!   them leaves a record pointing at a missing value (value, then key
//!   record, then index; deletes of pruned versions last): every version a
//!   reader finds is readable, but after a half-applied set `get` may
//!   already show the new version while `list`/`inject` still show the old
//!   one, until the next write to that key.
//! - Read transactions take no lock, refuse writes ([`VaultError::Rejected`])
//!   and may see a commit in progress (again, the write order keeps what
//!   they read consistent).
//! - A lock whose holder crashed blocks its scope until it expires. Expiry
//!   compares wall clocks of different hosts: keep `lock_ttl` well above
//!   their skew and above the longest call. A holder slower than `lock_ttl`
//!   can lose its lock; its commit then fails cleanly, but a commit that
//!   itself outlasts `lock_ttl` is not protected.
//!
//! # Rotation
//!
//! OpenBao encrypts everything it stores with its barrier keyring; this
//! backend adds no encryption of its own (values are stored as the secrets
//! logic hands them, base64-encoded, and OpenBao encrypts them at rest).
//! [`Vault::rotate`] rewrites the entry: a new KV version with the same
//! plaintext, which OpenBao encrypts under the barrier's **current** key
//! term; with `max_versions = 1` KV deletes the older version (copies in
//! the storage layer's own history, such as raft snapshots or backups, are
//! out of this backend's reach).
//! So the operator's procedure to retire old key material is: rotate the
//! barrier key (`bao operator rotate`, i.e. `sys/rotate`, which needs
//! `sudo` and affects the whole OpenBao, so this backend never calls it),
//! then rotate entries, per key or all at once with
//! [`Backend::rotate_all`], which lists every entry under the prefix and
//! rewrites each with check-and-set on its current version (an entry
//! changed or deleted meanwhile is left alone: it was written under the
//! current term anyway, or is gone). OpenBao itself keeps old key terms in
//! its keyring to read old data; that is out of this backend's reach.
//!
//! # Other limits
//!
//! - Values cross the network base64-encoded in JSON; this module zeroizes
//!   its own buffers, but not those inside the HTTP and TLS libraries.
//! - Each operation is one or more HTTP requests: much slower than SQL. A
//!   write call costs about ten (lock, reads, renew, writes, release).
//! - Plain stores are written without check-and-set, so a mount configured
//!   with `cas_required = true` refuses them: use a mount without it.
//! - A writer that keeps re-taking a lock in a loop can delay another
//!   process's writer (no queue, only polling with backoff) up to
//!   `lock_timeout`.
//! - Some OpenBao storage backends (the `file` one) cannot hold a path
//!   segment longer than 255 bytes; the hex of a tenant name longer than 127
//!   bytes would be one. Integrated storage (raft) and memory have no limit.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use parking_lot::{Mutex, RawMutex, lock_api::ArcMutexGuard};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use crate::vault::{Access, Backend, Transaction, Vault, VaultError};

/// Where entries live inside the mount unless the URL says `prefix=`.
pub const DEFAULT_PREFIX: &str = "cp-secrets";
/// How long a lock entry is valid before others may take it over.
pub const DEFAULT_LOCK_TTL: Duration = Duration::from_secs(30);
/// How long a writer waits for a lock.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(60);
/// The timeout of one HTTP request.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The environment variables tried, in order, when the URL names no token.
pub const DEFAULT_TOKEN_ENVS: [&str; 2] = ["BAO_TOKEN", "VAULT_TOKEN"];

/// Largest response body read (a 64 KiB value is ~88 KB of base64).
const MAX_BODY: u64 = 16 << 20;
const BACKOFF_MIN: Duration = Duration::from_millis(2);
const BACKOFF_MAX: Duration = Duration::from_millis(50);

#[derive(Clone)]
enum TokenSource {
    Given(SecretString),
    Env(String),
    File(PathBuf),
    Default,
}

/// Where and how to reach OpenBao. Built from a store URL
/// ([`OpenBaoConfig::from_url`]) or in code; the token is resolved only by
/// [`OpenBaoBackend::connect`]. `Debug` never shows the token.
#[derive(Clone)]
pub struct OpenBaoConfig {
    /// `openbao+http` etc., as given (for `describe`).
    scheme: String,
    /// `http` or `https`.
    transport: &'static str,
    /// `host:port`.
    authority: String,
    mount: String,
    prefix: String,
    token: TokenSource,
    namespace: Option<String>,
    ca_file: Option<PathBuf>,
    lock_ttl: Duration,
    lock_timeout: Duration,
    request_timeout: Duration,
}

impl fmt::Debug for OpenBaoConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let token = match &self.token {
            TokenSource::Given(_) => "given".to_owned(),
            TokenSource::Env(name) => format!("env {name}"),
            TokenSource::File(path) => format!("file {}", path.display()),
            TokenSource::Default => format!("env {}", DEFAULT_TOKEN_ENVS.join(" or ")),
        };
        f.debug_struct("OpenBaoConfig")
            .field("address", &self.address())
            .field("mount", &self.mount)
            .field("prefix", &self.prefix)
            .field("token", &token)
            .field("namespace", &self.namespace)
            .field("ca_file", &self.ca_file)
            .field("lock_ttl", &self.lock_ttl)
            .field("lock_timeout", &self.lock_timeout)
            .finish()
    }
}

fn rejected(msg: impl Into<String>) -> VaultError {
    VaultError::Rejected(msg.into())
}

fn percent_decode(s: &str) -> Result<String, VaultError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or_else(|| rejected("bad %-escape in the store URL"))?;
                let hex = std::str::from_utf8(hex).map_err(|_| rejected("bad %-escape in the store URL"))?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| rejected("bad %-escape in the store URL"))?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| rejected("the store URL is not UTF-8 after %-decoding"))
}

/// A mount or prefix: `/`-separated segments of letters, digits, `.`, `_`,
/// `-`, none empty, `.` or `..`. Returns it without outer slashes.
fn clean_path(what: &str, path: &str) -> Result<String, VaultError> {
    let trimmed = path.trim_matches('/');
    let ok = !trimmed.is_empty()
        && trimmed.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        });
    if ok {
        Ok(trimmed.to_owned())
    } else {
        Err(rejected(format!(
            "the OpenBao {what} {path:?} must be /-separated segments of letters, digits, '.', '_' and '-' (no empty, '.' or '..' segment)"
        )))
    }
}

fn parse_seconds(name: &str, value: &str) -> Result<Duration, VaultError> {
    match value.parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 && s < 1e9 => Ok(Duration::from_secs_f64(s)),
        _ => Err(rejected(format!("{name}= must be a positive number of seconds"))),
    }
}

impl OpenBaoConfig {
    /// A configuration for `address` (`http://host:port` or
    /// `https://host:port`) and a KV v2 `mount`, with the defaults: token
    /// from `BAO_TOKEN` / `VAULT_TOKEN`, prefix [`DEFAULT_PREFIX`].
    pub fn new(address: &str, mount: &str) -> Result<Self, VaultError> {
        let (transport, authority) = match address.split_once("://") {
            Some(("http", rest)) => ("http", rest),
            Some(("https", rest)) => ("https", rest),
            _ => return Err(rejected("the OpenBao address must start with http:// or https://")),
        };
        Self::build(&format!("openbao+{transport}"), transport, authority.trim_end_matches('/'), mount)
    }

    fn build(scheme: &str, transport: &'static str, authority: &str, mount: &str) -> Result<Self, VaultError> {
        if authority.is_empty() || authority.contains(['/', '?', '#', ' ']) {
            return Err(rejected("the OpenBao store URL needs a host (and port): openbao+http://HOST:PORT/MOUNT"));
        }
        if authority.contains('@') {
            return Err(rejected(
                "credentials in the OpenBao store URL are not accepted: use token_env=NAME or token_file=PATH",
            ));
        }
        Ok(OpenBaoConfig {
            scheme: scheme.to_owned(),
            transport,
            authority: authority.to_owned(),
            mount: clean_path("mount", mount)?,
            prefix: DEFAULT_PREFIX.to_owned(),
            token: TokenSource::Default,
            namespace: None,
            ca_file: None,
            lock_ttl: DEFAULT_LOCK_TTL,
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        })
    }

    /// Parses `openbao+http(s)://HOST:PORT/MOUNT?params` (or `vault+...`);
    /// see the module documentation for the parameters. Reads no
    /// environment variable and no file yet.
    pub fn from_url(url: &str) -> Result<Self, VaultError> {
        let (scheme, rest) = url.split_once("://").ok_or_else(|| {
            rejected("an OpenBao store URL looks like openbao+http://HOST:PORT/MOUNT?token_env=BAO_TOKEN")
        })?;
        let transport = match scheme {
            "openbao+http" | "vault+http" => "http",
            "openbao+https" | "vault+https" => "https",
            _ => {
                return Err(rejected(format!(
                    "unknown OpenBao URL scheme {scheme:?}: use openbao+http or openbao+https"
                )));
            }
        };
        if rest.contains('#') {
            return Err(rejected("the OpenBao store URL must not have a #fragment"));
        }
        let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, mount) = location.split_once('/').unwrap_or((location, ""));
        if mount.trim_matches('/').is_empty() {
            return Err(rejected(
                "the OpenBao store URL needs the path of a KV v2 mount: openbao+http://HOST:PORT/MOUNT (the dev server's is `secret`)",
            ));
        }
        let mut config = Self::build(scheme, transport, authority, mount)?;
        let (mut token_env, mut token_file) = (None, None);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode(value)?;
            match name {
                "token_env" if !value.is_empty() => token_env = Some(value),
                "token_file" if !value.is_empty() => token_file = Some(PathBuf::from(value)),
                "prefix" => config.prefix = clean_path("prefix", &value)?,
                "namespace" if !value.is_empty() => config.namespace = Some(value),
                "ca_file" if !value.is_empty() => config.ca_file = Some(PathBuf::from(value)),
                "lock_ttl" => config.lock_ttl = parse_seconds(name, &value)?,
                "lock_timeout" => config.lock_timeout = parse_seconds(name, &value)?,
                "timeout" => config.request_timeout = parse_seconds(name, &value)?,
                "token" | "token_id" | "password" => {
                    return Err(rejected(
                        "a token in the OpenBao store URL is not accepted: use token_env=NAME or token_file=PATH",
                    ));
                }
                "token_env" | "token_file" | "namespace" | "ca_file" => {
                    return Err(rejected(format!("{name}= needs a value in the OpenBao store URL")));
                }
                _ => {
                    return Err(rejected(format!(
                        "unknown OpenBao store URL parameter {name:?}: use token_env, token_file, prefix, namespace, ca_file, lock_ttl, lock_timeout or timeout"
                    )));
                }
            }
        }
        config.token = match (token_env, token_file) {
            (Some(_), Some(_)) => return Err(rejected("give token_env= or token_file=, not both")),
            (Some(name), None) => TokenSource::Env(name),
            (None, Some(path)) => TokenSource::File(path),
            (None, None) => TokenSource::Default,
        };
        if config.ca_file.is_some() && transport != "https" {
            return Err(rejected("ca_file= only applies to openbao+https"));
        }
        Ok(config)
    }

    /// Uses this token instead of reading one from the environment or a file.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = TokenSource::Given(SecretString::from(token.into()));
        self
    }

    /// Puts the entries under `prefix` inside the mount.
    pub fn with_prefix(mut self, prefix: &str) -> Result<Self, VaultError> {
        self.prefix = clean_path("prefix", prefix)?;
        Ok(self)
    }

    pub fn with_lock_ttl(mut self, ttl: Duration) -> Self {
        self.lock_ttl = ttl;
        self
    }

    pub fn with_lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout;
        self
    }

    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    pub fn with_namespace(mut self, namespace: &str) -> Self {
        self.namespace = Some(namespace.to_owned()).filter(|n| !n.is_empty());
        self
    }

    pub fn with_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    /// `http://host:port` or `https://host:port`.
    pub fn address(&self) -> String {
        format!("{}://{}", self.transport, self.authority)
    }

    pub fn mount(&self) -> &str {
        &self.mount
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn resolve_token(&self) -> Result<SecretString, VaultError> {
        let from_env = |name: &str| std::env::var(name).ok().map(|t| t.trim().to_owned()).filter(|t| !t.is_empty());
        let token = match &self.token {
            TokenSource::Given(t) => return Ok(t.clone()),
            TokenSource::Env(name) => from_env(name).ok_or_else(|| {
                rejected(format!("no OpenBao token: environment variable {name} (token_env=) is unset or empty"))
            })?,
            TokenSource::File(path) => {
                let mut text = std::fs::read_to_string(path).map_err(|e| {
                    rejected(format!(
                        "cannot read the OpenBao token file {} (token_file=): {}",
                        path.display(),
                        e.kind()
                    ))
                })?;
                let token = text.trim().to_owned();
                text.zeroize();
                if token.is_empty() {
                    return Err(rejected(format!("the OpenBao token file {} is empty", path.display())));
                }
                token
            }
            TokenSource::Default => DEFAULT_TOKEN_ENVS.iter().find_map(|n| from_env(n)).ok_or_else(|| {
                rejected(format!(
                    "no OpenBao token: set {}, or add token_env=NAME or token_file=PATH to the store URL",
                    DEFAULT_TOKEN_ENVS.join(" or ")
                ))
            })?,
        };
        if token.bytes().any(|b| b.is_ascii_control()) {
            return Err(rejected("the OpenBao token contains control characters"));
        }
        Ok(SecretString::from(token))
    }
}

// ---------------------------------------------------------------------------
// Key mapping

fn plain_segment(seg: &str) -> bool {
    !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// A vault key (or lock scope) as a relative KV path: plain segments kept,
/// any other segment as `_<hex>`. Injective, and always a valid path.
pub fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 8);
    for (i, seg) in key.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        if plain_segment(seg) {
            out.push_str(seg);
        } else {
            out.push('_');
            out.push_str(&hex::encode(seg));
        }
    }
    out
}

/// The inverse of [`encode_key`].
#[cfg(test)]
fn decode_key(path: &str) -> Option<String> {
    let mut out = String::with_capacity(path.len());
    for (i, seg) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        match seg.strip_prefix('_') {
            Some(h) => out.push_str(std::str::from_utf8(&hex::decode(h).ok()?).ok()?),
            None if plain_segment(seg) => out.push_str(seg),
            None => return None,
        }
    }
    Some(out)
}

// ---------------------------------------------------------------------------
// HTTP

struct Reply {
    status: u16,
    body: Zeroizing<Vec<u8>>,
}

#[derive(Deserialize)]
struct Errors {
    #[serde(default)]
    errors: Vec<String>,
}

/// The server's error messages, shortened; never the request.
fn server_errors(body: &[u8]) -> String {
    let errors = serde_json::from_slice::<Errors>(body).map(|e| e.errors).unwrap_or_default();
    let mut text = errors.join("; ");
    if text.len() > 300 {
        let mut cut = 300;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}

#[derive(Serialize)]
struct Cas {
    cas: u64,
}

#[derive(Serialize)]
struct WriteBody<'a, D> {
    #[serde(skip_serializing_if = "Option::is_none")]
    options: Option<Cas>,
    data: &'a D,
}

#[derive(Serialize, Deserialize)]
struct ValueData {
    v: String,
}

#[derive(Serialize, Deserialize, Default)]
struct LockData {
    #[serde(default)]
    owner: String,
    #[serde(default)]
    expires_ms: u64,
    #[serde(default)]
    pid: u32,
}

#[derive(Deserialize)]
struct Envelope<T> {
    data: Option<T>,
}

#[derive(Deserialize)]
struct KvVersion {
    version: u64,
}

#[derive(Deserialize)]
struct KvRead<D> {
    data: Option<D>,
    metadata: Option<KvVersion>,
}

#[derive(Deserialize)]
struct KvMetadata {
    current_version: u64,
    #[serde(default)]
    versions: HashMap<String, KvVersionState>,
}

#[derive(Deserialize)]
struct KvVersionState {
    #[serde(default)]
    deletion_time: String,
    #[serde(default)]
    destroyed: bool,
}

#[derive(Deserialize)]
struct KeyList {
    keys: Vec<String>,
}

#[derive(Deserialize)]
struct MountInfo {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    path: String,
    options: Option<HashMap<String, String>>,
}

struct Client {
    agent: ureq::Agent,
    /// `http://host:port/v1/`.
    api: String,
    address: String,
    token: SecretString,
    namespace: Option<String>,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl Client {
    fn new(config: &OpenBaoConfig, token: SecretString) -> Result<Self, VaultError> {
        let mut builder = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(config.request_timeout))
            .max_redirects(0)
            .user_agent("secrets-openbao-backend");
        if let Some(path) = &config.ca_file {
            builder = builder.tls_config(tls_with_roots(path)?);
        }
        Ok(Client {
            agent: builder.build().new_agent(),
            api: format!("{}/v1/", config.address()),
            address: config.address(),
            token,
            namespace: config.namespace.clone(),
        })
    }

    fn headers<B>(&self, request: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        let request = request.header("X-Vault-Token", self.token.expose_secret()).header("X-Vault-Request", "true");
        match &self.namespace {
            Some(ns) => request.header("X-Vault-Namespace", ns),
            None => request,
        }
    }

    /// One request; `path` is relative to `/v1/`. Transport failures are
    /// `Unavailable`; the status is the caller's to judge.
    fn send(&self, method: &str, path: &str, body: Option<&[u8]>) -> Result<Reply, VaultError> {
        let url = format!("{}{path}", self.api);
        let result = match method {
            "GET" => self.headers(self.agent.get(&url)).call(),
            "DELETE" => self.headers(self.agent.delete(&url)).call(),
            _ => self.headers(self.agent.post(&url)).content_type("application/json").send(body.unwrap_or(b"{}")),
        };
        let mut response = result.map_err(|e| self.transport_error(e))?;
        let status = response.status().as_u16();
        let body =
            response.body_mut().with_config().limit(MAX_BODY).read_to_vec().map_err(|e| self.transport_error(e))?;
        Ok(Reply { status, body: Zeroizing::new(body) })
    }

    fn transport_error(&self, e: ureq::Error) -> VaultError {
        match e {
            ureq::Error::Timeout(t) => {
                VaultError::Unavailable(format!("OpenBao at {} did not answer in time ({t})", self.address))
            }
            other => VaultError::Unavailable(format!("cannot talk to OpenBao at {}: {other}", self.address)),
        }
    }

    /// The error for an unexpected status of `what`.
    fn status_error(&self, reply: &Reply, what: &str) -> VaultError {
        let mut detail = server_errors(&reply.body);
        if detail.is_empty() {
            // Not OpenBao's JSON (e.g. "Client sent an HTTP request to an
            // HTTPS server"): its first line, short.
            let text = String::from_utf8_lossy(&reply.body);
            let line = text.lines().next().unwrap_or("").trim();
            if !line.starts_with(['{', '[']) {
                detail = line.chars().take(120).collect();
            }
        }
        let detail = if detail.is_empty() { String::new() } else { format!(": {detail}") };
        match reply.status {
            403 => VaultError::Rejected(format!(
                "OpenBao at {} refused {what}: permission denied (is the token valid and unexpired, and does its policy allow this path?){detail}",
                self.address
            )),
            429 | 412 | 500..=599 => VaultError::Unavailable(format!(
                "OpenBao at {} could not serve {what} (HTTP {}){detail}",
                self.address, reply.status
            )),
            status => {
                VaultError::Rejected(format!("OpenBao at {} rejected {what} (HTTP {status}){detail}", self.address))
            }
        }
    }
}

fn tls_with_roots(path: &Path) -> Result<ureq::tls::TlsConfig, VaultError> {
    let pem = std::fs::read(path)
        .map_err(|e| rejected(format!("cannot read the CA file {} (ca_file=): {}", path.display(), e.kind())))?;
    let mut roots = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(ureq::tls::PemItem::Certificate(cert)) => roots.push(cert),
            Ok(_) => {}
            Err(e) => return Err(rejected(format!("the CA file {} is not valid PEM: {e}", path.display()))),
        }
    }
    if roots.is_empty() {
        return Err(rejected(format!("the CA file {} holds no certificate", path.display())));
    }
    Ok(ureq::tls::TlsConfig::builder().root_certs(ureq::tls::RootCerts::new_with_certs(&roots)).build())
}

// ---------------------------------------------------------------------------
// The backend

struct Inner {
    client: Client,
    config: OpenBaoConfig,
    /// Process-local writer mutexes, one per lock scope in use.
    local_locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

/// The OpenBao / Vault KV v2 backend; clones share the connection pool and
/// the process-local locks.
#[derive(Clone)]
pub struct OpenBaoBackend {
    inner: Arc<Inner>,
}

impl fmt::Debug for OpenBaoBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OpenBaoBackend({})", self.describe())
    }
}

impl OpenBaoBackend {
    /// Opens the backend a store URL names (token from the environment or
    /// a file, as the URL says) and checks the token and mount.
    pub fn from_url(url: &str) -> Result<Self, VaultError> {
        Self::connect(OpenBaoConfig::from_url(url)?)
    }

    /// Connects with `config`: resolves the token, then checks it
    /// (`lookup-self`) and that the mount is a KV v2 mount.
    pub fn connect(config: OpenBaoConfig) -> Result<Self, VaultError> {
        let token = config.resolve_token()?;
        let client = Client::new(&config, token)?;
        let inner = Inner { client, config, local_locks: Mutex::new(HashMap::new()) };
        inner.check()?;
        Ok(OpenBaoBackend { inner: Arc::new(inner) })
    }

    pub fn config(&self) -> &OpenBaoConfig {
        &self.inner.config
    }

    /// The KV path (relative to the mount, as in `MOUNT/data/<path>`) where
    /// the entry of `key` lives.
    pub fn entry_path(&self, key: &str) -> String {
        self.inner.entry_path(key)
    }

    /// The KV path of the lock entry of `lock_scope`.
    pub fn lock_path(&self, lock_scope: &str) -> String {
        self.inner.lock_path(lock_scope)
    }
}

impl Inner {
    fn entry_path(&self, key: &str) -> String {
        format!("{}/e/{}", self.config.prefix, encode_key(key))
    }

    fn lock_path(&self, scope: &str) -> String {
        format!("{}/lock/{}", self.config.prefix, encode_key(scope))
    }

    fn describe(&self) -> String {
        format!("{}://{}/{}", self.config.scheme, self.config.authority, self.config.mount)
    }

    fn check(&self) -> Result<(), VaultError> {
        let c = &self.client;
        let reply = c.send("GET", "auth/token/lookup-self", None)?;
        match reply.status {
            200 => {}
            403 => {
                return Err(VaultError::Rejected(format!(
                    "OpenBao at {} refused the token: it is invalid, expired or revoked (or its policies do not allow auth/token/lookup-self)",
                    c.address
                )));
            }
            _ => return Err(c.status_error(&reply, "the token check (auth/token/lookup-self)")),
        }
        let mount = &self.config.mount;
        let reply = c.send("GET", &format!("sys/internal/ui/mounts/{mount}"), None)?;
        match reply.status {
            200 => {}
            403 | 404 | 400 => {
                return Err(VaultError::Rejected(format!(
                    "OpenBao at {} has no mount {mount:?} that this token may use: create a KV v2 mount there (`bao secrets enable -path={mount} kv-v2`) or grant the token's policy access to it",
                    c.address
                )));
            }
            _ => return Err(c.status_error(&reply, &format!("the mount check of {mount:?}"))),
        }
        let info =
            serde_json::from_slice::<Envelope<MountInfo>>(&reply.body).ok().and_then(|e| e.data).ok_or_else(|| {
                VaultError::Other(format!("OpenBao at {} answered the mount check with unexpected JSON", c.address))
            })?;
        let found = info.path.trim_end_matches('/');
        if found != mount {
            let rest = mount.strip_prefix(found).unwrap_or("").trim_start_matches('/');
            return Err(VaultError::Rejected(format!(
                "{mount:?} is not a mount but a path inside the mount {found:?}: use .../{found}?prefix={rest}"
            )));
        }
        let version = info.options.as_ref().and_then(|o| o.get("version")).map(String::as_str).unwrap_or("1");
        if !(info.kind == "kv" || info.kind == "generic") || version != "2" {
            return Err(VaultError::Rejected(format!(
                "the mount {mount:?} is a {} (version {version}) mount; this backend needs a KV version 2 mount",
                info.kind
            )));
        }
        Ok(())
    }

    fn data_url(&self, path: &str) -> String {
        format!("{}/data/{path}", self.config.mount)
    }

    fn metadata_url(&self, path: &str) -> String {
        format!("{}/metadata/{path}", self.config.mount)
    }

    /// The latest version of a KV entry and its number; `None` if there is
    /// none (never written, deleted, or its latest version destroyed).
    fn kv_read<D: serde::de::DeserializeOwned>(&self, path: &str) -> Result<Option<(D, u64)>, VaultError> {
        let url = self.data_url(path);
        let reply = self.client.send("GET", &url, None)?;
        match reply.status {
            200 => {}
            // A missing entry is a 404 with no error text; a missing mount
            // or route has one.
            404 if server_errors(&reply.body).is_empty() => return Ok(None),
            _ => return Err(self.client.status_error(&reply, &format!("the read of {url}"))),
        }
        let read: Envelope<KvRead<D>> = serde_json::from_slice(&reply.body)
            .map_err(|_| VaultError::Corrupt(format!("{url} does not hold an entry of this backend")))?;
        match read.data {
            Some(KvRead { data: Some(d), metadata: Some(m) }) => Ok(Some((d, m.version))),
            _ => Ok(None),
        }
    }

    /// Writes a KV entry; with `cas`, only if its current version is `cas`
    /// (0: only if absent). Returns the new version, or `None` when the
    /// check-and-set failed.
    fn kv_write<D: Serialize>(&self, path: &str, data: &D, cas: Option<u64>) -> Result<Option<u64>, VaultError> {
        let url = self.data_url(path);
        let body = Zeroizing::new(
            serde_json::to_vec(&WriteBody { options: cas.map(|cas| Cas { cas }), data })
                .map_err(|e| VaultError::Other(format!("cannot encode a KV write: {e}")))?,
        );
        let reply = self.client.send("POST", &url, Some(&body))?;
        match reply.status {
            200 | 204 => {}
            400 if cas.is_some() && server_errors(&reply.body).contains("check-and-set") => return Ok(None),
            _ => return Err(self.client.status_error(&reply, &format!("the write of {url}"))),
        }
        let written: Envelope<KvVersion> = serde_json::from_slice(&reply.body)
            .map_err(|_| VaultError::Other(format!("OpenBao answered the write of {url} with unexpected JSON")))?;
        written
            .data
            .map(|v| Some(v.version))
            .ok_or_else(|| VaultError::Other(format!("OpenBao answered the write of {url} without a version")))
    }

    /// Deletes a KV entry with all its versions; a missing entry is fine.
    fn kv_delete_all(&self, path: &str) -> Result<(), VaultError> {
        let url = self.metadata_url(path);
        let reply = self.client.send("DELETE", &url, None)?;
        match reply.status {
            200 | 204 => Ok(()),
            404 if server_errors(&reply.body).is_empty() => Ok(()),
            _ => Err(self.client.status_error(&reply, &format!("the delete of {url}"))),
        }
    }

    /// Makes KV keep only the newest version of the entry (older ones are
    /// removed at its next write).
    fn kv_keep_one_version(&self, path: &str) -> Result<(), VaultError> {
        let url = self.metadata_url(path);
        let reply = self.client.send("POST", &url, Some(br#"{"max_versions":1}"#))?;
        match reply.status {
            200 | 204 => Ok(()),
            _ => Err(self.client.status_error(&reply, &format!("the metadata update of {url}"))),
        }
    }

    /// The current version of an entry whose latest version was deleted or
    /// destroyed (by hand: this backend deletes whole entries); `None` if
    /// the entry has no metadata or its current version is live.
    fn kv_dead_version(&self, path: &str) -> Result<Option<u64>, VaultError> {
        let url = self.metadata_url(path);
        let reply = self.client.send("GET", &url, None)?;
        match reply.status {
            200 => serde_json::from_slice::<Envelope<KvMetadata>>(&reply.body)
                .ok()
                .and_then(|e| e.data)
                .map(|m| {
                    let dead = m
                        .versions
                        .get(&m.current_version.to_string())
                        .is_some_and(|v| v.destroyed || !v.deletion_time.is_empty());
                    dead.then_some(m.current_version)
                })
                .ok_or_else(|| {
                    VaultError::Other(format!("OpenBao answered the metadata read of {url} with unexpected JSON"))
                }),
            404 if server_errors(&reply.body).is_empty() => Ok(None),
            _ => Err(self.client.status_error(&reply, &format!("the metadata read of {url}"))),
        }
    }

    /// The names directly under a KV folder (folders end with `/`).
    fn kv_list(&self, path: &str) -> Result<Vec<String>, VaultError> {
        let url = format!("{}?list=true", self.metadata_url(path));
        let reply = self.client.send("GET", &url, None)?;
        match reply.status {
            200 => serde_json::from_slice::<Envelope<KeyList>>(&reply.body)
                .ok()
                .and_then(|e| e.data)
                .map(|l| l.keys)
                .ok_or_else(|| VaultError::Other(format!("OpenBao answered the list of {url} with unexpected JSON"))),
            404 if server_errors(&reply.body).is_empty() => Ok(vec![]),
            _ => Err(self.client.status_error(&reply, &format!("the list of {url}"))),
        }
    }

    /// Every entry path under `folder` (which ends with `/`), depth first.
    fn kv_list_all(&self, folder: &str, out: &mut Vec<String>) -> Result<(), VaultError> {
        for name in self.kv_list(folder)? {
            let path = format!("{folder}{name}");
            if name.ends_with('/') {
                self.kv_list_all(&path, out)?;
            } else {
                out.push(path);
            }
        }
        Ok(())
    }

    fn retrieve(&self, key: &str) -> Result<Option<Vec<u8>>, VaultError> {
        let path = self.entry_path(key);
        match self.kv_read::<ValueData>(&path)? {
            None => Ok(None),
            Some((mut data, _)) => {
                let value = BASE64.decode(data.v.as_bytes());
                data.v.zeroize();
                value.map(Some).map_err(|_| VaultError::Corrupt(format!("the value at {path} is not base64")))
            }
        }
    }

    fn store(&self, key: &str, value: &[u8]) -> Result<(), VaultError> {
        let path = self.entry_path(key);
        let data = ValueData { v: BASE64.encode(value) };
        let written = self.kv_write(&path, &data, None);
        let _ = Zeroizing::new(data.v);
        if written? == Some(1) {
            // A new entry: keep no older versions of it from now on.
            self.kv_keep_one_version(&path)?;
        }
        Ok(())
    }

    /// Rewrites an entry with the same plaintext: a new version encrypted
    /// under OpenBao's current barrier key term; the older version is
    /// removed (`max_versions = 1`). `false` if the entry does not exist.
    fn rewrite(&self, path: &str) -> Result<bool, VaultError> {
        let Some((data, version)) = self.kv_read::<ValueData>(path)? else { return Ok(false) };
        let data = Zeroizing::new(data.v);
        self.kv_keep_one_version(path)?;
        let value = ValueData { v: data.to_string() };
        let written = self.kv_write(path, &value, Some(version));
        let _ = Zeroizing::new(value.v);
        // A failed check-and-set means someone wrote or deleted the entry
        // meanwhile: it is under the current term already, or gone.
        Ok(written?.is_some())
    }

    fn local_lock(&self, scope: &str) -> Arc<Mutex<()>> {
        self.local_locks.lock().entry(scope.to_owned()).or_default().clone()
    }

    fn forget_local_lock(&self, scope: &str) {
        let mut locks = self.local_locks.lock();
        if locks.get(scope).is_some_and(|m| Arc::strong_count(m) == 1) {
            locks.remove(scope);
        }
    }
}

impl Backend for OpenBaoBackend {
    fn begin(&self, access: Access, lock_scope: &str) -> Result<Box<dyn Transaction>, VaultError> {
        let lock = match access {
            Access::Write => Some(HeldLock::acquire(&self.inner, lock_scope)?),
            Access::Read => None,
        };
        Ok(Box::new(OpenBaoTxn { inner: self.inner.clone(), ops: Vec::new(), lock }))
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }

    /// Rewrites every entry under the prefix so it is encrypted under
    /// OpenBao's current barrier key term (run `bao operator rotate` first).
    fn rotate_all(&self, progress: &mut dyn FnMut(u64, u64)) -> Result<u64, VaultError> {
        let mut paths = Vec::new();
        self.inner.kv_list_all(&format!("{}/e/", self.inner.config.prefix), &mut paths)?;
        let total = paths.len() as u64;
        let mut rotated = 0;
        progress(0, total);
        for (i, path) in paths.iter().enumerate() {
            if self.inner.rewrite(path)? {
                rotated += 1;
            }
            progress(i as u64 + 1, total);
        }
        Ok(rotated)
    }
}

// ---------------------------------------------------------------------------
// Locks

/// A writer's hold on a lock scope: the process-local mutex and the lock
/// entry in KV. Dropping it releases both.
struct HeldLock {
    inner: Arc<Inner>,
    scope: String,
    path: String,
    owner: String,
    version: u64,
    local: Option<ArcMutexGuard<RawMutex, ()>>,
}

impl HeldLock {
    fn lock_data(&self) -> LockData {
        LockData {
            owner: self.owner.clone(),
            expires_ms: now_ms() + self.inner.config.lock_ttl.as_millis() as u64,
            pid: std::process::id(),
        }
    }

    fn timeout(inner: &Inner, scope: &str, path: &str) -> VaultError {
        VaultError::Unavailable(format!(
            "timed out after {:?} waiting for the write lock of {scope:?} (lock entry {}/data/{path}); another writer holds it, and a crashed holder's lock expires {:?} after it was taken",
            inner.config.lock_timeout, inner.config.mount, inner.config.lock_ttl
        ))
    }

    fn acquire(inner: &Arc<Inner>, scope: &str) -> Result<HeldLock, VaultError> {
        let deadline = Instant::now() + inner.config.lock_timeout;
        let path = inner.lock_path(scope);
        let local = inner.local_lock(scope).try_lock_arc_for(inner.config.lock_timeout);
        let mut owner = [0u8; 16];
        getrandom::fill(&mut owner)
            .map_err(|e| VaultError::Other(format!("no randomness for a lock owner id: {e}")))?;
        let mut held = HeldLock {
            inner: inner.clone(),
            scope: scope.to_owned(),
            path,
            owner: hex::encode(owner),
            version: 0,
            local: None,
        };
        match local {
            Some(guard) => held.local = Some(guard),
            None => return Err(Self::timeout(inner, scope, &held.path)),
        }
        let mut backoff = BACKOFF_MIN;
        loop {
            // Absent: create it.
            if let Some(version) = inner.kv_write(&held.path, &held.lock_data(), Some(0))? {
                held.version = version;
                return Ok(held);
            }
            // Present: take it over if it expired (or is unreadable).
            let current = match inner.kv_read::<LockData>(&held.path) {
                Ok(Some((lock, version))) => (lock.expires_ms <= now_ms()).then_some(version),
                // Usually released meanwhile; or its latest version was
                // deleted by hand, leaving metadata that defeats `cas = 0`:
                // take that over (never a live version: a new lock may have
                // been created since the read).
                Ok(None) => inner.kv_dead_version(&held.path)?,
                // Not a lock of ours: treat as expired.
                Err(VaultError::Corrupt(_)) => inner.kv_read::<serde_json::Value>(&held.path)?.map(|(_, v)| v),
                Err(e) => return Err(e),
            };
            if let Some(stale) = current
                && let Some(version) = inner.kv_write(&held.path, &held.lock_data(), Some(stale))?
            {
                tracing::warn!(scope, "took over an expired OpenBao lock entry");
                held.version = version;
                return Ok(held);
            }
            let now = Instant::now();
            if now >= deadline {
                // `held` is dropped: it owns no entry (version 0).
                return Err(Self::timeout(inner, scope, &held.path));
            }
            let jitter = Duration::from_micros(now_ms().wrapping_mul(2654435761) % 1000);
            std::thread::sleep((backoff + jitter).min(deadline - now));
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// Extends the lock, checking it is still ours: fails if another writer
    /// took it over after it expired.
    fn renew(&mut self) -> Result<(), VaultError> {
        match self.inner.kv_write(&self.path, &self.lock_data(), Some(self.version))? {
            Some(version) => {
                self.version = version;
                Ok(())
            }
            None => Err(VaultError::Unavailable(format!(
                "lost the write lock of {:?}: it expired (lock_ttl {:?}) and another writer took it over; nothing was written",
                self.scope, self.inner.config.lock_ttl
            ))),
        }
    }

    fn release(&mut self) -> Result<(), VaultError> {
        if self.version == 0 {
            return Ok(());
        }
        if let Some((lock, _)) = self.inner.kv_read::<LockData>(&self.path)?
            && lock.owner == self.owner
        {
            self.inner.kv_delete_all(&self.path)?;
        }
        self.version = 0;
        Ok(())
    }
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        if let Err(e) = self.release() {
            tracing::warn!(scope = self.scope, error = %e, "could not release an OpenBao lock entry; it expires by itself");
        }
        drop(self.local.take());
        self.inner.forget_local_lock(&self.scope);
    }
}

// ---------------------------------------------------------------------------
// Transactions

enum Op {
    Put(Zeroizing<Vec<u8>>),
    Delete,
    Rotate,
}

struct OpenBaoTxn {
    inner: Arc<Inner>,
    /// Pending writes in the order issued; at most one per key.
    ops: Vec<(String, Op)>,
    /// Held by write transactions only.
    lock: Option<HeldLock>,
}

impl OpenBaoTxn {
    fn writable(&self) -> Result<(), VaultError> {
        match self.lock {
            Some(_) => Ok(()),
            None => Err(VaultError::Rejected("a read transaction cannot write".into())),
        }
    }

    fn pending(&self, key: &str) -> Option<&Op> {
        self.ops.iter().rev().find(|(k, _)| k == key).map(|(_, op)| op)
    }

    fn push(&mut self, key: &str, op: Op) {
        self.ops.retain(|(k, _)| k != key);
        self.ops.push((key.to_owned(), op));
    }
}

impl Vault for OpenBaoTxn {
    fn store(&mut self, key: &str, value: &[u8]) -> Result<(), VaultError> {
        self.writable()?;
        self.push(key, Op::Put(Zeroizing::new(value.to_vec())));
        Ok(())
    }

    fn retrieve(&mut self, key: &str) -> Result<Option<Vec<u8>>, VaultError> {
        match self.pending(key) {
            Some(Op::Put(v)) => Ok(Some(v.to_vec())),
            Some(Op::Delete) => Ok(None),
            Some(Op::Rotate) | None => self.inner.retrieve(key),
        }
    }

    fn delete(&mut self, key: &str) -> Result<(), VaultError> {
        self.writable()?;
        self.push(key, Op::Delete);
        Ok(())
    }

    fn rotate(&mut self, key: &str) -> Result<(), VaultError> {
        self.writable()?;
        // A pending store writes a fresh version anyway; a pending delete
        // leaves nothing to rotate.
        if self.pending(key).is_none() {
            self.ops.push((key.to_owned(), Op::Rotate));
        }
        Ok(())
    }
}

impl Transaction for OpenBaoTxn {
    fn commit(mut self: Box<Self>) -> Result<(), VaultError> {
        let Some(lock) = self.lock.as_mut() else { return Ok(()) };
        if self.ops.is_empty() {
            return Ok(());
        }
        lock.renew()?;
        let total = self.ops.len();
        for (done, (key, op)) in self.ops.iter().enumerate() {
            let result = match op {
                Op::Put(value) => self.inner.store(key, value),
                Op::Delete => self.inner.kv_delete_all(&self.inner.entry_path(key)),
                Op::Rotate => self.inner.rewrite(&self.inner.entry_path(key)).map(|_| ()),
            };
            result.map_err(|e| {
                let note = format!("(commit stopped after {done} of {total} writes; the earlier ones are applied)");
                match e {
                    VaultError::Unavailable(m) => VaultError::Unavailable(format!("{m} {note}")),
                    VaultError::Corrupt(m) => VaultError::Corrupt(format!("{m} {note}")),
                    VaultError::Rejected(m) => VaultError::Rejected(format!("{m} {note}")),
                    VaultError::Other(m) => VaultError::Other(format!("{m} {note}")),
                }
            })?;
        }
        // Dropping the transaction releases the lock.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_into_address_mount_prefix_and_token_source() {
        let c = OpenBaoConfig::from_url("openbao+http://127.0.0.1:8200/secret?token_env=MY_TOKEN").unwrap();
        assert_eq!((c.address().as_str(), c.mount(), c.prefix()), ("http://127.0.0.1:8200", "secret", DEFAULT_PREFIX));
        assert!(matches!(c.token, TokenSource::Env(ref n) if n == "MY_TOKEN"));
        let c = OpenBaoConfig::from_url(
            "vault+https://bao.example:443/teams/a/kv/?token_file=%2Frun%2Ftok&prefix=apps/x&lock_ttl=5&lock_timeout=0.5",
        )
        .unwrap();
        assert_eq!((c.address().as_str(), c.mount(), c.prefix()), ("https://bao.example:443", "teams/a/kv", "apps/x"));
        assert!(matches!(c.token, TokenSource::File(ref p) if p == Path::new("/run/tok")));
        assert_eq!((c.lock_ttl, c.lock_timeout), (Duration::from_secs(5), Duration::from_millis(500)));
        assert!(matches!(OpenBaoConfig::from_url("openbao+http://h:1/s").unwrap().token, TokenSource::Default));
    }

    #[test]
    fn bad_urls_are_refused_without_echoing_tokens() {
        for (url, needle) in [
            ("openbao+http://h:1", "KV v2 mount"),
            ("openbao+http://h:1/", "KV v2 mount"),
            ("openbao+http:///secret", "host"),
            ("openbao+http://u:hunter2@h:1/secret", "credentials"),
            ("openbao+http://h:1/secret?token=hunter2", "token_env"),
            ("openbao+http://h:1/secret?tokn_env=X", "unknown"),
            ("openbao+http://h:1/se cret", "mount"),
            ("openbao+http://h:1/a/../b", "mount"),
            ("openbao+http://h:1/s?prefix=a//b", "prefix"),
            ("openbao+http://h:1/s?token_env=A&token_file=B", "not both"),
            ("openbao+http://h:1/s?lock_ttl=-1", "lock_ttl"),
            ("openbao+http://h:1/s?ca_file=/x", "https"),
        ] {
            let err = OpenBaoConfig::from_url(url).unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, VaultError::Rejected(_)), "{url}: {err:?}");
            assert!(msg.contains(needle), "{url}: {msg}");
            assert!(!msg.contains("hunter2"), "{url}: {msg}");
        }
    }

    #[test]
    fn config_debug_hides_the_token() {
        let c = OpenBaoConfig::new("http://127.0.0.1:8200", "secret").unwrap().with_token("hunter2-token");
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2") && shown.contains("given"), "{shown}");
        assert!(c.resolve_token().is_ok());
    }

    #[test]
    fn missing_tokens_are_named() {
        let c = OpenBaoConfig::from_url("openbao+http://h:1/s?token_env=SECRETS_OPENBAO_UNIT_TEST_UNSET_VAR").unwrap();
        let msg = c.resolve_token().unwrap_err().to_string();
        assert!(msg.contains("SECRETS_OPENBAO_UNIT_TEST_UNSET_VAR"), "{msg}");
        let c = OpenBaoConfig::from_url("openbao+http://h:1/s?token_file=/nonexistent/token").unwrap();
        let msg = c.resolve_token().unwrap_err().to_string();
        assert!(msg.contains("/nonexistent/token"), "{msg}");
    }

    #[test]
    fn key_encoding_is_injective_valid_and_reversible() {
        assert_eq!(encode_key("t/6162/i/77/k/4b/v/3"), "t/6162/i/77/k/4b/v/3");
        let keys = [
            "a", "a/b", "a//b", "/a", "a/", "", ".", "..", "a/../b", "_61", "a b", "ü", "a%2fb", "a/_", "-", "A-b",
            "a\u{0}b", "x/y/z",
        ];
        let mut seen = std::collections::HashSet::new();
        for k in keys {
            let p = encode_key(k);
            assert!(seen.insert(p.clone()), "collision for {k:?}: {p}");
            assert_eq!(decode_key(&p).as_deref(), Some(k), "{p}");
            for seg in p.split('/') {
                assert!(!seg.is_empty() && seg != "." && seg != "..", "{k:?} -> {p}");
                assert!(seg.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{k:?} -> {p}");
            }
        }
    }

    #[test]
    fn server_errors_are_shortened() {
        assert_eq!(server_errors(br#"{"errors":["a","b"]}"#), "a; b");
        assert_eq!(server_errors(b"not json"), "");
        assert!(server_errors(format!(r#"{{"errors":["{}"]}}"#, "x".repeat(1000)).as_bytes()).len() < 310);
    }
}
