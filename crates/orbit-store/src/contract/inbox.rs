//! The contract of the inbox: sending and reading, claims under a lease, releases and dead
//! letters, filing (read, archived), and state changes racing on the same messages.

use std::collections::HashSet;

use super::{agent, claimer, in_secs, name, request, token};
use crate::{
    Claimer, ErrorKind, LeaseToken, MessageStatus, MessageType, NewMessage, SessionId, Stores,
};

/// Sending, listing and reading single messages.
pub async fn inbox_send_and_read(stores: &Stores) {
    let a = agent(stores, "a").await;
    let b = agent(stores, "b").await;
    let err = stores.inbox.send(request(&a, &name("nobody"), "hi")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    let sent = stores.inbox.send(request(&a, &b, "hello")).await.unwrap();
    assert_eq!(sent.status, MessageStatus::Pending);
    assert_eq!(sent.read_at, None);
    assert_eq!(stores.inbox.get(&b, &sent.id).await.unwrap(), sent);
    let reply = stores
        .inbox
        .send(NewMessage {
            message_type: MessageType::Response,
            request_id: Some(sent.id),
            ..request(&b, &a, "hello back")
        })
        .await
        .unwrap();
    assert_eq!(stores.inbox.get(&a, &reply.id).await.unwrap().request_id, Some(sent.id));
    assert_eq!(stores.inbox.get_pending(&b).await.unwrap(), vec![sent]);
    let err = stores.inbox.get(&b, &reply.id).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "messages belong to their recipient");
}

/// A claim is taken once; claimed messages stay pending but not unclaimed; read is filed.
pub async fn inbox_claim_is_exclusive(stores: &Stores) {
    let a = agent(stores, "a").await;
    let b = agent(stores, "b").await;
    let first = stores.inbox.send(request(&a, &b, "one")).await.unwrap();
    let second = stores.inbox.send(request(&a, &b, "two")).await.unwrap();
    let (s1, s2) = (SessionId::new(), SessionId::new());
    let held = stores.inbox.claim(&b, &first.id, &claimer(s1)).await.unwrap().unwrap();
    assert_eq!(held.claimed_by, Some(s1));
    assert!(stores.inbox.claim(&b, &first.id, &claimer(s2)).await.unwrap().is_none());
    assert!(stores.inbox.claim(&b, &first.id, &claimer(s1)).await.unwrap().is_none());

    let unclaimed: Vec<_> =
        stores.inbox.get_unclaimed(&b).await.unwrap().into_iter().map(|m| m.id).collect();
    assert_eq!(unclaimed, vec![second.id]);
    let pending = stores.inbox.get_pending(&b).await.unwrap();
    assert_eq!(pending.len(), 2);
    assert_eq!(pending[0].claimed_by, Some(s1));
    assert!(pending[0].claimed_at.is_some());
    assert_eq!(pending[0].deliveries, 0, "a claim alone is not a delivery");
    assert_eq!(pending[1].claimed_by, None);

    let err = stores.inbox.mark_read(&b, &first.id, &LeaseToken::new()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "only the holder's token marks it read");
    let read = stores.inbox.mark_read(&b, &first.id, &token(&held)).await.unwrap();
    assert_eq!(read.status, MessageStatus::Read);
    assert_eq!(stores.inbox.get(&b, &first.id).await.unwrap(), read);
    assert!(read.read_at.is_some() && read.lease.is_none());
    assert_eq!(stores.inbox.get_pending(&b).await.unwrap().len(), 1);
    assert!(
        stores.inbox.claim(&b, &first.id, &claimer(s2)).await.unwrap().is_none(),
        "a read message cannot be claimed"
    );
    let batch = stores.inbox.claim_unclaimed(&b, &claimer(s2), 10).await.unwrap();
    assert_eq!(batch.iter().map(|m| m.id).collect::<Vec<_>>(), vec![second.id]);
    assert!(stores.inbox.claim_unclaimed(&b, &claimer(s1), 10).await.unwrap().is_empty());
}

/// A released claim is claimable again; a release that never reached the model does not
/// count; after three failed deliveries the message is set aside as dead.
pub async fn inbox_release_and_dead_letter(stores: &Stores) {
    let a = agent(stores, "a").await;
    let b = agent(stores, "b").await;
    let message = stores.inbox.send(request(&a, &b, "flaky")).await.unwrap();
    let err = stores.inbox.release(&b, &message.id, &LeaseToken::new(), true).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    for _ in 0..5 {
        let held = stores.inbox.claim(&b, &message.id, &claimer(SessionId::new())).await.unwrap();
        let released = stores.inbox.release(&b, &message.id, &token(&held.unwrap()), false).await;
        assert_eq!(released.unwrap().deliveries, 0, "refused turns are not deliveries");
    }
    for delivery in 1..=3 {
        let held = stores.inbox.claim(&b, &message.id, &claimer(SessionId::new())).await.unwrap();
        let held = held.unwrap_or_else(|| panic!("delivery {delivery}"));
        let released = stores.inbox.release(&b, &message.id, &token(&held), true).await.unwrap();
        assert_eq!(released.deliveries, delivery);
    }
    let dead = stores.inbox.get(&b, &message.id).await.unwrap();
    assert_eq!(dead.status, MessageStatus::Dead);
    assert!(stores.inbox.get_unclaimed(&b).await.unwrap().is_empty());
    assert!(stores.inbox.get_pending(&b).await.unwrap().is_empty());
    assert_eq!(stores.inbox.list_dead(&b).await.unwrap(), vec![dead]);
}

/// Read and archived messages are listed newest first, a page at a time; pending and dead
/// ones are not.
pub async fn inbox_filed_page(stores: &Stores) {
    let a = agent(stores, "a").await;
    let b = agent(stores, "b").await;
    assert!(stores.inbox.filed_page(&b, None, 10).await.unwrap().is_empty());
    let mut filed = Vec::new();
    for index in 0..5 {
        let message = stores.inbox.send(request(&a, &b, &format!("m{index}"))).await.unwrap();
        if index % 2 == 0 {
            stores.inbox.archive(&b, &message.id).await.unwrap();
        } else {
            let held = stores.inbox.claim(&b, &message.id, &claimer(SessionId::new())).await;
            stores.inbox.mark_read(&b, &message.id, &token(&held.unwrap().unwrap())).await.unwrap();
        }
        filed.push(message.id);
    }
    let pending = stores.inbox.send(request(&a, &b, "still pending")).await.unwrap();
    filed.reverse();
    let first = stores.inbox.filed_page(&b, None, 2).await.unwrap();
    assert_eq!(first.iter().map(|m| m.id).collect::<Vec<_>>(), filed[..2]);
    assert_eq!(first[1].status, MessageStatus::Read);
    let rest = stores.inbox.filed_page(&b, Some(first[1].id), 10).await.unwrap();
    assert_eq!(rest.iter().map(|m| m.id).collect::<Vec<_>>(), filed[2..]);
    assert_eq!(rest[0].status, MessageStatus::Archived);
    assert!(rest.iter().all(|m| m.id != pending.id));
    let err = stores.inbox.filed_page(&name("nobody"), None, 10).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

/// Many tasks racing for the same messages: each message goes to exactly one.
pub async fn inbox_concurrent_claims(stores: &Stores) {
    let a = agent(stores, "a").await;
    let b = agent(stores, "b").await;
    let mut ids = HashSet::new();
    for index in 0..50 {
        ids.insert(stores.inbox.send(request(&a, &b, &format!("m{index}"))).await.unwrap().id);
    }
    let mut handles = Vec::new();
    for worker in 0..16 {
        let inbox = stores.inbox.clone();
        let b = b.clone();
        handles.push(tokio::spawn(async move {
            let me = claimer(SessionId::new());
            if worker % 2 == 0 {
                return inbox
                    .claim_unclaimed(&b, &me, 7)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|m| m.id)
                    .collect();
            }
            let mut won = Vec::new();
            for message in inbox.get_unclaimed(&b).await.unwrap() {
                if let Some(message) = inbox.claim(&b, &message.id, &me).await.unwrap() {
                    won.push(message.id);
                }
            }
            won
        }));
    }
    let mut claimed = Vec::new();
    for handle in handles {
        claimed.extend(handle.await.unwrap());
    }
    assert_eq!(claimed.len(), ids.len(), "every message claimed exactly once");
    assert_eq!(claimed.into_iter().collect::<HashSet<_>>(), ids);
}

/// Archiving files a message away, claimed or not, and never destroys it; the holder's
/// settling is refused afterwards; a read message is not archived over.
pub async fn inbox_archive(stores: &Stores) {
    let a = agent(stores, "a").await;
    let b = agent(stores, "b").await;
    let loose = stores.inbox.send(request(&a, &b, "loose")).await.unwrap();
    let held = stores.inbox.send(request(&a, &b, "held")).await.unwrap();
    let session = SessionId::new();
    let claim = stores.inbox.claim(&b, &held.id, &claimer(session)).await.unwrap().unwrap();
    assert_eq!(stores.inbox.archive(&b, &loose.id).await.unwrap().status, MessageStatus::Archived);
    stores.inbox.archive(&b, &held.id).await.unwrap();
    stores.inbox.archive(&b, &held.id).await.unwrap();
    for id in [loose.id, held.id] {
        assert_eq!(stores.inbox.get(&b, &id).await.unwrap().status, MessageStatus::Archived);
    }
    assert!(stores.inbox.get_pending(&b).await.unwrap().is_empty());
    for settle in [
        stores.inbox.mark_read(&b, &held.id, &token(&claim)).await.map(drop),
        stores.inbox.release(&b, &held.id, &token(&claim), true).await.map(drop),
        stores.inbox.renew(&b, &held.id, &token(&claim), in_secs(60)).await,
    ] {
        assert_eq!(settle.unwrap_err().kind(), ErrorKind::Conflict);
    }
    assert_eq!(stores.inbox.get(&b, &held.id).await.unwrap().status, MessageStatus::Archived);
    let err = stores.inbox.archive(&b, &crate::MessageId::new()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    let read = stores.inbox.send(request(&a, &b, "read")).await.unwrap();
    let claim = stores.inbox.claim(&b, &read.id, &claimer(session)).await.unwrap().unwrap();
    stores.inbox.mark_read(&b, &read.id, &token(&claim)).await.unwrap();
    assert_eq!(stores.inbox.archive(&b, &read.id).await.unwrap_err().kind(), ErrorKind::Conflict);
    assert_eq!(stores.inbox.get(&b, &read.id).await.unwrap().status, MessageStatus::Read);
}

/// A claim whose lease lapsed is taken back (counting a delivery); its old holder can no
/// longer renew, release or mark it read, and a renewed lease keeps it.
pub async fn inbox_lapsed_lease_is_fenced(stores: &Stores) {
    let a = agent(stores, "a").await;
    let b = agent(stores, "b").await;
    let message = stores.inbox.send(request(&a, &b, "slow")).await.unwrap();
    let stale = Claimer { until: in_secs(-1), ..claimer(SessionId::new()) };
    let old = stores.inbox.claim(&b, &message.id, &stale).await.unwrap().unwrap();
    let unclaimed = stores.inbox.get_unclaimed(&b).await.unwrap();
    assert_eq!(unclaimed.len(), 1, "a lapsed claim is given back");
    assert_eq!(unclaimed[0].deliveries, 1, "its holder may have shown it to the model");
    let new =
        stores.inbox.claim(&b, &message.id, &claimer(SessionId::new())).await.unwrap().unwrap();
    assert_ne!(token(&old), token(&new));
    assert_eq!(
        stores.inbox.renew(&b, &message.id, &token(&old), in_secs(60)).await.unwrap_err().kind(),
        ErrorKind::Conflict
    );
    assert_eq!(
        stores.inbox.mark_read(&b, &message.id, &token(&old)).await.unwrap_err().kind(),
        ErrorKind::Conflict
    );
    assert_eq!(
        stores.inbox.release(&b, &message.id, &token(&old), true).await.unwrap_err().kind(),
        ErrorKind::Conflict
    );
    // The new holder renews past a lapse and keeps it.
    stores.inbox.renew(&b, &message.id, &token(&new), in_secs(60)).await.unwrap();
    assert!(stores.inbox.get_unclaimed(&b).await.unwrap().is_empty());
    assert!(
        stores.inbox.claim(&b, &message.id, &claimer(SessionId::new())).await.unwrap().is_none()
    );
    let read = stores.inbox.mark_read(&b, &message.id, &token(&new)).await.unwrap();
    assert_eq!((read.status, read.deliveries), (MessageStatus::Read, 2));
}

/// Claims, releases, reads and archives racing on the same messages: every message ends in
/// exactly one state, an archive that answered Ok left the message archived, and a settle
/// that answered Ok was not undone.
pub async fn inbox_state_changes_never_undo_each_other(stores: &Stores) {
    let a = agent(stores, "a").await;
    let b = agent(stores, "b").await;
    for round in 0..40 {
        let message = stores.inbox.send(request(&a, &b, &format!("r{round}"))).await.unwrap();
        let id = message.id;
        let holder = stores.inbox.clone();
        let archiver = stores.inbox.clone();
        let (b1, b2) = (b.clone(), b.clone());
        let settle = tokio::spawn(async move {
            let held = holder.claim(&b1, &id, &claimer(SessionId::new())).await.unwrap()?;
            let outcome = if round % 2 == 0 {
                holder.mark_read(&b1, &id, &token(&held)).await.map(|m| m.status)
            } else {
                holder.release(&b1, &id, &token(&held), true).await.map(|m| m.status)
            };
            outcome.ok()
        });
        let archive =
            tokio::spawn(async move { archiver.archive(&b2, &id).await.map(|m| m.status) });
        let (settled, archived) = (settle.await.unwrap(), archive.await.unwrap());
        let end = stores.inbox.get(&b, &id).await.unwrap();
        let pending: Vec<_> =
            stores.inbox.get_pending(&b).await.unwrap().into_iter().map(|m| m.id).collect();
        assert_eq!(pending.contains(&id), end.status == MessageStatus::Pending, "round {round}");
        match archived {
            Ok(_) => {
                assert_eq!(end.status, MessageStatus::Archived, "round {round}: archive said Ok")
            }
            Err(err) => {
                assert_eq!(err.kind(), ErrorKind::Conflict, "round {round}");
                assert_eq!(
                    settled,
                    Some(MessageStatus::Read),
                    "round {round}: only a read message refuses archiving"
                );
            }
        }
        if settled == Some(MessageStatus::Read) {
            assert_eq!(
                end.status,
                MessageStatus::Read,
                "round {round}: a read answered Ok stays read"
            );
        }
        if end.status == MessageStatus::Pending {
            stores.inbox.archive(&b, &id).await.unwrap();
        }
    }
    assert!(stores.inbox.get_pending(&b).await.unwrap().is_empty());
}
