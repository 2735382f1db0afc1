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
}

impl<S> JsonErrorBodies<S> {
    pub fn new(inner: S) -> Self {
        Self { inner, pending: Vec::new(), written: 0 }
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
        ready!(this.drain(cx))?;
        if let Some(rewritten) = with_json_body(buf) {
            this.pending = rewritten;
            // The caller's bytes are taken whole: what is left of their replacement is written
            // before anything else, by the next write, flush or shutdown.
            if let Poll::Ready(Err(err)) = this.drain(cx) {
                return Poll::Ready(Err(err));
            }
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.drain(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.drain(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// `bytes` with an empty-bodied 400, 408 or 431 answer given Orbit's JSON body, or `None`
/// when they hold none.
///
/// Only actix-http's own connection errors look like this: every answer of Orbit's routes with
/// these statuses carries a body. The answers in `bytes` are followed from the start of the
/// write, each head to its end and over its `content-length`, so only a real answer head is
/// ever matched (a write that starts mid-answer, or an answer of unknown length, ends the
/// search). Pipelined requests put earlier answers before the error in the same write.
fn with_json_body(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut at = 0;
    while at < bytes.len() {
        let rest = &bytes[at..];
        if !rest.starts_with(b"HTTP/1.1 ") {
            return None;
        }
        let head_len = find(rest, b"\r\n\r\n")? + 4;
        let head = &rest[..head_len];
        if let Some(answer) = json_answer(head) {
            let mut out = Vec::with_capacity(bytes.len() + answer.len());
            out.extend_from_slice(&bytes[..at]);
            out.extend_from_slice(&answer);
            out.extend_from_slice(&rest[head_len..]);
            return Some(out);
        }
        at += head_len + header_value(head, b"content-length")?.parse::<usize>().ok()?;
    }
    None
}

/// The whole answer for an empty-bodied connection error's `head`, or `None` for any other.
fn json_answer(head: &[u8]) -> Option<Vec<u8>> {
    let status_line = head.strip_prefix(b"HTTP/1.1 ")?;
    let status = std::str::from_utf8(status_line.get(..3)?).ok()?.parse::<u16>().ok()?;
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
        // A body that happens to hold such text, written on its own, is not a head.
        assert!(with_json_body(b"data: HTTP/1.1 400 x\r\ncontent-length: 0\r\n\r\n").is_none());
        // A head cut short is left alone rather than guessed at.
        assert!(with_json_body(b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\n").is_none());
    }

    #[test]
    fn an_error_after_pipelined_answers_is_found_by_their_lengths() {
        let raw = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n";
        let rewritten = with_json_body(raw).unwrap();
        assert!(
            rewritten.starts_with(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}HTTP/1.1 400")
        );
        let (_, body) = split(&rewritten[find(&rewritten, b"HTTP/1.1 400").unwrap()..]);
        assert_eq!(body["code"], "malformed_request");
        // An answer of unknown length (a stream) ends the search rather than guessing.
        let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\nHTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n";
        assert!(with_json_body(chunked).is_none());
    }

    #[test]
    fn bytes_after_the_answer_are_kept() {
        let raw = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\nrest";
        assert!(with_json_body(raw).unwrap().ends_with(b"}rest"));
    }
}
