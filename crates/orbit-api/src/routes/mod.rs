//! One module per resource; each registers its routes.

pub mod agents;
pub mod approvals;
pub mod chat;
pub mod events;
pub mod inbox;
pub mod nodes;
pub mod sessions;
pub mod tasks;
pub mod turns;
pub mod worktrees;

use crate::endpoint::Endpoint;

/// Every endpoint of the API, in one table.
pub fn endpoints() -> Vec<Endpoint> {
    let mut all = vec![
        Endpoint::new::<crate::views::HealthView>(
            "GET",
            "/health",
            "health",
            "Health check (never needs a token)",
            || actix_web::web::get().to(crate::health),
        )
        .infallible(),
        Endpoint::new::<OpenApiDocument>(
            "GET",
            "/api/openapi.json",
            "openapi",
            "This OpenAPI document",
            || actix_web::web::get().to(crate::openapi),
        )
        .infallible(),
    ];
    all.extend(agents::endpoints());
    all.extend(sessions::endpoints());
    all.extend(inbox::endpoints());
    all.extend(tasks::endpoints());
    all.extend(chat::endpoints());
    all.extend(worktrees::endpoints());
    all.extend(approvals::endpoints());
    all.extend(turns::endpoints());
    all.extend(events::endpoints());
    all.extend(nodes::endpoints());
    all
}

/// An OpenAPI 3.1 document, described no further.
pub struct OpenApiDocument;

impl schemars::JsonSchema for OpenApiDocument {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "OpenApiDocument".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        crate::wire::schema(serde_json::json!({
            "type": "object",
            "required": ["openapi", "info", "paths"],
            "properties": {"openapi": {"const": "3.1.0"}},
            "additionalProperties": true,
            "description": "An OpenAPI 3.1 document (https://spec.openapis.org/oas/v3.1.0).",
        }))
    }
}
