//! `orbit-server` processes as nodes of a cluster on one PostgreSQL database, each with its
//! own data directory and scripted model, driven over HTTP on 127.0.0.1.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use orbit_testkit::{ModelServer, Reply, Rule};
use serde_json::{Value, json};

/// An `orbit-server` process on port 0, a node of the cluster on `database_url`.
pub struct Node {
    pub child: Child,
    pub port: u16,
    /// Its data directory.
    pub data: PathBuf,
    /// The `TMPDIR` of its CLI processes, which finds them among the machine's processes.
    pub tmp: PathBuf,
    /// Every line it wrote to stderr so far.
    pub log: Arc<Mutex<Vec<String>>>,
}

/// One node per model on `database_url`, each in a data directory of its own; the
/// directories go when the returned guards are dropped.
pub fn start_nodes<const N: usize>(
    database_url: &str,
    models: [&ModelServer; N],
) -> ([Node; N], Vec<tempfile::TempDir>) {
    let dirs: Vec<tempfile::TempDir> =
        models.iter().map(|_| tempfile::tempdir().unwrap()).collect();
    let nodes = std::array::from_fn(|i| Node::start(database_url, dirs[i].path(), models[i]));
    (nodes, dirs)
}

impl Node {
    /// A node with a 3 s lease, so that a dead node's work is taken over soon.
    pub fn start(database_url: &str, dir: &Path, model: &ModelServer) -> Self {
        Self::start_with(database_url, dir, model, &[])
    }

    /// The same with more arguments.
    pub fn start_with(database_url: &str, dir: &Path, model: &ModelServer, args: &[&str]) -> Self {
        Self::start_in(Some(database_url), dir, model, args, &[])
    }

    /// A node on `database_url`, or on files in its data directory without one, with more
    /// arguments and environment variables.
    pub fn start_in(
        database_url: Option<&str>,
        dir: &Path,
        model: &ModelServer,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let (data, tmp) = (dir.join("data"), dir.join("tmp"));
        std::fs::create_dir_all(&tmp).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_orbit-server-under-test"));
        command
            .args(["--bind", "127.0.0.1:0", "--lease-secs", "3", "--data-dir"])
            .arg(&data)
            .arg("--claude-bin")
            .arg(orbit_testkit::claude_bin())
            .args(args)
            .env_remove("ORBIT_DATABASE_URL")
            .envs(orbit_testkit::cli_env(model, &tmp))
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped());
        if let Some(url) = database_url {
            command.env("ORBIT_DATABASE_URL", url);
        }
        let mut child = command.spawn().unwrap();
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let lines = log.clone();
        let pid = child.id();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                eprintln!("node {pid}: {line}");
                if let Some(rest) = line.split("port=").nth(1) {
                    let port = rest.split_whitespace().next().unwrap_or_default();
                    let _ = port_tx.send(port.parse::<u16>().unwrap_or(0));
                }
                lines.lock().unwrap().push(line);
            }
        });
        let Ok(port) = port_rx.recv_timeout(Duration::from_secs(30)) else {
            child.kill().unwrap();
            panic!("the node never said where it listens");
        };
        Self { child, port, data, tmp, log }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The node's live CLI processes (those with its `TMPDIR`, the node itself aside).
    pub fn cli_processes(&self) -> Vec<u32> {
        let marker = self.tmp.display().to_string();
        let own = self.child.id();
        orbit_testkit::processes_with_env(&marker).into_iter().filter(|pid| *pid != own).collect()
    }

    /// Whether the node logged a line containing `text`.
    pub fn logged(&self, text: &str) -> bool {
        self.log.lock().unwrap().iter().any(|line| line.contains(text))
    }

    pub fn kill(&mut self) {
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL).unwrap();
        self.child.wait().unwrap();
    }

    pub fn stop(&mut self) {
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM).unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // A failed test leaves no server behind (a stopped one was reaped already).
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Starts a node that must refuse to start: what it said on stderr.
pub fn start_refused(
    database_url: &str,
    dir: &std::path::Path,
    model: &ModelServer,
    args: &[&str],
    env: &[(&str, &str)],
) -> String {
    let tmp = dir.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_orbit-server-under-test"))
        .args(["--bind", "127.0.0.1:0", "--lease-secs", "3", "--data-dir"])
        .arg(dir.join("data"))
        .arg("--claude-bin")
        .arg(orbit_testkit::claude_bin())
        .args(args)
        .env("ORBIT_DATABASE_URL", database_url)
        .envs(orbit_testkit::cli_env(model, &tmp))
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the node started, or hung, instead of refusing");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "refused: {stderr}");
    stderr
}

pub fn client() -> awc::Client {
    awc::Client::builder().timeout(Duration::from_secs(60)).finish()
}

/// The status and JSON body of a call.
pub async fn call(node: &Node, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let request =
        client().request(awc::http::Method::from_bytes(method.as_bytes()).unwrap(), node.url(path));
    let mut response = match body {
        Some(body) => request.send_json(&body).await.unwrap(),
        None => request.send().await.unwrap(),
    };
    let bytes = response.body().limit(1 << 24).await.unwrap();
    (response.status().as_u16(), serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// The SSE events of a chat.
pub async fn chat(node: &Node, body: Value) -> Vec<Value> {
    let mut response = client().post(node.url("/api/chat")).send_json(&body).await.unwrap();
    let bytes = response.body().limit(1 << 24).await.unwrap();
    String::from_utf8_lossy(&bytes)
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .filter_map(|data| serde_json::from_str(data).ok())
        .collect()
}

/// Waits until `done` holds, failing with `what` after `limit`.
pub async fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A model that asks to run a command when told "write the file" and says "done" after it.
pub fn asking_model() -> ModelServer {
    ModelServer::start(vec![
        Rule::after_tool_result(Reply::Text("done".into())),
        Rule::when_user_says(
            "write the file",
            Reply::ToolUse {
                name: "Bash".into(),
                input: json!({"command": "echo hi > made.txt", "description": "write"}),
            },
        ),
        Rule::always(Reply::Text("ok".into())),
    ])
}
