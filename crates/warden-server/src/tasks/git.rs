//! The git workflow of a task, run in its sandbox: clone the repository through the sandbox's
//! egress proxy, create the task's branch from the base branch, and after the agent worked,
//! commit and push that branch.
//!
//! Owns: the choice of the URL git talks to ([`choose_remote`]: a credential route of the
//! sandbox's template whose upstream serves the repository, so the proxy adds the secret, or
//! the repository's own URL through `HTTP(S)_PROXY`), the git command lines (argv only, with
//! settings that keep git from prompting, reading the user's or the system's config, running
//! hooks or speaking anything but http(s)), and the reading of git's failures
//! ([`GitError`], one line each for the task's `reason`).
//! Must never: put a secret where the sandbox can read it (remote URL, `.git/config`, argv,
//! environment), build a shell command from user input, or push anything but the task's
//! branch to the remote it cloned from.
//!
//! Every git command runs in the sandbox through [`Driver::exec_stream`]; its output lines go
//! to the caller's log as they come.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tracing::Instrument;
use warden_policy::{PolicyFile, RouteKind};
use warden_sandbox::{Driver, DriverError, StdinMsg, StreamItem};
use warden_sandboxd::proto::{Command, ErrorBody, ExecControl, ExecEvent, ExecRequest};

use super::model::{TaskSpec, repo_host};

/// The checkout, relative to the sandbox's workspace.
pub const CHECKOUT_DIR: &str = "repo";

/// Longest one-line reason [`GitError::reason`] gives.
pub const MAX_REASON: usize = 600;

/// How git runs for tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitConfig {
    /// Author and committer of the task's commit.
    pub author_name: String,
    pub author_email: String,
    /// `--depth` of the clone; `None` clones the base branch's whole history. A shallow clone
    /// pushes fine: the new commit's parent is the base branch's tip, which the remote has.
    pub depth: Option<u32>,
    /// Limit for a command that talks to the remote (clone, push).
    pub network_timeout: Duration,
    /// Limit for a local command (add, commit, rev-parse, ...).
    pub local_timeout: Duration,
    /// Lines of one command's output that go to the log; the rest is counted, not logged.
    pub max_log_lines: usize,
}

impl Default for GitConfig {
    fn default() -> GitConfig {
        GitConfig {
            author_name: "warden".into(),
            author_email: "warden@localhost".into(),
            depth: Some(1),
            network_timeout: Duration::from_secs(10 * 60),
            local_timeout: Duration::from_secs(2 * 60),
            max_log_lines: 500,
        }
    }
}

/// Which output a [`GitLog`] line comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GitStream {
    /// The git command about to run (its subcommand and arguments; never a secret).
    Command,
    Stdout,
    Stderr,
}

impl GitStream {
    pub fn as_str(self) -> &'static str {
        match self {
            GitStream::Command => "command",
            GitStream::Stdout => "stdout",
            GitStream::Stderr => "stderr",
        }
    }
}

impl fmt::Display for GitStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line for the task's log (`log` events: `{stream, text}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitLog {
    pub stream: GitStream,
    pub text: String,
}

/// A credential route of a template that can carry git: its name, kind and upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitRoute {
    pub name: String,
    pub kind: RouteKind,
    /// The upstream base URL, without a trailing `/`.
    pub upstream: String,
}

/// The URL git talks to, and how it gets there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "via", rename_all = "snake_case")]
pub enum Remote {
    /// Through credential route `route`: `url` is the route's URL as the sandbox sees it
    /// (`http://127.0.0.1:3128/<route>/<path>`); the proxy adds the secret on the way out.
    Route { route: String, url: String },
    /// The repository's own URL, through the egress proxy (`HTTP(S)_PROXY` in the sandbox).
    Proxy { url: String },
}

impl Remote {
    pub fn url(&self) -> &str {
        match self {
            Remote::Route { url, .. } | Remote::Proxy { url } => url,
        }
    }

    pub fn route(&self) -> Option<&str> {
        match self {
            Remote::Route { route, .. } => Some(route),
            Remote::Proxy { .. } => None,
        }
    }
}

impl fmt::Display for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Remote::Route { route, url } => write!(f, "{url} (credential route `{route}`)"),
            Remote::Proxy { url } => write!(f, "{url} (through the egress proxy)"),
        }
    }
}

/// What [`clone_and_branch`] made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkout {
    /// The checkout, relative to the workspace ([`CHECKOUT_DIR`]).
    pub dir: String,
    /// The repository as the task names it.
    pub repo: String,
    /// What git talks to (also `origin` in the checkout).
    pub remote: Remote,
    /// The branch checked out before branching: the task's, or the remote's default.
    pub base_branch: String,
    /// Its tip; `None` for an empty repository.
    pub base_commit: Option<String>,
    /// The branch created, and pushed later.
    pub new_branch: String,
}

/// What [`commit_and_push`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum PushResult {
    /// The agent changed nothing: no commit, nothing pushed.
    NoChanges,
    /// `commit` (full SHA) is now the tip of the task's `new_branch` on the remote.
    Pushed { commit: String },
}

/// Why a step of the git workflow failed. Each names what went wrong with git's own words;
/// [`GitError::reason`] is the one line a task shows.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GitError {
    #[error(
        "repository {repo} not found: {detail}; check the URL, and that the credential may read it"
    )]
    RepoNotFound { repo: String, detail: String },
    #[error("cannot reach {repo}: {detail}")]
    Unreachable { repo: String, detail: String },
    #[error(
        "{host} is not allowed by the sandbox's egress policy ({detail}); add it to the template's network.allow_domains (or allow_cidrs), or give the template a credential route for it"
    )]
    EgressDenied { host: String, detail: String },
    #[error(
        "authentication to {repo} failed: {detail}; give the template a credential route (kind \"git\") for {host} with a token that may read and push"
    )]
    AuthFailed {
        repo: String,
        host: String,
        detail: String,
    },
    #[error("base branch `{branch}` does not exist in {repo}: {detail}")]
    UnknownBaseBranch {
        repo: String,
        branch: String,
        detail: String,
    },
    #[error("the push of branch `{branch}` to {repo} was rejected: {detail}")]
    PushRejected {
        repo: String,
        branch: String,
        detail: String,
    },
    #[error("`{command}` did not finish within {}", humantime::format_duration(*.after))]
    TimedOut { command: String, after: Duration },
    #[error("`{command}` failed with exit code {code}: {stderr}")]
    Failed {
        command: String,
        code: i32,
        stderr: String,
    },
    #[error("the credential routes of template `{template}` cannot be read: {message}")]
    Routes { template: String, message: String },
    #[error("sandbox {sandbox}: {error}")]
    Sandbox { sandbox: String, error: DriverError },
}

impl GitError {
    /// The error on one line of at most [`MAX_REASON`] bytes, for the task's `reason`.
    pub fn reason(&self) -> String {
        one_line(&self.to_string(), MAX_REASON)
    }
}

/// The routes of a template's policy (`[routes.NAME]`) that can carry git: kinds `git` and
/// `generic` (the model kinds' upstreams are APIs, not repositories).
pub fn git_routes(policy: &toml::Table) -> Result<Vec<GitRoute>, String> {
    let file: PolicyFile = toml::Value::Table(policy.clone())
        .try_into()
        .map_err(|e: toml::de::Error| e.to_string())?;
    let mut routes = Vec::new();
    for (name, route) in file.routes {
        let spec = route
            .resolve(&name, &format!("routes.{name}"))
            .map_err(|e| e.to_string())?;
        if matches!(spec.kind, RouteKind::Git | RouteKind::Generic) {
            routes.push(GitRoute {
                name: spec.name,
                kind: spec.kind,
                upstream: spec.upstream,
            });
        }
    }
    Ok(routes)
}

/// The variable holding route `name`'s URL in a sandbox (see
/// `warden_policy::proxy_environment`): `WARDEN_ROUTE_<NAME>`, `-` as `_`.
pub fn route_variable(name: &str) -> String {
    format!(
        "WARDEN_ROUTE_{}",
        name.to_ascii_uppercase().replace('-', "_")
    )
}

/// A URL split into what route matching compares.
#[derive(Debug, Clone, PartialEq, Eq)]
struct UrlParts<'a> {
    scheme: String,
    host: String,
    port: u16,
    /// From the first `/` after the authority; empty when there is none.
    path: &'a str,
}

fn url_parts(url: &str) -> Option<UrlParts<'_>> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "https" => 443,
        "http" => 80,
        _ => return None,
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if authority.is_empty() || authority.contains('@') || path.contains(['?', '#']) {
        return None;
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => default_port,
            None => return None,
        };
        (format!("[{}]", host.to_ascii_lowercase()), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_ascii_lowercase(), p.parse().ok()?),
            None => (authority.to_ascii_lowercase(), default_port),
        }
    };
    if host.is_empty() {
        return None;
    }
    Some(UrlParts {
        scheme,
        host: host.trim_end_matches('.').to_string(),
        port,
        path,
    })
}

/// The route whose upstream serves `repo` (same scheme, host and port, and the repository's
/// path below the upstream's), with the part of the path below it (starting with `/`). The
/// longest upstream path wins; among equals a `git` route before a `generic` one, then the
/// first in order.
pub fn matching_route<'a>(repo: &str, routes: &'a [GitRoute]) -> Option<(&'a GitRoute, String)> {
    let r = url_parts(repo)?;
    let mut best: Option<(&GitRoute, &str, usize)> = None;
    for route in routes {
        let Some(u) = url_parts(&route.upstream) else {
            continue;
        };
        if u.scheme != r.scheme || u.host != r.host || u.port != r.port {
            continue;
        }
        let base = u.path.trim_end_matches('/');
        let Some(rest) = r.path.strip_prefix(base) else {
            continue;
        };
        if !rest.starts_with('/') || rest.trim_matches('/').is_empty() {
            continue;
        }
        let better = match best {
            None => true,
            Some((b, _, len)) => {
                base.len() > len
                    || (base.len() == len
                        && b.kind != RouteKind::Git
                        && route.kind == RouteKind::Git)
            }
        };
        if better {
            best = Some((route, rest, base.len()));
        }
    }
    best.map(|(route, rest, _)| (route, rest.to_string()))
}

/// The URL git uses for `repo` in a sandbox: through the credential route that serves it,
/// at the route's URL as the sandbox sees it (`route_url(name)`, the sandbox's
/// `WARDEN_ROUTE_<NAME>`), else the repository's own URL through the proxy. A route the
/// sandbox has no URL for (`route_url` answers `None`) is not used.
pub fn choose_remote(
    repo: &str,
    routes: &[GitRoute],
    route_url: impl Fn(&str) -> Option<String>,
) -> Remote {
    if let Some((route, rest)) = matching_route(repo, routes)
        && let Some(base) = route_url(&route.name).filter(|b| !b.trim().is_empty())
    {
        return Remote::Route {
            route: route.name.clone(),
            url: format!("{}{rest}", base.trim().trim_end_matches('/')),
        };
    }
    Remote::Proxy {
        url: repo.to_string(),
    }
}

/// The `-c` settings every git command gets: no hooks, no credential helper or prompt, no
/// pager, editor, fsmonitor, signing, submodule recursion or background maintenance, http(s)
/// only, stalled transfers abort, and warden's identity.
fn git_settings(cfg: &GitConfig) -> Vec<String> {
    let mut settings: Vec<String> = [
        "core.hooksPath=/dev/null",
        "credential.helper=",
        "core.askPass=",
        "core.fsmonitor=false",
        "core.pager=cat",
        "core.editor=true",
        "http.extraHeader=",
        "protocol.allow=never",
        "protocol.http.allow=always",
        "protocol.https.allow=always",
        "submodule.recurse=false",
        "fetch.recurseSubmodules=false",
        "push.recurseSubmodules=no",
        "gc.auto=0",
        "maintenance.auto=false",
        "commit.gpgSign=false",
        "tag.gpgSign=false",
        "push.gpgSign=false",
        "http.lowSpeedLimit=1000",
        "http.lowSpeedTime=60",
        "advice.detachedHead=false",
        "color.ui=false",
        "init.defaultBranch=main",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    settings.push(format!("user.name={}", cfg.author_name));
    settings.push(format!("user.email={}", cfg.author_email));
    settings
}

/// The argv of `git <args>`: `git`, each setting as `-c KEY=VALUE`, then `args` as given.
pub fn git_argv(cfg: &GitConfig, args: &[&str]) -> Vec<String> {
    let mut argv = vec!["git".to_string()];
    for s in git_settings(cfg) {
        argv.push("-c".into());
        argv.push(s);
    }
    argv.extend(args.iter().map(|a| a.to_string()));
    argv
}

/// The variables every git command gets on top of the sandbox's: no prompt, no askpass, no
/// system or global config (nor the sandbox's `GIT_CONFIG_*` rewrites: the route was chosen
/// here), http(s) only, messages in English (they are read), and the identity.
pub fn git_env(cfg: &GitConfig) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    let mut set = |k: &str, v: &str| {
        env.insert(k.to_string(), v.to_string());
    };
    set("GIT_TERMINAL_PROMPT", "0");
    set("GIT_ASKPASS", "");
    set("SSH_ASKPASS", "");
    set("GCM_INTERACTIVE", "never");
    set("GIT_CONFIG_NOSYSTEM", "1");
    set("GIT_CONFIG_SYSTEM", "/dev/null");
    set("GIT_CONFIG_GLOBAL", "/dev/null");
    set("GIT_CONFIG_COUNT", "0");
    set("GIT_CONFIG_PARAMETERS", "");
    set("GIT_ALLOW_PROTOCOL", "http:https");
    set("GIT_PROTOCOL_FROM_USER", "0");
    set("GIT_EDITOR", "true");
    set("GIT_PAGER", "cat");
    set("PAGER", "cat");
    set("GIT_TRACE", "0");
    set("GIT_TRACE_PACKET", "0");
    set("GIT_TRACE_CURL", "0");
    // Not GIT_CURL_VERBOSE: git turns curl's trace on when it is set at all, even to 0.
    set("LC_ALL", "C");
    set("LANGUAGE", "C");
    set("GIT_AUTHOR_NAME", &cfg.author_name);
    set("GIT_AUTHOR_EMAIL", &cfg.author_email);
    set("GIT_COMMITTER_NAME", &cfg.author_name);
    set("GIT_COMMITTER_EMAIL", &cfg.author_email);
    env
}

/// What a git command printed and how it ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GitOutput {
    /// `git` and the arguments after the `-c` settings, for messages.
    pub command: String,
    pub code: i32,
    pub timed_out: bool,
    pub stdout: String,
    pub stderr: String,
}

/// A network step, for reading its failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkStep<'a> {
    Clone { base_branch: Option<&'a str> },
    Push { branch: &'a str },
}

/// Reads why a clone or push failed from git's output. `repo` is the repository as the task
/// names it (messages name it, not the route's URL).
pub fn classify_failure(step: NetworkStep<'_>, repo: &str, out: &GitOutput) -> GitError {
    let host = repo_host(repo).unwrap_or(repo).to_string();
    if out.code == 127 {
        return failed(out);
    }
    let err = out.stderr.as_str();
    let lower = err.to_ascii_lowercase();
    let detail = summarize(err);
    // The proxy's own refusal: its 403 body (plain HTTP, shown as `remote: warden: ...`) or
    // the 403 answer to CONNECT (https), which only the proxy gives.
    let egress_denied = (lower.contains("warden: egress to") && lower.contains("is not allowed"))
        || lower.contains("connect tunnel failed, response 403")
        || lower.contains("received http code 403 from proxy after connect");
    if egress_denied {
        let proxy_line = err
            .lines()
            .map(|l| l.trim().trim_start_matches("remote:").trim())
            .find(|l| l.starts_with("warden: egress to"))
            .map(|l| l.trim_start_matches("warden: ").to_string());
        return GitError::EgressDenied {
            host,
            detail: proxy_line.unwrap_or(detail),
        };
    }
    if let NetworkStep::Push { branch } = step
        && let Some(rejected) = push_rejection(&out.stdout, err)
    {
        return GitError::PushRejected {
            repo: repo.to_string(),
            branch: branch.to_string(),
            detail: rejected,
        };
    }
    if let NetworkStep::Clone {
        base_branch: Some(branch),
    } = step
        && lower.contains("remote branch")
        && lower.contains("not found")
    {
        return GitError::UnknownBaseBranch {
            repo: repo.to_string(),
            branch: branch.to_string(),
            detail,
        };
    }
    let auth = [
        "authentication failed",
        "could not read username",
        "could not read password",
        "terminal prompts disabled",
        "returned error: 401",
        "returned error: 403",
        "permission to ",
    ];
    if auth.iter().any(|p| lower.contains(p)) {
        return GitError::AuthFailed {
            repo: repo.to_string(),
            host,
            detail,
        };
    }
    let not_found = [
        "not found",
        "does not appear to be a git repository",
        "returned error: 404",
    ];
    if not_found.iter().any(|p| lower.contains(p)) {
        return GitError::RepoNotFound {
            repo: repo.to_string(),
            detail,
        };
    }
    let unreachable = [
        "could not resolve",
        "failed to connect",
        "connection refused",
        "connection timed out",
        "operation timed out",
        "connection reset",
        "empty reply from server",
        "returned error: 502",
        "returned error: 503",
        "returned error: 504",
        "connect tunnel failed",
        "from proxy after connect",
        "ssl certificate",
        "ssl_connect",
        "gnutls",
        "tls connect",
        "certificate verify",
        "unable to access",
        "transfer closed",
        "rpc failed",
        "the remote end hung up",
    ];
    if unreachable.iter().any(|p| lower.contains(p)) {
        return GitError::Unreachable {
            repo: repo.to_string(),
            detail,
        };
    }
    failed(out)
}

/// The refusal of a push, if it was refused: the `!` lines of `--porcelain` output, after
/// what the remote said (`remote:` lines: a hook's message).
fn push_rejection(stdout: &str, stderr: &str) -> Option<String> {
    let refused: Vec<String> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix('!'))
        .map(|l| {
            let mut parts = l.trim().splitn(2, '\t');
            let refspec = parts.next().unwrap_or_default();
            let summary = parts.next().unwrap_or_default();
            let dst = refspec.rsplit_once(':').map(|(_, d)| d).unwrap_or(refspec);
            format!(
                "{} {}",
                dst.trim_start_matches("refs/heads/"),
                summary.trim()
            )
        })
        .collect();
    let stderr_refused = stderr.lines().any(|l| {
        let l = l.trim_start();
        l.starts_with("! [") || l.contains("[rejected]") || l.contains("[remote rejected]")
    });
    if refused.is_empty() && !stderr_refused {
        return None;
    }
    let mut parts: Vec<String> = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("remote:"))
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .map(|l| format!("remote: {l}"))
        .collect();
    if refused.is_empty() {
        parts.extend(
            stderr
                .lines()
                .map(str::trim)
                .filter(|l| l.starts_with("! [") || l.starts_with("hint: Updates were rejected"))
                .map(String::from),
        );
    } else {
        parts.extend(refused);
    }
    if parts
        .iter()
        .any(|p| p.contains("(fetch first)") || p.contains("(non-fast-forward)"))
    {
        parts.push(
            "the branch exists on the remote with commits this push lacks; give the task another new_branch, or delete that branch"
                .into(),
        );
    }
    Some(one_line(&parts.join("; "), MAX_REASON - 100))
}

/// A command that failed for no reason read above.
fn failed(out: &GitOutput) -> GitError {
    let mut stderr = tail(out.stderr.trim(), 400);
    if out.code == 127 {
        stderr = format!("git is not installed in the sandbox (not on its PATH); {stderr}");
    }
    GitError::Failed {
        command: out.command.clone(),
        code: out.code,
        stderr: one_line(&stderr, 400),
    }
}

/// git's message on one line: what it said, without progress and hints, the end kept when long.
fn summarize(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .flat_map(|l| l.split('\r'))
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("Cloning into") && !l.starts_with("hint:"))
        .collect();
    tail(&lines.join("; "), 400)
}

/// The last `max` bytes of `s` (at a character boundary), with `...` in front when cut.
fn tail(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("...{}", &s[start..])
}

/// `s` on one line (line breaks and controls as spaces, runs of spaces collapsed), at most
/// `max` bytes.
fn one_line(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max));
    let mut space = false;
    for c in s.chars() {
        if c.is_whitespace() || c.is_control() {
            space = !out.is_empty();
            continue;
        }
        if space {
            out.push(' ');
            space = false;
        }
        out.push(c);
    }
    if out.len() > max {
        let mut end = max.saturating_sub(3);
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
        out.push_str("...");
    }
    out
}

/// One git command to run in the sandbox.
struct GitCall<'a> {
    /// Relative to the workspace; `None` for the workspace itself.
    cwd: Option<&'a str>,
    args: &'a [&'a str],
    stdin: Option<&'a str>,
    timeout: Duration,
    /// Log the output (false for commands whose output is only read).
    log_output: bool,
}

impl<'a> GitCall<'a> {
    /// A command that only works on the checkout.
    fn local(cwd: Option<&'a str>, args: &'a [&'a str], cfg: &GitConfig) -> GitCall<'a> {
        GitCall {
            cwd,
            args,
            stdin: None,
            timeout: cfg.local_timeout,
            log_output: true,
        }
    }

    /// A command that talks to the remote.
    fn network(cwd: Option<&'a str>, args: &'a [&'a str], cfg: &GitConfig) -> GitCall<'a> {
        GitCall {
            timeout: cfg.network_timeout,
            ..GitCall::local(cwd, args, cfg)
        }
    }

    /// Its output is read, not logged.
    fn quiet(mut self) -> GitCall<'a> {
        self.log_output = false;
        self
    }
}

/// The sandbox, the settings and the log a workflow step runs with.
struct Runner<'a> {
    driver: &'a dyn Driver,
    sandbox: &'a str,
    cfg: &'a GitConfig,
    log: &'a (dyn Fn(GitLog) + Send + Sync),
}

/// Output kept per stream for reading failures (the end is kept).
const KEEP_OUTPUT: usize = 256 * 1024;
/// Longest line logged.
const MAX_LOG_LINE: usize = 2000;

/// Splits one output stream into lines for the log (at most `max_lines`, each cut at
/// [`MAX_LOG_LINE`]), and keeps its end for reading failures.
struct LineLog {
    stream: GitStream,
    enabled: bool,
    max_lines: usize,
    partial: Vec<u8>,
    kept: Vec<u8>,
    logged: usize,
    dropped: usize,
}

impl LineLog {
    fn new(stream: GitStream, enabled: bool, max_lines: usize) -> LineLog {
        LineLog {
            stream,
            enabled,
            max_lines,
            partial: Vec::new(),
            kept: Vec::new(),
            logged: 0,
            dropped: 0,
        }
    }

    fn push(&mut self, bytes: &[u8], log: &(dyn Fn(GitLog) + Send + Sync)) {
        self.kept.extend_from_slice(bytes);
        if self.kept.len() > 2 * KEEP_OUTPUT {
            self.kept.drain(..self.kept.len() - KEEP_OUTPUT);
        }
        if !self.enabled {
            return;
        }
        self.partial.extend_from_slice(bytes);
        while let Some(pos) = self.partial.iter().position(|b| *b == b'\n' || *b == b'\r') {
            let line: Vec<u8> = self.partial.drain(..=pos).collect();
            self.emit(&line[..line.len() - 1], log);
        }
        if self.partial.len() > MAX_LOG_LINE {
            let line = std::mem::take(&mut self.partial);
            self.emit(&line, log);
        }
    }

    /// Logs the last unterminated line; the output kept.
    fn finish(&mut self, log: &(dyn Fn(GitLog) + Send + Sync)) -> String {
        if self.enabled && !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.emit(&line, log);
        }
        if self.kept.len() > KEEP_OUTPUT {
            self.kept.drain(..self.kept.len() - KEEP_OUTPUT);
        }
        String::from_utf8_lossy(&self.kept).into_owned()
    }

    fn emit(&mut self, line: &[u8], log: &(dyn Fn(GitLog) + Send + Sync)) {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end();
        if text.is_empty() {
            return;
        }
        if self.logged >= self.max_lines {
            self.dropped += 1;
            return;
        }
        self.logged += 1;
        let text = if text.len() > MAX_LOG_LINE {
            let mut end = MAX_LOG_LINE;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            format!("{}...", &text[..end])
        } else {
            text.to_string()
        };
        log(GitLog {
            stream: self.stream,
            text,
        });
    }
}

impl Runner<'_> {
    fn sandbox_error(&self, error: DriverError) -> GitError {
        GitError::Sandbox {
            sandbox: self.sandbox.to_string(),
            error,
        }
    }

    /// Runs git in the sandbox, streaming its output to the log. Fails only when the
    /// command could not run or did not finish; its exit code is the caller's to judge.
    async fn git(&self, call: GitCall<'_>) -> Result<GitOutput, GitError> {
        let command = format!("git {}", call.args.join(" "));
        (self.log)(GitLog {
            stream: GitStream::Command,
            text: command.clone(),
        });
        let mut request = ExecRequest::new(Command::Argv(git_argv(self.cfg, call.args)));
        request.env = git_env(self.cfg);
        request.cwd = call.cwd.map(String::from);
        request.timeout_ms = Some(call.timeout.as_millis().min(u64::MAX as u128) as u64);
        let timed_out = || GitError::TimedOut {
            command: command.clone(),
            after: call.timeout,
        };
        let run = async {
            let mut session = self
                .driver
                .exec_stream(self.sandbox, request)
                .await
                .map_err(|e| self.sandbox_error(e))?;
            if let Some(input) = call.stdin {
                let _ = session
                    .stdin
                    .send(StdinMsg::Data(Bytes::copy_from_slice(input.as_bytes())))
                    .await;
            }
            let _ = session
                .stdin
                .send(StdinMsg::Control(ExecControl::Eof))
                .await;
            let mut out = LineLog::new(GitStream::Stdout, call.log_output, self.cfg.max_log_lines);
            let mut err = LineLog::new(GitStream::Stderr, call.log_output, self.cfg.max_log_lines);
            let mut exit = None;
            while let Some(item) = session.output.recv().await {
                match item {
                    StreamItem::Stdout(b) => out.push(&b, self.log),
                    StreamItem::Stderr(b) => err.push(&b, self.log),
                    StreamItem::Event(ExecEvent::Exit {
                        exit_code,
                        timed_out,
                        ..
                    }) => {
                        exit = Some((exit_code, timed_out));
                        break;
                    }
                    StreamItem::Event(ExecEvent::Error { code, message }) => {
                        return Err(
                            self.sandbox_error(DriverError::Sandbox(ErrorBody { code, message }))
                        );
                    }
                    StreamItem::Event(_) => {}
                }
            }
            let stdout = out.finish(self.log);
            let stderr = err.finish(self.log);
            let not_logged = out.dropped + err.dropped;
            if not_logged > 0 {
                (self.log)(GitLog {
                    stream: GitStream::Stderr,
                    text: format!("({not_logged} more lines not logged)"),
                });
            }
            let Some((code, timed_out)) = exit else {
                return Err(self.sandbox_error(DriverError::Unavailable(format!(
                    "`{command}` in the sandbox ended without an exit status"
                ))));
            };
            Ok(GitOutput {
                command: command.clone(),
                code,
                timed_out,
                stdout,
                stderr,
            })
        };
        // sandboxd enforces `timeout_ms`; this is the backstop should it not answer.
        let out = match tokio::time::timeout(call.timeout + Duration::from_secs(15), run).await {
            Ok(r) => r?,
            Err(_) => return Err(timed_out()),
        };
        if out.timed_out {
            return Err(timed_out());
        }
        Ok(out)
    }

    /// A local command that must succeed.
    async fn git_ok(&self, cwd: Option<&str>, args: &[&str]) -> Result<GitOutput, GitError> {
        let out = self.git(GitCall::local(cwd, args, self.cfg)).await?;
        if out.code != 0 {
            return Err(failed(&out));
        }
        Ok(out)
    }

    /// The commit HEAD names; `None` while the branch is unborn (an empty repository).
    async fn head(&self, cwd: Option<&str>) -> Result<Option<String>, GitError> {
        let out = self
            .git(
                GitCall::local(
                    cwd,
                    &["rev-parse", "--verify", "--quiet", "HEAD^{commit}"],
                    self.cfg,
                )
                .quiet(),
            )
            .await?;
        Ok((out.code == 0)
            .then(|| out.stdout.trim().to_string())
            .filter(|s| !s.is_empty()))
    }

    /// The URL git uses for `repo` in this sandbox ([`choose_remote`] over the routes of
    /// the sandbox's template and the route URLs in its environment). `explain` logs the
    /// choice.
    async fn remote(&self, repo: &str, explain: bool) -> Result<Remote, GitError> {
        let routes = self.routes().await?;
        let Some((route, _)) = matching_route(repo, &routes) else {
            if explain {
                (self.log)(GitLog {
                    stream: GitStream::Stderr,
                    text: format!(
                        "no credential route serves {repo}; going through the egress proxy"
                    ),
                });
            }
            return Ok(choose_remote(repo, &routes, |_| None));
        };
        let var = route_variable(&route.name);
        let base = self.sandbox_var(&var).await?;
        if explain {
            let text = match &base {
                Some(_) => format!(
                    "credential route `{}` serves {repo}; the proxy adds its credential",
                    route.name
                ),
                None => format!(
                    "credential route `{}` serves {repo}, but the sandbox has no {var} (made before the route was added?); going through the egress proxy without it",
                    route.name
                ),
            };
            (self.log)(GitLog {
                stream: GitStream::Stderr,
                text,
            });
        }
        Ok(choose_remote(repo, &routes, |_| base.clone()))
    }

    /// The credential routes of the sandbox's template that can carry git.
    async fn routes(&self) -> Result<Vec<GitRoute>, GitError> {
        let info = self
            .driver
            .get(self.sandbox)
            .await
            .map_err(|e| self.sandbox_error(e))?;
        let templates = self.driver.templates().await;
        let Some(template) = templates.iter().find(|t| t.name == info.template) else {
            (self.log)(GitLog {
                stream: GitStream::Stderr,
                text: format!(
                    "template `{}` is gone; cloning without credential routes",
                    info.template
                ),
            });
            return Ok(Vec::new());
        };
        git_routes(&template.policy).map_err(|message| GitError::Routes {
            template: template.name.clone(),
            message,
        })
    }

    /// A variable of the sandbox's environment.
    async fn sandbox_var(&self, name: &str) -> Result<Option<String>, GitError> {
        let mut request = ExecRequest::new(Command::Argv(vec!["printenv".into(), name.into()]));
        request.timeout_ms = Some(10_000);
        let r = self
            .driver
            .exec(self.sandbox, request)
            .await
            .map_err(|e| self.sandbox_error(e))?;
        Ok((r.exit_code == 0)
            .then(|| r.stdout.trim_end_matches('\n').to_string())
            .filter(|v| !v.is_empty()))
    }

    async fn write_text(&self, path: &str, text: &str) -> Result<(), GitError> {
        let body = Bytes::copy_from_slice(text.as_bytes());
        let stream: warden_sandbox::ByteStream =
            Box::pin(futures_util::stream::once(async move { Ok(body) }));
        self.driver
            .write_file(self.sandbox, path, Some(0o644), stream)
            .await
            .map_err(|e| self.sandbox_error(e))
    }
}

/// Clones `spec.repo` into [`CHECKOUT_DIR`] of the sandbox's workspace (only the base
/// branch, `cfg.depth` deep), through the credential route of the sandbox's template that
/// serves the repository if there is one, else through the egress proxy; then creates
/// `spec.new_branch` from the base branch. A checkout left by an earlier attempt is removed
/// first.
pub async fn clone_and_branch(
    driver: &dyn Driver,
    sandbox: &str,
    spec: &TaskSpec,
    cfg: &GitConfig,
    log: &(dyn Fn(GitLog) + Send + Sync),
) -> Result<Checkout, GitError> {
    let span = tracing::info_span!("git_clone", sandbox, repo = %spec.repo);
    async {
        let run = Runner {
            driver,
            sandbox,
            cfg,
            log,
        };
        let remote = run.remote(&spec.repo, true).await?;
        if driver
            .exists(sandbox, CHECKOUT_DIR)
            .await
            .map_err(|e| run.sandbox_error(e))?
        {
            log(GitLog {
                stream: GitStream::Stderr,
                text: format!("removing the checkout `{CHECKOUT_DIR}` an earlier attempt left"),
            });
            driver
                .remove(sandbox, CHECKOUT_DIR, true)
                .await
                .map_err(|e| run.sandbox_error(e))?;
        }

        let depth = cfg.depth.map(|d| d.max(1).to_string());
        let mut args: Vec<&str> = vec!["clone", "--no-tags", "--single-branch"];
        if let Some(d) = &depth {
            args.extend(["--depth", d]);
        }
        if let Some(b) = &spec.base_branch {
            args.extend(["--branch", b]);
        }
        args.extend(["--", remote.url(), CHECKOUT_DIR]);
        let out = run.git(GitCall::network(None, &args, cfg)).await?;
        if out.code != 0 {
            return Err(classify_failure(
                NetworkStep::Clone {
                    base_branch: spec.base_branch.as_deref(),
                },
                &spec.repo,
                &out,
            ));
        }

        let dir = Some(CHECKOUT_DIR);
        let base_commit = run.head(dir).await?;
        let base_branch = match &spec.base_branch {
            Some(b) => b.clone(),
            None => run
                .git_ok(dir, &["symbolic-ref", "--quiet", "--short", "HEAD"])
                .await?
                .stdout
                .trim()
                .to_string(),
        };
        run.git_ok(dir, &["switch", "-c", &spec.new_branch]).await?;
        Ok(Checkout {
            dir: CHECKOUT_DIR.to_string(),
            repo: spec.repo.clone(),
            remote,
            base_branch,
            base_commit,
            new_branch: spec.new_branch.clone(),
        })
    }
    .instrument(span)
    .await
}

/// Commits what the agent changed in the checkout [`clone_and_branch`] made (`git add -A`;
/// author and committer from `cfg`; `message` as the commit message, whitespace tidied, `#`
/// lines kept) and pushes it as `spec.new_branch` to the remote it was cloned from (chosen
/// again the same way, never read from the checkout). Commits the agent made itself are
/// pushed too. [`PushResult::NoChanges`] when nothing is staged and no commit is missing from
/// the remote: nothing is pushed then.
///
/// The checkout's `.git/config` is rewritten first, keeping only what a clone writes (format,
/// `origin`, branch tracking): nothing the agent configured (filters, `insteadOf` or
/// `pushInsteadOf` rewrites, includes, extra headers) acts in these commands.
pub async fn commit_and_push(
    driver: &dyn Driver,
    sandbox: &str,
    spec: &TaskSpec,
    cfg: &GitConfig,
    message: &str,
    log: &(dyn Fn(GitLog) + Send + Sync),
) -> Result<PushResult, GitError> {
    let span =
        tracing::info_span!("git_push", sandbox, repo = %spec.repo, branch = %spec.new_branch);
    async {
        let run = Runner {
            driver,
            sandbox,
            cfg,
            log,
        };
        let dir = Some(CHECKOUT_DIR);
        let remote = run.remote(&spec.repo, false).await?;
        let listed = run
            .git(GitCall::local(dir, &["config", "--local", "--null", "--list"], cfg).quiet())
            .await?;
        if listed.code != 0 {
            return Err(failed(&listed));
        }
        run.write_text(
            &format!("{CHECKOUT_DIR}/.git/config"),
            &clone_config(&listed.stdout),
        )
        .await?;

        run.git_ok(dir, &["add", "-A"]).await?;
        let staged = run
            .git(GitCall::local(dir, &["diff", "--cached", "--quiet"], cfg).quiet())
            .await?;
        let changed = match staged.code {
            0 => false,
            1 => true,
            _ => return Err(failed(&staged)),
        };
        if changed {
            let message = if message.trim().is_empty() {
                "Changes made by a warden task"
            } else {
                message
            };
            let mut commit = GitCall::local(
                dir,
                &[
                    "commit",
                    "--no-verify",
                    "--no-gpg-sign",
                    "--cleanup=whitespace",
                    "--file=-",
                ],
                cfg,
            );
            commit.stdin = Some(message);
            let out = run.git(commit).await?;
            if out.code != 0 {
                return Err(failed(&out));
            }
        }
        let Some(head) = run.head(dir).await? else {
            log(GitLog {
                stream: GitStream::Stderr,
                text: "no changes: the repository is empty and nothing was added".into(),
            });
            return Ok(PushResult::NoChanges);
        };
        // Commits on HEAD that no ref of origin has: the agent's and ours.
        let unpushed = run
            .git(
                GitCall::local(
                    dir,
                    &[
                        "rev-list",
                        "--max-count=1",
                        "HEAD",
                        "--not",
                        "--remotes=origin",
                    ],
                    cfg,
                )
                .quiet(),
            )
            .await?;
        if unpushed.code != 0 {
            return Err(failed(&unpushed));
        }
        if unpushed.stdout.trim().is_empty() {
            log(GitLog {
                stream: GitStream::Stderr,
                text: "no changes: nothing to commit or push".into(),
            });
            return Ok(PushResult::NoChanges);
        }
        let refspec = format!("HEAD:refs/heads/{}", spec.new_branch);
        let push = [
            "push",
            "--porcelain",
            "--no-verify",
            "--recurse-submodules=no",
            "--",
            remote.url(),
            &refspec,
        ];
        let out = run.git(GitCall::network(dir, &push, cfg)).await?;
        if out.code != 0 {
            return Err(classify_failure(
                NetworkStep::Push {
                    branch: &spec.new_branch,
                },
                &spec.repo,
                &out,
            ));
        }
        tracing::info!(commit = %head, "pushed");
        Ok(PushResult::Pushed { commit: head })
    }
    .instrument(span)
    .await
}

/// The local config of a checkout reduced to what a clone writes, from `git config --local
/// --null --list`: the repository format and extensions (but `worktreeConfig`, which would
/// read another file), `origin`'s URL, refspecs and partial-clone settings, and branch
/// tracking. Every value is quoted and escaped.
pub fn clone_config(listing: &str) -> String {
    // Each section's header and its `\tkey = "value"` lines, in the order first seen.
    let mut sections: Vec<(String, Vec<String>)> = Vec::new();
    for entry in listing.split('\0').filter(|e| !e.is_empty()) {
        let (key, value) = match entry.split_once('\n') {
            Some((k, v)) => (k, Some(v)),
            None => (entry, None),
        };
        let Some((section, rest)) = key.split_once('.') else {
            continue;
        };
        let (sub, name) = match rest.rsplit_once('.') {
            Some((sub, name)) => (Some(sub), name),
            None => (None, rest),
        };
        let (section, name) = (section.to_ascii_lowercase(), name.to_ascii_lowercase());
        let keep = match (section.as_str(), sub) {
            ("core", None) => matches!(
                name.as_str(),
                "repositoryformatversion"
                    | "filemode"
                    | "bare"
                    | "logallrefupdates"
                    | "ignorecase"
                    | "precomposeunicode"
                    | "symlinks"
            ),
            ("extensions", None) => name != "worktreeconfig",
            ("remote", Some("origin")) => {
                matches!(
                    name.as_str(),
                    "url" | "fetch" | "promisor" | "partialclonefilter"
                )
            }
            ("branch", Some(_)) => matches!(name.as_str(), "remote" | "merge"),
            _ => false,
        };
        if !keep || sub.is_some_and(|s| s.contains(['\n', '\0'])) {
            continue;
        }
        let header = match sub {
            Some(sub) => format!(
                "[{section} \"{}\"]",
                sub.replace('\\', "\\\\").replace('"', "\\\"")
            ),
            None => format!("[{section}]"),
        };
        let value = value.map(|v| {
            let mut q = String::with_capacity(v.len() + 2);
            q.push('"');
            for c in v.chars() {
                match c {
                    '\\' => q.push_str("\\\\"),
                    '"' => q.push_str("\\\""),
                    '\n' => q.push_str("\\n"),
                    '\t' => q.push_str("\\t"),
                    c => q.push(c),
                }
            }
            q.push('"');
            q
        });
        let line = match value {
            Some(v) => format!("\t{name} = {v}\n"),
            None => format!("\t{name}\n"),
        };
        match sections.iter_mut().find(|(h, _)| *h == header) {
            Some((_, lines)) => lines.push(line),
            None => sections.push((header, vec![line])),
        }
    }
    let mut out = String::new();
    for (header, lines) in sections {
        out.push_str(&header);
        out.push('\n');
        out.extend(lines);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(name: &str, kind: RouteKind, upstream: &str) -> GitRoute {
        GitRoute {
            name: name.into(),
            kind,
            upstream: upstream.into(),
        }
    }

    fn sandbox_env(name: &str) -> Option<String> {
        Some(format!("http://127.0.0.1:3128/{name}"))
    }

    #[test]
    fn remotes_are_chosen_by_scheme_host_port_and_path() {
        let routes = [
            route("git", RouteKind::Git, "https://github.com"),
            route(
                "gitlab",
                RouteKind::Generic,
                "https://gitlab.example.com/scm",
            ),
            route("local", RouteKind::Git, "http://127.0.0.1:8080"),
            route("v6", RouteKind::Git, "http://[::1]:9000"),
        ];
        let via = |repo: &str| match choose_remote(repo, &routes, sandbox_env) {
            Remote::Route { route, url } => format!("{route} {url}"),
            Remote::Proxy { url } => format!("proxy {url}"),
        };
        let cases = [
            (
                "https://github.com/org/repo.git",
                "git http://127.0.0.1:3128/git/org/repo.git",
            ),
            (
                "https://GitHub.com:443/org/repo",
                "git http://127.0.0.1:3128/git/org/repo",
            ),
            // Another scheme, port or host is another origin.
            (
                "http://github.com/org/repo.git",
                "proxy http://github.com/org/repo.git",
            ),
            (
                "https://github.com:8443/org/repo.git",
                "proxy https://github.com:8443/org/repo.git",
            ),
            (
                "https://github.com.evil.example/org/repo.git",
                "proxy https://github.com.evil.example/org/repo.git",
            ),
            (
                "https://api.github.com/org/repo.git",
                "proxy https://api.github.com/org/repo.git",
            ),
            // Only below the upstream's path, on a segment boundary.
            (
                "https://gitlab.example.com/scm/team/app.git",
                "gitlab http://127.0.0.1:3128/gitlab/team/app.git",
            ),
            (
                "https://gitlab.example.com/scmx/team/app.git",
                "proxy https://gitlab.example.com/scmx/team/app.git",
            ),
            (
                "https://gitlab.example.com/other/app.git",
                "proxy https://gitlab.example.com/other/app.git",
            ),
            (
                "http://127.0.0.1:8080/repos/a.git",
                "local http://127.0.0.1:3128/local/repos/a.git",
            ),
            (
                "http://127.0.0.1:80/repos/a.git",
                "proxy http://127.0.0.1:80/repos/a.git",
            ),
            (
                "http://[::1]:9000/r.git",
                "v6 http://127.0.0.1:3128/v6/r.git",
            ),
        ];
        for (repo, want) in cases {
            assert_eq!(via(repo), want, "{repo}");
        }
    }

    #[test]
    fn the_longest_upstream_path_wins_then_git_routes() {
        let routes = [
            route("all", RouteKind::Generic, "https://git.example.com"),
            route("team", RouteKind::Generic, "https://git.example.com/team/"),
            route("gen", RouteKind::Generic, "https://other.example.com"),
            route("gitk", RouteKind::Git, "https://other.example.com"),
        ];
        let pick =
            |repo: &str| matching_route(repo, &routes).map(|(r, rest)| (r.name.clone(), rest));
        assert_eq!(
            pick("https://git.example.com/team/app.git"),
            Some(("team".into(), "/app.git".into()))
        );
        assert_eq!(
            pick("https://git.example.com/x/app.git"),
            Some(("all".into(), "/x/app.git".into()))
        );
        assert_eq!(
            pick("https://other.example.com/a/b"),
            Some(("gitk".into(), "/a/b".into()))
        );
        // The upstream itself is no repository.
        assert_eq!(
            pick("https://git.example.com/team/"),
            Some(("all".into(), "/team/".into()))
        );
    }

    #[test]
    fn a_route_the_sandbox_has_no_url_for_is_not_used() {
        let routes = [route("git", RouteKind::Git, "https://github.com")];
        assert_eq!(
            choose_remote("https://github.com/o/r.git", &routes, |_| None),
            Remote::Proxy {
                url: "https://github.com/o/r.git".into()
            }
        );
        assert_eq!(
            choose_remote("https://github.com/o/r.git", &routes, |_| Some(
                "http://10.0.0.5:3128/git/".into()
            ))
            .url(),
            "http://10.0.0.5:3128/git/o/r.git"
        );
    }

    #[test]
    fn route_variables_are_the_ones_the_proxy_environment_sets() {
        use warden_policy::route::RouteView;
        for name in ["git", "my-git", "gh2"] {
            let env = warden_policy::proxy_environment(
                "http://127.0.0.1:3128",
                [RouteView {
                    name,
                    kind: RouteKind::Git,
                    upstream: "https://github.com",
                }],
            );
            let url = format!("http://127.0.0.1:3128/{name}");
            assert!(
                env.contains(&(route_variable(name), url)),
                "{name}: {env:?}"
            );
        }
    }

    #[test]
    fn git_routes_come_from_the_template_policy() {
        let policy: toml::Table = toml::from_str(
            "[network]\nmode = \"proxy\"\n\
             [routes.git]\nupstream = \"https://git.example.com\"\ncredential = { file = \"/run/t\" }\n\
             [routes.anthropic]\n\
             [routes.scm]\nupstream = \"https://scm.example.com/x\"\nheader = \"authorization\"\nscheme = \"bearer\"\ncredential = { env = \"SCM\" }\n",
        )
        .unwrap();
        let routes = git_routes(&policy).unwrap();
        assert_eq!(
            routes,
            [
                route("git", RouteKind::Git, "https://git.example.com"),
                route("scm", RouteKind::Generic, "https://scm.example.com/x"),
            ]
        );
        assert!(git_routes(&toml::from_str("[routes.x]\nkind = \"nope\"").unwrap()).is_err());
        assert_eq!(git_routes(&toml::Table::new()).unwrap(), []);
    }

    #[test]
    fn git_runs_from_an_argv_with_safe_settings() {
        let cfg = GitConfig {
            author_name: "A; rm -rf /".into(),
            ..GitConfig::default()
        };
        let argv = git_argv(&cfg, &["clone", "--", "https://h/x; y", "repo"]);
        assert_eq!(argv[0], "git");
        assert_eq!(
            &argv[argv.len() - 4..],
            ["clone", "--", "https://h/x; y", "repo"]
        );
        let settings: Vec<&str> = argv
            .windows(2)
            .filter(|w| w[0] == "-c")
            .map(|w| w[1].as_str())
            .collect();
        for want in [
            "core.hooksPath=/dev/null",
            "credential.helper=",
            "protocol.allow=never",
            "protocol.https.allow=always",
            "user.name=A; rm -rf /",
            "user.email=warden@localhost",
        ] {
            assert!(settings.contains(&want), "{want} missing: {settings:?}");
        }
        let env = git_env(&cfg);
        for (k, v) in [
            ("GIT_TERMINAL_PROMPT", "0"),
            ("GIT_CONFIG_NOSYSTEM", "1"),
            ("GIT_CONFIG_GLOBAL", "/dev/null"),
            ("GIT_CONFIG_COUNT", "0"),
            ("GIT_ALLOW_PROTOCOL", "http:https"),
            ("GIT_ASKPASS", ""),
            ("LC_ALL", "C"),
            ("GIT_COMMITTER_NAME", "A; rm -rf /"),
        ] {
            assert_eq!(env.get(k).map(String::as_str), Some(v), "{k}");
        }
        // Set at all, it would turn curl's trace on.
        assert!(!env.contains_key("GIT_CURL_VERBOSE"));
    }

    fn out(code: i32, stdout: &str, stderr: &str) -> GitOutput {
        GitOutput {
            command: "git clone".into(),
            code,
            timed_out: false,
            stdout: stdout.into(),
            stderr: stderr.into(),
        }
    }

    const REPO: &str = "https://git.example.com/org/repo.git";

    #[test]
    fn failures_are_read_from_what_git_said() {
        let clone = NetworkStep::Clone {
            base_branch: Some("release/9"),
        };
        let push = NetworkStep::Push { branch: "warden/t" };
        let kind = |e: &GitError| -> &'static str {
            match e {
                GitError::RepoNotFound { .. } => "not-found",
                GitError::Unreachable { .. } => "unreachable",
                GitError::EgressDenied { .. } => "egress",
                GitError::AuthFailed { .. } => "auth",
                GitError::UnknownBaseBranch { .. } => "branch",
                GitError::PushRejected { .. } => "rejected",
                GitError::TimedOut { .. } => "timeout",
                GitError::Failed { .. } => "failed",
                GitError::Routes { .. } | GitError::Sandbox { .. } => "other",
            }
        };
        let cases: &[(NetworkStep, &str, &str, &str)] = &[
            (
                clone,
                "",
                "Cloning into 'repo'...\nremote: warden: egress to git.example.com:80 is not allowed: no allow rule matches it; add --allow-domain git.example.com\nfatal: unable to access 'http://git.example.com/org/repo.git/': The requested URL returned error: 403",
                "egress",
            ),
            (
                clone,
                "",
                "Cloning into 'repo'...\nfatal: unable to access 'https://git.example.com/org/repo.git/': CONNECT tunnel failed, response 403",
                "egress",
            ),
            (
                clone,
                "",
                "fatal: unable to access 'https://git.example.com/org/repo.git/': Received HTTP code 403 from proxy after CONNECT",
                "egress",
            ),
            (
                clone,
                "",
                "Cloning into 'repo'...\nwarning: Could not find remote branch release/9 to clone.\nfatal: Remote branch release/9 not found in upstream origin",
                "branch",
            ),
            (
                clone,
                "",
                "Cloning into 'repo'...\nfatal: could not read Username for 'http://127.0.0.1:9/': terminal prompts disabled",
                "auth",
            ),
            (
                clone,
                "",
                "remote: Invalid username or token.\nfatal: Authentication failed for 'https://github.com/o/r.git/'",
                "auth",
            ),
            (
                push,
                "",
                "remote: Permission to o/r.git denied to bot.\nfatal: unable to access 'https://github.com/o/r.git/': The requested URL returned error: 403",
                "auth",
            ),
            (
                clone,
                "",
                "Cloning into 'repo'...\nremote: Not Found\nfatal: repository 'http://127.0.0.1:9/nope.git/' not found",
                "not-found",
            ),
            (
                clone,
                "",
                "fatal: unable to access 'http://git.example.com/org/repo.git/': The requested URL returned error: 502",
                "unreachable",
            ),
            (
                clone,
                "",
                "fatal: unable to access 'https://git.example.com/org/repo.git/': CONNECT tunnel failed, response 502",
                "unreachable",
            ),
            (
                clone,
                "",
                "fatal: unable to access 'https://x/': Failed to connect to 127.0.0.1 port 3128 after 0 ms: Couldn't connect to server",
                "unreachable",
            ),
            (
                push,
                "To http://127.0.0.1:3128/git/org/repo.git\n!\tHEAD:refs/heads/warden/t\t[remote rejected] (pre-receive hook declined)\nDone\n",
                "remote: refusing: pushes need review\nerror: failed to push some refs to 'http://127.0.0.1:3128/git/org/repo.git'",
                "rejected",
            ),
            (
                push,
                "To http://h/r.git\n!\tHEAD:refs/heads/warden/t\t[rejected] (fetch first)\nDone\n",
                "error: failed to push some refs to 'http://h/r.git'\nhint: Updates were rejected because the remote contains work that you do not\n",
                "rejected",
            ),
            (clone, "", "fatal: something new and strange", "failed"),
        ];
        for (step, stdout, stderr, want) in cases {
            let e = classify_failure(*step, REPO, &out(128, stdout, stderr));
            assert_eq!(kind(&e), *want, "{stderr}\n=> {e}");
            let reason = e.reason();
            assert!(
                !reason.contains('\n') && reason.len() <= MAX_REASON,
                "{reason}"
            );
        }
    }

    #[test]
    fn reasons_name_what_matters() {
        let e = classify_failure(
            NetworkStep::Clone {
                base_branch: Some("release/9"),
            },
            REPO,
            &out(
                128,
                "",
                "fatal: Remote branch release/9 not found in upstream origin",
            ),
        );
        assert!(e.reason().contains("`release/9`"), "{e}");
        let e = classify_failure(
            NetworkStep::Push { branch: "warden/t" },
            REPO,
            &out(
                1,
                "!\tHEAD:refs/heads/warden/t\t[remote rejected] (pre-receive hook declined)\n",
                "remote: refusing: pushes need review\n",
            ),
        );
        let r = e.reason();
        assert!(r.contains("refusing: pushes need review"), "{r}");
        assert!(r.contains("pre-receive hook declined"), "{r}");
        assert!(r.contains("`warden/t`"), "{r}");
        let e = classify_failure(
            NetworkStep::Clone { base_branch: None },
            "http://git.example.com/org/repo.git",
            &out(
                128,
                "",
                "remote: warden: egress to git.example.com:80 is not allowed: no allow rule matches it\nfatal: ...: 403",
            ),
        );
        let r = e.reason();
        assert!(r.starts_with("git.example.com is not allowed by the sandbox's egress policy (egress to git.example.com:80 is not allowed: no allow rule matches it)"), "{r}");
        let e = failed(&out(127, "", "sh: git: not found"));
        assert!(e.reason().contains("git is not installed"), "{e}");
    }

    #[test]
    fn the_checkout_config_keeps_only_what_a_clone_writes() {
        let listing = [
            "core.repositoryformatversion\n0",
            "core.filemode\ntrue",
            "core.bare\nfalse",
            "core.fsmonitor\nrm -rf /",
            "core.hookspath\n/tmp/hooks",
            "extensions.objectformat\nsha256",
            "extensions.worktreeconfig\ntrue",
            "remote.origin.url\nhttp://127.0.0.1:3128/git/o/r.git",
            "remote.origin.fetch\n+refs/heads/main:refs/remotes/origin/main",
            "remote.origin.pushurl\nhttp://evil.example/r.git",
            "remote.evil.url\nhttp://evil.example/r.git",
            "branch.main.remote\norigin",
            "branch.main.merge\nrefs/heads/main",
            "branch.we\"ird.remote\norigin",
            "url.http://evil.example/.pushinsteadof\nhttp://127.0.0.1:3128/",
            "include.path\n/tmp/evil",
            "filter.x.clean\nsh -c evil",
            "http.http://127.0.0.1:3128/.extraheader\nX-Evil: 1",
            "",
        ]
        .join("\0");
        let config = clone_config(&listing);
        assert_eq!(
            config,
            "[core]\n\trepositoryformatversion = \"0\"\n\tfilemode = \"true\"\n\tbare = \"false\"\n\
             [extensions]\n\tobjectformat = \"sha256\"\n\
             [remote \"origin\"]\n\turl = \"http://127.0.0.1:3128/git/o/r.git\"\n\
             \tfetch = \"+refs/heads/main:refs/remotes/origin/main\"\n\
             [branch \"main\"]\n\tremote = \"origin\"\n\tmerge = \"refs/heads/main\"\n\
             [branch \"we\\\"ird\"]\n\tremote = \"origin\"\n"
        );
        assert_eq!(clone_config(""), "");
    }

    #[test]
    fn one_line_and_tail_are_bounded_at_char_boundaries() {
        assert_eq!(one_line("a\n\n b\tc\r\n", 100), "a b c");
        let long = "é".repeat(400);
        let l = one_line(&long, 101);
        assert!(l.len() <= 101 && l.ends_with("..."), "{l}");
        let t = tail(&long, 101);
        assert!(t.starts_with("...") && t.len() <= 104, "{t}");
        assert_eq!(tail("short", 10), "short");
    }
}
