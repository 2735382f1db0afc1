//! The workflows that change more than one thing, each in one place for every front end: the
//! HTTP API, the agents' own tools, a library user. Creating a task checks its schedule,
//! its worktree and its branch the same way whoever asks; deleting a task or a session
//! removes its worktree (unless it holds uncommitted work) whoever deletes it; deleting a
//! session or an agent ends its turns and forgets its CLI state first, on every node of the
//! store (`signals`).
//!
//! Nothing here tells the scheduler anything: the store announces every task change
//! (`TaskStore::watch_changes` and its change feed).

use orbit_store::{
    Agent, AgentName, AgentPatch, ContextMode, NewSession, NewTask, PermissionMode, Schedule,
    ScheduleType, Session, SessionId, SessionPatch, SignalKind, Stores, Task, TaskId, TaskPatch,
    TaskStatus, limits, timestamp,
};

use time::OffsetDateTime;

use crate::{Activity, AgentPool, Error, Result, worktree};

/// What a caller asks for to make a task.
#[derive(Debug, Clone)]
pub struct TaskRequest {
    pub name: Option<String>,
    pub prompt: String,
    pub schedule_type: ScheduleType,
    pub schedule_value: String,
    pub context_mode: ContextMode,
    pub timezone: Option<String>,
    /// Runs work in the task's own git worktree.
    pub worktree: bool,
    /// The worktree's new branch (only with `worktree`).
    pub branch: Option<String>,
}

/// A change a caller asks of a task; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct TaskChange {
    pub name: Option<String>,
    pub prompt: Option<String>,
    pub schedule_value: Option<String>,
    pub timezone: Option<String>,
    pub status: Option<TaskStatus>,
}

/// What a caller asks for to make a session.
#[derive(Debug, Clone, Default)]
pub struct SessionRequest {
    pub title: Option<String>,
    pub model: Option<String>,
    pub permission_mode: Option<PermissionMode>,
    /// Runs every turn in the session's own git worktree.
    pub worktree: bool,
    pub branch: Option<String>,
}

/// A worktree kept, rather than removed with its session or task, because it holds
/// uncommitted work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptWorktree {
    pub id: String,
}

fn check_task_fields(
    prompt: Option<&str>,
    schedule_value: Option<&str>,
    name: Option<&str>,
    timezone: Option<&str>,
) -> Result<()> {
    limits::check_optional("prompt", prompt, limits::PROMPT)?;
    limits::check_optional("scheduleValue", schedule_value, limits::SCHEDULE_VALUE)?;
    limits::check_optional("name", name, limits::TITLE)?;
    limits::check_optional("timezone", timezone, limits::TIMEZONE)?;
    Ok(())
}

/// Refuses what is pinned to a node other than `here` (see `Session::node`).
pub fn check_here(what: &'static str, id: &str, pinned: Option<&str>, here: &str) -> Result<()> {
    match pinned {
        Some(node) if node != here => {
            Err(Error::OnOtherNode { what, id: id.to_owned(), node: node.to_owned() })
        }
        _ => Ok(()),
    }
}

/// What releasing a node unpinned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReleasedNode {
    pub sessions: Vec<(AgentName, SessionId)>,
    pub tasks: Vec<(AgentName, TaskId)>,
}

/// Releases the records pinned to `node`, a node gone for good (its disk, with the
/// worktrees, lost): its sessions lose their pin and their worktree and say where they were
/// (`Session::released_from`; their turns run in the agent's working directory), its tasks
/// lose their pin (a task with a worktree gets a new one at its next run, on the node that
/// runs it, and is pinned there). Refused (`NodeRunning`) while an instance registered as
/// that node is live: a node that is merely restarting keeps its work. Each record is
/// changed under its own lock, only if it is still pinned to `node`; the task changes reach
/// every scheduler through the change feed.
pub async fn release_node(stores: &Stores, node: &str) -> Result<ReleasedNode> {
    limits::check_node_name(node)?;
    let now = timestamp::now();
    let running = stores.instances.list().await?.into_iter().find(|instance| {
        instance.live_at(now) && instance.node.as_ref().is_some_and(|named| named.name == node)
    });
    if let Some(instance) = running {
        return Err(Error::NodeRunning {
            node: node.to_owned(),
            instance: instance.id.to_string(),
            until: timestamp::rfc3339::format(instance.until).unwrap_or_default(),
        });
    }
    let pinned_here = |pinned: Option<&String>| pinned.is_some_and(|pinned| pinned == node);
    let mut released = ReleasedNode::default();
    for agent in stores.agents.list().await? {
        let sessions = match stores.sessions.list_by_agent(&agent.name).await {
            Ok(sessions) => sessions,
            // Deleted meanwhile: nothing of it is pinned any more.
            Err(err) if err.kind() == orbit_store::ErrorKind::NotFound => continue,
            Err(err) => return Err(err.into()),
        };
        for session in sessions.iter().filter(|session| pinned_here(session.node.as_ref())) {
            let patch =
                SessionPatch { release_from: Some(node.to_owned()), ..SessionPatch::default() };
            match stores.sessions.update(&agent.name, &session.id, patch).await {
                Ok(_) => released.sessions.push((agent.name.clone(), session.id)),
                Err(err) if err.kind() == orbit_store::ErrorKind::NotFound => {}
                Err(err) => return Err(err.into()),
            }
        }
    }
    for task in stores.tasks.list_all().await? {
        if !pinned_here(task.node.as_ref()) {
            continue;
        }
        let patch = TaskPatch { release_from: Some(node.to_owned()), ..TaskPatch::default() };
        match stores.tasks.update(&task.agent_name, &task.id, patch).await {
            Ok(_) => released.tasks.push((task.agent_name.clone(), task.id)),
            Err(err) if err.kind() == orbit_store::ErrorKind::NotFound => {}
            Err(err) => return Err(err.into()),
        }
    }
    tracing::info!(%node, sessions = released.sessions.len(), tasks = released.tasks.len(), "released a node gone for good");
    Ok(released)
}

/// Makes a task after checking it: field limits, a schedule that parses and fires again, a
/// branch only with a worktree, a worktree only for isolated runs, a branch name git takes.
/// A task with a worktree is pinned to `here`, this node, whose disk will hold it.
pub async fn create_task(
    stores: &Stores,
    agent: &AgentName,
    request: TaskRequest,
    here: &str,
) -> Result<Task> {
    check_task_fields(
        Some(&request.prompt),
        Some(&request.schedule_value),
        request.name.as_deref(),
        request.timezone.as_deref(),
    )?;
    if request.prompt.trim().is_empty() {
        return Err(Error::Invalid("prompt must not be empty".into()));
    }
    let (_, next_run) =
        first_fire(request.schedule_type, &request.schedule_value, request.timezone.as_deref())?;
    if request.branch.is_some() && !request.worktree {
        return Err(Error::Invalid("'branch' needs \"worktree\": true".into()));
    }
    if request.worktree && request.context_mode == ContextMode::Main {
        return Err(Error::Invalid(
            "a task in its own worktree needs \"contextMode\": \"isolated\" (the main session has its own working directory)".into(),
        ));
    }
    if let Some(branch) = &request.branch {
        worktree::check_branch(branch).await?;
    }
    if request.worktree {
        worktree::check_possible(&stores.agents.working_dir(agent).await?).await?;
    }
    let new = NewTask {
        name: request.name,
        prompt: request.prompt,
        schedule_type: request.schedule_type,
        schedule_value: request.schedule_value,
        context_mode: request.context_mode,
        timezone: request.timezone,
        next_run: Some(next_run),
        node: request.worktree.then(|| here.to_owned()),
        worktree: request.worktree,
        branch: request.branch,
    };
    Ok(stores.tasks.create(agent, new).await?)
}

/// A new task's schedule, checked, with its first fire time from now.
fn first_fire(
    kind: ScheduleType,
    value: &str,
    timezone: Option<&str>,
) -> Result<(Schedule, OffsetDateTime)> {
    let schedule = Schedule::parse(kind, value, timezone)
        .map_err(|err| Error::InvalidSchedule(err.to_string()))?;
    let Some(first) = schedule.next_after(timestamp::now()) else {
        return Err(Error::InvalidSchedule(format!(
            "schedule '{value}' never fires: the time is past"
        )));
    };
    Ok((schedule, first))
}

/// The most fire times a preview lists.
pub const PREVIEW_MAX: usize = 20;

/// The next `count` fire times (at most [`PREVIEW_MAX`]) a task made now with this schedule
/// would have, checked exactly as [`create_task`] checks it, so a client can show them (or
/// the reason it is refused) before making the task. Fewer when it stops firing (a `once`).
pub fn preview_schedule(
    kind: ScheduleType,
    value: &str,
    timezone: Option<&str>,
    count: usize,
) -> Result<Vec<OffsetDateTime>> {
    check_task_fields(None, Some(value), None, timezone)?;
    let (schedule, first) = first_fire(kind, value, timezone)?;
    let mut times = vec![first];
    while times.len() < count.clamp(1, PREVIEW_MAX) {
        // A task's later slots follow its first (`Task::slot_at_or_after` from its anchor).
        // A slot at the end of time's range has no next: the preview stops there rather
        // than overflow (a panic on a worker thread).
        let Some(after) =
            times.last().and_then(|last| last.checked_add(time::Duration::MILLISECOND))
        else {
            break;
        };
        match schedule.slot_at_or_after(first, after) {
            Some(next) => times.push(next),
            None => break,
        }
    }
    Ok(times)
}

/// Changes a task. Its slots come from the stored schedule and anchor, so that every
/// scheduler sharing the store fires the same ones: only a new schedule starts a new phase
/// (its first slot from now becomes the anchor), a resume takes the next slot of the stored
/// phase, and any other change leaves the next run alone.
pub async fn update_task(
    stores: &Stores,
    agent: &AgentName,
    id: &TaskId,
    change: TaskChange,
) -> Result<Task> {
    check_task_fields(
        change.prompt.as_deref(),
        change.schedule_value.as_deref(),
        change.name.as_deref(),
        change.timezone.as_deref(),
    )?;
    if change.prompt.as_deref().is_some_and(|p| p.trim().is_empty()) {
        return Err(Error::Invalid("prompt must not be empty".into()));
    }
    let current = stores.tasks.get(agent, id).await?;
    let value = change.schedule_value.clone().unwrap_or(current.schedule_value.clone());
    let timezone = change.timezone.clone().or(current.timezone.clone());
    let schedule = Schedule::parse(current.schedule_type, &value, timezone.as_deref())
        .map_err(|err| Error::InvalidSchedule(err.to_string()))?;
    let status = change.status.unwrap_or(current.status);
    let now = timestamp::now();
    let (next_run, anchor) = if change.schedule_value.is_some() || change.timezone.is_some() {
        let first = schedule.next_after(now);
        (Some(first.filter(|_| status == TaskStatus::Active)), first)
    } else if status != TaskStatus::Active {
        (Some(None), None)
    } else if current.status != TaskStatus::Active {
        (Some(current.slot_at_or_after(&schedule, now)), None)
    } else {
        (None, None)
    };
    let patch = TaskPatch {
        name: change.name,
        prompt: change.prompt,
        schedule_value: change.schedule_value,
        timezone: change.timezone,
        status: change.status,
        next_run,
        last_run: None,
        anchor,
        ..TaskPatch::default()
    };
    Ok(stores.tasks.update(agent, id, patch).await?)
}

/// Deletes a task (a run of it still going is stopped by the scheduler, which learns of the
/// deletion from the store) and removes its worktree unless it holds uncommitted work. A task
/// whose worktree is on another node is deleted there, where its worktree can be removed.
pub async fn delete_task(
    stores: &Stores,
    agent: &AgentName,
    id: &TaskId,
    here: &str,
) -> Result<Option<KeptWorktree>> {
    let task = stores.tasks.get(agent, id).await?;
    check_here("task", &id.to_string(), task.node.as_deref(), here)?;
    stores.tasks.delete(agent, id).await?;
    if task.worktree {
        remove_owned_worktree(stores, agent, &id.to_string()).await
    } else {
        Ok(None)
    }
}

/// Makes a session (and its agent when missing), in a worktree of its own when asked.
async fn create_session(
    stores: &Stores,
    agent: &AgentName,
    request: SessionRequest,
    here: &str,
) -> Result<Session> {
    limits::check_optional("title", request.title.as_deref(), limits::TITLE)?;
    if let Some(model) = &request.model {
        limits::check_model(model)?;
    }
    if request.branch.is_some() && !request.worktree {
        return Err(Error::Invalid("'branch' needs \"worktree\": true".into()));
    }
    stores.agents.ensure(agent).await?;
    // The worktree is named after the session, so its id is chosen before both exist.
    let id = SessionId::new();
    let worktree_id = if request.worktree {
        let working_dir = stores.agents.working_dir(agent).await?;
        Some(worktree::create(&working_dir, &id.to_string(), request.branch.as_deref()).await?.id)
    } else {
        None
    };
    let new = NewSession {
        title: request.title,
        model: request.model,
        permission_mode: request.permission_mode,
        node: worktree_id.as_ref().map(|_| here.to_owned()),
        worktree_id,
    };
    Ok(stores.sessions.create_with_id(agent, id, new).await?)
}

/// Removes the worktree of a deleted session or task; one that holds uncommitted work is
/// kept and returned. Best effort: the session or task is gone already, so a worktree that
/// cannot be removed is logged and left, never an error for a deletion that happened.
pub async fn remove_owned_worktree(
    stores: &Stores,
    agent: &AgentName,
    id: &str,
) -> Result<Option<KeptWorktree>> {
    let working_dir = match stores.agents.working_dir(agent).await {
        Ok(working_dir) => working_dir,
        // A workdir that is gone took its worktrees' repository with it.
        Err(err) if err.kind() == orbit_store::ErrorKind::Invalid => {
            tracing::warn!(%agent, worktree = id, error = %err, "no worktree to remove");
            return Ok(None);
        }
        Err(err) => return Err(err.into()),
    };
    match worktree::remove(&working_dir, id).await {
        Ok(()) | Err(Error::WorktreeNotFound(_)) => Ok(None),
        Err(Error::WorktreeDirty(_)) => Ok(Some(KeptWorktree { id: id.to_owned() })),
        Err(err) => {
            tracing::warn!(%agent, worktree = id, error = %err, "worktree left in place");
            Ok(None)
        }
    }
}

impl AgentPool {
    /// Changes an agent. A change of its workdir is refused while it has worktrees (they
    /// belong to the repository of the directory it works in now: those found there, and
    /// those its sessions and tasks have by Orbit's records, even when that directory
    /// cannot be read now) or a turn running here, and ends its idle CLIs, so that every turn from then on starts in the new directory
    /// (a CLI session made elsewhere may not resume there: the turn then says so and goes
    /// on in a fresh one). The change is announced.
    pub async fn update_agent(&self, agent: &AgentName, patch: AgentPatch) -> Result<Agent> {
        let updated = self.update_agent_unannounced(agent, patch).await?;
        self.activity().announce(Activity::AgentChanged { agent: updated.name.clone() });
        Ok(updated)
    }

    async fn update_agent_unannounced(
        &self,
        agent: &AgentName,
        patch: AgentPatch,
    ) -> Result<Agent> {
        let stores = self.stores();
        let Some(workdir) = &patch.workdir else {
            return Ok(stores.agents.update(agent, patch).await?);
        };
        // Check and change under one lock, which sessions making worktrees here also take
        // (a task's first run, in the scheduler, does not: see docs/api.md "Workdirs").
        let _changing = self.lock_worktree_changes().await;
        let current = stores.agents.get(agent).await?;
        if current.workdir.as_ref().map(|w| &w.path) == workdir.as_ref().map(|w| &w.path) {
            return Ok(stores.agents.update(agent, patch).await?);
        }
        let mut ids = match stores.agents.working_dir(agent).await {
            Ok(working_dir) => {
                worktree::list(&working_dir).await?.into_iter().map(|w| w.id).collect()
            }
            Err(_) => Vec::new(),
        };
        for session in stores.sessions.list_by_agent(agent).await? {
            ids.extend(session.worktree_id);
        }
        for task in stores.tasks.list_by_agent(agent).await? {
            // A task makes its worktree at its first run.
            ids.extend((task.worktree && task.last_run.is_some()).then(|| task.id.to_string()));
        }
        ids.sort();
        ids.dedup();
        if !ids.is_empty() {
            return Err(Error::Conflict(format!(
                "agent '{agent}' has worktrees in the directory it works in now ({}); delete their sessions, tasks or worktrees before changing its workdir",
                ids.join(", ")
            )));
        }
        if self.agent_is_running(agent) {
            return Err(Error::Conflict(format!(
                "agent '{agent}' has a turn running; change its workdir when it ends"
            )));
        }
        let updated = stores.agents.update(agent, patch).await?;
        self.release_agent(agent).await;
        Ok(updated)
    }

    /// Makes a session (and its agent when missing), in a worktree of its own when asked,
    /// and announces it.
    pub async fn create_session(
        &self,
        agent: &AgentName,
        request: SessionRequest,
    ) -> Result<Session> {
        let session = if request.worktree {
            let _making = self.lock_worktree_changes().await;
            create_session(self.stores(), agent, request, self.node()).await?
        } else {
            create_session(self.stores(), agent, request, self.node()).await?
        };
        self.activity()
            .announce(Activity::SessionCreated { agent: agent.clone(), session: session.id });
        Ok(session)
    }

    /// Deletes a session: its record, then its turn aborted and settled, its process ended and
    /// its CLI state forgotten; then its worktree, unless it holds uncommitted work.
    pub async fn delete_session(
        &self,
        agent: &AgentName,
        id: &SessionId,
    ) -> Result<Option<KeptWorktree>> {
        let stores = self.stores();
        let session = stores.sessions.get(agent, id).await?;
        // Its worktree and its turns are on the node it is pinned to.
        check_here("session", &id.to_string(), session.node.as_deref(), self.node())?;
        // The record first: a turn that starts on the session from now on is refused, so
        // none can spawn a CLI (and recreate its state) after it is forgotten.
        stores.sessions.delete(agent, id).await?;
        self.activity().announce(Activity::SessionDeleted { agent: agent.clone(), session: *id });
        self.forget_session(agent, id).await;
        self.tell_other_nodes(SignalKind::SessionDeleted { agent: agent.clone(), session: *id })
            .await;
        match session.worktree_id {
            Some(worktree_id) => remove_owned_worktree(stores, agent, &worktree_id).await,
            None => Ok(None),
        }
    }

    /// Deletes an agent: its records, then its turns aborted and settled, its processes ended
    /// and its CLI state forgotten, so nothing of it reaches a new agent of the same name.
    /// Its working directory is the user's work and stays.
    pub async fn delete_agent(&self, agent: &AgentName) -> Result<()> {
        let stores = self.stores();
        // The records first (one rename), so no turn starts on the agent once its turns
        // are being ended and its CLI state forgotten.
        stores.agents.delete(agent).await?;
        self.activity().announce(Activity::AgentChanged { agent: agent.clone() });
        self.forget_agent(agent).await;
        self.tell_other_nodes(SignalKind::AgentDeleted { agent: agent.clone() }).await;
        Ok(())
    }
}
