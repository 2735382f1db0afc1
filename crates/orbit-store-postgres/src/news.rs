//! Relayed news (`InstanceStore::relay`): what a node announced since its last relay, sent
//! to the others as few `NOTIFY`s on the activity channel as PostgreSQL's payload limit
//! allows, all in one transaction so they arrive in order, and read back by the listening
//! connection (`notify`).
//!
//! Each notification is a `Signal` of kind `activity` whose `news` is a JSON array of items,
//! packed in order until the next would pass [`PAYLOAD_BYTES`]. An item that alone would pass
//! it is not cut (the store does not read items, so it could not cut one soundly): it is
//! written whole to a row of `relayed_news` in the same transaction, and the notification
//! names the row (`{"from", "stored": id}`); the listener reads the row before handing on any
//! later notification, so the order holds. A row is news like the rest: each relay that writes
//! one removes rows older than [`STORED_FOR`], and a listener that cannot read a row says
//! that news was lost (`Relayed::Lost`) rather than skip it silently.

use std::time::Duration;

use orbit_store::{InstanceId, Relayed, Signal, SignalKind};
use serde::Deserialize;

use crate::PgStore;
use crate::db::{self, transaction};
use crate::error::Failure;
use crate::notify::ACTIVITY;

/// The longest payload sent: PostgreSQL's limit on a notification's (8000 bytes), less a
/// margin.
pub(crate) const PAYLOAD_BYTES: usize = 7900;

/// How long a row of news too large for a notification is kept for the listeners to read.
const STORED_FOR: Duration = Duration::from_secs(10 * 60);

/// One notification's worth of news, as it is sent.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Payload {
    /// The notification's payload itself.
    Inline(String),
    /// A payload too long for a notification: stored, and its row's id notified.
    Stored(String),
}

/// The items of `news`, in order, as the payloads that carry them: each a `Signal` of kind
/// `activity` with an array of as many items as fit, numbered (`part`) so that no two
/// payloads of one relay are the same text (PostgreSQL delivers a transaction's identical
/// notifications once).
pub(crate) fn pack(from: InstanceId, news: &[serde_json::Value]) -> Vec<Payload> {
    let from = serde_json::Value::String(from.to_string());
    let envelope = |part: usize, items: &str| {
        format!(r#"{{"from":{from},"part":{part},"what":{{"kind":"activity","news":[{items}]}}}}"#)
    };
    let overhead = envelope(usize::MAX, "").len();
    let mut payloads = Vec::new();
    let mut items = String::new();
    for item in news {
        let text = item.to_string();
        if overhead + text.len() > PAYLOAD_BYTES {
            if !items.is_empty() {
                payloads.push(Payload::Inline(envelope(payloads.len(), &items)));
                items.clear();
            }
            payloads.push(Payload::Stored(envelope(payloads.len(), &text)));
            continue;
        }
        if !items.is_empty() && overhead + items.len() + 1 + text.len() > PAYLOAD_BYTES {
            payloads.push(Payload::Inline(envelope(payloads.len(), &items)));
            items.clear();
        }
        if !items.is_empty() {
            items.push(',');
        }
        items.push_str(&text);
    }
    if !items.is_empty() {
        payloads.push(Payload::Inline(envelope(payloads.len(), &items)));
    }
    payloads
}

/// Sends the news of `from` to every listening node: one transaction, so its notifications
/// are delivered together and in order at its commit (and a retried attempt sent nothing).
pub(crate) async fn send(
    store: &PgStore,
    from: InstanceId,
    news: &[serde_json::Value],
) -> orbit_store::Result<()> {
    if news.is_empty() {
        return Ok(());
    }
    let payloads = pack(from, news);
    let from = &from.to_string();
    // By the database's clock, which wrote `at`: a node whose clock runs ahead removes no row
    // the others have yet to read.
    let stored_for = STORED_FOR.as_secs_f64();
    transaction!(store, |tx| async {
        for payload in &payloads {
            let notified = match payload {
                Payload::Inline(text) => text.clone(),
                Payload::Stored(text) => {
                    db::execute(
                        &tx,
                        "DELETE FROM relayed_news WHERE at < now() - make_interval(secs => $1)",
                        &[&stored_for],
                    )
                    .await?;
                    let row = db::row(
                        &tx,
                        "INSERT INTO relayed_news (payload) VALUES ($1) RETURNING id",
                        &[text],
                    )
                    .await?
                    .ok_or_else(|| Failure::Store(orbit_store::Error::Backend("no id".into())))?;
                    let id: i64 = row.try_get(0)?;
                    serde_json::json!({"from": from, "stored": id}).to_string()
                }
            };
            db::execute(&tx, "SELECT pg_notify($1, $2)", &[&ACTIVITY, &notified]).await?;
        }
        Ok(())
    })
}

/// What a notification on the activity channel names, before it is read.
#[derive(Deserialize)]
struct Pointer {
    stored: i64,
}

/// What the listener hands on for a notification on the activity channel: its news; the
/// stored row's it names, read on `client` (the listening connection); [`Relayed::Lost`]
/// when a row it names cannot be read; nothing for a payload of an unknown form (from a
/// node of another version, perhaps).
pub(crate) async fn read(client: &tokio_postgres::Client, payload: &str) -> Option<Relayed> {
    let stored;
    let payload = match serde_json::from_str::<Pointer>(payload) {
        Ok(Pointer { stored: id }) => {
            let row = client
                .query_opt("SELECT payload FROM relayed_news WHERE id = $1", &[&id])
                .await
                .map(|row| row.map(|row| row.try_get::<_, String>(0)));
            match row {
                Ok(Some(Ok(text))) => {
                    stored = text;
                    &stored
                }
                failed => {
                    tracing::warn!(id, ?failed, "cannot read news another node stored");
                    return Some(Relayed::Lost);
                }
            }
        }
        Err(_) => payload,
    };
    match serde_json::from_str::<Signal>(payload) {
        Ok(Signal { from, what: SignalKind::Activity { news } }) => {
            let news = match news {
                serde_json::Value::Array(items) => items,
                // One item, from a node that relays one at a time.
                item => vec![item],
            };
            Some(Relayed::News { from, news })
        }
        Ok(_) => None,
        Err(err) => {
            let kind = payload.get(..payload.len().min(80)).unwrap_or_default();
            tracing::debug!(error = %err, bytes = payload.len(), kind, "ignored news it cannot read");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::{Value, json};

    use super::*;

    fn items_of(payload: &Payload) -> Vec<Value> {
        let (Payload::Inline(text) | Payload::Stored(text)) = payload;
        let signal: Signal = serde_json::from_str(text).unwrap();
        let SignalKind::Activity { news: Value::Array(items) } = signal.what else {
            panic!("{text}")
        };
        items
    }

    #[test]
    fn news_is_packed_in_order_into_as_few_payloads_as_fit() {
        let news: Vec<Value> = (0..500).map(|n| json!({"n": n, "pad": "x".repeat(100)})).collect();
        let payloads = pack(InstanceId::new(), &news);
        // About 59 kB of items, in payloads of at most 7.9 kB.
        assert!((8..=9).contains(&payloads.len()), "{} payloads", payloads.len());
        let mut texts = std::collections::HashSet::new();
        for payload in &payloads {
            let Payload::Inline(text) = payload else { panic!("stored: {payload:?}") };
            assert!(text.len() <= PAYLOAD_BYTES, "{} bytes", text.len());
            assert!(texts.insert(text.clone()), "no two payloads alike");
        }
        let carried: Vec<Value> = payloads.iter().flat_map(items_of).collect();
        assert_eq!(carried, news, "every item, in order");
        assert!(pack(InstanceId::new(), &[]).is_empty());
    }

    #[test]
    fn an_item_too_large_for_a_notification_is_stored_whole_in_its_place() {
        let small = |n: u32| json!({"n": n});
        let large = json!({"text": "é".repeat(8000)});
        let news = vec![small(1), small(2), large.clone(), small(3)];
        let payloads = pack(InstanceId::new(), &news);
        assert!(matches!(&payloads[0], Payload::Inline(_)));
        assert!(matches!(&payloads[1], Payload::Stored(_)));
        assert!(matches!(&payloads[2], Payload::Inline(_)));
        assert_eq!(payloads.len(), 3);
        let items: Vec<Vec<Value>> = payloads.iter().map(items_of).collect();
        assert_eq!(items, [vec![small(1), small(2)], vec![large], vec![small(3)]]);
    }
}
