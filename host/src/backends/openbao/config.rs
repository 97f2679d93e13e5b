//! Where and how to reach OpenBao: [`OpenBaoConfig`], built by
//! [`StoreConfig`](crate::backends::StoreConfig) from a store URL or in
//! code. The token is resolved only when the backend connects, and never
//! shown by `Debug`.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use zeroize::Zeroize;

use super::{DEFAULT_LOCK_TIMEOUT, DEFAULT_LOCK_TTL, DEFAULT_PREFIX, DEFAULT_REQUEST_TIMEOUT, DEFAULT_TOKEN_ENVS};
use crate::backends::{VaultError, rejected};

#[derive(Clone)]
pub(crate) enum TokenSource {
    Given(SecretString),
    Env(String),
    File(PathBuf),
    Default,
}

/// Where and how to reach OpenBao. Built from a store URL (by
/// [`StoreConfig::parse`](crate::backends::StoreConfig::parse)) or in code;
/// the token is resolved only by
/// [`OpenBaoBackend::connect`](super::OpenBaoBackend::connect). `Debug`
/// never shows the token.
#[derive(Clone)]
pub struct OpenBaoConfig {
    /// `openbao+http` etc., as given (for `describe`).
    pub(crate) scheme: String,
    /// `http` or `https`.
    pub(crate) transport: &'static str,
    /// `host:port`.
    pub(crate) authority: String,
    pub(crate) mount: String,
    pub(crate) prefix: String,
    pub(crate) token: TokenSource,
    pub(crate) namespace: Option<String>,
    pub(crate) ca_file: Option<PathBuf>,
    pub(crate) lock_ttl: Duration,
    pub(crate) lock_timeout: Duration,
    pub(crate) request_timeout: Duration,
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

/// A mount or prefix: `/`-separated segments of letters, digits, `.`, `_`,
/// `-`, none empty, `.` or `..`. Returns it without outer slashes.
pub(crate) fn clean_path(what: &str, path: &str) -> Result<String, VaultError> {
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

pub(crate) fn parse_seconds(name: &str, value: &str) -> Result<Duration, VaultError> {
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

    /// The configuration of a store URL with `scheme` (as given, e.g.
    /// `vault+https`, for messages), `transport` (`http` or `https`),
    /// `host:port` and mount path; the rest at its defaults.
    pub(crate) fn build(scheme: &str, transport: &'static str, authority: &str, mount: &str) -> Result<Self, VaultError> {
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

    /// Reads the token from environment variable `name` (`token_env=`).
    pub fn with_token_env(mut self, name: &str) -> Self {
        self.token = TokenSource::Env(name.to_owned());
        self
    }

    /// Reads the token from the file `path`, trimmed (`token_file=`).
    pub fn with_token_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.token = TokenSource::File(path.into());
        self
    }

    /// The environment variable the token is read from, if any: what a
    /// child process must not inherit.
    pub fn token_env(&self) -> Option<&str> {
        match &self.token {
            TokenSource::Env(name) => Some(name),
            _ => None,
        }
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

    /// Sends `X-Vault-Namespace: namespace` (empty: none).
    pub fn with_namespace(mut self, namespace: &str) -> Self {
        self.namespace = Some(namespace.to_owned()).filter(|n| !n.is_empty());
        self
    }

    /// Trusts the PEM roots in `path` instead of Mozilla's (https only).
    pub fn with_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    /// `http://host:port` or `https://host:port`.
    pub fn address(&self) -> String {
        format!("{}://{}", self.transport, self.authority)
    }

    /// The KV v2 mount path.
    pub fn mount(&self) -> &str {
        &self.mount
    }

    /// Where this store's entries live inside the mount.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub(crate) fn resolve_token(&self) -> Result<SecretString, VaultError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_debug_hides_the_token() {
        let c = OpenBaoConfig::new("http://127.0.0.1:8200", "secret").unwrap().with_token("hunter2-token");
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2") && shown.contains("given"), "{shown}");
        assert!(c.resolve_token().is_ok());
    }

    #[test]
    fn missing_tokens_are_named() {
        let c = OpenBaoConfig::new("http://h:1", "s").unwrap().with_token_env("SECRETS_OPENBAO_UNIT_TEST_UNSET_VAR");
        let msg = c.resolve_token().unwrap_err().to_string();
        assert!(msg.contains("SECRETS_OPENBAO_UNIT_TEST_UNSET_VAR"), "{msg}");
        let c = OpenBaoConfig::new("http://h:1", "s").unwrap().with_token_file("/nonexistent/token");
        let msg = c.resolve_token().unwrap_err().to_string();
        assert!(msg.contains("/nonexistent/token"), "{msg}");
    }
}
