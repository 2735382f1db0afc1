//! One module per resource; each registers its routes.

pub mod agents;
pub mod chat;
pub mod inbox;
pub mod sessions;
pub mod tasks;
pub mod worktrees;

use crate::endpoint::Endpoint;

/// Every endpoint of the API, in one table.
pub fn endpoints() -> Vec<Endpoint> {
    let mut all = vec![
        Endpoint::new("GET", "/health", "Health check (never needs a token)", || {
            actix_web::web::get().to(crate::health)
        }),
        Endpoint::new("GET", "/api/openapi.json", "This OpenAPI document", || {
            actix_web::web::get().to(crate::openapi)
        }),
    ];
    all.extend(agents::endpoints());
    all.extend(sessions::endpoints());
    all.extend(inbox::endpoints());
    all.extend(tasks::endpoints());
    all.extend(chat::endpoints());
    all.extend(worktrees::endpoints());
    all
}
