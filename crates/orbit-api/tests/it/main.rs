//! orbit-api in process (`actix_web::test`, no socket): error shapes, limits and auth. The
//! real-server tests, with the CLI, live in `bins/orbit-server/tests`.

// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use actix_web::test::{TestRequest, call_service, init_service, read_body_json};
use actix_web::web::Data;
use orbit_agent::claude::{ClaudeCli, ClaudeCliConfig};
use orbit_agent::{AgentPool, PoolOptions};
use orbit_api::AppState;
use orbit_scheduler::{AgentRunner, Scheduler, SchedulerOptions, SystemClock};
use orbit_store::FsStore;
use serde_json::{Value, json};

fn state(dir: &std::path::Path, token: Option<&str>) -> Data<AppState> {
    state_with(dir, token, orbit_agent::workdir::WorkdirPolicy::default())
}

fn state_with(
    dir: &std::path::Path,
    token: Option<&str>,
    workdirs: orbit_agent::workdir::WorkdirPolicy,
) -> Data<AppState> {
    let store = FsStore::open(dir).unwrap();
    // No test here starts a turn, so the CLI is never spawned.
    let runtime = ClaudeCli::new(ClaudeCliConfig {
        user_config_dir: None,
        bin: "/nonexistent/claude".into(),
        config_dir: dir.join("claude"),
        env: vec![],
        max_turns: None,
    });
    let pool = AgentPool::new(store.stores(), Arc::new(runtime), PoolOptions::default());
    let scheduler = Scheduler::new(
        store.stores(),
        Arc::new(AgentRunner { pool: pool.clone() }),
        Arc::new(SystemClock),
        SchedulerOptions::default(),
    );
    Data::new(AppState {
        stores: store.stores(),
        pool,
        scheduler,
        api_token: token.map(str::to_owned),
        body_limit: 1024,
        body_read_timeout: std::time::Duration::from_secs(30),
        slow_client_timeout: std::time::Duration::from_secs(10),
        allowed_hosts: orbit_api::AllowedHosts::Any,
        workdirs,
        access_log: true,
    })
}

#[actix_web::test]
async fn errors_are_json_with_a_code() {
    let dir = tempfile::tempdir().unwrap();
    let app = init_service(orbit_api::app(state(dir.path(), None))).await;
    for (request, status, code) in [
        (TestRequest::get().uri("/nowhere").to_request(), 404, "not_found"),
        (TestRequest::get().uri("/api/agents/Not-Valid").to_request(), 400, "invalid_input"),
        (
            TestRequest::post()
                .uri("/api/agents")
                .insert_header(("content-type", "application/json"))
                .set_payload("{oops")
                .to_request(),
            400,
            "invalid_json",
        ),
        (
            TestRequest::post()
                .uri("/api/agents")
                .insert_header(("content-type", "application/json"))
                .set_payload(format!("{{\"name\":\"{}\"}}", "a".repeat(2000)))
                .to_request(),
            413,
            "payload_too_large",
        ),
    ] {
        let response = call_service(&app, request).await;
        assert_eq!(response.status().as_u16(), status);
        let body: Value = read_body_json(response).await;
        assert_eq!(body["code"], code, "{body}");
        assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
    let created = call_service(
        &app,
        TestRequest::post().uri("/api/agents").set_json(json!({"name": "bot"})).to_request(),
    )
    .await;
    assert_eq!(created.status().as_u16(), 201);
    let again = call_service(
        &app,
        TestRequest::post().uri("/api/agents").set_json(json!({"name": "bot"})).to_request(),
    )
    .await;
    assert_eq!(again.status().as_u16(), 409);
}

#[actix_web::test]
async fn the_token_is_checked_on_every_route_but_health() {
    let dir = tempfile::tempdir().unwrap();
    let app = init_service(orbit_api::app(state(dir.path(), Some("tok")))).await;
    let anonymous = call_service(&app, TestRequest::get().uri("/api/agents").to_request()).await;
    assert_eq!(anonymous.status().as_u16(), 401);
    let body: Value = read_body_json(anonymous).await;
    assert_eq!(body["code"], "unauthorized");
    let shorter = call_service(
        &app,
        TestRequest::get()
            .uri("/api/agents")
            .insert_header(("Authorization", "Bearer to"))
            .to_request(),
    )
    .await;
    assert_eq!(shorter.status().as_u16(), 401);
    let good = call_service(
        &app,
        TestRequest::get()
            .uri("/api/agents")
            .insert_header(("Authorization", "Bearer tok"))
            .to_request(),
    )
    .await;
    assert_eq!(good.status().as_u16(), 200);
    let health = call_service(&app, TestRequest::get().uri("/health").to_request()).await;
    assert_eq!(health.status().as_u16(), 200);
}

/// A server that needs a token (one listening beyond loopback) and has no workdir root takes
/// no workdir, and says which flag gives it one.
#[actix_web::test]
async fn a_server_needing_a_token_takes_no_workdir_without_a_root() {
    let dir = tempfile::tempdir().unwrap();
    let policy = orbit_agent::workdir::WorkdirPolicy::new(&[], true).unwrap();
    let app =
        init_service(orbit_api::app(state_with(&dir.path().join("data"), Some("tok"), policy)))
            .await;
    let workdir = dir.path().display().to_string();
    let refused = call_service(
        &app,
        TestRequest::post()
            .uri("/api/agents")
            .insert_header(("Authorization", "Bearer tok"))
            .set_json(json!({"name": "bot", "workdir": workdir}))
            .to_request(),
    )
    .await;
    assert_eq!(refused.status().as_u16(), 400);
    let body: Value = read_body_json(refused).await;
    assert_eq!(body["code"], "invalid_input");
    assert!(body["error"].as_str().unwrap().contains("--workdir-root"), "{body}");
    let without = call_service(
        &app,
        TestRequest::post()
            .uri("/api/agents")
            .insert_header(("Authorization", "Bearer tok"))
            .set_json(json!({"name": "bot"}))
            .to_request(),
    )
    .await;
    assert_eq!(without.status().as_u16(), 201, "the default workspace needs no root");
}
