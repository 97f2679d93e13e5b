//! The façade a control plane calls: `secrets.set(&scope, request)`, `get`,
//! `list`, `inject`, ... Each call is independent: it opens one transaction
//! on the backend, runs the component in a fresh sandboxed instance, and
//! commits only when the component returned success.
//!
//! Every call blocks its thread (see the crate documentation): from async
//! code, run it on a blocking pool (`tokio::task::spawn_blocking`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use wasmtime::Store;
use zeroize::Zeroize;

use crate::backends::{Access, Backend, VaultError};
use crate::bindings::api;
use crate::error::Error;
use crate::sandbox::{CallState, DEFAULT_CALL_TIMEOUT, Sandbox};
use crate::tenant::Scope;
use crate::types::{Mount, Secret, SecretMeta, SecretType, SecretValue, SetRequest};
use secrets_guest::Limits;

/// The secrets service over one backend. Cheap to clone; `Send + Sync`.
#[derive(Clone)]
pub struct Secrets {
    sandbox: Arc<Sandbox>,
    backend: Arc<dyn Backend>,
    limits: Limits,
    call_timeout: Duration,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets").field("backend", &self.backend.describe()).field("limits", &self.limits).finish()
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn kind_out(k: api::SecretType) -> SecretType {
    match k {
        api::SecretType::Env => SecretType::Env,
        api::SecretType::File => SecretType::File,
        api::SecretType::Registry => SecretType::Registry,
        api::SecretType::Tls => SecretType::Tls,
    }
}

fn kind_in(k: SecretType) -> api::SecretType {
    match k {
        SecretType::Env => api::SecretType::Env,
        SecretType::File => api::SecretType::File,
        SecretType::Registry => api::SecretType::Registry,
        SecretType::Tls => api::SecretType::Tls,
    }
}

fn meta_out(m: api::SecretMeta) -> SecretMeta {
    SecretMeta {
        instance_id: m.instance_id,
        key: m.key,
        kind: kind_out(m.kind),
        version: m.version,
        created_at: m.created_at,
        size: m.size,
        not_after: m.not_after,
        deleted_at: m.deleted_at,
        destroyed: m.destroyed,
    }
}

fn secret_out(s: api::Secret) -> Secret {
    Secret { meta: meta_out(s.meta), value: SecretValue::new(s.value) }
}

/// The component's error as the caller's. A vault error is the backend's
/// own failure when the call had one (the component may not rewrite its
/// kind); otherwise what the component found unreadable in the vault.
fn error_out(e: api::Error, vault_failure: Option<VaultError>) -> Error {
    match e {
        api::Error::NotFound => Error::NotFound,
        api::Error::InvalidArgument(m) => Error::InvalidArgument(m),
        api::Error::LimitExceeded(m) => Error::LimitExceeded(m),
        api::Error::Conflict(m) => Error::Conflict(m),
        api::Error::VersionMismatch(m) => Error::VersionMismatch(m),
        api::Error::Vault(claimed) => Error::Vault(vault_failure.unwrap_or_else(|| claimed.into())),
    }
}

fn env_out(pairs: Vec<(String, String)>) -> BTreeMap<String, SecretValue> {
    pairs.into_iter().map(|(k, v)| (k, SecretValue::from(v))).collect()
}

fn mounts_out(mounts: Vec<api::Mount>) -> Vec<Mount> {
    mounts.into_iter().map(|m| Mount { path: m.path, mode: m.mode, contents: SecretValue::new(m.contents) }).collect()
}

/// An instance's secrets as a container start consumes them.
#[derive(Debug)]
pub struct Resolved {
    /// Env secrets, name → value.
    pub env: BTreeMap<String, SecretValue>,
    /// Files of file, tls and registry secrets.
    pub mounts: Vec<Mount>,
}

type Call<R> = wasmtime::Result<Result<R, api::Error>>;

impl Secrets {
    /// A service on `backend` with the default limits, compiling the
    /// embedded component.
    pub fn new(backend: Arc<dyn Backend>) -> Result<Secrets, Error> {
        Ok(Self::with_sandbox(Arc::new(Sandbox::new()?), backend, Limits::default()))
    }

    /// A service sharing an already compiled sandbox, with explicit limits
    /// (each clamped to its hard maximum).
    pub fn with_sandbox(sandbox: Arc<Sandbox>, backend: Arc<dyn Backend>, limits: Limits) -> Secrets {
        Secrets { sandbox, backend, limits: limits.clamped(), call_timeout: DEFAULT_CALL_TIMEOUT }
    }

    /// Sets how long one call may run before it is interrupted
    /// (default [`DEFAULT_CALL_TIMEOUT`]); an interrupted call is a
    /// [`Error::Trap`] and stores nothing. A zero timeout interrupts every
    /// call at its first check.
    pub fn with_call_timeout(mut self, timeout: Duration) -> Secrets {
        self.call_timeout = timeout;
        self
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The backend the calls run on.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// The compiled component the calls run in.
    pub fn sandbox(&self) -> &Arc<Sandbox> {
        &self.sandbox
    }

    /// One exported call as one transaction: commit on success only.
    fn call<R>(
        &self,
        name: &'static str,
        scope: &Scope,
        instance_id: &str,
        access: Access,
        f: impl FnOnce(&api::Guest, &mut Store<CallState>) -> Call<R>,
    ) -> Result<R, Error> {
        // Checked here too: a bad id costs no transaction.
        secrets_guest::validate::instance_id(instance_id)?;
        self.call_in_tenant(name, scope, access, f)
    }

    /// [`Secrets::call`] of a tenant-wide call (no instance).
    fn call_in_tenant<R>(
        &self,
        name: &'static str,
        scope: &Scope,
        access: Access,
        f: impl FnOnce(&api::Guest, &mut Store<CallState>) -> Call<R>,
    ) -> Result<R, Error> {
        // A slot first: a call waiting for one must hold no lock.
        let slot = self.sandbox.engine().reserve();
        let txn = self.backend.begin(access, scope.lock_scope())?;
        let state = CallState::new(txn, scope.clone(), self.limits, now_ms());
        let (result, mut state) = self.sandbox.call(name, state, self.call_timeout, f)?;
        // The instance is gone; the commit needs no slot.
        drop(slot);
        let value = result.map_err(|e| error_out(e, state.take_vault_failure()))?;
        if access == Access::Write {
            state.txn.commit()?;
        }
        Ok(value)
    }

    /// Stores a value as the key's next version (version 1 for a new key).
    #[tracing::instrument(skip_all, fields(tenant = scope.name(), instance = %req.instance_id, key = %req.key, kind = %req.kind))]
    pub fn set(&self, scope: &Scope, req: SetRequest) -> Result<SecretMeta, Error> {
        let mut wit_req = api::SetRequest {
            instance_id: req.instance_id.clone(),
            key: req.key.clone(),
            value: req.value.expose().to_vec(),
            kind: kind_in(req.kind),
            if_version: req.if_version,
        };
        let result = self.call("set", scope, &req.instance_id, Access::Write, |g, s| g.call_set(s, &wit_req));
        wit_req.value.zeroize();
        result.map(meta_out)
    }

    /// The current version of a secret, with its value.
    #[tracing::instrument(skip_all, fields(tenant = scope.name(), instance = instance_id, key = key))]
    pub fn get(&self, scope: &Scope, instance_id: &str, key: &str) -> Result<Secret, Error> {
        self.call("get", scope, instance_id, Access::Read, |g, s| g.call_get(s, instance_id, key)).map(secret_out)
    }

    /// A retained version of a secret, with its value.
    #[tracing::instrument(skip_all, fields(tenant = scope.name(), instance = instance_id, key = key, version = version))]
    pub fn get_version(&self, scope: &Scope, instance_id: &str, key: &str, version: u32) -> Result<Secret, Error> {
        self.call("get-version", scope, instance_id, Access::Read, |g, s| g.call_get_version(s, instance_id, key, version))
            .map(secret_out)
    }

    /// The current version of every secret of an instance; no values.
    #[tracing::instrument(skip_all, fields(tenant = scope.name(), instance = instance_id))]
    pub fn list(&self, scope: &Scope, instance_id: &str) -> Result<Vec<SecretMeta>, Error> {
        self.call("list", scope, instance_id, Access::Read, |g, s| g.call_list(s, instance_id))
            .map(|v| v.into_iter().map(meta_out).collect())
    }

    /// Every retained version of a key, oldest first; no values.
    #[tracing::instrument(skip_all, fields(tenant = scope.name(), instance = instance_id, key = key))]
    pub fn versions(&self, scope: &Scope, instance_id: &str, key: &str) -> Result<Vec<SecretMeta>, Error> {
        self.call("versions", scope, instance_id, Access::Read, |g, s| g.call_versions(s, instance_id, key))
            .map(|v| v.into_iter().map(meta_out).collect())
    }

    /// The env secrets of an instance as a name → value map, for container
    /// start-up.
    #[tracing::instrument(skip_all, fields(tenant = scope.name(), instance = instance_id))]
    pub fn inject(&self, scope: &Scope, instance_id: &str) -> Result<BTreeMap<String, SecretValue>, Error> {
        self.call("inject", scope, instance_id, Access::Read, |g, s| g.call_inject(s, instance_id)).map(env_out)
    }

    /// The files the instance's file, tls and registry secrets become.
    #[tracing::instrument(skip_all, fields(tenant = scope.name(), instance = instance_id))]
    pub fn mounts(&self, scope: &Scope, instance_id: &str) -> Result<Vec<Mount>, Error> {
        self.call("mounts", scope, instance_id, Access::Read, |g, s| g.call_mounts(s, instance_id)).map(mounts_out)
    }

    /// What a container start needs, read in one transaction so the two
    /// halves agree: the env secrets ([`Secrets::inject`]) and the files
    /// ([`Secrets::mounts`]).
    #[tracing::instrument(skip_all, fields(tenant = scope.name(), instance = instance_id))]
    pub fn resolve(&self, scope: &Scope, instance_id: &str) -> Result<Resolved, Error> {
        self.call("resolve", scope, instance_id, Access::Read, |g, s| {
            let env = g.call_inject(&mut *s, instance_id)?;
            let mounts = g.call_mounts(&mut *s, instance_id)?;
            Ok(env.and_then(|env| mounts.map(|mounts| (env, mounts))))
        })
        .map(|(env, mounts)| Resolved { env: env_out(env), mounts: mounts_out(mounts) })
    }

    /// Deletes a key and all its versions.
    #[tracing::instrument(skip_all, fields(tenant = scope.name(), instance = instance_id, key = key))]
    pub fn delete(&self, scope: &Scope, instance_id: &str, key: &str) -> Result<(), Error> {
        self.call("delete", scope, instance_id, Access::Write, |g, s| g.call_delete(s, instance_id, key))
    }

    /// Re-protects every retained version of a key under the backend's
    /// newest key material; returns how many versions were rotated.
    #[tracing::instrument(skip_all, fields(tenant = scope.name(), instance = instance_id, key = key))]
    pub fn rotate(&self, scope: &Scope, instance_id: &str, key: &str) -> Result<u32, Error> {
        self.call("rotate", scope, instance_id, Access::Write, |g, s| g.call_rotate(s, instance_id, key))
    }

    /// Soft-deletes retained versions of a key: they read as absent (a key
    /// whose current version is deleted is not injected) until
    /// [`Secrets::undelete`]; the values stay in the store.
    #[tracing::instrument(skip_all, fields(tenant = scope.name(), instance = instance_id, key = key, versions = ?versions))]
    pub fn delete_versions(&self, scope: &Scope, instance_id: &str, key: &str, versions: &[u32]) -> Result<(), Error> {
        self.call("delete-versions", scope, instance_id, Access::Write, |g, s| {
            g.call_delete_versions(s, instance_id, key, versions)
        })
    }

    /// Undoes [`Secrets::delete_versions`]; a destroyed version is a
    /// [`Error::Conflict`].
    #[tracing::instrument(skip_all, fields(tenant = scope.name(), instance = instance_id, key = key, versions = ?versions))]
    pub fn undelete(&self, scope: &Scope, instance_id: &str, key: &str, versions: &[u32]) -> Result<(), Error> {
        self.call("undelete", scope, instance_id, Access::Write, |g, s| g.call_undelete(s, instance_id, key, versions))
    }

    /// Removes the values of retained versions from the store for good;
    /// their metadata stays, marked destroyed.
    #[tracing::instrument(skip_all, fields(tenant = scope.name(), instance = instance_id, key = key, versions = ?versions))]
    pub fn destroy(&self, scope: &Scope, instance_id: &str, key: &str, versions: &[u32]) -> Result<(), Error> {
        self.call("destroy", scope, instance_id, Access::Write, |g, s| g.call_destroy(s, instance_id, key, versions))
    }

    /// Writes the value of `version` again as the key's next version; a
    /// deleted or destroyed version is a [`Error::Conflict`].
    #[tracing::instrument(skip_all, fields(tenant = scope.name(), instance = instance_id, key = key, version = version))]
    pub fn rollback(&self, scope: &Scope, instance_id: &str, key: &str, version: u32) -> Result<SecretMeta, Error> {
        self.call("rollback", scope, instance_id, Access::Write, |g, s| g.call_rollback(s, instance_id, key, version))
            .map(meta_out)
    }

    /// The tenant's instances that hold at least one key, sorted.
    #[tracing::instrument(skip_all, fields(tenant = scope.name()))]
    pub fn instances(&self, scope: &Scope) -> Result<Vec<String>, Error> {
        self.call_in_tenant("instances", scope, Access::Read, |g, s| g.call_instances(s))
    }

    /// [`Secrets::rotate`] for every key of an instance in one transaction:
    /// each key with the number of its versions rotated.
    #[tracing::instrument(skip_all, fields(tenant = scope.name(), instance = instance_id))]
    pub fn rotate_instance(&self, scope: &Scope, instance_id: &str) -> Result<Vec<(String, u32)>, Error> {
        self.call("rotate-instance", scope, instance_id, Access::Write, |g, s| g.call_rotate_instance(s, instance_id))
    }
}
