//! Git worktrees: made, used as the turn's cwd, removed; hostile branch names refused.

use orbit_agent::{Error, worktree};
use orbit_store::NewSession;
use orbit_testkit::Rule;

use crate::harness::{Harness, text};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_in_its_own_worktree_runs_there() {
    let h = Harness::new(vec![Rule::always(text("ok"))]).await;
    let base = h.working_dir().await;
    let id = orbit_store::SessionId::new();
    let made = worktree::create(&base, &id.to_string(), Some("feature/x")).await.unwrap();
    assert!(made.path.join(".git").exists());
    let session = h
        .stores
        .sessions
        .create(&h.agent, NewSession { worktree_id: Some(id.to_string()), ..NewSession::default() })
        .await
        .unwrap()
        .id;
    let (outcome, events) = h.chat(&session, "where am I").await;
    outcome.unwrap();
    let init = events.iter().find(|e| e["subtype"] == "init").unwrap();
    assert_eq!(
        std::path::Path::new(init["cwd"].as_str().unwrap()).canonicalize().unwrap(),
        made.path.canonicalize().unwrap()
    );
    let listed = worktree::list(&base).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].id.as_str(), listed[0].branch.as_deref()),
        (id.to_string().as_str(), Some("feature/x"))
    );

    std::fs::write(made.path.join("wip.txt"), "unsaved work").unwrap();
    assert!(matches!(worktree::remove(&base, &id.to_string()).await, Err(Error::WorktreeDirty(_))));
    assert!(made.path.join("wip.txt").exists(), "a dirty worktree is kept");
    std::fs::remove_file(made.path.join("wip.txt")).unwrap();
    worktree::remove(&base, &id.to_string()).await.unwrap();
    assert!(!made.path.exists());
    assert!(worktree::list(&base).await.unwrap().is_empty());
}

#[tokio::test]
async fn hostile_branch_names_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let base = orbit_store::WorkingDir::Workspace(dir.path().to_path_buf());
    for branch in ["--upload-pack=x", "../x", "-b", "a..b", "has space", "x~1", ""] {
        let err = worktree::create(&base, &orbit_store::SessionId::new().to_string(), Some(branch))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Invalid(_)), "{branch:?}: {err}");
    }
    let err = worktree::create(&base, "../escape", None).await.unwrap_err();
    assert!(matches!(err, Error::Invalid(_)));
    assert!(!dir.path().join(".git").exists(), "nothing was touched");
}

/// A task's deletion removes its worktree whoever deletes it: the API and an agent's
/// `cancel_task` go through the same workflow (they had drifted: the tool left it behind).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_task_removes_its_worktree_and_keeps_a_dirty_one() {
    use orbit_agent::workflow;
    let h = Harness::new(vec![]).await;
    let base = h.working_dir().await;
    let request = |worktree: bool| workflow::TaskRequest {
        name: None,
        prompt: "tidy up".into(),
        schedule_type: orbit_store::ScheduleType::Cron,
        schedule_value: "0 9 * * *".into(),
        context_mode: orbit_store::ContextMode::Isolated,
        timezone: None,
        worktree,
        branch: worktree.then(|| "tidy".to_owned()),
    };
    let clean = workflow::create_task(&h.stores, &h.agent, request(true), "local").await.unwrap();
    let made =
        worktree::create(&base, &clean.id.to_string(), clean.branch.as_deref()).await.unwrap();
    assert_eq!(workflow::delete_task(&h.stores, &h.agent, &clean.id, "local").await.unwrap(), None);
    assert!(!made.path.exists(), "the task's worktree went with it");

    let mut dirty_request = request(true);
    dirty_request.branch = Some("tidy-2".into());
    let dirty = workflow::create_task(&h.stores, &h.agent, dirty_request, "local").await.unwrap();
    let made =
        worktree::create(&base, &dirty.id.to_string(), dirty.branch.as_deref()).await.unwrap();
    std::fs::write(made.path.join("wip.txt"), "unsaved").unwrap();
    let kept = workflow::delete_task(&h.stores, &h.agent, &dirty.id, "local").await.unwrap();
    assert_eq!(kept.map(|k| k.id), Some(dirty.id.to_string()));
    assert!(made.path.join("wip.txt").exists(), "uncommitted work is kept");

    let mut main_worktree = request(true);
    main_worktree.context_mode = orbit_store::ContextMode::Main;
    let refused =
        workflow::create_task(&h.stores, &h.agent, main_worktree, "local").await.unwrap_err();
    assert!(matches!(refused, Error::Invalid(_)), "{refused}");
    let mut past = request(false);
    past.schedule_type = orbit_store::ScheduleType::Once;
    past.schedule_value = "2020-01-01T00:00:00Z".into();
    assert!(
        workflow::create_task(&h.stores, &h.agent, past, "local")
            .await
            .unwrap_err()
            .to_string()
            .contains("never fires")
    );
}
