//! The GCP Secret Manager backend against the drongo emulator (Secret
//! Manager's v1 REST API).
//!
//! Needs `SECRETS_TEST_GCPSM_URL`, which `.ci/gcp.sh` exports after starting
//! the emulator; `bash .ci/run` does all of it. Without it every test here
//! fails (on purpose: a skipped backend test looks like a passing one).
//! Each backend made here uses its own prefix, so tests do not see each
//! other's secrets or locks.

use std::sync::Arc;
use std::time::Duration;

use secrets_host::backends::StoreConfig;
use secrets_host::backends::gcpsm::{Credentials, GcpSmBackend, GcpSmConfig};
use secrets_host::{Access, Backend, VaultError};

use crate::cloud;
use crate::conformance::unique;
use crate::conformance_tests;

fn url() -> String {
    match std::env::var("SECRETS_TEST_GCPSM_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "SECRETS_TEST_GCPSM_URL is not set: these tests need the drongo emulator. Run `bash .ci/run`, or \
             `source .ci/gcp.sh && start_gcp` before `cargo test` (and `stop_gcp` after)."
        ),
    }
}

fn parse(url: &str) -> GcpSmConfig {
    match StoreConfig::parse(url).expect("the gcpsm URL parses") {
        StoreConfig::GcpSm(c) => c,
        other => panic!("{url} is not a gcpsm URL: {other:?}"),
    }
}

/// The emulator's configuration with a fresh prefix.
fn config() -> GcpSmConfig {
    parse(&url()).with_prefix(&unique("t").replace('-', "")).unwrap()
}

fn connect(config: GcpSmConfig) -> GcpSmBackend {
    GcpSmBackend::connect(config).expect("connects to the emulator")
}

fn backend() -> Arc<dyn Backend> {
    Arc::new(connect(config()))
}

conformance_tests!(backend());

/// The emulator's API root (`http://127.0.0.1:PORT`).
fn endpoint() -> String {
    let url = url();
    url.split_once("endpoint=").expect("the test URL names its endpoint").1.split('&').next().unwrap().to_owned()
}

/// Raw REST on the emulator, as an operator would see it.
fn raw_get(path: &str) -> (u16, serde_json::Value) {
    let agent = ureq::Agent::config_builder().http_status_as_error(false).build().new_agent();
    let mut r = agent.get(format!("{}/v1/projects/{}/secrets{path}", endpoint(), parse(&url()).project())).call().unwrap();
    let body = r.body_mut().read_to_string().unwrap();
    (r.status().as_u16(), serde_json::from_str(&body).unwrap_or(serde_json::Value::Null))
}

#[test]
fn entries_are_secrets_with_one_active_version() {
    let b = connect(config());
    let key = "t/6162/i/77/k/4b/v/1";
    let id = b.secret_id(key);
    assert_eq!(id, format!("{}_e_t_6162_i_77_k_4b_v_1", b.config().prefix()), "the documented id");
    let mut t = b.begin(Access::Write, "scope").unwrap();
    t.store(key, b"one").unwrap();
    t.commit().unwrap();
    let mut t = b.begin(Access::Write, "scope").unwrap();
    t.store(key, b"two").unwrap();
    t.commit().unwrap();
    let (status, versions) = raw_get(&format!("/{id}/versions"));
    assert_eq!(status, 200, "{versions}");
    let states: Vec<&str> = versions["versions"].as_array().unwrap().iter().map(|v| v["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["DESTROYED", "ENABLED"], "the older version is destroyed");
    // No lock secret is left behind.
    let (_, list) = raw_get("");
    let ours: Vec<&str> = list["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().rsplit('/').next().unwrap())
        .filter(|n| n.starts_with(&format!("{}_", b.config().prefix())))
        .collect();
    assert_eq!(ours, [id.as_str()], "only the entry; the lock is gone");
    // Rotation adds a version and destroys the old one; the value stays.
    let mut t = b.begin(Access::Write, "scope").unwrap();
    t.rotate(key).unwrap();
    t.commit().unwrap();
    let (_, versions) = raw_get(&format!("/{id}/versions"));
    let states: Vec<&str> = versions["versions"].as_array().unwrap().iter().map(|v| v["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["DESTROYED", "DESTROYED", "ENABLED"]);
    assert_eq!(b.begin(Access::Read, "scope").unwrap().retrieve(key).unwrap().as_deref(), Some(&b"two"[..]));
    let mut seen = Vec::new();
    assert_eq!(b.rotate_all(&mut |done, total| seen.push((done, total))).unwrap(), 1);
    assert_eq!(seen.last(), Some(&(1, 1)));
}

#[test]
fn long_keys_get_digest_ids_with_the_key_in_labels() {
    let b = connect(config());
    let long = format!("t/{}/i/{}/k/{}/v/1", "ab".repeat(128), "cd".repeat(128), "ef".repeat(255));
    let id = b.secret_id(&long);
    assert!(id.len() <= 255 && id.contains("_e-h"), "{id}");
    let mut t = b.begin(Access::Write, "scope").unwrap();
    t.store(&long, b"v").unwrap();
    t.commit().unwrap();
    assert_eq!(b.begin(Access::Read, "scope").unwrap().retrieve(&long).unwrap().as_deref(), Some(&b"v"[..]));
    let (_, secret) = raw_get(&format!("/{id}"));
    let labels = secret["labels"].as_object().unwrap();
    assert!(labels["k00"].as_str().unwrap().starts_with(&hex_of("t/abab")), "{labels:?}");
    // A key too long for the labels is refused before anything is written.
    let huge = "x".repeat(2000);
    let mut t = b.begin(Access::Write, "scope").unwrap();
    let err = t.store(&huge, b"v").unwrap_err();
    assert!(matches!(err, VaultError::Rejected(ref m) if m.contains("too long")), "{err:?}");
}

fn hex_of(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn values_over_64_kib_and_the_empty_value() {
    let b: Arc<dyn Backend> = backend();
    cloud::limits_are_enforced_by_the_backend(b.clone());
    let b = connect(config());
    // The empty value is the payload 00 with a label; the value 00 is not.
    let mut t = b.begin(Access::Write, "scope").unwrap();
    t.store("t/00/empty", b"").unwrap();
    t.store("t/00/zero", &[0]).unwrap();
    t.commit().unwrap();
    let mut r = b.begin(Access::Read, "scope").unwrap();
    assert_eq!(r.retrieve("t/00/empty").unwrap(), Some(vec![]));
    assert_eq!(r.retrieve("t/00/zero").unwrap(), Some(vec![0]));
    // Rewritten from one to the other, both ways.
    let mut t = b.begin(Access::Write, "scope").unwrap();
    t.store("t/00/empty", &[0]).unwrap();
    t.store("t/00/zero", b"").unwrap();
    t.commit().unwrap();
    let mut r = b.begin(Access::Read, "scope").unwrap();
    assert_eq!(r.retrieve("t/00/empty").unwrap(), Some(vec![0]));
    assert_eq!(r.retrieve("t/00/zero").unwrap(), Some(vec![]));
}

#[test]
fn a_lock_left_by_a_killed_process_is_taken_over_after_its_lease() {
    cloud::killed_holder_is_taken_over(&url(), "gcpsm", |prefix, ttl| {
        Arc::new(connect(parse(&url()).with_prefix(prefix).unwrap().with_lock_ttl(ttl).with_lock_timeout(Duration::from_secs(30))))
    });
}

/// Not a test: the lock holder `a_lock_left_by_a_killed_process_is_taken_over_after_its_lease` starts and kills.
#[test]
#[ignore = "helper process of a_lock_left_by_a_killed_process_is_taken_over_after_its_lease"]
fn gcpsm_lock_holder_process() {
    cloud::lock_holder_process("gcpsm", |prefix, ttl| {
        Arc::new(connect(parse(&url()).with_prefix(prefix).unwrap().with_lock_ttl(ttl)))
    });
}

#[test]
fn throttling_is_retried_with_backoff_and_a_bound() {
    let config = config();
    cloud::throttling_is_retried_with_backoff_and_a_bound(&endpoint(), "throttled", &|endpoint| {
        GcpSmBackend::connect(config.clone().with_endpoint(endpoint).unwrap()).map(|b| Arc::new(b) as Arc<dyn Backend>)
    });
}

#[test]
fn credentials_never_show_in_errors_or_debug() {
    let token = "ya29.canary-token-Zq81xW";
    let with_token = config().with_credentials(Credentials::AccessToken(token.to_owned().into()));
    assert!(!format!("{with_token:?}").contains("canary"), "{with_token:?}");
    let b = connect(with_token.clone());
    assert!(!format!("{b:?}").contains("canary"), "{b:?}");
    // A server that refuses the token: the error names the kind of
    // credentials, never the token.
    let fake = cloud::Refuser::start(403);
    let err = GcpSmBackend::connect(with_token.with_endpoint(&fake.url()).unwrap()).unwrap_err();
    let shown = format!("{err} {err:?}");
    assert!(matches!(err, VaultError::Rejected(_)) && shown.contains("access token") && !shown.contains("canary"), "{shown}");
    assert!(fake.saw_header("authorization", &format!("Bearer {token}")), "the token was sent");

    // A service-account key file: a signed JWT exchanged at its token_uri
    // (a fake here), then the access token used.
    let dir = tempfile::tempdir().unwrap();
    let key_pem = String::from_utf8(crate::common::fixture("rsa-pkcs8-key.pem")).unwrap();
    let token_server = cloud::TokenServer::start("ya29.from-jwt-canary");
    let key_file = dir.path().join("sa.json");
    std::fs::write(
        &key_file,
        serde_json::json!({
            "type": "service_account", "client_email": "ci@p.iam.gserviceaccount.com", "private_key_id": "kid1",
            "private_key": key_pem, "token_uri": token_server.url(),
        })
        .to_string(),
    )
    .unwrap();
    let refuser = cloud::Refuser::start(401);
    let err = GcpSmBackend::connect(
        config().with_credentials(Credentials::KeyFile(key_file.clone())).with_endpoint(&refuser.url()).unwrap(),
    )
    .unwrap_err();
    let shown = format!("{err} {err:?}");
    assert!(shown.contains("service account ci@p.iam") && !shown.contains("canary") && !shown.contains("PRIVATE"), "{shown}");
    assert!(refuser.saw_header("authorization", "Bearer ya29.from-jwt-canary"), "the exchanged token was sent");
    let assertion = token_server.assertion();
    let claims = cloud::jwt_claims(&assertion);
    assert_eq!(claims["iss"], "ci@p.iam.gserviceaccount.com");
    assert_eq!(claims["aud"], token_server.url().as_str());
    // A key file that is not a service account's is refused, naming it.
    std::fs::write(&key_file, r#"{"type":"authorized_user","refresh_token":"canary"}"#).unwrap();
    let err = GcpSmBackend::connect(config().with_credentials(Credentials::KeyFile(key_file))).unwrap_err();
    assert!(matches!(err, VaultError::Rejected(ref m) if m.contains("authorized_user") && !m.contains("canary")), "{err:?}");
}

#[test]
fn store_urls_parse_and_refuse_credentials() {
    let c = parse("gcpsm://my-proj/apps-x?endpoint=http://127.0.0.1:9&lock_ttl=5");
    assert_eq!((c.project(), c.prefix()), ("my-proj", "apps-x"));
    for (bad, needle) in [
        ("gcpsm://", "PROJECT"),
        ("gcpsm://p?token=canary", "not accepted"),
        ("gcpsm://u:canary@p", "not accepted"),
        ("gcpsm://p/a_b", "prefix"),
        ("gcpsm://p?endpoint=ftp://x", "endpoint"),
        ("gcpsm://p?nope=1", "unknown"),
        ("gcpsm://p?lock_ttl=0", "lock_ttl"),
    ] {
        let err = StoreConfig::parse(bad).unwrap_err();
        assert!(matches!(err, VaultError::Rejected(ref m) if m.contains(needle) && !m.contains("canary")), "{bad}: {err:?}");
    }
}

/// (set of a new key, set of an existing key, get, list, inject with one env key)
const EXPECTED: (u64, u64, u64, u64, u64) = (14, 12, 1, 1, 1);

/// The requests of each call, as the README's table says.
#[test]
fn requests_per_call_are_pinned() {
    let b = connect(config());
    assert_eq!(cloud::requests_per_call(Arc::new(b.clone()), &|| b.requests()), EXPECTED);
}
