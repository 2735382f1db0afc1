//! The OpenAPI 3.1 document (`GET /api/openapi.json`), built from the endpoint table and the
//! request and response types it names, so it says exactly what the server accepts and
//! answers: request schemas are the request types' as deserialized (unknown fields refused,
//! `null` never accepted), answers are the views' as serialized, and each operation lists only
//! the error statuses it can give.

use std::collections::BTreeMap;

use schemars::generate::{Contract, SchemaSettings};
use schemars::{SchemaGenerator, transform::Transform};
use serde_json::{Map, Value, json};

use crate::endpoint::{Answer, Endpoint};
use crate::error::{Code, ErrorView};

/// The document of `endpoints`.
pub fn document(endpoints: &[Endpoint]) -> Value {
    let mut requests = generator(Contract::Deserialize);
    let mut answers = generator(Contract::Serialize);
    let error = Value::from(answers.subschema_for::<ErrorView>());
    let agent_name = Value::from(requests.subschema_for::<crate::wire::AgentName>());
    let ulid = Value::from(requests.subschema_for::<crate::wire::Ulid>());
    let node_name = Value::from(requests.subschema_for::<crate::wire::NodeName>());

    let mut paths = Map::new();
    for endpoint in endpoints {
        let mut parameters: Vec<Value> = endpoint
            .parameters()
            .map(|name| {
                let schema = match name {
                    "name" => &agent_name,
                    "node" => &node_name,
                    _ => &ulid,
                };
                json!({"name": name, "in": "path", "required": true, "schema": schema})
            })
            .collect();
        if let Some(query) = endpoint.query {
            parameters.extend(query(&mut requests));
        }
        let mut responses = Map::new();
        let success = match endpoint.answer {
            Answer::Json(schema) => json!({
                "description": endpoint.summary,
                "content": {"application/json": {"schema": Value::from(schema(&mut answers))}},
            }),
            Answer::Events(schema) => json!({
                "description": format!("{}. Each event is one `data:` line holding one JSON object, then a blank line.", endpoint.summary),
                "content": {"text/event-stream": {"schema": Value::from(schema(&mut answers))}},
            }),
        };
        responses.insert(endpoint.status.to_string(), success);
        for (status, codes) in error_statuses(endpoint) {
            let names: Vec<&str> = codes.iter().map(|code| code.as_str()).collect();
            responses.insert(
                status.to_string(),
                json!({
                    "description": names.join(", "),
                    "content": {"application/json": {"schema": {
                        "allOf": [error, {"properties": {"code": {"enum": names}}}],
                    }}},
                }),
            );
        }
        let mut operation = json!({
            "operationId": endpoint.operation_id,
            "summary": endpoint.summary,
            "parameters": parameters,
            "responses": responses,
            "security": if endpoint.path.starts_with("/api") { json!([{"bearer": []}]) } else { json!([]) },
        });
        if let Some((schema, required)) = endpoint.body {
            operation["requestBody"] = json!({
                "required": required,
                "content": {"application/json": {"schema": Value::from(schema(&mut requests))}},
            });
        }
        let item = paths.entry(endpoint.path.to_owned()).or_insert_with(|| json!({}));
        item[endpoint.method.to_lowercase()] = operation;
    }
    let (schemas, _) = components(requests, answers);
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Orbit",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Teams of Claude Code agents: agents, sessions, inbox, tasks, and chat over server-sent events.\n\nRequest bodies are JSON objects (`Content-Type: application/json`): unknown fields are refused, and an optional field is left out, never `null`.",
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "The server's API token. A server started with one needs it on every route but `/health`; a server without one ignores it.",
            }},
        },
        "paths": paths,
    })
}

/// The error codes `endpoint` can answer with, by status: those every route of its kind
/// gives, and its own.
pub fn error_statuses(endpoint: &Endpoint) -> BTreeMap<u16, Vec<Code>> {
    let has_parameters = endpoint.parameters().next().is_some() || endpoint.query.is_some();
    let has_body = endpoint.body.is_some();
    let given = |code: Code| match code {
        // The host and origin checks run on every request.
        Code::ForbiddenHost | Code::CrossOrigin => true,
        Code::Unauthorized => endpoint.path.starts_with("/api"),
        Code::InvalidInput => has_parameters || has_body,
        Code::InvalidJson => has_body,
        // Only the task routes read schedules; they list it themselves.
        Code::InvalidSchedule => false,
        Code::NotFound => has_parameters,
        Code::PayloadTooLarge | Code::RequestTimeout | Code::UnsupportedMediaType => has_body,
        // A route that can fail inside the server reads the store, whose database may be away.
        Code::Internal | Code::StoreUnavailable => endpoint.fallible,
        // Answered for paths and methods, not by an operation.
        Code::MethodNotAllowed => false,
        // Answered by the connection before any route is chosen.
        Code::MalformedRequest | Code::HeadersTooLarge => false,
        Code::Conflict | Code::Busy | Code::NodeUnreachable => false,
    };
    let mut statuses: BTreeMap<u16, Vec<Code>> = BTreeMap::new();
    for code in Code::ALL {
        if given(code) || endpoint.errors.contains(&code) {
            statuses.entry(code.status().as_u16()).or_default().push(code);
        }
    }
    statuses
}

fn generator(contract: Contract) -> SchemaGenerator {
    SchemaSettings::draft2020_12()
        .with(|settings| {
            settings.definitions_path = "/components/schemas".into();
            settings.meta_schema = None;
            settings.contract = contract;
        })
        .with_transform(Tighten)
        .into_generator()
}

/// Says what serde's derives leave implicit.
///
/// Answers are documented closed (`additionalProperties: false`), like the requests: a view
/// sends exactly the fields it names, so a client may rely on there being no others. And an
/// optional request field has no `"default": null` (schemars' rendering of `None`): `null` is
/// refused, and a field left out simply changes nothing.
#[derive(Clone)]
struct Tighten;

impl Transform for Tighten {
    fn transform(&mut self, schema: &mut schemars::Schema) {
        if schema.get("properties").is_some() && schema.get("additionalProperties").is_none() {
            schema.insert("additionalProperties".into(), false.into());
        }
        if schema.get("default").is_some_and(serde_json::Value::is_null) {
            schema.remove("default");
        }
        schemars::transform::transform_subschemas(self, schema);
    }
}

/// The components of both generators, and the names both define differently (none, as a
/// unit test checks: the enums they share are spelt the same either way).
fn components(
    mut requests: SchemaGenerator,
    mut answers: SchemaGenerator,
) -> (Map<String, Value>, Vec<String>) {
    let mut schemas = requests.take_definitions(true);
    let mut conflicts = Vec::new();
    for (name, schema) in answers.take_definitions(true) {
        match schemas.get(&name) {
            Some(existing) if *existing != schema => conflicts.push(name),
            Some(_) => {}
            None => {
                schemas.insert(name, schema);
            }
        }
    }
    (schemas, conflicts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_answers_share_their_common_schemas_unchanged() {
        let mut requests = generator(Contract::Deserialize);
        let mut answers = generator(Contract::Serialize);
        for endpoint in crate::routes::endpoints() {
            if let Some((schema, _)) = endpoint.body {
                schema(&mut requests);
            }
            let (Answer::Json(schema) | Answer::Events(schema)) = endpoint.answer;
            schema(&mut answers);
        }
        let (schemas, conflicts) = components(requests, answers);
        assert!(conflicts.is_empty(), "defined differently: {conflicts:?}");
        assert!(schemas.contains_key("PermissionMode"));
    }

    #[test]
    fn every_operation_has_a_unique_id() {
        let endpoints = crate::routes::endpoints();
        let mut ids: Vec<_> = endpoints.iter().map(|endpoint| endpoint.operation_id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), endpoints.len());
    }
}
