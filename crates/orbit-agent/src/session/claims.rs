//! A turn's inbox claims and its record: what the turn takes, how it gives it back, and
//! what it leaves in the session and the agent's memory.

use orbit_store::{Claimer, InboxMessage, MessageStatus, Role, SessionMessage};

use super::SessionAgent;
use crate::Result;
use crate::activity::Activity;
use crate::prompt::TurnKind;

/// Most inbox messages one turn takes.
pub(super) const MAX_CLAIMS: usize = 20;

impl SessionAgent {
    pub(super) async fn claim_inbox(&self) -> Result<Vec<InboxMessage>> {
        let claimer = Claimer {
            session: self.session,
            instance: self.shared.options.instance,
            until: orbit_store::timestamp::now() + self.shared.options.claim_lease,
        };
        let claimed =
            self.shared.stores.inbox.claim_unclaimed(&self.agent, &claimer, MAX_CLAIMS).await?;
        for message in &claimed {
            self.shared.options.activity.announce(Activity::InboxClaimed {
                agent: self.agent.clone(),
                message: message.id,
                session: self.session,
            });
        }
        Ok(claimed)
    }

    /// Renews the claims' leases at a third of their length until the returned guard drops.
    pub(super) fn renew_claims(&self, claimed: &[InboxMessage]) -> Option<AbortOnDrop> {
        if claimed.is_empty() {
            return None;
        }
        let (inbox, agent) = (self.shared.stores.inbox.clone(), self.agent.clone());
        let lease = self.shared.options.claim_lease;
        let held: Vec<_> =
            claimed.iter().filter_map(|m| m.lease.map(|lease| (m.id, lease.token))).collect();
        Some(AbortOnDrop(tokio::spawn(async move {
            loop {
                tokio::time::sleep(lease / 3).await;
                let until = orbit_store::timestamp::now() + lease;
                for (id, token) in &held {
                    if let Err(err) = inbox.renew(&agent, id, token, until).await {
                        tracing::warn!(%agent, message = %id, error = %err, "could not renew an inbox claim");
                    }
                }
            }
        })))
    }

    pub(super) async fn settle_claims(
        &self,
        claimed: &[InboxMessage],
        success: bool,
        delivered: bool,
    ) {
        let inbox = &self.shared.stores.inbox;
        for message in claimed {
            let Some(lease) = message.lease else { continue };
            let settled = if success {
                inbox.mark_read(&self.agent, &message.id, &lease.token).await
            } else {
                inbox.release(&self.agent, &message.id, &lease.token, delivered).await
            };
            let (agent, message) = (self.agent.clone(), message.id);
            let activity = match settled {
                Ok(settled) if settled.status == MessageStatus::Dead => {
                    Activity::InboxDead { agent, message }
                }
                Ok(_) if success => Activity::InboxRead { agent, message },
                Ok(_) => Activity::InboxReleased { agent, message },
                Err(err) => {
                    tracing::warn!(agent = %self.agent, %message, error = %err, success, "could not settle an inbox claim");
                    continue;
                }
            };
            self.shared.options.activity.announce(activity);
        }
    }

    /// Appends the exchange to the session and the agent's memory. Failures are logged: the
    /// turn itself already happened.
    /// The user's message keeps the time it was sent (`sent_at`); the assistant's is stamped
    /// now, at the turn's end.
    pub(super) async fn record(
        &self,
        prompt: &str,
        sent_at: time::OffsetDateTime,
        result: &str,
        kind: TurnKind,
    ) {
        let stores = &self.shared.stores;
        let user =
            SessionMessage { created_at: sent_at, ..SessionMessage::new(Role::User, prompt) };
        for message in [user, SessionMessage::new(Role::Assistant, result)] {
            if let Err(err) =
                stores.sessions.append_message(&self.agent, &self.session, message).await
            {
                tracing::warn!(session = %self.session, error = %err, "could not append to the session");
            }
        }
        if let Err(err) = stores.agents.update_last_active(&self.agent).await {
            tracing::warn!(agent = %self.agent, error = %err, "could not update last activity");
        }
        let label = match kind {
            TurnKind::Chat => "chat",
            TurnKind::ScheduledTask => "scheduled task",
        };
        let entry = format!(
            "{label}, session {}\n\n**Prompt:** {}\n\n**Result:** {}",
            self.session,
            clip(prompt, 500),
            clip(result, 1000)
        );
        if let Err(err) =
            stores.memory.append(&self.agent, orbit_store::timestamp::now(), &entry).await
        {
            tracing::warn!(agent = %self.agent, error = %err, "could not append to memory");
        }
        crate::qmd::refresh_in_background(stores.memory.location(&self.agent));
    }
}

fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        format!("{}...", text.chars().take(max).collect::<String>())
    }
}

/// Aborts a background task when dropped.
pub(super) struct AbortOnDrop(pub(super) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
