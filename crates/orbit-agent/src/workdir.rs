//! Which directories of the user's an agent may be given as its `workdir`.
//!
//! A workdir is where a CLI runs and, in `allow-all` mode, writes and executes, so whoever
//! may set one (any client holding the API token) would otherwise choose any directory the
//! server's user can reach. A server started with workdir roots accepts a workdir only
//! inside one of them; a server reachable from other machines (one that needs a token)
//! accepts none until it has a root. Paths are compared canonically (symlinks, `..`, `//`
//! and trailing slashes resolved), so neither a symlink inside a root nor an odd spelling
//! leads outside it.
//!
//! Error messages name only the path the client gave, never a root nor where a symlink
//! leads.

use std::path::{Path, PathBuf};

use orbit_store::Workdir;

use crate::{Error, Result};

/// The rule a server applies to every workdir a client sets.
#[derive(Debug, Clone, Default)]
pub struct WorkdirPolicy {
    /// Canonical roots; empty for none.
    roots: Vec<PathBuf>,
    /// Refuse every workdir while there is no root (a server that needs a token).
    roots_required: bool,
    /// The server's data directory, canonical: Orbit's records are never an agent's project.
    data_dir: Option<PathBuf>,
}

/// Why a workdir root could not be used.
#[derive(Debug, thiserror::Error)]
#[error("workdir root '{path}' must be an existing directory: {reason}")]
pub struct RootError {
    pub path: PathBuf,
    pub reason: String,
}

impl WorkdirPolicy {
    /// A policy of `roots` (each an existing directory, made canonical here);
    /// `roots_required` refuses every workdir when `roots` is empty.
    pub fn new(roots: &[PathBuf], roots_required: bool) -> Result<Self, RootError> {
        let canonical = roots
            .iter()
            .map(|root| {
                let refuse = |reason: String| RootError { path: root.clone(), reason };
                let path = std::fs::canonicalize(root).map_err(|err| refuse(err.to_string()))?;
                if path.is_dir() { Ok(path) } else { Err(refuse("not a directory".into())) }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { roots: canonical, roots_required, data_dir: None })
    }

    /// Refuses, besides, every workdir inside `data_dir` (the server's data directory, where
    /// Orbit keeps its records and the agents' default workspaces).
    pub fn excluding_data_dir(mut self, data_dir: &Path) -> Self {
        self.data_dir = std::fs::canonicalize(data_dir).ok();
        self
    }

    /// Checks a workdir a client gave: absolute, bounded, no NUL, an existing directory,
    /// inside a root when there are roots. Returns it as given, with the root it lies in.
    pub fn check(&self, given: &str) -> Result<Workdir> {
        let invalid = |reason: &str| Err(Error::Invalid(format!("workdir {given:?} {reason}")));
        orbit_store::limits::check_len("workdir", given, orbit_store::limits::WORKDIR)?;
        if given.contains('\0') {
            return invalid("contains a NUL character");
        }
        let path = Path::new(given);
        if !path.is_absolute() {
            return invalid("is not an absolute path");
        }
        if self.roots.is_empty() && self.roots_required {
            return Err(Error::Invalid(
                "this server needs an API token (it listens beyond loopback), so it accepts a workdir only inside a directory given with --workdir-root (ORBIT_WORKDIR_ROOTS), and it has none".into(),
            ));
        }
        let canonical = match std::fs::canonicalize(path) {
            Ok(canonical) => canonical,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return invalid("does not exist");
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotADirectory => {
                return invalid("is not a directory");
            }
            Err(_) => return invalid("cannot be read"),
        };
        if !canonical.is_dir() {
            return invalid("is not a directory");
        }
        if self.data_dir.as_ref().is_some_and(|data| canonical.starts_with(data)) {
            return invalid(
                "is inside the server's data directory, which holds Orbit's own records (an agent without a workdir works in its workspace there)",
            );
        }
        if self.roots.is_empty() {
            return Ok(Workdir { path: path.to_path_buf(), root: None });
        }
        match self.roots.iter().find(|root| canonical.starts_with(root)) {
            Some(root) => Ok(Workdir { path: path.to_path_buf(), root: Some(root.clone()) }),
            None => invalid(
                "is outside every workdir root of this server (--workdir-root); a symlink is judged by where it leads",
            ),
        }
    }
}
