//! In-memory indexes of directories of JSON records (`<dir>/<id>.json`), kept current across
//! processes by a change log, so that a listing reads only the records that changed since the
//! last one instead of one file per record.
//!
//! The records stay the truth; the log only names records that changed. Its first line names
//! the log (`{"log":"<ulid>"}`, fresh for every file written), each other line one record id:
//! `{"new":"<id>"}` for a record being created, `{"changed":"<id>"}` for one being rewritten,
//! moved or removed. A process keeps, per directory, the records it read and the byte offset of
//! the log it has consumed; a refresh re-reads the records named past that offset, and reads the
//! whole directory again only when the log is new to it (its first refresh, a replaced log).
//!
//! Why this is correct with several processes and across crashes:
//!
//! - a writer appends its line *before* it touches the record, and every refresh runs under
//!   the directory's lock taken shared while writers that rewrite or remove records hold it
//!   exclusively. So a refresh never sees a line whose change is half done; a writer that
//!   crashes after its line leaves a record in its old or new state, whichever the refresh
//!   then reads, and its lock dies with it;
//! - new records are made files under the lock held exclusively (see `arrivals`), with a
//!   `changed` line. An Orbit from before the arrivals created them under the lock held
//!   shared, with a `new` line written before the file existed; such a line, from such a
//!   process sharing the directory, is still read: its id is awaited, and looked for again at
//!   every refresh until it appears or a `changed` line about it comes (a create that failed
//!   said so; one that crashed leaves an id to look for, one failed `open` per refresh);
//! - the log is replaced by an empty one (new header) only under the exclusive lock, once past
//!   `LOG_MAX_BYTES` (`change_log`); readers notice the new header and read the directory again;
//! - the log is never fsynced: it matters only to processes that are running, which all read
//!   the same page cache, and a process that starts (after any crash) reads the directory first.
//!
//! A record whose file cannot be read (an I/O error: EACCES, EIO) is left out and logged, and
//! read again at every refresh until it can be; a record that does not parse is skipped and
//! logged, as listings always did. Only a log or a directory that cannot be read fails the
//! refresh, which forgets the index; it is rebuilt at the next one.
//!
//! A creator killed between its `new` line and its file leaves an id that every refresh looks
//! for. A writer holding the lock exclusively knows no creator is midway, so it ends the wait
//! for such ids ([`RecordIndex::settle`]) with a `changed` line about each. Refreshed and
//! settled so, a replica is the directory (less the files that cannot be read) as far as
//! every change to it was logged: the inbox's claims choose their messages from it and read
//! only the files they change ([`RecordIndex::read_settled`]), and the files there but not
//! kept (`strays`) are named for them to move on. Damage (bit rot, EIO, EACCES) or a hand
//! edit writes no line, so the file a claim reads decides, and one that disagrees with the
//! replica is named in the log by the claim, for every process's replica to read again.
//!
//! A whole listing (`render`) answers the body it kept while the replica's generation has not
//! moved. Before it takes any lock it checks whether its replica is current as it stands:
//! the log it read last is held open (`follow`), so one `stat` of the log's path tells whether
//! it is still that file and no longer than the replica consumed, and no id is awaited. Then
//! the listing answers the kept body without opening, locking or reading anything else. That
//! is as right as a refresh under the lock: a writer appends its line before it touches a
//! record, so a log that has not grown means no writer in any process has begun a change
//! since the replica's last refresh, and the answer is the directory as it is at the `stat`.
//! A log replaced (by the exclusive writer past its bound, or made anew with the agent) is a
//! different inode, which the held file rules out being reused; a log gone (the agent deleted)
//! fails the `stat`; either way the listing refreshes the ordinary way, under its locks.
//!
//! The change log's lines and files are `change_log`'s; a replica and its refresh are
//! `replica`'s; this module keeps each agent's replica and answers the store's reads from it.
//!
//! Memory: one entry per record that the index keeps, the record itself (parsed, as the
//! listing answers it) plus its id as a key in a `BTreeMap`, about 100 bytes of overhead each;
//! for an index listed whole, each record's rendering, and its last body and its held log
//! while the process-wide pools keep them (see `render::Renderings` and `follow`).

mod change_log;
mod replica;

pub(crate) use change_log::{Change, note};

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use serde::de::DeserializeOwned;

use crate::render::{Body, Generation, Listing, Render, Rendered};
use crate::{AgentName, Result};
use replica::{Replica, refresh};

/// Where an index reads from, and which records it keeps.
pub(crate) struct Source<'a, T> {
    /// The records, `<id>.json`.
    pub dir: &'a Path,
    /// The change log of `dir`.
    pub log: &'a Path,
    /// Whether a record belongs in the index (the inbox keeps only pending messages).
    pub keep: fn(&T) -> bool,
}

/// Each agent's replica of one kind of record directory, shared by the store's clones.
pub(crate) struct RecordIndex<T> {
    replicas: Mutex<HashMap<AgentName, Arc<Mutex<Replica<T>>>>>,
}

impl<T> Default for RecordIndex<T> {
    fn default() -> Self {
        Self { replicas: Mutex::new(HashMap::new()) }
    }
}

impl<T: DeserializeOwned> RecordIndex<T> {
    /// Brings `agent`'s replica up to date with `source` and reads it. The caller holds the
    /// directory's lock, shared or exclusive.
    pub(crate) fn read<R>(
        &self,
        agent: &AgentName,
        source: &Source<'_, T>,
        read: impl FnOnce(&BTreeMap<String, T>) -> R,
    ) -> Result<R> {
        self.with_replica(agent, source, false, |replica| read(&replica.records))
    }

    /// The whole listing of `agent`'s replica, brought up to date, in id order, as `listing`
    /// writes it: the body kept when nothing changed since it was joined, else one joined from
    /// the renderings kept for unchanged records and new ones for the others. The caller holds
    /// the directory's lock, shared or exclusive.
    pub(crate) fn body(
        &self,
        agent: &AgentName,
        source: &Source<'_, T>,
        listing: &Listing<T>,
    ) -> Result<Body> {
        self.with_replica(agent, source, true, |replica| {
            let Replica { records, renderings, .. } = replica;
            renderings.body(records.iter(), listing)
        })
    }

    /// Every record of `agent`'s replica, brought up to date, in id order, rendered by
    /// `render`, with the generation they are of. The caller holds the directory's lock.
    pub(crate) fn rendered(
        &self,
        agent: &AgentName,
        source: &Source<'_, T>,
        render: Render<T>,
    ) -> Result<(Generation, Vec<Rendered>)> {
        self.with_replica(agent, source, true, |replica| {
            let Replica { records, renderings, .. } = replica;
            let rendered =
                records.iter().map(|(id, record)| renderings.get(id, record, render)).collect();
            (renderings.generation(), rendered)
        })
    }

    /// The body of `listing` kept for `agent`'s replica, when the replica is current without a
    /// refresh (one `stat` of `log`, no lock: see the module docs) and the body was joined in
    /// its generation; `None` tells the caller to refresh under its locks.
    pub(crate) fn current_body(
        &self,
        agent: &AgentName,
        log: &Path,
        listing: &Listing<T>,
    ) -> Option<Body> {
        let replica = self.existing(agent)?;
        let mut replica = replica.lock().unwrap_or_else(PoisonError::into_inner);
        let body = replica.renderings.kept_body(listing)?;
        replica.current(log).then_some(body)
    }

    /// The generation of `agent`'s replica, when it is current without a refresh (as
    /// [`current_body`](Self::current_body)).
    pub(crate) fn current_generation(&self, agent: &AgentName, log: &Path) -> Option<Generation> {
        let replica = self.existing(agent)?;
        let mut replica = replica.lock().unwrap_or_else(PoisonError::into_inner);
        replica.current(log).then(|| replica.renderings.generation())
    }

    /// Refreshes `agent`'s replica and reads it; `hold` for whole listings, which keep the log
    /// held for their next one-`stat` check (see `refresh`).
    fn with_replica<R>(
        &self,
        agent: &AgentName,
        source: &Source<'_, T>,
        hold: bool,
        body: impl FnOnce(&mut Replica<T>) -> R,
    ) -> Result<R> {
        let replica = self.replica(agent);
        let mut replica = replica.lock().unwrap_or_else(PoisonError::into_inner);
        if let Err(err) = refresh(&mut replica, source, hold) {
            *replica = Replica::default();
            return Err(err);
        }
        Ok(body(&mut replica))
    }

    /// Ends the wait for records announced as new whose files never came: their creators
    /// were killed between their line and their file. The caller holds the directory's lock
    /// exclusively, so no creator is midway and a missing file will not appear; a `changed`
    /// line about each tells every process's index to stop looking for it.
    pub(crate) fn settle(&self, agent: &AgentName, source: &Source<'_, T>) -> Result<()> {
        self.read_settled(agent, source, |_, _| ())
    }

    /// Settles `agent`'s replica (see [`settle`](Self::settle)) and reads it: its records,
    /// and the ids of files there but not kept (`strays`). The caller holds the directory's
    /// lock exclusively: no writer in any process is midway and every change before the lock
    /// was named in the log before it was made, so the records are then the directory's kept
    /// records as they are, except those whose files could not be read (left out, as a read
    /// of the whole directory leaves them out) and those changed without a line (damage, a
    /// hand edit). So a writer can choose what to change from the index and read only the
    /// files it changes, letting each file decide and naming in the log one that disagrees.
    /// A refresh that fails here fails the writer (unlike a listing's best effort): its own
    /// line to the same log could not be written either.
    pub(crate) fn read_settled<R>(
        &self,
        agent: &AgentName,
        source: &Source<'_, T>,
        read: impl FnOnce(&BTreeMap<String, T>, &BTreeSet<String>) -> R,
    ) -> Result<R> {
        let replica = self.replica(agent);
        let mut replica = replica.lock().unwrap_or_else(PoisonError::into_inner);
        if let Err(err) = refresh(&mut replica, source, false) {
            *replica = Replica::default();
            return Err(err);
        }
        let abandoned: Vec<String> = replica
            .awaiting
            .iter()
            .filter(|id| !source.dir.join(format!("{id}.json")).exists())
            .cloned()
            .collect();
        for id in abandoned {
            tracing::info!(%agent, record = %id, "ending the wait for a record whose creator died");
            note(source.log, &id, Change::Changed, true)?;
            replica.awaiting.remove(&id);
        }
        Ok(read(&replica.records, &replica.strays))
    }

    /// Forgets `agent`'s replica: the agent was deleted here.
    pub(crate) fn forget(&self, agent: &AgentName) {
        self.replicas.lock().unwrap_or_else(PoisonError::into_inner).remove(agent);
    }

    /// Forgets the replicas of agents not in `agents` (sorted): agents deleted, here or by
    /// another process, whose replicas would otherwise keep their records and hold their
    /// deleted logs open. Forgetting is always safe: a replica is rebuilt when next listed.
    pub(crate) fn keep_only(&self, agents: &[AgentName]) {
        let mut replicas = self.replicas.lock().unwrap_or_else(PoisonError::into_inner);
        if replicas.len() > agents.len() {
            replicas.retain(|agent, _| agents.binary_search(agent).is_ok());
        }
    }

    fn replica(&self, agent: &AgentName) -> Arc<Mutex<Replica<T>>> {
        let mut replicas = self.replicas.lock().unwrap_or_else(PoisonError::into_inner);
        replicas.entry(agent.clone()).or_default().clone()
    }

    fn existing(&self, agent: &AgentName) -> Option<Arc<Mutex<Replica<T>>>> {
        self.replicas.lock().unwrap_or_else(PoisonError::into_inner).get(agent).cloned()
    }
}

/// The records whose ids come after `after` (all when `None`), in id order.
pub(crate) fn after<T>(
    records: &BTreeMap<String, T>,
    after: Option<String>,
) -> impl Iterator<Item = &T> {
    use std::ops::Bound;
    let from = after.map_or(Bound::Unbounded, Bound::Excluded);
    records.range::<String, _>((from, Bound::Unbounded)).map(|(_, record)| record)
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::change_log::{has_header, header_line};
    use super::*;
    use crate::fs::io;

    fn keep_all(_: &serde_json::Value) -> bool {
        true
    }

    /// A creator writes its line, then its file, while a reader refreshes as fast as it can:
    /// whatever moment a refresh catches a creation at, the record ends up listed once its
    /// file is there. Checking twice whether the file was there (a read, then `exists`) lost
    /// the records whose files appeared in between.
    #[test]
    fn records_created_during_refreshes_are_all_listed() {
        let dir = tempfile::tempdir().unwrap();
        let records = dir.path().join("records");
        fs::create_dir(&records).unwrap();
        let log = dir.path().join("records.changes.jsonl");
        let source = Source { dir: &records, log: &log, keep: keep_all };
        let done = std::sync::atomic::AtomicBool::new(false);
        const CREATED: usize = 1000;
        std::thread::scope(|scope| {
            scope.spawn(|| {
                for n in 0..CREATED {
                    let id = format!("{n:06}");
                    note(&log, &id, Change::New, false).unwrap();
                    // Written aside and renamed into place, as every record is.
                    let temp = records.join(format!(".{id}.tmp"));
                    fs::write(&temp, format!("{{\"n\":{n}}}")).unwrap();
                    fs::rename(&temp, records.join(format!("{id}.json"))).unwrap();
                }
                done.store(true, std::sync::atomic::Ordering::SeqCst);
            });
            // Readers that read the directory whole at some moment of the race (a process's
            // first listing), and one that only follows the log, all racing the creator.
            let mut follower = Replica::default();
            refresh(&mut follower, &source, true).unwrap();
            let mut scanned = Vec::new();
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                refresh(&mut follower, &source, true).unwrap();
                let mut replica = Replica::default();
                refresh(&mut replica, &source, true).unwrap();
                scanned.push(replica);
            }
            assert!(scanned.len() > 10, "the readers hardly raced the creator");
            for replica in scanned.iter_mut().chain([&mut follower]) {
                refresh(replica, &source, true).unwrap();
                assert_eq!(replica.records.len(), CREATED, "records a reader lost");
            }
        });
    }

    fn directory(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
        let records = dir.join("records");
        fs::create_dir_all(&records).unwrap();
        (records, dir.join("records.changes.jsonl"))
    }

    fn holds(index: &RecordIndex<serde_json::Value>, agent: &AgentName) -> bool {
        index.existing(agent).unwrap().lock().unwrap().followed.is_some()
    }

    /// Only whole listings take one of the process's few held descriptors: a writer's refresh
    /// (settle) or a partial read keeps a file already held only while it is the same file.
    #[test]
    fn only_a_whole_listing_takes_a_held_file() {
        let dir = tempfile::tempdir().unwrap();
        let (records, log) = directory(dir.path());
        let source = Source { dir: &records, log: &log, keep: keep_all };
        let agent = AgentName::parse("worker").unwrap();
        let index = RecordIndex::<serde_json::Value>::default();
        let listing = Listing { open: "[", render: |_| b"x".to_vec(), close: "]" };

        index.read(&agent, &source, |_| ()).unwrap();
        index.settle(&agent, &source).unwrap();
        assert!(!holds(&index, &agent), "a read or a writer's refresh held the log");
        index.body(&agent, &source, &listing).unwrap();
        assert!(holds(&index, &agent), "a whole listing holds its log");
        note(&log, "a", Change::Changed, true).unwrap();
        index.settle(&agent, &source).unwrap();
        assert!(holds(&index, &agent), "the same file, still held");
        // Replaced (as past its bound): the writer's refresh lets the old file go.
        io::write_bytes(&log, &header_line(&log).unwrap()).unwrap();
        index.read(&agent, &source, |_| ()).unwrap();
        assert!(!holds(&index, &agent), "a replaced log's old file still held");
    }

    #[test]
    fn a_creator_that_died_is_awaited_until_an_exclusive_writer_settles_it() {
        let dir = tempfile::tempdir().unwrap();
        let (records, log) = directory(dir.path());
        let source = Source { dir: &records, log: &log, keep: keep_all };
        let agent = AgentName::parse("worker").unwrap();
        let index = RecordIndex::<serde_json::Value>::default();
        // The creator's line, and no file: it was killed before writing it.
        note(&log, "dead", Change::New, false).unwrap();
        note(&log, "alive", Change::New, false).unwrap();
        fs::write(records.join("alive.json"), "{}").unwrap();
        assert_eq!(index.read(&agent, &source, |r| r.len()).unwrap(), 1);
        let awaited = |index: &RecordIndex<serde_json::Value>| {
            let replica = index.replica(&agent);
            let replica = replica.lock().unwrap();
            replica.awaiting.iter().cloned().collect::<Vec<_>>()
        };
        assert_eq!(awaited(&index), ["dead"]);
        // Another process's replica ends its wait by the line the settling writer appends.
        let other = RecordIndex::<serde_json::Value>::default();
        other.read(&agent, &source, |_| ()).unwrap();
        assert_eq!(awaited(&other), ["dead"]);
        index.settle(&agent, &source).unwrap();
        assert!(awaited(&index).is_empty());
        assert_eq!(other.read(&agent, &source, |r| r.len()).unwrap(), 1);
        assert!(awaited(&other).is_empty(), "the settling line reached the other replica");
        // A fresh replica (a process started later) does not wait for it either.
        let fresh = RecordIndex::<serde_json::Value>::default();
        fresh.read(&agent, &source, |_| ()).unwrap();
        assert!(awaited(&fresh).is_empty());
    }

    #[test]
    fn an_unreadable_record_is_left_out_and_read_again_once_it_can_be() {
        let dir = tempfile::tempdir().unwrap();
        let (records, log) = directory(dir.path());
        let source = Source { dir: &records, log: &log, keep: keep_all };
        let agent = AgentName::parse("worker").unwrap();
        let index = RecordIndex::<serde_json::Value>::default();
        fs::write(records.join("a.json"), "{}").unwrap();
        // A directory by a record's name: reading it fails with an I/O error, as EACCES does.
        fs::create_dir(records.join("b.json")).unwrap();
        assert_eq!(index.read(&agent, &source, |r| r.len()).unwrap(), 1);
        note(&log, "c", Change::New, false).unwrap();
        fs::write(records.join("c.json"), "{}").unwrap();
        assert_eq!(index.read(&agent, &source, |r| r.len()).unwrap(), 2);
        // Readable again: listed without any line about it.
        fs::remove_dir(records.join("b.json")).unwrap();
        fs::write(records.join("b.json"), "{}").unwrap();
        let ids = index.read(&agent, &source, |r| r.keys().cloned().collect::<Vec<_>>()).unwrap();
        assert_eq!(ids, ["a", "b", "c"]);
    }

    #[test]
    fn a_log_without_its_header_is_replaced_by_the_next_exclusive_writer() {
        let dir = tempfile::tempdir().unwrap();
        let (_records, log) = directory(dir.path());
        // As a power loss can leave the never-synced log: lines, but no header.
        fs::write(&log, "{\"changed\":\"x\"}\n").unwrap();
        note(&log, "y", Change::New, false).unwrap();
        assert!(!has_header(&log).unwrap(), "a creator (shared lock) never replaces the log");
        note(&log, "z", Change::Changed, true).unwrap();
        assert!(has_header(&log).unwrap());
        let lines = fs::read_to_string(&log).unwrap();
        assert_eq!(lines.lines().count(), 2, "{lines}");
    }
}
