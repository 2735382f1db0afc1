//! The shared store contract, the one the filesystem and in-memory stores pass.

orbit_store::store_contract_tests!(crate::stores);
