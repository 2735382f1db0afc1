//! Orbit's tools for agents: an MCP server the CLI knows as `orbit`, served in process over
//! the control protocol (`initialize.sdkMcpServers` and `mcp_message`), so no port or token is
//! exposed. The model calls them as `mcp__orbit__<name>`.
//!
//! Bad arguments are answered with a tool error the model can read (`isError: true`), never a
//! failed turn.

use orbit_store::{
    AgentName, ContextMode, MessageId, MessageType, NewMessage, ScheduleType, SessionId, Stores,
    TaskId, limits, timestamp,
};
use serde_json::{Value, json};
use time::Date;

use crate::workflow;
use time::macros::format_description;

/// The `orbit` MCP server of one session.
pub(crate) struct OrbitTools {
    pub(crate) agent: AgentName,
    pub(crate) session: SessionId,
    pub(crate) stores: Stores,
    pub(crate) activity: crate::ActivityBus,
    /// This node's name (see `PoolOptions::node`).
    pub(crate) node: String,
}

type ToolResult = std::result::Result<Value, String>;

fn text_arg<'a>(args: &'a Value, name: &str) -> std::result::Result<&'a str, String> {
    args[name]
        .as_str()
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| format!("'{name}' is required and must be a non-empty string"))
}

fn tool(name: &str, description: &str, properties: Value, required: &[&str]) -> Value {
    json!({"name": name, "description": description, "inputSchema": {"type": "object", "properties": properties, "required": required}})
}

fn tool_list() -> Value {
    let s = json!({"type": "string"});
    json!([
        tool(
            "send_message",
            "Send a message to another agent's inbox: a request, or a response carrying the requestId it answers.",
            json!({"to": s, "message": s, "type": {"type": "string", "enum": ["request", "response"]}, "requestId": s}),
            &["to", "message"]
        ),
        tool("list_agents", "List the agents of this Orbit server.", json!({}), &[]),
        tool("list_inbox", "List the messages waiting in your own inbox.", json!({}), &[]),
        tool(
            "schedule_task",
            "Schedule a task for yourself: cron (5 fields, in 'timezone', default UTC), interval (milliseconds, at least 1000) or once (RFC 3339).",
            json!({"prompt": s, "scheduleType": {"type": "string", "enum": ["cron", "interval", "once"]}, "scheduleValue": s, "contextMode": {"type": "string", "enum": ["isolated", "main"]}, "name": s, "timezone": s}),
            &["prompt", "scheduleType", "scheduleValue"]
        ),
        tool("list_tasks", "List your scheduled tasks.", json!({}), &[]),
        tool(
            "cancel_task",
            "Cancel one of your scheduled tasks.",
            json!({"taskId": s}),
            &["taskId"]
        ),
        tool(
            "memory_search",
            "Search your daily memory (case-insensitive).",
            json!({"query": s, "limit": {"type": "integer"}}),
            &["query"]
        ),
        tool(
            "memory_read",
            "Read one day of your memory (YYYY-MM-DD, default today).",
            json!({"date": s}),
            &[]
        ),
        tool("memory_append", "Append a note to today's memory.", json!({"text": s}), &["text"]),
    ])
}

impl OrbitTools {
    /// Answers one JSON-RPC message of the MCP protocol.
    pub(crate) async fn handle(&self, message: &Value) -> Value {
        let id = message.get("id").cloned().unwrap_or(Value::Null);
        let result = match message["method"].as_str().unwrap_or_default() {
            "initialize" => json!({
                "protocolVersion": message["params"]["protocolVersion"].as_str().unwrap_or("2024-11-05"),
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "orbit", "version": env!("CARGO_PKG_VERSION")},
            }),
            "tools/list" => json!({"tools": tool_list()}),
            "tools/call" => {
                let name = message["params"]["name"].as_str().unwrap_or_default();
                let args = &message["params"]["arguments"];
                match self.call(name, args).await {
                    Ok(value) => json!({"content": [{"type": "text", "text": value.to_string()}]}),
                    Err(error) => {
                        json!({"content": [{"type": "text", "text": format!("Error: {error}")}], "isError": true})
                    }
                }
            }
            method if method.starts_with("notifications/") || method == "ping" => json!({}),
            method => {
                return json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": format!("unknown method {method}")}});
            }
        };
        json!({"jsonrpc": "2.0", "id": id, "result": result})
    }

    async fn call(&self, name: &str, args: &Value) -> ToolResult {
        let stores = &self.stores;
        let fail = |err: orbit_store::Error| err.to_string();
        match name {
            "send_message" => {
                let to = AgentName::parse(text_arg(args, "to")?).map_err(fail)?;
                let message_type = match args["type"].as_str() {
                    None | Some("request") => MessageType::Request,
                    Some("response") => MessageType::Response,
                    Some(other) => {
                        return Err(format!("'type' must be request or response, not {other}"));
                    }
                };
                let request_id =
                    args["requestId"].as_str().map(MessageId::parse).transpose().map_err(fail)?;
                if message_type == MessageType::Response && request_id.is_none() {
                    return Err("a response needs the 'requestId' of the request it answers".into());
                }
                let message = text_arg(args, "message")?;
                limits::check_len("message", message, limits::INBOX_MESSAGE).map_err(fail)?;
                let new = NewMessage {
                    from_agent: self.agent.clone().into(),
                    to_agent: to,
                    message: message.to_owned(),
                    message_type,
                    request_id,
                };
                let sent = stores.inbox.send(new).await.map_err(fail)?;
                self.activity.announce(crate::Activity::InboxArrived {
                    agent: sent.to_agent.clone(),
                    message: sent.id,
                    from: self.agent.to_string(),
                });
                Ok(json!({"sent": sent.id, "to": sent.to_agent}))
            }
            "list_agents" => {
                let agents = stores.agents.list().await.map_err(fail)?;
                Ok(json!(
                    agents
                        .iter()
                        .map(|a| json!({"name": a.name, "status": a.status}))
                        .collect::<Vec<_>>()
                ))
            }
            "list_inbox" => Ok(json!(stores.inbox.get_pending(&self.agent).await.map_err(fail)?)),
            "schedule_task" => {
                let schedule_type: ScheduleType =
                    serde_json::from_value(args["scheduleType"].clone())
                        .map_err(|_| "'scheduleType' must be cron, interval or once".to_owned())?;
                let context_mode: ContextMode = match args.get("contextMode") {
                    None | Some(Value::Null) => ContextMode::Isolated,
                    Some(mode) => serde_json::from_value(mode.clone())
                        .map_err(|_| "'contextMode' must be isolated or main".to_owned())?,
                };
                let request = workflow::TaskRequest {
                    name: args["name"].as_str().map(str::to_owned),
                    prompt: text_arg(args, "prompt")?.to_owned(),
                    schedule_type,
                    schedule_value: text_arg(args, "scheduleValue")?.to_owned(),
                    context_mode,
                    timezone: args["timezone"].as_str().map(str::to_owned),
                    worktree: false,
                    branch: None,
                };
                let task = workflow::create_task(stores, &self.agent, request, &self.node)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(json!(task))
            }
            "list_tasks" => Ok(json!(stores.tasks.list_by_agent(&self.agent).await.map_err(fail)?)),
            "cancel_task" => {
                let id = TaskId::parse(text_arg(args, "taskId")?).map_err(fail)?;
                // As the API's delete does: its worktree goes too, unless it holds work.
                let kept = workflow::delete_task(stores, &self.agent, &id, &self.node)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(json!({"cancelled": id, "worktreeKept": kept.map(|k| k.id)}))
            }
            "memory_search" => {
                let limit = args["limit"].as_u64().unwrap_or(20).min(200) as usize;
                Ok(json!(
                    stores
                        .memory
                        .search(&self.agent, text_arg(args, "query")?, limit)
                        .await
                        .map_err(fail)?
                ))
            }
            "memory_read" => {
                let day = match args["date"].as_str() {
                    Some(text) => Date::parse(text, format_description!("[year]-[month]-[day]"))
                        .map_err(|_| format!("'date' must be YYYY-MM-DD, not {text}"))?,
                    None => timestamp::now().date(),
                };
                Ok(json!(
                    stores
                        .memory
                        .read_day(&self.agent, day)
                        .await
                        .map_err(fail)?
                        .unwrap_or_default()
                ))
            }
            "memory_append" => {
                let text = text_arg(args, "text")?;
                limits::check_len("text", text, limits::MEMORY_NOTE).map_err(fail)?;
                stores
                    .memory
                    .append(
                        &self.agent,
                        timestamp::now(),
                        &format!("note from session {}\n\n{text}", self.session),
                    )
                    .await
                    .map_err(fail)?;
                Ok(json!({"appended": true}))
            }
            other => Err(format!("unknown tool {other}")),
        }
    }
}
