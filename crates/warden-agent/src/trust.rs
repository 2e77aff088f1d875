//! Trust in a repository's instruction files: pinned on first use, checked on every run, and
//! loaded only from the primary repository.
//!
//! The rules, precisely:
//!
//! * **What is pinned.** Every file that can instruct the model or widen what it may do
//!   ([`collect`]): each file in [`Instructions::files`] (CLAUDE.md, .claude/CLAUDE.md,
//!   CLAUDE.local.md, AGENTS.md and their `@` imports), every valid skill's SKILL.md and all
//!   its listed supporting files (scripts, references, assets), every valid subagent file, and
//!   `.claude/settings.json` and `.claude/settings.local.json` (they grant permissions). A
//!   file is pinned under its path relative to the repository (`/`-separated), or `~/...`
//!   for an import from the home directory, with the SHA-256 of all its bytes and the first
//!   [`MAX_PINNED_CONTENT`] bytes of its text (at most [`MAX_PINNED_TOTAL`] for the whole
//!   repository), so that a later change can be shown as a diff.
//! * **Repository identity.** The canonical path of the repository root ([`RepoIdentity`]):
//!   the one thing a repository's own content cannot forge. The `origin` remote URL (read
//!   from the git config file, never by running git, and without any user or password in it)
//!   is recorded beside the pins and is part of what is checked: a changed remote needs
//!   approval like a changed file. It is not part of the key, so rewriting `.git/config`
//!   cannot reset trust to a silent first use.
//! * **First use** pins silently ([`check_and_pin`] reports "pinned N files"), an empty set
//!   included: adding a CLAUDE.md to a repository pinned with none is a change.
//! * **Later runs.** A file loaded now but not pinned is *added*; one whose SHA-256 differs is
//!   *modified*; a pinned repository file that no longer exists is *removed* (removing
//!   `.claude/settings.json` drops its deny rules). A pinned file that still exists but was not
//!   loaded this run (a CLAUDE.md below another working directory) is left alone. Any change
//!   is [`TrustError::Changed`], with a unified diff per file, and the run stops until
//!   [`accept`] (`warden trust`, or the API) pins the current files.
//! * **Files read later** (a skill's body or supporting file, read when the model uses it):
//!   [`TrustReport::verify_loaded`] checks the digest against the pins; an unpinned or changed
//!   file is refused.
//! * **Fail closed.** A file that cannot be read, changes while it is read, or lies outside
//!   the repository and the home directory stops the run; so does a store file that cannot be
//!   parsed or is writable by others. Nothing is ever trusted because its record is missing
//!   or broken, except on a first use, when there is no record at all.
//!
//! [`primary`] decides whether a directory's instruction files may load at all (only the
//! primary repository's), and [`signature`] verifies detached signatures where the policy
//! asks for them. The agent runs, before any model call: [`collect`], then
//! [`signature::verify_signatures`], then [`check_and_pin`].

mod diff;
pub mod primary;
pub mod signature;
pub mod store;

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::instructions::files::{cut_at_char_boundary, inside, read_capped};
use crate::instructions::{FileDigest, Instructions, LoadedFile};
use crate::permissions::SETTINGS_FILES;
use crate::skills::SkillSet;
use crate::subagents::SubagentSet;

pub use diff::{ChangeKind, FileChange, RemoteChange, render_changes};
pub use primary::{NotPrimary, is_primary, primary_check};
pub use signature::{
    AllowedSigner, SignatureError, SignaturePolicy, SignatureReport, verify_signatures,
};
pub use store::{FileTrustStore, MemoryTrustStore, TrustStore};

/// Bytes of one file's text kept in the store, for diffs.
pub const MAX_PINNED_CONTENT: usize = 64 * 1024;
/// Bytes of text kept for one repository; files past it are pinned by hash only.
pub const MAX_PINNED_TOTAL: usize = 8 * 1024 * 1024;
/// The version of the store's record format.
pub const PIN_FORMAT_VERSION: u32 = 1;

/// Why a file is pinned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FileRole {
    /// CLAUDE.md, AGENTS.md and their imports.
    Instructions,
    /// A skill's SKILL.md.
    Skill,
    /// A supporting file of a skill.
    SkillFile,
    /// A subagent definition.
    Subagent,
    /// `.claude/settings.json` or `.claude/settings.local.json`.
    Settings,
}

impl fmt::Display for FileRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileRole::Instructions => "instructions",
            FileRole::Skill => "skill",
            FileRole::SkillFile => "skill-file",
            FileRole::Subagent => "subagent",
            FileRole::Settings => "settings",
        })
    }
}

/// A file as read now, ready to be compared with its pin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedFile {
    /// The path relative to the repository root with `/` separators, or `~/...` for a file
    /// imported from the home directory. The key of the pin.
    pub key: String,
    /// The absolute path as named.
    pub path: PathBuf,
    pub role: FileRole,
    /// SHA-256 of every byte of the file.
    pub sha256: [u8; 32],
    /// The first [`MAX_PINNED_CONTENT`] bytes of its text (invalid UTF-8 replaced).
    pub text: String,
    /// Whether `text` is only the beginning of the file.
    pub text_truncated: bool,
    /// Whether the file is not valid UTF-8.
    pub lossy: bool,
}

impl TrustedFile {
    pub fn sha256_hex(&self) -> String {
        hex(&self.sha256)
    }

    fn from_loaded(key: String, role: FileRole, loaded: LoadedFile) -> TrustedFile {
        let mut text = loaded.text;
        let mut truncated = loaded.truncated_from.is_some();
        if text.len() > MAX_PINNED_CONTENT {
            cut_at_char_boundary(&mut text, MAX_PINNED_CONTENT);
            truncated = true;
        }
        TrustedFile {
            key,
            path: loaded.digest.path,
            role,
            sha256: loaded.digest.sha256,
            text,
            text_truncated: truncated,
            lossy: loaded.lossy,
        }
    }
}

/// Which repository pins belong to. See the module documentation for why the root path, and
/// not the remote, is the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RepoIdentity {
    /// The canonical repository root.
    pub root: PathBuf,
    /// The `origin` remote's URL without credentials, when the repository has one.
    pub remote: Option<String>,
}

impl RepoIdentity {
    /// The identity of the repository at `root` (resolved here).
    pub fn of(root: &Path) -> Result<RepoIdentity, TrustError> {
        let root = root.canonicalize().map_err(|source| TrustError::RepoRoot {
            path: root.to_path_buf(),
            source,
        })?;
        if !root.is_dir() {
            return Err(TrustError::RepoRoot {
                path: root,
                source: io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
            });
        }
        let remote = origin_url(&root);
        Ok(RepoIdentity { root, remote })
    }

    /// The store's name for this repository: 32 hex digits of the SHA-256 of the root path.
    pub fn id(&self) -> String {
        use sha2::{Digest, Sha256};
        use std::os::unix::ffi::OsStrExt;
        let digest = Sha256::digest(self.root.as_os_str().as_bytes());
        hex(&digest[..16])
    }
}

/// One pinned file, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pin {
    pub role: FileRole,
    /// 64 lowercase hex digits.
    pub sha256: String,
    /// The first [`MAX_PINNED_CONTENT`] bytes of the text when they were kept; `None` when the
    /// repository's [`MAX_PINNED_TOTAL`] was reached (the file is pinned by hash only).
    pub content: Option<String>,
    /// Whether `content` is only the beginning of the file.
    #[serde(default)]
    pub content_truncated: bool,
    /// Whether the file is not valid UTF-8 (`content` has U+FFFD for invalid bytes).
    #[serde(default)]
    pub lossy: bool,
}

/// Everything pinned for one repository: what a [`TrustStore`] keeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinSet {
    pub version: u32,
    pub repo_root: PathBuf,
    pub remote: Option<String>,
    /// Seconds since the Unix epoch.
    pub pinned_at: u64,
    pub files: BTreeMap<String, Pin>,
}

impl PinSet {
    /// Pins of `files` for `repo`, keeping text up to the caps.
    pub fn new(repo: &RepoIdentity, files: &[TrustedFile]) -> PinSet {
        let mut set = PinSet {
            version: PIN_FORMAT_VERSION,
            repo_root: repo.root.clone(),
            remote: repo.remote.clone(),
            pinned_at: now(),
            files: BTreeMap::new(),
        };
        for f in files {
            set.files.insert(f.key.clone(), pin_of(f));
        }
        set.apply_total_cap();
        set
    }

    /// Drops stored text, in key order, past [`MAX_PINNED_TOTAL`].
    fn apply_total_cap(&mut self) {
        let mut total = 0usize;
        for pin in self.files.values_mut() {
            if let Some(c) = &pin.content {
                total += c.len();
                if total > MAX_PINNED_TOTAL {
                    pin.content = None;
                }
            }
        }
    }

    /// Checks a record read from a store: it belongs to `repo`, and every key and digest is
    /// well formed. The reason names what is wrong.
    pub fn validate(&self, repo: &RepoIdentity) -> Result<(), String> {
        if self.version != PIN_FORMAT_VERSION {
            return Err(format!(
                "format version {} (this warden reads {PIN_FORMAT_VERSION})",
                self.version
            ));
        }
        if self.repo_root != repo.root {
            return Err(format!(
                "it records the repository {}, not {}",
                self.repo_root.display(),
                repo.root.display()
            ));
        }
        for (key, pin) in &self.files {
            check_key(key).map_err(|r| format!("file {key:?}: {r}"))?;
            if pin.sha256.len() != 64
                || !pin
                    .sha256
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                return Err(format!(
                    "file {key:?}: sha256 {:?} is not 64 lowercase hex digits",
                    pin.sha256
                ));
            }
            if pin
                .content
                .as_ref()
                .is_some_and(|c| c.len() > MAX_PINNED_CONTENT)
            {
                return Err(format!(
                    "file {key:?}: stored content is longer than {MAX_PINNED_CONTENT} bytes"
                ));
            }
        }
        Ok(())
    }
}

fn pin_of(f: &TrustedFile) -> Pin {
    Pin {
        role: f.role,
        sha256: f.sha256_hex(),
        content: Some(f.text.clone()),
        content_truncated: f.text_truncated,
        lossy: f.lossy,
    }
}

/// A pin key must be `~/` plus, or just, a relative path of plain components.
fn check_key(key: &str) -> Result<(), &'static str> {
    let rel = key.strip_prefix("~/").unwrap_or(key);
    if rel.is_empty() {
        return Err("an empty path");
    }
    if rel.contains('\0') {
        return Err("an invalid path");
    }
    let p = Path::new(rel);
    if p.is_absolute() || !p.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err("not a plain relative path");
    }
    Ok(())
}

/// How a check ended without a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TrustOutcome {
    /// Nothing was pinned for the repository: everything is pinned now.
    FirstUse,
    /// Every file loaded matches its pin.
    Unchanged,
    /// The current files were accepted and pinned.
    Accepted,
}

/// A successful check: the run may go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustReport {
    pub repo: RepoIdentity,
    pub outcome: TrustOutcome,
    /// How many files were checked (or pinned).
    pub checked: usize,
    /// The pins in force after the check.
    pub pins: PinSet,
}

impl TrustReport {
    /// One line for the run's log: "pinned 4 files", "4 files match their pins", ...
    pub fn summary(&self) -> String {
        let n = self.checked;
        let files = if n == 1 { "file" } else { "files" };
        match self.outcome {
            TrustOutcome::FirstUse => format!(
                "pinned {n} instruction {files} of {} (first use)",
                self.repo.root.display()
            ),
            TrustOutcome::Unchanged => format!("{n} instruction {files} match their pins"),
            TrustOutcome::Accepted => format!(
                "accepted and pinned {n} instruction {files} of {}",
                self.repo.root.display()
            ),
        }
    }

    /// Checks a file read after the start (a skill's body or supporting file) against the
    /// pins: it must lie in the repository, be pinned, and have the pinned SHA-256.
    /// `text` (what was read) makes the diff when it differs.
    pub fn verify_loaded(&self, digest: &FileDigest, text: Option<&str>) -> Result<(), TrustError> {
        let key = repo_key(&digest.path, &self.repo.root).ok_or_else(|| TrustError::Outside {
            path: digest.path.clone(),
            root: self.repo.root.clone(),
        })?;
        let Some(pin) = self.pins.files.get(&key) else {
            return Err(TrustError::NotPinned {
                path: digest.path.clone(),
                repo: self.repo.root.clone(),
            });
        };
        if pin.sha256 == hex(&digest.sha256) {
            return Ok(());
        }
        let change = match text {
            Some(text) => {
                let mut now_text = text.to_string();
                let truncated = now_text.len() > MAX_PINNED_CONTENT;
                cut_at_char_boundary(&mut now_text, MAX_PINNED_CONTENT);
                let current = TrustedFile {
                    key: key.clone(),
                    path: digest.path.clone(),
                    role: pin.role,
                    sha256: digest.sha256,
                    text: now_text,
                    text_truncated: truncated,
                    lossy: false,
                };
                diff::modified(&key, pin, &current)
            }
            None => FileChange {
                path: key.clone(),
                kind: ChangeKind::Modified,
                role: pin.role,
                pinned_sha256: Some(pin.sha256.clone()),
                current_sha256: Some(hex(&digest.sha256)),
                diff: String::new(),
                truncated: Some("the text read now was not given: only the hashes differ".into()),
            },
        };
        Err(TrustError::Changed {
            repo: self.repo.root.clone(),
            diffs: vec![change],
            remote: None,
        })
    }
}

/// Why the run may not go on.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("{}", diff::changed_message(repo, diffs, remote.as_ref()))]
    Changed {
        repo: PathBuf,
        diffs: Vec<FileChange>,
        remote: Option<RemoteChange>,
    },
    #[error("repository root {path}: {source}")]
    RepoRoot { path: PathBuf, source: io::Error },
    #[error(
        "the trust store {path}: {source} (nothing is trusted without it; check the data directory's permissions)"
    )]
    Store { path: PathBuf, source: io::Error },
    #[error(
        "the trust store file {path} cannot be used: {reason}. Nothing in the repository is trusted until it is fixed: inspect it, or remove it and run `warden trust` to review and pin the current files again"
    )]
    CorruptStore { path: PathBuf, reason: String },
    #[error(
        "{path} cannot be read for pinning: {reason} (an instruction file that cannot be pinned is not loaded)"
    )]
    Read { path: PathBuf, reason: String },
    #[error(
        "{path} changed while warden was reading it (its SHA-256 differs between two reads); run again once the repository is quiet"
    )]
    Unstable { path: PathBuf },
    #[error(
        "{path} lies outside the repository {root} (and the home directory): it cannot be pinned, so it is not loaded"
    )]
    Outside { path: PathBuf, root: PathBuf },
    #[error(
        "{path} was not pinned for {repo} when the run started, so it is not loaded; run `warden trust --repo {repo}` to review and pin it"
    )]
    NotPinned { path: PathBuf, repo: PathBuf },
}

/// Every file of a repository that must be pinned (see the module documentation), read now,
/// each re-hashed and compared with the digest the loader recorded.
pub fn collect(
    instructions: &Instructions,
    skills: &SkillSet,
    subagents: &SubagentSet,
) -> Result<Vec<TrustedFile>, TrustError> {
    let root = instructions
        .repo_root
        .canonicalize()
        .map_err(|source| TrustError::RepoRoot {
            path: instructions.repo_root.clone(),
            source,
        })?;
    let home = instructions
        .home
        .as_ref()
        .and_then(|h| h.canonicalize().ok());
    let mut out: BTreeMap<String, TrustedFile> = BTreeMap::new();
    let mut add = |f: TrustedFile| -> Result<(), TrustError> {
        match out.get(&f.key) {
            Some(prev) if prev.sha256 != f.sha256 => Err(TrustError::Unstable { path: f.path }),
            Some(_) => Ok(()),
            None => {
                out.insert(f.key.clone(), f);
                Ok(())
            }
        }
    };

    for d in &instructions.files {
        let (key, zone) = if let Some(k) =
            repo_key(&d.path, &instructions.repo_root).or_else(|| repo_key(&d.path, &root))
        {
            (k, root.as_path())
        } else if let Some((k, h)) = home
            .as_deref()
            .and_then(|h| home_key(&d.path, instructions.home.as_deref(), h).map(|k| (k, h)))
        {
            (k, h)
        } else {
            return Err(TrustError::Outside {
                path: d.path.clone(),
                root: root.clone(),
            });
        };
        let loaded = read_confined(&d.path, zone)?;
        if loaded.digest.sha256 != d.sha256 {
            return Err(TrustError::Unstable {
                path: d.path.clone(),
            });
        }
        add(TrustedFile::from_loaded(
            key,
            FileRole::Instructions,
            loaded,
        ))?;
    }

    for skill in &skills.skills {
        let body = skill.load_body().map_err(|e| TrustError::Read {
            path: skill.file.clone(),
            reason: e.to_string(),
        })?;
        let key = in_repo_key(&body.file.digest.path, &root)?;
        add(TrustedFile::from_loaded(key, FileRole::Skill, body.file))?;
        let listed = skill.supporting_files().map_err(|e| TrustError::Read {
            path: skill.dir.clone(),
            reason: e.to_string(),
        })?;
        for f in &listed.files {
            let loaded = skill
                .read_supporting_file(&f.path)
                .map_err(|e| TrustError::Read {
                    path: skill.dir.join(&f.path),
                    reason: e.to_string(),
                })?;
            let key = in_repo_key(&loaded.digest.path, &root)?;
            add(TrustedFile::from_loaded(key, FileRole::SkillFile, loaded))?;
        }
    }

    for agent in &subagents.agents {
        let key = in_repo_key(&agent.file, &root)?;
        let loaded = read_confined(&agent.file, &root)?;
        if loaded.digest.sha256 != agent.digest.sha256 {
            return Err(TrustError::Unstable {
                path: agent.file.clone(),
            });
        }
        add(TrustedFile::from_loaded(key, FileRole::Subagent, loaded))?;
    }

    for name in SETTINGS_FILES {
        let path = root.join(name);
        // What the permission loader reads: a settings file it cannot find is not used.
        match fs::metadata(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            _ => {}
        }
        let loaded = read_confined(&path, &root)?;
        add(TrustedFile::from_loaded(
            (*name).to_string(),
            FileRole::Settings,
            loaded,
        ))?;
    }

    Ok(out.into_values().collect())
}

/// Reads `path` (hashing all of it), refusing anything that resolves outside `zone`.
fn read_confined(path: &Path, zone: &Path) -> Result<LoadedFile, TrustError> {
    let real = path.canonicalize().map_err(|e| TrustError::Read {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    if !inside(&real, zone) {
        return Err(TrustError::Outside {
            path: path.to_path_buf(),
            root: zone.to_path_buf(),
        });
    }
    read_capped(path, &real, MAX_PINNED_CONTENT).map_err(|e| TrustError::Read {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

fn in_repo_key(path: &Path, root: &Path) -> Result<String, TrustError> {
    repo_key(path, root).ok_or_else(|| TrustError::Outside {
        path: path.to_path_buf(),
        root: root.to_path_buf(),
    })
}

/// `path` relative to `root` as a pin key, when it lies inside.
fn repo_key(path: &Path, root: &Path) -> Option<String> {
    let rel = path.strip_prefix(root).ok()?;
    let key = rel.to_str()?.to_string();
    check_key(&key).ok()?;
    Some(key)
}

/// `~/rel` for a file in the home directory (named or resolved).
fn home_key(path: &Path, named_home: Option<&Path>, real_home: &Path) -> Option<String> {
    let rel = named_home
        .and_then(|h| path.strip_prefix(h).ok())
        .or_else(|| path.strip_prefix(real_home).ok())?;
    let key = format!("~/{}", rel.to_str()?);
    check_key(&key).ok()?;
    Some(key)
}

/// The outcome of comparing the current files with the pins, without changing anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustCheck {
    /// The repository has no pins yet.
    NotPinned,
    /// Every file matches.
    Unchanged(PinSet),
    /// Something changed.
    Changed {
        pins: PinSet,
        diffs: Vec<FileChange>,
        remote: Option<RemoteChange>,
    },
}

/// Compares `files` with the pins of `repo`.
pub fn check(
    store: &dyn TrustStore,
    repo: &RepoIdentity,
    files: &[TrustedFile],
) -> Result<TrustCheck, TrustError> {
    let Some(pins) = store.get(repo)? else {
        return Ok(TrustCheck::NotPinned);
    };
    let diffs = diff::compare(&pins, files, |key| gone(&repo.root, key));
    let remote = (pins.remote != repo.remote).then(|| RemoteChange {
        pinned: pins.remote.clone(),
        now: repo.remote.clone(),
    });
    if diffs.is_empty() && remote.is_none() {
        Ok(TrustCheck::Unchanged(pins))
    } else {
        Ok(TrustCheck::Changed {
            pins,
            diffs,
            remote,
        })
    }
}

/// What the agent calls before any model call: pins `files` on first use, passes when they
/// match their pins, and stops with [`TrustError::Changed`] (a diff per file) otherwise.
pub fn check_and_pin(
    store: &dyn TrustStore,
    repo: &RepoIdentity,
    files: &[TrustedFile],
) -> Result<TrustReport, TrustError> {
    match check(store, repo, files)? {
        TrustCheck::NotPinned => {
            let pins = PinSet::new(repo, files);
            store.put(repo, &pins)?;
            Ok(TrustReport {
                repo: repo.clone(),
                outcome: TrustOutcome::FirstUse,
                checked: files.len(),
                pins,
            })
        }
        TrustCheck::Unchanged(pins) => Ok(TrustReport {
            repo: repo.clone(),
            outcome: TrustOutcome::Unchanged,
            checked: files.len(),
            pins,
        }),
        TrustCheck::Changed { diffs, remote, .. } => Err(TrustError::Changed {
            repo: repo.root.clone(),
            diffs,
            remote,
        }),
    }
}

/// Accepts the current files (`warden trust`, the API): pins every file in `files`, drops the
/// pins of repository files that no longer exist, keeps the others (files of other working
/// directories), and records the current remote. A store record that cannot be read is an
/// error here too: remove it to start over.
pub fn accept(
    store: &dyn TrustStore,
    repo: &RepoIdentity,
    files: &[TrustedFile],
) -> Result<TrustReport, TrustError> {
    let mut pins = match store.get(repo)? {
        Some(mut old) => {
            old.files
                .retain(|key, _| key.starts_with("~/") || !gone(&repo.root, key));
            for f in files {
                old.files.insert(f.key.clone(), pin_of(f));
            }
            old.remote = repo.remote.clone();
            old.pinned_at = now();
            old
        }
        None => PinSet::new(repo, files),
    };
    pins.apply_total_cap();
    store.put(repo, &pins)?;
    Ok(TrustReport {
        repo: repo.clone(),
        outcome: TrustOutcome::Accepted,
        checked: files.len(),
        pins,
    })
}

/// Whether the pinned repository file `key` no longer exists (or cannot be looked at: that
/// counts as gone, so it is reported rather than assumed unchanged). Home files are never
/// gone: they are the user's own.
fn gone(root: &Path, key: &str) -> bool {
    if key.starts_with("~/") {
        return false;
    }
    fs::metadata(root.join(key)).is_err()
}

/// The `origin` remote's URL from the repository's git config (a `.git` directory, or a
/// `.git` file naming the git directory, with `commondir` for worktrees), credentials removed.
/// Never runs git: a repository's config can make git run programs.
pub fn origin_url(root: &Path) -> Option<String> {
    let dot_git = root.join(".git");
    let meta = fs::symlink_metadata(&dot_git).ok()?;
    let git_dir = if meta.is_dir() {
        dot_git
    } else if meta.is_file() {
        let text = read_small(&dot_git)?;
        let target = text.lines().next()?.strip_prefix("gitdir:")?.trim();
        let p = Path::new(target);
        let dir = if p.is_absolute() {
            p.to_path_buf()
        } else {
            root.join(p)
        };
        match read_small(&dir.join("commondir")) {
            Some(common) => {
                let c = Path::new(common.trim());
                if c.is_absolute() {
                    c.to_path_buf()
                } else {
                    dir.join(c)
                }
            }
            None => dir,
        }
    } else {
        return None;
    };
    let config = read_small(&git_dir.join("config"))?;
    parse_origin_url(&config).map(|u| strip_credentials(&u))
}

fn read_small(path: &Path) -> Option<String> {
    let meta = fs::metadata(path).ok()?;
    if !meta.is_file() || meta.len() > 1024 * 1024 {
        return None;
    }
    fs::read_to_string(path).ok()
}

/// The `url` of `[remote "origin"]` in a git config file (the last one wins, as in git).
fn parse_origin_url(config: &str) -> Option<String> {
    let mut in_origin = false;
    let mut url = None;
    for line in config.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            let inner = line.trim_start_matches('[').split(']').next().unwrap_or("");
            let mut parts = inner.splitn(2, char::is_whitespace);
            let section = parts.next().unwrap_or("").to_ascii_lowercase();
            let sub = parts.next().unwrap_or("").trim().trim_matches('"');
            in_origin = section == "remote" && sub == "origin";
            continue;
        }
        if !in_origin {
            continue;
        }
        if let Some((k, v)) = line.split_once('=')
            && k.trim().eq_ignore_ascii_case("url")
        {
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v);
            url = Some(v.to_string());
        }
    }
    url
}

/// `scheme://user:secret@host/...` → `scheme://host/...`: a token in a remote URL must never
/// reach the store or a message.
fn strip_credentials(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let authority_end = rest.find('/').unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@') {
            return format!("{scheme}://{}", &rest[at + 1..]);
        }
    }
    url.to_string()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests;
