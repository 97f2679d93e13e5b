//! The AWS Secrets Manager backend against moto's server (Secrets Manager's
//! JSON protocol, SigV4-signed requests).
//!
//! Needs `SECRETS_TEST_AWSSM_URL` (and the dummy keys `.ci/aws.sh` exports
//! with it); `bash .ci/run` does all of it. Without it every test here
//! fails (on purpose: a skipped backend test looks like a passing one).
//! Each backend made here uses its own prefix.

use std::sync::Arc;
use std::time::Duration;

use secrets_host::backends::StoreConfig;
use secrets_host::backends::awssm::{AwsCredentials, AwsKeys, AwsSmBackend, AwsSmConfig};
use secrets_host::{Access, Backend, Scope, SecretType, SetRequest, VaultError};

use crate::cloud;
use crate::conformance::unique;
use crate::conformance_tests;

fn url() -> String {
    match std::env::var("SECRETS_TEST_AWSSM_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "SECRETS_TEST_AWSSM_URL is not set: these tests need moto's server. Run `bash .ci/run`, or \
             `source .ci/aws.sh && start_aws` before `cargo test` (and `stop_aws` after)."
        ),
    }
}

fn parse(url: &str) -> AwsSmConfig {
    match StoreConfig::parse(url).expect("the awssm URL parses") {
        StoreConfig::AwsSm(c) => c,
        other => panic!("{url} is not an awssm URL: {other:?}"),
    }
}

/// Dummy keys: moto checks no signature.
fn keys() -> AwsCredentials {
    AwsCredentials::Keys(AwsKeys::new("AKIDSECRETSTEST", "secrets-test-not-a-real-key", None))
}

/// The emulator's configuration with a fresh prefix.
fn config() -> AwsSmConfig {
    parse(&url()).with_prefix(&format!("tests/{}", unique("run"))).unwrap().with_credentials(keys())
}

fn connect(config: AwsSmConfig) -> AwsSmBackend {
    AwsSmBackend::connect(config).expect("connects to the emulator")
}

fn backend() -> Arc<dyn Backend> {
    Arc::new(connect(config()))
}

conformance_tests!(backend());

fn endpoint() -> String {
    let url = url();
    url.split_once("endpoint=").expect("the test URL names its endpoint").1.split('&').next().unwrap().to_owned()
}

/// One raw, unsigned call to moto (which checks no signature).
fn raw(op: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    let agent = ureq::Agent::config_builder().http_status_as_error(false).build().new_agent();
    let mut r = agent
        .post(endpoint())
        .header("X-Amz-Target", format!("secretsmanager.{op}"))
        .header("Authorization", "AWS4-HMAC-SHA256 Credential=AKID/20260101/us-east-1/secretsmanager/aws4_request, SignedHeaders=host, Signature=0")
        .content_type("application/x-amz-json-1.1")
        .send(body.to_string().as_bytes())
        .unwrap();
    let text = r.body_mut().read_to_string().unwrap();
    (r.status().as_u16(), serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
}

#[test]
fn entries_are_secrets_and_rotation_re_puts_them() {
    let b = connect(config());
    let key = "t/6162/i/77/k/4b/v/1";
    let name = b.secret_name(key);
    assert_eq!(name, format!("{}/e/t/6162/i/77/k/4b/v/1", b.config().prefix()), "the documented name");
    let mut t = b.begin(Access::Write, "scope").unwrap();
    t.store(key, b"one").unwrap();
    t.store("t/00/empty", b"").unwrap();
    t.commit().unwrap();
    let (status, value) = raw("GetSecretValue", serde_json::json!({"SecretId": name}));
    assert_eq!((status, value["SecretBinary"].as_str()), (200, Some("b25l")), "{value}");
    let (_, value) = raw("GetSecretValue", serde_json::json!({"SecretId": b.secret_name("t/00/empty")}));
    assert_eq!(value["SecretString"], "empty", "the empty value is a string marker, never an empty binary");
    let version = value["VersionId"].clone();
    // Rotation: a new version, same value.
    let (_, before) = raw("GetSecretValue", serde_json::json!({"SecretId": name}));
    let mut t = b.begin(Access::Write, "scope").unwrap();
    t.rotate(key).unwrap();
    t.commit().unwrap();
    let (_, after) = raw("GetSecretValue", serde_json::json!({"SecretId": name}));
    assert_ne!(before["VersionId"], after["VersionId"], "a new version");
    assert_eq!(after["SecretBinary"], "b25l");
    assert_eq!(b.begin(Access::Read, "scope").unwrap().retrieve("t/00/empty").unwrap(), Some(vec![]));
    assert_ne!(version, serde_json::Value::Null);
    // No lock secret is left behind, and rotate_all covers both entries.
    let (_, list) = raw("ListSecrets", serde_json::json!({"Filters": [{"Key": "name", "Values": [format!("{}/", b.config().prefix())]}]}));
    let names: Vec<&str> = list["SecretList"].as_array().unwrap().iter().map(|s| s["Name"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.iter().all(|n| n.contains("/e/")), "{names:?}");
    assert_eq!(b.rotate_all(&mut |_, _| {}).unwrap(), 2);
}

#[test]
fn long_keys_get_digest_names_with_the_key_in_the_description() {
    let b = connect(config());
    let long = format!("t/{}/i/{}/k/{}/v/1", "ab".repeat(128), "cd".repeat(128), "ef".repeat(255));
    let name = b.secret_name(&long);
    assert!(name.len() <= 512 && name.contains("/h/"), "{name}");
    let mut t = b.begin(Access::Write, "scope").unwrap();
    t.store(&long, b"v").unwrap();
    t.commit().unwrap();
    assert_eq!(b.begin(Access::Read, "scope").unwrap().retrieve(&long).unwrap().as_deref(), Some(&b"v"[..]));
    let (_, described) = raw("DescribeSecret", serde_json::json!({"SecretId": name}));
    assert_eq!(described["Description"].as_str(), Some(format!("secrets-host key: {long}").as_str()));
    let huge = "x".repeat(2100);
    let mut t = b.begin(Access::Write, "scope").unwrap();
    let err = t.store(&huge, b"v").unwrap_err();
    assert!(matches!(err, VaultError::Rejected(ref m) if m.contains("too long")), "{err:?}");
}

#[test]
fn values_over_64_kib_are_refused_by_the_backend() {
    cloud::limits_are_enforced_by_the_backend(backend());
}

#[test]
fn a_lock_left_by_a_killed_process_is_taken_over_after_its_lease() {
    cloud::killed_holder_is_taken_over(&url(), "awssm", |prefix, ttl| {
        Arc::new(connect(
            parse(&url()).with_prefix(prefix).unwrap().with_credentials(keys()).with_lock_ttl(ttl).with_lock_timeout(Duration::from_secs(30)),
        ))
    });
}

/// Not a test: the lock holder `a_lock_left_by_a_killed_process_is_taken_over_after_its_lease` starts and kills.
#[test]
#[ignore = "helper process of a_lock_left_by_a_killed_process_is_taken_over_after_its_lease"]
fn awssm_lock_holder_process() {
    cloud::lock_holder_process("awssm", |prefix, ttl| {
        Arc::new(connect(parse(&url()).with_prefix(prefix).unwrap().with_credentials(keys()).with_lock_ttl(ttl)))
    });
}

#[test]
fn throttling_is_retried_with_backoff_and_a_bound() {
    let config = config();
    cloud::throttling_is_retried_with_backoff_and_a_bound(&endpoint(), "Throttling", &|endpoint| {
        AwsSmBackend::connect(config.clone().with_endpoint(endpoint).unwrap()).map(|b| Arc::new(b) as Arc<dyn Backend>)
    });
}

#[test]
fn credentials_never_show_in_errors_or_debug() {
    let secret = "canary-secret-Zq81xW";
    let creds = AwsCredentials::Keys(AwsKeys::new("AKIDCANARYTEST", secret, Some("canary-session-token")));
    let with_keys = config().with_credentials(creds.clone());
    assert!(!format!("{with_keys:?}").contains("canary"), "{with_keys:?}");
    let b = connect(with_keys.clone());
    assert!(!format!("{b:?}").contains("canary"), "{b:?}");
    let fake = cloud::Refuser::start(400);
    let err = AwsSmBackend::connect(with_keys.with_endpoint(&fake.url()).unwrap()).unwrap_err();
    let shown = format!("{err} {err:?}");
    assert!(matches!(err, VaultError::Rejected(_)) && shown.contains("UnrecognizedClientException"), "{shown}");
    assert!(!shown.contains("canary"), "{shown}");
    // The request was signed with the keys: SigV4, the session token as its header.
    let heads = fake.heads();
    assert!(heads.iter().any(|h| h.contains("AWS4-HMAC-SHA256 Credential=AKIDCANARYTEST/")), "{heads:?}");
    assert!(fake.saw_header("x-amz-security-token", "canary-session-token"));
    assert!(!heads.iter().any(|h| h.contains(secret)), "the secret key itself is never sent");
    // A profile: keys from a credentials file; a missing one is named.
    let err = AwsSmBackend::connect(config().with_credentials(AwsCredentials::Default).with_profile("no-such-profile-x").unwrap()).unwrap_err();
    assert!(matches!(err, VaultError::Rejected(ref m) if m.contains("no-such-profile-x")), "{err:?}");
}

#[test]
fn store_urls_parse_and_refuse_credentials() {
    let c = parse("awssm://eu-west-1/apps/x?endpoint=http://127.0.0.1:9&kms_key_id=alias%2Fmine&profile=ci&lock_ttl=5");
    assert_eq!((c.region(), c.prefix()), ("eu-west-1", "apps/x"));
    assert!(format!("{c:?}").contains("alias/mine"));
    for (bad, needle) in [
        ("awssm://", "REGION"),
        ("awssm://eu-west-1?secret_access_key=canary", "not accepted"),
        ("awssm://AKID:canary@eu-west-1", "not accepted"),
        ("awssm://EU_WEST", "region"),
        ("awssm://eu-west-1/a//b", "prefix"),
        ("awssm://eu-west-1?nope=1", "unknown"),
        ("awssm://eu-west-1?timeout=x", "timeout"),
    ] {
        let err = StoreConfig::parse(bad).unwrap_err();
        assert!(matches!(err, VaultError::Rejected(ref m) if m.contains(needle) && !m.contains("canary")), "{bad}: {err:?}");
    }
}

/// (set of a new key, set of an existing key, get, list, inject with one env key)
const EXPECTED: (u64, u64, u64, u64, u64) = (9, 8, 1, 1, 1);

/// The requests of each call, as the README's table says.
#[test]
fn requests_per_call_are_pinned() {
    let b = connect(config());
    assert_eq!(cloud::requests_per_call(Arc::new(b.clone()), &|| b.requests()), EXPECTED);
}

/// An instance's index is a cloud secret too: the `set` that would grow it
/// past 64 KiB fails with nothing stored, and every earlier key stays.
/// (The lock, buffer and size check are shared with `gcpsm`.)
#[test]
fn an_index_that_would_outgrow_a_cloud_secret_is_refused_with_nothing_stored() {
    let s = crate::common::service(backend());
    let scope = Scope::tenant(&unique("full")).unwrap();
    let name = |i: u32| format!("K{i:03}{}", "x".repeat(251));
    let mut stored = 0;
    let err = loop {
        match s.set(&scope, SetRequest::new("web", &name(stored), SecretType::Env, "v")) {
            Ok(_) => stored += 1,
            Err(e) => break e,
        }
        assert!(stored < 1000, "the index never outgrew 64 KiB");
    };
    eprintln!("{stored} keys of 255 bytes fit; then: {err}");
    assert!(err.to_string().contains("larger than a cloud secret holds"), "{err}");
    // Roughly 64 KiB / (255-byte name + ~14 bytes of metadata): 242 here.
    assert!((200..=260).contains(&stored), "{stored}");
    let listed = s.list(&scope, "web").unwrap();
    assert_eq!(listed.len(), stored as usize);
    assert!(s.get(&scope, "web", &name(stored)).is_err(), "the refused key was not stored");
    assert_eq!(s.get(&scope, "web", &name(0)).unwrap().value.expose(), b"v");
}
