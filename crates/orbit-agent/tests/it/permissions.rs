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

/// The reason a person gives when denying, so that a test can tell their answer reached the
/// model from any other denial.
const PERSON_SAYS_NO: &str = "a person said no";

/// What a turn in ask mode showed.
struct Asked {
    events: Vec<Value>,
    /// How long the turn went on after its first permission request reached us.
    after_request: Option<Duration>,
}

/// Runs "write the file" in ask mode, answering the first permission request with `answer`
/// (a denial with `PERSON_SAYS_NO`). Once a request came, the turn must end within `limit`.
async fn ask_and_answer(h: &Harness, answer: Option<bool>, limit: Duration) -> Asked {
    h.set_mode(PermissionMode::Ask).await;
    let session = h.session().await;
    let agent = h.pool.get(&h.agent, &session);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let turn = {
        let agent = agent.clone();
        tokio::spawn(async move { agent.chat("write the file", ChatOptions::default(), tx).await })
    };
    let mut events = Vec::new();
    let mut asked_at = None;
    loop {
        let event = match asked_at {
            None => rx.recv().await,
            Some(at) => tokio::time::timeout_at(at + limit, rx.recv())
                .await
                .unwrap_or_else(|_| panic!("the turn went on past {limit:?} after asking")),
        };
        let Some(event) = event else { break };
        let Some(event) = crate::harness::event_json(&event) else { continue };
        if event["type"] == "permission_request" {
            asked_at.get_or_insert_with(tokio::time::Instant::now);
            assert_eq!(event["toolName"], "Bash");
            assert_eq!(event["input"]["command"], "echo hi > made.txt");
            if let Some(allow) = answer {
                let message = (!allow).then(|| PERSON_SAYS_NO.to_owned());
                let id = event["requestId"].as_str().unwrap();
                agent.answer_permission(id, allow, message.clone()).unwrap();
                let again = agent.answer_permission(id, allow, message);
                assert!(
                    matches!(again, Err(orbit_agent::Error::PermissionNotPending(_))),
                    "a second answer is an error, not a crash"
                );
            }
        }
        events.push(event);
    }
    turn.await.unwrap().unwrap();
    Asked { events, after_request: asked_at.map(|at| at.elapsed()) }
}

fn permission_requests(asked: &Asked) -> usize {
    asked.events.iter().filter(|e| e["type"] == "permission_request").count()
}

/// Long enough for the rest of a turn with a local model once the tool is decided.
const AFTER_ANSWER: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ask_mode_waits_and_an_allow_lets_the_write_happen() {
    let h = Harness::new(write_file_rules()).await;
    let asked = ask_and_answer(&h, Some(true), AFTER_ANSWER).await;
    assert_eq!(permission_requests(&asked), 1, "asked once, not twice");
    assert!(h.workspace().await.join("made.txt").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ask_mode_deny_keeps_the_file_away() {
    let h = Harness::new(write_file_rules()).await;
    let asked = ask_and_answer(&h, Some(false), AFTER_ANSWER).await;
    // Without these, a mode that denied at once (as safe does) would pass too.
    assert_eq!(permission_requests(&asked), 1, "the person was asked");
    assert!(!h.workspace().await.join("made.txt").exists());
    let told = last_tool_result(&h);
    assert!(told.contains(PERSON_SAYS_NO), "the model hears the person's reason: {told}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ask_mode_without_an_answer_denies_in_time() {
    let ask_timeout = Duration::from_secs(1);
    let options = PoolOptions { ask_timeout, ..PoolOptions::default() };
    let h = Harness::with_options(write_file_rules(), options).await;
    // The denial comes at `ask_timeout`; what follows is one exchange with a local model.
    // Ten times the timeout is generous for that, and a denial that never came fails here
    // rather than at the turn's own timeout.
    let limit = ask_timeout * 10;
    let asked = ask_and_answer(&h, None, limit).await;
    assert_eq!(permission_requests(&asked), 1, "the person was asked");
    let after = asked.after_request.unwrap();
    // The request reaches us a moment after the wait began, so allow that moment.
    assert!(after >= ask_timeout - Duration::from_millis(100), "denied after {after:?}, too soon");
    assert!(after < limit, "denied after {after:?}");
    assert!(!h.workspace().await.join("made.txt").exists());
    assert!(last_tool_result(&h).contains("nobody allowed"), "{}", last_tool_result(&h));
}
