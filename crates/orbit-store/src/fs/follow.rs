//! A log or journal followed by a reader in this process, held open after the reader's last
//! refresh, so that the next one can tell with a single `stat` of its path that nothing was
//! appended and the file was not replaced, and skip opening, locking and reading it.
//!
//! Why the file is held open: a replaced or deleted file's inode is freed when its last link
//! and descriptor go, and a filesystem gives a freed inode to the next file it makes, often at
//! once. While this process holds the file, its inode cannot be freed, so a path whose `stat`
//! names the same device and inode is this very file, and its length says whether anything
//! was appended. The files followed are only ever appended to or replaced by a rename (never
//! truncated or rewritten in place), so same file and same length mean the same bytes.
//!
//! Descriptors are bounded: at most [`HELD_MAX`] files are followed at once in a process; a
//! reader that finds none left follows nothing and refreshes the ordinary way, under its locks.

use std::fs::{File, Metadata};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Files followed at once, per process: well under the usual limit of 1,024 descriptors, which
/// the server's connections share.
const HELD_MAX: usize = 256;

static HELD: AtomicUsize = AtomicUsize::new(0);

/// A file held open since a refresh that read it to its length then.
pub(crate) struct Followed {
    _file: File,
    device: u64,
    inode: u64,
}

impl Followed {
    /// Holds `file` (`metadata` is its own), unless the process follows [`HELD_MAX`] files.
    pub(crate) fn hold(file: File, metadata: &Metadata) -> Option<Self> {
        HELD.fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
            (held < HELD_MAX).then_some(held + 1)
        })
        .ok()?;
        Some(Self { _file: file, device: metadata.dev(), inode: metadata.ino() })
    }

    /// Whether `path` is still this file, `len` bytes long: one `stat`, no lock. An error
    /// (the file or its agent gone) is a "no": the caller refreshes the ordinary way.
    pub(crate) fn unchanged(&self, path: &Path, len: u64) -> bool {
        std::fs::metadata(path).is_ok_and(|now| {
            now.dev() == self.device && now.ino() == self.inode && now.len() == len
        })
    }
}

impl Drop for Followed {
    fn drop(&mut self) {
        HELD.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_followed_file_is_unchanged_until_appended_to_or_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, "one\n").unwrap();
        let file = File::open(&path).unwrap();
        let metadata = file.metadata().unwrap();
        let followed = Followed::hold(file, &metadata).unwrap();
        assert!(followed.unchanged(&path, 4));
        assert!(!followed.unchanged(&path, 3), "a length it was not read to");

        let mut appending = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        std::io::Write::write_all(&mut appending, b"two\n").unwrap();
        assert!(!followed.unchanged(&path, 4), "appended to");
        assert!(followed.unchanged(&path, 8));

        // Replaced by a file of the same length: the held inode cannot be the new file's.
        let temp = dir.path().join("temp");
        std::fs::write(&temp, "one\ntwo\n").unwrap();
        std::fs::rename(&temp, &path).unwrap();
        assert!(!followed.unchanged(&path, 8), "replaced");
        std::fs::remove_file(&path).unwrap();
        assert!(!followed.unchanged(&path, 8), "removed");
    }
}
