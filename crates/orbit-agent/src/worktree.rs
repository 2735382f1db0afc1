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
//!   `<top level>/.orbit/worktrees/<agent>/<id>` (several agents may work in one
//!   repository: each lists and removes only its own), beside a `.orbit/.gitignore` of `*`
//!   so that git ignores all of Orbit's folder and the user's status stays clean. Orbit's
//!   folders there are never followed when they are symlinks, its files are made new
//!   without following one, a worktree whose real path is not under the repository's real
//!   top level is refused, and so is a repository whose `.orbit` is or holds the server's
//!   data directory. Orbit makes no commit
//!   there, and touches no branch but the ones it creates: a new branch is refused when one
//!   of its name exists (a worktree asked for without one gets `orbit/<id>`, never a
//!   detached HEAD whose commits would go with it), and removing a worktree deletes the
//!   branch Orbit made for it only while that branch is still where Orbit made it (commits
//!   on it are the agent's work and stay). Which branch that is, and the commit it was made
//!   at, Orbit notes in its own data directory ([`WorktreeOwner::records`]), never in the
//!   user's tree, which the agent's tools can write. A workdir outside any repository has
//!   no worktrees (`Invalid`, saying so).

use std::path::{Path, PathBuf};

use orbit_store::{WorkingDir, WorktreeOwner};
use serde::Serialize;
use tokio::process::Command;

use crate::{Error, Result};

/// Worktrees in Orbit's own workspace repository.
const WORKSPACE_WORKTREES: &str = ".worktrees";
/// Orbit's folder in a user's repository, ignored by its own `.gitignore`.
const ORBIT_DIR: &str = ".orbit";
/// Worktrees in a user's repository, under [`ORBIT_DIR`], one folder per agent.
const USER_WORKTREES: &str = ".orbit/worktrees";

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
    /// In a user's repository (rather than Orbit's own workspace): whose worktrees these are.
    owner: Option<WorktreeOwner>,
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
            owner: None,
        })),
        WorkingDir::User(workdir, owner) => {
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
            let repo = std::fs::canonicalize(&top)
                .map_err(|err| Error::Git(format!("cannot read the repository: {err}")))?;
            // Checked at every use, as the data directory or the repository may have moved:
            // a repository around the data directory would get worktrees among its records.
            let folder = repo.join(ORBIT_DIR);
            let data = std::fs::canonicalize(&owner.data_dir).unwrap_or(owner.data_dir.clone());
            if folder.starts_with(&data) || data.starts_with(&folder) {
                return Err(Error::Invalid(format!(
                    "the agent works in '{}', whose repository's '{ORBIT_DIR}' folder, where Orbit keeps worktrees, is or holds the server's data directory; give the agent a workdir in another repository",
                    workdir.path.display()
                )));
            }
            let within = std::fs::canonicalize(&workdir.path)
                .ok()
                .and_then(|real| real.strip_prefix(&repo).ok().map(Path::to_path_buf))
                .unwrap_or_default();
            let dir = repo.join(USER_WORKTREES).join(owner.agent.as_str());
            Ok(Some(Home { dir, repo, within, owner: Some(owner.clone()) }))
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
    check_in_place(&home, &root)?;
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
/// a `.gitignore` that ignores all of it, itself included, and the agent's folder of
/// worktrees in it. None of them is followed when it is a symlink or replaced when it is
/// a file: those are the user's (or an agent's) and could lead anywhere.
async fn ensure_user_folder(home: &Home) -> Result<()> {
    if git(&home.repo, &["rev-parse", "--verify", "--quiet", "HEAD"]).await.is_err() {
        return Err(Error::Invalid(
            "the agent's repository has no commit yet, and a worktree starts from one; commit once first".into(),
        ));
    }
    let folder = home.repo.join(ORBIT_DIR);
    ensure_real_dir(&folder)?;
    let ignore = folder.join(".gitignore");
    match std::fs::symlink_metadata(&ignore) {
        Ok(meta) if meta.is_file() => {}
        Ok(_) => {
            return Err(Error::Invalid(format!(
                "the agent's repository has a '{ORBIT_DIR}/.gitignore' that is not a file; Orbit keeps its own there"
            )));
        }
        Err(_) => {
            write_new(&ignore, "# Orbit's worktrees and records: none of it is tracked.\n*\n")
                .map_err(|err| Error::Git(format!("cannot write Orbit's .gitignore: {err}")))?
        }
    }
    ensure_real_dir(&home.repo.join(USER_WORKTREES))?;
    ensure_real_dir(&home.dir)?;
    check_in_place(home, &home.dir)
}

/// Makes `path` a folder unless it is one already; refuses a symlink or anything else of
/// that name, rather than follow or replace it.
fn ensure_real_dir(path: &Path) -> Result<()> {
    let refuse = || {
        Error::Invalid(format!(
            "the agent's repository has a '{}' that is not a folder; Orbit keeps its worktrees in a folder of that name",
            path.file_name().map(|name| name.to_string_lossy()).unwrap_or_default()
        ))
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(refuse()),
        // `mkdir` makes no folder through a symlink: a dangling one of that name fails.
        Err(_) => match std::fs::create_dir(path) {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
                if std::fs::symlink_metadata(path).is_ok_and(|meta| meta.is_dir()) {
                    Ok(())
                } else {
                    Err(refuse())
                }
            }
            Err(err) => {
                Err(Error::Git(format!("cannot make Orbit's folder in the repository: {err}")))
            }
        },
    }
}

/// Writes a file that must not exist yet, never through a symlink (a dangling one would
/// otherwise make its target wherever it leads).
fn write_new(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)?;
    file.write_all(text.as_bytes())
}

/// Refuses (`Invalid`) a path of a user's repository that does not really lie where Orbit
/// put it, under the agent's folder of worktrees in the repository's real top level: a
/// folder on the way may have been replaced by a symlink since.
fn check_in_place(home: &Home, path: &Path) -> Result<()> {
    if home.owner.is_none() {
        return Ok(());
    }
    let real = std::fs::canonicalize(path).ok();
    if real.is_some_and(|real| real.starts_with(&home.dir) && home.dir.starts_with(&home.repo)) {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "Orbit's worktree folder '{}' does not lie where Orbit made it in the agent's repository (a symlink on the way?); it is not used",
            path.display()
        )))
    }
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
    if home.owner.is_some() {
        ensure_user_folder(&home).await?;
    } else {
        ensure_repository(&home.repo).await?;
    }
    let branch = match branch {
        Some(branch) => Some(branch.to_owned()),
        None if home.owner.is_some() => Some(format!("orbit/{id}")),
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
    if let (Some(owner), Some(branch)) = (&home.owner, branch) {
        record_branch(&home.repo, owner, id, branch).await?;
    }
    if let Err(err) = check_in_place(&home, &path) {
        // Moved between the check of the folders and the add: the worktree goes again.
        let _ = git(repo, &["worktree", "remove", "--force", "--force", "--", &path_text]).await;
        if let Some(owner) = &home.owner {
            forget_branch(&home.repo, owner, id).await;
        }
        return Err(err);
    }
    Ok(Worktree { id: id.to_owned(), path, branch: branch.map(str::to_owned) })
}

/// Notes the branch Orbit made for worktree `id` in a user's repository, and the commit it
/// was made at, in Orbit's data directory, so that removing the worktree deletes that
/// branch and no other, and only while nothing was committed on it.
async fn record_branch(repo: &Path, owner: &WorktreeOwner, id: &str, branch: &str) -> Result<()> {
    let commit =
        git(repo, &["rev-parse", "--verify", "--quiet", &format!("refs/heads/{branch}")]).await?;
    tokio::fs::create_dir_all(&owner.records)
        .await
        .map_err(|err| Error::Git(format!("cannot record Orbit's branch: {err}")))?;
    tokio::fs::write(owner.records.join(id), format!("{branch}\n{}\n", commit.trim()))
        .await
        .map_err(|err| Error::Git(format!("cannot record Orbit's branch: {err}")))
}

/// Whether `commit` is an object name as git prints one (SHA-1 or SHA-256, lowercase hex).
fn is_object_name(commit: &str) -> bool {
    matches!(commit.len(), 40 | 64)
        && commit.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Deletes the branch Orbit made for worktree `id` in a user's repository if it is still at
/// the commit it was made at; a branch with commits of its own is kept. Best effort: it
/// runs after the worktree (and often its session or task) is gone, so what fails is
/// logged, never answered.
async fn forget_branch(repo: &Path, owner: &WorktreeOwner, id: &str) {
    let record = owner.records.join(id);
    let Ok(text) = tokio::fs::read_to_string(&record).await else { return };
    let mut lines = text.lines();
    if let (Some(branch), Some(commit)) = (lines.next(), lines.next()) {
        if check_branch(branch).await.is_err() || !is_object_name(commit) {
            tracing::warn!(worktree = id, "Orbit's note of a worktree's branch is not one; kept");
        } else {
            let reference = format!("refs/heads/{branch}");
            // `update-ref -d <ref> <old>` deletes only while the branch is at `old`, in one
            // step.
            if let Err(err) = git(repo, &["update-ref", "-d", &reference, commit]).await {
                tracing::info!(%branch, error = %err, "kept the branch Orbit made: it has moved");
            }
        }
    }
    let _ = tokio::fs::remove_file(&record).await;
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
    let home = match find_home(dir).await {
        Ok(Some(home)) => home,
        // Orbit makes none where it may not make them.
        Ok(None) | Err(Error::Invalid(_)) => return Ok(Vec::new()),
        Err(err) => return Err(err),
    };
    if !home.dir.is_dir() {
        return Ok(Vec::new());
    }
    let porcelain = git(&home.repo, &["worktree", "list", "--porcelain"]).await?;
    let mut worktrees = Vec::new();
    let mut current: Option<Worktree> = None;
    for line in porcelain.lines().chain(std::iter::once("")) {
        if let Some(path) = line.strip_prefix("worktree ") {
            let path = PathBuf::from(path);
            // Only this agent's: a user's repository has worktrees of its own elsewhere, and
            // other agents working in it have theirs in folders of their own.
            current = path
                .parent()
                .filter(|parent| match home.owner {
                    Some(_) => *parent == home.dir,
                    None => parent.ends_with(WORKSPACE_WORKTREES),
                })
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
    check_in_place(&home, &path)?;
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
    if let Some(owner) = &home.owner {
        forget_branch(&home.repo, owner, id).await;
    }
    Ok(())
}
