//! The database goes away under two running nodes: their requests answer 503
//! `store_unavailable` rather than hang, `/health` (liveness) still answers, and once the
//! database is back both nodes serve again without a restart.

use std::time::{Duration, Instant};

use orbit_testkit::postgres::TestDatabase;
use orbit_testkit::{ModelServer, Reply, Rule};
use serde_json::{Value, json};

use crate::nodes::{Node, chat, start_nodes};

/// A call that fails the test instead of waiting past 30 s: a node must answer during an
/// outage, not hang (it knows within its connect timeout, 5 s).
async fn call(node: &Node, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let client = awc::Client::builder().timeout(Duration::from_secs(30)).finish();
    let request =
        client.request(awc::http::Method::from_bytes(method.as_bytes()).unwrap(), node.url(path));
    let sent = match body {
        Some(body) => request.send_json(&body).await,
        None => request.send().await,
    };
    let mut response = sent.unwrap_or_else(|err| panic!("{method} {path} did not answer: {err}"));
    let bytes = response.body().limit(1 << 24).await.unwrap();
    (response.status().as_u16(), serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[test]
fn nodes_answer_503_while_the_database_is_away_and_recover_when_it_is_back() {
    let database = TestDatabase::new();
    let model_a = ModelServer::start(vec![Rule::always(Reply::Text("from a".into()))]);
    let model_b = ModelServer::start(vec![Rule::always(Reply::Text("from b".into()))]);
    let ([mut a, mut b], _dirs) = start_nodes(&database.url, [&model_a, &model_b]);
    actix_web::rt::System::new().block_on(async {
        let (status, _) = call(&a, "POST", "/api/agents", Some(json!({"name": "bot"}))).await;
        assert_eq!(status, 201);
        let events = chat(&a, json!({"agentName": "bot", "message": "before"})).await;
        let session = events.iter().find_map(|e| e["sessionId"].as_str()).unwrap().to_owned();

        database.cut_off();
        for node in [&a, &b] {
            for (method, path, body) in [
                ("GET", "/api/agents".to_owned(), None),
                ("GET", format!("/api/agents/bot/sessions/{session}"), None),
                ("POST", "/api/agents/bot/sessions".to_owned(), None),
                (
                    "POST",
                    "/api/chat".to_owned(),
                    Some(json!({"agentName": "bot", "sessionId": session, "message": "during"})),
                ),
            ] {
                let asked = Instant::now();
                let (status, answer) = call(node, method, &path, body).await;
                // Reported, not asserted: how soon a request learns of the outage.
                eprintln!("{method} {path}: {status} after {:?}", asked.elapsed());
                assert_eq!(status, 503, "{method} {path} while the database is away: {answer}");
                assert_eq!(answer["code"], "store_unavailable", "{answer}");
                assert!(
                    answer["error"].as_str().is_some_and(|m| m.contains("database")),
                    "the message says what is wrong: {answer}"
                );
            }
            let (status, health) = call(node, "GET", "/health", None).await;
            assert_eq!(status, 200, "the node itself is alive: {health}");
        }
        assert_eq!(model_a.requests().len(), 1, "no turn ran during the outage");
        assert!(model_b.requests().is_empty(), "no turn ran during the outage");

        database.restore();
        for node in [&a, &b] {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let (status, answer) = call(node, "GET", "/api/agents", None).await;
                if status == 200 {
                    break;
                }
                assert!(Instant::now() < deadline, "the node never recovered: {answer}");
                actix_web::rt::time::sleep(Duration::from_millis(200)).await;
            }
        }
        // Both nodes serve everything again: B resumes the session A began before the
        // outage, and a session made on B is listed on A.
        let events =
            chat(&b, json!({"agentName": "bot", "sessionId": session, "message": "after"})).await;
        let result = events.iter().find(|e| e["type"] == "result").expect("a result on B");
        assert_eq!(result["result"], "from b", "{events:?}");
        let (status, made) = call(&b, "POST", "/api/agents/bot/sessions", None).await;
        assert_eq!(status, 201, "{made}");
        let (_, listed) = call(&a, "GET", "/api/agents/bot/sessions", None).await;
        let ids: Vec<&Value> =
            listed["sessions"].as_array().unwrap().iter().map(|s| &s["id"]).collect();
        assert!(ids.contains(&&made["session"]["id"]), "{listed}");
        for node in [&mut a, &mut b] {
            assert!(node.child.try_wait().unwrap().is_none(), "the node kept running");
        }
    });
    a.stop();
    b.stop();
}
