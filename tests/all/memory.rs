//! The in-memory backend passes the conformance suite.

use std::sync::Arc;

use secrets_host::MemoryBackend;

crate::conformance_tests!(Arc::new(MemoryBackend::new()));
