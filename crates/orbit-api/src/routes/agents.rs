//! `/api/agents` and `/api/agents/:name`.

use actix_web::web::Data;
use actix_web::{HttpResponse, web};
use orbit_agent::Activity;
use orbit_store::{Agent, AgentName, AgentPatch, AgentStatus, NewAgent};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::endpoint::Endpoint;
use crate::error::{ApiError, ApiResult, Code};
use crate::extract::{AgentPath, Json};
use crate::views::{self, AgentBody, AgentsBody, SuccessView};
use crate::{AppState, wire};

pub fn endpoints() -> Vec<Endpoint> {
    vec![
        Endpoint::new::<AgentBody>("POST", "/api/agents", "createAgent", "Create an agent", || {
            web::post().to(create)
        })
        .status(201)
        .body::<CreateAgent>()
        .errors(&[Code::Conflict]),
        Endpoint::new::<AgentsBody>("GET", "/api/agents", "listAgents", "List agents", || {
            web::get().to(list)
        }),
        Endpoint::new::<AgentBody>("GET", "/api/agents/{name}", "getAgent", "Get an agent", || {
            web::get().to(get)
        }),
        Endpoint::new::<AgentBody>(
            "PUT",
            "/api/agents/{name}",
            "updateAgent",
            "Update an agent",
            || web::put().to(update),
        )
        .body::<UpdateAgent>()
        .errors(&[Code::Conflict]),
        Endpoint::new::<SuccessView>(
            "DELETE",
            "/api/agents/{name}",
            "deleteAgent",
            "Delete an agent, aborting its chats",
            || web::delete().to(delete),
        ),
    ]
}

/// `POST /api/agents`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(example = create_example())]
pub struct CreateAgent {
    #[schemars(with = "wire::AgentName")]
    name: AgentName,
    #[serde(default)]
    #[schemars(with = "wire::Model")]
    model: Option<String>,
    #[serde(default)]
    #[schemars(with = "wire::PermissionMode")]
    permission_mode: Option<wire::PermissionMode>,
    /// The directory the agent works in; without it, its workspace in the data directory.
    #[serde(default)]
    #[schemars(with = "wire::Workdir")]
    workdir: Option<String>,
}

fn create_example() -> Value {
    json!({"name": "researcher", "model": "sonnet", "permissionMode": "ask", "workdir": "/home/me/project"})
}

/// `PUT /api/agents/{name}`: the fields to change.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(example = update_example())]
pub struct UpdateAgent {
    #[serde(default)]
    #[schemars(with = "wire::Model")]
    model: Option<String>,
    #[serde(default)]
    #[schemars(with = "wire::PermissionMode")]
    permission_mode: Option<wire::PermissionMode>,
    #[serde(default)]
    #[schemars(with = "wire::AgentStatus")]
    status: Option<wire::AgentStatus>,
    /// A new directory to work in (`""`: back to the data directory's workspace); refused
    /// while the agent has worktrees or a running turn.
    #[serde(default)]
    #[schemars(with = "wire::WorkdirChange")]
    workdir: Option<String>,
}

fn update_example() -> Value {
    json!({"model": "opus", "permissionMode": "safe", "status": "inactive"})
}

async fn create(state: Data<AppState>, Json(body): Json<CreateAgent>) -> ApiResult<HttpResponse> {
    check_model(body.model.as_deref())?;
    let workdir = body.workdir.as_deref().map(|given| state.workdirs.check(given)).transpose()?;
    let new = NewAgent {
        model: body.model,
        permission_mode: body.permission_mode.map(Into::into),
        workdir,
    };
    let agent = state.stores.agents.create(&body.name, new).await?;
    state.pool.activity().announce(Activity::AgentChanged { agent: agent.name.clone() });
    Ok(HttpResponse::Created().json(AgentBody { agent: agent.into() }))
}

/// A model goes into the CLI's argument list; it is checked before it is stored.
pub(crate) fn check_model(model: Option<&str>) -> ApiResult<()> {
    Ok(model.map_or(Ok(()), orbit_store::limits::check_model)?)
}

async fn list(state: Data<AppState>) -> ApiResult<HttpResponse> {
    let agents = views::all(state.stores.agents.list().await?);
    Ok(HttpResponse::Ok().json(AgentsBody { agents }))
}

async fn get(state: Data<AppState>, path: AgentPath) -> ApiResult<HttpResponse> {
    let agent = state.stores.agents.get(&path.name).await?;
    Ok(HttpResponse::Ok().json(AgentBody { agent: agent.into() }))
}

async fn update(
    state: Data<AppState>,
    path: AgentPath,
    Json(body): Json<UpdateAgent>,
) -> ApiResult<HttpResponse> {
    check_model(body.model.as_deref())?;
    let workdir = match body.workdir.as_deref() {
        None => None,
        Some("") => Some(None),
        Some(given) => Some(Some(state.workdirs.check(given)?)),
    };
    let patch = AgentPatch {
        model: body.model,
        permission_mode: body.permission_mode.map(Into::into),
        status: body.status.map(Into::into),
        main_session_id: None,
        workdir,
    };
    let agent = state.pool.update_agent(&path.name, patch).await?;
    Ok(HttpResponse::Ok().json(AgentBody { agent: agent.into() }))
}

async fn delete(state: Data<AppState>, path: AgentPath) -> ApiResult<HttpResponse> {
    state.pool.delete_agent(&path.name).await?;
    Ok(HttpResponse::Ok().json(SuccessView::DONE))
}

/// 409 for an inactive agent: inactive means it neither chats nor runs its tasks.
pub(crate) fn check_active(agent: &Agent) -> ApiResult<()> {
    match agent.status {
        AgentStatus::Active => Ok(()),
        AgentStatus::Inactive => Err(ApiError::new(
            Code::Conflict,
            format!(
                "agent '{}' is inactive, so it does not chat; set its status to active (PUT /api/agents/{} {{\"status\": \"active\"}}) first",
                agent.name, agent.name
            ),
        )),
    }
}
