//! The session journal as several processes see it: each `FsStore` below has its own
//! replayed copy, as a separate server process on the same data directory would.

use orbit_store::{AgentName, FsStore, NewAgent, NewSession, SessionPatch};

fn ids(sessions: Vec<orbit_store::Session>) -> Vec<orbit_store::SessionId> {
    sessions.into_iter().map(|s| s.id).collect()
}

/// Another process deletes the agent and makes a new one of the same name, whose journal
/// (on ext4, often under the freed inode) grows past the old one: this process lists the new
/// sessions only, and an update of an old session does not bring it back.
#[tokio::test]
async fn a_journal_replaced_by_another_process_is_replayed_afresh() {
    let dir = tempfile::tempdir().unwrap();
    let here = FsStore::open(dir.path()).unwrap().stores();
    let there = FsStore::open(dir.path()).unwrap().stores();
    let bot = AgentName::parse("bot").unwrap();
    for round in 0..5 {
        here.agents.create(&bot, NewAgent::default()).await.unwrap();
        let old = here.sessions.create(&bot, NewSession::default()).await.unwrap();
        assert_eq!(ids(here.sessions.list_by_agent(&bot).await.unwrap()), vec![old.id]);

        there.agents.delete(&bot).await.unwrap();
        there.agents.create(&bot, NewAgent::default()).await.unwrap();
        let mut new = Vec::new();
        for _ in 0..3 {
            new.push(there.sessions.create(&bot, NewSession::default()).await.unwrap().id);
        }
        new.reverse();
        assert_eq!(ids(here.sessions.list_by_agent(&bot).await.unwrap()), new, "round {round}");
        let patch = SessionPatch { title: Some("back?".into()), ..SessionPatch::default() };
        let err = here.sessions.update(&bot, &old.id, patch).await.unwrap_err();
        assert_eq!(err.kind(), orbit_store::ErrorKind::NotFound, "round {round}");
        assert_eq!(ids(there.sessions.list_by_agent(&bot).await.unwrap()), new, "round {round}");
        here.agents.delete(&bot).await.unwrap();
    }
}

/// Updates of a large record cannot grow the journal without bound: it is compacted by bytes
/// as well as by lines.
#[tokio::test]
async fn large_records_updated_often_keep_the_journal_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let stores = FsStore::open(dir.path()).unwrap().stores();
    let bot = AgentName::parse("bot").unwrap();
    stores.agents.create(&bot, NewAgent::default()).await.unwrap();
    let title = "t".repeat(256 * 1024);
    let session = stores
        .sessions
        .create(&bot, NewSession { title: Some(title), ..NewSession::default() })
        .await
        .unwrap();
    let journal = dir.path().join("agents/bot/sessions.jsonl");
    let mut largest = 0;
    for index in 0..100 {
        let patch =
            SessionPatch { model: Some(format!("model-{index}")), ..SessionPatch::default() };
        stores.sessions.update(&bot, &session.id, patch).await.unwrap();
        largest = largest.max(std::fs::metadata(&journal).unwrap().len());
    }
    // 100 updates of a 256 KiB record would be 25 MiB unbounded.
    assert!(largest < 6 * 1024 * 1024, "the journal reached {largest} bytes");
    let reopened = FsStore::open(dir.path()).unwrap().stores();
    let listed = reopened.sessions.get(&bot, &session.id).await.unwrap();
    assert_eq!(listed.model.as_deref(), Some("model-99"));
}

fn render(session: &orbit_store::Session) -> Vec<u8> {
    serde_json::to_vec(session).unwrap()
}

/// The renderings a process keeps of its listed sessions follow what other processes write:
/// an update, a deletion and a new session there show in the next rendered listing here.
#[tokio::test]
async fn rendered_sessions_follow_other_processes_writes() {
    let dir = tempfile::tempdir().unwrap();
    let here = FsStore::open(dir.path()).unwrap().stores();
    let there = FsStore::open(dir.path()).unwrap().stores();
    let bot = AgentName::parse("bot").unwrap();
    here.agents.create(&bot, NewAgent::default()).await.unwrap();
    let mut made = Vec::new();
    for _ in 0..3 {
        made.push(here.sessions.create(&bot, NewSession::default()).await.unwrap().id);
    }
    for step in 0..4 {
        // Listed (and so rendered) here before each change there.
        let listing = orbit_store::render::Listing { open: "[", render, close: "]" };
        let rendered = here.sessions.list_rendered(&bot, listing).await.unwrap();
        let listed = there.sessions.list_by_agent(&bot).await.unwrap();
        assert_eq!(rendered, listing.write(&listed), "step {step}");
        match step {
            0 => {
                let patch =
                    SessionPatch { title: Some("renamed there".into()), ..SessionPatch::default() };
                there.sessions.update(&bot, &made[1], patch).await.unwrap();
            }
            1 => there.sessions.delete(&bot, &made[0]).await.unwrap(),
            2 => drop(there.sessions.create(&bot, NewSession::default()).await.unwrap()),
            _ => {}
        }
    }
}
