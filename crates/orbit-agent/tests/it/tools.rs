//! Orbit's MCP tools, called by the model through the real CLI.

use orbit_store::{AgentName, MessageType, NewAgent};
use orbit_testkit::{Reply, Rule};
use serde_json::{Value, json};

use crate::harness::{Harness, all_user_text, text};

fn last_tool_result_has(needle: &'static str) -> impl Fn(&Value) -> bool + Send + Sync {
    move |request: &Value| {
        // The CLI merges consecutive tool results into one message: look at the newest block.
        let last = orbit_testkit::last_conversation_message(request);
        last["content"]
            .as_array()
            .and_then(|blocks| blocks.last().cloned())
            .is_some_and(|b| b["type"] == "tool_result" && b.to_string().contains(needle))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_message_reaches_another_agent_and_the_reply_comes_back() {
    let h = Harness::new(vec![
        Rule::when_user_says(
            "tell other",
            Reply::ToolUse {
                name: "mcp__orbit__send_message".into(),
                input: json!({"to": "other", "message": "please check the build"}),
            },
        ),
        Rule::after_tool_result(text("sent")),
        Rule::always(text("ok")),
    ])
    .await;
    let other = AgentName::parse("other").unwrap();
    h.stores.agents.create(&other, NewAgent::default()).await.unwrap();
    let session = h.session().await;
    h.chat(&session, "tell other").await.0.unwrap();
    let tools = h.model.requests()[0]["tools"].to_string();
    assert!(
        tools.contains("mcp__orbit__send_message") && tools.contains("mcp__orbit__memory_search"),
        "Orbit's tools are offered to the model"
    );

    let inbox = h.stores.inbox.get_pending(&other).await.unwrap();
    assert_eq!(inbox.len(), 1);
    assert_eq!(
        (inbox[0].from_agent.as_str(), inbox[0].message.as_str()),
        ("bot", "please check the build")
    );
    let request_id = inbox[0].id;

    // The other agent answers with the request's id, through its own session.
    h.model.set_rules(vec![
        Rule::when_user_says("answer", Reply::ToolUse { name: "mcp__orbit__send_message".into(), input: json!({"to": "bot", "message": "build is green", "type": "response", "requestId": request_id.to_string()}) }),
        Rule::after_tool_result(text("answered")),
        Rule::always(text("ok")),
    ]);
    let other_session = h.stores.sessions.create(&other, Default::default()).await.unwrap().id;
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    h.pool
        .get(&other, &other_session)
        .chat("answer your inbox", Default::default(), tx)
        .await
        .unwrap();
    let replies = h.stores.inbox.get_pending(&h.agent).await.unwrap();
    assert_eq!(replies.len(), 1);
    assert_eq!(
        (replies[0].message_type, replies[0].request_id),
        (MessageType::Response, Some(request_id))
    );

    // The sender's next turn receives the reply.
    h.chat(&session, "anything new?").await.0.unwrap();
    assert!(all_user_text(h.model.requests().last().unwrap()).contains("build is green"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_append_then_search_finds_it() {
    let h = Harness::new(vec![
        Rule::when_user_says(
            "remember",
            Reply::ToolUse {
                name: "mcp__orbit__memory_append".into(),
                input: json!({"text": "the code word is zebra"}),
            },
        ),
        Rule::when(
            last_tool_result_has("appended"),
            Reply::ToolUse {
                name: "mcp__orbit__memory_search".into(),
                input: json!({"query": "ZEBRA"}),
            },
        ),
        Rule::after_tool_result(text("found it")),
    ])
    .await;
    let session = h.session().await;
    assert_eq!(h.chat(&session, "remember this").await.0.unwrap().result, "found it");
    let last = h.model.requests().last().unwrap().to_string();
    assert!(last.contains("the code word is zebra"), "the search result reached the model");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tool_arguments_are_a_readable_tool_error() {
    let h = Harness::new(vec![
        Rule::when_user_says(
            "message",
            Reply::ToolUse {
                name: "mcp__orbit__send_message".into(),
                input: json!({"to": "../etc", "message": "x"}),
            },
        ),
        Rule::after_tool_result(text("understood")),
    ])
    .await;
    let session = h.session().await;
    assert_eq!(
        h.chat(&session, "message someone").await.0.unwrap().result,
        "understood",
        "the turn goes on"
    );
    assert!(h.model.requests().last().unwrap().to_string().contains("invalid agent name"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_schedules_and_cancels_its_own_task() {
    let h = Harness::new(vec![
        Rule::after_tool_result(text("scheduled")),
        Rule::when_user_says("bad schedule", Reply::ToolUse { name: "mcp__orbit__schedule_task".into(), input: json!({"prompt": "x", "scheduleType": "cron", "scheduleValue": "61 * * * *"}) }),
        Rule::when_user_says("schedule", Reply::ToolUse { name: "mcp__orbit__schedule_task".into(), input: json!({"prompt": "check the build", "scheduleType": "interval", "scheduleValue": "60000"}) }),
    ])
    .await;
    let session = h.session().await;
    h.chat(&session, "schedule a check").await.0.unwrap();
    let tasks = h.stores.tasks.list_by_agent(&h.agent).await.unwrap();
    assert_eq!(tasks.len(), 1);
    assert!(tasks[0].next_run.is_some());
    h.chat(&session, "bad schedule please").await.0.unwrap();
    assert!(h.model.requests().last().unwrap().to_string().contains("invalid cron expression"));
    assert_eq!(h.stores.tasks.list_by_agent(&h.agent).await.unwrap().len(), 1);

    h.model.set_rules(vec![
        Rule::after_tool_result(text("cancelled")),
        Rule::when_user_says(
            "cancel",
            Reply::ToolUse {
                name: "mcp__orbit__cancel_task".into(),
                input: json!({"taskId": tasks[0].id.to_string()}),
            },
        ),
    ]);
    h.chat(&session, "cancel the check").await.0.unwrap();
    assert!(
        h.stores.tasks.list_by_agent(&h.agent).await.unwrap().is_empty(),
        "the agent cancelled its task"
    );
}
