//! The secrets logic: validation, versioning and vault layout.
//!
//! This crate is plain Rust behind the small [`Vault`] trait, so the same code
//! runs natively (unit tests, the native baseline of benchmarks) and inside the
//! `secrets-plugin` WebAssembly component, where `component.rs` is a thin
//! wit-bindgen layer that maps the WIT imports onto [`Vault`] and the exports
//! onto [`Secrets`].
//!
//! Threat model, from this side of the sandbox: the component trusts nothing
//! it is given. Every instance id, key and value is validated before anything
//! touches the vault ([`validate`]), and every vault key it builds is injective
//! and confined to its instance's namespace ([`layout`]). It never learns which
//! tenant it serves: the host prefixes every vault key with the tenant, so even
//! a compromised component cannot name another tenant's data.

pub mod stored_index;
pub mod stored_key;
pub mod layout;
pub mod limits;
pub mod model;
pub mod records;
pub mod registry;
pub mod service;
pub mod tls;
pub mod validate;

#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code, reason = "wit-bindgen's generated exports")]
mod component;

pub use limits::Limits;
pub use model::{Error, Mount, Secret, SecretMeta, SecretType, SetRequest, Vault, VaultError};
pub use service::Secrets;
