//! What releasing a node gone for good answers: the records that were pinned to it.

use orbit_store::AgentName;
use schemars::JsonSchema;
use serde::Serialize;

use crate::wire;

/// A session or a task, by its agent and id.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecordRefView {
    #[schemars(with = "wire::AgentName")]
    pub agent_name: AgentName,
    #[schemars(with = "wire::Ulid")]
    pub id: String,
}

/// `POST /api/nodes/{node}/release`: what was pinned to the node and is no longer.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReleasedNodeView {
    #[schemars(with = "wire::NodeName")]
    pub node: String,
    /// Sessions that lost their pin and their worktree (each now says `releasedFrom`).
    pub sessions: Vec<RecordRefView>,
    /// Tasks that lost their pin; one with a worktree gets a new one at its next run, on
    /// the node that runs it, and is pinned there.
    pub tasks: Vec<RecordRefView>,
}
