//! The log of new records: the commit point of a create.
//!
//! A new inbox message or task is a file under a fresh name in its directory (`inbox/open/`,
//! `tasks/`), and its create used to be durable the usual way: the file fsynced before its
//! rename, then the directory fsynced. Each create paid its own file's fsync. Instead, the
//! create now writes and renames its file without an fsync, then appends the whole record as
//! one line to the directory's log of new records (`.created.jsonl`) and waits for an
//! `fdatasync` of that log, shared by every writer of this process that appended to the same
//! file meanwhile (`groupsync`, rounds per inode). The line is the commit point: once its sync
//! has succeeded the create is answered, and a power loss that takes the unsynced file away,
//! or leaves it torn, is repaired from the line at the next open ([`replay`]).
//!
//! Why this is sound although other writers change and remove these files without the log:
//!
//! - Every later change of such a record is a durable rewrite (`io::write_json`, fsynced) or a
//!   move of a file so rewritten (an inbox message is rewritten closed before it leaves
//!   `open/`), so a record whose file is found anywhere it may go (for a message: `open/`,
//!   `archive/`, `dead/`, or set aside as `<name>.corrupt`), whole and naming its id, is never
//!   replayed over; a file that cannot be read fails the replay instead.
//! - The one removal, deleting a task, first appends a tombstone (`{"gone":"<name>"}`) and
//!   syncs it; names are fresh ids, so a tombstone is final, in whatever order logs are read.
//!   An agent's deletion moves the whole directory, logs included.
//! - Lines carry the kernel's boot id ([`boot_id`]), and only lines of an earlier boot are
//!   replayed: a killed process leaves its files to the page cache, so only a restart of the
//!   machine loses them, and a record missing in this boot was removed on purpose, even by
//!   something that writes no tombstone (an older Orbit, an operator's hand). Such records are
//!   named in the log at open, not brought back.
//! - A writer renames its file before it opens the log for its line, so a line always names a
//!   file that was there, and a line that lands in a log sealed meanwhile names a file renamed
//!   before the seal (see [`seal`]).
//! - Replay holds the directory's lock exclusively, so it sees no create midway; a replay that
//!   fails fails the store's open, since serving without answered records would let a later
//!   checkpoint drop their lines.
//!
//! The log is bounded by checkpoints. Once it passes `FsOptions::checkpoint_bytes` (512 KiB by
//! default), the create that saw it answers, and a background task seals it (renames it to
//! `.created.<ulid>.sealed.jsonl`; creates go on into a new log) and makes every file the
//! sealed log names durable with one `syncfs` of the file system before removing it. Neither
//! step takes a lock (see [`seal`]), so sustained creates cannot starve it and no create
//! waits for it. A checkpoint cut short leaves its sealed log, which the next checkpoint or
//! open takes up. `syncfs` writes back every dirty page of the file system, other processes'
//! too, so its cost depends on the neighbours; it is paid once per checkpoint, off the request
//! path, instead of an fsync in every create. An open replays every agent's logs, then empties
//! them all after one `syncfs`.
//!
//! What stays undetected: `syncfs` reports a writeback error once per file system (errseq,
//! Linux 5.8 and later), so an error that another process's `syncfs` saw first is not seen by
//! the checkpoint, which then drops lines whose files the disk did not keep; and on a file
//! system whose `syncfs` does nothing (FUSE without `FUSE_SYNCFS`) a checkpoint makes nothing
//! durable. An fsync of each file would see both, at the price of one cache flush per record,
//! which is what this log saves. Lines carry no checksum: on a file system that can show
//! stale blocks after a power loss (ext4 without a journal, or `data=writeback`), a torn tail
//! is skipped only because it does not parse as a record of this directory.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io as stdio;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::groupsync::{FileId, GroupSyncs};
use super::io;
use crate::{Error, Result};

/// The live log of a directory.
pub(crate) const LOG: &str = ".created.jsonl";
/// Sealed logs are `.created.<ulid>.sealed.jsonl`: older first in name order.
const SEALED_PREFIX: &str = ".created.";
const SEALED_SUFFIX: &str = ".sealed.jsonl";
/// A log this long is sealed and checkpointed (about a thousand inbox messages), unless the
/// store is opened with another length (`FsOptions::checkpoint_bytes`).
pub(crate) const CHECKPOINT_BYTES: u64 = 512 * 1024;

/// What this process knows of the logs it appends to: which log files' directory entries it
/// has made durable, and the group commit of each log's `fdatasync`.
pub(crate) struct CreateLogs {
    /// A log this long is due a checkpoint.
    checkpoint_bytes: u64,
    syncs: GroupSyncs,
    /// This boot of the machine, written in every line (see [`boot_id`]).
    boot: Option<String>,
    /// The (device, inode) of each log whose directory entry this process synced; a log made
    /// anew (after a checkpoint or a replay removed the old one) gets its directory synced
    /// once more by the first create that finds it.
    durable: Mutex<HashMap<PathBuf, FileId>>,
    /// The directories a checkpoint of this process is under way in.
    checkpointing: Mutex<HashSet<PathBuf>>,
}

/// A checkpoint under way in one directory; dropping it lets the next one begin.
pub(crate) struct Checkpointing<'a> {
    logs: &'a CreateLogs,
    dir: PathBuf,
}

impl Drop for Checkpointing<'_> {
    fn drop(&mut self) {
        self.logs.checkpointing.lock().unwrap_or_else(PoisonError::into_inner).remove(&self.dir);
    }
}

/// One line of a log.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum Line<T> {
    Put { put: String, boot: Option<String>, record: T },
    Gone { gone: String },
}

/// Creates `path`, a name no other writer uses (a fresh id), holding `value` as JSON, durable
/// through a line in its directory's log (see the module). Answers whether the log is due a
/// checkpoint ([`seal`] then [`checkpoint`], by the caller, after it let its lock go).
///
/// The caller holds the directory's lock shared across this call. The record is visible from
/// its rename on, before its create is answered; on failure the file is removed again and a
/// tombstone is appended, as best it can (a failed removal is logged: the record may then
/// still be found although its create was answered as failed).
pub(crate) fn write_new<T: Serialize>(path: &Path, value: &T, logs: &CreateLogs) -> Result<bool> {
    write_new_with(path, value, logs, File::sync_data)
}

/// [`write_new`] with the log's sync given, so that tests can make it fail.
pub(crate) fn write_new_with<T: Serialize>(
    path: &Path,
    value: &T,
    logs: &CreateLogs,
    sync_log: impl FnOnce(&File) -> stdio::Result<()>,
) -> Result<bool> {
    let corrupt = |err| Error::Corrupt { path: path.into(), source: err };
    let pretty = serde_json::to_vec_pretty(value).map_err(corrupt)?;
    let record = serde_json::to_vec(value).map_err(corrupt)?;
    let (dir, name) = split(path)?;
    io::write_unsynced(path, &pretty)?;
    let mut line = Vec::with_capacity(record.len() + name.len() + 24);
    line.extend_from_slice(b"{\"put\":");
    line.extend_from_slice(&serde_json::to_vec(name).map_err(corrupt)?);
    if let Some(boot) = &logs.boot {
        line.extend_from_slice(b",\"boot\":");
        line.extend_from_slice(&serde_json::to_vec(boot).map_err(corrupt)?);
    }
    line.extend_from_slice(b",\"record\":");
    line.extend_from_slice(&record);
    line.push(b'}');
    let appended = logs.append(dir, &line);
    let synced = match appended {
        Ok((file, len, id)) => {
            // Rounds are per log file, not per path: a writer whose line went to a log sealed
            // meanwhile must be answered by a sync of that very file.
            let group = logs.syncs.get(id);
            group
                .sync(|| sync_log(&file))
                .map(|()| len)
                .map_err(|err| Error::io(dir.join(LOG), err))
        }
        Err(err) => Err(err),
    };
    match synced {
        Ok(len) => Ok(len >= logs.checkpoint_bytes),
        Err(err) => {
            // The create is answered as failed: its file goes again, and a tombstone keeps a
            // line that may still have reached the disk from bringing it back.
            let removed = io::remove_file(path).and_then(|_| tombstone(dir, name, logs));
            if let Err(removal) = removed {
                tracing::error!(
                    path = %path.display(),
                    error = %removal,
                    "a new record whose log could not be synced could not be removed again; it \
                     may still be found although its create was answered as failed"
                );
            }
            Err(err)
        }
    }
}

/// Appends a tombstone for `name` and syncs it: a removed record's line, still in a log, must
/// not bring it back at the next open. The caller holds the directory's lock (exclusively for
/// a deletion; shared after its own failed create, whose name no one else uses).
pub(crate) fn tombstone(dir: &Path, name: &str, logs: &CreateLogs) -> Result<()> {
    let mut line = b"{\"gone\":".to_vec();
    line.extend_from_slice(
        &serde_json::to_vec(name)
            .map_err(|err| Error::Corrupt { path: dir.join(name), source: err })?,
    );
    line.push(b'}');
    let (file, _, _) = logs.append(dir, &line)?;
    file.sync_data().map_err(|err| Error::io(dir.join(LOG), err))
}

impl Default for CreateLogs {
    fn default() -> Self {
        Self::new(CHECKPOINT_BYTES)
    }
}

impl CreateLogs {
    /// Logs due a checkpoint at `checkpoint_bytes` (at least one line: never at 0).
    pub(crate) fn new(checkpoint_bytes: u64) -> Self {
        Self {
            checkpoint_bytes: checkpoint_bytes.max(1),
            syncs: GroupSyncs::default(),
            durable: Mutex::default(),
            checkpointing: Mutex::default(),
            boot: boot_id(),
        }
    }

    /// Logs that say their lines were written in `boot`.
    #[cfg(test)]
    fn with_boot(mut self, boot: &str) -> Self {
        self.boot = Some(boot.into());
        self
    }

    /// This boot, as the lines written through these logs say it (see [`boot_id`]).
    pub(crate) fn boot(&self) -> Option<&str> {
        self.boot.as_deref()
    }

    /// Begins a checkpoint of `dir`, unless one of this process is under way there.
    pub(crate) fn checkpointing(&self, dir: &Path) -> Option<Checkpointing<'_>> {
        let mut under_way = self.checkpointing.lock().unwrap_or_else(PoisonError::into_inner);
        under_way
            .insert(dir.to_path_buf())
            .then(|| Checkpointing { logs: self, dir: dir.to_path_buf() })
    }

    /// Appends `line` to `dir`'s log, making the log if there is none (and its directory entry
    /// durable once per log file); answers the open log and its length after the line.
    fn append(&self, dir: &Path, line: &[u8]) -> Result<(File, u64, FileId)> {
        let path = dir.join(LOG);
        let appended = io::append_locked(&path, line)?;
        // The sync comes after the file's lock is let go, so that appends of other writers
        // join the same round instead of waiting behind it.
        let io_err = |err| Error::io(&path, err);
        appended.file.unlock().map_err(io_err)?;
        let meta = appended.file.metadata().map_err(io_err)?;
        let id = FileId { device: meta.dev(), inode: meta.ino() };
        // A log this writer made, or one this process has not synced the directory entry of
        // (inodes are reused, so an inode seen before is not proof on its own).
        let known =
            self.durable.lock().unwrap_or_else(PoisonError::into_inner).get(&path) == Some(&id);
        if appended.before == 0 || !known {
            io::sync_dir(dir)?;
            let mut durable = self.durable.lock().unwrap_or_else(PoisonError::into_inner);
            if durable.len() >= 4096 {
                durable.clear();
            }
            durable.insert(path.clone(), id);
        }
        Ok((appended.file, appended.after, id))
    }

    /// Forgets what this process knew of `dir`'s live log, which it sealed or removed.
    fn forget(&self, dir: &Path) {
        self.durable.lock().unwrap_or_else(PoisonError::into_inner).remove(&dir.join(LOG));
    }
}

/// The kernel's id of this boot of the machine (`/proc/sys/kernel/random/boot_id`), read once.
///
/// Only a restart of the machine (a power loss, a kernel crash) can lose a file that was
/// renamed into place: a killed process leaves the page cache to the kernel, which writes it
/// out. So replay brings back only the records of lines written in an earlier boot, and a
/// record removed since this boot by something that writes no tombstone (an older Orbit, an
/// operator's hand) stays removed. Where the id cannot be read, every line is replayed.
pub(crate) fn boot_id() -> Option<String> {
    static BOOT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    BOOT.get_or_init(|| {
        fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .ok()
            .map(|id| id.trim().to_owned())
            .filter(|id| !id.is_empty())
    })
    .clone()
}

/// The log's directory and the record's file name.
fn split(path: &Path) -> Result<(&Path, &str)> {
    let dir = path.parent();
    let name = path.file_name().and_then(|name| name.to_str());
    match (dir, name) {
        (Some(dir), Some(name)) => Ok((dir, name)),
        _ => Err(Error::Invalid(format!("not a record's path: {}", path.display()))),
    }
}

/// Seals `dir`'s live log for a checkpoint, if it is still due one: renames it to a sealed
/// name, so that creates go on into a new one.
///
/// No lock is needed. A writer renames its record's file before it opens the log for its
/// line, so a line that lands in a log after that log was sealed names a file renamed before
/// the seal, which the checkpoint's `syncfs` (begun after the seal) makes durable; and the
/// writer's own sync is of the file its line went to (rounds are per file), so it is answered
/// by that line's sync whatever happened to the name.
pub(crate) fn seal(dir: &Path, logs: &CreateLogs) -> Result<()> {
    let from = dir.join(LOG);
    let len = match fs::metadata(&from) {
        Ok(meta) => meta.len(),
        Err(err) if err.kind() == stdio::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(Error::io(&from, err)),
    };
    // Another writer (of this process or another) may have sealed it since this one saw it
    // long; a new log is left to grow.
    if len < logs.checkpoint_bytes {
        return Ok(());
    }
    seal_now(dir, logs).map(|_| ())
}

/// Renames `dir`'s live log to a new sealed name; answers that name, or `None` when there was
/// no live log.
fn seal_now(dir: &Path, logs: &CreateLogs) -> Result<Option<PathBuf>> {
    let to = dir.join(format!("{SEALED_PREFIX}{}{SEALED_SUFFIX}", crate::ids::new_ulid()));
    logs.forget(dir);
    Ok(io::rename(&dir.join(LOG), &to)?.then_some(to))
}

/// Makes every file that `dir`'s sealed logs name durable, with one `syncfs` begun after
/// they were sealed, then removes those logs (not one sealed meanwhile). No lock is needed
/// (see [`seal`]); a deletion's tombstone goes to the live log, never a sealed one.
pub(crate) fn checkpoint(dir: &Path) -> Result<()> {
    let sealed = sealed_logs(dir)?;
    if sealed.is_empty() {
        return Ok(());
    }
    sync_file_system(dir)?;
    for log in &sealed {
        io::remove_file(log)?;
    }
    io::sync_dir(dir)
}

/// One `syncfs` of the file system holding `path`.
pub(crate) fn sync_file_system(path: &Path) -> Result<()> {
    let handle = File::open(path).map_err(|err| Error::io(path, err))?;
    rustix::fs::syncfs(&handle).map_err(|err| Error::io(path, err.into()))
}

/// `dir`'s sealed logs, oldest first.
fn sealed_logs(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut names: Vec<String> = match fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .filter(|name| name.starts_with(SEALED_PREFIX) && name.ends_with(SEALED_SUFFIX))
            .collect(),
        Err(err) if err.kind() == stdio::ErrorKind::NotFound => Vec::new(),
        Err(err) => return Err(Error::io(dir, err)),
    };
    names.sort();
    Ok(names.into_iter().map(|name| dir.join(name)).collect())
}

/// Whether `dir` holds a log of new records, live or sealed.
pub(crate) fn has_logs(dir: &Path) -> Result<bool> {
    Ok(dir.join(LOG).exists() || !sealed_logs(dir)?.is_empty())
}

/// What a replay of one directory did, and what is left to do once every directory is
/// replayed.
#[derive(Debug, Default)]
pub(crate) struct Replayed {
    /// Records brought back.
    pub(crate) restored: usize,
    /// Records of this boot's lines found nowhere: removed behind the store's back, or lost
    /// without a restart of the machine (see [`boot_id`]); named in the log, not brought back.
    pub(crate) missing: Vec<String>,
    /// The logs read, all sealed now: to be removed after a `syncfs` begun after the replay.
    pub(crate) logs: Vec<PathBuf>,
}

/// Where a record's file was looked for.
enum Found {
    /// Whole, naming its id, in the directory or elsewhere.
    Whole,
    /// Missing everywhere, or in the directory but empty, torn or another record.
    Lost,
}

/// Brings back the records of `dir`'s logs that a power loss took, and seals the live log:
/// run at open, holding the directory's lock exclusively (no create is midway). A record is
/// brought back (through `rewrite`, which writes it durably and tells the indexes) when its
/// line was written before this boot (`logs_here`, see [`boot_id`]), no tombstone names it
/// (in any log, in any order: names are fresh ids, so a tombstone is final), its record
/// belongs here (`belongs`, and its file name is its id) and its file is neither in `dir`
/// whole nor anywhere in `elsewhere` (the directories the record may have moved to, or been
/// set aside in as `<name>.corrupt`). A file that cannot be read (EIO, EACCES) fails the
/// replay rather than be taken for lost: writing the create back would undo its later
/// changes.
pub(crate) fn replay<T: DeserializeOwned + Serialize>(
    dir: &Path,
    logs_here: &CreateLogs,
    elsewhere: &[PathBuf],
    belongs: impl Fn(&T) -> bool,
    mut rewrite: impl FnMut(&str, T) -> Result<()>,
) -> Result<Replayed> {
    let this_boot = logs_here.boot();
    let mut logs = sealed_logs(dir)?;
    let live = dir.join(LOG);
    if live.exists() {
        logs.push(live);
    }
    let mut replayed = Replayed::default();
    if logs.is_empty() {
        return Ok(replayed);
    }
    // Each named record's last line of a put: `Some` for an earlier boot's, `None` for this
    // boot's.
    let mut puts: Vec<(String, Option<T>)> = Vec::new();
    let mut position: HashMap<String, usize> = HashMap::new();
    let mut gone: HashSet<String> = HashSet::new();
    for log in &logs {
        let bytes = match fs::read(log) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == stdio::ErrorKind::NotFound => continue,
            Err(err) => return Err(Error::io(log, err)),
        };
        let lines: Vec<&[u8]> =
            bytes.split(|byte| *byte == b'\n').filter(|line| !line.is_empty()).collect();
        for (at, line) in lines.iter().enumerate() {
            let (name, record) = match serde_json::from_slice::<Line<T>>(line) {
                // A line written since this boot needs no record kept: a process's death
                // leaves the page cache, so its file was there.
                Ok(Line::Put { put, boot: Some(boot), .. }) if Some(boot.as_str()) == this_boot => {
                    (put, None)
                }
                Ok(Line::Put { put, record, .. }) => (put, Some(record)),
                Ok(Line::Gone { gone: name }) => {
                    gone.insert(name);
                    continue;
                }
                Err(err) => {
                    // A torn last line (a writer killed midway, or a power loss after the last
                    // sync) was never answered; anything else is worth a word.
                    if at + 1 < lines.len() {
                        tracing::warn!(
                            log = %log.display(),
                            error = %err,
                            "skipping a line of the log of new records that does not parse"
                        );
                    }
                    continue;
                }
            };
            if !plain_name(&name) {
                tracing::warn!(
                    log = %log.display(),
                    name,
                    "skipping a line that names no record file"
                );
                continue;
            }
            match position.get(&name) {
                Some(&at) => puts[at].1 = record,
                None => {
                    position.insert(name.clone(), puts.len());
                    puts.push((name, record));
                }
            }
        }
    }
    for (name, record) in puts {
        if gone.contains(&name) {
            continue;
        }
        match record {
            None => {
                if matches!(locate(dir, &name, elsewhere, None::<&T>)?, Found::Lost) {
                    replayed.missing.push(name);
                }
            }
            Some(record) => {
                if !names_itself(&name, &record) || !belongs(&record) {
                    tracing::warn!(
                        dir = %dir.display(),
                        name,
                        "skipping a line whose record is not this directory's"
                    );
                    continue;
                }
                if matches!(locate(dir, &name, elsewhere, Some(&record))?, Found::Whole) {
                    continue;
                }
                tracing::warn!(
                    dir = %dir.display(),
                    name,
                    "bringing back a new record a crash took"
                );
                rewrite(&name, record)?;
                replayed.restored += 1;
            }
        }
    }
    if let Some(sealed) = seal_now(dir, logs_here)? {
        logs.pop_if(|log| *log == dir.join(LOG));
        logs.push(sealed);
    }
    replayed.logs = logs;
    Ok(replayed)
}

/// Looks for the record `name` in `dir` (whole, naming the id of `record` when given) and in
/// `elsewhere`; a read error other than "not found" is an error.
fn locate<T: Serialize>(
    dir: &Path,
    name: &str,
    elsewhere: &[PathBuf],
    record: Option<&T>,
) -> Result<Found> {
    let path = dir.join(name);
    match fs::read(&path) {
        Ok(bytes) => {
            let Some(record) = record else { return Ok(Found::Whole) };
            let found = serde_json::from_slice::<serde_json::Value>(&bytes).ok();
            let expected = serde_json::to_value(record).ok();
            let id = |value: &Option<serde_json::Value>| value.as_ref()?.get("id").cloned();
            if id(&found).is_some() && id(&found) == id(&expected) {
                return Ok(Found::Whole);
            }
            // Empty, torn or another record: what a power loss leaves of an unsynced file.
            return Ok(Found::Lost);
        }
        Err(err) if err.kind() == stdio::ErrorKind::NotFound => {}
        Err(err) => return Err(Error::io(&path, err)),
    }
    for other in elsewhere {
        for candidate in [other.join(name), other.join(format!("{name}.corrupt"))] {
            match fs::symlink_metadata(&candidate) {
                Ok(_) => return Ok(Found::Whole),
                Err(err) if err.kind() == stdio::ErrorKind::NotFound => {}
                Err(err) => return Err(Error::io(&candidate, err)),
            }
        }
    }
    Ok(Found::Lost)
}

/// Whether `name` is `<id>.json` for the record's own `id`.
fn names_itself<T: Serialize>(name: &str, record: &T) -> bool {
    let Ok(value) = serde_json::to_value(record) else { return false };
    value.get("id").and_then(|id| id.as_str()).is_some_and(|id| name == format!("{id}.json"))
}

/// A record's file name: one path component, a `.json` file, not hidden.
fn plain_name(name: &str) -> bool {
    !name.starts_with('.')
        && name.ends_with(".json")
        && !name.contains('/')
        && !name.contains('\0')
        && Path::new(name).file_name().and_then(|n| n.to_str()) == Some(name)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Record {
        id: String,
        body: String,
    }

    fn record(id: &str) -> Record {
        Record { id: id.into(), body: format!("the body of {id}") }
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    /// Replays `dir` as an open does, writing back what it brings back; answers those ids.
    fn replay_into(dir: &Path, elsewhere: &[PathBuf]) -> Vec<String> {
        let mut restored = Vec::new();
        let logs = CreateLogs::default().with_boot("this boot");
        let replayed = replay(
            dir,
            &logs,
            elsewhere,
            |_: &Record| true,
            |name, record: Record| {
                fs::write(dir.join(name), serde_json::to_vec(&record).unwrap()).unwrap();
                restored.push(record.id);
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(replayed.restored, restored.len());
        // As the store does once every directory is replayed.
        sync_file_system(dir).unwrap();
        for log in replayed.logs {
            fs::remove_file(log).unwrap();
        }
        restored.sort();
        restored
    }

    /// What a power loss may do to a file that was never synced: take it, leave it empty, or
    /// leave it torn. Each such record comes back from its line; a record found whole, moved
    /// where it may go, or removed after a tombstone does not, and the logs go afterwards.
    #[test]
    fn replay_brings_back_the_records_a_power_loss_took_and_nothing_else() {
        let root = tempfile::tempdir().unwrap();
        let (dir, archive) = (root.path().join("open"), root.path().join("archive"));
        fs::create_dir_all(&dir).unwrap();
        fs::create_dir_all(&archive).unwrap();
        let logs = CreateLogs::default();
        for id in ["gone", "empty", "torn", "kept", "moved", "deleted", "rewritten"] {
            write_new(&dir.join(format!("{id}.json")), &record(id), &logs).unwrap();
        }
        fs::remove_file(dir.join("gone.json")).unwrap();
        fs::write(dir.join("empty.json"), b"").unwrap();
        fs::write(dir.join("torn.json"), b"{\"id\":\"to").unwrap();
        fs::rename(dir.join("moved.json"), archive.join("moved.json")).unwrap();
        tombstone(&dir, "deleted.json", &logs).unwrap();
        fs::remove_file(dir.join("deleted.json")).unwrap();
        let newer = Record { id: "rewritten".into(), body: "a later, durable change".into() };
        fs::write(dir.join("rewritten.json"), serde_json::to_vec(&newer).unwrap()).unwrap();

        assert_eq!(replay_into(&dir, std::slice::from_ref(&archive)), ["empty", "gone", "torn"]);
        for id in ["gone", "empty", "torn", "kept"] {
            let found: Record =
                serde_json::from_slice(&fs::read(dir.join(format!("{id}.json"))).unwrap()).unwrap();
            assert_eq!(found, record(id));
        }
        let found: Record =
            serde_json::from_slice(&fs::read(dir.join("rewritten.json")).unwrap()).unwrap();
        assert_eq!(found, newer, "a later change was replayed over");
        assert!(!dir.join("moved.json").exists(), "a moved record came back");
        assert!(!dir.join("deleted.json").exists(), "a deleted record came back");
        assert!(!has_logs(&dir).unwrap(), "the logs stay after a replay: {:?}", names(&dir));
        assert!(replay_into(&dir, &[]).is_empty(), "nothing is left to replay");
    }

    /// A line that names a path outside its directory, a hidden file or another record's id
    /// is never written, and a torn line (a writer killed midway) hides no line after it.
    #[test]
    fn replay_skips_lines_that_name_no_record_of_their_own_and_torn_lines() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("open");
        fs::create_dir_all(&dir).unwrap();
        let mut log = Vec::new();
        for (name, id) in
            [("../escape.json", "escape"), (".hidden.json", "hidden"), ("other.json", "mine")]
        {
            log.extend_from_slice(
                format!("{{\"put\":\"{name}\",\"record\":{{\"id\":\"{id}\",\"body\":\"\"}}}}\n")
                    .as_bytes(),
            );
        }
        log.extend_from_slice(b"{\"put\":\"half.json\",\"rec");
        fs::write(dir.join(LOG), &log).unwrap();
        let logs = CreateLogs::default();
        write_new(&dir.join("after.json"), &record("after"), &logs).unwrap();
        fs::remove_file(dir.join("after.json")).unwrap();

        assert_eq!(replay_into(&dir, &[]), ["after"]);
        assert!(!root.path().join("escape.json").exists());
        assert_eq!(names(&dir), ["after.json"]);
    }

    /// A create answered as failed leaves no file, and its line, should it have reached the
    /// disk after all, is cancelled by a tombstone, so no replay brings it back.
    #[test]
    fn a_create_whose_log_sync_fails_is_not_left_behind_nor_brought_back() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("open");
        fs::create_dir_all(&dir).unwrap();
        let logs = CreateLogs::default();
        let path = dir.join("failed.json");
        let failed = write_new_with(&path, &record("failed"), &logs, |_| {
            Err(stdio::Error::other("injected"))
        });
        assert!(failed.is_err());
        assert!(!path.exists(), "a create answered as failed left its file");
        assert_eq!(names(&dir), [LOG], "nor a temp file");
        assert!(replay_into(&dir, &[]).is_empty(), "a failed create came back");

        write_new(&path, &record("failed"), &logs).unwrap();
        assert!(path.exists());
    }

    /// A SIGKILL keeps the page cache, so no crash test notices a sync that runs before the
    /// line it must cover. Here each round's sync fails naming the records whose lines the log
    /// held when it began; every writer must be answered by a round that saw its own line,
    /// and every file of a failed round is gone afterwards.
    #[test]
    fn each_writer_is_answered_by_a_log_sync_that_began_after_its_line() {
        const WRITERS: usize = 8;
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().to_path_buf();
        let logs = Arc::new(CreateLogs::default());
        let rounds = Arc::new(AtomicUsize::new(0));
        let writers: Vec<_> = (0..WRITERS)
            .map(|writer| {
                let (dir, logs, rounds) = (dir.clone(), logs.clone(), rounds.clone());
                std::thread::spawn(move || {
                    let name = format!("record-{writer}.json");
                    let answer = write_new_with(
                        &dir.join(&name),
                        &record(&format!("record-{writer}")),
                        &logs,
                        |_| {
                            let round = rounds.fetch_add(1, Ordering::SeqCst);
                            // Let more writers append and join the next round meanwhile.
                            std::thread::sleep(std::time::Duration::from_millis(5));
                            let log = fs::read_to_string(dir.join(LOG))?;
                            let seen: Vec<&str> = log
                                .lines()
                                .filter_map(|line| line.strip_prefix("{\"put\":\""))
                                .filter_map(|line| line.split('"').next())
                                .collect();
                            Err(stdio::Error::other(format!(
                                "round {round} saw {}",
                                seen.join(" ")
                            )))
                        },
                    );
                    (name, answer.unwrap_err())
                })
            })
            .collect();
        for writer in writers {
            let (name, err) = writer.join().unwrap();
            let Error::Io { source, .. } = err else { panic!("not a sync failure: {err}") };
            let seen = source.to_string();
            assert!(seen.starts_with("round "), "{seen}");
            assert!(
                seen.split(' ').any(|seen| seen == name),
                "{name} was answered by a round that began before its line: {seen}"
            );
        }
        assert!(rounds.load(Ordering::SeqCst) < WRITERS, "no two writers shared a sync");
        assert_eq!(names(&dir), [LOG], "a failed round left files");
        assert!(replay_into(&dir, &[]).is_empty(), "a failed create came back");
    }

    /// Past its length a create says the log is due a checkpoint; sealing and the checkpoint
    /// then leave no log, and the records stay. A seal by a second writer that saw the old log
    /// long finds the new one short and leaves it.
    #[test]
    fn a_long_log_is_sealed_and_checkpointed_away() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("open");
        fs::create_dir_all(&dir).unwrap();
        let logs = CreateLogs::new(16 * 1024);
        let mut created = 0;
        loop {
            created += 1;
            let id = format!("r{created:06}");
            if write_new(&dir.join(format!("{id}.json")), &record(&id), &logs).unwrap() {
                break;
            }
        }
        assert!(fs::metadata(dir.join(LOG)).unwrap().len() >= 16 * 1024);
        let under_way = logs.checkpointing(&dir).unwrap();
        assert!(logs.checkpointing(&dir).is_none(), "two checkpoints of one directory at once");
        seal(&dir, &logs).unwrap();
        assert!(!dir.join(LOG).exists());
        assert_eq!(sealed_logs(&dir).unwrap().len(), 1);
        assert!(!write_new(&dir.join("next.json"), &record("next"), &logs).unwrap());
        seal(&dir, &logs).unwrap();
        assert!(dir.join(LOG).exists(), "a short log was sealed");
        checkpoint(&dir).unwrap();
        drop(under_way);
        assert!(sealed_logs(&dir).unwrap().is_empty());
        assert!(logs.checkpointing(&dir).is_some());
        let records = names(&dir).iter().filter(|name| name.ends_with(".json")).count();
        assert_eq!(records, created + 1);
    }

    /// A process killed in this boot leaves its files to the page cache, so a line of this
    /// boot is never replayed: a record removed since by something that writes no tombstone
    /// (an older binary, a hand) stays removed. The logs still go.
    #[test]
    fn lines_of_this_boot_are_not_replayed() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("open");
        fs::create_dir_all(&dir).unwrap();
        let earlier = CreateLogs::default().with_boot("an earlier boot");
        let now = CreateLogs::default().with_boot("this boot");
        write_new(&dir.join("before.json"), &record("before"), &earlier).unwrap();
        write_new(&dir.join("since.json"), &record("since"), &now).unwrap();
        fs::remove_file(dir.join("before.json")).unwrap();
        fs::remove_file(dir.join("since.json")).unwrap();
        let logs = CreateLogs::default().with_boot("this boot");
        let replayed = replay(
            &dir,
            &logs,
            &[],
            |_: &Record| true,
            |name, record: Record| {
                fs::write(dir.join(name), serde_json::to_vec(&record).unwrap()).unwrap();
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(replayed.restored, 1);
        assert_eq!(replayed.missing, ["since.json"], "a record gone in this boot is not named");
        assert_eq!(replayed.logs.len(), 1, "the live log is sealed for its removal");
        assert!(!dir.join(LOG).exists());
        assert!(names(&dir).contains(&"before.json".to_owned()));
        assert!(!dir.join("since.json").exists());
    }

    /// Names are fresh ids, so a tombstone is final: a put read after it (logs sealed out of
    /// order, by a clock stepped back) does not bring the record back. A record set aside as
    /// `<name>.corrupt` where it may go does not come back either.
    #[test]
    fn a_tombstone_wins_in_any_order_and_a_record_set_aside_stays_aside() {
        let root = tempfile::tempdir().unwrap();
        let (dir, dead) = (root.path().join("open"), root.path().join("dead"));
        fs::create_dir_all(&dir).unwrap();
        fs::create_dir_all(&dead).unwrap();
        let logs = CreateLogs::default().with_boot("an earlier boot");
        write_new(&dir.join("deleted.json"), &record("deleted"), &logs).unwrap();
        write_new(&dir.join("aside.json"), &record("aside"), &logs).unwrap();
        let put = fs::read_to_string(dir.join(LOG)).unwrap();
        tombstone(&dir, "deleted.json", &logs).unwrap();
        fs::remove_file(dir.join("deleted.json")).unwrap();
        fs::rename(dir.join("aside.json"), dead.join("aside.json.corrupt")).unwrap();
        // The puts again, in a log that sorts after the one holding the tombstone.
        fs::write(dir.join(format!("{SEALED_PREFIX}0{SEALED_SUFFIX}")), b"").unwrap();
        fs::rename(dir.join(LOG), dir.join(format!("{SEALED_PREFIX}0{SEALED_SUFFIX}"))).unwrap();
        fs::write(dir.join(LOG), put).unwrap();
        assert!(replay_into(&dir, &[dead]).is_empty());
        assert!(!dir.join("deleted.json").exists());
        assert!(!dir.join("aside.json").exists());
    }

    /// A record's file that cannot be read (here a directory stands in for EIO) fails the
    /// replay instead of being taken for lost: writing the create back would undo its later
    /// changes. The logs stay for the next attempt.
    #[test]
    fn a_record_that_cannot_be_read_fails_the_replay_and_keeps_the_logs() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("open");
        fs::create_dir_all(&dir).unwrap();
        let logs = CreateLogs::default().with_boot("an earlier boot");
        write_new(&dir.join("unreadable.json"), &record("unreadable"), &logs).unwrap();
        fs::remove_file(dir.join("unreadable.json")).unwrap();
        fs::create_dir(dir.join("unreadable.json")).unwrap();
        let now = CreateLogs::default().with_boot("this boot");
        let failed = replay(&dir, &now, &[], |_: &Record| true, |_, _: Record| Ok(()));
        assert!(failed.is_err(), "an unreadable record was taken for lost");
        assert!(has_logs(&dir).unwrap());
        fs::remove_dir(dir.join("unreadable.json")).unwrap();
        assert_eq!(replay_into(&dir, &[]), ["unreadable"]);
    }

    #[test]
    fn plain_names_are_one_visible_json_file() {
        assert!(plain_name("01J0000000000000000000000.json"));
        for name in ["../x.json", "a/b.json", ".x.json", "x.jsonl", "x", "", "..json"] {
            assert!(!plain_name(name), "{name}");
        }
    }
}
