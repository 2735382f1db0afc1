//! `/api/agents` and `/api/agents/:name`.

use actix_web::web::{Data, Path, Payload};
use actix_web::{HttpRequest, HttpResponse, web};
use orbit_store::{AgentPatch, AgentStatus, NewAgent, PermissionMode};
use serde::Deserialize;
use serde_json::json;

use crate::error::ApiResult;
use crate::{AppState, body, extract};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/api/agents").route(web::post().to(create)).route(web::get().to(list)),
    )
    .service(
        web::resource("/api/agents/{name}")
            .route(web::get().to(get))
            .route(web::put().to(update))
            .route(web::delete().to(delete)),
    );
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
    let agent = state
        .stores
        .agents
        .create(&name, NewAgent { model: body.model, permission_mode: body.permission_mode })
        .await?;
    Ok(HttpResponse::Created().json(json!({ "agent": agent })))
}

async fn list(state: Data<AppState>) -> ApiResult<HttpResponse> {
    Ok(HttpResponse::Ok().json(json!({ "agents": state.stores.agents.list().await? })))
}

async fn get(state: Data<AppState>, path: Path<String>) -> ApiResult<HttpResponse> {
    let name = extract::agent(&path)?;
    Ok(HttpResponse::Ok().json(json!({ "agent": state.stores.agents.get(&name).await? })))
}

async fn update(
    state: Data<AppState>,
    path: Path<String>,
    req: HttpRequest,
    payload: Payload,
) -> ApiResult<HttpResponse> {
    let name = extract::agent(&path)?;
    let body: UpdateAgent = body::json(&req, payload, false).await?;
    let patch = AgentPatch {
        model: body.model,
        permission_mode: body.permission_mode,
        status: body.status,
    };
    Ok(HttpResponse::Ok().json(json!({ "agent": state.stores.agents.update(&name, patch).await? })))
}

async fn delete(state: Data<AppState>, path: Path<String>) -> ApiResult<HttpResponse> {
    let name = extract::agent(&path)?;
    state.stores.agents.get(&name).await?;
    // Running chats are aborted and their processes ended before the records go.
    state.pool.release_agent(&name).await;
    state.stores.agents.delete(&name).await?;
    Ok(HttpResponse::Ok().json(json!({ "success": true })))
}
