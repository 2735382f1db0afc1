//! The contract of shared approvals: a store either shares none (`shared_approvals` answers
//! `None`, whatever was shared) or lists exactly the calls shared by live instances and not
//! withdrawn, oldest first.

use crate::{
    AgentName, InstanceId, NewAgent, NewSession, PendingApproval, SessionId, Stores, new_ulid,
    timestamp,
};

fn waiting(agent: &AgentName, session: SessionId, instance: InstanceId) -> PendingApproval {
    let created_at = timestamp::now();
    PendingApproval {
        request_id: new_ulid().to_string(),
        agent: agent.clone(),
        session,
        run: None,
        tool_name: "Bash".into(),
        input: serde_json::json!({"command": "echo hi", "description": "says hi"}),
        tool_use_id: "toolu_01".into(),
        created_at,
        expires_at: created_at + time::Duration::seconds(60),
        instance,
    }
}

/// A shared call is listed while it waits and its instance lives: withdrawn (by its own
/// instance only), or of an instance that lapsed or left, it is not.
pub async fn approvals_are_listed_while_they_wait(stores: &Stores) {
    let instances = &stores.instances;
    let soon = timestamp::now() + time::Duration::seconds(60);
    let live = instances
        .register(InstanceId::new(), "host-a", 1, &node("node-a"), None, soon)
        .await
        .unwrap()
        .id;
    let past = timestamp::now() - time::Duration::seconds(1);
    let lapsed = instances
        .register(InstanceId::new(), "host-b", 2, &node("node-b"), None, past)
        .await
        .unwrap()
        .id;
    let bot = AgentName::parse("bot").unwrap();
    stores.agents.create(&bot, NewAgent::default()).await.unwrap();
    let session = stores.sessions.create(&bot, NewSession::default()).await.unwrap().id;

    let first = waiting(&bot, session, live);
    let of_lapsed = waiting(&bot, session, lapsed);
    let mut second = waiting(&bot, session, live);
    second.run = Some(crate::RunId::new());
    for approval in [&first, &of_lapsed, &second] {
        instances.share_approval(approval).await.unwrap();
    }
    // Sharing one again changes nothing but the copy.
    instances.share_approval(&first).await.unwrap();
    let Some(listed) = instances.shared_approvals(timestamp::now()).await.unwrap() else {
        // A store that shares none withdraws without complaint and keeps answering none.
        instances.withdraw_approval(&live, &first.request_id).await.unwrap();
        assert_eq!(instances.shared_approvals(timestamp::now()).await.unwrap(), None);
        return;
    };
    assert_eq!(listed, vec![first.clone(), second.clone()], "a lapsed instance's are not listed");

    instances.withdraw_approval(&lapsed, &first.request_id).await.unwrap();
    let listed = instances.shared_approvals(timestamp::now()).await.unwrap().unwrap();
    assert_eq!(listed.len(), 2, "only the instance that shared a call withdraws it");
    instances.withdraw_approval(&live, &first.request_id).await.unwrap();
    instances.withdraw_approval(&live, &first.request_id).await.unwrap();
    let listed = instances.shared_approvals(timestamp::now()).await.unwrap().unwrap();
    assert_eq!(listed, vec![second.clone()]);

    // The lapsed instance beats again: its call is listed again.
    instances.heartbeat(&lapsed, soon).await.unwrap();
    let listed = instances.shared_approvals(timestamp::now()).await.unwrap().unwrap();
    assert_eq!(listed, vec![of_lapsed.clone(), second.clone()]);

    // An expired call is not listed, even while its instance lives (its withdrawal failed).
    let mut expired = waiting(&bot, session, live);
    expired.expires_at = timestamp::now() - time::Duration::seconds(1);
    instances.share_approval(&expired).await.unwrap();
    let listed = instances.shared_approvals(timestamp::now()).await.unwrap().unwrap();
    assert_eq!(listed, vec![of_lapsed.clone(), second.clone()], "an expired call is not listed");

    // A heartbeat drops the copies its instance no longer holds, shared before it began.
    let third = waiting(&bot, session, live);
    let before = third.created_at;
    instances.share_approval(&third).await.unwrap();
    instances
        .keep_approvals(&live, std::slice::from_ref(&second.request_id), before)
        .await
        .unwrap();
    let listed = instances.shared_approvals(timestamp::now()).await.unwrap().unwrap();
    assert_eq!(listed, vec![of_lapsed.clone(), second.clone(), third.clone()], "newer kept");
    let after = timestamp::now() + time::Duration::seconds(1);
    instances.keep_approvals(&live, &[], after).await.unwrap();
    let listed = instances.shared_approvals(timestamp::now()).await.unwrap().unwrap();
    assert_eq!(listed, vec![of_lapsed.clone()], "only the other instance's are left");
    instances.share_approval(&second).await.unwrap();

    // An instance that leaves takes its calls with it.
    instances.deregister(&live).await.unwrap();
    let listed = instances.shared_approvals(timestamp::now()).await.unwrap().unwrap();
    assert_eq!(listed, vec![of_lapsed]);
}

fn node(name: &str) -> crate::NodeIdentity {
    crate::NodeIdentity { name: name.into(), data_dir: format!("{name}-dir") }
}
