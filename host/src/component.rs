//! The secrets component, built from `guest/` by `build.rs` and embedded.

/// The component's bytes (a WebAssembly component, not a core module).
pub const COMPONENT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/secrets_plugin.wasm"));

/// SHA-256 of [`COMPONENT`], computed by `build.rs`.
pub const COMPONENT_SHA256: &[u8; 32] = include_bytes!(concat!(env!("OUT_DIR"), "/secrets_plugin.sha256"));

/// The imports the component is allowed to have: the vault and the context.
/// The host refuses a component that imports anything else.
pub const ALLOWED_IMPORTS: &[&str] = &["cp:secrets/vault@0.1.0", "cp:secrets/context@0.1.0"];

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn the_embedded_digest_is_the_components() {
        assert_eq!(&Sha256::digest(COMPONENT)[..], &COMPONENT_SHA256[..]);
    }
}
