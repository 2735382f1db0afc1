//! What Orbit reads of the CLI's stream-json output. Everything that knows the shape of the
//! CLI's messages or the wording of its errors is here, so a change of the CLI's protocol is a
//! change of this file.

use serde_json::Value;

use crate::event::{CliMessage, CliMessageKind, CliResult, ModelFailure};

/// Reads one stdout message of the CLI.
pub(crate) fn parse(raw: Value) -> CliMessage {
    let kind = match (raw["type"].as_str(), raw["subtype"].as_str()) {
        (Some("system"), Some("init")) => match raw["session_id"].as_str() {
            Some(id) => CliMessageKind::Init { session_id: id.to_owned() },
            None => CliMessageKind::Other,
        },
        (Some("result"), _) => CliMessageKind::Result(CliResult {
            text: raw["result"].as_str().unwrap_or_default().to_owned(),
            is_error: raw["is_error"].as_bool() == Some(true),
            subtype: raw["subtype"].as_str().unwrap_or("error").to_owned(),
            total_cost_usd: raw["total_cost_usd"].as_f64(),
            usage: usage(&raw["usage"]),
            errors: raw["errors"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| e.as_str().map_or_else(|| e.to_string(), str::to_owned))
                .collect(),
            failure: failure(&raw),
        }),
        // Partial messages (`--include-partial-messages`): the Messages API's stream events,
        // wrapped. Only text deltas are read; the whole message follows as usual.
        (Some("stream_event"), _) => {
            let event = &raw["event"];
            match (event["type"].as_str(), event["delta"]["type"].as_str()) {
                (Some("content_block_delta"), Some("text_delta")) => CliMessageKind::TextDelta(
                    event["delta"]["text"].as_str().unwrap_or_default().to_owned(),
                ),
                _ => CliMessageKind::Partial,
            }
        }
        _ => CliMessageKind::Other,
    };
    CliMessage { raw, kind }
}

/// The CLI's token counts, which it writes in snake case (Orbit's records are camel case, so
/// the record type cannot read them directly).
fn usage(raw: &Value) -> Option<orbit_store::Usage> {
    let count = |field: &str| raw[field].as_u64().unwrap_or(0);
    raw.is_object().then(|| orbit_store::Usage {
        input_tokens: count("input_tokens"),
        output_tokens: count("output_tokens"),
        cache_creation_input_tokens: count("cache_creation_input_tokens"),
        cache_read_input_tokens: count("cache_read_input_tokens"),
    })
}

/// The model service's refusal behind a failed result: the CLI writes the API's status and
/// error type beside its own wording (`API Error: Request rejected (429) ...`), and a bare
/// "Not logged in" when it has no credentials at all.
fn failure(raw: &Value) -> Option<ModelFailure> {
    if raw["is_error"].as_bool() != Some(true) {
        return None;
    }
    let status = raw["api_error_status"].as_u64().and_then(|s| u16::try_from(s).ok());
    let kind = raw["api_error_type"].as_str().unwrap_or_default();
    let text = raw["result"].as_str().unwrap_or_default();
    match (status, kind) {
        (Some(401 | 403), _) | (_, "authentication_error" | "permission_error") => {
            Some(ModelFailure::CredentialsRefused { status })
        }
        (Some(429), _) | (_, "rate_limit_error") => Some(ModelFailure::RateLimited),
        (_, "overloaded_error") => Some(ModelFailure::Overloaded { status: status.unwrap_or(529) }),
        (Some(status @ (500..=599)), _) => Some(ModelFailure::Overloaded { status }),
        _ if text.starts_with("Not logged in") => Some(ModelFailure::NoCredentials),
        _ if text.starts_with("Invalid API key") => {
            Some(ModelFailure::CredentialsRefused { status: None })
        }
        _ => None,
    }
}

/// Whether the CLI's stderr says the conversation it was asked to resume does not exist.
pub(crate) fn says_conversation_missing(stderr: &str) -> bool {
    stderr.contains("No conversation found")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn reads_init_and_result_and_passes_the_rest() {
        let init = parse(json!({"type": "system", "subtype": "init", "session_id": "abc"}));
        assert!(
            matches!(init.kind, CliMessageKind::Init { ref session_id } if session_id == "abc")
        );
        let result = parse(json!({
            "type": "result", "subtype": "success", "is_error": false, "result": "hi",
            "total_cost_usd": 0.5, "usage": {"input_tokens": 3, "output_tokens": 4}
        }));
        let CliMessageKind::Result(result) = result.kind else { panic!("a result") };
        assert_eq!(
            (result.text.as_str(), result.is_error, result.total_cost_usd),
            ("hi", false, Some(0.5))
        );
        assert_eq!(result.usage.map(|u| u.output_tokens), Some(4));
        let failed = parse(
            json!({"type": "result", "subtype": "error_during_execution", "is_error": true, "errors": ["boom"]}),
        );
        let CliMessageKind::Result(failed) = failed.kind else { panic!("a result") };
        assert_eq!((failed.is_error, failed.errors), (true, vec!["boom".to_owned()]));
        let other = parse(json!({"type": "assistant", "message": {}}));
        assert!(matches!(other.kind, CliMessageKind::Other));
        assert_eq!(other.raw["type"], "assistant", "the raw message is kept unchanged");
        let refusal = |extra: serde_json::Value| {
            let mut raw =
                json!({"type": "result", "subtype": "success", "is_error": true, "result": "x"});
            raw.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            let CliMessageKind::Result(result) = parse(raw).kind else { panic!("a result") };
            result.failure
        };
        assert_eq!(
            refusal(json!({"result": "Not logged in · Please run /login"})),
            Some(ModelFailure::NoCredentials)
        );
        assert_eq!(
            refusal(json!({"api_error_status": 401, "api_error_type": "authentication_error"})),
            Some(ModelFailure::CredentialsRefused { status: Some(401) })
        );
        assert_eq!(refusal(json!({"api_error_status": 429})), Some(ModelFailure::RateLimited));
        assert_eq!(
            refusal(json!({"api_error_status": 529, "api_error_type": "overloaded_error"})),
            Some(ModelFailure::Overloaded { status: 529 })
        );
        assert_eq!(refusal(json!({"result": "something else"})), None);
        assert!(says_conversation_missing("Error: No conversation found with session ID: x"));
        let delta = parse(
            json!({"type": "stream_event", "event": {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hel"}}}),
        );
        assert!(matches!(delta.kind, CliMessageKind::TextDelta(ref text) if text == "Hel"));
        let tool_input = parse(
            json!({"type": "stream_event", "event": {"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": "{"}}}),
        );
        assert!(matches!(tool_input.kind, CliMessageKind::Partial));
        let start = parse(json!({"type": "stream_event", "event": {"type": "message_start"}}));
        assert!(matches!(start.kind, CliMessageKind::Partial));
    }
}
