//! The contract of agents: their lifecycle and working directory, the one main session, and
//! a deletion that takes everything of the agent with it, racing writes included.

use std::time::Duration;

use super::{agent, interval_task, name, request};
use crate::{
    AgentPatch, AgentStatus, ErrorKind, NewAgent, NewSession, PermissionMode, SessionId, Stores,
};

/// Create, get, list, ensure, update, touch and delete agents.
pub async fn agents_lifecycle(stores: &Stores) {
    let bot = name("bot-a");
    let created = stores
        .agents
        .create(
            &bot,
            NewAgent {
                model: Some("m1".into()),
                permission_mode: Some(PermissionMode::Ask),
                ..NewAgent::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(created.permission_mode, PermissionMode::Ask);
    assert_eq!(created.status, AgentStatus::Active);
    assert_eq!(stores.agents.get(&bot).await.unwrap(), created);
    let again = stores.agents.create(&bot, NewAgent::default()).await.unwrap_err();
    assert_eq!(again.kind(), ErrorKind::Conflict);

    let other = name("bot-b");
    assert_eq!(stores.agents.get(&other).await.unwrap_err().kind(), ErrorKind::NotFound);
    let ensured = stores.agents.ensure(&other).await.unwrap();
    assert_eq!(ensured.permission_mode, PermissionMode::Safe);
    assert_eq!(stores.agents.ensure(&other).await.unwrap(), ensured);
    let names: Vec<_> = stores.agents.list().await.unwrap().into_iter().map(|a| a.name).collect();
    assert_eq!(names, vec![bot.clone(), other.clone()]);

    let updated = stores
        .agents
        .update(&bot, AgentPatch { status: Some(AgentStatus::Inactive), ..AgentPatch::default() })
        .await
        .unwrap();
    assert_eq!(updated.status, AgentStatus::Inactive);
    assert_eq!(updated.model.as_deref(), Some("m1"), "a patch leaves other fields alone");
    stores.agents.update_last_active(&bot).await.unwrap();
    assert!(stores.agents.get(&bot).await.unwrap().last_active_at >= created.last_active_at);

    let dir = stores.agents.working_dir(&bot).await.unwrap();
    assert!(matches!(&dir, crate::WorkingDir::Workspace(path) if path.is_dir()), "{dir:?}");

    // A workdir is the user's: used as it is, never made, never removed with the agent.
    let users = std::env::temp_dir().join(format!("orbit-contract-{}", crate::new_ulid()));
    std::fs::create_dir_all(&users).unwrap();
    std::fs::write(users.join("keep.txt"), "mine").unwrap();
    let workdir = crate::Workdir { path: users.clone(), root: None };
    let patch = AgentPatch { workdir: Some(Some(workdir.clone())), ..AgentPatch::default() };
    assert_eq!(stores.agents.update(&bot, patch).await.unwrap().workdir, Some(workdir.clone()));
    let dir = stores.agents.working_dir(&bot).await.unwrap();
    assert!(
        matches!(&dir, crate::WorkingDir::User(given, owner) if *given == workdir && owner.agent == bot),
        "{dir:?}"
    );
    let gone = crate::Workdir { path: users.join("gone"), root: None };
    let patch = AgentPatch { workdir: Some(Some(gone)), ..AgentPatch::default() };
    stores.agents.update(&bot, patch).await.unwrap();
    let err = stores.agents.working_dir(&bot).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid);
    assert!(!users.join("gone").exists(), "a missing workdir is not made");
    // A workdir that now leads outside the root it was accepted under is refused at use.
    let root = users.canonicalize().unwrap().join("root");
    std::fs::create_dir_all(root.join("inside")).unwrap();
    let rooted = crate::Workdir { path: root.join("inside"), root: Some(root.clone()) };
    let patch = AgentPatch { workdir: Some(Some(rooted.clone())), ..AgentPatch::default() };
    stores.agents.update(&bot, patch).await.unwrap();
    let dir = stores.agents.working_dir(&bot).await.unwrap();
    assert!(matches!(&dir, crate::WorkingDir::User(given, _) if *given == rooted), "{dir:?}");
    std::fs::remove_dir(root.join("inside")).unwrap();
    std::os::unix::fs::symlink(&users, root.join("inside")).unwrap();
    let err = stores.agents.working_dir(&bot).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid);
    assert!(err.to_string().contains("outside the workdir root"), "{err}");
    std::fs::remove_file(root.join("inside")).unwrap();
    std::fs::remove_dir(&root).unwrap();

    let patch = AgentPatch { workdir: Some(Some(workdir)), ..AgentPatch::default() };
    stores.agents.update(&bot, patch).await.unwrap();
    stores.agents.delete(&bot).await.unwrap();
    assert_eq!(std::fs::read_to_string(users.join("keep.txt")).unwrap(), "mine");
    std::fs::remove_dir_all(&users).unwrap();
    let bot_again = stores.agents.create(&bot, NewAgent::default()).await.unwrap();
    assert_eq!(bot_again.workdir, None, "nothing of the old agent reaches a new one");
    stores.agents.delete(&bot).await.unwrap();
    assert_eq!(stores.agents.get(&bot).await.unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(stores.agents.delete(&bot).await.unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(stores.agents.list().await.unwrap().len(), 1);
}

/// Two callers racing to make the agent's first main session agree on one.
pub async fn main_session_is_chosen_once(stores: &Stores) {
    let a = agent(stores, "a").await;
    let (one, two) = (SessionId::new(), SessionId::new());
    let (x, y) = tokio::join!(
        stores.agents.claim_main_session(&a, one, None),
        stores.agents.claim_main_session(&a, two, None)
    );
    let winner = x.unwrap();
    assert_eq!(winner, y.unwrap());
    assert!(winner == one || winner == two);
    assert_eq!(stores.agents.get(&a).await.unwrap().main_session_id, Some(winner));
    let replaced = stores.agents.claim_main_session(&a, two, Some(winner)).await.unwrap();
    assert_eq!(replaced, two, "a stale main session is replaced");
}

/// A deleted agent's sessions, inbox and tasks never reach a new agent of the same name, and
/// writes racing the deletion either land before it or fail.
pub async fn deleted_agent_leaves_nothing(stores: &Stores) {
    let a = agent(stores, "a").await;
    stores.sessions.create(&a, NewSession::default()).await.unwrap();
    stores.inbox.send(request(&a, &a, "old")).await.unwrap();
    stores.tasks.create(&a, interval_task("old")).await.unwrap();
    let mut writers = Vec::new();
    for _ in 0..8 {
        let sessions = stores.sessions.clone();
        let a = a.clone();
        writers.push(tokio::spawn(async move {
            let mut made = 0;
            while sessions.create(&a, NewSession::default()).await.is_ok() {
                made += 1;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            made
        }));
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    stores.agents.delete(&a).await.unwrap();
    for writer in writers {
        writer.await.unwrap();
    }
    assert_eq!(stores.agents.get(&a).await.unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(
        stores.sessions.create(&a, NewSession::default()).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    let again = agent(stores, "a").await;
    assert!(stores.sessions.list_by_agent(&again).await.unwrap().is_empty());
    assert!(stores.inbox.get_pending(&again).await.unwrap().is_empty());
    assert!(stores.tasks.list_by_agent(&again).await.unwrap().is_empty());
    assert!(stores.tasks.list_all().await.unwrap().is_empty());
}
