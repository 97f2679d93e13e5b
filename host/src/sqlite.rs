//! PLACEHOLDER: being written (issue 3). Replace this whole file.

use crate::vault::{Access, Backend, Transaction, VaultError};

pub struct SqliteBackend;

impl SqliteBackend {
    pub fn from_url(_url: &str) -> Result<Self, VaultError> {
        Err(VaultError::Rejected("the sqlite backend is not built yet".into()))
    }
}

impl Backend for SqliteBackend {
    fn begin(&self, _access: Access, _lock_scope: &str) -> Result<Box<dyn Transaction>, VaultError> {
        Err(VaultError::Rejected("the sqlite backend is not built yet".into()))
    }
    fn describe(&self) -> String {
        "sqlite".into()
    }
}
