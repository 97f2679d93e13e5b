//! The conformance suite every backend must pass (in the manner of Vault's
//! `ExerciseBackend` and Spin's shared provider tests).
//!
//! A backend's test file invokes [`conformance_tests!`] with an expression
//! that yields an `Arc<dyn Backend>`; every case runs in its own tenants,
//! so cases may share one database.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;

use secrets_host::{
    Access, Backend, Error, Limits, Scope, SecretType, SetRequest, Transaction, Vault, VaultError,
};

/// Expands to one `#[test]` per conformance case for the backend `$make`.
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::conformance_tests!(@cases $make;
            vault_semantics, rollback_on_drop, read_your_writes, binary_and_empty_values,
            values_at_the_limit, failed_call_rolls_back, every_failing_operation_rolls_back,
            concurrent_writers_never_lose_a_version, version_lifecycle,
            instances_survive_concurrent_writers_of_different_instances, tenant_prefixing, rotate_keeps_plaintext, errors_do_not_leak_values);
    };
    (@cases $make:expr; $($case:ident),*) => {
        $(
            #[test]
            fn $case() {
                let backend: ::std::sync::Arc<dyn ::secrets_host::Backend> = $make;
                $crate::conformance::$case(backend);
            }
        )*
    };
}

/// A fresh tenant name, unique in this process and across runs.
pub fn unique(label: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{label}-{nanos}-{}", N.fetch_add(1, Ordering::Relaxed))
}

fn key(name: &str) -> String {
    format!("t/{}/conformance/{name}", hex_of(&unique("k")))
}

fn hex_of(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn write(backend: &Arc<dyn Backend>) -> Box<dyn Transaction> {
    backend.begin(Access::Write, "conformance").unwrap()
}

fn read(backend: &Arc<dyn Backend>, k: &str) -> Option<Vec<u8>> {
    backend.begin(Access::Read, "conformance").unwrap().retrieve(k).unwrap()
}

/// store, retrieve, delete and rotate on committed transactions; missing
/// keys are `None`, and deleting or rotating them succeeds.
pub fn vault_semantics(backend: Arc<dyn Backend>) {
    let k = key("a");
    assert_eq!(read(&backend, &k), None);
    let mut t = write(&backend);
    t.store(&k, b"one").unwrap();
    t.commit().unwrap();
    assert_eq!(read(&backend, &k).as_deref(), Some(&b"one"[..]));
    let mut t = write(&backend);
    t.store(&k, b"two").unwrap();
    t.commit().unwrap();
    assert_eq!(read(&backend, &k).as_deref(), Some(&b"two"[..]));
    let mut t = write(&backend);
    t.delete(&k).unwrap();
    t.delete(&key("never-stored")).unwrap();
    t.rotate(&key("never-stored")).unwrap();
    t.commit().unwrap();
    assert_eq!(read(&backend, &k), None);
}

/// A transaction dropped without commit leaves no trace.
pub fn rollback_on_drop(backend: Arc<dyn Backend>) {
    let (kept, dropped) = (key("kept"), key("dropped"));
    let mut t = write(&backend);
    t.store(&kept, b"v").unwrap();
    t.commit().unwrap();
    {
        let mut t = write(&backend);
        t.store(&dropped, b"x").unwrap();
        t.delete(&kept).unwrap();
    }
    assert_eq!(read(&backend, &dropped), None);
    assert_eq!(read(&backend, &kept).as_deref(), Some(&b"v"[..]));
}

/// Inside a transaction, reads see its own writes and deletes.
pub fn read_your_writes(backend: Arc<dyn Backend>) {
    let k = key("ryw");
    let mut t = write(&backend);
    t.store(&k, b"1").unwrap();
    assert_eq!(t.retrieve(&k).unwrap().as_deref(), Some(&b"1"[..]));
    t.delete(&k).unwrap();
    assert_eq!(t.retrieve(&k).unwrap(), None);
    t.store(&k, b"2").unwrap();
    t.commit().unwrap();
    assert_eq!(read(&backend, &k).as_deref(), Some(&b"2"[..]));
}

/// Every byte value survives, and so does an empty value.
pub fn binary_and_empty_values(backend: Arc<dyn Backend>) {
    let all: Vec<u8> = (0..=255).collect();
    let (a, e) = (key("bin"), key("empty"));
    let mut t = write(&backend);
    t.store(&a, &all).unwrap();
    t.store(&e, b"").unwrap();
    t.commit().unwrap();
    assert_eq!(read(&backend, &a), Some(all));
    assert_eq!(read(&backend, &e), Some(vec![]));
}

/// A 64 KiB value (the largest accepted) through the component, and one
/// byte more rejected with nothing stored.
pub fn values_at_the_limit(backend: Arc<dyn Backend>) {
    let s = crate::common::service(backend);
    let scope = Scope::tenant(&unique("limit")).unwrap();
    let at: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
    s.set(&scope, SetRequest::new("web", "big.bin", SecretType::File, at.clone())).unwrap();
    assert_eq!(s.get(&scope, "web", "big.bin").unwrap().value.expose(), &at[..]);
    let over = vec![1u8; 65537];
    let err = s.set(&scope, SetRequest::new("web", "big.bin", SecretType::File, over)).unwrap_err();
    assert!(matches!(err, Error::LimitExceeded(ref m) if m.contains("65536")), "{err:?}");
    assert_eq!(s.versions(&scope, "web", "big.bin").unwrap().len(), 1);
}

/// A backend wrapper that injects faults into its transactions' stores:
/// failing the n-th one, or delaying each.
pub struct FaultyBackend {
    pub inner: Arc<dyn Backend>,
    /// Fail the store after this many succeeded.
    pub fail_after_stores: Option<usize>,
    /// Sleep this long in every store.
    pub store_delay: std::time::Duration,
}

impl FaultyBackend {
    pub fn failing(inner: Arc<dyn Backend>, n: usize) -> Arc<dyn Backend> {
        Arc::new(FaultyBackend { inner, fail_after_stores: Some(n), store_delay: Default::default() })
    }

    pub fn slow(inner: Arc<dyn Backend>, delay: std::time::Duration) -> Arc<dyn Backend> {
        Arc::new(FaultyBackend { inner, fail_after_stores: None, store_delay: delay })
    }
}

struct FaultyTxn {
    inner: Box<dyn Transaction>,
    left: Option<usize>,
    delay: std::time::Duration,
}

impl Backend for FaultyBackend {
    fn begin(&self, access: Access, lock_scope: &str) -> Result<Box<dyn Transaction>, VaultError> {
        let inner = self.inner.begin(access, lock_scope)?;
        Ok(Box::new(FaultyTxn { inner, left: self.fail_after_stores, delay: self.store_delay }))
    }
    fn describe(&self) -> String {
        format!("faulty({})", self.inner.describe())
    }
}

impl Vault for FaultyTxn {
    fn store(&mut self, key: &str, value: &[u8]) -> Result<(), VaultError> {
        thread::sleep(self.delay);
        match &mut self.left {
            Some(0) => return Err(VaultError::Unavailable("injected failure".into())),
            Some(n) => *n -= 1,
            None => {}
        }
        self.inner.store(key, value)
    }
    fn retrieve(&mut self, key: &str) -> Result<Option<Vec<u8>>, VaultError> {
        self.inner.retrieve(key)
    }
    fn delete(&mut self, key: &str) -> Result<(), VaultError> {
        self.inner.delete(key)
    }
    fn rotate(&mut self, key: &str) -> Result<(), VaultError> {
        self.inner.rotate(key)
    }
}

impl Transaction for FaultyTxn {
    fn commit(self: Box<Self>) -> Result<(), VaultError> {
        self.inner.commit()
    }
}

/// A call that fails after some of its writes landed in the transaction
/// leaves the committed state exactly as it was.
pub fn failed_call_rolls_back(backend: Arc<dyn Backend>) {
    let scope = Scope::tenant(&unique("rollback")).unwrap();
    let good = crate::common::service(backend.clone());
    good.set(&scope, SetRequest::new("web", "A", SecretType::Env, "old")).unwrap();
    for n in 0..3 {
        let failing = crate::common::service(FaultyBackend::failing(backend.clone(), n));
        let err = failing.set(&scope, SetRequest::new("web", "A", SecretType::Env, "new")).unwrap_err();
        // The backend's kind and message reach the caller through the component.
        assert!(matches!(err, Error::Vault(VaultError::Unavailable(ref m)) if m.contains("injected failure")), "{err:?}");
        let err = failing.set(&scope, SetRequest::new("web", "B", SecretType::Env, "new")).unwrap_err();
        assert!(matches!(err, Error::Vault(_)), "{err:?}");
        let got = good.get(&scope, "web", "A").unwrap();
        assert_eq!((got.meta.version, got.value.expose()), (1, &b"old"[..]), "after failing store #{n}");
        assert_eq!(good.versions(&scope, "web", "A").unwrap().len(), 1);
        let keys: Vec<String> = good.list(&scope, "web").unwrap().into_iter().map(|m| m.key).collect();
        assert_eq!(keys, vec!["A"]);
        assert_eq!(good.get(&scope, "web", "B").unwrap_err(), Error::NotFound);
    }
}

/// 8 threads setting one key concurrently produce versions exactly 1..=N.
pub fn concurrent_writers_never_lose_a_version(backend: Arc<dyn Backend>) {
    const THREADS: u32 = 8;
    const SETS: u32 = 12;
    let limits = Limits { max_versions_per_key: 1000, ..Limits::default() };
    let s = crate::common::service_with(backend, limits);
    let scope = Scope::tenant(&unique("race")).unwrap();
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let (s, scope) = (s.clone(), scope.clone());
            thread::spawn(move || {
                (0..SETS)
                    .map(|i| {
                        let value = format!("{t}-{i}");
                        s.set(&scope, SetRequest::new("web", "K", SecretType::Env, value)).unwrap().version
                    })
                    .collect::<Vec<u32>>()
            })
        })
        .collect();
    let mut got: Vec<u32> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
    got.sort();
    assert_eq!(got, (1..=THREADS * SETS).collect::<Vec<_>>());
    let versions: Vec<u32> = s.versions(&scope, "web", "K").unwrap().iter().map(|m| m.version).collect();
    assert_eq!(versions, (1..=THREADS * SETS).collect::<Vec<_>>());
}

/// Soft delete, undelete, destroy and rollback, each one transaction:
/// what reads see, and that a destroyed value is gone from the store.
pub fn version_lifecycle(backend: Arc<dyn Backend>) {
    let s = crate::common::service(backend.clone());
    let name = unique("life");
    let scope = Scope::tenant(&name).unwrap();
    for v in ["one", "two", "three"] {
        s.set(&scope, SetRequest::new("web", "DB", SecretType::Env, v)).unwrap();
    }
    s.delete_versions(&scope, "web", "DB", &[3]).unwrap();
    assert_eq!(s.get(&scope, "web", "DB").unwrap_err(), Error::NotFound);
    assert!(s.inject(&scope, "web").unwrap().is_empty());
    let listed = s.list(&scope, "web").unwrap();
    assert!(listed.len() == 1 && listed[0].deleted_at.is_some(), "{listed:?}");
    s.undelete(&scope, "web", "DB", &[3]).unwrap();
    assert_eq!(s.inject(&scope, "web").unwrap()["DB"].expose(), b"three");

    let value_key = format!("t/{}/i/{}/k/{}/v/1", hex_of(&name), hex_of("web"), hex_of("DB"));
    assert!(read(&backend, &value_key).is_some());
    s.destroy(&scope, "web", "DB", &[1]).unwrap();
    assert_eq!(read(&backend, &value_key), None, "destroyed means gone from the store");
    let versions = s.versions(&scope, "web", "DB").unwrap();
    assert!(versions[0].destroyed && !versions[1].destroyed, "{versions:?}");
    assert!(matches!(s.undelete(&scope, "web", "DB", &[1]), Err(Error::Conflict(_))));

    let meta = s.rollback(&scope, "web", "DB", 2).unwrap();
    assert_eq!(meta.version, 4);
    assert_eq!(s.get(&scope, "web", "DB").unwrap().value.expose(), b"two");
    assert_eq!(s.rollback(&scope, "web", "DB", 9).unwrap_err(), Error::NotFound);
    assert_eq!(s.instances(&scope).unwrap(), ["web"]);
}

/// Writers that each add the first key of a different instance, and
/// others that remove an instance's last key, all at once: the tenant's
/// list of instances loses none of them (writers of one tenant serialise).
pub fn instances_survive_concurrent_writers_of_different_instances(backend: Arc<dyn Backend>) {
    const WRITERS: usize = 6;
    let s = crate::common::service(backend);
    let scope = Scope::tenant(&unique("instances")).unwrap();
    for i in 0..WRITERS {
        s.set(&scope, SetRequest::new(&format!("old-{i}"), "K", SecretType::Env, "v")).unwrap();
    }
    let handles: Vec<_> = (0..WRITERS)
        .map(|i| {
            let (s, scope) = (s.clone(), scope.clone());
            thread::spawn(move || {
                s.set(&scope, SetRequest::new(&format!("new-{i}"), "K", SecretType::Env, "v")).unwrap();
                s.delete(&scope, &format!("old-{i}"), "K").unwrap();
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let expected: Vec<String> = (0..WRITERS).map(|i| format!("new-{i}")).collect();
    assert_eq!(s.instances(&scope).unwrap(), expected);
}

/// Two tenants with the same instance and key never see each other, and
/// the tenant's entries live under its own prefix in the backend.
pub fn tenant_prefixing(backend: Arc<dyn Backend>) {
    let s = crate::common::service(backend.clone());
    let (a_name, b_name) = (unique("a"), unique("b"));
    let (a, b) = (Scope::tenant(&a_name).unwrap(), Scope::tenant(&b_name).unwrap());
    s.set(&a, SetRequest::new("web", "TOKEN", SecretType::Env, "a-secret")).unwrap();
    assert_eq!(s.get(&b, "web", "TOKEN").unwrap_err(), Error::NotFound);
    assert!(s.list(&b, "web").unwrap().is_empty());
    assert!(s.inject(&b, "web").unwrap().is_empty());
    assert_eq!(s.set(&b, SetRequest::new("web", "TOKEN", SecretType::Env, "b-secret")).unwrap().version, 1);
    assert_eq!(s.get(&a, "web", "TOKEN").unwrap().value.expose(), b"a-secret");
    let index = format!("t/{}/i/{}/index", hex_of(&a_name), hex_of("web"));
    assert!(read(&backend, &index).is_some(), "tenant A's index lives under its prefix");
}

/// Rotation never changes what a read returns.
pub fn rotate_keeps_plaintext(backend: Arc<dyn Backend>) {
    let s = crate::common::service(backend);
    let scope = Scope::tenant(&unique("rotate")).unwrap();
    s.set(&scope, SetRequest::new("web", "K", SecretType::Env, "v1")).unwrap();
    s.set(&scope, SetRequest::new("web", "K", SecretType::Env, "v2")).unwrap();
    assert_eq!(s.rotate(&scope, "web", "K").unwrap(), 2);
    assert_eq!(s.get(&scope, "web", "K").unwrap().value.expose(), b"v2");
    assert_eq!(s.get_version(&scope, "web", "K", 1).unwrap().value.expose(), b"v1");
    assert_eq!(s.rotate(&scope, "web", "NOPE").unwrap_err(), Error::NotFound);
}

/// Errors never quote the value being set: not a validation error from the
/// component, not a vault error from the backend.
pub fn errors_do_not_leak_values(backend: Arc<dyn Backend>) {
    let scope = Scope::tenant(&unique("leak")).unwrap();
    let canary = "canary-7f3a9c-do-not-print";
    let s = crate::common::service(backend.clone());
    let bad_values: Vec<(SecretType, String)> = vec![
        (SecretType::Env, format!("{canary}\0nul")),
        (SecretType::Registry, format!("{{\"auths\":{{\"r\":{{\"auth\":\"{canary}\"}}}}}}")),
        (SecretType::Registry, format!("{{\"{canary}\": 1}}")),
        (SecretType::Tls, format!("-----BEGIN CERTIFICATE-----\n{canary}\n-----END CERTIFICATE-----\n")),
        (SecretType::Tls, canary.to_string()),
    ];
    for (kind, value) in bad_values {
        let err = s.set(&scope, SetRequest::new("web", "K", kind, value)).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
        assert!(!format!("{err} {err:?}").contains(canary), "{kind}: {err}");
    }
    let failing = crate::common::service(FaultyBackend::failing(backend, 0));
    let err = failing.set(&scope, SetRequest::new("web", "K", SecretType::Env, canary)).unwrap_err();
    assert!(matches!(err, Error::Vault(_)), "{err:?}");
    assert!(!format!("{err} {err:?}").contains(canary));
}

/// A backend whose transactions fail their `fail_at`-th vault operation
/// (any of store, retrieve, delete, rotate; counted from 0).
pub struct OpFaultBackend {
    inner: Arc<dyn Backend>,
    fail_at: usize,
}

struct OpFaultTxn {
    inner: Box<dyn Transaction>,
    seen: usize,
    fail_at: usize,
}

impl OpFaultTxn {
    fn step(&mut self) -> Result<(), VaultError> {
        self.seen += 1;
        if self.seen - 1 == self.fail_at {
            return Err(VaultError::Unavailable(format!("injected failure at operation {}", self.fail_at)));
        }
        Ok(())
    }
}

impl Backend for OpFaultBackend {
    fn begin(&self, access: Access, lock_scope: &str) -> Result<Box<dyn Transaction>, VaultError> {
        Ok(Box::new(OpFaultTxn { inner: self.inner.begin(access, lock_scope)?, seen: 0, fail_at: self.fail_at }))
    }
    fn describe(&self) -> String {
        format!("op-fault({})", self.inner.describe())
    }
}

impl Vault for OpFaultTxn {
    fn store(&mut self, key: &str, value: &[u8]) -> Result<(), VaultError> {
        self.step()?;
        self.inner.store(key, value)
    }
    fn retrieve(&mut self, key: &str) -> Result<Option<Vec<u8>>, VaultError> {
        self.step()?;
        self.inner.retrieve(key)
    }
    fn delete(&mut self, key: &str) -> Result<(), VaultError> {
        self.step()?;
        self.inner.delete(key)
    }
    fn rotate(&mut self, key: &str) -> Result<(), VaultError> {
        self.step()?;
        self.inner.rotate(key)
    }
}

impl Transaction for OpFaultTxn {
    fn commit(self: Box<Self>) -> Result<(), VaultError> {
        self.inner.commit()
    }
}

/// Everything an instance holds, as the API shows it: each key's versions
/// with their metadata and values.
type Dump = Vec<(secrets_host::SecretMeta, Vec<u8>)>;

fn dump(s: &secrets_host::Secrets, scope: &Scope, instance: &str) -> Dump {
    let mut out = Vec::new();
    for meta in s.list(scope, instance).unwrap() {
        for version in s.versions(scope, instance, &meta.key).unwrap() {
            let value = s.get_version(scope, instance, &version.key, version.version).unwrap();
            out.push((version, value.value.expose().to_vec()));
        }
    }
    out
}

/// Failing the k-th vault operation of a call, for every k the call
/// reaches (set of a new key, set with pruning, delete, rotate, rotate of
/// a whole instance), leaves every version of every key exactly as it was.
pub fn every_failing_operation_rolls_back(backend: Arc<dyn Backend>) {
    let limits = Limits { max_versions_per_key: 2, ..Limits::default() };
    type Call = fn(&secrets_host::Secrets, &Scope) -> Result<(), Error>;
    // (name, call, whether it changes what the API shows: a rotation
    // re-protects values and changes none).
    let calls: [(&str, Call, bool); 6] = [
        ("set a new key", |s, t| s.set(t, SetRequest::new("web", "NEW", SecretType::Env, "n")).map(drop), true),
        ("set with pruning", |s, t| s.set(t, SetRequest::new("web", "A", SecretType::Env, "a3")).map(drop), true),
        ("set a file", |s, t| s.set(t, SetRequest::new("web", "f.conf", SecretType::File, "f2")).map(drop), true),
        ("delete", |s, t| s.delete(t, "web", "A"), true),
        ("rotate", |s, t| s.rotate(t, "web", "A").map(drop), false),
        ("rotate the instance", |s, t| s.rotate_instance(t, "web").map(drop), false),
    ];
    for (name, call, changes) in calls {
        let scope = Scope::tenant(&unique("opfault")).unwrap();
        let good = crate::common::service_with(backend.clone(), limits);
        for (key, kind, value) in
            [("A", SecretType::Env, "a1"), ("A", SecretType::Env, "a2"), ("B", SecretType::Env, "b1"), ("f.conf", SecretType::File, "f1")]
        {
            good.set(&scope, SetRequest::new("web", key, kind, value)).unwrap();
        }
        let before = dump(&good, &scope, "web");
        let mut k = 0;
        loop {
            assert!(k < 500, "{name}: still failing after {k} operations");
            let faulty = crate::common::service_with(Arc::new(OpFaultBackend { inner: backend.clone(), fail_at: k }), limits);
            match call(&faulty, &scope) {
                Err(Error::Vault(VaultError::Unavailable(m))) if m.contains("injected failure") => {
                    assert_eq!(dump(&good, &scope, "web"), before, "{name}: failing operation {k} changed the store");
                }
                Err(other) => panic!("{name}: operation {k}: unexpected {other:?}"),
                // The call made fewer than k + 1 operations: all were tried.
                Ok(()) => break,
            }
            k += 1;
        }
        assert!(k >= 2, "{name}: the call made {k} operations");
        eprintln!("{}: {name}: failed each of its {k} vault operations in turn", backend.describe());
        assert_eq!(dump(&good, &scope, "web") != before, changes, "{name}: the unfailed call's effect");
    }
}
