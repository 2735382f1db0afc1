//! # orbit-api
//!
//! Orbit's HTTP surface. This is the only crate that knows HTTP: it parses requests into the
//! library crates' types, calls them, and maps their error kinds to statuses and the
//! `{error, code}` body.

use std::sync::Arc;

use actix_web::{HttpResponse, web};
use orbit_store::Stores;
use serde_json::json;

/// Everything the handlers need, registered once as `web::Data<AppState>`.
#[derive(Clone)]
pub struct AppState {
    pub stores: Stores,
}

/// Registers every route.
pub fn configure(state: Arc<AppState>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(web::Data::from(state)).route("/health", web::get().to(health));
    }
}

async fn health() -> HttpResponse {
    let timestamp = orbit_store::timestamp::now()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    HttpResponse::Ok().json(json!({ "status": "ok", "timestamp": timestamp }))
}
