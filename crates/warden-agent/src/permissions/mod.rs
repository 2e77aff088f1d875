//! Permission rules with Claude Code's syntax and semantics, and the pure [`decide`].
//!
//! Rules come from `.claude/settings.json` and `.claude/settings.local.json`
//! ([`load_repository_rules`]) and from warden's policy, layered in a [`RuleSet`]. Each is
//! `Tool` or `Tool(specifier)`, in an `allow`, `ask` or `deny` list. [`decide`] checks deny
//! rules first, then ask rules, then allow rules; the first that matches decides, whatever its
//! source, so a repository's `allow` cannot override a warden `deny` or `ask`. When none
//! matches, the [`DefaultPolicy`] decides.
//!
//! Semantics (where Claude Code's documentation is silent, the choice is the one that never
//! allows more):
//! - `Bash` or `Bash(*)` matches every command; `Bash(npm run test)` exactly that command;
//!   `*` stands for any text (`Bash(git * main)`); a pattern ending in ` *` with no other `*`
//!   also matches the bare command and keeps a word boundary (`Bash(ls *)` matches `ls` and
//!   `ls -la`, not `lsof`; `Bash(ls*)` matches both); the legacy `Bash(git diff:*)` is
//!   `Bash(git diff *)`.
//! - A command line is split into simple commands (`&&`, `||`, `;`, `|`, `&`, newlines,
//!   groups, `if`/`while`/`for` bodies, `$(...)`, backticks, `<(...)`, here-documents, and the
//!   script of `sh -c` or `eval`). Every simple command must match an allow rule for the call
//!   to be allowed; a deny or ask rule matching any of them, or the whole line, decides.
//!   Matching sees words one space apart after quote removal, so `git  push` and `git 'push'`
//!   are `git push`.
//! - Before matching, the wrappers `timeout`, `time`, `nice`, `nohup`, `stdbuf`, `env`,
//!   `command`, `builtin` and `exec` are stripped (with the options they are known to take; an
//!   unknown option makes the command opaque), and so are leading `NAME=value` assignments.
//!   For allow rules only assignments of harmless variables (`CI`, `RUST_LOG`, `NODE_ENV`, ...)
//!   are stripped; any other (`PATH=`, `LD_PRELOAD=`, `GIT_SSH_COMMAND=`) must be in the rule.
//!   Redirections stay part of the command for allow rules, except harmless ones (input,
//!   `/dev/null`, `2>&1`); deny and ask rules see the command with and without them.
//! - A command this checker cannot read safely (a program name computed at run time,
//!   `case`, functions, arithmetic, unbalanced quotes, ...) is never allowed by a specific
//!   rule: it is asked (or denied by a deny rule, or by [`DefaultPolicy::DenyAll`]). Only a
//!   bare `Bash` allow rule allows it, and only when no `Bash(...)` deny or ask rule exists
//!   that it could be hiding from.
//! - `Read(...)`/`Edit(...)` take gitignore-style patterns: `//abs/path` is absolute, `~/path`
//!   is under the home directory, `/path` is relative to the settings file's project root,
//!   `./path` and `path` are relative to the current directory; a pattern without a `/` (such
//!   as `.env` or `*.pem`) matches at any depth, and a pattern matching a directory matches
//!   everything inside it. Paths are made absolute and `..` is resolved lexically (no symlink
//!   is followed) before matching. `Edit` rules cover every tool that changes files (Edit,
//!   Write, MultiEdit, NotebookEdit); `Read` rules every tool that reads them (Read, Glob,
//!   Grep, LS, NotebookRead), for Glob and Grep on the directory searched (the tool loop
//!   checks each file it returns with [`decide`] on a `Read` call).
//! - `WebFetch(domain:example.com)` matches that host; `WebFetch(domain:*.example.com)` its
//!   subdomains (not `example.com` itself, as in warden's egress allowlist); case and a
//!   trailing dot are ignored. A URL that is not `http(s)` with a host is never allowed.
//! - `WebSearch`, `mcp__server__tool` and other tools match by name; `mcp__server` and
//!   `mcp__server__*` match every tool of that server.
//! - A malformed rule is a warning naming its file and the rule; a malformed deny or ask rule
//!   applies to every call of its tool (fail closed), a malformed allow rule is dropped.

mod bash;
mod call;
mod paths;
mod rule;
mod settings;
mod shell;
#[cfg(test)]
mod tests;

use std::fmt;
use std::path::{Path, PathBuf};

pub use call::{CallError, ToolCall};
pub use paths::{normalize, resolve_path};
pub use rule::{
    Author, EDIT_TOOLS, Effect, Origin, READ_TOOLS, Rule, RuleSet, RuleSource, RuleWarning,
};
pub use settings::{SETTINGS_FILES, SettingsError, load_repository_rules, parse_settings};

use rule::Matcher;

/// What happens to a call that no rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DefaultPolicy {
    /// Claude Code's default mode: reading inside the workspace (Read, Glob, Grep, LS,
    /// NotebookRead) is allowed; everything else, and reading outside it, is asked.
    #[default]
    Standard,
    /// Every unmatched call is asked.
    AskAll,
    /// Every unmatched call is denied (for runs with nobody to ask).
    DenyAll,
    /// Every unmatched call is allowed: unattended tasks, whose sandbox is the boundary
    /// (`warden serve`'s task runner). Deny and ask rules still apply, and a command that
    /// cannot be analysed (so could slip past them) is still asked.
    AllowAll,
}

/// Where a call is decided: directories the rules and the call's paths are relative to.
#[derive(Debug, Clone)]
pub struct Context {
    /// The agent's working directory: `./path` and bare patterns, and relative call paths,
    /// are relative to it.
    pub cwd: PathBuf,
    /// The tree the agent may read without asking under [`DefaultPolicy::Standard`].
    pub workspace: PathBuf,
    /// The home directory, for `~/path`.
    pub home: PathBuf,
    pub default: DefaultPolicy,
}

impl Context {
    /// A context rooted at `workspace` (also the working directory).
    pub fn new(workspace: &Path, home: &Path) -> Context {
        Context {
            cwd: normalize(workspace),
            workspace: normalize(workspace),
            home: normalize(home),
            default: DefaultPolicy::Standard,
        }
    }
}

/// A rule that took part in a decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchedRule {
    pub rule: String,
    pub origin: Origin,
}

/// Why a decision was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Basis {
    /// These rules decided (an allowed compound command names one per distinct rule).
    Rules(Vec<MatchedRule>),
    /// No rule matched; the default for `tool` applied. `detail` names the part of the call
    /// that no rule matched, if the call has several.
    Default {
        tool: String,
        detail: Option<String>,
    },
    /// The call could not be analysed safely, so no allow rule could vouch for it.
    Unanalysable { reason: String },
}

/// The outcome of [`decide`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow(Basis),
    Ask(Basis),
    Deny(Basis),
}

impl Decision {
    pub fn effect(&self) -> Effect {
        match self {
            Decision::Allow(_) => Effect::Allow,
            Decision::Ask(_) => Effect::Ask,
            Decision::Deny(_) => Effect::Deny,
        }
    }

    pub fn basis(&self) -> &Basis {
        match self {
            Decision::Allow(b) | Decision::Ask(b) | Decision::Deny(b) => b,
        }
    }

    fn of(effect: Effect, basis: Basis) -> Decision {
        match effect {
            Effect::Allow => Decision::Allow(basis),
            Effect::Ask => Decision::Ask(basis),
            Effect::Deny => Decision::Deny(basis),
        }
    }

    fn by_rule(rule: &Rule) -> Decision {
        Decision::of(
            rule.effect,
            Basis::Rules(vec![MatchedRule {
                rule: rule.text.clone(),
                origin: rule.origin.clone(),
            }]),
        )
    }
}

impl fmt::Display for Basis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Basis::Rules(rules) => {
                let parts: Vec<String> = rules
                    .iter()
                    .map(|r| format!("{}  ({})", r.rule, r.origin))
                    .collect();
                f.write_str(&parts.join(", "))
            }
            Basis::Default { tool, detail } => {
                write!(f, "(no rule matched")?;
                if let Some(d) = detail {
                    write!(f, " {d}")?;
                }
                write!(f, "; default for {tool})")
            }
            Basis::Unanalysable { reason } => write!(f, "(cannot be checked safely: {reason})"),
        }
    }
}

/// Decides `call` under `rules`: deny, then ask, then allow, then the default. Pure: it reads
/// no file and follows no symlink.
pub fn decide(rules: &RuleSet, call: &ToolCall, ctx: &Context) -> Decision {
    match call {
        ToolCall::Bash { command } => decide_bash(rules, command, ctx),
        ToolCall::WebFetch { url } => decide_fetch(rules, url, ctx),
        _ => {
            let tool = call.tool();
            let is_path_tool = EDIT_TOOLS.contains(&tool) || READ_TOOLS.contains(&tool);
            let path =
                is_path_tool.then(|| resolve_path(call.path().unwrap_or("."), &ctx.cwd, &ctx.home));
            let text = match call {
                ToolCall::Other { input, .. } => input.as_str(),
                _ => None,
            };
            for effect in [Effect::Deny, Effect::Ask, Effect::Allow] {
                for rule in rules.rules(effect) {
                    if !rule.covers_tool(tool) {
                        continue;
                    }
                    let hit = match (&rule.matcher, &path) {
                        (Matcher::Any, _) => true,
                        (Matcher::Path(p), Some(path)) => {
                            let base = anchor_dir(rule, p, ctx);
                            // A search (Glob, Grep, LS) reads inside its directory: a deny or
                            // ask rule that matches any child of it (`secrets/**`) applies.
                            p.matches(&base, path)
                                || (effect != Effect::Allow
                                    && SEARCH_TOOLS.contains(&tool)
                                    && p.matches(&base, &path.join(PROBE_CHILD)))
                        }
                        (Matcher::Path(_), None) => effect != Effect::Allow,
                        (Matcher::Text(_), _) => rule.text_matches(text),
                        // A Bash or domain pattern on another tool cannot happen (rules are
                        // parsed per tool); never let it allow.
                        _ => effect != Effect::Allow,
                    };
                    if hit {
                        return Decision::by_rule(rule);
                    }
                }
            }
            let reads_inside = READ_TOOLS.contains(&tool)
                && path.as_ref().is_some_and(|p| p.starts_with(&ctx.workspace));
            default_decision(ctx, tool, None, reads_inside)
        }
    }
}

/// Tools that take a directory and read inside it.
const SEARCH_TOOLS: &[&str] = &["Glob", "Grep", "LS"];
/// A file name no pattern names literally, standing for "any file in this directory".
const PROBE_CHILD: &str = "\u{1}";

fn anchor_dir(rule: &Rule, pattern: &paths::PathPattern, ctx: &Context) -> PathBuf {
    match pattern.anchor {
        paths::Anchor::Absolute => PathBuf::from("/"),
        paths::Anchor::Home => ctx.home.clone(),
        paths::Anchor::Root => rule.root.clone(),
        paths::Anchor::Cwd => ctx.cwd.clone(),
    }
}

fn default_decision(
    ctx: &Context,
    tool: &str,
    detail: Option<String>,
    reads_inside: bool,
) -> Decision {
    let basis = Basis::Default {
        tool: tool.to_string(),
        detail,
    };
    match ctx.default {
        DefaultPolicy::Standard if reads_inside => Decision::Allow(basis),
        DefaultPolicy::Standard | DefaultPolicy::AskAll => Decision::Ask(basis),
        DefaultPolicy::DenyAll => Decision::Deny(basis),
        DefaultPolicy::AllowAll => Decision::Allow(basis),
    }
}

/// Asked, or denied under [`DefaultPolicy::DenyAll`]: never allowed.
fn unanalysable(ctx: &Context, reason: String) -> Decision {
    let basis = Basis::Unanalysable { reason };
    match ctx.default {
        DefaultPolicy::DenyAll => Decision::Deny(basis),
        _ => Decision::Ask(basis),
    }
}

fn decide_bash(rules: &RuleSet, command: &str, ctx: &Context) -> Decision {
    let analysis = bash::analyse(command);
    let bash_rules = |effect| rules.rules(effect).iter().filter(|r| r.covers_tool("Bash"));
    for effect in [Effect::Deny, Effect::Ask] {
        for rule in bash_rules(effect) {
            let hit = match &rule.matcher {
                Matcher::Bash(p) => {
                    p.matches(&analysis.whole)
                        || analysis
                            .commands
                            .iter()
                            .any(|c| c.check.iter().any(|form| p.matches(form)))
                }
                _ => true,
            };
            if hit {
                return Decision::by_rule(rule);
            }
        }
    }
    let opaque = analysis
        .problems
        .first()
        .cloned()
        .or_else(|| analysis.commands.iter().find_map(|c| c.opaque.clone()));
    if let Some(reason) = opaque {
        let scoped_restrictions = bash_rules(Effect::Deny)
            .chain(bash_rules(Effect::Ask))
            .any(|r| !r.is_any());
        if !scoped_restrictions && let Some(rule) = bash_rules(Effect::Allow).find(|r| r.is_any()) {
            return Decision::by_rule(rule);
        }
        return unanalysable(ctx, reason);
    }
    if analysis.commands.is_empty() {
        return default_decision(ctx, "Bash", Some("(an empty command)".to_string()), false);
    }
    let mut matched: Vec<MatchedRule> = Vec::new();
    for cmd in &analysis.commands {
        let found = bash_rules(Effect::Allow).find(|rule| match &rule.matcher {
            Matcher::Any => true,
            Matcher::Bash(p) => cmd.allow.iter().any(|form| p.matches(form)),
            _ => false,
        });
        match found {
            Some(rule) => {
                let m = MatchedRule {
                    rule: rule.text.clone(),
                    origin: rule.origin.clone(),
                };
                if !matched.contains(&m) {
                    matched.push(m);
                }
            }
            None => {
                // Name the part no rule matched when there are several.
                let detail = (analysis.commands.len() > 1).then(|| format!("`{}`", cmd.display));
                return default_decision(ctx, "Bash", detail, false);
            }
        }
    }
    Decision::Allow(Basis::Rules(matched))
}

fn decide_fetch(rules: &RuleSet, url: &str, ctx: &Context) -> Decision {
    let host = url::Url::parse(url.trim())
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .and_then(|u| {
            u.host_str()
                .map(|h| h.trim_matches(['[', ']']).to_ascii_lowercase())
        })
        .filter(|h| !h.is_empty());
    for effect in [Effect::Deny, Effect::Ask, Effect::Allow] {
        for rule in rules.rules(effect) {
            if !rule.covers_tool("WebFetch") {
                continue;
            }
            let hit = match (&rule.matcher, &host) {
                (Matcher::Any, _) if host.is_some() || effect != Effect::Allow => true,
                (Matcher::Domain(None), Some(_)) => true,
                (Matcher::Domain(Some(d)), Some(h)) => d.matches(h),
                (Matcher::Domain(_), None) => false,
                _ => false,
            };
            if hit {
                return Decision::by_rule(rule);
            }
        }
    }
    if host.is_none() {
        return unanalysable(ctx, format!("`{url}` is not an http(s) URL with a host"));
    }
    default_decision(ctx, "WebFetch", None, false)
}
