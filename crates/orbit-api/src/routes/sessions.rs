//! `/api/agents/:name/sessions...`, including abort.

use actix_web::web::{Data, Path, Payload};
use actix_web::{HttpRequest, HttpResponse, web};
use orbit_store::{NewSession, PermissionMode, SessionPatch};
use serde::Deserialize;
use serde_json::json;

use crate::endpoint::{Endpoint, object};
use crate::error::ApiResult;
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
            "Create a session (and the agent if missing)",
            || web::post().to(create),
        )
        .status(201)
        .body(fields.clone()),
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
    ]
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SessionFields {
    title: Option<String>,
    model: Option<String>,
    permission_mode: Option<PermissionMode>,
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
    let fields: SessionFields = body::json(&req, payload, true).await?;
    state.stores.agents.ensure(&name).await?;
    let new = NewSession {
        title: fields.title,
        model: fields.model,
        permission_mode: fields.permission_mode,
        worktree_id: None,
    };
    let session = state.stores.sessions.create(&name, new).await?;
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
    state.stores.sessions.get(&name, &id).await?;
    state.pool.release(&name, &id).await;
    state.stores.sessions.delete(&name, &id).await?;
    Ok(HttpResponse::Ok().json(json!({ "success": true })))
}

async fn abort(state: Data<AppState>, path: Path<(String, String)>) -> ApiResult<HttpResponse> {
    let (name, id) = (extract::agent(&path.0)?, extract::session(&path.1)?);
    state.stores.sessions.get(&name, &id).await?;
    let agent = state.pool.find(&name, &id).ok_or_else(|| {
        crate::error::ApiError::not_found(format!("session {id} has no running turn"))
    })?;
    agent.abort()?;
    Ok(HttpResponse::Ok().json(json!({ "success": true })))
}
