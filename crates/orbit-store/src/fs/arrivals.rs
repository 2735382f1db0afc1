//! New records made durable as lines appended to one file beside their directory, instead of
//! one new file each; the records' own files are made from those lines later, in bounded
//! steps, by the steps that take the records' lock ([`drain`]).
//!
//! ```text
//! <dir>/arrivals.jsonl             new records, one JSON line each, every line preceded by a newline
//! <dir>/arrivals.draining.jsonl    the batch being made into files
//! <dir>/arrivals.lock              flock: appenders shared, the swap of the two exclusive
//! <dir>/arrivals.unreadable.jsonl  whole lines that did not parse, kept
//! ```
//!
//! Why: on this kind of disk a create is bound by making a file, not by its fsyncs (ext4's
//! inode allocator searches under the directory's lock; docs/benchmarks.md), and a record that
//! is one new file pays that search on the answer's path. An append makes no inode, and the
//! `fdatasync` that makes it durable is shared by every writer of this process that appended
//! to the file before it began (`sync_rounds`, by the file's inode). The files are still made, the
//! record layout around them is unchanged, and nothing but this module knows the lines exist.
//!
//! Why it is correct:
//!
//! - **An answered append is durable.** The file's name is durable before anyone appends to
//!   it: only [`make_file`] and the [`swap`] make it, holding the lock exclusively, and both
//!   fsync the directory before they write its first byte, which appenders wait for (a maker
//!   killed in between leaves a file the next appender makes again). An appender opens it under
//!   the lock held shared, so it is the file the name holds, and its line is synced by an
//!   `fdatasync` that began after its `write` returned.
//! - **Every appended line is drained.** The swap renames the file to the batch's name under
//!   the lock held exclusively: it waits for every appender holding it shared, whose `write`s
//!   are then complete, and appenders that come after open the new file (its first byte only). A batch is
//!   made into files step by step (each file fsynced, the directory fsynced per step) and
//!   removed, durably, only once its last record is a file.
//! - **No record is made a file twice.** A step may give `make` records that are files
//!   already: a batch a crash left, or one another drain worked on. `make` leaves a record
//!   alone when its file exists wherever the record's life may have taken it (the inbox's
//!   `open/`, `archive/` and `dead/`), so a batch finished again brings back nothing claimed,
//!   read or archived since. A record whose file can be removed (a task deleted) must have no
//!   batch left when it is removed: the task store finishes every batch before a deletion.
//! - **A line torn by a crash is skipped, and tears no other line.** Each line starts with a
//!   newline, so a line appended after a torn one (a writer killed mid-`write`, a power loss
//!   before its sync) still starts a line of its own. Appends under the shared lock can run at
//!   once in several processes; a regular file's `O_APPEND` writes do not interleave. A whole
//!   line that does not parse (damage, a record of a newer Orbit) is kept beside the arrivals.
//! - **Every step is bounded** ([`STEP_RECORDS`], [`STEP_BYTES`]), and a drain takes the
//!   records' lock per step, so a backlog never holds it for long; a drain stops once it has
//!   consumed as many bytes as waited when it began (see [`Drain`]), so sends that keep coming
//!   cannot keep it going.
//!
//! What it costs: a read of the records first checks, with a `stat` of each of the two files,
//! whether anything waits to be drained, and the step that drains pays the files' fsyncs the
//! appends did not.
//!
//! An `fdatasync` that fails answers its writers with the error, and their lines stay in the
//! file: as after any failed fsync the disk's state is unknown, and such a record may still be
//! drained (the session journal's appends are the same). An Orbit older than this module must
//! not share a data directory with this one, nor take it back: it does not read the arrivals,
//! and it removes records' files without finishing a batch first.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, ErrorKind, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::follow::Followed;
use super::io::{self, FILE_MODE};
use super::sync_rounds::FileSyncs;
use crate::{Error, Result};

const ARRIVALS: &str = "arrivals.jsonl";
const DRAINING: &str = "arrivals.draining.jsonl";
const LOCK: &str = "arrivals.lock";
/// An arrivals file's first byte, written once its name is durable (see [`make_durably`]): an
/// empty line, which readers skip.
const HEADER: &[u8] = b"\n";
/// Whole lines that do not parse, kept for whoever looks into them.
const UNREADABLE: &str = "arrivals.unreadable.jsonl";

/// At most this many records are made files in one hold of the records' lock (see [`step`]),
/// so that other holders (a claim's renewal) never wait long behind a drain.
const STEP_RECORDS: usize = 64;
/// Nor more than this many bytes of them, past the first record, so that a step's memory is
/// bounded too.
const STEP_BYTES: usize = 4 << 20;

/// A line written to the arrivals and not yet synced (see [`append`]).
pub(crate) struct Appended {
    file: File,
    path: std::path::PathBuf,
}

/// Writes `record` as a line of `dir`'s arrivals (`dir` exists), for [`Appended::sync`] to
/// make durable: the caller writes under whatever guards the records' directory and syncs
/// after letting it go, so that the shared sync is waited for holding nothing.
pub(crate) fn append<T: Serialize>(dir: &Path, record: &T) -> Result<Appended> {
    let path = dir.join(ARRIVALS);
    let mut line = Vec::with_capacity(512);
    line.push(b'\n');
    serde_json::to_writer(&mut line, record)
        .map_err(|err| Error::Corrupt { path: path.clone(), source: err })?;
    line.push(b'\n');
    loop {
        let appended = io::with_lock_mode(&dir.join(LOCK), false, || {
            let mut file = match OpenOptions::new().append(true).open(&path) {
                Ok(file) => file,
                Err(err) if err.kind() == ErrorKind::NotFound => return Ok(None),
                Err(err) => return Err(Error::io(&path, err)),
            };
            // A file without its first byte may not have a durable name yet (its maker was
            // killed before its directory's fsync): made again, it gets one.
            if file.metadata().map_err(|err| Error::io(&path, err))?.len() < HEADER.len() as u64 {
                return Ok(None);
            }
            // One `write`: a short one is not retried, since the rest would land after another
            // appender's line; the part written fails to parse and is set aside.
            match file.write(&line) {
                Ok(written) if written == line.len() => Ok(Some(file)),
                Ok(_) => Err(Error::io(&path, std::io::Error::other("a short write"))),
                Err(err) => Err(Error::io(&path, err)),
            }
        })?;
        match appended {
            Some(file) => return Ok(Appended { file, path }),
            None => make_file(dir)?,
        }
    }
}

impl Appended {
    /// Returns once the line is durable: an `fdatasync` of its file that began after its
    /// `write` returned has succeeded, shared with this process's other appenders.
    pub(crate) fn sync(self, syncs: &FileSyncs) -> Result<()> {
        let metadata = self.file.metadata().map_err(|err| Error::io(&self.path, err))?;
        syncs
            .get((metadata.dev(), metadata.ino()))
            .sync(|| self.file.sync_data())
            .map_err(|err| Error::io(&self.path, err))
    }
}

/// Whether anything waits in `dir` to be drained: lines appended, or a batch being drained. An
/// error other than a missing file says yes, so that the drain reports it.
pub(crate) fn waiting(dir: &Path) -> bool {
    // The arrivals first: a drain swaps them for an empty file while the batch's name exists,
    // and removes that name only once its records are files, so a drain running meanwhile is
    // seen by one of the two `stat`s.
    let arrived = match fs::metadata(dir.join(ARRIVALS)) {
        Ok(metadata) => metadata.len() > HEADER.len() as u64,
        Err(err) => err.kind() != ErrorKind::NotFound,
    };
    arrived || batch_exists(dir)
}

/// The arrivals files this process found with nothing waiting, held open (see `follow`), so
/// that the next look at a directory costs one `stat` instead of two: for the listings that
/// answer without a lock while nothing changed.
#[derive(Default)]
pub(crate) struct Quiet {
    held: Mutex<HashMap<PathBuf, (Followed, u64)>>,
}

/// At most this many directories' arrivals are remembered; past it, all are forgotten (each is
/// looked at the full way once more).
const QUIET_MAX: usize = 4096;

impl Quiet {
    /// [`waiting`], with one `stat` when the arrivals are the file held since a look found
    /// nothing waiting, at the same length. That is as right as the full look: a batch is made
    /// only by a swap, which renames the arrivals away, so the same file at the same length
    /// means nothing was appended and no swap came since that look, which saw no batch (the
    /// file was opened before the batch's name was looked for). A held file's inode cannot be
    /// reused; a file the pool let go is looked at the full way.
    pub(crate) fn waiting(&self, dir: &Path) -> bool {
        let arrivals = dir.join(ARRIVALS);
        {
            let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
            if held.get(dir).is_some_and(|(file, len)| file.unchanged(&arrivals, *len)) {
                return false;
            }
        }
        let file = match File::open(&arrivals) {
            Ok(file) => file,
            Err(err) if err.kind() == ErrorKind::NotFound => return waiting(dir),
            Err(_) => return true,
        };
        let Ok(metadata) = file.metadata() else { return true };
        if metadata.len() > HEADER.len() as u64 || batch_exists(dir) {
            return true;
        }
        let followed = Followed::hold(file, &metadata);
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if held.len() >= QUIET_MAX {
            held.clear();
        }
        match followed {
            Some(followed) => held.insert(dir.to_path_buf(), (followed, metadata.len())),
            None => held.remove(dir),
        };
        false
    }
}

impl Quiet {
    /// Lets go of the arrivals held for `dir` (its agent is deleted), so that no deleted file
    /// stays open.
    pub(crate) fn forget(&self, dir: &Path) {
        let removed = self.held.lock().unwrap_or_else(PoisonError::into_inner).remove(dir);
        drop(removed);
    }

    /// Lets go of the arrivals held for every directory but those `keep` says (their agents
    /// are gone, deleted by another process).
    pub(crate) fn keep_only(&self, keep: impl Fn(&Path) -> bool) {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let gone: Vec<_> = held.keys().filter(|dir| !keep(dir)).cloned().collect();
        let removed: Vec<_> = gone.iter().filter_map(|dir| held.remove(dir)).collect();
        drop(held);
        drop(removed);
    }
}

/// Whether a batch is being drained in `dir` (an error says yes, so that the drain reports it).
fn batch_exists(dir: &Path) -> bool {
    !matches!(
        fs::symlink_metadata(dir.join(DRAINING)),
        Err(err) if err.kind() == ErrorKind::NotFound
    )
}

/// A drain of what waited in a directory when it began, made in steps.
pub(crate) struct Drain {
    /// The batch this drain works on, held open so that its inode names that batch and no
    /// later one, and the bytes of it made files of so far.
    batch: Option<(File, u64)>,
    /// The bytes left to drain: what waited when the drain began. Steps consume bytes in the
    /// order they were appended, from the start of each batch they meet, so once this many
    /// are consumed every line that waited at the beginning was made a file, by this drain
    /// or by another.
    left: u64,
    /// Whether the drain may swap the arrivals in for a batch; one that only finishes the
    /// batch being drained may not.
    swaps: bool,
}

impl Drain {
    /// A drain of what waits in `dir` now.
    pub(crate) fn begin(dir: &Path) -> Result<Drain> {
        let mut left = 0;
        // The arrivals first, as in `waiting`: a swap between the two `stat`s then moves bytes
        // counted already into a batch that is counted too, never out of sight of both.
        for name in [ARRIVALS, DRAINING] {
            let path = dir.join(name);
            match fs::metadata(&path) {
                Ok(metadata) => left += metadata.len(),
                Err(err) if err.kind() == ErrorKind::NotFound => {}
                Err(err) => return Err(Error::io(&path, err)),
            }
        }
        Ok(Drain { batch: None, left, swaps: true })
    }
}

/// Finishes the batch being drained in `dir`, if any, one [`step`] per hold of `lock` (taken
/// exclusively), swapping nothing in: for a caller about to remove a record's file, which must
/// then be in no batch, lest a crash before the batch's end bring it back (see the module's
/// doc). After a [`drain`], the record is in the batch being drained or in none; any batch
/// swapped in after this one is finished holds only records appended after the record was.
/// `make` is as for [`step`].
pub(crate) fn finish_batch<T: DeserializeOwned>(
    dir: &Path,
    lock: &Path,
    mut make: impl FnMut(Vec<T>) -> Result<()>,
) -> Result<()> {
    let mut drain = Drain { batch: None, left: u64::MAX, swaps: false };
    while io::with_lock(lock, || step(dir, &mut drain, &mut make))? {}
    Ok(())
}

/// Drains what waits in `dir`, one [`step`] per hold of `lock` (taken exclusively), so that
/// other holders get the lock between steps. `make` is as for [`step`].
pub(crate) fn drain<T: DeserializeOwned>(
    dir: &Path,
    lock: &Path,
    mut make: impl FnMut(Vec<T>) -> Result<()>,
) -> Result<()> {
    if !waiting(dir) {
        return Ok(());
    }
    let mut drain = Drain::begin(dir)?;
    while io::with_lock(lock, || step(dir, &mut drain, &mut make))? {}
    Ok(())
}

/// One step of `drain`: makes files of the next records of the batch (swapping the arrivals in
/// for a batch when none is being drained), at most [`STEP_RECORDS`] of them, and removes the
/// batch durably once all of its records are files. Returns whether the drain has more to do.
///
/// `make` is given records, oldest first, and returns once each is a durable file. It may be
/// given records it made files of before (a batch a crash left, or one another drain worked
/// on), and must then leave them as they are, wherever they went since: every record is in
/// one batch only, and a batch is removed only once each of its records is a durable file, so
/// a record given again was never made a file of anew by anyone else. The caller holds the
/// records' lock exclusively.
pub(crate) fn step<T: DeserializeOwned>(
    dir: &Path,
    drain: &mut Drain,
    mut make: impl FnMut(Vec<T>) -> Result<()>,
) -> Result<bool> {
    if drain.left == 0 {
        return Ok(false);
    }
    let draining = dir.join(DRAINING);
    let file = match File::open(&draining) {
        Ok(file) => file,
        Err(err) if err.kind() == ErrorKind::NotFound => {
            if !drain.swaps || !swap(dir)? {
                return Ok(false);
            }
            File::open(&draining).map_err(|err| Error::io(&draining, err))?
        }
        Err(err) => return Err(Error::io(&draining, err)),
    };
    let metadata = file.metadata().map_err(|err| Error::io(&draining, err))?;
    let from = match &drain.batch {
        Some((held, offset)) if same_file(held, &metadata) => *offset,
        // A batch swapped in after the one a finish began with: that one is finished.
        Some(_) if !drain.swaps => return Ok(false),
        _ => 0,
    };
    let (records, unreadable, consumed) = read_step(&file, &draining, from)?;
    if !unreadable.is_empty() {
        set_aside(dir, &unreadable)?;
    }
    make(records)?;
    drain.left = drain.left.saturating_sub(consumed);
    let end = from + consumed;
    if end >= metadata.len() {
        fs::remove_file(&draining).map_err(|err| Error::io(&draining, err))?;
        io::sync_dir(dir)?;
        drain.batch = None;
        if !drain.swaps {
            return Ok(false);
        }
    } else {
        drain.batch = Some((file, end));
    }
    Ok(drain.left > 0)
}

/// Renames the arrivals to the batch's name and puts a fresh file (its first byte only) in
/// their place, when any line waits; returns whether it did. Under the arrivals' lock held exclusively, so that
/// every appender's `write` is complete and none lands in the batch afterwards.
fn swap(dir: &Path) -> Result<bool> {
    let arrivals = dir.join(ARRIVALS);
    io::with_lock_mode(&dir.join(LOCK), true, || {
        match fs::metadata(&arrivals) {
            Ok(metadata) if metadata.len() > HEADER.len() as u64 => {}
            Ok(_) => return Ok(false),
            Err(err) if err.kind() == ErrorKind::NotFound => return Ok(false),
            Err(err) => return Err(Error::io(&arrivals, err)),
        }
        fs::rename(&arrivals, dir.join(DRAINING)).map_err(|err| Error::io(&arrivals, err))?;
        // Both names at once: should the rename be lost, the lines are drained from the old
        // name instead, and the new file is made again by the next appender.
        make_durably(dir, &arrivals)?;
        Ok(true)
    })
}

/// The next records of a batch from byte `from`: the records parsed, the whole lines that do
/// not parse, and the bytes consumed. A last line without its newline was torn by a crash
/// (the batch is never appended to) and is skipped; it was never answered.
fn read_step<T: DeserializeOwned>(
    file: &File,
    path: &Path,
    from: u64,
) -> Result<(Vec<T>, Vec<Vec<u8>>, u64)> {
    let mut reader = BufReader::new(file);
    reader.seek(SeekFrom::Start(from)).map_err(|err| Error::io(path, err))?;
    let (mut records, mut unreadable) = (Vec::new(), Vec::new());
    let (mut consumed, mut bytes) = (0u64, 0usize);
    let mut line = Vec::new();
    while records.len() + unreadable.len() < STEP_RECORDS && (bytes < STEP_BYTES || bytes == 0) {
        line.clear();
        let read = reader.read_until(b'\n', &mut line).map_err(|err| Error::io(path, err))?;
        if read == 0 {
            break;
        }
        consumed += read as u64;
        if line.last() != Some(&b'\n') {
            tracing::warn!(path = %path.display(), "skipping a torn last line of arrivals");
            break;
        }
        let text = &line[..line.len() - 1];
        if text.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        bytes += text.len();
        match serde_json::from_slice(text) {
            Ok(record) => records.push(record),
            Err(err) => {
                tracing::warn!(path = %path.display(), error = %err, "setting aside an arrived record that does not parse");
                unreadable.push(text.to_vec());
            }
        }
    }
    Ok((records, unreadable, consumed))
}

/// Keeps whole lines that do not parse (damage, or a record of a newer Orbit) beside the
/// arrivals, durably, before their batch is removed.
fn set_aside(dir: &Path, lines: &[Vec<u8>]) -> Result<()> {
    let path = dir.join(UNREADABLE);
    for line in lines {
        io::append_line(&path, line)?;
    }
    Ok(())
}

fn same_file(held: &File, metadata: &fs::Metadata) -> bool {
    held.metadata().is_ok_and(|held| held.dev() == metadata.dev() && held.ino() == metadata.ino())
}

/// The records waiting in `dir` to be drained (a batch, then the arrivals), for a caller that
/// excludes every appender and drainer and will not act on them: one deleting the whole
/// directory, telling others what went with it.
pub(crate) fn peek<T: DeserializeOwned>(dir: &Path) -> Result<Vec<T>> {
    let mut records = Vec::new();
    for path in [dir.join(DRAINING), dir.join(ARRIVALS)] {
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(err) if err.kind() == ErrorKind::NotFound => continue,
            Err(err) => return Err(Error::io(&path, err)),
        };
        let mut from = 0;
        loop {
            let (read, _, consumed) = read_step::<T>(&file, &path, from)?;
            records.extend(read);
            if consumed == 0 {
                break;
            }
            from += consumed;
        }
    }
    Ok(records)
}

/// Makes `dir`'s arrivals file when it is missing or has no first byte (first use, a swap
/// that failed after its rename, a maker killed midway), before anyone appends to it.
fn make_file(dir: &Path) -> Result<()> {
    io::with_lock_mode(&dir.join(LOCK), true, || make_durably(dir, &dir.join(ARRIVALS)))
}

/// Makes the arrivals file at `path` (or finishes one made before), under the lock held
/// exclusively: its name made durable by an fsync of `dir`, and only then its first byte
/// written, which appenders wait for. So an append answered, which syncs the first byte with
/// its own, is in a file whose name is durable too, even if the maker was killed before its
/// directory's fsync and an appender came before the next maker.
fn make_durably(dir: &Path, path: &Path) -> Result<()> {
    let mut file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(FILE_MODE)
        .open(path)
        .map_err(|err| Error::io(path, err))?;
    if file.metadata().map_err(|err| Error::io(path, err))?.len() >= HEADER.len() as u64 {
        return Ok(());
    }
    io::sync_dir(dir)?;
    file.write_all(HEADER).map_err(|err| Error::io(path, err))
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::{Arc, Barrier};

    use super::*;

    fn send(dir: &Path, record: u64, syncs: &FileSyncs) {
        append(dir, &record).unwrap().sync(syncs).unwrap();
    }

    /// Drains `dir` the way a store does, its lock taken per step; the batches `make` got.
    fn drain_batches(dir: &Path) -> Vec<Vec<u64>> {
        let mut batches = Vec::new();
        drain(dir, &dir.join(".lock"), |records: Vec<u64>| {
            batches.push(records);
            Ok(())
        })
        .unwrap();
        batches
    }

    /// A line torn by a crash (no newline, cut mid-record) is skipped, and the lines appended
    /// after it are each drained whole.
    #[test]
    fn a_torn_line_tears_no_line_appended_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let syncs = FileSyncs::default();
        send(dir.path(), 1, &syncs);
        let mut file = OpenOptions::new().append(true).open(dir.path().join(ARRIVALS)).unwrap();
        file.write_all(b"\n{\"torn").unwrap();
        send(dir.path(), 2, &syncs);
        send(dir.path(), 3, &syncs);
        assert_eq!(drain_batches(dir.path()).concat(), [1, 2, 3]);
        assert!(!waiting(dir.path()), "nothing waits once drained");
        // The torn part ends with the next line's leading newline, so it is kept as a whole
        // line that does not parse.
        let kept = fs::read_to_string(dir.path().join(UNREADABLE)).unwrap();
        assert_eq!(kept, "{\"torn\n");
    }

    /// A whole line that does not parse is kept beside the arrivals, not dropped with its
    /// batch; a last line torn by a crash is dropped (it was never answered).
    #[test]
    fn a_whole_line_that_does_not_parse_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let syncs = FileSyncs::default();
        send(dir.path(), 1, &syncs);
        let mut file = OpenOptions::new().append(true).open(dir.path().join(ARRIVALS)).unwrap();
        file.write_all(b"\n\"a newer record\"\n\n{\"cut").unwrap();
        assert_eq!(drain_batches(dir.path()).concat(), [1]);
        let kept = fs::read_to_string(dir.path().join(UNREADABLE)).unwrap();
        assert_eq!(kept, "\"a newer record\"\n");
        assert!(!waiting(dir.path()));
    }

    /// An arrivals file whose maker was killed before its directory's fsync (no first byte)
    /// is made again by the next appender, which then appends after the first byte; an empty
    /// file with its first byte is nothing waiting.
    #[test]
    fn a_file_without_its_first_byte_is_made_again_before_an_append() {
        let dir = tempfile::tempdir().unwrap();
        let syncs = FileSyncs::default();
        fs::write(dir.path().join(ARRIVALS), b"").unwrap();
        assert!(!waiting(dir.path()));
        send(dir.path(), 7, &syncs);
        assert_eq!(fs::read(dir.path().join(ARRIVALS)).unwrap(), b"\n\n7\n");
        assert!(waiting(dir.path()));
        assert_eq!(drain_batches(dir.path()).concat(), [7]);
        assert_eq!(fs::read(dir.path().join(ARRIVALS)).unwrap(), HEADER, "a fresh file");
        assert!(!waiting(dir.path()));
    }

    /// The one-`stat` look answers as the full one: nothing waiting while the held file is
    /// unchanged, something once a line is appended, and a batch after a swap.
    #[test]
    fn the_quiet_look_follows_appends_and_swaps() {
        let dir = tempfile::tempdir().unwrap();
        let (syncs, quiet) = (FileSyncs::default(), Quiet::default());
        assert!(!quiet.waiting(dir.path()), "no arrivals at all");
        send(dir.path(), 1, &syncs);
        assert!(quiet.waiting(dir.path()));
        drain_batches(dir.path());
        assert!(!quiet.waiting(dir.path()));
        assert!(!quiet.waiting(dir.path()), "held, and unchanged");
        send(dir.path(), 2, &syncs);
        assert!(quiet.waiting(dir.path()), "appended to");
        // A swap with its batch left behind: the held file is renamed away.
        let mut drain = Drain::begin(dir.path()).unwrap();
        assert!(
            !step(dir.path(), &mut drain, |_: Vec<u64>| Err(Error::Invalid("x".into())))
                .is_ok_and(|more| more)
        );
        assert!(dir.path().join(DRAINING).exists());
        assert!(quiet.waiting(dir.path()), "a batch left");
        drain_batches(dir.path());
        assert!(!quiet.waiting(dir.path()));
        quiet.forget(dir.path());
        assert!(!quiet.waiting(dir.path()));
    }

    /// A batch that `make` fails on stays, whole, for the next drain, ahead of what arrived
    /// since.
    #[test]
    fn a_batch_that_could_not_be_made_is_drained_again_first() {
        let dir = tempfile::tempdir().unwrap();
        let syncs = FileSyncs::default();
        send(dir.path(), 1, &syncs);
        let lock = dir.path().join(".lock");
        let failed = drain(dir.path(), &lock, |_: Vec<u64>| Err(Error::Invalid("full".into())));
        assert!(failed.is_err());
        assert!(waiting(dir.path()));
        send(dir.path(), 2, &syncs);
        assert_eq!(drain_batches(dir.path()), [vec![1], vec![2]]);
    }

    /// A backlog is made files in steps of at most `STEP_RECORDS`, each its own hold of the
    /// lock, oldest first.
    #[test]
    fn a_backlog_is_drained_in_bounded_steps() {
        let dir = tempfile::tempdir().unwrap();
        let syncs = FileSyncs::default();
        let count = STEP_RECORDS as u64 * 2 + 5;
        for record in 0..count {
            send(dir.path(), record, &syncs);
        }
        let batches = drain_batches(dir.path());
        assert!(batches.iter().all(|batch| batch.len() <= STEP_RECORDS), "a step too large");
        assert_eq!(batches.len(), 3);
        assert_eq!(batches.concat(), (0..count).collect::<Vec<_>>());
        assert!(!waiting(dir.path()));
    }

    /// A drain stops once it has consumed what waited when it began, although more keeps
    /// arriving; `finish_batch` finishes a batch left midway and swaps nothing in.
    #[test]
    fn a_drain_ends_and_a_finish_takes_only_the_batch() {
        let dir = tempfile::tempdir().unwrap();
        let syncs = FileSyncs::default();
        for record in 0..(STEP_RECORDS as u64 + 1) {
            send(dir.path(), record, &syncs);
        }
        // One step of a drain: the batch is swapped in and its first step made.
        let mut drain = Drain::begin(dir.path()).unwrap();
        let mut made = Vec::new();
        assert!(
            step(dir.path(), &mut drain, |records: Vec<u64>| {
                made.extend(records);
                Ok(())
            })
            .unwrap()
        );
        assert_eq!(made.len(), STEP_RECORDS);
        send(dir.path(), 1000, &syncs);
        let mut finished = Vec::new();
        finish_batch(dir.path(), &dir.path().join(".lock"), |records: Vec<u64>| {
            finished.extend(records);
            Ok(())
        })
        .unwrap();
        // From the batch's start: a finish does not know how far the drain got, and the
        // records it gives again are left alone by `make`.
        assert_eq!(finished, (0..(STEP_RECORDS as u64 + 1)).collect::<Vec<_>>());
        assert!(!dir.path().join(DRAINING).exists());
        assert!(waiting(dir.path()), "the record that arrived after waits");
        assert_eq!(drain_batches(dir.path()).concat(), [1000]);
    }

    /// Writers appending from many threads while drains run: every answered append is drained.
    /// A drain that ended midway through a batch leaves it for the next, which starts that
    /// batch from its beginning, so a record may be given again (`make` leaves it alone then).
    #[test]
    fn appends_racing_drains_are_each_drained() {
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
                        send(&dir, writer * each + n, &syncs);
                    }
                })
            })
            .collect();
        start.wait();
        let mut drained = Vec::new();
        while handles.iter().any(|handle| !handle.is_finished()) {
            drained.extend(drain_batches(dir.path()).concat());
        }
        for handle in handles {
            handle.join().unwrap();
        }
        drained.extend(drain_batches(dir.path()).concat());
        let unique: HashSet<_> = drained.iter().copied().collect();
        assert_eq!(unique, (0..writers * each).collect::<HashSet<_>>());
        assert!(!waiting(dir.path()));
    }
}
