//! Permission rules: `Tool` or `Tool(specifier)`, where they came from, and the layered set.

use std::fmt;
use std::path::PathBuf;

use warden_policy::DomainPattern;

use super::bash::{BashPattern, wildcard_match};
use super::paths::{PathPattern, normalize};

/// What a rule, or a decision, says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Effect {
    Allow,
    Ask,
    Deny,
}

impl Effect {
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Allow => "allow",
            Effect::Ask => "ask",
            Effect::Deny => "deny",
        }
    }
}

impl fmt::Display for Effect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who wrote a set of rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Author {
    /// The repository (`.claude/settings.json`, `.claude/settings.local.json`): untrusted.
    Repository,
    /// warden's own policy: it may only restrict (deny and ask); see [`RuleSet::new`].
    Warden,
}

/// Where a rule came from, e.g. `.claude/settings.json` or `warden policy`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    pub author: Author,
    pub label: String,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label)
    }
}

/// The rules of one file or policy, as written.
#[derive(Debug, Clone)]
pub struct RuleSource {
    pub origin: Origin,
    /// The directory `/path` patterns are relative to: the project root of a settings file.
    pub root: PathBuf,
    pub allow: Vec<String>,
    pub ask: Vec<String>,
    pub deny: Vec<String>,
}

/// A rule that could not be used as written, named with its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleWarning {
    pub origin: String,
    pub rule: String,
    pub message: String,
}

impl fmt::Display for RuleWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: rule `{}`: {}", self.origin, self.rule, self.message)
    }
}

/// What a rule's specifier matches.
#[derive(Debug, Clone)]
pub(crate) enum Matcher {
    /// `Bash`, `Read`, `Bash(*)`: every call of the tool.
    Any,
    Bash(BashPattern),
    Path(PathPattern),
    /// `WebFetch(domain:...)`; `None` is `domain:*`.
    Domain(Option<DomainPattern>),
    /// The specifier of a tool warden has no grammar for (`Skill(deploy *)`): matched with
    /// `*` wildcards against a call whose input is a plain string; a deny or ask rule also
    /// matches every call whose input is structured, an allow rule never does.
    Text(Vec<String>),
}

/// One usable rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub text: String,
    pub effect: Effect,
    pub origin: Origin,
    pub(crate) tool: String,
    pub(crate) matcher: Matcher,
    pub(crate) root: PathBuf,
}

impl Rule {
    /// Whether this rule is about calls of the tool named `tool`. `Edit` rules cover every
    /// tool that changes files, `Read` rules every tool that reads them; `mcp__server` (or
    /// `mcp__server__*`) covers every tool of that MCP server.
    pub(crate) fn covers_tool(&self, tool: &str) -> bool {
        if self.tool == tool {
            return true;
        }
        match self.tool.as_str() {
            "Edit" => EDIT_TOOLS.contains(&tool),
            "Read" => READ_TOOLS.contains(&tool),
            t if t.starts_with("mcp__") => {
                let server = t.strip_suffix("__*").unwrap_or(t);
                server.matches("__").count() == 1
                    && tool
                        .strip_prefix(server)
                        .is_some_and(|rest| rest.starts_with("__") && rest.len() > 2)
            }
            _ => false,
        }
    }

    pub(crate) fn is_any(&self) -> bool {
        matches!(self.matcher, Matcher::Any)
    }

    pub(crate) fn text_matches(&self, input: Option<&str>) -> bool {
        match &self.matcher {
            Matcher::Any => true,
            Matcher::Text(parts) => match input {
                Some(s) => wildcard_match(parts, s),
                None => self.effect != Effect::Allow,
            },
            _ => false,
        }
    }
}

/// Tools that change files: what an `Edit` rule covers.
pub const EDIT_TOOLS: &[&str] = &["Edit", "Write", "MultiEdit", "NotebookEdit"];
/// Tools that read files: what a `Read` rule covers.
pub const READ_TOOLS: &[&str] = &["Read", "Glob", "Grep", "LS", "NotebookRead"];
/// Tools whose rules name paths.
const PATH_TOOLS: &[&str] = &[
    "Read",
    "Edit",
    "Write",
    "MultiEdit",
    "NotebookEdit",
    "Glob",
    "Grep",
    "LS",
    "NotebookRead",
];

/// All the rules that apply to a run: the repository's settings files and warden's own
/// policy, layered.
///
/// Deny rules are checked first, then ask rules, then allow rules, across every source: so a
/// repository's `allow` can never override a warden `deny` or `ask`, whatever the order of the
/// sources. warden's own sources can only add restrictions: an `allow` list in a source whose
/// author is [`Author::Warden`] is ignored with a warning.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    pub(crate) deny: Vec<Rule>,
    pub(crate) ask: Vec<Rule>,
    pub(crate) allow: Vec<Rule>,
}

impl RuleSet {
    /// Parses every rule of `sources`. A rule that cannot be parsed is a warning, never an
    /// error; a malformed `deny` or `ask` rule whose tool is known fails closed: it applies to
    /// every call of that tool (a malformed `allow` rule is dropped).
    pub fn new(sources: &[RuleSource]) -> (RuleSet, Vec<RuleWarning>) {
        let mut set = RuleSet::default();
        let mut warnings = Vec::new();
        for source in sources {
            if source.origin.author == Author::Warden && !source.allow.is_empty() {
                warnings.push(RuleWarning {
                    origin: source.origin.label.clone(),
                    rule: source.allow.join(", "),
                    message: "warden policy rules may only deny or ask; allow rules are ignored"
                        .to_string(),
                });
            }
            let lists = [
                (Effect::Deny, &source.deny),
                (Effect::Ask, &source.ask),
                (Effect::Allow, &source.allow),
            ];
            for (effect, list) in lists {
                if effect == Effect::Allow && source.origin.author == Author::Warden {
                    continue;
                }
                for text in list.iter() {
                    match parse_rule(text, effect, &source.origin, &source.root) {
                        Ok(rule) => set.push(rule),
                        Err((message, fallback)) => {
                            let message = match (&fallback, effect) {
                                (Some(tool), Effect::Deny | Effect::Ask) => format!(
                                    "{message}; it is treated as `{tool}` (every {tool} call is {})",
                                    if effect == Effect::Deny {
                                        "denied"
                                    } else {
                                        "asked"
                                    }
                                ),
                                _ => format!("{message}; the rule is ignored"),
                            };
                            warnings.push(RuleWarning {
                                origin: source.origin.label.clone(),
                                rule: text.clone(),
                                message,
                            });
                            if let (Some(tool), Effect::Deny | Effect::Ask) = (fallback, effect) {
                                set.push(Rule {
                                    text: text.trim().to_string(),
                                    effect,
                                    origin: source.origin.clone(),
                                    tool,
                                    matcher: Matcher::Any,
                                    root: normalize(&source.root),
                                });
                            }
                        }
                    }
                }
            }
        }
        (set, warnings)
    }

    fn push(&mut self, rule: Rule) {
        match rule.effect {
            Effect::Deny => self.deny.push(rule),
            Effect::Ask => self.ask.push(rule),
            Effect::Allow => self.allow.push(rule),
        }
    }

    /// The rules with this effect, in source order.
    pub fn rules(&self, effect: Effect) -> &[Rule] {
        match effect {
            Effect::Deny => &self.deny,
            Effect::Ask => &self.ask,
            Effect::Allow => &self.allow,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.deny.is_empty() && self.ask.is_empty() && self.allow.is_empty()
    }
}

fn valid_tool_name(name: &str) -> bool {
    let body = if name.starts_with("mcp__") {
        name.strip_suffix("__*").unwrap_or(name)
    } else {
        name
    };
    body.starts_with(|c: char| c.is_ascii_alphabetic())
        && body
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Parses one rule. On failure: the message, and the tool the rule was about if that much is
/// clear (for the fail-closed fallback).
fn parse_rule(
    text: &str,
    effect: Effect,
    origin: &Origin,
    root: &std::path::Path,
) -> Result<Rule, (String, Option<String>)> {
    let trimmed = text.trim();
    let (tool, spec) = match trimmed.find('(') {
        None => (trimmed, None),
        Some(open) => {
            let tool = trimmed[..open].trim_end();
            let Some(inner) = trimmed[open + 1..].strip_suffix(')') else {
                let known = valid_tool_name(tool).then(|| tool.to_string());
                return Err(("it does not end with `)`".to_string(), known));
            };
            (tool, Some(inner))
        }
    };
    if !valid_tool_name(tool) {
        return Err((
            "write a tool name such as `Bash`, `Read`, `Edit`, `WebFetch` or `mcp__server__tool`, optionally followed by `(specifier)`".to_string(),
            None,
        ));
    }
    let fail = |msg: String| Err((msg, Some(tool.to_string())));
    let spec = spec.map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "));
    let matcher = match spec.as_deref() {
        None | Some("*") => Matcher::Any,
        Some("") => return fail("the specifier in `()` is empty".to_string()),
        Some(spec) => {
            if tool.starts_with("mcp__") || tool == "WebSearch" {
                return fail(format!("`{tool}` rules take no specifier"));
            }
            if tool == "Bash" {
                Matcher::Bash(BashPattern::parse(spec))
            } else if PATH_TOOLS.contains(&tool) {
                match PathPattern::parse(spec) {
                    Ok(p) => Matcher::Path(p),
                    Err(e) => return fail(e),
                }
            } else if tool == "WebFetch" {
                let Some(domain) = spec.strip_prefix("domain:") else {
                    return fail(
                        "WebFetch rules take `domain:example.com` or `domain:*.example.com`"
                            .to_string(),
                    );
                };
                if domain == "*" {
                    Matcher::Domain(None)
                } else {
                    match domain.parse::<DomainPattern>() {
                        Ok(d) => Matcher::Domain(Some(d)),
                        Err(e) => return fail(e.to_string()),
                    }
                }
            } else {
                Matcher::Text(spec.split('*').map(str::to_string).collect())
            }
        }
    };
    Ok(Rule {
        text: trimmed.to_string(),
        effect,
        origin: origin.clone(),
        tool: tool.to_string(),
        matcher,
        root: normalize(root),
    })
}
