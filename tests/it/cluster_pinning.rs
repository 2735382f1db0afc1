//! A session or a task that works in a git worktree is pinned to the node whose disk holds
//! the worktree: the API names that node, the other node answers 409 naming it, and only
//! that node's scheduler runs the task. Two `orbit-server` processes on one database.

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use orbit_testkit::postgres::TestDatabase;
use orbit_testkit::{ModelServer, Reply, Rule, last_user_text};
use serde_json::{Value, json};

use crate::nodes::{Node, call, chat, start_nodes, start_refused, wait_until};

fn node_name(node: &Node) -> String {
    std::fs::read_to_string(node.data.join("node-name")).unwrap().trim().to_owned()
}

/// A 409 that names `node`.
fn assert_names(answer: &(u16, Value), node: &str, what: &str) {
    assert_eq!(answer.0, 409, "{what}: {}", answer.1);
    assert_eq!(answer.1["code"], "conflict", "{what}: {}", answer.1);
    let message = answer.1["error"].as_str().unwrap_or_default();
    assert!(message.contains(&format!("node '{node}'")), "{what} names the node: {message}");
}

#[test]
fn worktree_sessions_and_tasks_are_pinned_to_their_node() {
    let database = TestDatabase::new();
    let model_a = ModelServer::start(vec![Rule::always(Reply::Text("from a".into()))]);
    let model_b = ModelServer::start(vec![Rule::always(Reply::Text("from b".into()))]);
    let ([mut a, mut b], _dirs) = start_nodes(&database.url, [&model_a, &model_b]);
    let name_a = node_name(&a);
    assert_ne!(name_a, node_name(&b), "each data directory names its node");
    actix_web::rt::System::new().block_on(async {
        let (status, _) = call(&a, "POST", "/api/agents", Some(json!({"name": "bot"}))).await;
        assert_eq!(status, 201);

        // A session with a worktree made on A names A, on both nodes.
        let (status, made) =
            call(&a, "POST", "/api/agents/bot/sessions", Some(json!({"worktree": true}))).await;
        assert_eq!(status, 201, "{made}");
        assert_eq!(made["session"]["node"], name_a.as_str(), "{made}");
        let session = made["session"]["id"].as_str().unwrap().to_owned();
        let path = format!("/api/agents/bot/sessions/{session}");
        let (_, read) = call(&b, "GET", &path, None).await;
        assert_eq!(read["session"]["node"], name_a.as_str(), "B says where it is: {read}");
        // A session without one is not pinned: it answers no node.
        let (_, plain) = call(&a, "POST", "/api/agents/bot/sessions", None).await;
        assert!(plain["session"].get("node").is_none(), "{plain}");

        // B refuses its turns and its deletion, naming A; A serves them.
        let mut refused = client_chat(&b, &session).await;
        assert_names(&refused, &name_a, "a chat on B");
        refused = call(&b, "DELETE", &path, None).await;
        assert_names(&refused, &name_a, "a delete on B");
        assert!(model_b.requests().is_empty(), "no turn ran on B");
        let events = chat(&a, json!({"agentName": "bot", "sessionId": session, "message": "hi"}))
            .await;
        let result = events.iter().find(|e| e["type"] == "result").expect("a result on A");
        assert_eq!(result["result"], "from a", "{events:?}");

        // A task with a worktree made on A runs on A alone, and is deleted there alone.
        let task = json!({"prompt": "pinned job", "scheduleType": "interval", "scheduleValue": "2000", "contextMode": "isolated", "worktree": true});
        let (status, task) = call(&a, "POST", "/api/agents/bot/tasks", Some(task)).await;
        assert_eq!(status, 201, "{task}");
        assert_eq!(task["task"]["node"], name_a.as_str(), "{task}");
        let task = task["task"]["id"].as_str().unwrap().to_owned();
        let runs_on_a = || {
            model_a.requests().iter().filter(|r| last_user_text(r).contains("pinned job")).count()
        };
        wait_until(Duration::from_secs(60), "A never ran the pinned task 4 times", || {
            runs_on_a() >= 4
        })
        .await;
        let on_b =
            model_b.requests().iter().filter(|r| last_user_text(r).contains("pinned job")).count();
        assert_eq!(on_b, 0, "B's scheduler left A's task alone");
        let task_path = format!("/api/agents/bot/tasks/{task}");
        // Run-now asked of B is refused, naming A: B would make a worktree of its own.
        refused = call(&b, "POST", &format!("{task_path}/run"), None).await;
        assert_names(&refused, &name_a, "a run-now on B");
        refused = call(&b, "DELETE", &task_path, None).await;
        assert_names(&refused, &name_a, "a task delete on B");
        let (status, body) = call(&a, "DELETE", &task_path, None).await;
        assert_eq!(status, 200, "{body}");
        let (status, body) = call(&a, "DELETE", &path, None).await;
        assert_eq!(status, 200, "{body}");
    });
    a.stop();
    b.stop();
}

/// A node gone for good (SIGKILLed, its disk lost) strands what is pinned to it until an
/// operator releases it through another node: refused while the dead node's heartbeat is
/// live, then its session loses its pin and worktree (and says so), its task its pin, and
/// the other node runs the task, in a worktree of its own, pinned to itself.
#[test]
fn a_dead_nodes_pinned_work_is_released_to_the_others() {
    let database = TestDatabase::new();
    let model_a = ModelServer::start(vec![Rule::always(Reply::Text("from a".into()))]);
    let model_b = ModelServer::start(vec![Rule::always(Reply::Text("from b".into()))]);
    let ([mut a, mut b], _dirs) = start_nodes(&database.url, [&model_a, &model_b]);
    let (name_a, name_b) = (node_name(&a), node_name(&b));
    actix_web::rt::System::new().block_on(async {
        let (status, _) = call(&a, "POST", "/api/agents", Some(json!({"name": "bot"}))).await;
        assert_eq!(status, 201);
        let (status, made) =
            call(&a, "POST", "/api/agents/bot/sessions", Some(json!({"worktree": true}))).await;
        assert_eq!(status, 201, "{made}");
        let session = made["session"]["id"].as_str().unwrap().to_owned();
        let session_path = format!("/api/agents/bot/sessions/{session}");
        let task = json!({"prompt": "pinned job", "scheduleType": "interval", "scheduleValue": "2000", "contextMode": "isolated", "worktree": true});
        let (status, task) = call(&a, "POST", "/api/agents/bot/tasks", Some(task)).await;
        assert_eq!(status, 201, "{task}");
        let task = task["task"]["id"].as_str().unwrap().to_owned();
        let task_path = format!("/api/agents/bot/tasks/{task}");
        let ran = |model: &ModelServer| {
            model.requests().iter().filter(|r| last_user_text(r).contains("pinned job")).count()
        };
        wait_until(Duration::from_secs(60), "A never ran its pinned task", || ran(&model_a) >= 1)
            .await;

        a.kill();
        let release = format!("/api/nodes/{name_a}/release");
        // A's heartbeat is still good for a moment: B cannot tell it from a node that is
        // merely slow, and refuses.
        let refused = call(&b, "POST", &release, None).await;
        assert_eq!(refused.0, 409, "{}", refused.1);
        let message = refused.1["error"].as_str().unwrap_or_default();
        assert!(message.contains(&format!("node '{name_a}' is running")), "{message}");
        // Meanwhile the pinned records are refused on B, naming A.
        assert_names(&client_chat(&b, &session).await, &name_a, "a chat on B");
        assert_names(&call(&b, "POST", &format!("{task_path}/run"), None).await, &name_a, "run-now on B");

        // Once A's heartbeat lapsed (3 s), B releases it.
        let mut released = (0, Value::Null);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            released = call(&b, "POST", &release, None).await;
            if released.0 != 409 {
                break;
            }
            actix_web::rt::time::sleep(Duration::from_millis(250)).await;
        }
        assert_eq!(released.0, 200, "released once A's heartbeat lapsed: {}", released.1);
        let body = &released.1;
        assert_eq!(body["node"], name_a.as_str(), "{body}");
        let ids = |key: &str| -> Vec<String> {
            body[key].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_owned()).collect()
        };
        assert!(ids("sessions").contains(&session), "{body}");
        assert_eq!(ids("tasks"), vec![task.clone()], "{body}");

        // The session says where its worktree was, and B serves it.
        let (_, read) = call(&b, "GET", &session_path, None).await;
        assert_eq!(read["session"]["releasedFrom"], name_a.as_str(), "{read}");
        assert!(read["session"].get("node").is_none(), "{read}");
        assert!(read["session"].get("worktreeId").is_none(), "{read}");
        let events = chat(&b, json!({"agentName": "bot", "sessionId": session, "message": "hi"}))
            .await;
        let result = events.iter().find(|e| e["type"] == "result").expect("a result on B");
        assert_eq!(result["result"], "from b", "{events:?}");

        // B's scheduler runs the task now, in a worktree it makes, and pins it to itself.
        wait_until(Duration::from_secs(60), "B never ran the released task", || {
            ran(&model_b) >= 1
        })
        .await;
        let (_, read) = call(&b, "GET", &task_path, None).await;
        assert_eq!(read["task"]["node"], name_b.as_str(), "pinned to B: {read}");
        let worktree = b.data.join("workspaces/bot/.worktrees").join(&task);
        assert!(worktree.is_dir(), "B made the task's worktree: {}", worktree.display());
        let (status, body) = call(&b, "DELETE", &task_path, None).await;
        assert_eq!(status, 200, "{body}");
    });
    b.stop();
}

/// Two data directories given one `--node-name` are two nodes claiming one name, and would
/// each take the other's pinned work: a node starting under a name that a live node of
/// another data directory has is refused at its start, naming the clash. A second process
/// on the first node's own data directory shares its name, as it should; once every
/// process of that node is gone (SIGKILLed) and its heartbeat lapsed, the name is free.
#[test]
fn a_second_node_under_a_taken_name_is_refused_at_its_start() {
    let database = TestDatabase::new();
    let model = ModelServer::start(vec![Rule::always(Reply::Text("ok".into()))]);
    let (first_dir, second_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let twin = ["--node-name", "twin"];
    let mut a = Node::start_with(&database.url, first_dir.path(), &model, &twin);
    let mut a_again = Node::start_with(&database.url, first_dir.path(), &model, &twin);
    assert_eq!(node_name(&a_again), "twin", "one data directory, one name, two processes");

    let refused = start_refused(&database.url, second_dir.path(), &model, &twin, &[]);
    assert!(refused.contains("under this node's name, on another data directory"), "{refused}");
    assert!(refused.contains("'twin'"), "names the name: {refused}");
    assert!(refused.contains("retry once it has"), "says a lapsing name frees: {refused}");
    assert!(listening(&a) && listening(&a_again), "the running node goes on");

    a.kill();
    a_again.kill();
    // The killed node's registration lapses with its heartbeat (3 s): the name is free.
    wait_for_no_live_registration(&database);
    let mut b = Node::start_with(&database.url, second_dir.path(), &model, &twin);
    assert!(listening(&b), "the name of a node that is gone can be taken");
    b.stop();
}

/// A node away longer than its lease (suspended, cut off from the database) may come back
/// to find its name taken by a node of another data directory that started meanwhile. It
/// does not run on under that name: its next heartbeat is refused, whether its
/// registration only lapsed or was pruned too, and it stops serving and exits with a
/// failure, while the node that took the name goes on.
#[test]
fn a_node_that_comes_back_to_find_its_name_taken_stops() {
    let database = TestDatabase::new();
    let model = ModelServer::start(vec![Rule::always(Reply::Text("ok".into()))]);
    let (first_dir, second_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let twin = ["--node-name", "twin"];
    let mut lapsed = Node::start_with(&database.url, first_dir.path(), &model, &twin);
    let mut pruned = Node::start_with(&database.url, first_dir.path(), &model, &twin);
    let pid = |node: &Node| Pid::from_raw(node.child.id() as i32);
    for node in [&lapsed, &pruned] {
        kill(pid(node), Signal::SIGSTOP).unwrap();
    }
    wait_for_no_live_registration(&database);
    // One of them is away so long that another node pruned its registration.
    database.execute(&format!("DELETE FROM instances WHERE doc->>'pid' = '{}'", pruned.child.id()));
    let mut taker = Node::start_with(&database.url, second_dir.path(), &model, &twin);
    assert!(listening(&taker), "the name of a node that seems gone can be taken");

    for node in [&lapsed, &pruned] {
        kill(pid(node), Signal::SIGCONT).unwrap();
    }
    for (node, what) in [(&mut lapsed, "lapsed"), (&mut pruned, "pruned")] {
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = node.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "the {what} node runs on under a taken name");
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(!status.success(), "the {what} node exits with a failure: {status}");
        assert!(node.logged("this node lost its name"), "the {what} node says why");
        assert!(node.logged("'twin' is taken"), "the {what} node names the name");
    }
    assert!(listening(&taker), "the node that took the name goes on");
    let registered = database.query("SELECT count(*) FROM instances WHERE until > now()");
    assert_eq!(registered.trim(), "1", "only the taker is registered");
    taker.stop();
}

/// Whether `node` answers.
fn listening(node: &Node) -> bool {
    actix_web::rt::System::new()
        .block_on(async { call(node, "GET", "/api/agents", None).await.0 == 200 })
}

/// Waits until every registration in `database` has lapsed (a 3 s lease).
fn wait_for_no_live_registration(database: &TestDatabase) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while database.query("SELECT count(*) FROM instances WHERE until > now()").trim() != "0" {
        assert!(Instant::now() < deadline, "a registration never lapsed");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A chat's status and, when refused, its JSON answer.
async fn client_chat(node: &Node, session: &str) -> (u16, Value) {
    call(
        node,
        "POST",
        "/api/chat",
        Some(json!({"agentName": "bot", "sessionId": session, "message": "hi"})),
    )
    .await
}
