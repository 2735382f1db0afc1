//! Tasks and runs as JSON documents under row locks, slots claimed against a unique key, and
//! the task change feed as a table read from a cursor.
//!
//! A task's row is locked (`FOR UPDATE`) by every operation that changes the task or starts,
//! skips or settles one of its runs, so those operations follow one another per task across
//! nodes exactly as under the other stores' locks, and the rules are `orbit-store`'s own
//! (`Run::complete`, `Run::interrupt`, `TaskPatch::apply`).
//!
//! The change feed: each change is a row with a sequence number, appended in the transaction
//! that made the change while holding an advisory lock, so sequence numbers become visible
//! in order and a reader that saw number `n` has seen every change before it.

use async_trait::async_trait;
use orbit_store::{
    AgentName, ChangeCursor, Error, Lease, LeaseToken, NewTask, Result, Run, RunId, RunOutcome,
    RunStart, RunStatus, SessionId, Task, TaskChange, TaskChanges, TaskId, TaskPatch, TaskStore,
    timestamp,
};
use time::OffsetDateTime;

use crate::PgStore;
use crate::db::{self, doc, docs, json, not_found, require_agent, transaction};
use crate::error::{FOREIGN_KEY_VIOLATION, Failure, violates};

type Tx<'a> = deadpool_postgres::Transaction<'a>;

/// Names the change feed's advisory lock among the database's.
const FEED_LOCK: i64 = 0x0_7b17_fee0;
/// Changes older than this many are pruned (a reader further behind re-reads every task).
const FEED_KEPT: i64 = 10_000;
/// Pruning runs at every this many changes.
const FEED_PRUNE_EVERY: i64 = 1_000;

async fn select(tx: &Tx<'_>, agent: &AgentName, id: &TaskId, lock: bool) -> Result<Task, Failure> {
    let sql = if lock {
        "SELECT doc FROM tasks WHERE agent = $1 AND id = $2 FOR UPDATE"
    } else {
        "SELECT doc FROM tasks WHERE agent = $1 AND id = $2"
    };
    match db::row(tx, sql, &[&agent.as_str(), &id.to_string()]).await? {
        Some(row) => doc(&row),
        None => {
            require_agent(tx, agent).await?;
            Err(not_found("task", id))
        }
    }
}

async fn write_task(tx: &Tx<'_>, task: &Task) -> Result<(), Failure> {
    db::execute(
        tx,
        "UPDATE tasks SET doc = $3 WHERE agent = $1 AND id = $2",
        &[&task.agent_name.as_str(), &task.id.to_string(), &json(task)?],
    )
    .await?;
    Ok(())
}

async fn select_run(
    tx: &Tx<'_>,
    agent: &AgentName,
    task: &TaskId,
    id: &RunId,
) -> Result<Option<Run>, Failure> {
    let row = db::row(
        tx,
        "SELECT doc FROM runs WHERE agent = $1 AND task_id = $2 AND id = $3",
        &[&agent.as_str(), &task.to_string(), &id.to_string()],
    )
    .await?;
    row.map(|row| doc(&row)).transpose()
}

/// A run of a task whose row the caller locked; `NotFound` when unknown.
async fn require_run(
    tx: &Tx<'_>,
    agent: &AgentName,
    task: &TaskId,
    id: &RunId,
) -> Result<Run, Failure> {
    select_run(tx, agent, task, id).await?.ok_or_else(|| not_found("run", id))
}

async fn write_run(tx: &Tx<'_>, agent: &AgentName, run: &Run) -> Result<(), Failure> {
    db::execute(
        tx,
        "INSERT INTO runs (agent, task_id, id, status, doc) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (agent, task_id, id) DO UPDATE SET status = $4, doc = $5",
        &[
            &agent.as_str(),
            &run.task_id.to_string(),
            &run.id.to_string(),
            &status_name(run.status),
            &json(run)?,
        ],
    )
    .await?;
    Ok(())
}

fn status_name(status: RunStatus) -> &'static str {
    match status {
        RunStatus::Running => "running",
        RunStatus::Success => "success",
        RunStatus::Error => "error",
        RunStatus::Skipped => "skipped",
    }
}

/// Keeps the task's newest `kept` run records (skips included).
async fn prune_runs(
    tx: &Tx<'_>,
    agent: &AgentName,
    task: &TaskId,
    kept: usize,
) -> Result<(), Failure> {
    let kept = i64::try_from(kept).unwrap_or(i64::MAX);
    db::execute(
        tx,
        "DELETE FROM runs WHERE agent = $1 AND task_id = $2 AND id < ( \
            SELECT id FROM runs WHERE agent = $1 AND task_id = $2 \
            ORDER BY id DESC OFFSET $3::bigint - 1 LIMIT 1)",
        &[&agent.as_str(), &task.to_string(), &kept],
    )
    .await?;
    Ok(())
}

fn interrupt(agent: &AgentName, run: &mut Run, now: OffsetDateTime) {
    let holder = run.lease.map(|lease| lease.instance.to_string()).unwrap_or_default();
    tracing::warn!(%agent, task = %run.task_id, run = %run.id, %holder, "marking a run interrupted: its server stopped renewing it");
    run.interrupt(now);
}

fn not_held(run: &RunId, detail: String) -> Failure {
    Failure::Store(Error::Conflict(format!("run {run} is no longer held by this server{detail}")))
}

/// Appends a change of `task` to the feed, in the caller's transaction.
pub(crate) async fn publish(tx: &Tx<'_>, agent: &AgentName, task: &TaskId) -> Result<(), Failure> {
    db::execute(tx, "SELECT pg_advisory_xact_lock($1)", &[&FEED_LOCK]).await?;
    let seq: i64 = db::row(
        tx,
        "INSERT INTO task_changes (agent, task_id) VALUES ($1, $2) RETURNING seq",
        &[&agent.as_str(), &task.to_string()],
    )
    .await?
    .map(|row| row.get(0))
    .unwrap_or(0);
    if seq % FEED_PRUNE_EVERY == 0 {
        let upto = seq - FEED_KEPT;
        db::execute(tx, "DELETE FROM task_changes WHERE seq <= $1", &[&upto]).await?;
        db::execute(
            tx,
            "UPDATE orbit_feed SET pruned_upto = GREATEST(pruned_upto, $1) WHERE id = 1",
            &[&upto],
        )
        .await?;
    }
    // Other nodes' schedulers are woken by the notification, delivered at commit.
    db::execute(tx, "SELECT pg_notify($1, $2)", &[&crate::notify::TASK_CHANGES, &seq.to_string()])
        .await?;
    Ok(())
}

#[async_trait]
impl TaskStore for PgStore {
    async fn create(&self, agent: &AgentName, new: NewTask) -> Result<Task> {
        if new.prompt.trim().is_empty() {
            return Err(Error::Invalid("prompt must not be empty".into()));
        }
        let task = Task::new(agent, new, timestamp::now());
        transaction!(self, |tx| async {
            let inserted = db::execute(
                &tx,
                "INSERT INTO tasks (agent, id, doc) VALUES ($1, $2, $3)",
                &[&agent.as_str(), &task.id.to_string(), &json(&task)?],
            )
            .await;
            match inserted {
                Err(err) if violates(&err, FOREIGN_KEY_VIOLATION) => {
                    return Err(not_found("agent", agent));
                }
                other => other?,
            };
            publish(&tx, agent, &task.id).await
        })?;
        self.tick_task_changes();
        Ok(task)
    }

    async fn get(&self, agent: &AgentName, id: &TaskId) -> Result<Task> {
        transaction!(self, |tx| select(&tx, agent, id, false))
    }

    async fn list_by_agent(&self, agent: &AgentName) -> Result<Vec<Task>> {
        transaction!(self, |tx| async {
            let rows = db::rows(
                &tx,
                "SELECT doc FROM tasks WHERE agent = $1 ORDER BY id",
                &[&agent.as_str()],
            )
            .await?;
            if rows.is_empty() {
                require_agent(&tx, agent).await?;
            }
            Ok(docs(&rows))
        })
    }

    async fn list_all(&self) -> Result<Vec<Task>> {
        transaction!(self, |tx| async {
            Ok(docs(&db::rows(&tx, "SELECT doc FROM tasks ORDER BY agent, id", &[]).await?))
        })
    }

    async fn update(&self, agent: &AgentName, id: &TaskId, patch: TaskPatch) -> Result<Task> {
        let task = transaction!(self, |tx| async {
            let mut task = select(&tx, agent, id, true).await?;
            patch.clone().apply(&mut task);
            write_task(&tx, &task).await?;
            publish(&tx, agent, id).await?;
            Ok(task)
        })?;
        self.tick_task_changes();
        Ok(task)
    }

    async fn delete(&self, agent: &AgentName, id: &TaskId) -> Result<()> {
        transaction!(self, |tx| async {
            let removed = db::execute(
                &tx,
                "DELETE FROM tasks WHERE agent = $1 AND id = $2",
                &[&agent.as_str(), &id.to_string()],
            )
            .await?;
            if removed == 0 {
                require_agent(&tx, agent).await?;
                return Err(not_found("task", id));
            }
            publish(&tx, agent, id).await
        })?;
        self.tick_task_changes();
        Ok(())
    }

    async fn start_run(
        &self,
        agent: &AgentName,
        task: &TaskId,
        session: Option<SessionId>,
        lease: Lease,
        now: OffsetDateTime,
    ) -> Result<RunStart> {
        let kept = self.inner.options.records.runs_kept;
        transaction!(self, |tx| async {
            let mut record = select(&tx, agent, task, true).await?;
            if let Some(previous) = record.latest_run
                && let Some(mut previous) = select_run(&tx, agent, task, &previous).await?
                && previous.status == RunStatus::Running
            {
                match previous.lease {
                    Some(held) if !held.expired_at(now) => return Ok(RunStart::Overlap(previous)),
                    _ => {
                        interrupt(agent, &mut previous, now);
                        write_run(&tx, agent, &previous).await?;
                    }
                }
            }
            let run = Run::started(*task, session, lease, now);
            write_run(&tx, agent, &run).await?;
            record.latest_run = Some(run.id);
            write_task(&tx, &record).await?;
            prune_runs(&tx, agent, task, kept).await?;
            Ok(RunStart::Started(run))
        })
    }

    async fn record_skip(
        &self,
        agent: &AgentName,
        task: &TaskId,
        now: OffsetDateTime,
    ) -> Result<Run> {
        let kept = self.inner.options.records.runs_kept;
        transaction!(self, |tx| async {
            let mut record = select(&tx, agent, task, true).await?;
            // Skips join the newest skip record while no run started after it (ids are
            // ULIDs, so a later run has a greater id).
            let consecutive = record
                .latest_skip
                .is_some_and(|skip| record.latest_run.is_none_or(|run| run < skip));
            if consecutive
                && let Some(skip_id) = record.latest_skip
                && let Some(mut skip) = select_run(&tx, agent, task, &skip_id).await?
            {
                skip.skipped_slots = Some(skip.skipped_slots.unwrap_or(1).saturating_add(1));
                skip.completed_at = Some(now);
                write_run(&tx, agent, &skip).await?;
                return Ok(skip);
            }
            let run = Run::skipped(*task, now);
            write_run(&tx, agent, &run).await?;
            record.latest_skip = Some(run.id);
            write_task(&tx, &record).await?;
            prune_runs(&tx, agent, task, kept).await?;
            Ok(run)
        })
    }

    async fn renew_run(
        &self,
        agent: &AgentName,
        task: &TaskId,
        run: &RunId,
        token: &LeaseToken,
        until: OffsetDateTime,
    ) -> Result<()> {
        transaction!(self, |tx| async {
            select(&tx, agent, task, true).await?;
            let mut record = require_run(&tx, agent, task, run).await?;
            if !record.renew(token, until) {
                return Err(not_held(run, String::new()));
            }
            write_run(&tx, agent, &record).await
        })
    }

    async fn finish_run(
        &self,
        agent: &AgentName,
        task: &TaskId,
        run: &RunId,
        token: &LeaseToken,
        outcome: RunOutcome,
        now: OffsetDateTime,
    ) -> Result<Run> {
        transaction!(self, |tx| async {
            select(&tx, agent, task, true).await?;
            let mut record = require_run(&tx, agent, task, run).await?;
            if !record.is_held_by(token) {
                return Err(not_held(run, format!(" (it is {:?})", record.status)));
            }
            record.complete(outcome.clone(), now);
            write_run(&tx, agent, &record).await?;
            Ok(record)
        })
    }

    async fn interrupt_lapsed_run(
        &self,
        agent: &AgentName,
        task: &TaskId,
        run: &RunId,
        now: OffsetDateTime,
    ) -> Result<Option<Run>> {
        transaction!(self, |tx| async {
            select(&tx, agent, task, true).await?;
            let mut record = require_run(&tx, agent, task, run).await?;
            let lapsed = record.status == RunStatus::Running
                && record.lease.is_none_or(|lease| lease.expired_at(now));
            if !lapsed {
                return Ok(None);
            }
            interrupt(agent, &mut record, now);
            write_run(&tx, agent, &record).await?;
            Ok(Some(record))
        })
    }

    async fn list_runs(&self, agent: &AgentName, task: &TaskId) -> Result<Vec<Run>> {
        transaction!(self, |tx| async {
            let rows = db::rows(
                &tx,
                "SELECT doc FROM runs WHERE agent = $1 AND task_id = $2 ORDER BY id DESC",
                &[&agent.as_str(), &task.to_string()],
            )
            .await?;
            if rows.is_empty() {
                select(&tx, agent, task, false).await?;
            }
            Ok(docs(&rows))
        })
    }

    async fn latest_run(&self, agent: &AgentName, task: &TaskId) -> Result<Option<Run>> {
        transaction!(self, |tx| async {
            let record = select(&tx, agent, task, false).await?;
            match record.latest_run {
                Some(run) => select_run(&tx, agent, task, &run).await,
                None => Ok(None),
            }
        })
    }

    async fn running_runs(&self) -> Result<Vec<(AgentName, Run)>> {
        transaction!(self, |tx| async {
            let rows = db::rows(
                &tx,
                "SELECT agent, doc FROM runs WHERE status = 'running' ORDER BY agent, id",
                &[],
            )
            .await?;
            let mut running = Vec::new();
            for row in &rows {
                let Ok(agent) = AgentName::parse(row.get::<_, &str>("agent")) else { continue };
                match doc::<Run>(row) {
                    Ok(run) => running.push((agent, run)),
                    Err(err) => tracing::warn!(?err, "skipping a damaged run record"),
                }
            }
            Ok(running)
        })
    }

    async fn claim_slot(
        &self,
        agent: &AgentName,
        task: &TaskId,
        slot: OffsetDateTime,
    ) -> Result<bool> {
        transaction!(self, |tx| async {
            let mut record = select(&tx, agent, task, true).await?;
            if record.last_slot.is_some_and(|last| last >= slot) {
                return Ok(false);
            }
            // The key (task, slot) is the last word: a slot is inserted once, whatever the
            // task's record says.
            let claimed = db::execute(
                &tx,
                "INSERT INTO task_slots (agent, task_id, slot) VALUES ($1, $2, $3) \
                 ON CONFLICT DO NOTHING",
                &[&agent.as_str(), &task.to_string(), &slot],
            )
            .await?;
            if claimed == 0 {
                return Ok(false);
            }
            // Old slots are kept a week, for people reading the table.
            db::execute(
                &tx,
                "DELETE FROM task_slots WHERE agent = $1 AND task_id = $2 AND slot < $3",
                &[&agent.as_str(), &task.to_string(), &(slot - time::Duration::days(7))],
            )
            .await?;
            record.last_slot = Some(slot);
            write_task(&tx, &record).await?;
            Ok(true)
        })
    }

    async fn changes_since(&self, cursor: Option<ChangeCursor>) -> Result<TaskChanges> {
        let feed = self.inner.feed;
        transaction!(self, |tx| async {
            let bounds = db::row(
                &tx,
                "SELECT (SELECT COALESCE(MAX(seq), 0) FROM task_changes), pruned_upto \
                 FROM orbit_feed WHERE id = 1",
                &[],
            )
            .await?;
            let (last, pruned): (i64, i64) =
                bounds.map(|row| (row.get(0), row.get(1))).unwrap_or((0, 0));
            let end = ChangeCursor { feed, offset: u64::try_from(last).unwrap_or(0) };
            let Some(cursor) = cursor else {
                return Ok(TaskChanges { changes: Vec::new(), reset: false, cursor: end });
            };
            let from = i64::try_from(cursor.offset).unwrap_or(i64::MAX);
            if cursor.feed != feed || from > last || from < pruned {
                // Another feed, or a position past the end or pruned: changes may be missing.
                return Ok(TaskChanges { changes: Vec::new(), reset: true, cursor: end });
            }
            let rows = db::rows(
                &tx,
                "SELECT agent, task_id FROM task_changes WHERE seq > $1 AND seq <= $2 ORDER BY seq",
                &[&from, &last],
            )
            .await?;
            let changes = rows
                .iter()
                .filter_map(|row| {
                    let agent = AgentName::parse(row.get::<_, &str>(0)).ok()?;
                    let task = TaskId::parse(row.get::<_, &str>(1)).ok()?;
                    Some(TaskChange { agent, task })
                })
                .collect();
            Ok(TaskChanges { changes, reset: false, cursor: end })
        })
    }

    fn watch_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.task_changes.subscribe()
    }
}
