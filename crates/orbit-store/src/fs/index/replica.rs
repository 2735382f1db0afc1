//! One directory's records as this process last read them (`Replica`), and the refresh that
//! brings a replica up to date from the directory and its change log, deciding each record
//! from one read of its file (see `index` for why that is right with several processes).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::Path;

use serde::de::DeserializeOwned;

use super::Source;
use super::change_log::{Change, Line, create_log, last_changes, read_from, read_header};
use crate::fs::follow::Followed;
use crate::fs::io;
use crate::ids::JournalId;
use crate::render::Renderings;
use crate::{Error, Result};

/// One directory's records as this process last read them.
pub(super) struct Replica<T> {
    /// The header of the log consumed; `None` until the first refresh.
    pub(super) log: Option<JournalId>,
    /// Bytes of the log consumed (always the end of a complete line).
    pub(super) offset: u64,
    pub(super) records: BTreeMap<String, T>,
    /// Ids to look at again at every refresh: announced as `new` with no file yet, or with a
    /// file that could not be read.
    pub(super) awaiting: BTreeSet<String>,
    /// Ids whose file is there but not kept: not belonging in the index (the inbox's closed
    /// messages a crash left in `open/`) or not parseable. Normally none; a writer holding the
    /// lock exclusively moves them on (see `RecordIndex::read_settled`).
    pub(super) strays: BTreeSet<String>,
    /// The renderings of the records listed whole and their last body (see `render`), each
    /// rendering forgotten, and the body dropped, when a record changes.
    pub(super) renderings: Renderings<String, T>,
    /// The log as this replica last read it, held open (see `follow`).
    pub(super) followed: Option<Followed>,
}

impl<T> Default for Replica<T> {
    fn default() -> Self {
        Self {
            log: None,
            offset: 0,
            records: BTreeMap::new(),
            awaiting: BTreeSet::new(),
            strays: BTreeSet::new(),
            renderings: Renderings::default(),
            followed: None,
        }
    }
}

impl<T> Replica<T> {
    /// Whether this replica is current without a refresh: its log is the file it read last,
    /// grown by nothing since, and no record is awaited (see the module docs). One `stat`.
    /// A log found changed is let go at once: the refresh that follows holds the file anew,
    /// and a log deleted with its agent is not kept open meanwhile.
    pub(super) fn current(&mut self, log: &Path) -> bool {
        let current = self.awaiting.is_empty()
            && self.followed.as_ref().is_some_and(|followed| followed.unchanged(log, self.offset));
        if !current {
            self.followed = None;
        }
        current
    }
}

/// What one read of a record's file found. A refresh decides from this single observation
/// whether to keep, drop or await a record: looking at the file twice (a read, then an
/// `exists`) would let a creator's file appear in between, and the record be neither kept
/// nor awaited, missing from the listing for good.
enum Found<T> {
    /// There, and belonging in the index.
    Kept(T),
    /// There, but not kept (the inbox's closed messages) or not parseable.
    Skipped,
    /// No file.
    Missing,
    /// There, but reading it failed (EACCES, EIO, a directory by that name): left out of
    /// listings, as a full read leaves it out, and read again at every refresh. One such
    /// file must not fail every listing of the directory.
    Unreadable,
}

impl<T: DeserializeOwned> Source<'_, T> {
    /// The record `id` as its file is now.
    fn load(&self, id: &str) -> Result<Found<T>> {
        match io::read_json::<T>(&self.dir.join(format!("{id}.json"))) {
            Ok(Some(record)) if (self.keep)(&record) => Ok(Found::Kept(record)),
            Ok(Some(_)) => Ok(Found::Skipped),
            Ok(None) => Ok(Found::Missing),
            Err(err @ Error::Io { .. }) => {
                tracing::warn!(error = %err, "leaving out a record that could not be read");
                Ok(Found::Unreadable)
            }
            Err(err) => {
                tracing::warn!(error = %err, "skipping a record that does not parse");
                Ok(Found::Skipped)
            }
        }
    }
}

/// Brings `replica` up to date with `source`. With `hold` (a whole listing's refresh) the log
/// is held open afterwards for the next listing's one-`stat` check; without (a writer's, or a
/// partial read's), the file held before is let go, so that only listings use the process's
/// few held descriptors (see `follow`).
pub(super) fn refresh<T: DeserializeOwned>(
    replica: &mut Replica<T>,
    source: &Source<'_, T>,
    hold: bool,
) -> Result<()> {
    let log = source.log;
    let mut file = match File::open(log) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            create_log(log)?;
            File::open(log).map_err(|err| Error::io(log, err))?
        }
        Err(err) => return Err(Error::io(log, err)),
    };
    let metadata = file.metadata().map_err(|err| Error::io(log, err))?;
    catch_up(replica, source, &mut file, metadata.len())?;
    // Held from here on, for the next listing's one-`stat` check (see `follow`); the file
    // held before is let go first, so that a replica never holds two.
    if hold {
        replica.followed = None;
        replica.followed = Followed::hold(file, &metadata);
    } else if !replica.followed.as_ref().is_some_and(|followed| followed.is(&metadata)) {
        replica.followed = None;
    }
    Ok(())
}

/// Brings `replica` up to date with the log `file`, `len` bytes long.
fn catch_up<T: DeserializeOwned>(
    replica: &mut Replica<T>,
    source: &Source<'_, T>,
    file: &mut File,
    len: u64,
) -> Result<()> {
    let log = source.log;
    let header = read_header(file, log)?;
    if header.is_none() || header != replica.log || len < replica.offset {
        // A log new to this process: read every record. Lines appended from here on are read
        // at the next refresh, so nothing written during the scan is missed; a creator whose
        // line came before but whose file is not there yet (one holds the lock only shared)
        // is awaited, as its line were read now.
        let bytes = read_from(file, log, 0, len)?;
        let (lines, consumed) = io::parse_jsonl::<Line>(log, &bytes);
        let mut records = BTreeMap::new();
        let mut listed = BTreeSet::new();
        let mut awaiting = BTreeSet::new();
        let mut strays = BTreeSet::new();
        for name in io::list_names(source.dir, ".json")? {
            let Some(id) = name.strip_suffix(".json") else { continue };
            listed.insert(id.to_owned());
            match source.load(id)? {
                Found::Kept(record) => {
                    records.insert(id.to_owned(), record);
                }
                Found::Unreadable => {
                    awaiting.insert(id.to_owned());
                }
                Found::Skipped => {
                    strays.insert(id.to_owned());
                }
                Found::Missing => {}
            }
        }
        // Judged against the listing, not the directory as it is now: a file that appeared
        // since was not read, and is awaited (read at the next refresh) like one still to come.
        for (id, change) in last_changes(lines) {
            if change == Change::New && !listed.contains(&id) {
                awaiting.insert(id);
            }
        }
        *replica = Replica {
            log: header,
            offset: consumed as u64,
            records,
            awaiting,
            strays,
            renderings: Renderings::default(),
            followed: None,
        };
        return Ok(());
    }
    if len == replica.offset && replica.awaiting.is_empty() {
        return Ok(());
    }
    let bytes = read_from(file, log, replica.offset, len)?;
    let (lines, complete) = io::parse_jsonl::<Line>(log, &bytes);
    // The last line about an id says whether it may still be on its way.
    let mut touched: BTreeMap<String, Change> =
        std::mem::take(&mut replica.awaiting).into_iter().map(|id| (id, Change::New)).collect();
    touched.extend(last_changes(lines));
    for (id, change) in touched {
        // A record read again is a change (its rendering forgotten, a new generation, the
        // body dropped); one still missing or left out, as it was, is not.
        let found = source.load(&id)?;
        let changed = match &found {
            Found::Kept(_) => true,
            Found::Skipped | Found::Missing | Found::Unreadable => {
                replica.records.contains_key(&id)
            }
        };
        if changed {
            replica.renderings.changed(&id);
        }
        if matches!(found, Found::Skipped) {
            replica.strays.insert(id.clone());
        } else {
            replica.strays.remove(&id);
        }
        match found {
            Found::Kept(record) => {
                replica.records.insert(id, record);
            }
            Found::Skipped => {
                replica.records.remove(&id);
            }
            Found::Missing => {
                replica.records.remove(&id);
                if change == Change::New {
                    replica.awaiting.insert(id);
                }
            }
            Found::Unreadable => {
                replica.records.remove(&id);
                replica.awaiting.insert(id);
            }
        }
    }
    replica.offset += complete as u64;
    Ok(())
}
