//! The change log of an indexed directory: the lines a writer appends before it touches a
//! record, how a log is made, replaced past its bound and read from an offset (see `index`
//! for why this keeps every process's index right).

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::fs::io;
use crate::ids::JournalId;
use crate::{Error, Result};

/// The log is replaced by an empty one past this size (about 100,000 changes).
const LOG_MAX_BYTES: u64 = 4 * 1024 * 1024;

/// Bytes read at the start of the log to find its header.
const HEADER_PROBE: usize = 128;

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum Line {
    Log(JournalId),
    New(String),
    Changed(String),
}

/// What a writer is about to do to a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    /// Create it under a fresh id, holding the directory's lock shared: what an Orbit from
    /// before the arrivals wrote (see `index`); this one writes only `Changed`.
    New,
    /// Rewrite, move or remove it, holding the directory's lock exclusively.
    Changed,
}

/// Appends a change line to `log` (made if missing), unsynced. With `may_replace` (the caller
/// holds the lock exclusively) a log past its bound is first replaced by an empty one.
pub(crate) fn note(log: &Path, id: &str, change: Change, may_replace: bool) -> Result<()> {
    let len = match fs::metadata(log) {
        Ok(meta) => Some(meta.len()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
        Err(err) => return Err(Error::io(log, err)),
    };
    match len {
        None => create_log(log)?,
        // A log without a header (cut short by a power loss: it is never synced) would make
        // every reader read the whole directory at every refresh, so it is replaced too.
        Some(len) if may_replace && (len > LOG_MAX_BYTES || !has_header(log)?) => {
            io::write_bytes(log, &header_line(log)?)?;
        }
        Some(_) => {}
    }
    let line = match change {
        Change::New => Line::New(id.to_owned()),
        Change::Changed => Line::Changed(id.to_owned()),
    };
    let bytes = serde_json::to_vec(&line)
        .map_err(|err| Error::Corrupt { path: log.into(), source: err })?;
    io::append_line_unsynced(log, &bytes)
}

pub(super) fn has_header(log: &Path) -> Result<bool> {
    let mut file = File::open(log).map_err(|err| Error::io(log, err))?;
    Ok(read_header(&mut file, log)?.is_some())
}

pub(super) fn header_line(log: &Path) -> Result<Vec<u8>> {
    let mut line = serde_json::to_vec(&Line::Log(JournalId::new()))
        .map_err(|err| Error::Corrupt { path: log.into(), source: err })?;
    line.push(b'\n');
    Ok(line)
}

/// Makes a log holding only its header, unless one exists: written aside and linked into
/// place, so that it never replaces a log someone else made meanwhile. Its directory must
/// exist: a log is never what brings back the directory of an agent deleted meanwhile.
pub(super) fn create_log(log: &Path) -> Result<()> {
    let Some(dir) = log.parent() else { return Ok(()) };
    let name = log.file_name().and_then(|n| n.to_str()).unwrap_or("log");
    let temp = dir.join(format!(".{name}.{}.tmp", crate::ids::new_ulid()));
    let written = (|| {
        let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&temp)?;
        file.write_all(&header_line(log).map_err(std::io::Error::other)?)
    })();
    let linked = written.and_then(|()| fs::hard_link(&temp, log));
    let _ = fs::remove_file(&temp);
    match linked {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(err) => Err(Error::io(log, err)),
    }
}

/// The log's bytes from `from` to `len`.
pub(super) fn read_from(file: &mut File, log: &Path, from: u64, len: u64) -> Result<Vec<u8>> {
    let mut bytes = Vec::with_capacity(len.saturating_sub(from) as usize);
    file.seek(SeekFrom::Start(from)).map_err(|err| Error::io(log, err))?;
    file.take(len.saturating_sub(from))
        .read_to_end(&mut bytes)
        .map_err(|err| Error::io(log, err))?;
    Ok(bytes)
}

/// The last change each line names, by id: whether a record may still be on its way.
pub(super) fn last_changes(lines: Vec<Line>) -> BTreeMap<String, Change> {
    let mut last = BTreeMap::new();
    for line in lines {
        match line {
            Line::Log(_) => {}
            Line::New(id) => {
                last.insert(id, Change::New);
            }
            Line::Changed(id) => {
                last.insert(id, Change::Changed);
            }
        }
    }
    last
}

/// The id in a log's header line; `None` for a file without a complete one.
pub(super) fn read_header(file: &mut File, log: &Path) -> Result<Option<JournalId>> {
    let mut probe = [0u8; HEADER_PROBE];
    let mut filled = 0;
    file.seek(SeekFrom::Start(0)).map_err(|err| Error::io(log, err))?;
    while filled < probe.len() {
        match file.read(&mut probe[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(err) => return Err(Error::io(log, err)),
        }
    }
    let Some(end) = probe[..filled].iter().position(|b| *b == b'\n') else { return Ok(None) };
    match serde_json::from_slice::<Line>(&probe[..end]) {
        Ok(Line::Log(id)) => Ok(Some(id)),
        _ => Ok(None),
    }
}
