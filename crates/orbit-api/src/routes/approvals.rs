//! `GET /api/approvals` and `GET /api/agents/:name/approvals`: the `ask`-mode tool calls
//! waiting for a person, so that any client can find and answer them, not only the one whose
//! stream showed the request. On a cluster, every node lists every node's (shared through the
//! store while they wait).

use actix_web::web::Data;
use actix_web::{HttpResponse, web};

use crate::AppState;
use crate::endpoint::Endpoint;
use crate::error::ApiResult;
use crate::extract::AgentPath;
use crate::views::{self, ApprovalsBody};

pub fn endpoints() -> Vec<Endpoint> {
    vec![
        Endpoint::new::<ApprovalsBody>(
            "GET",
            "/api/approvals",
            "listApprovals",
            "Every tool call waiting for a person's answer, oldest first",
            || web::get().to(list_all),
        ),
        Endpoint::new::<ApprovalsBody>(
            "GET",
            "/api/agents/{name}/approvals",
            "listAgentApprovals",
            "The agent's tool calls waiting for a person's answer, oldest first",
            || web::get().to(list),
        ),
    ]
}

async fn list_all(state: Data<AppState>) -> ApiResult<HttpResponse> {
    let approvals = views::all(state.pool.pending_approvals(None).await);
    Ok(HttpResponse::Ok().json(ApprovalsBody { approvals }))
}

async fn list(state: Data<AppState>, path: AgentPath) -> ApiResult<HttpResponse> {
    state.stores.agents.get(&path.name).await?;
    let approvals = views::all(state.pool.pending_approvals(Some(&path.name)).await);
    Ok(HttpResponse::Ok().json(ApprovalsBody { approvals }))
}
