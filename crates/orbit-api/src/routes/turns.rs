//! A session's turns beyond the chat that started them: `GET .../stream` attaches to the
//! running turn, `GET .../transcript` reads every turn's full record.
//!
//! A watcher reads the turn's log (`orbit_agent::TurnWatcher`): the turn's events from its
//! start, as far as the turn's replay buffer holds them, then live, and its stream ends when
//! the turn ends. It is forwarded through a `ClientStream` of its own, bounded like the chat's,
//! so a slow watcher is dropped alone, and one that leaves never touches the turn. A turn
//! another node of the cluster runs is watched through this node all the same: its stream
//! is passed through from that node (`forward`).

use std::time::Duration;

use actix_web::web::Data;
use actix_web::{Either, HttpRequest, HttpResponse, Responder, web};
use orbit_store::TranscriptCursor;
use schemars::JsonSchema;
use serde::Deserialize;

use crate::client_stream::ClientStream;
use crate::endpoint::Endpoint;
use crate::error::{ApiError, ApiResult, Code};
use crate::extract::SessionPath;
use crate::forward;
use crate::routes::chat::ChatEvent;
use crate::views::{self, TranscriptBody};
use crate::{AppState, wire};

/// Entries of a transcript page when the request names no limit, and the most it may name.
const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1000;

pub fn endpoints() -> Vec<Endpoint> {
    vec![
        Endpoint::new::<ChatEvent>(
            "GET",
            "/api/agents/{name}/sessions/{id}/stream",
            "watchSession",
            "Attach to the session's running turn: its events so far, then live, as server-sent \
             events; the stream ends with the turn (404 when no turn runs). A turn another node \
             runs is passed through from that node; 409 naming the node when that node registered \
             no address (or the request was forwarded already), 502 naming it when it cannot be \
             reached",
            || web::get().to(watch),
        )
        .events::<ChatEvent>()
        .errors(&[Code::Conflict, Code::NodeUnreachable]),
        Endpoint::new::<TranscriptBody>(
            "GET",
            "/api/agents/{name}/sessions/{id}/transcript",
            "getTranscript",
            "A page of the session's transcript: every turn's user message, inbox deliveries and \
             stream events, each stamped, oldest first; a page stops at `limit` entries or about \
             4 MiB of them, and holds at least one",
            || web::get().to(transcript),
        )
        .query::<TranscriptQuery>(),
    ]
}

/// `GET .../transcript?limit=&cursor=`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TranscriptQuery {
    /// Entries in the page (default 100).
    #[serde(default)]
    #[schemars(range(min = 1, max = MAX_PAGE))]
    limit: Option<u32>,
    /// Where the page starts: a previous page's `nextCursor` (or the last page's `endCursor`);
    /// the transcript's start without it.
    #[serde(default)]
    #[schemars(with = "Option<wire::TranscriptCursor>")]
    cursor: Option<String>,
}

async fn watch(
    state: Data<AppState>,
    path: SessionPath,
    request: HttpRequest,
) -> ApiResult<Either<impl Responder, HttpResponse>> {
    let (name, id) = (path.name, path.id);
    state.stores.sessions.get(&name, &id).await?;
    let Some(mut watcher) = state.pool.find(&name, &id).and_then(|agent| agent.watch()) else {
        // A turn another node runs is watched there, its events living on that node alone:
        // its stream is passed through.
        let now = orbit_store::timestamp::now();
        return match state.stores.sessions.turn_holder(&name, &id, now).await? {
            Some(holder) if holder.id != state.pool.instance() => {
                let asking = forward::Asking {
                    node: state.pool.node(),
                    instance: state.pool.instance(),
                    token: state.api_token.as_deref(),
                };
                forward::watch(&request, &holder, asking, (&name, &id)).await.map(Either::Right)
            }
            _ => Err(ApiError::not_found(format!("session {id} has no running turn"))),
        };
    };
    let (mut client, response) = ClientStream::new(state.slow_client_timeout);
    // The client leaving is waited on alongside the next event: a turn may go quiet for many
    // minutes (a run waiting for a person), and a watcher that left meanwhile must not be
    // kept until the turn's next event. (Actix drops the response once a write to the gone
    // client fails, the 15 s keep-alive at the latest.)
    tokio::spawn(async move {
        while client.is_connected() {
            let event = tokio::select! {
                event = watcher.next() => event,
                () = client.closed() => break,
            };
            let Some(event) = event else { break };
            client.send(&*event, &id).await;
        }
    });
    Ok(Either::Left(response.with_keep_alive(Duration::from_secs(15))))
}

async fn transcript(
    state: Data<AppState>,
    path: SessionPath,
    query: web::Query<TranscriptQuery>,
) -> ApiResult<HttpResponse> {
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::invalid(format!("limit must be between 1 and {MAX_PAGE}")));
    }
    let from = match &query.cursor {
        None => TranscriptCursor::START,
        Some(text) => text
            .parse()
            .map(TranscriptCursor)
            .map_err(|_| ApiError::invalid("cursor must be a page's nextCursor or endCursor"))?,
    };
    let page =
        state.stores.sessions.read_transcript(&path.name, &path.id, from, limit as usize).await?;
    Ok(HttpResponse::Ok().json(TranscriptBody {
        entries: views::all(page.entries),
        next_cursor: page.more.then(|| page.next.0.to_string()),
        end_cursor: page.next.0.to_string(),
    }))
}
