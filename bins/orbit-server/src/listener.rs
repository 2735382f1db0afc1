//! The HTTP listener: actix's server and HTTP/1.1 service, with every connection wrapped so
//! that the answers the connection gives on its own are `{error, code}` like all the others.
//!
//! actix-http answers a request head that does not parse (400), is too large (431) or does not
//! arrive in time (408) itself, before any route or middleware sees it, with an empty body,
//! and has no hook to change that. [`JsonErrorBodies`] wraps the socket and, when such an
//! answer is written, writes the same status with Orbit's JSON body in its place.

use std::io;
use std::net::TcpListener;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use actix_http::HttpService;
use actix_server::Server;
use actix_service::{ServiceFactoryExt, fn_service, map_config};
use actix_web::dev::AppConfig;
use actix_web::rt::net::TcpStream;
use actix_web::web::Data;
use orbit_api::AppState;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How the listener serves.
pub struct ListenerOptions {
    pub workers: usize,
    /// Connections served at once, over all workers.
    pub max_connections: usize,
    /// How long a request head may take to arrive.
    pub header_timeout: Duration,
}

/// Serves the API on `listener` until the returned server is stopped. Signals are left to the
/// caller, which stops things in order.
pub fn serve(
    listener: TcpListener,
    state: Data<AppState>,
    options: ListenerOptions,
) -> io::Result<Server> {
    let local = listener.local_addr()?;
    let workers = options.workers.max(1);
    let builder = Server::build();
    // Tells idle keep-alive connections to close when the server stops, as HttpServer does,
    // so that a stop does not wait out the shutdown timeout for them.
    let stopping = builder.graceful_shutdown_signal();
    builder
        .workers(workers)
        // actix counts connections per worker.
        .max_concurrent_connections(options.max_connections.div_ceil(workers).max(1))
        // Signals are handled by `run_until_stopped`, which stops things in order.
        .disable_signals()
        // Chat streams end with their turns, which the pool ends within its deadline.
        .shutdown_timeout(2)
        .listen("orbit-api", listener, move || {
            let app = orbit_api::app(state.clone());
            let stopping = stopping.clone();
            // `graceful_shutdown_signal` is doc-hidden in actix-http (it is HttpServer's own
            // hook), so check it still works after an actix-http upgrade: SIGTERM with an idle
            // keep-alive connection open exits at once, not after the 2 s shutdown timeout.
            let http = HttpService::build()
                .graceful_shutdown_signal(move || {
                    let stopping = stopping.clone();
                    async move { stopping.notified().await }
                })
                .client_request_timeout(options.header_timeout)
                .client_disconnect_timeout(Duration::from_secs(1))
                .local_addr(local)
                // The API reads neither `connection_info` nor the app config's address, so
                // the default config stands in for actix-web's own (which is crate-private).
                .h1(map_config(app, |_| AppConfig::default()));
            fn_service(|stream: TcpStream| async move {
                // Small answers and SSE events go out at once rather than waiting for more.
                let _ = stream.set_nodelay(true);
                let peer = stream.peer_addr().ok();
                Ok::<_, actix_http::error::DispatchError>((JsonErrorBodies::new(stream), peer))
            })
            .and_then(http)
        })
        .map(actix_server::ServerBuilder::run)
}

/// A connection whose connection-level error answers are given Orbit's JSON body.
pub struct JsonErrorBodies<S> {
    inner: S,
    /// A rewritten answer not yet fully written, and how much of it is.
    pending: Vec<u8>,
    written: usize,
    /// How many of the caller's bytes `pending` stands for. They are taken only once all of
    /// `pending` is written: until then the caller still holds them, so it neither drops the
    /// connection thinking all is sent nor stops calling.
    claimed: usize,
}

impl<S> JsonErrorBodies<S> {
    pub fn new(inner: S) -> Self {
        Self { inner, pending: Vec::new(), written: 0, claimed: 0 }
    }
}

impl<S: AsyncWrite + Unpin> JsonErrorBodies<S> {
    /// Writes what is left of a rewritten answer; ready once all of it is written.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.pending.len() {
            let n =
                ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.pending.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for JsonErrorBodies<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for JsonErrorBodies<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.pending.is_empty() {
            match with_json_body(buf) {
                Some(rewritten) => {
                    this.pending = rewritten;
                    this.claimed = buf.len();
                }
                None => return Pin::new(&mut this.inner).poll_write(cx, buf),
            }
        }
        // A write that returned Pending is called again with the same bytes (actix's
        // dispatcher keeps them in its buffer), so they are taken once the replacement is out.
        ready!(this.drain(cx))?;
        Poll::Ready(Ok(std::mem::take(&mut this.claimed).min(buf.len())))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // A replacement still pending belongs to a write the caller has not seen complete; it
        // goes on with that write, not here.
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// `bytes` with an empty-bodied 400, 408 or 431 answer at their end given Orbit's JSON body,
/// or `None` when they end otherwise.
///
/// Only actix-http's own connection errors look like this: every answer of Orbit's routes with
/// these statuses carries a body, and actix writes such an error last, when it is about to
/// close the connection, so it ends the write (answers to pipelined requests, of any kind, may
/// come before it). The head must be exactly one, from a status line with the status's own
/// reason phrase to the blank line that ends the write; bodies Orbit writes are JSON or SSE,
/// which hold no raw CR LF, so none can pass for one.
fn with_json_body(bytes: &[u8]) -> Option<Vec<u8>> {
    let without_end = bytes.strip_suffix(b"\r\n\r\n")?;
    let start = rfind(without_end, b"HTTP/1.1 ")?;
    if find(&without_end[start..], b"\r\n\r\n").is_some() {
        return None;
    }
    let answer = json_answer(&bytes[start..])?;
    let mut out = Vec::with_capacity(start + answer.len());
    out.extend_from_slice(&bytes[..start]);
    out.extend_from_slice(&answer);
    Some(out)
}

/// The whole answer for an empty-bodied connection error's `head`, or `None` for any other.
fn json_answer(head: &[u8]) -> Option<Vec<u8>> {
    let status_line = lines(head).next()?;
    let status = match status_line {
        b"HTTP/1.1 400 Bad Request" => 400,
        b"HTTP/1.1 408 Request Timeout" => 408,
        b"HTTP/1.1 431 Request Header Fields Too Large" => 431,
        _ => return None,
    };
    if header_value(head, b"content-length")? != "0" {
        return None;
    }
    let (_, body) = orbit_api::connection_error_body(status)?;
    let mut out = Vec::with_capacity(head.len() + body.len() + 64);
    for line in lines(head) {
        if !line.to_ascii_lowercase().starts_with(b"content-length:") {
            out.extend_from_slice(line);
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(b"content-type: application/json\r\n");
    out.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
    out.extend_from_slice(&body);
    Some(out)
}

/// The lines of a head, without their line ends and without the blank line that ends it.
fn lines(head: &[u8]) -> impl Iterator<Item = &[u8]> {
    head.split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .filter(|line| !line.is_empty())
}

/// The value of the header `name` (lower case) in `head`.
fn header_value<'a>(head: &'a [u8], name: &[u8]) -> Option<&'a str> {
    lines(head).skip(1).find_map(|line| {
        let colon = line.iter().position(|&b| b == b':')?;
        let (key, value) = line.split_at(colon);
        if !key.eq_ignore_ascii_case(name) {
            return None;
        }
        std::str::from_utf8(&value[1..]).ok().map(str::trim)
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

fn rfind(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).rposition(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(answer: &[u8]) -> (String, serde_json::Value) {
        let at = find(answer, b"\r\n\r\n").unwrap() + 4;
        let head = String::from_utf8(answer[..at].to_vec()).unwrap();
        (head, serde_json::from_slice(&answer[at..]).unwrap())
    }

    #[test]
    fn an_empty_408_gets_the_json_body_with_its_length() {
        let raw = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\ndate: Tue, 01 Dec 2026 07:00:00 GMT\r\n\r\n";
        let rewritten = with_json_body(raw).unwrap();
        let (head, body) = split(&rewritten);
        assert!(head.starts_with("HTTP/1.1 408 Request Timeout\r\n"), "{head}");
        assert!(head.contains("connection: close\r\n"), "{head}");
        assert!(head.contains("content-type: application/json\r\n"), "{head}");
        let length = format!("content-length: {}\r\n", rewritten.len() - head.len());
        assert!(head.contains(&length), "{head}");
        assert!(!head.contains("content-length: 0\r\n"), "{head}");
        assert_eq!(body["code"], "request_timeout");
    }

    #[test]
    fn the_parsers_400_and_the_431_get_their_codes() {
        for (raw, code) in [
            (&b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n"[..], "malformed_request"),
            (
                &b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n"[..],
                "headers_too_large",
            ),
        ] {
            let (_, body) = split(&with_json_body(raw).unwrap());
            assert_eq!(body["code"], code);
        }
    }

    #[test]
    fn answers_with_bodies_and_other_statuses_pass_untouched() {
        let json_400 = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\n{}";
        assert!(with_json_body(json_400).is_none());
        assert!(with_json_body(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_none());
        assert!(with_json_body(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n").is_none());
        // A head cut short is left alone rather than guessed at.
        assert!(with_json_body(b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\n").is_none());
    }

    #[test]
    fn an_error_after_pipelined_answers_of_any_kind_is_found() {
        let raw = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n";
        let rewritten = with_json_body(raw).unwrap();
        assert!(
            rewritten.starts_with(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}HTTP/1.1 400")
        );
        let (_, body) = split(&rewritten[find(&rewritten, b"HTTP/1.1 400").unwrap()..]);
        assert_eq!(body["code"], "malformed_request");
        // A HEAD answer (a length and no body), a 100 Continue and a stream before it.
        for before in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: 84\r\n\r\n"[..],
            b"HTTP/1.1 100 Continue\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
        ] {
            let raw = [before, b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n"].concat();
            let rewritten = with_json_body(&raw).unwrap();
            assert!(rewritten.starts_with(before));
            let (_, body) = split(&rewritten[before.len()..]);
            assert_eq!(body["code"], "malformed_request");
        }
    }

    #[test]
    fn a_body_holding_head_text_is_not_taken_for_a_head() {
        // Text that starts like a head but is followed by a real answer's head.
        let raw = b"HTTP/1.1 400 x\"}HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
        assert!(with_json_body(raw).is_none());
        // An error head that is not the last thing written.
        let raw = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
        assert!(with_json_body(raw).is_none());
        // A reason phrase other than actix's own.
        assert!(with_json_body(b"HTTP/1.1 400 Nope\r\ncontent-length: 0\r\n\r\n").is_none());
    }

    /// A writer that takes at most `step` bytes per call and is Pending every other call.
    struct Trickle {
        out: Vec<u8>,
        step: usize,
        ready: bool,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.ready = !self.ready;
            if !self.ready {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let n = buf.len().min(self.step);
            self.out.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_rewritten_answer_is_taken_only_once_all_of_it_is_written() {
        use tokio::io::AsyncWriteExt;
        let raw = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\n\r\n";
        let mut conn = JsonErrorBodies::new(Trickle { out: Vec::new(), step: 7, ready: false });
        // Like actix's dispatcher: write what is left of the buffer until all is taken.
        let mut taken = 0;
        while taken < raw.len() {
            let n = conn.write(&raw[taken..]).await.unwrap();
            // The caller's bytes are taken whole, and only once the replacement is all out.
            assert!(n == 0 || taken + n == raw.len() || conn.pending.is_empty());
            taken += n;
        }
        assert!(conn.pending.is_empty());
        assert_eq!(conn.inner.out, with_json_body(raw).unwrap());
    }
}
