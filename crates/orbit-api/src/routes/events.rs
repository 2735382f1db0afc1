//! `GET /api/events`: what changes on the server, as server-sent events, for every client
//! (the web console updates from it without polling).
//!
//! The stream starts with `ready`, whose id is the newest event's. A client that reconnects
//! sends the last id it saw as `Last-Event-ID` and is sent what it missed, from the bus's
//! ring; when those are no longer held it is told `resync` (reload what you show) and reads
//! on. A client that reads too slowly falls behind the ring: it is told `resync` and its
//! stream ends, and one that stops reading altogether is dropped after the slow-client
//! limit (`client_stream`). Nothing is ever waited for on a client's behalf.

use std::time::Duration;

use actix_web::web::Data;
use actix_web::{HttpRequest, Responder, web};
use orbit_agent::activity::Next;

use crate::AppState;
use crate::client_stream::ClientStream;
use crate::endpoint::Endpoint;
use crate::server_events::ServerEvent;

pub fn endpoints() -> Vec<Endpoint> {
    vec![
        Endpoint::new::<ServerEvent>(
            "GET",
            "/api/events",
            "events",
            "What changes on the server, as server-sent events (send `Last-Event-ID` to resume)",
            || web::get().to(events),
        )
        .events::<ServerEvent>()
        .infallible(),
    ]
}

async fn events(state: Data<AppState>, req: HttpRequest) -> impl Responder {
    // An id that does not parse is one this server never gave: the client resyncs.
    let last_seen = req
        .headers()
        .get("last-event-id")
        .map(|value| value.to_str().ok().and_then(|text| text.trim().parse::<u64>().ok()));
    let bus = state.pool.activity();
    let mut subscription = match last_seen {
        Some(Some(id)) => bus.subscribe(Some(id)),
        Some(None) => bus.subscribe(Some(0)),
        None => bus.subscribe(None),
    };
    let (mut client, response) = ClientStream::new(state.slow_client_timeout);
    tokio::spawn(async move {
        let label = "events";
        client.send_event(&ServerEvent::Ready {}, Some(subscription.position()), label).await;
        let mut resuming = last_seen.is_some();
        while client.is_connected() {
            let next = tokio::select! {
                next = subscription.next() => next,
                // A client that went away while nothing happened does not hold this task
                // until something does.
                () = client.closed() => break,
            };
            match next {
                Next::Event(announced) => {
                    let event = ServerEvent::from(announced.as_ref());
                    client.send_event(&event, Some(announced.id), label).await;
                }
                Next::Missed => {
                    let reason = if resuming {
                        "the events after the given Last-Event-ID are no longer held"
                    } else {
                        "this client read too slowly and missed events"
                    };
                    let resync = ServerEvent::Resync { reason: reason.into() };
                    client.send_event(&resync, Some(subscription.position()), label).await;
                    if !resuming {
                        break;
                    }
                }
                Next::Closed => break,
            }
            resuming = false;
        }
    });
    response.with_keep_alive(Duration::from_secs(15))
}
