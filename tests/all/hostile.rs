//! Hostile components: the test-only component of `tests/hostile/` (the
//! same world as the real one) loops, grows memory, recurses, floods the
//! vault, oversteps the per-call caps and aims keys at another tenant. Each
//! is stopped with a clear error within its deadline, its writes are rolled
//! back, and other tenants' calls running at the same time are served.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use secrets_host::{Error, Limits, MemoryBackend, Sandbox, Scope, SecretType, Secrets, SetRequest};

/// The hostile component, compiled once per test process.
fn hostile() -> Arc<Sandbox> {
    static SANDBOX: OnceLock<Arc<Sandbox>> = OnceLock::new();
    SANDBOX
        .get_or_init(|| {
            let path = std::path::Path::new(env!("SECRETS_HOSTILE_COMPONENT"));
            Arc::new(Sandbox::from_file(path).expect("the hostile component loads: it imports only what is allowed"))
        })
        .clone()
}

const DEADLINE: Duration = Duration::from_millis(800);

/// Runs the attack `instance` against a fresh memory store as tenant
/// `attacker`; returns the error, how long it took, and the store.
fn attack(instance: &str, key: &str, deadline: Duration) -> (Result<(), Error>, Duration, MemoryBackend) {
    let backend = MemoryBackend::new();
    let s = Secrets::with_sandbox(hostile(), Arc::new(backend.clone()), Limits::default()).with_call_timeout(deadline);
    let scope = Scope::tenant("attacker").unwrap();
    let started = Instant::now();
    let result = s.set(&scope, SetRequest::new(instance, key, SecretType::Env, "v")).map(drop);
    (result, started.elapsed(), backend)
}

fn trapped(instance: &str, needle: &str) -> Duration {
    trapped_within(instance, needle, DEADLINE)
}

fn trapped_within(instance: &str, needle: &str, deadline: Duration) -> Duration {
    let (result, took, backend) = attack(instance, "k", deadline);
    match result {
        Err(Error::Trap { call: "set", message }) => {
            assert!(message.to_lowercase().contains(needle), "{instance}: {message}")
        }
        other => panic!("{instance}: expected a trap, got {other:?}"),
    }
    assert!(backend.is_empty(), "{instance}: the write before the attack was rolled back: {:?}", backend.keys());
    took
}

#[test]
fn an_endless_loop_is_interrupted_at_the_deadline() {
    let took = trapped("loop", "interrupt");
    assert!(took >= DEADLINE && took < DEADLINE * 4, "stopped after {took:?}");
}

#[test]
fn unbounded_memory_growth_is_stopped() {
    // 64 MiB of linear memory per call: the component's allocator fails and
    // it aborts (a trap), long before the deadline.
    let took = trapped("grow", "unreachable");
    assert!(took < DEADLINE * 4, "{took:?}");
}

#[test]
fn unbounded_recursion_is_stopped() {
    trapped("recurse", "stack");
}

#[test]
fn a_flood_of_vault_operations_is_stopped() {
    // 100,000 operations take longer than the short deadline of the other
    // cases in a debug build: give the cap the time to trip first.
    let took = trapped_within("flood", "at most 100000 vault operations", Duration::from_secs(60));
    eprintln!("the flood was stopped after {took:?}");
}

#[test]
fn an_oversized_entry_traps() {
    trapped("big", "vault entries are at most");
}

#[test]
fn a_cap_breach_cannot_be_ignored() {
    // The component ignores the error and returns success: the breach is a
    // trap, so there is no success to return.
    trapped("long-key", "vault keys are");
}

#[test]
fn keys_aimed_at_another_tenant_stay_in_the_attackers_space() {
    let victim = "victim";
    let (result, _, backend) = attack("escape", &hex(victim), DEADLINE);
    result.unwrap();
    let keys = backend.keys();
    assert_eq!(keys.len(), 5, "{keys:?}");
    let prefix = format!("t/{}/", hex("attacker"));
    assert!(keys.iter().all(|k| k.starts_with(&prefix)), "{keys:?}");
    // The victim, served by the real component on the same store, sees
    // nothing of it.
    let real = crate::common::service(Arc::new(backend));
    assert_eq!(real.list(&Scope::tenant(victim).unwrap(), "web").unwrap(), vec![]);
}

/// While a hostile call loops on one thread, other tenants' reads on the
/// same store are served at their usual pace.
#[test]
fn other_tenants_are_served_during_an_attack() {
    let backend = MemoryBackend::new();
    let real = crate::common::service(Arc::new(backend.clone()));
    let tenant = Scope::tenant("bystander").unwrap();
    real.set(&tenant, SetRequest::new("web", "K", SecretType::Env, "v")).unwrap();
    let evil = Secrets::with_sandbox(hostile(), Arc::new(backend), Limits::default())
        .with_call_timeout(Duration::from_secs(3));
    std::thread::scope(|s| {
        let attack = s.spawn(|| evil.set(&Scope::tenant("attacker").unwrap(), SetRequest::new("loop", "k", SecretType::Env, "v")));
        std::thread::sleep(Duration::from_millis(100));
        let started = Instant::now();
        for _ in 0..20 {
            let one = Instant::now();
            assert_eq!(real.get(&tenant, "web", "K").unwrap().value.expose(), b"v");
            assert!(one.elapsed() < Duration::from_secs(1), "a read took {:?}", one.elapsed());
        }
        assert!(started.elapsed() < Duration::from_secs(3), "served while the attack ran");
        assert!(matches!(attack.join().unwrap(), Err(Error::Trap { .. })));
    });
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}
