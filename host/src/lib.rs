//! The wasmtime host of the secrets component.
//!
//! # Threat model
//! - **Callers** are authenticated by the embedding control plane, which
//!   hands each a [`Scope`] naming its tenant. Every vault key of a call is
//!   prefixed with that tenant by the host, outside the sandbox, so a call
//!   for tenant A cannot read, list, inject or overwrite tenant B's secrets,
//!   even with the same instance ids and keys.
//! - **The component** (the secrets logic, `guest/`) is treated as
//!   untrusted code: it runs in a fresh wasmtime instance per call, with a
//!   memory cap, and is granted exactly two imports: the call's vault
//!   transaction and the context (clock, limits). No files, network,
//!   environment or clocks of its own. A trap discards the instance and
//!   rolls the call's writes back.
//! - **Storage** sees only opaque keys (hex-encoded, tenant-prefixed) and
//!   values; backends that persist encrypt values at rest.
//! - **Values** never appear in `Debug`, serialized output or tracing spans:
//!   they live in [`SecretValue`], zeroized on drop. Copies that wasmtime
//!   makes while moving values into and out of a call's linear memory are
//!   not zeroized by us; that memory is released when the call's store is
//!   dropped.

mod bindings;
pub mod cache;
pub mod component;
pub mod crypto;
pub mod error;
pub mod memory;
pub mod openbao;
pub mod postgres;
pub mod sandbox;
pub mod sealed;
pub mod secrets;
pub mod sqlite;
pub mod store_url;
pub mod tenant;
pub mod types;
pub mod vault;

pub use error::Error;
pub use memory::MemoryBackend;
pub use sandbox::Sandbox;
pub use secrets::{Resolved, Secrets};
pub use secrets_guest::Limits;
pub use secrets_guest::limits as limit;
pub use tenant::Scope;
pub use types::{Mount, Secret, SecretMeta, SecretType, SecretValue, SetRequest};
pub use vault::{Access, Backend, Transaction, Vault, VaultError};
