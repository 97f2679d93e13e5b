//! The real component under wasmtime, through the host façade: every
//! export, every validation rule and limit, tenant isolation, the sandbox's
//! import list, trap recovery and redaction.

use std::sync::Arc;

use secrets_host::component::ALLOWED_IMPORTS;
use secrets_host::{Error, Limits, MemoryBackend, Scope, SecretType, SecretValue, SetRequest};
use crate::conformance::FaultyBackend;
use crate::common::{fixture, sandbox, service, service_with, tls_bundle};

fn setup() -> (secrets_host::Secrets, Scope) {
    (service(Arc::new(MemoryBackend::new())), Scope::tenant("acme").unwrap())
}

fn env(key: &str, value: &str) -> SetRequest {
    SetRequest::new("web-1", key, SecretType::Env, value)
}

fn invalid(r: Result<secrets_host::SecretMeta, Error>) -> String {
    match r {
        Err(Error::InvalidArgument(m)) => m,
        other => panic!("expected invalid-argument, got {other:?}"),
    }
}

#[test]
fn imports_are_exactly_the_vault_and_the_context() {
    let mut imports = sandbox().imports();
    imports.sort();
    let mut expected: Vec<String> = ALLOWED_IMPORTS.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(imports, expected);
}

#[test]
fn three_sets_make_three_versions_and_old_ones_stay_readable() {
    let (s, t) = setup();
    for (i, v) in ["one", "two", "three"].iter().enumerate() {
        let meta = s.set(&t, env("DB_URL", v)).unwrap();
        assert_eq!(meta.version, i as u32 + 1);
        assert_eq!(meta.size, v.len() as u32);
        assert!(meta.created_at > 1_600_000_000_000, "created-at is unix ms");
    }
    let cur = s.get(&t, "web-1", "DB_URL").unwrap();
    assert_eq!((cur.meta.version, cur.value.expose()), (3, &b"three"[..]));
    for (v, want) in [(1, "one"), (2, "two"), (3, "three")] {
        assert_eq!(s.get_version(&t, "web-1", "DB_URL", v).unwrap().value.expose(), want.as_bytes());
    }
    let versions: Vec<u32> = s.versions(&t, "web-1", "DB_URL").unwrap().iter().map(|m| m.version).collect();
    assert_eq!(versions, vec![1, 2, 3]);
    assert_eq!(s.get_version(&t, "web-1", "DB_URL", 9).unwrap_err(), Error::NotFound);
}

#[test]
fn list_returns_metadata_and_never_values() {
    let (s, t) = setup();
    let canary = "canary-41c9-list-must-not-show";
    s.set(&t, env("B", canary)).unwrap();
    s.set(&t, env("B", canary)).unwrap();
    s.set(&t, SetRequest::new("web-1", "a.txt", SecretType::File, canary)).unwrap();
    let list = s.list(&t, "web-1").unwrap();
    let keys: Vec<(&str, SecretType, u32)> = list.iter().map(|m| (m.key.as_str(), m.kind, m.version)).collect();
    assert_eq!(keys, vec![("B", SecretType::Env, 2), ("a.txt", SecretType::File, 1)]);
    let json = serde_json::to_string(&list).unwrap();
    let debug = format!("{list:?}");
    assert!(!json.contains(canary) && !debug.contains(canary));
    assert!(json.contains("\"type\":\"env\""), "{json}");
}

#[test]
fn inject_returns_env_secrets_only_at_their_current_versions() {
    let (s, t) = setup();
    s.set(&t, env("PORT", "80")).unwrap();
    s.set(&t, env("PORT", "8080")).unwrap();
    s.set(&t, env("API_KEY", "k")).unwrap();
    s.set(&t, SetRequest::new("web-1", "cfg", SecretType::File, "file-body")).unwrap();
    let reg = r#"{"auths":{"ghcr.io":{"auth":"dXNlcjpwYXNz"}}}"#;
    s.set(&t, SetRequest::new("web-1", "ghcr", SecretType::Registry, reg)).unwrap();
    s.set(&t, SetRequest::new("web-1", "site", SecretType::Tls, tls_bundle("p256-cert.pem", "p256-pkcs8-key.pem"))).unwrap();
    let env = s.inject(&t, "web-1").unwrap();
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.expose_str().unwrap())).collect();
    assert_eq!(pairs, vec![("API_KEY", "k"), ("PORT", "8080")]);
}

#[test]
fn mounts_turn_file_tls_and_registry_secrets_into_files() {
    let (s, t) = setup();
    s.set(&t, env("PORT", "80")).unwrap();
    s.set(&t, SetRequest::new("web-1", "app.conf", SecretType::File, "x=1\n")).unwrap();
    let bundle = tls_bundle("p256-cert.pem", "p256-pkcs8-key.pem");
    s.set(&t, SetRequest::new("web-1", "site", SecretType::Tls, bundle)).unwrap();
    s.set(&t, SetRequest::new("web-1", "a-reg", SecretType::Registry, r#"{"auths":{"ghcr.io":{"username":"old","password":"p"}}}"#)).unwrap();
    s.set(&t, SetRequest::new("web-1", "b-reg", SecretType::Registry, r#"{"auths":{"ghcr.io":{"username":"new","password":"p"},"quay.io":{"auth":"dTpw"}}}"#)).unwrap();
    let mounts = s.mounts(&t, "web-1").unwrap();
    let listed: Vec<(&str, u32)> = mounts.iter().map(|m| (m.path.as_str(), m.mode)).collect();
    assert_eq!(listed, vec![(".docker/config.json", 0o400), ("app.conf", 0o400), ("site/tls.crt", 0o444), ("site/tls.key", 0o400)]);
    let docker: serde_json::Value = serde_json::from_slice(mounts[0].contents.expose()).unwrap();
    assert_eq!(docker["auths"]["ghcr.io"]["username"], "new", "later keys win");
    assert_eq!(docker["auths"]["quay.io"]["auth"], "dTpw");
    assert!(mounts[2].contents.expose_str().unwrap().starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(mounts[3].contents.expose_str().unwrap().contains("PRIVATE KEY-----"));
    assert!(!mounts[2].contents.expose_str().unwrap().contains("PRIVATE KEY"));
}

#[test]
fn delete_removes_all_versions_and_rotate_counts_them() {
    let (s, t) = setup();
    s.set(&t, env("A", "1")).unwrap();
    s.set(&t, env("A", "2")).unwrap();
    assert_eq!(s.rotate(&t, "web-1", "A").unwrap(), 2);
    s.delete(&t, "web-1", "A").unwrap();
    assert_eq!(s.get(&t, "web-1", "A").unwrap_err(), Error::NotFound);
    assert_eq!(s.delete(&t, "web-1", "A").unwrap_err(), Error::NotFound);
    assert_eq!(s.set(&t, env("A", "3")).unwrap().version, 1);
}

/// rotate-instance rotates every key of an instance in one call.
#[test]
fn rotate_instance_counts_every_key() {
    let (s, t) = setup();
    assert_eq!(s.rotate_instance(&t, "web-1").unwrap(), vec![], "an empty instance rotates nothing");
    s.set(&t, env("B", "1")).unwrap();
    s.set(&t, env("A", "1")).unwrap();
    s.set(&t, env("A", "2")).unwrap();
    assert_eq!(s.rotate_instance(&t, "web-1").unwrap(), vec![("A".to_string(), 2), ("B".to_string(), 1)]);
    assert_eq!(s.get(&t, "web-1", "A").unwrap().value.expose(), b"2");
    assert!(matches!(s.rotate_instance(&t, "bad/id"), Err(Error::InvalidArgument(_))));
}

#[test]
fn check_and_set_and_type_changes_conflict() {
    let (s, t) = setup();
    assert!(matches!(s.set(&t, env("A", "x").if_version(3)), Err(Error::VersionMismatch(_))));
    assert_eq!(s.set(&t, env("A", "x").if_version(0)).unwrap().version, 1);
    assert!(matches!(s.set(&t, env("A", "y").if_version(0)), Err(Error::VersionMismatch(_))));
    assert_eq!(s.set(&t, env("A", "y").if_version(1)).unwrap().version, 2);
    let change = SetRequest::new("web-1", "A", SecretType::File, "z");
    assert!(matches!(s.set(&t, change), Err(Error::Conflict(m)) if m.contains("delete it")));
    assert_eq!(s.get(&t, "web-1", "A").unwrap().value.expose(), b"y");
}

#[test]
fn ids_and_keys_follow_the_documented_rules() {
    let (s, t) = setup();
    for ok in ["a", "web-1.prod", "_x", &"i".repeat(128)] {
        s.set(&t, SetRequest::new(ok, "k", SecretType::File, "v")).unwrap();
    }
    s.set(&t, SetRequest::new("web-1", &"k".repeat(255), SecretType::File, "v")).unwrap();
    for bad in ["", "a/b", "..", ".x", "a..b", "a\0b", "a\nb", "-x", "sp ace", "é"] {
        let m = invalid(s.set(&t, SetRequest::new(bad, "k", SecretType::File, "v")));
        assert!(m.contains("instance id"), "{bad:?}: {m}");
        let m = invalid(s.set(&t, SetRequest::new("web-1", bad, SecretType::File, "v")));
        assert!(m.contains("key"), "{bad:?}: {m}");
    }
    assert!(invalid(s.set(&t, SetRequest::new(&"i".repeat(129), "k", SecretType::File, "v"))).contains("limit is 128"));
    assert!(invalid(s.set(&t, SetRequest::new("web-1", &"k".repeat(256), SecretType::File, "v"))).contains("limit is 255"));
    assert!(s.list(&t, "web-1").unwrap().len() == 1, "rejected sets stored nothing");
}

#[test]
fn env_rules() {
    let (s, t) = setup();
    s.set(&t, env("_OK_1", "ünïcode and spaces")).unwrap();
    let m = invalid(s.set(&t, env("1BAD", "v")));
    assert!(m.contains("not a valid environment variable name") && m.contains("[A-Za-z_][A-Za-z0-9_]*"), "{m}");
    invalid(s.set(&t, env("A-B", "v")));
    invalid(s.set(&t, env("A.B", "v")));
    assert!(invalid(s.set(&t, SetRequest::new("web-1", "A", SecretType::Env, vec![0xff, 0xfe]))).contains("UTF-8"));
    assert!(invalid(s.set(&t, env("A", "a\0b"))).contains("NUL"));
    assert_eq!(s.list(&t, "web-1").unwrap().len(), 1);
}

#[test]
fn value_size_limit_is_64_kib_and_can_be_lowered() {
    let (s, t) = setup();
    s.set(&t, SetRequest::new("web-1", "f", SecretType::File, vec![7u8; 65536])).unwrap();
    assert!(matches!(s.set(&t, SetRequest::new("web-1", "f", SecretType::File, vec![7u8; 65537])), Err(Error::LimitExceeded(m)) if m.contains("max-value-bytes is 65536")));
    // A host cannot raise the hard maximum.
    let raised = service_with(Arc::new(MemoryBackend::new()), Limits { max_value_bytes: 1 << 20, ..Limits::default() });
    assert_eq!(raised.limits().max_value_bytes, 65536);
    assert!(matches!(raised.set(&t, SetRequest::new("web-1", "f", SecretType::File, vec![7u8; 65537])), Err(Error::LimitExceeded(_))));
    let lowered = service_with(Arc::new(MemoryBackend::new()), Limits { max_value_bytes: 4, ..Limits::default() });
    lowered.set(&t, env("A", "1234")).unwrap();
    assert!(matches!(lowered.set(&t, env("A", "12345")), Err(Error::LimitExceeded(_))));
}

#[test]
fn keys_per_instance_and_versions_per_key_limits() {
    let limits = Limits { max_keys_per_instance: 3, max_versions_per_key: 2, ..Limits::default() };
    let s = service_with(Arc::new(MemoryBackend::new()), limits);
    let t = Scope::tenant("acme").unwrap();
    for k in ["A", "B", "C"] {
        s.set(&t, env(k, "1")).unwrap();
    }
    assert!(matches!(s.set(&t, env("D", "1")), Err(Error::LimitExceeded(m)) if m.contains("max-keys-per-instance is 3")));
    assert_eq!(s.list(&t, "web-1").unwrap().len(), 3);
    // Another instance has its own budget.
    s.set(&t, SetRequest::new("web-2", "D", SecretType::Env, "1")).unwrap();
    for v in 2..=4 {
        s.set(&t, env("A", &v.to_string())).unwrap();
    }
    let kept: Vec<u32> = s.versions(&t, "web-1", "A").unwrap().iter().map(|m| m.version).collect();
    assert_eq!(kept, vec![3, 4]);
    assert_eq!(s.get_version(&t, "web-1", "A", 2).unwrap_err(), Error::NotFound);
}

#[test]
fn registry_rules() {
    let (s, t) = setup();
    let reg = |v: &str| SetRequest::new("web-1", "reg", SecretType::Registry, v);
    s.set(&t, reg(r#"{"auths":{"registry.example.com:5000":{"auth":"dXNlcjpwYXNz"}}}"#)).unwrap();
    s.set(&t, reg(r#"{"auths":{"ghcr.io":{"username":"u","password":"p","email":"e@x"}}}"#)).unwrap();
    for (bad, why) in [
        ("not json", "JSON"),
        ("[]", "object"),
        (r#"{"auths":{}}"#, "auths"),
        (r#"{"credsStore":"desktop","auths":{"a":{"auth":"dTpw"}}}"#, "credsStore"),
        (r#"{"auths":{"ghcr.io":{"auth":"!!!"}}}"#, "base64"),
        (r#"{"auths":{"ghcr.io":{"auth":"dXNlcnBhc3M="}}}"#, ":"),
        (r#"{"auths":{"ghcr.io":{"username":"u"}}}"#, "password"),
        (r#"{"auths":{"ghcr.io":{"username":"u","password":"p","token":"t"}}}"#, "token"),
        (r#"{"auths":{"bad host":{"auth":"dTpw"}}}"#, "whitespace"),
    ] {
        let m = invalid(s.set(&t, reg(bad)));
        assert!(m.contains(why), "{bad}: {m}");
    }
    assert_eq!(s.versions(&t, "web-1", "reg").unwrap().len(), 2);
}

#[test]
fn tls_rules() {
    let (s, t) = setup();
    let tls = |v: Vec<u8>| SetRequest::new("web-1", "site", SecretType::Tls, v);
    for (cert, key) in [
        ("rsa-cert.pem", "rsa-pkcs1-key.pem"),
        ("rsa-cert.pem", "rsa-pkcs8-key.pem"),
        ("p256-cert.pem", "p256-sec1-key.pem"),
        ("p384-cert.pem", "p384-pkcs8-key.pem"),
        ("ed25519-cert.pem", "ed25519-key.pem"),
    ] {
        let meta = s.set(&t, tls(tls_bundle(cert, key))).unwrap();
        assert!(meta.not_after.unwrap() > 1_700_000_000, "{cert}: not-after recorded");
    }
    let mut chain = tls_bundle("chain-leaf-cert.pem", "chain-leaf-key.pem");
    chain.extend(fixture("chain-intermediate-cert.pem"));
    s.set(&t, tls(chain)).unwrap();
    let before = s.versions(&t, "web-1", "site").unwrap().len();
    let key_text = String::from_utf8(fixture("p256-pkcs8-key.pem")).unwrap();
    let key_body = key_text.lines().nth(1).unwrap();
    for (bundle, why) in [
        (tls_bundle("rsa-cert.pem", "p256-pkcs8-key.pem"), "does not match"),
        (fixture("p256-cert.pem"), "PRIVATE KEY"),
        (fixture("p256-pkcs8-key.pem"), "CERTIFICATE"),
        ({ let mut b = tls_bundle("p256-cert.pem", "p256-pkcs8-key.pem"); b.extend(fixture("p256-sec1-key.pem")); b }, "exactly one"),
        (tls_bundle("p256-cert.pem", "p256-encrypted-pkcs8-key.pem"), "encrypted"),
        (tls_bundle("p521-cert.pem", "p521-sec1-key.pem"), "not supported"),
        (b"hello".to_vec(), "PEM"),
    ] {
        let m = invalid(s.set(&t, tls(bundle)));
        assert!(m.to_lowercase().contains(&why.to_lowercase()), "{why}: {m}");
        assert!(!m.contains(key_body), "the message quotes key material");
    }
    assert_eq!(s.versions(&t, "web-1", "site").unwrap().len(), before);
}

#[test]
fn tenants_are_isolated_with_the_same_instance_and_keys() {
    let s = service(Arc::new(MemoryBackend::new()));
    let (a, b) = (Scope::tenant("tenant-a").unwrap(), Scope::tenant("tenant-b").unwrap());
    s.set(&a, env("TOKEN", "a1")).unwrap();
    s.set(&a, env("TOKEN", "a2")).unwrap();
    s.set(&a, SetRequest::new("web-1", "cfg", SecretType::File, "a-file")).unwrap();
    assert_eq!(s.get(&b, "web-1", "TOKEN").unwrap_err(), Error::NotFound);
    assert_eq!(s.get_version(&b, "web-1", "TOKEN", 1).unwrap_err(), Error::NotFound);
    assert_eq!(s.versions(&b, "web-1", "TOKEN").unwrap_err(), Error::NotFound);
    assert!(s.list(&b, "web-1").unwrap().is_empty());
    assert!(s.inject(&b, "web-1").unwrap().is_empty());
    assert!(s.mounts(&b, "web-1").unwrap().is_empty());
    assert_eq!(s.delete(&b, "web-1", "TOKEN").unwrap_err(), Error::NotFound);
    // B's set is B's own version 1; A is untouched.
    assert_eq!(s.set(&b, env("TOKEN", "b1")).unwrap().version, 1);
    assert!(matches!(s.set(&b, env("TOKEN", "b2").if_version(2)), Err(Error::VersionMismatch(_))));
    let a_tok = s.get(&a, "web-1", "TOKEN").unwrap();
    assert_eq!((a_tok.meta.version, a_tok.value.expose()), (2, &b"a2"[..]));
    assert_eq!(s.get(&b, "web-1", "TOKEN").unwrap().value.expose(), b"b1");
    assert!(Scope::tenant("../tenant-a").is_err());
}

#[test]
fn a_trap_is_reported_and_the_next_call_runs_on_a_fresh_instance() {
    let (s, t) = setup();
    s.set(&t, env("A", "before")).unwrap();
    // 100 MiB cannot even be copied into the call's capped linear memory.
    let huge = SetRequest::new("web-1", "A", SecretType::File, vec![0u8; 100 << 20]);
    match s.set(&t, huge) {
        Err(Error::Trap { call, message }) => {
            assert_eq!(call, "set");
            assert!(!message.is_empty());
        }
        other => panic!("expected a trap, got {other:?}"),
    }
    assert_eq!(s.get(&t, "web-1", "A").unwrap().value.expose(), b"before");
    assert_eq!(s.set(&t, env("A", "after")).unwrap().version, 2);
}

#[test]
fn values_are_redacted_in_debug_and_json() {
    let (s, t) = setup();
    let canary = "canary-5e1d-never-in-output";
    let req = env("SECRET", canary);
    assert!(!format!("{req:?}").contains(canary));
    assert!(!serde_json::to_string(&req).unwrap().contains(canary));
    s.set(&t, req).unwrap();
    let got = s.get(&t, "web-1", "SECRET").unwrap();
    assert_eq!(got.value.expose(), canary.as_bytes());
    let debug = format!("{got:?}");
    assert!(!debug.contains(canary) && debug.contains("[REDACTED]"), "{debug}");
    let json = serde_json::to_string(&got).unwrap();
    assert!(!json.contains(canary) && json.contains("\"key\":\"SECRET\""), "{json}");
    let injected = s.inject(&t, "web-1").unwrap();
    assert!(!format!("{injected:?}").contains(canary));
    assert_eq!(format!("{:?}", SecretValue::from(canary)), "[REDACTED]");
    s.set(&t, SetRequest::new("web-1", "f", SecretType::File, canary)).unwrap();
    let mounts = s.mounts(&t, "web-1").unwrap();
    assert!(!format!("{mounts:?}").contains(canary));
    assert!(!serde_json::to_string(&mounts).unwrap().contains(canary));
}

#[test]
fn the_service_is_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<secrets_host::Secrets>();
    let (s, t) = setup();
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let (s, t) = (s.clone(), t.clone());
            std::thread::spawn(move || s.set(&t, SetRequest::new(&format!("inst-{i}"), "K", SecretType::Env, "v")).unwrap())
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap().version, 1);
    }
}

#[test]
fn a_component_importing_anything_else_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("greedy.wasm");
    let wat = r#"(component (import "wasi:cli/environment@0.2.0" (instance)))"#;
    std::fs::write(&path, wat::parse_str(wat).unwrap()).unwrap();
    match secrets_host::Sandbox::from_file(&path) {
        Err(Error::Sandbox(m)) => assert!(m.contains("imports wasi:cli/environment@0.2.0") && m.contains("only"), "{m}"),
        Err(other) => panic!("wrong error: {other:?}"),
        Ok(_) => panic!("a component importing WASI was accepted"),
    }
}

#[test]
fn resolve_returns_env_and_mounts_from_one_call() {
    let (s, t) = setup();
    s.set(&t, env("PORT", "80")).unwrap();
    s.set(&t, SetRequest::new("web-1", "app.conf", SecretType::File, "x=1")).unwrap();
    let r = s.resolve(&t, "web-1").unwrap();
    assert_eq!(r.env.keys().collect::<Vec<_>>(), vec!["PORT"]);
    assert_eq!(r.env["PORT"].expose(), b"80");
    assert_eq!(r.mounts.len(), 1);
    assert_eq!((r.mounts[0].path.as_str(), r.mounts[0].contents.expose()), ("app.conf", &b"x=1"[..]));
    assert!(s.resolve(&t, "nobody").unwrap().env.is_empty());
    assert!(matches!(s.resolve(&t, "../x"), Err(Error::InvalidArgument(_))));
}

#[test]
fn a_call_past_its_deadline_is_interrupted_and_stores_nothing() {
    let backend = Arc::new(MemoryBackend::new());
    let t = Scope::tenant("acme").unwrap();
    let hasty = service(backend.clone()).with_call_timeout(std::time::Duration::ZERO);
    match hasty.set(&t, env("A", "v")) {
        Err(Error::Trap { call: "set", message }) => assert!(message.contains("interrupt"), "{message}"),
        other => panic!("expected an interrupted call, got {other:?}"),
    }
    assert!(backend.is_empty());
    assert_eq!(service(backend).set(&t, env("A", "v")).unwrap().version, 1);
}

#[test]
fn a_trap_after_vault_writes_rolls_them_back() {
    let backend = Arc::new(MemoryBackend::new());
    let t = Scope::tenant("acme").unwrap();
    service(backend.clone()).set(&t, env("A", "old")).unwrap();
    let entries = backend.len();
    // Each store takes 1 s; the call may run 50 ms (5 epoch ticks, with a
    // wide margin for a loaded machine): the component is interrupted when
    // it resumes after its first store has landed in the transaction.
    let slow = service(FaultyBackend::slow(backend.clone(), std::time::Duration::from_secs(1)))
        .with_call_timeout(std::time::Duration::from_millis(50));
    assert!(matches!(slow.set(&t, env("A", "new")), Err(Error::Trap { call: "set", .. })));
    // The new value's store had landed in the transaction: nothing of it
    // may reach the backend.
    assert_eq!(backend.len(), entries);
    let s = service(backend);
    let got = s.get(&t, "web-1", "A").unwrap();
    assert_eq!((got.meta.version, got.value.expose()), (1, &b"old"[..]));
    assert_eq!(s.versions(&t, "web-1", "A").unwrap().len(), 1);
}

/// `Debug` of every public type that can hold a secret or a credential
/// shows none.
#[test]
fn debug_of_public_types_shows_no_secret() {
    use secrets_host::backends::StoreConfig;
    use secrets_host::backends::sealed::Keyring;
    let canary = "CANARY-debug-4b1d";
    let value = secrets_host::SecretValue::from(canary);
    let (s, t) = setup();
    s.set(&t, SetRequest::new("web-1", "E", SecretType::Env, canary)).unwrap();
    s.set(&t, SetRequest::new("web-1", "f", SecretType::File, canary)).unwrap();
    let resolved = s.resolve(&t, "web-1").unwrap();
    let key = "c4".repeat(32);
    let shown = [
        format!("{value:?}"),
        format!("{:?}", SetRequest::new("web-1", "E", SecretType::Env, canary)),
        format!("{:?}", s.get(&t, "web-1", "E").unwrap()),
        format!("{resolved:?}"),
        format!("{:?}", s.inject(&t, "web-1").unwrap()),
        format!("{s:?}"),
        format!("{:?}", Keyring::from_spec(&key).unwrap()),
        format!("{:?}", StoreConfig::parse(&format!("postgres://u:{canary}@h/db?password={canary}")).unwrap()),
        format!("{:?}", StoreConfig::parse("openbao+http://h:1/secret?token_env=T").unwrap()),
        format!("{:?}", Error::Vault(secrets_host::VaultError::Other("x".into()))),
    ];
    for text in &shown {
        assert!(!text.contains(canary) && !text.contains(&key), "{text}");
    }
    assert!(shown[3].contains("REDACTED"), "{}", shown[3]);
}
