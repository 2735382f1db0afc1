//! Session transcripts on the filesystem: `agents/<name>/sessions/<id>.transcript.jsonl`, one
//! entry a line, beside the session's messages.
//!
//! A turn's entries are appended as one fsynced write under the session journal's lock, so
//! they cannot land after a concurrent delete removed the session's files, and a reader sees
//! a turn's entries whole once its last newline is written. A crash mid-write leaves a torn
//! last line: readers stop at the last complete line, and the next append closes the torn one
//! first (`io::append_line`), which readers then skip as a line that does not parse.
//!
//! A cursor is the byte offset of the line a page starts at, so a page costs the bytes it
//! returns, not the transcript's length; an offset that is not the start of a line is refused.

use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::{Inner, io};
use crate::{
    AgentName, Error, Result, SessionId, TranscriptCursor, TranscriptEntry, TranscriptPage,
};

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
            if !lines.is_empty() {
                lines.push(b'\n');
            }
            serde_json::to_writer(&mut lines, entry)
                .map_err(|err| Error::Corrupt { path: path.clone(), source: err })?;
        }
        self.with_session(agent, id, || {
            if !entries.is_empty() {
                io::ensure_dir(path.parent().unwrap_or(Path::new(".")))?;
                io::append_line(&path, &lines)?;
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
                    Ok(TranscriptPage { entries: Vec::new(), next: None })
                } else {
                    Err(invalid())
                };
            }
            Err(err) => return Err(Error::io(&path, err)),
        };
        let io_err = |err| Error::io(&path, err);
        let len = file.metadata().map_err(io_err)?.len();
        if from.0 > len {
            return Err(invalid());
        }
        if from.0 > 0 {
            // A page starts where a line starts: just after a newline.
            let mut before = [0u8; 1];
            file.seek(SeekFrom::Start(from.0 - 1)).map_err(io_err)?;
            std::io::Read::read_exact(&mut file, &mut before).map_err(io_err)?;
            if before[0] != b'\n' {
                return Err(invalid());
            }
        }
        file.seek(SeekFrom::Start(from.0)).map_err(io_err)?;
        let mut reader = BufReader::new(file);
        let (mut entries, mut offset, mut line) = (Vec::new(), from.0, Vec::new());
        loop {
            line.clear();
            let read = reader.read_until(b'\n', &mut line).map_err(io_err)?;
            // The end, or a torn last line that a crash left: neither is an entry.
            if read == 0 || line.last() != Some(&b'\n') {
                return Ok(TranscriptPage { entries, next: None });
            }
            if entries.len() >= limit.max(1) {
                // One more complete line exists: the next page starts at it.
                return Ok(TranscriptPage { entries, next: Some(TranscriptCursor(offset)) });
            }
            offset += read as u64;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match serde_json::from_slice::<TranscriptEntry>(&line) {
                Ok(entry) => entries.push(entry),
                Err(err) => {
                    tracing::warn!(path = %path.display(), offset, error = %err, "skipping a transcript line that does not parse")
                }
            }
        }
    }

    pub(super) fn remove_transcript(&self, agent: &AgentName, id: &SessionId) -> Result<()> {
        io::remove_file(&self.transcript_path(agent, id)).map(drop)
    }
}
