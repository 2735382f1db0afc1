//! A node of a cluster SIGKILLed mid-turn loses nothing: once its lease lapses, another node
//! on the same database takes back its inbox claims, the session it served goes on there, and
//! its task runs are settled by the others, its slots firing once in the whole cluster.

use std::time::{Duration, Instant};

use orbit_testkit::postgres::TestDatabase;
use orbit_testkit::{ModelServer, Reply, Rule, last_user_text};
use serde_json::{Value, json};

use crate::nodes::{Node, call, chat, client, start_nodes};

#[test]
fn a_node_killed_mid_turn_has_its_claims_and_session_taken_over() {
    let database = TestDatabase::new();
    let slow = Reply::Delayed(Duration::from_secs(60), Box::new(Reply::Text("late".into())));
    let model_a = ModelServer::start(vec![Rule::always(slow)]);
    let model_b = ModelServer::start(vec![Rule::always(Reply::Text("fast".into()))]);
    let ([mut a, mut b], _dirs) = start_nodes(&database.url, [&model_a, &model_b]);
    let (message, session) = actix_web::rt::System::new().block_on(async {
        call(&a, "POST", "/api/agents", Some(json!({"name": "bot"}))).await;
        let (_, sent) = call(
            &a,
            "POST",
            "/api/agents/bot/inbox",
            Some(json!({"fromAgent": "alice", "message": "remember the milk"})),
        )
        .await;
        let message = sent["message"]["id"].as_str().unwrap().to_owned();
        let url = a.url("/api/chat");
        actix_web::rt::spawn(async move {
            let _ =
                client().post(url).send_json(&json!({"agentName": "bot", "message": "slow"})).await;
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        while model_a.requests().is_empty() {
            assert!(Instant::now() < deadline, "node A's turn never reached its model");
            actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        }
        let (_, held) = call(&b, "GET", &format!("/api/agents/bot/inbox/{message}"), None).await;
        assert!(held["message"]["claimedBy"].is_string(), "node A holds the message: {held}");
        let (_, sessions) = call(&b, "GET", "/api/agents/bot/sessions", None).await;
        (message, sessions["sessions"][0]["id"].as_str().unwrap().to_owned())
    });
    assert!(model_a.requests()[0].to_string().contains("remember the milk"));
    a.kill();

    actix_web::rt::System::new().block_on(async {
        // The lease is 3 s: once it lapses, node B's next turn claims the message.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let seen = model_b.requests().len();
            chat(&b, json!({"agentName": "bot", "message": "anything new?"})).await;
            let delivered = model_b.requests()[seen..]
                .iter()
                .any(|request| request.to_string().contains("remember the milk"));
            if delivered {
                break;
            }
            assert!(Instant::now() < deadline, "node B never took the claim back");
            actix_web::rt::time::sleep(Duration::from_millis(500)).await;
        }
        let (_, message) = call(&b, "GET", &format!("/api/agents/bot/inbox/{message}"), None).await;
        assert_eq!(message["message"]["status"], "read", "{message}");
        assert_eq!(message["message"]["deliveries"], 2, "A's lapsed delivery counts: {message}");

        // The session whose turn died with node A goes on on node B. Its CLI conversation
        // never finished a turn, so there is no transcript to restore: the turn says so and
        // runs in a fresh CLI session.
        let events =
            chat(&b, json!({"agentName": "bot", "sessionId": session, "message": "hello?"})).await;
        let result = events.iter().find(|e| e["type"] == "result").expect("a result");
        assert_eq!(result["result"], "fast", "{events:?}");
    });
    b.stop();
}

async fn runs_of(node: &Node, task: &str) -> Vec<Value> {
    let (_, body) = call(node, "GET", &format!("/api/agents/bot/tasks/{task}/runs"), None).await;
    body["runs"].as_array().cloned().unwrap_or_default()
}

fn prompts_seen(model: &ModelServer, prompt: &str) -> usize {
    model.requests().iter().filter(|r| last_user_text(r).contains(prompt)).count()
}

fn is_interrupted(run: &Value) -> bool {
    run["status"] == "error" && run["error"].as_str().is_some_and(|e| e.contains("interrupted"))
}

/// Three nodes; the one running a once task's run and an interval task's run is SIGKILLed.
/// Once its lease lapses another node settles both runs as interrupted, the once task never
/// runs again, and the interval task's later slots fire on the two survivors, each once.
#[test]
fn a_node_killed_mid_run_has_its_runs_taken_over_by_the_others() {
    let database = TestDatabase::new();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let slow = Reply::Delayed(Duration::from_secs(60), Box::new(Reply::Text("late".into())));
    let model_a = ModelServer::start(vec![Rule::always(slow)]);
    let model_b = ModelServer::start(vec![Rule::always(Reply::Text("done".into()))]);
    let model_c = ModelServer::start(vec![Rule::always(Reply::Text("done".into()))]);
    // A alone at first, so that A's scheduler fires the first slots.
    let mut a = Node::start(&database.url, dirs[0].path(), &model_a);
    let (once, interval, anchor) = actix_web::rt::System::new().block_on(async {
        call(&a, "POST", "/api/agents", Some(json!({"name": "bot"}))).await;
        let at = orbit_store::timestamp::now() + Duration::from_secs(2);
        let at = orbit_store::timestamp::rfc3339::format(at).unwrap();
        let once = json!({"prompt": "once job", "scheduleType": "once", "scheduleValue": at, "contextMode": "isolated"});
        let (status, once) = call(&a, "POST", "/api/agents/bot/tasks", Some(once)).await;
        assert_eq!(status, 201, "{once}");
        let interval = json!({"prompt": "interval job", "scheduleType": "interval", "scheduleValue": "3000", "contextMode": "isolated"});
        let (status, interval) = call(&a, "POST", "/api/agents/bot/tasks", Some(interval)).await;
        assert_eq!(status, 201, "{interval}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while prompts_seen(&model_a, "once job") == 0 || prompts_seen(&model_a, "interval job") == 0
        {
            assert!(Instant::now() < deadline, "A never ran both tasks");
            actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        }
        let id = |task: &Value| task["task"]["id"].as_str().unwrap().to_owned();
        (id(&once), id(&interval), interval["task"]["nextRun"].as_str().unwrap().to_owned())
    });
    let b = Node::start(&database.url, dirs[1].path(), &model_b);
    let c = Node::start(&database.url, dirs[2].path(), &model_c);
    a.kill();

    actix_web::rt::System::new().block_on(async {
        // The lease is 3 s; then the survivors settle A's runs and fire the later slots.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (once_runs, interval_runs) =
                (runs_of(&b, &once).await, runs_of(&c, &interval).await);
            let settled = once_runs.iter().all(|r| r["status"] != "running");
            let succeeded = interval_runs.iter().filter(|r| r["status"] == "success").count();
            if settled && succeeded >= 3 {
                break;
            }
            assert!(Instant::now() < deadline, "{once_runs:?} {interval_runs:?}");
            actix_web::rt::time::sleep(Duration::from_millis(500)).await;
        }
        // A second firing of anything, were there one, has time to show.
        actix_web::rt::time::sleep(Duration::from_secs(3)).await;

        let once_runs = runs_of(&c, &once).await;
        assert_eq!(once_runs.len(), 1, "one run record for the once task: {once_runs:?}");
        assert!(is_interrupted(&once_runs[0]), "{once_runs:?}");
        let survivors =
            |prompt: &str| prompts_seen(&model_b, prompt) + prompts_seen(&model_c, prompt);
        assert_eq!(survivors("once job"), 0, "the once task never ran twice");

        let interval_runs = runs_of(&b, &interval).await;
        let interrupted = interval_runs.iter().filter(|r| is_interrupted(r)).count();
        assert_eq!(interrupted, 1, "A's run, settled by a survivor: {interval_runs:?}");
        // Every slot is consumed once, by a run or by a skip: had two nodes fired one slot,
        // more would be consumed than the schedule had.
        let parse = |text: &str| {
            time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                .unwrap()
        };
        let slots_so_far =
            (orbit_store::timestamp::now() - parse(&anchor)).whole_milliseconds() / 3000 + 1;
        let consumed: i128 = interval_runs
            .iter()
            .map(|r| match r["skippedSlots"].as_u64() {
                Some(skipped) if r["status"] == "skipped" => i128::from(skipped),
                _ => 1,
            })
            .sum();
        assert!(consumed <= slots_so_far, "{consumed} of {slots_so_far} slots: {interval_runs:?}");
        // Each survivor's run reached a model once.
        let started =
            interval_runs.iter().filter(|r| r["status"] != "skipped" && !is_interrupted(r)).count();
        let succeeded = interval_runs.iter().filter(|r| r["status"] == "success").count();
        let reached = survivors("interval job");
        assert!(
            (succeeded..=started).contains(&reached),
            "{reached} requests for {started} runs of the survivors: {interval_runs:?}"
        );
        assert_eq!(prompts_seen(&model_a, "interval job"), 1, "A ran one slot before it died");
    });
    for mut node in [b, c] {
        node.stop();
    }
}
