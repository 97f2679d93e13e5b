//! The host's tests: one binary (each test binary would link wasmtime and
//! Cranelift again), one module per concern. Every test loads the real
//! component under wasmtime or runs the real `secrets` binary.
//!
//! Filter by module: `cargo test -p secrets-host --test all postgres::`.
//! The PostgreSQL and OpenBao tests need the servers `.ci/run` starts.

mod cli;
mod common;
mod component;
mod conformance;
mod crash;
mod fault_proxy;
mod hostile;
mod http;
mod memory;
mod openbao;
mod postgres;
mod sealed;
mod sqlite;
mod vault_api;
