//! A session portable across nodes: the CLI's transcript of the conversation is saved in the
//! store after every turn, and restored into this node's CLI state before a resume when the
//! state lacks it (the last turn ran on another node, or this node's state was lost). When
//! there is nothing to restore the resume fails as before, and the turn continues in a fresh
//! CLI session, saying so on the event stream (`orbit_resume_failed`).

use std::path::Path;

use super::SessionAgent;

impl SessionAgent {
    fn conversation(&self) -> String {
        format!("{}/{}", self.agent, self.session)
    }

    /// Saves the transcript of `cli_session` after a turn. A failure costs only another
    /// node's resume, so it is logged, never the turn's.
    pub(super) async fn save_transcript(&self, cli_session: &str) {
        let runtime = &self.shared.runtime;
        let Some(transcript) = runtime.export_transcript(&self.conversation(), cli_session).await
        else {
            return;
        };
        let sessions = &self.shared.stores.sessions;
        if let Err(err) =
            sessions.save_cli_transcript(&self.agent, &self.session, cli_session, transcript).await
        {
            tracing::warn!(session = %self.session, error = %err, "could not save the CLI transcript");
        }
    }

    /// Restores the saved transcript of `cli_session` before a resume in `cwd`, unless this
    /// node has it.
    pub(super) async fn restore_transcript(&self, cwd: &Path, cli_session: &str) {
        let saved = match self
            .shared
            .stores
            .sessions
            .load_cli_transcript(&self.agent, &self.session)
            .await
        {
            Ok(Some((saved_for, transcript))) if saved_for == cli_session => transcript,
            Ok(_) => return,
            Err(err) => {
                tracing::warn!(session = %self.session, error = %err, "could not load the CLI transcript");
                return;
            }
        };
        let runtime = &self.shared.runtime;
        match runtime.import_transcript(&self.conversation(), cwd, cli_session, &saved).await {
            Ok(true) => {
                tracing::info!(session = %self.session, %cli_session, "restored the CLI transcript saved by another node")
            }
            Ok(false) => {}
            Err(err) => {
                tracing::warn!(session = %self.session, error = %err, "could not restore the CLI transcript")
            }
        }
    }
}
