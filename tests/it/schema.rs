//! A JSON Schema validator for the subset the OpenAPI document uses, and the check that every
//! answer the tests read matches its documented schema.
//!
//! It is small on purpose, and strict: a keyword it does not know fails the check rather than
//! being skipped, so the document cannot grow a constraint these tests silently ignore.

use std::sync::OnceLock;

use serde_json::Value;

/// The server's OpenAPI document (the same function serves `GET /api/openapi.json`).
pub fn document() -> &'static Value {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    DOCUMENT.get_or_init(orbit_api::openapi_document)
}

/// Keywords that only describe.
const ANNOTATIONS: &[&str] = &["description", "examples", "title", "default"];

/// Checks `value` against `schema`, resolving `$ref`s in `document`.
pub fn validate(document: &Value, schema: &Value, value: &Value) -> Result<(), String> {
    check(document, schema, value, "$")
}

fn check(document: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    let Some(schema) = schema.as_object() else {
        return match schema {
            Value::Bool(true) => Ok(()),
            _ => Err(format!("{at}: the schema {schema} refuses everything")),
        };
    };
    for (keyword, rule) in schema {
        let fail = |why: String| Err(format!("{at}: {why} (value {value})"));
        match keyword.as_str() {
            "$ref" => {
                let pointer = rule.as_str().unwrap().trim_start_matches('#');
                let target = document.pointer(pointer).unwrap_or_else(|| panic!("no {pointer}"));
                check(document, target, value, at)?;
            }
            "type" => {
                let types: Vec<&str> = match rule {
                    Value::String(one) => vec![one.as_str()],
                    many => many.as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect(),
                };
                if !types.iter().any(|kind| is_type(value, kind)) {
                    return fail(format!("not of type {rule}"));
                }
            }
            "enum" if !rule.as_array().unwrap().contains(value) => {
                return fail(format!("not one of {rule}"));
            }
            "const" if rule != value => return fail(format!("not {rule}")),
            "pattern" => {
                if let Some(text) = value.as_str() {
                    let pattern = regex_lite::Regex::new(rule.as_str().unwrap()).unwrap();
                    if !pattern.is_match(text) {
                        return fail(format!("does not match {rule}"));
                    }
                }
            }
            "minLength" | "maxLength" => {
                if let Some(text) = value.as_str() {
                    let (length, limit) = (text.chars().count() as u64, rule.as_u64().unwrap());
                    let short = keyword == "minLength" && length < limit;
                    if short || (keyword == "maxLength" && length > limit) {
                        return fail(format!("{length} characters, {keyword} {limit}"));
                    }
                }
            }
            "minItems" | "maxItems" => {
                if let Some(items) = value.as_array() {
                    let (count, limit) = (items.len() as u64, rule.as_u64().unwrap());
                    let few = keyword == "minItems" && count < limit;
                    if few || (keyword == "maxItems" && count > limit) {
                        return fail(format!("{count} items, {keyword} {limit}"));
                    }
                }
            }
            "minimum" | "maximum" => {
                if let (Some(number), Some(limit)) = (value.as_f64(), rule.as_f64()) {
                    let low = keyword == "minimum" && number < limit;
                    if low || (keyword == "maximum" && number > limit) {
                        return fail(format!("{keyword} {limit}"));
                    }
                }
            }
            "format" => {
                if rule == "date-time" && value.is_string() && !is_timestamp(value) {
                    return fail("not an RFC 3339 date-time".into());
                }
            }
            "required" => {
                if let Some(object) = value.as_object() {
                    for name in rule.as_array().unwrap() {
                        if !object.contains_key(name.as_str().unwrap()) {
                            return fail(format!("{name} is missing"));
                        }
                    }
                }
            }
            "properties" => {
                if let Some(object) = value.as_object() {
                    for (name, property) in rule.as_object().unwrap() {
                        if let Some(member) = object.get(name) {
                            check(document, property, member, &format!("{at}.{name}"))?;
                        }
                    }
                }
            }
            "additionalProperties" => {
                if let Some(object) = value.as_object() {
                    let known = schema.get("properties").and_then(Value::as_object);
                    for (name, member) in object {
                        if !known.is_some_and(|known| known.contains_key(name)) {
                            check(document, rule, member, &format!("{at}.{name}"))
                                .map_err(|_| format!("{at}: {name} is not allowed here"))?;
                        }
                    }
                }
            }
            "items" => {
                if let Some(items) = value.as_array() {
                    for (index, item) in items.iter().enumerate() {
                        check(document, rule, item, &format!("{at}[{index}]"))?;
                    }
                }
            }
            "allOf" => {
                for part in rule.as_array().unwrap() {
                    check(document, part, value, at)?;
                }
            }
            "anyOf" | "oneOf" => {
                let matching = rule
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|part| check(document, part, value, at).is_ok())
                    .count();
                if matching == 0 || (keyword == "oneOf" && matching > 1) {
                    return fail(format!("{matching} of the {keyword} alternatives match"));
                }
            }
            "dependentSchemas" => {
                if let Some(object) = value.as_object() {
                    for (name, dependent) in rule.as_object().unwrap() {
                        if object.contains_key(name) {
                            check(document, dependent, value, at)?;
                        }
                    }
                }
            }
            "enum" | "const" => {}
            annotation if ANNOTATIONS.contains(&annotation) => {}
            unknown => panic!("{at}: the validator does not know the keyword {unknown}"),
        }
    }
    Ok(())
}

fn is_type(value: &Value, kind: &str) -> bool {
    match kind {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "string" => value.is_string(),
        "integer" => value.is_u64() || value.is_i64(),
        "number" => value.is_number(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        other => panic!("unknown type {other}"),
    }
}

fn is_timestamp(value: &Value) -> bool {
    let pattern = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$";
    regex_lite::Regex::new(pattern).unwrap().is_match(value.as_str().unwrap_or_default())
}

/// The operation of the document that serves `method` on `path` (a concrete path, with its
/// query left off), with its template's path.
pub fn operation(method: &str, path: &str) -> Option<(&'static str, &'static Value)> {
    let path = path.split('?').next().unwrap_or_default();
    let segments: Vec<&str> = path.split('/').collect();
    document()["paths"].as_object().unwrap().iter().find_map(|(template, item)| {
        let parts: Vec<&str> = template.split('/').collect();
        let matches = parts.len() == segments.len()
            && parts.iter().zip(&segments).all(|(part, segment)| {
                part == segment || (part.starts_with('{') && !segment.is_empty())
            });
        let operation = item.get(method.to_lowercase())?;
        matches.then_some((template.as_str(), operation))
    })
}

/// The documented schema of the answer `status` of `method path` in `media` (or why there
/// is none).
pub fn answer_schema(
    method: &str,
    path: &str,
    status: u16,
    media: &str,
) -> Result<&'static Value, String> {
    let (template, operation) =
        operation(method, path).ok_or_else(|| format!("{method} {path} is not documented"))?;
    let answer = operation["responses"]
        .get(status.to_string())
        .ok_or_else(|| format!("{method} {template} does not document the status {status}"))?;
    answer["content"]
        .get(media)
        .map(|content| &content["schema"])
        .ok_or_else(|| format!("{method} {template} {status} is not documented as {media}"))
}

/// Panics unless a JSON answer is documented for its route and matches its schema. Answers of
/// paths the document does not have (404 for no route, 405) are the router's, and not checked.
pub fn check_answer(method: &str, path: &str, status: u16, body: &Value) {
    if operation(method, path).is_none() {
        return;
    }
    let schema = answer_schema(method, path, status, "application/json")
        .unwrap_or_else(|why| panic!("{why}: {body}"));
    validate(document(), schema, body)
        .unwrap_or_else(|why| panic!("{method} {path} answered {status} off its schema: {why}"));
}

/// Panics unless `event` matches the documented event schema of the chat stream (which the
/// turn watchers' streams share).
pub fn check_event(event: &Value) {
    let schema = answer_schema("POST", "/api/chat", 200, "text/event-stream").unwrap();
    validate(document(), schema, event).unwrap_or_else(|why| panic!("a chat event: {why}"));
}

/// Panics unless every event of a chat stream matches the documented event schema, the first
/// being Orbit's session event.
pub fn check_events(events: &[Value]) {
    for event in events {
        check_event(event);
    }
    if let Some(first) = events.first() {
        let session = serde_json::json!({"$ref": "#/components/schemas/SessionEvent"});
        validate(document(), &session, first)
            .unwrap_or_else(|why| panic!("the first event: {why}"));
    }
}

/// Panics unless an event of `GET /api/events` matches its documented schema.
pub fn check_server_event(event: &Value) {
    let schema = answer_schema("GET", "/api/events", 200, "text/event-stream").unwrap();
    validate(document(), schema, event).unwrap_or_else(|why| panic!("a server event: {why}"));
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn valid(schema: Value, value: Value) -> bool {
        validate(document(), &schema, &value).is_ok()
    }

    #[test]
    fn the_validator_refuses_what_each_keyword_forbids() {
        let name = json!({"$ref": "#/components/schemas/AgentName"});
        assert!(valid(name.clone(), json!("bot-1")));
        for bad in [json!("Bot"), json!(""), json!("a".repeat(65)), json!(1), Value::Null] {
            assert!(!valid(name.clone(), bad.clone()), "{bad}");
        }
        let object = json!({"type": "object", "required": ["a"], "additionalProperties": false,
            "properties": {"a": {"type": "string", "maxLength": 2}, "b": {"enum": ["x"]}},
            "dependentSchemas": {"b": {"required": ["c"]}}});
        assert!(valid(object.clone(), json!({"a": "é"})));
        for bad in [
            json!({}),
            json!({"a": "abc"}),
            json!({"a": "a", "z": 1}),
            json!({"a": "a", "b": "y"}),
            json!({"a": "a", "b": "x"}),
        ] {
            assert!(!valid(object.clone(), bad.clone()), "{bad}");
        }
        let one = json!({"oneOf": [{"type": "integer"}, {"type": "number"}]});
        assert!(!valid(one, json!(1)), "both alternatives match");
        let time = json!({"$ref": "#/components/schemas/Timestamp"});
        assert!(valid(time.clone(), json!("2026-11-23T21:08:15.123Z")));
        assert!(!valid(time, json!("yesterday")));
        let nullable =
            json!({"anyOf": [{"$ref": "#/components/schemas/Timestamp"}, {"type": "null"}]});
        assert!(valid(nullable, Value::Null));
    }
}
