//! `secrets token create|list|revoke`: the bearer tokens of `secrets serve`.
//!
//! `create` prints the token once, alone on stdout (the store keeps only
//! its SHA-256); what it is for goes to stderr. `list` shows ids and
//! metadata, never a token or a hash. `revoke` takes an id.

use std::time::{Duration, UNIX_EPOCH};

use secrets_host::Scope;
use secrets_host::backends::VaultError;
use secrets_host::tokens::{NewToken, TokenError, TokenInfo, TokenStore};

use crate::args::TokenCommand;
use crate::{CliError, EXIT_UNAVAILABLE, json, out, table};

impl From<TokenError> for CliError {
    fn from(e: TokenError) -> Self {
        let code = match e {
            TokenError::NotFound(_) => 3,
            TokenError::Store(VaultError::Unavailable(_)) => EXIT_UNAVAILABLE,
            _ => 1,
        };
        CliError { code, message: e.to_string() }
    }
}

fn time(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

fn expires(info: &TokenInfo) -> String {
    match info.expires_ms {
        None => "never".into(),
        Some(ms) if info.is_expired() => format!("{} (expired)", time(ms)),
        Some(ms) => time(ms),
    }
}

/// Runs a token command. `tenant` is the `--tenant` given explicitly (or
/// through SECRETS_TENANT), `None` when only the default applies: a token
/// is never minted for a tenant nobody named.
pub fn run(tokens: &TokenStore, command: TokenCommand, tenant: Option<&Scope>) -> Result<u8, CliError> {
    match command {
        TokenCommand::Create { role, ttl, name } => {
            let Some(tenant) = tenant else {
                return Err(CliError {
                    code: 2,
                    message: "`token create` needs --tenant NAME (or SECRETS_TENANT): the tenant the token acts for".into(),
                });
            };
            let (token, info) = tokens.create(NewToken { tenant: tenant.clone(), role: role.into(), name, ttl })?;
            out(format!("{}\n", token.expose()).as_bytes())?;
            eprintln!(
                "created token {} for tenant {:?}, role {}, expires {}; it is shown only this once",
                info.id,
                info.tenant,
                info.role,
                expires(&info)
            );
        }
        TokenCommand::List { json: as_json } => {
            let list = tokens.list()?;
            if as_json {
                let now = std::time::SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
                let rows: Vec<serde_json::Value> = list
                    .iter()
                    .map(|t| {
                        let mut v = serde_json::to_value(t).unwrap_or_default();
                        v["expired"] = t.info.is_expired_at(now).into();
                        v
                    })
                    .collect();
                json(&rows)?;
            } else if list.is_empty() {
                eprintln!("no tokens");
            } else {
                let rows = list
                    .iter()
                    .map(|t| {
                        let info = &t.info;
                        vec![
                            info.id.clone(),
                            info.tenant.clone(),
                            info.role.to_string(),
                            info.name.clone().unwrap_or_else(|| "-".into()),
                            time(info.created_ms),
                            expires(info),
                            t.last_used_ms.map_or_else(|| "never".into(), time),
                        ]
                    })
                    .collect();
                out(table(&["ID", "TENANT", "ROLE", "NAME", "CREATED", "EXPIRES", "LAST USED"], rows).as_bytes())?;
            }
        }
        TokenCommand::Revoke { id } => {
            let info = tokens.revoke(&id)?;
            out(format!("revoked {} (tenant {:?}, role {})\n", info.id, info.tenant, info.role).as_bytes())?;
        }
    }
    Ok(0)
}
