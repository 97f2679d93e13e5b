//! PLACEHOLDER: being written (issue 3). Replace this whole file.

use crate::vault::{Access, Backend, Transaction, VaultError};

pub struct PostgresBackend;

impl PostgresBackend {
    pub fn from_url(_url: &str) -> Result<Self, VaultError> {
        Err(VaultError::Rejected("the postgres backend is not built yet".into()))
    }
}

impl Backend for PostgresBackend {
    fn begin(&self, _access: Access, _lock_scope: &str) -> Result<Box<dyn Transaction>, VaultError> {
        Err(VaultError::Rejected("the postgres backend is not built yet".into()))
    }
    fn describe(&self) -> String {
        "postgres".into()
    }
}
