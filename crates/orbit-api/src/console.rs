//! The web console: a page and its scripts, embedded in the binary and served at `/`, so a
//! person who starts Orbit has a browser client without installing or building anything.
//!
//! The files under `console/` are served as they are (plain HTML, CSS and JavaScript
//! modules; no build step). They hold no data, so they are served without the token; the
//! page asks for the token and sends it as a bearer header on every API request. Each is
//! served under one exact path with a strict Content-Security-Policy: only this server's own
//! scripts, styles and connections, no inline script, no framing.

use actix_web::http::header;
use actix_web::{HttpResponse, web};

/// The console's files: (path, content type, body).
const FILES: &[(&str, &str, &str)] = &[
    ("/", "text/html; charset=utf-8", include_str!("../console/index.html")),
    ("/console/style.css", "text/css; charset=utf-8", include_str!("../console/style.css")),
    ("/console/icon.svg", "image/svg+xml", include_str!("../console/icon.svg")),
    ("/console/js/app.js", JS, include_str!("../console/js/app.js")),
    ("/console/js/api.js", JS, include_str!("../console/js/api.js")),
    ("/console/js/ui.js", JS, include_str!("../console/js/ui.js")),
    ("/console/js/agents.js", JS, include_str!("../console/js/agents.js")),
    ("/console/js/sessions.js", JS, include_str!("../console/js/sessions.js")),
    ("/console/js/chat.js", JS, include_str!("../console/js/chat.js")),
    ("/console/js/turn.js", JS, include_str!("../console/js/turn.js")),
    ("/console/js/approvals.js", JS, include_str!("../console/js/approvals.js")),
    ("/console/js/inbox.js", JS, include_str!("../console/js/inbox.js")),
    ("/console/js/tasks.js", JS, include_str!("../console/js/tasks.js")),
    ("/console/js/worktrees.js", JS, include_str!("../console/js/worktrees.js")),
];

const JS: &str = "text/javascript; charset=utf-8";

/// Nothing but this server's own files and API; no inline script or style, no frames.
const POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
                      connect-src 'self'; object-src 'none'; base-uri 'none'; \
                      form-action 'self'; frame-ancestors 'none'";

/// Whether `path` is one of the console's files, which need no token. Exact paths only, like
/// `/health`: no spelling of an API route is one of them.
pub fn is_console_file(path: &str) -> bool {
    FILES.iter().any(|(file, _, _)| *file == path)
}

/// Registers a GET route for each file.
pub fn register(cfg: &mut web::ServiceConfig) {
    for (path, content_type, body) in FILES {
        cfg.route(
            path,
            web::get().to(move || async move {
                HttpResponse::Ok()
                    .insert_header((header::CONTENT_TYPE, *content_type))
                    .insert_header((header::CONTENT_SECURITY_POLICY, POLICY))
                    .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
                    .insert_header((header::REFERRER_POLICY, "no-referrer"))
                    .insert_header((header::X_FRAME_OPTIONS, "DENY"))
                    // A new binary serves new files; the browser asks again each time.
                    .insert_header((header::CACHE_CONTROL, "no-cache"))
                    .body(*body)
            }),
        );
    }
}
