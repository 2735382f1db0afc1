//! The task change feed, `task-changes.jsonl`: it tells every process sharing the directory
//! that a task was created, updated or deleted.
//!
//! It is an append-only file with a header line naming it (like the session journal), which
//! readers tail from their offset. It is a wake-up call, not data: it is appended without
//! fsync, and replaced by an empty one when it grows past a bound, which tells its readers to
//! re-read every task. A change whose line is lost (the writer crashed between the task and
//! its line, or the append failed and was logged) reaches other live schedulers only when they
//! next re-read that task or restart; the writer's own scheduler and every scheduler started
//! after it see the task.
//!
//! A change's line is appended after its record is written and its task lock let go, so lines
//! of racing writers may come in another order than their records (an update's line before
//! the create's, a delete's before an update's). That is harmless because a line carries no
//! state: it names a task, and its reader re-reads the task (`get`) after reading the line.
//! Every change's line comes after the change, so a reader that has read it then reads that
//! change or a newer one; the last change's line comes after the last change, so the reader
//! ends with the final state (or the task gone), whatever order the lines took. Publishing
//! under the lock would only make creators, who hold it shared, wait on the feed's own lock.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::PathBuf;

use super::{Inner, io};
use crate::{AgentName, ChangeCursor, Error, Result, TaskChange, TaskChanges, TaskId};

/// The change feed is replaced by an empty one past this size.
const FEED_MAX_BYTES: u64 = 1024 * 1024;

/// The header line is far shorter; a longer first line is not a header.
const HEADER_MAX_BYTES: u64 = 256;

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
enum FeedLine {
    Header { feed: crate::ids::JournalId },
    Change(TaskChange),
}

impl Inner {
    fn feed_path(&self) -> PathBuf {
        self.root.join("task-changes.jsonl")
    }

    /// Tells every process that a task changed. A failure is logged, not returned: the
    /// change itself is stored, and other schedulers re-read every task now and then. Called
    /// after the change is made and its lock let go: the line only says "read this task
    /// again", so lines in another order than their changes are harmless (see the module docs).
    pub(super) fn publish_change(&self, agent: &AgentName, task: &TaskId) {
        let published = io::with_lock(&self.root.join("task-changes.lock"), || {
            let path = self.feed_path();
            let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            if len == 0 || len > FEED_MAX_BYTES {
                let mut header =
                    serde_json::to_vec(&FeedLine::Header { feed: crate::ids::JournalId::new() })
                        .map_err(|err| Error::Corrupt { path: path.clone(), source: err })?;
                header.push(b'\n');
                io::write_bytes(&path, &header)?;
            }
            let line = serde_json::to_vec(&FeedLine::Change(TaskChange {
                agent: agent.clone(),
                task: *task,
            }))
            .map_err(|err| Error::Corrupt { path: path.clone(), source: err })?;
            io::append_line_unsynced(&path, &line)
        });
        if let Err(err) = published {
            tracing::warn!(%agent, %task, error = %err, "could not publish a task change");
        }
        // After the feed line, so that a scheduler woken by the tick finds the change there.
        self.task_changes.send_modify(|ticks| *ticks = ticks.wrapping_add(1));
    }

    /// Reads the feed past `cursor`: its header line, then only the bytes after the cursor,
    /// because schedulers poll it at every wake and it grows up to `FEED_MAX_BYTES`.
    pub(super) fn read_feed(&self, cursor: Option<ChangeCursor>) -> Result<TaskChanges> {
        let path = self.feed_path();
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                // No feed yet: nothing changed since whatever the reader read.
                let cursor = ChangeCursor { feed: ulid::Ulid::nil(), offset: 0 };
                return Ok(TaskChanges { changes: Vec::new(), reset: false, cursor });
            }
            Err(err) => return Err(Error::io(&path, err)),
        };
        let len = file.metadata().map_err(|err| Error::io(&path, err))?.len();
        let mut reader = BufReader::new(file);
        let mut first = Vec::new();
        (&mut reader)
            .take(HEADER_MAX_BYTES)
            .read_until(b'\n', &mut first)
            .map_err(|err| Error::io(&path, err))?;
        let (header, header_len) = io::parse_jsonl::<FeedLine>(&path, &first);
        let feed = match header.first() {
            Some(FeedLine::Header { feed }) => feed.ulid(),
            _ => ulid::Ulid::nil(),
        };
        let same_feed = cursor.is_some_and(|c| c.feed == feed || c.feed.is_nil());
        let from = match cursor {
            Some(c) if same_feed && c.offset <= len => c.offset.max(header_len as u64),
            // A new reader, or a replaced feed: read it all to find its end.
            _ => header_len as u64,
        };
        reader.seek(SeekFrom::Start(from)).map_err(|err| Error::io(&path, err))?;
        let mut bytes = Vec::new();
        reader.read_to_end(&mut bytes).map_err(|err| Error::io(&path, err))?;
        let (lines, complete) = io::parse_jsonl::<FeedLine>(&path, &bytes);
        let end = ChangeCursor { feed, offset: from + complete as u64 };
        let Some(cursor) = cursor else {
            return Ok(TaskChanges { changes: Vec::new(), reset: false, cursor: end });
        };
        if !same_feed || cursor.offset > len {
            return Ok(TaskChanges { changes: Vec::new(), reset: true, cursor: end });
        }
        let changes = lines
            .into_iter()
            .filter_map(|line| match line {
                FeedLine::Change(change) => Some(change),
                FeedLine::Header { .. } => None,
            })
            .collect();
        Ok(TaskChanges { changes, reset: false, cursor: end })
    }
}
