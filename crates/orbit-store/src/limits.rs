//! How long each free-text field may be. Every field a client or an agent sets has a limit, so
//! that no single request can make the server hold (and list, and send) megabytes it did not
//! need; past a limit the input is refused as invalid, with the field and the limit named.
//! The API checks these at the boundary and the agents' own tools check the same ones.
//!
//! Lengths are counted in characters (Unicode scalar values), as JSON Schema's `maxLength`
//! counts them, so that the API's OpenAPI document can state each limit exactly; a limit in
//! characters bounds the bytes too (at most four per character).

use crate::{Error, Result};

/// A session's or task's title or name.
pub const TITLE: usize = 256;
/// A chat message, one turn's text.
pub const CHAT_MESSAGE: usize = 256 * 1024;
/// A task's prompt.
pub const PROMPT: usize = 64 * 1024;
/// An inbox message.
pub const INBOX_MESSAGE: usize = 64 * 1024;
/// The message that goes with an answer to a permission request.
pub const PERMISSION_MESSAGE: usize = 4 * 1024;
/// A note an agent appends to its daily memory, in bytes.
pub const MEMORY_NOTE: usize = 16 * 1024;
/// A schedule's value (cron expression, interval, timestamp).
pub const SCHEDULE_VALUE: usize = 128;
/// A timezone's IANA name.
pub const TIMEZONE: usize = 64;
/// A model name.
pub const MODEL: usize = 128;
/// The name of a person (or system) sending an inbox message.
pub const SENDER: usize = 128;
/// An agent's workdir, a path (Linux's `PATH_MAX` is 4096 bytes).
pub const WORKDIR: usize = 4096;

/// Refuses `value` when it is longer than `max` characters.
pub fn check_len(field: &str, value: &str, max: usize) -> Result<()> {
    // Every character is at least one byte, so a short text needs no count.
    if value.len() > max {
        let length = value.chars().count();
        if length > max {
            return Err(Error::Invalid(format!(
                "'{field}' is {length} characters long; the limit is {max}"
            )));
        }
    }
    Ok(())
}

/// Checks `value` when there is one.
pub fn check_optional(field: &str, value: Option<&str>, max: usize) -> Result<()> {
    value.map_or(Ok(()), |value| check_len(field, value, max))
}

/// Refuses a model name that is not one: it goes into the CLI's argument list, so it must be
/// short, printable ASCII without spaces, and not look like an option.
pub fn check_model(model: &str) -> Result<()> {
    check_len("model", model, MODEL)?;
    let printable = model.bytes().all(|b| b.is_ascii_graphic());
    if model.is_empty() || model.starts_with('-') || !printable {
        return Err(Error::Invalid(format!(
            "invalid model name {model:?}: printable ASCII without spaces, not starting with '-'"
        )));
    }
    Ok(())
}

/// A node's name (`--node-name`).
pub const NODE_NAME: usize = 100;

/// Refuses a node name that is not 1 to 100 ASCII letters, digits, `.`, `_` and `-`, starting
/// with a letter or digit: it names the node in answers and in the data directory.
pub fn check_node_name(name: &str) -> Result<()> {
    let allowed = name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    let first = name.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric());
    if name.len() > NODE_NAME || !allowed || !first {
        return Err(Error::Invalid(format!(
            "invalid node name {name:?}: 1 to {NODE_NAME} ASCII letters, digits, '.', '_' and '-', starting with a letter or digit"
        )));
    }
    Ok(())
}

/// Line and paragraph separators, zero-width and direction-changing characters: in a name that
/// the model reads on a line of its own, they could break or disguise the line.
fn is_invisible_format(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}' | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}' | '\u{00AD}')
}

/// Refuses a person's sender name that is empty, too long or holds control or invisible
/// formatting characters: it is shown to the model in the turn that reads the message, on a
/// line of its own.
pub fn check_sender(name: &str) -> Result<()> {
    check_len("fromAgent", name, SENDER)?;
    if name.trim().is_empty() || name.chars().any(|c| c.is_control() || is_invisible_format(c)) {
        return Err(Error::Invalid(format!(
            "invalid sender {name:?}: a name of 1 to {SENDER} characters without control or invisible formatting characters"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sender_cannot_hide_line_breaks_or_direction_changes() {
        for bad in ["a\u{2028}b", "x\u{202E}y", "z\u{200B}", "\n", "  "] {
            assert!(check_sender(bad).is_err(), "{bad:?}");
        }
        assert!(check_sender("Human Bob").is_ok());
        assert!(check_sender("Zoë").is_ok());
    }

    #[test]
    fn lengths_are_counted_in_characters() {
        assert!(check_len("title", &"é".repeat(TITLE), TITLE).is_ok(), "512 bytes, 256 characters");
        assert!(check_len("title", &"é".repeat(TITLE + 1), TITLE).is_err());
        assert!(check_len("title", &"e".repeat(TITLE + 1), TITLE).is_err());
    }

    #[test]
    fn models_are_short_printable_words() {
        for good in ["sonnet", "claude-sonnet-4-5", "claude-opus-4-1[1m]", "us.anthropic.x:0"] {
            assert!(check_model(good).is_ok(), "{good}");
        }
        let long = "m".repeat(MODEL + 1);
        for bad in ["", "-p", "two words", "tab\there", "nul\0", long.as_str()] {
            assert!(check_model(bad).is_err(), "{bad:?}");
        }
    }
}
