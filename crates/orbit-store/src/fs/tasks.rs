//! Tasks as `agents/<name>/tasks/<id>.json`, runs as `agents/<name>/runs/<task>/<run>.json`.

use std::path::PathBuf;

use async_trait::async_trait;

use super::{FsStore, Inner, io};
use crate::{
    AgentName, Error, NewTask, Result, Run, RunId, RunOutcome, RunStatus, SessionId, Task, TaskId,
    TaskPatch, TaskStatus, TaskStore, timestamp,
};

impl Inner {
    fn task_path(&self, agent: &AgentName, id: &TaskId) -> PathBuf {
        self.agent_dir(agent).join("tasks").join(format!("{id}.json"))
    }

    fn runs_dir(&self, agent: &AgentName, task: &TaskId) -> PathBuf {
        self.agent_dir(agent).join("runs").join(task.to_string())
    }

    fn get_task(&self, agent: &AgentName, id: &TaskId) -> Result<Task> {
        io::read_json(&self.task_path(agent, id))?.ok_or_else(|| Error::not_found("task", id))
    }

    fn tasks_of(&self, agent: &AgentName) -> Result<Vec<Task>> {
        let dir = self.agent_dir(agent).join("tasks");
        Ok(io::list_names(&dir, ".json")?
            .iter()
            .filter_map(|name| io::read_json_lenient(&dir.join(name)))
            .collect())
    }

    fn tasks_lock(&self, agent: &AgentName) -> PathBuf {
        self.agent_dir(agent).join("tasks.lock")
    }
}

#[async_trait]
impl TaskStore for FsStore {
    async fn create(&self, agent: &AgentName, new: NewTask) -> Result<Task> {
        if new.prompt.trim().is_empty() {
            return Err(Error::Invalid("prompt must not be empty".into()));
        }
        let agent = agent.clone();
        self.blocking(move |s| {
            s.require_agent(&agent)?;
            let task = Task {
                id: TaskId::new(),
                agent_name: agent.clone(),
                name: new.name,
                prompt: new.prompt,
                schedule_type: new.schedule_type,
                schedule_value: new.schedule_value,
                context_mode: new.context_mode,
                timezone: new.timezone,
                status: TaskStatus::Active,
                next_run: new.next_run,
                last_run: None,
                created_at: timestamp::now(),
                worktree: new.worktree,
                branch: new.branch,
            };
            let path = s.task_path(&agent, &task.id);
            io::ensure_dir(path.parent().unwrap_or(&s.root))?;
            io::write_json(&path, &task)?;
            Ok(task)
        })
        .await
    }

    async fn get(&self, agent: &AgentName, id: &TaskId) -> Result<Task> {
        let (agent, id) = (agent.clone(), *id);
        self.blocking(move |s| {
            s.require_agent(&agent)?;
            s.get_task(&agent, &id)
        })
        .await
    }

    async fn list_by_agent(&self, agent: &AgentName) -> Result<Vec<Task>> {
        let agent = agent.clone();
        self.blocking(move |s| {
            s.require_agent(&agent)?;
            s.tasks_of(&agent)
        })
        .await
    }

    async fn list_all(&self) -> Result<Vec<Task>> {
        self.blocking(|s| {
            let mut tasks = Vec::new();
            for name in io::list_names(&s.root.join("agents"), "")? {
                let Ok(agent) = AgentName::parse(&name) else { continue };
                if s.agent_exists(&agent) {
                    tasks.extend(s.tasks_of(&agent)?);
                }
            }
            Ok(tasks)
        })
        .await
    }

    async fn update(&self, agent: &AgentName, id: &TaskId, patch: TaskPatch) -> Result<Task> {
        let (agent, id) = (agent.clone(), *id);
        self.blocking(move |s| {
            s.require_agent(&agent)?;
            io::with_lock(&s.tasks_lock(&agent), || {
                let mut task = s.get_task(&agent, &id)?;
                if let Some(name) = patch.name {
                    task.name = Some(name);
                }
                if let Some(prompt) = patch.prompt {
                    task.prompt = prompt;
                }
                if let Some(value) = patch.schedule_value {
                    task.schedule_value = value;
                }
                if let Some(timezone) = patch.timezone {
                    task.timezone = Some(timezone);
                }
                if let Some(status) = patch.status {
                    task.status = status;
                }
                if let Some(next_run) = patch.next_run {
                    task.next_run = next_run;
                }
                if let Some(last_run) = patch.last_run {
                    task.last_run = Some(last_run);
                }
                io::write_json(&s.task_path(&agent, &id), &task)?;
                Ok(task)
            })
        })
        .await
    }

    async fn delete(&self, agent: &AgentName, id: &TaskId) -> Result<()> {
        let (agent, id) = (agent.clone(), *id);
        self.blocking(move |s| {
            s.require_agent(&agent)?;
            io::with_lock(&s.tasks_lock(&agent), || {
                if !io::remove_file(&s.task_path(&agent, &id))? {
                    return Err(Error::not_found("task", id));
                }
                io::remove_dir_all(&s.runs_dir(&agent, &id))?;
                Ok(())
            })
        })
        .await
    }

    async fn create_run(
        &self,
        agent: &AgentName,
        task: &TaskId,
        session: Option<SessionId>,
        status: RunStatus,
    ) -> Result<Run> {
        let (agent, task) = (agent.clone(), *task);
        self.blocking(move |s| {
            s.get_task(&agent, &task)?;
            let now = timestamp::now();
            let finished = status != RunStatus::Running;
            let run = Run {
                id: RunId::new(),
                task_id: task,
                session_id: session,
                status,
                result: None,
                error: None,
                started_at: now,
                completed_at: finished.then_some(now),
                duration_ms: finished.then_some(0),
                cost_usd: None,
                owner_pid: (!finished).then(std::process::id),
            };
            let dir = s.runs_dir(&agent, &task);
            io::ensure_dir(&dir)?;
            io::write_json(&dir.join(format!("{}.json", run.id)), &run)?;
            Ok(run)
        })
        .await
    }

    async fn finish_run(
        &self,
        agent: &AgentName,
        task: &TaskId,
        run: &RunId,
        outcome: RunOutcome,
    ) -> Result<Run> {
        let (agent, task, run_id) = (agent.clone(), *task, *run);
        self.blocking(move |s| {
            let path = s.runs_dir(&agent, &task).join(format!("{run_id}.json"));
            let mut run: Run =
                io::read_json(&path)?.ok_or_else(|| Error::not_found("run", run_id))?;
            let now = timestamp::now();
            run.status = outcome.status;
            run.result = outcome.result;
            run.error = outcome.error;
            run.cost_usd = outcome.cost_usd;
            run.completed_at = Some(now);
            run.duration_ms =
                Some(u64::try_from((now - run.started_at).whole_milliseconds()).unwrap_or(0));
            io::write_json(&path, &run)?;
            Ok(run)
        })
        .await
    }

    async fn list_runs(&self, agent: &AgentName, task: &TaskId) -> Result<Vec<Run>> {
        let (agent, task) = (agent.clone(), *task);
        self.blocking(move |s| {
            s.get_task(&agent, &task)?;
            let dir = s.runs_dir(&agent, &task);
            let mut runs: Vec<Run> = io::list_names(&dir, ".json")?
                .iter()
                .filter_map(|name| io::read_json_lenient(&dir.join(name)))
                .collect();
            runs.sort_by_key(|run| std::cmp::Reverse(run.id));
            Ok(runs)
        })
        .await
    }

    async fn latest_run(&self, agent: &AgentName, task: &TaskId) -> Result<Option<Run>> {
        let (agent, task) = (agent.clone(), *task);
        self.blocking(move |s| {
            let dir = s.runs_dir(&agent, &task);
            // Run ids are ULIDs: the last name is the newest run.
            Ok(io::list_names(&dir, ".json")?
                .last()
                .and_then(|name| io::read_json_lenient(&dir.join(name))))
        })
        .await
    }

    async fn running_runs(&self) -> Result<Vec<(AgentName, Run)>> {
        self.blocking(|s| {
            let mut running = Vec::new();
            for name in io::list_names(&s.root.join("agents"), "")? {
                let Ok(agent) = AgentName::parse(&name) else { continue };
                let runs_root = s.agent_dir(&agent).join("runs");
                for task in io::list_names(&runs_root, "")? {
                    let dir = runs_root.join(&task);
                    let newest = io::list_names(&dir, ".json")?
                        .last()
                        .and_then(|n| io::read_json_lenient::<Run>(&dir.join(n)));
                    if let Some(run) = newest.filter(|run| run.status == RunStatus::Running) {
                        running.push((agent.clone(), run));
                    }
                }
            }
            Ok(running)
        })
        .await
    }

    async fn claim_slot(
        &self,
        agent: &AgentName,
        task: &TaskId,
        slot: time::OffsetDateTime,
    ) -> Result<bool> {
        let (agent, task) = (agent.clone(), *task);
        self.blocking(move |s| {
            s.get_task(&agent, &task)?;
            let dir = s.runs_dir(&agent, &task).join("slots");
            io::ensure_dir(&dir)?;
            let slot_ms = slot.unix_timestamp_nanos() / 1_000_000;
            // Create-if-absent: of any number of schedulers, exactly one creates the marker.
            io::create_json(
                &dir.join(format!("{slot_ms}.json")),
                &serde_json::json!({"pid": std::process::id()}),
            )
        })
        .await
    }
}
