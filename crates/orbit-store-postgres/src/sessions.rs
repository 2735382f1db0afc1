//! Sessions (a row each, newest first by id) and their histories (a row per message, in the
//! order appended). The index the filesystem store keeps in its journal is the primary key
//! here: listing an agent's sessions is one index range.

use async_trait::async_trait;
use orbit_store::{
    AgentName, Error, Lease, LeaseToken, NewSession, RenewedTurn, Result, Session, SessionId,
    SessionMessage, SessionPatch, SessionStore, TRANSCRIPT_PAGE_BYTES, TranscriptCursor,
    TranscriptEntry, TranscriptPage,
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
            session.last_message = Some(orbit_store::MessagePreview::of(&message));
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

    async fn append_transcript(
        &self,
        agent: &AgentName,
        id: &SessionId,
        entries: &[TranscriptEntry],
    ) -> Result<()> {
        let entries =
            entries.iter().map(json).collect::<Result<Vec<_>, _>>().map_err(Failure::into_store)?;
        transaction!(self, |tx| async {
            // The session row is locked, so a deletion cannot slip between the check and the
            // inserts, and the turn goes in whole (one transaction) or not at all.
            select(&tx, agent, id, true).await?;
            if entries.is_empty() {
                return Ok(());
            }
            db::execute(
                &tx,
                "INSERT INTO session_transcripts (agent, session_id, entry) \
                 SELECT $1, $2, e FROM unnest($3::jsonb[]) WITH ORDINALITY AS t(e, n) ORDER BY n",
                &[&agent.as_str(), &id.to_string(), &entries],
            )
            .await?;
            Ok(())
        })
    }

    async fn read_transcript(
        &self,
        agent: &AgentName,
        id: &SessionId,
        from: TranscriptCursor,
        limit: usize,
    ) -> Result<TranscriptPage> {
        // The cursor is the row number of the last entry of the previous page (0: the start);
        // one that is not a row of this transcript was never given.
        let after = i64::try_from(from.0).map_err(|_| never_given(from))?;
        let limit = limit.max(1);
        let fetch = i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX);
        let (rows, more) = transaction!(self, |tx| async {
            select(&tx, agent, id, false).await?;
            if after != 0 {
                let known = db::row(
                    &tx,
                    "SELECT 1 FROM session_transcripts WHERE agent = $1 AND session_id = $2 AND seq = $3",
                    &[&agent.as_str(), &id.to_string(), &after],
                )
                .await?;
                if known.is_none() {
                    return Err(Failure::Store(never_given(from)));
                }
            }
            // The sizes first, so that a page stops before its entries pass the byte budget
            // without fetching what it will not hold.
            let sizes = db::rows(
                &tx,
                "SELECT seq, octet_length(entry::text)::bigint AS size FROM session_transcripts \
                 WHERE agent = $1 AND session_id = $2 AND seq > $3 ORDER BY seq LIMIT $4",
                &[&agent.as_str(), &id.to_string(), &after, &fetch],
            )
            .await?;
            let (mut taken, mut bytes, mut last) = (0usize, 0u64, after);
            for row in &sizes {
                let size = u64::try_from(row.try_get::<_, i64>("size")?).unwrap_or_default();
                if taken == limit || (taken > 0 && bytes + size > TRANSCRIPT_PAGE_BYTES) {
                    break;
                }
                taken += 1;
                bytes += size;
                last = row.try_get("seq")?;
            }
            let more = sizes.len() > taken;
            if taken == 0 {
                return Ok((Vec::new(), more));
            }
            let rows = db::rows(
                &tx,
                "SELECT seq, entry FROM session_transcripts \
                 WHERE agent = $1 AND session_id = $2 AND seq > $3 AND seq <= $4 ORDER BY seq",
                &[&agent.as_str(), &id.to_string(), &after, &last],
            )
            .await?;
            Ok((rows, more))
        })?;
        let mut entries = Vec::with_capacity(rows.len());
        let mut last = after;
        for row in &rows {
            let value: serde_json::Value =
                row.try_get("entry").map_err(|err| Failure::Db(err).into_store())?;
            let entry = serde_json::from_value(value).map_err(|err| {
                Error::Backend(format!("a stored transcript entry does not parse: {err}"))
            })?;
            entries.push(entry);
            last = row.try_get("seq").map_err(|err| Failure::Db(err).into_store())?;
        }
        let next = TranscriptCursor(u64::try_from(last).unwrap_or_default());
        Ok(TranscriptPage { entries, next, more })
    }

    /// One statement: the row is made, or taken over when its lease lapsed or is this
    /// instance's own; a live lease of another instance leaves it, and nothing is changed.
    async fn hold_turn(
        &self,
        agent: &AgentName,
        id: &SessionId,
        lease: &Lease,
        now: time::OffsetDateTime,
    ) -> Result<()> {
        let held = transaction!(self, |tx| async {
            let written = db::execute(
                &tx,
                "INSERT INTO session_turns (agent, session_id, instance, token, until) \
                 VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (agent, session_id) DO UPDATE \
                 SET instance = EXCLUDED.instance, token = EXCLUDED.token, until = EXCLUDED.until, \
                     abort_requested = false \
                 WHERE session_turns.until <= $6 OR session_turns.instance = EXCLUDED.instance",
                &[
                    &agent.as_str(),
                    &id.to_string(),
                    &lease.instance.to_string(),
                    &lease.token.to_string(),
                    &lease.until,
                    &now,
                ],
            )
            .await;
            match written {
                Ok(rows) => Ok(rows),
                // The statement failed, and with it the transaction: no reading on.
                Err(err) if violates(&err, FOREIGN_KEY_VIOLATION) => Err(not_found("session", id)),
                Err(err) => Err(err),
            }
        })?;
        if held == 0 {
            return Err(Error::Conflict(format!(
                "session {id} already has a running turn on another node"
            )));
        }
        Ok(())
    }

    async fn renew_turn(
        &self,
        agent: &AgentName,
        id: &SessionId,
        token: &LeaseToken,
        until: time::OffsetDateTime,
    ) -> Result<RenewedTurn> {
        let renewed = transaction!(self, |tx| db::row(
            &tx,
            "UPDATE session_turns SET until = $4 WHERE agent = $1 AND session_id = $2 AND token = $3 \
             RETURNING abort_requested",
            &[&agent.as_str(), &id.to_string(), &token.to_string(), &until]
        ))?;
        match renewed {
            Some(row) => Ok(RenewedTurn { abort_requested: row.get(0) }),
            None => Err(Error::Conflict(format!("the turn of session {id} is no longer held"))),
        }
    }

    /// Only a live hold takes the request: a lapsed one is of a node that died, whose turn
    /// is gone with it.
    async fn request_turn_abort(
        &self,
        agent: &AgentName,
        id: &SessionId,
        now: time::OffsetDateTime,
    ) -> Result<Option<LeaseToken>> {
        let marked = transaction!(self, |tx| db::row(
            &tx,
            "UPDATE session_turns SET abort_requested = true \
             WHERE agent = $1 AND session_id = $2 AND until > $3 RETURNING token",
            &[&agent.as_str(), &id.to_string(), &now]
        ))?;
        marked.map(|row| LeaseToken::parse(row.get::<_, &str>(0))).transpose()
    }

    async fn release_turn(
        &self,
        agent: &AgentName,
        id: &SessionId,
        token: &LeaseToken,
    ) -> Result<()> {
        transaction!(self, |tx| db::execute(
            &tx,
            "DELETE FROM session_turns WHERE agent = $1 AND session_id = $2 AND token = $3",
            &[&agent.as_str(), &id.to_string(), &token.to_string()]
        ))
        .map(drop)
    }

    async fn turn_holder(
        &self,
        agent: &AgentName,
        id: &SessionId,
        now: time::OffsetDateTime,
    ) -> Result<Option<orbit_store::Instance>> {
        transaction!(self, |tx| async {
            let row = db::row(
                &tx,
                "SELECT i.doc FROM session_turns t JOIN instances i ON i.id = t.instance \
                 WHERE t.agent = $1 AND t.session_id = $2 AND t.until > $3",
                &[&agent.as_str(), &id.to_string(), &now],
            )
            .await?;
            row.as_ref().map(db::doc).transpose()
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

fn never_given(cursor: TranscriptCursor) -> Error {
    Error::Invalid(format!("transcript cursor {} was not given by this server", cursor.0))
}
