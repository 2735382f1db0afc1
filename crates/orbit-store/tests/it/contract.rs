//! The shared store contract, run against every implementation: the filesystem store and the
//! in-memory one.

mod fs {
    orbit_store::store_contract_tests!(|options| {
        let dir = tempfile::tempdir().unwrap();
        let store = orbit_store::FsStore::open_with(dir.path(), options).unwrap();
        (store.stores(), dir)
    });
}

mod mem {
    // Only the agents' working directories are on disk.
    orbit_store::store_contract_tests!(|options| {
        let workspaces = tempfile::tempdir().unwrap();
        let store = orbit_store::MemStore::with_options(workspaces.path(), options);
        (store.stores(), workspaces)
    });
}
