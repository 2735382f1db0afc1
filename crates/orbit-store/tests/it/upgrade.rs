//! A data directory written by an older Orbit opens with nothing lost.

use orbit_store::{AgentName, FsStore, MessageStatus, NewAgent};

/// Pending and claimed messages of the older inbox layout are moved into `open/`, the
/// claims given back (their holders were an older server's processes).
#[tokio::test]
async fn inbox_messages_of_the_older_layout_survive_an_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let bot = AgentName::parse("bot").unwrap();
    let (waiting, held) = {
        let stores = FsStore::open(dir.path()).unwrap().stores();
        stores.agents.create(&bot, NewAgent::default()).await.unwrap();
        let send = |text: &str| orbit_store::NewMessage {
            from_agent: bot.clone().into(),
            to_agent: bot.clone(),
            message: text.into(),
            message_type: orbit_store::MessageType::Request,
            request_id: None,
        };
        let sent = (
            stores.inbox.send(send("waiting")).await.unwrap(),
            stores.inbox.send(send("held")).await.unwrap(),
        );
        // A read makes the messages sent files of `open/` (see `fs::arrivals`).
        assert_eq!(stores.inbox.get_pending(&bot).await.unwrap().len(), 2);
        sent
    };
    // Lay the messages out as the older server did.
    let inbox = dir.path().join("agents/bot/inbox");
    std::fs::create_dir_all(inbox.join("pending")).unwrap();
    std::fs::create_dir_all(inbox.join("claimed")).unwrap();
    std::fs::rename(
        inbox.join(format!("open/{}.json", waiting.id)),
        inbox.join(format!("pending/{}.json", waiting.id)),
    )
    .unwrap();
    let mut claimed: serde_json::Value = serde_json::from_slice(
        &std::fs::read(inbox.join(format!("open/{}.json", held.id))).unwrap(),
    )
    .unwrap();
    claimed["claimedBy"] = serde_json::json!(orbit_store::SessionId::new());
    claimed["deliveries"] = serde_json::json!(1);
    std::fs::write(
        inbox.join(format!("claimed/{}.01JD0000000000000000000000.4242.json", held.id)),
        serde_json::to_vec(&claimed).unwrap(),
    )
    .unwrap();
    std::fs::remove_file(inbox.join(format!("open/{}.json", held.id))).unwrap();

    let stores = FsStore::open(dir.path()).unwrap().stores();
    let pending = stores.inbox.get_pending(&bot).await.unwrap();
    let ids: Vec<_> = pending.iter().map(|m| m.id).collect();
    assert_eq!(ids, vec![waiting.id, held.id]);
    assert!(pending.iter().all(|m| m.status == MessageStatus::Pending && m.claimed_by.is_none()));
    assert_eq!(pending[1].deliveries, 1);
    assert_eq!(stores.inbox.get_unclaimed(&bot).await.unwrap().len(), 2, "both can be claimed");
    assert!(!inbox.join("pending").exists() && !inbox.join("claimed").exists());
}
