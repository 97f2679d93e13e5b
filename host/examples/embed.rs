//! Embedding the secrets host in a control plane: one `Secrets` service per
//! process, a `Scope` per authenticated tenant, and a call per operation.
//!
//! `cargo run -p secrets-host --example embed`

use std::sync::Arc;

use secrets_host::{MemoryBackend, Scope, SecretType, Secrets, SetRequest, StoreConfig};

fn main() -> anyhow::Result<()> {
    // `StoreConfig::parse("sqlite:/var/lib/cp/secrets.db")?.open()?` etc. in production.
    let backend = match std::env::args().nth(1) {
        Some(url) => StoreConfig::parse(&url)?.open()?,
        None => Arc::new(MemoryBackend::new()),
    };
    let secrets = Secrets::new(backend)?;
    let tenant = Scope::tenant("acme")?;

    secrets.set(&tenant, SetRequest::new("web-1", "DATABASE_URL", SecretType::Env, "postgres://app@db/app"))?;
    let meta = secrets.set(&tenant, SetRequest::new("web-1", "DATABASE_URL", SecretType::Env, "postgres://app@db2/app"))?;
    println!("set {} v{}", meta.key, meta.version);
    for m in secrets.list(&tenant, "web-1")? {
        println!("listed {} ({}) v{}, {} bytes", m.key, m.kind, m.version, m.size);
    }
    let env = secrets.inject(&tenant, "web-1")?;
    println!("inject for container start-up: {env:?}"); // values print as [REDACTED]
    Ok(())
}
