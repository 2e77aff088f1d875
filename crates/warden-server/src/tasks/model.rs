//! What a task is: the submission a client sends, the validated spec with its defaults,
//! the stored task with its status and result, and the events of its log. Pure: no I/O.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// The default per-task timeout: 30 minutes.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// The longest timeout a task may ask for: 7 days.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);
/// The longest task text.
pub const MAX_TASK_LEN: usize = 100_000;
/// At most this many `env` entries.
pub const MAX_ENV: usize = 64;

/// Where a task is in its life.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TaskStatus {
    /// Waiting for a free runner.
    Queued,
    /// A runner has it: sandbox, clone, agent, push.
    Running,
    /// Its agent waits for a person to approve a tool call.
    WaitingApproval,
    /// Done: pushed, or nothing to change.
    Succeeded,
    /// Something failed; `reason` says what.
    Failed,
    /// Cancelled by a client.
    Canceled,
    /// It ran past its timeout.
    TimedOut,
}

impl TaskStatus {
    pub const ALL: [TaskStatus; 7] = [
        TaskStatus::Queued,
        TaskStatus::Running,
        TaskStatus::WaitingApproval,
        TaskStatus::Succeeded,
        TaskStatus::Failed,
        TaskStatus::Canceled,
        TaskStatus::TimedOut,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Queued => "QUEUED",
            TaskStatus::Running => "RUNNING",
            TaskStatus::WaitingApproval => "WAITING_APPROVAL",
            TaskStatus::Succeeded => "SUCCEEDED",
            TaskStatus::Failed => "FAILED",
            TaskStatus::Canceled => "CANCELED",
            TaskStatus::TimedOut => "TIMED_OUT",
        }
    }

    /// Parses a status as the API writes it (case-insensitive); the error lists them all.
    pub fn parse(s: &str) -> Result<TaskStatus, String> {
        TaskStatus::ALL
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                format!(
                    "`{s}` is not a task status; use one of {}",
                    TaskStatus::ALL.map(|t| t.as_str()).join(", ")
                )
            })
    }

    /// Finished for good: SUCCEEDED, FAILED, CANCELED or TIMED_OUT.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskStatus::Succeeded
                | TaskStatus::Failed
                | TaskStatus::Canceled
                | TaskStatus::TimedOut
        )
    }

    /// Held by a runner: RUNNING or WAITING_APPROVAL.
    pub fn is_active(self) -> bool {
        matches!(self, TaskStatus::Running | TaskStatus::WaitingApproval)
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which agent works on the task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum AgentKind {
    /// warden's own agent loop, with any model.
    #[default]
    Warden,
    /// Claude Code, headless, in the sandbox.
    ClaudeCode,
    /// Codex, headless, in the sandbox.
    Codex,
}

impl AgentKind {
    pub const NAMES: &'static str = "warden, claude-code, codex";

    pub fn as_str(self) -> &'static str {
        match self {
            AgentKind::Warden => "warden",
            AgentKind::ClaudeCode => "claude-code",
            AgentKind::Codex => "codex",
        }
    }

    pub fn parse(s: &str) -> Option<AgentKind> {
        match s {
            "warden" => Some(AgentKind::Warden),
            "claude-code" => Some(AgentKind::ClaudeCode),
            "codex" => Some(AgentKind::Codex),
            _ => None,
        }
    }
}

/// A timeout as sent: seconds, or a duration such as `"30m"` or `"1h 30m"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TimeoutValue {
    Seconds(f64),
    Text(String),
}

impl TimeoutValue {
    /// The duration, or why it is not one.
    pub fn to_duration(&self) -> Result<Duration, String> {
        let d = match self {
            TimeoutValue::Seconds(s) => {
                if !s.is_finite() || *s <= 0.0 {
                    return Err(format!("{s} is not a positive number of seconds"));
                }
                Duration::from_secs_f64(s.min(MAX_TIMEOUT.as_secs_f64() * 2.0))
            }
            TimeoutValue::Text(t) => {
                let t = t.trim();
                if let Ok(secs) = t.parse::<f64>() {
                    return TimeoutValue::Seconds(secs).to_duration();
                }
                humantime::parse_duration(t).map_err(|e| {
                    format!("`{t}` is not a duration ({e}); give seconds (1800) or a duration such as \"30m\" or \"1h 30m\"")
                })?
            }
        };
        if d.is_zero() {
            return Err("must be more than zero".into());
        }
        if d > MAX_TIMEOUT {
            return Err(format!(
                "{} is longer than the maximum, {}",
                humantime::format_duration(d),
                humantime::format_duration(MAX_TIMEOUT)
            ));
        }
        Ok(d)
    }
}

/// What a client sends to `POST /v1/tasks`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskSubmission {
    /// The repository to clone: an `https://` (or `http://`) URL, without credentials.
    pub repo: String,
    /// What to do, in words: the agent's prompt.
    pub task: String,
    /// The branch to start from. Default: the repository's default branch.
    #[serde(default)]
    pub base_branch: Option<String>,
    /// The branch to create and push. Default: `warden/<task id>`.
    #[serde(default)]
    pub new_branch: Option<String>,
    /// `warden` (default), `claude-code` or `codex`.
    #[serde(default)]
    pub agent: Option<String>,
    /// The model, as `warden agent --model` takes it. Default: the server's.
    #[serde(default)]
    pub model: Option<String>,
    /// The sandbox template. Default: the server's task template.
    #[serde(default)]
    pub template: Option<String>,
    /// Seconds, or a duration such as `"30m"`. Default: 30 minutes.
    #[serde(default)]
    #[schema(value_type = Option<String>, example = "30m")]
    pub timeout: Option<TimeoutValue>,
    /// Extra environment variables for the agent's commands.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// A key that makes a retried submission return the first task instead of a second one
    /// (also taken from the `Idempotency-Key` header).
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

/// A problem with one field of a submission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Defaults the server applies to a submission.
#[derive(Debug, Clone)]
pub struct TaskDefaults {
    pub template: String,
    pub model: Option<String>,
    pub timeout: Duration,
}

impl Default for TaskDefaults {
    fn default() -> TaskDefaults {
        TaskDefaults {
            template: "default".into(),
            model: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// A validated submission with the defaults applied: what the runner works from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskSpec {
    pub repo: String,
    pub task: String,
    /// `None`: the remote's default branch.
    pub base_branch: Option<String>,
    pub new_branch: String,
    pub agent: AgentKind,
    pub model: Option<String>,
    pub template: String,
    pub timeout_secs: u64,
    pub env: BTreeMap<String, String>,
    pub idempotency_key: Option<String>,
}

impl TaskSubmission {
    /// Checks every field and applies `defaults`; every problem is reported, each naming its
    /// field and what is allowed.
    pub fn validate(self, id: &str, defaults: &TaskDefaults) -> Result<TaskSpec, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut bad = |field: &str, message: String| {
            errors.push(FieldError {
                field: field.into(),
                message,
            })
        };
        if let Err(m) = check_repo_url(&self.repo) {
            bad("repo", m);
        }
        if self.task.trim().is_empty() {
            bad("task", "is empty; say what the agent should do".into());
        } else if self.task.len() > MAX_TASK_LEN {
            bad(
                "task",
                format!("is {} bytes; at most {MAX_TASK_LEN}", self.task.len()),
            );
        }
        if let Some(b) = &self.base_branch
            && let Err(m) = check_branch(b)
        {
            bad("base_branch", m);
        }
        let new_branch = self
            .new_branch
            .clone()
            .unwrap_or_else(|| format!("warden/{id}"));
        if let Err(m) = check_branch(&new_branch) {
            bad("new_branch", m);
        }
        if self.base_branch.as_deref() == Some(new_branch.as_str()) {
            bad(
                "new_branch",
                format!("is the base branch `{new_branch}`; the task pushes a new branch"),
            );
        }
        let agent = match self.agent.as_deref() {
            None => AgentKind::Warden,
            Some(a) => AgentKind::parse(a).unwrap_or_else(|| {
                bad(
                    "agent",
                    format!("`{a}` is not an agent; use one of {}", AgentKind::NAMES),
                );
                AgentKind::Warden
            }),
        };
        let model = self.model.clone().or_else(|| defaults.model.clone());
        if let Some(m) = &self.model
            && (m.trim().is_empty() || m.len() > 200 || m.chars().any(char::is_control))
        {
            bad(
                "model",
                "must be 1 to 200 printable characters, such as anthropic/claude-sonnet-4-5".into(),
            );
        }
        let template = self
            .template
            .clone()
            .unwrap_or_else(|| defaults.template.clone());
        if !warden_policy::is_dns_label(&template) {
            bad(
                "template",
                format!(
                    "`{template}` is not a template name (lower-case letters, digits and `-`, at most 63)"
                ),
            );
        }
        let timeout = match &self.timeout {
            None => defaults.timeout,
            Some(t) => t.to_duration().unwrap_or_else(|m| {
                bad("timeout", m);
                defaults.timeout
            }),
        };
        if self.env.len() > MAX_ENV {
            bad(
                "env",
                format!("has {} variables; at most {MAX_ENV}", self.env.len()),
            );
        }
        for (k, v) in &self.env {
            if let Err(m) = check_env_name(k) {
                bad(&format!("env.{k}"), m);
            }
            if v.contains('\0') {
                bad(&format!("env.{k}"), "contains a NUL byte".into());
            }
        }
        if let Some(k) = &self.idempotency_key
            && let Err(m) = check_idempotency_key(k)
        {
            bad("idempotency_key", m);
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(TaskSpec {
            repo: self.repo,
            task: self.task,
            base_branch: self.base_branch,
            new_branch,
            agent,
            model,
            template,
            timeout_secs: timeout.as_secs().max(1),
            env: self.env,
            idempotency_key: self.idempotency_key,
        })
    }
}

/// An idempotency key: 1 to 200 printable ASCII characters.
pub fn check_idempotency_key(k: &str) -> Result<(), String> {
    if k.is_empty() || k.len() > 200 || !k.bytes().all(|b| (0x21..0x7f).contains(&b)) {
        return Err("must be 1 to 200 printable ASCII characters without spaces".into());
    }
    Ok(())
}

/// A repository URL the task may clone: `https://` or `http://`, a host, a path, no
/// credentials, no whitespace.
pub fn check_repo_url(url: &str) -> Result<(), String> {
    const HINT: &str = "give an https:// URL such as https://github.com/org/repo.git";
    if url.is_empty() {
        return Err(format!("is empty; {HINT}"));
    }
    if url.len() > 2048 {
        return Err("is longer than 2048 characters".into());
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("`{url}` contains whitespace or control characters"));
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!(
            "`{url}` is not a URL (only https:// and http:// are cloned, through the egress proxy); {HINT}"
        ));
    };
    if scheme != "https" && scheme != "http" {
        return Err(format!(
            "scheme `{scheme}` is not supported: clones go through the egress proxy, which speaks https:// and http:// only; {HINT}"
        ));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        return Err(
            "contains credentials; credentials never enter a sandbox: configure a credential route for the host instead"
                .into(),
        );
    }
    let host = authority
        .rsplit_once(':')
        .filter(|(_, p)| p.chars().all(|c| c.is_ascii_digit()) && !authority.ends_with(']'))
        .map(|(h, _)| h)
        .unwrap_or(authority);
    if host.is_empty() {
        return Err(format!("`{url}` has no host; {HINT}"));
    }
    let path = &rest[authority.len()..];
    if path.trim_matches('/').is_empty() {
        return Err(format!("`{url}` names no repository path; {HINT}"));
    }
    if url.contains('?') || url.contains('#') {
        return Err("must not carry a query or fragment".into());
    }
    Ok(())
}

/// The host (and port, if any) of a URL [`check_repo_url`] accepted.
pub fn repo_host(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    rest.split(['/', '?', '#']).next()
}

/// A branch name as `git check-ref-format --branch` accepts it, and nothing git could take
/// for an option or a revision expression.
pub fn check_branch(name: &str) -> Result<(), String> {
    let fail = |why: &str| {
        Err(format!(
            "`{name}` is not a valid branch name: {why} (letters, digits, `-`, `_`, `.` and `/` between parts, such as feature/fix-login)"
        ))
    };
    if name.is_empty() {
        return fail("it is empty");
    }
    if name.len() > 255 {
        return fail("it is longer than 255 bytes");
    }
    if name.starts_with('-') {
        return fail("it starts with `-`");
    }
    if name == "@" || name.contains("@{") {
        return fail("it is `@` or contains `@{`");
    }
    if name.contains("..") || name.contains("//") {
        return fail("it contains `..` or `//`");
    }
    if name.starts_with('/') || name.ends_with('/') || name.ends_with('.') {
        return fail("it starts or ends with `/`, or ends with `.`");
    }
    if name
        .chars()
        .any(|c| c.is_ascii_control() || c.is_whitespace() || "~^:?*[\\".contains(c))
    {
        return fail("it contains a space, a control character or one of ~ ^ : ? * [ \\");
    }
    for part in name.split('/') {
        if part.starts_with('.') || part.ends_with(".lock") {
            return fail("a part starts with `.` or ends with `.lock`");
        }
    }
    if name == "HEAD" {
        return fail("`HEAD` is reserved");
    }
    Ok(())
}

/// Variables a task may set: a portable name, and none that changes how a program loads.
pub fn check_env_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let portable = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !portable {
        return Err(format!(
            "`{name}` is not a variable name (letters, digits and `_`, not starting with a digit)"
        ));
    }
    if warden_policy::is_injection_variable(name) {
        return Err(format!(
            "`{name}` changes how programs load or start (such as LD_PRELOAD, BASH_ENV, NODE_OPTIONS) and is never passed into a sandbox"
        ));
    }
    Ok(())
}

/// A point in time, in milliseconds since the Unix epoch; RFC 3339 on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn now() -> Timestamp {
        Timestamp(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0),
        )
    }

    pub fn millis(self) -> i64 {
        self.0
    }

    pub fn rfc3339(self) -> String {
        let t = UNIX_EPOCH + Duration::from_millis(self.0.max(0) as u64);
        humantime::format_rfc3339_millis(t).to_string()
    }

    pub fn parse(s: &str) -> Result<Timestamp, String> {
        let t = humantime::parse_rfc3339_weak(s)
            .map_err(|e| format!("`{s}` is not an RFC 3339 time ({e})"))?;
        Ok(Timestamp(
            t.duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0),
        ))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        let s = String::deserialize(d)?;
        Timestamp::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Tokens a task's agent used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenUsage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// A task: its spec, where it is, and what came of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Task {
    /// `task-` and 12 random characters.
    pub id: String,
    pub status: TaskStatus,
    #[serde(flatten)]
    pub spec: TaskSpec,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub started_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub finished_at: Option<Timestamp>,
    /// The commit pushed to `new_branch`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// What the agent said it did, or "no changes".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// Why it failed, timed out or was cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default)]
    pub usage: TokenUsage,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    /// The sandbox it runs in, while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    /// The `warden serve` replica running it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// How many times a runner claimed it (1 for a task that ran once).
    #[serde(default)]
    pub attempts: u32,
    /// A client asked to cancel it while it ran; its runner stops it.
    #[serde(default)]
    pub cancel_requested: bool,
}

impl Task {
    /// A new QUEUED task.
    pub fn new(id: String, spec: TaskSpec, now: Timestamp) -> Task {
        Task {
            id,
            status: TaskStatus::Queued,
            spec,
            created_at: now,
            updated_at: now,
            started_at: None,
            finished_at: None,
            commit: None,
            summary: None,
            reason: None,
            usage: TokenUsage::default(),
            cost_usd: None,
            sandbox: None,
            owner: None,
            attempts: 0,
            cancel_requested: false,
        }
    }
}

/// A new task id: `task-` and 12 lower-case letters and digits.
pub fn new_task_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = [0u8; 12];
    // The OS generator does not fail on Linux after boot; fall back to the clock if it did.
    if getrandom::fill(&mut bytes).is_err() {
        let n = Timestamp::now().0 as u64;
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = (n >> (i * 5)) as u8;
        }
    }
    let s: String = bytes
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect();
    format!("task-{s}")
}

/// Whether `s` has the shape of a task id.
pub fn is_task_id(s: &str) -> bool {
    s.strip_prefix("task-").is_some_and(|r| {
        !r.is_empty()
            && r.len() <= 64
            && r.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    })
}

/// One entry of a task's log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskEvent {
    /// Increasing within a task, from 1.
    pub seq: i64,
    #[schema(value_type = String, format = DateTime)]
    pub time: Timestamp,
    /// `status` (`{status, reason?}`), `step` (`{step, ...}`: sandbox, clone, branch, agent,
    /// commit, push), `log` (`{stream, text}`: git's and the agent's output), `agent` (one
    /// `AgentEvent` as JSON).
    pub kind: String,
    #[schema(value_type = Object)]
    pub data: Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(repo: &str) -> TaskSubmission {
        TaskSubmission {
            repo: repo.into(),
            task: "fix the typo".into(),
            ..TaskSubmission::default()
        }
    }

    #[test]
    fn defaults_apply() {
        let spec = sub("https://example.com/org/repo.git")
            .validate("task-abc", &TaskDefaults::default())
            .unwrap();
        assert_eq!(spec.new_branch, "warden/task-abc");
        assert_eq!(spec.timeout_secs, 1800);
        assert_eq!(spec.agent, AgentKind::Warden);
        assert_eq!(spec.template, "default");
        assert_eq!(spec.base_branch, None);
    }

    #[test]
    fn every_bad_field_is_named() {
        let mut s = sub("git@github.com:org/repo.git");
        s.task = " ".into();
        s.base_branch = Some("main..x".into());
        s.new_branch = Some("-rf".into());
        s.agent = Some("gpt".into());
        s.template = Some("Bad_Name".into());
        s.timeout = Some(TimeoutValue::Text("soon".into()));
        s.env.insert("LD_PRELOAD".into(), "x".into());
        s.env.insert("1X".into(), "x".into());
        s.idempotency_key = Some("has space".into());
        let errs = s.validate("task-x", &TaskDefaults::default()).unwrap_err();
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "repo",
                "task",
                "base_branch",
                "new_branch",
                "agent",
                "template",
                "timeout",
                "env.1X",
                "env.LD_PRELOAD",
                "idempotency_key"
            ]
        );
        let agent = errs.iter().find(|e| e.field == "agent").unwrap();
        assert!(agent.message.contains("claude-code"), "{agent}");
    }

    #[test]
    fn repo_urls() {
        for ok in [
            "https://github.com/org/repo.git",
            "http://127.0.0.1:8080/repo.git",
            "https://[::1]:8443/r",
            "https://git.example.com/a/b/c",
        ] {
            assert_eq!(check_repo_url(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "github.com/org/repo",
            "ssh://git@github.com/org/repo",
            "file:///etc",
            "https://user:token@github.com/org/repo",
            "https://github.com",
            "https://github.com/",
            "https:///repo",
            "https://github.com/org/repo?x=1",
            "https://github.com/org/re po",
        ] {
            assert!(check_repo_url(bad).is_err(), "{bad}");
        }
        assert_eq!(
            repo_host("https://git.example.com:8443/a/b"),
            Some("git.example.com:8443")
        );
    }

    #[test]
    fn branches() {
        for ok in ["main", "feature/fix-login", "warden/task-abc", "v1.2"] {
            assert_eq!(check_branch(ok), Ok(()), "{ok}");
        }
        for bad in [
            "", "-x", "a..b", "a//b", "/a", "a/", "a.", "a b", "a~1", "a^", "a:b", "a?", "a*",
            "a[", "a\\b", ".hidden", "x/.y", "x.lock", "@", "a@{1}", "HEAD", "a\u{7f}",
        ] {
            assert!(check_branch(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn timeouts() {
        let d = |v: TimeoutValue| v.to_duration();
        assert_eq!(d(TimeoutValue::Seconds(90.0)), Ok(Duration::from_secs(90)));
        assert_eq!(
            d(TimeoutValue::Text("30m".into())),
            Ok(Duration::from_secs(1800))
        );
        assert_eq!(
            d(TimeoutValue::Text("1h 30m".into())),
            Ok(Duration::from_secs(5400))
        );
        assert_eq!(
            d(TimeoutValue::Text("600".into())),
            Ok(Duration::from_secs(600))
        );
        assert!(d(TimeoutValue::Seconds(0.0)).is_err());
        assert!(d(TimeoutValue::Seconds(-5.0)).is_err());
        assert!(d(TimeoutValue::Text("8d".into())).is_err());
        assert!(d(TimeoutValue::Text("0s".into())).is_err());
        assert!(d(TimeoutValue::Text("forever".into())).is_err());
    }

    #[test]
    fn status_wire_names() {
        for s in TaskStatus::ALL {
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.as_str()));
            assert_eq!(TaskStatus::parse(&s.as_str().to_lowercase()), Ok(s));
        }
        let e = TaskStatus::parse("DONE").unwrap_err();
        assert!(e.contains("TIMED_OUT"), "{e}");
    }

    #[test]
    fn task_round_trips_with_rfc3339_times() {
        let spec = sub("https://example.com/r.git")
            .validate("task-1", &TaskDefaults::default())
            .unwrap();
        let t = Task::new("task-1".into(), spec, Timestamp(1_700_000_000_123));
        let json = serde_json::to_value(&t).unwrap();
        assert_eq!(json["created_at"], "2023-11-14T22:13:20.123Z");
        assert_eq!(json["repo"], "https://example.com/r.git");
        assert_eq!(json["status"], "QUEUED");
        let back: Task = serde_json::from_value(json).unwrap();
        assert_eq!(back, t);
    }

    #[test]
    fn ids() {
        let id = new_task_id();
        assert!(is_task_id(&id), "{id}");
        assert_ne!(id, new_task_id());
        assert!(!is_task_id("sbx-1"));
        assert!(!is_task_id("task-../x"));
    }
}
