//! Git worktrees of an agent, so parallel sessions and tasks do not trample each other's
//! files.
//!
//! git always runs as an argument list, never through a shell; branch names are checked with
//! `git check-ref-format --branch` and may not start with `-`; `--` goes before every path.
//! A worktree with uncommitted changes is kept and reported, never removed silently.
//!
//! Where they live depends on where the agent works ([`WorkingDir`]):
//!
//! - In Orbit's workspace (the default), the repository is the workspace's own
//!   (`<base>/.git`), made by Orbit when missing, and worktrees are `<base>/.worktrees/<id>`:
//!   a data directory that happens to sit inside someone's repository must not get Orbit's
//!   branches and worktrees in that repository.
//! - In a workdir of the user's, the repository is the one the workdir is in (never looked
//!   for above the workdir root it was accepted under), and worktrees are
//!   `<top level>/.orbit/worktrees/<id>`, beside a `.orbit/.gitignore` of `*` so that git
//!   ignores all of Orbit's folder and the user's status stays clean. Orbit makes no commit
//!   there, and touches no branch but the ones it creates: a new branch is refused when one
//!   of its name exists (a worktree asked for without one gets `orbit/<id>`, never a
//!   detached HEAD whose commits would go with it), and removing a worktree deletes the
//!   branch Orbit made for it only while that branch is still where Orbit made it (commits
//!   on it are the agent's work and stay). A workdir outside any repository has no
//!   worktrees (`Invalid`, saying so).

use std::path::{Path, PathBuf};

use orbit_store::WorkingDir;
use serde::Serialize;
use tokio::process::Command;

use crate::{Error, Result};

/// Worktrees in Orbit's own workspace repository.
const WORKSPACE_WORKTREES: &str = ".worktrees";
/// Orbit's folder in a user's repository, ignored by its own `.gitignore`.
const ORBIT_DIR: &str = ".orbit";
/// Worktrees in a user's repository, under [`ORBIT_DIR`].
const USER_WORKTREES: &str = ".orbit/worktrees";
/// The branches Orbit made in a user's repository, one file per worktree: the branch and
/// the commit it was made at.
const USER_BRANCHES: &str = ".orbit/branches";

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

/// Where an agent's worktrees live: its repository and the folder they go in.
#[derive(Debug, Clone)]
struct Home {
    /// The repository's top level, where git runs.
    repo: PathBuf,
    /// The folder the worktrees are in.
    dir: PathBuf,
    /// The working directory's place inside its repository (a workdir may be a subfolder).
    within: PathBuf,
    /// A user's repository, rather than Orbit's own workspace.
    user: bool,
}

impl Home {
    fn path_of(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }
}

/// The worktrees' home of `dir`. `Ok(None)` for a workdir that is in no git repository.
async fn find_home(dir: &WorkingDir) -> Result<Option<Home>> {
    match dir {
        WorkingDir::Workspace(base) => Ok(Some(Home {
            repo: base.clone(),
            dir: base.join(WORKSPACE_WORKTREES),
            within: PathBuf::new(),
            user: false,
        })),
        WorkingDir::User(workdir) => {
            let mut command = Command::new("git");
            command.arg("-C").arg(&workdir.path).args(["rev-parse", "--show-toplevel"]);
            // The repository is looked for no higher than the root the workdir was accepted
            // under: a root inside a larger repository does not open that repository.
            if let Some(parent) = workdir.root.as_deref().and_then(Path::parent) {
                command.env("GIT_CEILING_DIRECTORIES", parent);
            }
            let output = command
                .stdin(std::process::Stdio::null())
                .output()
                .await
                .map_err(|err| Error::Git(format!("cannot run git: {err}")))?;
            let top = String::from_utf8_lossy(&output.stdout).trim_end_matches('\n').to_owned();
            if !output.status.success() || top.is_empty() {
                return Ok(None);
            }
            let repo = PathBuf::from(top);
            let within = std::fs::canonicalize(&workdir.path)
                .ok()
                .and_then(|real| real.strip_prefix(&repo).ok().map(Path::to_path_buf))
                .unwrap_or_default();
            Ok(Some(Home { dir: repo.join(USER_WORKTREES), repo, within, user: true }))
        }
    }
}

/// The worktrees' home of `dir`, or `Invalid` saying why a workdir can have none.
async fn home(dir: &WorkingDir) -> Result<Home> {
    find_home(dir).await?.ok_or_else(|| {
        Error::Invalid(format!(
            "the agent works in '{}', which is not inside a git repository, so it cannot have worktrees; run `git init` there (and commit once) or work without a worktree",
            dir.path().display()
        ))
    })
}

/// Refuses (`Invalid`) a working directory that cannot hold worktrees: one of the user's
/// that is in no git repository. Checked when a task asks for a worktree, long before its
/// first run makes it.
pub async fn check_possible(dir: &WorkingDir) -> Result<()> {
    home(dir).await.map(drop)
}

/// The directory a session or task in worktree `id` works in: the worktree, at the place of
/// the agent's workdir in it when that is a subfolder the worktree has.
pub async fn cwd_of(dir: &WorkingDir, id: &str) -> Result<PathBuf> {
    let home = home(dir).await?;
    let root = home.path_of(id);
    let within = root.join(&home.within);
    Ok(if home.within.as_os_str().is_empty() || !within.is_dir() { root } else { within })
}

/// Whether worktree `id` exists.
pub async fn exists(dir: &WorkingDir, id: &str) -> Result<bool> {
    Ok(find_home(dir).await?.is_some_and(|home| home.path_of(id).is_dir()))
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

/// Readies a user's repository for a worktree without changing anything of the user's: it
/// must have a commit already (Orbit makes none there), and Orbit's own folder is made with
/// a `.gitignore` that ignores all of it, itself included.
async fn ensure_user_folder(home: &Home) -> Result<()> {
    if git(&home.repo, &["rev-parse", "--verify", "--quiet", "HEAD"]).await.is_err() {
        return Err(Error::Invalid(
            "the agent's repository has no commit yet, and a worktree starts from one; commit once first".into(),
        ));
    }
    let folder = home.repo.join(ORBIT_DIR);
    match tokio::fs::symlink_metadata(&folder).await {
        Ok(meta) if meta.is_dir() => {}
        // A file or a symlink of that name is the user's: Orbit neither replaces it nor
        // follows it elsewhere.
        Ok(_) => {
            return Err(Error::Invalid(format!(
                "the agent's repository has a '{ORBIT_DIR}' that is not a folder; Orbit keeps its worktrees in a folder of that name"
            )));
        }
        Err(_) => tokio::fs::create_dir(&folder)
            .await
            .or_else(|err| {
                if err.kind() == std::io::ErrorKind::AlreadyExists { Ok(()) } else { Err(err) }
            })
            .map_err(|err| {
                Error::Git(format!("cannot make Orbit's folder in the repository: {err}"))
            })?,
    }
    let ignore = folder.join(".gitignore");
    if !tokio::fs::try_exists(&ignore).await.unwrap_or(false) {
        tokio::fs::write(&ignore, "# Orbit's worktrees and records: none of it is tracked.\n*\n")
            .await
            .map_err(|err| Error::Git(format!("cannot write Orbit's .gitignore: {err}")))?;
    }
    Ok(())
}

/// Creates worktree `id` (a ULID) where the agent's worktrees live, on a new branch when
/// `branch` is given. Without one, a worktree of Orbit's workspace is detached at HEAD, and
/// one in a user's repository gets a new branch `orbit/<id>`, so that commits the agent
/// makes there outlive the worktree.
pub async fn create(dir: &WorkingDir, id: &str, branch: Option<&str>) -> Result<Worktree> {
    if orbit_store::SessionId::parse(id).is_err() {
        return Err(Error::Invalid(format!("invalid worktree id {id:?}")));
    }
    if let Some(branch) = branch {
        check_branch(branch).await?;
    }
    let home = home(dir).await?;
    if home.user {
        ensure_user_folder(&home).await?;
    } else {
        ensure_repository(&home.repo).await?;
    }
    let branch = match branch {
        Some(branch) => Some(branch.to_owned()),
        None if home.user => Some(format!("orbit/{id}")),
        None => None,
    };
    let branch = branch.as_deref();
    if let Some(branch) = branch {
        refuse_clashing_branch(&home.repo, branch).await?;
    }
    let path = home.path_of(id);
    let path_text = path.to_string_lossy().into_owned();
    let repo = &home.repo;
    let added = match branch {
        Some(branch) => {
            git(repo, &["worktree", "add", "--quiet", "-b", branch, "--", &path_text]).await
        }
        None => git(repo, &["worktree", "add", "--quiet", "--detach", "--", &path_text]).await,
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
    if let (true, Some(branch)) = (home.user, branch) {
        record_branch(&home, id, branch).await?;
    }
    Ok(Worktree { id: id.to_owned(), path, branch: branch.map(str::to_owned) })
}

/// Notes the branch Orbit made for worktree `id` in a user's repository, and the commit it
/// was made at, so that removing the worktree deletes that branch and no other, and only
/// while nothing was committed on it.
async fn record_branch(home: &Home, id: &str, branch: &str) -> Result<()> {
    let commit =
        git(&home.repo, &["rev-parse", "--verify", "--quiet", &format!("refs/heads/{branch}")])
            .await?;
    let records = home.repo.join(USER_BRANCHES);
    tokio::fs::create_dir_all(&records)
        .await
        .map_err(|err| Error::Git(format!("cannot record Orbit's branch: {err}")))?;
    tokio::fs::write(records.join(id), format!("{branch}\n{}\n", commit.trim()))
        .await
        .map_err(|err| Error::Git(format!("cannot record Orbit's branch: {err}")))
}

/// Deletes the branch Orbit made for worktree `id` in a user's repository if it is still at
/// the commit it was made at; a branch with commits of its own is kept.
async fn forget_branch(home: &Home, id: &str) -> Result<()> {
    let record = home.repo.join(USER_BRANCHES).join(id);
    let Ok(text) = tokio::fs::read_to_string(&record).await else { return Ok(()) };
    let mut lines = text.lines();
    if let (Some(branch), Some(commit)) = (lines.next(), lines.next()) {
        // Checked again, as when it was made: the record is a file in the user's tree.
        check_branch(branch).await?;
        let reference = format!("refs/heads/{branch}");
        // `update-ref -d <ref> <old>` deletes only while the branch is at `old`, in one step.
        if let Err(err) = git(&home.repo, &["update-ref", "-d", &reference, commit]).await {
            tracing::info!(%branch, error = %err, "kept the branch Orbit made: it has moved");
        }
    }
    let _ = tokio::fs::remove_file(&record).await;
    Ok(())
}

/// `BranchExists` when `branch` exists, or when git could not make it beside the existing
/// ones: `a/b` needs the directory `refs/heads/a` where a branch `a` is a file, and the other
/// way round.
async fn refuse_clashing_branch(repo: &Path, branch: &str) -> Result<()> {
    let listed = git(repo, &["for-each-ref", "--format=%(refname:short)", "refs/heads/"]).await?;
    let clashes = listed.lines().any(|existing| {
        existing == branch
            || branch.strip_prefix(existing).is_some_and(|rest| rest.starts_with('/'))
            || existing.strip_prefix(branch).is_some_and(|rest| rest.starts_with('/'))
    });
    if clashes { Err(Error::BranchExists(branch.to_owned())) } else { Ok(()) }
}

/// The agent's worktrees (none for a workdir outside any repository).
pub async fn list(dir: &WorkingDir) -> Result<Vec<Worktree>> {
    let Some(home) = find_home(dir).await? else { return Ok(Vec::new()) };
    if !home.dir.is_dir() {
        return Ok(Vec::new());
    }
    let marker = if home.user { USER_WORKTREES } else { WORKSPACE_WORKTREES };
    let porcelain = git(&home.repo, &["worktree", "list", "--porcelain"]).await?;
    let mut worktrees = Vec::new();
    let mut current: Option<Worktree> = None;
    for line in porcelain.lines().chain(std::iter::once("")) {
        if let Some(path) = line.strip_prefix("worktree ") {
            let path = PathBuf::from(path);
            // Only Orbit's: a user's repository has worktrees of its own elsewhere.
            current = path
                .parent()
                .filter(|parent| parent.ends_with(marker))
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
pub async fn remove(dir: &WorkingDir, id: &str) -> Result<()> {
    remove_with(dir, id, Removal::KeepChanges).await
}

/// What to do with a worktree's uncommitted changes when removing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// Refuse (`WorktreeDirty`) and keep the worktree: the default everywhere.
    KeepChanges,
    /// Remove it and its changes: only when a person asks for exactly that.
    Force,
}

/// Removes worktree `id`, keeping one with uncommitted changes unless told to `Force`. In a
/// user's repository the branch Orbit made for it goes too, unless it has commits.
pub async fn remove_with(dir: &WorkingDir, id: &str, removal: Removal) -> Result<()> {
    let Some(home) = find_home(dir).await? else {
        return Err(Error::WorktreeNotFound(id.to_owned()));
    };
    let path = home.path_of(id);
    if orbit_store::SessionId::parse(id).is_err() || !path.is_dir() {
        return Err(Error::WorktreeNotFound(id.to_owned()));
    }
    let path_text = path.to_string_lossy();
    if removal == Removal::Force {
        // Twice `--force` also removes a locked worktree.
        git(&home.repo, &["worktree", "remove", "--force", "--force", "--", &path_text]).await?;
    } else {
        let status = git(&path, &["status", "--porcelain"]).await?;
        if !status.trim().is_empty() {
            return Err(Error::WorktreeDirty(id.to_owned()));
        }
        git(&home.repo, &["worktree", "remove", "--", &path_text]).await?;
    }
    if home.user {
        forget_branch(&home, id).await?;
    }
    Ok(())
}
