//! What the model is told: the appended system prompt, and the turn's user message with the
//! inbox messages claimed for it.

use std::path::Path;

use orbit_store::{AgentName, InboxMessage, MessageType, SenderKind, SessionId};

/// Who started a turn, which decides how the agent is briefed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TurnKind {
    /// A person chatting.
    #[default]
    Chat,
    /// A scheduled task; nobody is watching.
    ScheduledTask,
}

/// The system prompt appended to Claude Code's own. It is fixed when the CLI process starts
/// (and a resumed CLI session keeps its first one), so nothing that changes per turn belongs
/// here.
pub fn system_prompt(
    agent: &AgentName,
    session: &SessionId,
    kind: TurnKind,
    memory_dir: Option<&Path>,
) -> String {
    let mut prompt = format!(
        "You are the agent \"{agent}\", run by Orbit (session {session}). Other agents may write to you: \
         their messages reach you inside the user's message, under \"Orbit inbox\", each with its id and sender. \
         Each one delivered to you is yours alone to handle."
    );
    if let Some(dir) = memory_dir {
        prompt += &format!(
            "\n\nYour memory lives in {} as one markdown file per day (YYYY-MM-DD.md). Orbit appends a summary of every turn; read it to recall earlier work.",
            dir.display()
        );
    }
    if kind == TurnKind::ScheduledTask {
        prompt += "\n\nThis session was started by a scheduled task, not by a person: nobody is watching. \
                   Do the task and state its outcome plainly in your final message.";
    }
    prompt
}

/// The user message of a turn: the prompt, then the inbox messages claimed for this turn.
pub fn user_message(prompt: &str, inbox: &[InboxMessage]) -> String {
    if inbox.is_empty() {
        return prompt.to_owned();
    }
    let mut text = format!(
        "{prompt}\n\n---\nOrbit inbox: {} message(s) delivered to you with this turn.\n",
        inbox.len()
    );
    for message in inbox {
        let kind = match message.message_type {
            MessageType::Request => "request".to_owned(),
            MessageType::Response => match message.request_id {
                Some(request) => format!("response to {request}"),
                None => "response".to_owned(),
            },
        };
        let from = match message.from_kind {
            SenderKind::Agent => format!("agent {}", message.from_agent),
            SenderKind::Person => format!("{} (a person, not an agent)", message.from_agent),
        };
        text += &format!("\n[message {} from {from} ({kind})]\n{}\n", message.id, message.message);
    }
    text
}
