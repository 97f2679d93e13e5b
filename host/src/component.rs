//! The secrets component, built from `guest/` by `build.rs` and embedded.

/// The component's bytes (a WebAssembly component, not a core module).
pub const COMPONENT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/secrets_plugin.wasm"));

/// The imports the component is allowed to have: the vault and the context.
/// The host refuses a component that imports anything else.
pub const ALLOWED_IMPORTS: &[&str] = &["cp:secrets/vault@0.1.0", "cp:secrets/context@0.1.0"];
