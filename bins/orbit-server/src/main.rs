//! `orbit-server`: parse settings, build, serve.

use orbit_server::config::Settings;
use orbit_server::startup::Application;

#[actix_web::main]
async fn main() -> std::process::ExitCode {
    orbit_server::telemetry::init();
    let settings = Settings::from_command_line();
    let app = match Application::build(&settings).await {
        Ok(app) => app,
        Err(err) => {
            tracing::error!("{err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    tracing::info!(bind = %settings.bind, port = app.port(), data_dir = %settings.data_dir().display(), "orbit-server listening");
    match app.run_until_stopped().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("server failed: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}
