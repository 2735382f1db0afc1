//! Listings rendered by their caller: each record's bytes as a function the caller names
//! makes them (the API's JSON of the record), so that a store keeping its records in memory
//! can keep each rendering beside its record and answer a listing of unchanged records without
//! cloning or rendering them again.
//!
//! A store keeps a rendering only as long as the record it was made from: a record that
//! changes (in any process) or leaves loses it. It keeps the function beside the bytes and
//! renders again when asked with another: two different functions never share a rendering.
//! (Two function pointers compare equal only when they are the same code, which renders the
//! same bytes.) Every method taking a [`Render`] has a default that renders each record of the
//! plain listing, which is right for any store; only stores with records in memory override it.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;

/// How a caller renders one record; a plain function, so that a store can tell two apart and
/// keep its renderings.
pub type Render<T> = fn(&T) -> Vec<u8>;

/// One record's rendering, shared by the listings that answer it.
pub type Rendered = Arc<[u8]>;

/// Renders every record, in order: what a store without renderings in memory answers.
pub fn each<T>(records: &[T], render: Render<T>) -> Vec<Rendered> {
    records.iter().map(|record| Rendered::from(render(record))).collect()
}

/// The renderings of a store's records in memory, by the record's key. Whoever changes or
/// removes a record forgets its rendering ([`forget`](Self::forget)), in the same step.
pub(crate) struct Renderings<K, T> {
    kept: HashMap<K, (Render<T>, Rendered)>,
}

impl<K, T> Default for Renderings<K, T> {
    fn default() -> Self {
        Self { kept: HashMap::new() }
    }
}

impl<K: Eq + Hash + Clone, T> Renderings<K, T> {
    /// The rendering of `record`, kept under `key`, by `render`: the one kept when `render`
    /// made it, else a new one, then kept.
    pub(crate) fn get(&mut self, key: &K, record: &T, render: Render<T>) -> Rendered {
        match self.kept.get(key) {
            // Comparing function pointers is what this wants: equal means the same code.
            #[allow(unpredictable_function_pointer_comparisons)]
            Some((made_by, bytes)) if *made_by == render => bytes.clone(),
            _ => {
                let bytes = Rendered::from(render(record));
                self.kept.insert(key.clone(), (render, bytes.clone()));
                bytes
            }
        }
    }

    /// Forgets the rendering of a record that changed or left.
    pub(crate) fn forget(&mut self, key: &K) {
        self.kept.remove(key);
    }
}
