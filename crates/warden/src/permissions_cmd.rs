//! `warden permissions check`: what a repository's permission rules decide for a tool call.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::json;
use warden_agent::permissions::{
    Basis, Context, Decision, Effect, RuleSet, ToolCall, decide, load_repository_rules,
};

use crate::EXIT_USAGE;

const CHECK_HELP: &str = "\
Rules are read from .claude/settings.json and .claude/settings.local.json of the repository, with
Claude Code's syntax: `{\"permissions\": {\"allow\": [...], \"ask\": [...], \"deny\": [...]}}`. Deny rules
are checked first, then ask rules, then allow rules; the first match decides. When none matches:
reading inside the repository is allowed, everything else is asked.

A call is written as a rule is: `Tool(argument)`.
  Bash(git push origin main)       a shell command; every part of a compound command must be allowed
  Read(./src/main.rs)              a file read (relative to the repository, or absolute, or ~/...)
  Edit(src/lib.rs)  Write(out.txt) a file change (Edit rules cover both)
  WebFetch(https://docs.rs/x)      a fetch, matched by WebFetch(domain:docs.rs) rules
  Grep(src)  WebSearch  mcp__github__create_issue  Skill(deploy prod)

Output: one line per call, the decision and what decided it:
  deny  Bash(git push:*)  (.claude/settings.json)
  ask  (no rule matched; default for Bash)
  ask  (no rule matched `rm -rf build`; default for Bash)
  allow  Bash(git add *)  (.claude/settings.json), Bash(git commit *)  (.claude/settings.json)

Exit code: 0 when every call is allowed, 1 when one is asked (and none denied), 2 when one is
denied, 64 when a call cannot be read, the repository is not a directory or a settings file is
not valid JSON of that shape. Warnings about malformed rules go to stderr; a malformed deny or ask
rule applies to every call of its tool.

Examples:
  warden permissions check 'Bash(git push origin main)'
  warden permissions check --repo ~/src/app 'Bash(npm run test && rm -rf build)' 'Read(.env)'
  warden permissions check --json 'WebFetch(https://api.github.com/repos)' | jq .";

/// Work with the permission rules of a repository (`.claude/settings.json`).
#[derive(Debug, Args)]
#[command(after_help = "Example:\n  warden permissions check 'Bash(git push origin main)'")]
pub struct PermissionsArgs {
    #[command(subcommand)]
    command: PermissionsCommand,
}

#[derive(Debug, Subcommand)]
enum PermissionsCommand {
    /// Print what the rules decide for each tool call, and the rule (with its file) that
    /// decided it.
    #[command(after_long_help = CHECK_HELP, after_help = "See `warden permissions check --help` for the call syntax, exit codes and examples.")]
    Check(CheckArgs),
}

#[derive(Debug, Args)]
struct CheckArgs {
    /// The repository whose rules apply (default: the current directory). Relative paths in
    /// calls and `./` rules are relative to it.
    #[arg(long, value_name = "DIR")]
    repo: Option<PathBuf>,
    /// Print a JSON array, one object per call.
    #[arg(long)]
    json: bool,
    /// Tool calls, e.g. 'Bash(git push origin main)' or 'Read(./.env)'.
    #[arg(required = true, value_name = "CALL")]
    calls: Vec<String>,
}

pub fn main(args: PermissionsArgs) -> ExitCode {
    match args.command {
        PermissionsCommand::Check(args) => check(args),
    }
}

fn check(args: CheckArgs) -> ExitCode {
    let repo = match repository(args.repo.as_deref()) {
        Ok(repo) => repo,
        Err(message) => {
            say!("warden: {message}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let sources = match load_repository_rules(&repo) {
        Ok(sources) => sources,
        Err(e) => {
            say!("warden: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let (rules, warnings) = RuleSet::new(&sources);
    for w in &warnings {
        say!("warning: {w}");
    }
    // Without HOME, `~/` rules are anchored at `/`: they still match what lies under it.
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/"), PathBuf::from);
    let ctx = Context::new(&repo, &home);

    let mut worst: Option<Effect> = None;
    let mut unreadable = false;
    let mut results = Vec::new();
    let several = args.calls.len() > 1;
    for text in &args.calls {
        let call: ToolCall = match text.parse() {
            Ok(call) => call,
            Err(e) => {
                say!("warden: {e}");
                unreadable = true;
                results.push(json!({"call": text, "error": e.reason}));
                continue;
            }
        };
        let decision = decide(&rules, &call, &ctx);
        let effect = decision.effect();
        worst = worst.max(Some(effect));
        if args.json {
            results.push(to_json(text, &decision));
        } else {
            let line = format!("{effect}  {}", decision.basis());
            if several {
                println!("{text}\n  {line}");
            } else {
                println!("{line}");
            }
        }
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&results).expect("JSON values serialise")
        );
    }
    if unreadable {
        return ExitCode::from(EXIT_USAGE);
    }
    ExitCode::from(match worst {
        Some(Effect::Deny) => 2,
        Some(Effect::Ask) => 1,
        _ => 0,
    })
}

fn repository(flag: Option<&Path>) -> Result<PathBuf, String> {
    let dir = match flag {
        Some(dir) => dir.to_path_buf(),
        None => std::env::current_dir()
            .map_err(|e| format!("cannot read the current directory: {e}"))?,
    };
    let dir = std::fs::canonicalize(&dir).map_err(|e| format!("--repo {}: {e}", dir.display()))?;
    if !dir.is_dir() {
        return Err(format!("--repo {}: not a directory", dir.display()));
    }
    Ok(dir)
}

fn to_json(text: &str, decision: &Decision) -> serde_json::Value {
    let mut out = json!({
        "call": text,
        "decision": decision.effect().as_str(),
    });
    match decision.basis() {
        Basis::Rules(rules) => {
            out["rules"] = rules
                .iter()
                .map(|r| json!({"rule": r.rule, "source": r.origin.label}))
                .collect();
        }
        Basis::Default { tool, detail } => {
            out["default_for"] = json!(tool);
            out["unmatched"] = json!(detail);
        }
        Basis::Unanalysable { reason } => {
            out["unanalysable"] = json!(reason);
        }
    }
    out
}
