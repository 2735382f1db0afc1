//! The data directory's own id (`data-dir-id`): made once, at random, at the directory's
//! first start, and never changed, so that a node's registration says which directory it
//! runs on. Two processes on one directory read the same id; two directories never share
//! one, whatever their nodes are called.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::io;
use crate::{Error, Result};

#[derive(Serialize, Deserialize)]
struct DataDirId {
    id: String,
}

/// The id of the data directory `dir` (which must exist), made when it has none. Processes
/// starting together on one directory agree: the file is created whole or not at all, and
/// whoever did not create it reads the one that did.
pub fn data_dir_id(dir: &Path) -> Result<String> {
    let path = dir.join("data-dir-id");
    if let Some(kept) = io::read_json::<DataDirId>(&path)? {
        return Ok(kept.id);
    }
    let made = DataDirId { id: crate::new_ulid().to_string() };
    if io::create_json(&path, &made)? {
        return Ok(made.id);
    }
    io::read_json::<DataDirId>(&path)?.map(|kept| kept.id).ok_or_else(|| {
        Error::io(&path, std::io::Error::new(std::io::ErrorKind::NotFound, "vanished"))
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn the_id_is_made_once_privately_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = data_dir_id(dir.path()).unwrap();
        assert_eq!(data_dir_id(dir.path()).unwrap(), first, "kept");
        let mode = std::fs::metadata(dir.path().join("data-dir-id")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let other = tempfile::tempdir().unwrap();
        assert_ne!(data_dir_id(other.path()).unwrap(), first, "another directory, another id");
    }
}
