//! Names and ids, parsed into newtypes before any path is built from them.
//!
//! An [`AgentName`] can only hold `^[a-z0-9][a-z0-9_-]{0,63}$`, and the ULID newtypes print
//! only Crockford base32, so no value of these types can form a path outside its directory.

use std::fmt;
use std::str::FromStr;
use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use ulid::Ulid;

use crate::Error;

/// Longest input echoed back in an error message.
const ECHO_LIMIT: usize = 80;

fn echo(input: &str) -> String {
    input.chars().take(ECHO_LIMIT).collect()
}

/// An agent's name: `^[a-z0-9][a-z0-9_-]{0,63}$`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AgentName(String);

impl AgentName {
    /// The longest name accepted.
    pub const MAX_LEN: usize = 64;

    /// Parses a name, refusing anything that is not lowercase ASCII letters, digits, `_` and
    /// `-`, starting with a letter or digit, at most 64 characters.
    pub fn parse(input: &str) -> crate::Result<Self> {
        let invalid = |reason: &str| Error::InvalidId {
            what: "agent name",
            input: echo(input),
            reason: reason.to_owned(),
        };
        let bytes = input.as_bytes();
        let Some(first) = bytes.first() else {
            return Err(invalid("it is empty"));
        };
        if bytes.len() > Self::MAX_LEN {
            return Err(invalid("it is longer than 64 characters"));
        }
        if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
            return Err(invalid("it must start with a lowercase letter or a digit"));
        }
        let allowed =
            |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_' || *b == b'-';
        if !bytes.iter().all(allowed) {
            return Err(invalid("only a-z, 0-9, '_' and '-' are allowed"));
        }
        Ok(Self(input.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AgentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for AgentName {
    type Err = Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        Self::parse(s)
    }
}

impl Serialize for AgentName {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for AgentName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// One ULID generator for the process, so that ids made in the same millisecond still sort
/// in the order they were made (sessions are listed newest first by id).
static GENERATOR: Mutex<Option<ulid::Generator>> = Mutex::new(None);

/// A fresh ULID, monotonic within this process.
pub fn new_ulid() -> Ulid {
    let mut guard = GENERATOR.lock().unwrap_or_else(PoisonError::into_inner);
    let generator = guard.get_or_insert_with(ulid::Generator::new);
    // The generator fails only when 2^80 ids are made in one millisecond.
    generator.generate().unwrap_or_else(|_| Ulid::new())
}

macro_rules! ulid_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Ulid);

        impl $name {
            /// A fresh id, sorting after every id this process made before.
            #[allow(clippy::new_without_default)]
            pub fn new() -> Self {
                Self(new_ulid())
            }

            /// Parses the 26-character Crockford base32 form.
            pub fn parse(input: &str) -> crate::Result<Self> {
                let invalid = |reason: String| Error::InvalidId { what: $what, input: echo(input), reason };
                // A first digit above 7 would overflow 128 bits; refuse it rather than wrap.
                if input.len() == 26 && !input.starts_with(|c: char| ('0'..='7').contains(&c)) {
                    return Err(invalid("not a ULID (its first character must be 0-7)".into()));
                }
                Ulid::from_string(input).map(Self).map_err(|err| invalid(format!("not a ULID ({err})")))
            }

            /// The underlying ULID.
            pub fn ulid(&self) -> Ulid {
                self.0
            }

            /// Milliseconds since the Unix epoch at which the id was made.
            pub fn timestamp_ms(&self) -> u64 {
                self.0.timestamp_ms()
            }
        }

        impl From<Ulid> for $name {
            fn from(ulid: Ulid) -> Self {
                Self(ulid)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> crate::Result<Self> {
                Self::parse(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                Self::parse(&text).map_err(serde::de::Error::custom)
            }
        }
    };
}

ulid_id!(
    /// The id of an Orbit session (not the CLI's own session id).
    SessionId,
    "session id"
);
ulid_id!(
    /// The id of an inbox message.
    MessageId,
    "message id"
);
ulid_id!(
    /// The id of a scheduled task.
    TaskId,
    "task id"
);
ulid_id!(
    /// The id of one run of a task.
    RunId,
    "run id"
);
ulid_id!(
    /// The id of one server process's registration in the store (see `InstanceStore`): fresh
    /// at every start, so a restarted server, PID 1 of a new container included, never
    /// mistakes its predecessor's work for its own.
    InstanceId,
    "instance id"
);
ulid_id!(
    /// The fencing token of a lease: fresh whenever work changes hands, so a holder whose
    /// lease lapsed and was taken over can no longer act on the work.
    LeaseToken,
    "lease token"
);
ulid_id!(
    /// The id in an append-only file's header line (a session journal, the task change
    /// feed): fresh for every file written, so a reader knows a replaced file by its content.
    JournalId,
    "journal id"
);
