//! New records made durable as lines appended to one file beside their directory, instead of
//! one new file each; the records' own files are made from those lines later, in batches,
//! by the next step that takes the records' lock exclusively ([`drain`]).
//!
//! ```text
//! <dir>/arrivals.jsonl           new records, one JSON line each, every line preceded by a newline
//! <dir>/arrivals.draining.jsonl  the batch being made into files
//! <dir>/arrivals.lock            flock: appenders shared, the drain's swap of the two exclusive
//! ```
//!
//! Why: on this kind of disk a create is bound by making a file, not by its fsyncs (ext4's
//! inode allocator searches under the directory's lock; docs/benchmarks.md), and a record that
//! is one new file pays that search on the answer's path. An append makes no inode, and the
//! `fdatasync` that makes it durable is shared by every writer of this process that appended
//! to the file before it began (`dirsync`, by the file's inode). The files are still made, the
//! record layout around them is unchanged, and nothing but [`append`] and [`drain`] knows the
//! lines exist.
//!
//! Why it is correct:
//!
//! - **An answered append is durable.** The file exists under its name durably before anyone
//!   appends to it: only [`make_file`] and the drain's swap make it, holding the lock
//!   exclusively, and both fsync the directory before letting go. An appender opens it under
//!   the lock held shared, so it is the file the name holds, and its line is synced by an
//!   `fdatasync` that began after its `write` returned.
//! - **Every appended line is drained exactly once into a file.** The drain swaps the file
//!   under the lock held exclusively: it waits for every appender holding it shared, whose
//!   `write`s are then complete, and renames the file to the batch's name; appenders that come
//!   after open the new empty file. The batch is made into files (each fsynced, its directory
//!   fsynced) and only then removed, and the removal is made durable before the drain returns.
//! - **A batch left by a crash is finished before anything acts on its records.** The drain
//!   runs at the start of every step under the records' exclusive lock (the inbox's claims,
//!   settlings and archivings), so no step can have changed a record of a batch that still
//!   exists: finishing it again remakes files that are unchanged since they were first made.
//! - **A line torn by a crash is skipped, and tears no other line.** Each line starts with a
//!   newline, so a line appended after a torn one (a writer killed mid-`write`, a power loss
//!   before its sync) still starts a line of its own. Appends under the shared lock can run at
//!   once in several processes; a regular file's `O_APPEND` writes do not interleave.
//!
//! What it costs: a read of the records first checks, with a `stat` of each of the two files,
//! whether anything waits to be drained (see the inbox's `with_inbox`), and the step that
//! drains pays the files' fsyncs the appends did not.
//!
//! An `fdatasync` that fails answers its writers with the error, and their lines stay in the
//! file: as after any failed fsync the disk's state is unknown, and such a record may still be
//! drained (the session journal's appends are the same).

use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::dirsync::FileSyncs;
use super::io::{self, FILE_MODE};
use crate::{Error, Result};

const ARRIVALS: &str = "arrivals.jsonl";
const DRAINING: &str = "arrivals.draining.jsonl";
const LOCK: &str = "arrivals.lock";

/// Appends `record` to `dir`'s arrivals and returns once it is durable. `dir` exists.
pub(crate) fn append<T: Serialize>(dir: &Path, record: &T, syncs: &FileSyncs) -> Result<()> {
    let path = dir.join(ARRIVALS);
    let mut line = Vec::with_capacity(512);
    line.push(b'\n');
    serde_json::to_writer(&mut line, record)
        .map_err(|err| Error::Corrupt { path: path.clone(), source: err })?;
    line.push(b'\n');
    let file = loop {
        let appended = io::with_lock_mode(&dir.join(LOCK), false, || {
            let mut file = match OpenOptions::new().append(true).open(&path) {
                Ok(file) => file,
                Err(err) if err.kind() == ErrorKind::NotFound => return Ok(None),
                Err(err) => return Err(Error::io(&path, err)),
            };
            // One `write`: a short one is not retried, since the rest would land after another
            // appender's line; the part written fails to parse and is skipped.
            match file.write(&line) {
                Ok(written) if written == line.len() => Ok(Some(file)),
                Ok(_) => Err(Error::io(&path, std::io::Error::other("a short write"))),
                Err(err) => Err(Error::io(&path, err)),
            }
        })?;
        match appended {
            Some(file) => break file,
            None => make_file(dir)?,
        }
    };
    let metadata = file.metadata().map_err(|err| Error::io(&path, err))?;
    syncs
        .get(&(metadata.dev(), metadata.ino()))
        .sync(|| file.sync_data())
        .map_err(|err| Error::io(&path, err))
}

/// Whether anything waits in `dir` to be drained: lines appended, or a batch a crash left. An
/// error other than a missing file says yes, so that the drain reports it.
pub(crate) fn waiting(dir: &Path) -> bool {
    // The arrivals first: a drain swaps them for an empty file while the batch's name exists,
    // and removes that name only once its records are files, so a drain running meanwhile is
    // seen by one of the two `stat`s.
    let arrived = match fs::metadata(dir.join(ARRIVALS)) {
        Ok(metadata) => metadata.len() > 0,
        Err(err) => err.kind() != ErrorKind::NotFound,
    };
    arrived
        || !matches!(fs::symlink_metadata(dir.join(DRAINING)), Err(err) if err.kind() == ErrorKind::NotFound)
}

/// Makes files of every record appended to `dir`'s arrivals so far. `make` is given the
/// records of one batch, oldest first, and returns once each is a durable file; it may be given
/// records it made files of before (a batch a crash left), and must then leave those files as
/// they are. The caller holds the records' lock exclusively, and drains before acting on any
/// record (see the module's doc).
pub(crate) fn drain<T: DeserializeOwned>(
    dir: &Path,
    mut make: impl FnMut(Vec<T>) -> Result<()>,
) -> Result<()> {
    let draining = dir.join(DRAINING);
    if io::exists(&draining)? {
        finish(dir, &draining, &mut make)?;
    }
    let arrivals = dir.join(ARRIVALS);
    match fs::metadata(&arrivals) {
        Ok(metadata) if metadata.len() > 0 => {}
        Ok(_) => return Ok(()),
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(Error::io(&arrivals, err)),
    }
    io::with_lock_mode(&dir.join(LOCK), true, || {
        fs::rename(&arrivals, &draining).map_err(|err| Error::io(&arrivals, err))?;
        create_empty(&arrivals)?;
        // Both names at once: should the rename be lost, the lines are drained from the old
        // name instead, and the new empty file is made again by the next appender.
        io::sync_dir(dir)
    })?;
    finish(dir, &draining, &mut make)
}

/// Makes files of a batch's records, then removes the batch durably.
fn finish<T: DeserializeOwned>(
    dir: &Path,
    draining: &Path,
    make: &mut impl FnMut(Vec<T>) -> Result<()>,
) -> Result<()> {
    let bytes = fs::read(draining).map_err(|err| Error::io(draining, err))?;
    make(parse(draining, &bytes))?;
    fs::remove_file(draining).map_err(|err| Error::io(draining, err))?;
    io::sync_dir(dir)
}

/// The records of a batch, in the order appended. A line that does not parse (torn by a crash,
/// or damaged) is skipped and logged: it was never answered, or it cannot be read by anyone.
fn parse<T: DeserializeOwned>(path: &Path, bytes: &[u8]) -> Vec<T> {
    let mut records = Vec::new();
    for line in bytes.split(|b| *b == b'\n') {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice(line) {
            Ok(record) => records.push(record),
            Err(err) => {
                tracing::warn!(path = %path.display(), error = %err, "skipping an arrived record that does not parse")
            }
        }
    }
    records
}

/// Makes `dir`'s arrivals file when it is missing (first use, or a drain that failed after
/// its swap), durably, before anyone appends to it.
fn make_file(dir: &Path) -> Result<()> {
    io::with_lock_mode(&dir.join(LOCK), true, || {
        let path = dir.join(ARRIVALS);
        if io::exists(&path)? {
            return Ok(());
        }
        create_empty(&path)?;
        io::sync_dir(dir)
    })
}

fn create_empty(path: &Path) -> Result<()> {
    match OpenOptions::new().write(true).create_new(true).mode(FILE_MODE).open(path) {
        Ok(file) => file.sync_all().map_err(|err| Error::io(path, err)),
        Err(err) if err.kind() == ErrorKind::AlreadyExists => Ok(()),
        Err(err) => Err(Error::io(path, err)),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::{Arc, Barrier};

    use super::*;

    /// A line torn by a crash (no newline, cut mid-record) is skipped, and the lines appended
    /// after it are each drained whole.
    #[test]
    fn a_torn_line_tears_no_line_appended_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let syncs = FileSyncs::default();
        append(dir.path(), &1u64, &syncs).unwrap();
        let mut file = OpenOptions::new().append(true).open(dir.path().join(ARRIVALS)).unwrap();
        file.write_all(b"\n{\"torn").unwrap();
        append(dir.path(), &2u64, &syncs).unwrap();
        append(dir.path(), &3u64, &syncs).unwrap();
        let mut drained = Vec::new();
        drain(dir.path(), |records: Vec<u64>| {
            drained.extend(records);
            Ok(())
        })
        .unwrap();
        assert_eq!(drained, [1, 2, 3]);
        assert!(!waiting(dir.path()), "nothing waits once drained");
    }

    /// A batch that `make` fails on stays, whole, for the next drain, ahead of what arrived
    /// since.
    #[test]
    fn a_batch_that_could_not_be_made_is_drained_again_first() {
        let dir = tempfile::tempdir().unwrap();
        let syncs = FileSyncs::default();
        append(dir.path(), &1u64, &syncs).unwrap();
        let failed = drain(dir.path(), |_: Vec<u64>| Err(Error::Invalid("disk full".into())));
        assert!(failed.is_err());
        assert!(waiting(dir.path()));
        append(dir.path(), &2u64, &syncs).unwrap();
        let mut batches = Vec::new();
        drain(dir.path(), |records: Vec<u64>| {
            batches.push(records);
            Ok(())
        })
        .unwrap();
        assert_eq!(batches, [vec![1], vec![2]]);
    }

    /// Writers appending from many threads while drains run: every answered append is drained,
    /// exactly once.
    #[test]
    fn appends_racing_drains_are_each_drained_once() {
        let dir = tempfile::tempdir().unwrap();
        let syncs = Arc::new(FileSyncs::default());
        let (writers, each) = (8u64, 200u64);
        let start = Arc::new(Barrier::new(writers as usize + 1));
        let handles: Vec<_> = (0..writers)
            .map(|writer| {
                let (dir, syncs, start) = (dir.path().to_path_buf(), syncs.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    for n in 0..each {
                        append(&dir, &(writer * each + n), &syncs).unwrap();
                    }
                })
            })
            .collect();
        start.wait();
        let mut drained = Vec::new();
        let drain_all = |drained: &mut Vec<u64>| {
            drain(dir.path(), |records: Vec<u64>| {
                drained.extend(records);
                Ok(())
            })
            .unwrap()
        };
        while handles.iter().any(|handle| !handle.is_finished()) {
            drain_all(&mut drained);
        }
        for handle in handles {
            handle.join().unwrap();
        }
        drain_all(&mut drained);
        let unique: HashSet<_> = drained.iter().copied().collect();
        assert_eq!(unique.len(), drained.len(), "a record drained twice");
        assert_eq!(unique, (0..writers * each).collect::<HashSet<_>>());
    }
}
