//! `GET /api/events`: what changes on the server, as server-sent events, for every client
//! (the web console updates from it without polling).
//!
//! The stream starts with `ready`, whose id is the newest event's. A client that reconnects
//! sends the last id it saw as `Last-Event-ID` and is sent what it missed, from the bus's
//! ring; when those are no longer held it is told `resync` (reload what you show) and reads
//! on. Ids are `<stream>-<n>`, the stream naming this node's bus: on a cluster every node
//! shows every node's activity, but each numbers it its own way, so an id brought to another
//! node (or to a later start of this one) resyncs rather than resuming at a wrong place.
//! A client that reads too slowly falls behind the ring: it is told `resync` and its stream
//! ends, and one that stops reading altogether is dropped after the slow-client
//! limit (`client_stream`). On a cluster, where this node missed some of the other nodes'
//! news (its connection listening for it was lost, or a queue on the way overflowed), every
//! client is told `resync` at that place in the stream and reads on. Nothing is ever waited
//! for on a client's behalf.

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

/// Where a client asked to resume from, by its `Last-Event-ID`.
enum Resume {
    /// No id: from now on.
    Now,
    /// After this id of this node's stream.
    After(u64),
    /// An id this stream never gave: another node's (ids are per node), an earlier start's,
    /// or none at all. The client reloads.
    Foreign,
}

/// Reads a `Last-Event-ID`: `<stream>-<n>`, the stream being this node's bus's.
fn resume_from(last_event_id: Option<&str>, stream: &str) -> Resume {
    let Some(id) = last_event_id else { return Resume::Now };
    id.trim()
        .split_once('-')
        .filter(|(of, _)| *of == stream)
        .and_then(|(_, n)| n.parse().ok())
        .map_or(Resume::Foreign, Resume::After)
}

async fn events(state: Data<AppState>, req: HttpRequest) -> impl Responder {
    let bus = state.pool.activity().clone();
    let header = req.headers().get("last-event-id").map(|v| v.to_str().unwrap_or_default());
    let resume = resume_from(header, bus.stream());
    let mut subscription = match resume {
        Resume::Now => bus.subscribe(None),
        Resume::After(id) => bus.subscribe(Some(id)),
        // No id is below the bus's first, so the first read says what was missed.
        Resume::Foreign => bus.subscribe(Some(0)),
    };
    let resuming = !matches!(resume, Resume::Now);
    let (mut client, response) = ClientStream::new(state.slow_client_timeout);
    tokio::spawn(async move {
        let label = "events";
        let id = |n: u64| Some(format!("{}-{n}", bus.stream()));
        client.send_event(&ServerEvent::Ready {}, id(subscription.position()), label).await;
        let mut resuming = resuming;
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
                    client.send_event(&event, id(announced.id), label).await;
                }
                Next::Missed => {
                    let reason = match (&resume, resuming) {
                        (Resume::Foreign, true) => {
                            "the Last-Event-ID is not of this node's stream (another node's, or \
                             from before a restart): ids are per node"
                        }
                        (_, true) => "the events after the given Last-Event-ID are no longer held",
                        (_, false) => "this client read too slowly and missed events",
                    };
                    let resync = ServerEvent::Resync { reason: reason.into() };
                    client.send_event(&resync, id(subscription.position()), label).await;
                    if !resuming {
                        break;
                    }
                }
                // Not the client's doing: its stream goes on.
                Next::NewsLost => {
                    let reason = "this node missed some of the other nodes' events (its \
                                  connection to the database was lost, or they came faster \
                                  than it could take them)";
                    let resync = ServerEvent::Resync { reason: reason.into() };
                    client.send_event(&resync, id(subscription.position()), label).await;
                }
                Next::Closed => break,
            }
            resuming = false;
        }
    });
    response.with_keep_alive(Duration::from_secs(15))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_id_of_this_nodes_stream_resumes() {
        let stream = "01JDQ6ZQ0000000000000000AB";
        assert!(matches!(resume_from(None, stream), Resume::Now));
        let ours = format!("{stream}-1764590000000123");
        assert!(matches!(resume_from(Some(&ours), stream), Resume::After(1_764_590_000_000_123)));
        for foreign in ["01JDQ6ZQ0000000000000000CD-1764590000000123", "1764590000000123", "", "x"]
        {
            assert!(matches!(resume_from(Some(foreign), stream), Resume::Foreign), "{foreign}");
        }
        assert!(matches!(resume_from(Some(&format!("{stream}-x")), stream), Resume::Foreign));
    }
}
