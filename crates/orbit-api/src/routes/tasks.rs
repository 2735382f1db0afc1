//! `/api/tasks` and `/api/agents/:name/tasks...`. Schedules are checked and `nextRun`
//! computed here; firing them is the scheduler's job.

use actix_web::web::Data;
use actix_web::{HttpResponse, web};
use orbit_store::{AgentName, Run, RunId, Task, TaskId, limits};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::endpoint::Endpoint;
use crate::error::{ApiError, ApiResult, Code};
use crate::extract::{AgentPath, Json, TaskPath};
use crate::page::{self, PageQuery};
use crate::views::{
    self, RunBody, RunsBody, SchedulePreviewBody, SuccessView, TaskBody, TasksBody,
};
use crate::{AppState, listing, wire};
use orbit_agent::workflow;

pub fn endpoints() -> Vec<Endpoint> {
    vec![
        Endpoint::new::<TasksBody>(
            "GET",
            "/api/tasks",
            "listAllTasks",
            "List every agent's tasks, by agent name and then oldest first (a page of them with `limit`)",
            || web::get().to(list_all),
        )
        .query::<PageQuery>(),
        Endpoint::new::<TasksBody>(
            "GET",
            "/api/agents/{name}/tasks",
            "listTasks",
            "List an agent's tasks, oldest first (a page of them with `limit`)",
            || web::get().to(list),
        )
        .query::<PageQuery>(),
        Endpoint::new::<TaskBody>(
            "POST",
            "/api/agents/{name}/tasks",
            "createTask",
            "Create a task",
            || web::post().to(create),
        )
        .status(201)
        .body::<CreateTask>()
        .errors(&[Code::InvalidSchedule]),
        Endpoint::new::<TaskBody>(
            "GET",
            "/api/agents/{name}/tasks/{id}",
            "getTask",
            "Get a task",
            || web::get().to(get),
        ),
        Endpoint::new::<TaskBody>(
            "PUT",
            "/api/agents/{name}/tasks/{id}",
            "updateTask",
            "Update a task; nextRun is recomputed",
            || web::put().to(update),
        )
        .body::<UpdateTask>()
        .errors(&[Code::InvalidSchedule]),
        Endpoint::new::<SuccessView>(
            "DELETE",
            "/api/agents/{name}/tasks/{id}",
            "deleteTask",
            "Delete a task (its worktree too, unless it holds uncommitted work)",
            || web::delete().to(delete),
        ),
        Endpoint::new::<RunsBody>(
            "GET",
            "/api/agents/{name}/tasks/{id}/runs",
            "listRuns",
            "List a task's runs, newest first (a page of them with `limit`)",
            || web::get().to(runs),
        )
        .query::<PageQuery>(),
        Endpoint::new::<RunBody>(
            "POST",
            "/api/agents/{name}/tasks/{id}/run",
            "runTask",
            "Run a task now (409 while its previous run is running, or when its agent is inactive)",
            || web::post().to(run_now),
        )
        .status(202)
        .errors(&[Code::Conflict]),
        Endpoint::new::<SchedulePreviewBody>(
            "POST",
            "/api/schedules/preview",
            "previewSchedule",
            "Check a schedule as a new task's would be checked and answer its next fire times, without making anything",
            || web::post().to(preview),
        )
        .body::<PreviewSchedule>()
        .errors(&[Code::InvalidSchedule]),
    ]
}

/// `POST /api/schedules/preview`: a schedule as `POST /api/agents/{name}/tasks` takes it.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(example = preview_example())]
pub struct PreviewSchedule {
    schedule_type: wire::ScheduleType,
    #[schemars(length(min = 1, max = limits::SCHEDULE_VALUE))]
    schedule_value: String,
    /// An IANA timezone name (`Europe/Paris`) for cron schedules.
    #[serde(default)]
    #[schemars(with = "String", length(max = limits::TIMEZONE))]
    timezone: Option<String>,
    /// How many fire times to answer: 1 to 20, 5 when left out.
    #[serde(default)]
    #[schemars(with = "u8", range(min = 1, max = 20))]
    count: Option<usize>,
}

fn preview_example() -> Value {
    json!({"scheduleType": "cron", "scheduleValue": "0 9 * * 1-5", "timezone": "Europe/Paris", "count": 3})
}

async fn preview(Json(body): Json<PreviewSchedule>) -> ApiResult<HttpResponse> {
    let count = body.count.unwrap_or(5);
    if !(1..=workflow::PREVIEW_MAX).contains(&count) {
        return Err(ApiError::invalid(format!("count must be 1 to {}", workflow::PREVIEW_MAX)));
    }
    let next_runs = workflow::preview_schedule(
        body.schedule_type.into(),
        &body.schedule_value,
        body.timezone.as_deref(),
        count,
    )?;
    Ok(HttpResponse::Ok().json(SchedulePreviewBody { next_runs }))
}

/// `POST /api/agents/{name}/tasks`.
///
/// `scheduleValue` is read by `scheduleType`: a 5-field cron expression (minute hour
/// day-of-month month day-of-week; no seconds field) evaluated in `timezone` (UTC by default);
/// an interval in milliseconds as a decimal string, from 1000 to 31622400000; or an RFC 3339
/// timestamp in the future. A schedule that never fires is refused (400).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(example = create_example())]
// A branch names the worktree's new branch, so it needs the worktree; a worktree needs
// isolated runs (the main session has its own working directory).
#[schemars(extend("dependentSchemas" = {
    "branch": {"required": ["worktree"], "properties": {"worktree": {"const": true}}},
    "worktree": {"anyOf": [
        {"properties": {"worktree": {"const": false}}},
        {"properties": {"contextMode": {"const": "isolated"}}},
    ]},
}))]
pub struct CreateTask {
    #[schemars(length(max = limits::PROMPT))]
    prompt: String,
    schedule_type: wire::ScheduleType,
    #[schemars(length(min = 1, max = limits::SCHEDULE_VALUE))]
    schedule_value: String,
    /// Which session the runs use; `isolated` (a fresh one each run) when left out.
    #[serde(default)]
    #[schemars(with = "wire::ContextMode")]
    context_mode: Option<wire::ContextMode>,
    #[serde(default)]
    #[schemars(with = "String", length(max = limits::TITLE))]
    name: Option<String>,
    /// An IANA timezone name (`Europe/Paris`) for cron schedules.
    #[serde(default)]
    #[schemars(with = "String", length(max = limits::TIMEZONE))]
    timezone: Option<String>,
    /// Run in the task's own git worktree.
    #[serde(default)]
    worktree: bool,
    /// The new branch of that worktree (detached at HEAD without one).
    #[serde(default)]
    #[schemars(with = "String", length(min = 1, max = 200))]
    branch: Option<String>,
}

fn create_example() -> Value {
    json!({
        "prompt": "Summarise the new issues",
        "scheduleType": "cron",
        "scheduleValue": "0 9 * * 1-5",
        "contextMode": "isolated",
        "name": "Morning summary",
        "timezone": "Europe/Paris",
        "worktree": true,
        "branch": "summaries",
    })
}

/// `PUT /api/agents/{name}/tasks/{id}`: the fields to change.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(example = update_example())]
pub struct UpdateTask {
    #[serde(default)]
    #[schemars(with = "wire::TaskStatus")]
    status: Option<wire::TaskStatus>,
    #[serde(default)]
    #[schemars(with = "String", length(max = limits::PROMPT))]
    prompt: Option<String>,
    /// Read by the task's `scheduleType`, as when it was made.
    #[serde(default)]
    #[schemars(with = "String", length(min = 1, max = limits::SCHEDULE_VALUE))]
    schedule_value: Option<String>,
    #[serde(default)]
    #[schemars(with = "String", length(max = limits::TITLE))]
    name: Option<String>,
    #[serde(default)]
    #[schemars(with = "String", length(max = limits::TIMEZONE))]
    timezone: Option<String>,
}

fn update_example() -> Value {
    json!({"status": "paused", "prompt": "Summarise the new issues and PRs", "name": "Summary"})
}

async fn list_all(state: Data<AppState>, query: web::Query<PageQuery>) -> ApiResult<HttpResponse> {
    let limit = query.limit()?;
    // Every agent's tasks are in agent name order, then id order: the cursor names both.
    let after = query.cursor(|cursor| {
        let (agent, task) = cursor.split_once('/')?;
        Some((AgentName::parse(agent).ok()?, TaskId::parse(task).ok()?))
    })?;
    let Some(limit) = limit else {
        let tasks = state.stores.tasks.list_all_rendered(listing::TASKS).await?;
        return Ok(listing::answer(tasks));
    };
    let tasks = state.stores.tasks.list_all().await?;
    let tasks: Vec<Task> = tasks
        .into_iter()
        .filter(|task| {
            after.as_ref().is_none_or(|(agent, id)| {
                (task.agent_name.as_str(), task.id) > (agent.as_str(), *id)
            })
        })
        .take(limit + 1)
        .collect();
    let (tasks, next_cursor) =
        page::cut(tasks, limit, |task| format!("{}/{}", task.agent_name, task.id));
    Ok(HttpResponse::Ok().json(TasksBody { tasks: views::all(tasks), next_cursor }))
}

async fn list(
    state: Data<AppState>,
    path: AgentPath,
    query: web::Query<PageQuery>,
) -> ApiResult<HttpResponse> {
    let Some(limit) = query.limit()? else {
        let tasks = state.stores.tasks.list_rendered(&path.name, listing::TASKS).await?;
        return Ok(listing::answer(tasks));
    };
    let after = query.cursor(|cursor| TaskId::parse(cursor).ok())?;
    let tasks = state.stores.tasks.list_page(&path.name, after, limit + 1).await?;
    let (tasks, next_cursor) = page::cut(tasks, limit, |task| task.id.to_string());
    Ok(HttpResponse::Ok().json(TasksBody { tasks: views::all(tasks), next_cursor }))
}

async fn create(
    state: Data<AppState>,
    path: AgentPath,
    Json(body): Json<CreateTask>,
) -> ApiResult<HttpResponse> {
    let request = workflow::TaskRequest {
        name: body.name,
        prompt: body.prompt,
        schedule_type: body.schedule_type.into(),
        schedule_value: body.schedule_value,
        // Isolated unless asked: a fresh session for every run.
        context_mode: body
            .context_mode
            .map(Into::into)
            .unwrap_or(orbit_store::ContextMode::Isolated),
        timezone: body.timezone,
        worktree: body.worktree,
        branch: body.branch,
    };
    let task = workflow::create_task(&state.stores, &path.name, request, state.pool.node()).await?;
    Ok(HttpResponse::Created().json(TaskBody { task: task.into() }))
}

async fn get(state: Data<AppState>, path: TaskPath) -> ApiResult<HttpResponse> {
    let task = state.stores.tasks.get(&path.name, &path.id).await?;
    Ok(HttpResponse::Ok().json(TaskBody { task: task.into() }))
}

async fn update(
    state: Data<AppState>,
    path: TaskPath,
    Json(body): Json<UpdateTask>,
) -> ApiResult<HttpResponse> {
    let change = workflow::TaskChange {
        name: body.name,
        prompt: body.prompt,
        schedule_value: body.schedule_value,
        timezone: body.timezone,
        status: body.status.map(Into::into),
    };
    let task = workflow::update_task(&state.stores, &path.name, &path.id, change).await?;
    Ok(HttpResponse::Ok().json(TaskBody { task: task.into() }))
}

async fn delete(state: Data<AppState>, path: TaskPath) -> ApiResult<HttpResponse> {
    let kept =
        workflow::delete_task(&state.stores, &path.name, &path.id, state.pool.node()).await?;
    let answer = SuccessView { worktree_kept: kept.map(Into::into), ..SuccessView::DONE };
    Ok(HttpResponse::Ok().json(answer))
}

async fn run_now(state: Data<AppState>, path: TaskPath) -> ApiResult<HttpResponse> {
    let run = state.scheduler.run_now(&path.name, &path.id).await?;
    Ok(HttpResponse::Accepted().json(RunBody { run: run.into() }))
}

async fn runs(
    state: Data<AppState>,
    path: TaskPath,
    query: web::Query<PageQuery>,
) -> ApiResult<HttpResponse> {
    let limit = query.limit()?;
    let before = query.cursor(|cursor| RunId::parse(cursor).ok())?;
    // A task keeps a bounded number of runs, so a page is cut from all of them.
    let runs = state.stores.tasks.list_runs(&path.name, &path.id).await?;
    let Some(limit) = limit else {
        return Ok(HttpResponse::Ok().json(RunsBody { runs: views::all(runs), next_cursor: None }));
    };
    let runs: Vec<Run> = runs
        .into_iter()
        .filter(|run| before.is_none_or(|before| run.id < before))
        .take(limit + 1)
        .collect();
    let (runs, next_cursor) = page::cut(runs, limit, |run| run.id.to_string());
    Ok(HttpResponse::Ok().json(RunsBody { runs: views::all(runs), next_cursor }))
}
