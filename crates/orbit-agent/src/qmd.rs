//! The optional `qmd` markdown search index over an agent's memory (the plan's QMD step):
//! refreshed in the background after a turn when a `qmd` binary is on PATH, skipped otherwise.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

fn qmd_binary() -> Option<&'static Path> {
    static QMD: OnceLock<Option<PathBuf>> = OnceLock::new();
    QMD.get_or_init(|| {
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path)
            .map(|dir| dir.join("qmd"))
            .find(|candidate| candidate.is_file())
    })
    .as_deref()
}

/// Starts `qmd update` in the memory directory, without waiting for it.
pub(crate) fn refresh_in_background(memory_dir: Option<PathBuf>) {
    let (Some(qmd), Some(dir)) = (qmd_binary(), memory_dir) else { return };
    if !dir.is_dir() {
        return;
    }
    let mut command = tokio::process::Command::new(qmd);
    command
        .arg("update")
        .current_dir(&dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    tokio::spawn(async move {
        match command.status().await {
            Ok(status) if status.success() => {
                tracing::debug!(dir = %dir.display(), "refreshed qmd index")
            }
            Ok(status) => tracing::warn!(dir = %dir.display(), %status, "qmd update failed"),
            Err(err) => tracing::warn!(dir = %dir.display(), error = %err, "could not run qmd"),
        }
    });
}
