//! Permission modes with the real CLI: safe blocks, allow-all runs, ask waits for a person.

use std::time::Duration;

use orbit_agent::{ChatOptions, PoolOptions};
use orbit_store::PermissionMode;
use orbit_testkit::{Reply, Rule};
use serde_json::{Value, json};

use crate::harness::{Harness, text};

fn write_file_rules() -> Vec<Rule> {
    vec![
        Rule::when_user_says(
            "write the file",
            Reply::ToolUse {
                name: "Bash".into(),
                input: json!({"command": "echo hi > made.txt", "description": "write a file"}),
            },
        ),
        Rule::after_tool_result(text("done")),
        Rule::always(text("ok")),
    ]
}

/// The text of the tool result the model received last.
fn last_tool_result(h: &Harness) -> String {
    let requests = h.model.requests();
    orbit_testkit::last_conversation_message(requests.last().unwrap())["content"].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn safe_mode_blocks_a_bash_write() {
    let h = Harness::new(write_file_rules()).await;
    h.set_mode(PermissionMode::Safe).await;
    // Even a working directory whose own settings allow everything stays safe.
    let workspace = h.workspace().await;
    std::fs::create_dir_all(workspace.join(".claude")).unwrap();
    std::fs::write(
        workspace.join(".claude/settings.json"),
        r#"{"permissions":{"allow":["Bash"],"defaultMode":"bypassPermissions"}}"#,
    )
    .unwrap();
    let session = h.session().await;
    let (outcome, _) = h.chat(&session, "write the file").await;
    assert_eq!(outcome.unwrap().result, "done");
    assert!(!workspace.join("made.txt").exists(), "safe mode let Bash write");
    assert!(
        last_tool_result(&h).contains("safe mode"),
        "the model is told why: {}",
        last_tool_result(&h)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_all_writes_the_file() {
    let h = Harness::new(write_file_rules()).await;
    let session = h.session().await;
    h.chat(&session, "write the file").await.0.unwrap();
    assert_eq!(std::fs::read_to_string(h.workspace().await.join("made.txt")).unwrap(), "hi\n");
}

/// Runs "write the file" in ask mode, answering the first permission request with `answer`.
async fn ask_and_answer(h: &Harness, answer: Option<bool>) -> Vec<Value> {
    h.set_mode(PermissionMode::Ask).await;
    let session = h.session().await;
    let agent = h.pool.get(&h.agent, &session);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let turn = {
        let agent = agent.clone();
        tokio::spawn(async move { agent.chat("write the file", ChatOptions::default(), tx).await })
    };
    let mut events = Vec::new();
    while let Some(event) = rx.recv().await {
        let Some(event) = crate::harness::event_json(&event) else { continue };
        if event["type"] == "permission_request" {
            assert_eq!(event["toolName"], "Bash");
            assert_eq!(event["input"]["command"], "echo hi > made.txt");
            if let Some(allow) = answer {
                agent.answer_permission(event["requestId"].as_str().unwrap(), allow, None).unwrap();
                let again =
                    agent.answer_permission(event["requestId"].as_str().unwrap(), allow, None);
                assert!(
                    matches!(again, Err(orbit_agent::Error::PermissionNotPending(_))),
                    "a second answer is an error, not a crash"
                );
            }
        }
        events.push(event);
    }
    turn.await.unwrap().unwrap();
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ask_mode_waits_and_an_allow_lets_the_write_happen() {
    let h = Harness::new(write_file_rules()).await;
    let events = ask_and_answer(&h, Some(true)).await;
    assert_eq!(
        events.iter().filter(|e| e["type"] == "permission_request").count(),
        1,
        "asked once, not twice"
    );
    assert!(h.workspace().await.join("made.txt").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ask_mode_deny_keeps_the_file_away() {
    let h = Harness::new(write_file_rules()).await;
    ask_and_answer(&h, Some(false)).await;
    assert!(!h.workspace().await.join("made.txt").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ask_mode_without_an_answer_denies_in_time() {
    let options = PoolOptions { ask_timeout: Duration::from_secs(1), ..PoolOptions::default() };
    let h = Harness::with_options(write_file_rules(), options).await;
    ask_and_answer(&h, None).await;
    assert!(!h.workspace().await.join("made.txt").exists());
    assert!(last_tool_result(&h).contains("nobody allowed"), "{}", last_tool_result(&h));
}
