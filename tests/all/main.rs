//! The host's tests: one binary (each test binary would link wasmtime and
//! Cranelift again), one module per concern. Every test loads the real
//! component under wasmtime or runs the real `secrets` binary.
//!
//! Filter by module: `cargo test -p secrets-host --test all postgres::`.
//! The PostgreSQL, OpenBao, AWS and GCP tests need the servers and
//! emulators `.ci/run` starts.

#[cfg(feature = "awssm")]
mod awssm;
mod cli;
#[cfg(any(feature = "awssm", feature = "gcpsm"))]
mod cloud;
mod common;
mod component;
mod conformance;
mod crash;
mod fault_proxy;
#[cfg(feature = "gcpsm")]
mod gcpsm;
mod hostile;
mod http;
mod memory;
mod openbao;
mod postgres;
mod sealed;
mod sqlite;
mod vault_api;
