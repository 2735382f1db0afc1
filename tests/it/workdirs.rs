//! Agents working in the user's own directory, over HTTP against the real server: workdirs
//! accepted and refused, the CLI really running there (chats and scheduled runs), worktrees
//! made in the user's repository under Orbit's ignored folder, and nothing of the user's
//! touched by deletions.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use orbit_testkit::{Reply, Rule};
use serde_json::{Value, json};

use crate::helpers::TestApp;

/// The model answers "where are you" by writing the CLI's physical cwd into `where.txt`.
fn where_rules() -> Vec<Rule> {
    vec![
        Rule::after_tool_result(Reply::Text("written".into())),
        Rule::when_user_says(
            "where are you",
            Reply::ToolUse {
                name: "Bash".into(),
                input: json!({"command": "pwd -P > where.txt", "description": "say where"}),
            },
        ),
        Rule::always(Reply::Text("ok".into())),
    ]
}

fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=User", "-c", "user.email=user@localhost"])
        .args(args)
        .output()
        .unwrap();
    assert!(output.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A user's repository: one commit, a tracked file, an untracked one, branches of its own.
fn user_repo(dir: &Path) -> PathBuf {
    let repo = dir.join("project");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "--quiet", "--initial-branch=main"]);
    std::fs::write(repo.join("README"), "the user's project\n").unwrap();
    git(&repo, &["add", "README"]);
    git(&repo, &["commit", "--quiet", "-m", "first"]);
    git(&repo, &["branch", "users-feature"]);
    std::fs::write(repo.join("notes.txt"), "untracked, the user's\n").unwrap();
    repo
}

/// Everything a user would notice changing in their repository.
fn repo_state(repo: &Path) -> (String, String, String) {
    (
        git(repo, &["for-each-ref", "--format=%(refname) %(objectname)", "refs/heads/"]),
        git(repo, &["status", "--porcelain"]),
        git(repo, &["rev-parse", "--abbrev-ref", "HEAD"]),
    )
}

fn real(path: &Path) -> String {
    path.canonicalize().unwrap().display().to_string()
}

async fn create(app: &TestApp, body: Value) -> crate::helpers::Answer {
    app.call("POST", "/api/agents", Some(body)).await
}

#[actix_web::test]
async fn workdirs_are_checked_against_the_roots() {
    let outer = tempfile::tempdir().unwrap();
    let root = outer.path().join("projects");
    let outside = outer.path().join("elsewhere");
    std::fs::create_dir_all(root.join("mine")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(root.join("file.txt"), "").unwrap();
    std::os::unix::fs::symlink(&outside, root.join("escape")).unwrap();
    let root_for_server = root.clone();
    let app = TestApp::spawn_configured(vec![], None, move |settings| {
        settings.workdir_roots = vec![root_for_server];
    })
    .await;
    let at = |p: &Path| p.display().to_string();

    for (workdir, reason) in [
        ("relative/dir".to_owned(), "not an absolute path"),
        (at(&root.join("missing")), "does not exist"),
        (at(&root.join("file.txt")), "not a directory"),
        (at(&outside), "outside every workdir root"),
        (at(&root.join("escape")), "outside every workdir root"),
        (format!("{}/../elsewhere", at(&root)), "outside every workdir root"),
    ] {
        let refused = create(&app, json!({"name": "bot", "workdir": workdir})).await;
        assert_eq!(refused.status, 400, "{workdir}: {}", refused.body);
        assert_eq!(refused.body["code"], "invalid_input");
        let message = refused.body["error"].as_str().unwrap();
        assert!(message.contains(reason), "{workdir}: {message}");
        // The answer names the client's path only: not the roots, not a symlink's target.
        assert!(!message.contains(&at(&outside)) || workdir.contains("elsewhere"), "{message}");
        assert!(!message.contains(&format!("{} ", at(&root))), "{message}");
    }
    assert_eq!(app.call("GET", "/api/agents", None).await.body["agents"], json!([]));

    // Odd spellings of a directory inside the root are that directory.
    let given = format!("{}//mine/", at(&root));
    let made = create(&app, json!({"name": "bot", "workdir": given})).await;
    assert_eq!(made.status, 201, "{}", made.body);
    assert_eq!(made.body["agent"]["workdir"], given.as_str(), "shown as it was given");
    let plain = create(&app, json!({"name": "plain"})).await;
    assert_eq!(plain.body["agent"]["workdir"], Value::Null, "null: the data directory's");
    let listed = app.call("GET", "/api/agents", None).await.body;
    assert_eq!(listed["agents"][0]["workdir"], given.as_str());

    let moved = app
        .call("PUT", "/api/agents/plain", Some(json!({"workdir": at(&root.join("mine"))})))
        .await;
    assert_eq!(moved.status, 200, "{}", moved.body);
    assert_eq!(moved.body["agent"]["workdir"], at(&root.join("mine")).as_str());
    let escaped = app
        .call("PUT", "/api/agents/plain", Some(json!({"workdir": at(&root.join("escape"))})))
        .await;
    assert_eq!(escaped.status, 400, "{}", escaped.body);
    let back = app.call("PUT", "/api/agents/plain", Some(json!({"workdir": ""}))).await;
    assert_eq!(back.body["agent"]["workdir"], Value::Null, "back to the default");
    assert_eq!(
        app.call("GET", "/api/agents/plain", None).await.body["agent"]["workdir"],
        Value::Null
    );
}

#[actix_web::test]
async fn a_loopback_server_without_roots_takes_any_existing_absolute_directory() {
    let app = TestApp::spawn(vec![]).await;
    let anywhere = tempfile::tempdir().unwrap();
    let made = create(&app, json!({"name": "bot", "workdir": at_str(anywhere.path())})).await;
    assert_eq!(made.status, 201, "{}", made.body);
    let relative = create(&app, json!({"name": "other", "workdir": "some/dir"})).await;
    assert_eq!(relative.status, 400, "{}", relative.body);
    let data =
        create(&app, json!({"name": "other", "workdir": at_str(&app.dir.path().join("data"))}))
            .await;
    assert_eq!(data.status, 400, "Orbit's own data directory: {}", data.body);
    assert!(data.body["error"].as_str().unwrap().contains("data directory"), "{}", data.body);
}

fn at_str(path: &Path) -> String {
    path.display().to_string()
}

/// Polls the task's runs until its newest has ended.
async fn finished_run(app: &TestApp, agent: &str, task: &str) -> Value {
    for _ in 0..120 {
        let runs = app.call("GET", &format!("/api/agents/{agent}/tasks/{task}/runs"), None).await;
        if let Some(run) = runs.body["runs"].as_array().and_then(|r| r.first())
            && run["status"] != "running"
        {
            return run.clone();
        }
        actix_web::rt::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("the run never ended");
}

#[actix_web::test]
async fn the_cli_runs_in_the_workdir_in_chats_and_scheduled_runs() {
    let app = TestApp::spawn(where_rules()).await;
    let users = tempfile::tempdir().unwrap();
    let workdir = users.path().join("project");
    std::fs::create_dir_all(&workdir).unwrap();
    let made = create(
        &app,
        json!({"name": "bot", "permissionMode": "allow-all", "workdir": at_str(&workdir)}),
    )
    .await;
    assert_eq!(made.status, 201, "{}", made.body);

    let (status, events) = app.chat(json!({"agentName": "bot", "message": "where are you"})).await;
    assert_eq!(status, 200);
    assert!(events.iter().any(|e| e["type"] == "result"), "{events:?}");
    assert_eq!(
        std::fs::read_to_string(workdir.join("where.txt")).unwrap().trim(),
        real(&workdir),
        "the chat's CLI ran in the workdir"
    );
    assert!(!app.dir.path().join("data/workspaces/bot/where.txt").exists());
    std::fs::remove_file(workdir.join("where.txt")).unwrap();

    let task = app
        .call(
            "POST",
            "/api/agents/bot/tasks",
            Some(json!({"prompt": "where are you", "scheduleType": "cron", "scheduleValue": "0 0 1 1 *", "contextMode": "isolated"})),
        )
        .await;
    assert_eq!(task.status, 201, "{}", task.body);
    let task = task.body["task"]["id"].as_str().unwrap().to_owned();
    let started = app.call("POST", &format!("/api/agents/bot/tasks/{task}/run"), None).await;
    assert_eq!(started.status, 202, "{}", started.body);
    let run = finished_run(&app, "bot", &task).await;
    assert_eq!(run["status"], "success", "{run}");
    assert_eq!(
        std::fs::read_to_string(workdir.join("where.txt")).unwrap().trim(),
        real(&workdir),
        "the scheduled run's CLI ran in the workdir"
    );

    // A workdir outside any repository can have no worktree, and says so.
    let refused =
        app.call("POST", "/api/agents/bot/sessions", Some(json!({"worktree": true}))).await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(refused.body["error"].as_str().unwrap().contains("not inside a git repository"));
    let refused_task = app
        .call(
            "POST",
            "/api/agents/bot/tasks",
            Some(json!({"prompt": "p", "scheduleType": "cron", "scheduleValue": "0 0 1 1 *", "contextMode": "isolated", "worktree": true})),
        )
        .await;
    assert_eq!(refused_task.status, 400, "{}", refused_task.body);
    assert_eq!(
        std::fs::read_dir(&workdir).unwrap().count(),
        1,
        "nothing but the agent's own file was made there"
    );
}

#[actix_web::test]
async fn worktrees_go_in_the_users_repository_and_leave_it_as_it_was() {
    let app = TestApp::spawn(where_rules()).await;
    let users = tempfile::tempdir().unwrap();
    let repo = user_repo(users.path());
    let before = repo_state(&repo);
    let made = create(
        &app,
        json!({"name": "bot", "permissionMode": "allow-all", "workdir": at_str(&repo)}),
    )
    .await;
    assert_eq!(made.status, 201, "{}", made.body);

    // The user's own branches cannot be a worktree's new branch.
    let taken = app
        .call(
            "POST",
            "/api/agents/bot/sessions",
            Some(json!({"worktree": true, "branch": "users-feature"})),
        )
        .await;
    assert_eq!(taken.status, 409, "{}", taken.body);

    let session = app
        .call(
            "POST",
            "/api/agents/bot/sessions",
            Some(json!({"worktree": true, "branch": "orbit/try"})),
        )
        .await;
    assert_eq!(session.status, 201, "{}", session.body);
    let session = session.body["session"]["id"].as_str().unwrap().to_owned();
    let tree = repo.canonicalize().unwrap().join(".orbit/worktrees/bot").join(&session);
    assert!(tree.join("README").is_file(), "a checkout of the user's repository");
    let (status, _) = app
        .chat(json!({"agentName": "bot", "sessionId": session, "message": "where are you"}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(std::fs::read_to_string(tree.join("where.txt")).unwrap().trim(), real(&tree));
    assert!(!repo.join("where.txt").exists(), "the user's checkout was not written");

    let listed = app.call("GET", "/api/agents/bot/worktrees", None).await.body;
    assert_eq!(listed["worktrees"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed["worktrees"][0]["branch"], "orbit/try");
    assert_eq!(listed["worktrees"][0]["sessionId"], session.as_str());
    let (refs, status, head) = repo_state(&repo);
    assert_eq!(status, before.1, "git ignores Orbit's folder: the user's status is unchanged");
    assert_eq!(head, before.2, "the user's checkout stays on its branch");
    let users_refs: Vec<&str> = refs.lines().filter(|r| !r.contains("orbit/try")).collect();
    assert_eq!(
        users_refs,
        before.0.lines().collect::<Vec<_>>(),
        "the user's branches as they were"
    );
    assert_eq!(
        std::fs::read_to_string(repo.join(".orbit/.gitignore")).unwrap().lines().last(),
        Some("*")
    );

    // A new workdir while the agent has worktrees in this one is refused.
    let moved =
        app.call("PUT", "/api/agents/bot", Some(json!({"workdir": at_str(users.path())}))).await;
    assert_eq!(moved.status, 409, "{}", moved.body);

    // A task's runs work in a worktree of the user's repository too, on a branch of Orbit's.
    let task = app
        .call(
            "POST",
            "/api/agents/bot/tasks",
            Some(json!({"prompt": "where are you", "scheduleType": "cron", "scheduleValue": "0 0 1 1 *", "contextMode": "isolated", "worktree": true})),
        )
        .await;
    assert_eq!(task.status, 201, "{}", task.body);
    let task = task.body["task"]["id"].as_str().unwrap().to_owned();
    let started = app.call("POST", &format!("/api/agents/bot/tasks/{task}/run"), None).await;
    assert_eq!(started.status, 202, "{}", started.body);
    let run = finished_run(&app, "bot", &task).await;
    assert_eq!(run["status"], "success", "{run}");
    let task_tree = repo.canonicalize().unwrap().join(".orbit/worktrees/bot").join(&task);
    assert_eq!(
        std::fs::read_to_string(task_tree.join("where.txt")).unwrap().trim(),
        real(&task_tree)
    );
    let listed = app.call("GET", "/api/agents/bot/worktrees", None).await.body;
    let task_entry = listed["worktrees"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["taskId"] == task.as_str())
        .cloned()
        .unwrap();
    assert_eq!(task_entry["branch"], format!("orbit/{task}").as_str());
    assert_eq!(git(&repo, &["status", "--porcelain"]), before.1);
    let deleted = app.call("DELETE", &format!("/api/agents/bot/tasks/{task}"), None).await;
    assert_eq!(deleted.body["worktreeKept"]["id"], task.as_str(), "{}", deleted.body);
    let forced =
        app.call("DELETE", &format!("/api/agents/bot/worktrees/{task}?force=true"), None).await;
    assert_eq!(forced.status, 200, "{}", forced.body);

    // The session goes; its worktree holds the agent's uncommitted file, so it is kept until
    // a person forces it.
    let deleted = app.call("DELETE", &format!("/api/agents/bot/sessions/{session}"), None).await;
    assert_eq!(deleted.body["worktreeKept"]["id"], session.as_str(), "{}", deleted.body);
    let forced =
        app.call("DELETE", &format!("/api/agents/bot/worktrees/{session}?force=true"), None).await;
    assert_eq!(forced.status, 200, "{}", forced.body);
    assert!(!tree.exists());
    assert_eq!(repo_state(&repo), before, "Orbit's branch went with its worktree, nothing else");
    assert_eq!(std::fs::read_to_string(repo.join("notes.txt")).unwrap(), "untracked, the user's\n");
}

#[actix_web::test]
async fn deleting_an_agent_leaves_its_workdir_as_it_was() {
    let app = TestApp::spawn(where_rules()).await;
    let users = tempfile::tempdir().unwrap();
    let repo = user_repo(users.path());
    let made = create(
        &app,
        json!({"name": "bot", "permissionMode": "allow-all", "workdir": at_str(&repo)}),
    )
    .await;
    assert_eq!(made.status, 201, "{}", made.body);
    let (status, _) = app.chat(json!({"agentName": "bot", "message": "where are you"})).await;
    assert_eq!(status, 200);
    let session = app
        .call(
            "POST",
            "/api/agents/bot/sessions",
            Some(json!({"worktree": true, "branch": "orbit/kept"})),
        )
        .await;
    assert_eq!(session.status, 201, "{}", session.body);
    let before = repo_state(&repo);
    let files = |dir: &Path| -> Vec<(String, String)> {
        let mut all: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .map(|p| (p.display().to_string(), std::fs::read_to_string(&p).unwrap()))
            .collect();
        all.sort();
        all
    };
    let files_before = files(&repo);
    assert!(files_before.iter().any(|(p, _)| p.ends_with("where.txt")), "the agent worked there");

    let deleted = app.call("DELETE", "/api/agents/bot", None).await;
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    assert_eq!(files(&repo), files_before, "every file of the workdir is as it was");
    assert_eq!(repo_state(&repo), before, "its branches, status and checkout too");
    assert_eq!(git(&repo, &["log", "--oneline"]).lines().count(), 1, "no commit was made");
}

/// Makes agent `name` working in `workdir` and a session of it in a worktree; returns the
/// session's id.
async fn agent_with_worktree_session(app: &TestApp, name: &str, workdir: &Path) -> String {
    let made = create(app, json!({"name": name, "workdir": at_str(workdir)})).await;
    assert_eq!(made.status, 201, "{}", made.body);
    let session = app
        .call("POST", &format!("/api/agents/{name}/sessions"), Some(json!({"worktree": true})))
        .await;
    assert_eq!(session.status, 201, "{}", session.body);
    session.body["session"]["id"].as_str().unwrap().to_owned()
}

#[actix_web::test]
async fn agents_in_one_repository_see_and_remove_only_their_own_worktrees() {
    let app = TestApp::spawn(vec![]).await;
    let users = tempfile::tempdir().unwrap();
    let repo = user_repo(users.path());
    let made = create(&app, json!({"name": "a", "workdir": at_str(&repo)})).await;
    assert_eq!(made.status, 201, "{}", made.body);
    let theirs = agent_with_worktree_session(&app, "b", &repo).await;
    let listed = app.call("GET", "/api/agents/b/worktrees", None).await.body;
    let tree = PathBuf::from(listed["worktrees"][0]["path"].as_str().unwrap());
    std::fs::write(tree.join("wip.txt"), "b's uncommitted work").unwrap();

    let listed = app.call("GET", "/api/agents/a/worktrees", None).await;
    assert_eq!(listed.body["worktrees"], json!([]), "b's worktree is not a's: {}", listed.body);
    let removed =
        app.call("DELETE", &format!("/api/agents/a/worktrees/{theirs}?force=true"), None).await;
    assert_eq!(removed.status, 404, "{}", removed.body);
    assert_eq!(std::fs::read_to_string(tree.join("wip.txt")).unwrap(), "b's uncommitted work");
    assert!(git(&repo, &["branch", "--list", &format!("orbit/{theirs}")]).contains(&theirs));
    let listed = app.call("GET", "/api/agents/b/worktrees", None).await.body;
    assert_eq!(listed["worktrees"][0]["sessionId"], theirs.as_str(), "{listed}");

    // b's worktrees do not hold a's workdir in place.
    let elsewhere = users.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let moved =
        app.call("PUT", "/api/agents/a", Some(json!({"workdir": at_str(&elsewhere)}))).await;
    assert_eq!(moved.status, 200, "{}", moved.body);
}

#[actix_web::test]
async fn the_branch_deleted_with_a_worktree_is_the_one_orbit_recorded_not_a_note_in_the_tree() {
    let app = TestApp::spawn(vec![]).await;
    let users = tempfile::tempdir().unwrap();
    let repo = user_repo(users.path());
    let main = git(&repo, &["rev-parse", "main"]).trim().to_owned();
    let first = agent_with_worktree_session(&app, "b", &repo).await;
    let second = app.call("POST", "/api/agents/b/sessions", Some(json!({"worktree": true}))).await;
    let second = second.body["session"]["id"].as_str().unwrap().to_owned();

    // What an agent's tools can write in the user's tree: notes naming the user's branch, or
    // a name git would read as an option.
    let notes = repo.join(".orbit/branches");
    std::fs::create_dir_all(&notes).unwrap();
    std::fs::write(notes.join(&first), format!("main\n{main}\n")).unwrap();
    std::fs::write(notes.join(&second), "--bad\nHEAD\n").unwrap();

    for session in [&first, &second] {
        let deleted = app.call("DELETE", &format!("/api/agents/b/sessions/{session}"), None).await;
        assert_eq!(deleted.status, 200, "{session}: {}", deleted.body);
        assert!(deleted.body.get("worktreeKept").is_none(), "{}", deleted.body);
    }
    let branches = git(&repo, &["for-each-ref", "--format=%(refname:short)", "refs/heads/"]);
    assert_eq!(branches, "main\nusers-feature\n", "main stays; Orbit's own branches went");
    assert_eq!(git(&repo, &["rev-parse", "main"]).trim(), main);
}

#[actix_web::test]
async fn symlinks_in_orbits_folder_are_not_followed_out_of_the_repository() {
    let app = TestApp::spawn(vec![]).await;
    let users = tempfile::tempdir().unwrap();
    let repo = user_repo(users.path());
    let outside = users.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let made = create(&app, json!({"name": "bot", "workdir": at_str(&repo)})).await;
    assert_eq!(made.status, 201, "{}", made.body);
    let session = || app.call("POST", "/api/agents/bot/sessions", Some(json!({"worktree": true})));

    // A dangling `.orbit/.gitignore` would make its target outside.
    std::fs::create_dir_all(repo.join(".orbit")).unwrap();
    std::os::unix::fs::symlink(outside.join("made.txt"), repo.join(".orbit/.gitignore")).unwrap();
    let refused = session().await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(!outside.join("made.txt").exists(), "nothing was written through the symlink");
    std::fs::remove_file(repo.join(".orbit/.gitignore")).unwrap();

    // `.orbit/worktrees` leading outside would put the worktree (and the CLI) there.
    std::os::unix::fs::symlink(&outside, repo.join(".orbit/worktrees")).unwrap();
    let refused = session().await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0, "no worktree outside");
    std::fs::remove_file(repo.join(".orbit/worktrees")).unwrap();

    // The agent's own folder of worktrees, too.
    std::fs::create_dir_all(repo.join(".orbit/worktrees")).unwrap();
    std::os::unix::fs::symlink(&outside, repo.join(".orbit/worktrees/bot")).unwrap();
    let refused = session().await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0, "no worktree outside");
    std::fs::remove_file(repo.join(".orbit/worktrees/bot")).unwrap();

    // `.orbit/branches` leading elsewhere gets nothing: Orbit keeps its notes in its own
    // data directory.
    std::os::unix::fs::symlink(&outside, repo.join(".orbit/branches")).unwrap();
    let made = session().await;
    assert_eq!(made.status, 201, "{}", made.body);
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0, "no note outside");
    let worktree_id = made.body["session"]["worktreeId"].as_str().unwrap().to_owned();
    let cwd = repo.canonicalize().unwrap().join(".orbit/worktrees/bot").join(&worktree_id);
    assert!(cwd.join("README").is_file());

    // Swapped for a symlink after the worktree was made, the folder is not used.
    let moved_away = users.path().join("moved-away");
    std::fs::rename(repo.join(".orbit/worktrees/bot"), &moved_away).unwrap();
    std::fs::create_dir_all(outside.join(&worktree_id)).unwrap();
    std::os::unix::fs::symlink(&outside, repo.join(".orbit/worktrees/bot")).unwrap();
    std::fs::write(outside.join(&worktree_id).join("keep.txt"), "not Orbit's").unwrap();
    let deleted =
        app.call("DELETE", &format!("/api/agents/bot/sessions/{worktree_id}"), None).await;
    assert_eq!(deleted.status, 200, "the session is gone all the same: {}", deleted.body);
    assert!(outside.join(&worktree_id).join("keep.txt").is_file(), "nothing outside removed");
    assert!(moved_away.join(&worktree_id).join("README").is_file());
}

#[actix_web::test]
async fn no_worktree_is_made_in_the_servers_data_directory() {
    let home = tempfile::tempdir().unwrap();
    let repo = user_repo(home.path());
    let data = repo.join(".orbit");
    let app = TestApp::spawn_configured(vec![], None, |settings| {
        settings.data_dir = Some(data.clone());
    })
    .await;
    std::fs::create_dir_all(repo.join("src")).unwrap();
    let made = create(&app, json!({"name": "bot", "workdir": at_str(&repo.join("src"))})).await;
    assert_eq!(made.status, 201, "{}", made.body);
    let refused =
        app.call("POST", "/api/agents/bot/sessions", Some(json!({"worktree": true}))).await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(refused.body["error"].as_str().unwrap().contains("data directory"), "{}", refused.body);
    assert!(!data.join("worktrees").exists(), "no worktree among Orbit's records");
    assert!(!data.join(".gitignore").exists());
}

#[actix_web::test]
async fn a_workdir_that_cannot_be_read_now_still_keeps_its_worktrees_agent_in_place() {
    let app = TestApp::spawn(vec![]).await;
    let users = tempfile::tempdir().unwrap();
    let repo = user_repo(users.path());
    std::fs::create_dir_all(repo.join("sub")).unwrap();
    let session = agent_with_worktree_session(&app, "bot", &repo.join("sub")).await;
    // The workdir goes (the worktree and its repository stay): the directory cannot be
    // read for worktrees, but Orbit's records still know the session has one.
    std::fs::remove_dir(repo.join("sub")).unwrap();
    let elsewhere = users.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let moved =
        app.call("PUT", "/api/agents/bot", Some(json!({"workdir": at_str(&elsewhere)}))).await;
    assert_eq!(moved.status, 409, "{}", moved.body);
    assert!(moved.body["error"].as_str().unwrap().contains(&session), "{}", moved.body);

    // Once the session is deleted (its worktree left where it is, logged) the change goes.
    let deleted = app.call("DELETE", &format!("/api/agents/bot/sessions/{session}"), None).await;
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    let moved =
        app.call("PUT", "/api/agents/bot", Some(json!({"workdir": at_str(&elsewhere)}))).await;
    assert_eq!(moved.status, 200, "{}", moved.body);
}
