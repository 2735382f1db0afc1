//! Watching a turn that another node of the cluster runs: its events live on that node
//! alone, so the node asked passes the watcher's stream through from the node that runs it.
//!
//! Only ever to where the registry says a live instance is reached (its `address`, which
//! each node registers from `--advertise-url` or its bound address), only the stream's own
//! path, built from the parsed agent name and session id rather than copied from the
//! request, and with no header of the client's but its `Authorization` (the nodes of a
//! cluster share one API token). Redirects are never followed. The request carries
//! [`FORWARDED`], and a node never forwards a request that carries it: two nodes that
//! disagree about where a turn runs answer 409 rather than pass a watcher back and forth.

use std::time::Duration;

use actix_web::HttpRequest;
use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use futures_util::StreamExt;
use orbit_store::{AgentName, Instance, InstanceId, SessionId};

use crate::error::{ApiError, ApiResult, Code};

/// The header that marks a request one node forwarded to another; its value names the
/// forwarding instance, for the receiving node's log.
pub const FORWARDED: &str = "orbit-forwarded-by";

/// How long connecting to the other node may take: nodes of a cluster are near each other,
/// and a watcher is better told soon that the node is away than kept waiting.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long the other node may take to answer the stream's head (it reads the database
/// first). The stream itself has no limit: a turn may go quiet for many minutes.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// The most of an error answer's body read from the other node.
const ERROR_BODY_LIMIT: usize = 64 * 1024;

/// An error answer of the other node, read for its sentence.
#[derive(serde::Deserialize)]
struct ErrorAnswer {
    error: String,
}

/// A watcher of the turn of session `id` that `holder` runs, asked of this node (`asking`
/// is its name, `this` its instance): the stream from the holder, passed through as it
/// arrives, until the holder's stream ends or the client leaves (actix drops the response,
/// and with it the connection to the holder). 409 when the request was forwarded already,
/// or the holder has no address or is not live; 502 `node_unreachable` when it cannot be
/// reached or refuses.
pub async fn watch(
    request: &HttpRequest,
    holder: &Instance,
    (asking, this): (&str, InstanceId),
    (name, id): (&AgentName, &SessionId),
) -> ApiResult<HttpResponse> {
    let node = holder.described_to(asking);
    if request.headers().contains_key(FORWARDED) {
        return Err(ApiError::new(
            Code::Conflict,
            format!(
                "the turn of session {id} runs on {node}, and a request another node forwarded is not forwarded again; watch it through that node"
            ),
        ));
    }
    let now = orbit_store::timestamp::now();
    let Some(address) = holder.address.as_deref().filter(|_| holder.live_at(now)) else {
        return Err(ApiError::new(
            Code::Conflict,
            format!(
                "the turn of session {id} runs on {node}, which registered no address the other nodes reach it at (start it with --advertise-url or ORBIT_ADVERTISE_URL); watch it through that node"
            ),
        ));
    };
    let url = format!("{address}/api/agents/{name}/sessions/{id}/stream");
    let client = awc::Client::builder()
        .connector(awc::Connector::new().timeout(CONNECT_TIMEOUT))
        .timeout(HEAD_TIMEOUT)
        .disable_redirects()
        .finish();
    let mut forwarded = client
        .get(&url)
        .insert_header((FORWARDED, this.to_string()))
        .insert_header((header::ACCEPT, "text/event-stream"));
    if let Some(token) = request.headers().get(header::AUTHORIZATION) {
        forwarded = forwarded.insert_header((header::AUTHORIZATION, token.clone()));
    }
    let unreachable = |why: String| {
        ApiError::new(
            Code::NodeUnreachable,
            format!(
                "the turn of session {id} runs on {node}, which this node cannot reach at {address}: {why}"
            ),
        )
    };
    let mut answer = forwarded.send().await.map_err(|err| unreachable(err.to_string()))?;
    let is_stream = answer.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok())
        == Some("text/event-stream");
    if answer.status() == StatusCode::OK && is_stream {
        // A holder that fails mid-stream (it died, its connection dropped) ends the watcher's
        // stream as the turn's end would, rather than cutting the connection mid-event.
        let events = answer.take_while(|chunk| std::future::ready(chunk.is_ok()));
        return Ok(HttpResponse::Ok()
            .insert_header((header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream")))
            // The headers of this node's own event streams (`actix_web_lab::sse`), none of the
            // other node's.
            .insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-cache")))
            .insert_header((header::CONTENT_ENCODING, HeaderValue::from_static("identity")))
            .streaming(events));
    }
    let status = answer.status();
    let body = answer.body().limit(ERROR_BODY_LIMIT).await.unwrap_or_default();
    let said: Option<ErrorAnswer> = serde_json::from_slice(&body).ok();
    Err(match (status, said) {
        // The turn ended meanwhile, or moved: the holder's own words say so.
        (StatusCode::NOT_FOUND, Some(said)) => ApiError::not_found(said.error),
        (StatusCode::CONFLICT, Some(said)) => ApiError::new(Code::Conflict, said.error),
        (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN, _) => unreachable(format!(
            "it refused the forwarded request ({status}): the nodes of a cluster must share one API token, and each must answer to the host of its advertised address (--allowed-host)"
        )),
        (status, _) => unreachable(format!("it answered {status}")),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use orbit_store::NodeIdentity;

    use super::*;

    fn holder(address: Option<&str>, alive_for: time::Duration) -> Instance {
        let now = orbit_store::timestamp::now();
        let node = NodeIdentity { name: "worker-a".into(), data_dir: "dir-a".into() };
        Instance::registered(InstanceId::new(), "box", 7, &node, address, now, now + alive_for)
    }

    async fn watched(request: HttpRequest, holder: &Instance) -> ApiError {
        let (name, id) = (AgentName::parse("bot").unwrap(), SessionId::new());
        let asking = ("worker-b", InstanceId::new());
        match watch(&request, holder, asking, (&name, &id)).await {
            Ok(_) => panic!("no node listens: nothing may be streamed"),
            Err(err) => err,
        }
    }

    /// Whatever the holder's address, a request forwarded already, a holder without an
    /// address and one whose registration lapsed are answered here, naming the node.
    #[actix_web::test]
    async fn a_watcher_is_not_forwarded_again_nor_to_a_holder_without_a_live_address() {
        let reachable = holder(Some("http://127.0.0.1:9"), time::Duration::seconds(30));
        let request = actix_web::test::TestRequest::default()
            .insert_header((FORWARDED, InstanceId::new().to_string()))
            .to_http_request();
        let again = watched(request, &reachable).await;
        assert_eq!(again.code, Code::Conflict);
        assert!(again.message.contains("not forwarded again"), "{}", again.message);
        assert!(again.message.contains("node 'worker-a'"), "{}", again.message);

        let plain = || actix_web::test::TestRequest::default().to_http_request();
        let nowhere = watched(plain(), &holder(None, time::Duration::seconds(30))).await;
        assert_eq!(nowhere.code, Code::Conflict);
        assert!(nowhere.message.contains("--advertise-url"), "says how: {}", nowhere.message);
        let lapsed = holder(Some("http://127.0.0.1:9"), time::Duration::seconds(-1));
        assert_eq!(watched(plain(), &lapsed).await.code, Code::Conflict, "not live");
    }

    /// A holder whose port is closed is a 502 naming it and its address.
    #[actix_web::test]
    async fn a_holder_that_refuses_the_connection_is_unreachable() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let address = format!("http://{closed}");
        let holder = holder(Some(&address), time::Duration::seconds(30));
        let request = actix_web::test::TestRequest::default().to_http_request();
        let err = watched(request, &holder).await;
        assert_eq!(err.code, Code::NodeUnreachable);
        assert!(err.message.contains(&address), "{}", err.message);
        assert!(err.message.contains("node 'worker-a'"), "{}", err.message);
    }
}
