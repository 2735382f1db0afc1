//! The endpoint table: every route is registered from it and documented from it, so the
//! OpenAPI document (`GET /api/openapi.json`) cannot miss a route.

use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, ResponseError, Route, web};
use serde_json::{Value, json};

/// One method on one path.
pub struct Endpoint {
    pub method: &'static str,
    /// An actix path pattern (`/api/agents/{name}`), which is also OpenAPI's.
    pub path: &'static str,
    pub summary: &'static str,
    /// The success status.
    pub status: u16,
    /// A JSON Schema of the request body, if it takes one.
    pub body: Option<Value>,
    pub route: fn() -> Route,
}

impl Endpoint {
    pub fn new(
        method: &'static str,
        path: &'static str,
        summary: &'static str,
        route: fn() -> Route,
    ) -> Self {
        Self { method, path, summary, status: 200, body: None, route }
    }

    pub fn status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    pub fn body(mut self, schema: Value) -> Self {
        self.body = Some(schema);
        self
    }
}

/// An object schema with these (name, type) properties, the `required` ones listed.
pub fn object(properties: &[(&str, &str)], required: &[&str]) -> Value {
    let properties: serde_json::Map<String, Value> =
        properties.iter().map(|(name, kind)| ((*name).to_owned(), json!({"type": kind}))).collect();
    json!({"type": "object", "properties": properties, "required": required, "additionalProperties": false})
}

/// Registers the endpoints, one actix resource per path.
pub fn register(cfg: &mut web::ServiceConfig, endpoints: Vec<Endpoint>) {
    let mut by_path: BTreeMap<&'static str, Vec<Endpoint>> = BTreeMap::new();
    for endpoint in endpoints {
        by_path.entry(endpoint.path).or_default().push(endpoint);
    }
    for (path, endpoints) in by_path {
        let allow = endpoints.iter().map(|endpoint| endpoint.method).collect::<Vec<_>>().join(", ");
        let resource = endpoints
            .iter()
            .fold(web::resource(path), |resource, endpoint| resource.route((endpoint.route)()))
            .default_service(web::to(move |req: HttpRequest| {
                let allow = allow.clone();
                async move { method_not_allowed(&req, allow) }
            }));
        cfg.service(resource);
    }
}

/// A known path asked with a method it does not have: 405 naming the ones it has.
fn method_not_allowed(req: &HttpRequest, allow: String) -> HttpResponse {
    let error = crate::ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} is not allowed on {}; allowed: {allow}", req.method(), req.path()),
    );
    let mut answer = error.error_response();
    if let Ok(allow) = actix_web::http::header::HeaderValue::from_str(&allow) {
        answer.headers_mut().insert(actix_web::http::header::ALLOW, allow);
    }
    answer
}

/// The OpenAPI 3.1 document of the endpoints.
pub fn openapi(endpoints: &[Endpoint]) -> Value {
    let error = json!({"description": "an error", "content": {"application/json": {"schema": object(&[("error", "string"), ("code", "string")], &["error", "code"])}}});
    let mut paths = serde_json::Map::new();
    for endpoint in endpoints {
        let parameters: Vec<Value> = endpoint
            .path
            .split('/')
            .filter_map(|segment| segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let mut operation = json!({
            "summary": endpoint.summary,
            "parameters": parameters,
            "responses": {
                endpoint.status.to_string(): {"description": endpoint.summary},
                "400": error, "401": error, "403": error, "404": error, "408": error, "409": error, "413": error, "415": error, "429": error, "500": error,
            },
        });
        if endpoint.path.starts_with("/api") {
            operation["security"] = json!([{"bearer": []}]);
        }
        if let Some(schema) = &endpoint.body {
            operation["requestBody"] =
                json!({"required": true, "content": {"application/json": {"schema": schema}}});
        }
        let item = paths.entry(endpoint.path.to_owned()).or_insert_with(|| json!({}));
        item[endpoint.method.to_lowercase()] = operation;
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Orbit", "version": env!("CARGO_PKG_VERSION"), "description": "Teams of Claude Code agents: agents, sessions, inbox, tasks, and chat over server-sent events."},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "paths": paths,
    })
}
