//! Shared helpers of the host tests: one compiled sandbox per test process,
//! and fixtures.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use secrets_host::{Backend, Limits, Sandbox, Secrets};

/// The component compiled once per test process and shared by every test.
pub fn sandbox() -> Arc<Sandbox> {
    static SANDBOX: OnceLock<Arc<Sandbox>> = OnceLock::new();
    SANDBOX.get_or_init(|| Arc::new(Sandbox::new().expect("the embedded component compiles"))).clone()
}

/// A service on `backend` with the default limits.
pub fn service(backend: Arc<dyn Backend>) -> Secrets {
    Secrets::with_sandbox(sandbox(), backend, Limits::default())
}

/// A service on `backend` with explicit limits.
pub fn service_with(backend: Arc<dyn Backend>, limits: Limits) -> Secrets {
    Secrets::with_sandbox(sandbox(), backend, limits)
}

/// A PEM fixture of the guest's TLS tests.
pub fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../guest/testdata").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A TLS bundle (certificate then key) from two fixtures.
pub fn tls_bundle(cert: &str, key: &str) -> Vec<u8> {
    let mut v = fixture(cert);
    v.extend(fixture(key));
    v
}
