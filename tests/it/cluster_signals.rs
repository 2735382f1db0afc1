//! Deletes and aborts asked of one node reach the turns another node runs: two
//! `orbit-server` processes on one database, the turns on node A, every request on node B.

use std::time::Duration;

use orbit_testkit::postgres::TestDatabase;
use orbit_testkit::{ModelServer, Reply, Rule};
use serde_json::{Value, json};

use crate::nodes::{Node, call, start_nodes, wait_until};

/// A model that answers after a minute, so every turn runs until something ends it.
fn slow_model() -> ModelServer {
    let slow = Reply::Delayed(Duration::from_secs(60), Box::new(Reply::Text("late".into())));
    ModelServer::start(vec![Rule::always(slow)])
}

/// A chat on `node` left running, its events once it ends.
fn start_chat(node: &Node, body: Value) -> actix_web::rt::task::JoinHandle<Vec<Value>> {
    let url = node.url("/api/chat");
    actix_web::rt::spawn(async move {
        let mut response = crate::nodes::client().post(url).send_json(&body).await.unwrap();
        let bytes = response.body().limit(1 << 24).await.unwrap();
        String::from_utf8_lossy(&bytes)
            .lines()
            .filter_map(|line| line.strip_prefix("data: "))
            .filter_map(|data| serde_json::from_str(data).ok())
            .collect()
    })
}

/// A chat that ended before its model answered: ended by something else, with an error.
fn assert_cut_short(events: &[Value], what: &str) {
    assert!(
        events.iter().all(|e| e["result"] != "late"),
        "{what}: the turn ran to its model's answer: {events:?}"
    );
    assert_eq!(events.last().map(|e| &e["type"]), Some(&json!("error")), "{what}: {events:?}");
}

#[test]
fn deletes_and_aborts_through_one_node_reach_turns_on_another() {
    let database = TestDatabase::new();
    let (model_a, model_b) = (slow_model(), slow_model());
    let ([mut a, mut b], _dirs) = start_nodes(&database.url, [&model_a, &model_b]);
    actix_web::rt::System::new().block_on(async {
        let (status, _) = call(&a, "POST", "/api/agents", Some(json!({"name": "bot"}))).await;
        assert_eq!(status, 201);
        let model = &model_a;
        let asked = |count: usize| move || model.requests().len() >= count;

        // An abort through B ends A's turn; with nothing running anywhere it is a 404.
        let (_, session) = call(&a, "POST", "/api/agents/bot/sessions", None).await;
        let session = session["session"]["id"].as_str().unwrap().to_owned();
        let running =
            start_chat(&a, json!({"agentName": "bot", "sessionId": session, "message": "slow"}));
        wait_until(Duration::from_secs(30), "A's turn never reached its model", asked(1)).await;
        // While A runs the session's turn, B refuses another, as A would.
        let second = json!({"agentName": "bot", "sessionId": session, "message": "me too"});
        let (status, body) = call(&b, "POST", "/api/chat", Some(second)).await;
        assert_eq!(status, 409, "one turn of a session in the cluster: {body}");
        assert_eq!(body["code"], "conflict", "{body}");
        assert!(model_b.requests().is_empty(), "B ran nothing");
        let abort = format!("/api/agents/bot/sessions/{session}/abort");
        let (status, body) = call(&b, "POST", &abort, None).await;
        assert_eq!(status, 200, "B reached A's turn: {body}");
        assert_cut_short(&running.await.unwrap(), "aborted through B");
        let (status, body) = call(&b, "POST", &abort, None).await;
        assert_eq!(status, 404, "no turn runs anywhere: {body}");
        assert_eq!(body["code"], "not_found", "{body}");

        // Deleting a session through B ends its turn on A and forgets A's CLI state of it.
        let (_, session) = call(&a, "POST", "/api/agents/bot/sessions", None).await;
        let session = session["session"]["id"].as_str().unwrap().to_owned();
        let running =
            start_chat(&a, json!({"agentName": "bot", "sessionId": session, "message": "slow"}));
        wait_until(Duration::from_secs(30), "A's second turn never reached its model", asked(2))
            .await;
        let cli_state = a.data.join("claude").join("bot").join(&session);
        assert!(cli_state.exists(), "A keeps the session's CLI state: {}", cli_state.display());
        let (status, body) =
            call(&b, "DELETE", &format!("/api/agents/bot/sessions/{session}"), None).await;
        assert_eq!(status, 200, "{body}");
        assert_cut_short(&running.await.unwrap(), "session deleted through B");
        wait_until(Duration::from_secs(15), "A kept the deleted session's CLI state", || {
            !cli_state.exists()
        })
        .await;

        // Deleting the agent through B ends its turns on A and forgets all of its CLI state.
        let running = start_chat(&a, json!({"agentName": "bot", "message": "slow"}));
        wait_until(Duration::from_secs(30), "A's third turn never reached its model", asked(3))
            .await;
        let (status, body) = call(&b, "DELETE", "/api/agents/bot", None).await;
        assert_eq!(status, 200, "{body}");
        assert_cut_short(&running.await.unwrap(), "agent deleted through B");
        let agent_state = a.data.join("claude").join("bot");
        wait_until(Duration::from_secs(15), "A kept the deleted agent's CLI state", || {
            !agent_state.exists()
        })
        .await;
        wait_until(Duration::from_secs(15), "A's CLI processes outlived their agent", || {
            a.cli_processes().is_empty()
        })
        .await;
    });
    a.stop();
    b.stop();
}

/// A session deleted unseen by the node running its turn (in the database directly, as a
/// deletion whose signal came while that node was reconnecting leaves it) still ends the
/// turn: the turn's hold on the session goes with the session, and the node finds its hold
/// lost at its next renewal, a third of a lease later.
#[test]
fn a_turn_whose_session_went_unseen_ends_at_its_next_renewal() {
    let database = TestDatabase::new();
    let dir = tempfile::tempdir().unwrap();
    let model = slow_model();
    let mut a = Node::start(&database.url, dir.path(), &model);
    actix_web::rt::System::new().block_on(async {
        let (status, _) = call(&a, "POST", "/api/agents", Some(json!({"name": "bot"}))).await;
        assert_eq!(status, 201);
        let (_, session) = call(&a, "POST", "/api/agents/bot/sessions", None).await;
        let session = session["session"]["id"].as_str().unwrap().to_owned();
        let running =
            start_chat(&a, json!({"agentName": "bot", "sessionId": session, "message": "slow"}));
        wait_until(Duration::from_secs(30), "the turn never reached its model", || {
            !model.requests().is_empty()
        })
        .await;
        database.execute(&format!("DELETE FROM sessions WHERE agent = 'bot' AND id = '{session}'"));
        // The model answers after a minute: a turn that ends before was ended by the node.
        assert_cut_short(&running.await.unwrap(), "session deleted unseen");
    });
    a.stop();
}

/// An abort is kept against the turn's hold, so a lost signal loses no abort. The node
/// running the turn finds the request at its hold's next renewal and aborts (the request is
/// written in the database directly, as an abort whose signal A never heard leaves it); the
/// node asked answers success for a live hold even when no node answers its signal, having
/// recorded the request, and 404 only when no turn runs anywhere.
#[test]
fn an_abort_whose_signal_is_lost_is_found_at_the_holds_renewal() {
    let database = TestDatabase::new();
    let (model_a, model_b) = (slow_model(), slow_model());
    let ([mut a, mut b], _dirs) = start_nodes(&database.url, [&model_a, &model_b]);
    actix_web::rt::System::new().block_on(async {
        let (status, _) = call(&a, "POST", "/api/agents", Some(json!({"name": "bot"}))).await;
        assert_eq!(status, 201);

        // The running side: A's turn ends by the recorded request alone.
        let (_, session) = call(&a, "POST", "/api/agents/bot/sessions", None).await;
        let session = session["session"]["id"].as_str().unwrap().to_owned();
        let running =
            start_chat(&a, json!({"agentName": "bot", "sessionId": session, "message": "slow"}));
        wait_until(Duration::from_secs(30), "A's turn never reached its model", || {
            !model_a.requests().is_empty()
        })
        .await;
        database.execute(&format!(
            "UPDATE session_turns SET abort_requested = true \
             WHERE agent = 'bot' AND session_id = '{session}'"
        ));
        // The model answers after a minute: a turn that ends before was ended by the node.
        assert_cut_short(&running.await.unwrap(), "abort found at the renewal");
        assert!(a.logged("found at the hold's renewal"), "A aborted it at a renewal");

        // The asking side: a session whose turn is held by a node that hears no signal (a
        // hold written directly; no node runs the turn to answer).
        let (_, held) = call(&a, "POST", "/api/agents/bot/sessions", None).await;
        let held = held["session"]["id"].as_str().unwrap().to_owned();
        database.execute(&format!(
            "INSERT INTO session_turns (agent, session_id, instance, token, until) \
             VALUES ('bot', '{held}', 'deaf', '01JAAAAAAAAAAAAAAAAAAAAAAA', now() + interval '10 minutes')"
        ));
        let abort = format!("/api/agents/bot/sessions/{held}/abort");
        let (status, body) = call(&b, "POST", &abort, None).await;
        assert_eq!(status, 200, "a live hold makes the abort certain: {body}");
        let recorded = database.query(&format!(
            "SELECT abort_requested FROM session_turns WHERE agent = 'bot' AND session_id = '{held}'"
        ));
        assert_eq!(recorded, "t", "B recorded the request against the hold");
        database.execute(&format!("DELETE FROM session_turns WHERE session_id = '{held}'"));
        let (status, body) = call(&b, "POST", &abort, None).await;
        assert_eq!(status, 404, "no turn runs anywhere: {body}");
        assert_eq!(body["code"], "not_found", "{body}");
        assert!(model_b.requests().is_empty(), "B ran nothing");
    });
    a.stop();
    b.stop();
}

/// An abort signal names the hold of the turn it was recorded against, so an abort meant
/// for one turn never stops the session's next (its signal may arrive after that turn ended
/// and the next began): a signal naming another hold leaves the running turn alone, one
/// naming its hold aborts it. The signals are sent into the database directly, as another
/// node would send them.
#[test]
fn an_abort_signal_stops_only_the_turn_of_the_hold_it_names() {
    let database = TestDatabase::new();
    let model = slow_model();
    let ([mut a], _dirs) = start_nodes(&database.url, [&model]);
    actix_web::rt::System::new().block_on(async {
        let (status, _) = call(&a, "POST", "/api/agents", Some(json!({"name": "bot"}))).await;
        assert_eq!(status, 201);
        let (_, session) = call(&a, "POST", "/api/agents/bot/sessions", None).await;
        let session = session["session"]["id"].as_str().unwrap().to_owned();
        let running =
            start_chat(&a, json!({"agentName": "bot", "sessionId": session, "message": "slow"}));
        wait_until(Duration::from_secs(30), "A's turn never reached its model", || {
            !model.requests().is_empty()
        })
        .await;
        let hold = database.query(&format!(
            "SELECT token FROM session_turns WHERE agent = 'bot' AND session_id = '{session}'"
        ));
        let send_abort = |hold: &str, request: &str| {
            let signal = json!({
                "from": "01JBBBBBBBBBBBBBBBBBBBBBBB",
                "what": {"kind": "abortTurn", "agent": "bot", "session": session, "request": request, "hold": hold},
            });
            database.execute(&format!("SELECT pg_notify('orbit_signals', '{signal}')"));
        };

        // An abort recorded against an earlier turn's hold.
        send_abort("01JCCCCCCCCCCCCCCCCCCCCCCC", "stale");
        wait_until(Duration::from_secs(30), "A never heard the stale abort", || {
            a.logged("meant for an earlier turn")
        })
        .await;
        assert!(!running.is_finished(), "the running turn goes on");
        assert!(!a.logged("turn aborted through another node"), "nothing was aborted");

        // The abort of this turn's hold.
        send_abort(hold.trim(), "current");
        assert_cut_short(&running.await.unwrap(), "an abort naming the turn's hold");
        assert!(a.logged("turn aborted through another node"), "by the signal");
    });
    a.stop();
}

/// A task deleted through one node stops its run on the node that runs it (the change feed
/// tells that node's scheduler).
#[test]
fn a_task_deleted_through_one_node_stops_its_run_on_another() {
    let database = TestDatabase::new();
    let (model_a, model_b) = (slow_model(), slow_model());
    let ([mut a, mut b], _dirs) = start_nodes(&database.url, [&model_a, &model_b]);
    actix_web::rt::System::new().block_on(async {
        let (status, _) = call(&a, "POST", "/api/agents", Some(json!({"name": "bot"}))).await;
        assert_eq!(status, 201);
        let at = orbit_store::timestamp::now() + Duration::from_secs(3);
        let at = orbit_store::timestamp::rfc3339::format(at).unwrap();
        let task = json!({"prompt": "task job", "scheduleType": "once", "scheduleValue": at, "contextMode": "isolated"});
        let (status, task) = call(&a, "POST", "/api/agents/bot/tasks", Some(task)).await;
        assert_eq!(status, 201, "{task}");
        let task = task["task"]["id"].as_str().unwrap().to_owned();
        wait_until(Duration::from_secs(30), "no node ran the task", || {
            !(model_a.requests().is_empty() && model_b.requests().is_empty())
        })
        .await;
        // The other node is asked to delete it.
        let (runner, other) = if model_a.requests().is_empty() { (&b, &a) } else { (&a, &b) };
        assert!(!runner.logged("run finished"), "the run is still going");
        let (status, body) =
            call(other, "DELETE", &format!("/api/agents/bot/tasks/{task}"), None).await;
        assert_eq!(status, 200, "{body}");
        wait_until(Duration::from_secs(20), "the run outlived its task", || {
            runner.logged("run finished")
        })
        .await;
        assert!(runner.logged("status=Error"), "the run was cut short, not answered");
        wait_until(Duration::from_secs(15), "the run's CLI outlived it", || {
            runner.cli_processes().is_empty()
        })
        .await;
        let requests = model_a.requests().len() + model_b.requests().len();
        assert_eq!(requests, 1, "the once task ran once");
    });
    a.stop();
    b.stop();
}

/// An `ask`-mode tool call of a turn on A is answered through B: the call goes on on A.
#[test]
fn a_permission_asked_on_one_node_is_answered_through_another() {
    use futures_util::StreamExt;

    let database = TestDatabase::new();
    let model_a = ModelServer::start(vec![
        Rule::after_tool_result(Reply::Text("done".into())),
        Rule::when_user_says(
            "write the file",
            Reply::ToolUse {
                name: "Bash".into(),
                input: json!({"command": "echo hi > made.txt", "description": "write"}),
            },
        ),
        Rule::always(Reply::Text("ok".into())),
    ]);
    let model_b = slow_model();
    let ([mut a, mut b], _dirs) = start_nodes(&database.url, [&model_a, &model_b]);
    let made = a.data.join("workspaces/bot/made.txt");
    actix_web::rt::System::new().block_on(async {
        let agent = json!({"name": "bot", "permissionMode": "ask"});
        assert_eq!(call(&a, "POST", "/api/agents", Some(agent)).await.0, 201);
        let mut response = crate::nodes::client()
            .post(a.url("/api/chat"))
            .send_json(&json!({"agentName": "bot", "message": "write the file"}))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let (mut buffer, mut events) = (String::new(), Vec::<Value>::new());
        while let Some(chunk) = response.next().await {
            buffer.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
            while let Some(end) = buffer.find("\n\n") {
                let frame: String = buffer.drain(..end + 2).collect();
                let Some(data) = frame.lines().find_map(|l| l.strip_prefix("data: ")) else {
                    continue;
                };
                let event: Value = serde_json::from_str(data).unwrap();
                if event["type"] == "permission_request" {
                    let session = events.iter().find_map(|e| e["sessionId"].as_str()).unwrap();
                    let path = format!(
                        "/api/agents/bot/sessions/{session}/permissions/{}",
                        event["requestId"].as_str().unwrap()
                    );
                    let (status, body) =
                        call(&b, "POST", &path, Some(json!({"allow": true}))).await;
                    assert_eq!(status, 200, "B reached A's pending call: {body}");
                    let (status, body) =
                        call(&b, "POST", &path, Some(json!({"allow": true}))).await;
                    assert_eq!(status, 404, "answered already, on no node pending: {body}");
                }
                events.push(event);
            }
        }
        assert!(events.iter().any(|e| e["type"] == "permission_request"), "{events:?}");
        let result = events.iter().find(|e| e["type"] == "result").expect("a result");
        assert_eq!(result["result"], "done", "{events:?}");
    });
    assert!(made.exists(), "the allowed call ran on A: {}", made.display());
    a.stop();
    b.stop();
}
