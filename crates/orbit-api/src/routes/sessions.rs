//! `/api/agents/:name/sessions...`, including abort.

use actix_web::web::{Data, Path, Payload};
use actix_web::{HttpRequest, HttpResponse, web};
use orbit_agent::worktree;
use orbit_store::{NewSession, PermissionMode, SessionId, SessionPatch, limits};
use serde::Deserialize;
use serde_json::json;

use crate::endpoint::{Endpoint, object};
use crate::error::{ApiError, ApiResult};
use crate::{AppState, body, extract};

pub fn endpoints() -> Vec<Endpoint> {
    let fields =
        object(&[("title", "string"), ("model", "string"), ("permissionMode", "string")], &[]);
    vec![
        Endpoint::new(
            "GET",
            "/api/agents/{name}/sessions",
            "List an agent's sessions, newest first",
            || web::get().to(list),
        ),
        Endpoint::new(
            "POST",
            "/api/agents/{name}/sessions",
            "Create a session (and the agent if missing), optionally in its own git worktree",
            || web::post().to(create),
        )
        .status(201)
        .body(object(
            &[
                ("title", "string"),
                ("model", "string"),
                ("permissionMode", "string"),
                ("worktree", "boolean"),
                ("branch", "string"),
            ],
            &[],
        )),
        Endpoint::new(
            "GET",
            "/api/agents/{name}/sessions/{id}",
            "Get a session with its messages",
            || web::get().to(get),
        ),
        Endpoint::new("PUT", "/api/agents/{name}/sessions/{id}", "Update a session", || {
            web::put().to(update)
        })
        .body(fields),
        Endpoint::new("DELETE", "/api/agents/{name}/sessions/{id}", "Delete a session", || {
            web::delete().to(delete)
        }),
        Endpoint::new(
            "POST",
            "/api/agents/{name}/sessions/{id}/abort",
            "Abort the session's running turn",
            || web::post().to(abort),
        ),
        Endpoint::new(
            "POST",
            "/api/agents/{name}/sessions/{id}/permissions/{requestId}",
            "Answer an ask-mode permission request",
            || web::post().to(answer_permission),
        )
        .body(object(&[("allow", "boolean"), ("message", "string")], &["allow"])),
    ]
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SessionFields {
    title: Option<String>,
    model: Option<String>,
    permission_mode: Option<PermissionMode>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateSession {
    title: Option<String>,
    model: Option<String>,
    permission_mode: Option<PermissionMode>,
    /// Run this session's turns in a git worktree of its own.
    #[serde(default)]
    worktree: bool,
    /// The new branch of that worktree (detached at HEAD without one).
    branch: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PermissionAnswer {
    allow: bool,
    message: Option<String>,
}

async fn list(state: Data<AppState>, path: Path<String>) -> ApiResult<HttpResponse> {
    let name = extract::agent(&path)?;
    Ok(HttpResponse::Ok()
        .json(body::Envelope("sessions", &state.stores.sessions.list_by_agent(&name).await?)))
}

async fn create(
    state: Data<AppState>,
    path: Path<String>,
    req: HttpRequest,
    payload: Payload,
) -> ApiResult<HttpResponse> {
    let name = extract::agent(&path)?;
    let fields: CreateSession = body::json(&req, payload, true).await?;
    limits::check_optional("title", fields.title.as_deref(), limits::TITLE)?;
    super::agents::check_model(fields.model.as_deref())?;
    if fields.branch.is_some() && !fields.worktree {
        return Err(ApiError::bad_request("'branch' needs \"worktree\": true"));
    }
    state.stores.agents.ensure(&name).await?;
    // The worktree is named after the session, so its id is chosen before both exist.
    let id = SessionId::new();
    let worktree_id = if fields.worktree {
        let base = state.stores.agents.working_dir(&name).await?;
        Some(worktree::create(&base, &id.to_string(), fields.branch.as_deref()).await?.id)
    } else {
        None
    };
    let new = NewSession {
        title: fields.title,
        model: fields.model,
        permission_mode: fields.permission_mode,
        worktree_id,
    };
    let session = state.stores.sessions.create_with_id(&name, id, new).await?;
    Ok(HttpResponse::Created().json(json!({ "session": session })))
}

async fn get(state: Data<AppState>, path: Path<(String, String)>) -> ApiResult<HttpResponse> {
    let (name, id) = (extract::agent(&path.0)?, extract::session(&path.1)?);
    let session = state.stores.sessions.get(&name, &id).await?;
    let messages = state.stores.sessions.get_messages(&name, &id).await?;
    Ok(HttpResponse::Ok().json(json!({ "session": session, "messages": messages })))
}

async fn update(
    state: Data<AppState>,
    path: Path<(String, String)>,
    req: HttpRequest,
    payload: Payload,
) -> ApiResult<HttpResponse> {
    let (name, id) = (extract::agent(&path.0)?, extract::session(&path.1)?);
    let fields: SessionFields = body::json(&req, payload, false).await?;
    limits::check_optional("title", fields.title.as_deref(), limits::TITLE)?;
    super::agents::check_model(fields.model.as_deref())?;
    let patch = SessionPatch {
        title: fields.title,
        model: fields.model,
        permission_mode: fields.permission_mode,
        ..SessionPatch::default()
    };
    Ok(HttpResponse::Ok()
        .json(body::Envelope("session", &state.stores.sessions.update(&name, &id, patch).await?)))
}

async fn delete(state: Data<AppState>, path: Path<(String, String)>) -> ApiResult<HttpResponse> {
    let (name, id) = (extract::agent(&path.0)?, extract::session(&path.1)?);
    let session = state.stores.sessions.get(&name, &id).await?;
    // Its turn is aborted, its process ended and its CLI state forgotten before the record goes.
    state.pool.forget_session(&name, &id).await;
    state.stores.sessions.delete(&name, &id).await?;
    // The session's worktree goes with it, unless it holds uncommitted work.
    let mut answer = json!({ "success": true });
    if let Some(worktree_id) = session.worktree_id
        && let Some(kept) = super::worktrees::remove_owned(&state, &name, &worktree_id).await?
    {
        answer["worktreeKept"] = kept;
    }
    Ok(HttpResponse::Ok().json(answer))
}

async fn answer_permission(
    state: Data<AppState>,
    path: Path<(String, String, String)>,
    req: HttpRequest,
    payload: Payload,
) -> ApiResult<HttpResponse> {
    let (name, id) = (extract::agent(&path.0)?, extract::session(&path.1)?);
    let answer: PermissionAnswer = body::json(&req, payload, false).await?;
    limits::check_optional("message", answer.message.as_deref(), limits::PERMISSION_MESSAGE)?;
    let not_pending =
        || ApiError::not_found(format!("no permission request {} is pending", path.2));
    let agent = state.pool.find(&name, &id).ok_or_else(not_pending)?;
    agent.answer_permission(&path.2, answer.allow, answer.message)?;
    Ok(HttpResponse::Ok().json(json!({ "success": true })))
}

async fn abort(state: Data<AppState>, path: Path<(String, String)>) -> ApiResult<HttpResponse> {
    let (name, id) = (extract::agent(&path.0)?, extract::session(&path.1)?);
    state.stores.sessions.get(&name, &id).await?;
    let agent = state
        .pool
        .find(&name, &id)
        .ok_or_else(|| ApiError::not_found(format!("session {id} has no running turn")))?;
    agent.abort()?;
    Ok(HttpResponse::Ok().json(json!({ "success": true })))
}
