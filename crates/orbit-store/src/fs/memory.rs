//! Daily memory as `agents/<name>/memory/YYYY-MM-DD.md`, appended durably.

use std::path::PathBuf;

use async_trait::async_trait;
use time::macros::format_description;
use time::{Date, OffsetDateTime, UtcOffset};

use super::{FsStore, Inner, io};
use crate::{AgentName, Error, MemoryHit, MemoryStore, Result};

const DAY_FORMAT: &[time::format_description::BorrowedFormatItem<'_>] =
    format_description!("[year]-[month]-[day]");

impl Inner {
    fn memory_dir(&self, agent: &AgentName) -> PathBuf {
        self.agent_dir(agent).join("memory")
    }

    fn day_path(&self, agent: &AgentName, day: Date) -> Result<PathBuf> {
        let name = day
            .format(DAY_FORMAT)
            .map_err(|err| Error::Invalid(format!("unprintable day: {err}")))?;
        Ok(self.memory_dir(agent).join(format!("{name}.md")))
    }

    fn memory_days(&self, agent: &AgentName) -> Result<Vec<Date>> {
        let names = io::list_names(&self.memory_dir(agent), ".md")?;
        Ok(names
            .iter()
            .filter_map(|name| Date::parse(name.trim_end_matches(".md"), DAY_FORMAT).ok())
            .collect())
    }
}

#[async_trait]
impl MemoryStore for FsStore {
    async fn append(&self, agent: &AgentName, at: OffsetDateTime, entry: &str) -> Result<()> {
        let (agent, entry) = (agent.clone(), entry.to_owned());
        self.blocking(move |s| {
            // Under the agent's lock, like every write of the agent's: an append racing the
            // agent's deletion cannot recreate its directory.
            s.with_agent(&agent, || {
                let at = at.to_offset(UtcOffset::UTC);
                let path = s.day_path(&agent, at.date())?;
                io::ensure_dir(&s.memory_dir(&agent))?;
                let heading =
                    format!("## {:02}:{:02}:{:02} UTC", at.hour(), at.minute(), at.second());
                io::append_line(&path, format!("{heading}\n\n{}\n", entry.trim_end()).as_bytes())
            })
        })
        .await
    }

    async fn read_day(&self, agent: &AgentName, day: Date) -> Result<Option<String>> {
        let agent = agent.clone();
        self.blocking(move |s| {
            s.require_agent(&agent)?;
            let path = s.day_path(&agent, day)?;
            match std::fs::read_to_string(&path) {
                Ok(text) => Ok(Some(text)),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(err) => Err(Error::io(path, err)),
            }
        })
        .await
    }

    async fn list_days(&self, agent: &AgentName) -> Result<Vec<Date>> {
        let agent = agent.clone();
        self.blocking(move |s| {
            s.require_agent(&agent)?;
            s.memory_days(&agent)
        })
        .await
    }

    async fn search(&self, agent: &AgentName, query: &str, limit: usize) -> Result<Vec<MemoryHit>> {
        let needle = query.trim().to_lowercase();
        if needle.is_empty() {
            return Err(Error::Invalid("search query must not be empty".into()));
        }
        let agent = agent.clone();
        self.blocking(move |s| {
            s.require_agent(&agent)?;
            let mut hits = Vec::new();
            for day in s.memory_days(&agent)?.into_iter().rev() {
                let path = s.day_path(&agent, day)?;
                let Ok(text) = std::fs::read_to_string(&path) else { continue };
                let date = day.format(DAY_FORMAT).unwrap_or_default();
                for (index, line) in text.lines().enumerate() {
                    if line.to_lowercase().contains(&needle) {
                        hits.push(MemoryHit {
                            date: date.clone(),
                            line: index + 1,
                            text: line.to_owned(),
                        });
                        if hits.len() >= limit {
                            return Ok(hits);
                        }
                    }
                }
            }
            Ok(hits)
        })
        .await
    }

    fn location(&self, agent: &AgentName) -> Option<PathBuf> {
        Some(self.inner.memory_dir(agent))
    }
}
