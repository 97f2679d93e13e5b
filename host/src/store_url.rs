//! Store URLs: one string selects and configures a backend.
//!
//! | URL | backend |
//! |---|---|
//! | `memory:` | in-process memory, gone when the process exits |
//! | `sqlite:PATH` | embedded SQLite file, encrypted at rest (the default) |
//! | `postgres://...`, `postgresql://...` | PostgreSQL, shared by many host replicas, encrypted at rest |
//! | `openbao+http://HOST:PORT/MOUNT?...`, `openbao+https://...` (also `vault+http(s)://`) | OpenBao / HashiCorp Vault KV v2 |
//!
//! The default is `sqlite:` at `$XDG_DATA_HOME/secrets/secrets.db`, or
//! `~/.local/share/secrets/secrets.db` when `XDG_DATA_HOME` is unset.

use std::path::PathBuf;
use std::sync::Arc;

use crate::memory::MemoryBackend;
use crate::openbao::OpenBaoBackend;
use crate::postgres::PostgresBackend;
use crate::sqlite::SqliteBackend;
use crate::vault::{Backend, VaultError};

/// The environment variable that sets the store URL.
pub const STORE_ENV: &str = "SECRETS_STORE";

/// The default SQLite database path (XDG data directory).
pub fn default_sqlite_path() -> PathBuf {
    let data = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    data.join("secrets").join("secrets.db")
}

/// The default store URL.
pub fn default_url() -> String {
    format!("sqlite:{}", default_sqlite_path().display())
}

/// Opens the backend a store URL names.
pub fn open(url: &str) -> Result<Arc<dyn Backend>, VaultError> {
    let scheme = url.split_once(':').map(|(s, _)| s).unwrap_or("");
    match scheme {
        "memory" if url == "memory:" => Ok(Arc::new(MemoryBackend::new())),
        "sqlite" => Ok(Arc::new(SqliteBackend::from_url(url)?)),
        "postgres" | "postgresql" => Ok(Arc::new(PostgresBackend::from_url(url)?)),
        "openbao+http" | "openbao+https" | "vault+http" | "vault+https" => Ok(Arc::new(OpenBaoBackend::from_url(url)?)),
        _ => Err(VaultError::Rejected(format!(
            "unknown store URL {:?}: use memory:, sqlite:PATH, postgres://..., or openbao+http(s)://HOST:PORT/MOUNT",
            redact_url(url)
        ))),
    }
}

/// A URL with any password replaced, for messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_schemes_are_named_and_passwords_redacted() {
        let err = open("mysql://root:hunter2@db/x").err().unwrap();
        let msg = err.to_string();
        assert!(msg.contains("unknown store URL") && !msg.contains("hunter2"), "{msg}");
        assert_eq!(redact_url("postgres://u:pw@h:5/db"), "postgres://u:***@h:5/db");
        assert!(open("memory:").is_ok());
        assert!(open("memory:x").is_err());
    }

    #[test]
    fn default_path_follows_xdg() {
        assert!(default_url().starts_with("sqlite:"));
        assert!(default_sqlite_path().ends_with("secrets/secrets.db"));
    }
}
