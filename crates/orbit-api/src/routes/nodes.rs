//! `/api/nodes/:node...`: what an operator does about a node of a cluster.

use actix_web::web::Data;
use actix_web::{HttpResponse, web};

use crate::AppState;
use crate::endpoint::Endpoint;
use crate::error::{ApiResult, Code};
use crate::extract::NodePath;
use crate::views::{RecordRefView, ReleasedNodeView};

pub fn endpoints() -> Vec<Endpoint> {
    vec![
        Endpoint::new::<ReleasedNodeView>(
            "POST",
            "/api/nodes/{node}/release",
            "releaseNode",
            "Release the sessions and tasks pinned to a node gone for good (409 while it runs)",
            || web::post().to(release),
        )
        .errors(&[Code::Conflict]),
    ]
}

/// Unpins the node's sessions and tasks, which its lost disk's worktrees held to it, so that
/// every node serves them again (`workflow::release_node`).
async fn release(state: Data<AppState>, path: NodePath) -> ApiResult<HttpResponse> {
    let released = orbit_agent::workflow::release_node(&state.stores, &path.node).await?;
    let view = ReleasedNodeView {
        node: path.node,
        sessions: released
            .sessions
            .into_iter()
            .map(|(agent_name, id)| RecordRefView { agent_name, id: id.to_string() })
            .collect(),
        tasks: released
            .tasks
            .into_iter()
            .map(|(agent_name, id)| RecordRefView { agent_name, id: id.to_string() })
            .collect(),
    };
    Ok(HttpResponse::Ok().json(view))
}
