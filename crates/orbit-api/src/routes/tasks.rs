//! `/api/tasks` and `/api/agents/:name/tasks...`. Schedules are checked and `nextRun`
//! computed here; firing them is the scheduler's job.

use actix_web::web::{Data, Path, Payload};
use actix_web::{HttpRequest, HttpResponse, web};
use orbit_store::{
    ContextMode, NewTask, Schedule, ScheduleType, TaskPatch, TaskStatus, limits, timestamp,
};
use serde::Deserialize;
use serde_json::json;

use crate::endpoint::{Endpoint, object};
use crate::error::{ApiError, ApiResult};
use crate::{AppState, body, extract};

pub fn endpoints() -> Vec<Endpoint> {
    let create_body = object(
        &[
            ("prompt", "string"),
            ("scheduleType", "string"),
            ("scheduleValue", "string"),
            ("contextMode", "string"),
            ("name", "string"),
            ("timezone", "string"),
        ],
        &["prompt", "scheduleType", "scheduleValue", "contextMode"],
    );
    let update_body = object(
        &[
            ("status", "string"),
            ("prompt", "string"),
            ("scheduleValue", "string"),
            ("name", "string"),
            ("timezone", "string"),
        ],
        &[],
    );
    vec![
        Endpoint::new("GET", "/api/tasks", "List every agent's tasks", || web::get().to(list_all)),
        Endpoint::new("GET", "/api/agents/{name}/tasks", "List an agent's tasks", || {
            web::get().to(list)
        }),
        Endpoint::new("POST", "/api/agents/{name}/tasks", "Create a task", || {
            web::post().to(create)
        })
        .status(201)
        .body(create_body),
        Endpoint::new("PUT", "/api/agents/{name}/tasks/{id}", "Update a task", || {
            web::put().to(update)
        })
        .body(update_body),
        Endpoint::new("DELETE", "/api/agents/{name}/tasks/{id}", "Delete a task", || {
            web::delete().to(delete)
        }),
        Endpoint::new(
            "GET",
            "/api/agents/{name}/tasks/{id}/runs",
            "List a task's runs, newest first",
            || web::get().to(runs),
        ),
        Endpoint::new(
            "POST",
            "/api/agents/{name}/tasks/{id}/run",
            "Run a task now (never overlapping its running run)",
            || web::post().to(run_now),
        )
        .status(202),
    ]
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateTask {
    prompt: String,
    schedule_type: ScheduleType,
    schedule_value: String,
    context_mode: ContextMode,
    name: Option<String>,
    timezone: Option<String>,
    /// Run in the task's own git worktree.
    #[serde(default)]
    worktree: bool,
    branch: Option<String>,
}

// Required fields make a default meaningless; an empty body is refused before this is used.
impl Default for CreateTask {
    fn default() -> Self {
        Self {
            prompt: String::new(),
            schedule_type: ScheduleType::Once,
            schedule_value: String::new(),
            context_mode: ContextMode::Isolated,
            name: None,
            timezone: None,
            worktree: false,
            branch: None,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct UpdateTask {
    status: Option<TaskStatus>,
    prompt: Option<String>,
    schedule_value: Option<String>,
    name: Option<String>,
    timezone: Option<String>,
}

/// The length limits of a task's free-text fields.
fn check_fields(
    prompt: Option<&str>,
    schedule_value: Option<&str>,
    name: Option<&str>,
    timezone: Option<&str>,
) -> ApiResult<()> {
    limits::check_optional("prompt", prompt, limits::PROMPT)?;
    limits::check_optional("scheduleValue", schedule_value, limits::SCHEDULE_VALUE)?;
    limits::check_optional("name", name, limits::TITLE)?;
    limits::check_optional("timezone", timezone, limits::TIMEZONE)?;
    Ok(())
}

async fn list_all(state: Data<AppState>) -> ApiResult<HttpResponse> {
    Ok(HttpResponse::Ok().json(body::Envelope("tasks", &state.stores.tasks.list_all().await?)))
}

async fn list(state: Data<AppState>, path: Path<String>) -> ApiResult<HttpResponse> {
    let name = extract::agent(&path)?;
    Ok(HttpResponse::Ok()
        .json(body::Envelope("tasks", &state.stores.tasks.list_by_agent(&name).await?)))
}

async fn create(
    state: Data<AppState>,
    path: Path<String>,
    req: HttpRequest,
    payload: Payload,
) -> ApiResult<HttpResponse> {
    let name = extract::agent(&path)?;
    let body: CreateTask = body::json(&req, payload, false).await?;
    check_fields(
        Some(&body.prompt),
        Some(&body.schedule_value),
        body.name.as_deref(),
        body.timezone.as_deref(),
    )?;
    let schedule =
        Schedule::parse(body.schedule_type, &body.schedule_value, body.timezone.as_deref())?;
    let next_run = schedule.next_after(timestamp::now());
    if next_run.is_none() {
        return Err(ApiError::bad_request(format!(
            "schedule '{}' never fires: the time is past",
            body.schedule_value
        )));
    }
    if body.branch.is_some() && !body.worktree {
        return Err(ApiError::bad_request("'branch' needs \"worktree\": true"));
    }
    if body.worktree && body.context_mode == ContextMode::Main {
        return Err(ApiError::bad_request(
            "a task in its own worktree needs \"contextMode\": \"isolated\" (the main session has its own working directory)",
        ));
    }
    if let Some(branch) = &body.branch {
        orbit_agent::worktree::check_branch(branch).await?;
    }
    let new = NewTask {
        name: body.name,
        prompt: body.prompt,
        schedule_type: body.schedule_type,
        schedule_value: body.schedule_value,
        context_mode: body.context_mode,
        timezone: body.timezone,
        next_run,
        worktree: body.worktree,
        branch: body.branch,
    };
    let task = state.stores.tasks.create(&name, new).await?;
    Ok(HttpResponse::Created().json(body::Envelope("task", &task)))
}

async fn update(
    state: Data<AppState>,
    path: Path<(String, String)>,
    req: HttpRequest,
    payload: Payload,
) -> ApiResult<HttpResponse> {
    let (name, id) = (extract::agent(&path.0)?, extract::task(&path.1)?);
    let body: UpdateTask = body::json(&req, payload, false).await?;
    check_fields(
        body.prompt.as_deref(),
        body.schedule_value.as_deref(),
        body.name.as_deref(),
        body.timezone.as_deref(),
    )?;
    let current = state.stores.tasks.get(&name, &id).await?;
    let value = body.schedule_value.clone().unwrap_or(current.schedule_value.clone());
    let timezone = body.timezone.clone().or(current.timezone.clone());
    let schedule = Schedule::parse(current.schedule_type, &value, timezone.as_deref())?;
    let status = body.status.unwrap_or(current.status);
    let now = timestamp::now();
    // Slots come from the stored schedule and anchor, so that every scheduler sharing the
    // data directory fires the same ones. Only a new schedule starts a new phase (its first
    // slot from now becomes the anchor); a resume takes the next slot of the old phase, and
    // any other change leaves the next run alone.
    let (next_run, anchor) = if body.schedule_value.is_some() || body.timezone.is_some() {
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
        name: body.name,
        prompt: body.prompt,
        schedule_value: body.schedule_value,
        timezone: body.timezone,
        status: body.status,
        next_run,
        last_run: None,
        anchor,
    };
    let task = state.stores.tasks.update(&name, &id, patch).await?;
    Ok(HttpResponse::Ok().json(body::Envelope("task", &task)))
}

async fn delete(state: Data<AppState>, path: Path<(String, String)>) -> ApiResult<HttpResponse> {
    let (name, id) = (extract::agent(&path.0)?, extract::task(&path.1)?);
    let task = state.stores.tasks.get(&name, &id).await?;
    state.stores.tasks.delete(&name, &id).await?;
    // The task's worktree goes with it, unless it holds uncommitted work.
    let mut answer = json!({ "success": true });
    if task.worktree
        && let Some(kept) = super::worktrees::remove_owned(&state, &name, &id.to_string()).await?
    {
        answer["worktreeKept"] = kept;
    }
    Ok(HttpResponse::Ok().json(answer))
}

async fn run_now(state: Data<AppState>, path: Path<(String, String)>) -> ApiResult<HttpResponse> {
    let (name, id) = (extract::agent(&path.0)?, extract::task(&path.1)?);
    let run = state.scheduler.run_now(&name, &id).await?;
    Ok(HttpResponse::Accepted().json(json!({ "run": run })))
}

async fn runs(state: Data<AppState>, path: Path<(String, String)>) -> ApiResult<HttpResponse> {
    let (name, id) = (extract::agent(&path.0)?, extract::task(&path.1)?);
    Ok(HttpResponse::Ok()
        .json(body::Envelope("runs", &state.stores.tasks.list_runs(&name, &id).await?)))
}
