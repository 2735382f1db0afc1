//! Sessions and their histories in memory.

use async_trait::async_trait;

use super::{MemStore, SessionRecord, State};
use crate::{
    AgentName, Error, NewSession, Result, Session, SessionId, SessionMessage, SessionPatch,
    SessionStore, TRANSCRIPT_PAGE_BYTES, TranscriptCursor, TranscriptEntry, TranscriptPage,
};

impl State {
    fn session_mut(&mut self, agent: &AgentName, id: &SessionId) -> Result<&mut SessionRecord> {
        self.agent_mut(agent)?.sessions.get_mut(id).ok_or_else(|| Error::not_found("session", id))
    }

    fn session(&self, agent: &AgentName, id: &SessionId) -> Result<&SessionRecord> {
        self.agent(agent)?.sessions.get(id).ok_or_else(|| Error::not_found("session", id))
    }
}

#[async_trait]
impl SessionStore for MemStore {
    async fn create_with_id(
        &self,
        agent: &AgentName,
        id: SessionId,
        new: NewSession,
    ) -> Result<Session> {
        let mut state = self.state();
        let sessions = &mut state.agent_mut(agent)?.sessions;
        if sessions.contains_key(&id) {
            return Err(Error::AlreadyExists { what: "session", id: id.to_string() });
        }
        let session = Session::new(agent, id, new);
        sessions.insert(
            id,
            SessionRecord {
                session: session.clone(),
                messages: Vec::new(),
                transcript: Vec::new(),
            },
        );
        Ok(session)
    }

    async fn get(&self, agent: &AgentName, id: &SessionId) -> Result<Session> {
        Ok(self.state().session(agent, id)?.session.clone())
    }

    async fn list_by_agent(&self, agent: &AgentName) -> Result<Vec<Session>> {
        // Ids are ULIDs, so reverse id order is newest first.
        let state = self.state();
        Ok(state.agent(agent)?.sessions.values().rev().map(|r| r.session.clone()).collect())
    }

    async fn update(
        &self,
        agent: &AgentName,
        id: &SessionId,
        patch: SessionPatch,
    ) -> Result<Session> {
        let mut state = self.state();
        let session = &mut state.session_mut(agent, id)?.session;
        patch.apply(session);
        Ok(session.clone())
    }

    async fn delete(&self, agent: &AgentName, id: &SessionId) -> Result<()> {
        let mut state = self.state();
        match state.agent_mut(agent)?.sessions.remove(id) {
            Some(_) => Ok(()),
            None => Err(Error::not_found("session", id)),
        }
    }

    async fn append_message(
        &self,
        agent: &AgentName,
        id: &SessionId,
        message: SessionMessage,
    ) -> Result<()> {
        let mut state = self.state();
        let record = state.session_mut(agent, id)?;
        record.session.message_count += 1;
        record.session.last_message_at = Some(message.created_at);
        record.session.last_message = Some(crate::MessagePreview::of(&message));
        record.messages.push(message);
        Ok(())
    }

    async fn get_messages(&self, agent: &AgentName, id: &SessionId) -> Result<Vec<SessionMessage>> {
        Ok(self.state().session(agent, id)?.messages.clone())
    }

    async fn append_transcript(
        &self,
        agent: &AgentName,
        id: &SessionId,
        entries: &[TranscriptEntry],
    ) -> Result<()> {
        let mut state = self.state();
        state.session_mut(agent, id)?.transcript.extend_from_slice(entries);
        Ok(())
    }

    /// The cursor is an index into the session's entries.
    async fn read_transcript(
        &self,
        agent: &AgentName,
        id: &SessionId,
        from: TranscriptCursor,
        limit: usize,
    ) -> Result<TranscriptPage> {
        let state = self.state();
        let transcript = &state.session(agent, id)?.transcript;
        let start = usize::try_from(from.0)
            .ok()
            .filter(|start| *start <= transcript.len())
            .ok_or_else(|| Error::Invalid(format!("no transcript position {}", from.0)))?;
        let (mut entries, mut bytes) = (Vec::new(), 0u64);
        for entry in &transcript[start..] {
            // Sized as the file store writes it, so both stores page alike.
            let size = serde_json::to_vec(entry).map_or(0, |json| json.len() as u64 + 1);
            if !entries.is_empty()
                && (entries.len() >= limit || bytes.saturating_add(size) > TRANSCRIPT_PAGE_BYTES)
            {
                break;
            }
            bytes += size;
            entries.push(entry.clone());
        }
        let end = start + entries.len();
        Ok(TranscriptPage {
            entries,
            next: TranscriptCursor(end as u64),
            more: end < transcript.len(),
        })
    }
}
