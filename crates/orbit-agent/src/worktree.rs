//! Git worktrees under an agent's working directory (`.worktrees/<id>`), so parallel sessions
//! and tasks do not trample each other's files.
//!
//! git always runs as an argument list, never through a shell; branch names are checked with
//! `git check-ref-format --branch` and may not start with `-`; `--` goes before every path.
//! A worktree with uncommitted changes is kept and reported, never removed silently.
//!
//! The repository is the working directory's own (`<base>/.git`), made by Orbit when missing:
//! a data directory that happens to sit inside someone's repository must not get Orbit's
//! branches and worktrees in that repository.

use std::path::{Path, PathBuf};

use serde::Serialize;
use tokio::process::Command;

use crate::{Error, Result};

const WORKTREES_DIR: &str = ".worktrees";

/// A worktree of an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Worktree {
    /// The session or task id it belongs to.
    pub id: String,
    pub path: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
}

/// The path of worktree `id` under `base` (the agent's working directory).
pub fn path_of(base: &Path, id: &str) -> PathBuf {
    base.join(WORKTREES_DIR).join(id)
}

/// Runs git in `dir` with `args`, returning its stdout.
async fn git(dir: &Path, args: &[&str]) -> Result<String> {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        // A fixed identity for the commits Orbit itself makes, whatever the machine has.
        .args(["-c", "user.name=Orbit", "-c", "user.email=orbit@localhost"])
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|err| Error::Git(format!("cannot run git: {err}")))?;
    if !output.status.success() {
        return Err(Error::Git(format!(
            "git {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Names git gives a meaning of its own: a branch called so would be read as something else.
const RESERVED: &[&str] = &["HEAD", "@"];

/// Refuses branch names git would not take, that could be read as an option, or that name
/// something else to git (`HEAD`, `FETCH_HEAD`, `@`, `@{-1}`, `refs/heads/x`).
pub async fn check_branch(name: &str) -> Result<()> {
    let invalid = || Error::Invalid(format!("invalid branch name {name:?}"));
    let ambiguous = RESERVED.contains(&name)
        || name.ends_with("_HEAD")
        || name.starts_with("refs/")
        || name.contains("@{");
    if name.is_empty()
        || name.starts_with('-')
        || name.len() > 200
        || name.chars().any(char::is_control)
        || ambiguous
    {
        return Err(invalid());
    }
    let status = Command::new("git")
        .args(["check-ref-format", "--branch", name])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .await
        .map_err(|err| Error::Git(format!("cannot run git: {err}")))?;
    if status.success() { Ok(()) } else { Err(invalid()) }
}

/// Makes `base` a git repository with at least one commit, as worktrees need.
async fn ensure_repository(base: &Path) -> Result<()> {
    if !tokio::fs::try_exists(base.join(".git")).await.unwrap_or(false) {
        git(base, &["init", "--quiet"]).await?;
    }
    if git(base, &["rev-parse", "--verify", "--quiet", "HEAD"]).await.is_err() {
        git(base, &["commit", "--quiet", "--allow-empty", "-m", "Orbit workspace"]).await?;
    }
    // Worktrees live inside the working directory; keep them out of its status.
    let exclude = base.join(".git/info/exclude");
    let current = tokio::fs::read_to_string(&exclude).await.unwrap_or_default();
    if base.join(".git").is_dir() && !current.lines().any(|line| line == "/.worktrees/") {
        let _ = tokio::fs::create_dir_all(base.join(".git/info")).await;
        let _ = tokio::fs::write(&exclude, format!("{current}/.worktrees/\n")).await;
    }
    Ok(())
}

/// Creates worktree `id` (a ULID) under `base`, on a new branch when `branch` is given,
/// detached at HEAD otherwise.
pub async fn create(base: &Path, id: &str, branch: Option<&str>) -> Result<Worktree> {
    if orbit_store::SessionId::parse(id).is_err() {
        return Err(Error::Invalid(format!("invalid worktree id {id:?}")));
    }
    if let Some(branch) = branch {
        check_branch(branch).await?;
    }
    ensure_repository(base).await?;
    if let Some(branch) = branch {
        refuse_clashing_branch(base, branch).await?;
    }
    let path = path_of(base, id);
    let path_text = path.to_string_lossy().into_owned();
    let added = match branch {
        Some(branch) => {
            git(base, &["worktree", "add", "--quiet", "-b", branch, "--", &path_text]).await
        }
        None => git(base, &["worktree", "add", "--quiet", "--detach", "--", &path_text]).await,
    };
    match (added, branch) {
        (Ok(_), _) => {}
        // Made by someone else between the check and the add.
        (Err(Error::Git(message)), Some(branch))
            if message.contains("already exists") || message.contains("cannot lock ref") =>
        {
            return Err(Error::BranchExists(branch.to_owned()));
        }
        (Err(err), _) => return Err(err),
    }
    Ok(Worktree { id: id.to_owned(), path, branch: branch.map(str::to_owned) })
}

/// `BranchExists` when `branch` exists, or when git could not make it beside the existing
/// ones: `a/b` needs the directory `refs/heads/a` where a branch `a` is a file, and the other
/// way round.
async fn refuse_clashing_branch(base: &Path, branch: &str) -> Result<()> {
    let listed = git(base, &["for-each-ref", "--format=%(refname:short)", "refs/heads/"]).await?;
    let clashes = listed.lines().any(|existing| {
        existing == branch
            || branch.strip_prefix(existing).is_some_and(|rest| rest.starts_with('/'))
            || existing.strip_prefix(branch).is_some_and(|rest| rest.starts_with('/'))
    });
    if clashes { Err(Error::BranchExists(branch.to_owned())) } else { Ok(()) }
}

/// The worktrees under `base`.
pub async fn list(base: &Path) -> Result<Vec<Worktree>> {
    let root = base.join(WORKTREES_DIR);
    if !root.is_dir() {
        return Ok(Vec::new());
    }
    let porcelain = git(base, &["worktree", "list", "--porcelain"]).await?;
    let mut worktrees = Vec::new();
    let mut current: Option<Worktree> = None;
    for line in porcelain.lines().chain(std::iter::once("")) {
        if let Some(path) = line.strip_prefix("worktree ") {
            let path = PathBuf::from(path);
            current = path
                .parent()
                .filter(|parent| parent.ends_with(WORKTREES_DIR))
                .and_then(|_| path.file_name())
                .map(|id| Worktree {
                    id: id.to_string_lossy().into_owned(),
                    path: path.clone(),
                    branch: None,
                });
        } else if let (Some(branch), Some(worktree)) =
            (line.strip_prefix("branch refs/heads/"), current.as_mut())
        {
            worktree.branch = Some(branch.to_owned());
        } else if line.is_empty()
            && let Some(worktree) = current.take()
        {
            worktrees.push(worktree);
        }
    }
    Ok(worktrees)
}

/// Removes worktree `id`; `WorktreeDirty` (and nothing removed) when it has uncommitted
/// changes.
pub async fn remove(base: &Path, id: &str) -> Result<()> {
    remove_with(base, id, Removal::KeepChanges).await
}

/// What to do with a worktree's uncommitted changes when removing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// Refuse (`WorktreeDirty`) and keep the worktree: the default everywhere.
    KeepChanges,
    /// Remove it and its changes: only when a person asks for exactly that.
    Force,
}

/// Removes worktree `id`, keeping one with uncommitted changes unless told to `Force`.
pub async fn remove_with(base: &Path, id: &str, removal: Removal) -> Result<()> {
    let path = path_of(base, id);
    if orbit_store::SessionId::parse(id).is_err() || !path.is_dir() {
        return Err(Error::WorktreeNotFound(id.to_owned()));
    }
    let path_text = path.to_string_lossy();
    if removal == Removal::Force {
        // Twice `--force` also removes a locked worktree; the branch itself stays.
        git(base, &["worktree", "remove", "--force", "--force", "--", &path_text]).await?;
        return Ok(());
    }
    let status = git(&path, &["status", "--porcelain"]).await?;
    if !status.trim().is_empty() {
        return Err(Error::WorktreeDirty(id.to_owned()));
    }
    git(base, &["worktree", "remove", "--", &path_text]).await?;
    Ok(())
}
