//! # orbit-api
//!
//! Orbit's HTTP surface (`../shared/contract/API.md`). This is the only crate that knows HTTP:
//! it parses requests into the library crates' types before any store is touched, calls them,
//! and maps their error kinds to statuses and the `{error, code}` body (`error`).

mod body;
mod client_stream;
mod console;
mod endpoint;
mod error;
mod extract;
mod forward;
mod guard;
mod listing;
mod middleware;
mod node_proof;
mod openapi;
mod page;
mod routes;
mod server_events;
mod views;
mod wire;

use actix_web::{HttpResponse, web};
use orbit_agent::AgentPool;
use orbit_store::Stores;

pub use error::{ApiError, Code, connection_error_body};
pub use guard::AllowedHosts;

/// Everything the handlers need, registered once as `web::Data<AppState>`.
pub struct AppState {
    pub stores: Stores,
    pub pool: AgentPool,
    /// Told of every task change, and runs tasks on demand.
    pub scheduler: orbit_scheduler::Scheduler,
    /// When set, every `/api` route needs `Authorization: Bearer <token>`.
    pub api_token: Option<String>,
    /// The largest request body accepted (413 past it).
    pub body_limit: usize,
    /// How long a request body may take to arrive (408 past it), so slow senders cannot
    /// hold connections open.
    pub body_read_timeout: std::time::Duration,
    /// How long a chat stream waits for a client that does not read before dropping it
    /// (the turn goes on).
    pub slow_client_timeout: std::time::Duration,
    /// The `Host` values the server answers to (`guard`).
    pub allowed_hosts: AllowedHosts,
    /// Which directories may be an agent's workdir.
    pub workdirs: orbit_agent::workdir::WorkdirPolicy,
    /// Whether every answer is logged at info (method, path, status, request id).
    pub access_log: bool,
}

/// Registers every route, the middleware and the JSON 404 on an `App`.
pub fn app(
    state: web::Data<AppState>,
) -> actix_web::App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    // One middleware: the request's span, the browser checks, the token, JSON errors.
    actix_web::App::new()
        .app_data(state)
        .wrap(actix_web::middleware::from_fn(middleware::gate))
        .configure(|cfg| endpoint::register(cfg, routes::endpoints()))
        .configure(console::register)
        .default_service(web::to(not_found))
}

async fn health() -> HttpResponse {
    HttpResponse::Ok()
        .json(views::HealthView { status: "ok", timestamp: orbit_store::timestamp::now() })
}

/// The OpenAPI document, built from the same table the routes are registered from.
pub fn openapi_document() -> serde_json::Value {
    openapi::document(&routes::endpoints())
}

async fn openapi() -> HttpResponse {
    HttpResponse::Ok().json(openapi_document())
}

async fn not_found(req: actix_web::HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::not_found(format!("no route for {} {}", req.method(), req.path())))
}
