//! `/api/agents/:name/worktrees...`.

use actix_web::web::{Data, Path};
use actix_web::{HttpResponse, web};
use orbit_agent::worktree;
use orbit_store::{SessionId, TaskId};
use serde_json::json;

use crate::endpoint::Endpoint;
use crate::error::ApiResult;
use crate::{AppState, body, extract};

pub fn endpoints() -> Vec<Endpoint> {
    vec![
        Endpoint::new(
            "GET",
            "/api/agents/{name}/worktrees",
            "List the agent's git worktrees",
            || web::get().to(list),
        ),
        Endpoint::new(
            "DELETE",
            "/api/agents/{name}/worktrees/{id}",
            "Remove a worktree (409 when it has uncommitted changes)",
            || web::delete().to(delete),
        ),
    ]
}

async fn list(state: Data<AppState>, path: Path<String>) -> ApiResult<HttpResponse> {
    let name = extract::agent(&path)?;
    let base = state.stores.agents.working_dir(&name).await?;
    let mut listed = Vec::new();
    for tree in worktree::list(&base).await? {
        // A worktree is named after the session or task that asked for it.
        let mut entry = json!(tree);
        if let Ok(id) = SessionId::parse(&tree.id)
            && state.stores.sessions.get(&name, &id).await.is_ok()
        {
            entry["sessionId"] = json!(id);
        } else if let Ok(id) = TaskId::parse(&tree.id)
            && state.stores.tasks.get(&name, &id).await.is_ok()
        {
            entry["taskId"] = json!(id);
        }
        listed.push(entry);
    }
    Ok(HttpResponse::Ok().json(body::Envelope("worktrees", &listed)))
}

async fn delete(state: Data<AppState>, path: Path<(String, String)>) -> ApiResult<HttpResponse> {
    let name = extract::agent(&path.0)?;
    let base = state.stores.agents.working_dir(&name).await?;
    worktree::remove(&base, &path.1).await?;
    Ok(HttpResponse::Ok().json(json!({ "success": true })))
}

/// Removes the worktree of a deleted session or task. One that holds uncommitted work is kept,
/// and the returned note says so for the answer.
pub(crate) async fn remove_owned(
    state: &AppState,
    agent: &orbit_store::AgentName,
    id: &str,
) -> ApiResult<Option<serde_json::Value>> {
    let base = state.stores.agents.working_dir(agent).await?;
    match worktree::remove(&base, id).await {
        Ok(()) | Err(orbit_agent::Error::WorktreeNotFound(_)) => Ok(None),
        Err(orbit_agent::Error::WorktreeDirty(_)) => {
            Ok(Some(json!({"id": id, "reason": "it has uncommitted changes"})))
        }
        Err(err) => Err(err.into()),
    }
}
