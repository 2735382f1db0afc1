//! Where the CLI keeps a session's transcript, which `--resume` reads:
//! `<CLAUDE_CONFIG_DIR>/projects/<the working directory, every character but ASCII letters
//! and digits made '-'>/<CLI session id>.jsonl`. Two nodes run a conversation in different
//! working directories (each node has its own data directory), so a transcript brought from
//! another node is written under this node's working directory's name.

use std::path::{Path, PathBuf};

/// The transcript of `cli_session` in a conversation's state directory, under whichever
/// working directory it was written.
pub(super) async fn find(state_dir: &Path, cli_session: &str) -> Option<PathBuf> {
    if !is_plain_id(cli_session) {
        return None;
    }
    let name = format!("{cli_session}.jsonl");
    let mut projects = tokio::fs::read_dir(state_dir.join("projects")).await.ok()?;
    while let Ok(Some(project)) = projects.next_entry().await {
        let candidate = project.path().join(&name);
        if tokio::fs::try_exists(&candidate).await.unwrap_or(false) {
            return Some(candidate);
        }
    }
    None
}

/// Writes a transcript where a CLI resuming `cli_session` in `cwd` looks for it.
pub(super) async fn write(
    state_dir: &Path,
    cwd: &Path,
    cli_session: &str,
    bytes: &[u8],
) -> std::io::Result<()> {
    if !is_plain_id(cli_session) {
        return Err(std::io::Error::other("not a CLI session id"));
    }
    let project = state_dir.join("projects").join(project_name(cwd));
    tokio::fs::create_dir_all(&project).await?;
    // Written aside and renamed, so that a CLI starting meanwhile never reads half of it.
    let partial = project.join(format!(".{cli_session}.jsonl.partial"));
    tokio::fs::write(&partial, bytes).await?;
    tokio::fs::rename(&partial, project.join(format!("{cli_session}.jsonl"))).await
}

/// The CLI's name for a working directory's project.
fn project_name(cwd: &Path) -> String {
    cwd.to_string_lossy().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect()
}

/// CLI session ids are UUIDs; anything else is never made into a path.
fn is_plain_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_working_directory_is_named_as_the_cli_names_it() {
        assert_eq!(project_name(Path::new("/tmp/x.y/work_dir")), "-tmp-x-y-work-dir");
    }

    #[test]
    fn only_plain_ids_become_paths() {
        assert!(is_plain_id("3f2b6c1e-0a4d-4a5e-9f00-1234567890ab"));
        assert!(!is_plain_id("../../etc/passwd"));
        assert!(!is_plain_id(""));
    }
}
