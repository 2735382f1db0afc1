//! A turn's hold on its session across nodes (`SessionStore::hold_turn`): taken as the turn
//! is accepted, renewed at a third of its lease while the turn lives, let go when it ends, so
//! that two nodes sharing a store never run turns of one session at once. On a store of one
//! machine holding is free and changes nothing.

use std::sync::Arc;

use orbit_store::{AgentName, ErrorKind, Lease, LeaseToken, SessionId, SessionStore};

use super::SessionAgent;
use super::claims::AbortOnDrop;
use crate::{Error, Result};

/// The session's turn, held by this node until [`TurnHold::release`] (or, should the turn's
/// task be dropped, until its drop lets go in the background).
pub(super) struct TurnHold {
    sessions: Arc<dyn SessionStore>,
    agent: AgentName,
    session: SessionId,
    token: LeaseToken,
    released: bool,
    _renewing: AbortOnDrop,
}

impl SessionAgent {
    /// Holds the session's turn `turn`, or refuses it (`TurnInProgress`) while another node
    /// runs one. A hold lost while the turn runs ends the turn: the session was deleted (its
    /// hold goes with it), or this node was cut off past its lease and another may run the
    /// session now. This is also what ends a turn whose deletion signal never came (a node
    /// that was reconnecting to the database when it was sent): within a third of a lease.
    /// An abort asked through another node is kept against the hold too, and a renewal that
    /// finds it aborts the turn, whether or not the signal asking it arrived.
    pub(super) async fn hold_turn(self: &Arc<Self>, turn: u64) -> Result<TurnHold> {
        let options = &self.shared.options;
        let sessions = self.shared.stores.sessions.clone();
        let now = orbit_store::timestamp::now();
        let lease = Lease::new(options.instance, now + options.claim_lease);
        match sessions.hold_turn(&self.agent, &self.session, &lease, now).await {
            Err(err) if err.kind() == ErrorKind::Conflict => {
                return Err(Error::TurnInProgress(self.session.to_string()));
            }
            held => held?,
        }
        *self.held_turn.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some((lease.token, turn));
        let renewing = {
            let (sessions, agent, session) = (sessions.clone(), self.agent.clone(), self.session);
            let (every, token) = (options.claim_lease, lease.token);
            let this = Arc::downgrade(self);
            AbortOnDrop(tokio::spawn(async move {
                let mut aborted = false;
                loop {
                    tokio::time::sleep(every / 3).await;
                    let until = orbit_store::timestamp::now() + every;
                    match sessions.renew_turn(&agent, &session, &token, until).await {
                        // An abort asked through another node whose signal never came: it is
                        // done now. The hold is still renewed while the turn settles.
                        Ok(renewed) if renewed.abort_requested && !aborted => {
                            aborted = true;
                            tracing::info!(%agent, %session, "turn aborted through another node (found at the hold's renewal)");
                            if let Some(this) = this.upgrade() {
                                this.abort_turn(turn);
                            }
                        }
                        Ok(_) => {}
                        Err(err)
                            if matches!(err.kind(), ErrorKind::Conflict | ErrorKind::NotFound) =>
                        {
                            tracing::warn!(%agent, %session, error = %err, "the hold on a session's turn is lost; ending the turn");
                            if let Some(this) = this.upgrade() {
                                this.abort_turn(turn);
                            }
                            return;
                        }
                        // The store is unreachable for a moment: the lease allows for it.
                        Err(err) => {
                            tracing::warn!(%agent, %session, error = %err, "could not renew the hold on a session's turn");
                        }
                    }
                }
            }))
        };
        Ok(TurnHold {
            sessions,
            agent: self.agent.clone(),
            session: self.session,
            token: lease.token,
            released: false,
            _renewing: renewing,
        })
    }
}

impl TurnHold {
    /// Lets go, before the turn's end is told, so that a next turn on any node finds the
    /// session free. A failure is logged: the hold lapses with its lease.
    pub(super) async fn release(mut self) {
        self.released = true;
        if let Err(err) = self.sessions.release_turn(&self.agent, &self.session, &self.token).await
        {
            tracing::warn!(agent = %self.agent, session = %self.session, error = %err, "could not let go of a session's turn");
        }
    }
}

impl Drop for TurnHold {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        let (sessions, agent, session, token) =
            (self.sessions.clone(), self.agent.clone(), self.session, self.token);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = sessions.release_turn(&agent, &session, &token).await;
            });
        }
    }
}
