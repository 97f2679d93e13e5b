//! Where things live in the vault.
//!
//! Every vault key is built from hex-encoded parts joined by `/`, so the
//! mapping from (instance, key, version) to vault key is injective and no
//! instance id or key can reach outside its own namespace: hex has no `/`,
//! no `..` and no control characters.
//!
//! ```text
//! i/<hex instance>/index                  the instance's index: one entry per key
//! i/<hex instance>/k/<hex key>/meta       the key's version history
//! i/<hex instance>/k/<hex key>/v/<n>      the value of version n
//! instances                               the tenant's instances
//! ```
//!
//! The index and the key record also carry copies of current values
//! (see `records`), so reads need not visit `v/<n>`; every value is
//! written there too.

/// The tenant's list of instances (the host prefixes every key with the
/// tenant; `i/...` keys cannot collide with it).
pub fn instances() -> String {
    "instances".to_owned()
}

/// The instance's index (read by `list`, `inject`, `mounts`).
pub fn index(instance_id: &str) -> String {
    format!("i/{}/index", hex::encode(instance_id))
}

/// The key's version history (read by `get`, `versions`).
pub fn meta(instance_id: &str, key: &str) -> String {
    format!("i/{}/k/{}/meta", hex::encode(instance_id), hex::encode(key))
}

/// The value of one version.
pub fn value(instance_id: &str, key: &str, version: u32) -> String {
    format!("i/{}/k/{}/v/{}", hex::encode(instance_id), hex::encode(key), version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_cannot_collide_or_escape() {
        // Without encoding these would both be "i/a/k/b/..."-like paths.
        assert_ne!(meta("a/k/b", "c"), meta("a", "b/k/c"));
        assert_ne!(value("a", "b", 1), value("a", "b", 11));
        assert_eq!(value("x", "../y", 3), "i/78/k/2e2e2f79/v/3");
        assert!(!index("../../etc").contains(".."));
    }
}
