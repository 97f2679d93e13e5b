//! Store URLs: one string selects and configures a backend, parsed once.
//!
//! | URL | backend |
//! |---|---|
//! | `memory:` | in-process memory, gone when the process exits |
//! | `sqlite:PATH` | embedded SQLite file, encrypted at rest (the default) |
//! | `postgres://...`, `postgresql://...` | PostgreSQL, shared by many host replicas, encrypted at rest |
//! | `openbao+http://HOST:PORT/MOUNT?...`, `openbao+https://...` (also `vault+http(s)://`) | OpenBao / HashiCorp Vault KV v2 |
//! | `awssm://REGION[/PREFIX][?...]` | AWS Secrets Manager |
//! | `gcpsm://PROJECT[/PREFIX][?...]` | GCP Secret Manager |
//!
//! The default is `sqlite:` at `$XDG_DATA_HOME/secrets/secrets.db`, or
//! `~/.local/share/secrets/secrets.db` when `XDG_DATA_HOME` is unset.
//!
//! [`StoreConfig::parse`] is the only place a store URL is read: it yields a
//! typed configuration per backend, which [`StoreConfig::open`] hands to
//! that backend, and which answers what a front end needs to know (the key
//! file, the variables holding credentials). Query values are
//! percent-decoded (RFC 3986: `%2F` is `/`, and `+` stays `+`). A `sqlite:`
//! path is taken literally (no decoding, no query).

use std::path::PathBuf;
use std::sync::Arc;

use percent_encoding::percent_decode_str;

use crate::backends::{Backend, MemoryBackend, VaultError, rejected};

#[cfg(feature = "awssm")]
use crate::backends::awssm::{AwsSmBackend, AwsSmConfig};
#[cfg(feature = "gcpsm")]
use crate::backends::gcpsm::{GcpSmBackend, GcpSmConfig};
#[cfg(feature = "openbao")]
use crate::backends::openbao::{
    OpenBaoBackend, OpenBaoConfig,
    config::{clean_path, parse_seconds},
};
#[cfg(feature = "postgres")]
use crate::backends::postgres::{DEFAULT_LOCK_TIMEOUT, DEFAULT_POOL_SIZE, DEFAULT_TIMEOUT, PostgresBackend, PostgresConfig};
#[cfg(any(feature = "sqlite", feature = "postgres"))]
use crate::backends::sealed::MASTER_KEY_ENV;
#[cfg(feature = "sqlite")]
use crate::backends::sqlite::{SqliteBackend, SqliteConfig};

/// The environment variable that sets the store URL.
pub const STORE_ENV: &str = "SECRETS_STORE";

/// Environment variables that may hold a store credential whatever the
/// store: the master key, the store URL itself (it may carry a password),
/// and the usual OpenBao / Vault token variables.
const CREDENTIAL_VARS: [&str; 4] = ["SECRETS_MASTER_KEY", STORE_ENV, "BAO_TOKEN", "VAULT_TOKEN"];

/// A parsed store URL: which backend, configured how.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum StoreConfig {
    /// `memory:`.
    Memory,
    /// `sqlite:PATH`.
    #[cfg(feature = "sqlite")]
    Sqlite(SqliteConfig),
    /// `postgres://...`.
    #[cfg(feature = "postgres")]
    Postgres(PostgresConfig),
    /// `openbao+http(s)://...`, `vault+http(s)://...`.
    #[cfg(feature = "openbao")]
    OpenBao(OpenBaoConfig),
    /// `awssm://REGION[/PREFIX]...`.
    #[cfg(feature = "awssm")]
    AwsSm(AwsSmConfig),
    /// `gcpsm://PROJECT[/PREFIX]...`.
    #[cfg(feature = "gcpsm")]
    GcpSm(GcpSmConfig),
}

/// The default SQLite database path: `$XDG_DATA_HOME/secrets/secrets.db`,
/// else `~/.local/share/secrets/secrets.db`. With neither variable set
/// (to an absolute path) there is no default: the store would otherwise
/// land in the working directory, next to code that may be committed.
pub fn default_sqlite_path() -> Result<PathBuf, VaultError> {
    let absolute = |name: &str| std::env::var_os(name).map(PathBuf::from).filter(|p| p.is_absolute());
    let data = absolute("XDG_DATA_HOME").or_else(|| absolute("HOME").map(|h| h.join(".local/share"))).ok_or_else(|| {
        rejected(format!(
            "no place for the default store: neither XDG_DATA_HOME nor HOME is set to an absolute path; set one of \
             them, or choose the store with --store URL (or {STORE_ENV})"
        ))
    })?;
    Ok(data.join("secrets").join("secrets.db"))
}

/// The default store URL.
pub fn default_url() -> Result<String, VaultError> {
    Ok(format!("sqlite:{}", default_sqlite_path()?.display()))
}

/// A backend this build was compiled without.
#[allow(dead_code, reason = "used only when a backend's feature is off")]
fn not_built(feature: &str) -> VaultError {
    rejected(format!("this build of secrets has no {feature} backend (cargo feature `{feature}`)"))
}

impl StoreConfig {
    /// Parses a store URL. Reads no environment variable and no file.
    pub fn parse(url: &str) -> Result<StoreConfig, VaultError> {
        let scheme = url.split_once(':').map(|(s, _)| s).unwrap_or("");
        match scheme {
            "memory" if url == "memory:" => Ok(StoreConfig::Memory),
            "sqlite" => {
                #[cfg(feature = "sqlite")]
                return sqlite(url).map(StoreConfig::Sqlite);
                #[cfg(not(feature = "sqlite"))]
                return Err(not_built("sqlite"));
            }
            "postgres" | "postgresql" => {
                #[cfg(feature = "postgres")]
                return postgres(url).map(StoreConfig::Postgres);
                #[cfg(not(feature = "postgres"))]
                return Err(not_built("postgres"));
            }
            "openbao+http" | "openbao+https" | "vault+http" | "vault+https" => {
                #[cfg(feature = "openbao")]
                return openbao(url).map(StoreConfig::OpenBao);
                #[cfg(not(feature = "openbao"))]
                return Err(not_built("openbao"));
            }
            "awssm" => {
                #[cfg(feature = "awssm")]
                return awssm(url).map(StoreConfig::AwsSm);
                #[cfg(not(feature = "awssm"))]
                return Err(not_built("awssm"));
            }
            "gcpsm" => {
                #[cfg(feature = "gcpsm")]
                return gcpsm(url).map(StoreConfig::GcpSm);
                #[cfg(not(feature = "gcpsm"))]
                return Err(not_built("gcpsm"));
            }
            _ => Err(rejected(format!(
                "unknown store URL {:?}: use memory:, sqlite:PATH, postgres://..., openbao+http(s)://HOST:PORT/MOUNT, awssm://REGION or gcpsm://PROJECT",
                redact_url(url)
            ))),
        }
    }

    /// The same store for a command that only reads: an existing SQLite
    /// store is opened read-only (so a read-only data directory can still be
    /// read); other stores are unchanged.
    pub fn for_reading(self) -> StoreConfig {
        match self {
            #[cfg(feature = "sqlite")]
            StoreConfig::Sqlite(c) => StoreConfig::Sqlite(SqliteConfig { read_only: true, ..c }),
            other => other,
        }
    }

    /// Opens the backend. SQLite and PostgreSQL read the master keyring from
    /// `SECRETS_MASTER_KEY` or their key file; OpenBao reads its token.
    pub fn open(&self) -> Result<Arc<dyn Backend>, VaultError> {
        Ok(match self {
            StoreConfig::Memory => Arc::new(MemoryBackend::new()),
            #[cfg(feature = "sqlite")]
            StoreConfig::Sqlite(c) => Arc::new(SqliteBackend::from_config(c)?),
            #[cfg(feature = "postgres")]
            StoreConfig::Postgres(c) => Arc::new(PostgresBackend::from_config(c)?),
            #[cfg(feature = "openbao")]
            StoreConfig::OpenBao(c) => Arc::new(OpenBaoBackend::connect(c.clone())?),
            #[cfg(feature = "awssm")]
            StoreConfig::AwsSm(c) => Arc::new(AwsSmBackend::connect(c.clone())?),
            #[cfg(feature = "gcpsm")]
            StoreConfig::GcpSm(c) => Arc::new(GcpSmBackend::connect(c.clone())?),
        })
    }

    /// The master key file the store reads when `SECRETS_MASTER_KEY` is
    /// unset (where `keyring add` appends a generation); `None` for stores
    /// without one.
    pub fn key_file(&self) -> Option<PathBuf> {
        match self {
            #[cfg(feature = "sqlite")]
            StoreConfig::Sqlite(c) => Some(c.key_file()),
            #[cfg(feature = "postgres")]
            StoreConfig::Postgres(c) => c.key_file.clone(),
            _ => None,
        }
    }

    /// Whether the store's values are sealed with a master keyring of ours
    /// (`SECRETS_MASTER_KEY` or a key file).
    pub fn has_master_key(&self) -> bool {
        match self {
            #[cfg(feature = "sqlite")]
            StoreConfig::Sqlite(_) => true,
            #[cfg(feature = "postgres")]
            StoreConfig::Postgres(_) => true,
            _ => false,
        }
    }

    /// The environment variables that hold this store's credentials: what a
    /// workload started by `secrets run` must not inherit.
    pub fn credential_vars(&self) -> Vec<String> {
        #[cfg_attr(not(any(feature = "openbao", feature = "awssm", feature = "gcpsm")), allow(unused_mut))]
        let mut vars: Vec<String> = CREDENTIAL_VARS.map(String::from).into();
        #[cfg(feature = "awssm")]
        if let StoreConfig::AwsSm(_) = self {
            vars.extend(crate::backends::awssm::CREDENTIAL_ENVS.map(String::from));
        }
        #[cfg(feature = "gcpsm")]
        if let StoreConfig::GcpSm(_) = self {
            vars.extend([crate::backends::gcpsm::ACCESS_TOKEN_ENV, crate::backends::gcpsm::CREDENTIALS_ENV].map(String::from));
        }
        #[cfg(feature = "openbao")]
        if let StoreConfig::OpenBao(c) = self
            && let Some(name) = c.token_env()
        {
            vars.push(name.to_owned());
        }
        #[cfg(any(feature = "sqlite", feature = "postgres"))]
        debug_assert_eq!(CREDENTIAL_VARS[0], MASTER_KEY_ENV);
        vars
    }
}

/// A URL with any password replaced, for messages: the userinfo password
/// and a `password=` query parameter.
pub fn redact_url(url: &str) -> String {
    let hidden = match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    };
    match hidden.split_once('?') {
        None => hidden,
        Some((base, query)) => {
            let query: Vec<&str> =
                query.split('&').map(|p| if p.starts_with("password=") { "password=***" } else { p }).collect();
            format!("{base}?{}", query.join("&"))
        }
    }
}

/// One `name=value` pair of a query: the name, the value percent-decoded,
/// and the pair as written (for passing it on untouched).
#[cfg_attr(not(any(feature = "postgres", feature = "openbao", feature = "remote")), allow(dead_code))]
struct Param<'a> {
    name: &'a str,
    value: String,
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    raw: &'a str,
}

/// Splits `url` at its `?` into the part before and the query's pairs.
#[cfg_attr(not(any(feature = "postgres", feature = "openbao", feature = "remote")), allow(dead_code))]
fn split_query(url: &str) -> Result<(&str, Vec<Param<'_>>), VaultError> {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut params = Vec::new();
    for raw in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = raw.split_once('=').unwrap_or((raw, ""));
        let value = percent_decode_str(value).decode_utf8().map_err(|_| {
            rejected(format!("store URL parameter {name}= is not UTF-8 after %-decoding"))
        })?;
        params.push(Param { name, value: value.into_owned(), raw });
    }
    Ok((base, params))
}

/// `sqlite:PATH` (also `sqlite://PATH`, so `sqlite:///var/x.db` is
/// absolute); `sqlite:` alone is the default path.
#[cfg(feature = "sqlite")]
fn sqlite(url: &str) -> Result<SqliteConfig, VaultError> {
    let rest = url.strip_prefix("sqlite:").expect("dispatched on the scheme");
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    match rest {
        "" => Ok(SqliteConfig { path: default_sqlite_path()?, read_only: false }),
        ":memory:" => Err(rejected("sqlite::memory: is not supported; use the memory: store")),
        path => Ok(SqliteConfig { path: PathBuf::from(path), read_only: false }),
    }
}

/// `postgres://USER[:PASSWORD]@HOST[:PORT]/DB?PARAMS`: `key_file=`,
/// `schema=`, `pool_size=`, `lock_timeout=` and `timeout=` are ours; every
/// other parameter goes to the `tokio-postgres` crate as written.
#[cfg(feature = "postgres")]
fn postgres(url: &str) -> Result<PostgresConfig, VaultError> {
    let redacted = redact_url(url);
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(rejected(format!("{redacted} is not a PostgreSQL URL (postgres://... or postgresql://...)")));
    }
    let (base, params) = split_query(url)?;
    let mut config = PostgresConfig {
        conn_url: String::new(),
        redacted: redacted.clone(),
        key_file: None,
        schema: None,
        pool_size: DEFAULT_POOL_SIZE,
        lock_timeout: DEFAULT_LOCK_TIMEOUT,
        timeout: DEFAULT_TIMEOUT,
    };
    let mut kept = Vec::new();
    for p in params {
        match p.name {
            "key_file" if p.value.is_empty() => return Err(rejected(format!("{redacted}: key_file is empty"))),
            "key_file" => config.key_file = Some(PathBuf::from(p.value)),
            "schema" => {
                let name = p.value;
                let valid = !name.is_empty()
                    && name.len() <= 63
                    && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
                    && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
                if !valid {
                    return Err(rejected(format!(
                        "{redacted}: schema {name:?} must be 1 to 63 lower-case letters, digits or _, not starting with a digit"
                    )));
                }
                config.schema = Some(name);
            }
            "lock_timeout" => config.lock_timeout = seconds(&redacted, p.name, &p.value)?,
            "timeout" => config.timeout = seconds(&redacted, p.name, &p.value)?,
            "pool_size" => {
                config.pool_size = match p.value.parse::<usize>() {
                    Ok(n) if (1..=1000).contains(&n) => n,
                    _ => return Err(rejected(format!("{redacted}: pool_size must be a number from 1 to 1000"))),
                }
            }
            _ => kept.push(p.raw),
        }
    }
    config.conn_url = if kept.is_empty() { base.to_owned() } else { format!("{base}?{}", kept.join("&")) };
    Ok(config)
}

/// A positive number of seconds (fractions allowed), at most a day.
#[cfg(feature = "postgres")]
fn seconds(redacted: &str, name: &str, value: &str) -> Result<std::time::Duration, VaultError> {
    match value.parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 && s <= 86_400.0 => Ok(std::time::Duration::from_secs_f64(s)),
        _ => Err(rejected(format!("{redacted}: {name}= must be a number of seconds from 0 to 86400"))),
    }
}

/// `openbao+http(s)://HOST:PORT/MOUNT?params` (or `vault+...`); the
/// parameters are documented in the backend's module.
#[cfg(feature = "openbao")]
fn openbao(url: &str) -> Result<OpenBaoConfig, VaultError> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| rejected("an OpenBao store URL looks like openbao+http://HOST:PORT/MOUNT?token_env=BAO_TOKEN"))?;
    let transport = match scheme {
        "openbao+http" | "vault+http" => "http",
        "openbao+https" | "vault+https" => "https",
        _ => return Err(rejected(format!("unknown OpenBao URL scheme {scheme:?}: use openbao+http or openbao+https"))),
    };
    if rest.contains('#') {
        return Err(rejected("the OpenBao store URL must not have a #fragment"));
    }
    let (location, params) = split_query(rest)?;
    let (authority, mount) = location.split_once('/').unwrap_or((location, ""));
    if authority.contains('@') {
        return Err(rejected("credentials in the OpenBao store URL are not accepted: use token_env=NAME or token_file=PATH"));
    }
    // The authority must be a host with an optional port, as a URL has it.
    let host_ok = !authority.is_empty()
        && url::Url::parse(&format!("http://{authority}/")).is_ok_and(|u| u.host_str().is_some_and(|h| !h.is_empty()));
    if !host_ok {
        return Err(rejected("the OpenBao store URL needs a host (and port): openbao+http://HOST:PORT/MOUNT"));
    }
    if mount.trim_matches('/').is_empty() {
        return Err(rejected(
            "the OpenBao store URL needs the path of a KV v2 mount: openbao+http://HOST:PORT/MOUNT (the dev server's is `secret`)",
        ));
    }
    let mut config = OpenBaoConfig::build(scheme, transport, authority, mount)?;
    let (mut token_env, mut token_file) = (None, None);
    for Param { name, value, .. } in params {
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
    config = match (token_env, token_file) {
        (Some(_), Some(_)) => return Err(rejected("give token_env= or token_file=, not both")),
        (Some(name), None) => config.with_token_env(&name),
        (None, Some(path)) => config.with_token_file(path),
        (None, None) => config,
    };
    if config.ca_file.is_some() && transport != "https" {
        return Err(rejected("ca_file= only applies to openbao+https"));
    }
    Ok(config)
}

/// A positive number of seconds below 10^9 (a cloud backend's lock_ttl,
/// lock_timeout, timeout).
#[cfg(feature = "remote")]
fn cloud_seconds(scheme: &str, name: &str, value: &str) -> Result<std::time::Duration, VaultError> {
    match value.parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 && s < 1e9 => Ok(std::time::Duration::from_secs_f64(s)),
        _ => Err(rejected(format!("{scheme} store URL: {name}= must be a positive number of seconds"))),
    }
}

/// `SCHEME://FIRST[/REST]?params` of a cloud store URL: the first segment,
/// the rest of the path (without outer slashes) and the parameters.
#[cfg(feature = "remote")]
fn cloud_parts<'a>(url: &'a str, scheme: &str, first: &str) -> Result<(&'a str, &'a str, Vec<Param<'a>>), VaultError> {
    let rest = url
        .strip_prefix(scheme)
        .and_then(|r| r.strip_prefix("://"))
        .ok_or_else(|| rejected(format!("a {scheme} store URL looks like {scheme}://{first}[/PREFIX]")))?;
    if rest.contains('#') {
        return Err(rejected(format!("the {scheme} store URL must not have a #fragment")));
    }
    let (location, params) = split_query(rest)?;
    let (head, path) = location.split_once('/').unwrap_or((location, ""));
    if head.contains('@') || head.contains(':') {
        return Err(rejected(format!(
            "credentials in the {scheme} store URL are not accepted: they come from the environment (see the README)"
        )));
    }
    if head.is_empty() {
        return Err(rejected(format!("the {scheme} store URL needs the {first}: {scheme}://{first}[/PREFIX]")));
    }
    Ok((head, path.trim_matches('/'), params))
}

/// `gcpsm://PROJECT[/PREFIX][?endpoint=URL&lock_ttl=&lock_timeout=&timeout=]`.
#[cfg(feature = "gcpsm")]
fn gcpsm(url: &str) -> Result<GcpSmConfig, VaultError> {
    let (project, prefix, params) = cloud_parts(url, "gcpsm", "PROJECT")?;
    let mut c = GcpSmConfig::new(project)?;
    if !prefix.is_empty() {
        c = c.with_prefix(prefix)?;
    }
    for Param { name, value, .. } in params {
        c = match name {
            "endpoint" if !value.is_empty() => c.with_endpoint(&value)?,
            "lock_ttl" => c.with_lock_ttl(cloud_seconds("gcpsm", name, &value)?),
            "lock_timeout" => c.with_lock_timeout(cloud_seconds("gcpsm", name, &value)?),
            "timeout" => c.with_request_timeout(cloud_seconds("gcpsm", name, &value)?),
            "token" | "access_token" | "credentials" | "password" | "key" => {
                return Err(rejected(format!(
                    "credentials in the gcpsm store URL are not accepted: set {} or {}",
                    crate::backends::gcpsm::ACCESS_TOKEN_ENV,
                    crate::backends::gcpsm::CREDENTIALS_ENV
                )));
            }
            _ => {
                return Err(rejected(format!(
                    "unknown gcpsm store URL parameter {name:?}: use endpoint, lock_ttl, lock_timeout or timeout"
                )));
            }
        };
    }
    Ok(c)
}

/// `awssm://REGION[/PREFIX][?endpoint=URL&kms_key_id=ID&profile=NAME&lock_ttl=&lock_timeout=&timeout=]`.
#[cfg(feature = "awssm")]
fn awssm(url: &str) -> Result<AwsSmConfig, VaultError> {
    let (region, prefix, params) = cloud_parts(url, "awssm", "REGION")?;
    let mut c = AwsSmConfig::new(region)?;
    if !prefix.is_empty() {
        c = c.with_prefix(prefix)?;
    }
    for Param { name, value, .. } in params {
        c = match name {
            "endpoint" if !value.is_empty() => c.with_endpoint(&value)?,
            "kms_key_id" if !value.is_empty() => c.with_kms_key_id(&value)?,
            "profile" if !value.is_empty() => c.with_profile(&value)?,
            "lock_ttl" => c.with_lock_ttl(cloud_seconds("awssm", name, &value)?),
            "lock_timeout" => c.with_lock_timeout(cloud_seconds("awssm", name, &value)?),
            "timeout" => c.with_request_timeout(cloud_seconds("awssm", name, &value)?),
            "access_key_id" | "secret_access_key" | "session_token" | "token" | "password" | "key" => {
                return Err(rejected(
                    "credentials in the awssm store URL are not accepted: use the environment (AWS_ACCESS_KEY_ID, ...), a profile= or web identity",
                ));
            }
            _ => {
                return Err(rejected(format!(
                    "unknown awssm store URL parameter {name:?}: use endpoint, kms_key_id, profile, lock_ttl, lock_timeout or timeout"
                )));
            }
        };
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_schemes_are_named_and_passwords_redacted() {
        let err = StoreConfig::parse("mysql://root:hunter2@db/x").err().unwrap();
        let msg = err.to_string();
        assert!(msg.contains("unknown store URL") && !msg.contains("hunter2"), "{msg}");
        assert_eq!(redact_url("postgres://u:pw@h:5/db"), "postgres://u:***@h:5/db");
        assert!(matches!(StoreConfig::parse("memory:"), Ok(StoreConfig::Memory)));
        assert!(StoreConfig::parse("memory:").unwrap().open().is_ok());
        assert!(StoreConfig::parse("memory:x").is_err());
    }

    #[test]
    fn default_path_follows_xdg() {
        // Tests share the process environment: read it, never set it.
        if std::env::var_os("XDG_DATA_HOME").is_some() || std::env::var_os("HOME").is_some() {
            assert!(default_url().unwrap().starts_with("sqlite:"));
            assert!(default_sqlite_path().unwrap().ends_with("secrets/secrets.db"));
        }
    }

    #[cfg(feature = "sqlite")]
    fn sqlite_path(url: &str) -> Result<PathBuf, VaultError> {
        match StoreConfig::parse(url)? {
            StoreConfig::Sqlite(c) => Ok(c.path),
            other => panic!("{url} parsed as {other:?}"),
        }
    }

    #[cfg(feature = "sqlite")]
    #[test]
    fn sqlite_urls_name_paths_and_key_files() {
        assert_eq!(sqlite_path("sqlite:/var/lib/s.db").unwrap(), PathBuf::from("/var/lib/s.db"));
        assert_eq!(sqlite_path("sqlite:///var/lib/s.db").unwrap(), PathBuf::from("/var/lib/s.db"));
        assert_eq!(sqlite_path("sqlite:rel/s.db").unwrap(), PathBuf::from("rel/s.db"));
        assert!(sqlite_path("sqlite:").unwrap().ends_with("secrets/secrets.db"));
        assert!(matches!(sqlite_path("sqlite::memory:"), Err(VaultError::Rejected(m)) if m.contains("memory:")));
        let config = StoreConfig::parse("sqlite:/d/secrets.db").unwrap();
        assert_eq!(config.key_file(), Some(PathBuf::from("/d/secrets.db.key")));
        assert!(config.has_master_key());
    }

    #[cfg(feature = "postgres")]
    fn pg(url: &str) -> Result<PostgresConfig, VaultError> {
        match StoreConfig::parse(url)? {
            StoreConfig::Postgres(c) => Ok(c),
            other => panic!("{url} parsed as {other:?}"),
        }
    }

    #[cfg(feature = "postgres")]
    #[test]
    fn postgres_parameters_are_stripped_and_passwords_redacted() {
        let url = "postgres://u:hunter2@db:5432/x?key_file=%2Fetc%2Fsecrets.key&sslmode=disable&schema=app_1&pool_size=3&password=pw2";
        let p = pg(url).unwrap();
        assert_eq!(p.conn_url, "postgres://u:hunter2@db:5432/x?sslmode=disable&password=pw2");
        assert_eq!(p.key_file.as_deref(), Some(std::path::Path::new("/etc/secrets.key")));
        assert_eq!(
            StoreConfig::parse("postgres://h/db?key_file=k.key").unwrap().key_file().as_deref(),
            Some(std::path::Path::new("k.key"))
        );
        assert_eq!((p.schema.as_deref(), p.pool_size), (Some("app_1"), 3));
        assert!(!p.redacted.contains("hunter2") && !p.redacted.contains("pw2"), "{}", p.redacted);
        assert!(!format!("{p:?}").contains("hunter2"), "Debug hides the password");
        let p = pg("postgresql://h/db?schema=s").unwrap();
        assert_eq!(p.conn_url, "postgresql://h/db");
        for bad in ["postgres://h/db?schema=Bad", "postgres://h/db?schema=a;drop", "postgres://h/db?pool_size=0"] {
            assert!(matches!(StoreConfig::parse(bad), Err(VaultError::Rejected(_))), "{bad}");
        }
        // `+` is a literal plus in every parameter, as in the postgres crate.
        assert_eq!(pg("postgres://h/db?key_file=/k+1").unwrap().key_file.as_deref(), Some(std::path::Path::new("/k+1")));
        assert_eq!(StoreConfig::parse("postgres://h/db").unwrap().key_file(), None);
    }

    #[cfg(feature = "openbao")]
    fn bao(url: &str) -> Result<OpenBaoConfig, VaultError> {
        match StoreConfig::parse(url)? {
            StoreConfig::OpenBao(c) => Ok(c),
            other => panic!("{url} parsed as {other:?}"),
        }
    }

    #[cfg(feature = "openbao")]
    #[test]
    fn openbao_urls_parse_into_address_mount_prefix_and_token_source() {
        use crate::backends::openbao::DEFAULT_PREFIX;
        use std::time::Duration;
        let c = bao("openbao+http://127.0.0.1:8200/secret?token_env=MY_TOKEN").unwrap();
        assert_eq!((c.address().as_str(), c.mount(), c.prefix()), ("http://127.0.0.1:8200", "secret", DEFAULT_PREFIX));
        assert_eq!(c.token_env(), Some("MY_TOKEN"));
        let c = bao(
            "vault+https://bao.example:443/teams/a/kv/?token_file=%2Frun%2Ftok&prefix=apps/x&lock_ttl=5&lock_timeout=0.5",
        )
        .unwrap();
        assert_eq!((c.address().as_str(), c.mount(), c.prefix()), ("https://bao.example:443", "teams/a/kv", "apps/x"));
        assert!(format!("{c:?}").contains("file /run/tok"), "{c:?}");
        assert_eq!((c.lock_ttl, c.lock_timeout), (Duration::from_secs(5), Duration::from_millis(500)));
        assert_eq!(bao("openbao+http://h:1/s").unwrap().token_env(), None);
        let credentials = StoreConfig::parse("openbao+http://h:1/s?token_env=MY_TOKEN").unwrap().credential_vars();
        for var in ["MY_TOKEN", "BAO_TOKEN", "VAULT_TOKEN", "SECRETS_MASTER_KEY", "SECRETS_STORE"] {
            assert!(credentials.iter().any(|v| v == var), "{var} in {credentials:?}");
        }
    }

    #[cfg(feature = "openbao")]
    #[test]
    fn bad_openbao_urls_are_refused_without_echoing_tokens() {
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
            let err = bao(url).unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, VaultError::Rejected(_)), "{url}: {err:?}");
            assert!(msg.contains(needle), "{url}: {msg}");
            assert!(!msg.contains("hunter2"), "{url}: {msg}");
        }
    }

    proptest::proptest! {
        /// Any string: parsed or refused, never a panic; a password in a
        /// URL never shows in the error, in `Debug` or in `redact_url`.
        #[test]
        fn parsing_never_panics_or_shows_a_password(
            scheme in proptest::prop_oneof![
                proptest::strategy::Just("postgres://"), proptest::strategy::Just("openbao+http://"),
                proptest::strategy::Just("sqlite:"), proptest::strategy::Just("memory:"), proptest::strategy::Just("x://"),
            ],
            user in "[a-z]{0,6}",
            rest in "[ -~]{0,40}",
        ) {
            let password = "pw-Zq81xW";
            let url = format!("{scheme}{user}:{password}@{rest}");
            let parsed = StoreConfig::parse(&url);
            let _ = StoreConfig::parse(&rest);
            // Only URLs with an authority have a password (a sqlite: path
            // is a file name, whatever it holds).
            if scheme.ends_with("://") {
                match parsed {
                    Ok(config) => proptest::prop_assert!(!format!("{config:?}").contains(password), "{config:?}"),
                    Err(e) => proptest::prop_assert!(!e.to_string().contains(password), "{e}"),
                }
                proptest::prop_assert!(!redact_url(&url).contains(password));
            }
        }
    }
}
