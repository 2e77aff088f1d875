//! Everything read from the repository before the first model call: instruction files,
//! skills, subagents and permission rules, checked against their trust pins (and signatures
//! when the policy asks), and the system prompt built from them.
//!
//! The permission rules are parsed from the very text the trust check hashed, so a settings
//! file changed between the check and its use cannot slip in.

use std::path::Path;

use crate::instructions::{InstructionSource, Instructions, load_instructions};
use crate::permissions::{Author, Origin, RuleSource, parse_settings};
use crate::skills::{SkillSet, discover_skills, system_prompt_section};
use crate::subagents::{SubagentSet, discover_subagents};
use crate::trust::{
    FileRole, RepoIdentity, SignaturePolicy, TrustReport, TrustStore, TrustedFile, check_and_pin,
    verify_signatures,
};

/// What to read.
#[derive(Debug)]
pub struct PrepareOptions<'a> {
    /// `--repo DIR`, or `None` for the git top level of `cwd`.
    pub repo: Option<&'a Path>,
    pub cwd: &'a Path,
    pub trust_store: &'a dyn TrustStore,
    pub signatures: SignaturePolicy,
}

/// A repository, read and trusted.
#[derive(Debug)]
pub struct Prepared {
    pub source: InstructionSource,
    pub instructions: Instructions,
    pub skills: SkillSet,
    pub subagents: SubagentSet,
    pub trust: TrustReport,
    /// The repository's permission rules (its settings files).
    pub rules: Vec<RuleSource>,
    /// Things the user should see: rejected skills and subagents, import problems, notes.
    pub warnings: Vec<String>,
}

/// Why a run cannot start.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Trust(#[from] crate::trust::TrustError),
    #[error(transparent)]
    Signature(#[from] crate::trust::SignatureError),
    #[error("{0}")]
    Other(String),
}

/// A repository's files as read now, collected for trust, before any check: what
/// `prepare` and `warden trust` start from.
#[derive(Debug)]
pub struct Collected {
    pub source: InstructionSource,
    /// Said when the working directory is not inside a git repository.
    pub note: Option<String>,
    pub instructions: Instructions,
    pub skills: SkillSet,
    pub subagents: SubagentSet,
    /// Every file to pin, with its digest and text.
    pub files: Vec<TrustedFile>,
    pub repo: RepoIdentity,
}

/// Reads the repository (`repo`, or the git top level of `cwd`): its instruction files,
/// skills, subagents and settings, each collected for trust.
pub fn collect_repository(repo: Option<&Path>, cwd: &Path) -> Result<Collected, PrepareError> {
    let (source, note) = InstructionSource::resolve(repo, cwd).map_err(PrepareError::Usage)?;
    let root = source.repo_root.clone();
    let instructions =
        load_instructions(&source).map_err(|e| PrepareError::Usage(e.to_string()))?;
    let skills = discover_skills(&root).map_err(|e| PrepareError::Other(e.to_string()))?;
    let subagents = discover_subagents(&root)
        .map_err(|e| PrepareError::Other(format!("{}: {e}", root.display())))?;
    let files = crate::trust::collect(&instructions, &skills, &subagents)?;
    let repo = RepoIdentity::of(&root)?;
    Ok(Collected {
        source,
        note,
        instructions,
        skills,
        subagents,
        files,
        repo,
    })
}

/// Reads the repository, checks trust (pinning on first use), and parses the rules.
pub fn prepare(opts: &PrepareOptions<'_>) -> Result<Prepared, PrepareError> {
    let Collected {
        source,
        note,
        instructions,
        skills,
        subagents,
        files,
        repo,
    } = collect_repository(opts.repo, opts.cwd)?;
    let root = source.repo_root.clone();
    verify_signatures(&opts.signatures, &root, &files)?;
    let trust = check_and_pin(opts.trust_store, &repo, &files)?;
    let rules = rules_from_trusted(&files, &root)?;

    let mut warnings: Vec<String> = note.into_iter().collect();
    warnings.extend(
        instructions
            .warnings
            .iter()
            .map(|w| format!("{}: {}", w.path.display(), w.message)),
    );
    for r in skills.rejected.iter().chain(&subagents.rejected) {
        warnings.push(format!("{} was not loaded: {}", r.path.display(), r.reason));
    }
    warnings.extend(
        skills
            .warnings
            .iter()
            .chain(&subagents.warnings)
            .map(|w| format!("{}: {}", w.path.display(), w.message)),
    );
    Ok(Prepared {
        source,
        instructions,
        skills,
        subagents,
        trust,
        rules,
        warnings,
    })
}

/// The rule sources of the settings files among `files`, from the text that was hashed.
pub fn rules_from_trusted(
    files: &[TrustedFile],
    root: &Path,
) -> Result<Vec<RuleSource>, PrepareError> {
    let mut out = Vec::new();
    for name in crate::permissions::SETTINGS_FILES {
        let Some(f) = files
            .iter()
            .find(|f| f.role == FileRole::Settings && f.key == *name)
        else {
            continue;
        };
        if f.text_truncated || f.lossy {
            return Err(PrepareError::Other(format!(
                "{}: a settings file must be UTF-8 text of at most 64 KiB",
                f.path.display()
            )));
        }
        let origin = Origin {
            author: Author::Repository,
            label: (*name).to_string(),
        };
        out.push(
            parse_settings(&f.text, &f.path, origin, root)
                .map_err(|e| PrepareError::Other(e.to_string()))?,
        );
    }
    Ok(out)
}

/// The system prompt: who the agent is and where it works, the instruction files, the
/// skills (names and descriptions only) and the subagents the Task tool can start.
pub fn system_prompt(prepared: &Prepared, workspace: &Path, working_dir: &Path) -> String {
    let mut out = format!(
        "You are a coding agent run by warden. You work on the repository at {ws}. Every tool you call runs inside an isolated sandbox: commands see the workspace read-write, the rest of the machine read-only without secrets, and the network only through an allowlist proxy. Some calls need a person's approval; a denied call comes back with the reason, so adjust and go on. Keep working until the task is done, then answer with a short summary of what you did.\n\n# Environment\n\n- Working directory: {wd}\n- Platform: linux\n\n",
        ws = workspace.display(),
        wd = working_dir.display(),
    );
    let rendered = prepared.instructions.render();
    if !rendered.is_empty() {
        out.push_str("# Project instructions\n\nThese instructions come from the repository's instruction files. Follow them.\n\n");
        out.push_str(&rendered);
    }
    let skills = system_prompt_section(&prepared.skills.skills);
    if !skills.is_empty() {
        out.push_str(&skills);
        out.push('\n');
    }
    if !prepared.subagents.agents.is_empty() {
        out.push_str("# Subagents\n\nThe Task tool can hand work to these subagents (subagent_type), or to general-purpose:\n\n");
        for a in &prepared.subagents.agents {
            out.push_str(&format!(
                "- {}: {}\n",
                a.name,
                a.description
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            ));
        }
        out.push('\n');
    }
    out
}
