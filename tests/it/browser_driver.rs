//! A headless Chromium driven through chromedriver's WebDriver HTTP API, for the console's
//! browser tests (`browser`, `browser_actions`, `browser_attacks`): starting it, finding
//! elements and acting on them as a person would, waiting for what the page shows, and
//! screenshots in `target/browser-screenshots/`.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`scripts/setup-chromium.sh`, run by
//! `scripts/test.sh`); without them the tests fail, saying so, unless `ORBIT_SKIP_BROWSER=1`
//! asks to skip them (`browser_wanted`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The W3C name of an element reference in WebDriver answers.
pub(crate) const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// How long the page may take to show what a step waits for (a turn of the real CLI).
const PATIENCE: Duration = Duration::from_secs(60);

/// Whether to run: `false` (with a message) only when `ORBIT_SKIP_BROWSER=1`.
pub(crate) fn browser_wanted() -> bool {
    if std::env::var("ORBIT_SKIP_BROWSER").as_deref() == Ok("1") {
        eprintln!("ORBIT_SKIP_BROWSER=1: the browser tests of the console are skipped");
        return false;
    }
    assert!(
        Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists(),
        "Chromium is not installed ({CHROMIUM}, {CHROMEDRIVER}): run scripts/setup-chromium.sh, \
         or set ORBIT_SKIP_BROWSER=1 to skip the console's browser tests"
    );
    true
}

fn screenshots() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/browser-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A chromedriver process and one browser session of it.
pub(crate) struct Browser {
    client: awc::Client,
    session: String,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ending chromedriver ends the browser it started.
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Browser {
    pub(crate) async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let client = awc::Client::builder().timeout(Duration::from_secs(120)).finish();
        let base = format!("http://127.0.0.1:{port}");
        for _ in 0..100 {
            if let Ok(mut answer) = client.get(format!("{base}/status")).send().await
                && answer.json::<Value>().await.is_ok_and(|s| s["value"]["ready"] == true)
            {
                break;
            }
            actix_web::rt::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--window-size=1280,900",
        ]
        .map(str::to_owned)
        .into_iter()
        .chain([format!("--user-data-dir={}", profile.path().display())])
        .collect::<Vec<_>>();
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
        }}});
        let mut answer =
            client.post(format!("{base}/session")).send_json(&capabilities).await.unwrap();
        let body: Value = answer.json().limit(1 << 20).await.unwrap();
        let session = body["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no browser session: {body}"))
            .to_owned();
        Self { client, session: format!("{base}/session/{session}"), driver, _profile: profile }
    }

    pub(crate) async fn command(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        match self.try_command(method, path, body).await {
            Ok(value) => value,
            Err(body) => panic!("WebDriver {method} {path}: {body}"),
        }
    }

    /// A command; the error's body when WebDriver refuses it.
    pub(crate) async fn try_command(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, Value> {
        let url = format!("{}{path}", self.session);
        let request = match method {
            "GET" => self.client.get(url),
            "DELETE" => self.client.delete(url),
            _ => self.client.post(url),
        };
        let mut answer = match body {
            Some(body) => request.send_json(&body).await.unwrap(),
            None => request.send().await.unwrap(),
        };
        let body: Value = answer.json().limit(64 << 20).await.unwrap();
        if answer.status().is_success() { Ok(body["value"].clone()) } else { Err(body) }
    }

    /// Finds `css` and acts on it; an element that the page re-rendered meanwhile (lists
    /// are redrawn as events arrive) is found again.
    pub(crate) async fn on_element(&self, css: &str, action: &str, body: Value) {
        self.wait_for(css).await;
        for _ in 0..50 {
            // Between the wait and the find, the list may be mid-redraw.
            let Some(id) = self.try_element(css).await else {
                actix_web::rt::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            match self
                .try_command("POST", &format!("/element/{id}/{action}"), Some(body.clone()))
                .await
            {
                Ok(_) => return,
                Err(error) if error["value"]["error"] == "stale element reference" => {
                    actix_web::rt::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => panic!("WebDriver {action} on {css}: {error}"),
            }
        }
        panic!("{css} kept being redrawn");
    }

    pub(crate) async fn open(&self, url: &str) {
        self.command("POST", "/url", Some(json!({"url": url}))).await;
    }

    pub(crate) async fn resize(&self, width: u32, height: u32) {
        self.command("POST", "/window/rect", Some(json!({"width": width, "height": height}))).await;
    }

    pub(crate) async fn script(&self, script: &str, args: Value) -> Value {
        self.command("POST", "/execute/sync", Some(json!({"script": script, "args": args}))).await
    }

    /// The element matching `css`, if there is one now.
    pub(crate) async fn try_element(&self, css: &str) -> Option<String> {
        let found = self
            .try_command("POST", "/element", Some(json!({"using": "css selector", "value": css})))
            .await
            .ok()?;
        found[ELEMENT].as_str().map(str::to_owned)
    }

    pub(crate) async fn click(&self, css: &str) {
        self.on_element(css, "click", json!({})).await;
    }

    /// Types into a field as a person would (it is cleared first).
    pub(crate) async fn type_into(&self, css: &str, text: &str) {
        self.on_element(css, "clear", json!({})).await;
        self.on_element(css, "value", json!({"text": text})).await;
    }

    pub(crate) async fn select(&self, css: &str, value: &str) {
        self.click(&format!("{css} option[value=\"{value}\"]")).await;
    }

    /// The text (hidden parts included) of the first element matching `css`, if any.
    pub(crate) async fn text(&self, css: &str) -> Option<String> {
        let text = self
            .script(
                "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;",
                json!([css]),
            )
            .await;
        text.as_str().map(str::to_owned)
    }

    /// Waits until an element matching `css` exists; returns its text.
    pub(crate) async fn wait_for(&self, css: &str) -> String {
        self.wait_for_text(css, "").await
    }

    /// Waits until an element matching `css` holds `wanted`; returns its text.
    pub(crate) async fn wait_for_text(&self, css: &str, wanted: &str) -> String {
        let until = tokio::time::Instant::now() + PATIENCE;
        let mut last = None;
        while tokio::time::Instant::now() < until {
            last = self.text(css).await;
            if let Some(text) = &last
                && text.contains(wanted)
            {
                return text.clone();
            }
            actix_web::rt::time::sleep(Duration::from_millis(100)).await;
        }
        let page = self.text("main").await.unwrap_or_default();
        panic!("{css} never held {wanted:?} (last: {last:?}); the page shows: {page}");
    }

    pub(crate) async fn screenshot(&self, name: &str) {
        let png = self.command("GET", "/screenshot", None).await;
        let bytes =
            base64::engine::general_purpose::STANDARD.decode(png.as_str().unwrap()).unwrap();
        std::fs::write(screenshots().join(format!("{name}.png")), bytes).unwrap();
    }
}
