//! The sandbox: one compiled component per engine, a fresh store and
//! instance for every call.
//!
//! A call's instance gets the tenant-prefixed vault of its transaction and
//! the context (clock, limits), nothing else: no WASI, no files, no sockets,
//! no environment. The host refuses a component importing anything beyond
//! [`ALLOWED_IMPORTS`]. Per call, linear memory is capped, the vault
//! operations and bytes stored are counted and capped, and a deadline
//! (epoch interruption) traps a call that runs too long, so a runaway
//! component cannot hold a write transaction for ever. After a trap the
//! store is dropped with the instance, so the next call starts clean.

use std::path::Path;
use std::time::Duration;

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, Store, StoreLimits, StoreLimitsBuilder};
use zeroize::Zeroize;

use crate::bindings::{self, SecretsPlugin, SecretsPluginPre, context, vault};
use crate::component::{ALLOWED_IMPORTS, COMPONENT};
use crate::error::Error;
use crate::tenant::Scope;
use crate::vault::{Transaction, VaultError};
use secrets_guest::Limits;

/// Most linear memory one call's instance may grow to.
pub const MAX_CALL_MEMORY_BYTES: usize = 64 << 20;
/// Longest vault key the component may build (before the tenant prefix).
pub const MAX_VAULT_KEY_BYTES: usize = 1024;
/// Largest vault entry the component may store (an instance index of many
/// keys is larger than any one value).
pub const MAX_VAULT_ENTRY_BYTES: usize = 8 << 20;
/// Most vault operations one call may make (inject on an instance at the
/// 10,000-key hard limit makes about 10,001).
pub const MAX_VAULT_OPS_PER_CALL: u64 = 100_000;
/// Most bytes one call may store in total.
pub const MAX_BYTES_STORED_PER_CALL: u64 = 64 << 20;
/// How long one call may run before it is interrupted (a trap), by default.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The resolution of call deadlines: the engine's epoch advances this often.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// The state of one call's store.
pub(crate) struct CallState {
    pub txn: Box<dyn Transaction>,
    scope: Scope,
    limits: Limits,
    now_ms: u64,
    store_limits: StoreLimits,
    ops: u64,
    bytes_stored: u64,
}

impl CallState {
    pub fn new(txn: Box<dyn Transaction>, scope: Scope, limits: Limits, now_ms: u64) -> Self {
        let store_limits = StoreLimitsBuilder::new()
            .memory_size(MAX_CALL_MEMORY_BYTES)
            .instances(4)
            .tables(8)
            .memories(2)
            .build();
        CallState { txn, scope, limits, now_ms, store_limits, ops: 0, bytes_stored: 0 }
    }

    /// Admits one vault operation on the component's `key` storing
    /// `bytes`: counts it against the per-call caps, checks the key and the
    /// entry size, and returns the tenant-prefixed vault key.
    fn admit(&mut self, key: &str, bytes: usize) -> Result<String, VaultError> {
        self.ops += 1;
        self.bytes_stored += bytes as u64;
        if self.ops > MAX_VAULT_OPS_PER_CALL {
            return Err(VaultError::Rejected(format!("a call may make at most {MAX_VAULT_OPS_PER_CALL} vault operations")));
        }
        if self.bytes_stored > MAX_BYTES_STORED_PER_CALL {
            return Err(VaultError::Rejected(format!("a call may store at most {MAX_BYTES_STORED_PER_CALL} bytes")));
        }
        if key.is_empty() || key.len() > MAX_VAULT_KEY_BYTES {
            return Err(VaultError::Rejected(format!(
                "vault keys are 1..={MAX_VAULT_KEY_BYTES} bytes, got {}",
                key.len()
            )));
        }
        if bytes > MAX_VAULT_ENTRY_BYTES {
            return Err(VaultError::Rejected(format!(
                "vault entries are at most {MAX_VAULT_ENTRY_BYTES} bytes, got {bytes}"
            )));
        }
        Ok(self.scope.vault_key(key))
    }
}

fn wit_vault_error(e: VaultError) -> vault::VaultError {
    match e {
        VaultError::Unavailable(m) => vault::VaultError::Unavailable(m),
        VaultError::Corrupt(m) => vault::VaultError::Corrupt(m),
        VaultError::Rejected(m) => vault::VaultError::Rejected(m),
        VaultError::Other(m) => vault::VaultError::Other(m),
    }
}

impl vault::Host for CallState {
    fn store(&mut self, key: String, mut value: Vec<u8>) -> Result<(), vault::VaultError> {
        let result = self.admit(&key, value.len()).and_then(|key| self.txn.store(&key, &value));
        value.zeroize();
        result.map_err(wit_vault_error)
    }

    fn retrieve(&mut self, key: String) -> Result<Option<Vec<u8>>, vault::VaultError> {
        let key = self.admit(&key, 0).map_err(wit_vault_error)?;
        self.txn.retrieve(&key).map_err(wit_vault_error)
    }

    fn delete(&mut self, key: String) -> Result<(), vault::VaultError> {
        let key = self.admit(&key, 0).map_err(wit_vault_error)?;
        self.txn.delete(&key).map_err(wit_vault_error)
    }

    fn rotate(&mut self, key: String) -> Result<(), vault::VaultError> {
        let key = self.admit(&key, 0).map_err(wit_vault_error)?;
        self.txn.rotate(&key).map_err(wit_vault_error)
    }
}

impl context::Host for CallState {
    fn now(&mut self) -> u64 {
        self.now_ms
    }

    fn current_limits(&mut self) -> context::Limits {
        context::Limits {
            max_value_bytes: self.limits.max_value_bytes,
            max_keys_per_instance: self.limits.max_keys_per_instance,
            max_versions_per_key: self.limits.max_versions_per_key,
        }
    }
}

/// The compiled component, ready to instantiate. Thread-safe: share one per
/// process (behind an `Arc`) and call from any thread.
pub struct Sandbox {
    engine: Engine,
    component: Component,
    pre: SecretsPluginPre<CallState>,
}

impl Sandbox {
    /// The engine configuration every sandbox uses. Part of the key of
    /// compiled-component caches: change it and caches are rebuilt.
    pub fn engine_config() -> Config {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        config
    }

    /// A new engine with [`Sandbox::engine_config`].
    pub fn new_engine() -> Result<Engine, Error> {
        Engine::new(&Self::engine_config()).map_err(sandbox_error)
    }

    /// Compiles the embedded component.
    pub fn new() -> Result<Sandbox, Error> {
        Self::compile(Self::new_engine()?)
    }

    /// Compiles the embedded component for `engine`.
    pub fn compile(engine: Engine) -> Result<Sandbox, Error> {
        let component = Component::new(&engine, COMPONENT).map_err(sandbox_error)?;
        Self::from_component(engine, component)
    }

    /// Loads a component compiled earlier by [`Sandbox::serialize`] for an
    /// engine with [`Sandbox::engine_config`].
    ///
    /// # Safety
    /// `bytes` must come from `serialize` of this build, unmodified: wasmtime
    /// checks the engine and version but runs the machine code as it is.
    pub unsafe fn deserialize(engine: Engine, bytes: &[u8]) -> Result<Sandbox, Error> {
        let component = unsafe { Component::deserialize(&engine, bytes) }.map_err(sandbox_error)?;
        Self::from_component(engine, component)
    }

    /// The compiled component's bytes, for [`Sandbox::deserialize`].
    pub fn serialize(&self) -> Result<Vec<u8>, Error> {
        self.component.serialize().map_err(sandbox_error)
    }

    /// Loads a component from a file (e.g. to check that a foreign
    /// component with other imports is refused).
    pub fn from_file(path: &Path) -> Result<Sandbox, Error> {
        let engine = Self::new_engine()?;
        let component = Component::from_file(&engine, path).map_err(sandbox_error)?;
        Self::from_component(engine, component)
    }

    fn from_component(engine: Engine, component: Component) -> Result<Sandbox, Error> {
        let imports: Vec<String> = component_imports(&engine, &component);
        if let Some(extra) = imports.iter().find(|i| !ALLOWED_IMPORTS.contains(&i.as_str())) {
            return Err(Error::Sandbox(format!(
                "the component imports {extra}; only {} may be granted",
                ALLOWED_IMPORTS.join(" and ")
            )));
        }
        let mut linker = Linker::<CallState>::new(&engine);
        SecretsPlugin::add_to_linker::<CallState, HasSelf<CallState>>(&mut linker, |s| s).map_err(sandbox_error)?;
        let pre = linker.instantiate_pre(&component).map_err(sandbox_error)?;
        let pre = SecretsPluginPre::new(pre).map_err(sandbox_error)?;
        start_epoch_ticker(&engine);
        Ok(Sandbox { engine, component, pre })
    }

    /// The names of the component's imports.
    pub fn imports(&self) -> Vec<String> {
        component_imports(&self.engine, &self.component)
    }

    /// Runs `f` on a fresh instance in a fresh store holding `state`, and
    /// interrupts it (a trap) after about `timeout`. Returns the state back
    /// for commit; on a trap it is dropped, which rolls its transaction back.
    pub(crate) fn call<R>(
        &self,
        name: &'static str,
        state: CallState,
        timeout: Duration,
        f: impl FnOnce(&bindings::api::Guest, &mut Store<CallState>) -> wasmtime::Result<R>,
    ) -> Result<(R, CallState), Error> {
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.store_limits);
        store.set_epoch_deadline(timeout.as_millis().div_ceil(EPOCH_TICK.as_millis()) as u64);
        let trap = |e: wasmtime::Error| Error::Trap { call: name, message: format!("{e:#}") };
        let plugin = self.pre.instantiate(&mut store).map_err(trap)?;
        let result = f(plugin.cp_secrets_secrets(), &mut store).map_err(trap)?;
        Ok((result, store.into_data()))
    }
}

/// Advances the engine's epoch every [`EPOCH_TICK`] while the engine lives:
/// the clock of call deadlines. The thread holds only a weak reference and
/// ends with the engine.
fn start_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("secrets-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .expect("spawning the epoch ticker");
}

fn component_imports(engine: &Engine, component: &Component) -> Vec<String> {
    component.component_type().imports(engine).map(|(name, _)| name.to_string()).collect()
}

fn sandbox_error(e: wasmtime::Error) -> Error {
    Error::Sandbox(format!("{e:#}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryBackend;
    use crate::vault::{Access, Backend};

    fn state() -> CallState {
        let txn = MemoryBackend::new().begin(Access::Write, "t").unwrap();
        CallState::new(txn, Scope::tenant("t").unwrap(), Limits::default(), 0)
    }

    #[test]
    fn vault_operations_per_call_are_capped() {
        use vault::Host;
        let mut s = state();
        for _ in 0..MAX_VAULT_OPS_PER_CALL {
            s.retrieve("k".into()).unwrap();
        }
        assert!(matches!(s.retrieve("k".into()), Err(vault::VaultError::Rejected(m)) if m.contains("vault operations")));
    }

    #[test]
    fn bytes_stored_per_call_are_capped() {
        use vault::Host;
        let mut s = state();
        let entry = vec![0u8; MAX_VAULT_ENTRY_BYTES];
        for i in 0..(MAX_BYTES_STORED_PER_CALL as usize / MAX_VAULT_ENTRY_BYTES) {
            s.store(format!("k{i}"), entry.clone()).unwrap();
        }
        assert!(matches!(s.store("more".into(), vec![0]), Err(vault::VaultError::Rejected(m)) if m.contains("at most")));
        assert!(matches!(s.store("x".repeat(MAX_VAULT_KEY_BYTES + 1), vec![]), Err(vault::VaultError::Rejected(_))));
        let mut fresh = state();
        let too_big = vec![0u8; MAX_VAULT_ENTRY_BYTES + 1];
        assert!(matches!(fresh.store("k".into(), too_big), Err(vault::VaultError::Rejected(m)) if m.contains("vault entries")));
    }
}
