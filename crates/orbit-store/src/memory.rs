//! An agent's memory: one markdown file per day.

use std::path::PathBuf;

use async_trait::async_trait;
use serde::Serialize;
use time::{Date, OffsetDateTime};

use crate::{AgentName, Result};

/// One line of memory that matched a search.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MemoryHit {
    /// The day, `YYYY-MM-DD`.
    pub date: String,
    /// The 1-based line number in that day's file.
    pub line: usize,
    pub text: String,
}

/// Storage of agents' daily memory.
#[async_trait]
pub trait MemoryStore: Send + Sync {
    /// Appends an entry under a heading with its time to the file of `at`'s day.
    async fn append(&self, agent: &AgentName, at: OffsetDateTime, entry: &str) -> Result<()>;
    /// The file of one day, `None` when nothing was written that day.
    async fn read_day(&self, agent: &AgentName, day: Date) -> Result<Option<String>>;
    /// The days that have entries, oldest first.
    async fn list_days(&self, agent: &AgentName) -> Result<Vec<Date>>;
    /// Lines containing `query` (case-insensitive), newest day first, at most `limit`.
    async fn search(&self, agent: &AgentName, query: &str, limit: usize) -> Result<Vec<MemoryHit>>;
    /// Where an agent's memory files are, for implementations that keep them as files (the
    /// agent is told so that its own tools can read them).
    fn location(&self, agent: &AgentName) -> Option<PathBuf> {
        let _ = agent;
        None
    }
}
