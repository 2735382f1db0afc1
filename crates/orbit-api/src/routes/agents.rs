//! `/api/agents` and `/api/agents/:name`.

use actix_web::web::{Data, Path, Payload};
use actix_web::{HttpRequest, HttpResponse, web};
use orbit_store::{AgentPatch, AgentStatus, NewAgent, PermissionMode};
use serde::Deserialize;
use serde_json::json;

use crate::endpoint::{Endpoint, object};
use crate::error::ApiResult;
use crate::{AppState, body, extract};

pub fn endpoints() -> Vec<Endpoint> {
    let create_body =
        object(&[("name", "string"), ("model", "string"), ("permissionMode", "string")], &["name"]);
    let update_body =
        object(&[("model", "string"), ("permissionMode", "string"), ("status", "string")], &[]);
    vec![
        Endpoint::new("POST", "/api/agents", "Create an agent", || web::post().to(create))
            .status(201)
            .body(create_body),
        Endpoint::new("GET", "/api/agents", "List agents", || web::get().to(list)),
        Endpoint::new("GET", "/api/agents/{name}", "Get an agent", || web::get().to(get)),
        Endpoint::new("PUT", "/api/agents/{name}", "Update an agent", || web::put().to(update))
            .body(update_body),
        Endpoint::new(
            "DELETE",
            "/api/agents/{name}",
            "Delete an agent, aborting its chats",
            || web::delete().to(delete),
        ),
    ]
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateAgent {
    name: String,
    model: Option<String>,
    permission_mode: Option<PermissionMode>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct UpdateAgent {
    model: Option<String>,
    permission_mode: Option<PermissionMode>,
    status: Option<AgentStatus>,
}

async fn create(
    state: Data<AppState>,
    req: HttpRequest,
    payload: Payload,
) -> ApiResult<HttpResponse> {
    let body: CreateAgent = body::json(&req, payload, false).await?;
    let name = extract::agent(&body.name)?;
    check_model(body.model.as_deref())?;
    let agent = state
        .stores
        .agents
        .create(&name, NewAgent { model: body.model, permission_mode: body.permission_mode })
        .await?;
    Ok(HttpResponse::Created().json(json!({ "agent": agent })))
}

/// A model goes into the CLI's argument list; it is checked before it is stored.
pub(crate) fn check_model(model: Option<&str>) -> ApiResult<()> {
    Ok(model.map_or(Ok(()), orbit_store::limits::check_model)?)
}

async fn list(state: Data<AppState>) -> ApiResult<HttpResponse> {
    Ok(HttpResponse::Ok().json(body::Envelope("agents", &state.stores.agents.list().await?)))
}

async fn get(state: Data<AppState>, path: Path<String>) -> ApiResult<HttpResponse> {
    let name = extract::agent(&path)?;
    Ok(HttpResponse::Ok().json(body::Envelope("agent", &state.stores.agents.get(&name).await?)))
}

async fn update(
    state: Data<AppState>,
    path: Path<String>,
    req: HttpRequest,
    payload: Payload,
) -> ApiResult<HttpResponse> {
    let name = extract::agent(&path)?;
    let body: UpdateAgent = body::json(&req, payload, false).await?;
    check_model(body.model.as_deref())?;
    let patch = AgentPatch {
        model: body.model,
        permission_mode: body.permission_mode,
        status: body.status,
        main_session_id: None,
    };
    Ok(HttpResponse::Ok()
        .json(body::Envelope("agent", &state.stores.agents.update(&name, patch).await?)))
}

async fn delete(state: Data<AppState>, path: Path<String>) -> ApiResult<HttpResponse> {
    let name = extract::agent(&path)?;
    state.stores.agents.get(&name).await?;
    // Running chats are aborted, their processes ended and the CLI state forgotten before the
    // records go, so nothing of this agent reaches a new agent of the same name.
    state.pool.forget_agent(&name).await;
    state.stores.agents.delete(&name).await?;
    Ok(HttpResponse::Ok().json(json!({ "success": true })))
}
