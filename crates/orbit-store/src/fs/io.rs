//! The file primitives every filesystem store goes through.
//!
//! - [`write_json`] writes a uniquely named temp file in the target's directory, fsyncs it,
//!   renames it over the target and fsyncs the directory, so a reader or a crash sees the
//!   old record or the new one, never a mix.
//! - [`write_json_all`] does the same for several records, their files fsynced from several
//!   threads at once and their directory's fsync left to the caller, who makes the batch
//!   durable with one (see `arrivals`).
//! - [`create_json`] does the same but refuses to replace: it links the temp file to the
//!   target, which fails when the target exists, so of two racing creators exactly one wins.
//! - [`append_line`] appends one line under an exclusive lock of the file and fsyncs it. A
//!   torn last line left by a crash is first closed with a newline, so it stays one bad line
//!   instead of swallowing the next record.
//! - [`read_jsonl`] skips lines that do not parse, logging them, and ignores a last line
//!   without its newline (a crash, or a writer still at work), so one bad line never hides the
//!   rest of a history.
//!
//! Everything is created private to the owner, directories 0700 and files 0600 whatever the
//! umask: the data directory holds conversations, inbox messages and prompts, which other
//! local users have no business reading.
//!
//! Temp files are named `.<target>.<ulid>.tmp`; listings ignore names that start with a dot
//! and remove temp files that a crash left behind.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Error, Result};

/// A temp file older than this is left over from a crash, not a write in progress.
const STALE_TEMP_AGE: Duration = Duration::from_secs(60);

fn temp_path_for(target: &Path) -> Result<PathBuf> {
    let dir = target
        .parent()
        .ok_or_else(|| Error::Invalid(format!("no parent directory: {}", target.display())))?;
    let name = target.file_name().and_then(|n| n.to_str()).unwrap_or("record");
    Ok(dir.join(format!(".{name}.{}.tmp", crate::ids::new_ulid())))
}

fn write_temp(target: &Path, bytes: &[u8]) -> Result<PathBuf> {
    let temp = temp_path_for(target)?;
    let written = (|| {
        let mut file =
            OpenOptions::new().write(true).create_new(true).mode(FILE_MODE).open(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()
    })();
    if let Err(err) = written {
        let _ = fs::remove_file(&temp);
        return Err(Error::io(&temp, err));
    }
    Ok(temp)
}

/// Fsyncs a directory, so that a rename or a new entry in it survives a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|err| Error::io(dir, err))
}

fn parent(path: &Path) -> Result<&Path> {
    path.parent().ok_or_else(|| Error::Invalid(format!("no parent directory: {}", path.display())))
}

/// The mode of every directory the store makes.
const DIR_MODE: u32 = 0o700;
/// The mode of every file the store makes.
pub(crate) const FILE_MODE: u32 = 0o600;

/// Makes a directory and its parents, private to the owner, and makes each level it made
/// durable: a new directory's name is an entry of its parent like any file's, so without the
/// parent's fsync a power loss could take a new agent's `inbox/open/` away with the records
/// already answered inside it. Making directories is rare (an agent's first message or task),
/// so each level gets a plain fsync of its own.
///
/// A directory that another writer made and has not yet fsynced is taken as it is: the window
/// is one fsync wide, once per directory's life.
pub(crate) fn ensure_dir(dir: &Path) -> Result<()> {
    ensure_dir_with(dir, sync_dir)
}

/// [`ensure_dir`] with the parent's fsync given, so that tests can see which ones it runs.
fn ensure_dir_with(dir: &Path, mut sync_parent: impl FnMut(&Path) -> Result<()>) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    // The missing levels, outermost first.
    let mut missing: Vec<&Path> = dir
        .ancestors()
        .take_while(|level| !level.as_os_str().is_empty() && !level.is_dir())
        .collect();
    missing.reverse();
    for level in missing {
        match DirBuilder::new().mode(DIR_MODE).create(level) {
            Ok(()) => {}
            // Another writer made it meanwhile; its parent's fsync may not have run yet, so
            // this writer runs one too rather than answer before it.
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists && level.is_dir() => {}
            Err(err) => return Err(Error::io(level, err)),
        }
        if let Some(parent) = level.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_parent(parent)?;
        }
    }
    Ok(())
}

/// Makes `dir` private to the owner when others may read or enter it (a data directory from
/// before Orbit did so, or made by hand); `true` when it changed.
pub(crate) fn make_private(dir: &Path) -> Result<bool> {
    let mode = fs::metadata(dir).map_err(|err| Error::io(dir, err))?.permissions().mode();
    if mode & 0o077 == 0 {
        return Ok(false);
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE))
        .map_err(|err| Error::io(dir, err))?;
    Ok(true)
}

/// Atomically replaces `path` with `bytes`.
pub(crate) fn write_bytes(path: &Path, bytes: &[u8]) -> Result<()> {
    let temp = write_temp(path, bytes)?;
    if let Err(err) = fs::rename(&temp, path) {
        let _ = fs::remove_file(&temp);
        return Err(Error::io(path, err));
    }
    sync_dir(parent(path)?)
}

/// Atomically replaces `path` with `value` as JSON.
pub(crate) fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value)
        .map_err(|err| Error::Corrupt { path: path.into(), source: err })?;
    write_bytes(path, &bytes)
}

/// How many files [`write_json_all`] fsyncs at once.
const SYNC_THREADS: usize = 8;

/// Atomically writes each `(path, value)` like [`write_json`], except that the fsync of their
/// directory is left to the caller, which makes them durable with one (`sync_dir`). The temp
/// files are fsynced from several threads at once, so that their flushes of the disk's cache
/// merge (one sync after another would pay one flush each), and each is renamed over its path
/// once every one is synced. On an error, the temp files not renamed are removed, and those
/// renamed stay: each is a whole, synced record.
pub(crate) fn write_json_all<T: Serialize>(records: &[(PathBuf, &T)]) -> Result<()> {
    let mut temps = Vec::with_capacity(records.len());
    let written = (|| {
        for (path, value) in records {
            let bytes = serde_json::to_vec_pretty(value)
                .map_err(|err| Error::Corrupt { path: path.clone(), source: err })?;
            let temp = temp_path_for(path)?;
            temps.push(temp.clone());
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(FILE_MODE)
                .open(&temp)
                .map_err(|err| Error::io(&temp, err))?;
            file.write_all(&bytes).map_err(|err| Error::io(&temp, err))?;
        }
        sync_all_files(&temps)?;
        Ok(())
    })();
    let mut renamed = 0;
    let result = written.and_then(|()| {
        for ((path, _), temp) in records.iter().zip(&temps) {
            fs::rename(temp, path).map_err(|err| Error::io(path, err))?;
            renamed += 1;
        }
        Ok(())
    });
    if result.is_err() {
        for temp in &temps[renamed..] {
            let _ = fs::remove_file(temp);
        }
    }
    result
}

/// Fsyncs every file of `paths`, several at once.
fn sync_all_files(paths: &[PathBuf]) -> Result<()> {
    if let [path] = paths {
        return File::open(path)
            .and_then(|file| file.sync_all())
            .map_err(|err| Error::io(path, err));
    }
    if paths.is_empty() {
        return Ok(());
    }
    let per_thread = paths.len().div_ceil(SYNC_THREADS);
    let sync_chunk = |chunk: &[PathBuf]| -> Result<()> {
        for path in chunk {
            File::open(path)
                .and_then(|file| file.sync_all())
                .map_err(|err| Error::io(path, err))?;
        }
        Ok(())
    };
    std::thread::scope(|scope| {
        let mut result = Ok(());
        let mut syncs = Vec::new();
        for chunk in paths.chunks(per_thread) {
            // A thread the system will not give is no reason to fail: that chunk is synced here.
            match std::thread::Builder::new().spawn_scoped(scope, move || sync_chunk(chunk)) {
                Ok(sync) => syncs.push(sync),
                Err(_) => result = result.and(sync_chunk(chunk)),
            }
        }
        for sync in syncs {
            let synced = sync.join().unwrap_or_else(|_| {
                Err(Error::io(&paths[0], io::Error::other("a thread syncing files panicked")))
            });
            result = result.and(synced);
        }
        result
    })
}

/// Whether `path` names anything; an error other than a missing entry is an error.
pub(crate) fn exists(path: &Path) -> Result<bool> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(err) => Err(Error::io(path, err)),
    }
}

/// Atomically creates `path` holding `value` as JSON; `false` when it exists already.
pub(crate) fn create_json<T: Serialize>(path: &Path, value: &T) -> Result<bool> {
    let bytes = serde_json::to_vec_pretty(value)
        .map_err(|err| Error::Corrupt { path: path.into(), source: err })?;
    let temp = write_temp(path, &bytes)?;
    let linked = fs::hard_link(&temp, path);
    let _ = fs::remove_file(&temp);
    match linked {
        Ok(()) => {
            sync_dir(parent(path)?)?;
            Ok(true)
        }
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(err) => Err(Error::io(path, err)),
    }
}

/// Reads a JSON record; `None` when the file does not exist.
pub(crate) fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(Error::io(path, err)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|err| Error::Corrupt { path: path.into(), source: err })
}

/// Reads a JSON record for a listing: a missing file (deleted meanwhile) is `None`, and a
/// corrupt one is logged and skipped.
pub(crate) fn read_json_lenient<T: DeserializeOwned>(path: &Path) -> Option<T> {
    match read_json(path) {
        Ok(value) => value,
        Err(err) => {
            tracing::warn!(error = %err, "skipping unreadable record");
            None
        }
    }
}

/// Appends `line` (without its newline) to `path` durably.
pub(crate) fn append_line(path: &Path, line: &[u8]) -> Result<()> {
    append(path, line, true)
}

/// Appends `line` without waiting for the disk: for lines whose loss in a crash costs nothing
/// (a notification that readers also recover from by other means).
pub(crate) fn append_line_unsynced(path: &Path, line: &[u8]) -> Result<()> {
    append(path, line, false)
}

fn append(path: &Path, line: &[u8], durable: bool) -> Result<()> {
    let io_err = |err| Error::io(path, err);
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(FILE_MODE)
        .open(path)
        .map_err(io_err)?;
    // The lock orders writers of this file, across processes too, so the torn-line check
    // below sees a file that no one else is writing.
    file.lock().map_err(io_err)?;
    let len = file.metadata().map_err(io_err)?.len();
    let mut record = Vec::with_capacity(line.len() + 2);
    if len > 0 {
        let mut last = [0u8; 1];
        file.seek(SeekFrom::Start(len - 1)).map_err(io_err)?;
        file.read_exact(&mut last).map_err(io_err)?;
        if last[0] != b'\n' {
            tracing::warn!(path = %path.display(), "closing a torn last line before appending");
            record.push(b'\n');
        }
    }
    record.extend_from_slice(line);
    record.push(b'\n');
    file.write_all(&record).map_err(io_err)?;
    if !durable {
        return Ok(());
    }
    file.sync_data().map_err(io_err)?;
    if len == 0 {
        // A new file: make its directory entry durable too.
        sync_dir(parent(path)?)?;
    }
    Ok(())
}

/// Appends `value` as one JSON line.
pub(crate) fn append_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let line = serde_json::to_vec(value)
        .map_err(|err| Error::Corrupt { path: path.into(), source: err })?;
    append_line(path, &line)
}

/// Parses the complete lines of `bytes`, skipping (and logging) those that do not parse.
/// Returns the records and how many bytes the complete lines take.
pub(crate) fn parse_jsonl<T: DeserializeOwned>(path: &Path, bytes: &[u8]) -> (Vec<T>, usize) {
    let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let mut records = Vec::new();
    for (index, line) in bytes[..complete].split(|b| *b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice(line) {
            Ok(record) => records.push(record),
            Err(err) => {
                tracing::warn!(path = %path.display(), line = index + 1, error = %err, "skipping a line that does not parse")
            }
        }
    }
    (records, complete)
}

/// Reads every complete, parseable line of a JSONL file; empty when the file is missing.
pub(crate) fn read_jsonl<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(Error::io(path, err)),
    };
    Ok(parse_jsonl(path, &bytes).0)
}

/// The visible entries of a directory whose names end in `suffix`, sorted. Missing
/// directories are empty. Temp files left behind by a crash are removed on the way.
pub(crate) fn list_names(dir: &Path, suffix: &str) -> Result<Vec<String>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(Error::io(dir, err)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|err| Error::io(dir, err))?;
        let Ok(name) = entry.file_name().into_string() else { continue };
        if name.starts_with('.') {
            if name.ends_with(".tmp") {
                remove_if_stale(&entry.path());
            }
            continue;
        }
        if name.ends_with(suffix) {
            names.push(name);
        }
    }
    names.sort_unstable();
    Ok(names)
}

fn remove_if_stale(temp: &Path) {
    let age = fs::metadata(temp)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok());
    if age.is_some_and(|age| age > STALE_TEMP_AGE) {
        match fs::remove_file(temp) {
            Ok(()) => tracing::info!(path = %temp.display(), "removed a temp file left by a crash"),
            Err(err) => {
                tracing::debug!(path = %temp.display(), error = %err, "could not remove a stale temp file")
            }
        }
    }
}

/// Removes a file; `false` when it was not there.
pub(crate) fn remove_file(path: &Path) -> Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(err) => Err(Error::io(path, err)),
    }
}

/// Removes a directory tree; `false` when it was not there.
pub(crate) fn remove_dir_all(path: &Path) -> Result<bool> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(true),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(err) => Err(Error::io(path, err)),
    }
}

/// Moves `from` to `to` atomically; `false` when `from` was not there (someone else moved
/// it first: the loser of a claim race).
pub(crate) fn rename(from: &Path, to: &Path) -> Result<bool> {
    match fs::rename(from, to) {
        Ok(()) => Ok(true),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(err) => Err(Error::io(from, err)),
    }
}

/// Runs `body` holding an exclusive lock on `lock_path` (made if missing), which orders
/// read-modify-write cycles across threads and processes. The lock file is never renamed or
/// removed while the directory lives, so every process locks the same inode.
pub(crate) fn with_lock<T>(lock_path: &Path, body: impl FnOnce() -> Result<T>) -> Result<T> {
    with_lock_mode(lock_path, true, body)
}

/// Like [`with_lock`], with a shared lock when `exclusive` is false: shared holders run side
/// by side and exclude only exclusive ones.
pub(crate) fn with_lock_mode<T>(
    lock_path: &Path,
    exclusive: bool,
    body: impl FnOnce() -> Result<T>,
) -> Result<T> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(FILE_MODE)
        .open(lock_path)
        .map_err(|err| Error::io(lock_path, err))?;
    let locked = if exclusive { file.lock() } else { file.lock_shared() };
    locked.map_err(|err| Error::io(lock_path, err))?;
    let result = body();
    drop(file);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Finding 3 of the h4 review: `ensure_dir` made directories without fsyncing their
    /// parents, so a power loss could take a new agent's `inbox/open/` with its answered
    /// messages. Every level it makes has its parent fsynced, outermost first.
    #[test]
    fn each_directory_that_ensure_dir_makes_has_its_parent_fsynced() {
        let root = tempfile::tempdir().unwrap();
        let agent = root.path().join("agents").join("ada");
        let open = agent.join("inbox").join("open");
        fs::create_dir_all(&agent).unwrap();
        let mut synced = Vec::new();
        ensure_dir_with(&open, |dir| {
            synced.push(dir.to_path_buf());
            sync_dir(dir)
        })
        .unwrap();
        assert!(open.is_dir());
        assert_eq!(synced, vec![agent.clone(), agent.join("inbox")]);
        let mode = fs::metadata(&open).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, DIR_MODE, "private to the owner");

        synced.clear();
        ensure_dir_with(&open, |dir| {
            synced.push(dir.to_path_buf());
            Ok(())
        })
        .unwrap();
        assert!(synced.is_empty(), "a directory that exists costs no fsync");
    }

    /// Records written together are each whole at its path, with no temp file left; when one
    /// cannot be written, none of the batch's temp files stays behind.
    #[test]
    fn records_written_together_are_whole_and_leave_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let values: Vec<u64> = (0..20).collect();
        let records: Vec<_> =
            values.iter().map(|v| (dir.path().join(format!("{v}.json")), v)).collect();
        write_json_all(&records).unwrap();
        for (path, value) in &records {
            assert_eq!(fs::read_to_string(path).unwrap(), value.to_string());
        }
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), values.len(), "a temp file left");

        let other = tempfile::tempdir().unwrap();
        let failing = vec![
            (other.path().join("a.json"), &1u64),
            (other.path().join("missing").join("b.json"), &2u64),
        ];
        assert!(write_json_all(&failing).is_err());
        assert_eq!(fs::read_dir(other.path()).unwrap().count(), 0, "a temp file left");
    }
}
