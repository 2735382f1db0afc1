//! Agents' daily memory: a row per agent and day, appended to in one statement.

use async_trait::async_trait;
use orbit_store::{AgentName, Error, MemoryHit, MemoryStore, Result};
use time::macros::format_description;
use time::{Date, OffsetDateTime, UtcOffset};

use crate::PgStore;
use crate::db::{self, not_found, require_agent, transaction};
use crate::error::{FOREIGN_KEY_VIOLATION, violates};

const DAY_FORMAT: &[time::format_description::BorrowedFormatItem<'_>] =
    format_description!("[year]-[month]-[day]");

#[async_trait]
impl MemoryStore for PgStore {
    async fn append(&self, agent: &AgentName, at: OffsetDateTime, entry: &str) -> Result<()> {
        let at = at.to_offset(UtcOffset::UTC);
        // The same text the filesystem store appends, so a day reads the same from both.
        let heading = format!("## {:02}:{:02}:{:02} UTC", at.hour(), at.minute(), at.second());
        let text = format!("{heading}\n\n{}\n\n", entry.trim_end());
        transaction!(self, |tx| async {
            let appended = db::execute(
                &tx,
                "INSERT INTO memory (agent, day, body) VALUES ($1, $2, $3) \
                 ON CONFLICT (agent, day) DO UPDATE SET body = memory.body || EXCLUDED.body",
                &[&agent.as_str(), &at.date(), &text],
            )
            .await;
            match appended {
                Err(err) if violates(&err, FOREIGN_KEY_VIOLATION) => Err(not_found("agent", agent)),
                other => other.map(drop),
            }
        })
    }

    async fn read_day(&self, agent: &AgentName, day: Date) -> Result<Option<String>> {
        transaction!(self, |tx| async {
            let row = db::row(
                &tx,
                "SELECT body FROM memory WHERE agent = $1 AND day = $2",
                &[&agent.as_str(), &day],
            )
            .await?;
            if row.is_none() {
                require_agent(&tx, agent).await?;
            }
            Ok(row.map(|row| row.get(0)))
        })
    }

    async fn list_days(&self, agent: &AgentName) -> Result<Vec<Date>> {
        transaction!(self, |tx| async {
            let rows = db::rows(
                &tx,
                "SELECT day FROM memory WHERE agent = $1 ORDER BY day",
                &[&agent.as_str()],
            )
            .await?;
            if rows.is_empty() {
                require_agent(&tx, agent).await?;
            }
            Ok(rows.iter().map(|row| row.get(0)).collect())
        })
    }

    async fn search(&self, agent: &AgentName, query: &str, limit: usize) -> Result<Vec<MemoryHit>> {
        let needle = query.trim().to_lowercase();
        if needle.is_empty() {
            return Err(Error::Invalid("search query must not be empty".into()));
        }
        // The database picks the days that contain the text; the lines are found here, with
        // the same case folding as the other stores.
        let days: Vec<(Date, String)> = transaction!(self, |tx| async {
            let rows = db::rows(
                &tx,
                "SELECT day, body FROM memory WHERE agent = $1 \
                 AND strpos(lower(body), $2) > 0 ORDER BY day DESC",
                &[&agent.as_str(), &needle],
            )
            .await?;
            if rows.is_empty() {
                require_agent(&tx, agent).await?;
            }
            Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
        })?;
        let mut hits = Vec::new();
        for (day, text) in days {
            let date = day.format(DAY_FORMAT).unwrap_or_default();
            for (index, line) in text.lines().enumerate() {
                if line.to_lowercase().contains(&needle) {
                    hits.push(MemoryHit { date: date.clone(), line: index + 1, text: line.into() });
                    if hits.len() >= limit {
                        return Ok(hits);
                    }
                }
            }
        }
        Ok(hits)
    }
}
