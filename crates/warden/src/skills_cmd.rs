//! `warden skills list`: the skills, instruction files and subagents a repository has, and
//! why anything was rejected.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::json;
use warden_agent::instructions::{
    InstructionSource, Instructions, display_path, load_instructions,
};
use warden_agent::skills::{Rejected, SkillSet, discover_skills};
use warden_agent::subagents::{SubagentSet, discover_subagents};

use crate::EXIT_USAGE;

const LIST_HELP: &str =
    "What is read, from the repository root (the nearest directory above the current one
that holds .git, or --repo DIR):

  skills        .claude/skills/<name>/SKILL.md and .agents/skills/<name>/SKILL.md
                (only the frontmatter: name, description, flags; the body is read when used)
  subagents     .claude/agents/*.md
  instructions  CLAUDE.md, .claude/CLAUDE.md and CLAUDE.local.md in every directory from the
                root down to the current directory, with their @imports; AGENTS.md when the
                repository has no CLAUDE.md

Flags in the skills table: `user-only` (disable-model-invocation: the model is never told of
it), `model-only` (user-invocable: false), `tools:N` (allowed-tools lists N tools).

A skill or subagent that breaks a rule is listed under \"rejected\" with the file, the field
and the rule; problems that did not stop anything loading are listed under \"warnings\".

Exit status: 0, also when some files were rejected; 64 when --repo is not a directory.

Examples:
  warden skills list
  warden skills list --repo ~/src/app
  warden skills list --json | jq '.rejected[] | .reason'";

/// Skills, subagents and instruction files of a repository.
#[derive(Debug, Args)]
pub struct SkillsArgs {
    #[command(subcommand)]
    command: SkillsCommand,
}

#[derive(Debug, Subcommand)]
enum SkillsCommand {
    /// List the skills, subagents and instruction files found, and what was rejected.
    #[command(
        after_long_help = LIST_HELP,
        after_help = "See `warden skills list --help` for what is read and examples."
    )]
    List(ListArgs),
}

#[derive(Debug, Args)]
struct ListArgs {
    /// The repository root (default: the git top level of the current directory). The
    /// current directory, when inside it, is where the walk for CLAUDE.md files ends.
    #[arg(long, value_name = "DIR")]
    repo: Option<PathBuf>,
    /// Print everything as one JSON document.
    #[arg(long)]
    json: bool,
}

pub fn main(args: SkillsArgs) -> ExitCode {
    match args.command {
        SkillsCommand::List(args) => list(args),
    }
}

/// Everything found, for both outputs.
struct Found {
    instructions: Instructions,
    skills: SkillSet,
    subagents: SubagentSet,
    /// Said when the root was guessed.
    note: Option<String>,
}

fn list(args: ListArgs) -> ExitCode {
    let cwd = match std::env::current_dir() {
        Ok(d) => d,
        Err(e) => {
            say!("warden: the current directory: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let (source, note) = match InstructionSource::resolve(args.repo.as_deref(), &cwd) {
        Ok(r) => r,
        Err(e) => {
            say!("warden: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let root = source.repo_root.clone();
    let found = (|| -> anyhow::Result<Found> {
        Ok(Found {
            instructions: load_instructions(&source)?,
            skills: discover_skills(&root)?,
            subagents: discover_subagents(&root)?,
            note,
        })
    })();
    let found = match found {
        Ok(f) => f,
        Err(e) => {
            say!("warden: {e:#}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let out = if args.json {
        let mut s = serde_json::to_string_pretty(&to_json(&found)).unwrap_or_default();
        s.push('\n');
        s
    } else {
        to_text(&found)
    };
    let mut stdout = std::io::stdout().lock();
    if stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
        .is_err()
    {
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

fn to_json(f: &Found) -> serde_json::Value {
    let ins = &f.instructions;
    let rel = |p: &Path| display_path(p, &ins.repo_root, ins.home.as_deref());
    let parts: Vec<_> = ins
        .parts
        .iter()
        .map(|p| {
            json!({
                "path": rel(&p.path),
                "kind": p.kind,
                "imported_from": p.imported_from.as_deref().map(rel),
                "import_chain": ins.import_chain(p).into_iter().map(rel).collect::<Vec<_>>(),
                "depth": p.depth,
                "bytes": p.text.len(),
                "truncated": p.truncated,
            })
        })
        .collect();
    let files: Vec<_> = ins
        .files
        .iter()
        .map(|d| json!({"path": rel(&d.path), "sha256": d.sha256_hex()}))
        .collect();
    let skills: Vec<_> = f
        .skills
        .skills
        .iter()
        .map(|s| {
            let mut v = serde_json::to_value(s).unwrap_or_default();
            v["dir"] = json!(rel(&s.dir));
            v["file"] = json!(rel(&s.file));
            v
        })
        .collect();
    let subagents: Vec<_> = f
        .subagents
        .agents
        .iter()
        .map(|a| {
            json!({
                "name": a.name,
                "description": a.description,
                "tools": a.tools,
                "model": a.model,
                "file": rel(&a.file),
                "system_prompt_bytes": a.system_prompt.len(),
                "sha256": a.digest.sha256_hex(),
            })
        })
        .collect();
    let rejected: Vec<_> = rejected(f)
        .map(|r| json!({"path": rel(&r.path), "field": r.field, "reason": r.reason}))
        .collect();
    let warnings: Vec<_> = warnings(f)
        .map(|(p, m)| json!({"path": rel(p), "message": m}))
        .collect();
    json!({
        "repo_root": ins.repo_root,
        "working_dir": ins.working_dir,
        "note": f.note,
        "skills": skills,
        "subagents": subagents,
        "instructions": {"parts": parts, "files": files},
        "rejected": rejected,
        "warnings": warnings,
    })
}

fn rejected(f: &Found) -> impl Iterator<Item = &Rejected> {
    f.skills.rejected.iter().chain(&f.subagents.rejected)
}

fn warnings(f: &Found) -> impl Iterator<Item = (&Path, &str)> {
    f.instructions
        .warnings
        .iter()
        .chain(&f.skills.warnings)
        .chain(&f.subagents.warnings)
        .map(|w| (w.path.as_path(), w.message.as_str()))
}

/// At most `max` characters on one line, with `…` when cut.
fn shorten(s: &str, max: usize) -> String {
    let flat = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max {
        return flat;
    }
    let mut out: String = flat.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Rows as columns padded to the widest cell (the last column is not padded).
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::from("  ");
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

fn to_text(f: &Found) -> String {
    let ins = &f.instructions;
    let rel = |p: &Path| display_path(p, &ins.repo_root, ins.home.as_deref());
    let mut out = format!("Repository: {}\n", ins.repo_root.display());
    if ins.working_dir != ins.repo_root {
        out.push_str(&format!("Working directory: {}\n", rel(&ins.working_dir)));
    }
    if let Some(n) = &f.note {
        out.push_str(&format!("Note: {n}\n"));
    }

    out.push_str(&format!("\nSkills ({})\n", f.skills.skills.len()));
    if f.skills.skills.is_empty() {
        out.push_str("  none (looked in .claude/skills and .agents/skills)\n");
    } else {
        let rows: Vec<Vec<String>> = f
            .skills
            .skills
            .iter()
            .map(|s| {
                let mut flags = Vec::new();
                if s.disable_model_invocation {
                    flags.push("user-only".to_string());
                }
                if !s.user_invocable {
                    flags.push("model-only".to_string());
                }
                if let Some(t) = &s.allowed_tools {
                    flags.push(format!("tools:{}", t.len()));
                }
                vec![
                    s.name.clone(),
                    rel(&s.dir),
                    if flags.is_empty() {
                        "-".into()
                    } else {
                        flags.join(",")
                    },
                    shorten(&s.description, 60),
                ]
            })
            .collect();
        out.push_str(&table(&["NAME", "DIR", "FLAGS", "DESCRIPTION"], &rows));
    }

    out.push_str(&format!("\nSubagents ({})\n", f.subagents.agents.len()));
    if f.subagents.agents.is_empty() {
        out.push_str("  none (looked in .claude/agents)\n");
    } else {
        let rows: Vec<Vec<String>> = f
            .subagents
            .agents
            .iter()
            .map(|a| {
                vec![
                    a.name.clone(),
                    rel(&a.file),
                    a.tools
                        .as_ref()
                        .map_or("(all)".into(), |t| shorten(&t.join(","), 30)),
                    a.model.clone().unwrap_or_else(|| "-".into()),
                    shorten(&a.description, 50),
                ]
            })
            .collect();
        out.push_str(&table(
            &["NAME", "FILE", "TOOLS", "MODEL", "DESCRIPTION"],
            &rows,
        ));
    }

    out.push_str(&format!("\nInstruction files ({})\n", ins.parts.len()));
    if ins.parts.is_empty() {
        out.push_str("  none (no CLAUDE.md, .claude/CLAUDE.md, CLAUDE.local.md or AGENTS.md)\n");
    }
    for p in &ins.parts {
        let indent = "  ".repeat(p.depth);
        out.push_str(&format!("  {indent}{}", rel(&p.path)));
        let chain = ins.import_chain(p);
        if !chain.is_empty() {
            let chain: Vec<String> = chain.into_iter().map(rel).collect();
            out.push_str(&format!("  (imported from {})", chain.join(" <- ")));
        }
        out.push_str(&format!("  {} bytes", p.text.len()));
        if p.truncated {
            out.push_str(", truncated");
        }
        out.push('\n');
    }

    let rejected: Vec<&Rejected> = rejected(f).collect();
    out.push_str(&format!("\nRejected ({})\n", rejected.len()));
    for r in rejected {
        match &r.field {
            Some(field) => out.push_str(&format!("  {}: `{field}` {}\n", rel(&r.path), r.reason)),
            None => out.push_str(&format!("  {}: {}\n", rel(&r.path), r.reason)),
        }
    }
    let warnings: Vec<_> = warnings(f).collect();
    out.push_str(&format!("\nWarnings ({})\n", warnings.len()));
    for (p, m) in warnings {
        out.push_str(&format!("  {}: {m}\n", rel(p)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shorten_cuts_on_characters_and_flattens() {
        assert_eq!(shorten("a\n  b", 10), "a b");
        assert_eq!(shorten("ééééé", 3), "éé…");
        assert_eq!(shorten("abc", 3), "abc");
    }

    #[test]
    fn table_pads_all_but_the_last_column() {
        let t = table(
            &["A", "B"],
            &[
                vec!["long".into(), "x".into()],
                vec!["s".into(), "y".into()],
            ],
        );
        assert_eq!(t, "  A     B\n  long  x\n  s     y\n");
    }
}
