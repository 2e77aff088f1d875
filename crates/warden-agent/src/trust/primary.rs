//! Instruction files load only from the primary repository: the one the run started in.
//!
//! A directory is primary when, after symlinks are resolved, it lies at or below the primary
//! root and no directory from it up to (not including) the root holds a `.git` (a directory,
//! or the file of a worktree or submodule). Any repository cloned during a run, checked out
//! as a submodule, or `git init`ed below the root is therefore data: its CLAUDE.md, skills,
//! agents and settings never load. So is anything outside the root, such as another checkout
//! in the same workspace. Whatever cannot be resolved is not primary.

use std::path::{Path, PathBuf};

/// Why a directory's instruction files may not load.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotPrimary {
    #[error("{path} cannot be resolved: {reason}")]
    Unresolvable { path: PathBuf, reason: String },
    #[error("{path} lies outside the primary repository {root}")]
    Outside { path: PathBuf, root: PathBuf },
    #[error(
        "{path} is inside another repository (it has {git}), cloned or created below the primary repository {root}: its instruction files are data and never load"
    )]
    NestedRepository {
        path: PathBuf,
        git: PathBuf,
        root: PathBuf,
    },
}

/// Whether instruction files of `candidate` may load in a run whose primary repository is
/// `primary_root`. See [`primary_check`] for the reason when not.
pub fn is_primary(primary_root: &Path, candidate: &Path) -> bool {
    primary_check(primary_root, candidate).is_ok()
}

/// [`is_primary`], with the reason.
pub fn primary_check(primary_root: &Path, candidate: &Path) -> Result<(), NotPrimary> {
    let resolve = |p: &Path| {
        p.canonicalize().map_err(|e| NotPrimary::Unresolvable {
            path: p.to_path_buf(),
            reason: e.to_string(),
        })
    };
    let root = resolve(primary_root)?;
    let real = resolve(candidate)?;
    if !real.starts_with(&root) {
        return Err(NotPrimary::Outside {
            path: candidate.to_path_buf(),
            root,
        });
    }
    for dir in real.ancestors().take_while(|d| *d != root) {
        let git = dir.join(".git");
        // Not followed: a `.git` symlink marks a repository just as well. A `.git` that
        // cannot be looked at is not assumed absent.
        match git.symlink_metadata() {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Ok(_) => {
                return Err(NotPrimary::NestedRepository {
                    path: candidate.to_path_buf(),
                    git,
                    root,
                });
            }
            Err(e) => {
                return Err(NotPrimary::Unresolvable {
                    path: git,
                    reason: e.to_string(),
                });
            }
        }
    }
    Ok(())
}
