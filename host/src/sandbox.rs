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
//!
//! A breach of the per-call caps (vault operations, bytes stored, key or
//! entry size) traps: the untrusted component cannot catch it and carry
//! on. A backend's own failure reaches the component as a `vault-error`
//! value, and the host keeps the first one, so the caller learns its real
//! kind ([`VaultError::Unavailable`], `Corrupt`, `Rejected`) whatever the
//! component reports.
//!
//! Deadlines count ticks of the engine's epoch, which one thread per
//! [`SandboxEngine`] advances every [`EPOCH_TICK`], however many sandboxes
//! share the engine.
//!
//! Instances come from wasmtime's pooling allocator by default
//! ([`Allocation::Pooled`]): [`MAX_CONCURRENT_INSTANCES`] slots reserved
//! once per engine, reused call after call. A slot's memory is reset
//! between calls (copy-on-write images of the component's data; up to
//! [`KEEP_RESIDENT_BYTES`] of resident pages are reset in place and stay
//! mapped, the rest is returned to the kernel; where Linux offers
//! `PAGEMAP_SCAN`, 6.7+, only resident pages are reset, not the whole
//! prefix), so a call never sees what an earlier one left, as with a fresh
//! mapping, without an `mmap`/`munmap` (and the cross-core TLB shootdowns
//! they cause) per call. A call waits for a free
//! slot ([`SandboxEngine::reserve`]) before its transaction begins, so
//! calls waiting for a slot hold no lock.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, Store, StoreLimits, StoreLimitsBuilder};
use zeroize::Zeroize;

use crate::backends::{Transaction, VaultError};
use crate::bindings::{self, SecretsPlugin, SecretsPluginPre, context, vault};
use crate::component::{ALLOWED_IMPORTS, COMPONENT};
use crate::error::Error;
use crate::tenant::Scope;
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
/// Keys one `retrieve-many` may name.
pub const MAX_KEYS_PER_BATCH: usize = 1024;
/// Most bytes one call may store in total.
pub const MAX_BYTES_STORED_PER_CALL: u64 = 64 << 20;
/// How long one call may run before it is interrupted (a trap), by default.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The resolution of call deadlines: the engine's epoch advances this often.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);
/// Calls one engine runs at once with [`Allocation::Pooled`]; more wait
/// for a slot. Each slot reserves address space (not memory) for one
/// linear memory: about 4 GiB with its guard region.
pub const MAX_CONCURRENT_INSTANCES: u32 = 256;
/// Resident bytes of a pooled slot's linear memory (and tables) reset in
/// place and kept mapped between calls; pages past them go back to the
/// kernel (an `madvise`, which costs the other cores a TLB shootdown).
///
/// Every page that stays resident is reset after every later call in the
/// slot, whether that call touched it or not (`PAGEMAP_SCAN` finds the
/// resident pages; it cannot tell which ones this call wrote). So this is
/// sized to what common calls touch, not to the largest: a `set` on a
/// 1,000-key instance fits (at 128 KiB it gave pages back on every call,
/// 22% slower), while one large call no longer taxes all that follow. With
/// 2 MiB, a `mounts` of 32 files of 60 KiB made each later `get` in its
/// slot 6× slower (74 µs instead of 12 µs): it reset all the pages that
/// call had touched, every time.
pub const KEEP_RESIDENT_BYTES: usize = 192 << 10;

/// How the instances of an engine get their memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Allocation {
    /// A pool of [`MAX_CONCURRENT_INSTANCES`] slots, reused (the default).
    #[default]
    Pooled,
    /// A fresh mapping per call, unmapped after it: no address space held
    /// between calls, no cap on concurrent calls, slower.
    OnDemand,
}

/// How a vault operation of the component failed: the backend's error,
/// handed to the component as a `vault-error` value, or a breach of the
/// per-call caps, which traps (see `convert_vault_error`).
#[derive(Debug)]
pub(crate) enum VaultFault {
    /// The backend failed.
    Backend(VaultError),
    /// The component broke a per-call cap; the call is stopped.
    Limit(String),
}

impl From<VaultError> for VaultFault {
    fn from(e: VaultError) -> Self {
        VaultFault::Backend(e)
    }
}

impl From<VaultError> for vault::VaultError {
    fn from(e: VaultError) -> Self {
        match e {
            VaultError::Unavailable(m) => vault::VaultError::Unavailable(m),
            VaultError::Corrupt(m) => vault::VaultError::Corrupt(m),
            VaultError::Rejected(m) => vault::VaultError::Rejected(m),
            VaultError::Other(m) => vault::VaultError::Other(m),
        }
    }
}

impl From<vault::VaultError> for VaultError {
    fn from(e: vault::VaultError) -> Self {
        match e {
            vault::VaultError::Unavailable(m) => VaultError::Unavailable(m),
            vault::VaultError::Corrupt(m) => VaultError::Corrupt(m),
            vault::VaultError::Rejected(m) => VaultError::Rejected(m),
            vault::VaultError::Other(m) => VaultError::Other(m),
        }
    }
}

/// The state of one call's store.
pub(crate) struct CallState {
    pub txn: Box<dyn Transaction>,
    scope: Scope,
    limits: Limits,
    now_ms: u64,
    store_limits: StoreLimits,
    ops: u64,
    bytes_stored: u64,
    /// The first backend failure of the call, as the backend reported it.
    vault_failure: Option<VaultError>,
}

impl CallState {
    pub fn new(txn: Box<dyn Transaction>, scope: Scope, limits: Limits, now_ms: u64) -> Self {
        let store_limits = StoreLimitsBuilder::new()
            .memory_size(MAX_CALL_MEMORY_BYTES)
            .instances(4)
            .tables(8)
            .memories(2)
            .build();
        CallState { txn, scope, limits, now_ms, store_limits, ops: 0, bytes_stored: 0, vault_failure: None }
    }

    /// The first backend failure of the call, if any: what a `vault` error
    /// the component returns really was.
    pub fn take_vault_failure(&mut self) -> Option<VaultError> {
        self.vault_failure.take()
    }

    /// Admits one vault operation on the component's `key` storing
    /// `bytes`: counts it against the per-call caps, checks the key and the
    /// entry size, and returns the tenant-prefixed vault key.
    fn admit(&mut self, key: &str, bytes: usize) -> Result<String, VaultFault> {
        self.ops += 1;
        self.bytes_stored += bytes as u64;
        let limit = |m: String| Err(VaultFault::Limit(m));
        if self.ops > MAX_VAULT_OPS_PER_CALL {
            return limit(format!("a call may make at most {MAX_VAULT_OPS_PER_CALL} vault operations"));
        }
        if self.bytes_stored > MAX_BYTES_STORED_PER_CALL {
            return limit(format!("a call may store at most {MAX_BYTES_STORED_PER_CALL} bytes"));
        }
        if key.is_empty() || key.len() > MAX_VAULT_KEY_BYTES {
            return limit(format!("vault keys are 1..={MAX_VAULT_KEY_BYTES} bytes, got {}", key.len()));
        }
        if bytes > MAX_VAULT_ENTRY_BYTES {
            return limit(format!("vault entries are at most {MAX_VAULT_ENTRY_BYTES} bytes, got {bytes}"));
        }
        Ok(self.scope.vault_key(key))
    }
}

impl vault::Host for CallState {
    fn store(&mut self, key: String, mut value: Vec<u8>) -> Result<(), VaultFault> {
        let result = self.admit(&key, value.len()).and_then(|key| Ok(self.txn.store(&key, &value)?));
        value.zeroize();
        result
    }

    fn retrieve(&mut self, key: String) -> Result<Option<Vec<u8>>, VaultFault> {
        let key = self.admit(&key, 0)?;
        Ok(self.txn.retrieve(&key)?)
    }

    fn retrieve_many(&mut self, keys: Vec<String>) -> Result<Vec<Option<Vec<u8>>>, VaultFault> {
        if keys.len() > MAX_KEYS_PER_BATCH {
            return Err(VaultFault::Limit(format!(
                "retrieve-many names at most {MAX_KEYS_PER_BATCH} keys, got {}",
                keys.len()
            )));
        }
        let keys = keys.iter().map(|key| self.admit(key, 0)).collect::<Result<Vec<_>, _>>()?;
        Ok(self.txn.retrieve_many(&keys)?)
    }

    fn delete(&mut self, key: String) -> Result<(), VaultFault> {
        let key = self.admit(&key, 0)?;
        Ok(self.txn.delete(&key)?)
    }

    fn rotate(&mut self, key: String) -> Result<(), VaultFault> {
        let key = self.admit(&key, 0)?;
        Ok(self.txn.rotate(&key)?)
    }

    /// A backend failure becomes the component's `vault-error` (and is kept
    /// for the caller); a breach of the per-call caps traps.
    fn convert_vault_error(&mut self, fault: VaultFault) -> wasmtime::Result<vault::VaultError> {
        match fault {
            VaultFault::Backend(e) => {
                let value = e.clone().into();
                self.vault_failure.get_or_insert(e);
                Ok(value)
            }
            VaultFault::Limit(m) => Err(wasmtime::format_err!("per-call limit: {m}")),
        }
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

/// A wasmtime engine configured for the sandbox, with the thread that
/// advances its epoch (the clock of call deadlines): one per engine, so any
/// number of sandboxes sharing it keep their deadlines. Cheap to clone; the
/// ticker stops when the last clone and every sandbox on it are dropped.
#[derive(Clone)]
pub struct SandboxEngine {
    engine: Engine,
    slots: Arc<Slots>,
    _ticker: Arc<Ticker>,
}

/// The free instance slots of a pooled engine (`None`: unbounded).
struct Slots {
    free: std::sync::Mutex<Option<u32>>,
    freed: std::sync::Condvar,
}

/// A reserved instance slot ([`SandboxEngine::reserve`]); freed on drop.
pub struct Slot {
    slots: Arc<Slots>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut free = self.slots.free.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = free.as_mut() {
            *n += 1;
            self.slots.freed.notify_one();
        }
    }
}

/// Stops the epoch thread when dropped.
struct Ticker {
    stop: Arc<AtomicBool>,
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl SandboxEngine {
    /// A new engine with [`Sandbox::engine_config`] (pooled instances) and
    /// its epoch ticker.
    pub fn new() -> Result<SandboxEngine, Error> {
        Self::with_allocation(Allocation::Pooled)
    }

    /// A new engine whose instances are allocated as `allocation` says.
    pub fn with_allocation(allocation: Allocation) -> Result<SandboxEngine, Error> {
        let mut config = Sandbox::engine_config();
        let free = match allocation {
            Allocation::Pooled => {
                let mut pool = wasmtime::PoolingAllocationConfig::new();
                pool.total_component_instances(MAX_CONCURRENT_INSTANCES)
                    // Every module instance and memory of every instance in
                    // flight (the component has a few of each).
                    .total_core_instances(MAX_CONCURRENT_INSTANCES * 4)
                    .total_memories(MAX_CONCURRENT_INSTANCES * 2)
                    .total_tables(MAX_CONCURRENT_INSTANCES * 8)
                    .max_memory_size(MAX_CALL_MEMORY_BYTES)
                    .linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
                    .table_keep_resident(KEEP_RESIDENT_BYTES)
                    // Where the kernel offers it (Linux 6.7+), reset only
                    // the resident pages, not the whole kept prefix.
                    .pagemap_scan(wasmtime::Enabled::Auto);
                config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
                Some(MAX_CONCURRENT_INSTANCES)
            }
            Allocation::OnDemand => None,
        };
        let engine = Engine::new(&config).map_err(sandbox_error)?;
        let stop = Arc::new(AtomicBool::new(false));
        let (weak, stopped) = (engine.weak(), stop.clone());
        std::thread::Builder::new()
            .name("secrets-epoch".into())
            .spawn(move || {
                // Holds only a weak reference: ends with the engine, or
                // when the last `SandboxEngine` clone is dropped.
                while !stopped.load(Ordering::Relaxed)
                    && let Some(engine) = weak.upgrade()
                {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .map_err(|e| Error::Sandbox(format!("cannot start the epoch thread: {e}")))?;
        let slots = Arc::new(Slots { free: std::sync::Mutex::new(free), freed: std::sync::Condvar::new() });
        Ok(SandboxEngine { engine, slots, _ticker: Arc::new(Ticker { stop }) })
    }

    /// Waits for a free instance slot (at once with
    /// [`Allocation::OnDemand`]). Take it before anything that holds a
    /// lock, and keep it until the call's instance is dropped.
    pub fn reserve(&self) -> Slot {
        let mut free = self.slots.free.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(0) = *free {
            free = self.slots.freed.wait(free).unwrap_or_else(|e| e.into_inner());
        }
        if let Some(n) = free.as_mut() {
            *n -= 1;
        }
        Slot { slots: self.slots.clone() }
    }

    /// The wasmtime engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}

impl std::fmt::Debug for SandboxEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SandboxEngine")
    }
}

/// The compiled component, ready to instantiate. Thread-safe: share one per
/// process (behind an `Arc`) and call from any thread.
pub struct Sandbox {
    engine: SandboxEngine,
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
        // Explicit bounds checks instead of guard pages and signal handlers.
        // The guest's allocator grows its memory in every call; with guard
        // pages each growth, and the reset after the call, is an `mprotect`
        // that takes the process's mmap lock for writing and flushes every
        // other core's TLB, so two threads ran slower than one. Without
        // them a pooled slot stays accessible up to its high-water mark
        // (its contents still reset between calls).
        config.signals_based_traps(false);
        config.memory_guard_size(0);
        config
    }

    /// Compiles the embedded component on a new engine.
    pub fn new() -> Result<Sandbox, Error> {
        Self::compile(SandboxEngine::new()?)
    }

    /// Compiles the embedded component for `engine`.
    pub fn compile(engine: SandboxEngine) -> Result<Sandbox, Error> {
        let component = Component::new(&engine.engine, COMPONENT).map_err(sandbox_error)?;
        Self::from_component(engine, component)
    }

    /// Loads a component compiled earlier by [`Sandbox::serialize`] for an
    /// engine with [`Sandbox::engine_config`].
    ///
    /// # Safety
    /// `bytes` must come from `serialize` of this build, unmodified: wasmtime
    /// checks the engine and version but runs the machine code as it is.
    #[allow(unsafe_code, reason = "loading precompiled code is unsafe by nature; the caller vouches for it")]
    pub unsafe fn deserialize(engine: SandboxEngine, bytes: &[u8]) -> Result<Sandbox, Error> {
        // SAFETY: the caller guarantees `bytes` came from `serialize`.
        let component = unsafe { Component::deserialize(&engine.engine, bytes) }.map_err(sandbox_error)?;
        Self::from_component(engine, component)
    }

    /// Like [`Sandbox::deserialize`], from a file that wasmtime maps into
    /// memory rather than copies.
    ///
    /// # Safety
    /// The file must hold exactly what `serialize` of this build wrote, and
    /// nobody may change it while the sandbox lives.
    #[allow(unsafe_code, reason = "loading precompiled code is unsafe by nature; the caller vouches for it")]
    pub unsafe fn deserialize_file(engine: SandboxEngine, path: &Path) -> Result<Sandbox, Error> {
        // SAFETY: the caller guarantees the file came from `serialize`.
        let component = unsafe { Component::deserialize_file(&engine.engine, path) }.map_err(sandbox_error)?;
        Self::from_component(engine, component)
    }

    /// The compiled component's bytes, for [`Sandbox::deserialize`].
    pub fn serialize(&self) -> Result<Vec<u8>, Error> {
        self.component.serialize().map_err(sandbox_error)
    }

    /// Loads a component from a file (e.g. to check that a foreign
    /// component with other imports is refused).
    pub fn from_file(path: &Path) -> Result<Sandbox, Error> {
        let engine = SandboxEngine::new()?;
        let component = Component::from_file(&engine.engine, path).map_err(sandbox_error)?;
        Self::from_component(engine, component)
    }

    fn from_component(engine: SandboxEngine, component: Component) -> Result<Sandbox, Error> {
        let imports: Vec<String> = component_imports(&engine.engine, &component);
        if let Some(extra) = imports.iter().find(|i| !ALLOWED_IMPORTS.contains(&i.as_str())) {
            return Err(Error::Sandbox(format!(
                "the component imports {extra}; only {} may be granted",
                ALLOWED_IMPORTS.join(" and ")
            )));
        }
        let mut linker = Linker::<CallState>::new(&engine.engine);
        SecretsPlugin::add_to_linker::<CallState, HasSelf<CallState>>(&mut linker, |s| s).map_err(sandbox_error)?;
        let pre = linker.instantiate_pre(&component).map_err(sandbox_error)?;
        let pre = SecretsPluginPre::new(pre).map_err(sandbox_error)?;
        Ok(Sandbox { engine, component, pre })
    }

    /// The engine this sandbox runs on: compile another component on it to
    /// share its epoch ticker.
    pub fn engine(&self) -> &SandboxEngine {
        &self.engine
    }

    /// The names of the component's imports.
    pub fn imports(&self) -> Vec<String> {
        component_imports(&self.engine.engine, &self.component)
    }

    /// Runs `f` on a fresh instance in a fresh store holding `state`, and
    /// interrupts it (a trap) once `timeout` has passed, within about two
    /// epoch ticks after it. Returns the state back
    /// for commit; on a trap it is dropped, which rolls its transaction back.
    pub(crate) fn call<R>(
        &self,
        name: &'static str,
        state: CallState,
        timeout: Duration,
        f: impl FnOnce(&bindings::api::Guest, &mut Store<CallState>) -> wasmtime::Result<R>,
    ) -> Result<(R, CallState), Error> {
        let mut store = Store::new(&self.engine.engine, state);
        store.limiter(|s| &mut s.store_limits);
        // The ticker runs on its own, so the first tick may come at once:
        // N ticks can take as little as N - 1 tick lengths. One more, and a
        // call is never interrupted before its timeout. A zero timeout
        // stays zero ticks: the call is interrupted at its first check.
        let ticks = timeout.as_millis().div_ceil(EPOCH_TICK.as_millis()) as u64;
        store.set_epoch_deadline(if ticks == 0 { 0 } else { ticks + 1 });
        let trap = |e: wasmtime::Error| Error::Trap { call: name, message: format!("{e:#}") };
        let plugin = self.pre.instantiate(&mut store).map_err(trap)?;
        let result = f(plugin.cp_secrets_secrets(), &mut store).map_err(trap)?;
        Ok((result, store.into_data()))
    }
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
    use crate::backends::{Access, Backend, MemoryBackend};

    fn state() -> CallState {
        let txn = MemoryBackend::new().begin(Access::Write, "t").unwrap();
        CallState::new(txn, Scope::tenant("t").unwrap(), Limits::default(), 0)
    }

    fn is_limit(r: Result<impl std::fmt::Debug, VaultFault>, needle: &str) -> bool {
        matches!(r, Err(VaultFault::Limit(ref m)) if m.contains(needle))
    }

    #[test]
    fn a_pooled_engine_hands_out_its_slots_and_then_waits() {
        let engine = SandboxEngine::new().unwrap();
        let held: Vec<Slot> = (0..MAX_CONCURRENT_INSTANCES).map(|_| engine.reserve()).collect();
        let (sent, got) = std::sync::mpsc::channel();
        let waiter = {
            let engine = engine.clone();
            std::thread::spawn(move || {
                let slot = engine.reserve();
                sent.send(()).unwrap();
                drop(slot);
            })
        };
        assert!(got.recv_timeout(Duration::from_millis(300)).is_err(), "no slot is free");
        drop(held);
        got.recv_timeout(Duration::from_secs(10)).expect("a freed slot is handed on");
        waiter.join().unwrap();
        // On demand, nothing is counted.
        let unbounded = SandboxEngine::with_allocation(Allocation::OnDemand).unwrap();
        let _many: Vec<Slot> = (0..MAX_CONCURRENT_INSTANCES + 1).map(|_| unbounded.reserve()).collect();
    }

    /// More threads than slots, each making calls: every call succeeds
    /// (they wait for a slot rather than exhaust the pool).
    #[test]
    fn more_callers_than_slots_all_succeed() {
        let sandbox = Arc::new(Sandbox::new().unwrap());
        let s = crate::Secrets::with_sandbox(sandbox, Arc::new(MemoryBackend::new()), Limits::default());
        let scope = Scope::tenant("t").unwrap();
        s.set(&scope, crate::SetRequest::new("web", "K", crate::SecretType::Env, "v")).unwrap();
        let threads = MAX_CONCURRENT_INSTANCES as usize + 44;
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (s, scope) = (s.clone(), scope.clone());
                std::thread::spawn(move || (0..3).all(|_| s.get(&scope, "web", "K").is_ok()))
            })
            .collect();
        assert!(handles.into_iter().all(|h| h.join().unwrap()));
    }

    #[test]
    fn vault_operations_per_call_are_capped() {
        use vault::Host;
        let mut s = state();
        for _ in 0..MAX_VAULT_OPS_PER_CALL {
            s.retrieve("k".into()).unwrap();
        }
        assert!(is_limit(s.retrieve("k".into()), "vault operations"));
    }

    #[test]
    fn bytes_stored_per_call_are_capped() {
        use vault::Host;
        let mut s = state();
        let entry = vec![0u8; MAX_VAULT_ENTRY_BYTES];
        for i in 0..(MAX_BYTES_STORED_PER_CALL as usize / MAX_VAULT_ENTRY_BYTES) {
            s.store(format!("k{i}"), entry.clone()).unwrap();
        }
        assert!(is_limit(s.store("more".into(), vec![0]), "at most"));
        let mut fresh = state();
        assert!(is_limit(fresh.store("x".repeat(MAX_VAULT_KEY_BYTES + 1), vec![]), "vault keys"));
        let too_big = vec![0u8; MAX_VAULT_ENTRY_BYTES + 1];
        assert!(is_limit(fresh.store("k".into(), too_big), "vault entries"));
    }

    /// A breach of a cap is a trap the component cannot catch; a backend
    /// failure is a value it sees, and the host keeps its real kind.
    #[test]
    fn limits_trap_and_backend_failures_are_values_kept_for_the_caller() {
        use vault::Host;
        let mut s = state();
        let trap = s.convert_vault_error(VaultFault::Limit("a call may make at most 1 vault operations".into()));
        assert!(trap.is_err_and(|e| format!("{e:#}").contains("per-call limit")));
        assert_eq!(s.take_vault_failure(), None, "a trap is not a vault failure");
        let first = VaultError::Unavailable("db down".into());
        let seen = s.convert_vault_error(VaultFault::Backend(first.clone())).unwrap();
        assert!(matches!(seen, vault::VaultError::Unavailable(ref m) if m == "db down"));
        s.convert_vault_error(VaultFault::Backend(VaultError::Other("later".into()))).unwrap();
        assert_eq!(s.take_vault_failure(), Some(first), "the first failure is kept");
    }

    /// Two sandboxes on one engine share its ticker: deadlines keep their
    /// length. With a ticker per sandbox the epoch would advance three times
    /// as fast and this call (about 200 ms of vault waits against a 300 ms
    /// deadline) would trap.
    #[test]
    fn sandboxes_sharing_an_engine_keep_their_deadlines() {
        let engine = SandboxEngine::new().unwrap();
        let sandboxes: Vec<Sandbox> = (0..3).map(|_| Sandbox::compile(engine.clone()).unwrap()).collect();
        let slow = SlowBackend(MemoryBackend::new());
        let scope = Scope::tenant("t").unwrap();
        let set = bindings::api::SetRequest {
            instance_id: "i".into(),
            key: "K".into(),
            value: b"v".to_vec(),
            kind: bindings::api::SecretType::Env,
            if_version: None,
        };
        let write = |sandbox: &Sandbox, f: &dyn Fn(&bindings::api::Guest, &mut Store<CallState>) -> bool| {
            let txn = slow.begin(Access::Write, "t").unwrap();
            let state = CallState::new(txn, scope.clone(), Limits::default(), 0);
            let (ok, state) = sandbox.call("test", state, Duration::from_millis(300), |g, s| Ok(f(g, s))).unwrap();
            state.txn.commit().unwrap();
            ok
        };
        assert!(write(&sandboxes[0], &|g, s| g.call_set(s, &set).unwrap().is_ok()));
        SLOW.with(|d| d.set(Duration::from_millis(100)));
        // `get` makes two vault reads: ~200 ms of waits.
        let got = write(&sandboxes[2], &|g, s| g.call_get(s, "i", "K").unwrap().is_ok());
        assert!(got, "the call finished within its deadline");
    }

    thread_local! {
        static SLOW: std::cell::Cell<Duration> = const { std::cell::Cell::new(Duration::ZERO) };
    }

    /// A memory backend whose reads take as long as `SLOW` says.
    struct SlowBackend(MemoryBackend);
    struct SlowTxn(Box<dyn Transaction>);

    impl Backend for SlowBackend {
        fn begin(&self, access: Access, scope: &str) -> Result<Box<dyn Transaction>, VaultError> {
            Ok(Box::new(SlowTxn(self.0.begin(access, scope)?)))
        }
        fn describe(&self) -> String {
            "slow".into()
        }
    }

    impl crate::backends::Vault for SlowTxn {
        fn store(&mut self, key: &str, value: &[u8]) -> Result<(), VaultError> {
            self.0.store(key, value)
        }
        fn retrieve(&mut self, key: &str) -> Result<Option<Vec<u8>>, VaultError> {
            std::thread::sleep(SLOW.with(|d| d.get()));
            self.0.retrieve(key)
        }
        fn delete(&mut self, key: &str) -> Result<(), VaultError> {
            self.0.delete(key)
        }
        fn rotate(&mut self, key: &str) -> Result<(), VaultError> {
            self.0.rotate(key)
        }
    }

    impl Transaction for SlowTxn {
        fn commit(self: Box<Self>) -> Result<(), VaultError> {
            self.0.commit()
        }
    }
}
