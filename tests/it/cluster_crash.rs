//! A node of a cluster SIGKILLed mid-turn loses nothing: once its lease lapses, another node
//! on the same database takes back its inbox claims, and the session it served goes on there.

use std::time::{Duration, Instant};

use orbit_testkit::postgres::TestDatabase;
use orbit_testkit::{ModelServer, Reply, Rule};
use serde_json::json;

use crate::nodes::{Node, call, chat, client};

#[test]
fn a_node_killed_mid_turn_has_its_claims_and_session_taken_over() {
    let database = TestDatabase::new();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let slow = Reply::Delayed(Duration::from_secs(60), Box::new(Reply::Text("late".into())));
    let model_a = ModelServer::start(vec![Rule::always(slow)]);
    let model_b = ModelServer::start(vec![Rule::always(Reply::Text("fast".into()))]);
    let mut a = Node::start(&database.url, dir_a.path(), &model_a);
    let mut b = Node::start(&database.url, dir_b.path(), &model_b);
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
