//! A turn from its acceptance to its end: the process it runs in, the CLI's stream, the
//! outcome, and the one place where the end is handled.

use std::sync::PoisonError;
use std::time::Instant;

use orbit_store::{PermissionMode, SessionPatch, TranscriptKind};
use serde_json::json;
use time::OffsetDateTime;

use super::{
    AbortSignal, Accepted, ChatOptions, LiveProcess, SessionAgent, TurnEnd, TurnOutcome, TurnSink,
};
use crate::activity::{Activity, TurnEnding};
use crate::event::{CliMessageKind, CliResult, TurnEvent};
use crate::pool::ProcessSlot;
use crate::prompt::{self, TurnKind};
use crate::runtime::{ProcessEvent, SpawnSpec};
use crate::{Error, Result};

impl SessionAgent {
    /// The accepted turn, start to end; settles and records exactly once.
    pub(super) async fn run(
        &self,
        prompt: &str,
        sent_at: OffsetDateTime,
        options: ChatOptions,
        accepted: Accepted,
        events: &TurnSink,
    ) -> Result<TurnOutcome> {
        let Accepted { mut live, permit, mut abort, mode } = accepted;
        events.log.note(TranscriptKind::User, sent_at, json!({"text": prompt}));
        events.send(TurnEvent::Started);
        let activity = &self.shared.options.activity;
        activity.announce(Activity::TurnStarted {
            agent: self.agent.clone(),
            session: self.session,
            kind: options.kind,
        });
        let ask_timeout = match options.kind {
            TurnKind::Chat => self.shared.options.ask_timeout,
            TurnKind::ScheduledTask => self.shared.options.run_ask_timeout,
        };
        self.control.begin_turn(mode, ask_timeout, options.run, events.clone());
        let mut claimed = Vec::new();
        let mut delivered = false;
        let outcome = async {
            self.prepare_process(&mut live, permit, &options, mode).await?;
            if abort.requested() {
                return Err(Error::Aborted);
            }
            claimed = self.claim_inbox().await?;
            let _renewing = self.renew_claims(&claimed);
            let delivered_at = orbit_store::timestamp::now();
            for message in &claimed {
                events.log.note(TranscriptKind::Inbox, delivered_at, inbox_json(message));
            }
            let text = prompt::user_message(prompt, &claimed);
            self.run_turn(&mut live, &text, &options, &mut abort, events, &mut delivered).await
        }
        .await;
        let denied_tools = self.control.end_turn();
        self.settle_claims(&claimed, outcome.is_ok(), delivered).await;
        *self.last_used.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
        match &outcome {
            // The model's refusals are the operator's to fix (credentials) or to know about
            // (rate limits): the log says so, not only the chat's stream.
            Err(err @ Error::Model { .. }) => {
                tracing::warn!(agent = %self.agent, session = %self.session, error = %err, "turn failed")
            }
            Err(err) => {
                tracing::info!(agent = %self.agent, session = %self.session, error = %err, "turn failed")
            }
            Ok(_) => {}
        }
        let result = match &outcome {
            Ok(outcome) => outcome.result.clone(),
            // The error says itself that the turn failed (`the turn failed: ...`).
            Err(err) => format!("({err})"),
        };
        self.record(prompt, sent_at, &result, options.kind).await;
        let last = match &outcome {
            Ok(outcome) => {
                TurnEvent::Finished { result: outcome.result.clone(), cost_usd: outcome.cost_usd }
            }
            Err(err) => TurnEvent::Failed { message: err.to_string(), kind: err.kind() },
        };
        // The transcript is in the store before the caller hears the turn ended, so a client
        // whose stream ended finds the whole turn there.
        events.log.push(&last);
        self.keep_transcript(events).await;
        // After the record and the transcript, so a client that reloads the session on this
        // finds the whole exchange.
        activity.announce(Activity::TurnEnded {
            agent: self.agent.clone(),
            session: self.session,
            ending: TurnEnding {
                success: outcome.is_ok(),
                cost_usd: outcome.as_ref().ok().and_then(|outcome| outcome.cost_usd),
                error: outcome.as_ref().err().map(ToString::to_string),
            },
        });
        events.send_to_caller(last);
        outcome.map(|mut outcome| {
            outcome.handled_messages = claimed.iter().map(|m| m.id).collect();
            outcome.denied_tools = denied_tools;
            outcome
        })
    }

    /// Writes the turn's transcript. A failure is logged: the turn itself already happened.
    async fn keep_transcript(&self, events: &TurnSink) {
        let entries = events.log.take_transcript();
        if let Err(err) = self
            .shared
            .stores
            .sessions
            .append_transcript(&self.agent, &self.session, &entries)
            .await
        {
            tracing::warn!(session = %self.session, error = %err, "could not keep the turn's transcript");
        }
    }

    /// Makes sure a live process fits this turn: a model change restarts it (resuming), and
    /// a missing one is started in the slot the turn was given.
    pub(super) async fn prepare_process(
        &self,
        live: &mut Option<LiveProcess>,
        permit: Option<ProcessSlot>,
        options: &ChatOptions,
        mode: PermissionMode,
    ) -> Result<()> {
        let mut permit = permit;
        if let Some(model) = &options.model {
            let current = self.shared.stores.sessions.get(&self.agent, &self.session).await?.model;
            if current.as_deref() != Some(model.as_str()) {
                let patch = SessionPatch { model: Some(model.clone()), ..SessionPatch::default() };
                self.shared.stores.sessions.update(&self.agent, &self.session, patch).await?;
                // A different model needs a new process (it resumes the same CLI session);
                // the same model again keeps the warm one. The old process's slot passes on.
                if let Some(old) = live.take() {
                    old.process.shutdown().await;
                    permit = Some(old._permit);
                }
            }
        }
        if live.is_none() {
            let permit = match permit {
                Some(permit) => permit,
                None => {
                    self.shared
                        .acquire_process_slot(&self.agent, &self.session, options.kind)
                        .await?
                }
            };
            *live = Some(self.start_process(options.kind, true, mode, permit).await?);
        }
        Ok(())
    }

    pub(super) async fn run_turn(
        &self,
        live: &mut Option<LiveProcess>,
        text: &str,
        options: &ChatOptions,
        abort: &mut AbortSignal,
        events: &TurnSink,
        delivered: &mut bool,
    ) -> Result<TurnOutcome> {
        loop {
            let Some(current) = live.as_mut() else {
                return Err(Error::Protocol("no CLI process for the turn".into()));
            };
            current.mid_turn = true;
            let end = self.drive_turn(current, text, options, abort, events, delivered).await;
            match end {
                Ok(TurnEnd::Result(result)) => {
                    current.mid_turn = false;
                    return self.finish(current, result).await;
                }
                Ok(TurnEnd::ResumeFailed(reason)) => {
                    let old = current.cli_session.clone();
                    tracing::warn!(session = %self.session, old_cli_session = ?old, %reason, "resume failed; continuing in a fresh CLI session");
                    events.send(TurnEvent::ResumeFailed {
                        previous_cli_session: old,
                        message: format!("The previous Claude Code session could not be resumed ({reason}); this turn runs in a fresh one."),
                    });
                    let Some(old) = live.take() else { continue };
                    old.process.shutdown().await;
                    *live =
                        Some(self.start_process(options.kind, false, old.mode, old._permit).await?);
                }
                Err(err) => {
                    // After an abort, a crash or a timeout the process is not trusted with
                    // another turn; the next turn resumes the CLI session in a new one.
                    if let Some(old) = live.take() {
                        old.process.shutdown().await;
                    }
                    return Err(err);
                }
            }
        }
    }

    pub(super) async fn start_process(
        &self,
        kind: TurnKind,
        resume: bool,
        permission_mode: PermissionMode,
        permit: ProcessSlot,
    ) -> Result<LiveProcess> {
        let stores = &self.shared.stores;
        let session = stores.sessions.get(&self.agent, &self.session).await?;
        let agent = stores.agents.get(&self.agent).await?;
        let working_dir = stores.agents.working_dir(&self.agent).await?;
        // A session with its own worktree runs there, resumes included.
        let cwd = match &session.worktree_id {
            Some(id) => crate::worktree::cwd_of(&working_dir, id).await?,
            None => working_dir.path().to_path_buf(),
        };
        let resume = if resume { session.sdk_session_id.clone() } else { None };
        if let Some(cli_session) = &resume {
            self.restore_transcript(&cwd, cli_session).await;
        }
        let memory_dir = stores.memory.location(&self.agent);
        let spec = SpawnSpec {
            conversation: format!("{}/{}", self.agent, self.session),
            cwd,
            resume: resume.clone(),
            model: session.model.clone().or(agent.model.clone()),
            append_system_prompt: prompt::system_prompt(
                &self.agent,
                &self.session,
                kind,
                memory_dir.as_deref(),
            ),
            permission_mode,
            control: self.control.clone(),
        };
        let process = self.shared.runtime.spawn(spec).await?;
        let cost_base = if resume.is_some() { session.total_cost_usd.unwrap_or(0.0) } else { 0.0 };
        Ok(LiveProcess {
            process,
            _permit: permit,
            mid_turn: false,
            resuming: resume.is_some(),
            cli_session: resume,
            cost_base,
            mode: permission_mode,
        })
    }

    /// Sends the turn and forwards its events until its result.
    pub(super) async fn drive_turn(
        &self,
        live: &mut LiveProcess,
        text: &str,
        options: &ChatOptions,
        abort: &mut AbortSignal,
        events: &TurnSink,
        delivered: &mut bool,
    ) -> Result<TurnEnd> {
        if abort.requested() {
            return Err(Error::Aborted);
        }
        let mut stream = live.process.send_turn(text).await?;
        // From here the model may see the turn's inbox messages.
        *delivered = true;
        let resuming = std::mem::replace(&mut live.resuming, false);
        let mut seen_init = false;
        let timeout = options.timeout.unwrap_or(self.shared.options.turn_timeout);
        let deadline = Some(tokio::time::Instant::now() + timeout);
        let mut stop: Option<(Error, tokio::time::Instant)> = None;
        loop {
            let give_up_at = stop.as_ref().map(|(_, at)| *at).or(deadline);
            let event = tokio::select! {
                event = stream.recv() => event,
                () = abort.wait(), if stop.is_none() => {
                    live.process.interrupt().await.ok();
                    stop = Some((Error::Aborted, tokio::time::Instant::now() + self.shared.abort_grace()));
                    continue;
                }
                () = sleep_until_opt(give_up_at) => {
                    match stop.take() {
                        // The interrupt was not heeded in time.
                        Some((err, _)) => {
                            live.process.shutdown().await;
                            return Err(err);
                        }
                        None => {
                            live.process.interrupt().await.ok();
                            let secs = timeout.as_secs();
                            stop = Some((Error::TimedOut(secs), tokio::time::Instant::now() + self.shared.abort_grace()));
                            continue;
                        }
                    }
                }
            };
            let message = match event {
                Some(ProcessEvent::Message(message)) => message,
                Some(ProcessEvent::Exited { stderr, conversation_missing: true, .. })
                    if resuming && !seen_init =>
                {
                    return Ok(TurnEnd::ResumeFailed(first_line(&stderr)));
                }
                Some(ProcessEvent::Exited { status, stderr, .. }) => {
                    return Err(stop.map_or(Error::CliExited { status, stderr }, |(err, _)| err));
                }
                None => {
                    return Err(Error::CliExited {
                        status: "unknown".into(),
                        stderr: String::new(),
                    });
                }
            };
            let result = match &message.kind {
                CliMessageKind::TextDelta(text) => {
                    events.send(TurnEvent::TextDelta { text: text.clone() });
                    continue;
                }
                // The whole message follows; its pieces are not passed on.
                CliMessageKind::Partial => continue,
                CliMessageKind::Init { session_id } => {
                    seen_init = true;
                    self.note_cli_session(live, session_id).await;
                    None
                }
                // A resume the CLI could not do ends in an error result before any init.
                CliMessageKind::Result(result) if resuming && !seen_init => {
                    return Ok(TurnEnd::ResumeFailed(result.errors.join("; ")));
                }
                CliMessageKind::Result(result) => Some(result.clone()),
                CliMessageKind::Other => None,
            };
            events.send(TurnEvent::Cli(message));
            if let Some(result) = result {
                return match stop {
                    Some((err, _)) => {
                        // An aborted or timed-out turn still cost what the CLI says it did.
                        if let Err(cost_err) =
                            self.add_cost(live, result.total_cost_usd, result.usage).await
                        {
                            tracing::warn!(session = %self.session, error = %cost_err, "could not record a stopped turn's cost");
                        }
                        Err(err)
                    }
                    None => Ok(TurnEnd::Result(result)),
                };
            }
        }
    }

    pub(super) async fn note_cli_session(&self, live: &mut LiveProcess, id: &str) {
        if live.cli_session.as_deref() == Some(id) {
            return;
        }
        live.cli_session = Some(id.to_owned());
        let patch = SessionPatch { sdk_session_id: Some(id.to_owned()), ..SessionPatch::default() };
        if let Err(err) =
            self.shared.stores.sessions.update(&self.agent, &self.session, patch).await
        {
            tracing::warn!(session = %self.session, error = %err, "could not store the CLI session id");
        }
    }

    /// Adds a turn's cost and usage to its session, from the CLI's result; the turn's cost.
    async fn add_cost(
        &self,
        live: &mut LiveProcess,
        total: Option<f64>,
        usage: Option<orbit_store::Usage>,
    ) -> Result<Option<f64>> {
        // `total_cost_usd` is the CLI session's running total; a fresh CLI session starts at 0.
        let turn_cost = total.map(|total| (total - live.cost_base).max(0.0));
        if let Some(total) = total {
            live.cost_base = total;
        }
        let patch =
            SessionPatch { add_cost_usd: turn_cost, add_usage: usage, ..SessionPatch::default() };
        self.shared.stores.sessions.update(&self.agent, &self.session, patch).await?;
        Ok(turn_cost)
    }

    pub(super) async fn finish(
        &self,
        live: &mut LiveProcess,
        result: CliResult,
    ) -> Result<TurnOutcome> {
        let CliResult { text, is_error, subtype, total_cost_usd: total, usage, failure, .. } =
            result;
        let turn_cost = self.add_cost(live, total, usage).await?;
        if let Some(cli_session) = &live.cli_session {
            self.save_transcript(cli_session).await;
        }
        if is_error {
            let detail = if text.is_empty() { subtype } else { text };
            return Err(match failure {
                Some(failure) => Error::Model { failure, detail },
                None => Error::TurnFailed(detail),
            });
        }
        Ok(TurnOutcome {
            result: text,
            cost_usd: turn_cost,
            handled_messages: Vec::new(),
            denied_tools: Vec::new(),
        })
    }
}

/// An inbox message delivered in a turn, as its transcript keeps it.
fn inbox_json(message: &orbit_store::InboxMessage) -> serde_json::Value {
    json!({
        "messageId": message.id,
        "fromAgent": message.from_agent,
        "fromKind": message.from_kind,
        "messageType": message.message_type,
        "requestId": message.request_id,
        "message": message.message,
    })
}

fn first_line(text: &str) -> String {
    text.lines().find(|l| !l.trim().is_empty()).unwrap_or("resume failed").to_owned()
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
