//! The OpenAPI document is exactly the API: requests generated from it, sent to the real
//! server. Every documented example (and the parts of it that the document allows on their
//! own) is accepted; every variant the document forbids (a wrong type, a missing required
//! field, an unknown field, a broken pattern, a length past its limit, a value outside its
//! enum, `null`, a path parameter that is not a name or id) is refused with 400. The answers
//! are checked against their schemas by `TestApp::call` and `TestApp::chat`.

use orbit_testkit::{Reply, Rule};
use serde_json::{Map, Value, json};

use crate::helpers::TestApp;
use crate::schema::{document, validate};

/// Records every operation can address: one of each.
struct Fixtures {
    agent: String,
    session: String,
    task: String,
    message: String,
    /// A worktree that no session or task owns any more (kept when its session went).
    worktree: String,
    /// An existing directory, for a workdir.
    workdir: String,
}

async fn fixtures(app: &TestApp) -> Fixtures {
    let agent = "fixture".to_owned();
    let created = app.call("POST", "/api/agents", Some(json!({"name": agent}))).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let session = app
        .call("POST", &format!("/api/agents/{agent}/sessions"), Some(json!({"worktree": true})))
        .await;
    assert_eq!(session.status, 201, "{}", session.body);
    let task = app
        .call(
            "POST",
            &format!("/api/agents/{agent}/tasks"),
            Some(json!({"prompt": "p", "scheduleType": "interval", "scheduleValue": "3600000", "contextMode": "isolated"})),
        )
        .await;
    assert_eq!(task.status, 201, "{}", task.body);
    let message = app
        .call(
            "POST",
            &format!("/api/agents/{agent}/inbox"),
            Some(json!({"fromAgent": "alice", "message": "hi"})),
        )
        .await;
    assert_eq!(message.status, 201, "{}", message.body);
    let id = |answer: &crate::helpers::Answer, key: &str| {
        answer.body[key]["id"].as_str().unwrap().to_owned()
    };
    // A worktree left by a deleted session: kept because it held work, then cleaned by hand.
    let owner = app
        .call("POST", &format!("/api/agents/{agent}/sessions"), Some(json!({"worktree": true})))
        .await;
    let worktree = id(&owner, "session");
    let listed = app.call("GET", &format!("/api/agents/{agent}/worktrees"), None).await.body;
    let path = listed["worktrees"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["id"] == worktree.as_str())
        .unwrap()["path"]
        .as_str()
        .unwrap()
        .to_owned();
    std::fs::write(format!("{path}/wip.txt"), "work").unwrap();
    let deleted =
        app.call("DELETE", &format!("/api/agents/{agent}/sessions/{worktree}"), None).await;
    assert_eq!(deleted.body["worktreeKept"]["id"], worktree.as_str(), "{}", deleted.body);
    std::fs::remove_file(format!("{path}/wip.txt")).unwrap();
    Fixtures {
        session: id(&session, "session"),
        task: id(&task, "task"),
        message: id(&message, "message"),
        worktree,
        agent,
        workdir: app.tmp_marker(),
    }
}

impl Fixtures {
    /// The template's path with every parameter a fixture's (or `bad` in place of `replace`).
    fn path(&self, template: &str, replace: Option<(&str, &str)>) -> String {
        template
            .split('/')
            .map(|part| {
                let Some(name) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) else {
                    return part.to_owned();
                };
                if let Some((_, bad)) = replace.filter(|(which, _)| *which == name) {
                    return bad.to_owned();
                }
                match (template, name) {
                    (_, "name") => self.agent.clone(),
                    (_, "msg") => self.message.clone(),
                    (_, "requestId") => "01JD2Y7W3Q5ZK8X9M4N6P0R1ST".to_owned(),
                    (t, "id") if t.contains("/tasks/") => self.task.clone(),
                    (t, "id") if t.contains("/worktrees/") => self.worktree.clone(),
                    _ => self.session.clone(),
                }
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    /// The documented example with the values that must name existing records replaced by
    /// the fixtures'.
    fn body(&self, example: &Value) -> Value {
        let mut body = example.clone();
        if body.get("agentName").is_some() {
            body["agentName"] = json!(self.agent);
        }
        if body.get("sessionId").is_some() {
            body["sessionId"] = json!(self.session);
        }
        if body.get("workdir").is_some() {
            body["workdir"] = json!(self.workdir);
        }
        body
    }
}

/// Every operation: (method, path template, operation).
fn operations() -> Vec<(String, String, &'static Value)> {
    let mut all = Vec::new();
    for (path, item) in document()["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            all.push((method.to_uppercase(), path.clone(), operation));
        }
    }
    all
}

/// The schema of an operation's request body, resolved, and whether the body is required.
fn request_schema(operation: &Value) -> Option<(&'static Value, bool)> {
    let body = operation.get("requestBody")?;
    let reference = body["content"]["application/json"]["schema"]["$ref"].as_str().unwrap();
    let schema = document().pointer(reference.trim_start_matches('#')).unwrap();
    Some((schema, body["required"] == true))
}

fn allowed(schema: &Value, body: &Value) -> bool {
    validate(document(), schema, body).is_ok()
}

/// Bodies the document allows: its example, the example's required part alone, and that with
/// each optional field of the example added (those the document allows).
fn valid_bodies(schema: &Value, fixtures: &Fixtures) -> Vec<Value> {
    let example = fixtures.body(&schema["examples"][0]);
    assert!(allowed(schema, &example), "the example is off its own schema: {example}");
    let required: Vec<&str> = schema["required"]
        .as_array()
        .map(|names| names.iter().map(|n| n.as_str().unwrap()).collect())
        .unwrap_or_default();
    let minimal: Map<String, Value> = example
        .as_object()
        .unwrap()
        .iter()
        .filter(|(name, _)| required.contains(&name.as_str()))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    let mut bodies = vec![example.clone(), Value::Object(minimal.clone())];
    for (name, value) in example.as_object().unwrap() {
        if !required.contains(&name.as_str()) {
            let mut body = minimal.clone();
            body.insert(name.clone(), value.clone());
            bodies.push(Value::Object(body));
        }
    }
    bodies.retain(|body| allowed(schema, body));
    bodies
}

/// Values to try in place of a field: each is sent when the document forbids it there.
fn candidates(schema: &Value) -> Vec<Value> {
    let max = |key: &str| {
        schema[key].as_u64().or_else(|| {
            let reference = schema["$ref"].as_str()?;
            document().pointer(reference.trim_start_matches('#'))?[key].as_u64()
        })
    };
    let mut values = vec![
        Value::Null,
        json!(12345),
        json!(true),
        json!({}),
        json!([]),
        json!(""),
        json!(" "),
        json!("Not-Valid"),
        json!("-rf"),
        json!("two words"),
        json!("not-a-value"),
        json!("8ZZZZZZZZZZZZZZZZZZZZZZZZZ"),
        json!("IIIIIIIIIIIIIIIIIIIIIIIIII"),
    ];
    if let Some(limit) = max("maxLength") {
        values.push(json!("a".repeat(limit as usize + 1)));
        values.push(json!("é".repeat(limit as usize + 1)));
    }
    values
}

/// Bodies the document forbids, each with what is wrong with it.
fn invalid_bodies(schema: &Value, fixtures: &Fixtures) -> Vec<(String, Value)> {
    let example = fixtures.body(&schema["examples"][0]);
    let mut bodies = vec![
        ("an array".to_owned(), json!([example])),
        ("a string".to_owned(), json!("text")),
        ("a number".to_owned(), json!(1)),
        ("null".to_owned(), Value::Null),
    ];
    let mut extra = example.clone();
    extra["unexpected"] = json!(1);
    bodies.push(("an unknown field".to_owned(), extra));
    for (name, property) in schema["properties"].as_object().unwrap() {
        let mut without = example.clone();
        without.as_object_mut().unwrap().remove(name);
        bodies.push((format!("without {name}"), without));
        for value in candidates(property) {
            let mut body = example.clone();
            body[name] = value.clone();
            bodies.push((format!("{name}: {value}"), body));
        }
    }
    bodies.retain(|(_, body)| !allowed(schema, body));
    bodies
}

/// Sends `body` as it is (`None`: no body at all), so a client's own checks cannot stop it.
async fn send(app: &TestApp, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    match body {
        // The event stream never ends by itself; its first event, `ready`, is the answer.
        None if path == "/api/events" => {
            app.events(None).await;
            (200, json!({"type": "ready"}))
        }
        // The chat answers a stream; `chat` reads and checks it.
        Some(body) if path == "/api/chat" => {
            let (status, events) = app.chat(body.clone()).await;
            (status, if status == 200 { json!(events) } else { events[0].clone() })
        }
        Some(body) => {
            let answer = app.call(method, path, Some(body.clone())).await;
            (answer.status, answer.body)
        }
        None => {
            let answer = app.call(method, path, None).await;
            (answer.status, answer.body)
        }
    }
}

fn success_status(operation: &Value) -> u16 {
    operation["responses"]
        .as_object()
        .unwrap()
        .keys()
        .map(|status| status.parse::<u16>().unwrap())
        .find(|status| (200..300).contains(status))
        .unwrap()
}

async fn app() -> TestApp {
    TestApp::spawn(vec![Rule::always(Reply::Text("done".into()))]).await
}

#[actix_web::test]
async fn requests_the_document_allows_are_accepted() {
    for (method, template, operation) in operations() {
        // Each operation on a server of its own, so that one's success (a deletion, say)
        // does not change what the next finds.
        let app = app().await;
        let fixtures = fixtures(&app).await;
        let path = fixtures.path(&template, None);
        let expected = success_status(operation);
        // Nothing to answer, or no turn running: the fixtures cannot make these succeed.
        let unreachable = ["answerPermission", "abortSession", "watchSession"]
            .contains(&operation["operationId"].as_str().unwrap());
        let mut bodies: Vec<Option<Value>> = match request_schema(operation) {
            None => vec![None],
            Some((schema, required)) => {
                let mut bodies: Vec<_> =
                    valid_bodies(schema, &fixtures).into_iter().map(Some).collect();
                if !required {
                    bodies.push(None);
                }
                bodies
            }
        };
        let first = bodies.remove(0);
        let (status, answer) = send(&app, &method, &path, first.as_ref()).await;
        if unreachable {
            assert_eq!(status, 404, "{method} {path}: {answer}");
        } else {
            assert_eq!(status, expected, "{method} {path} {first:?}: {answer}");
        }
        for body in bodies {
            let (status, answer) = send(&app, &method, &path, body.as_ref()).await;
            // Later requests may meet the first one's record (409) but are never refused as
            // invalid.
            assert_ne!(status, 400, "{method} {path} {body:?}: {answer}");
            assert!(status < 500, "{method} {path} {body:?}: {answer}");
        }
    }
}

#[actix_web::test]
async fn requests_the_document_forbids_are_refused_with_400() {
    let app = app().await;
    let fixtures = fixtures(&app).await;
    let mut sent = 0;
    for (method, template, operation) in operations() {
        let path = fixtures.path(&template, None);
        if let Some((schema, required)) = request_schema(operation) {
            let invalid = invalid_bodies(schema, &fixtures);
            assert!(invalid.len() > 5, "{method} {template}: too few variants");
            for (what, body) in invalid {
                let (status, answer) = send(&app, &method, &path, Some(&body)).await;
                assert_eq!(status, 400, "{method} {path} with {what}: {answer}");
                // One code per kind of mistake: a body that is not an object, a field.
                let expected: &[&str] = if body.is_object() {
                    &["invalid_input", "invalid_schedule"]
                } else {
                    &["invalid_json"]
                };
                let code = answer["code"].as_str().unwrap_or_default();
                assert!(expected.contains(&code), "{method} {path} with {what}: {answer}");
                sent += 1;
            }
            if required {
                let (status, answer) = send(&app, &method, &path, None).await;
                assert_eq!(status, 400, "{method} {path} without a body: {answer}");
            }
        }
        // Path parameters; query parameters are tried by their routes' own tests.
        let in_path =
            operation["parameters"].as_array().unwrap().iter().filter(|p| p["in"] == "path");
        for parameter in in_path {
            let name = parameter["name"].as_str().unwrap();
            for bad in candidates(&parameter["schema"]) {
                let Some(text) =
                    bad.as_str().filter(|t| !t.is_empty() && t.is_ascii() && !t.contains(' '))
                else {
                    continue;
                };
                if allowed(&parameter["schema"], &bad) {
                    continue;
                }
                let path = fixtures.path(&template, Some((name, text)));
                let body = request_schema(operation)
                    .map(|(schema, _)| fixtures.body(&schema["examples"][0]));
                let (status, answer) = send(&app, &method, &path, body.as_ref()).await;
                assert_eq!(status, 400, "{method} {path} ({name} {text}): {answer}");
                sent += 1;
            }
        }
    }
    assert!(sent > 200, "only {sent} invalid requests were generated");
}

#[actix_web::test]
async fn the_document_describes_every_operation_fully() {
    for (method, template, operation) in operations() {
        let id = operation["operationId"].as_str();
        assert!(id.is_some_and(|id| !id.is_empty()), "{method} {template}: no operationId");
        let statuses: Vec<&String> = operation["responses"].as_object().unwrap().keys().collect();
        for status in &statuses {
            let content = &operation["responses"][status.as_str()]["content"];
            assert!(
                content.as_object().is_some_and(|c| c.len() == 1),
                "{method} {template} {status}"
            );
        }
        let security = &operation["security"];
        if template.starts_with("/api") {
            assert_eq!(security, &json!([{"bearer": []}]), "{method} {template}");
            assert!(statuses.contains(&&"401".to_owned()), "{method} {template}");
        } else {
            assert_eq!(security, &json!([]), "{method} {template}");
            assert!(!statuses.contains(&&"401".to_owned()), "{method} {template}");
        }
        let has_input = operation.get("requestBody").is_some()
            || !operation["parameters"].as_array().unwrap().is_empty();
        assert_eq!(statuses.contains(&&"400".to_owned()), has_input, "{method} {template}");
        assert!(!statuses.contains(&&"405".to_owned()), "{method} {template}");
    }
    assert!(document()["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer");
}
