//! Watching a turn that another node of the cluster runs: its events live on that node
//! alone, so the node asked passes the watcher's stream through from the node that runs it.
//!
//! Only ever to where the registry says a live instance is reached (its `address`, which
//! each node registers as `http://host:port`, from `--advertise-url` or its bound address),
//! only the stream's own path, built from the parsed agent name and session id rather than
//! copied from the request, on a URI built from the address's host and port alone. No header
//! of the client's is sent on, its token included: the request carries this node's proof of
//! the cluster's shared token for that one stream on that one instance (`node_proof`), so
//! whatever answers at the address (a process that took a dead node's port) learns nothing
//! that opens anything. Redirects are never followed. The request carries [`FORWARDED`], and
//! a node never forwards a request that carries it: two nodes that disagree about where a
//! turn runs answer 409 rather than pass a watcher back and forth.
//!
//! The stream is passed on whole event by whole event (up to each blank line), and a holder
//! that fails mid-stream, or sends nothing for [`Limits::idle`] (it sends a keep-alive every
//! 15 s), ends it with an `error` event: the watcher never mistakes a lost holder for the
//! turn's end, nor is kept waiting on one that went silent.

use std::time::Duration;

use actix_web::HttpRequest;
use actix_web::HttpResponse;
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{StatusCode, Uri};
use actix_web::web::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use orbit_store::{AgentName, Instance, InstanceId, SessionId};

use crate::error::{ApiError, ApiResult, Code};

/// The header that marks a request one node forwarded to another; its value names the
/// forwarding instance, which the receiving node's answer (409) uses to say what is wrong.
pub const FORWARDED: &str = "orbit-forwarded-by";

/// The time limits of a passed-through watcher.
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// How long connecting to the other node may take.
    connect: Duration,
    /// How long the other node may take to answer the stream's head (it reads the database
    /// first), and to send an error answer's body.
    head: Duration,
    /// How long the stream may bring nothing: the other node sends a keep-alive every 15 s
    /// however quiet the turn, so three missed ones mean it is gone.
    idle: Duration,
}

impl Limits {
    /// Nodes of a cluster are near each other, and a watcher is better told soon that the
    /// node is away than kept waiting.
    const CLUSTER: Limits = Limits {
        connect: Duration::from_secs(2),
        head: Duration::from_secs(10),
        idle: Duration::from_secs(45),
    };
}

/// The most of an error answer's body read from the other node.
const ERROR_BODY_LIMIT: usize = 64 * 1024;

/// The most of one event held while waiting for its end (a transcript's whole turn is at most
/// 4 MiB, so no one event of it is larger).
const EVENT_LIMIT: usize = 8 * 1024 * 1024;

/// An error answer of the other node, read for its sentence.
#[derive(serde::Deserialize)]
struct ErrorAnswer {
    error: String,
}

/// The node asking: its name, its instance, and the cluster's API token when one is set.
#[derive(Debug, Clone, Copy)]
pub struct Asking<'a> {
    pub node: &'a str,
    pub instance: InstanceId,
    pub token: Option<&'a str>,
}

/// A watcher of the turn of session `id` that `holder` runs, asked of this node: the stream
/// from the holder, passed through as it arrives, until the holder's stream ends or the
/// client leaves (actix drops the response, and with it the connection to the holder). 409
/// when the request was forwarded already, or the holder has no usable address or is not
/// live; 502 `node_unreachable` when it cannot be reached or refuses.
pub async fn watch(
    request: &HttpRequest,
    holder: &Instance,
    asking: Asking<'_>,
    (name, id): (&AgentName, &SessionId),
) -> ApiResult<HttpResponse> {
    pass_through(request, holder, asking, (name, id), Limits::CLUSTER).await
}

async fn pass_through(
    request: &HttpRequest,
    holder: &Instance,
    asking: Asking<'_>,
    (name, id): (&AgentName, &SessionId),
    limits: Limits,
) -> ApiResult<HttpResponse> {
    let node = holder.described_to(asking.node);
    if let Some(by) = request.headers().get(FORWARDED) {
        let address = holder.address.as_deref().unwrap_or("none");
        let why = if by.as_bytes() == asking.instance.to_string().as_bytes() {
            format!(
                "this node forwarded it to itself: the address {node} registered ({address}) reaches this node, so give each node its own --advertise-url"
            )
        } else {
            format!(
                "it was forwarded here already, and is not forwarded again (if this repeats, the address {node} registered, {address}, reaches this node rather than that one)"
            )
        };
        return Err(ApiError::new(
            Code::Conflict,
            format!("the turn of session {id} runs on {node}; {why}; watch it through that node"),
        ));
    }
    let now = orbit_store::timestamp::now();
    let registered = holder.address.as_deref().filter(|_| holder.live_at(now));
    let Some(authority) = registered.and_then(authority_of) else {
        let what = match registered {
            Some(address) => format!("an address that is not http://host:port ({address})"),
            None => "no address".to_owned(),
        };
        return Err(ApiError::new(
            Code::Conflict,
            format!(
                "the turn of session {id} runs on {node}, which registered {what} the other nodes could reach it at (start it with --advertise-url or ORBIT_ADVERTISE_URL); watch it through that node"
            ),
        ));
    };
    let address = format!("http://{authority}");
    let path = format!("/api/agents/{name}/sessions/{id}/stream");
    let unreachable = |why: String| {
        ApiError::new(
            Code::NodeUnreachable,
            format!(
                "the turn of session {id} runs on {node}, which this node cannot reach at {address}: {why}"
            ),
        )
    };
    let uri = Uri::builder()
        .scheme("http")
        .authority(authority.as_str())
        .path_and_query(path.as_str())
        .build()
        .map_err(|err| unreachable(err.to_string()))?;
    let client = awc::Client::builder()
        .connector(awc::Connector::new().timeout(limits.connect))
        .timeout(limits.head)
        .disable_redirects()
        .finish();
    let mut forwarded = client
        .get(uri)
        .insert_header((FORWARDED, asking.instance.to_string()))
        .insert_header((header::ACCEPT, "text/event-stream"));
    if let Some(token) = asking.token {
        let secs = crate::node_proof::unix_now();
        if let Some(proof) = crate::node_proof::sign(token, holder.id, &path, secs) {
            forwarded = forwarded.insert_header((crate::node_proof::HEADER, proof));
        }
    }
    let mut answer = forwarded.send().await.map_err(|err| unreachable(err.to_string()))?;
    let media_type =
        answer.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let is_stream = media_type
        .as_deref()
        .and_then(|value| value.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("text/event-stream"));
    let status = answer.status();
    if status == StatusCode::OK && is_stream {
        let lost = format!("the stream from {node} at {address} broke off");
        return Ok(HttpResponse::Ok()
            .insert_header((header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream")))
            // The headers of this node's own event streams (`actix_web_lab::sse`), none of the
            // other node's.
            .insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-cache")))
            .insert_header((header::CONTENT_ENCODING, HeaderValue::from_static("identity")))
            .streaming(whole_events(Box::pin(answer), limits.idle, lost)));
    }
    // The body has no time limit of awc's own: a holder that sends a head and stalls must not
    // hold this answer.
    let read = tokio::time::timeout(limits.head, answer.body().limit(ERROR_BODY_LIMIT)).await;
    let body = read.ok().and_then(Result::ok).unwrap_or_default();
    let said: Option<ErrorAnswer> = serde_json::from_slice(&body).ok();
    Err(match (status, said) {
        // The turn ended meanwhile, or moved: the holder's own words say so.
        (StatusCode::NOT_FOUND, Some(said)) => ApiError::not_found(said.error),
        (StatusCode::CONFLICT, Some(said)) => ApiError::new(Code::Conflict, said.error),
        // Its database is away: worth retrying, as this node's own 503 is.
        (StatusCode::SERVICE_UNAVAILABLE, Some(said)) => ApiError::new(
            Code::StoreUnavailable,
            format!("the turn of session {id} runs on {node}, which answered: {}", said.error),
        ),
        (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN, _) => unreachable(format!(
            "it refused the forwarded request ({status}): the nodes of a cluster must share one API token, and each must answer to the host of its advertised address (--allowed-host)"
        )),
        (StatusCode::OK, _) => unreachable(format!(
            "it answered 200 with {} rather than an event stream",
            media_type.as_deref().unwrap_or("no Content-Type")
        )),
        (status, _) => unreachable(format!("it answered {status}")),
    })
}

/// The `host:port` of a registered address, `http://host:port` (what every node registers);
/// `None` for anything else, so that nothing stored can change where or what is asked.
fn authority_of(address: &str) -> Option<String> {
    let rest = address.strip_prefix("http://")?;
    let uri: Uri = address.parse().ok()?;
    let authority = uri.authority()?;
    let whole = authority.as_str() == rest.trim_end_matches('/');
    (whole && !rest.contains('@') && authority.port_u16().is_some_and(|port| port != 0))
        .then(|| authority.as_str().to_owned())
}

/// The holder's stream, passed on in whole events: bytes up to the last blank line received.
/// When it breaks off, stops sending for `idle`, or ends mid-event, the watcher is sent one
/// `error` event saying so (`lost`), and the stream ends.
fn whole_events<S, E>(
    upstream: S,
    idle: Duration,
    lost: String,
) -> impl Stream<Item = Result<Bytes, actix_web::Error>>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let start = Some((upstream, BytesMut::new(), lost));
    futures_util::stream::unfold(start, move |state| async move {
        let (mut upstream, mut pending, lost) = state?;
        loop {
            let why = match tokio::time::timeout(idle, upstream.next()).await {
                Ok(Some(Ok(chunk))) => {
                    // What was held before has no blank line (it would have been sent), so
                    // only the new bytes and the last one before them are searched.
                    let from = pending.len().saturating_sub(1);
                    pending.extend_from_slice(&chunk);
                    if let Some(end) = events_end(&pending, from) {
                        let events = pending.split_to(end).freeze();
                        return Some((Ok(events), Some((upstream, pending, lost))));
                    }
                    if pending.len() <= EVENT_LIMIT {
                        continue;
                    }
                    format!("an event was larger than {EVENT_LIMIT} bytes")
                }
                Ok(None) if pending.is_empty() => return None,
                Ok(None) => "it ended in the middle of an event".to_owned(),
                Ok(Some(Err(err))) => err.to_string(),
                Err(_) => format!("it sent nothing for {} s", idle.as_secs_f32()),
            };
            let message = format!("{lost}: {why}; the turn may still be running, watch it again");
            let event = serde_json::json!({ "type": "error", "message": message });
            return Some((Ok(Bytes::from(format!("data: {event}\n\n"))), None));
        }
    })
}

/// Where the last whole event in `pending` ends: just past its last blank line, searched
/// for from `from` on.
fn events_end(pending: &[u8], from: usize) -> Option<usize> {
    let searched = pending.get(from..)?;
    searched.windows(2).rposition(|pair| pair == b"\n\n").map(|at| from + at + 2)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::io::{Read, Write};
    use std::sync::mpsc;

    use orbit_store::NodeIdentity;

    use super::*;

    fn holder(address: Option<&str>, alive_for: time::Duration) -> Instance {
        let now = orbit_store::timestamp::now();
        let node = NodeIdentity { name: "worker-a".into(), data_dir: "dir-a".into() };
        Instance::registered(InstanceId::new(), "box", 7, &node, address, now, now + alive_for)
    }

    fn asking(token: Option<&str>) -> Asking<'_> {
        Asking { node: "worker-b", instance: InstanceId::new(), token }
    }

    /// Short limits, so that the tests of a stalled holder take a second rather than a minute.
    const SHORT: Limits = Limits {
        connect: Duration::from_secs(2),
        head: Duration::from_secs(1),
        idle: Duration::from_secs(1),
    };

    async fn watched(request: HttpRequest, holder: &Instance) -> ApiError {
        let (name, id) = (AgentName::parse("bot").unwrap(), SessionId::new());
        match watch(&request, holder, asking(None), (&name, &id)).await {
            Ok(_) => panic!("no node listens: nothing may be streamed"),
            Err(err) => err,
        }
    }

    /// A fake holder on a loopback port: it reads one request's head, hands it to the test,
    /// writes `answer` piece by piece, then waits for the client to close the connection and
    /// tells the test when it did.
    struct FakeHolder {
        instance: Instance,
        request: mpsc::Receiver<String>,
        closed: mpsc::Receiver<()>,
    }

    enum Piece {
        Send(&'static [u8]),
        /// 3 s, longer than `SHORT`'s limits.
        Pause,
        /// The holder dies: its socket closes.
        Die,
    }
    use Piece::{Die, Pause, Send};

    fn fake_holder(answer: Vec<Piece>) -> FakeHolder {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        let (request_tx, request) = mpsc::channel();
        let (closed_tx, closed) = mpsc::channel();
        std::thread::spawn(move || {
            let (mut socket, _) = listener.accept().unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && socket.read(&mut byte).unwrap() == 1 {
                head.push(byte[0]);
            }
            request_tx.send(String::from_utf8(head).unwrap()).unwrap();
            for piece in answer {
                match piece {
                    Send(bytes) => {
                        if socket.write_all(bytes).is_err() {
                            break;
                        }
                    }
                    Pause => std::thread::sleep(Duration::from_secs(3)),
                    Die => return,
                }
            }
            socket.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            if matches!(socket.read(&mut [0u8; 64]), Ok(0) | Err(_)) {
                let _ = closed_tx.send(());
            }
        });
        FakeHolder {
            instance: holder(Some(&address), time::Duration::seconds(30)),
            request,
            closed,
        }
    }

    const STREAM_HEAD: &[u8] =
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";

    async fn passed_through(holder: &Instance, token: Option<&str>) -> ApiResult<HttpResponse> {
        let (name, id) = (AgentName::parse("bot").unwrap(), SessionId::new());
        let request = actix_web::test::TestRequest::default().to_http_request();
        pass_through(&request, holder, asking(token), (&name, &id), SHORT).await
    }

    async fn body_of(response: HttpResponse) -> String {
        let body = actix_web::body::to_bytes(response.into_body());
        let body = tokio::time::timeout(Duration::from_secs(20), body).await.unwrap();
        String::from_utf8(body.unwrap().to_vec()).unwrap()
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

    /// A request this node forwarded to itself says that the holder's address reaches it.
    #[actix_web::test]
    async fn a_request_forwarded_to_this_node_itself_says_the_address_is_wrong() {
        let reachable = holder(Some("http://127.0.0.1:9"), time::Duration::seconds(30));
        let this = asking(None);
        let request = actix_web::test::TestRequest::default()
            .insert_header((FORWARDED, this.instance.to_string()))
            .to_http_request();
        let (name, id) = (AgentName::parse("bot").unwrap(), SessionId::new());
        let err = watch(&request, &reachable, this, (&name, &id)).await.err().unwrap();
        assert_eq!(err.code, Code::Conflict);
        assert!(err.message.contains("forwarded it to itself"), "{}", err.message);
        assert!(err.message.contains("http://127.0.0.1:9"), "{}", err.message);
    }

    /// Only `http://host:port` is an address: nothing stored can change the path asked.
    #[test]
    fn only_http_host_and_port_is_an_address() {
        assert_eq!(authority_of("http://node-1:3001").as_deref(), Some("node-1:3001"));
        assert_eq!(authority_of("http://10.0.0.1:3001/").as_deref(), Some("10.0.0.1:3001"));
        assert_eq!(authority_of("http://[::1]:3001").as_deref(), Some("[::1]:3001"));
        for bad in [
            "http://node-1:3001#",
            "http://node-1:3001/#x",
            "http://node-1:3001/x",
            "http://node-1:3001?x",
            "http://u@node-1:3001",
            "http://node-1",
            "http://node-1:0",
            "http://node-1:99999",
            "https://node-1:3001",
            "node-1:3001",
        ] {
            assert_eq!(authority_of(bad), None, "{bad}");
        }
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

    /// The holder is sent a proof for its own instance and the stream's path, never a token,
    /// and its stream is passed on as it sent it.
    #[actix_web::test]
    async fn the_holder_gets_a_proof_not_the_token_and_its_stream_is_passed_on() {
        let fake =
            fake_holder(vec![Send(STREAM_HEAD), Send(b"f\r\ndata: {\"a\":1}\n\n\r\n0\r\n\r\n")]);
        let (name, id) = (AgentName::parse("bot").unwrap(), SessionId::new());
        let request = actix_web::test::TestRequest::default()
            .insert_header((header::AUTHORIZATION, "Bearer secret"))
            .to_http_request();
        let response =
            pass_through(&request, &fake.instance, asking(Some("secret")), (&name, &id), SHORT)
                .await
                .unwrap();
        assert_eq!(body_of(response).await, "data: {\"a\":1}\n\n");
        let head = fake.request.recv().unwrap().to_lowercase();
        assert!(!head.contains("secret") && !head.contains("authorization"), "{head}");
        let path = format!("/api/agents/bot/sessions/{id}/stream");
        assert!(head.starts_with(&format!("get {} http/1.1", path.to_lowercase())), "{head}");
        let proof = head
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{}: ", crate::node_proof::HEADER)))
            .unwrap();
        let now = crate::node_proof::unix_now();
        assert!(crate::node_proof::verifies("secret", fake.instance.id, &path, proof, now));
    }

    /// An error head whose body never comes is answered within the head limit.
    #[actix_web::test]
    async fn an_error_answer_whose_body_stalls_is_answered() {
        let fake = fake_holder(vec![
            Send(b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n"),
            Pause,
        ]);
        let asked = passed_through(&fake.instance, None);
        let answered = tokio::time::timeout(Duration::from_secs(2), asked).await;
        let err = answered.expect("answered within the head limit").err().unwrap();
        assert_eq!(err.code, Code::NodeUnreachable, "{}", err.message);
    }

    /// An event split across chunks anywhere, its blank line too, is passed on whole.
    #[actix_web::test]
    async fn events_split_anywhere_are_passed_on_whole() {
        let events: &[u8] = b"data: {\"a\":1}\n\n: keep-alive\n\ndata: {\"b\":2}\n\n";
        for cut in 1..events.len() {
            let (head, tail) = events.split_at(cut);
            let pieces = vec![
                Ok::<_, String>(Bytes::copy_from_slice(head)),
                Ok(Bytes::copy_from_slice(tail)),
            ];
            let passed =
                whole_events(futures_util::stream::iter(pieces), SHORT.idle, String::new());
            let sent: Vec<Bytes> = passed.map(Result::unwrap).collect().await;
            assert_eq!(sent.concat(), events, "cut at {cut}");
            for piece in &sent {
                assert!(piece.ends_with(b"\n\n"), "cut at {cut}: half an event {piece:?}");
            }
        }
    }

    /// A holder whose database is away answers 503, passed on as such: worth retrying.
    #[actix_web::test]
    async fn a_holder_without_its_database_is_store_unavailable_not_unreachable() {
        let fake = fake_holder(vec![Send(
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: 46\r\n\r\n{\"error\":\"db away\",\"code\":\"store_unavailable\"}",
        )]);
        let err = passed_through(&fake.instance, None).await.err().unwrap();
        assert_eq!(err.code, Code::StoreUnavailable, "{}", err.message);
        assert!(err.message.contains("node 'worker-a'") && err.message.contains("db away"));
    }

    /// A holder that sends the stream's head and goes silent ends the stream with an error
    /// event once the idle limit passes.
    #[actix_web::test]
    async fn a_silent_holder_ends_the_passed_through_stream_with_an_error() {
        let fake = fake_holder(vec![Send(STREAM_HEAD), Pause]);
        let response = passed_through(&fake.instance, None).await.unwrap();
        let body = body_of(response).await;
        assert!(body.starts_with("data: {") && body.ends_with("}\n\n"), "{body}");
        assert!(body.contains(r#""type":"error""#), "{body}");
        assert!(body.contains("sent nothing for 1 s"), "{body}");
    }

    /// A holder that dies mid-event: the whole events before it are passed on, the half one
    /// is not, and an error event says the stream broke off.
    #[actix_web::test]
    async fn a_holder_that_dies_mid_event_is_an_error_event_not_half_an_event() {
        let fake = fake_holder(vec![
            Send(STREAM_HEAD),
            Send(b"18\r\ndata: {\"a\":1}\n\ndata: {\"b\"\r\n"),
            Die,
        ]);
        let response = passed_through(&fake.instance, None).await.unwrap();
        let body = body_of(response).await;
        let (first, rest) = body.split_at("data: {\"a\":1}\n\n".len());
        assert_eq!(first, "data: {\"a\":1}\n\n");
        assert!(!rest.contains("\"b\""), "half an event passed on: {body}");
        assert!(rest.contains(r#""type":"error""#), "{body}");
        assert!(rest.contains("broke off") && !rest.contains("sent nothing"), "{body}");
    }

    /// A watcher that leaves closes the connection to the holder.
    #[actix_web::test]
    async fn a_watcher_leaving_closes_the_connection_to_the_holder() {
        let fake = fake_holder(vec![Send(STREAM_HEAD), Send(b"7\r\n: hi\n\n\r\n")]);
        let response = passed_through(&fake.instance, None).await.unwrap();
        let mut body = response.into_body();
        let first = std::future::poll_fn(|cx| {
            actix_web::body::MessageBody::poll_next(std::pin::Pin::new(&mut body), cx)
        });
        assert_eq!(&first.await.unwrap().unwrap()[..], b": hi\n\n");
        drop(body);
        let closed = fake.closed;
        let closed =
            tokio::task::spawn_blocking(move || closed.recv_timeout(Duration::from_secs(10)));
        assert!(closed.await.unwrap().is_ok(), "the holder's connection stays open");
    }
}
