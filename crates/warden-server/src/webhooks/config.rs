//! The `[webhooks]` section of `warden serve --config`: which sources are on (each with its
//! secret, read from a file or an environment variable, never written inline) and the rules
//! that map a delivery to a task. Validated once at start; every error names the field and
//! what is allowed.
//!
//! ```toml
//! [webhooks.github]
//! secret_file = "/etc/warden/github-webhook-secret"
//! [webhooks.alertmanager]
//! secret_env = "WARDEN_ALERTMANAGER_SECRET"
//! [webhooks.generic.deploys]
//! secret_file = "/etc/warden/deploys-secret"
//!
//! [[webhooks.rules]]
//! name = "fix-on-comment"
//! source = "github"
//! event = "issue_comment"
//! action = "created"
//! comment_prefix = "/warden"
//! prompt = "{{ webhook.command }}\n\nIssue #{{ issue.number }}: {{ issue.title }}\n{{ issue.body }}"
//! agent = "claude-code"
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::rules::check_template;
use crate::sandbox_router::is_dns_label;
use crate::tasks::model::AgentKind;

/// A secret: never printed, never serialised.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: String) -> Secret {
        Secret(s)
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The shortest secret accepted: shorter ones can be guessed offline from one signed body.
pub const MIN_SECRET_LEN: usize = 16;

/// Where a source's secret is read from at start: exactly one of the two.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    /// A file holding the secret (surrounding whitespace is trimmed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub secret_file: Option<PathBuf>,
    /// An environment variable of `warden serve` holding it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_env: Option<String>,
}

impl SecretRef {
    fn check(&self, at: &str) -> Result<(), String> {
        match (&self.secret_file, &self.secret_env) {
            (Some(_), None) | (None, Some(_)) => Ok(()),
            _ => Err(format!(
                "[{at}]: give exactly one of `secret_file` (a file holding the secret) or \
                 `secret_env` (an environment variable holding it); secrets are never written \
                 in the config file"
            )),
        }
    }

    /// Reads the secret; `env` looks a variable up. The error names the field, never the
    /// value.
    pub fn resolve(
        &self,
        at: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Secret, String> {
        let (text, from) = match (&self.secret_file, &self.secret_env) {
            (Some(path), None) => (
                std::fs::read_to_string(path)
                    .map_err(|e| format!("[{at}]: `secret_file` {}: {e}", path.display()))?,
                format!("`secret_file` {}", path.display()),
            ),
            (None, Some(name)) => (
                env(name).ok_or_else(|| format!("[{at}]: `secret_env`: ${name} is not set"))?,
                format!("`secret_env` ${name}"),
            ),
            _ => return Err(self.check(at).unwrap_err()),
        };
        let secret = text.trim();
        if secret.chars().count() < MIN_SECRET_LEN {
            return Err(format!(
                "[{at}]: the secret in {from} is shorter than {MIN_SECRET_LEN} characters; \
                 use a long random one (e.g. `openssl rand -hex 32`)"
            ));
        }
        Ok(Secret(secret.to_string()))
    }
}

/// Where a delivery came from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Source {
    Github,
    Alertmanager,
    Pagerduty,
    /// `generic:NAME`, served at `/webhooks/generic/NAME`.
    Generic(String),
}

impl Source {
    pub const FORMS: &'static str = "github, alertmanager, pagerduty or generic:NAME";

    pub fn parse(s: &str) -> Option<Source> {
        match s {
            "github" => Some(Source::Github),
            "alertmanager" => Some(Source::Alertmanager),
            "pagerduty" => Some(Source::Pagerduty),
            _ => s
                .strip_prefix("generic:")
                .filter(|n| is_dns_label(n))
                .map(|n| Source::Generic(n.to_string())),
        }
    }

    /// The path deliveries are posted to.
    pub fn path(&self) -> String {
        match self {
            Source::Generic(name) => format!("/webhooks/generic/{name}"),
            other => format!("/webhooks/{other}"),
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Github => f.write_str("github"),
            Source::Alertmanager => f.write_str("alertmanager"),
            Source::Pagerduty => f.write_str("pagerduty"),
            Source::Generic(n) => write!(f, "generic:{n}"),
        }
    }
}

/// The GitHub events a rule may name.
pub const GITHUB_EVENTS: [&str; 5] = [
    "push",
    "issues",
    "issue_comment",
    "pull_request",
    "pull_request_review_comment",
];

/// GitHub's `author_association` values.
pub const AUTHOR_ASSOCIATIONS: [&str; 8] = [
    "COLLABORATOR",
    "CONTRIBUTOR",
    "FIRST_TIMER",
    "FIRST_TIME_CONTRIBUTOR",
    "MANNEQUIN",
    "MEMBER",
    "NONE",
    "OWNER",
];

/// Who may start a task from GitHub by default: people with a role on the repository, so
/// that strangers commenting on a public repository cannot start agents.
pub const DEFAULT_AUTHOR_ASSOCIATIONS: [&str; 3] = ["OWNER", "MEMBER", "COLLABORATOR"];

/// One rule: conditions on a delivery of one source, and the task it files. Fields of other
/// sources must be left out.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Unique; part of each task's idempotency key (`webhook:<source>:<delivery>:<rule>`).
    pub name: String,
    /// github, alertmanager, pagerduty or generic:NAME.
    pub source: String,

    /// GitHub: the event (X-GitHub-Event): push, issues, issue_comment, pull_request,
    /// pull_request_review_comment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// GitHub: the payload's `action`, e.g. `created`, `opened`, `labeled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// GitHub: the repository's full name, `owner/name` (case-insensitive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// GitHub comment events: the comment must start with this word (e.g. `/warden`); the
    /// rest of the comment is `webhook.command` in templates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment_prefix: Option<String>,
    /// GitHub: the `author_association` the comment's, issue's or pull request's author must
    /// have [OWNER, MEMBER, COLLABORATOR]. Not checked for push (pushing needs write access).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author_association: Option<Vec<String>>,
    /// GitHub issue_comment: only comments on pull requests (true) or on issues (false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_request: Option<bool>,

    /// Alertmanager: the notification's status, firing or resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Alertmanager: `commonLabels.alertname`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alertname: Option<String>,
    /// Alertmanager: labels every alert of the group has (`commonLabels`), by value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,

    /// PagerDuty: `event.event_type`, e.g. `incident.triggered`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,

    /// Generic: JSON pointers (`/ref`, `/deploy/env`) and the values they must equal.
    #[serde(default, rename = "match", skip_serializing_if = "BTreeMap::is_empty")]
    #[schema(value_type = Object)]
    pub matches: BTreeMap<String, serde_json::Value>,

    /// The task's repository (a template) [GitHub: `{{ repository.clone_url }}`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// The task's prompt: a MiniJinja template over the payload's fields and `webhook`
    /// (source, event, delivery_id, command). A field the payload lacks rejects the delivery.
    pub prompt: String,
    /// The branch to start from (a template) [the repository's default].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_branch: Option<String>,
    /// warden, claude-code or codex [warden].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The model [the server's].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The sandbox template [the server's task template].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
}

impl Rule {
    /// The source, once validated.
    pub fn source(&self) -> Source {
        Source::parse(&self.source).unwrap_or(Source::Generic(String::new()))
    }
}

/// The `[webhooks]` section.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksConfig {
    #[serde(default)]
    pub github: Option<SecretRef>,
    #[serde(default)]
    pub alertmanager: Option<SecretRef>,
    #[serde(default)]
    pub pagerduty: Option<SecretRef>,
    /// Named generic hooks, `[webhooks.generic.NAME]`.
    #[serde(default)]
    pub generic: BTreeMap<String, SecretRef>,
    #[serde(default)]
    pub rules: Vec<Rule>,
}

impl WebhooksConfig {
    /// The sources that are on, with where their secret comes from.
    pub fn sources(&self) -> Vec<(Source, &SecretRef)> {
        let mut out = Vec::new();
        if let Some(s) = &self.github {
            out.push((Source::Github, s));
        }
        if let Some(s) = &self.alertmanager {
            out.push((Source::Alertmanager, s));
        }
        if let Some(s) = &self.pagerduty {
            out.push((Source::Pagerduty, s));
        }
        for (name, s) in &self.generic {
            out.push((Source::Generic(name.clone()), s));
        }
        out
    }
}

/// Parses and validates the `[webhooks]` table (pure: secrets are read later, by
/// [`SecretRef::resolve`]).
pub fn parse(value: toml::Value) -> Result<WebhooksConfig, String> {
    let mut config: WebhooksConfig = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path.is_empty() || path == "." {
            format!("[webhooks]: {inner}")
        } else {
            format!("[webhooks]: `{path}`: {inner}")
        }
    })?;
    let sources: BTreeSet<Source> = config.sources().into_iter().map(|(s, _)| s).collect();
    for (source, secret) in config.sources() {
        let at = match &source {
            Source::Generic(n) => format!("webhooks.generic.{n}"),
            other => format!("webhooks.{other}"),
        };
        if let Source::Generic(n) = &source
            && !is_dns_label(n)
        {
            return Err(format!(
                "[{at}]: `{n}` is not a valid name; use 1 to 63 lowercase letters, digits and `-`"
            ));
        }
        secret.check(&at)?;
    }
    let mut names = BTreeSet::new();
    for (i, rule) in config.rules.iter_mut().enumerate() {
        let at = format!("[[webhooks.rules]] #{} (`{}`)", i + 1, rule.name);
        check_rule(rule, &sources).map_err(|e| format!("{at}: {e}"))?;
        if !names.insert(rule.name.clone()) {
            return Err(format!(
                "{at}: `name`: another rule is called `{}`; names must be unique",
                rule.name
            ));
        }
    }
    Ok(config)
}

/// Checks one rule and fills its defaults.
fn check_rule(rule: &mut Rule, sources: &BTreeSet<Source>) -> Result<(), String> {
    if !is_dns_label(&rule.name) {
        return Err(format!(
            "`name`: `{}` is not valid; use 1 to 63 lowercase letters, digits and `-`",
            rule.name
        ));
    }
    let Some(source) = Source::parse(&rule.source) else {
        return Err(format!(
            "`source`: `{}` is not a source; use {}",
            rule.source,
            Source::FORMS
        ));
    };
    if !sources.contains(&source) {
        let section = match &source {
            Source::Generic(n) => format!("webhooks.generic.{n}"),
            other => format!("webhooks.{other}"),
        };
        return Err(format!(
            "`source`: `{source}` is not configured; add [{section}] with its secret"
        ));
    }
    // Fields that belong to another source.
    let only = |set: bool, field: &str, owner: &str, ok: bool| -> Result<(), String> {
        if set && !ok {
            Err(format!(
                "`{field}` applies to {owner} rules only; this rule's source is `{source}`"
            ))
        } else {
            Ok(())
        }
    };
    let gh = source == Source::Github;
    let am = source == Source::Alertmanager;
    let pd = source == Source::Pagerduty;
    let generic = matches!(source, Source::Generic(_));
    only(rule.event.is_some(), "event", "github", gh)?;
    only(rule.action.is_some(), "action", "github", gh)?;
    only(rule.repository.is_some(), "repository", "github", gh)?;
    only(
        rule.comment_prefix.is_some(),
        "comment_prefix",
        "github",
        gh,
    )?;
    only(
        rule.author_association.is_some(),
        "author_association",
        "github",
        gh,
    )?;
    only(rule.pull_request.is_some(), "pull_request", "github", gh)?;
    only(rule.status.is_some(), "status", "alertmanager", am)?;
    only(rule.alertname.is_some(), "alertname", "alertmanager", am)?;
    only(!rule.labels.is_empty(), "labels", "alertmanager", am)?;
    only(rule.event_type.is_some(), "event_type", "pagerduty", pd)?;
    only(!rule.matches.is_empty(), "match", "generic:NAME", generic)?;

    if gh {
        let Some(event) = rule.event.as_deref() else {
            return Err(format!(
                "`event` is required for github rules; use one of {}",
                GITHUB_EVENTS.join(", ")
            ));
        };
        if !GITHUB_EVENTS.contains(&event) {
            return Err(format!(
                "`event`: `{event}` is not supported; use one of {}",
                GITHUB_EVENTS.join(", ")
            ));
        }
        if let Some(a) = &rule.action
            && (a.is_empty() || !a.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
        {
            return Err(format!(
                "`action`: `{a}` is not an action; use GitHub's name, such as created, opened, labeled"
            ));
        }
        if let Some(r) = &rule.repository {
            let ok = r.split_once('/').is_some_and(|(o, n)| {
                let part = |s: &str| {
                    !s.is_empty()
                        && s.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                };
                part(o) && part(n)
            });
            if !ok {
                return Err(format!(
                    "`repository`: `{r}` is not a repository's full name; write `owner/name`"
                ));
            }
        }
        let comment_event = matches!(event, "issue_comment" | "pull_request_review_comment");
        if let Some(p) = &rule.comment_prefix {
            if !comment_event {
                return Err(format!(
                    "`comment_prefix` applies to the issue_comment and pull_request_review_comment events, not `{event}`"
                ));
            }
            if p.is_empty() || p.chars().any(char::is_whitespace) {
                return Err(format!(
                    "`comment_prefix`: `{p}` must be one word without spaces, such as /warden"
                ));
            }
        }
        if rule.pull_request.is_some() && event != "issue_comment" {
            return Err(format!(
                "`pull_request` applies to the issue_comment event, not `{event}`"
            ));
        }
        let assoc = rule
            .author_association
            .get_or_insert_with(|| DEFAULT_AUTHOR_ASSOCIATIONS.map(String::from).to_vec());
        if assoc.is_empty() {
            return Err(format!(
                "`author_association` is empty and would let nobody in; use some of {} (default: {})",
                AUTHOR_ASSOCIATIONS.join(", "),
                DEFAULT_AUTHOR_ASSOCIATIONS.join(", ")
            ));
        }
        for a in assoc.iter() {
            if !AUTHOR_ASSOCIATIONS.contains(&a.as_str()) {
                return Err(format!(
                    "`author_association`: `{a}` is not one; use some of {}",
                    AUTHOR_ASSOCIATIONS.join(", ")
                ));
            }
        }
        if rule.repo.is_none() {
            rule.repo = Some("{{ repository.clone_url }}".into());
        }
    }
    if am
        && let Some(s) = &rule.status
        && s != "firing"
        && s != "resolved"
    {
        return Err(format!(
            "`status`: `{s}` is not one; use firing or resolved"
        ));
    }
    if pd && let Some(t) = &rule.event_type {
        let ok = t
            .split_once('.')
            .is_some_and(|(a, b)| !a.is_empty() && !b.is_empty())
            && t.bytes()
                .all(|b| b.is_ascii_lowercase() || b"._".contains(&b));
        if !ok {
            return Err(format!(
                "`event_type`: `{t}` is not a PagerDuty event type, such as incident.triggered"
            ));
        }
    }
    for pointer in rule.matches.keys() {
        if !pointer.starts_with('/') {
            return Err(format!(
                "`match`: `{pointer}` is not a JSON pointer; write it as `/field/sub-field`"
            ));
        }
    }
    let Some(repo) = &rule.repo else {
        return Err(format!(
            "`repo` is required for {source} rules: the repository's https:// URL (a template)"
        ));
    };
    check_template("repo", repo)?;
    if rule.prompt.trim().is_empty() {
        return Err("`prompt` is empty; say what the agent should do (a template)".into());
    }
    check_template("prompt", &rule.prompt)?;
    if let Some(b) = &rule.base_branch {
        check_template("base_branch", b)?;
    }
    if let Some(a) = &rule.agent
        && AgentKind::parse(a).is_none()
    {
        return Err(format!(
            "`agent`: `{a}` is not an agent; use one of {}",
            AgentKind::NAMES
        ));
    }
    if let Some(m) = &rule.model
        && (m.trim().is_empty() || m.len() > 200 || m.chars().any(char::is_control))
    {
        return Err(
            "`model`: must be 1 to 200 printable characters, such as anthropic/claude-sonnet-4-5"
                .into(),
        );
    }
    if let Some(t) = &rule.template
        && !is_dns_label(t)
    {
        return Err(format!(
            "`template`: `{t}` is not a template name (lower-case letters, digits and `-`)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(text: &str) -> Result<WebhooksConfig, String> {
        let table: toml::Table = text.parse().unwrap();
        parse(table.get("webhooks").cloned().unwrap())
    }

    const SOURCES: &str = "[webhooks.github]\nsecret_env = \"GH\"\n\
        [webhooks.alertmanager]\nsecret_file = \"/run/am\"\n\
        [webhooks.pagerduty]\nsecret_env = \"PD\"\n\
        [webhooks.generic.deploys]\nsecret_env = \"DEP\"\n";

    #[test]
    fn a_full_config() {
        let c = parse_text(&format!(
            "{SOURCES}
            [[webhooks.rules]]
            name = \"fix\"
            source = \"github\"
            event = \"issue_comment\"
            comment_prefix = \"/warden\"
            prompt = \"{{{{ webhook.command }}}}\"
            agent = \"claude-code\"
            [[webhooks.rules]]
            name = \"page\"
            source = \"alertmanager\"
            status = \"firing\"
            labels = {{ severity = \"critical\" }}
            repo = \"https://git.example/ops.git\"
            prompt = \"Investigate {{{{ commonLabels.alertname }}}}\"
            [[webhooks.rules]]
            name = \"deploy\"
            source = \"generic:deploys\"
            match = {{ \"/env\" = \"prod\", \"/ok\" = false }}
            repo = \"{{{{ repo }}}}\"
            prompt = \"Check the deploy of {{{{ sha }}}}\"
            "
        ))
        .unwrap();
        assert_eq!(c.sources().len(), 4);
        assert_eq!(c.rules.len(), 3);
        // Defaults filled in for GitHub.
        assert_eq!(
            c.rules[0].author_association.as_deref(),
            Some(&["OWNER".to_string(), "MEMBER".into(), "COLLABORATOR".into()][..])
        );
        assert_eq!(
            c.rules[0].repo.as_deref(),
            Some("{{ repository.clone_url }}")
        );
        assert_eq!(c.rules[2].matches["/ok"], serde_json::json!(false));
        assert_eq!(c.rules[2].source(), Source::Generic("deploys".into()));
    }

    #[test]
    fn errors_name_the_field_and_the_allowed_values() {
        let rule = |body: &str| {
            parse_text(&format!(
                "{SOURCES}[[webhooks.rules]]\nname = \"r\"\n{body}\n"
            ))
            .unwrap_err()
        };
        let cases: &[(&str, &[&str])] = &[
            (
                "source = \"gitlab\"\nprompt = \"x\"",
                &[
                    "`source`",
                    "github, alertmanager, pagerduty or generic:NAME",
                ],
            ),
            (
                "source = \"generic:nope\"\nrepo = \"https://x/y\"\nprompt = \"x\"",
                &["generic:nope", "[webhooks.generic.nope]"],
            ),
            (
                "source = \"github\"\nprompt = \"x\"",
                &["`event` is required", "issue_comment"],
            ),
            (
                "source = \"github\"\nevent = \"star\"\nprompt = \"x\"",
                &["`event`", "pull_request_review_comment"],
            ),
            (
                "source = \"github\"\nevent = \"push\"\ncomment_prefix = \"/w\"\nprompt = \"x\"",
                &["`comment_prefix`", "issue_comment"],
            ),
            (
                "source = \"github\"\nevent = \"issues\"\nauthor_association = [\"ADMIN\"]\nprompt = \"x\"",
                &["`author_association`", "COLLABORATOR", "OWNER"],
            ),
            (
                "source = \"github\"\nevent = \"issues\"\nauthor_association = []\nprompt = \"x\"",
                &["`author_association` is empty"],
            ),
            (
                "source = \"github\"\nevent = \"issues\"\nrepository = \"just-a-name\"\nprompt = \"x\"",
                &["`repository`", "owner/name"],
            ),
            (
                "source = \"github\"\nevent = \"issues\"\nlabels = { a = \"b\" }\nprompt = \"x\"",
                &["`labels` applies to alertmanager"],
            ),
            (
                "source = \"alertmanager\"\nstatus = \"open\"\nrepo = \"https://x/y\"\nprompt = \"x\"",
                &["`status`", "firing or resolved"],
            ),
            (
                "source = \"alertmanager\"\nprompt = \"x\"",
                &["`repo` is required"],
            ),
            (
                "source = \"pagerduty\"\nevent_type = \"triggered\"\nrepo = \"https://x/y\"\nprompt = \"x\"",
                &["`event_type`", "incident.triggered"],
            ),
            (
                "source = \"generic:deploys\"\nmatch = { env = \"prod\" }\nrepo = \"https://x/y\"\nprompt = \"x\"",
                &["`match`", "JSON pointer"],
            ),
            (
                "source = \"pagerduty\"\nrepo = \"https://x/y\"\nprompt = \"{{ event.id \"",
                &["`prompt`", "template"],
            ),
            (
                "source = \"pagerduty\"\nrepo = \"https://x/y\"\nprompt = \"  \"",
                &["`prompt` is empty"],
            ),
            (
                "source = \"pagerduty\"\nrepo = \"https://x/y\"\nprompt = \"x\"\nagent = \"gpt\"",
                &["`agent`", "claude-code"],
            ),
            (
                "source = \"pagerduty\"\nrepo = \"https://x/y\"\nprompt = \"x\"\ntemplate = \"Big\"",
                &["`template`"],
            ),
            (
                "source = \"pagerduty\"\nrepo = \"https://x/y\"\nprompt = \"x\"\ncolour = \"red\"",
                &["unknown field `colour`"],
            ),
        ];
        for (body, wants) in cases {
            let e = rule(body);
            for want in *wants {
                assert!(e.contains(want), "{body}: {e}");
            }
        }
        // Names: valid and unique.
        let e = parse_text(&format!(
            "{SOURCES}[[webhooks.rules]]\nname = \"Bad Name\"\nsource = \"pagerduty\"\nrepo = \"https://x/y\"\nprompt = \"x\"\n"
        ))
        .unwrap_err();
        assert!(e.contains("`name`"), "{e}");
        let two = "[[webhooks.rules]]\nname = \"r\"\nsource = \"pagerduty\"\nrepo = \"https://x/y\"\nprompt = \"x\"\n";
        let e = parse_text(&format!("{SOURCES}{two}{two}")).unwrap_err();
        assert!(e.contains("unique"), "{e}");
        // Secrets: exactly one place, never inline.
        let e = parse_text("[webhooks.github]\n").unwrap_err();
        assert!(e.contains("exactly one of `secret_file`"), "{e}");
        let e = parse_text("[webhooks.github]\nsecret = \"hunter2\"\n").unwrap_err();
        assert!(e.contains("unknown field `secret`"), "{e}");
        let e = parse_text("[webhooks.gitlab]\nsecret_env = \"X\"\n").unwrap_err();
        assert!(e.contains("unknown field `gitlab`"), "{e}");
        let e = parse_text("[webhooks.generic.Bad]\nsecret_env = \"X\"\n").unwrap_err();
        assert!(e.contains("Bad"), "{e}");
    }

    #[test]
    fn secrets_are_read_and_checked_but_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("s");
        std::fs::write(&file, "  0123456789abcdef0123\n").unwrap();
        let by_file = SecretRef {
            secret_file: Some(file),
            secret_env: None,
        };
        let no_env = |_: &str| None;
        let s = by_file.resolve("webhooks.github", &no_env).unwrap();
        assert_eq!(s.expose(), "0123456789abcdef0123");
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        let by_env = SecretRef {
            secret_file: None,
            secret_env: Some("WH".into()),
        };
        let e = by_env.resolve("webhooks.github", &no_env).unwrap_err();
        assert!(e.contains("$WH is not set"), "{e}");
        let short = |_: &str| Some("short-secret".to_string());
        let e = by_env.resolve("webhooks.github", &short).unwrap_err();
        assert!(
            e.contains("shorter than 16") && !e.contains("short-secret"),
            "{e}"
        );
        let missing = SecretRef {
            secret_file: Some(dir.path().join("nope")),
            secret_env: None,
        };
        let e = missing.resolve("webhooks.github", &no_env).unwrap_err();
        assert!(e.contains("`secret_file`"), "{e}");
    }
}
