//! The secrets logic run natively over an in-memory vault that counts reads:
//! versioning, pruning, limits, check-and-set, costs and write order.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;

use secrets_guest::{Error, Limits, SecretType, Secrets, SetRequest, Vault, VaultError, records};

#[derive(Default)]
struct CountingVault {
    entries: RefCell<BTreeMap<String, Vec<u8>>>,
    reads: Cell<usize>,
    /// Read requests: a `retrieve`, or a `retrieve_many` of any size.
    read_requests: Cell<usize>,
    /// Stores, deletes and rotations.
    writes: Cell<usize>,
    /// Fail every store after this many succeeded (for write-order tests).
    fail_after_stores: Cell<Option<usize>>,
    /// Fail every store and delete after this many writes succeeded.
    fail_after_writes: Cell<Option<usize>>,
}

impl CountingVault {
    fn write(&self) -> Result<(), VaultError> {
        if let Some(n) = self.fail_after_writes.get() {
            if n == 0 {
                return Err(VaultError::Unavailable("injected failure".into()));
            }
            self.fail_after_writes.set(Some(n - 1));
        }
        Ok(())
    }
}

impl CountingVault {
    /// The vault keys whose entries contain `needle` anywhere.
    fn entries_holding(&self, needle: &[u8]) -> Vec<String> {
        let entries = self.entries.borrow();
        entries.iter().filter(|(_, v)| v.windows(needle.len()).any(|w| w == needle)).map(|(k, _)| k.clone()).collect()
    }

    /// (read requests, entries read, writes) since the last call.
    fn take_counts(&self) -> (usize, usize, usize) {
        (self.read_requests.replace(0), self.reads.replace(0), self.writes.replace(0))
    }
}

impl Vault for &CountingVault {
    fn store(&self, key: &str, value: &[u8]) -> Result<(), VaultError> {
        self.writes.set(self.writes.get() + 1);
        self.write()?;
        if let Some(n) = self.fail_after_stores.get() {
            if n == 0 {
                return Err(VaultError::Unavailable("injected failure".into()));
            }
            self.fail_after_stores.set(Some(n - 1));
        }
        self.entries.borrow_mut().insert(key.into(), value.into());
        Ok(())
    }
    fn retrieve(&self, key: &str) -> Result<Option<Vec<u8>>, VaultError> {
        self.reads.set(self.reads.get() + 1);
        self.read_requests.set(self.read_requests.get() + 1);
        Ok(self.entries.borrow().get(key).cloned())
    }
    fn retrieve_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, VaultError> {
        self.reads.set(self.reads.get() + keys.len());
        self.read_requests.set(self.read_requests.get() + 1);
        Ok(keys.iter().map(|key| self.entries.borrow().get(key).cloned()).collect())
    }
    fn delete(&self, key: &str) -> Result<(), VaultError> {
        self.writes.set(self.writes.get() + 1);
        self.write()?;
        self.entries.borrow_mut().remove(key);
        Ok(())
    }
    fn rotate(&self, _key: &str) -> Result<(), VaultError> {
        self.writes.set(self.writes.get() + 1);
        Ok(())
    }
}

fn clock() -> u64 {
    1_700_000_000_000
}

fn req(key: &str, kind: SecretType, value: &[u8]) -> SetRequest {
    SetRequest { instance_id: "web-1".into(), key: key.into(), value: value.into(), kind, if_version: None }
}

#[test]
fn sets_create_versions_and_keep_old_ones() {
    let vault = CountingVault::default();
    let s = Secrets::new(&vault, Limits::default(), clock);
    for (i, v) in ["a", "b", "c"].iter().enumerate() {
        let meta = s.set(&req("DB", SecretType::Env, v.as_bytes())).unwrap();
        assert_eq!(meta.version, i as u32 + 1);
        assert_eq!(meta.created_at, clock());
    }
    assert_eq!(s.get("web-1", "DB").unwrap().value, b"c");
    assert_eq!(s.get_version("web-1", "DB", 1).unwrap().value, b"a");
    let versions: Vec<u32> = s.versions("web-1", "DB").unwrap().iter().map(|m| m.version).collect();
    assert_eq!(versions, vec![1, 2, 3]);
    assert_eq!(s.get_version("web-1", "DB", 4), Err(Error::NotFound));
}

#[test]
fn versions_beyond_the_limit_are_pruned_with_their_values() {
    let vault = CountingVault::default();
    let limits = Limits { max_versions_per_key: 3, ..Limits::default() };
    let s = Secrets::new(&vault, limits, clock);
    for i in 1..=5u8 {
        s.set(&req("K", SecretType::File, &[i])).unwrap();
    }
    let versions: Vec<u32> = s.versions("web-1", "K").unwrap().iter().map(|m| m.version).collect();
    assert_eq!(versions, vec![3, 4, 5]);
    assert_eq!(s.get_version("web-1", "K", 2), Err(Error::NotFound));
    // Values of pruned versions are gone from the vault: 3 values + meta +
    // index + the tenant's instances.
    assert_eq!(vault.entries.borrow().len(), 6);
}

#[test]
fn get_costs_one_read_whatever_the_number_of_keys_and_versions() {
    let vault = CountingVault::default();
    let s = Secrets::new(&vault, Limits::default(), clock);
    for k in 0..50 {
        for _ in 0..5 {
            s.set(&req(&format!("K{k}"), SecretType::Env, b"v")).unwrap();
        }
    }
    vault.reads.set(0);
    s.get("web-1", "K17").unwrap();
    assert_eq!(vault.reads.get(), 1);
    vault.reads.set(0);
    assert_eq!(s.list("web-1").unwrap().len(), 50);
    assert_eq!(vault.reads.get(), 1);
}

/// What each call costs in vault requests, pinned: a remote store pays a
/// round trip per read request (batched reads are one request), so the
/// read requests of a call must not grow with the number of keys.
#[test]
fn vault_operations_per_call_are_pinned() {
    let vault = CountingVault::default();
    let s = Secrets::new(&vault, Limits { max_versions_per_key: 3, ..Limits::default() }, clock);
    for k in 0..20 {
        s.set(&req(&format!("K{k:02}"), SecretType::Env, b"v")).unwrap();
    }
    s.set(&req("conf.json", SecretType::File, b"{}")).unwrap();
    s.set(&req("K03", SecretType::Env, b"v2")).unwrap();
    vault.take_counts();
    let mut measured = Vec::new();
    let mut count = |name: &'static str, call: &dyn Fn()| {
        call();
        measured.push((name, vault.take_counts()));
    };
    count("get", &|| drop(s.get("web-1", "K03").unwrap()));
    count("versions", &|| drop(s.versions("web-1", "K03").unwrap()));
    count("list", &|| drop(s.list("web-1").unwrap()));
    count("inject", &|| assert_eq!(s.inject("web-1").unwrap().len(), 20));
    count("mounts", &|| assert_eq!(s.mounts("web-1").unwrap().len(), 1));
    count("set (new version)", &|| drop(s.set(&req("K04", SecretType::Env, b"v2")).unwrap()));
    count("set (new version, pruning)", &|| {
        s.set(&req("K03", SecretType::Env, b"v3")).unwrap();
        s.set(&req("K03", SecretType::Env, b"v4")).unwrap();
    });
    count("set (new key)", &|| drop(s.set(&req("NEW", SecretType::Env, b"n")).unwrap()));
    count("delete", &|| s.delete("web-1", "NEW").unwrap());
    count("rotate", &|| assert_eq!(s.rotate("web-1", "K03").unwrap(), 3));
    count("rotate the instance", &|| assert_eq!(s.rotate_instance("web-1").unwrap().len(), 21));
    count("delete-versions (current)", &|| s.delete_versions("web-1", "K03", &[4]).unwrap());
    count("undelete (current)", &|| s.undelete("web-1", "K03", &[4]).unwrap());
    count("delete-versions (older)", &|| s.delete_versions("web-1", "K03", &[2]).unwrap());
    count("destroy (older)", &|| s.destroy("web-1", "K03", &[2, 3]).unwrap());
    count("rollback", &|| assert_eq!(s.rollback("web-1", "K03", 4).unwrap().version, 5));
    count("instances", &|| assert_eq!(s.instances().unwrap(), ["web-1"]));
    // (read requests, entries read, writes)
    let expected = [
        // The key record carries the current value; the index every
        // current value (all small here).
        ("get", (1, 1, 0)),
        ("versions", (1, 1, 0)),
        ("list", (1, 1, 0)),
        ("inject", (1, 1, 0)),
        ("mounts", (1, 1, 0)),
        ("set (new version)", (1, 3, 3)),
        ("set (new version, pruning)", (2, 6, 7)),
        ("set (new key)", (1, 3, 3)),
        ("delete", (1, 3, 4)),
        ("rotate", (1, 1, 5)),
        ("rotate the instance", (2, 22, 46)),
        // Record and index read together; the index is written only when
        // the current version changes.
        ("delete-versions (current)", (1, 2, 2)),
        ("undelete (current)", (1, 2, 2)),
        ("delete-versions (older)", (1, 2, 1)),
        // The record, then the two values.
        ("destroy (older)", (1, 2, 3)),
        // Record, value, then a set: record, index, instances in one read.
        ("rollback", (3, 5, 4)),
        ("instances", (1, 1, 0)),
    ];
    assert_eq!(measured, expected);
}

/// Values too large for the records to carry, and records written before
/// they carried any, are read from the values' own entries.
#[test]
fn values_the_records_do_not_carry_are_read_from_their_own_entries() {
    let vault = CountingVault::default();
    let s = Secrets::new(&vault, Limits::default(), clock);
    let big = vec![b'b'; 40 * 1024];
    s.set(&req("big.bin", SecretType::File, &big)).unwrap();
    s.set(&req("small.txt", SecretType::File, b"small")).unwrap();
    s.set(&req("A", SecretType::Env, b"a")).unwrap();
    vault.take_counts();
    assert_eq!(s.get("web-1", "big.bin").unwrap().value, big);
    assert_eq!(vault.take_counts(), (2, 2, 0));
    let mounts = s.mounts("web-1").unwrap();
    assert_eq!(mounts.iter().map(|m| m.contents.len()).collect::<Vec<_>>(), [big.len(), 5]);
    // The index, then the one value it does not carry.
    assert_eq!(vault.take_counts(), (2, 2, 0));
    // Records without inline values (as format 2 wrote them; decoding
    // format 2 is tested in `records`): every value from its own entry.
    for (key, bytes) in vault.entries.borrow_mut().iter_mut() {
        if key.ends_with("/meta") {
            let mut record: records::KeyRecord = records::decode("key", bytes).unwrap();
            assert!(record.value.take().is_some() || key.contains(&hex::encode("big.bin")), "{key}");
            *bytes = records::encode(&record);
        } else if key.ends_with("/index") {
            let mut index: records::IndexRecord = records::decode("index", bytes).unwrap();
            index.keys.values_mut().for_each(|e| e.value = None);
            *bytes = records::encode(&index);
        }
    }
    assert_eq!(s.get("web-1", "small.txt").unwrap().value, b"small");
    assert_eq!(vault.take_counts(), (2, 2, 0));
    assert_eq!(s.inject("web-1").unwrap(), [("A".to_owned(), "a".to_owned())]);
    assert_eq!(vault.take_counts(), (2, 2, 0));
    // The next set of a key writes its value inline again.
    s.set(&req("A", SecretType::Env, b"a2")).unwrap();
    vault.take_counts();
    assert_eq!(s.get("web-1", "A").unwrap().value, b"a2");
    assert_eq!(vault.take_counts(), (1, 1, 0));
}

/// No copy of a destroyed or deleted value stays in the records.
#[test]
fn destroyed_and_deleted_values_leave_no_inline_copy() {
    let vault = CountingVault::default();
    let s = Secrets::new(&vault, Limits::default(), clock);
    let holds = |needle: &[u8]| vault.entries_holding(needle);
    s.set(&req("A", SecretType::Env, b"first-secret")).unwrap();
    s.set(&req("A", SecretType::Env, b"second-secret")).unwrap();
    s.set(&req("B", SecretType::Env, b"other-secret")).unwrap();
    // The value's entry, the key record and the index.
    assert_eq!(holds(b"second-secret").len(), 3);
    // Soft delete keeps the value (and its copies) for undelete.
    s.delete_versions("web-1", "A", &[2]).unwrap();
    assert_eq!(s.get("web-1", "A"), Err(Error::NotFound));
    assert!(s.inject("web-1").unwrap().iter().all(|(k, _)| k != "A"));
    s.undelete("web-1", "A", &[2]).unwrap();
    assert_eq!(s.get("web-1", "A").unwrap().value, b"second-secret");
    s.destroy("web-1", "A", &[2]).unwrap();
    assert_eq!(holds(b"second-secret"), Vec::<String>::new());
    assert_eq!(s.get("web-1", "A"), Err(Error::NotFound));
    assert_eq!(s.get_version("web-1", "A", 1).unwrap().value, b"first-secret");
    s.delete("web-1", "B").unwrap();
    assert_eq!(holds(b"other-secret"), Vec::<String>::new());
}

#[test]
fn deleted_and_destroyed_versions_read_as_absent_and_come_back_or_not() {
    let vault = CountingVault::default();
    let s = Secrets::new(&vault, Limits::default(), clock);
    for v in [b"a", b"b", b"c"] {
        s.set(&req("DB", SecretType::Env, v)).unwrap();
    }
    s.set(&req("conf", SecretType::File, b"{}")).unwrap();
    let state = |v: u32| {
        let m = s.versions("web-1", "DB").unwrap().into_iter().find(|m| m.version == v).unwrap();
        (m.deleted_at.is_some(), m.destroyed)
    };

    // Soft delete of the current version: get is not found, inject leaves
    // the key out, list still shows it with the mark.
    s.delete_versions("web-1", "DB", &[3]).unwrap();
    assert_eq!(s.get("web-1", "DB"), Err(Error::NotFound));
    assert_eq!(s.get_version("web-1", "DB", 3), Err(Error::NotFound));
    assert_eq!(s.get_version("web-1", "DB", 2).unwrap().value, b"b");
    assert!(s.inject("web-1").unwrap().is_empty());
    let listed = s.list("web-1").unwrap();
    assert!(listed.iter().any(|m| m.key == "DB" && m.version == 3 && m.deleted_at == Some(clock())), "{listed:?}");
    assert_eq!(state(3), (true, false));
    // Deleting it again keeps the first deletion time; undelete restores it.
    s.delete_versions("web-1", "DB", &[3, 3]).unwrap();
    s.undelete("web-1", "DB", &[3]).unwrap();
    assert_eq!(s.get("web-1", "DB").unwrap().value, b"c");
    assert_eq!(s.inject("web-1").unwrap(), vec![("DB".to_owned(), "c".to_owned())]);

    // Destroy removes the value from the vault for good; metadata stays.
    s.destroy("web-1", "DB", &[1]).unwrap();
    assert_eq!(state(1), (false, true));
    assert_eq!(s.get_version("web-1", "DB", 1), Err(Error::NotFound));
    assert!(vault.entries.borrow().keys().all(|k| !k.ends_with("/v/1") || !k.contains(&hex::encode("DB"))));
    assert!(matches!(s.undelete("web-1", "DB", &[1]), Err(Error::Conflict(m)) if m.contains("destroyed")));
    assert!(matches!(s.rollback("web-1", "DB", 1), Err(Error::Conflict(m)) if m.contains("destroyed")));
    assert_eq!(s.rotate("web-1", "DB").unwrap(), 2, "destroyed versions have no value to rotate");

    // Rollback writes an old value as a new version; a deleted one is refused.
    let meta = s.rollback("web-1", "DB", 2).unwrap();
    assert_eq!((meta.version, s.get("web-1", "DB").unwrap().value), (4, b"b".to_vec()));
    s.delete_versions("web-1", "DB", &[2]).unwrap();
    assert!(matches!(s.rollback("web-1", "DB", 2), Err(Error::Conflict(m)) if m.contains("undelete")));

    // Bad version lists store nothing.
    let before = vault.entries.borrow().clone();
    assert!(matches!(s.delete_versions("web-1", "DB", &[]), Err(Error::InvalidArgument(_))));
    assert!(matches!(s.delete_versions("web-1", "DB", &[0]), Err(Error::InvalidArgument(_))));
    assert_eq!(s.delete_versions("web-1", "DB", &[3, 99]), Err(Error::NotFound));
    assert_eq!(s.destroy("web-1", "NOPE", &[1]), Err(Error::NotFound));
    assert_eq!(s.rollback("web-1", "DB", 99), Err(Error::NotFound));
    assert!(matches!(s.undelete("web-1", "DB", &[1, 2]), Err(Error::Conflict(_))));
    assert_eq!(*vault.entries.borrow(), before);
    let many: Vec<u32> = (1..=Limits::default().max_versions_per_key + 1).collect();
    assert!(matches!(s.destroy("web-1", "DB", &many), Err(Error::LimitExceeded(_))));
    assert_eq!(*vault.entries.borrow(), before);

    // Purging the key keeps working, destroyed versions and all.
    s.delete("web-1", "DB").unwrap();
    assert!(vault.entries.borrow().keys().all(|k| !k.contains(&hex::encode("DB"))));
}

/// A set cut short after its key record leaves the index one version
/// behind; destroying the version the index still calls current must not
/// leave it readable through `inject`, nor a copy of it anywhere. A destroy
/// cut short after its marks is finished by its retry.
#[test]
fn destroy_after_cut_short_writes_leaves_no_copy_and_no_readable_value() {
    let vault = CountingVault::default();
    let s = Secrets::new(&vault, Limits::default(), clock);
    let holds = |needle: &[u8]| vault.entries_holding(needle);
    s.set(&req("DB", SecretType::Env, b"old-secret-1")).unwrap();
    s.set(&req("DB", SecretType::Env, b"old-secret-2")).unwrap();
    // The third set stores its value and key record, then fails: the index
    // still says version 2.
    vault.fail_after_stores.set(Some(2));
    assert!(s.set(&req("DB", SecretType::Env, b"new-secret-3")).is_err());
    vault.fail_after_stores.set(None);
    assert_eq!(s.get("web-1", "DB").unwrap().meta.version, 3);
    assert_eq!(s.list("web-1").unwrap()[0].version, 2);
    s.destroy("web-1", "DB", &[1, 2]).unwrap();
    assert!(holds(b"old-secret-").is_empty(), "{:?}", holds(b"old-secret-"));
    // The index caught up with the record.
    assert_eq!(s.list("web-1").unwrap()[0].version, 3);
    assert_eq!(s.inject("web-1").unwrap(), [("DB".to_owned(), "new-secret-3".to_owned())]);

    // A destroy whose marks land but whose value deletes do not: its retry
    // deletes them.
    s.set(&req("K", SecretType::Env, b"k-secret-1")).unwrap();
    s.set(&req("K", SecretType::Env, b"k-secret-2")).unwrap();
    vault.fail_after_writes.set(Some(1));
    assert!(s.destroy("web-1", "K", &[1]).is_err());
    vault.fail_after_writes.set(None);
    assert_eq!(holds(b"k-secret-1").len(), 1, "the value's own entry is left");
    s.destroy("web-1", "K", &[1]).unwrap();
    assert!(holds(b"k-secret-1").is_empty());
    assert_eq!(s.get("web-1", "K").unwrap().value, b"k-secret-2");
}

#[test]
fn instances_lists_those_with_keys() {
    let vault = CountingVault::default();
    let s = Secrets::new(&vault, Limits::default(), clock);
    assert!(s.instances().unwrap().is_empty());
    s.set(&req("A", SecretType::Env, b"1")).unwrap();
    s.set(&SetRequest { instance_id: "api".into(), ..req("A", SecretType::Env, b"1") }).unwrap();
    s.set(&req("B", SecretType::Env, b"1")).unwrap();
    assert_eq!(s.instances().unwrap(), ["api", "web-1"]);
    s.delete("web-1", "A").unwrap();
    assert_eq!(s.instances().unwrap(), ["api", "web-1"], "web-1 still holds B");
    s.delete("web-1", "B").unwrap();
    assert_eq!(s.instances().unwrap(), ["api"]);
    s.delete("api", "A").unwrap();
    assert!(s.instances().unwrap().is_empty());
    assert!(vault.entries.borrow().is_empty(), "nothing left behind");
    // An instance written before `instances` existed is listed once written to.
    s.set(&req("A", SecretType::Env, b"1")).unwrap();
    vault.entries.borrow_mut().remove("instances");
    assert!(s.instances().unwrap().is_empty());
    s.set(&req("A", SecretType::Env, b"2")).unwrap();
    assert_eq!(s.instances().unwrap(), ["web-1"]);
}

#[test]
fn keys_per_instance_limit() {
    let vault = CountingVault::default();
    let s = Secrets::new(&vault, Limits { max_keys_per_instance: 2, ..Limits::default() }, clock);
    s.set(&req("A", SecretType::Env, b"1")).unwrap();
    s.set(&req("B", SecretType::Env, b"1")).unwrap();
    s.set(&req("B", SecretType::Env, b"2")).unwrap(); // a new version is not a new key
    let before = vault.entries.borrow().clone();
    match s.set(&req("C", SecretType::Env, b"1")) {
        Err(Error::LimitExceeded(m)) => assert!(m.contains("max-keys-per-instance is 2"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(*vault.entries.borrow(), before, "a rejected set stores nothing");
}

#[test]
fn check_and_set() {
    let vault = CountingVault::default();
    let s = Secrets::new(&vault, Limits::default(), clock);
    let mut r = req("A", SecretType::Env, b"1");
    r.if_version = Some(1);
    assert!(matches!(s.set(&r), Err(Error::VersionMismatch(m)) if m.contains("at version 0")));
    r.if_version = Some(0);
    assert_eq!(s.set(&r).unwrap().version, 1);
    assert!(matches!(s.set(&r), Err(Error::VersionMismatch(_))));
    r.if_version = Some(1);
    assert_eq!(s.set(&r).unwrap().version, 2);
}

#[test]
fn type_of_an_existing_key_cannot_change() {
    let vault = CountingVault::default();
    let s = Secrets::new(&vault, Limits::default(), clock);
    s.set(&req("A", SecretType::Env, b"1")).unwrap();
    assert!(matches!(s.set(&req("A", SecretType::File, b"1")), Err(Error::Conflict(m)) if m.contains("env")));
}

#[test]
fn a_failure_half_way_never_leaves_a_record_pointing_at_a_missing_value() {
    for stores_before_failure in 0..3 {
        let vault = CountingVault::default();
        let s = Secrets::new(&vault, Limits::default(), clock);
        s.set(&req("A", SecretType::Env, b"old")).unwrap();
        vault.fail_after_stores.set(Some(stores_before_failure));
        assert!(matches!(s.set(&req("A", SecretType::Env, b"new")), Err(Error::Vault(_))));
        vault.fail_after_stores.set(None);
        let got = s.get("web-1", "A").unwrap();
        // The value store comes first, then the key record, then the index.
        // Until the key record lands the old version stays current for get;
        // until the index lands, list and inject still show the old one.
        if stores_before_failure < 2 {
            assert_eq!((got.meta.version, got.value.as_slice()), (1, &b"old"[..]));
        } else {
            assert_eq!((got.meta.version, got.value.as_slice()), (2, &b"new"[..]));
        }
        assert_eq!(s.list("web-1").unwrap()[0].version, 1);
        assert_eq!(s.inject("web-1").unwrap(), vec![("A".to_string(), "old".to_string())]);
        for v in s.versions("web-1", "A").unwrap() {
            s.get_version("web-1", "A", v.version).unwrap();
        }
    }
}

#[test]
fn delete_removes_every_version_and_restarts_numbering() {
    let vault = CountingVault::default();
    let s = Secrets::new(&vault, Limits::default(), clock);
    s.set(&req("A", SecretType::Env, b"1")).unwrap();
    s.set(&req("A", SecretType::Env, b"2")).unwrap();
    s.set(&req("B", SecretType::Env, b"1")).unwrap();
    s.delete("web-1", "A").unwrap();
    assert_eq!(s.get("web-1", "A"), Err(Error::NotFound));
    assert_eq!(s.delete("web-1", "A"), Err(Error::NotFound));
    assert_eq!(s.list("web-1").unwrap().len(), 1);
    s.delete("web-1", "B").unwrap();
    assert!(vault.entries.borrow().is_empty(), "nothing left behind: {:?}", vault.entries.borrow().keys());
    assert_eq!(s.set(&req("A", SecretType::Env, b"3")).unwrap().version, 1);
}

/// A delete stopped after any number of its writes (as on a backend
/// without transactions) shows either the old state or the new one to
/// get, versions, list and inject; a repeated delete, or a set, finishes
/// it and leaves none of the old values behind.
#[test]
fn a_delete_cut_after_any_write_shows_the_old_or_the_new_state_and_is_finished_later() {
    // A with 3 versions: mark, key record, 3 values, index.
    const WRITES: usize = 6;
    let keys = |vault: &CountingVault| vault.entries.borrow().keys().cloned().collect::<Vec<_>>();
    for cut in 0..=WRITES {
        for then_set in [false, true] {
            let vault = CountingVault::default();
            let s = Secrets::new(&vault, Limits::default(), clock);
            for v in ["1", "2", "3"] {
                s.set(&req("A", SecretType::Env, v.as_bytes())).unwrap();
            }
            s.set(&req("B", SecretType::Env, b"b")).unwrap();
            let b_only = {
                let probe = CountingVault::default();
                let p = Secrets::new(&probe, Limits::default(), clock);
                p.set(&req("B", SecretType::Env, b"b")).unwrap();
                keys(&probe)
            };
            vault.fail_after_writes.set(Some(cut));
            let result = s.delete("web-1", "A");
            vault.fail_after_writes.set(None);
            assert_eq!(result.is_ok(), cut == WRITES, "cut after {cut}: {result:?}");
            let listed: Vec<(String, u32)> = s.list("web-1").unwrap().into_iter().map(|m| (m.key, m.version)).collect();
            let injected: Vec<String> = s.inject("web-1").unwrap().into_iter().map(|(k, _)| k).collect();
            let versions = s.versions("web-1", "A").map(|v| v.iter().map(|m| m.version).collect::<Vec<_>>());
            match s.get("web-1", "A") {
                Ok(got) => {
                    assert!(cut < 2, "cut after {cut}: the key record goes second, and with it the key");
                    assert_eq!((got.meta.version, got.value.as_slice()), (3, &b"3"[..]));
                    assert_eq!(versions, Ok(vec![1, 2, 3]));
                    assert_eq!(listed, vec![("A".into(), 3), ("B".into(), 1)]);
                    assert_eq!(injected, ["A", "B"]);
                    assert_eq!(s.get_version("web-1", "A", 1).unwrap().value, b"1");
                }
                Err(e) => {
                    assert_eq!(e, Error::NotFound, "cut after {cut}");
                    assert!(cut >= 2, "cut after {cut}");
                    assert_eq!(versions, Err(Error::NotFound));
                    assert_eq!(listed, vec![("B".into(), 1)], "cut after {cut}");
                    assert_eq!(injected, ["B"]);
                }
            }
            if then_set {
                // A set finishes the delete: numbering restarts, no old value stays.
                assert_eq!(s.set(&req("A", SecretType::Env, b"new")).unwrap().version, if cut < 2 { 4 } else { 1 });
                if cut >= 2 {
                    let a_values: Vec<String> = keys(&vault).into_iter().filter(|k| k.contains("/v/")).collect();
                    assert_eq!(a_values.len(), 2, "A's v/1 and B's v/1 only: {a_values:?}");
                    assert_eq!(s.get_version("web-1", "A", 1).unwrap().value, b"new");
                }
                assert_eq!(s.list("web-1").unwrap().len(), 2);
            } else {
                // A repeated delete finishes it and succeeds; then the key is not found.
                assert_eq!(s.delete("web-1", "A"), if cut == WRITES { Err(Error::NotFound) } else { Ok(()) }, "cut after {cut}");
                assert_eq!(s.delete("web-1", "A"), Err(Error::NotFound));
                assert_eq!(keys(&vault), b_only, "cut after {cut}: only B is left");
            }
        }
    }
}

#[test]
fn inject_and_mounts_split_by_type() {
    let vault = CountingVault::default();
    let s = Secrets::new(&vault, Limits::default(), clock);
    s.set(&req("B_VAR", SecretType::Env, b"two")).unwrap();
    s.set(&req("A_VAR", SecretType::Env, b"one")).unwrap();
    s.set(&req("A_VAR", SecretType::Env, b"one-v2")).unwrap();
    s.set(&req("config.yaml", SecretType::File, b"x: 1")).unwrap();
    let reg = br#"{"auths":{"ghcr.io":{"username":"u","password":"p"}}}"#;
    s.set(&req("ghcr", SecretType::Registry, reg)).unwrap();
    assert_eq!(
        s.inject("web-1").unwrap(),
        vec![("A_VAR".into(), "one-v2".into()), ("B_VAR".into(), "two".into())]
    );
    let mounts = s.mounts("web-1").unwrap();
    let paths: Vec<&str> = mounts.iter().map(|m| m.path.as_str()).collect();
    assert_eq!(paths, vec![".docker/config.json", "config.yaml"]);
    assert_eq!(mounts[1].contents, b"x: 1");
    assert_eq!(mounts[1].mode, 0o400);
    let merged: serde_json::Value = serde_json::from_slice(&mounts[0].contents).unwrap();
    assert_eq!(merged["auths"]["ghcr.io"]["username"], "u");
}

#[test]
fn unknown_instances_are_empty_and_bad_ids_rejected() {
    let vault = CountingVault::default();
    let s = Secrets::new(&vault, Limits::default(), clock);
    assert!(s.list("nobody").unwrap().is_empty());
    assert!(s.inject("nobody").unwrap().is_empty());
    assert_eq!(s.get("nobody", "A"), Err(Error::NotFound));
    assert!(matches!(s.list("../etc"), Err(Error::InvalidArgument(_))));
    assert!(matches!(s.get("ok", "a/b"), Err(Error::InvalidArgument(_))));
}
