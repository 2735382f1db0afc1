//! Workdirs: which directories the policy accepts, and worktrees made in the user's own
//! repository under Orbit's ignored folder, never touching the user's branches.

use std::path::{Path, PathBuf};
use std::process::Command;

use orbit_agent::workdir::WorkdirPolicy;
use orbit_agent::{Error, worktree};
use orbit_store::{Workdir, WorkingDir, WorktreeOwner};

/// A user's workdir at `path` of agent `bot`, Orbit's records in `data` (a test's own).
fn users(path: PathBuf, root: Option<PathBuf>, data: &Path) -> WorkingDir {
    let owner = WorktreeOwner {
        agent: orbit_store::AgentName::parse("bot").unwrap(),
        records: data.join("worktree-branches"),
        data_dir: data.to_path_buf(),
    };
    WorkingDir::User(Workdir { path, root }, owner)
}

fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=User", "-c", "user.email=user@localhost"])
        .args(args)
        .output()
        .unwrap();
    assert!(output.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A user's repository with one commit, a tracked file in `src/` and branches of its own.
fn user_repo(dir: &Path) -> PathBuf {
    let repo = dir.join("project");
    std::fs::create_dir_all(repo.join("src")).unwrap();
    git(&repo, &["init", "--quiet", "--initial-branch=main"]);
    std::fs::write(repo.join("src/lib.txt"), "the user's code\n").unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "--quiet", "-m", "first"]);
    git(&repo, &["branch", "users-feature"]);
    repo
}

fn refs(repo: &Path) -> String {
    git(repo, &["for-each-ref", "--format=%(refname) %(objectname)", "refs/heads/"])
}

fn invalid(result: orbit_agent::Result<Workdir>) -> String {
    match result {
        Err(err) if err.kind() == orbit_store::ErrorKind::Invalid => err.to_string(),
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn the_policy_takes_existing_absolute_directories_inside_the_roots() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(root.join("proj/sub")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(root.join("file.txt"), "").unwrap();
    std::os::unix::fs::symlink(&outside, root.join("escape")).unwrap();
    std::os::unix::fs::symlink(root.join("proj"), root.join("inner-link")).unwrap();
    let policy = WorkdirPolicy::new(std::slice::from_ref(&root), true).unwrap();
    let at = |p: &Path| p.display().to_string();

    let accepted = policy.check(&at(&root.join("proj"))).unwrap();
    assert_eq!(accepted.path, root.join("proj"), "kept as the client gave it");
    assert_eq!(accepted.root.as_deref(), Some(root.canonicalize().unwrap().as_path()));
    for fine in [
        at(&root),
        format!("{}/", at(&root.join("proj"))),
        at(&root).replacen('/', "//", 1),
        at(&root.join("proj/sub/..")),
        at(&root.join("inner-link")),
    ] {
        assert!(policy.check(&fine).is_ok(), "{fine}");
    }

    let refusals = [
        ("relative/path".to_owned(), "not an absolute path"),
        (at(&root.join("missing")), "does not exist"),
        (at(&root.join("file.txt")), "not a directory"),
        (format!("{}/", at(&root.join("file.txt"))), "not a directory"),
        (at(&outside), "outside every workdir root"),
        (at(&root.join("escape")), "outside every workdir root"),
        (at(&root.join("escape/")), "outside every workdir root"),
        (at(&root.join("proj/../../outside")), "outside every workdir root"),
        (format!("{}\0x", at(&root)), "NUL"),
        (format!("/{}", "a".repeat(5000)), "the limit is 4096"),
    ];
    for (given, reason) in refusals {
        let message = invalid(policy.check(&given));
        assert!(message.contains(reason), "{given:?}: {message}");
        // Only the client's own path is ever named: not the root, nor a symlink's target.
        assert!(!message.contains(&at(&outside)) || given.contains(&at(&outside)), "{message}");
        assert!(!message.contains("root/") || given.contains("root"), "{message}");
    }

    // A server that needs a token and has no root takes no workdir at all.
    let exposed = WorkdirPolicy::new(&[], true).unwrap();
    let message = invalid(exposed.check(&at(&root)));
    assert!(message.contains("--workdir-root"), "{message}");
    // A loopback server without roots takes any existing absolute directory.
    let local = WorkdirPolicy::new(&[], false).unwrap();
    assert_eq!(local.check(&at(&outside)).unwrap().root, None);
    assert!(local.check("relative").is_err());

    // Orbit's data directory is never a workdir.
    let data = WorkdirPolicy::new(&[], false).unwrap().excluding_data_dir(&root);
    let message = invalid(data.check(&at(&root.join("proj"))));
    assert!(message.contains("data directory"), "{message}");
    assert!(data.check(&at(&outside)).is_ok());

    assert!(WorkdirPolicy::new(&[dir.path().join("nowhere")], false).is_err());
    assert!(WorkdirPolicy::new(&[root.join("file.txt")], false).is_err());
}

#[tokio::test]
async fn worktrees_of_a_workdir_live_in_its_repository_under_an_ignored_folder() {
    let dir = tempfile::tempdir().unwrap();
    let repo = user_repo(dir.path());
    let before = refs(&repo);
    // The workdir is a subfolder: the worktree's session works in the same subfolder.
    let workdir = users(repo.join("src"), None, &dir.path().join("data"));
    let id = orbit_store::SessionId::new().to_string();
    let made = worktree::create(&workdir, &id, Some("orbit/feature")).await.unwrap();
    let top = repo.canonicalize().unwrap();
    assert_eq!(made.path, top.join(".orbit/worktrees/bot").join(&id));
    assert_eq!(
        std::fs::read_to_string(made.path.join("src/lib.txt")).unwrap(),
        "the user's code\n"
    );
    assert_eq!(worktree::cwd_of(&workdir, &id).await.unwrap(), made.path.join("src"));
    assert_eq!(
        git(&repo, &["status", "--porcelain", "--ignored=no"]),
        "",
        "the user's status is clean"
    );
    assert_eq!(git(&repo, &["rev-parse", "--abbrev-ref", "HEAD"]).trim(), "main");
    let listed = worktree::list(&workdir).await.unwrap();
    assert_eq!(listed.len(), 1, "only Orbit's worktrees: {listed:?}");
    assert_eq!(listed[0].branch.as_deref(), Some("orbit/feature"));

    // The user's own branches cannot be taken.
    for taken in ["main", "users-feature"] {
        let other = orbit_store::SessionId::new().to_string();
        let err = worktree::create(&workdir, &other, Some(taken)).await.unwrap_err();
        assert!(matches!(err, Error::BranchExists(_)), "{taken}: {err}");
    }
    // One asked for without a branch gets a branch of Orbit's, so commits outlive it.
    let detached = orbit_store::SessionId::new().to_string();
    let unnamed = worktree::create(&workdir, &detached, None).await.unwrap();
    assert_eq!(unnamed.branch, Some(format!("orbit/{detached}")));

    // Removing them removes Orbit's unmoved branch and nothing of the user's.
    worktree::remove(&workdir, &id).await.unwrap();
    worktree::remove(&workdir, &detached).await.unwrap();
    assert!(!made.path.exists());
    assert_eq!(refs(&repo), before, "the user's branches as they were, Orbit's gone");
    assert_eq!(git(&repo, &["status", "--porcelain", "--ignored=no"]), "");
    assert_eq!(git(&repo, &["worktree", "list", "--porcelain"]).matches("worktree ").count(), 1);

    // A branch the agent committed on is its work: the worktree goes, the branch stays.
    let worked = orbit_store::SessionId::new().to_string();
    let made = worktree::create(&workdir, &worked, Some("orbit/work")).await.unwrap();
    std::fs::write(made.path.join("new.txt"), "agent's work").unwrap();
    git(&made.path, &["add", "."]);
    git(&made.path, &["commit", "--quiet", "-m", "work"]);
    worktree::remove(&workdir, &worked).await.unwrap();
    assert!(refs(&repo).contains("refs/heads/orbit/work"));
    assert_eq!(git(&repo, &["status", "--porcelain", "--ignored=no"]), "");
}

#[tokio::test]
async fn a_workdir_outside_a_repository_has_no_worktrees() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain");
    std::fs::create_dir_all(&plain).unwrap();
    let workdir = users(plain.clone(), None, &dir.path().join("data"));
    let id = orbit_store::SessionId::new().to_string();
    let err = worktree::create(&workdir, &id, None).await.unwrap_err();
    assert!(
        matches!(err, Error::Invalid(ref m) if m.contains("not inside a git repository")),
        "{err}"
    );
    assert!(worktree::list(&workdir).await.unwrap().is_empty());
    assert_eq!(std::fs::read_dir(&plain).unwrap().count(), 0, "nothing was made there");

    // A root inside a larger repository does not open that repository: git looks no higher
    // than the root.
    let outer = user_repo(dir.path());
    let root = outer.join("src");
    let inside = users(root.clone(), Some(root.canonicalize().unwrap()), &dir.path().join("data"));
    let err = worktree::create(&inside, &id, None).await.unwrap_err();
    assert!(matches!(err, Error::Invalid(_)), "{err}");
    assert!(!outer.join(".orbit").exists());

    // A repository without a commit gets none from Orbit.
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    git(&empty, &["init", "--quiet"]);
    let workdir = users(empty.clone(), None, &dir.path().join("data"));
    let err = worktree::create(&workdir, &id, None).await.unwrap_err();
    assert!(matches!(err, Error::Invalid(ref m) if m.contains("no commit")), "{err}");
    let mut head = Command::new("git");
    let head = head.arg("-C").arg(&empty).args(["rev-parse", "--verify", "HEAD"]);
    assert!(!head.output().unwrap().status.success(), "Orbit made no commit there");
}
