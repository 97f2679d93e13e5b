//! The exported operations, as plain Rust over any [`Vault`].
//!
//! Write order: a set stores the new value first, then the key record, then
//! the index, and deletes pruned values last. So whatever prefix of a
//! call's writes lands, no record points at a missing value: every version
//! a reader can find is readable. Until all of a set's writes land, the key
//! record (read by `get`, `versions`) and the index (read by `list`,
//! `inject`, `mounts`) may disagree on which version is current.
//!
//! A delete has one commit point, the removal of the key record: first it
//! marks the key's index entry (`deleting`, naming the versions whose
//! values it will delete), then removes the key record, then the values,
//! then the entry. Readers of the index read the key record of a marked
//! entry (one extra read per marked entry; there are none unless a delete
//! was cut short) and show the entry only while that record exists. So
//! every prefix of a delete's writes shows either the old state (the key
//! with all its versions) or the new one (no key) to `get`, `versions` and
//! `list` alike. The next set or delete in the instance settles marked
//! entries: a mark whose record exists is dropped (that delete never
//! committed); a mark whose record is gone has its values deleted, then
//! the entry. A delete of a key whose own delete was cut short after the
//! commit point finishes it and succeeds (the caller's retry of a failed
//! delete); once nothing is left, a delete is not found.
//!
//! The host makes each call one transaction, so only a backend without
//! transactions (OpenBao) can show these states, after a crash during its
//! commit.
//!
//! The version lifecycle (`delete_versions`, `undelete`, `destroy`,
//! `rollback`) marks versions in the key record (and in the index entry
//! when the current version changes): a soft-deleted or destroyed version
//! reads as absent, and a key whose current version is either is left out
//! of `inject` and `mounts` but still listed, with the mark in its
//! metadata. `destroy` writes its marks before it deletes the values, so
//! no reader finds a live version without its value.
//!
//! Current values are also copied into the key record and the index entry
//! (as far as they fit, see `records`): `get` reads one record, `inject`
//! and `mounts` the index, and read a value's own entry only for the
//! values the records could not carry. Each copy is tagged with its
//! version and used only while its record calls that version current, so
//! a reader never pairs a record with another version's value. A delete's
//! mark drops the index's copy. `destroy` of a current version drops the
//! key record's copy in the write that marks it destroyed, and every
//! lifecycle call brings the key's index entry up to its record, dropping a
//! copy of any version that is not current or is destroyed: an entry that
//! a cut-short set left a version behind carries no destroyed value past
//! the next lifecycle call. A soft delete keeps the copies, like the value.
//!
//! The tenant's `instances` record lists every instance with keys: a set
//! adds its instance when the record lacks it (in the same batched read as
//! the key record and the index, so it costs no round trip), a delete that
//! removes an instance's last key removes the instance. The host takes a
//! tenant-wide write lock for that reason.

use crate::layout;
use crate::limits::Limits;
use crate::model::{Error, Mount, Secret, SecretMeta, SecretType, SetRequest, Vault};
use crate::records::{self, FORMAT, IndexEntry, IndexRecord, Inline, InstancesRecord, KeyRecord, VersionRecord};
use crate::stored_index::{self, IndexView};
use crate::stored_key;
use crate::{registry, tls, validate};

/// An index as the vault holds it (absent when the instance has no keys),
/// for `set` to splice and readers to read in place.
type StoredIndex = Option<Vec<u8>>;

/// Path of the merged Docker config among the mounts (a key cannot start
/// with '.', so no key's mount can collide with it).
pub const DOCKER_CONFIG_PATH: &str = ".docker/config.json";
/// Mode of mounted secret files: readable by the owner only.
pub const MODE_PRIVATE: u32 = 0o400;
/// Mode of mounted certificates (public material).
pub const MODE_PUBLIC: u32 = 0o444;

/// The secrets logic over a vault, with the limits and clock of one call.
pub struct Secrets<V> {
    pub vault: V,
    pub limits: Limits,
    /// Unix milliseconds.
    pub clock: fn() -> u64,
}

impl<V: Vault> Secrets<V> {
    pub fn new(vault: V, limits: Limits, clock: fn() -> u64) -> Self {
        Secrets { vault, limits: limits.clamped(), clock }
    }

    fn key_record(&self, instance_id: &str, key: &str) -> Result<Option<KeyRecord>, Error> {
        decode_record(self.vault.retrieve(&layout::meta(instance_id, key))?)
    }

    /// The key record and the index, in one batched read.
    fn record_and_index(&self, instance_id: &str, key: &str) -> Result<(Option<KeyRecord>, IndexRecord), Error> {
        let mut read = self.vault.retrieve_many(&[layout::meta(instance_id, key), layout::index(instance_id)])?;
        let index = read.pop().flatten();
        let record = read.pop().flatten();
        Ok((decode_record(record)?, decode_index(index)?))
    }

    /// The key record, the index as stored (see [`StoredIndex`]) and the
    /// tenant's instances, in one batched read.
    fn record_stored_index_instances(
        &self,
        instance_id: &str,
        key: &str,
    ) -> Result<(Option<KeyRecord>, StoredIndex, InstancesRecord), Error> {
        let mut read = self.vault.retrieve_many(&[
            layout::meta(instance_id, key),
            layout::index(instance_id),
            layout::instances(),
        ])?;
        let instances = decode_instances(read.pop().flatten())?;
        let index = read.pop().flatten();
        let record = read.pop().flatten();
        Ok((decode_record(record)?, index, instances))
    }

    /// The key record, the index and the tenant's instances, in one
    /// batched read.
    fn record_index_instances(
        &self,
        instance_id: &str,
        key: &str,
    ) -> Result<(Option<KeyRecord>, IndexRecord, InstancesRecord), Error> {
        let (record, index, instances) = self.record_stored_index_instances(instance_id, key)?;
        Ok((record, decode_index(index)?, instances))
    }

    fn store_instances(&self, instances: &InstancesRecord) -> Result<(), Error> {
        if instances.instances.is_empty() {
            self.vault.delete(&layout::instances())?;
        } else {
            self.vault.store(&layout::instances(), &records::encode(instances))?;
        }
        Ok(())
    }

    /// (key, type, value) of `picked` entries, given as (key, type,
    /// current version, the copy the index carries): the copies as they
    /// are, the other values in one batched read; a missing one is corrupt
    /// (the index points at it).
    fn with_values(
        &self,
        instance_id: &str,
        picked: Vec<(&str, SecretType, u32, Option<&[u8]>)>,
    ) -> Result<Vec<(String, SecretType, Vec<u8>)>, Error> {
        let missing: Vec<String> = picked
            .iter()
            .filter(|(_, _, _, copy)| copy.is_none())
            .map(|(key, _, version, _)| layout::value(instance_id, key, *version))
            .collect();
        let mut found = if missing.is_empty() { Vec::new() } else { self.vault.retrieve_many(&missing)? }.into_iter();
        picked
            .into_iter()
            .map(|(key, kind, version, copy)| {
                let value = match copy {
                    Some(value) => value.to_vec(),
                    None => found.next().flatten().ok_or_else(|| {
                        Error::corrupt(format!("value of version {version} of {key:?} is missing from the vault"))
                    })?,
                };
                Ok((key.to_owned(), kind, value))
            })
            .collect()
    }

    /// Settles the entries of `index` that a delete marked: a mark whose
    /// key record exists is dropped (that delete never reached its commit
    /// point); an entry whose record is gone is removed and returned with
    /// the versions whose values may be left. One read per marked entry.
    fn settle(&self, instance_id: &str, index: &mut IndexRecord) -> Result<Vec<(String, Vec<u32>)>, Error> {
        let marked: Vec<String> =
            index.keys.iter().filter(|(_, e)| e.deleting.is_some()).map(|(k, _)| k.clone()).collect();
        let mut gone = Vec::new();
        if marked.is_empty() {
            return Ok(gone);
        }
        let records: Vec<String> = marked.iter().map(|key| layout::meta(instance_id, key)).collect();
        let found = self.vault.retrieve_many(&records)?;
        for (key, record) in marked.into_iter().zip(found) {
            if record.is_some() {
                if let Some(entry) = index.keys.get_mut(&key) {
                    entry.deleting = None;
                }
            } else if let Some(entry) = index.keys.remove(&key) {
                gone.push((key, entry.deleting.unwrap_or_default()));
            }
        }
        Ok(gone)
    }

    /// The index as readers see it: without the keys whose delete passed
    /// its commit point.
    fn live_index(&self, instance_id: &str) -> Result<IndexRecord, Error> {
        self.live_index_of(instance_id, self.vault.retrieve(&layout::index(instance_id))?)
    }

    /// [`Secrets::live_index`] of the index as stored, already read.
    fn live_index_of(&self, instance_id: &str, stored: StoredIndex) -> Result<IndexRecord, Error> {
        let mut index = decode_index(stored)?;
        self.settle(instance_id, &mut index)?;
        Ok(index)
    }

    /// (key, type, value) of the readable current versions of the keys
    /// whose type `want` picks, in key order. Read in place from the
    /// stored index when it can be (see `stored_index`), else from the
    /// decoded index as readers see it; either way the values the index
    /// does not carry come in one batched read.
    fn current_values(
        &self,
        instance_id: &str,
        want: impl Fn(SecretType) -> bool,
    ) -> Result<Vec<(String, SecretType, Vec<u8>)>, Error> {
        let stored = self.vault.retrieve(&layout::index(instance_id))?;
        let Some(view) = stored.as_deref().and_then(IndexView::parse) else {
            let index = self.live_index_of(instance_id, stored)?;
            let picked = index
                .keys
                .iter()
                .filter(|(_, e)| want(e.kind) && e.current.readable())
                .map(|(key, e)| (key.as_str(), e.kind, e.current.version, Inline::of(&e.value, e.current.version)))
                .collect();
            return self.with_values(instance_id, picked);
        };
        let picked = view
            .entries_with_values()
            .filter(|(e, _)| e.current.readable() && want(e.kind))
            .map(|(e, copy)| (e.key, e.kind, e.current.version, copy))
            .collect();
        self.with_values(instance_id, picked)
    }

    /// Deletes the values that deletes cut short after their commit point
    /// left behind; the caller then writes the index without their entries.
    fn delete_leftovers(&self, instance_id: &str, gone: &[(String, Vec<u32>)]) -> Result<(), Error> {
        for (key, versions) in gone {
            for version in versions {
                self.vault.delete(&layout::value(instance_id, key, *version))?;
            }
        }
        Ok(())
    }

    fn store_index(&self, instance_id: &str, index: &IndexRecord) -> Result<(), Error> {
        if index.keys.is_empty() {
            self.vault.delete(&layout::index(instance_id))?;
        } else {
            self.vault.store(&layout::index(instance_id), &records::encode(index))?;
        }
        Ok(())
    }

    fn value(&self, instance_id: &str, key: &str, version: u32) -> Result<Vec<u8>, Error> {
        self.vault
            .retrieve(&layout::value(instance_id, key, version))?
            .ok_or_else(|| Error::corrupt(format!("value of version {version} is missing from the vault")))
    }

    fn existing(&self, instance_id: &str, key: &str) -> Result<KeyRecord, Error> {
        validate::instance_id(instance_id)?;
        validate::key(key)?;
        self.key_record(instance_id, key)?.ok_or(Error::NotFound)
    }

    /// Validates and stores a value as the key's next version.
    pub fn set(&self, req: &SetRequest) -> Result<SecretMeta, Error> {
        validate::instance_id(&req.instance_id)?;
        let facts = validate::secret(req.kind, &req.key, &req.value, &self.limits)?;
        let (id, key) = (req.instance_id.as_str(), req.key.as_str());

        let (mut record, stored_index, mut instances) = self.record_stored_index_instances(id, key)?;
        let current = match &record {
            Some(r) => r.current()?.version,
            None => 0,
        };
        if let Some(expected) = req.if_version
            && expected != current
        {
            return Err(Error::VersionMismatch(format!(
                "key {key:?} is at version {current}, the request expected version {expected}"
            )));
        }
        if let Some(r) = &record
            && r.kind != req.kind
        {
            return Err(Error::Conflict(format!(
                "key {key:?} holds a {} secret; delete it before setting it as {}",
                r.kind, req.kind
            )));
        }
        let version = current
            .checked_add(1)
            .ok_or_else(|| Error::LimitExceeded(format!("key {key:?} has used every version number")))?;
        let next = VersionRecord::new(version, (self.clock)(), req.value.len() as u32, facts.not_after);
        let inline = Inline { version, value: req.value.clone() };
        let entry = IndexEntry { value: Some(inline.clone()), ..IndexEntry::new(req.kind, next.clone()) };
        // The new index: spliced from the stored one when it can be (see
        // `stored_index`), else decoded, settled and encoded.
        let (new_index, keys_before, gone) =
            match stored_index.as_deref().and_then(|bytes| stored_index::upsert(bytes, key, &entry)) {
                Some(up) => (up.bytes, up.keys_before, Vec::new()),
                None => {
                    let mut index = decode_index(stored_index)?;
                    let gone = self.settle(id, &mut index)?;
                    let keys_before = index.keys.len();
                    index.keys.insert(key.to_owned(), entry);
                    (records::encode(&index), keys_before, gone)
                }
            };
        if record.is_none() && keys_before >= self.limits.max_keys_per_instance as usize {
            return Err(Error::LimitExceeded(format!(
                "instance {id:?} holds {keys_before} keys; max-keys-per-instance is {}",
                self.limits.max_keys_per_instance
            )));
        }

        // Listed before it holds anything: never an instance with keys that
        // `instances` leaves out.
        if instances.instances.insert(id.to_owned()) {
            instances.format = FORMAT;
            self.vault.store(&layout::instances(), &records::encode(&instances))?;
        }
        // Before the index is written without their entries.
        self.delete_leftovers(id, &gone)?;
        self.vault.store(&layout::value(id, key, version), &req.value)?;
        let record =
            record.get_or_insert_with(|| KeyRecord { format: FORMAT, kind: req.kind, versions: vec![], value: None });
        let pruned = record.push(next.clone(), self.limits.max_versions_per_key);
        record.value = Some(inline);
        self.vault.store(&layout::meta(id, key), &records::encode(record))?;
        self.vault.store(&layout::index(id), &new_index)?;
        for old in pruned {
            self.vault.delete(&layout::value(id, key, old))?;
        }
        Ok(records::meta(id, key, req.kind, &next))
    }

    /// The current version with its value: one read when the key record
    /// carries the value, which is read in place (see `stored_key`).
    pub fn get(&self, instance_id: &str, key: &str) -> Result<Secret, Error> {
        validate::instance_id(instance_id)?;
        validate::key(key)?;
        let stored = self.vault.retrieve(&layout::meta(instance_id, key))?.ok_or(Error::NotFound)?;
        if let Some(current) = stored_key::current(&stored) {
            if !current.version.readable() {
                return Err(Error::NotFound);
            }
            let value = match current.value {
                Some(value) => value.to_vec(),
                None => self.value(instance_id, key, current.version.version)?,
            };
            return Ok(Secret { meta: records::meta(instance_id, key, current.kind, &current.version), value });
        }
        let record: KeyRecord = records::decode("key", &stored)?;
        let current = record.current()?;
        if !current.readable() {
            return Err(Error::NotFound);
        }
        let value = match Inline::of(&record.value, current.version) {
            Some(value) => value.to_vec(),
            None => self.value(instance_id, key, current.version)?,
        };
        Ok(Secret { meta: records::meta(instance_id, key, record.kind, current), value })
    }

    /// One retained version with its value.
    pub fn get_version(&self, instance_id: &str, key: &str, version: u32) -> Result<Secret, Error> {
        let record = self.existing(instance_id, key)?;
        let v = record.find(version).filter(|v| v.readable()).ok_or(Error::NotFound)?;
        let value = self.value(instance_id, key, version)?;
        Ok(Secret { meta: records::meta(instance_id, key, record.kind, v), value })
    }

    /// The current version of every key, sorted by key.
    pub fn list(&self, instance_id: &str) -> Result<Vec<SecretMeta>, Error> {
        validate::instance_id(instance_id)?;
        let stored = self.vault.retrieve(&layout::index(instance_id))?;
        if let Some(view) = stored.as_deref().and_then(IndexView::parse) {
            return Ok(view.keys.iter().map(|e| records::meta(instance_id, e.key, e.kind, &e.current)).collect());
        }
        let index = self.live_index_of(instance_id, stored)?;
        Ok(index.keys.iter().map(|(k, e)| records::meta(instance_id, k, e.kind, &e.current)).collect())
    }

    /// Every retained version of a key, oldest first.
    pub fn versions(&self, instance_id: &str, key: &str) -> Result<Vec<SecretMeta>, Error> {
        let record = self.existing(instance_id, key)?;
        Ok(record.versions.iter().map(|v| records::meta(instance_id, key, record.kind, v)).collect())
    }

    /// Name/value pairs of the env secrets, current versions, sorted by name.
    pub fn inject(&self, instance_id: &str) -> Result<Vec<(String, String)>, Error> {
        validate::instance_id(instance_id)?;
        self.current_values(instance_id, |kind| kind == SecretType::Env)?
            .into_iter()
            .map(|(key, _, value)| match String::from_utf8(value) {
                Ok(text) => Ok((key, text)),
                Err(_) => Err(Error::corrupt(format!("stored env value of {key:?} is not UTF-8"))),
            })
            .collect()
    }

    /// The files of the file, tls and registry secrets, sorted by path.
    pub fn mounts(&self, instance_id: &str) -> Result<Vec<Mount>, Error> {
        validate::instance_id(instance_id)?;
        let mut out = Vec::new();
        let mut docker_configs = Vec::new();
        for (key, kind, value) in self.current_values(instance_id, |kind| kind != SecretType::Env)? {
            match kind {
                SecretType::Env => {}
                SecretType::File => out.push(Mount { path: key.clone(), mode: MODE_PRIVATE, contents: value }),
                SecretType::Tls => {
                    let parts = tls::split(&value).map_err(|e| Error::corrupt(format!("stored tls secret {key:?}: {e}")))?;
                    out.push(Mount { path: format!("{key}/tls.crt"), mode: MODE_PUBLIC, contents: parts.certificates_pem });
                    out.push(Mount { path: format!("{key}/tls.key"), mode: MODE_PRIVATE, contents: parts.private_key_pem });
                }
                SecretType::Registry => docker_configs.push(value),
            }
        }
        if !docker_configs.is_empty() {
            let docs: Vec<&[u8]> = docker_configs.iter().map(Vec::as_slice).collect();
            let merged = registry::merge(&docs).map_err(|e| Error::corrupt(format!("stored registry secrets: {e}")))?;
            out.push(Mount { path: DOCKER_CONFIG_PATH.into(), mode: MODE_PRIVATE, contents: merged });
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// Deletes a key with all its versions (see the module documentation
    /// for the order of its writes); also finishes a delete of it that was
    /// cut short after its commit point.
    pub fn delete(&self, instance_id: &str, key: &str) -> Result<(), Error> {
        validate::instance_id(instance_id)?;
        validate::key(key)?;
        let (record, mut index, mut instances) = self.record_index_instances(instance_id, key)?;
        let gone = self.settle(instance_id, &mut index)?;
        if record.is_none() && !gone.iter().any(|(k, _)| k == key) {
            return Err(Error::NotFound);
        }
        self.delete_leftovers(instance_id, &gone)?;
        if let Some(record) = record {
            let versions: Vec<u32> = record.versions.iter().map(|v| v.version).collect();
            let current = match (record.versions.last(), index.keys.get(key)) {
                (Some(v), _) => v.clone(),
                (None, Some(entry)) => entry.current.clone(),
                (None, None) => VersionRecord::new(0, 0, 0, None),
            };
            // The mark drops the inline value: its last copy goes with the
            // values, not with the entry.
            let mark = IndexEntry { kind: record.kind, current, deleting: Some(versions.clone()), value: None };
            index.keys.insert(key.to_owned(), mark);
            self.vault.store(&layout::index(instance_id), &records::encode(&index))?;
            // The commit point.
            self.vault.delete(&layout::meta(instance_id, key))?;
            for version in versions {
                self.vault.delete(&layout::value(instance_id, key, version))?;
            }
            index.keys.remove(key);
        }
        self.store_index(instance_id, &index)?;
        // Unlisted only once it holds nothing.
        if index.keys.is_empty() && instances.instances.remove(instance_id) {
            self.store_instances(&instances)?;
        }
        Ok(())
    }

    /// Checks the versions of a lifecycle call: 1..=max-versions-per-key
    /// of them, each at least 1; sorted, without repeats.
    fn version_list(&self, versions: &[u32]) -> Result<Vec<u32>, Error> {
        if versions.is_empty() {
            return Err(Error::InvalidArgument("versions: give at least one version".into()));
        }
        let max = self.limits.max_versions_per_key;
        if versions.len() > max as usize {
            return Err(Error::LimitExceeded(format!(
                "versions: {} given; at most max-versions-per-key ({max}) per call",
                versions.len()
            )));
        }
        if versions.contains(&0) {
            return Err(Error::InvalidArgument("versions: version numbers start at 1".into()));
        }
        let mut sorted = versions.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        Ok(sorted)
    }

    /// Applies `change` to each of `versions` of a key (every one must be
    /// retained); writes the key record, and the index entry when the
    /// current version changed. `change` says whether it changed the
    /// version; an error from it stores nothing. Returns `versions`,
    /// checked, sorted and without repeats.
    fn change_versions(
        &self,
        instance_id: &str,
        key: &str,
        versions: &[u32],
        change: impl Fn(&mut VersionRecord) -> Result<bool, Error>,
    ) -> Result<Vec<u32>, Error> {
        validate::instance_id(instance_id)?;
        validate::key(key)?;
        let versions = self.version_list(versions)?;
        let (record, mut index) = self.record_and_index(instance_id, key)?;
        let mut record = record.ok_or(Error::NotFound)?;
        let mut changed = false;
        for &version in &versions {
            let v = record.find_mut(version).ok_or(Error::NotFound)?;
            changed |= change(v)?;
        }
        let current = record.current()?.clone();
        if changed {
            // A destroyed value leaves no copy behind (a soft-deleted one
            // keeps its inline copy, as it keeps its entry, for `undelete`).
            if current.destroyed {
                record.value = None;
            }
            self.vault.store(&layout::meta(instance_id, key), &records::encode(&record))?;
        }
        // The index entry follows the record, also when this call changed
        // nothing: a set or a call like this one cut short between its
        // record and its index write leaves the entry behind, possibly with
        // a copy of a value destroyed since. It keeps only a copy of the
        // current version, and none of a destroyed one.
        if let Some(entry) = index.keys.get_mut(key) {
            let stale_copy = entry.value.as_ref().is_some_and(|v| v.version != current.version || current.destroyed);
            if entry.current != current || stale_copy {
                entry.current = current;
                if stale_copy {
                    entry.value = None;
                }
                self.vault.store(&layout::index(instance_id), &records::encode(&index))?;
            }
        }
        Ok(versions)
    }

    /// Soft-deletes retained versions: their values stay, but read as
    /// absent until [`Secrets::undelete`].
    pub fn delete_versions(&self, instance_id: &str, key: &str, versions: &[u32]) -> Result<(), Error> {
        let now = (self.clock)();
        self.change_versions(instance_id, key, versions, |v| {
            if v.destroyed || v.deleted_at.is_some() {
                return Ok(false);
            }
            v.deleted_at = Some(now);
            Ok(true)
        })?;
        Ok(())
    }

    /// Undoes [`Secrets::delete_versions`]; a destroyed version is a
    /// conflict.
    pub fn undelete(&self, instance_id: &str, key: &str, versions: &[u32]) -> Result<(), Error> {
        self.change_versions(instance_id, key, versions, |v| {
            if v.destroyed {
                return Err(Error::Conflict(format!(
                    "version {} of {key:?} was destroyed; it cannot be undeleted",
                    v.version
                )));
            }
            Ok(v.deleted_at.take().is_some())
        })?;
        Ok(())
    }

    /// Removes the values of retained versions for good, after marking
    /// them destroyed.
    ///
    /// Every given version is destroyed once the marks are written, so all
    /// their values are deleted, not only those this call marked: a retry
    /// finishes a destroy that was cut short after its marks.
    pub fn destroy(&self, instance_id: &str, key: &str, versions: &[u32]) -> Result<(), Error> {
        let versions = self.change_versions(instance_id, key, versions, |v| Ok(!std::mem::replace(&mut v.destroyed, true)))?;
        for version in versions {
            self.vault.delete(&layout::value(instance_id, key, version))?;
        }
        Ok(())
    }

    /// Sets the value of `version` again, as the key's next version.
    pub fn rollback(&self, instance_id: &str, key: &str, version: u32) -> Result<SecretMeta, Error> {
        let record = self.existing(instance_id, key)?;
        let v = record.find(version).ok_or(Error::NotFound)?;
        if v.destroyed {
            return Err(Error::Conflict(format!("version {version} of {key:?} was destroyed; there is no value to roll back to")));
        }
        if v.deleted_at.is_some() {
            return Err(Error::Conflict(format!("version {version} of {key:?} is deleted; undelete it first")));
        }
        let value = self.value(instance_id, key, version)?;
        self.set(&SetRequest {
            instance_id: instance_id.to_owned(),
            key: key.to_owned(),
            value,
            kind: record.kind,
            if_version: None,
        })
    }

    /// The tenant's instances that hold keys, sorted.
    pub fn instances(&self) -> Result<Vec<String>, Error> {
        Ok(decode_instances(self.vault.retrieve(&layout::instances())?)?.instances.into_iter().collect())
    }

    /// Re-protects every retained version of a key (and its record) under
    /// the vault's newest key material; returns the number of versions.
    pub fn rotate(&self, instance_id: &str, key: &str) -> Result<u32, Error> {
        let record = self.existing(instance_id, key)?;
        let n = self.rotate_record(instance_id, key, &record)?;
        self.vault.rotate(&layout::index(instance_id))?;
        Ok(n)
    }

    /// [`Secrets::rotate`] for every key of an instance, in one call (so a
    /// concurrent delete cannot stop it half-way): the keys with the number
    /// of versions rotated, in key order. An instance without keys rotates
    /// nothing.
    pub fn rotate_instance(&self, instance_id: &str) -> Result<Vec<(String, u32)>, Error> {
        validate::instance_id(instance_id)?;
        let index = self.live_index(instance_id)?;
        let mut rotated = Vec::with_capacity(index.keys.len());
        let records: Vec<String> = index.keys.keys().map(|key| layout::meta(instance_id, key)).collect();
        for (key, record) in index.keys.keys().zip(self.vault.retrieve_many(&records)?) {
            let record = decode_record(record)?
                .ok_or_else(|| Error::corrupt(format!("the index lists {key:?}, which has no record")))?;
            rotated.push((key.clone(), self.rotate_record(instance_id, key, &record)?));
        }
        if !rotated.is_empty() {
            self.vault.rotate(&layout::index(instance_id))?;
        }
        Ok(rotated)
    }

    /// Rotates the values a record points at (destroyed ones have none)
    /// and the record; returns how many values.
    fn rotate_record(&self, instance_id: &str, key: &str, record: &KeyRecord) -> Result<u32, Error> {
        let mut rotated = 0;
        for v in record.versions.iter().filter(|v| !v.destroyed) {
            self.vault.rotate(&layout::value(instance_id, key, v.version))?;
            rotated += 1;
        }
        self.vault.rotate(&layout::meta(instance_id, key))?;
        Ok(rotated)
    }
}

fn decode_record(bytes: Option<Vec<u8>>) -> Result<Option<KeyRecord>, Error> {
    bytes.map(|bytes| records::decode("key", &bytes)).transpose()
}

fn decode_instances(bytes: Option<Vec<u8>>) -> Result<InstancesRecord, Error> {
    match bytes {
        Some(bytes) => records::decode("instances", &bytes),
        None => Ok(InstancesRecord { format: FORMAT, ..Default::default() }),
    }
}

fn decode_index(bytes: Option<Vec<u8>>) -> Result<IndexRecord, Error> {
    match bytes {
        Some(bytes) => records::decode("index", &bytes),
        None => Ok(IndexRecord { format: FORMAT, ..Default::default() }),
    }
}
