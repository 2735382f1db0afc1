//! The wire's value types: the enums of the contract and the schemas of names, ids, models
//! and timestamps, each stated once so that the OpenAPI document and the parsers agree.
//!
//! The enums mirror the store's own with conversions both ways, written as exhaustive matches:
//! a variant added to a store enum does not compile until the wire says how it is spelt.
//! The schema-only types (`AgentName`, `Ulid`, `Model`, `Timestamp`) stand in, through
//! `#[schemars(with = ...)]`, for the store's newtypes and for strings the server checks by
//! hand; their patterns say exactly what those checks accept.

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// `orbit_store::AgentName::parse`, as a regular expression.
pub const AGENT_NAME_PATTERN: &str = "^[a-z0-9][a-z0-9_-]{0,63}$";
/// `orbit_store` ULID ids: 26 characters of Crockford base32 (either case), the first 0-7
/// (a larger one would overflow 128 bits).
pub const ULID_PATTERN: &str = "^[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$";
/// `orbit_store::timestamp::rfc3339`: UTC, milliseconds always written.
pub const TIMESTAMP_PATTERN: &str = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$";
/// `orbit_store::limits::check_sender`: no control characters.
pub const SENDER_PATTERN: &str = r"^[^\x00-\x1f\x7f]+$";
/// `orbit_store::limits::check_model`: printable ASCII without spaces, not starting with `-`.
pub const MODEL_PATTERN: &str = "^[!-,.-~][!-~]*$";
/// `orbit_agent::workdir::WorkdirPolicy::check`: an absolute path, without NUL.
pub const WORKDIR_PATTERN: &str = r"^/[^\x00]*$";
/// `orbit_store::limits::check_node_name`.
pub const NODE_NAME_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$";
/// A workdir to set, or the empty string for the data directory's workspace.
pub const WORKDIR_CHANGE_PATTERN: &str = r"^(/[^\x00]*)?$";
/// Holds a character that is not white space (`routes::chat` checks the same thing).
pub const NOT_BLANK_PATTERN: &str = "\\S";

/// A schema from its JSON text (always an object here).
pub fn schema(value: Value) -> Schema {
    match value {
        Value::Object(map) => Schema::from(map),
        other => Schema::from(other.as_bool().unwrap_or(true)),
    }
}

macro_rules! schema_type {
    ($(#[$doc:meta])* $name:ident, $json:expr) => {
        $(#[$doc])*
        pub struct $name;

        impl JsonSchema for $name {
            fn schema_name() -> Cow<'static, str> {
                stringify!($name).into()
            }

            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                schema($json)
            }
        }
    };
}

schema_type!(
    /// An agent's name.
    AgentName,
    json!({
        "type": "string",
        "pattern": AGENT_NAME_PATTERN,
        "minLength": 1,
        "maxLength": orbit_store::AgentName::MAX_LEN,
        "description": "An agent's name: lowercase letters, digits, '_' and '-', starting with a letter or digit.",
        "examples": ["researcher"],
    })
);
schema_type!(
    /// An id Orbit made (sessions, inbox messages, tasks, runs, worktrees, permission requests).
    Ulid,
    json!({
        "type": "string",
        "pattern": ULID_PATTERN,
        "minLength": 26,
        "maxLength": 26,
        "description": "A ULID: 26 characters of Crockford base32, sortable by creation time.",
        "examples": ["01JD2Y7W3Q5ZK8X9M4N6P0R1ST"],
    })
);
schema_type!(
    /// Where a transcript page starts: a previous page's `nextCursor` or `endCursor`, passed
    /// back unchanged.
    TranscriptCursor,
    json!({
        "type": "string",
        "pattern": "^[0-9]{1,20}$",
        "description": "An opaque position in a transcript (digits), from a page's nextCursor or endCursor.",
        "examples": ["4096"],
    })
);
schema_type!(
    /// A node's name (`--node-name`, else made once and kept in its data directory).
    NodeName,
    json!({
        "type": "string",
        "pattern": NODE_NAME_PATTERN,
        "minLength": 1,
        "maxLength": orbit_store::limits::NODE_NAME,
        "description": "The name of an Orbit node: the one that holds a session's or a task's git worktree.",
        "examples": ["worker-1"],
    })
);
schema_type!(
    /// A model name, handed to the CLI.
    Model,
    json!({
        "type": "string",
        "pattern": MODEL_PATTERN,
        "minLength": 1,
        "maxLength": orbit_store::limits::MODEL,
        "description": "A Claude model name or alias: printable ASCII without spaces, not starting with '-'.",
        "examples": ["sonnet"],
    })
);
schema_type!(
    /// The sender of an inbox message: an agent's name, or a person's (or a system's).
    SenderName,
    json!({
        "type": "string",
        "minLength": 1,
        "maxLength": orbit_store::limits::SENDER,
        "pattern": SENDER_PATTERN,
        "examples": ["alice", "Bob Lee"],
    })
);
schema_type!(
    /// A directory of the user's that an agent works in.
    Workdir,
    json!({
        "type": "string",
        "pattern": WORKDIR_PATTERN,
        "minLength": 1,
        "maxLength": orbit_store::limits::WORKDIR,
        "description": "An absolute path to an existing directory (inside a workdir root of the server, when it has roots).",
        "examples": ["/home/me/project"],
    })
);
schema_type!(
    /// A new workdir for an agent, or `""` to go back to the data directory's workspace.
    WorkdirChange,
    json!({
        "type": "string",
        "pattern": WORKDIR_CHANGE_PATTERN,
        "maxLength": orbit_store::limits::WORKDIR,
        "description": "An absolute path to an existing directory (inside a workdir root of the server, when it has roots), or \"\" for the default: the agent's workspace in the data directory.",
        "examples": ["/home/me/project", ""],
    })
);
schema_type!(
    /// A moment, as RFC 3339 UTC text with exactly three fraction digits, so that
    /// timestamps sort as strings.
    Timestamp,
    json!({
        "type": "string",
        "format": "date-time",
        "pattern": TIMESTAMP_PATTERN,
        "examples": ["2026-11-23T21:08:15.123Z"],
    })
);

/// Declares a wire enum mirroring a store enum, with its spelling on the wire and
/// conversions both ways.
macro_rules! wire_enum {
    ($(#[$doc:meta])* $name:ident <=> $store:ident {
        $($(#[$vdoc:meta])* $variant:ident = $wire:literal),+ $(,)?
    }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
        pub enum $name {
            $($(#[$vdoc])* #[serde(rename = $wire)] $variant),+
        }

        impl From<orbit_store::$store> for $name {
            fn from(value: orbit_store::$store) -> Self {
                match value {
                    $(orbit_store::$store::$variant => Self::$variant),+
                }
            }
        }

        impl From<$name> for orbit_store::$store {
            fn from(value: $name) -> Self {
                match value {
                    $($name::$variant => Self::$variant),+
                }
            }
        }
    };
}

wire_enum!(
    /// How an agent's tool calls are gated.
    PermissionMode <=> PermissionMode {
        /// Read-only tools run; tools that write or execute are denied.
        Safe = "safe",
        /// Each tool call that is not read-only waits for a person's answer.
        Ask = "ask",
        /// Every tool runs freely.
        AllowAll = "allow-all",
    }
);
wire_enum!(
    /// Whether an agent is in use.
    AgentStatus <=> AgentStatus { Active = "active", Inactive = "inactive" }
);
wire_enum!(
    /// Whether an inbox message asks or answers.
    MessageType <=> MessageType { Request = "request", Response = "response" }
);
wire_enum!(
    /// Who sent an inbox message.
    SenderKind <=> SenderKind {
        /// An agent, named by `fromAgent`.
        Agent = "agent",
        /// A person or another system writing over the API; `fromAgent` is its name.
        Person = "person",
    }
);
wire_enum!(
    /// Where an inbox message is in its life.
    MessageStatus <=> MessageStatus {
        /// Waiting for a session, or held by one (`claimedBy` says which).
        Pending = "pending",
        /// Handled by a session's successful turn.
        Read = "read",
        /// Put away by a person.
        Archived = "archived",
        /// Set aside after reaching the model three times without being handled.
        Dead = "dead",
    }
);
wire_enum!(
    /// How a task's schedule is written.
    ScheduleType <=> ScheduleType {
        /// A 5-field cron expression, in the task's timezone (UTC by default).
        Cron = "cron",
        /// Milliseconds as a decimal string, from 1000 to 31622400000 (366 days).
        Interval = "interval",
        /// An RFC 3339 timestamp in the future.
        Once = "once",
    }
);
wire_enum!(
    /// Which session a task's runs use.
    ContextMode <=> ContextMode {
        /// A fresh session for every run.
        Isolated = "isolated",
        /// The agent's main session, continued.
        Main = "main",
    }
);
wire_enum!(
    /// Whether a task fires.
    TaskStatus <=> TaskStatus {
        Active = "active",
        Paused = "paused",
        /// A `once` task that has run.
        Completed = "completed",
    }
);
wire_enum!(
    /// How a run ended, or that it is still going.
    RunStatus <=> RunStatus {
        Running = "running",
        Success = "success",
        Error = "error",
        /// Slots that came while the previous run was still going (`skippedSlots` counts them).
        Skipped = "skipped",
    }
);
wire_enum!(
    /// Who wrote a session message.
    Role <=> Role { User = "user", Assistant = "assistant" }
);
