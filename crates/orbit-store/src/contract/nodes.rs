//! The contract of nodes: instances register and beat, a node's name belongs to one data
//! directory, the store's clock agrees with this one, and what was pinned to a node gone for
//! good is released.

use std::collections::HashSet;

use time::OffsetDateTime;

use super::{agent, in_secs, interval_task};
use crate::{
    ErrorKind, InstanceId, NewSession, NewTask, NodeIdentity, SessionPatch, Stores, TaskPatch,
    timestamp,
};

/// A node gone for good releases what was pinned to it: a session loses its pin and its
/// worktree and says where it was; a task loses its pin, and is pinned again by the node
/// that makes its next worktree (once: a pinned task keeps its node). Records pinned
/// elsewhere are left alone.
pub async fn records_are_released_from_a_node_and_pinned_again(stores: &Stores) {
    let a = agent(stores, "a").await;
    let pinned = |node: &str| NewSession {
        worktree_id: Some(crate::new_ulid().to_string()),
        node: Some(node.into()),
        ..NewSession::default()
    };
    let lost = stores.sessions.create(&a, pinned("gone")).await.unwrap();
    let kept = stores.sessions.create(&a, pinned("alive")).await.unwrap();
    let release = || SessionPatch { release_from: Some("gone".into()), ..SessionPatch::default() };
    let released = stores.sessions.update(&a, &lost.id, release()).await.unwrap();
    assert_eq!((released.node, released.worktree_id), (None, None));
    assert_eq!(released.released_from.as_deref(), Some("gone"));
    let read = stores.sessions.get(&a, &lost.id).await.unwrap();
    assert_eq!(read.released_from.as_deref(), Some("gone"), "kept");
    let untouched = stores.sessions.update(&a, &kept.id, release()).await.unwrap();
    assert_eq!(untouched.node.as_deref(), Some("alive"));
    assert_eq!(untouched.worktree_id, kept.worktree_id);
    assert_eq!(untouched.released_from, None);

    let worktree_task = NewTask { worktree: true, node: Some("gone".into()), ..interval_task("w") };
    let task = stores.tasks.create(&a, worktree_task).await.unwrap();
    let start = stores.tasks.changes_since(None).await.unwrap();
    let patch = TaskPatch { release_from: Some("gone".into()), ..TaskPatch::default() };
    let released = stores.tasks.update(&a, &task.id, patch).await.unwrap();
    assert_eq!(released.node, None);
    assert!(released.worktree, "it still works in a worktree, to be made anew");
    let seen = stores.tasks.changes_since(Some(start.cursor)).await.unwrap();
    assert_eq!(seen.changes.len(), 1, "the schedulers are told");
    let pin = |node: &str| TaskPatch { pin_to: Some(node.into()), ..TaskPatch::default() };
    let taken = stores.tasks.update(&a, &task.id, pin("b")).await.unwrap();
    assert_eq!(taken.node.as_deref(), Some("b"));
    let again = stores.tasks.update(&a, &task.id, pin("c")).await.unwrap();
    assert_eq!(again.node.as_deref(), Some("b"), "a pinned task keeps its node");
    let plain = stores.tasks.create(&a, interval_task("plain")).await.unwrap();
    let plain = stores.tasks.update(&a, &plain.id, pin("b")).await.unwrap();
    assert_eq!(plain.node, None, "a task without a worktree is pinned nowhere");
}

/// A store's clock, when it has one of its own, reads the time: on this one machine, the
/// same as this process's clock within a generous bound (a database server's clock is the
/// machine's). A store sharing this process's clock says so with `None`.
pub async fn store_clock_agrees_with_this_one(stores: &Stores) {
    let before = OffsetDateTime::now_utc();
    let clock = stores.instances.clock().await.unwrap();
    let after = OffsetDateTime::now_utc();
    if let Some(clock) = clock {
        let slack = time::Duration::seconds(2);
        assert!(
            before - slack <= clock && clock <= after + slack,
            "the store's clock reads {clock}, this process's {before}..{after}"
        );
    }
    // Read twice, it does not go back.
    if let (Some(first), Some(second)) = (clock, stores.instances.clock().await.unwrap()) {
        assert!(first <= second, "the store's clock went back from {first} to {second}");
    }
}

/// Instances register under fresh ids, beat, list and deregister; where each is reached is
/// kept through all of it.
pub async fn instances_register_and_beat(stores: &Stores) {
    let node = node_identity("node-a", "dir-1");
    let address = "http://127.0.0.1:3001";
    let first = stores
        .instances
        .register(InstanceId::new(), "host-a", 1, &node, Some(address), in_secs(15))
        .await
        .unwrap();
    let second = stores
        .instances
        .register(InstanceId::new(), "host-a", 1, &node, None, in_secs(15))
        .await
        .unwrap();
    assert_eq!(first.node.as_ref(), Some(&node), "the node is kept with the instance");
    assert_eq!(first.address.as_deref(), Some(address));
    assert_eq!(second.address, None, "an instance may have no address");
    assert_ne!(first.id, second.id, "the same pid twice is two instances");
    let beat = stores.instances.heartbeat(&first.id, in_secs(30)).await.unwrap();
    assert!(beat.until > first.until);
    assert_eq!(beat.address.as_deref(), Some(address), "a heartbeat keeps the address");
    let listed: HashSet<_> =
        stores.instances.list().await.unwrap().into_iter().map(|i| (i.id, i.address)).collect();
    let expected = [(first.id, Some(address.to_owned())), (second.id, None)];
    assert_eq!(listed, HashSet::from(expected), "the addresses read back as registered");
    stores.instances.deregister(&second.id).await.unwrap();
    assert_eq!(
        stores.instances.heartbeat(&second.id, in_secs(30)).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(stores.instances.list().await.unwrap().len(), 1);
}

fn node_identity(name: &str, data_dir: &str) -> NodeIdentity {
    NodeIdentity { name: name.into(), data_dir: data_dir.into() }
}

/// A node's name belongs to one data directory at a time: an instance of another directory
/// under a name that a live instance has is refused; processes of one directory share it,
/// and a lapsed instance (a node that died) holds the name no longer.
pub async fn instances_of_one_name_share_a_data_dir(stores: &Stores) {
    let register = |node: NodeIdentity, until| {
        let instances = stores.instances.clone();
        async move { instances.register(InstanceId::new(), "host", 1, &node, None, until).await }
    };
    let live = register(node_identity("worker", "dir-1"), in_secs(30)).await.unwrap();
    register(node_identity("worker", "dir-1"), in_secs(30)).await.expect("one directory, one name");
    register(node_identity("other", "dir-2"), in_secs(30)).await.expect("another name");
    let refused = register(node_identity("worker", "dir-2"), in_secs(30)).await.unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Conflict, "{refused}");
    assert!(refused.to_string().contains("'worker'"), "the name is said: {refused}");
    assert!(refused.to_string().contains(&live.id.to_string()), "and who has it: {refused}");
    // Two starting at once on two directories: at most one gets the name.
    let (x, y) = tokio::join!(
        register(node_identity("racer", "dir-1"), in_secs(30)),
        register(node_identity("racer", "dir-2"), in_secs(30))
    );
    let outcomes = [&x, &y].map(|outcome| outcome.as_ref().map_err(crate::Error::kind));
    assert!(
        matches!(outcomes, [Ok(_), Err(ErrorKind::Conflict)] | [Err(ErrorKind::Conflict), Ok(_)]),
        "exactly one takes the name, the other is refused: {x:?} {y:?}"
    );
    // A lapsed instance's name is free.
    let lapsed = register(node_identity("gone", "dir-1"), in_secs(-1)).await.unwrap();
    let taker =
        register(node_identity("gone", "dir-2"), in_secs(30)).await.expect("the old node is gone");
    // ...and stays the taker's: the lapsed instance, come back, may not renew under it.
    let lost = stores.instances.heartbeat(&lapsed.id, in_secs(30)).await.unwrap_err();
    assert_eq!(lost.kind(), ErrorKind::Conflict, "{lost}");
    assert!(lost.to_string().contains(&taker.id.to_string()), "names the taker: {lost}");
    stores.instances.heartbeat(&taker.id, in_secs(30)).await.expect("the taker renews");
    let registered = stores.instances.list().await.unwrap();
    let old =
        registered.iter().find(|i| i.id == lapsed.id).expect("the refused renewal wrote nothing");
    assert!(old.until < timestamp::now(), "still lapsed: {old:?}");
    // Registering anew (as after a prune), it is refused as any newcomer would be.
    let again = register(node_identity("gone", "dir-1"), in_secs(30)).await.unwrap_err();
    assert_eq!(again.kind(), ErrorKind::Conflict, "{again}");
    // A lapsed instance whose name nobody took renews.
    let dozed = register(node_identity("dozer", "dir-1"), in_secs(-1)).await.unwrap();
    let woke = stores.instances.heartbeat(&dozed.id, in_secs(30)).await.expect("nobody took it");
    assert!(woke.live_at(timestamp::now()));
}
