//! Tenants and the host's half of the key layout.
//!
//! The component builds vault keys for one instance namespace; the host puts
//! every one of them under `t/<hex tenant>/`. The component never sees the
//! tenant, so a component instance serving tenant A cannot name, let alone
//! reach, a key of tenant B, whatever keys it builds.

use crate::error::Error;

/// Longest tenant name, in bytes.
pub const MAX_TENANT_BYTES: usize = 128;

/// The tenant a call acts for. Obtaining one is the caller's proof of
/// authentication (the CLI and a later HTTP API decide who may hold which).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scope {
    tenant: String,
    prefix: String,
}

impl Scope {
    /// A tenant's scope. Names follow the rule of instance ids: 1..=128
    /// bytes of letters, digits, `_`, `-`, `.`, starting with a letter,
    /// digit or `_`, without `..`.
    pub fn tenant(name: &str) -> Result<Scope, Error> {
        secrets_guest::validate::instance_id(name).map_err(|e| match Error::from(e) {
            Error::InvalidArgument(m) => Error::InvalidArgument(m.replacen("instance id", "tenant", 1)),
            other => other,
        })?;
        Ok(Scope { tenant: name.to_owned(), prefix: format!("t/{}/", hex::encode(name)) })
    }

    /// The tenant's name.
    pub fn name(&self) -> &str {
        &self.tenant
    }

    /// The full vault key of a key the component built.
    pub(crate) fn vault_key(&self, component_key: &str) -> String {
        format!("{}{component_key}", self.prefix)
    }

    /// What concurrent writers serialise on: the whole tenant, because a
    /// write that adds an instance's first key or removes its last one
    /// also writes the tenant's list of instances.
    pub(crate) fn lock_scope(&self) -> &str {
        self.prefix.trim_end_matches('/')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_disjoint_and_validated() {
        let a = Scope::tenant("a").unwrap();
        let ab = Scope::tenant("ab").unwrap();
        assert_eq!(a.vault_key("i/00/index"), "t/61/i/00/index");
        assert!(!ab.vault_key("x").starts_with(&a.vault_key("")));
        assert!(matches!(Scope::tenant("a/b"), Err(Error::InvalidArgument(m)) if m.starts_with("tenant")));
        assert!(Scope::tenant("").is_err());
    }
}
