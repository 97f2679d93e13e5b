//! Encryption at rest layered over a raw SQL transaction: what SQLite and
//! PostgreSQL share. A backend supplies [`RawTxn`] (get, put, remove rows of
//! sealed bytes inside its own transaction); [`SealedTxn`] turns it into a
//! [`Transaction`] that seals on store, opens on retrieve and re-seals on
//! rotate, with [`Keyring`].

use std::sync::Arc;

use crate::crypto::{Keyring, sealed_generation};
use crate::vault::{Transaction, Vault, VaultError};

/// Rows of sealed entries inside one database transaction. Dropping it
/// without `commit` must roll the transaction back.
pub trait RawTxn: Send {
    fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, VaultError>;
    /// Inserts or replaces; `generation` is stored beside the row so that
    /// rotate-all can find entries under older master keys.
    fn put(&mut self, key: &str, sealed: &[u8], generation: u32) -> Result<(), VaultError>;
    fn remove(&mut self, key: &str) -> Result<(), VaultError>;
    fn commit(self: Box<Self>) -> Result<(), VaultError>;
}

/// A [`RawTxn`] with encryption at rest: a [`Transaction`].
pub struct SealedTxn<R> {
    raw: Box<R>,
    keyring: Arc<Keyring>,
}

impl<R: RawTxn> SealedTxn<R> {
    pub fn new(raw: R, keyring: Arc<Keyring>) -> Self {
        SealedTxn { raw: Box::new(raw), keyring }
    }
}

impl<R: RawTxn> Vault for SealedTxn<R> {
    fn store(&mut self, key: &str, value: &[u8]) -> Result<(), VaultError> {
        let sealed = self.keyring.seal(key, value)?;
        self.raw.put(key, &sealed, self.keyring.newest())
    }

    fn retrieve(&mut self, key: &str) -> Result<Option<Vec<u8>>, VaultError> {
        match self.raw.get(key)? {
            Some(sealed) => Ok(Some(self.keyring.open(key, &sealed)?)),
            None => Ok(None),
        }
    }

    fn delete(&mut self, key: &str) -> Result<(), VaultError> {
        self.raw.remove(key)
    }

    fn rotate(&mut self, key: &str) -> Result<(), VaultError> {
        if let Some(sealed) = self.raw.get(key)? {
            let plain = zeroize::Zeroizing::new(self.keyring.open(key, &sealed)?);
            let resealed = self.keyring.seal(key, &plain)?;
            debug_assert_eq!(sealed_generation(&resealed)?, self.keyring.newest());
            self.raw.put(key, &resealed, self.keyring.newest())?;
        }
        Ok(())
    }
}

impl<R: RawTxn> Transaction for SealedTxn<R> {
    fn commit(self: Box<Self>) -> Result<(), VaultError> {
        self.raw.commit()
    }
}
