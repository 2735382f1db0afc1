//! `/api/agents/:name/sessions...`, including abort.

use actix_web::web::Data;
use actix_web::{HttpResponse, web};
use orbit_store::{SessionId, SessionPatch, limits};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::endpoint::Endpoint;
use crate::error::{ApiError, ApiResult, Code};
use crate::extract::{AgentPath, Json, MaybeJson, PermissionPath, SessionPath};
use crate::page::{self, PageQuery};
use crate::views::{self, SessionBody, SessionDetailBody, SessionsBody, SuccessView};
use crate::{AppState, listing, wire};
use orbit_agent::workflow;

pub fn endpoints() -> Vec<Endpoint> {
    vec![
        Endpoint::new::<SessionsBody>(
            "GET",
            "/api/agents/{name}/sessions",
            "listSessions",
            "List an agent's sessions, newest first (a page of them with `limit`)",
            || web::get().to(list),
        )
        .query::<PageQuery>(),
        Endpoint::new::<SessionBody>(
            "POST",
            "/api/agents/{name}/sessions",
            "createSession",
            "Create a session (and the agent if missing), optionally in its own git worktree",
            || web::post().to(create),
        )
        .status(201)
        .optional_body::<CreateSession>()
        // A worktree's branch that exists already.
        .errors(&[Code::Conflict]),
        Endpoint::new::<SessionDetailBody>(
            "GET",
            "/api/agents/{name}/sessions/{id}",
            "getSession",
            "Get a session with its messages",
            || web::get().to(get),
        ),
        Endpoint::new::<SessionBody>(
            "PUT",
            "/api/agents/{name}/sessions/{id}",
            "updateSession",
            "Update a session",
            || web::put().to(update),
        )
        .body::<UpdateSession>(),
        Endpoint::new::<SuccessView>(
            "DELETE",
            "/api/agents/{name}/sessions/{id}",
            "deleteSession",
            "Delete a session (its worktree too, unless it holds uncommitted work)",
            || web::delete().to(delete),
        ),
        Endpoint::new::<SuccessView>(
            "POST",
            "/api/agents/{name}/sessions/{id}/abort",
            "abortSession",
            "Abort the session's running turn (404 when none runs)",
            || web::post().to(abort),
        ),
        Endpoint::new::<SuccessView>(
            "POST",
            "/api/agents/{name}/sessions/{id}/permissions/{requestId}",
            "answerPermission",
            "Answer an ask-mode permission request (404 when it is not pending)",
            || web::post().to(answer_permission),
        )
        .body::<PermissionAnswer>(),
    ]
}

/// `PUT /api/agents/{name}/sessions/{id}`: the fields to change.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(example = update_example())]
pub struct UpdateSession {
    #[serde(default)]
    #[schemars(with = "String", length(max = limits::TITLE))]
    title: Option<String>,
    #[serde(default)]
    #[schemars(with = "wire::Model")]
    model: Option<String>,
    #[serde(default)]
    #[schemars(with = "wire::PermissionMode")]
    permission_mode: Option<wire::PermissionMode>,
}

fn update_example() -> Value {
    json!({"title": "Quarterly report", "model": "sonnet", "permissionMode": "ask"})
}

/// `POST /api/agents/{name}/sessions`; the whole body may be left out.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(example = create_example())]
// A branch names the worktree's new branch, so it needs the worktree.
#[schemars(extend("dependentSchemas" = {"branch": {"required": ["worktree"], "properties": {"worktree": {"const": true}}}}))]
pub struct CreateSession {
    #[serde(default)]
    #[schemars(with = "String", length(max = limits::TITLE))]
    title: Option<String>,
    #[serde(default)]
    #[schemars(with = "wire::Model")]
    model: Option<String>,
    #[serde(default)]
    #[schemars(with = "wire::PermissionMode")]
    permission_mode: Option<wire::PermissionMode>,
    /// Run this session's turns in a git worktree of its own.
    #[serde(default)]
    worktree: bool,
    /// The new branch of that worktree (detached at HEAD without one); needs `"worktree": true`.
    /// Checked by `git check-ref-format --branch`; `HEAD`, `*_HEAD`, `@`, `@{`, `refs/` and a
    /// leading `-` are refused.
    #[serde(default)]
    #[schemars(with = "String", length(min = 1, max = 200))]
    branch: Option<String>,
}

fn create_example() -> Value {
    json!({"title": "Quarterly report", "model": "sonnet", "permissionMode": "ask", "worktree": true, "branch": "report"})
}

/// `POST .../permissions/{requestId}`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(example = answer_example())]
pub struct PermissionAnswer {
    /// Whether the tool may run.
    allow: bool,
    /// Told to the model with the answer.
    #[serde(default)]
    #[schemars(with = "String", length(max = limits::PERMISSION_MESSAGE))]
    message: Option<String>,
}

fn answer_example() -> Value {
    json!({"allow": false, "message": "Not in this directory"})
}

async fn list(
    state: Data<AppState>,
    path: AgentPath,
    query: web::Query<PageQuery>,
) -> ApiResult<HttpResponse> {
    let Some(limit) = query.limit()? else {
        let sessions = state.stores.sessions.list_rendered(&path.name, listing::SESSIONS).await?;
        return Ok(listing::answer(sessions));
    };
    let before = query.cursor(|cursor| SessionId::parse(cursor).ok())?;
    let sessions = state.stores.sessions.list_page(&path.name, before, limit + 1).await?;
    let (sessions, next_cursor) = page::cut(sessions, limit, |session| session.id.to_string());
    Ok(HttpResponse::Ok().json(SessionsBody { sessions: views::all(sessions), next_cursor }))
}

async fn create(
    state: Data<AppState>,
    path: AgentPath,
    MaybeJson(fields): MaybeJson<CreateSession>,
) -> ApiResult<HttpResponse> {
    let fields = fields.unwrap_or_default();
    let request = workflow::SessionRequest {
        title: fields.title,
        model: fields.model,
        permission_mode: fields.permission_mode.map(Into::into),
        worktree: fields.worktree,
        branch: fields.branch,
    };
    let session = state.pool.create_session(&path.name, request).await?;
    Ok(HttpResponse::Created().json(SessionBody { session: session.into() }))
}

async fn get(state: Data<AppState>, path: SessionPath) -> ApiResult<HttpResponse> {
    let body =
        state.stores.sessions.get_detail(&path.name, &path.id, &listing::SESSION_DETAIL).await?;
    Ok(listing::answer(body))
}

async fn update(
    state: Data<AppState>,
    path: SessionPath,
    Json(fields): Json<UpdateSession>,
) -> ApiResult<HttpResponse> {
    limits::check_optional("title", fields.title.as_deref(), limits::TITLE)?;
    super::agents::check_model(fields.model.as_deref())?;
    let patch = SessionPatch {
        title: fields.title,
        model: fields.model,
        permission_mode: fields.permission_mode.map(Into::into),
        ..SessionPatch::default()
    };
    let session = state.stores.sessions.update(&path.name, &path.id, patch).await?;
    Ok(HttpResponse::Ok().json(SessionBody { session: session.into() }))
}

async fn delete(state: Data<AppState>, path: SessionPath) -> ApiResult<HttpResponse> {
    let kept = state.pool.delete_session(&path.name, &path.id).await?;
    let answer = SuccessView { worktree_kept: kept.map(Into::into), ..SuccessView::DONE };
    Ok(HttpResponse::Ok().json(answer))
}

async fn answer_permission(
    state: Data<AppState>,
    path: PermissionPath,
    Json(answer): Json<PermissionAnswer>,
) -> ApiResult<HttpResponse> {
    limits::check_optional("message", answer.message.as_deref(), limits::PERMISSION_MESSAGE)?;
    // Here, or through the store on the node that runs the turn.
    state
        .pool
        .answer_permission(&path.name, &path.id, &path.request_id, answer.allow, answer.message)
        .await
        .map_err(|err| match err {
            orbit_agent::Error::PermissionNotPending(_) => {
                ApiError::not_found(format!("no permission request {} is pending", path.request_id))
            }
            other => other.into(),
        })?;
    Ok(HttpResponse::Ok().json(SuccessView::DONE))
}

async fn abort(state: Data<AppState>, path: SessionPath) -> ApiResult<HttpResponse> {
    let (name, id) = (path.name, path.id);
    state.stores.sessions.get(&name, &id).await?;
    // Here, or through the store on the node that runs it.
    state.pool.abort_turn(&name, &id).await.map_err(|err| match err {
        orbit_agent::Error::NotRunning(_) => {
            ApiError::not_found(format!("session {id} has no running turn"))
        }
        other => other.into(),
    })?;
    Ok(HttpResponse::Ok().json(SuccessView::DONE))
}
