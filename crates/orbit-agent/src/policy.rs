//! The answers to the CLI's control requests for one session: tool permissions by mode.

use async_trait::async_trait;
use orbit_store::PermissionMode;
use serde_json::{Value, json};

use crate::runtime::ControlHandler;

/// Tools that only read. Everything else writes or executes.
const READ_ONLY_TOOLS: &[&str] = &[
    "Read",
    "Glob",
    "Grep",
    "LS",
    "WebFetch",
    "WebSearch",
    "TodoWrite",
    "Task",
    "ToolSearch",
    "NotebookRead",
    "BashOutput",
];

/// Whether a tool is read-only (Orbit's own MCP tools are judged by the agent's mode too).
pub fn is_read_only(tool: &str) -> bool {
    READ_ONLY_TOOLS.contains(&tool)
}

/// Permission answers by mode.
pub struct PermissionPolicy {
    pub mode: PermissionMode,
}

#[async_trait]
impl ControlHandler for PermissionPolicy {
    async fn handle(&self, subtype: &str, request: &Value) -> Result<Value, String> {
        let tool = request["tool_name"]
            .as_str()
            .or_else(|| request["input"]["tool_name"].as_str())
            .unwrap_or_default();
        let allowed = match self.mode {
            PermissionMode::AllowAll => true,
            PermissionMode::Safe | PermissionMode::Ask => is_read_only(tool),
        };
        match subtype {
            "hook_callback" if allowed => Ok(json!({"continue": true})),
            "hook_callback" => Ok(json!({"hookSpecificOutput": {
                "hookEventName": "PreToolUse",
                "permissionDecision": "deny",
                "permissionDecisionReason": format!("Orbit: {tool} is not allowed in this agent's permission mode"),
            }})),
            "can_use_tool" if allowed => {
                Ok(json!({"behavior": "allow", "updatedInput": request["input"]}))
            }
            "can_use_tool" => Ok(
                json!({"behavior": "deny", "message": format!("Orbit: {tool} is not allowed in this agent's permission mode")}),
            ),
            other => Err(format!("Orbit does not handle control request '{other}'")),
        }
    }
}
