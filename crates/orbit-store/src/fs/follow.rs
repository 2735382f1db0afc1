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
//! Descriptors are bounded and given back: every followed file of the process is kept in one
//! pool ([`crate::lru`]) of at most [`HELD_MAX`], the least recently checked let go first to
//! make room for a newer one. A reader whose file was let go refreshes the ordinary way, under
//! its locks, and holds the file again. Only readers of whole listings take a file to hold;
//! a writer's refresh keeps the one held only if it read that very file, else lets it go.

use std::fs::{File, Metadata};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::lru::{Held, Pool};

/// Files followed at once, per process: a small share of the usual limit of 1,024
/// descriptors, which the server's connections and the CLI's pipes share.
const HELD_MAX: u64 = 128;

static HELD: Pool<File> = Pool::new(HELD_MAX);

/// A file held open since a refresh that read it to its length then.
pub(crate) struct Followed {
    file: Held<File>,
    device: u64,
    inode: u64,
}

impl Followed {
    /// Holds `file` (`metadata` is its own), letting go of the file checked least recently
    /// when the process follows [`HELD_MAX`] files.
    pub(crate) fn hold(file: File, metadata: &Metadata) -> Option<Self> {
        let file = HELD.keep(file, 1)?;
        Some(Self { file, device: metadata.dev(), inode: metadata.ino() })
    }

    /// Whether `metadata` is this file's: a writer that refreshed from the very file held
    /// keeps holding it, without a new slot.
    pub(crate) fn is(&self, metadata: &Metadata) -> bool {
        metadata.dev() == self.device && metadata.ino() == self.inode
    }

    /// Whether `path` is still this file, `len` bytes long: one `stat`, no lock. An error
    /// (the file or its agent gone) is a "no", and so is a file the pool let go: then the
    /// inode may have been freed and reused, and the caller refreshes the ordinary way.
    pub(crate) fn unchanged(&self, path: &Path, len: u64) -> bool {
        let same = std::fs::metadata(path).is_ok_and(|now| {
            now.dev() == self.device && now.ino() == self.inode && now.len() == len
        });
        // Still held after the `stat` means held all along (a token let go never comes
        // back), so the inode could not have been reused before the `stat`.
        same && self.file.touch(|_| ()).is_some()
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

    #[test]
    fn the_file_checked_least_recently_is_let_go_for_a_newer_one() {
        // Other tests hold files from the same pool meanwhile; twice the pool's size held
        // after the first file means it was let go whatever they did (nothing newer is let go
        // before it).
        let dir = tempfile::tempdir().unwrap();
        let hold = |n: u64| {
            let path = dir.path().join(format!("log{n}"));
            std::fs::write(&path, "one\n").unwrap();
            let file = File::open(&path).unwrap();
            let metadata = file.metadata().unwrap();
            (path, Followed::hold(file, &metadata).unwrap())
        };
        let (first_path, first) = hold(0);
        assert!(first.unchanged(&first_path, 4));
        let newer: Vec<_> = (1..=2 * HELD_MAX).map(hold).collect();
        assert!(!first.unchanged(&first_path, 4), "let go: no longer vouched for");
        let (newest_path, newest) = newer.last().unwrap();
        assert!(newest.unchanged(newest_path, 4), "the newest agent keeps its fast path");
        assert!(HELD.cost() <= HELD_MAX);
        drop(newer);
        drop(first);
    }
}
