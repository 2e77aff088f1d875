//! Subagents: `.claude/agents/*.md` below the repository root, Claude Code's format.
//!
//! Frontmatter (see [`crate::skills::frontmatter`]): `name` (required; the skill name rule:
//! 1–64 characters of `a-z 0-9 -`, no hyphen at either end or twice in a row; it need not
//! equal the file name), `description` (required, 1–1024 characters), `tools` (tool names
//! separated by commas or spaces, or a list; absent means the subagent inherits every tool),
//! `model` (a string such as `sonnet`, `inherit` or a full model name). The body is the
//! subagent's system prompt (at most [`MAX_FILE_BYTES`], cut with a warning); an empty body is
//! rejected. Unknown keys are warnings. Only regular `.md` files directly in `.claude/agents`
//! that stay inside the repository are read; two agents of one name: the first file (by
//! name) wins and the other is reported.

use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::instructions::files::{inside, read_capped};
use crate::instructions::{FileDigest, MAX_FILE_BYTES, Warning};
use crate::skills::Rejected;
use crate::skills::frontmatter::{self, Fields, Invalid, check_len, check_name};

/// The keys an agent file's frontmatter may have.
pub const KNOWN_KEYS: &[&str] = &["name", "description", "tools", "model"];

/// A subagent definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Subagent {
    pub name: String,
    pub description: String,
    /// The tools it may use; `None` when the field is absent (it inherits every tool).
    pub tools: Option<Vec<String>>,
    pub model: Option<String>,
    pub file: PathBuf,
    /// The body of the file.
    pub system_prompt: String,
    /// The file's digest, for trust pinning.
    pub digest: FileDigest,
}

/// Every subagent of a repository, and what was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubagentSet {
    pub agents: Vec<Subagent>,
    pub rejected: Vec<Rejected>,
    pub warnings: Vec<Warning>,
}

impl SubagentSet {
    pub fn get(&self, name: &str) -> Option<&Subagent> {
        self.agents.iter().find(|a| a.name == name)
    }
}

/// Reads `.claude/agents/*.md` of the repository at `repo_root`. Fails only when the root
/// cannot be resolved.
pub fn discover_subagents(repo_root: &Path) -> std::io::Result<SubagentSet> {
    let root = repo_root.canonicalize()?;
    let mut set = SubagentSet {
        agents: Vec::new(),
        rejected: Vec::new(),
        warnings: Vec::new(),
    };
    let dir = root.join(".claude/agents");
    let Ok(entries) = fs::read_dir(&dir) else {
        return Ok(set);
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    files.sort();
    for file in files {
        match load_agent(&root, &file, &mut set.warnings) {
            Ok(agent) => {
                if let Some(first) = set.get(&agent.name) {
                    set.warnings.push(Warning::new(
                        &agent.file,
                        format!(
                            "not loaded: a subagent named {:?} is already defined in {}",
                            agent.name,
                            first.file.display()
                        ),
                    ));
                } else {
                    set.agents.push(agent);
                }
            }
            Err(r) => set.rejected.push(r),
        }
    }
    Ok(set)
}

fn load_agent(root: &Path, file: &Path, warnings: &mut Vec<Warning>) -> Result<Subagent, Rejected> {
    let reject = |reason: String| Rejected {
        path: file.to_path_buf(),
        field: None,
        reason,
    };
    let real = file
        .canonicalize()
        .map_err(|e| reject(format!("cannot be resolved: {e}")))?;
    if !inside(&real, root) {
        return Err(reject(format!(
            "resolves to {}, outside the repository (agents load only from the repository)",
            real.display()
        )));
    }
    let loaded = read_capped(file, &real, MAX_FILE_BYTES)
        .map_err(|e| reject(format!("cannot be read: {e}")))?;
    let (map, body) = frontmatter::split(&loaded.text).map_err(|e| reject(e.to_string()))?;
    let fields = Fields::new(&map);
    let bad = |inv: Invalid| Rejected {
        path: file.to_path_buf(),
        field: Some(inv.field),
        reason: inv.rule,
    };
    let name = fields.required_string("name").map_err(bad)?;
    check_name("name", name).map_err(bad)?;
    let description = fields.required_string("description").map_err(bad)?;
    check_len("description", description, 1, 1024).map_err(bad)?;
    let tools = fields.tool_list("tools").map_err(bad)?;
    let model = fields.string("model").map_err(bad)?;
    let mut system_prompt = body.trim_start_matches(['\r', '\n']).to_string();
    if system_prompt.trim().is_empty() {
        return Err(reject(
            "has no system prompt: the Markdown after the frontmatter is empty".into(),
        ));
    }
    if let Some(size) = loaded.truncated_from {
        warnings.push(Warning::new(
            file,
            format!(
                "truncated: the file is {size} bytes and only the first {MAX_FILE_BYTES} are used"
            ),
        ));
        system_prompt.push_str("\n\n[warden: the rest of this file was cut]\n");
    }
    if loaded.lossy {
        warnings.push(Warning::new(
            file,
            "not valid UTF-8: the invalid bytes were replaced with U+FFFD",
        ));
    }
    for key in fields.unknown(KNOWN_KEYS) {
        warnings.push(Warning::new(
            file,
            format!(
                "unknown frontmatter key `{key}` ignored (known: {})",
                KNOWN_KEYS.join(", ")
            ),
        ));
    }
    Ok(Subagent {
        name: name.to_string(),
        description: description.to_string(),
        tools,
        model: model.map(String::from),
        file: file.to_path_buf(),
        system_prompt,
        digest: loaded.digest,
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    fn repo_with(files: &[(&str, &str)]) -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        for (rel, text) in files {
            let p = root.join(".claude/agents").join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, text).unwrap();
        }
        (tmp, root)
    }

    #[test]
    fn agent_validation_table() {
        type Want = Result<
            (&'static str, Option<&'static [&'static str]>),
            (Option<&'static str>, &'static str),
        >;
        let long = format!(
            "---\nname: rev\ndescription: {}\n---\nP\n",
            "d".repeat(1025)
        );
        let cases: &[(&str, &str, Want)] = &[
            (
                "minimal",
                "---\nname: rev\ndescription: Reviews\n---\nYou review.\n",
                Ok(("rev", None)),
            ),
            (
                "comma tools",
                "---\nname: rev\ndescription: d\ntools: Read, Grep, Bash(git diff *)\nmodel: sonnet\n---\nP\n",
                Ok(("rev", Some(&["Read", "Grep", "Bash(git diff *)"]))),
            ),
            (
                "space tools",
                "---\nname: rev\ndescription: d\ntools: Read Grep\n---\nP\n",
                Ok(("rev", Some(&["Read", "Grep"]))),
            ),
            (
                "list tools",
                "---\nname: rev\ndescription: d\ntools: [Read, Glob]\n---\nP\n",
                Ok(("rev", Some(&["Read", "Glob"]))),
            ),
            (
                "CRLF and BOM",
                "\u{feff}---\r\nname: rev\r\ndescription: d\r\n---\r\nP\r\n",
                Ok(("rev", None)),
            ),
            (
                "no name",
                "---\ndescription: d\n---\nP\n",
                Err((Some("name"), "is required")),
            ),
            (
                "bad name",
                "---\nname: Code_Reviewer\ndescription: d\n---\nP\n",
                Err((Some("name"), "lowercase letters")),
            ),
            (
                "no description",
                "---\nname: rev\n---\nP\n",
                Err((Some("description"), "is required")),
            ),
            (
                "long description",
                &long,
                Err((Some("description"), "found 1025")),
            ),
            (
                "bad tools",
                "---\nname: rev\ndescription: d\ntools: Bash(\n---\nP\n",
                Err((Some("tools"), "unclosed")),
            ),
            (
                "model a number",
                "---\nname: rev\ndescription: d\nmodel: 4\n---\nP\n",
                Err((Some("model"), "must be a string")),
            ),
            (
                "empty body",
                "---\nname: rev\ndescription: d\n---\n\n  \n",
                Err((None, "has no system prompt")),
            ),
            (
                "no frontmatter",
                "You review.\n",
                Err((None, "no frontmatter")),
            ),
            (
                "bad YAML",
                "---\nname: [rev\n---\nP\n",
                Err((None, "not valid YAML")),
            ),
        ];
        for (what, text, want) in cases {
            let (_tmp, root) = repo_with(&[("a.md", text)]);
            let set = discover_subagents(&root).unwrap();
            match want {
                Ok((name, tools)) => {
                    assert!(set.rejected.is_empty(), "{what}: {:?}", set.rejected);
                    let a = &set.agents[0];
                    assert_eq!(a.name, *name, "{what}");
                    let got: Option<Vec<&str>> = a
                        .tools
                        .as_ref()
                        .map(|t| t.iter().map(String::as_str).collect());
                    assert_eq!(got.as_deref(), *tools, "{what}");
                    assert!(
                        a.system_prompt.starts_with('P') || a.system_prompt.starts_with("You"),
                        "{what}"
                    );
                }
                Err((field, msg)) => {
                    assert!(set.agents.is_empty(), "{what}");
                    let r = &set.rejected[0];
                    assert_eq!(r.field.as_deref(), *field, "{what}: {r}");
                    assert!(r.reason.contains(msg), "{what}: {r}");
                    assert!(r.path.ends_with(".claude/agents/a.md"), "{what}");
                }
            }
        }
    }

    #[test]
    fn duplicates_unknown_keys_non_md_and_symlinks_out() {
        let (_tmp, root) = repo_with(&[
            (
                "a.md",
                "---\nname: rev\ndescription: first\ncolor: blue\n---\nP\n",
            ),
            ("b.md", "---\nname: rev\ndescription: second\n---\nP\n"),
            ("notes.txt", "not an agent"),
        ]);
        let outside = root.parent().unwrap().join(format!(
            "{}-outside.md",
            root.file_name().unwrap().to_str().unwrap()
        ));
        fs::write(&outside, "---\nname: evil\ndescription: d\n---\nP\n").unwrap();
        symlink(&outside, root.join(".claude/agents/c.md")).unwrap();
        let set = discover_subagents(&root).unwrap();
        fs::remove_file(&outside).unwrap();
        assert_eq!(set.agents.len(), 1);
        assert_eq!(set.agents[0].description, "first");
        assert_eq!(set.agents[0].system_prompt, "P\n");
        let w: Vec<String> = set.warnings.iter().map(|w| w.to_string()).collect();
        assert!(
            w.iter()
                .any(|w| w.contains("a.md: unknown frontmatter key `color`")),
            "{w:?}"
        );
        assert!(
            w.iter().any(
                |w| w.contains("b.md: not loaded: a subagent named \"rev\" is already defined")
            ),
            "{w:?}"
        );
        assert_eq!(set.rejected.len(), 1);
        assert!(set.rejected[0].reason.contains("outside the repository"));
    }
}
