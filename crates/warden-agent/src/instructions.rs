//! A repository's instruction files: CLAUDE.md, .claude/CLAUDE.md, CLAUDE.local.md and their
//! `@path` imports, or AGENTS.md where the repository has no CLAUDE.md.
//!
//! The rules, precisely:
//!
//! * **Which directories.** Every directory from the repository root down to the working
//!   directory (both resolved; the working directory must lie inside the root), root first.
//!   Directories below the working directory are not read.
//! * **Which files, per directory.** `CLAUDE.md`, then `.claude/CLAUDE.md` (both when both
//!   exist), then `CLAUDE.local.md`. Parts are concatenated root first, each labelled with its
//!   path, so a deeper file comes later and refines an earlier one.
//! * **AGENTS.md.** Only when no directory on that path has a `CLAUDE.md` or
//!   `.claude/CLAUDE.md` (a `CLAUDE.local.md` is personal and does not count): then every
//!   `AGENTS.md` from root to leaf is loaded in the place of CLAUDE.md, root first, so the
//!   closest one comes last and wins where they disagree (the AGENTS.md convention). AGENTS.md
//!   is plain Markdown: `@` in it is not an import. When CLAUDE.md exists, an AGENTS.md that no
//!   CLAUDE.md imports is reported as not loaded.
//! * **Imports.** See [`imports`] for the syntax. A path is resolved relative to the importing
//!   file; `~/...` against the home directory; an absolute path must lie inside the
//!   repository. After symlinks are resolved a file must stay inside its zone: the repository
//!   for directory files, relative and absolute imports, the home directory for `~/` imports
//!   and for relative imports made by a file in the home directory. Imports nest at most
//!   [`MAX_IMPORT_DEPTH`] hops below a directory file. An import of a file already on the
//!   chain is a cycle: reported, not followed. A file already loaded elsewhere is not loaded
//!   twice. Missing files, refused paths and the depth limit are warnings.
//! * **Symlinks.** A directory file that resolves outside the repository is refused.
//! * **Sizes.** A file keeps its first [`MAX_FILE_BYTES`]; all parts together at most
//!   [`MAX_TOTAL_BYTES`]; a cut part ends with a marker and a warning says what was cut. A
//!   file is hashed whole (up to 64 MiB, beyond which it is not read), and every file read is
//!   listed in [`Instructions::files`] with its SHA-256 for trust pinning.
//! * **Text.** A UTF-8 byte order mark is dropped; invalid UTF-8 is replaced, with a warning.
//!
//! Nothing here fails on a bad file: only an unusable repository root or working directory
//! is an error.

pub(crate) mod files;
pub mod imports;

use std::collections::HashSet;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;

pub use files::{FileDigest, LoadedFile};
use files::{cut_at_char_boundary, inside, normalize, read_capped};

/// A single instruction file keeps at most this many bytes.
pub const MAX_FILE_BYTES: usize = 256 * 1024;
/// All instruction parts together keep at most this many bytes.
pub const MAX_TOTAL_BYTES: usize = 1024 * 1024;
/// How many hops of `@` imports below a directory file are followed.
pub const MAX_IMPORT_DEPTH: usize = 4;

/// Something wrong with a file that warden skipped or cut, never fatal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    /// The file the warning is about.
    pub path: PathBuf,
    /// What is wrong and what warden did, naming the rule or field.
    pub message: String,
}

impl Warning {
    pub fn new(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Warning {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.message)
    }
}

/// The only failures: the places to read from are unusable.
#[derive(Debug, thiserror::Error)]
pub enum InstructionsError {
    #[error("repository root {path}: {source} (pass an existing directory)")]
    RepoRoot { path: PathBuf, source: io::Error },
    #[error("working directory {path}: {source}")]
    WorkingDir { path: PathBuf, source: io::Error },
    #[error(
        "working directory {working_dir} is not inside the repository {repo_root} (run from inside it, or pass the repository that contains it)"
    )]
    WorkingDirOutside {
        working_dir: PathBuf,
        repo_root: PathBuf,
    },
}

/// Where instruction files are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstructionSource {
    pub repo_root: PathBuf,
    pub working_dir: PathBuf,
    /// For `~/` imports; none means they are refused.
    pub home: Option<PathBuf>,
}

impl InstructionSource {
    /// The repository containing `working_dir` (see [`find_repo_root`], or `working_dir` itself
    /// outside any repository), with the home directory from `$HOME`.
    pub fn for_working_dir(working_dir: &Path) -> Self {
        InstructionSource {
            repo_root: find_repo_root(working_dir).unwrap_or_else(|| working_dir.to_path_buf()),
            working_dir: working_dir.to_path_buf(),
            home: std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .map(PathBuf::from),
        }
    }
}

impl InstructionSource {
    /// What a command's `--repo DIR` (or its absence) and current directory mean: with a
    /// repository, its canonical root, and the current directory as the working directory if
    /// it lies inside, else the root; without, the git top level of the current directory, or
    /// the current directory itself, with a note saying so. Errors name `--repo`.
    pub fn resolve(repo: Option<&Path>, cwd: &Path) -> Result<(Self, Option<String>), String> {
        let home = std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from);
        let mut note = None;
        let (repo_root, working_dir) = match repo {
            Some(repo) => {
                let root = repo
                    .canonicalize()
                    .map_err(|e| format!("--repo {}: {e}", repo.display()))?;
                if !root.is_dir() {
                    return Err(format!("--repo {}: not a directory", repo.display()));
                }
                let wd = match cwd.canonicalize() {
                    Ok(c) if c.starts_with(&root) => c,
                    _ => root.clone(),
                };
                (root, wd)
            }
            None => match find_repo_root(cwd) {
                Some(root) => (root, cwd.to_path_buf()),
                None => {
                    note = Some(format!(
                        "{} is not inside a git repository: reading it as the repository root",
                        cwd.display()
                    ));
                    (cwd.to_path_buf(), cwd.to_path_buf())
                }
            },
        };
        Ok((
            InstructionSource {
                repo_root,
                working_dir,
                home,
            },
            note,
        ))
    }
}

/// The git top level of `dir`: the nearest directory at or above it holding `.git` (a
/// directory, or the file of a worktree or submodule).
pub fn find_repo_root(dir: &Path) -> Option<PathBuf> {
    let start = dir.canonicalize().ok()?;
    start
        .ancestors()
        .find(|d| d.join(".git").symlink_metadata().is_ok())
        .map(Path::to_path_buf)
}

/// What kind of file a part came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PartKind {
    /// `CLAUDE.md` or `.claude/CLAUDE.md`.
    Project,
    /// `CLAUDE.local.md`.
    Local,
    /// `AGENTS.md` (no CLAUDE.md in the repository).
    Agents,
    /// A file named by an `@` import.
    Import,
}

/// One instruction file's text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstructionPart {
    /// The path as named: below the repository root, or the home directory for `~/` imports.
    pub path: PathBuf,
    pub text: String,
    /// The file whose `@` import brought this one in.
    pub imported_from: Option<PathBuf>,
    pub kind: PartKind,
    /// Import hops below the directory file (0 for directory files).
    pub depth: usize,
    /// Whether `text` holds only the beginning of the file.
    pub truncated: bool,
}

/// Everything the instruction files of a repository say, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Instructions {
    pub repo_root: PathBuf,
    pub working_dir: PathBuf,
    /// The home directory `~/` imports were resolved against.
    pub home: Option<PathBuf>,
    pub parts: Vec<InstructionPart>,
    pub warnings: Vec<Warning>,
    /// Every file read, with the SHA-256 of its bytes, in reading order.
    pub files: Vec<FileDigest>,
}

impl Instructions {
    /// The files that brought `part` in, nearest first (empty for a directory file).
    pub fn import_chain<'a>(&'a self, part: &'a InstructionPart) -> Vec<&'a Path> {
        let mut chain = Vec::new();
        let mut from = part.imported_from.as_deref();
        while let Some(p) = from {
            if chain.contains(&p) || chain.len() > MAX_IMPORT_DEPTH {
                break;
            }
            chain.push(p);
            from = self
                .parts
                .iter()
                .find(|q| q.path == p)
                .and_then(|q| q.imported_from.as_deref());
        }
        chain
    }

    /// `path` for people: relative to the repository root, or `~/...`, or as is.
    pub fn display_path(&self, path: &Path) -> String {
        display_path(path, &self.repo_root, self.home.as_deref())
    }

    /// The text for the model: every part in order, each labelled with its path.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for part in &self.parts {
            out.push_str(&format!(
                "<instructions path=\"{}\"",
                self.display_path(&part.path)
            ));
            if let Some(from) = &part.imported_from {
                out.push_str(&format!(" imported-from=\"{}\"", self.display_path(from)));
            }
            out.push_str(">\n");
            out.push_str(part.text.trim_end());
            out.push_str("\n</instructions>\n\n");
        }
        out
    }
}

/// `path` relative to `root` when inside it, `~/...` inside `home`, else as is.
pub fn display_path(path: &Path, root: &Path, home: Option<&Path>) -> String {
    if let Ok(rel) = path.strip_prefix(root) {
        if rel.as_os_str().is_empty() {
            return ".".into();
        }
        return rel.display().to_string();
    }
    if let Some(rel) = home.and_then(|h| path.strip_prefix(h).ok()) {
        return format!("~/{}", rel.display());
    }
    path.display().to_string()
}

/// Reads the instruction files of `source` (see the module documentation for the rules).
pub fn load_instructions(source: &InstructionSource) -> Result<Instructions, InstructionsError> {
    let root = source
        .repo_root
        .canonicalize()
        .and_then(|r| {
            if r.is_dir() {
                Ok(r)
            } else {
                Err(io::Error::new(
                    io::ErrorKind::NotADirectory,
                    "not a directory",
                ))
            }
        })
        .map_err(|e| InstructionsError::RepoRoot {
            path: source.repo_root.clone(),
            source: e,
        })?;
    let cwd = source
        .working_dir
        .canonicalize()
        .map_err(|e| InstructionsError::WorkingDir {
            path: source.working_dir.clone(),
            source: e,
        })?;
    let rel = cwd
        .strip_prefix(&root)
        .map_err(|_| InstructionsError::WorkingDirOutside {
            working_dir: cwd.clone(),
            repo_root: root.clone(),
        })?
        .to_path_buf();
    let home = source.home.as_deref().map(|h| {
        let named = normalize(h);
        let real = h.canonicalize().unwrap_or_else(|_| named.clone());
        (named, real)
    });

    let mut dirs = vec![root.clone()];
    let mut d = root.clone();
    for c in rel.components() {
        d.push(c);
        dirs.push(d.clone());
    }

    let project_names = [Path::new("CLAUDE.md"), Path::new(".claude/CLAUDE.md")];
    let has_claude = dirs.iter().any(|d| {
        project_names
            .iter()
            .any(|n| d.join(n).symlink_metadata().is_ok())
    });

    // Instruction files go into the model's prompt: never a secret. The same blocklist as
    // the sandbox's, for the home directory as named and as resolved.
    let homes: Vec<PathBuf> = home
        .iter()
        .flat_map(|(named, real)| [named.clone(), real.clone()])
        .collect();
    let mut loader = Loader {
        root: root.clone(),
        home,
        blocklist: warden_policy::blocklist::expand(&homes),
        loaded: HashSet::new(),
        total: 0,
        parts: Vec::new(),
        warnings: Vec::new(),
        files: Vec::new(),
    };
    for dir in &dirs {
        if has_claude {
            for name in project_names {
                loader.directory_file(&dir.join(name), PartKind::Project);
            }
        } else {
            loader.directory_file(&dir.join("AGENTS.md"), PartKind::Agents);
        }
        loader.directory_file(&dir.join("CLAUDE.local.md"), PartKind::Local);
    }
    if has_claude {
        for dir in &dirs {
            let agents = dir.join("AGENTS.md");
            let loaded = agents
                .canonicalize()
                .is_ok_and(|real| loader.loaded.contains(&real));
            if agents.is_file() && !loaded {
                loader.warnings.push(Warning::new(
                    agents,
                    "not loaded: the repository has CLAUDE.md, which takes precedence over AGENTS.md (write `@AGENTS.md` in CLAUDE.md to load both)",
                ));
            }
        }
    }
    let home = loader.home.map(|(named, _)| named);
    Ok(Instructions {
        repo_root: root,
        working_dir: cwd,
        home,
        parts: loader.parts,
        warnings: loader.warnings,
        files: loader.files,
    })
}

/// Where a file may lie once symlinks are resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Zone {
    Repo,
    Home,
}

#[derive(Debug)]
struct Loader {
    root: PathBuf,
    /// The home directory as named and as resolved.
    home: Option<(PathBuf, PathBuf)>,
    /// The sensitive-path blocklist: never imported.
    blocklist: Vec<PathBuf>,
    /// Resolved paths of the files already loaded.
    loaded: HashSet<PathBuf>,
    total: usize,
    parts: Vec<InstructionPart>,
    warnings: Vec<Warning>,
    files: Vec<FileDigest>,
}

/// A file on the current import chain.
#[derive(Debug)]
struct ChainLink {
    named: PathBuf,
    real: PathBuf,
    zone: Zone,
}

impl Loader {
    fn directory_file(&mut self, named: &Path, kind: PartKind) {
        if named.symlink_metadata().is_err() {
            return;
        }
        let real = match named.canonicalize() {
            Ok(r) => r,
            Err(e) => {
                self.warn(named, format!("not loaded: {e}"));
                return;
            }
        };
        if !inside(&real, &self.root) {
            self.warn(
                named,
                format!(
                    "not loaded: it is a symlink to {}, outside the repository (instruction files load only from the repository)",
                    real.display()
                ),
            );
            return;
        }
        let mut chain = Vec::new();
        self.load(
            named.to_path_buf(),
            real,
            kind,
            None,
            Zone::Repo,
            &mut chain,
        );
    }

    fn warn(&mut self, path: &Path, message: impl Into<String>) {
        self.warnings.push(Warning::new(path, message));
    }

    fn load(
        &mut self,
        named: PathBuf,
        real: PathBuf,
        kind: PartKind,
        imported_from: Option<PathBuf>,
        zone: Zone,
        chain: &mut Vec<ChainLink>,
    ) {
        if !self.loaded.insert(real.clone()) {
            return;
        }
        let remaining = MAX_TOTAL_BYTES.saturating_sub(self.total);
        if remaining == 0 {
            self.warn(
                &named,
                format!(
                    "not loaded: the instruction files already reached the total limit of {MAX_TOTAL_BYTES} bytes"
                ),
            );
            return;
        }
        let file = match read_capped(&named, &real, MAX_FILE_BYTES) {
            Ok(f) => f,
            Err(e) => {
                self.warn(&named, format!("not loaded: {e}"));
                return;
            }
        };
        let mut text = file.text;
        if let Some(stripped) = text.strip_prefix('\u{feff}') {
            text = stripped.to_string();
        }
        if file.lossy {
            self.warn(
                &named,
                "not valid UTF-8: the invalid bytes were replaced with U+FFFD",
            );
        }
        let mut truncated = false;
        if let Some(size) = file.truncated_from {
            truncated = true;
            self.warn(
                &named,
                format!(
                    "truncated: the file is {size} bytes and only the first {MAX_FILE_BYTES} (the per-file limit) are used"
                ),
            );
        }
        if text.len() > remaining {
            truncated = true;
            let len = text.len();
            cut_at_char_boundary(&mut text, remaining);
            self.warn(
                &named,
                format!(
                    "truncated: {len} bytes of text but only {} remain of the total limit of {MAX_TOTAL_BYTES} bytes for instruction files",
                    text.len()
                ),
            );
        }
        self.total += text.len();
        if truncated {
            text.push_str(
                "\n\n[warden: the rest of this file was cut: it is longer than the instruction size limit]\n",
            );
        }
        self.files.push(file.digest);
        let depth = chain.len();
        let imports = if kind == PartKind::Agents {
            Vec::new()
        } else {
            imports::find_imports(&text)
        };
        self.parts.push(InstructionPart {
            path: named.clone(),
            text,
            imported_from,
            kind,
            depth,
            truncated,
        });
        if imports.is_empty() {
            return;
        }
        chain.push(ChainLink {
            named: named.clone(),
            real,
            zone,
        });
        for (line, raw) in imports {
            self.import(&named, line, &raw, chain);
        }
        chain.pop();
    }

    /// Follows the import `raw` written at `line` of `from` (the last link of `chain`).
    fn import(&mut self, from: &Path, line: usize, raw: &str, chain: &mut Vec<ChainLink>) {
        let Some(link) = chain.last() else { return };
        let from_zone = link.zone;
        let at = |msg: String| format!("line {line}: import @{raw}: {msg}");
        let (named, zone) = if let Some(rest) = raw.strip_prefix("~/") {
            let Some((home, _)) = &self.home else {
                self.warn(
                    from,
                    at("not followed: no home directory is known for `~/`".into()),
                );
                return;
            };
            (normalize(&home.join(rest)), Zone::Home)
        } else if raw.starts_with('~') {
            self.warn(
                from,
                at("not followed: only `~/` (your own home directory) is supported".into()),
            );
            return;
        } else if Path::new(raw).is_absolute() {
            (normalize(Path::new(raw)), Zone::Repo)
        } else {
            let dir = from.parent().unwrap_or(Path::new("/"));
            (normalize(&dir.join(raw)), from_zone)
        };
        let real = match named.canonicalize() {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.warn(
                    from,
                    at(format!("missing file {}: not loaded", named.display())),
                );
                return;
            }
            Err(e) => {
                self.warn(from, at(format!("{}: {e}: not loaded", named.display())));
                return;
            }
        };
        let (zone_root, zone_name) = match zone {
            Zone::Repo => (self.root.clone(), "the repository"),
            Zone::Home => match &self.home {
                Some((_, real_home)) => (real_home.clone(), "your home directory"),
                None => return,
            },
        };
        if !inside(&real, &zone_root) {
            let why = if Path::new(raw).is_absolute() {
                "absolute imports must lie inside the repository"
            } else {
                "it resolves (through `..` or a symlink) outside"
            };
            self.warn(
                from,
                at(format!(
                    "refused: {} is outside {zone_name}; {why}",
                    real.display()
                )),
            );
            return;
        }
        // Never a secret, whatever the import says (`@~/.ssh/id_rsa`, `@~/.aws/credentials`,
        // or a symlink in the repository pointing there).
        if let Some(blocked) = warden_policy::blocklist::covering(&self.blocklist, &real) {
            self.warn(
                from,
                at(format!(
                    "refused: {} is on the sensitive-path blocklist ({}); instruction files never import secrets",
                    real.display(),
                    blocked.display()
                )),
            );
            return;
        }
        if let Some(pos) = chain.iter().position(|l| l.real == real) {
            let mut names: Vec<String> = chain[pos..]
                .iter()
                .map(|l| display_path(&l.named, &self.root, self.home_named()))
                .collect();
            names.push(display_path(&named, &self.root, self.home_named()));
            self.warn(
                from,
                at(format!("import cycle {}: not followed", names.join(" -> "))),
            );
            return;
        }
        if chain.len() > MAX_IMPORT_DEPTH {
            self.warn(
                from,
                at(format!(
                    "not followed: imports nest at most {MAX_IMPORT_DEPTH} hops deep"
                )),
            );
            return;
        }
        self.load(
            named,
            real,
            PartKind::Import,
            Some(from.to_path_buf()),
            zone,
            chain,
        );
    }

    fn home_named(&self) -> Option<&Path> {
        self.home.as_ref().map(|(n, _)| n.as_path())
    }
}

#[cfg(test)]
mod tests;
