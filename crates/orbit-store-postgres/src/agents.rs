//! Agents: one row each; deleting one cascades to its sessions, inbox, tasks, runs and
//! memory in the same statement, and a write racing the deletion either lands before it (and
//! goes with it) or meets the foreign key and fails as `NotFound`.

use async_trait::async_trait;
use orbit_store::{
    Agent, AgentName, AgentPatch, AgentStore, Error, NewAgent, Result, SessionId, WorkingDir,
    WorktreeOwner, timestamp,
};

use crate::PgStore;
use crate::db::{self, doc, docs, json, not_found, transaction};
use crate::error::Failure;

type Tx<'a> = deadpool_postgres::Transaction<'a>;

/// Makes the agent; `None` when the name is taken.
async fn insert(tx: &Tx<'_>, name: &AgentName, new: NewAgent) -> Result<Option<Agent>, Failure> {
    let agent = Agent::new(name, new);
    let made = db::execute(
        tx,
        "INSERT INTO agents (name, doc) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        &[&name.as_str(), &json(&agent)?],
    )
    .await?;
    Ok((made == 1).then_some(agent))
}

async fn select(tx: &Tx<'_>, name: &AgentName, lock: bool) -> Result<Agent, Failure> {
    let sql = if lock {
        "SELECT doc FROM agents WHERE name = $1 FOR UPDATE"
    } else {
        "SELECT doc FROM agents WHERE name = $1"
    };
    match db::row(tx, sql, &[&name.as_str()]).await? {
        Some(row) => doc(&row),
        None => Err(not_found("agent", name)),
    }
}

/// Reads the agent under its row lock, changes it, writes it back.
async fn modify<T>(
    tx: &Tx<'_>,
    name: &AgentName,
    change: impl FnOnce(&mut Agent) -> T,
) -> Result<T, Failure> {
    let mut agent = select(tx, name, true).await?;
    let answer = change(&mut agent);
    db::execute(
        tx,
        "UPDATE agents SET doc = $2 WHERE name = $1",
        &[&name.as_str(), &json(&agent)?],
    )
    .await?;
    Ok(answer)
}

#[async_trait]
impl AgentStore for PgStore {
    async fn create(&self, name: &AgentName, new: NewAgent) -> Result<Agent> {
        let made = transaction!(self, |tx| insert(&tx, name, new.clone()))?;
        made.ok_or_else(|| Error::AlreadyExists { what: "agent", id: name.to_string() })
    }

    async fn ensure(&self, name: &AgentName) -> Result<Agent> {
        transaction!(self, |tx| async {
            match insert(&tx, name, NewAgent::default()).await? {
                Some(agent) => Ok(agent),
                None => select(&tx, name, false).await,
            }
        })
    }

    async fn get(&self, name: &AgentName) -> Result<Agent> {
        transaction!(self, |tx| select(&tx, name, false))
    }

    async fn list(&self) -> Result<Vec<Agent>> {
        transaction!(self, |tx| async {
            Ok(docs(&db::rows(&tx, "SELECT doc FROM agents ORDER BY name", &[]).await?))
        })
    }

    async fn update(&self, name: &AgentName, patch: AgentPatch) -> Result<Agent> {
        transaction!(self, |tx| modify(&tx, name, |agent| {
            patch.clone().apply(agent);
            agent.clone()
        }))
    }

    async fn delete(&self, name: &AgentName) -> Result<()> {
        let tasks = transaction!(self, |tx| async {
            // The agent's row locked first: a task being made for it waits on the lock (its
            // foreign key), so the tasks read next are all that the deletion takes.
            let locked =
                db::row(&tx, "SELECT 1 FROM agents WHERE name = $1 FOR UPDATE", &[&name.as_str()])
                    .await?;
            if locked.is_none() {
                return Err(not_found("agent", name));
            }
            let rows =
                db::rows(&tx, "SELECT id FROM tasks WHERE agent = $1", &[&name.as_str()]).await?;
            let mut tasks = Vec::with_capacity(rows.len());
            for row in &rows {
                let id: String = row.try_get(0).map_err(Failure::Db)?;
                if let Ok(id) = id.parse::<orbit_store::TaskId>() {
                    tasks.push(id);
                }
            }
            db::execute(&tx, "DELETE FROM agents WHERE name = $1", &[&name.as_str()]).await?;
            // Its tasks went with it by the foreign key: the feed says so of each, in this
            // transaction, so that every node's scheduler stops planning them now rather than
            // at its next re-read of every task.
            for task in &tasks {
                crate::tasks::publish(&tx, name, task).await?;
            }
            Ok(tasks)
        })?;
        if !tasks.is_empty() {
            self.tick_task_changes();
        }
        Ok(())
    }

    async fn claim_main_session(
        &self,
        name: &AgentName,
        candidate: SessionId,
        stale: Option<SessionId>,
    ) -> Result<SessionId> {
        transaction!(self, |tx| modify(&tx, name, |agent| match agent.main_session_id {
            Some(current) if Some(current) != stale => current,
            _ => {
                agent.main_session_id = Some(candidate);
                candidate
            }
        }))
    }

    async fn update_last_active(&self, name: &AgentName) -> Result<()> {
        transaction!(self, |tx| modify(&tx, name, |agent| agent.last_active_at = timestamp::now()))
    }

    async fn working_dir(&self, name: &AgentName) -> Result<WorkingDir> {
        let agent = transaction!(self, |tx| select(&tx, name, false))?;
        // The workspace is this node's own, under its data directory; a workdir is the
        // user's directory on the node (each node checks it exists there).
        let workspaces = &self.inner.options.workspaces;
        // Orbit's records of the worktrees it makes are this node's, like the worktrees.
        let data_dir = workspaces.parent().unwrap_or(workspaces).to_owned();
        let owner = WorktreeOwner {
            agent: name.clone(),
            records: data_dir.join("agents").join(name.as_str()).join("worktree-branches"),
            data_dir,
        };
        WorkingDir::of(&agent, owner, || {
            let dir = workspaces.join(name.as_str());
            make_private_dir(&dir)?;
            Ok(dir)
        })
    }
}

/// Makes `dir` (and its parents) readable by the owner only, as the filesystem store does.
pub(crate) fn make_private_dir(dir: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| Error::Io { path: dir.to_owned(), source })
}
