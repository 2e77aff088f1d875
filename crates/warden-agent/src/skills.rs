//! Skills: `.claude/skills/<name>/SKILL.md` and `.agents/skills/<name>/SKILL.md` below the
//! repository root, with progressive disclosure.
//!
//! Discovery reads only each SKILL.md's frontmatter (see [`frontmatter`]) and validates it by
//! the Agent Skills rules, plus Claude Code's fields:
//!
//! | field | rule |
//! |---|---|
//! | `name` | 1–64 characters of `a-z 0-9 -`, no hyphen at either end or twice in a row, equal to the directory name. Required in `.agents/skills`; in `.claude/skills` it defaults to the directory name, as in Claude Code |
//! | `description` | required, 1–1024 characters |
//! | `license` | a string |
//! | `compatibility` | 1–500 characters |
//! | `metadata` | a mapping of strings to strings (numbers and booleans are taken as text) |
//! | `allowed-tools`, `disallowed-tools` | tool names separated by spaces or commas (`Bash(git add *)` is one), or a list |
//! | `when_to_use` | 1–1024 characters; joins the description in the system prompt |
//! | `argument-hint`, `model` | strings |
//! | `disable-model-invocation`, `user-invocable` | `true` or `false` (YAML 1.2: `yes` is not a boolean) |
//! | `paths` | glob patterns: a comma-separated string or a list |
//!
//! A skill that breaks a rule is rejected with the file, the field and the rule; an unknown key
//! is only a warning (other tools add fields of their own, and ignoring one cannot widen what a
//! skill may do). The body is read only by [`Skill::load_body`]; supporting files are listed
//! and read on demand, confined to the skill directory. A skill directory or SKILL.md that
//! resolves outside the repository is rejected. When `.claude/skills` and `.agents/skills`
//! both hold a skill of one name, the `.claude` one wins and the other is reported.

pub mod frontmatter;

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use serde::Serialize;

use crate::instructions::files::{inside, read_capped};
use crate::instructions::{LoadedFile, MAX_FILE_BYTES, Warning};
use frontmatter::{Fields, FrontmatterError, Invalid, check_len, check_name};

/// Supporting files listed per skill at most; more are reported, not listed.
pub const MAX_SUPPORTING_FILES: usize = 1000;
/// How deep below the skill directory supporting files are listed.
pub const MAX_SUPPORTING_DEPTH: usize = 8;

/// The keys a SKILL.md frontmatter may have.
pub const KNOWN_KEYS: &[&str] = &[
    "name",
    "description",
    "license",
    "compatibility",
    "metadata",
    "allowed-tools",
    "when_to_use",
    "argument-hint",
    "disable-model-invocation",
    "user-invocable",
    "disallowed-tools",
    "model",
    "paths",
];

/// Which directory a skill came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum SkillSource {
    /// `.claude/skills` (Claude Code).
    #[serde(rename = ".claude/skills")]
    Claude,
    /// `.agents/skills` (the Agent Skills standard, Codex).
    #[serde(rename = ".agents/skills")]
    Agents,
}

impl SkillSource {
    pub fn dir(self) -> &'static str {
        match self {
            SkillSource::Claude => ".claude/skills",
            SkillSource::Agents => ".agents/skills",
        }
    }
}

/// A valid skill, as discovered: its frontmatter, never its body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skill {
    pub name: String,
    pub description: String,
    /// The skill directory, as named below the repository root.
    pub dir: PathBuf,
    /// Its SKILL.md.
    pub file: PathBuf,
    pub source: SkillSource,
    pub license: Option<String>,
    pub compatibility: Option<String>,
    pub metadata: BTreeMap<String, String>,
    /// Tools the skill may use without asking; `None` when the field is absent.
    pub allowed_tools: Option<Vec<String>>,
    pub disallowed_tools: Option<Vec<String>>,
    pub when_to_use: Option<String>,
    pub argument_hint: Option<String>,
    /// When true the model is never told of the skill; only a person can invoke it.
    pub disable_model_invocation: bool,
    /// When false the skill is not offered to people as a command (the model may still use it).
    pub user_invocable: bool,
    pub model: Option<String>,
    pub paths: Vec<String>,
    /// The resolved skill directory: the confinement root for supporting files.
    #[serde(skip)]
    real_dir: PathBuf,
}

/// A skill's instructions, read when the model uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkillBody {
    /// The Markdown after the frontmatter (at most [`MAX_FILE_BYTES`] of the file).
    pub text: String,
    /// The whole SKILL.md as read: digest, truncation, UTF-8 problems.
    pub file: LoadedFile,
}

/// What a supporting file is for, by its top directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SupportingKind {
    /// Under `scripts/`: code the agent runs (in the sandbox).
    Script,
    /// Under `references/`: documentation read when needed.
    Reference,
    /// Under `assets/`: templates, data, images.
    Asset,
    Other,
}

/// A file in a skill directory other than SKILL.md.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SupportingFile {
    /// Relative to the skill directory.
    pub path: PathBuf,
    pub kind: SupportingKind,
    pub size: u64,
}

/// The supporting files of a skill, and what was left out and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SupportingFiles {
    pub files: Vec<SupportingFile>,
    pub warnings: Vec<Warning>,
}

#[derive(Debug, thiserror::Error)]
pub enum SkillError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: {reason}")]
    Refused { path: PathBuf, reason: String },
    #[error("{path}: {source}")]
    Frontmatter {
        path: PathBuf,
        source: FrontmatterError,
    },
}

/// A skill that was not loaded, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejected {
    /// The SKILL.md (or the directory, when it has none).
    pub path: PathBuf,
    /// The field at fault, when one is.
    pub field: Option<String>,
    pub reason: String,
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{}: `{field}` {}", self.path.display(), self.reason),
            None => write!(f, "{}: {}", self.path.display(), self.reason),
        }
    }
}

impl Rejected {
    fn new(path: &Path, reason: impl Into<String>) -> Self {
        Rejected {
            path: path.to_path_buf(),
            field: None,
            reason: reason.into(),
        }
    }

    fn invalid(path: &Path, inv: Invalid) -> Self {
        Rejected {
            path: path.to_path_buf(),
            field: Some(inv.field),
            reason: inv.rule,
        }
    }
}

/// Every skill of a repository: the valid ones by name, the rejected ones with reasons.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SkillSet {
    pub skills: Vec<Skill>,
    pub rejected: Vec<Rejected>,
    pub warnings: Vec<Warning>,
}

impl SkillSet {
    pub fn get(&self, name: &str) -> Option<&Skill> {
        self.skills.iter().find(|s| s.name == name)
    }
}

/// Finds and validates the skills of the repository at `repo_root`, reading frontmatter only.
/// Fails only when the repository root cannot be resolved.
pub fn discover_skills(repo_root: &Path) -> Result<SkillSet, SkillError> {
    let root = repo_root.canonicalize().map_err(|e| SkillError::Io {
        path: repo_root.to_path_buf(),
        source: e,
    })?;
    let mut set = SkillSet {
        skills: Vec::new(),
        rejected: Vec::new(),
        warnings: Vec::new(),
    };
    for source in [SkillSource::Claude, SkillSource::Agents] {
        let base = root.join(source.dir());
        let Ok(entries) = fs::read_dir(&base) else {
            continue;
        };
        match base.canonicalize() {
            Ok(real) if inside(&real, &root) => {}
            _ => {
                set.rejected.push(Rejected::new(
                    &base,
                    "resolves outside the repository (a symlink): none of its skills are loaded",
                ));
                continue;
            }
        }
        let mut dirs: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        dirs.sort();
        for dir in dirs {
            let Some(name) = dir.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
                set.rejected
                    .push(Rejected::new(&dir, "the directory name is not valid UTF-8"));
                continue;
            };
            if name.starts_with('.') || !dir.is_dir() {
                continue;
            }
            match load_skill(&root, &dir, &name, source, &mut set.warnings) {
                Ok(skill) => {
                    if let Some(first) = set.skills.iter().find(|s| s.name == skill.name) {
                        set.warnings.push(Warning::new(
                            &skill.file,
                            format!(
                                "not loaded: a skill named {:?} is already loaded from {} (.claude/skills wins over .agents/skills)",
                                skill.name,
                                first.file.display()
                            ),
                        ));
                    } else {
                        set.skills.push(skill);
                    }
                }
                Err(r) => set.rejected.push(r),
            }
        }
    }
    Ok(set)
}

fn load_skill(
    root: &Path,
    dir: &Path,
    dir_name: &str,
    source: SkillSource,
    warnings: &mut Vec<Warning>,
) -> Result<Skill, Rejected> {
    let real_dir = dir
        .canonicalize()
        .map_err(|e| Rejected::new(dir, format!("cannot be resolved: {e}")))?;
    if !inside(&real_dir, root) {
        return Err(Rejected::new(
            dir,
            format!(
                "resolves to {}, outside the repository (skills load only from the repository)",
                real_dir.display()
            ),
        ));
    }
    let file = dir.join("SKILL.md");
    if file.symlink_metadata().is_err() {
        return Err(Rejected::new(dir, "has no SKILL.md"));
    }
    let real_file = confined(&real_dir, &file).map_err(|reason| Rejected::new(&file, reason))?;
    let f = fs::File::open(&real_file)
        .map_err(|e| Rejected::new(&file, format!("cannot be read: {e}")))?;
    let raw = frontmatter::read_frontmatter(f).map_err(|e| Rejected::new(&file, e.to_string()))?;
    let map =
        frontmatter::parse_yaml(&raw.yaml).map_err(|e| Rejected::new(&file, e.to_string()))?;
    let fields = Fields::new(&map);
    let bad = |inv: Invalid| Rejected::invalid(&file, inv);

    let name = match fields.string("name").map_err(bad)? {
        Some(n) => {
            check_name("name", n).map_err(bad)?;
            if n != dir_name {
                return Err(bad(Invalid::new(
                    "name",
                    format!("must equal the directory name {dir_name:?}, found {n:?}"),
                )));
            }
            n.to_string()
        }
        None if source == SkillSource::Claude => {
            check_name("name", dir_name).map_err(|inv| {
                bad(Invalid::new(
                    "name",
                    format!(
                        "is absent, so the directory name is the name, and it {}",
                        inv.rule
                    ),
                ))
            })?;
            dir_name.to_string()
        }
        None => {
            return Err(bad(Invalid::new(
                "name",
                "is required in .agents/skills (the Agent Skills standard)",
            )));
        }
    };
    let description = fields.required_string("description").map_err(bad)?;
    check_len("description", description, 1, 1024).map_err(bad)?;
    let compatibility = fields.string_len("compatibility", 1, 500).map_err(bad)?;
    let when_to_use = fields.string_len("when_to_use", 1, 1024).map_err(bad)?;
    let skill = Skill {
        name,
        description: description.to_string(),
        dir: dir.to_path_buf(),
        file: file.clone(),
        source,
        license: fields.string("license").map_err(bad)?.map(String::from),
        compatibility: compatibility.map(String::from),
        metadata: fields.string_map("metadata").map_err(bad)?,
        allowed_tools: fields.tool_list("allowed-tools").map_err(bad)?,
        disallowed_tools: fields.tool_list("disallowed-tools").map_err(bad)?,
        when_to_use: when_to_use.map(String::from),
        argument_hint: fields
            .string("argument-hint")
            .map_err(bad)?
            .map(String::from),
        disable_model_invocation: fields
            .bool("disable-model-invocation")
            .map_err(bad)?
            .unwrap_or(false),
        user_invocable: fields.bool("user-invocable").map_err(bad)?.unwrap_or(true),
        model: fields.string("model").map_err(bad)?.map(String::from),
        paths: fields.string_list("paths").map_err(bad)?,
        real_dir,
    };
    for key in fields.unknown(KNOWN_KEYS) {
        warnings.push(Warning::new(
            &file,
            format!(
                "unknown frontmatter key `{key}` ignored (known: {})",
                KNOWN_KEYS.join(", ")
            ),
        ));
    }
    Ok(skill)
}

/// Resolves `path` and checks that it is a regular file inside `real_root`.
fn confined(real_root: &Path, path: &Path) -> Result<PathBuf, String> {
    let real = path
        .canonicalize()
        .map_err(|e| format!("cannot be resolved: {e}"))?;
    if !inside(&real, real_root) {
        return Err(format!(
            "resolves to {}, outside the skill directory (a symlink leading out is refused)",
            real.display()
        ));
    }
    let meta = fs::metadata(&real).map_err(|e| format!("cannot be read: {e}"))?;
    if !meta.is_file() {
        return Err("is not a regular file".into());
    }
    Ok(real)
}

impl Skill {
    /// Reads the skill's instructions: SKILL.md after its frontmatter, re-checked to be a
    /// regular file inside the skill directory.
    pub fn load_body(&self) -> Result<SkillBody, SkillError> {
        let real = confined(&self.real_dir, &self.file).map_err(|reason| SkillError::Refused {
            path: self.file.clone(),
            reason,
        })?;
        let file = read_capped(&self.file, &real, MAX_FILE_BYTES).map_err(|e| SkillError::Io {
            path: self.file.clone(),
            source: e,
        })?;
        let raw = frontmatter::read_frontmatter(file.text.as_bytes()).map_err(|e| {
            SkillError::Frontmatter {
                path: self.file.clone(),
                source: e,
            }
        })?;
        let mut text = file
            .text
            .get(raw.body_offset as usize..)
            .unwrap_or("")
            .to_string();
        if let Some(size) = file.truncated_from {
            text.push_str(&format!(
                "\n\n[warden: SKILL.md is {size} bytes; only its first {MAX_FILE_BYTES} are shown]\n"
            ));
        }
        Ok(SkillBody { text, file })
    }

    /// Lists the files of the skill directory other than SKILL.md, without reading them.
    /// Symlinks are listed only when they resolve to a file inside the skill directory;
    /// symlinked directories are not followed.
    pub fn supporting_files(&self) -> Result<SupportingFiles, SkillError> {
        let mut out = SupportingFiles {
            files: Vec::new(),
            warnings: Vec::new(),
        };
        self.walk(&self.real_dir, Path::new(""), 0, &mut out)?;
        out.files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    fn walk(
        &self,
        dir: &Path,
        rel: &Path,
        depth: usize,
        out: &mut SupportingFiles,
    ) -> Result<(), SkillError> {
        let entries = fs::read_dir(dir).map_err(|e| SkillError::Io {
            path: dir.to_path_buf(),
            source: e,
        })?;
        let mut entries: Vec<_> = entries.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let path = e.path();
            let rel = rel.join(e.file_name());
            if rel == Path::new("SKILL.md") {
                continue;
            }
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                if depth + 1 >= MAX_SUPPORTING_DEPTH {
                    out.warnings.push(Warning::new(
                        &path,
                        format!("not listed: deeper than {MAX_SUPPORTING_DEPTH} levels"),
                    ));
                    continue;
                }
                self.walk(&path, &rel, depth + 1, out)?;
                continue;
            }
            let size = if ft.is_symlink() {
                match confined(&self.real_dir, &path) {
                    Ok(real) => fs::metadata(real).map(|m| m.len()).unwrap_or(0),
                    Err(reason) => {
                        out.warnings
                            .push(Warning::new(&path, format!("not listed: {reason}")));
                        continue;
                    }
                }
            } else if ft.is_file() {
                e.metadata().map(|m| m.len()).unwrap_or(0)
            } else {
                continue;
            };
            if out.files.len() >= MAX_SUPPORTING_FILES {
                out.warnings.push(Warning::new(
                    &self.dir,
                    format!(
                        "more than {MAX_SUPPORTING_FILES} supporting files: the rest are not listed"
                    ),
                ));
                return Ok(());
            }
            let kind = match rel.components().next() {
                Some(Component::Normal(c)) if rel.components().count() > 1 => match c.to_str() {
                    Some("scripts") => SupportingKind::Script,
                    Some("references") => SupportingKind::Reference,
                    Some("assets") => SupportingKind::Asset,
                    _ => SupportingKind::Other,
                },
                _ => SupportingKind::Other,
            };
            out.files.push(SupportingFile {
                path: rel,
                kind,
                size,
            });
        }
        Ok(())
    }

    /// The real path of the supporting file `rel` (relative to the skill directory), refused
    /// when it is absolute, has `..`, or resolves (through a symlink) outside the skill
    /// directory or to something other than a regular file.
    pub fn resolve_supporting_file(&self, rel: &Path) -> Result<PathBuf, SkillError> {
        let refuse = |reason: &str| SkillError::Refused {
            path: rel.to_path_buf(),
            reason: format!("{reason} (a supporting file of skill {:?})", self.name),
        };
        if rel.as_os_str().is_empty() {
            return Err(refuse("an empty path"));
        }
        if rel.is_absolute() {
            return Err(refuse(
                "an absolute path is refused: name it relative to the skill directory",
            ));
        }
        if rel
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(refuse(
                "`..` is refused: supporting files stay inside the skill directory",
            ));
        }
        confined(&self.real_dir, &self.real_dir.join(rel)).map_err(|r| refuse(&r))
    }

    /// Reads the supporting file `rel` (see [`Skill::resolve_supporting_file`]), at most
    /// [`MAX_FILE_BYTES`] of it.
    pub fn read_supporting_file(&self, rel: &Path) -> Result<LoadedFile, SkillError> {
        let real = self.resolve_supporting_file(rel)?;
        let named = self.dir.join(rel);
        read_capped(&named, &real, MAX_FILE_BYTES).map_err(|e| SkillError::Io {
            path: named,
            source: e,
        })
    }
}

/// The system prompt's list of skills: names and descriptions only, without the skills the
/// model may not invoke. Empty when there is none.
pub fn system_prompt_section(skills: &[Skill]) -> String {
    let visible: Vec<&Skill> = skills
        .iter()
        .filter(|s| !s.disable_model_invocation)
        .collect();
    if visible.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "# Skills\n\nThese skills are available. When a task matches one, call the Skill tool with its name to load its full instructions before you act.\n\n",
    );
    for s in visible {
        let mut line = format!("- {}: {}", s.name, flatten(&s.description));
        if let Some(w) = &s.when_to_use {
            line.push_str(&format!(" When to use: {}", flatten(w)));
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

fn flatten(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests;
