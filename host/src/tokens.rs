//! Bearer tokens of the HTTP API: who may call, for which tenant, with
//! which role.
//!
//! A token is `sec_` followed by 64 lowercase hex characters (256 random
//! bits from the operating system). The visible prefix lets secret
//! scanners find leaked tokens. The token itself is shown once, when it is
//! created, and never stored: the store keeps only its SHA-256, so whoever
//! reads the store (or a backup of it) learns which tokens exist, never a
//! token that works.
//!
//! # Layout in the store
//! Tokens live in the same store as the secrets, outside every tenant's
//! key space (tenant keys are `t/<hex>/...`, see [`crate::tenant`]):
//!
//! | key | value |
//! |---|---|
//! | `sys/tokens/h/<sha256 hex>` | the token's record: [`TokenInfo`] plus its hash |
//! | `sys/tokens/id/<id>` | the hash, so `revoke ID` finds the record |
//! | `sys/tokens/index` | every token's [`TokenInfo`], for `list` |
//! | `sys/tokens/used/<id>` | when it was last used (Unix ms, decimal) |
//!
//! The id is 12 hex characters of its own randomness, not derived from the
//! token: knowing an id (it is printed, logged, and later in the audit log)
//! tells nothing about the token. Writes take the backend's write lock on
//! the scope `sys/tokens`, so concurrent creates and revokes (from several
//! processes or replicas) serialise; each is one transaction.
//!
//! # Verification
//! [`TokenStore::verify`] hashes the presented token, reads the record under
//! that hash in a read transaction, compares the stored hash with the
//! computed one in constant time, and checks the expiry. A revoked token's
//! record is deleted. There is **no cache**: every request reads the store,
//! so a revocation through one replica of a shared store (PostgreSQL,
//! OpenBao) is refused by every other one from its next request on.
//!
//! A verified token's *last use* is written at most once per
//! [`LAST_USED_EVERY`] per token and process (one small write
//! transaction), so `list` shows it to that precision at no cost per
//! request; a failed write is logged and does not fail the request.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::backends::{Access, Backend, Transaction, VaultError};
use crate::tenant::Scope;

/// The visible prefix of every token.
pub const TOKEN_PREFIX: &str = "sec_";
/// Hex characters after the prefix (256 bits).
const TOKEN_HEX_LEN: usize = 64;
/// Hex characters of a token id (48 bits).
pub const ID_HEX_LEN: usize = 12;
/// Longest token name (label), in bytes.
pub const MAX_NAME_BYTES: usize = 64;
/// Longest time to live a token may be given (about 10 years).
pub const MAX_TTL: Duration = Duration::from_secs(10 * 366 * 24 * 3600);

/// How stale a token's recorded last use may be: a process records a use
/// when its last record of that token is older than this.
pub const LAST_USED_EVERY: Duration = Duration::from_secs(60);

/// What token writers serialise on; disjoint from every tenant's scope.
const LOCK_SCOPE: &str = "sys/tokens";
const INDEX_KEY: &str = "sys/tokens/index";

fn hash_key(hash_hex: &str) -> String {
    format!("sys/tokens/h/{hash_hex}")
}

fn id_key(id: &str) -> String {
    format!("sys/tokens/id/{id}")
}

fn used_key(id: &str) -> String {
    format!("sys/tokens/used/{id}")
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn random_hex(bytes: usize) -> Result<String, TokenError> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| TokenError::Store(VaultError::Other(format!("no randomness: {e}"))))?;
    Ok(hex::encode(buf))
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Why a token operation failed. Never carries a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The presented string is not a token at all.
    #[error("not a token (expected {TOKEN_PREFIX} followed by {TOKEN_HEX_LEN} lowercase hex characters)")]
    Malformed,
    /// No such token: never created, or revoked.
    #[error("unknown or revoked token")]
    Unknown,
    /// The token's time to live has passed.
    #[error("expired token")]
    Expired,
    /// `revoke` of an id that does not exist.
    #[error("token {0:?} not found")]
    NotFound(String),
    /// A tenant, role, name or time to live broke a rule; the text says which.
    #[error("{0}")]
    InvalidArgument(String),
    /// The store failed (or holds a corrupt token record).
    #[error("token store: {0}")]
    Store(VaultError),
}

impl From<VaultError> for TokenError {
    fn from(e: VaultError) -> Self {
        TokenError::Store(e)
    }
}

/// What a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Metadata, values, lists, versions, instances, env and mounts.
    Read,
    /// Everything `read` does, plus set, delete, rotate and the version
    /// lifecycle (soft delete, undelete, destroy, rollback).
    Write,
    /// Env and mounts only: what a deploy agent needs to start a container
    /// (and a look at its own token).
    Inject,
}

impl Role {
    /// The role's name: `read`, `write`, `inject`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Inject => "inject",
        }
    }

    /// Whether the role may perform `op`.
    pub fn allows(self, op: Operation) -> bool {
        use Operation::*;
        match self {
            Role::Write => true,
            Role::Read => matches!(op, Metadata | Value | List | Env | Mounts | Instances | LookupSelf),
            Role::Inject => matches!(op, Env | Mounts | LookupSelf),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = TokenError;

    fn from_str(s: &str) -> Result<Role, TokenError> {
        match s {
            "read" => Ok(Role::Read),
            "write" => Ok(Role::Write),
            "inject" => Ok(Role::Inject),
            _ => Err(TokenError::InvalidArgument("role must be one of read, write, inject".into())),
        }
    }
}

/// What a caller asks to do; a [`Role`] allows some of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// A key's metadata and its retained versions (`get`, `versions`).
    Metadata,
    /// A value.
    Value,
    /// An instance's secrets, metadata only.
    List,
    /// An instance's env secrets, with values.
    Env,
    /// An instance's files, with contents.
    Mounts,
    /// A new version of a key.
    Set,
    /// Deleting a key.
    Delete,
    /// Re-encrypting a key's versions.
    Rotate,
    /// Soft-deleting versions of a key (their values stay, recoverable).
    DeleteVersions,
    /// Undoing a soft delete.
    Undelete,
    /// Removing the values of versions for good.
    Destroy,
    /// Writing an old version's value again as the key's next version.
    Rollback,
    /// The tenant's instances (names only).
    Instances,
    /// What the caller's own token is (id, tenant, role; never the token).
    LookupSelf,
}

impl Operation {
    /// A short name, for messages and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Metadata => "metadata",
            Operation::Value => "value",
            Operation::List => "list",
            Operation::Env => "env",
            Operation::Mounts => "mounts",
            Operation::Set => "set",
            Operation::Delete => "delete",
            Operation::Rotate => "rotate",
            Operation::DeleteVersions => "delete-versions",
            Operation::Undelete => "undelete",
            Operation::Destroy => "destroy",
            Operation::Rollback => "rollback",
            Operation::Instances => "instances",
            Operation::LookupSelf => "lookup-self",
        }
    }

    /// Whether a successful answer carries values (`value`, `env`,
    /// `mounts`).
    pub fn returns_values(self) -> bool {
        matches!(self, Operation::Value | Operation::Env | Operation::Mounts)
    }

    /// Whether it changes the store (`set`, `delete`, `rotate`,
    /// `delete-versions`, `undelete`, `destroy`, `rollback`).
    pub fn writes(self) -> bool {
        matches!(
            self,
            Operation::Set
                | Operation::Delete
                | Operation::Rotate
                | Operation::DeleteVersions
                | Operation::Undelete
                | Operation::Destroy
                | Operation::Rollback
        )
    }
}

/// A bearer token. `Debug` never shows it; read it with [`Token::expose`].
pub struct Token(SecretString);

impl Token {
    /// A fresh token: the prefix and 256 random bits.
    pub fn generate() -> Result<Token, TokenError> {
        Ok(Token(SecretString::from(format!("{TOKEN_PREFIX}{}", random_hex(TOKEN_HEX_LEN / 2)?))))
    }

    /// A presented token, checked for its format only (whether it exists
    /// is [`TokenStore::verify`]'s business). The error never repeats it.
    pub fn parse(presented: &str) -> Result<Token, TokenError> {
        let hex = presented.strip_prefix(TOKEN_PREFIX).ok_or(TokenError::Malformed)?;
        if hex.len() != TOKEN_HEX_LEN || !is_lower_hex(hex) {
            return Err(TokenError::Malformed);
        }
        Ok(Token(SecretString::from(presented.to_owned())))
    }

    /// The token; call it only where it is meant to go (shown once).
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// SHA-256 of the token, lowercase hex: what the store keeps.
    fn hash_hex(&self) -> String {
        hex::encode(Sha256::digest(self.expose().as_bytes()))
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token([REDACTED])")
    }
}

/// Equality of two equally long byte strings in time independent of
/// where they differ (different lengths are unequal at once: lengths are
/// not secret here, every hash is 64 characters).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// What is known about a token; never the token or its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    /// 12 hex characters, independent of the token.
    pub id: String,
    /// The tenant every call with the token acts for.
    pub tenant: String,
    /// What the token allows.
    pub role: Role,
    /// A label chosen at creation.
    #[serde(default)]
    pub name: Option<String>,
    /// Unix milliseconds.
    pub created_ms: u64,
    /// Unix milliseconds from which the token is refused; `None`: never.
    #[serde(default)]
    pub expires_ms: Option<u64>,
}

impl TokenInfo {
    /// Whether the token is expired at `now_ms`.
    pub fn is_expired_at(&self, now_ms: u64) -> bool {
        self.expires_ms.is_some_and(|e| now_ms >= e)
    }

    /// Whether the token is expired now.
    pub fn is_expired(&self) -> bool {
        self.is_expired_at(now_ms())
    }
}

/// A token as `list` shows it: what is known about it and when it was
/// last used (to [`LAST_USED_EVERY`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenListing {
    /// The token's metadata.
    #[serde(flatten)]
    pub info: TokenInfo,
    /// Unix milliseconds of its last recorded use; `None`: never used.
    pub last_used_ms: Option<u64>,
}

/// The record under `sys/tokens/h/<hash>`.
#[derive(Serialize, Deserialize)]
struct Record {
    #[serde(flatten)]
    info: TokenInfo,
    /// The key it is stored under, compared in constant time on each use.
    sha256: String,
}

/// The record under `sys/tokens/index`.
#[derive(Default, Serialize, Deserialize)]
struct Index {
    tokens: Vec<TokenInfo>,
}

/// A verified caller: the token's id, tenant and role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The token's id (never the token).
    pub token_id: String,
    /// The tenant the calls act for.
    pub scope: Scope,
    /// What the token allows.
    pub role: Role,
    /// When the token was created, in milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// When it expires, if it does (same clock).
    pub expires_ms: Option<u64>,
}

/// A request to create a token.
#[derive(Debug, Clone)]
pub struct NewToken {
    /// The tenant the token acts for.
    pub tenant: Scope,
    /// What it allows.
    pub role: Role,
    /// A label (1..=64 bytes of printable characters).
    pub name: Option<String>,
    /// How long it is valid (at most [`MAX_TTL`]); `None`: until revoked.
    pub ttl: Option<Duration>,
}

/// The tokens of one store. Cheap to clone; every call blocks its thread
/// (like [`crate::Secrets`]: run it on a blocking pool from async code).
#[derive(Clone)]
pub struct TokenStore {
    backend: Arc<dyn Backend>,
    /// When this process last recorded each token's use (Unix ms).
    recorded_uses: Arc<parking_lot::Mutex<std::collections::HashMap<String, u64>>>,
}

impl fmt::Debug for TokenStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenStore").field("backend", &self.backend.describe()).finish()
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(txn: &mut dyn Transaction, key: &str) -> Result<Option<T>, TokenError> {
    match txn.retrieve(key)? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| TokenError::Store(VaultError::Corrupt(format!("token record {key}: {e}")))),
    }
}

fn write_json<T: Serialize>(txn: &mut dyn Transaction, key: &str, value: &T) -> Result<(), TokenError> {
    let bytes = serde_json::to_vec(value).map_err(|e| TokenError::Store(VaultError::Other(e.to_string())))?;
    Ok(txn.store(key, &bytes)?)
}

fn check_name(name: &str) -> Result<(), TokenError> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES || name.chars().any(char::is_control) {
        return Err(TokenError::InvalidArgument(format!(
            "token name must be 1..={MAX_NAME_BYTES} bytes without control characters"
        )));
    }
    Ok(())
}

/// Whether `id` has the form of a token id (12 lowercase hex characters).
pub fn is_token_id(id: &str) -> bool {
    id.len() == ID_HEX_LEN && is_lower_hex(id)
}

impl TokenStore {
    /// The tokens kept in `backend` (the same store as the secrets).
    pub fn new(backend: Arc<dyn Backend>) -> TokenStore {
        TokenStore { backend, recorded_uses: Arc::default() }
    }

    /// Creates a token. The returned [`Token`] is the only copy there will
    /// ever be: show it once.
    pub fn create(&self, req: NewToken) -> Result<(Token, TokenInfo), TokenError> {
        self.create_at(req, now_ms())
    }

    fn create_at(&self, req: NewToken, now: u64) -> Result<(Token, TokenInfo), TokenError> {
        if let Some(name) = &req.name {
            check_name(name)?;
        }
        let expires_ms = match req.ttl {
            None => None,
            Some(ttl) if ttl.is_zero() || ttl > MAX_TTL => {
                return Err(TokenError::InvalidArgument(format!(
                    "ttl must be more than 0 and at most {}",
                    humantime_days(MAX_TTL)
                )));
            }
            Some(ttl) => Some(now.saturating_add(ttl.as_millis() as u64)),
        };
        let token = Token::generate()?;
        let hash = token.hash_hex();
        let mut txn = self.backend.begin(Access::Write, LOCK_SCOPE)?;
        // A fresh id; 48 random bits collide rarely, but never silently.
        let mut id = random_hex(ID_HEX_LEN / 2)?;
        while txn.retrieve(&id_key(&id))?.is_some() {
            id = random_hex(ID_HEX_LEN / 2)?;
        }
        let info = TokenInfo {
            id: id.clone(),
            tenant: req.tenant.name().to_owned(),
            role: req.role,
            name: req.name,
            created_ms: now,
            expires_ms,
        };
        let mut index: Index = read_json(&mut *txn, INDEX_KEY)?.unwrap_or_default();
        index.tokens.push(info.clone());
        write_json(&mut *txn, &hash_key(&hash), &Record { info: info.clone(), sha256: hash.clone() })?;
        txn.store(&id_key(&id), hash.as_bytes())?;
        write_json(&mut *txn, INDEX_KEY, &index)?;
        txn.commit()?;
        Ok((token, info))
    }

    /// Every token's metadata, oldest first (expired ones included, until
    /// revoked).
    pub fn list(&self) -> Result<Vec<TokenListing>, TokenError> {
        let mut txn = self.backend.begin(Access::Read, LOCK_SCOPE)?;
        let mut index: Index = read_json(&mut *txn, INDEX_KEY)?.unwrap_or_default();
        // Stable: tokens created in the same millisecond keep their order.
        index.tokens.sort_by_key(|t| t.created_ms);
        let keys: Vec<String> = index.tokens.iter().map(|t| used_key(&t.id)).collect();
        let used = txn.retrieve_many(&keys)?;
        index
            .tokens
            .into_iter()
            .zip(used)
            .map(|(info, used)| {
                let last_used_ms = match used {
                    None => None,
                    Some(bytes) => Some(std::str::from_utf8(&bytes).ok().and_then(|s| s.parse().ok()).ok_or_else(
                        || TokenError::Store(VaultError::Corrupt(format!("token record {}", used_key(&info.id)))),
                    )?),
                };
                Ok(TokenListing { info, last_used_ms })
            })
            .collect()
    }

    /// Revokes the token with this id: its record is deleted, so the next
    /// request with it, through any replica, is refused.
    pub fn revoke(&self, id: &str) -> Result<TokenInfo, TokenError> {
        if !is_token_id(id) {
            // Not repeated: it may be the token itself, pasted by mistake.
            return Err(TokenError::InvalidArgument(format!(
                "not a token id ({ID_HEX_LEN} lowercase hex characters, as `secrets token list` shows them)"
            )));
        }
        let mut txn = self.backend.begin(Access::Write, LOCK_SCOPE)?;
        let Some(hash) = txn.retrieve(&id_key(id))? else {
            return Err(TokenError::NotFound(id.to_owned()));
        };
        let hash = String::from_utf8(hash)
            .ok()
            .filter(|h| h.len() == TOKEN_HEX_LEN && is_lower_hex(h))
            .ok_or_else(|| TokenError::Store(VaultError::Corrupt(format!("token record {}", id_key(id)))))?;
        let mut index: Index = read_json(&mut *txn, INDEX_KEY)?.unwrap_or_default();
        let record: Option<Record> = read_json(&mut *txn, &hash_key(&hash))?;
        let info = match index.tokens.iter().position(|t| t.id == id) {
            Some(i) => index.tokens.remove(i),
            None => record.map(|r| r.info).ok_or_else(|| TokenError::NotFound(id.to_owned()))?,
        };
        txn.delete(&hash_key(&hash))?;
        txn.delete(&id_key(id))?;
        txn.delete(&used_key(id))?;
        write_json(&mut *txn, INDEX_KEY, &index)?;
        txn.commit()?;
        self.recorded_uses.lock().remove(id);
        Ok(info)
    }

    /// Who a presented token is: its id, tenant and role. Unknown,
    /// revoked and expired tokens are errors (which the HTTP API answers
    /// all alike).
    pub fn verify(&self, token: &Token) -> Result<Grant, TokenError> {
        self.verify_at(token, now_ms())
    }

    fn verify_at(&self, token: &Token, now: u64) -> Result<Grant, TokenError> {
        let hash = token.hash_hex();
        let mut txn = self.backend.begin(Access::Read, LOCK_SCOPE)?;
        let record: Record = read_json(&mut *txn, &hash_key(&hash))?.ok_or(TokenError::Unknown)?;
        drop(txn);
        if !constant_time_eq(record.sha256.as_bytes(), hash.as_bytes()) {
            // A record under another hash's key: tampering or corruption.
            // Refused like an unknown token.
            tracing::warn!(token_id = %record.info.id, "token record stored under a key that is not its hash; refused");
            return Err(TokenError::Unknown);
        }
        if record.info.is_expired_at(now) {
            return Err(TokenError::Expired);
        }
        let scope = Scope::tenant(&record.info.tenant)
            .map_err(|e| TokenError::Store(VaultError::Corrupt(format!("token {}: {e}", record.info.id))))?;
        if let Err(e) = self.record_use(&record.info.id, now) {
            tracing::warn!(token_id = %record.info.id, "recording the token's last use: {e}");
        }
        let info = record.info;
        Ok(Grant { token_id: info.id, scope, role: info.role, created_ms: info.created_ms, expires_ms: info.expires_ms })
    }

    /// Records that token `id` was used at `now`, unless this process did
    /// so less than [`LAST_USED_EVERY`] ago. A token revoked meanwhile
    /// gets no record.
    fn record_use(&self, id: &str, now: u64) -> Result<(), TokenError> {
        {
            let mut recorded = self.recorded_uses.lock();
            let every = LAST_USED_EVERY.as_millis() as u64;
            if recorded.get(id).is_some_and(|&at| now.saturating_sub(at) < every) {
                return Ok(());
            }
            // Marked before the write: concurrent requests of the token do
            // not write too, and a failing store is not retried per request.
            recorded.insert(id.to_owned(), now);
        }
        let mut txn = self.backend.begin(Access::Write, LOCK_SCOPE)?;
        if txn.retrieve(&id_key(id))?.is_none() {
            return Ok(());
        }
        txn.store(&used_key(id), now.to_string().as_bytes())?;
        Ok(txn.commit()?)
    }

    /// Whether the store answers: one read transaction reading the token
    /// index (for readiness probes).
    pub fn check_store(&self) -> Result<(), VaultError> {
        let mut txn = self.backend.begin(Access::Read, LOCK_SCOPE)?;
        txn.retrieve(INDEX_KEY)?;
        Ok(())
    }
}

fn humantime_days(d: Duration) -> String {
    format!("{} days", d.as_secs() / 86_400)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backends::MemoryBackend;

    fn store() -> (TokenStore, Arc<dyn Backend>) {
        let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
        (TokenStore::new(backend.clone()), backend)
    }

    fn new_token(tenant: &str, role: Role, ttl: Option<Duration>) -> NewToken {
        NewToken { tenant: Scope::tenant(tenant).unwrap(), role, name: Some("ci".into()), ttl }
    }

    #[test]
    fn format_is_prefix_and_64_lowercase_hex() {
        let t = Token::generate().unwrap();
        let s = t.expose();
        assert_eq!(s.len(), 4 + 64);
        assert!(s.starts_with("sec_") && is_lower_hex(&s[4..]));
        assert!(Token::parse(s).is_ok());
        assert_ne!(Token::generate().unwrap().expose(), s, "random");
        let good = format!("sec_{}", "a1".repeat(32));
        assert!(Token::parse(&good).is_ok());
        for bad in [
            String::new(),
            "sec_".into(),
            "a1".repeat(32),
            format!("SEC_{}", "a1".repeat(32)),
            format!("sec_{}", "A1".repeat(32)),
            format!("sec_{}", "a1".repeat(31)),
            format!("sec_{}0", "a1".repeat(32)),
            format!("sec_{}g", "a1".repeat(31) + "a"),
            format!(" sec_{}", "a1".repeat(32)),
        ] {
            assert_eq!(Token::parse(&bad).unwrap_err(), TokenError::Malformed, "{bad:?}");
        }
    }

    #[test]
    fn hash_is_sha256_hex_of_the_whole_token() {
        // `printf 'sec_%s' 000...0 | sha256sum`, computed outside Rust.
        let t = Token::parse(&format!("sec_{}", "0".repeat(64))).unwrap();
        assert_eq!(t.hash_hex(), "a19aed04f79acf1c100c525e53bd4c328ca8142f13bae9bca5247d486782b50f");
    }

    #[test]
    fn constant_time_eq_compares_whole_strings() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"xbc"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn debug_and_errors_never_show_the_token() {
        let t = Token::generate().unwrap();
        let secret = t.expose().to_owned();
        assert_eq!(format!("{t:?}"), "Token([REDACTED])");
        let err = Token::parse(&format!("{secret}x")).unwrap_err();
        assert!(!format!("{err} {err:?}").contains(&secret[4..]));
        let (tokens, _) = store();
        let err = tokens.revoke(&secret).unwrap_err();
        assert!(!format!("{err} {err:?}").contains(&secret[4..]), "{err}");
    }

    #[test]
    fn create_verify_list_revoke() {
        let (tokens, backend) = store();
        let (t, info) = tokens.create(new_token("acme", Role::Write, None)).unwrap();
        assert!(is_token_id(&info.id));
        assert!(!t.expose().contains(&info.id), "the id is not part of the token");
        let grant = tokens.verify(&t).unwrap();
        assert_eq!(
            grant,
            Grant {
                token_id: info.id.clone(),
                scope: Scope::tenant("acme").unwrap(),
                role: Role::Write,
                created_ms: info.created_ms,
                expires_ms: info.expires_ms,
            }
        );
        let (t2, info2) = tokens.create(new_token("other", Role::Inject, None)).unwrap();
        let listing = |info: &TokenInfo, last_used_ms| TokenListing { info: info.clone(), last_used_ms };
        let used = tokens.list().unwrap()[0].last_used_ms.expect("verify records the use");
        assert!(used >= info.created_ms, "{used}");
        assert_eq!(tokens.list().unwrap(), vec![listing(&info, Some(used)), listing(&info2, None)]);

        // Only hashes are stored: no entry holds the token's random part.
        let mut txn = backend.begin(Access::Read, LOCK_SCOPE).unwrap();
        for key in [INDEX_KEY.to_string(), hash_key(&t.hash_hex()), id_key(&info.id)] {
            let bytes = txn.retrieve(&key).unwrap().unwrap();
            assert!(!String::from_utf8_lossy(&bytes).contains(&t.expose()[4..]), "{key}");
            assert!(key.starts_with("sys/tokens/") && !key.starts_with("t/"));
        }
        drop(txn);

        assert_eq!(tokens.revoke(&info.id).unwrap(), info);
        assert_eq!(tokens.verify(&t).unwrap_err(), TokenError::Unknown);
        assert_eq!(tokens.revoke(&info.id).unwrap_err(), TokenError::NotFound(info.id.clone()));
        assert_eq!(tokens.list().unwrap(), vec![listing(&info2, None)]);
        let mut txn = backend.begin(Access::Read, LOCK_SCOPE).unwrap();
        assert_eq!(txn.retrieve(&used_key(&info.id)).unwrap(), None, "revoke removes the last use");
        drop(txn);
        assert_eq!(tokens.verify(&t2).unwrap().role, Role::Inject);
        let unknown = Token::generate().unwrap();
        assert_eq!(tokens.verify(&unknown).unwrap_err(), TokenError::Unknown);
    }

    #[test]
    fn last_use_is_written_at_most_once_a_minute_per_process() {
        let (tokens, backend) = store();
        let (t, info) = tokens.create_at(new_token("acme", Role::Read, None), 1_000).unwrap();
        let last_used = || tokens.list().unwrap()[0].last_used_ms;
        assert_eq!(last_used(), None);
        tokens.verify_at(&t, 10_000).unwrap();
        assert_eq!(last_used(), Some(10_000));
        tokens.verify_at(&t, 69_999).unwrap();
        assert_eq!(last_used(), Some(10_000), "within a minute: not written again");
        tokens.verify_at(&t, 70_000).unwrap();
        assert_eq!(last_used(), Some(70_000));
        // Another process (another TokenStore) records its own uses.
        let other = TokenStore::new(backend.clone());
        other.verify_at(&t, 80_000).unwrap();
        assert_eq!(last_used(), Some(80_000));
        // A corrupt record is an error of `list`, not a guess.
        let mut txn = backend.begin(Access::Write, LOCK_SCOPE).unwrap();
        txn.store(&used_key(&info.id), b"yesterday").unwrap();
        txn.commit().unwrap();
        assert!(matches!(tokens.list().unwrap_err(), TokenError::Store(VaultError::Corrupt(_))));
    }

    #[test]
    fn expiry() {
        let (tokens, _) = store();
        let (t, info) = tokens.create_at(new_token("acme", Role::Read, Some(Duration::from_secs(60))), 1_000).unwrap();
        assert_eq!(info.expires_ms, Some(61_000));
        assert!(tokens.verify_at(&t, 60_999).is_ok());
        assert_eq!(tokens.verify_at(&t, 61_000).unwrap_err(), TokenError::Expired);
        assert!(info.is_expired_at(61_000) && !info.is_expired_at(60_999));
        for ttl in [Duration::ZERO, MAX_TTL + Duration::from_secs(1)] {
            assert!(matches!(tokens.create(new_token("acme", Role::Read, Some(ttl))), Err(TokenError::InvalidArgument(_))));
        }
    }

    #[test]
    fn names_roles_and_ids_are_checked() {
        let (tokens, _) = store();
        for name in ["", "a\nb", &"x".repeat(65)] {
            let req = NewToken { name: Some(name.to_string()), ..new_token("acme", Role::Read, None) };
            assert!(matches!(tokens.create(req), Err(TokenError::InvalidArgument(_))), "{name:?}");
        }
        assert_eq!("inject".parse::<Role>().unwrap(), Role::Inject);
        assert!("admin".parse::<Role>().is_err());
        assert!(matches!(tokens.revoke("ABCDEF012345"), Err(TokenError::InvalidArgument(_))));
        assert!(matches!(tokens.revoke("abcdef012345"), Err(TokenError::NotFound(_))));
    }

    #[test]
    fn roles_allow_what_the_issue_says() {
        use Operation::*;
        let all = [
            Metadata, Value, List, Env, Mounts, Set, Delete, Rotate, DeleteVersions, Undelete, Destroy, Rollback, Instances,
            LookupSelf,
        ];
        let allowed = |r: Role| all.iter().copied().filter(|op| r.allows(*op)).collect::<Vec<_>>();
        assert_eq!(allowed(Role::Write), all.to_vec());
        assert_eq!(allowed(Role::Read), vec![Metadata, Value, List, Env, Mounts, Instances, LookupSelf]);
        assert_eq!(allowed(Role::Inject), vec![Env, Mounts, LookupSelf]);
        let writes = all.iter().copied().filter(|op| op.writes()).collect::<Vec<_>>();
        assert_eq!(writes, vec![Set, Delete, Rotate, DeleteVersions, Undelete, Destroy, Rollback]);
        let values = all.iter().copied().filter(|op| op.returns_values()).collect::<Vec<_>>();
        assert_eq!(values, vec![Value, Env, Mounts]);
    }

    #[test]
    fn a_record_under_a_foreign_hash_is_refused() {
        let (tokens, backend) = store();
        let (a, _) = tokens.create(new_token("acme", Role::Write, None)).unwrap();
        let b = Token::generate().unwrap();
        // Copy a's record to b's key: b must still be refused.
        let mut txn = backend.begin(Access::Write, LOCK_SCOPE).unwrap();
        let record = txn.retrieve(&hash_key(&a.hash_hex())).unwrap().unwrap();
        txn.store(&hash_key(&b.hash_hex()), &record).unwrap();
        txn.commit().unwrap();
        assert_eq!(tokens.verify(&b).unwrap_err(), TokenError::Unknown);
    }
}
