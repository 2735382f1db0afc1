//! The web console's files: served at `/` from the binary, without the token (they hold no
//! data), under a strict Content-Security-Policy; the API behind them keeps its guards.

use crate::helpers::TestApp;

#[actix_web::test]
async fn the_console_is_served_without_the_token_and_the_api_is_not() {
    let app = TestApp::spawn_with_token(vec![], Some("console-token")).await;
    let anonymous = awc::Client::default();
    let mut page = anonymous.get(format!("{}/", app.address)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let header = |name: &str| page.headers().get(name).unwrap().to_str().unwrap().to_owned();
    assert_eq!(header("content-type"), "text/html; charset=utf-8");
    let policy = header("content-security-policy");
    assert!(policy.starts_with("default-src 'self'"), "{policy}");
    assert!(policy.contains("script-src 'self'") && policy.contains("frame-ancestors 'none'"));
    assert_eq!(header("x-content-type-options"), "nosniff");
    let html = String::from_utf8(page.body().await.unwrap().to_vec()).unwrap();
    assert!(html.contains("/console/js/app.js"), "{html}");
    assert!(!html.contains("http://") && !html.contains("https://"), "nothing from another host");

    for asset in ["/console/js/app.js", "/console/js/chat.js", "/console/style.css"] {
        let mut answer = anonymous.get(format!("{}{asset}", app.address)).send().await.unwrap();
        assert_eq!(answer.status(), 200, "{asset}");
        let body = String::from_utf8(answer.body().limit(1 << 20).await.unwrap().to_vec()).unwrap();
        assert!(
            !body.contains("http://") && !body.contains("https://"),
            "{asset} loads nothing from another host"
        );
    }
    let api = anonymous.get(format!("{}/api/agents", app.address)).send().await.unwrap();
    assert_eq!(api.status(), 401, "the API still needs the token");
    let near_miss =
        anonymous.get(format!("{}/console/js/missing.js", app.address)).send().await.unwrap();
    assert_eq!(near_miss.status(), 401, "only the console's own files go without the token");

    // A foreign page still cannot drive the API, token or not.
    let foreign = app
        .raw(
            &format!(
                "GET /api/agents HTTP/1.1\r\nHost: {}\r\nOrigin: http://evil.example\r\nAuthorization: Bearer console-token",
                app.authority()
            ),
            "",
        )
        .await;
    assert_eq!(foreign.status, 403);
}
