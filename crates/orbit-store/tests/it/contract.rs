//! The shared store contract, run against the filesystem store.

orbit_store::store_contract_tests!(|| {
    let dir = tempfile::tempdir().unwrap();
    let store = orbit_store::FsStore::open(dir.path()).unwrap();
    (store.stores(), dir)
});
