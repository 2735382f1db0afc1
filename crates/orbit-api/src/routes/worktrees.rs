//! `/api/agents/:name/worktrees...`.

use actix_web::web::Data;
use actix_web::{HttpResponse, web};
use orbit_agent::worktree::{self, Removal};
use orbit_store::{SessionId, TaskId};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::AppState;
use crate::endpoint::Endpoint;
use crate::error::{ApiError, ApiResult, Code};
use crate::extract::{AgentPath, WorktreePath};
use crate::views::{SuccessView, WorktreeView, WorktreesBody};

pub fn endpoints() -> Vec<Endpoint> {
    vec![
        Endpoint::new::<WorktreesBody>(
            "GET",
            "/api/agents/{name}/worktrees",
            "listWorktrees",
            "List the agent's git worktrees",
            || web::get().to(list),
        ),
        Endpoint::new::<SuccessView>(
            "DELETE",
            "/api/agents/{name}/worktrees/{id}",
            "deleteWorktree",
            "Remove a worktree (409 when it has uncommitted changes, unless forced)",
            || web::delete().to(delete),
        )
        .query::<DeleteQuery>()
        .errors(&[Code::Conflict]),
    ]
}

async fn list(state: Data<AppState>, path: AgentPath) -> ApiResult<HttpResponse> {
    let name = path.name;
    let working_dir = state.stores.agents.working_dir(&name).await?;
    let mut worktrees = Vec::new();
    for tree in worktree::list(&working_dir).await? {
        // A worktree is named after the session or task that asked for it.
        let mut view = WorktreeView {
            id: tree.id,
            path: tree.path.display().to_string(),
            branch: tree.branch,
            session_id: None,
            task_id: None,
        };
        if let Ok(id) = SessionId::parse(&view.id)
            && state.stores.sessions.get(&name, &id).await.is_ok()
        {
            view.session_id = Some(id);
        } else if let Ok(id) = TaskId::parse(&view.id)
            && state.stores.tasks.get(&name, &id).await.is_ok()
        {
            view.task_id = Some(id);
        }
        worktrees.push(view);
    }
    Ok(HttpResponse::Ok().json(WorktreesBody { worktrees }))
}

/// `DELETE /api/agents/{name}/worktrees/{id}?force=true`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteQuery {
    /// Remove the worktree even with uncommitted changes, which are lost (its branch stays,
    /// but for one Orbit made in a workdir's repository that has no commits of its own).
    #[serde(default)]
    force: bool,
}

async fn delete(
    state: Data<AppState>,
    path: WorktreePath,
    query: web::Query<DeleteQuery>,
) -> ApiResult<HttpResponse> {
    let working_dir = state.stores.agents.working_dir(&path.name).await?;
    // A worktree its session or task still uses is removed with them, never under them: a
    // forced removal would pull the working directory from under a running turn.
    let owner = if let Ok(id) = SessionId::parse(&path.id)
        && state.stores.sessions.get(&path.name, &id).await.is_ok()
    {
        Some(format!("session {id}"))
    } else if let Ok(id) = TaskId::parse(&path.id)
        && state.stores.tasks.get(&path.name, &id).await.is_ok()
    {
        Some(format!("task {id}"))
    } else {
        None
    };
    if let Some(owner) = owner {
        return Err(ApiError::new(
            Code::Conflict,
            format!("worktree '{}' belongs to {owner}; delete that instead", path.id),
        ));
    }
    let removal = if query.force { Removal::Force } else { Removal::KeepChanges };
    worktree::remove_with(&working_dir, &path.id, removal).await?;
    Ok(HttpResponse::Ok().json(SuccessView::DONE))
}
