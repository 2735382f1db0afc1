//! Sessions (a row each, newest first by id) and their histories (a row per message, in the
//! order appended). The index the filesystem store keeps in its journal is the primary key
//! here: listing an agent's sessions is one index range.

use async_trait::async_trait;
use orbit_store::{
    AgentName, Error, NewSession, Result, Session, SessionId, SessionMessage, SessionPatch,
    SessionStore,
};

use crate::PgStore;
use crate::db::{self, doc, docs, json, not_found, require_agent, transaction};
use crate::error::{FOREIGN_KEY_VIOLATION, Failure, UNIQUE_VIOLATION, violates};

type Tx<'a> = deadpool_postgres::Transaction<'a>;

async fn select(
    tx: &Tx<'_>,
    agent: &AgentName,
    id: &SessionId,
    lock: bool,
) -> Result<Session, Failure> {
    let sql = if lock {
        "SELECT doc FROM sessions WHERE agent = $1 AND id = $2 FOR UPDATE"
    } else {
        "SELECT doc FROM sessions WHERE agent = $1 AND id = $2"
    };
    match db::row(tx, sql, &[&agent.as_str(), &id.to_string()]).await? {
        Some(row) => doc(&row),
        None => {
            require_agent(tx, agent).await?;
            Err(not_found("session", id))
        }
    }
}

async fn write(tx: &Tx<'_>, session: &Session) -> Result<(), Failure> {
    db::execute(
        tx,
        "UPDATE sessions SET doc = $3 WHERE agent = $1 AND id = $2",
        &[&session.agent_name.as_str(), &session.id.to_string(), &json(session)?],
    )
    .await?;
    Ok(())
}

async fn insert(tx: &Tx<'_>, session: &Session) -> Result<(), Failure> {
    let inserted = db::execute(
        tx,
        "INSERT INTO sessions (agent, id, doc) VALUES ($1, $2, $3)",
        &[&session.agent_name.as_str(), &session.id.to_string(), &json(session)?],
    )
    .await;
    match inserted {
        Ok(_) => Ok(()),
        Err(err) if violates(&err, FOREIGN_KEY_VIOLATION) => {
            Err(not_found("agent", &session.agent_name))
        }
        Err(err) if violates(&err, UNIQUE_VIOLATION) => Err(Failure::Store(Error::AlreadyExists {
            what: "session",
            id: session.id.to_string(),
        })),
        Err(err) => Err(err),
    }
}

#[async_trait]
impl SessionStore for PgStore {
    async fn create_with_id(
        &self,
        agent: &AgentName,
        id: SessionId,
        new: NewSession,
    ) -> Result<Session> {
        let session = Session::new(agent, id, new);
        transaction!(self, |tx| insert(&tx, &session))?;
        Ok(session)
    }

    async fn get(&self, agent: &AgentName, id: &SessionId) -> Result<Session> {
        transaction!(self, |tx| select(&tx, agent, id, false))
    }

    async fn list_by_agent(&self, agent: &AgentName) -> Result<Vec<Session>> {
        transaction!(self, |tx| async {
            let rows = db::rows(
                &tx,
                "SELECT doc FROM sessions WHERE agent = $1 ORDER BY id DESC",
                &[&agent.as_str()],
            )
            .await?;
            if rows.is_empty() {
                require_agent(&tx, agent).await?;
            }
            Ok(docs(&rows))
        })
    }

    async fn update(
        &self,
        agent: &AgentName,
        id: &SessionId,
        patch: SessionPatch,
    ) -> Result<Session> {
        transaction!(self, |tx| async {
            let mut session = select(&tx, agent, id, true).await?;
            patch.clone().apply(&mut session);
            write(&tx, &session).await?;
            Ok(session)
        })
    }

    async fn delete(&self, agent: &AgentName, id: &SessionId) -> Result<()> {
        transaction!(self, |tx| async {
            let removed = db::execute(
                &tx,
                "DELETE FROM sessions WHERE agent = $1 AND id = $2",
                &[&agent.as_str(), &id.to_string()],
            )
            .await?;
            if removed == 0 {
                require_agent(&tx, agent).await?;
                return Err(not_found("session", id));
            }
            Ok(())
        })
    }

    async fn append_message(
        &self,
        agent: &AgentName,
        id: &SessionId,
        message: SessionMessage,
    ) -> Result<()> {
        transaction!(self, |tx| async {
            let mut session = select(&tx, agent, id, true).await?;
            session.message_count += 1;
            session.last_message_at = Some(message.created_at);
            write(&tx, &session).await?;
            db::execute(
                &tx,
                "INSERT INTO session_messages (agent, session_id, doc) VALUES ($1, $2, $3)",
                &[&agent.as_str(), &id.to_string(), &json(&message)?],
            )
            .await?;
            Ok(())
        })
    }

    async fn get_messages(&self, agent: &AgentName, id: &SessionId) -> Result<Vec<SessionMessage>> {
        transaction!(self, |tx| async {
            let rows = db::rows(
                &tx,
                "SELECT doc FROM session_messages WHERE agent = $1 AND session_id = $2 \
                 ORDER BY seq",
                &[&agent.as_str(), &id.to_string()],
            )
            .await?;
            if rows.is_empty() {
                select(&tx, agent, id, false).await?;
            }
            Ok(docs(&rows))
        })
    }

    async fn save_cli_transcript(
        &self,
        agent: &AgentName,
        id: &SessionId,
        cli_session: &str,
        transcript: Vec<u8>,
    ) -> Result<()> {
        transaction!(self, |tx| async {
            let saved = db::execute(
                &tx,
                "INSERT INTO cli_transcripts (agent, session_id, cli_session, body) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (agent, session_id) \
                 DO UPDATE SET cli_session = $3, body = $4, saved_at = now()",
                &[&agent.as_str(), &id.to_string(), &cli_session, &transcript],
            )
            .await;
            match saved {
                Err(err) if violates(&err, FOREIGN_KEY_VIOLATION) => Err(not_found("session", id)),
                other => other.map(drop),
            }
        })
    }

    async fn load_cli_transcript(
        &self,
        agent: &AgentName,
        id: &SessionId,
    ) -> Result<Option<(String, Vec<u8>)>> {
        transaction!(self, |tx| async {
            let row = db::row(
                &tx,
                "SELECT cli_session, body FROM cli_transcripts WHERE agent = $1 AND session_id = $2",
                &[&agent.as_str(), &id.to_string()],
            )
            .await?;
            Ok(row.map(|row| (row.get(0), row.get(1))))
        })
    }
}
