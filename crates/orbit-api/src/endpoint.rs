//! The endpoint table: every route is registered from it and documented from it (`openapi`),
//! so the OpenAPI document cannot miss a route, and each entry names the types its handler
//! reads and answers with, so the document's schemas are those types'.

use std::collections::BTreeMap;

use actix_web::{HttpRequest, HttpResponse, ResponseError, Route, web};
use schemars::{JsonSchema, Schema, SchemaGenerator};

use crate::error::Code;

/// A schema of a type, added to a generator's components (a `$ref` to it).
pub type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

fn schema_of<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

/// The query parameters of a type whose fields are the parameters, each as OpenAPI writes one
/// (`{"name", "in": "query", "required", "schema"}`).
pub type QueryFn = fn(&mut SchemaGenerator) -> Vec<serde_json::Value>;

fn query_of<T: JsonSchema>(generator: &mut SchemaGenerator) -> Vec<serde_json::Value> {
    // The type's own schema, not a reference to it: its properties become the parameters.
    let schema = serde_json::Value::from(T::json_schema(generator));
    let required: Vec<&str> = schema["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(serde_json::Value::as_str)
        .collect();
    schema["properties"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(name, property)| {
            serde_json::json!({
                "name": name,
                "in": "query",
                "required": required.contains(&name.as_str()),
                "description": property["description"],
                "schema": property,
            })
        })
        .collect()
}

/// What a success answers with.
#[derive(Clone, Copy)]
pub enum Answer {
    /// A JSON body of this schema.
    Json(SchemaFn),
    /// `text/event-stream`, each event's `data:` a JSON value of this schema.
    Events(SchemaFn),
}

/// One method on one path.
pub struct Endpoint {
    pub method: &'static str,
    /// An actix path pattern (`/api/agents/{name}`), which is also OpenAPI's.
    pub path: &'static str,
    /// OpenAPI's `operationId`: the name a generated client gives the call.
    pub operation_id: &'static str,
    pub summary: &'static str,
    /// The success status.
    pub status: u16,
    pub answer: Answer,
    /// The request body's schema and whether the body is required.
    pub body: Option<(SchemaFn, bool)>,
    /// The query parameters the route reads, if any.
    pub query: Option<QueryFn>,
    /// Error codes this route gives beyond those every route of its kind gives
    /// (`openapi::error_codes`).
    pub errors: &'static [Code],
    /// Whether the route touches the store, and so can fail inside (500).
    pub fallible: bool,
    pub route: fn() -> Route,
}

impl Endpoint {
    /// A route answering 200 with a `T`.
    pub fn new<T: JsonSchema>(
        method: &'static str,
        path: &'static str,
        operation_id: &'static str,
        summary: &'static str,
        route: fn() -> Route,
    ) -> Self {
        Self {
            method,
            path,
            operation_id,
            summary,
            status: 200,
            answer: Answer::Json(schema_of::<T>),
            body: None,
            query: None,
            errors: &[],
            fallible: true,
            route,
        }
    }

    pub fn status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    /// A required JSON body of type `T`.
    pub fn body<T: JsonSchema>(mut self) -> Self {
        self.body = Some((schema_of::<T>, true));
        self
    }

    /// Query parameters: the fields of `T`, which the handler reads with `web::Query<T>`.
    pub fn query<T: JsonSchema>(mut self) -> Self {
        self.query = Some(query_of::<T>);
        self
    }

    /// A JSON body of type `T` that may be left out.
    pub fn optional_body<T: JsonSchema>(mut self) -> Self {
        self.body = Some((schema_of::<T>, false));
        self
    }

    /// Answers with a stream of server-sent events, each a `T`.
    pub fn events<T: JsonSchema>(mut self) -> Self {
        self.answer = Answer::Events(schema_of::<T>);
        self
    }

    pub fn errors(mut self, errors: &'static [Code]) -> Self {
        self.errors = errors;
        self
    }

    /// The route reads nothing that can fail.
    pub fn infallible(mut self) -> Self {
        self.fallible = false;
        self
    }

    /// The names of the path's parameters, in order.
    pub fn parameters(&self) -> impl Iterator<Item = &'static str> {
        self.path
            .split('/')
            .filter_map(|segment| segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
    }
}

/// Registers the endpoints, one actix resource per path: the paths without parameters
/// first, then the others, each group in path order.
///
/// actix tries resources in the order they were registered, matching each pattern with
/// parameters by a regex, so `/health` after every `/api/agents/{name}/...` paid a regex per
/// route on every health check. No pattern with parameters matches a path without (a test
/// below holds that), so the order changes no route's answer.
pub fn register(cfg: &mut web::ServiceConfig, endpoints: Vec<Endpoint>) {
    let mut by_path: BTreeMap<(bool, &'static str), Vec<Endpoint>> = BTreeMap::new();
    for endpoint in endpoints {
        by_path.entry((endpoint.path.contains('{'), endpoint.path)).or_default().push(endpoint);
    }
    for ((_, path), endpoints) in by_path {
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
        Code::MethodNotAllowed,
        format!("{} is not allowed on {}; allowed: {allow}", req.method(), req.path()),
    );
    let mut answer = error.error_response();
    if let Ok(allow) = actix_web::http::header::HeaderValue::from_str(&allow) {
        answer.headers_mut().insert(actix_web::http::header::ALLOW, allow);
    }
    answer
}

#[cfg(test)]
mod tests {
    use actix_web::dev::ResourceDef;

    #[test]
    fn no_pattern_with_parameters_matches_a_path_without() {
        let endpoints = crate::routes::endpoints();
        let (with, without): (Vec<_>, Vec<_>) =
            endpoints.iter().map(|endpoint| endpoint.path).partition(|path| path.contains('{'));
        assert!(without.contains(&"/health") && with.len() > 10, "both kinds are there");
        for pattern in &with {
            let pattern_def = ResourceDef::new(*pattern);
            for path in &without {
                assert!(!pattern_def.is_match(path), "{pattern} matches {path}");
            }
        }
    }
}
