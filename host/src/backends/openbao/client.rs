//! HTTP to OpenBao and the KV v2 operations on it: reads, writes with
//! check-and-set, metadata, lists. Transport failures and 5xx answers are
//! [`VaultError::Unavailable`]; refusals are [`VaultError::Rejected`]. No
//! message quotes a request body or the token.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::config::OpenBaoConfig;
use super::MAX_BODY;
use crate::backends::{VaultError, http_agent, rejected};


pub(super) struct Reply {
    pub(super) status: u16,
    pub(super) body: Zeroizing<Vec<u8>>,
}

#[derive(Deserialize)]
struct Errors {
    #[serde(default)]
    errors: Vec<String>,
}

/// The server's error messages on one line, shortened; never the request.
/// OpenBao wraps some in a multi-line list (`1 error occurred:\n\t* permission
/// denied\n\n`): only the items are kept.
pub(super) fn server_errors(body: &[u8]) -> String {
    let errors = serde_json::from_slice::<Errors>(body).map(|e| e.errors).unwrap_or_default();
    let items: Vec<String> = errors
        .iter()
        .flat_map(|e| {
            let lines: Vec<&str> = e.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
            let listed = lines.first().is_some_and(|l| l.ends_with("occurred:"));
            let lines = if listed { &lines[1..] } else { &lines[..] };
            lines.iter().map(|l| l.trim_start_matches("* ").to_owned()).collect::<Vec<_>>()
        })
        .collect();
    let mut text = items.join("; ");
    if text.len() > 300 {
        let mut cut = 300;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}

#[derive(Serialize)]
pub(super) struct Cas {
    cas: u64,
}

#[derive(Serialize)]
struct WriteBody<'a, D> {
    #[serde(skip_serializing_if = "Option::is_none")]
    options: Option<Cas>,
    data: &'a D,
}

#[derive(Serialize, Deserialize)]
pub(super) struct ValueData {
    pub(super) v: String,
}

#[derive(Serialize, Deserialize, Default)]
pub(super) struct LockData {
    #[serde(default)]
    pub(super) owner: String,
    /// Wall clock of the writer: for people and older releases, never read.
    #[serde(default)]
    pub(super) expires_ms: u64,
    /// The holder's lease: a waiter may take the entry over once it has
    /// seen it unchanged for this long.
    #[serde(default)]
    pub(super) ttl_ms: u64,
    #[serde(default)]
    pub(super) pid: u32,
}

#[derive(Deserialize)]
pub(super) struct Envelope<T> {
    pub(super) data: Option<T>,
}

#[derive(Deserialize)]
pub(super) struct KvVersion {
    version: u64,
}

#[derive(Deserialize)]
pub(super) struct KvRead<D> {
    data: Option<D>,
    metadata: Option<KvVersion>,
}

#[derive(Deserialize)]
pub(super) struct KvMetadata {
    current_version: u64,
    #[serde(default)]
    versions: HashMap<String, KvVersionState>,
}

#[derive(Deserialize)]
pub(super) struct KvVersionState {
    #[serde(default)]
    deletion_time: String,
    #[serde(default)]
    destroyed: bool,
}

#[derive(Deserialize)]
pub(super) struct KeyList {
    keys: Vec<String>,
}

#[derive(Deserialize)]
pub(super) struct MountInfo {
    #[serde(rename = "type", default)]
    pub(super) kind: String,
    #[serde(default)]
    pub(super) path: String,
    pub(super) options: Option<HashMap<String, String>>,
}

pub(super) struct Client {
    agent: ureq::Agent,
    /// `http://host:port/v1/`.
    api: String,
    pub(super) address: String,
    token: SecretString,
    namespace: Option<String>,
    /// The KV v2 mount path.
    mount: String,
    /// HTTP requests sent so far (for tests and metrics).
    requests: AtomicU64,
}

impl Client {
    pub(super) fn new(config: &OpenBaoConfig, token: SecretString) -> Result<Self, VaultError> {
        let mut builder = http_agent::config("secrets-openbao-backend", config.request_timeout);
        if let Some(path) = &config.ca_file {
            builder = builder.tls_config(tls_with_roots(path)?);
        }
        Ok(Client {
            agent: http_agent::agent(builder.build()),
            api: format!("{}/v1/", config.address()),
            address: config.address(),
            token,
            namespace: config.namespace.clone(),
            mount: config.mount.clone(),
            requests: AtomicU64::new(0),
        })
    }

    /// HTTP requests sent so far, answered or not.
    pub(super) fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    fn headers<B>(&self, request: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        let request = request.header("X-Vault-Token", self.token.expose_secret()).header("X-Vault-Request", "true");
        match &self.namespace {
            Some(ns) => request.header("X-Vault-Namespace", ns),
            None => request,
        }
    }

    /// One request; `path` is relative to `/v1/`. Transport failures are
    /// `Unavailable`; the status is the caller's to judge.
    pub(super) fn send(&self, method: &str, path: &str, body: Option<&[u8]>) -> Result<Reply, VaultError> {
        let url = format!("{}{path}", self.api);
        self.requests.fetch_add(1, Ordering::Relaxed);
        let result = match method {
            "GET" => self.headers(self.agent.get(&url)).call(),
            "DELETE" => self.headers(self.agent.delete(&url)).call(),
            _ => self.headers(self.agent.post(&url)).content_type("application/json").send(body.unwrap_or(b"{}")),
        };
        let mut response = result.map_err(|e| self.transport_error(e))?;
        let status = response.status().as_u16();
        let body =
            response.body_mut().with_config().limit(MAX_BODY).read_to_vec().map_err(|e| self.transport_error(e))?;
        Ok(Reply { status, body: Zeroizing::new(body) })
    }

    fn transport_error(&self, e: ureq::Error) -> VaultError {
        match e {
            ureq::Error::Timeout(t) => {
                VaultError::Unavailable(format!("OpenBao at {} did not answer in time ({t})", self.address))
            }
            other => VaultError::Unavailable(format!("cannot talk to OpenBao at {}: {other}", self.address)),
        }
    }

    /// The error for an unexpected status of `what`.
    pub(super) fn status_error(&self, reply: &Reply, what: &str) -> VaultError {
        let mut detail = server_errors(&reply.body);
        if detail.is_empty() {
            // Not OpenBao's JSON (e.g. "Client sent an HTTP request to an
            // HTTPS server"): its first line, short.
            let text = String::from_utf8_lossy(&reply.body);
            let line = text.lines().next().unwrap_or("").trim();
            if !line.starts_with(['{', '[']) {
                detail = line.chars().take(120).collect();
            }
        }
        let detail = if detail.is_empty() { String::new() } else { format!(": {detail}") };
        match reply.status {
            403 => VaultError::Rejected(format!(
                "OpenBao at {} refused {what}: permission denied (is the token valid and unexpired, and does its policy allow this path?){detail}",
                self.address
            )),
            429 | 412 | 500..=599 => VaultError::Unavailable(format!(
                "OpenBao at {} could not serve {what} (HTTP {}){detail}",
                self.address, reply.status
            )),
            status => {
                VaultError::Rejected(format!("OpenBao at {} rejected {what} (HTTP {status}){detail}", self.address))
            }
        }
    }
}

fn tls_with_roots(path: &Path) -> Result<ureq::tls::TlsConfig, VaultError> {
    let pem = std::fs::read(path)
        .map_err(|e| rejected(format!("cannot read the CA file {} (ca_file=): {}", path.display(), e.kind())))?;
    let mut roots = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(ureq::tls::PemItem::Certificate(cert)) => roots.push(cert),
            Ok(_) => {}
            Err(e) => return Err(rejected(format!("the CA file {} is not valid PEM: {e}", path.display()))),
        }
    }
    if roots.is_empty() {
        return Err(rejected(format!("the CA file {} holds no certificate", path.display())));
    }
    Ok(ureq::tls::TlsConfig::builder().root_certs(ureq::tls::RootCerts::new_with_certs(&roots)).build())
}

impl Client {
    pub(super) fn data_url(&self, path: &str) -> String {
        format!("{}/data/{path}", self.mount)
    }

    pub(super) fn metadata_url(&self, path: &str) -> String {
        format!("{}/metadata/{path}", self.mount)
    }

    /// The latest version of a KV entry and its number; `None` if there is
    /// none (never written, deleted, or its latest version destroyed).
    pub(super) fn kv_read<D: serde::de::DeserializeOwned>(&self, path: &str) -> Result<Option<(D, u64)>, VaultError> {
        let url = self.data_url(path);
        let reply = self.send("GET", &url, None)?;
        match reply.status {
            200 => {}
            // A missing entry is a 404 with no error text; a missing mount
            // or route has one.
            404 if server_errors(&reply.body).is_empty() => return Ok(None),
            _ => return Err(self.status_error(&reply, &format!("the read of {url}"))),
        }
        let read: Envelope<KvRead<D>> = serde_json::from_slice(&reply.body)
            .map_err(|_| VaultError::Corrupt(format!("{url} does not hold an entry of this backend")))?;
        match read.data {
            Some(KvRead { data: Some(d), metadata: Some(m) }) => Ok(Some((d, m.version))),
            _ => Ok(None),
        }
    }

    /// Writes a KV entry; with `cas`, only if its current version is `cas`
    /// (0: only if absent). Returns the new version, or `None` when the
    /// check-and-set failed.
    pub(super) fn kv_write<D: Serialize>(&self, path: &str, data: &D, cas: Option<u64>) -> Result<Option<u64>, VaultError> {
        let url = self.data_url(path);
        let body = Zeroizing::new(
            serde_json::to_vec(&WriteBody { options: cas.map(|cas| Cas { cas }), data })
                .map_err(|e| VaultError::Other(format!("cannot encode a KV write: {e}")))?,
        );
        let reply = self.send("POST", &url, Some(&body))?;
        match reply.status {
            200 | 204 => {}
            400 if cas.is_some() && server_errors(&reply.body).contains("check-and-set") => return Ok(None),
            _ => return Err(self.status_error(&reply, &format!("the write of {url}"))),
        }
        let written: Envelope<KvVersion> = serde_json::from_slice(&reply.body)
            .map_err(|_| VaultError::Other(format!("OpenBao answered the write of {url} with unexpected JSON")))?;
        written
            .data
            .map(|v| Some(v.version))
            .ok_or_else(|| VaultError::Other(format!("OpenBao answered the write of {url} without a version")))
    }

    /// Deletes a KV entry with all its versions; a missing entry is fine.
    pub(super) fn kv_delete_all(&self, path: &str) -> Result<(), VaultError> {
        let url = self.metadata_url(path);
        let reply = self.send("DELETE", &url, None)?;
        match reply.status {
            200 | 204 => Ok(()),
            404 if server_errors(&reply.body).is_empty() => Ok(()),
            _ => Err(self.status_error(&reply, &format!("the delete of {url}"))),
        }
    }

    /// Makes KV keep only the newest version of the entry (older ones are
    /// removed at its next write).
    pub(super) fn kv_keep_one_version(&self, path: &str) -> Result<(), VaultError> {
        let url = self.metadata_url(path);
        let reply = self.send("POST", &url, Some(br#"{"max_versions":1}"#))?;
        match reply.status {
            200 | 204 => Ok(()),
            _ => Err(self.status_error(&reply, &format!("the metadata update of {url}"))),
        }
    }

    /// The current version of an entry whose latest version was deleted or
    /// destroyed (by hand: this backend deletes whole entries); `None` if
    /// the entry has no metadata or its current version is live.
    pub(super) fn kv_dead_version(&self, path: &str) -> Result<Option<u64>, VaultError> {
        let url = self.metadata_url(path);
        let reply = self.send("GET", &url, None)?;
        match reply.status {
            200 => serde_json::from_slice::<Envelope<KvMetadata>>(&reply.body)
                .ok()
                .and_then(|e| e.data)
                .map(|m| {
                    let dead = m
                        .versions
                        .get(&m.current_version.to_string())
                        .is_some_and(|v| v.destroyed || !v.deletion_time.is_empty());
                    dead.then_some(m.current_version)
                })
                .ok_or_else(|| {
                    VaultError::Other(format!("OpenBao answered the metadata read of {url} with unexpected JSON"))
                }),
            404 if server_errors(&reply.body).is_empty() => Ok(None),
            _ => Err(self.status_error(&reply, &format!("the metadata read of {url}"))),
        }
    }

    /// The names directly under a KV folder (folders end with `/`).
    pub(super) fn kv_list(&self, path: &str) -> Result<Vec<String>, VaultError> {
        let url = format!("{}?list=true", self.metadata_url(path));
        let reply = self.send("GET", &url, None)?;
        match reply.status {
            200 => serde_json::from_slice::<Envelope<KeyList>>(&reply.body)
                .ok()
                .and_then(|e| e.data)
                .map(|l| l.keys)
                .ok_or_else(|| VaultError::Other(format!("OpenBao answered the list of {url} with unexpected JSON"))),
            404 if server_errors(&reply.body).is_empty() => Ok(vec![]),
            _ => Err(self.status_error(&reply, &format!("the list of {url}"))),
        }
    }

    /// Every entry path under `folder` (which ends with `/`), depth first.
    pub(super) fn kv_list_all(&self, folder: &str, out: &mut Vec<String>) -> Result<(), VaultError> {
        for name in self.kv_list(folder)? {
            let path = format!("{folder}{name}");
            if name.ends_with('/') {
                self.kv_list_all(&path, out)?;
            } else {
                out.push(path);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_are_shortened() {
        assert_eq!(server_errors(br#"{"errors":["a","b"]}"#), "a; b");
        let listed = "{\"errors\":[\"1 error occurred:\\n\\t* permission denied\\n\\n\"]}";
        assert_eq!(server_errors(listed.as_bytes()), "permission denied");
        let two = "{\"errors\":[\"2 errors occurred:\\n\\t* a\\n\\t* b\\n\\n\"]}";
        assert_eq!(server_errors(two.as_bytes()), "a; b", "one line, whatever the server sends");
        assert!(server_errors(format!(r#"{{"errors":["{}"]}}"#, "x".repeat(1000)).as_bytes()).len() < 310);
    }
}
