//! Git worktrees: made, used as the turn's cwd, removed; hostile branch names refused.

use orbit_agent::{Error, worktree};
use orbit_store::NewSession;
use orbit_testkit::Rule;

use crate::harness::{Harness, text};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_in_its_own_worktree_runs_there() {
    let h = Harness::new(vec![Rule::always(text("ok"))]).await;
    let base = h.workspace().await;
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
    let base = tempfile::tempdir().unwrap();
    for branch in ["--upload-pack=x", "../x", "-b", "a..b", "has space", "x~1", ""] {
        let err =
            worktree::create(base.path(), &orbit_store::SessionId::new().to_string(), Some(branch))
                .await
                .unwrap_err();
        assert!(matches!(err, Error::Invalid(_)), "{branch:?}: {err}");
    }
    let err = worktree::create(base.path(), "../escape", None).await.unwrap_err();
    assert!(matches!(err, Error::Invalid(_)));
    assert!(!base.path().join(".git").exists(), "nothing was touched");
}
