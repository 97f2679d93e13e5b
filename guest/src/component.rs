//! The wit-bindgen glue: WIT imports onto [`Vault`], exports onto [`Secrets`].
//! Nothing but type conversion lives here.

wit_bindgen::generate!({
    path: "../wit",
    world: "secrets-plugin",
});

use cp::secrets::{context, vault};
use exports::cp::secrets::secrets::{self as wit, Guest};

use crate::model::{self, Error, VaultError};
use crate::{Limits, Secrets};

/// Keys per `retrieve-many` request: the host refuses more (the WIT says so).
const MAX_KEYS_PER_BATCH: usize = 1024;

struct Component;
export!(Component);

/// The imported vault, as the logic's [`model::Vault`].
struct ImportedVault;

fn vault_error(e: vault::VaultError) -> VaultError {
    match e {
        vault::VaultError::Unavailable(m) => VaultError::Unavailable(m),
        vault::VaultError::Corrupt(m) => VaultError::Corrupt(m),
        vault::VaultError::Rejected(m) => VaultError::Rejected(m),
        vault::VaultError::Other(m) => VaultError::Other(m),
    }
}

impl model::Vault for ImportedVault {
    fn store(&self, key: &str, value: &[u8]) -> Result<(), VaultError> {
        vault::store(key, value).map_err(vault_error)
    }
    fn retrieve(&self, key: &str) -> Result<Option<Vec<u8>>, VaultError> {
        vault::retrieve(key).map_err(vault_error)
    }
    fn retrieve_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, VaultError> {
        let mut values = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(MAX_KEYS_PER_BATCH) {
            values.extend(vault::retrieve_many(chunk).map_err(vault_error)?);
        }
        Ok(values)
    }
    fn delete(&self, key: &str) -> Result<(), VaultError> {
        vault::delete(key).map_err(vault_error)
    }
    fn rotate(&self, key: &str) -> Result<(), VaultError> {
        vault::rotate(key).map_err(vault_error)
    }
}

fn secrets() -> Secrets<ImportedVault> {
    let l = context::current_limits();
    let limits = Limits {
        max_value_bytes: l.max_value_bytes,
        max_keys_per_instance: l.max_keys_per_instance,
        max_versions_per_key: l.max_versions_per_key,
    };
    Secrets::new(ImportedVault, limits, context::now)
}

fn kind_in(k: wit::SecretType) -> model::SecretType {
    match k {
        wit::SecretType::Env => model::SecretType::Env,
        wit::SecretType::File => model::SecretType::File,
        wit::SecretType::Registry => model::SecretType::Registry,
        wit::SecretType::Tls => model::SecretType::Tls,
    }
}

fn kind_out(k: model::SecretType) -> wit::SecretType {
    match k {
        model::SecretType::Env => wit::SecretType::Env,
        model::SecretType::File => wit::SecretType::File,
        model::SecretType::Registry => wit::SecretType::Registry,
        model::SecretType::Tls => wit::SecretType::Tls,
    }
}

fn meta_out(m: model::SecretMeta) -> wit::SecretMeta {
    wit::SecretMeta {
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

fn secret_out(s: model::Secret) -> wit::Secret {
    wit::Secret { meta: meta_out(s.meta), value: s.value }
}

fn vault_error_out(e: VaultError) -> vault::VaultError {
    match e {
        VaultError::Unavailable(m) => vault::VaultError::Unavailable(m),
        VaultError::Corrupt(m) => vault::VaultError::Corrupt(m),
        VaultError::Rejected(m) => vault::VaultError::Rejected(m),
        VaultError::Other(m) => vault::VaultError::Other(m),
    }
}

fn error_out(e: Error) -> wit::Error {
    match e {
        Error::NotFound => wit::Error::NotFound,
        Error::InvalidArgument(m) => wit::Error::InvalidArgument(m),
        Error::LimitExceeded(m) => wit::Error::LimitExceeded(m),
        Error::Conflict(m) => wit::Error::Conflict(m),
        Error::VersionMismatch(m) => wit::Error::VersionMismatch(m),
        Error::Vault(e) => wit::Error::Vault(vault_error_out(e)),
    }
}

impl Guest for Component {
    fn set(request: wit::SetRequest) -> Result<wit::SecretMeta, wit::Error> {
        let req = model::SetRequest {
            instance_id: request.instance_id,
            key: request.key,
            value: request.value,
            kind: kind_in(request.kind),
            if_version: request.if_version,
        };
        secrets().set(&req).map(meta_out).map_err(error_out)
    }

    fn get(instance_id: String, key: String) -> Result<wit::Secret, wit::Error> {
        secrets().get(&instance_id, &key).map(secret_out).map_err(error_out)
    }

    fn get_version(instance_id: String, key: String, version: u32) -> Result<wit::Secret, wit::Error> {
        secrets().get_version(&instance_id, &key, version).map(secret_out).map_err(error_out)
    }

    fn list(instance_id: String) -> Result<Vec<wit::SecretMeta>, wit::Error> {
        secrets().list(&instance_id).map(|v| v.into_iter().map(meta_out).collect()).map_err(error_out)
    }

    fn versions(instance_id: String, key: String) -> Result<Vec<wit::SecretMeta>, wit::Error> {
        secrets().versions(&instance_id, &key).map(|v| v.into_iter().map(meta_out).collect()).map_err(error_out)
    }

    fn inject(instance_id: String) -> Result<Vec<(String, String)>, wit::Error> {
        secrets().inject(&instance_id).map_err(error_out)
    }

    fn mounts(instance_id: String) -> Result<Vec<wit::Mount>, wit::Error> {
        secrets()
            .mounts(&instance_id)
            .map(|v| v.into_iter().map(|m| wit::Mount { path: m.path, mode: m.mode, contents: m.contents }).collect())
            .map_err(error_out)
    }

    fn delete(instance_id: String, key: String) -> Result<(), wit::Error> {
        secrets().delete(&instance_id, &key).map_err(error_out)
    }

    fn rotate(instance_id: String, key: String) -> Result<u32, wit::Error> {
        secrets().rotate(&instance_id, &key).map_err(error_out)
    }

    fn rotate_instance(instance_id: String) -> Result<Vec<(String, u32)>, wit::Error> {
        secrets().rotate_instance(&instance_id).map_err(error_out)
    }

    fn delete_versions(instance_id: String, key: String, versions: Vec<u32>) -> Result<(), wit::Error> {
        secrets().delete_versions(&instance_id, &key, &versions).map_err(error_out)
    }

    fn undelete(instance_id: String, key: String, versions: Vec<u32>) -> Result<(), wit::Error> {
        secrets().undelete(&instance_id, &key, &versions).map_err(error_out)
    }

    fn destroy(instance_id: String, key: String, versions: Vec<u32>) -> Result<(), wit::Error> {
        secrets().destroy(&instance_id, &key, &versions).map_err(error_out)
    }

    fn rollback(instance_id: String, key: String, version: u32) -> Result<wit::SecretMeta, wit::Error> {
        secrets().rollback(&instance_id, &key, version).map(meta_out).map_err(error_out)
    }

    fn instances() -> Result<Vec<String>, wit::Error> {
        secrets().instances().map_err(error_out)
    }
}
