//! The named limits of the secrets logic.
//!
//! The host chooses the limits in force through the `context` import; each is
//! clamped to its hard maximum here, so a misconfigured host cannot lift them.

/// Largest value accepted, whatever the host asks: 64 KiB, the limit of AWS
/// Secrets Manager and GCP Secret Manager.
pub const HARD_MAX_VALUE_BYTES: u32 = 64 * 1024;
/// Most keys one instance may hold, whatever the host asks.
pub const HARD_MAX_KEYS_PER_INSTANCE: u32 = 10_000;
/// Most versions kept per key, whatever the host asks.
pub const HARD_MAX_VERSIONS_PER_KEY: u32 = 1_000;

/// Default keys per instance.
pub const DEFAULT_MAX_KEYS_PER_INSTANCE: u32 = 1_000;
/// Default versions kept per key (as AWS Secrets Manager keeps about 100).
pub const DEFAULT_MAX_VERSIONS_PER_KEY: u32 = 100;

/// The limits in force for one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_value_bytes: u32,
    pub max_keys_per_instance: u32,
    pub max_versions_per_key: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_value_bytes: HARD_MAX_VALUE_BYTES,
            max_keys_per_instance: DEFAULT_MAX_KEYS_PER_INSTANCE,
            max_versions_per_key: DEFAULT_MAX_VERSIONS_PER_KEY,
        }
    }
}

impl Limits {
    /// The limits clamped to their hard maxima (and at least 1 key and 1
    /// version; a value limit of 0 allows only empty values).
    pub fn clamped(self) -> Limits {
        Limits {
            max_value_bytes: self.max_value_bytes.min(HARD_MAX_VALUE_BYTES),
            max_keys_per_instance: self.max_keys_per_instance.clamp(1, HARD_MAX_KEYS_PER_INSTANCE),
            max_versions_per_key: self.max_versions_per_key.clamp(1, HARD_MAX_VERSIONS_PER_KEY),
        }
    }
}
