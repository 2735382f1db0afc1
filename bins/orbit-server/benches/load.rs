//! The issue #13 table, against Orbit alone: the real server on 127.0.0.1:0 with a fresh data
//! directory, driven by an in-process load generator (awc, one thread) holding a fixed number
//! of connections for a fixed time per scenario; then the machine's limits (an empty actix
//! handler under the same load, one sending a fixed 30 kB body, an fsync on the data
//! directory's disk).
//!
//! ```text
//! cargo bench -p orbit-server --bench load                      # the table, 16 connections, 5 s
//! cargo bench -p orbit-server --bench load -- --only inbox      # scenarios whose name matches
//! cargo bench -p orbit-server --bench load -- --scale 1000,10000,100000 --seconds 3
//! ```
//!
//! The server logs as `orbit-server` does (`RUST_LOG`, `info` by default) into a file in the
//! temporary directory, like a server whose stderr goes to a file. Results go to
//! docs/benchmarks.md.

// Benchmark code: a failed expectation is a failed run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::rc::Rc;
use std::time::{Duration, Instant};

use clap::Parser;
use orbit_server::config::Settings;
use orbit_server::startup::Application;
use orbit_store::{AgentName, FsStore, Role, SessionMessage};

#[path = "load/limits.rs"]
mod limits;

#[derive(Parser)]
struct Options {
    /// Connections held open by the load generator.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Seconds each scenario runs.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Run only the scenarios whose name contains this.
    #[arg(long)]
    only: Option<String>,
    /// Instead of the table: how listings and writes grow with the records of one agent, at
    /// each of these counts (comma separated).
    #[arg(long, value_delimiter = ',')]
    scale: Vec<usize>,
    /// Log every answer, as the server did before access logging became a setting.
    #[arg(long)]
    access_log: bool,
    /// Skip the machine limits.
    #[arg(long)]
    no_limits: bool,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// One request, sent over and over.
#[derive(Clone)]
struct Request {
    method: awc::http::Method,
    path: String,
    body: Option<&'static str>,
}

impl Request {
    fn get(path: impl Into<String>) -> Self {
        Self { method: awc::http::Method::GET, path: path.into(), body: None }
    }

    fn post(path: impl Into<String>, body: Option<&'static str>) -> Self {
        Self { method: awc::http::Method::POST, path: path.into(), body }
    }
}

struct Outcome {
    per_second: f64,
    /// CPU time the whole process (server and generator) spent per answer, in ms: on a
    /// machine shared with other work this moves far less than the rate, which depends on
    /// the share of the cores the process gets.
    cpu_ms: f64,
    p50: Duration,
    p99: Duration,
    bytes: usize,
}

/// The load generator: `connections` clients, each sending `request` one after another until
/// the time is up. Every answer must be a success.
async fn load(
    client: &Rc<awc::Client>,
    base: &str,
    request: &Request,
    options: &Options,
) -> Outcome {
    let url = Rc::new(format!("{base}{}", request.path));
    let deadline = Instant::now() + Duration::from_secs_f64(options.seconds);
    let started = Instant::now();
    let cpu_before = cpu_time();
    let mut handles = Vec::new();
    for _ in 0..options.connections {
        let (client, url, request) = (client.clone(), url.clone(), request.clone());
        handles.push(actix_web::rt::spawn(async move {
            let mut latencies = Vec::new();
            let mut bytes = 0;
            while Instant::now() < deadline {
                let sent = Instant::now();
                let builder = client.request(request.method.clone(), url.as_str());
                let mut response = match request.body {
                    Some(body) => {
                        builder
                            .insert_header(("content-type", "application/json"))
                            .send_body(body)
                            .await
                    }
                    None => builder.send().await,
                }
                .unwrap();
                let body = response.body().limit(256 * 1024 * 1024).await.unwrap();
                assert!(
                    response.status().is_success(),
                    "{} {}: {} {}",
                    request.method,
                    url,
                    response.status(),
                    String::from_utf8_lossy(&body)
                );
                bytes = body.len();
                latencies.push(sent.elapsed());
            }
            (latencies, bytes)
        }));
    }
    let mut latencies = Vec::new();
    let mut bytes = 0;
    for handle in handles {
        let (some, size) = handle.await.unwrap();
        latencies.extend(some);
        bytes = bytes.max(size);
    }
    let elapsed = started.elapsed();
    let cpu = cpu_time().saturating_sub(cpu_before);
    latencies.sort();
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Outcome {
        per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
        cpu_ms: cpu.as_secs_f64() * 1e3 / latencies.len().max(1) as f64,
        p50: at(0.5),
        p99: at(0.99),
        bytes,
    }
}

/// Sends `request` `count` times over the generator's connections, to seed records.
async fn seed(
    client: &Rc<awc::Client>,
    base: &str,
    request: &Request,
    count: usize,
    connections: usize,
) {
    let url = Rc::new(format!("{base}{}", request.path));
    let per_client = count.div_ceil(connections);
    let mut handles = Vec::new();
    for index in 0..connections {
        let share = per_client.min(count.saturating_sub(index * per_client));
        let (client, url, request) = (client.clone(), url.clone(), request.clone());
        handles.push(actix_web::rt::spawn(async move {
            for _ in 0..share {
                let builder = client.request(request.method.clone(), url.as_str());
                let mut response = match request.body {
                    Some(body) => {
                        builder
                            .insert_header(("content-type", "application/json"))
                            .send_body(body)
                            .await
                    }
                    None => builder.send().await,
                }
                .unwrap();
                let body = response.body().await.unwrap();
                assert!(
                    response.status().is_success(),
                    "seeding: {}",
                    String::from_utf8_lossy(&body)
                );
            }
        }));
    }
    for handle in handles {
        handle.await.unwrap();
    }
}

const INBOX_MESSAGE: &str =
    r#"{"fromAgent":"bench","message":"Please look at the failing build and tell me what broke."}"#;
const TASK: &str = r#"{"prompt":"Summarise yesterday's commits","scheduleType":"cron","scheduleValue":"0 9 * * 1"}"#;

/// The issue's figures for the plan's stack (requests per second, oha, 16 connections, 5 s).
fn plan_figure(scenario: &str) -> Option<f64> {
    Some(match scenario {
        "GET /health" => 49_055.0,
        "POST session" => 1_837.0,
        "GET sessions, 1,000" => 83.0,
        "GET sessions, 10,000" => 6.0,
        "GET one session with 100 messages" => 10_257.0,
        "POST inbox message" => 4_226.0,
        "GET inbox, 1,000 pending" => 166.0,
        "GET /api/tasks, 1,000 tasks of 10 agents" => 132.0,
        "POST task" => 11_339.0,
        _ => return None,
    })
}

/// The issue's goal for each scenario, as a multiple of the plan's figure.
fn goal(scenario: &str) -> f64 {
    match scenario {
        "GET sessions, 10,000" => 100.0,
        "GET inbox, 1,000 pending" | "GET /api/tasks, 1,000 tasks of 10 agents" => 30.0,
        "GET /health" | "GET one session with 100 messages" => 2.0,
        _ => 1.0,
    }
}

struct Bench {
    client: Rc<awc::Client>,
    base: String,
    options: Options,
    store: FsStore,
}

impl Bench {
    fn wanted(&self, scenario: &str) -> bool {
        self.options.only.as_deref().is_none_or(|only| scenario.contains(only))
    }

    async fn seed(&self, request: Request, count: usize) {
        seed(&self.client, &self.base, &request, count, self.options.connections).await;
    }

    /// Times one read right after its records were created: it makes the files of what
    /// arrived (see the store's `arrivals`), which the rows after it no longer pay.
    async fn first_read(&self, what: &str, path: &str) {
        let started = Instant::now();
        self.seed(Request::get(path), 1).await;
        eprintln!("first {what}: {:.1?}", started.elapsed());
    }

    async fn agent(&self, name: &str) {
        let body: &'static str = Box::leak(format!(r#"{{"name":"{name}"}}"#).into_boxed_str());
        self.seed(Request::post("/api/agents", Some(body)), 1).await;
    }

    async fn row(&self, scenario: &str, request: Request) -> Option<Outcome> {
        if !self.wanted(scenario) {
            return None;
        }
        let outcome = load(&self.client, &self.base, &request, &self.options).await;
        let (plan, ratio) = match plan_figure(scenario) {
            Some(plan) => (
                format!("{plan:.0}"),
                format!("{:.2} (goal {})", outcome.per_second / plan, goal(scenario)),
            ),
            None => ("".into(), "".into()),
        };
        println!(
            "| {scenario} | {:.0} | {:.3} ms | {:.2} ms | {:.2} ms | {} | {plan} | {ratio} |",
            outcome.per_second,
            outcome.cpu_ms,
            outcome.p50.as_secs_f64() * 1e3,
            outcome.p99.as_secs_f64() * 1e3,
            human_bytes(outcome.bytes),
        );
        Some(outcome)
    }

    async fn table(&self) {
        println!(
            "| scenario | Orbit req/s | CPU per answer | p50 | p99 | answer | plan's req/s | ratio |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        );
        self.row("GET /health", Request::get("/health")).await;

        self.agent("writer").await;
        self.row("POST session", Request::post("/api/agents/writer/sessions", None)).await;

        if self.wanted("GET sessions") {
            self.agent("sessions").await;
            self.seed(Request::post("/api/agents/sessions/sessions", None), 1_000).await;
            self.row("GET sessions, 1,000", Request::get("/api/agents/sessions/sessions")).await;
            self.seed(Request::post("/api/agents/sessions/sessions", None), 9_000).await;
            self.row("GET sessions, 10,000", Request::get("/api/agents/sessions/sessions")).await;
        }

        if self.wanted("GET one session") {
            self.agent("talker").await;
            self.seed(Request::post("/api/agents/talker/sessions", None), 1).await;
            let agent = AgentName::parse("talker").unwrap();
            let session = self.store.stores().sessions.list_by_agent(&agent).await.unwrap()[0].id;
            for index in 0..100 {
                let role = if index % 2 == 0 { Role::User } else { Role::Assistant };
                let text = format!("message {index}: {}", "lorem ipsum dolor sit amet ".repeat(8));
                self.store
                    .stores()
                    .sessions
                    .append_message(&agent, &session, SessionMessage::new(role, text))
                    .await
                    .unwrap();
            }
            self.row(
                "GET one session with 100 messages",
                Request::get(format!("/api/agents/talker/sessions/{session}")),
            )
            .await;
        }

        self.agent("mailbox").await;
        self.row(
            "POST inbox message",
            Request::post("/api/agents/mailbox/inbox", Some(INBOX_MESSAGE)),
        )
        .await;

        if self.wanted("GET inbox") {
            self.agent("reader").await;
            self.seed(Request::post("/api/agents/reader/inbox", Some(INBOX_MESSAGE)), 1_000).await;
            self.first_read("GET inbox after 1,000 sends", "/api/agents/reader/inbox").await;
            self.row("GET inbox, 1,000 pending", Request::get("/api/agents/reader/inbox")).await;
        }

        if self.wanted("GET /api/tasks") {
            for index in 0..10 {
                let name = format!("planner{index}");
                self.agent(&name).await;
                self.seed(Request::post(format!("/api/agents/{name}/tasks"), Some(TASK)), 100)
                    .await;
            }
            self.first_read("GET /api/tasks after 10 x 100 creates", "/api/tasks").await;
            self.row("GET /api/tasks, 1,000 tasks of 10 agents", Request::get("/api/tasks")).await;
        }

        self.agent("scheduler").await;
        self.row("POST task", Request::post("/api/agents/scheduler/tasks", Some(TASK))).await;
    }

    /// How each listing and each write grows with the records of one agent.
    async fn scaling(&self) {
        println!(
            "| records | scenario | req/s | p50 | p99 | answer | RSS after |\n| ---: | --- | ---: | ---: | ---: | ---: | ---: |"
        );
        self.agent("scale").await;
        let mut seeded = 0;
        for &count in &self.options.scale {
            let more = count.saturating_sub(seeded);
            let started = Instant::now();
            self.seed(Request::post("/api/agents/scale/sessions", None), more).await;
            self.seed(Request::post("/api/agents/scale/inbox", Some(INBOX_MESSAGE)), more).await;
            self.seed(Request::post("/api/agents/scale/tasks", Some(TASK)), more).await;
            eprintln!(
                "seeded {more} sessions, inbox messages and tasks in {:.1?}",
                started.elapsed()
            );
            seeded = count;
            // One small page of each listing builds every index without a large answer.
            for path in ["sessions", "inbox", "tasks"] {
                let page = Request::get(format!("/api/agents/scale/{path}?limit=1"));
                self.seed(page, 1).await;
            }
            println!(
                "| {count} | RSS with every index built, before any large answer | | | | | {} |",
                human_bytes(rss_bytes())
            );
            let scenarios = [
                ("GET sessions", Request::get("/api/agents/scale/sessions")),
                ("GET sessions?limit=50", Request::get("/api/agents/scale/sessions?limit=50")),
                ("GET inbox", Request::get("/api/agents/scale/inbox")),
                ("GET inbox?limit=50", Request::get("/api/agents/scale/inbox?limit=50")),
                ("GET tasks", Request::get("/api/agents/scale/tasks")),
                ("GET tasks?limit=50", Request::get("/api/agents/scale/tasks?limit=50")),
                ("POST session", Request::post("/api/agents/scale/sessions", None)),
                (
                    "POST inbox message",
                    Request::post("/api/agents/scale/inbox", Some(INBOX_MESSAGE)),
                ),
                ("POST task", Request::post("/api/agents/scale/tasks", Some(TASK))),
            ];
            for (scenario, request) in scenarios {
                if !self.wanted(scenario) {
                    continue;
                }
                let outcome = load(&self.client, &self.base, &request, &self.options).await;
                if request.method == awc::http::Method::POST {
                    // What the writes added counts towards the next step.
                    seeded = seeded.max(count);
                }
                println!(
                    "| {count} | {scenario} | {:.0} | {:.2} ms | {:.2} ms | {} | {} |",
                    outcome.per_second,
                    outcome.p50.as_secs_f64() * 1e3,
                    outcome.p99.as_secs_f64() * 1e3,
                    human_bytes(outcome.bytes),
                    human_bytes(rss_bytes()),
                );
            }
        }
    }
}

fn human_bytes(bytes: usize) -> String {
    match bytes {
        0..1_000 => format!("{bytes} B"),
        1_000..1_000_000 => format!("{:.1} kB", bytes as f64 / 1e3),
        _ => format!("{:.1} MB", bytes as f64 / 1e6),
    }
}

/// CPU time this process (every thread) has used so far, user and system, from
/// `/proc/self/stat` (clock ticks of 10 ms: a 5 s row holds hundreds).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: u64 = fields.iter().skip(11).take(2).filter_map(|f| f.parse::<u64>().ok()).sum();
    Duration::from_millis(ticks * 10)
}

/// This process's resident memory (server, store caches and the load generator together).
fn rss_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn main() {
    let options = Options::parse();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
    orbit_server::telemetry::init_with_writer(std::sync::Mutex::new(log));
    let system = actix_web::rt::System::new();
    system.block_on(async move {
        let mut settings = Settings::parse_from(["orbit-server", "--bind", "127.0.0.1:0"]);
        settings.data_dir = Some(data.clone());
        settings.max_connections = 1024;
        settings.access_log = options.access_log;
        let app = Application::build(&settings).await.unwrap();
        let base = format!("http://127.0.0.1:{}", app.port());
        actix_web::rt::spawn(app.run_until_stopped());
        let client = Rc::new(
            awc::Client::builder()
                .timeout(Duration::from_secs(60))
                .connector(awc::Connector::new().limit(options.connections * 2))
                .finish(),
        );
        let store = FsStore::open(&data).unwrap();
        println!(
            "{} connections, {:.1} s per scenario, {} cores, data in {}\n",
            options.connections,
            options.seconds,
            std::thread::available_parallelism().map_or(1, usize::from),
            data.display()
        );
        let no_limits = options.no_limits;
        let bench = Bench { client: client.clone(), base, options, store };
        if bench.options.scale.is_empty() {
            bench.table().await;
        } else {
            bench.scaling().await;
        }
        if !no_limits {
            println!("\n| machine limit | measured |\n| --- | --- |");
            limits::limits(&client, &bench.options, &data).await;
        }
    });
}
