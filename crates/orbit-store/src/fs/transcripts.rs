//! Session transcripts on the filesystem: `agents/<name>/sessions/<id>.transcript.jsonl`, one
//! entry a line, beside the session's messages.
//!
//! A turn's entries are appended as one fsynced write under the session journal's lock, so
//! they cannot land after a concurrent delete removed the session's files, and each turn's
//! lines end with a commit line, `{"committed":<entries>}`. Only what lies before the last
//! commit line is the transcript: a reader never sees a turn that is still being written or
//! that a crash cut short, not even the lines of it that did reach the disk, and the next
//! append first cuts such a torn turn off the file, so it never lies between two whole ones.
//! Every file starts with a commit line of no entries, so a file without any commit line is
//! one written before this format, read whole (up to its last complete line) as then.
//! Finding the last commit line reads the file backwards from its end, which costs one small
//! read unless a torn turn follows it.
//!
//! A cursor is the byte offset of the line a page starts at, so a page costs the bytes it
//! returns, not the transcript's length; an offset that is not the start of a line is refused.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::{Inner, io};
use crate::{
    AgentName, Error, Result, SessionId, TRANSCRIPT_PAGE_BYTES, TranscriptCursor, TranscriptEntry,
    TranscriptPage,
};

/// How every commit line starts; no entry line does (an entry starts with its `turn`).
const COMMIT_PREFIX: &[u8] = b"{\"committed\":";

/// The first line of every transcript file: a commit line of no entries, which tells it from a
/// file written before turns had commit lines.
const HEADER: &[u8] = b"{\"committed\":0}\n";

/// How much of the file's end is read at a time while looking for the last commit line.
const TAIL_CHUNK: u64 = 64 * 1024;

fn is_commit_line(line: &[u8]) -> bool {
    line.starts_with(COMMIT_PREFIX)
}

/// The offset just past the file's last commit line: the end of what readers may read. A file
/// with none at all was written before turns had commit lines (every file since starts with
/// one, [`HEADER`]): all its complete lines are read, as they were then.
fn committed_end(file: &File, len: u64, path: &Path) -> Result<u64> {
    // `tail` holds the file's bytes from `start` to its end; its lines from `unseen` on have
    // been looked at already (`unseen` is the start of the first newline-ended one).
    let (mut start, mut tail, mut unseen) = (len, Vec::new(), 0usize);
    let mut last_line_end = None;
    while start > 0 {
        let chunk = TAIL_CHUNK.min(start);
        start -= chunk;
        let mut bytes = vec![0u8; chunk as usize];
        file.read_exact_at(&mut bytes, start).map_err(|err| Error::io(path, err))?;
        bytes.extend_from_slice(&tail);
        tail = bytes;
        // The line ending at `line_end` (a newline) starts after the newline before it, or at
        // the file's start; a line that runs to the file's end without one is torn.
        let mut line_end = match tail[..chunk as usize + unseen].iter().rposition(|b| *b == b'\n') {
            Some(newline) => newline,
            None => {
                unseen += chunk as usize;
                continue;
            }
        };
        last_line_end.get_or_insert(start + line_end as u64 + 1);
        loop {
            let line_start = match tail[..line_end].iter().rposition(|b| *b == b'\n') {
                Some(newline) => newline + 1,
                None if start == 0 => 0,
                None => break,
            };
            if is_commit_line(&tail[line_start..line_end]) {
                return Ok(start + line_end as u64 + 1);
            }
            if line_start == 0 {
                break;
            }
            line_end = line_start - 1;
        }
        unseen = line_end + 1;
    }
    Ok(last_line_end.unwrap_or(0))
}

impl Inner {
    fn transcript_path(&self, agent: &AgentName, id: &SessionId) -> PathBuf {
        self.agent_dir(agent).join("sessions").join(format!("{id}.transcript.jsonl"))
    }

    pub(super) fn append_transcript(
        &self,
        agent: &AgentName,
        id: &SessionId,
        entries: &[TranscriptEntry],
    ) -> Result<()> {
        let path = self.transcript_path(agent, id);
        let mut lines = Vec::new();
        for entry in entries {
            serde_json::to_writer(&mut lines, entry)
                .map_err(|err| Error::Corrupt { path: path.clone(), source: err })?;
            lines.push(b'\n');
        }
        lines.extend_from_slice(COMMIT_PREFIX);
        lines.extend_from_slice(format!("{}}}\n", entries.len()).as_bytes());
        self.with_session(agent, id, || {
            if !entries.is_empty() {
                io::ensure_dir(path.parent().unwrap_or(Path::new(".")))?;
                append_turn(&path, &lines)?;
            }
            Ok(())
        })
    }

    pub(super) fn read_transcript(
        &self,
        agent: &AgentName,
        id: &SessionId,
        from: TranscriptCursor,
        limit: usize,
    ) -> Result<TranscriptPage> {
        if !self.read_sessions(agent, |sessions| sessions.contains_key(id))? {
            return Err(Error::not_found("session", id));
        }
        let path = self.transcript_path(agent, id);
        let invalid = || Error::Invalid(format!("no transcript position {}", from.0));
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return if from == TranscriptCursor::START {
                    Ok(TranscriptPage { entries: Vec::new(), next: from, more: false })
                } else {
                    Err(invalid())
                };
            }
            Err(err) => return Err(Error::io(&path, err)),
        };
        let io_err = |err| Error::io(&path, err);
        let len = file.metadata().map_err(io_err)?.len();
        let end = committed_end(&file, len, &path)?;
        if from.0 > end {
            return Err(invalid());
        }
        if from.0 > 0 {
            // A page starts where a line starts: just after a newline.
            let mut before = [0u8; 1];
            file.read_exact_at(&mut before, from.0 - 1).map_err(io_err)?;
            if before[0] != b'\n' {
                return Err(invalid());
            }
        }
        file.seek(SeekFrom::Start(from.0)).map_err(io_err)?;
        let mut reader = BufReader::new(file.take(end - from.0));
        let (mut entries, mut offset, mut bytes, mut line) = (Vec::new(), from.0, 0u64, Vec::new());
        loop {
            line.clear();
            let read = reader.read_until(b'\n', &mut line).map_err(io_err)? as u64;
            if read == 0 {
                return Ok(TranscriptPage { entries, next: TranscriptCursor(offset), more: false });
            }
            if line.iter().all(u8::is_ascii_whitespace) || is_commit_line(&line) {
                offset += read;
                continue;
            }
            match serde_json::from_slice::<TranscriptEntry>(&line) {
                Ok(entry) => {
                    if !entries.is_empty()
                        && (entries.len() >= limit || bytes + read > TRANSCRIPT_PAGE_BYTES)
                    {
                        // The next page starts at this entry.
                        return Ok(TranscriptPage {
                            entries,
                            next: TranscriptCursor(offset),
                            more: true,
                        });
                    }
                    bytes += read;
                    entries.push(entry);
                }
                Err(err) => {
                    tracing::warn!(path = %path.display(), offset, error = %err, "skipping a transcript line that does not parse")
                }
            }
            offset += read;
        }
    }

    pub(super) fn remove_transcript(&self, agent: &AgentName, id: &SessionId) -> Result<()> {
        io::remove_file(&self.transcript_path(agent, id)).map(drop)
    }
}

/// Appends one turn's lines, commit line included, in one fsynced write, after cutting off a
/// torn turn that a crash left past the last commit line.
fn append_turn(path: &Path, lines: &[u8]) -> Result<()> {
    let io_err = |err| Error::io(path, err);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .mode(io::FILE_MODE)
        .open(path)
        .map_err(io_err)?;
    // Orders writers of this file across processes too, so the cut below races no one.
    file.lock().map_err(io_err)?;
    let len = file.metadata().map_err(io_err)?.len();
    let end = committed_end(&file, len, path)?;
    if end < len {
        tracing::warn!(path = %path.display(), torn = len - end, "cutting off a torn turn before appending");
        file.set_len(end).map_err(io_err)?;
    }
    file.seek(SeekFrom::Start(end)).map_err(io_err)?;
    if end == 0 {
        file.write_all(&[HEADER, lines].concat()).map_err(io_err)?;
    } else {
        file.write_all(lines).map_err(io_err)?;
    }
    file.sync_data().map_err(io_err)?;
    if len == 0 {
        // A new file: make its directory entry durable too.
        io::sync_dir(path.parent().unwrap_or(Path::new(".")))?;
    }
    Ok(())
}
