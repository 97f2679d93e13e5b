//! The AWS Secrets Manager backend: one secret per vault entry, over
//! Secrets Manager's JSON protocol, each request signed with SigV4.
//!
//! # Store URL
//!
//! `awssm://REGION[/PREFIX][?endpoint=URL&kms_key_id=ID&profile=NAME&lock_ttl=SECS&lock_timeout=SECS&timeout=SECS]`
//!
//! | part | meaning |
//! |---|---|
//! | `REGION` | e.g. `eu-west-1` |
//! | `PREFIX` | starts every secret name of this store (default `cp-secrets`): 1..=200 of `A-Z a-z 0-9 / _ + = . @ -`, no empty segment |
//! | `endpoint=URL` | another endpoint (a VPC endpoint, an emulator) |
//! | `kms_key_id=ID` | the KMS key new secrets are encrypted with, and that `rotate` moves a secret to (default: the account's `aws/secretsmanager` key) |
//! | `profile=NAME` | take the keys of this profile only |
//! | `lock_ttl`, `lock_timeout`, `timeout` | the lock's lease (30 s), the wait for a lock (60 s), one request (30 s) |
//!
//! Credentials: see [`credentials`] (environment, web identity, profile;
//! not the instance metadata service, container credentials, SSO or
//! `credential_process`). Connecting sends one `ListSecrets`, so bad keys,
//! a wrong region or endpoint, or a missing permission fail at once. The
//! identity needs `secretsmanager:CreateSecret, GetSecretValue,
//! PutSecretValue, UpdateSecret, DeleteSecret, DescribeSecret, ListSecrets`
//! on `arn:aws:secretsmanager:REGION:ACCOUNT:secret:PREFIX/*` (and
//! `kms:Encrypt, Decrypt, GenerateDataKey` on a `kms_key_id`).
//!
//! # Why SigV4 over ureq, not the SDK
//!
//! Measured on this project's 2-core machine (rustc 1.95, debug, clean,
//! `-j2`, with other builds running): `aws-config` 1.13 +
//! `aws-sdk-secretsmanager` 1.125 with default features off (`rustls`,
//! `rt-tokio`) took **196 s** and 169 crates; `aws-sigv4` 1.6.4 +
//! `aws-credential-types` + `ureq` 3 took **22 s** and 79 crates, most of
//! which (ureq, rustls) the project builds anyway. The SDK also brings a
//! second HTTP stack (hyper) and wants async. Five JSON operations did not
//! justify that; the price is the credential sources listed above instead
//! of the SDK's full chain.
//!
//! # Layout
//!
//! - A vault key becomes the secret name `PREFIX/e/<encoded key>`: ASCII
//!   letters, digits, `/` and `_` kept, any other byte as `=` and two hex
//!   digits (so a name never ends in `-` and six characters, which AWS
//!   advises against). Injective, always valid. When the name would exceed
//!   512 characters it is `PREFIX/h/<SHA-256 of the key, hex>`, the full
//!   key is kept in the secret's description, and every read of it checks
//!   the description (one more request); keys over 2000 bytes are refused.
//! - Lock entries live apart: `PREFIX/l/...` (`PREFIX/lh/<digest>`).
//! - The value is the secret's `AWSCURRENT` version: `SecretBinary`, or,
//!   for the empty value (AWS refuses an empty binary), `SecretString`
//!   `"empty"` (a version holds one or the other, so this is exact). A
//!   write is `PutSecretValue`; AWS keeps the previous version as
//!   `AWSPREVIOUS` and removes older ones itself (versions are not billed).
//!   Deleting a key deletes the secret at once (`ForceDeleteWithoutRecovery`).
//! - Values: at most 64 KiB (65536 bytes), refused by the backend itself
//!   before anything is written (the emulator has no limit).
//! - `rotate` re-puts the value (`PutSecretValue`, or `UpdateSecret` with
//!   `kms_key_id` when one is configured): a new version encrypted under
//!   the secret's current KMS key. Not `RotateSecret`, which needs a Lambda.
//!
//! # Transactions
//!
//! As the OpenBao backend's, over `remote::lock` and `remote::txn`: a lock
//! secret per instance created with `CreateSecret` (`ResourceExistsException`
//! when held), buffered writes applied at commit in the logic's order
//! (**not atomic**), a lease on each process's monotonic clock, takeover of
//! a stale lock through a claim secret. Secrets Manager has no
//! compare-and-set on an existing secret that the emulator implements
//! (`UpdateSecretVersionStage` with `RemoveFromVersionId` would be one on
//! real AWS; moto does not really move `AWSCURRENT`), so nothing here relies
//! on one; what that leaves unprotected is in `remote::lock` and the README.
//! On real AWS a force-deleted name can take a moment to become free again:
//! a writer then waits (a lock) or fails "unavailable" (an entry deleted
//! and set again at once).
//!
//! # Requests and cost
//!
//! `get` is 1 request (`GetSecretValue` of the key record, which carries
//! the current value; one more for a value too large for it), `list` 1,
//! `inject` 1 (the index carries the current values; one more per value
//! it could not carry, read concurrently, 8 at a time). A `set` of an existing key: lock (1), reads of key record
//! and index (2, together), value (1: `CreateSecret` with the value), key
//! record (1), index (1), release (1): 7. Every request carries a
//! `ClientRequestToken` where the API takes one, so a throttled request
//! (`ThrottlingException`, HTTP 429) is retried safely: with backoff, at
//! most 6 attempts in 10 s (`remote::retry`). An instance with K keys and V
//! versions kept per key holds K×V + K + 1 secrets; a lock secret exists
//! only during a write.

pub mod credentials;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

pub use credentials::{AwsCredentials, AwsKeys, CREDENTIAL_ENVS};

use super::remote::retry::{self, Attempt};
use super::remote::{LockConfig, RemoteBackend, RemoteStore, Space, endpoint_url, random_hex16};
use crate::backends::{Access, Backend, Transaction, VaultError, http_agent, rejected};

/// Where secret names start unless the URL says otherwise.
pub const DEFAULT_PREFIX: &str = "cp-secrets";
/// How long a lock entry is valid before others may take it over.
pub const DEFAULT_LOCK_TTL: Duration = Duration::from_secs(30);
/// How long a writer waits for a lock.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(60);
/// The timeout of one HTTP request.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest secret name AWS accepts.
pub const MAX_NAME: usize = 512;
/// The longest key kept in a description (2048 characters in all).
const MAX_DESCRIBED_KEY: usize = 2000;
const DESCRIPTION: &str = "secrets-host key: ";
/// The `SecretString` of the empty value.
const EMPTY: &str = "empty";
const MAX_BODY: u64 = 1 << 20;

/// Where and how to reach Secrets Manager. `Debug` never shows a credential.
#[derive(Clone, Debug)]
pub struct AwsSmConfig {
    pub(crate) region: String,
    pub(crate) prefix: String,
    pub(crate) endpoint: Option<String>,
    pub(crate) kms_key_id: Option<String>,
    pub(crate) profile: Option<String>,
    pub(crate) credentials: AwsCredentials,
    pub(crate) lock_ttl: Duration,
    pub(crate) lock_timeout: Duration,
    pub(crate) request_timeout: Duration,
}

impl AwsSmConfig {
    /// The region `region`, with the defaults.
    pub fn new(region: &str) -> Result<Self, VaultError> {
        let valid = !region.is_empty()
            && region.len() <= 32
            && region.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !valid {
            return Err(rejected(format!("the AWS region {region:?} must look like us-east-1")));
        }
        Ok(AwsSmConfig {
            region: region.to_owned(),
            prefix: DEFAULT_PREFIX.to_owned(),
            endpoint: None,
            kms_key_id: None,
            profile: None,
            credentials: AwsCredentials::Default,
            lock_ttl: DEFAULT_LOCK_TTL,
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        })
    }

    /// Starts every secret name with `prefix/`.
    pub fn with_prefix(mut self, prefix: &str) -> Result<Self, VaultError> {
        let ok = !prefix.is_empty()
            && prefix.len() <= 200
            && prefix.split('/').all(|s| !s.is_empty())
            && prefix.bytes().all(|b| b.is_ascii_alphanumeric() || b"/_+=.@-".contains(&b));
        if !ok {
            return Err(rejected(format!(
                "the AWS secret prefix {prefix:?} must be 1 to 200 of A-Z a-z 0-9 / _ + = . @ - without empty segments"
            )));
        }
        self.prefix = prefix.to_owned();
        Ok(self)
    }

    /// Sends requests to `endpoint` instead of `secretsmanager.REGION.amazonaws.com`.
    pub fn with_endpoint(mut self, endpoint: &str) -> Result<Self, VaultError> {
        self.endpoint = Some(endpoint_url(endpoint)?);
        Ok(self)
    }

    /// Encrypts new secrets with this KMS key (id, ARN or alias).
    pub fn with_kms_key_id(mut self, id: &str) -> Result<Self, VaultError> {
        if id.is_empty() || id.len() > 2048 || id.chars().any(char::is_control) {
            return Err(rejected("kms_key_id= must be a KMS key id, ARN or alias"));
        }
        self.kms_key_id = Some(id.to_owned());
        Ok(self)
    }

    /// Takes the keys of this profile only.
    pub fn with_profile(mut self, name: &str) -> Result<Self, VaultError> {
        if name.is_empty() || name.len() > 64 || name.contains([']', '[', '\n']) {
            return Err(rejected("profile= must name a profile of ~/.aws/credentials"));
        }
        self.profile = Some(name.to_owned());
        Ok(self)
    }

    /// Uses these credentials instead of the standard order.
    pub fn with_credentials(mut self, credentials: AwsCredentials) -> Self {
        self.credentials = credentials;
        self
    }

    /// How long a lock entry is valid before others may take it over.
    pub fn with_lock_ttl(mut self, ttl: Duration) -> Self {
        self.lock_ttl = ttl;
        self
    }

    /// How long a writer waits for a lock.
    pub fn with_lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout;
        self
    }

    /// The timeout of one HTTP request.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// The region.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The secret name prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn endpoint(&self) -> String {
        self.endpoint.clone().unwrap_or_else(|| format!("https://secretsmanager.{}.amazonaws.com", self.region))
    }
}

/// The byte encoding of a key into secret-name characters.
fn encode(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 8);
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b == b'/' || b == b'_' {
            out.push(b as char);
        } else {
            out.push('=');
            out.push_str(&hex::encode([b]));
        }
    }
    out
}

struct Name {
    name: String,
    digest: bool,
}

#[derive(Deserialize)]
struct AwsError {
    #[serde(rename = "__type", default)]
    kind: String,
    #[serde(default, alias = "Message")]
    message: String,
}

#[derive(Deserialize)]
struct SecretValue {
    #[serde(rename = "SecretBinary")]
    binary: Option<String>,
    #[serde(rename = "SecretString")]
    string: Option<String>,
}

#[derive(Deserialize)]
struct Described {
    #[serde(rename = "Description", default)]
    description: Option<String>,
}

#[derive(Deserialize)]
struct Listed {
    #[serde(rename = "SecretList", default)]
    list: Vec<ListedSecret>,
    #[serde(rename = "NextToken", default)]
    next: Option<String>,
}

#[derive(Deserialize)]
struct ListedSecret {
    #[serde(rename = "Name", default)]
    name: String,
}

struct Reply {
    status: u16,
    kind: String,
    message: String,
    body: Zeroizing<Vec<u8>>,
}

impl Reply {
    fn ok(&self) -> bool {
        self.status == 200
    }
    fn is(&self, kind: &str) -> bool {
        // `__type` may carry a namespace: `com.amazonaws...#ResourceNotFoundException`.
        self.kind.rsplit('#').next() == Some(kind)
    }
    fn missing(&self) -> bool {
        self.is("ResourceNotFoundException")
            || (self.is("InvalidRequestException") && self.message.to_ascii_lowercase().contains("deleted"))
    }
}

/// A secret's value as stored: the binary, or the empty marker.
enum Payload<'a> {
    Binary(&'a [u8]),
    Empty,
}

fn payload(value: &[u8]) -> Payload<'_> {
    if value.is_empty() { Payload::Empty } else { Payload::Binary(value) }
}

/// A secret's current version: its `SecretBinary` bytes, if any, and its
/// `SecretString` (empty if none).
type Stored = (Option<Zeroizing<Vec<u8>>>, Zeroizing<String>);

pub(crate) struct AwsStore {
    config: AwsSmConfig,
    agent: ureq::Agent,
    credentials: credentials::Provider,
    endpoint: String,
    requests: AtomicU64,
}

impl AwsStore {
    fn name(&self, space: Space, key: &str) -> Name {
        let (plain, hashed) = match space {
            Space::Entry => ("e", "h"),
            Space::Lock => ("l", "lh"),
        };
        let name = format!("{}/{plain}/{}", self.config.prefix, encode(key));
        if name.len() <= MAX_NAME {
            Name { name, digest: false }
        } else {
            Name { name: format!("{}/{hashed}/{}", self.config.prefix, hex::encode(Sha256::digest(key.as_bytes()))), digest: true }
        }
    }

    fn describe_store(&self) -> String {
        let mut s = format!("awssm://{}/{}", self.config.region, self.config.prefix);
        if let Some(e) = &self.config.endpoint {
            s.push_str(&format!("?endpoint={e}"));
        }
        s
    }

    /// One signed request of operation `op` (throttling retried).
    fn call(&self, op: &str, body: &Value) -> Result<Reply, VaultError> {
        let body = Zeroizing::new(serde_json::to_vec(body).expect("json"));
        let target = format!("secretsmanager.{op}");
        retry::throttled(|_| {
            let keys = match self.credentials.keys(&self.agent) {
                Ok(k) => k,
                Err(e) => return Attempt::Done(Err(e)),
            };
            let headers = [("content-type", "application/x-amz-json-1.1"), ("x-amz-target", target.as_str())];
            let signed = match self.sign(&keys, &headers, &body) {
                Ok(s) => s,
                Err(e) => return Attempt::Done(Err(e)),
            };
            self.requests.fetch_add(1, Ordering::Relaxed);
            let mut request = self.agent.post(&self.endpoint);
            for (name, value) in headers.iter().map(|(n, v)| (*n, (*v).to_owned())).chain(signed.iter().map(|(n, v)| (n.as_str(), v.to_string()))) {
                request = request.header(name, value);
            }
            let mut response = match request.send(body.as_slice()) {
                Ok(r) => r,
                Err(e) => return Attempt::Done(Err(self.transport_error(e))),
            };
            let status = response.status().as_u16();
            let bytes = match response.body_mut().with_config().limit(MAX_BODY).read_to_vec() {
                Ok(b) => Zeroizing::new(b),
                Err(e) => return Attempt::Done(Err(self.transport_error(e))),
            };
            let (kind, message) = if status == 200 {
                Default::default()
            } else {
                serde_json::from_slice::<AwsError>(&bytes).map(|e| (e.kind, e.message)).unwrap_or_default()
            };
            let reply = Reply { status, kind, message, body: bytes };
            if status == 429 || reply.kind.ends_with("ThrottlingException") {
                return Attempt::Throttled { retry_after: None, error: self.error(&reply, op) };
            }
            if reply.is("ExpiredTokenException") {
                self.credentials.forget();
            }
            Attempt::Done(Ok(reply))
        })
    }

    /// The SigV4 headers (`authorization`, `x-amz-date`, maybe
    /// `x-amz-security-token`) of a request.
    fn sign(&self, keys: &AwsKeys, headers: &[(&str, &str)], body: &[u8]) -> Result<Vec<(String, Zeroizing<String>)>, VaultError> {
        use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
        let identity = keys.identity();
        let failed = |what: &str| VaultError::Other(format!("cannot sign a request to AWS: {what}"));
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.config.region)
            .name("secretsmanager")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|_| failed("bad signing parameters"))?
            .into();
        let signable = SignableRequest::new("POST", &self.endpoint, headers.iter().copied(), SignableBody::Bytes(body))
            .map_err(|_| failed("bad request"))?;
        let (instructions, _) = sign(signable, &params).map_err(|_| failed("signing failed"))?.into_parts();
        Ok(instructions.headers().map(|(n, v)| (n.to_owned(), Zeroizing::new(v.to_owned()))).collect())
    }

    fn transport_error(&self, e: ureq::Error) -> VaultError {
        match e {
            ureq::Error::Timeout(t) => VaultError::Unavailable(format!("Secrets Manager at {} did not answer in time ({t})", self.endpoint)),
            other => VaultError::Unavailable(format!("cannot talk to Secrets Manager at {}: {other}", self.endpoint)),
        }
    }

    fn error(&self, reply: &Reply, what: &str) -> VaultError {
        let kind = reply.kind.rsplit('#').next().unwrap_or("");
        let message: String = reply.message.chars().take(200).collect();
        let at = self.describe_store();
        let credential_kinds = ["AccessDeniedException", "UnrecognizedClientException", "InvalidSignatureException", "ExpiredTokenException", "IncompleteSignature", "InvalidClientTokenId"];
        if reply.status == 403 || credential_kinds.contains(&kind) {
            VaultError::Rejected(format!(
                "Secrets Manager refused {what} on {at} with the credentials of {} ({kind} HTTP {}: check the keys and the identity's policy): {message}",
                self.credentials.describe(),
                reply.status
            ))
        } else if reply.status >= 500 || reply.status == 429 || kind.ends_with("ThrottlingException") {
            VaultError::Unavailable(format!("Secrets Manager could not serve {what} on {at} ({kind} HTTP {}): {message}", reply.status))
        } else {
            VaultError::Rejected(format!("Secrets Manager rejected {what} on {at} ({kind} HTTP {}): {message}", reply.status))
        }
    }

    fn check(&self) -> Result<(), VaultError> {
        let reply = self.call("ListSecrets", &json!({"MaxResults": 1}))?;
        if reply.ok() { Ok(()) } else { Err(self.error(&reply, "ListSecrets (the connection check)")) }
    }

    fn token() -> Result<String, VaultError> {
        // A UUID v4 from 16 random bytes.
        let h = random_hex16()?;
        let variant = ['8', '9', 'a', 'b'][usize::from(h.as_bytes()[16] % 4)];
        Ok(format!("{}-{}-4{}-{variant}{}-{}", &h[0..8], &h[8..12], &h[13..16], &h[17..20], &h[20..32]))
    }

    fn with_payload(mut body: Value, value: &[u8]) -> Value {
        match payload(value) {
            Payload::Binary(b) => body["SecretBinary"] = Value::String(BASE64.encode(b)),
            Payload::Empty => body["SecretString"] = Value::String(EMPTY.into()),
        }
        body
    }

    /// The raw value of secret `name`: `SecretBinary` bytes, or `None` for
    /// `SecretString` (the empty marker, checked by the caller).
    fn get_value(&self, name: &str) -> Result<Option<Stored>, VaultError> {
        let reply = self.call("GetSecretValue", &json!({"SecretId": name}))?;
        if reply.missing() {
            return Ok(None);
        }
        if !reply.ok() {
            return Err(self.error(&reply, &format!("the read of {name}")));
        }
        let value: SecretValue = serde_json::from_slice(&reply.body)
            .map_err(|_| VaultError::Other(format!("Secrets Manager answered the read of {name} with unexpected JSON")))?;
        let string = Zeroizing::new(value.string.unwrap_or_default());
        let binary = match value.binary.map(Zeroizing::new) {
            Some(b) => Some(Zeroizing::new(
                BASE64.decode(b.as_bytes()).map_err(|_| VaultError::Corrupt(format!("the SecretBinary of {name} is not base64")))?,
            )),
            None => None,
        };
        Ok(Some((binary, string)))
    }

    fn put_value(&self, name: &str, value: &[u8], kms: bool) -> Result<bool, VaultError> {
        let (op, mut body) = ("PutSecretValue", json!({"SecretId": name, "ClientRequestToken": Self::token()?}));
        let op = match (&self.config.kms_key_id, kms) {
            (Some(key), true) => {
                body["KmsKeyId"] = Value::String(key.clone());
                "UpdateSecret"
            }
            _ => op,
        };
        let body = Self::with_payload(body, value);
        let reply = self.call(op, &body)?;
        if reply.missing() {
            return Ok(false);
        }
        if !reply.ok() {
            return Err(self.error(&reply, &format!("the write of {name}")));
        }
        Ok(true)
    }

    fn rewrite_secret(&self, name: &str) -> Result<bool, VaultError> {
        let Some((binary, string)) = self.get_value(name)? else { return Ok(false) };
        let value: Zeroizing<Vec<u8>> = match binary {
            Some(b) => b,
            None if string.as_str() == EMPTY => Zeroizing::new(Vec::new()),
            // A lock or an entry written by someone else: left alone.
            None => return Ok(false),
        };
        self.put_value(name, &value, true)
    }
}

impl RemoteStore for AwsStore {
    fn describe(&self) -> String {
        self.describe_store()
    }

    fn check_key(&self, space: Space, key: &str) -> Result<(), VaultError> {
        if space == Space::Entry && self.name(space, key).digest && key.len() > MAX_DESCRIBED_KEY {
            return Err(rejected(format!(
                "a vault key of {} bytes is too long for a Secrets Manager description (at most {MAX_DESCRIBED_KEY} bytes)",
                key.len()
            )));
        }
        Ok(())
    }

    fn get(&self, space: Space, key: &str) -> Result<Option<Zeroizing<Vec<u8>>>, VaultError> {
        let name = self.name(space, key);
        let Some((binary, string)) = self.get_value(&name.name)? else { return Ok(None) };
        let value = match (binary, space) {
            (Some(b), _) => b,
            (None, Space::Lock) => Zeroizing::new(string.as_bytes().to_vec()),
            (None, Space::Entry) if string.as_str() == EMPTY => Zeroizing::new(Vec::new()),
            (None, Space::Entry) => {
                return Err(VaultError::Corrupt(format!("secret {} holds a string this backend did not write", name.name)));
            }
        };
        if name.digest && space == Space::Entry {
            let reply = self.call("DescribeSecret", &json!({"SecretId": name.name}))?;
            if reply.missing() {
                return Ok(None);
            }
            if !reply.ok() {
                return Err(self.error(&reply, &format!("the description of {}", name.name)));
            }
            let described: Described = serde_json::from_slice(&reply.body).unwrap_or(Described { description: None });
            if described.description.as_deref() != Some(&format!("{DESCRIPTION}{key}")) {
                return Err(VaultError::Corrupt(format!("secret {} holds another key than the one whose digest names it", name.name)));
            }
        }
        Ok(Some(value))
    }

    fn create(&self, space: Space, key: &str, value: &[u8]) -> Result<bool, VaultError> {
        let name = self.name(space, key);
        let mut body = json!({"Name": name.name, "ClientRequestToken": Self::token()?});
        if let Some(kms) = &self.config.kms_key_id {
            body["KmsKeyId"] = Value::String(kms.clone());
        }
        if name.digest {
            body["Description"] = Value::String(format!("{DESCRIPTION}{key}"));
        }
        // Lock entries are JSON: kept as a string, readable in the console.
        let body = match space {
            Space::Lock => {
                body["SecretString"] = Value::String(String::from_utf8_lossy(value).into_owned());
                body
            }
            Space::Entry => Self::with_payload(body, value),
        };
        let reply = self.call("CreateSecret", &body)?;
        if reply.ok() {
            return Ok(true);
        }
        if reply.is("ResourceExistsException") {
            return Ok(false);
        }
        if reply.is("InvalidRequestException") && reply.message.to_ascii_lowercase().contains("deletion") {
            // The name of a secret deleted a moment ago, not free yet.
            return match space {
                Space::Lock => Ok(false),
                Space::Entry => Err(VaultError::Unavailable(format!(
                    "secret {} was deleted a moment ago and AWS has not freed its name yet; try again",
                    name.name
                ))),
            };
        }
        Err(self.error(&reply, &format!("creating {}", name.name)))
    }

    fn update(&self, space: Space, key: &str, value: &[u8]) -> Result<bool, VaultError> {
        let name = self.name(space, key);
        match space {
            Space::Entry => self.put_value(&name.name, value, false),
            Space::Lock => {
                let body = json!({"SecretId": name.name, "ClientRequestToken": Self::token()?, "SecretString": String::from_utf8_lossy(value)});
                let reply = self.call("PutSecretValue", &body)?;
                if reply.missing() {
                    return Ok(false);
                }
                if !reply.ok() {
                    return Err(self.error(&reply, &format!("the write of {}", name.name)));
                }
                Ok(true)
            }
        }
    }

    fn remove(&self, space: Space, key: &str) -> Result<(), VaultError> {
        let name = self.name(space, key);
        let reply = self.call("DeleteSecret", &json!({"SecretId": name.name, "ForceDeleteWithoutRecovery": true}))?;
        if reply.ok() || reply.missing() { Ok(()) } else { Err(self.error(&reply, &format!("deleting {}", name.name))) }
    }

    fn rewrite(&self, key: &str) -> Result<bool, VaultError> {
        self.rewrite_secret(&self.name(Space::Entry, key).name)
    }

    fn entry_names(&self) -> Result<Vec<String>, VaultError> {
        let (plain, hashed) = (format!("{}/e/", self.config.prefix), format!("{}/h/", self.config.prefix));
        let mut names = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let mut body = json!({"MaxResults": 100, "Filters": [{"Key": "name", "Values": [format!("{}/", self.config.prefix)]}]});
            if let Some(token) = &next {
                body["NextToken"] = Value::String(token.clone());
            }
            let reply = self.call("ListSecrets", &body)?;
            if !reply.ok() {
                return Err(self.error(&reply, "ListSecrets"));
            }
            let listed: Listed = serde_json::from_slice(&reply.body)
                .map_err(|_| VaultError::Other("Secrets Manager answered ListSecrets with unexpected JSON".into()))?;
            names.extend(listed.list.into_iter().map(|s| s.name).filter(|n| n.starts_with(&plain) || n.starts_with(&hashed)));
            match listed.next.filter(|t| !t.is_empty()) {
                Some(t) => next = Some(t),
                None => return Ok(names),
            }
        }
    }

    fn rewrite_name(&self, name: &str) -> Result<bool, VaultError> {
        self.rewrite_secret(name)
    }
}

/// The AWS Secrets Manager backend; clones share the connection pool and
/// the process-local locks.
#[derive(Clone)]
pub struct AwsSmBackend {
    inner: Arc<RemoteBackend<AwsStore>>,
}

impl fmt::Debug for AwsSmBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AwsSmBackend({}, credentials from {})", self.describe(), self.inner.store().credentials.describe())
    }
}

impl AwsSmBackend {
    /// Resolves the credentials and checks them (one `ListSecrets`).
    pub fn connect(config: AwsSmConfig) -> Result<Self, VaultError> {
        let agent = http_agent::agent(http_agent::config("secrets-awssm-backend", config.request_timeout).build());
        let credentials =
            credentials::Provider::resolve(&config.credentials, config.profile.as_deref(), &config.region, config.endpoint.as_deref())?;
        let store = AwsStore { endpoint: config.endpoint(), agent, credentials, requests: AtomicU64::new(0), config: config.clone() };
        store.check()?;
        let lock = LockConfig { ttl: config.lock_ttl, timeout: config.lock_timeout };
        Ok(AwsSmBackend { inner: Arc::new(RemoteBackend::new(store, lock)) })
    }

    /// HTTP requests sent so far (retries included), the connection check too.
    pub fn requests(&self) -> u64 {
        self.inner.store().requests.load(Ordering::Relaxed)
    }

    /// The secret name holding the entry of `key`.
    pub fn secret_name(&self, key: &str) -> String {
        self.inner.store().name(Space::Entry, key).name
    }

    /// The configuration it was connected with.
    pub fn config(&self) -> &AwsSmConfig {
        &self.inner.store().config
    }
}

impl Backend for AwsSmBackend {
    fn begin(&self, access: Access, lock_scope: &str) -> Result<Box<dyn Transaction>, VaultError> {
        self.inner.begin(access, lock_scope)
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn rotate_all(&self, progress: &mut dyn FnMut(u64, u64)) -> Result<u64, VaultError> {
        self.inner.rotate_all(progress)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_injective_and_valid() {
        let keys = ["a", "a/b", "a=2fb", "a-b", "a.b", "", "t/6162/i/77/k/4b/v/3", "ü", "x-abcdef"];
        let mut seen = std::collections::HashSet::new();
        for k in keys {
            let e = encode(k);
            assert!(seen.insert(e.clone()), "collision for {k:?}");
            assert!(e.bytes().all(|b| b.is_ascii_alphanumeric() || b"/_=".contains(&b)), "{e}");
            assert!(!e.contains('-'), "{e}");
        }
        assert_eq!(encode("t/6162/i/77/k/4b/v/3"), "t/6162/i/77/k/4b/v/3");
    }

    #[test]
    fn request_tokens_are_uuids() {
        let t = AwsStore::token().unwrap();
        assert_eq!(t.len(), 36);
        assert_eq!(&t[14..15], "4");
    }
}
