//! The wasmtime host of the secrets component.
//!
//! # Threat model
//! - **Callers** are authenticated by the embedding control plane, which
//!   hands each a [`Scope`] naming its tenant. Every vault key of a call is
//!   prefixed with that tenant by the host, outside the sandbox, so a call
//!   for tenant A cannot read, list, inject or overwrite tenant B's secrets,
//!   even with the same instance ids and keys. `secrets serve` (module `http`,
//!   feature `http`) is such a control plane: its bearer tokens
//!   ([`tokens`]) each name one tenant and role.
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
//!
//! # Does not protect
//! - Against the host process itself, or whoever can read its memory or
//!   the store's master key: the host holds both.
//! - Against the embedding control plane handing out the wrong [`Scope`]:
//!   authentication is its job.
//! - Key names, sizes and timing of writes are visible to the storage.
//!
//! # Layout
//! - [`Secrets`] (`secrets.rs`): the façade; one call = one transaction.
//! - [`Sandbox`] (`sandbox.rs`): the engine, its epoch ticker, per-call
//!   instances, capabilities and limits; `bindings.rs` holds what `bindgen!`
//!   generates, private to the crate.
//! - [`backends`]: the [`Backend`] contract, [`StoreConfig`] (store URLs),
//!   and one module per backend, each behind a cargo feature.
//! - [`cache`]: the compiled-component cache of the CLI.
//! - [`tokens`]: bearer tokens of the HTTP API (hashes in the store).
//! - `http` (feature `http`): the HTTP API of `secrets serve`.
//!
//! # Blocking
//! Every call of [`Secrets`] blocks its thread: it runs the component and
//! talks to the backend synchronously (SQLite, PostgreSQL and OpenBao do
//! I/O). From async code, run calls on a blocking pool, e.g. tokio's
//! `spawn_blocking`, with the `Secrets` value cloned into the closure.

#![warn(missing_docs)]

pub mod backends;
mod bindings;
pub mod cache;
pub mod component;
pub mod env_format;
pub mod error;
#[cfg(feature = "http")]
pub mod http;
pub mod sandbox;
pub mod secrets;
pub mod tenant;
pub mod tokens;
pub mod types;

pub use backends::{Access, Backend, MemoryBackend, StoreConfig, Transaction, Vault, VaultError};
pub use error::Error;
pub use sandbox::{Allocation, Sandbox, SandboxEngine};
pub use secrets::{Resolved, Secrets};
pub use secrets_guest::{Limits, limits};
pub use tenant::Scope;
pub use types::{Mount, Secret, SecretMeta, SecretType, SecretValue, SetRequest};
