//! A data directory, a scripted model server and a pool running the real CLI.

use std::sync::Arc;
use std::time::Duration;

use orbit_agent::claude::{ClaudeCli, ClaudeCliConfig};
use orbit_agent::{AgentPool, ChatOptions, PoolOptions, TurnOutcome};
use orbit_store::{
    AgentName, FsStore, MessageType, NewAgent, NewMessage, NewSession, PermissionMode, SessionId,
    Stores,
};
use orbit_testkit::{ModelServer, Reply, Rule};
use serde_json::Value;
use tempfile::TempDir;
use tokio::sync::mpsc;

pub struct Harness {
    pub dir: TempDir,
    pub stores: Stores,
    pub model: ModelServer,
    pub pool: AgentPool,
    pub agent: AgentName,
}

pub fn init_logs() {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt().with_env_filter("debug").with_test_writer().try_init();
    }
}

impl Harness {
    pub async fn new(rules: Vec<Rule>) -> Self {
        Self::with_options(rules, PoolOptions::default()).await
    }

    pub async fn with_options(rules: Vec<Rule>, options: PoolOptions) -> Self {
        init_logs();
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join("tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        let stores = FsStore::open(dir.path().join("data")).unwrap().stores();
        let model = ModelServer::start(rules);
        let runtime = ClaudeCli::new(ClaudeCliConfig {
            user_config_dir: None,
            bin: orbit_testkit::claude_bin(),
            config_dir: dir.path().join("data/claude"),
            env: orbit_testkit::cli_env(&model, &tmp),
            max_turns: Some(10),
        });
        let pool = AgentPool::new(stores.clone(), Arc::new(runtime), options);
        let agent = AgentName::parse("bot").unwrap();
        stores
            .agents
            .create(
                &agent,
                NewAgent { permission_mode: Some(PermissionMode::AllowAll), ..NewAgent::default() },
            )
            .await
            .unwrap();
        Self { dir, stores, model, pool, agent }
    }

    pub async fn set_mode(&self, mode: PermissionMode) {
        let patch = orbit_store::AgentPatch { permission_mode: Some(mode), ..Default::default() };
        self.stores.agents.update(&self.agent, patch).await.unwrap();
    }

    pub async fn workspace(&self) -> std::path::PathBuf {
        self.working_dir().await.path().to_path_buf()
    }

    pub async fn working_dir(&self) -> orbit_store::WorkingDir {
        self.stores.agents.working_dir(&self.agent).await.unwrap()
    }

    pub async fn session(&self) -> SessionId {
        self.stores.sessions.create(&self.agent, NewSession::default()).await.unwrap().id
    }

    pub async fn send_inbox(&self, text: &str) -> orbit_store::MessageId {
        let sender = AgentName::parse("sender").unwrap();
        self.stores.agents.ensure(&sender).await.unwrap();
        let message = NewMessage {
            from_agent: sender.into(),
            to_agent: self.agent.clone(),
            message: text.into(),
            message_type: MessageType::Request,
            request_id: None,
        };
        self.stores.inbox.send(message).await.unwrap().id
    }

    /// Runs one turn and collects its events.
    pub async fn chat(
        &self,
        session: &SessionId,
        prompt: &str,
    ) -> (orbit_agent::Result<TurnOutcome>, Vec<Value>) {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let result =
            self.pool.get(&self.agent, session).chat(prompt, ChatOptions::default(), tx).await;
        let mut events = Vec::new();
        while let Ok(event) = rx.try_recv() {
            events.extend(event_json(&event));
        }
        (result, events)
    }

    /// Starts a turn on a task of its own, its events dropped.
    pub fn spawn_turn(
        &self,
        session: &SessionId,
        prompt: &str,
    ) -> tokio::task::JoinHandle<orbit_agent::Result<TurnOutcome>> {
        let (agent, prompt) = (self.pool.get(&self.agent, session), prompt.to_owned());
        tokio::spawn(async move {
            agent.chat(&prompt, ChatOptions::default(), mpsc::unbounded_channel().0).await
        })
    }

    /// The CLI processes this harness started that are still alive.
    pub fn live_cli_processes(&self) -> Vec<u32> {
        orbit_testkit::processes_with_env(&self.dir.path().join("tmp").display().to_string())
    }

    /// Waits until the model server has received `count` requests.
    pub async fn wait_for_requests(&self, count: usize) {
        for _ in 0..600 {
            if self.model.requests().len() >= count {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the model server never got {count} requests");
    }
}

/// A turn event as JSON, for assertions on fields (what the API shows is tested there).
pub fn event_json(event: &orbit_agent::TurnEvent) -> Option<Value> {
    use orbit_agent::TurnEvent;
    match event {
        TurnEvent::Cli(message) => Some(message.raw.clone()),
        TurnEvent::PermissionRequest(request) => Some(serde_json::json!({
            "type": "permission_request", "requestId": request.request_id,
            "toolName": request.tool_name, "input": request.input,
        })),
        TurnEvent::ResumeFailed { previous_cli_session, message } => Some(serde_json::json!({
            "type": "system", "subtype": "orbit_resume_failed",
            "previousSdkSessionId": previous_cli_session, "message": message,
        })),
        TurnEvent::Started
        | TurnEvent::TextDelta { .. }
        | TurnEvent::Finished { .. }
        | TurnEvent::Failed { .. } => None,
    }
}

/// The Orbit session id named in a request's system prompt.
pub fn session_of(request: &Value) -> Option<String> {
    let system = request["system"].to_string();
    let start = system.find("(session ")? + "(session ".len();
    Some(system[start..start + 26].to_owned())
}

/// All text of every user message of a request.
pub fn all_user_text(request: &Value) -> String {
    request["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["role"] == "user")
        .map(|m| match &m["content"] {
            Value::String(text) => text.clone(),
            other => other
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|b| b["text"].as_str())
                .collect::<Vec<_>>()
                .join("\n"),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn text(reply: &str) -> Reply {
    Reply::Text(reply.into())
}
