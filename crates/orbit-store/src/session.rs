//! Sessions: one conversation each, with its own CLI state and message history.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::render::{Body, Detail, Listing, Render, Rendered};
use crate::{
    AgentName, Lease, LeaseToken, PermissionMode, Result, SessionId, TranscriptCursor,
    TranscriptEntry, TranscriptPage,
};

/// Token counts, summed over a session's turns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    #[serde(default)]
    pub input_tokens: u64,
    #[serde(default)]
    pub output_tokens: u64,
    #[serde(default)]
    pub cache_creation_input_tokens: u64,
    #[serde(default)]
    pub cache_read_input_tokens: u64,
}

impl Usage {
    /// Adds `other` to these totals.
    pub fn add(&mut self, other: &Usage) {
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cache_creation_input_tokens += other.cache_creation_input_tokens;
        self.cache_read_input_tokens += other.cache_read_input_tokens;
    }
}

/// A session's metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    pub id: SessionId,
    pub agent_name: AgentName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// The Claude Code CLI's own session id, resumed by later turns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdk_session_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permission_mode: Option<PermissionMode>,
    /// The git worktree this session's turns run in, if it asked for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worktree_id: Option<String>,
    /// The node whose disk holds the session's worktree (set only with one). A worktree is
    /// local by nature, so the session's turns run on that node alone; another node sharing
    /// the store refuses them, naming this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The node this session was pinned to until that node was released as gone for good
    /// ([`SessionPatch::release_from`]): its worktree was on that node's disk and is lost
    /// with it, so its turns run in the agent's working directory since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released_from: Option<String>,
    #[serde(with = "crate::timestamp::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "crate::timestamp::rfc3339::option")]
    pub last_message_at: Option<OffsetDateTime>,
    pub message_count: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_cost_usd: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// The start of the latest message, so a listing can show it without reading histories.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_message: Option<MessagePreview>,
    /// What the turns that ended on the latest UTC day a turn ended cost, so an agent's cost
    /// of today is a sum over its sessions rather than a guess from their totals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub day_cost: Option<DayCost>,
}

/// The start of a session message, on one line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessagePreview {
    pub role: Role,
    /// At most [`MessagePreview::CHARS`] characters, whitespace runs made one space; cut
    /// text ends with `…`.
    pub text: String,
}

impl MessagePreview {
    pub const CHARS: usize = 160;

    pub fn of(message: &SessionMessage) -> Self {
        let mut text = String::new();
        let mut words = message.content.split_whitespace();
        let mut cut = false;
        for word in words.by_ref() {
            if !text.is_empty() {
                text.push(' ');
            }
            text.push_str(word);
            if text.chars().count() > Self::CHARS {
                cut = true;
                break;
            }
        }
        if cut {
            text = text.chars().take(Self::CHARS - 1).collect::<String>().trim_end().to_owned();
            text.push('…');
        }
        Self { role: message.role, text }
    }
}

/// What renewing a turn's hold found ([`SessionStore::renew_turn`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RenewedTurn {
    /// An abort of the turn was asked through another node: the holder aborts it.
    pub abort_requested: bool,
}

/// The cost of a session's turns that ended on one UTC day.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DayCost {
    /// The UTC date, `YYYY-MM-DD`.
    pub day: String,
    pub cost_usd: f64,
}

impl DayCost {
    /// The UTC date of `at`, as [`DayCost::day`] spells it.
    pub fn day_of(at: OffsetDateTime) -> String {
        let date = at.to_offset(time::UtcOffset::UTC).date();
        format!("{:04}-{:02}-{:02}", date.year(), u8::from(date.month()), date.day())
    }
}

impl Session {
    /// A new session of `agent`, made now, with no history yet.
    pub fn new(agent: &AgentName, id: SessionId, new: NewSession) -> Self {
        Self {
            id,
            agent_name: agent.clone(),
            title: new.title,
            sdk_session_id: None,
            model: new.model,
            permission_mode: new.permission_mode,
            worktree_id: new.worktree_id,
            node: new.node,
            released_from: None,
            created_at: crate::timestamp::now(),
            last_message_at: None,
            message_count: 0,
            total_cost_usd: None,
            usage: None,
            last_message: None,
            day_cost: None,
        }
    }
}

/// What a caller gives to make a session.
#[derive(Debug, Clone, Default)]
pub struct NewSession {
    pub title: Option<String>,
    pub model: Option<String>,
    pub permission_mode: Option<PermissionMode>,
    pub worktree_id: Option<String>,
    pub node: Option<String>,
}

/// A partial update of a session; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct SessionPatch {
    pub title: Option<String>,
    pub sdk_session_id: Option<String>,
    pub model: Option<String>,
    pub permission_mode: Option<PermissionMode>,
    /// Added to the session's `totalCostUsd`.
    pub add_cost_usd: Option<f64>,
    /// Added to the session's usage totals.
    pub add_usage: Option<Usage>,
    /// A node gone for good: a session pinned to it loses its pin and its worktree (on that
    /// node's disk), and says where it was (`released_from`). A session pinned elsewhere,
    /// or not at all, is left as it is.
    pub release_from: Option<String>,
}

impl SessionPatch {
    /// Applies the patch to a session: each field given replaces the session's; cost and
    /// usage add up.
    pub fn apply(self, session: &mut Session) {
        if let Some(title) = self.title {
            session.title = Some(title);
        }
        if let Some(sdk) = self.sdk_session_id {
            session.sdk_session_id = Some(sdk);
        }
        if let Some(model) = self.model {
            session.model = Some(model);
        }
        if let Some(mode) = self.permission_mode {
            session.permission_mode = Some(mode);
        }
        if let Some(cost) = self.add_cost_usd {
            session.total_cost_usd = Some(session.total_cost_usd.unwrap_or(0.0) + cost);
            let today = DayCost::day_of(crate::timestamp::now());
            match &mut session.day_cost {
                Some(day) if day.day == today => day.cost_usd += cost,
                _ => session.day_cost = Some(DayCost { day: today, cost_usd: cost }),
            }
        }
        if let Some(usage) = self.add_usage {
            session.usage.get_or_insert_with(Usage::default).add(&usage);
        }
        if let Some(gone) = self.release_from
            && session.node.as_deref() == Some(gone.as_str())
        {
            session.node = None;
            session.worktree_id = None;
            session.released_from = Some(gone);
        }
    }
}

/// Who wrote a session message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Assistant,
}

/// One line of a session's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionMessage {
    pub role: Role,
    pub content: String,
    #[serde(with = "crate::timestamp::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl SessionMessage {
    /// A message stamped now.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self { role, content: content.into(), created_at: crate::timestamp::now() }
    }
}

/// Storage of sessions and their histories.
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Makes a session of an existing agent (`NotFound` otherwise).
    async fn create(&self, agent: &AgentName, new: NewSession) -> Result<Session> {
        self.create_with_id(agent, SessionId::new(), new).await
    }
    /// Makes a session with an id chosen beforehand (for things named after the session,
    /// like its worktree); `AlreadyExists` when the id is taken.
    async fn create_with_id(
        &self,
        agent: &AgentName,
        id: SessionId,
        new: NewSession,
    ) -> Result<Session>;
    /// `NotFound` when missing.
    async fn get(&self, agent: &AgentName, id: &SessionId) -> Result<Session>;
    /// The agent's sessions, newest first.
    async fn list_by_agent(&self, agent: &AgentName) -> Result<Vec<Session>>;
    /// A page of [`list_by_agent`](Self::list_by_agent): at most `limit` sessions older than
    /// the session `before` (from the newest when `None`), newest first. An implementation
    /// that can should answer it without reading the sessions it does not return.
    async fn list_page(
        &self,
        agent: &AgentName,
        before: Option<SessionId>,
        limit: usize,
    ) -> Result<Vec<Session>> {
        let sessions = self.list_by_agent(agent).await?;
        Ok(sessions.into_iter().filter(|s| before.is_none_or(|b| s.id < b)).take(limit).collect())
    }
    /// [`list_by_agent`](Self::list_by_agent) as `listing` writes it; a store may keep the
    /// renderings of unchanged sessions and the body of an unchanged listing (see
    /// [`render`](crate::render)).
    async fn list_rendered(&self, agent: &AgentName, listing: Listing<Session>) -> Result<Body> {
        Ok(listing.write(&self.list_by_agent(agent).await?))
    }
    /// Applies a partial update atomically with respect to other updates.
    async fn update(
        &self,
        agent: &AgentName,
        id: &SessionId,
        patch: SessionPatch,
    ) -> Result<Session>;
    /// Removes the session, its history and its transcript.
    async fn delete(&self, agent: &AgentName, id: &SessionId) -> Result<()>;
    /// Appends to the history, keeping `messageCount`, `lastMessageAt` and `lastMessage`
    /// right.
    async fn append_message(
        &self,
        agent: &AgentName,
        id: &SessionId,
        message: SessionMessage,
    ) -> Result<()>;
    /// The whole history, oldest first.
    async fn get_messages(&self, agent: &AgentName, id: &SessionId) -> Result<Vec<SessionMessage>>;
    /// [`get`](Self::get) then [`get_messages`](Self::get_messages), each message rendered by
    /// `render`; a store may keep the renderings of a history it read before, which is only
    /// ever appended to (see [`render`](crate::render)).
    async fn get_rendered(
        &self,
        agent: &AgentName,
        id: &SessionId,
        render: Render<SessionMessage>,
    ) -> Result<(Session, Vec<Rendered>)> {
        let session = self.get(agent, id).await?;
        let messages = self.get_messages(agent, id).await?;
        Ok((session, crate::render::each(&messages, render)))
    }
    /// The session with its whole history as one body, as `detail` writes it: what
    /// [`get_rendered`](Self::get_rendered) answers, joined. A store may keep the body and
    /// answer it again while neither the session nor its history changed.
    async fn get_detail(
        &self,
        agent: &AgentName,
        id: &SessionId,
        detail: &Detail<Session, SessionMessage>,
    ) -> Result<Body> {
        let (session, messages) = self.get_rendered(agent, id, detail.parts.render).await?;
        Ok(detail.join(&session, &messages))
    }
    /// Appends a turn's transcript entries, in order, as one step: a reader sees all of them
    /// or none. `NotFound` when the session does not exist.
    async fn append_transcript(
        &self,
        agent: &AgentName,
        id: &SessionId,
        entries: &[TranscriptEntry],
    ) -> Result<()>;
    /// At most `limit` transcript entries from `from` on, oldest first, and no more than
    /// [`crate::TRANSCRIPT_PAGE_BYTES`] of them; at least one whenever any follows `from`.
    /// `NotFound` for an unknown session; `Invalid` for a cursor this store never gave.
    async fn read_transcript(
        &self,
        agent: &AgentName,
        id: &SessionId,
        from: TranscriptCursor,
        limit: usize,
    ) -> Result<TranscriptPage>;
    /// Holds the session's turn for the lease's instance: refused with `Conflict` while
    /// another instance's lease on it is live at `now` (the same instance may take it again:
    /// its own pool lets one turn of a session run at a time). A store shared by several
    /// nodes keeps it, so that no two nodes run turns of one session at once and a node that
    /// died lets go when its lease lapses; one machine's store has nothing to hold, its pool
    /// refusing a second turn itself.
    async fn hold_turn(
        &self,
        agent: &AgentName,
        id: &SessionId,
        lease: &Lease,
        now: OffsetDateTime,
    ) -> Result<()> {
        let _ = (agent, id, lease, now);
        Ok(())
    }
    /// Extends a held turn's lease, and says whether an abort of the turn was asked through
    /// another node ([`SessionStore::request_turn_abort`]); `Conflict` when `token` no longer
    /// holds it.
    async fn renew_turn(
        &self,
        agent: &AgentName,
        id: &SessionId,
        token: &LeaseToken,
        until: OffsetDateTime,
    ) -> Result<RenewedTurn> {
        let _ = (agent, id, token, until);
        Ok(RenewedTurn::default())
    }
    /// Records that the session's running turn is to be aborted, against its hold, so that
    /// the node holding it learns so at its next renewal even if no signal reached it; the
    /// request goes with the hold (a next turn's hold starts without one). The token of the
    /// live hold (at `now`) that took it, so that the request, passed on to the node holding
    /// the turn, aborts that turn and never a next one; `None` means no turn of the session
    /// runs on any node. A store that keeps no holds answers `None`: its one machine's pool
    /// knows its turns itself.
    async fn request_turn_abort(
        &self,
        agent: &AgentName,
        id: &SessionId,
        now: OffsetDateTime,
    ) -> Result<Option<LeaseToken>> {
        let _ = (agent, id, now);
        Ok(None)
    }
    /// Lets go of a held turn (nothing when `token` no longer holds it).
    async fn release_turn(
        &self,
        agent: &AgentName,
        id: &SessionId,
        token: &LeaseToken,
    ) -> Result<()> {
        let _ = (agent, id, token);
        Ok(())
    }
    /// The registered instance whose lease on the session's turn is live at `now`: where
    /// the turn runs, on a store several nodes share. `None` when no turn is held (or its
    /// holder is not registered); one machine's store holds nothing, its pool knowing.
    async fn turn_holder(
        &self,
        agent: &AgentName,
        id: &SessionId,
        now: OffsetDateTime,
    ) -> Result<Option<crate::Instance>> {
        let _ = (agent, id, now);
        Ok(None)
    }
    /// Keeps the CLI's own transcript of the session's conversation (`cli_session` is the
    /// CLI's session id), so that a node other than the one that ran the last turn can resume
    /// it. A store used by one machine only keeps nothing: the transcript is in that
    /// machine's CLI state already.
    async fn save_cli_transcript(
        &self,
        agent: &AgentName,
        id: &SessionId,
        cli_session: &str,
        transcript: Vec<u8>,
    ) -> Result<()> {
        let _ = (agent, id, cli_session, transcript);
        Ok(())
    }
    /// The transcript last kept for the session, with the CLI session id it belongs to.
    async fn load_cli_transcript(
        &self,
        agent: &AgentName,
        id: &SessionId,
    ) -> Result<Option<(String, Vec<u8>)>> {
        let _ = (agent, id);
        Ok(None)
    }
}
